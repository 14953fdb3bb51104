//! The records of an export (SPEC §1): their kinds, the fields each kind requires and the types
//! of the named fields, and the record key that identifies a record in an export and a bundle.
//!
//! Parsing and validation live here, in one place, so that migrate, restore and verify agree on
//! what a malformed line is.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
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

/// Parses and validates one line (SPEC §1) into a full record. The error says what is wrong,
/// without the location, which the caller knows.
pub fn parse_line(bytes: &[u8]) -> Result<Record, String> {
    let probe = Probe::parse(bytes)?;
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    Ok(Record {
        kind: probe.kind,
        obj,
    })
}

impl Record {
    /// The full record of a line that [`Probe::parse`] already validated.
    pub fn from_validated(bytes: &[u8]) -> Record {
        let obj: Map<String, Value> =
            serde_json::from_slice(bytes).expect("a validated line is a JSON object");
        let kind = Kind::from_name(obj.get("kind").and_then(Value::as_str).unwrap_or(""));
        Record { kind, obj }
    }
}

/// Deserialises a field as its raw JSON text, keeping `null` apart from absent.
fn raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// The named fields of a line as raw JSON slices of it, everything else skipped: enough to
/// validate a line and find its key without building a JSON tree. Absent is None; `null` is
/// `Some("null")`.
#[derive(Debug, Default, serde::Deserialize)]
#[allow(missing_docs)]
pub struct RawFields<'a> {
    #[serde(default, borrow, deserialize_with = "raw")]
    pub kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub format: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub version: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub r#type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub title: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub uri: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub oid: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub server_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub external_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub deleted: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub last_updated: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub created_at: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub source_url: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub report: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub field_type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub allow_multiple: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub field_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub subject: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub value: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub ts_updated: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub flag_type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub user_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub reason: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub ts_created: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub body: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    pub posts: Option<&'a RawValue>,
}

/// A validated line, read only as far as its key and the named fields.
#[derive(Debug)]
pub struct Probe<'a> {
    /// The kind, or [`Kind::Other`].
    pub kind: Kind,
    /// The `kind` string.
    pub kind_name: Cow<'a, str>,
    /// The named fields, as raw JSON.
    pub raw: RawFields<'a>,
    /// The line itself.
    pub line: &'a [u8],
}

/// Field type expectations for validation.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    Str,
    Bool,
    Subject,
    Array,
}

/// A borrowed subject, as read from raw JSON.
#[derive(serde::Deserialize)]
struct RawSubject<'a> {
    #[serde(borrow)]
    otype: Cow<'a, str>,
    oid: i64,
}

/// Reads an integer from raw JSON text (an integer literal that fits i64). `-0` is none:
/// serde_json reads it as the float -0.0, so the record built from the line would hold a float
/// where the probe saw the integer 0 (and its key would be `-0.0`).
pub fn raw_int(r: &RawValue) -> Option<i64> {
    match r.get() {
        "-0" => None,
        t => t.parse::<i64>().ok(),
    }
}

/// Reads a string from raw JSON text.
pub fn raw_str(r: &RawValue) -> Option<Cow<'_, str>> {
    if r.get().starts_with('"') {
        serde_json::from_str(r.get()).ok()
    } else {
        None
    }
}

/// Reads a subject `{"otype", "oid"}` from raw JSON text.
pub fn raw_subject(r: &RawValue) -> Option<(Cow<'_, str>, i64)> {
    if !r.get().starts_with('{') {
        return None;
    }
    let s: RawSubject = serde_json::from_str(r.get()).ok()?;
    Some((s.otype, s.oid))
}

fn ty_ok(r: &RawValue, ty: Ty) -> bool {
    let t = r.get();
    match ty {
        Ty::Int => raw_int(r).is_some(),
        Ty::Str => t.starts_with('"'),
        Ty::Bool => t == "true" || t == "false",
        Ty::Subject => raw_subject(r).is_some(),
        Ty::Array => t.starts_with('['),
    }
}

fn check(name: &str, v: Option<&RawValue>, ty: Ty, required: bool) -> Result<(), String> {
    let v = match v {
        None if required => return Err(format!("missing required field `{name}`")),
        None => return Ok(()),
        Some(v) if !required && v.get() == "null" => return Ok(()),
        Some(v) => v,
    };
    if ty_ok(v, ty) {
        return Ok(());
    }
    let want = match ty {
        Ty::Int => "an integer",
        Ty::Str => "a string",
        Ty::Bool => "true or false",
        Ty::Subject => "a subject {\"otype\": string, \"oid\": integer}",
        Ty::Array => "a list",
    };
    Err(format!(
        "field `{name}` must be {want}, found {}",
        short_raw(v.get())
    ))
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

/// A value shortened for messages.
pub fn short(v: &Value) -> String {
    short_raw(&v.to_string())
}

fn short_raw(s: &str) -> String {
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

fn one_of(name: &str, v: Option<&RawValue>, allowed: &[&str]) -> Result<(), String> {
    match v.and_then(raw_str) {
        Some(s) if allowed.contains(&s.as_ref()) => Ok(()),
        _ => Err(format!(
            "field `{name}` must be one of {}, found {}",
            allowed.join(", "),
            v.map_or("nothing".into(), |v| short_raw(v.get()))
        )),
    }
}

/// Deepest nesting of arrays and objects that serde_json builds into a tree (its recursion
/// limit); the probe reads raw values without that limit, so it checks it here, or a deep line
/// would pass the probe and fail (or panic) where the record is built later.
pub const MAX_DEPTH: usize = 127;

/// Refuses a line nested deeper than [`MAX_DEPTH`]. Cheap: lines with few brackets are not scanned.
fn check_depth(bytes: &[u8]) -> Result<(), String> {
    if memchr::memchr2_iter(b'[', b'{', bytes)
        .nth(MAX_DEPTH)
        .is_none()
    {
        return Ok(());
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match b {
                _ if esc => esc = false,
                b'\\' => esc = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "malformed JSON (recursion limit exceeded: nested deeper than {MAX_DEPTH} levels at byte {})",
                        i + 1
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a line with an invalid `\\uD800`–`\\uDFFF` escape (a lone surrogate), which the
/// probe's raw values let through but a JSON tree refuses. Only lines holding such an escape are
/// parsed in full, so ordinary lines cost a scan for backslashes.
fn check_surrogates(bytes: &[u8]) -> Result<(), String> {
    let surrogate = memchr::memchr_iter(b'\\', bytes).any(|i| {
        bytes.get(i + 1) == Some(&b'u')
            && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
            && matches!(
                bytes.get(i + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
    });
    if surrogate {
        serde_json::from_slice::<Value>(bytes).map_err(|e| format!("malformed JSON ({e})"))?;
    }
    Ok(())
}

/// A post of a conversation, for validation.
#[derive(serde::Deserialize)]
struct RawPost<'a> {
    #[serde(default, borrow, deserialize_with = "raw")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    user_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    text: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    ts_created: Option<&'a RawValue>,
}

impl<'a> Probe<'a> {
    /// Parses and validates a line (SPEC §1) without building a JSON tree.
    pub fn parse(bytes: &'a [u8]) -> Result<Probe<'a>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 ({e})"))?;
        check_depth(bytes)?;
        check_surrogates(bytes)?;
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            // Tell "not an object" apart from broken JSON.
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err("not a JSON object".into()),
                Err(e) => Err(format!("malformed JSON ({e})")),
            };
        }
        let raw: RawFields =
            serde_json::from_str(text).map_err(|e| format!("malformed JSON ({e})"))?;
        let kind_name = match raw.kind {
            None => return Err("missing `kind`".into()),
            Some(k) => raw_str(k).ok_or("`kind` is not a string")?,
        };
        let p = Probe {
            kind: Kind::from_name(&kind_name),
            kind_name,
            raw,
            line: bytes,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), String> {
        use Ty::*;
        let r = &self.raw;
        match self.kind {
            Kind::Header => {
                if r.format.and_then(raw_str).as_deref() != Some("catalog-export") {
                    return Err("header `format` must be \"catalog-export\"".into());
                }
                match r.version {
                    Some(v) if raw_int(v) == Some(1) => {}
                    Some(v) => {
                        return Err(format!(
                        "export format version {} is not supported (this lookmig reads version 1)",
                        short_raw(v.get())
                    ))
                    }
                    None => return Err("header without `version`".into()),
                }
            }
            Kind::BiServer => {
                check("id", r.id, Int, true)?;
                check("type", r.r#type, Str, true)?;
                check("title", r.title, Str, false)?;
                check("uri", r.uri, Str, false)?;
            }
            Kind::BiFolder => {
                check("oid", r.oid, Int, true)?;
                check("server_id", r.server_id, Int, true)?;
                check("external_id", r.external_id, Str, true)?;
            }
            Kind::BiReport | Kind::BiReportColumn => {
                check("oid", r.oid, Int, true)?;
                check("server_id", r.server_id, Int, true)?;
                check("external_id", r.external_id, Str, true)?;
                check("deleted", r.deleted, Bool, false)?;
                check("last_updated", r.last_updated, Str, false)?;
                check("created_at", r.created_at, Str, false)?;
                if self.kind == Kind::BiReportColumn {
                    check("report", r.report, Str, true)?;
                } else {
                    check("source_url", r.source_url, Str, false)?;
                }
            }
            Kind::CustomField => {
                check("id", r.id, Int, true)?;
                check("field_type", r.field_type, Str, true)?;
                one_of("field_type", r.field_type, &FIELD_TYPES)?;
                check("allow_multiple", r.allow_multiple, Bool, false)?;
            }
            Kind::FieldValue => {
                check("field_id", r.field_id, Int, true)?;
                check("subject", r.subject, Subject, true)?;
                if r.value.is_none() {
                    return Err("missing required field `value`".into());
                }
                check("ts_updated", r.ts_updated, Str, false)?;
            }
            Kind::TrustFlag => {
                check("id", r.id, Int, true)?;
                check("flag_type", r.flag_type, Str, true)?;
                one_of(
                    "flag_type",
                    r.flag_type,
                    &["ENDORSEMENT", "WARNING", "DEPRECATION"],
                )?;
                check("subject", r.subject, Subject, true)?;
                check("user_id", r.user_id, Int, true)?;
                check("reason", r.reason, Str, false)?;
                check("ts_created", r.ts_created, Str, false)?;
            }
            Kind::Tag => {
                check("name", r.name, Str, true)?;
                check("subject", r.subject, Subject, true)?;
            }
            Kind::Star => {
                check("user_id", r.user_id, Int, true)?;
                check("subject", r.subject, Subject, true)?;
                check("ts_created", r.ts_created, Str, false)?;
            }
            Kind::Article => {
                check("id", r.id, Int, true)?;
                check("body", r.body, Str, true)?;
                check("title", r.title, Str, false)?;
            }
            Kind::Conversation => {
                check("id", r.id, Int, true)?;
                check("subject", r.subject, Subject, false)?;
                check("posts", r.posts, Array, true)?;
                let posts: Vec<&RawValue> = serde_json::from_str(r.posts.expect("checked").get())
                    .map_err(|e| format!("posts: {e}"))?;
                for (i, post) in posts.into_iter().enumerate() {
                    let p: RawPost = match post.get().starts_with('{') {
                        true => serde_json::from_str(post.get())
                            .map_err(|e| format!("posts[{i}]: {e}"))?,
                        false => return Err(format!("posts[{i}] is not an object")),
                    };
                    let at = |e: String| format!("posts[{i}]: {e}");
                    check("id", p.id, Int, true).map_err(at)?;
                    check("user_id", p.user_id, Int, true).map_err(at)?;
                    check("text", p.text, Str, true).map_err(at)?;
                    check("ts_created", p.ts_created, Str, false).map_err(at)?;
                }
            }
            Kind::Other => match r.id {
                None => {}
                Some(v) if v.get().starts_with('"') || raw_int(v).is_some() => {}
                Some(v) => {
                    return Err(format!(
                        "field `id` must be an integer or a string, found {}",
                        short_raw(v.get())
                    ))
                }
            },
        }
        Ok(())
    }

    /// An integer field.
    pub fn int(&self, v: Option<&RawValue>) -> Option<i64> {
        v.and_then(raw_int)
    }

    /// The top-level subject, for the kinds that may have one.
    pub fn subject(&self) -> Option<(Cow<'_, str>, i64)> {
        match self.kind {
            Kind::FieldValue
            | Kind::TrustFlag
            | Kind::Tag
            | Kind::Star
            | Kind::Conversation
            | Kind::Other => self.raw.subject.and_then(raw_subject),
            _ => None,
        }
    }

    /// The record key of SPEC §1; the same as [`Record::key`] of the parsed record.
    pub fn key(&self) -> String {
        let r = &self.raw;
        let int = |v: Option<&RawValue>| {
            v.and_then(raw_int)
                .map(|i| i.to_string())
                .unwrap_or_default()
        };
        let subject_key = |tail: String| match r.subject.and_then(raw_subject) {
            Some((otype, oid)) => format!("{otype}:{oid}:{tail}"),
            None => tail,
        };
        match self.kind {
            Kind::Header => "header".into(),
            Kind::BiServer
            | Kind::CustomField
            | Kind::TrustFlag
            | Kind::Article
            | Kind::Conversation => int(r.id),
            Kind::BiFolder | Kind::BiReport | Kind::BiReportColumn => int(r.oid),
            Kind::FieldValue => subject_key(int(r.field_id)),
            Kind::Tag => subject_key(r.name.and_then(raw_str).unwrap_or_default().into_owned()),
            Kind::Star => subject_key(int(r.user_id)),
            Kind::Other => match r.id {
                Some(v) if v.get().starts_with('"') => raw_str(v).unwrap_or_default().into_owned(),
                Some(v) => int(Some(v)),
                None => {
                    let v: Value = serde_json::from_slice(self.line).expect("validated JSON");
                    crate::input::sha256_bytes(canonical_json(&v).as_bytes())
                }
            },
        }
    }
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
    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in 1..140 {
            let line = format!(
                "{{\"kind\":\"x\",\"a\":\"[{{\\\"[\",\"b\":{}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let tree = serde_json::from_str::<serde_json::Value>(&line).is_ok();
            let probe = super::Probe::parse(line.as_bytes());
            assert_eq!(probe.is_ok(), tree, "depth {depth}: {probe:?}");
            if let Ok(p) = probe {
                let _ = p.key();
            }
        }
    }

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

/// An RFC 3339 timestamp as an instant (seconds, nanoseconds), for ordering; None when missing
/// or unparsable (SPEC §1: such a timestamp sorts last).
pub fn instant(v: Option<&Value>) -> Option<(i64, u32)> {
    instant_str(v?.as_str())
}

/// [`instant`] of a string.
pub fn instant_str(s: Option<&str>) -> Option<(i64, u32)> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
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

/// Finds duplicate record keys (SPEC §1: a key occurs once per export) without a table of
/// keys: (64-bit key hash, line number) pairs go through an external sort of integers, and
/// equal hashes meet. Lines whose hashes meet are read again and their keys compared, so a
/// collision of two different keys is never taken for a duplicate.
pub struct DuplicateKeys(crate::sort::PairSorter);

impl DuplicateKeys {
    /// A finder that holds at most `memory` bytes before it spills to disk.
    pub fn new(memory: usize) -> DuplicateKeys {
        DuplicateKeys(crate::sort::PairSorter::new(memory))
    }

    /// The 64-bit hash of a (kind, key) pair that [`DuplicateKeys::add_hash`] takes; the same
    /// in every run.
    pub fn hash(kind: &str, key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        kind.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    /// Notes the key of a record on a line.
    pub fn add(&mut self, kind: &str, key: &str, line: u64) -> anyhow::Result<()> {
        self.add_hash(Self::hash(kind, key), line)
    }

    /// Notes a key already hashed with [`DuplicateKeys::hash`].
    pub fn add_hash(&mut self, hash: u64, line: u64) -> anyhow::Result<()> {
        self.0.push(hash, line)
    }

    /// Every line whose key an earlier line already had, with the message for it and its bytes
    /// (read again from `input`), in line order.
    pub fn finish(
        self,
        input: &crate::input::Input,
    ) -> anyhow::Result<Vec<(u64, String, Vec<u8>)>> {
        // Lines that share a hash, each run of them in line order.
        let mut meets: Vec<Vec<u64>> = Vec::new();
        let (mut run, mut run_hash) = (Vec::new(), None);
        let mut close = |run: &mut Vec<u64>| {
            if run.len() > 1 {
                meets.push(run.clone());
            }
            run.clear();
        };
        self.0.finish(|hash, line| {
            if run_hash != Some(hash) {
                close(&mut run);
                run_hash = Some(hash);
            }
            run.push(line);
            Ok(())
        })?;
        close(&mut run);
        if meets.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<u64> = meets.iter().flatten().copied().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let texts: std::collections::HashMap<u64, Vec<u8>> = wanted
            .iter()
            .copied()
            .zip(input.lines_at(&wanted)?)
            .collect();
        let mut dups = Vec::new();
        for run in meets {
            let mut seen: Vec<(String, String)> = Vec::new();
            for no in run {
                let Some(bytes) = texts.get(&no) else {
                    continue;
                };
                // Every line here passed the scan's parse, which is deterministic.
                let Ok(p) = Probe::parse(bytes) else { continue };
                let this = (p.kind_name.to_string(), p.key());
                if seen.contains(&this) {
                    let msg = format!(
                        "duplicate record key: {} {:?} occurs on an earlier line",
                        this.0, this.1
                    );
                    dups.push((no, msg, bytes.clone()));
                } else {
                    seen.push(this);
                }
            }
        }
        dups.sort_unstable_by_key(|d| d.0);
        Ok(dups)
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

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn probe_and_full_parse_agree_on_every_key_of_a_generated_export() {
        let mut buf = Vec::new();
        let opts = crate::generate::GenerateOptions {
            reports: 120,
            seed: 5,
            servers: 2,
        };
        crate::generate::generate(&opts, &mut buf).unwrap();
        let mut n = 0;
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let p = Probe::parse(line).unwrap();
            let r = parse_line(line).unwrap();
            assert_eq!(p.key(), r.key(), "{}", String::from_utf8_lossy(line));
            assert_eq!(p.kind, r.kind);
            n += 1;
        }
        assert!(n > 1000);
    }

    #[test]
    fn a_hash_collision_of_different_keys_is_no_duplicate() {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let lines = [
            r#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"b","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"b","subject":{"otype":"t","oid":1}}"#,
        ];
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        let input = crate::input::Input::new(f.path().to_str().unwrap()).unwrap();
        // Every line under one hash, as if the keys collided.
        let mut keys = DuplicateKeys::new(32);
        for no in [3, 1, 4, 2] {
            keys.add_hash(7, no).unwrap();
        }
        keys.add("tag", "t:1:z", 9).unwrap();
        let dups = keys.finish(&input).unwrap();
        let got: Vec<u64> = dups.iter().map(|d| d.0).collect();
        assert_eq!(got, vec![3, 4]);
        assert!(dups[0].1.contains("duplicate record key: tag \"t:1:a\""));
        assert_eq!(dups[1].2, lines[3].as_bytes());
    }

    #[test]
    fn null_is_not_absent_and_duplicate_fields_are_refused() {
        let fv =
            br#"{"kind":"field_value","field_id":4,"subject":{"otype":"t","oid":1},"value":null}"#;
        assert!(
            Probe::parse(fv).is_ok(),
            "a null value is an empty value, not a missing one"
        );
        let dup = br#"{"kind":"tag","name":"a","name":"b","subject":{"otype":"t","oid":1}}"#;
        assert!(Probe::parse(dup).unwrap_err().contains("duplicate field"));
        assert!(Probe::parse(b"  [1]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(Probe::parse(b"{\"kind\":1}")
            .unwrap_err()
            .contains("`kind` is not a string"));
    }
}
