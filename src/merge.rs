//! Curation follows, and merges (SPEC §4): for one group, the curation records of the survivor
//! and of the retired versions become the survivor's, one rule per kind.
//!
//! The input is every curation record whose subject is a participant of the group, already
//! repaired (§5) so that values differing only in a repaired oid compare equal. The output is
//! the group's curation as it must be afterwards; the caller turns the difference into changes.

use crate::record::{
    canonical_json_map, earliest_first, instant, latest_first, Kind, Record, Subject,
};
use crate::refs::Fields;
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// A curation record of a group member, before and after reference repair.
#[derive(Debug, Clone)]
pub struct Item {
    /// Rank of its subject in version order (0 = the survivor).
    pub rank: usize,
    /// Line number in the export, to order records of the same rank.
    pub line: u64,
    /// The record as the export has it; shared, so that a caller that also keeps it (to tell
    /// which records the merge changed) need not copy it.
    pub before: Arc<Record>,
    /// The record with its references repaired.
    pub after: Record,
}

/// Two non-empty values of one merge key that differ: the winner is kept, the loser reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Conflict {
    pub survivor: Subject,
    pub kind: String,
    /// What the two records compete for, e.g. `field 4` or `ENDORSEMENT by user 7`.
    pub merge_key: String,
    pub winner: Value,
    pub loser: Value,
    /// The line of the `--decisions` file that chose the winner, when a reviewer decided this
    /// conflict ([`crate::decisions`]); absent when the rule of SPEC §4 did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_line: Option<u64>,
}

/// A reviewer's choice, consulted where a rule of SPEC §4 picks one winner among differing
/// values (single-valued fields, trust flags). [`crate::decisions::Decisions`] is the one there
/// is; the merge only asks it.
pub trait Chooser: Sync {
    /// The index in `candidates` (the records as the export has them, in the merge's order) of
    /// the record that must win this merge key, with the line of the decision that says so; None
    /// lets the rule decide.
    fn choose(
        &self,
        survivor: &Subject,
        kind: &str,
        merge_key: &str,
        candidates: &[&Map<String, Value>],
    ) -> Option<(usize, u64)>;
}

/// What merging a group produced.
#[derive(Debug, Default)]
pub struct Merged {
    /// The group's curation afterwards.
    pub records: Vec<Record>,
    /// For each record, the (rank, line) of the first item of its merge key, in the merge's
    /// order; None for the records without one, which come last. A caller that keeps some
    /// items out of the merge (each alone under its merge key) places their records by it.
    pub first_of: Vec<Option<(usize, u64)>>,
    pub conflicts: Vec<Conflict>,
    /// Curation records of retired versions carried onto the survivor, by kind.
    pub carried: BTreeMap<String, u64>,
}

/// Empty (SPEC §4): null, a string blank once HTML tags are removed and `&nbsp;` is a space, an
/// empty list.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        // Most values have neither a tag nor an entity: blank is then plain white space.
        Value::String(s) if !s.contains(['<', '&']) => s.trim().is_empty(),
        Value::String(s) => {
            let mut text = String::with_capacity(s.len());
            let mut in_tag = false;
            for c in s.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.replace("&nbsp;", " ").trim().is_empty()
        }
        _ => false,
    }
}

/// The merge key of a curation record within its group, or None when it never merges.
pub fn merge_key(r: &Record) -> Option<String> {
    merge_key_from(r.kind, |f| r.int(f), |f| r.str(f).map(Cow::Borrowed))
}

/// The merge key of a record of kind `kind` whose integer and string fields `int` and `text`
/// read (the rule of [`merge_key`], for readers of raw lines too).
pub fn merge_key_from<'a>(
    kind: Kind,
    int: impl Fn(&str) -> Option<i64>,
    text: impl Fn(&str) -> Option<Cow<'a, str>>,
) -> Option<String> {
    match kind {
        Kind::FieldValue => Some(format!("field {}", int("field_id")?)),
        Kind::TrustFlag => Some(format!(
            "{} by user {}",
            text("flag_type")?,
            int("user_id")?
        )),
        Kind::Tag => Some(format!("tag {}", text("name")?)),
        Kind::Star => Some(format!("star by user {}", int("user_id")?)),
        _ => None,
    }
}

/// Merges the curation of one group onto `survivor`.
pub fn merge_group(survivor: &Subject, items: Vec<Item>, fields: &Fields) -> Merged {
    merge_group_with(survivor, items, fields, None)
}

/// [`merge_group`], where `chooser` may name the winner of a single-valued field or a trust
/// flag instead of the rule (a reviewer's decision); the conflicts are then listed against the
/// chosen record and marked with the decision's line.
pub fn merge_group_with(
    survivor: &Subject,
    mut items: Vec<Item>,
    fields: &Fields,
    chooser: Option<&dyn Chooser>,
) -> Merged {
    items.sort_by_key(|i| (i.rank, i.line));
    let mut out = Merged::default();
    // Buckets keep first-seen order so the output is deterministic.
    let mut buckets: Vec<(String, &'static str, Vec<Item>)> = Vec::new();
    let mut loose: Vec<Item> = Vec::new();
    for it in items {
        let kind: &'static str = match it.before.kind {
            Kind::FieldValue => "field_value",
            Kind::TrustFlag => "trust_flag",
            Kind::Tag => "tag",
            Kind::Star => "star",
            _ => {
                loose.push(it);
                continue;
            }
        };
        let key = merge_key(&it.after).expect("validated records have their merge key fields");
        match buckets
            .iter_mut()
            .find(|(k, kk, _)| *k == key && *kk == kind)
        {
            Some(b) => b.2.push(it),
            None => buckets.push((key, kind, vec![it])),
        }
    }
    for (key, kind, bucket) in buckets {
        let retired = bucket.iter().filter(|i| i.rank > 0).count() as u64;
        let first = Some((bucket[0].rank, bucket[0].line));
        if retired == 0 {
            // Curation found only on the survivor stays exactly as it is (but repaired).
            out.first_of
                .extend(std::iter::repeat_n(first, bucket.len()));
            out.records.extend(bucket.into_iter().map(|i| i.after));
            continue;
        }
        out.first_of.push(first);
        *out.carried.entry(kind.to_string()).or_default() += retired;
        let mut winner = match kind {
            "field_value" => {
                merge_field(survivor, &key, bucket, fields, chooser, &mut out.conflicts)
            }
            "trust_flag" => merge_flags(survivor, &key, bucket, chooser, &mut out.conflicts),
            "tag" => merge_tags(bucket),
            "star" => merge_stars(bucket),
            _ => unreachable!("only field values, flags, tags and stars have buckets"),
        };
        winner.set_subject(survivor);
        out.records.push(winner);
    }
    // Conversations and other kinds: the subject moves; exact duplicates then collapse.
    let mut seen = HashSet::new();
    for it in loose {
        let mut r = it.after;
        if it.rank > 0 {
            r.set_subject(survivor);
            *out.carried.entry(r.kind_name().to_string()).or_default() += 1;
        }
        if r.kind == Kind::Conversation || seen.insert(canonical_json_map(&r.obj)) {
            out.records.push(r);
            out.first_of.push(None);
        }
    }
    out
}

fn merge_field(
    survivor: &Subject,
    key: &str,
    bucket: Vec<Item>,
    fields: &Fields,
    chooser: Option<&dyn Chooser>,
    conflicts: &mut Vec<Conflict>,
) -> Record {
    let values: Vec<&Value> = bucket.iter().map(|i| &i.after.obj["value"]).collect();
    let multi = match bucket[0]
        .after
        .int("field_id")
        .and_then(|id| fields.get(id))
    {
        Some(def) => def.multi(),
        // An undefined field is judged by its value: an array is multi-valued.
        None => values
            .iter()
            .find(|v| !v.is_null())
            .is_some_and(|v| v.is_array()),
    };
    if multi {
        let mut union: Vec<Value> = Vec::new();
        let first_array = values.iter().position(|v| v.is_array()).unwrap_or(0);
        for (i, v) in values.iter().enumerate() {
            match v {
                Value::Array(items) => {
                    for item in items {
                        if !union.contains(item) {
                            union.push(item.clone());
                        }
                    }
                }
                // Only an undefined field can mix shapes: a lone value cannot join the union,
                // so it is reported rather than dropped.
                v if !is_empty(v) => conflicts.push(Conflict {
                    survivor: survivor.clone(),
                    kind: "field_value".into(),
                    merge_key: key.to_string(),
                    winner: Value::Object(bucket[first_array].before.obj.clone()),
                    loser: Value::Object(bucket[i].before.obj.clone()),
                    decision_line: None,
                }),
                _ => {}
            }
        }
        let latest = bucket
            .iter()
            .filter_map(|i| i.after.obj.get("ts_updated").filter(|t| !t.is_null()))
            .min_by(|a, b| latest_first(instant(Some(a)), instant(Some(b))))
            .cloned();
        let mut merged = bucket
            .into_iter()
            .next()
            .expect("bucket is never empty")
            .after;
        merged.obj.insert("value".into(), Value::Array(union));
        if let Some(ts) = latest {
            merged.obj.insert("ts_updated".into(), ts);
        }
        return merged;
    }
    let decided = chooser.and_then(|c| {
        let candidates: Vec<&Map<String, Value>> = bucket.iter().map(|i| &i.before.obj).collect();
        c.choose(survivor, "field_value", key, &candidates)
    });
    let win = match decided {
        Some((i, _)) => i,
        None => values.iter().position(|v| !is_empty(v)).unwrap_or(0),
    };
    for (i, it) in bucket.iter().enumerate() {
        if i != win && !is_empty(values[i]) && values[i] != values[win] {
            conflicts.push(Conflict {
                survivor: survivor.clone(),
                kind: "field_value".into(),
                merge_key: key.to_string(),
                winner: Value::Object(bucket[win].before.obj.clone()),
                loser: Value::Object(it.before.obj.clone()),
                decision_line: decided.map(|(_, line)| line),
            });
        }
    }
    bucket
        .into_iter()
        .nth(win)
        .expect("winner index is in range")
        .after
}

fn merge_flags(
    survivor: &Subject,
    key: &str,
    mut bucket: Vec<Item>,
    chooser: Option<&dyn Chooser>,
    conflicts: &mut Vec<Conflict>,
) -> Record {
    bucket.sort_by(|x, y| {
        latest_first(
            instant(x.after.obj.get("ts_created")),
            instant(y.after.obj.get("ts_created")),
        )
        .then(y.after.int("id").cmp(&x.after.int("id")))
    });
    let decided = chooser.and_then(|c| {
        let candidates: Vec<&Map<String, Value>> = bucket.iter().map(|i| &i.before.obj).collect();
        c.choose(survivor, "trust_flag", key, &candidates)
    });
    if let Some((i, _)) = decided {
        // The chosen flag wins; the others keep the rule's order behind it.
        let chosen = bucket.remove(i);
        bucket.insert(0, chosen);
    }
    let reason = |r: &Record| r.obj.get("reason").cloned().unwrap_or(Value::Null);
    let win_reason = reason(&bucket[0].after);
    for it in &bucket[1..] {
        let r = reason(&it.after);
        if !is_empty(&r) && r != win_reason {
            conflicts.push(Conflict {
                survivor: survivor.clone(),
                kind: "trust_flag".into(),
                merge_key: key.to_string(),
                winner: Value::Object(bucket[0].before.obj.clone()),
                loser: Value::Object(it.before.obj.clone()),
                decision_line: decided.map(|(_, line)| line),
            });
        }
    }
    bucket.swap_remove(0).after
}

/// Tags: one per name, the first in version order (the bucket is in version order).
fn merge_tags(bucket: Vec<Item>) -> Record {
    bucket
        .into_iter()
        .next()
        .expect("bucket is never empty")
        .after
}

/// Stars: one per user, the earliest `ts_created` wins (an unparsable or missing one sorts
/// last), then version order.
fn merge_stars(mut bucket: Vec<Item>) -> Record {
    bucket.sort_by(|x, y| {
        earliest_first(
            instant(x.after.obj.get("ts_created")),
            instant(y.after.obj.get("ts_created")),
        )
        .then((x.rank, x.line).cmp(&(y.rank, y.line)))
    });
    bucket.swap_remove(0).after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_line;
    use serde_json::json;

    fn item(rank: usize, line: u64, v: Value) -> Item {
        let r = parse_line(v.to_string().as_bytes()).unwrap();
        Item {
            rank,
            line,
            before: Arc::new(r.clone()),
            after: r,
        }
    }

    fn subj(oid: i64) -> Value {
        json!({"otype":"bi_report","oid":oid})
    }

    fn surv() -> Subject {
        Subject {
            otype: "bi_report".into(),
            oid: 1,
        }
    }

    #[test]
    fn emptiness() {
        assert!(is_empty(&json!(null)));
        assert!(is_empty(&json!("<p>&nbsp; </p>")));
        assert!(is_empty(&json!([])));
        assert!(!is_empty(&json!("<p>x</p>")));
        assert!(!is_empty(&json!({})));
    }

    #[test]
    fn single_valued_first_non_empty_wins_and_others_conflict() {
        let items = vec![
            item(
                0,
                1,
                json!({"kind":"field_value","field_id":4,"subject":subj(1),"value":"<p></p>"}),
            ),
            item(
                1,
                2,
                json!({"kind":"field_value","field_id":4,"subject":subj(2),"value":"old","ts_updated":"2020-01-01T00:00:00Z"}),
            ),
            item(
                2,
                3,
                json!({"kind":"field_value","field_id":4,"subject":subj(3),"value":"older"}),
            ),
            item(
                2,
                4,
                json!({"kind":"field_value","field_id":3,"subject":subj(3),"value":""}),
            ),
        ];
        let m = merge_group(&surv(), items, &Fields::default());
        assert_eq!(m.records.len(), 2);
        assert_eq!(m.records[0].obj["value"], json!("old"));
        assert_eq!(m.records[0].obj["subject"], subj(1));
        assert_eq!(
            m.records[0].obj["ts_updated"],
            json!("2020-01-01T00:00:00Z")
        );
        assert_eq!(
            m.records[1].obj["value"],
            json!(""),
            "all empty: the first record in version order"
        );
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].loser["value"], json!("older"));
        assert_eq!(m.carried["field_value"], 3);
    }

    #[test]
    fn multi_valued_union_survivor_first_with_latest_ts() {
        let u = |o: i64| json!({"otype":"user","oid":o});
        let items = vec![
            item(
                1,
                2,
                json!({"kind":"field_value","field_id":8,"subject":subj(2),"value":[u(3),u(1)],"ts_updated":"2024-05-01T00:00:00Z"}),
            ),
            item(
                0,
                1,
                json!({"kind":"field_value","field_id":8,"subject":subj(1),"value":[u(1),u(2)],"ts_updated":"2023-01-01T00:00:00Z"}),
            ),
        ];
        let m = merge_group(&surv(), items, &Fields::default());
        assert_eq!(m.records[0].obj["value"], json!([u(1), u(2), u(3)]));
        assert_eq!(
            m.records[0].obj["ts_updated"],
            json!("2024-05-01T00:00:00Z")
        );
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn an_undefined_field_with_mixed_shapes_reports_the_odd_value() {
        let items = vec![
            item(
                0,
                1,
                json!({"kind":"field_value","field_id":77,"subject":subj(1),"value":["a"]}),
            ),
            item(
                1,
                2,
                json!({"kind":"field_value","field_id":77,"subject":subj(2),"value":"lone"}),
            ),
            item(
                2,
                3,
                json!({"kind":"field_value","field_id":77,"subject":subj(3),"value":["b","a"]}),
            ),
        ];
        let m = merge_group(&surv(), items, &Fields::default());
        assert_eq!(m.records[0].obj["value"], json!(["a", "b"]));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].loser["value"], json!("lone"));
    }

    #[test]
    fn flags_latest_wins_then_highest_id_and_reasons_conflict() {
        let f = |id: i64, oid: i64, ts: &str, reason: &str| json!({"kind":"trust_flag","id":id,"flag_type":"WARNING","subject":subj(oid),"user_id":7,"reason":reason,"ts_created":ts});
        let items = vec![
            item(0, 1, f(10, 1, "2024-01-01T00:00:00Z", "")),
            item(1, 2, f(11, 2, "2024-02-01T00:00:00Z", "stale")),
            item(2, 3, f(12, 3, "2024-02-01T00:00:00Z", "broken")),
        ];
        let m = merge_group(&surv(), items, &Fields::default());
        assert_eq!(m.records.len(), 1);
        assert_eq!(m.records[0].int("id"), Some(12));
        assert_eq!(m.records[0].obj["subject"], subj(1));
        assert_eq!(
            m.conflicts.len(),
            1,
            "the survivor's empty reason is no conflict"
        );
        assert_eq!(m.conflicts[0].loser["id"], json!(11));
    }

    #[test]
    fn tags_first_stars_earliest_conversations_move_duplicates_collapse() {
        let items = vec![
            item(
                1,
                5,
                json!({"kind":"tag","name":"t","subject":subj(2),"n":2}),
            ),
            item(
                0,
                1,
                json!({"kind":"tag","name":"t","subject":subj(1),"n":1}),
            ),
            item(
                0,
                2,
                json!({"kind":"star","user_id":3,"subject":subj(1),"ts_created":"2024-01-01T00:00:00Z"}),
            ),
            item(
                1,
                6,
                json!({"kind":"star","user_id":3,"subject":subj(2),"ts_created":"2023-01-01T00:00:00Z"}),
            ),
            item(
                1,
                7,
                json!({"kind":"conversation","id":4,"subject":subj(2),"posts":[]}),
            ),
            item(0, 3, json!({"kind":"view","subject":subj(1),"user_id":1})),
            item(1, 8, json!({"kind":"view","subject":subj(2),"user_id":1})),
        ];
        let m = merge_group(&surv(), items, &Fields::default());
        let by_kind = |k: &str| {
            m.records
                .iter()
                .filter(|r| r.kind_name() == k)
                .collect::<Vec<_>>()
        };
        assert_eq!(by_kind("tag")[0].obj["n"], json!(1));
        assert_eq!(
            by_kind("star")[0].obj["ts_created"],
            json!("2023-01-01T00:00:00Z")
        );
        assert_eq!(by_kind("star")[0].obj["subject"], subj(1));
        assert_eq!(by_kind("conversation")[0].obj["subject"], subj(1));
        assert_eq!(by_kind("view").len(), 1);
    }

    #[test]
    fn stars_earliest_ts_created_wins_then_version_order() {
        let star = |oid: i64, ts: Option<&str>, n: i64| {
            let mut v = json!({"kind":"star","user_id":5,"subject":subj(oid),"n":n});
            if let Some(ts) = ts {
                v["ts_created"] = json!(ts);
            }
            v
        };
        let n_of = |items: Vec<Item>| {
            let m = merge_group(&surv(), items, &Fields::default());
            assert_eq!(m.records.len(), 1, "one star per user");
            assert_eq!(m.records[0].obj["subject"], subj(1));
            m.records[0].obj["n"].clone()
        };
        // The earliest wins, whatever the version order and the spelling of the time.
        let items = vec![
            item(0, 1, star(1, Some("2024-01-01T00:00:00Z"), 1)),
            item(1, 2, star(2, Some("2023-06-01T02:00:00+02:00"), 2)),
            item(2, 3, star(3, Some("2023-06-01T00:00:01Z"), 3)),
        ];
        assert_eq!(n_of(items), json!(2));
        // Equal instants: version order (rank, then line).
        let items = vec![
            item(2, 3, star(3, Some("2023-01-01T00:00:00Z"), 3)),
            item(1, 2, star(2, Some("2023-01-01T01:00:00+01:00"), 2)),
            item(0, 1, star(1, Some("2024-01-01T00:00:00Z"), 1)),
        ];
        assert_eq!(n_of(items), json!(2));
        // A missing or unparsable time sorts last.
        let items = vec![
            item(0, 1, star(1, None, 1)),
            item(1, 2, star(2, Some("yesterday"), 2)),
            item(2, 3, star(3, Some("2025-01-01T00:00:00Z"), 3)),
        ];
        assert_eq!(n_of(items), json!(3));
        let items = vec![item(0, 1, star(1, None, 1)), item(1, 2, star(2, None, 2))];
        assert_eq!(n_of(items), json!(1));
    }
}
