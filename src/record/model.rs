//! The record model (SPEC §1): the kinds, subjects, a record as its JSON object, the record key
//! that identifies a record in an export and a bundle, canonical JSON, and the definitions of
//! custom fields that a `field_value` is checked against.

use super::probe::{raw_object, raw_subject, short_raw};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The kinds the SPEC names; everything else is [`Kind::Other`] and passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Header,
    BiServer,
    BiFolder,
    BiReport,
    BiReportColumn,
    CustomField,
    FieldValue,
    TrustFlag,
    Tag,
    Star,
    Article,
    Conversation,
    Other,
}

impl Kind {
    /// The named kinds (all but [`Kind::Other`]), in their order: `Kind::NAMED[k as usize] == k`.
    pub const NAMED: [Kind; Kind::Other as usize] = [
        Kind::Header,
        Kind::BiServer,
        Kind::BiFolder,
        Kind::BiReport,
        Kind::BiReportColumn,
        Kind::CustomField,
        Kind::FieldValue,
        Kind::TrustFlag,
        Kind::Tag,
        Kind::Star,
        Kind::Article,
        Kind::Conversation,
    ];

    /// The `kind` string of a named kind ("" for [`Kind::Other`]).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::BiServer => "bi_server",
            Kind::BiFolder => "bi_folder",
            Kind::BiReport => "bi_report",
            Kind::BiReportColumn => "bi_report_column",
            Kind::CustomField => "custom_field",
            Kind::FieldValue => "field_value",
            Kind::TrustFlag => "trust_flag",
            Kind::Tag => "tag",
            Kind::Star => "star",
            Kind::Article => "article",
            Kind::Conversation => "conversation",
            Kind::Other => "",
        }
    }

    /// Whether records of this kind may have a top-level `subject` (curation, and kinds the SPEC
    /// does not name).
    pub fn has_subject(self) -> bool {
        matches!(
            self,
            Kind::FieldValue
                | Kind::TrustFlag
                | Kind::Tag
                | Kind::Star
                | Kind::Conversation
                | Kind::Other
        )
    }

    /// The kind for a `kind` string.
    pub fn from_name(name: &str) -> Kind {
        match name {
            "header" => Kind::Header,
            "bi_server" => Kind::BiServer,
            "bi_folder" => Kind::BiFolder,
            "bi_report" => Kind::BiReport,
            "bi_report_column" => Kind::BiReportColumn,
            "custom_field" => Kind::CustomField,
            "field_value" => Kind::FieldValue,
            "trust_flag" => Kind::TrustFlag,
            "tag" => Kind::Tag,
            "star" => Kind::Star,
            "article" => Kind::Article,
            "conversation" => Kind::Conversation,
            _ => Kind::Other,
        }
    }
}

/// A subject reference `{"otype":…,"oid":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Subject {
    /// The object type, e.g. `bi_report`.
    pub otype: String,
    /// The object id, unique per otype.
    pub oid: i64,
}

impl Subject {
    /// Reads a subject object; None when `v` is not one.
    pub fn from_value(v: &Value) -> Option<Subject> {
        let o = v.as_object()?;
        Some(Subject {
            otype: o.get("otype")?.as_str()?.to_string(),
            oid: o.get("oid")?.as_i64()?,
        })
    }

    /// The subject as a JSON object, in the SPEC's field order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("otype".into(), Value::String(self.otype.clone()));
        m.insert("oid".into(), Value::from(self.oid));
        Value::Object(m)
    }
}

/// One parsed, validated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The kind, or [`Kind::Other`].
    pub kind: Kind,
    /// The whole object, field order kept.
    pub obj: Map<String, Value>,
}

impl Record {
    /// The record of a JSON object, its kind read from its `kind` field.
    pub fn from_map(obj: Map<String, Value>) -> Record {
        let kind = Kind::from_name(obj.get("kind").and_then(Value::as_str).unwrap_or(""));
        Record { kind, obj }
    }

    /// The `kind` string.
    pub fn kind_name(&self) -> &str {
        self.obj.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// An integer field (validated for the named fields).
    pub fn int(&self, field: &str) -> Option<i64> {
        self.obj.get(field).and_then(Value::as_i64)
    }

    /// A string field.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.obj.get(field).and_then(Value::as_str)
    }

    /// A boolean field, false when absent or null.
    pub fn flag(&self, field: &str) -> bool {
        self.obj
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The top-level subject, for the kinds that may have one.
    pub fn subject(&self) -> Option<Subject> {
        if !self.kind.has_subject() {
            return None;
        }
        self.obj.get("subject").and_then(Subject::from_value)
    }

    /// Points the record at another subject (the field keeps its place in the object).
    pub fn set_subject(&mut self, s: &Subject) {
        self.obj.insert("subject".into(), s.to_value());
    }

    /// The record key of SPEC §1, as the string written in bundles.
    pub fn key(&self) -> String {
        record_key(self.kind, self)
    }
}

/// A record's fields as the key rule reads them, from a parsed record ([`Record`]) or from raw
/// JSON ([`super::Probe`], the fast path): the two must read a valid record the same way. Each
/// writes onto the key being built, so that a key costs one allocation (it is made for every
/// line of every read).
pub(super) trait KeyFields {
    /// Writes an integer field as text (nothing when absent).
    fn int(&self, name: &str, out: &mut String);
    /// Writes a string field (nothing when absent).
    fn text(&self, name: &str, out: &mut String);
    /// Writes the subject as `otype:oid:`, when there is one.
    fn subject(&self, out: &mut String);
    /// Writes the key of a record of a kind the SPEC does not name: its `id`, or without one a
    /// hash of its canonical JSON.
    fn other(&self, out: &mut String);
}

/// The record key of SPEC §1: which fields make the key of each kind.
pub(super) fn record_key(kind: Kind, f: &impl KeyFields) -> String {
    let mut out = String::with_capacity(32);
    match kind {
        Kind::Header => out.push_str("header"),
        Kind::BiServer
        | Kind::CustomField
        | Kind::TrustFlag
        | Kind::Article
        | Kind::Conversation => f.int("id", &mut out),
        Kind::BiFolder | Kind::BiReport | Kind::BiReportColumn => f.int("oid", &mut out),
        Kind::FieldValue => {
            f.subject(&mut out);
            f.int("field_id", &mut out)
        }
        Kind::Tag => {
            f.subject(&mut out);
            f.text("name", &mut out)
        }
        Kind::Star => {
            f.subject(&mut out);
            f.int("user_id", &mut out)
        }
        Kind::Other => f.other(&mut out),
    }
    out
}

impl KeyFields for Record {
    fn int(&self, name: &str, out: &mut String) {
        if let Some(v) = self.obj.get(name) {
            use std::fmt::Write;
            write!(out, "{v}").expect("writing to a String");
        }
    }

    fn text(&self, name: &str, out: &mut String) {
        out.push_str(self.str(name).unwrap_or(""));
    }

    fn subject(&self, out: &mut String) {
        if let Some(s) = self.obj.get("subject").and_then(Subject::from_value) {
            out.push_str(&s.otype);
            out.push(':');
            out.push_str(itoa::Buffer::new().format(s.oid));
            out.push(':');
        }
    }

    fn other(&self, out: &mut String) {
        match self.obj.get("id") {
            Some(Value::String(s)) => out.push_str(s),
            Some(v @ Value::Number(_)) => {
                use std::fmt::Write;
                write!(out, "{v}").expect("writing to a String");
            }
            _ => out.push_str(&crate::input::sha256_bytes(
                canonical_json_map(&self.obj).as_bytes(),
            )),
        }
    }
}

/// Canonical JSON (SPEC §1): object keys sorted, no insignificant white space, numbers as
/// serde_json writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// [`canonical_json`] of an object, without first cloning it into a [`Value`] (the key of an
/// id-less record is the SHA-256 of this, taken for every such line).
pub fn canonical_json_map(m: &Map<String, Value>) -> String {
    let mut out = Vec::new();
    write_canonical_map(m, &mut out);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

// Bytes, not a String, so that serde_json writes keys and scalars straight into the buffer
// (the same compact text `Display` gives) instead of one String per key.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => write_canonical_map(m, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec"),
    }
}

fn write_canonical_map(m: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
        out.push(b':');
        write_canonical(v, out);
    }
    out.push(b'}');
}

/// Writes [`canonical_json`] of the JSON text `text` straight from the text, without building a
/// [`Value`]: the key of an id-less record (a view event, say) is taken for every such line.
/// Returns false, having written part of it, for what this path does not vouch for — a string
/// or key with an escape, a number that is not a plain integer — and the caller goes through
/// [`canonical_json`] instead. A repeated key keeps its last value, as in the tree. `text` must
/// be valid JSON.
pub fn canonical_json_raw(text: &str, out: &mut Vec<u8>) -> bool {
    match text.as_bytes().first() {
        Some(b'{') => {
            let Ok(mut entries) = raw_object(text.as_bytes()) else {
                return false;
            };
            // A key with an escape is decoded (owned): the slow path writes it.
            if entries.iter().any(|(k, _)| matches!(k, Cow::Owned(_))) {
                return false;
            }
            // Sorted as `write_canonical_map` sorts, by the key's bytes.
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"\":");
                if !canonical_json_raw(v.get(), out) {
                    return false;
                }
            }
            out.push(b'}');
            true
        }
        Some(b'[') => {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
                return false;
            };
            out.push(b'[');
            for (i, v) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !canonical_json_raw(v.get(), out) {
                    return false;
                }
            }
            out.push(b']');
            true
        }
        // Without a backslash, a valid string's text is what serde_json writes for it.
        Some(b'"') if memchr::memchr(b'\\', text.as_bytes()).is_none() => {
            out.extend_from_slice(text.as_bytes());
            true
        }
        Some(b'"') => false,
        Some(b't' | b'f' | b'n') => {
            out.extend_from_slice(text.as_bytes());
            true
        }
        // An integer serde_json keeps as one (it reads `-0` as the float -0.0).
        _ if text != "-0"
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()) =>
        {
            out.extend_from_slice(text.as_bytes());
            true
        }
        _ => false,
    }
}

/// Custom field types of SPEC §1.
pub const FIELD_TYPES: [&str; 6] = [
    "TEXT",
    "RICH_TEXT",
    "PICKER",
    "MULTI_PICKER",
    "DATE",
    "OBJECT_SET",
];

/// A field definition: its type and whether it allows several values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// One of [`FIELD_TYPES`].
    pub field_type: String,
    /// `allow_multiple` (OBJECT_SET only matters).
    pub allow_multiple: bool,
}

impl FieldDef {
    /// Multi-valued: MULTI_PICKER, or OBJECT_SET with allow_multiple (SPEC §1).
    pub fn multi(&self) -> bool {
        self.field_type == "MULTI_PICKER"
            || (self.field_type == "OBJECT_SET" && self.allow_multiple)
    }

    /// Checks a field_value's raw value against this field's type; null is always allowed.
    pub fn check_raw(&self, v: &RawValue) -> Result<(), String> {
        let t = v.get();
        let items = || serde_json::from_str::<Vec<&RawValue>>(t).ok();
        let ok = t == "null"
            || match self.field_type.as_str() {
                "TEXT" | "RICH_TEXT" | "PICKER" | "DATE" => t.starts_with('"'),
                "MULTI_PICKER" => {
                    t.starts_with('[')
                        && items().is_some_and(|a| a.iter().all(|i| i.get().starts_with('"')))
                }
                "OBJECT_SET" => {
                    t.starts_with('[')
                        && items().is_some_and(|a| a.iter().all(|i| raw_subject(i).is_some()))
                }
                _ => false,
            };
        if ok {
            return Ok(());
        }
        let want = match self.field_type.as_str() {
            "MULTI_PICKER" => "a list of strings",
            "OBJECT_SET" => "a list of {\"otype\", \"oid\"} objects",
            _ => "a string",
        };
        Err(format!(
            "`value` of a {} field must be {want}, found {}",
            self.field_type,
            short_raw(t)
        ))
    }
}

/// The built-in fields that exist without a `custom_field` line: 3 title, 4 description, 8 steward.
pub fn builtin_field(id: i64) -> Option<FieldDef> {
    let (t, m) = match id {
        3 => ("TEXT", false),
        4 => ("RICH_TEXT", false),
        8 => ("OBJECT_SET", true),
        _ => return None,
    };
    Some(FieldDef {
        field_type: t.into(),
        allow_multiple: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_line;

    /// The raw path writes what the tree path writes, or declines; it declines only where it
    /// says it does.
    #[test]
    fn canonical_json_from_the_text_is_the_canonical_json_of_the_tree() {
        let agree = |text: &str| {
            let mut raw = Vec::new();
            let taken = canonical_json_raw(text, &mut raw);
            let tree: Value = serde_json::from_str(text).unwrap();
            if taken {
                assert_eq!(
                    String::from_utf8(raw).unwrap(),
                    canonical_json(&tree),
                    "{text}"
                );
            }
            taken
        };
        for text in [
            r#"{"kind":"view_event","subject":{"otype":"bi_report","oid":1},"user_id":6}"#,
            r#"{ "b" : [1, -2, true, null, {"z":false,"a":"é"}], "a" : {} , "c": []}"#,
            r#"{"n":18446744073709551615,"m":-9223372036854775808,"s":"a/b"}"#,
            r#"{"ab":1,"a":2,"aa":[[]]}"#,
            r#"{"a":1,"b":{"c":2},"a":3}"#,
        ] {
            assert!(agree(text), "{text}");
        }
        for text in [
            r#"{"a":"with \"quote\""}"#,
            r#"{"a\u0062":1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":-0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":18446744073709551616}"#,
        ] {
            assert!(!agree(text), "{text}");
        }
        let taken = crate::generate::sample_lines(60, 3)
            .iter()
            .filter(|l| agree(std::str::from_utf8(l).unwrap()))
            .count();
        assert!(taken > 500, "{taken}");
    }

    fn rec(s: &str) -> Record {
        parse_line(s.as_bytes()).unwrap()
    }

    #[test]
    fn named_kinds_are_listed_in_their_order() {
        for (i, k) in Kind::NAMED.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn keys_follow_the_spec() {
        assert_eq!(
            rec(r#"{"kind":"bi_server","id":7,"type":"looker"}"#).key(),
            "7"
        );
        assert_eq!(
            rec(r#"{"kind":"bi_report","oid":12,"server_id":1,"external_id":"x"}"#).key(),
            "12"
        );
        let fv = r#"{"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":12},"value":"x"}"#;
        assert_eq!(rec(fv).key(), "bi_report:12:4");
        let tag = r#"{"kind":"tag","name":"Finance","subject":{"oid":12,"otype":"bi_report"}}"#;
        assert_eq!(rec(tag).key(), "bi_report:12:Finance");
        assert_eq!(
            rec(r#"{"kind":"star","user_id":5,"subject":{"otype":"table","oid":1}}"#).key(),
            "table:1:5"
        );
        assert_eq!(rec(r#"{"kind":"thing","id":"abc"}"#).key(), "abc");
        assert_eq!(rec(r#"{"kind":"thing","id":9}"#).key(), "9");
    }

    #[test]
    fn id_less_key_is_the_sha_of_canonical_json_whatever_the_field_order() {
        let a = rec(r#"{"kind":"view","b":[1,{"y":2,"x":1}],"a":"é"}"#);
        let b = rec(r#"{"a":"é", "kind":"view","b":[1,{"x":1,"y":2}]}"#);
        assert_eq!(a.key(), b.key());
        assert_eq!(
            canonical_json(&Value::Object(a.obj.clone())),
            r#"{"a":"é","b":[1,{"x":1,"y":2}],"kind":"view"}"#
        );
        assert_eq!(
            a.key(),
            crate::input::sha256_bytes(
                r#"{"a":"é","b":[1,{"x":1,"y":2}],"kind":"view"}"#.as_bytes()
            )
        );
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn field_values_are_checked_against_their_type() {
        let os = FieldDef {
            field_type: "OBJECT_SET".into(),
            allow_multiple: true,
        };
        assert!(os.check_raw(&raw(r#"[{"otype":"user","oid":1}]"#)).is_ok());
        assert!(os.check_raw(&raw(r#"["a"]"#)).is_err());
        assert!(os.check_raw(&raw("null")).is_ok());
        assert!(builtin_field(4)
            .unwrap()
            .check_raw(&raw(r#"["a"]"#))
            .is_err());
        assert!(builtin_field(8).unwrap().multi());
        assert!(!builtin_field(3).unwrap().multi());
    }
}
