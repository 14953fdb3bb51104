//! The definitions the conservation law is checked with, written again from the SPEC so that
//! verify does not share them with the code it checks: a merge key (§4), "empty" (§4), the
//! field definitions (§1) and reference repair (§5). A bug in [`crate::merge`] or
//! [`crate::refs`] then shows as a failed verification instead of being repeated by it.
//!
//! These are plain where the migration's are compact and fast: strings for merge keys, one
//! sorted list of versions for both the reference map and the groups.
//!
//! Mentions: where the `<a …>` start tags of rich text are is the one thing borrowed, from
//! [`crate::mentions::start_tags`]. Which `<` opens a tag depends on the whole WHATWG tokenizer
//! (comments, raw-text elements, script data, foreign content), and a second copy of that would
//! be a second place for the same bugs, not an independent check; a naive scan for `<a` would
//! see mentions inside comments or `<textarea>` that the migration rightly leaves alone, and
//! report them as lost. Everything after that is this module's own: reading the tag's
//! attributes, which of them make a mention, and the rewrite of `data-oid` and of the `href`
//! path segments.

use crate::groups::{COLUMN, REPORT};
use crate::record::{Kind, Record};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The merge key of a curation record (SPEC §4): field; flag type and user; tag name; star
/// user. None for the kinds that never merge.
pub(super) fn merge_key(r: &Record) -> Option<String> {
    let o = &r.obj;
    let int = |f: &str| o.get(f).and_then(Value::as_i64);
    let text = |f: &str| o.get(f).and_then(Value::as_str);
    match r.kind {
        Kind::FieldValue => Some(format!("field_id={}", int("field_id")?)),
        Kind::TrustFlag => Some(format!(
            "flag_type={} user_id={}",
            text("flag_type")?,
            int("user_id")?
        )),
        Kind::Tag => Some(format!("tag name={}", text("name")?)),
        Kind::Star => Some(format!("star user_id={}", int("user_id")?)),
        _ => None,
    }
}

/// Empty (SPEC §4): null, an empty list, or a string that is blank once HTML tags are removed
/// and `&nbsp;` is taken as a space.
pub(super) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::String(s) => {
            // Tags: from `<` to the next `>` (one left open runs to the end of the text).
            let mut rest = s.as_str();
            let mut text = String::new();
            while let Some(lt) = rest.find('<') {
                text.push_str(&rest[..lt]);
                rest = rest[lt..].find('>').map_or("", |gt| &rest[lt + gt + 1..]);
            }
            text.push_str(rest);
            text.replace("&nbsp;", " ").chars().all(char::is_whitespace)
        }
        _ => false,
    }
}

/// The field definitions (SPEC §1): `custom_field` lines (the first of an id counts) over the
/// built-in fields 3, 4 and 8.
#[derive(Debug, Default)]
pub(super) struct Fields {
    defs: HashMap<i64, (String, bool)>,
}

impl Fields {
    /// Adds a definition unless the id already has one.
    pub(super) fn define(&mut self, id: i64, field_type: &str, allow_multiple: bool) {
        self.defs
            .entry(id)
            .or_insert_with(|| (field_type.to_string(), allow_multiple));
    }

    /// The type and `allow_multiple` of a field, or None when nothing defines it.
    fn get(&self, id: i64) -> Option<(&str, bool)> {
        match self.defs.get(&id) {
            Some((t, m)) => Some((t.as_str(), *m)),
            None => match id {
                3 => Some(("TEXT", false)),
                4 => Some(("RICH_TEXT", false)),
                8 => Some(("OBJECT_SET", true)),
                _ => None,
            },
        }
    }

    /// Whether a field is multi-valued (MULTI_PICKER, or OBJECT_SET with `allow_multiple`), or
    /// None when nothing defines it (its values are then judged by their JSON type).
    pub(super) fn multi(&self, id: i64) -> Option<bool> {
        self.get(id)
            .map(|(t, m)| t == "MULTI_PICKER" || (t == "OBJECT_SET" && m))
    }
}

/// The reference map (SPEC §5): the oid of every retired version to its survivor's, per otype,
/// and the survivors (the versions of a multi-version group, for the law).
///
/// Sorted lists searched by halving, not hash maps: at 200,000 reports they hold 0.8 million
/// retired versions (16 bytes each) and 0.5 million survivors (8), where two hash maps (this
/// and the survivors, each version to its survivor) held 78 MB.
#[derive(Debug, Default)]
pub(super) struct RefMap {
    /// Per otype (report, column): (retired oid, survivor oid).
    retired: [Vec<(i64, i64)>; 2],
    survivors: [Vec<i64>; 2],
    /// Built by `finish`, for the look-ups: of `retired`, then of `survivors`.
    buckets: [[crate::lookup::Buckets; 2]; 2],
}

fn otype_index(otype: &str) -> Option<usize> {
    match otype {
        REPORT => Some(0),
        COLUMN => Some(1),
        _ => None,
    }
}

impl RefMap {
    /// Records that `oid` of `otype` (a report or a column) retires into `survivor`; call
    /// [`RefMap::finish`] before looking anything up.
    pub(super) fn insert(&mut self, otype: &str, oid: i64, survivor: i64) {
        let i = otype_index(otype).expect("only reports and columns retire");
        // Buckets of the lists as they were would miss what moved; `finish` builds new ones.
        self.buckets = Default::default();
        self.retired[i].push((oid, survivor));
        self.survivors[i].push(survivor);
    }

    /// Sorts the lists, each survivor once.
    pub(super) fn finish(&mut self) {
        for i in 0..2 {
            self.retired[i].sort_unstable();
            self.retired[i].dedup_by_key(|e| e.0);
            self.retired[i].shrink_to_fit();
            self.survivors[i].sort_unstable();
            self.survivors[i].dedup();
            self.survivors[i].shrink_to_fit();
            self.buckets[0][i] = crate::lookup::Buckets::new(&self.retired[i], |e| e.0);
            self.buckets[1][i] = crate::lookup::Buckets::new(&self.survivors[i], |o| *o);
        }
    }

    /// The survivor of a version of a multi-version group (a survivor's is itself).
    pub(super) fn survivor(&self, otype: &str, oid: i64) -> Option<i64> {
        let i = otype_index(otype)?;
        if self.buckets[1][i]
            .find(&self.survivors[i], |o| *o, oid)
            .is_some()
        {
            return Some(oid);
        }
        self.get(otype, oid)
    }

    /// Where a reference to (otype, oid) points afterwards, if it moves.
    fn get(&self, otype: &str, oid: i64) -> Option<i64> {
        let i = otype_index(otype)?;
        self.buckets[0][i]
            .find(&self.retired[i], |e| e.0, oid)
            .map(|e| e.1)
    }
}

/// Repairs the references of one record in place (SPEC §5): object-set members, and mentions
/// in the rich-text places. A field with no definition is not repaired: its type is unknown.
pub(super) fn repair(r: &mut Record, fields: &Fields, map: &RefMap) {
    let rich = |v: &mut Value| {
        if let Value::String(s) = v {
            if let Some(new) = repair_mentions(s, map) {
                *s = new;
            }
        }
    };
    match r.kind {
        Kind::FieldValue => {
            let def = r
                .obj
                .get("field_id")
                .and_then(Value::as_i64)
                .and_then(|id| fields.get(id));
            let (Some((field_type, _)), Some(value)) = (def, r.obj.get_mut("value")) else {
                return;
            };
            match field_type {
                "RICH_TEXT" => rich(value),
                "OBJECT_SET" => repair_object_set(value, map),
                _ => {}
            }
        }
        Kind::Article => r.obj.get_mut("body").into_iter().for_each(rich),
        Kind::TrustFlag => r.obj.get_mut("reason").into_iter().for_each(rich),
        Kind::Conversation => {
            if let Some(Value::Array(posts)) = r.obj.get_mut("posts") {
                posts
                    .iter_mut()
                    .filter_map(|p| p.get_mut("text"))
                    .for_each(rich);
            }
        }
        _ => {}
    }
}

/// Maps the `{"otype","oid"}` members of an object set; duplicates this creates collapse, the
/// first kept.
fn repair_object_set(value: &mut Value, map: &RefMap) {
    let Value::Array(members) = value else { return };
    let member = |m: &Value| -> Option<(String, i64)> {
        Some((
            m.get("otype")?.as_str()?.to_string(),
            m.get("oid")?.as_i64()?,
        ))
    };
    let mut moved = false;
    for m in members.iter_mut() {
        if let Some((otype, oid)) = member(m) {
            if let Some(new) = map.get(&otype, oid) {
                m["oid"] = Value::from(new);
                moved = true;
            }
        }
    }
    if moved {
        let mut seen = HashSet::new();
        members.retain(|m| member(m).is_none_or(|k| seen.insert(k)));
    }
}

/// The attributes of a start tag that make a mention: the value spans (inside any quotes) of
/// the first `data-oid`, `data-otype` and `href`.
#[derive(Default)]
struct MentionAttrs {
    oid: Option<(usize, usize)>,
    otype: Option<(usize, usize)>,
    href: Option<(usize, usize)>,
}

fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

/// Reads the attributes of the start tag at `lt` (its `<`): names are compared in any case,
/// values are quoted with `"` or `'` or not at all, and the first of a repeated name counts.
fn mention_attrs(b: &[u8], lt: usize) -> MentionAttrs {
    let mut found = MentionAttrs::default();
    let mut i = lt + 1;
    while i < b.len() && !is_space(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1; // the tag name
    }
    loop {
        while i < b.len() && (is_space(b[i]) || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() || b[i] == b'>' {
            return found;
        }
        // A name runs to a space, `/`, `>` or `=`; its first character may be `=`.
        let name_start = i;
        i += 1;
        while i < b.len() && !is_space(b[i]) && !matches!(b[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let name = &b[name_start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && is_space(b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let start = i + 1;
                    let end = b[start..]
                        .iter()
                        .position(|&c| c == q)
                        .map_or(b.len(), |n| start + n);
                    value = Some((start, end));
                    i = end + 1;
                }
                _ => {
                    let start = i;
                    while i < b.len() && !is_space(b[i]) && b[i] != b'>' {
                        i += 1;
                    }
                    value = Some((start, i));
                }
            }
        }
        let slot = if name.eq_ignore_ascii_case(b"data-oid") {
            &mut found.oid
        } else if name.eq_ignore_ascii_case(b"data-otype") {
            &mut found.otype
        } else if name.eq_ignore_ascii_case(b"href") {
            &mut found.href
        } else {
            continue;
        };
        if slot.is_none() {
            // An attribute without a value has the empty value.
            *slot = Some(value.unwrap_or((i, i)));
        }
    }
}

/// An oid as `data-oid` spells it: an optional `-` and ASCII digits.
fn oid_value(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The spans of the path segments of an `href` value starting at `at`: the value up to `?` or
/// `#`, less surrounding spaces, a scheme (`https:`) and an authority (`//host`), split at `/`.
fn href_segments(v: &str, at: usize) -> Vec<(usize, usize)> {
    let path_end = v.find(['?', '#']).unwrap_or(v.len());
    let path = v[..path_end].trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
    let trimmed = path.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
    let mut start = path.len() - trimmed.len();
    let scheme_len = trimmed
        .find(':')
        .filter(|&n| {
            let s = &trimmed.as_bytes()[..n];
            !s.is_empty()
                && s[0].is_ascii_alphabetic()
                && s.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        })
        .map_or(0, |n| n + 1);
    start += scheme_len;
    if path[start..].starts_with("//") {
        start = path[start + 2..]
            .find('/')
            .map_or(path.len(), |n| start + 2 + n);
    }
    let mut out = Vec::new();
    let mut seg = start;
    for (n, c) in path[start..].char_indices() {
        if c == '/' {
            out.push((at + seg, at + start + n));
            seg = start + n + 1;
        }
    }
    out.push((at + seg, at + path.len()));
    out.retain(|(s, e)| s < e);
    out
}

/// Repairs the mentions (SPEC §5) in one rich text: in an `<a>` start tag with an integer
/// `data-oid` and a `data-otype` whose pair the map moves, `data-oid` gets the new oid and so
/// does every `href` path segment equal to the old one. Every other byte is kept. None when
/// nothing changed.
pub(super) fn repair_mentions(text: &str, map: &RefMap) -> Option<String> {
    let b = text.as_bytes();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (lt, name) in crate::mentions::start_tags(text) {
        if name != "a" {
            continue;
        }
        let attrs = mention_attrs(b, lt);
        let (Some((os, oe)), Some((ts, te))) = (attrs.oid, attrs.otype) else {
            continue;
        };
        let Some(old) = oid_value(&text[os..oe]) else {
            continue;
        };
        let Some(new) = map.get(&text[ts..te], old).filter(|&n| n != old) else {
            continue;
        };
        edits.push((os, oe, new.to_string()));
        if let Some((hs, he)) = attrs.href {
            let old = old.to_string();
            for (s, e) in href_segments(&text[hs..he], hs) {
                if text[s..e] == old {
                    edits.push((s, e, new.to_string()));
                }
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|&(s, _, _)| s);
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    for (s, e, new) in edits {
        out.push_str(&text[copied..s]);
        out.push_str(&new);
        copied = e;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_line;
    use serde_json::json;

    fn map() -> RefMap {
        let mut m = RefMap::default();
        m.insert(REPORT, 42, 7);
        m.insert(COLUMN, 11, 19);
        m.finish();
        m
    }

    #[test]
    fn versions_lead_to_their_survivor_and_only_retired_ones_move() {
        let mut m = map();
        m.insert(REPORT, 43, 7); // a second retired version of 7's group
        m.finish();
        for oid in [42, 43, 7] {
            assert_eq!(m.survivor(REPORT, oid), Some(7), "report {oid}");
        }
        assert_eq!(m.get(REPORT, 42), Some(7));
        assert_eq!(m.get(REPORT, 7), None, "a survivor does not move");
        assert_eq!(m.survivor(COLUMN, 19), Some(19));
        assert_eq!(m.get(COLUMN, 11), Some(19));
        // Otypes are apart: report 11 and column 42 are in no group.
        assert_eq!(m.survivor(REPORT, 11), None);
        assert_eq!(m.survivor(COLUMN, 42), None);
        assert_eq!(m.survivor("article", 42), None);
    }

    #[test]
    fn emptiness_per_spec() {
        for v in [
            json!(null),
            json!([]),
            json!(""),
            json!("  "),
            json!("<p>&nbsp;</p>"),
            json!("<p> <br></p>"),
            json!("<p>\u{a0}</p>"),
        ] {
            assert!(is_empty(&v), "{v}");
        }
        for v in [
            json!("x"),
            json!("<p>x</p>"),
            json!("&amp;"),
            json!([null]),
            json!({}),
            json!(0),
            json!(false),
        ] {
            assert!(!is_empty(&v), "{v}");
        }
    }

    #[test]
    fn merge_keys_name_what_competes() {
        let key = |line: &str| merge_key(&parse_line(line.as_bytes()).unwrap());
        let s = r#""subject":{"otype":"bi_report","oid":1}"#;
        let fv = key(&format!(
            r#"{{"kind":"field_value","field_id":4,{s},"value":"x"}}"#
        ));
        let flag = key(&format!(
            r#"{{"kind":"trust_flag","id":9,"flag_type":"WARNING",{s},"user_id":3}}"#
        ));
        let tag = key(&format!(r#"{{"kind":"tag","name":"pii",{s}}}"#));
        let star = key(&format!(r#"{{"kind":"star","user_id":3,{s}}}"#));
        let conv = key(r#"{"kind":"conversation","id":1,"posts":[]}"#);
        assert_eq!(fv.as_deref(), Some("field_id=4"));
        assert_eq!(flag.as_deref(), Some("flag_type=WARNING user_id=3"));
        assert_eq!(tag.as_deref(), Some("tag name=pii"));
        assert_eq!(star.as_deref(), Some("star user_id=3"));
        assert_eq!(conv, None);
    }

    #[test]
    fn mentions_are_repaired_in_every_spelling() {
        let m = map();
        let fix = |t: &str| repair_mentions(t, &m);
        assert_eq!(
            fix(r#"<p>See <a href="/bi/v2/report/42/" data-oid="42" data-otype="bi_report">x</a>.</p>"#)
                .as_deref(),
            Some(r#"<p>See <a href="/bi/v2/report/7/" data-oid="7" data-otype="bi_report">x</a>.</p>"#)
        );
        assert_eq!(
            fix("<A HREF=\"https://c.example.com/bi/v2/report/42/?tab=42#42\" DATA-OID=42 DATA-OTYPE=bi_report>")
                .as_deref(),
            Some("<A HREF=\"https://c.example.com/bi/v2/report/7/?tab=42#42\" DATA-OID=7 DATA-OTYPE=bi_report>")
        );
        assert_eq!(
            fix("<a data-otype='bi_report_column' data-oid='11' href='//42/r/11'>").as_deref(),
            Some("<a data-otype='bi_report_column' data-oid='19' href='//42/r/19'>")
        );
        // The first of a repeated attribute counts.
        assert_eq!(
            fix(r#"<a data-oid="42" data-oid="5" data-otype="bi_report">"#).as_deref(),
            Some(r#"<a data-oid="7" data-oid="5" data-otype="bi_report">"#)
        );
        // Not mentions: no data-otype, another otype, an oid not in the map, not an integer,
        // not an `a`, inside a comment or a textarea (where the tokenizer sees no tag).
        for t in [
            r#"<a data-oid="42">"#,
            r#"<a data-oid="42" data-otype="table">"#,
            r#"<a data-oid="43" data-otype="bi_report">"#,
            r#"<a data-oid="+42" data-otype="bi_report">"#,
            r#"<span data-oid="42" data-otype="bi_report">"#,
            r#"<!-- <a data-oid="42" data-otype="bi_report"> -->"#,
            r#"<textarea><a data-oid="42" data-otype="bi_report"></textarea>"#,
        ] {
            assert_eq!(fix(t), None, "{t}");
        }
    }

    #[test]
    fn object_sets_and_rich_text_places_are_repaired_other_fields_not() {
        let m = map();
        let mut fields = Fields::default();
        fields.define(30, "OBJECT_SET", false);
        let mention = r#"<a data-oid="42" data-otype="bi_report">x</a>"#;
        let mut set = parse_line(br#"{"kind":"field_value","field_id":8,"subject":{"otype":"table","oid":1},"value":[{"otype":"bi_report","oid":7},{"otype":"bi_report","oid":42},{"otype":"user","oid":42}]}"#).unwrap();
        repair(&mut set, &fields, &m);
        assert_eq!(
            set.obj["value"],
            json!([{"otype":"bi_report","oid":7},{"otype":"user","oid":42}])
        );
        let fv = |field: i64| {
            let line = json!({"kind":"field_value","field_id":field,"subject":{"otype":"table","oid":1},"value":mention});
            parse_line(line.to_string().as_bytes()).unwrap()
        };
        for (field, repaired) in [(4, true), (3, false), (77, false)] {
            let mut r = fv(field);
            repair(&mut r, &fields, &m);
            assert_eq!(
                r.obj["value"].as_str().unwrap().contains(r#"data-oid="7""#),
                repaired,
                "field {field}"
            );
        }
        let conv =
            json!({"kind":"conversation","id":1,"posts":[{"id":1,"user_id":1,"text":mention}]});
        let mut conv = parse_line(conv.to_string().as_bytes()).unwrap();
        repair(&mut conv, &fields, &m);
        assert!(conv.obj["posts"][0]["text"]
            .as_str()
            .unwrap()
            .contains(r#"data-oid="7""#));
        assert_eq!(fields.multi(8), Some(true));
        assert_eq!(fields.multi(30), Some(false));
        assert_eq!(fields.multi(77), None);
    }
}
