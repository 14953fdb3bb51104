//! The records of an export (SPEC §1): their kinds, the fields each kind requires and the types
//! of the named fields, and the record key that identifies a record in an export and a bundle.
//!
//! Parsing and validation live here, in one place, so that migrate, restore and verify agree on
//! what a malformed line is.

use serde_json::{Map, Value};
use std::fmt::Write;

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
        match self.kind {
            Kind::FieldValue
            | Kind::TrustFlag
            | Kind::Tag
            | Kind::Star
            | Kind::Conversation
            | Kind::Other => self.obj.get("subject").and_then(Subject::from_value),
            _ => None,
        }
    }

    /// Points the record at another subject (the field keeps its place in the object).
    pub fn set_subject(&mut self, s: &Subject) {
        self.obj.insert("subject".into(), s.to_value());
    }

    /// The record as one line of compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.obj).expect("a JSON map always serialises")
    }

    /// The record key of SPEC §1, as the string written in bundles.
    pub fn key(&self) -> String {
        let subject_key = |tail: String| match self.obj.get("subject").and_then(Subject::from_value)
        {
            Some(s) => format!("{}:{}:{}", s.otype, s.oid, tail),
            None => tail,
        };
        match self.kind {
            Kind::Header => "header".into(),
            Kind::BiServer
            | Kind::CustomField
            | Kind::TrustFlag
            | Kind::Article
            | Kind::Conversation => int_text(self.obj.get("id")),
            Kind::BiFolder | Kind::BiReport | Kind::BiReportColumn => int_text(self.obj.get("oid")),
            Kind::FieldValue => subject_key(int_text(self.obj.get("field_id"))),
            Kind::Tag => subject_key(self.str("name").unwrap_or("").to_string()),
            Kind::Star => subject_key(int_text(self.obj.get("user_id"))),
            Kind::Other => match self.obj.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Number(_)) => v.to_string(),
                _ => crate::input::sha256_bytes(
                    canonical_json(&Value::Object(self.obj.clone())).as_bytes(),
                ),
            },
        }
    }
}

fn int_text(v: Option<&Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Canonical JSON (SPEC §1): object keys sorted, no insignificant white space, numbers as
/// serde_json writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Parses and validates one line (SPEC §1). The error says what is wrong, without the location,
/// which the caller knows.
pub fn parse_line(bytes: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 ({e})"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let kind = match obj.get("kind") {
        Some(Value::String(k)) => Kind::from_name(k),
        Some(_) => return Err("`kind` is not a string".into()),
        None => return Err("missing `kind`".into()),
    };
    let rec = Record { kind, obj };
    validate(&rec)?;
    Ok(rec)
}

/// Field type expectations for validation.
enum Ty {
    Int,
    Str,
    Bool,
    Subject,
    Array,
}

fn check(rec: &Record, field: &str, ty: Ty, required: bool) -> Result<(), String> {
    let v = match rec.obj.get(field) {
        None => {
            return if required {
                Err(format!("missing required field `{field}`"))
            } else {
                Ok(())
            };
        }
        Some(Value::Null) if !required => return Ok(()),
        Some(v) => v,
    };
    let ok = match ty {
        Ty::Int => v.is_i64() || v.is_u64() && v.as_i64().is_some(),
        Ty::Str => v.is_string(),
        Ty::Bool => v.is_boolean(),
        Ty::Subject => Subject::from_value(v).is_some(),
        Ty::Array => v.is_array(),
    };
    if ok {
        Ok(())
    } else {
        let want = match ty {
            Ty::Int => "an integer",
            Ty::Str => "a string",
            Ty::Bool => "true or false",
            Ty::Subject => "a subject {\"otype\": string, \"oid\": integer}",
            Ty::Array => "a list",
        };
        Err(format!(
            "field `{field}` must be {want}, found {}",
            short(v)
        ))
    }
}

/// A value shortened for messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn one_of(rec: &Record, field: &str, allowed: &[&str]) -> Result<(), String> {
    let v = rec.str(field).unwrap_or("");
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "field `{field}` must be one of {}, found {}",
            allowed.join(", "),
            short(&rec.obj[field])
        ))
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

fn validate(rec: &Record) -> Result<(), String> {
    use Ty::*;
    let timestamps =
        |rec: &Record, fields: &[&str]| fields.iter().try_for_each(|f| check(rec, f, Str, false));
    match rec.kind {
        Kind::Header => {
            if rec.str("format") != Some("catalog-export") {
                return Err("header `format` must be \"catalog-export\"".into());
            }
            match rec.obj.get("version") {
                Some(v) if v.as_i64() == Some(1) => {}
                Some(v) => {
                    return Err(format!(
                        "export format version {} is not supported (this lookmig reads version 1)",
                        short(v)
                    ))
                }
                None => return Err("header without `version`".into()),
            }
        }
        Kind::BiServer => {
            check(rec, "id", Int, true)?;
            check(rec, "type", Str, true)?;
            check(rec, "title", Str, false)?;
            check(rec, "uri", Str, false)?;
        }
        Kind::BiFolder => {
            check(rec, "oid", Int, true)?;
            check(rec, "server_id", Int, true)?;
            check(rec, "external_id", Str, true)?;
        }
        Kind::BiReport | Kind::BiReportColumn => {
            check(rec, "oid", Int, true)?;
            check(rec, "server_id", Int, true)?;
            check(rec, "external_id", Str, true)?;
            check(rec, "deleted", Bool, false)?;
            timestamps(rec, &["last_updated", "created_at"])?;
            if rec.kind == Kind::BiReportColumn {
                check(rec, "report", Str, true)?;
            } else {
                check(rec, "source_url", Str, false)?;
            }
        }
        Kind::CustomField => {
            check(rec, "id", Int, true)?;
            check(rec, "field_type", Str, true)?;
            one_of(rec, "field_type", &FIELD_TYPES)?;
            check(rec, "allow_multiple", Bool, false)?;
        }
        Kind::FieldValue => {
            check(rec, "field_id", Int, true)?;
            check(rec, "subject", Subject, true)?;
            if !rec.obj.contains_key("value") {
                return Err("missing required field `value`".into());
            }
            timestamps(rec, &["ts_updated"])?;
        }
        Kind::TrustFlag => {
            check(rec, "id", Int, true)?;
            check(rec, "flag_type", Str, true)?;
            one_of(rec, "flag_type", &["ENDORSEMENT", "WARNING", "DEPRECATION"])?;
            check(rec, "subject", Subject, true)?;
            check(rec, "user_id", Int, true)?;
            check(rec, "reason", Str, false)?;
            timestamps(rec, &["ts_created"])?;
        }
        Kind::Tag => {
            check(rec, "name", Str, true)?;
            check(rec, "subject", Subject, true)?;
        }
        Kind::Star => {
            check(rec, "user_id", Int, true)?;
            check(rec, "subject", Subject, true)?;
            timestamps(rec, &["ts_created"])?;
        }
        Kind::Article => {
            check(rec, "id", Int, true)?;
            check(rec, "body", Str, true)?;
            check(rec, "title", Str, false)?;
        }
        Kind::Conversation => {
            check(rec, "id", Int, true)?;
            check(rec, "subject", Subject, false)?;
            check(rec, "posts", Array, true)?;
            for (i, post) in rec.obj["posts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Value::Object(p) = post else {
                    return Err(format!("posts[{i}] is not an object"));
                };
                let post = Record {
                    kind: Kind::Other,
                    obj: p.clone(),
                };
                check(&post, "id", Int, true).map_err(|e| format!("posts[{i}]: {e}"))?;
                check(&post, "user_id", Int, true).map_err(|e| format!("posts[{i}]: {e}"))?;
                check(&post, "text", Str, true).map_err(|e| format!("posts[{i}]: {e}"))?;
                check(&post, "ts_created", Str, false).map_err(|e| format!("posts[{i}]: {e}"))?;
            }
        }
        Kind::Other => match rec.obj.get("id") {
            None | Some(Value::String(_)) => {}
            Some(v) if v.is_i64() || v.is_u64() => {}
            Some(v) => {
                return Err(format!(
                    "field `id` must be an integer or a string, found {}",
                    short(v)
                ))
            }
        },
    }
    Ok(())
}

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

    /// Checks a field_value's value against this field's type; null is always allowed.
    pub fn check_value(&self, v: &Value) -> Result<(), String> {
        let ok = match (self.field_type.as_str(), v) {
            (_, Value::Null) => true,
            ("TEXT" | "RICH_TEXT" | "PICKER" | "DATE", Value::String(_)) => true,
            ("MULTI_PICKER", Value::Array(a)) => a.iter().all(Value::is_string),
            ("OBJECT_SET", Value::Array(a)) => a.iter().all(|m| Subject::from_value(m).is_some()),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let want = match self.field_type.as_str() {
                "MULTI_PICKER" => "a list of strings",
                "OBJECT_SET" => "a list of {\"otype\", \"oid\"} objects",
                _ => "a string",
            };
            Err(format!(
                "`value` of a {} field must be {want}, found {}",
                self.field_type,
                short(v)
            ))
        }
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

    fn rec(s: &str) -> Record {
        parse_line(s.as_bytes()).unwrap()
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

    #[test]
    fn wrong_types_and_missing_fields_are_malformed() {
        for (line, want) in [
            (
                r#"{"kind":"bi_report","oid":"12","server_id":1,"external_id":"x"}"#,
                "`oid` must be an integer",
            ),
            (
                r#"{"kind":"bi_report","server_id":1,"external_id":"x"}"#,
                "missing required field `oid`",
            ),
            (
                r#"{"kind":"tag","name":"x","subject":{"otype":"t"}}"#,
                "`subject` must be",
            ),
            (
                r#"{"kind":"trust_flag","id":1,"flag_type":"LIKE","subject":{"otype":"t","oid":1},"user_id":1}"#,
                "one of",
            ),
            (
                r#"{"kind":"header","format":"catalog-export","version":2}"#,
                "version 2 is not supported",
            ),
            (r#"[1]"#, "not a JSON object"),
            (r#"{"kind":"x""#, "malformed JSON"),
            (
                r#"{"kind":"conversation","id":1,"posts":[{"id":1,"user_id":1}]}"#,
                "posts[0]: missing required field `text`",
            ),
        ] {
            let err = parse_line(line.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
        assert!(parse_line(b"{\"kind\":\"x\",\"s\":\"\xff\"}")
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn field_values_are_checked_against_their_type() {
        let os = FieldDef {
            field_type: "OBJECT_SET".into(),
            allow_multiple: true,
        };
        assert!(os
            .check_value(&serde_json::json!([{"otype":"user","oid":1}]))
            .is_ok());
        assert!(os.check_value(&serde_json::json!(["a"])).is_err());
        assert!(builtin_field(4)
            .unwrap()
            .check_value(&serde_json::json!(["a"]))
            .is_err());
        assert!(builtin_field(8).unwrap().multi());
        assert!(!builtin_field(3).unwrap().multi());
    }
}

/// An RFC 3339 timestamp as an instant (seconds, nanoseconds), for ordering; None when missing
/// or unparsable (SPEC §1: such a timestamp sorts last).
pub fn instant(v: Option<&Value>) -> Option<(i64, u32)> {
    let s = v?.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos()))
}

/// Orders two instants latest first, a missing one last.
pub fn latest_first(a: Option<(i64, u32)>, b: Option<(i64, u32)>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

/// Orders two instants earliest first, a missing one last.
pub fn earliest_first(a: Option<(i64, u32)>, b: Option<(i64, u32)>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instants_compare_across_offsets_and_missing_sorts_last() {
        let a = instant(Some(&json!("2024-01-01T10:00:00+02:00")));
        let b = instant(Some(&json!("2024-01-01T09:00:00Z")));
        assert!(a < b);
        assert_eq!(instant(Some(&json!("yesterday"))), None);
        assert_eq!(latest_first(b, a), std::cmp::Ordering::Less);
        assert_eq!(latest_first(None, a), std::cmp::Ordering::Greater);
        assert_eq!(earliest_first(a, b), std::cmp::Ordering::Less);
        assert_eq!(earliest_first(None, a), std::cmp::Ordering::Greater);
    }
}

/// The record keys seen so far, to refuse a duplicate (SPEC §1: a key occurs once per export).
/// Keys are kept as 128-bit hashes so millions of records fit in little memory.
#[derive(Default)]
pub struct SeenKeys(std::collections::HashSet<u128>);

impl SeenKeys {
    /// The 128-bit hash of a (kind, key) pair; fixed keys, so the same in every run.
    pub fn hash(kind: &str, key: &str) -> u128 {
        use std::hash::{Hash, Hasher};
        let half = |salt: u8| {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(0x6c6f6f6b6d6967, salt as u64);
            kind.hash(&mut h);
            key.hash(&mut h);
            h.finish() as u128
        };
        (half(1) << 64) | half(2)
    }

    /// Adds a key hash; false when it was already there.
    pub fn insert(&mut self, hash: u128) -> bool {
        self.0.insert(hash)
    }
}
