//! The validating probe (SPEC §1): reads a line as far as its kind, key and named fields,
//! checks every rule of §1 on them without building a JSON tree, and says what is wrong.
//!
//! Validation lives here, in one place, so that migrate, restore, verify and `db load` agree on
//! what a malformed line is.

use super::fields::{fields, Field, Ty, POST};
use super::{canonical_json, Kind, Record, FIELD_TYPES};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// Parses and validates one line (SPEC §1) into a full record. The error says what is wrong,
/// without the location, which the caller knows.
pub fn parse_line(bytes: &[u8]) -> Result<Record, String> {
    let probe = Probe::parse(bytes)?;
    let value: Value = from_json_bytes(bytes).map_err(|e| format!("malformed JSON ({e})"))?;
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
        let text = std::str::from_utf8(bytes).expect("a validated line is UTF-8");
        Record::from_map(serde_json::from_str(text).expect("a validated line is a JSON object"))
    }
}

/// Deserialises a field as its raw JSON text, keeping `null` apart from absent.
fn raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// The named fields, from one list: the struct, and both ways to reach a field by its name.
macro_rules! named_fields {
    ($($field:ident = $name:literal),* $(,)?) => {
        /// The named fields of a line as raw JSON slices of it, everything else skipped:
        /// enough to validate a line and find its key without building a JSON tree. Absent is
        /// None; `null` is `Some("null")`.
        #[derive(Debug, Default)]
        #[allow(missing_docs)]
        pub struct RawFields<'a> {
            $(pub $field: Option<&'a RawValue>,)*
        }

        impl<'a> RawFields<'a> {
            /// The place of a named field, and its name as the table of fields spells it.
            fn slot(&mut self, name: &str) -> Option<(&'static str, &mut Option<&'a RawValue>)> {
                match name {
                    $($name => Some(($name, &mut self.$field)),)*
                    _ => None,
                }
            }

            /// A named field by its name in the table of fields ([`fields`]); None for a name
            /// this struct does not read (only the fields the probe checks or keys on need to be
            /// here).
            pub fn get(&self, name: &str) -> Option<&'a RawValue> {
                match name {
                    $($name => self.$field,)*
                    _ => None,
                }
            }
        }
    };
}

named_fields! {
    kind = "kind",
    format = "format",
    version = "version",
    id = "id",
    r#type = "type",
    title = "title",
    uri = "uri",
    oid = "oid",
    server_id = "server_id",
    external_id = "external_id",
    name = "name",
    deleted = "deleted",
    last_updated = "last_updated",
    created_at = "created_at",
    source_url = "source_url",
    report = "report",
    field_type = "field_type",
    allow_multiple = "allow_multiple",
    field_id = "field_id",
    subject = "subject",
    value = "value",
    ts_updated = "ts_updated",
    flag_type = "flag_type",
    user_id = "user_id",
    reason = "reason",
    ts_created = "ts_created",
    body = "body",
    posts = "posts",
}

/// Reads a line's top-level fields: the named ones into [`RawFields`] (a name twice is an
/// error, as serde's derived structs have it), and with `all`, every field in order, as
/// [`raw_object`] gives them (for a caller that needs the whole record too: one read, not two).
struct ReadFields<'p, 'a> {
    all: bool,
    /// Filled in place: a probe is a few hundred bytes, and moving it out of each layer of
    /// the read took a tenth of the read.
    raw: &'p mut RawFields<'a>,
    fields: &'p mut Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ReadFields<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ReadFields<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct RawFields")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        if self.all {
            self.fields.reserve(16);
        }
        while let Some(Name(k)) = m.next_key::<Name>()? {
            // A repeat is refused before its value is read, where serde's derive refuses it.
            let slot = match self.raw.slot(&k) {
                Some((name, slot)) if slot.is_some() => {
                    return Err(serde::de::Error::duplicate_field(name))
                }
                slot => slot.map(|(_, slot)| slot),
            };
            let v: &RawValue = m.next_value()?;
            if let Some(slot) = slot {
                *slot = Some(v);
            }
            if self.all {
                push_field(self.fields, k, v);
            }
        }
        Ok(())
    }
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
    /// Every top-level field in order, as [`raw_object`] reads them: only when read with
    /// [`Probe::parse_whole`], else empty.
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The line itself.
    pub line: &'a [u8],
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
    let t = r.get();
    if !t.starts_with('"') {
        return None;
    }
    // Most strings (every kind name, most keys) have no escape: a RawValue is JSON that
    // serde_json already read, so without a backslash its text between the quotes is the
    // string (a control character would have failed that read). Saves a parse per field read.
    if t.len() >= 2 && t.ends_with('"') && memchr::memchr(b'\\', t.as_bytes()).is_none() {
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    serde_json::from_str(t).ok()
}

/// Reads a subject `{"otype", "oid"}` from raw JSON text.
pub fn raw_subject(r: &RawValue) -> Option<(Cow<'_, str>, i64)> {
    if !r.get().starts_with('{') {
        return None;
    }
    // The form exports write, read without a parser (a subject is read several times a line);
    // any other spelling of it goes through serde_json.
    if let Some(s) = compact_subject(r.get()) {
        return Some(s);
    }
    let s: RawSubject = serde_json::from_str(r.get()).ok()?;
    Some((s.otype, s.oid))
}

/// A field's name, borrowed from the text unless it has an escape (serde's `Cow<str>`
/// always copies).
struct Name<'a>(Cow<'a, str>);
impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Adds a field to a list of fields in order: a repeated name keeps its last value, last.
fn push_field<'a>(out: &mut Vec<(Cow<'a, str>, &'a RawValue)>, k: Cow<'a, str>, v: &'a RawValue) {
    // Names are unique so far: a repeat is at most one earlier entry.
    if let Some(i) = out.iter().position(|(name, _)| name == &k) {
        out.remove(i);
    }
    out.push((k, v));
}

/// A JSON object's top-level fields in order, each value's text as written, without parsing
/// the values. A repeated name keeps its last value, as serde_json's maps do; a name with an
/// escape is decoded (owned). An error when the text is not a JSON object.
pub fn raw_object(bytes: &[u8]) -> serde_json::Result<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut m: M,
                ) -> Result<Self::Value, M::Error> {
                    let mut out: Vec<(Cow<str>, &RawValue)> = Vec::with_capacity(16);
                    while let Some((Name(k), v)) = m.next_entry::<Name, &'de RawValue>()? {
                        push_field(&mut out, k, v);
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    from_json_bytes::<Fields>(bytes).map(|f| f.0)
}

/// `serde_json::from_slice`, faster: one check of the whole text for UTF-8, then a reader that
/// trusts it (reading from bytes checks UTF-8 again for every string and raw value it hands
/// out, which took a twentieth of restore). Text that is not UTF-8 gets serde_json's own
/// error, which says where.
pub fn from_json_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// `{"otype":"…","oid":N}` exactly: no white space, no escape in the otype, N an integer.
fn compact_subject(t: &str) -> Option<(Cow<'_, str>, i64)> {
    let rest = t.strip_prefix(r#"{"otype":""#)?;
    let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
    let (otype, rest) = rest.split_at(end);
    let oid = rest.strip_prefix(r#"","oid":"#)?.strip_suffix('}')?;
    let valid = oid.bytes().all(|b| b.is_ascii_digit() || b == b'-') && oid != "-0";
    // A control character in the otype is invalid JSON; serde_json says so.
    if !valid || otype.bytes().any(|b| b < 0x20) {
        return None;
    }
    Some((Cow::Borrowed(otype), oid.parse().ok()?))
}

/// Checks a named field of the table ([`fields`]) on its raw value, or its absence: a required
/// one must be there, an optional one may be `null`, and a checked one must have its type.
fn check(f: &Field, v: Option<&RawValue>) -> Result<(), String> {
    let v = match v {
        None if f.required => return Err(format!("missing required field `{}`", f.name)),
        None => return Ok(()),
        Some(v) if !f.required && v.get() == "null" => return Ok(()),
        Some(_) if !f.checked => return Ok(()),
        Some(v) => v,
    };
    let t = v.get();
    let (ok, want) = match f.ty {
        Ty::Int => (raw_int(v).is_some(), "an integer"),
        Ty::Text => (t.starts_with('"'), "a string"),
        Ty::Bool => (t == "true" || t == "false", "true or false"),
        Ty::Subject => (
            raw_subject(v).is_some(),
            "a subject {\"otype\": string, \"oid\": integer}",
        ),
        Ty::Json => (true, "any JSON value"),
    };
    if ok {
        return Ok(());
    }
    Err(format!(
        "field `{}` must be {want}, found {}",
        f.name,
        short_raw(t)
    ))
}

/// A value shortened for messages.
pub fn short(v: &Value) -> String {
    short_raw(&v.to_string())
}

pub(super) fn short_raw(s: &str) -> String {
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
        from_json_bytes::<Value>(bytes).map_err(|e| format!("malformed JSON ({e})"))?;
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

impl<'a> RawPost<'a> {
    /// A field of the post by its name in [`POST`].
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        match name {
            "id" => self.id,
            "user_id" => self.user_id,
            "text" => self.text,
            "ts_created" => self.ts_created,
            _ => None,
        }
    }
}

impl<'a> Probe<'a> {
    /// Parses and validates a line (SPEC §1) without building a JSON tree.
    pub fn parse(bytes: &'a [u8]) -> Result<Probe<'a>, String> {
        let p = Self::read(bytes, true, false)?;
        p.validate()?;
        Ok(p)
    }

    /// [`Probe::parse`] that keeps every top-level field too ([`Probe::fields`]), for a
    /// caller that reads the whole record next (restore judging a change): one read of the
    /// line instead of two.
    pub fn parse_whole(bytes: &'a [u8]) -> Result<Probe<'a>, String> {
        let p = Self::read(bytes, true, true)?;
        p.validate()?;
        Ok(p)
    }

    /// [`Probe::parse`] of a line an earlier read of the same export already validated
    /// (migrate's second pass): the same fields and kind, without checking §1's rules again,
    /// which took a tenth of the parse. A line that is not even a JSON object still fails.
    pub fn parse_validated(bytes: &'a [u8]) -> Result<Probe<'a>, String> {
        Self::read(bytes, false, false)
    }

    /// Reads the named fields (and with `all`, every field) and the kind; `check` adds the
    /// nesting and escape checks that the JSON reading alone lets through.
    fn read(bytes: &'a [u8], check: bool, all: bool) -> Result<Probe<'a>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 ({e})"))?;
        if check {
            check_depth(bytes)?;
            check_surrogates(bytes)?;
        }
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            // Tell "not an object" apart from broken JSON.
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err("not a JSON object".into()),
                Err(e) => Err(format!("malformed JSON ({e})")),
            };
        }
        let mut probe = Probe {
            kind: Kind::Other,
            kind_name: Cow::Borrowed(""),
            raw: RawFields::default(),
            fields: Vec::new(),
            line: bytes,
        };
        {
            use serde::de::DeserializeSeed;
            let mut de = serde_json::Deserializer::from_str(text);
            ReadFields {
                all,
                raw: &mut probe.raw,
                fields: &mut probe.fields,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| format!("malformed JSON ({e})"))?;
        }
        probe.kind_name = match probe.raw.kind {
            None => return Err("missing `kind`".into()),
            Some(k) => raw_str(k).ok_or("`kind` is not a string")?,
        };
        probe.kind = Kind::from_name(&probe.kind_name);
        Ok(probe)
    }

    /// Checks the line against SPEC §1: its kind's rules on values, then every named field
    /// of the table ([`fields`]).
    fn validate(&self) -> Result<(), String> {
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
            _ => {}
        }
        for f in fields(self.kind) {
            check(f, r.get(f.name))?;
        }
        match self.kind {
            Kind::CustomField => one_of("field_type", r.field_type, &FIELD_TYPES)?,
            Kind::TrustFlag => one_of(
                "flag_type",
                r.flag_type,
                &["ENDORSEMENT", "WARNING", "DEPRECATION"],
            )?,
            Kind::Conversation => {
                let posts = r.posts.expect("checked").get();
                if !posts.starts_with('[') {
                    return Err(format!(
                        "field `posts` must be a list, found {}",
                        short_raw(posts)
                    ));
                }
                let posts: Vec<&RawValue> =
                    serde_json::from_str(posts).map_err(|e| format!("posts: {e}"))?;
                for (i, post) in posts.into_iter().enumerate() {
                    let p: RawPost = match post.get().starts_with('{') {
                        true => serde_json::from_str(post.get())
                            .map_err(|e| format!("posts[{i}]: {e}"))?,
                        false => return Err(format!("posts[{i}] is not an object")),
                    };
                    for f in POST {
                        check(f, p.get(f.name)).map_err(|e| format!("posts[{i}]: {e}"))?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An integer field.
    pub fn int(&self, v: Option<&RawValue>) -> Option<i64> {
        v.and_then(raw_int)
    }

    /// The top-level subject, for the kinds that may have one.
    pub fn subject(&self) -> Option<(Cow<'_, str>, i64)> {
        if !self.kind.has_subject() {
            return None;
        }
        self.raw.subject.and_then(raw_subject)
    }

    /// The record key of SPEC §1; the same as [`Record::key`] of the parsed record.
    pub fn key(&self) -> String {
        super::model::record_key(self.kind, self)
    }

    /// The record key this record would have with `subject` for its subject (a record moved
    /// onto a survivor), without making that record.
    pub fn key_with_subject(&self, subject: &super::Subject) -> String {
        super::model::record_key(self.kind, &WithSubject(self, subject))
    }
}

/// A probed record read as if its subject were another ([`Probe::key_with_subject`]).
struct WithSubject<'p, 'a>(&'p Probe<'a>, &'p super::Subject);

impl super::model::KeyFields for WithSubject<'_, '_> {
    fn int(&self, name: &str, out: &mut String) {
        super::model::KeyFields::int(self.0, name, out)
    }

    fn text(&self, name: &str, out: &mut String) {
        super::model::KeyFields::text(self.0, name, out)
    }

    fn subject(&self, out: &mut String) {
        out.push_str(&self.1.otype);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(self.1.oid));
        out.push(':');
    }

    fn other(&self, out: &mut String) {
        // An id-less record's key hashes the whole record, subject and all.
        assert!(
            self.0.raw.id.is_some(),
            "the key of a moved id-less record needs the moved record"
        );
        super::model::KeyFields::other(self.0, out)
    }
}

impl super::model::KeyFields for Probe<'_> {
    fn int(&self, name: &str, out: &mut String) {
        // A JSON integer that fits i64 is written as Rust writes it (no sign but '-', no
        // leading zero; raw_int refuses "-0"): its text is the key's.
        if let Some(v) = self.raw.get(name).filter(|v| raw_int(v).is_some()) {
            out.push_str(v.get());
        }
    }

    fn text(&self, name: &str, out: &mut String) {
        if let Some(t) = self.raw.get(name).and_then(raw_str) {
            out.push_str(&t);
        }
    }

    fn subject(&self, out: &mut String) {
        if let Some((otype, oid)) = self.raw.subject.and_then(raw_subject) {
            out.push_str(&otype);
            out.push(':');
            out.push_str(itoa::Buffer::new().format(oid));
            out.push(':');
        }
    }

    fn other(&self, out: &mut String) {
        match self.raw.id {
            Some(v) if v.get().starts_with('"') => {
                out.push_str(&raw_str(v).unwrap_or_default());
            }
            Some(_) => super::model::KeyFields::int(self, "id", out),
            None => {
                let text = std::str::from_utf8(self.line).expect("validated UTF-8");
                let mut canonical = Vec::with_capacity(text.len());
                if !super::model::canonical_json_raw(text.trim(), &mut canonical) {
                    let v: Value = serde_json::from_str(text).expect("validated JSON");
                    canonical = canonical_json(&v).into_bytes();
                }
                out.push_str(&crate::input::sha256_bytes(&canonical));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The named fields of a JSON object.
    fn named(text: &str) -> RawFields<'_> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(text);
        let (mut raw, mut fields) = (RawFields::default(), Vec::new());
        ReadFields {
            all: false,
            raw: &mut raw,
            fields: &mut fields,
        }
        .deserialize(&mut de)
        .unwrap();
        raw
    }

    #[test]
    fn the_key_with_another_subject_is_the_key_of_the_moved_record() {
        let to = super::super::Subject {
            otype: "bi_report".into(),
            oid: 9,
        };
        // (line, whether its key holds its subject)
        let lines = [
            (
                r#"{"kind":"tag","name":"a\u00e9","subject":{"otype":"bi_report","oid":1}}"#,
                true,
            ),
            (
                r#"{"kind":"field_value","field_id":4,"subject":{"oid":1,"otype":"bi_report"},"value":"x"}"#,
                true,
            ),
            (
                r#"{"kind":"star","user_id":7,"subject":{"otype":"bi_report","oid":1}}"#,
                true,
            ),
            (
                r#"{"kind":"trust_flag","id":3,"flag_type":"WARNING","user_id":7,"subject":{"otype":"bi_report","oid":1}}"#,
                false,
            ),
            (
                r#"{"kind":"widget","id":"w1","subject":{"otype":"bi_report","oid":1}}"#,
                false,
            ),
        ];
        for (line, by_subject) in lines {
            let p = Probe::parse(line.as_bytes()).unwrap();
            let mut moved = Record::from_validated(line.as_bytes());
            moved.set_subject(&to);
            assert_eq!(p.key_with_subject(&to), moved.key(), "{line}");
            assert_eq!(p.key_with_subject(&to) != p.key(), by_subject, "{line}");
        }
    }

    #[test]
    fn a_whole_read_keeps_every_field_as_raw_object_reads_them() {
        let lines = [
            r#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","x":1,"name":"a","x":[2],"subject":{"otype":"t","oid":1}}"#,
            r#"{ "kind" : "widget" , "id" : 7 , "na\u006de" : "n" , "extra" : {"a":[1,2]} }"#,
            r#"{"kind":"view_event","user_id":3,"subject":{"otype":"t","oid":1},"at":"2020-01-01T00:00:00Z"}"#,
        ];
        for line in lines {
            let p = Probe::parse_whole(line.as_bytes()).unwrap();
            let text = |f: &[(Cow<str>, &RawValue)]| -> Vec<(String, String)> {
                f.iter()
                    .map(|(k, v)| (k.to_string(), v.get().to_string()))
                    .collect()
            };
            let want = raw_object(line.as_bytes()).unwrap();
            assert_eq!(text(&p.fields), text(&want), "{line}");
            assert!(Probe::parse(line.as_bytes()).unwrap().fields.is_empty());
        }
    }

    #[test]
    fn a_named_field_twice_is_refused_with_serdes_words_and_place() {
        let dup = br#"{"kind":"tag","name":"a","name":"b","subject":{"otype":"t","oid":1}}"#;
        let want = "malformed JSON (duplicate field `name` at line 1 column 31)";
        assert_eq!(Probe::parse(dup).unwrap_err(), want);
        assert_eq!(Probe::parse_whole(dup).unwrap_err(), want);
        // Trailing text after the object, as serde_json::from_str refuses it.
        let trailing = br#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}} x"#;
        assert_eq!(
            Probe::parse(trailing).unwrap_err(),
            "malformed JSON (trailing characters at line 1 column 59)"
        );
    }

    #[test]
    fn every_checked_field_of_the_table_is_read() {
        for kind in Kind::NAMED.into_iter().chain([Kind::Other]) {
            for f in fields(kind).iter().filter(|f| f.checked) {
                let line = format!("{{\"{}\":1}}", f.name);
                let raw = named(&line);
                assert!(raw.get(f.name).is_some(), "{:?} {}", kind, f.name);
            }
        }
        for f in POST {
            let line = format!("{{\"{}\":1}}", f.name);
            let raw: RawPost = serde_json::from_str(&line).unwrap();
            assert!(raw.get(f.name).is_some(), "post {}", f.name);
        }
    }

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
    fn probe_and_full_parse_agree_on_every_key_of_a_generated_export() {
        let mut n = 0;
        for line in &crate::generate::sample_lines(120, 5) {
            let p = Probe::parse(line).unwrap();
            let r = parse_line(line).unwrap();
            assert_eq!(p.key(), r.key(), "{}", String::from_utf8_lossy(line));
            assert_eq!(p.kind, r.kind);
            n += 1;
        }
        assert!(n > 1000);
    }

    #[test]
    fn raw_subject_reads_every_spelling_as_serde_json_does() {
        for text in [
            r#"{"otype":"bi_report","oid":12}"#,
            r#"{"otype":"bi_report","oid":-12}"#,
            r#"{"otype":"bi_report","oid":-0}"#,
            r#"{"otype":"bi_report","oid":99999999999999999999}"#,
            r#"{"otype":"bi_report","oid":1.0}"#,
            r#"{"otype":"bi_\u0072eport","oid":3}"#,
            r#"{"otype":"a\"b","oid":3}"#,
            r#"{ "otype": "bi_report", "oid": 4 }"#,
            r#"{"oid":5,"otype":"bi_report"}"#,
            r#"{"otype":"bi_report","oid":6,"extra":1}"#,
            r#"{"otype":"bi_report"}"#,
            r#"{"otype":1,"oid":6}"#,
        ] {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            let want = serde_json::from_str::<RawSubject>(text)
                .ok()
                .map(|s| (s.otype.into_owned(), s.oid));
            let got = raw_subject(&raw).map(|(o, i)| (o.into_owned(), i));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn raw_str_reads_strings_with_and_without_escapes_as_serde_json_does() {
        for text in [
            r#""""#,
            r#""plain""#,
            r#""é ünïcode""#,
            r#""with \"quote\"""#,
            r#""back\\slash""#,
            r#""\u00e9""#,
            r#""tab\t""#,
        ] {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            let want: String = serde_json::from_str(text).unwrap();
            assert_eq!(raw_str(&raw).as_deref(), Some(want.as_str()), "{text}");
        }
        for text in ["1", "null", "[\"a\"]", "{\"a\":\"b\"}"] {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            assert_eq!(raw_str(&raw), None, "{text}");
        }
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
