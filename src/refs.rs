//! References are repaired everywhere (SPEC §5): the reference map from retired versions to
//! their survivors, applied to object-set members and to mentions in every rich-text place.
//!
//! Subjects are not repaired here: a record whose subject is a retired version takes part in
//! the merge of its group (see [`crate::merge`]), which moves it.

use crate::groups::{COLUMN, REPORT};
use crate::mentions;
use crate::record::{FieldDef, Kind, Record, Subject};
use serde_json::Value;
use std::collections::HashSet;

/// Retired oid → survivor oid, for reports and for report columns: two sorted lists, compact
/// enough for millions of versions. Call [`RefMap::finish`] after the last insert.
#[derive(Debug, Default, Clone)]
pub struct RefMap {
    reports: Vec<(i64, i64)>,
    columns: Vec<(i64, i64)>,
    /// Built by `finish`, for the look-ups.
    buckets: [crate::lookup::Buckets; 2],
}

impl RefMap {
    /// Records that `oid` of `otype` retires into `survivor`.
    pub fn insert(&mut self, otype: &str, oid: i64, survivor: i64) {
        // Buckets of the lists as they were would miss what moved; `finish` builds new ones.
        self.buckets = Default::default();
        match otype {
            REPORT => self.reports.push((oid, survivor)),
            COLUMN => self.columns.push((oid, survivor)),
            _ => unreachable!("only reports and columns retire"),
        };
    }

    /// Sorts the lists for lookups.
    pub fn finish(&mut self) {
        self.reports.sort_unstable();
        self.columns.sort_unstable();
        self.buckets = [
            crate::lookup::Buckets::new(&self.reports, |e| e.0),
            crate::lookup::Buckets::new(&self.columns, |e| e.0),
        ];
    }

    /// Where a reference to (otype, oid) points after the migration, if it moves.
    pub fn get(&self, otype: &str, oid: i64) -> Option<i64> {
        let (list, buckets) = match otype {
            REPORT => (&self.reports, &self.buckets[0]),
            COLUMN => (&self.columns, &self.buckets[1]),
            _ => return None,
        };
        debug_assert!(
            list.windows(2).all(|w| w[0] <= w[1]),
            "RefMap::finish was not called"
        );
        buckets.find(list, |e| e.0, oid).map(|e| e.1)
    }

    /// True when nothing retires, so nothing needs repair.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty() && self.columns.is_empty()
    }
}

/// Where references to retired versions point: the groups of a migration
/// ([`crate::groups::Groups`]), or the [`RefMap`] read back from a bundle.
pub trait Moves: Sync {
    /// Where a reference to (otype, oid) points after the migration, if it moves.
    fn moved(&self, otype: &str, oid: i64) -> Option<i64>;
    /// True when nothing retires, so nothing needs repair.
    fn nothing_moves(&self) -> bool;
}

impl Moves for RefMap {
    fn moved(&self, otype: &str, oid: i64) -> Option<i64> {
        self.get(otype, oid)
    }

    fn nothing_moves(&self) -> bool {
        self.is_empty()
    }
}

/// The field definitions of the export (custom_field lines over the built-ins).
#[derive(Debug, Default, Clone)]
pub struct Fields {
    /// Read for every field value of every pass: foldhash, not SipHash.
    defs: foldhash::HashMap<i64, FieldDef>,
}

impl Fields {
    /// Adds a `custom_field` definition.
    pub fn insert(&mut self, id: i64, def: FieldDef) {
        self.defs.insert(id, def);
    }

    /// Adds a definition unless the id already has one (the first line wins).
    pub fn insert_first(&mut self, id: i64, def: FieldDef) {
        self.defs.entry(id).or_insert(def);
    }

    /// Adds the definition a `custom_field` record holds (the first one for an id wins).
    pub fn insert_record(&mut self, r: &Record) {
        self.insert_first(
            r.int("id").unwrap_or(0),
            FieldDef {
                field_type: r.str("field_type").unwrap_or("").into(),
                allow_multiple: r.flag("allow_multiple"),
            },
        );
    }

    /// The definition of a field, the built-in one when no line defines it.
    pub fn get(&self, id: i64) -> Option<FieldDef> {
        self.defs
            .get(&id)
            .cloned()
            .or_else(|| crate::record::builtin_field(id))
    }
}

/// Applies the reference map to one record in place; returns how many references it changed.
pub fn repair(rec: &mut Record, fields: &Fields, map: &impl Moves) -> u64 {
    if map.nothing_moves() {
        return 0;
    }
    let rich = |v: &mut Value| -> u64 {
        let Value::String(s) = v else { return 0 };
        match rewrite_rich(s, map) {
            Some((new, n)) => {
                *s = new;
                n
            }
            None => 0,
        }
    };
    match rec.kind {
        Kind::FieldValue => {
            let Some(def) = rec.int("field_id").and_then(|id| fields.get(id)) else {
                return 0; // an undefined field's type is unknown: not repaired (SPEC §5)
            };
            let Some(value) = rec.obj.get_mut("value") else {
                return 0;
            };
            match def.field_type.as_str() {
                "RICH_TEXT" => rich(value),
                "OBJECT_SET" => repair_object_set(value, map),
                _ => 0,
            }
        }
        Kind::Article => rec.obj.get_mut("body").map_or(0, rich),
        Kind::TrustFlag => rec.obj.get_mut("reason").map_or(0, rich),
        Kind::Conversation => match rec.obj.get_mut("posts") {
            Some(Value::Array(posts)) => posts
                .iter_mut()
                .filter_map(|p| p.get_mut("text"))
                .map(rich)
                .sum(),
            _ => 0,
        },
        _ => 0,
    }
}

/// Rewrites the mentions of retired versions in one rich text; the new text and how many
/// mentions changed, or None when none did.
pub fn rewrite_rich(text: &str, map: &impl Moves) -> Option<(String, u64)> {
    let new = mentions::rewrite(text, |otype, oid| map.moved(otype, oid))?;
    let n = mentions::find(text)
        .iter()
        .filter(|m| map.moved(&m.otype, m.oid).is_some())
        .count();
    Some((new, n as u64))
}

/// Maps object-set members; duplicates the mapping creates collapse, the first kept.
fn repair_object_set(value: &mut Value, map: &impl Moves) -> u64 {
    let Value::Array(members) = value else {
        return 0;
    };
    let mut changed = 0;
    for m in members.iter_mut() {
        if let Some(s) = Subject::from_value(m) {
            if let Some(new) = map.moved(&s.otype, s.oid) {
                m["oid"] = Value::from(new);
                changed += 1;
            }
        }
    }
    if changed > 0 {
        let mut seen = HashSet::new();
        members.retain(|m| match Subject::from_value(m) {
            Some(s) => seen.insert(s),
            None => true,
        });
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_line;

    fn map() -> RefMap {
        let mut m = RefMap::default();
        m.insert(REPORT, 1, 9);
        m.insert(COLUMN, 11, 19);
        m.finish();
        m
    }

    #[test]
    fn object_sets_map_and_collapse_keeping_the_first() {
        let mut r = parse_line(br#"{"kind":"field_value","field_id":8,"subject":{"otype":"table","oid":5},"value":[{"otype":"user","oid":1},{"otype":"bi_report","oid":9},{"otype":"bi_report","oid":1},{"otype":"bi_report_column","oid":11}]}"#).unwrap();
        assert_eq!(repair(&mut r, &Fields::default(), &map()), 2);
        assert_eq!(
            r.obj["value"],
            serde_json::json!([{"otype":"user","oid":1},{"otype":"bi_report","oid":9},{"otype":"bi_report_column","oid":19}])
        );
    }

    #[test]
    fn only_rich_text_places_are_rewritten() {
        let html = r#"<a data-oid="1" data-otype="bi_report" href="/r/1">x</a>"#;
        let line = |kind: &str, field: i64| {
            format!(
                r#"{{"kind":"{kind}","field_id":{field},"subject":{{"otype":"table","oid":5}},"value":{}}}"#,
                serde_json::to_string(html).unwrap()
            )
        };
        let mut desc = parse_line(line("field_value", 4).as_bytes()).unwrap();
        assert_eq!(repair(&mut desc, &Fields::default(), &map()), 1);
        assert!(desc.obj["value"]
            .as_str()
            .unwrap()
            .contains(r#"data-oid="9""#));
        let mut title = parse_line(line("field_value", 3).as_bytes()).unwrap();
        assert_eq!(
            repair(&mut title, &Fields::default(), &map()),
            0,
            "TEXT is not rich text"
        );
        let mut undefined = parse_line(line("field_value", 777).as_bytes()).unwrap();
        assert_eq!(
            repair(&mut undefined, &Fields::default(), &map()),
            0,
            "undefined field: type unknown"
        );
        let mut fields = Fields::default();
        fields.insert(
            777,
            FieldDef {
                field_type: "RICH_TEXT".into(),
                allow_multiple: false,
            },
        );
        assert_eq!(repair(&mut undefined, &fields, &map()), 1);
        let conv = format!(
            r#"{{"kind":"conversation","id":1,"posts":[{{"id":1,"user_id":1,"text":{0}}},{{"id":2,"user_id":1,"text":{0}}}]}}"#,
            serde_json::to_string(html).unwrap()
        );
        let mut conv = parse_line(conv.as_bytes()).unwrap();
        assert_eq!(repair(&mut conv, &Fields::default(), &map()), 2);
    }
}
