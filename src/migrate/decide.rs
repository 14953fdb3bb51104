//! The per-line decisions of the migration: what the scan keeps of a line (§2, §3), what the
//! second pass does with a line (re-key or retire a version, repair references, hold curation
//! to merge), and the changes merging one group gives (§4). The change lines themselves are
//! built in [`super::encode`].

use super::encode::{change_line, dry_change, edit_change, raw_change, tree_update, RawChange};
use crate::changeset::{json_string, Op};
use crate::groups::{
    self, Action, ColumnInfo, Groups, IdMapLine, ReportInfo, Unresolved, COLUMN, REPORT,
};
use crate::input::Line;
use crate::keys;
use crate::keys::IdMap;
use crate::merge::{self, Item};
use crate::record::{instant_str, parse_line, raw_str, FieldDef, Kind, Probe, Record, Subject};
use crate::refs::{self, Fields, Moves};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// What §2–§3 need of one record.
pub(super) enum Kept {
    Nothing,
    Server(i64, String),
    Field(i64, FieldDef),
    Report { info: ReportInfo, stable: String },
    Unresolved(Unresolved),
    Column(ColumnInfo, i64),
}

pub(super) fn keep(p: &Probe, id_map: &IdMap) -> Kept {
    let r = &p.raw;
    let int = |v| p.int(v).unwrap_or_default();
    let string = |v: Option<&RawValue>| v.and_then(raw_str).map(|s| s.into_owned());
    let deleted = r.deleted.is_some_and(|d| d.get() == "true");
    let last_updated = || groups::time_key(instant_str(string(r.last_updated).as_deref()));
    match p.kind {
        Kind::BiServer => Kept::Server(int(r.id), string(r.r#type).unwrap_or_default()),
        Kind::CustomField => Kept::Field(
            int(r.id),
            FieldDef {
                field_type: string(r.field_type).unwrap_or_default(),
                allow_multiple: r.allow_multiple.is_some_and(|d| d.get() == "true"),
            },
        ),
        Kind::BiReport => {
            let (oid, server) = (int(r.oid), int(r.server_id));
            let external = string(r.external_id).unwrap_or_default();
            match keys::resolve(id_map, server, &external, string(r.source_url).as_deref()) {
                Some((stable, rule)) => Kept::Report {
                    info: ReportInfo {
                        oid,
                        server_id: server,
                        external: groups::external_hash(server, &external),
                        stable: 0,
                        already_stable: stable == external,
                        rule,
                        deleted,
                        last_updated: last_updated(),
                    },
                    stable,
                },
                None => Kept::Unresolved(Unresolved {
                    server_id: server,
                    oid,
                    external_id: external,
                }),
            }
        }
        Kind::BiReportColumn => {
            let server = int(r.server_id);
            let external = string(r.external_id).unwrap_or_default();
            let report = string(r.report).unwrap_or_default();
            let key = keys::ColumnKey::of(&external, &report);
            Kept::Column(
                ColumnInfo::new(
                    int(r.oid),
                    groups::external_hash(server, &report),
                    key.suffix,
                    key.prefixed,
                    deleted,
                    last_updated(),
                ),
                server,
            )
        }
        _ => Kept::Nothing,
    }
}

/// What the second pass decides for one line.
pub(super) enum Decision {
    Same,
    Lines(Vec<RawChange>, u64),
    Version {
        change: Option<RawChange>,
        idmap: (Vec<u8>, Vec<u8>),
        column_rekeyed: Option<i64>,
    },
    Member(usize, usize),
    Bad(String),
}

/// What merging one group gave.
pub(super) struct GroupResult {
    pub(super) changes: Vec<RawChange>,
    pub(super) conflicts: Vec<crate::merge::Conflict>,
    pub(super) carried: BTreeMap<String, u64>,
    pub(super) repaired: u64,
}

/// Merges the held curation of group `g` (SPEC §4) and gives the changes it makes.
///
/// Most records of a group are alone under their merge key and untouched by the repair: the
/// survivor's own, which stay as they are, and a retired version's, which only move onto the
/// survivor. Those are judged on their raw bytes ([`lone`]); only the rest are read into trees
/// and merged, and the changes come out in the order the merge of them all would give.
pub(super) fn merge_one(
    g: usize,
    raw: &[(usize, u64, Vec<u8>)],
    fields: &Fields,
    groups: &Groups,
    decisions: Option<&dyn merge::Chooser>,
    dry: bool,
) -> GroupResult {
    let survivor = groups.survivor(g);
    let probes: Vec<Probe> = raw
        .iter()
        .map(|(_, _, bytes)| Probe::parse_validated(bytes).expect("held lines were validated"))
        .collect();
    let keys: Vec<Option<String>> = probes.iter().map(probe_merge_key).collect();
    // How many records share each merge key (of one kind).
    let mut sharing: foldhash::HashMap<(Kind, &str), u32> = Default::default();
    for (p, k) in probes.iter().zip(&keys) {
        if let Some(k) = k {
            *sharing.entry((p.kind, k.as_str())).or_default() += 1;
        }
    }
    let mut repaired = 0;
    let mut carried: BTreeMap<String, u64> = BTreeMap::new();
    // The records judged on their bytes, by index in `raw`.
    let mut lones: Vec<(usize, Lone)> = Vec::new();
    // Each merged record's original bytes (the prior of its change), its index in `raw` and
    // its index among the items.
    let mut before: foldhash::HashMap<(String, String), (&[u8], usize, usize)> =
        foldhash::HashMap::with_capacity_and_hasher(raw.len(), Default::default());
    let mut items = Vec::with_capacity(raw.len());
    // A reviewer's decision may name any merge key: with decisions, everything merges.
    let by_bytes = decisions.is_none() && !trees_only();
    for (i, ((rank, line, bytes), p)) in raw.iter().zip(&probes).enumerate() {
        let alone = by_bytes
            && keys[i]
                .as_deref()
                .is_some_and(|k| sharing[&(p.kind, k)] == 1);
        if let Some(l) = alone.then(|| lone(p, *rank, fields, groups)).flatten() {
            if l == Lone::Moves {
                *carried.entry(p.kind_name.to_string()).or_default() += 1;
            }
            lones.push((i, l));
            continue;
        }
        let rec = std::sync::Arc::new(Record::from_validated(bytes));
        before.insert(
            (p.kind_name.to_string(), p.key()),
            (bytes.as_slice(), i, items.len()),
        );
        let mut after = Record::clone(&rec);
        repaired += refs::repair(&mut after, fields, groups);
        items.push(Item {
            rank: *rank,
            line: *line,
            before: rec,
            after,
        });
    }
    // The records as read, shared with the items (not copied).
    let originals: Vec<std::sync::Arc<Record>> =
        items.iter().map(|i: &Item| i.before.clone()).collect();
    let merged = merge::merge_group_with(&survivor, items, fields, decisions);
    for (k, n) in merged.carried {
        *carried.entry(k).or_default() += n;
    }
    // The difference between the group's curation before and after, matched by key; the
    // deletes last, in the group's order (version, then line), by index in `raw`.
    let mut changes = Vec::new();
    let mut deletes: Vec<(usize, Option<RawChange>)> = Vec::new();
    let survivor_json = serde_json::to_string(&survivor).expect("a subject serialises");
    let mut lones = lones.into_iter().peekable();
    let mut lone_changes = |until: Option<(usize, u64)>, changes: &mut Vec<RawChange>| {
        while let Some((i, l)) =
            lones.next_if(|(i, _)| until.is_none_or(|place| (raw[*i].0, raw[*i].1) < place))
        {
            if l == Lone::Moves {
                let (change, delete) = moved(&probes[i], &survivor, &survivor_json, dry);
                changes.extend(change);
                if delete.is_some() {
                    deletes.push((i, delete));
                }
            }
        }
    };
    for (a, first) in merged.records.into_iter().zip(merged.first_of) {
        // A lone record stands where its merge key first comes; records without one, last.
        lone_changes(first, &mut changes);
        let (kind, key) = (a.kind_name().to_string(), a.key());
        let prior = before.remove(&(kind.clone(), key.clone()));
        if prior.is_some_and(|(_, _, j)| originals[j].obj == a.obj) {
            continue;
        }
        if dry {
            // A record that differs from its prior is an update (encode finds a field that
            // differs), else a create: counted, never written.
            changes.push(dry_change(if prior.is_some() {
                Op::Update
            } else {
                Op::Create
            }));
            continue;
        }
        match prior {
            Some((p, _, j)) => {
                changes.extend(tree_update(&kind, &key, p, &originals[j].obj, &a.obj))
            }
            None => {
                let record = serde_json::to_vec(&a.obj).expect("a JSON map always serialises");
                changes.extend(change_line(&kind, &key, None, Some(&record), false));
            }
        }
    }
    lone_changes(None, &mut changes);
    // The records the merge left out leave in the group's order, not the map's: the change
    // file's order is part of the bundle's bytes.
    for ((kind, key), (prior, i, _)) in before {
        deletes.push((i, change_line(&kind, &key, Some(prior), None, dry)));
    }
    deletes.sort_unstable_by_key(|(i, _)| *i);
    changes.extend(deletes.into_iter().filter_map(|(_, d)| d));
    GroupResult {
        changes,
        conflicts: merged.conflicts,
        carried,
        repaired,
    }
}

/// `LOOKMIG_MERGE_TREES` (a test knob, read once): every held record goes through the tree
/// merge, so that a test can hold the lone records' bytes to what the merge makes of them.
fn trees_only() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("LOOKMIG_MERGE_TREES").is_some_and(|v| v != "0"))
}

/// What the merge does to a record alone under its merge key in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lone {
    /// The survivor's: it stays as it is.
    Stays,
    /// A retired version's: it moves onto the survivor, and nothing else of it changes.
    Moves,
}

/// The merge key of a held line ([`merge::merge_key`]).
fn probe_merge_key(p: &Probe) -> Option<String> {
    let r = &p.raw;
    merge::merge_key_from(p.kind, |f| p.int(r.get(f)), |f| r.get(f).and_then(raw_str))
}

/// What the merge does to a record at `rank` that is alone under its merge key, when that
/// needs no tree: None when the repair (§5) changes it, or when the union of a multi-valued
/// field could (a null, or an item twice).
fn lone(p: &Probe, rank: usize, fields: &Fields, groups: &Groups) -> Option<Lone> {
    let r = &p.raw;
    if !matches!(
        p.kind,
        Kind::Tag | Kind::Star | Kind::TrustFlag | Kind::FieldValue
    ) {
        return None;
    }
    if !groups.nothing_moves() {
        match repairable(p, fields) {
            Repairable::Nothing => {}
            Repairable::Tree => return None,
            Repairable::Text(_, text) => {
                if text
                    .and_then(raw_str)
                    .is_some_and(|t| refs::rewrite_rich(&t, groups).is_some())
                {
                    return None;
                }
            }
        }
    }
    if p.kind == Kind::FieldValue && rank > 0 {
        let value = r.value?;
        let def = p.int(r.field_id).and_then(|id| fields.get(id));
        // As the merge tells them apart: an undefined field is multi-valued by its value.
        if def.map_or(value.get().starts_with('['), |d| d.multi()) {
            let Ok(serde_json::Value::Array(items)) = serde_json::from_str(value.get()) else {
                return None;
            };
            if items
                .iter()
                .enumerate()
                .any(|(i, v)| items[..i].contains(v))
            {
                return None;
            }
        }
    }
    Some(if rank == 0 { Lone::Stays } else { Lone::Moves })
}

/// The changes of a retired version's lone record moving onto `survivor` (`survivor_json`: the
/// subject as JSON): its subject replaced and every other byte kept. A trust flag keeps its key (its id) and is updated; the other
/// kinds are keyed by their subject, so the record of the new key is created and the old one
/// deleted (the second change).
fn moved(
    p: &Probe,
    survivor: &Subject,
    survivor_json: &str,
    dry: bool,
) -> (Option<RawChange>, Option<RawChange>) {
    let raw = p.raw.subject.expect("a held record has a subject");
    if p.kind == Kind::TrustFlag {
        return (
            edit_change(p, vec![(raw, "subject", survivor_json.to_string())], dry),
            None,
        );
    }
    let delete = raw_change(p, None, dry);
    if dry {
        return (Some(dry_change(Op::Create)), delete);
    }
    let record = splice(p.line, raw, survivor_json);
    (
        change_line(
            &p.kind_name,
            &p.key_with_subject(survivor),
            None,
            Some(&record),
            false,
        ),
        delete,
    )
}

/// `line` with the value `raw` (a slice of it) replaced by `new`, outer white space trimmed.
fn splice(line: &[u8], raw: &RawValue, new: &str) -> Vec<u8> {
    let line = line.trim_ascii();
    let at = (raw.get().as_ptr() as usize)
        .checked_sub(line.as_ptr() as usize)
        .expect("the value is a slice of the line");
    let end = at + raw.get().len();
    assert!(end <= line.len(), "the value is a slice of the line");
    [&line[..at], new.as_bytes(), &line[end..]].concat()
}

/// Decides what happens to one line in the second pass.
pub(super) fn decide(
    line: &Line,
    fields: &Fields,
    groups: &Groups,
    dry: bool,
) -> (Decision, Option<String>) {
    // The scan validated this line (it is not one of its bad lines).
    let p = match Probe::parse_validated(&line.bytes) {
        Ok(p) => p,
        Err(e) => return (Decision::Bad(e), None),
    };
    // Read once, for the dangling check and the group look-up.
    let subject = p.subject();
    let dangling = subject.as_ref().and_then(|(otype, oid)| {
        let column = groups::is_column(otype)?;
        (!groups.known(column, *oid)).then(|| format!("{} {}", p.kind_name, p.key()))
    });
    (
        decide_probed(&p, subject, line, fields, groups, dry),
        dangling,
    )
}

/// [`decide`] for a line already read; `subject` is [`Probe::subject`].
/// `dry`: the changes are only counted ([`super::plan`]), so their lines are not built.
fn decide_probed(
    p: &Probe,
    subject: Option<(std::borrow::Cow<'_, str>, i64)>,
    line: &Line,
    fields: &Fields,
    groups: &Groups,
    dry: bool,
) -> Decision {
    let r = &p.raw;
    if p.kind == Kind::FieldValue {
        if let Some(def) = p.int(r.field_id).and_then(|id| fields.get(id)) {
            if let Err(e) = def.check_raw(r.value.expect("validated")) {
                return Decision::Bad(e);
            }
        }
    }
    match p.kind {
        Kind::BiReport | Kind::BiReportColumn => version_change(p, groups, dry),
        _ => {
            if let Some((g, rank)) = subject.and_then(|(otype, oid)| groups.member_of(&otype, oid))
            {
                return Decision::Member(g, rank);
            }
            if groups.nothing_moves() {
                return Decision::Same;
            }
            // Rich text in one string field: rewritten in place, the rest of the line kept.
            let (name, rich) = match repairable(p, fields) {
                Repairable::Nothing => return Decision::Same,
                Repairable::Tree => return full_repair(line, fields, groups, dry),
                Repairable::Text(name, rich) => (name, rich),
            };
            let Some(text) = rich.and_then(raw_str) else {
                return Decision::Same;
            };
            match refs::rewrite_rich(&text, groups) {
                Some((new, n)) => {
                    let edit =
                        (new != text).then(|| (rich.expect("some"), name, json_string(&new)));
                    Decision::Lines(
                        edit_change(p, edit.into_iter().collect(), dry)
                            .into_iter()
                            .collect(),
                        n,
                    )
                }
                None => Decision::Same,
            }
        }
    }
}

/// Where the repair of references (SPEC §5) may change a probed record, as the raw reading of
/// `refs::repair` sees it.
enum Repairable<'a> {
    /// Nowhere.
    Nothing,
    /// The mentions of one rich-text field (its name and raw value).
    Text(&'static str, Option<&'a RawValue>),
    /// Beyond one string (a conversation's posts, an object set that names reports): the
    /// record is repaired as a tree.
    Tree,
}

fn repairable<'a>(p: &Probe<'a>, fields: &Fields) -> Repairable<'a> {
    let r = &p.raw;
    match p.kind {
        Kind::FieldValue => match p.int(r.field_id).and_then(|id| fields.get(id)) {
            Some(def) if def.field_type == "RICH_TEXT" => Repairable::Text("value", r.value),
            Some(def)
                if def.field_type == "OBJECT_SET"
                    && groups::REPORT_TEXT
                        .find(r.value.expect("validated").get().as_bytes())
                        .is_some() =>
            {
                Repairable::Tree
            }
            _ => Repairable::Nothing,
        },
        Kind::Article => Repairable::Text("body", r.body),
        Kind::TrustFlag => Repairable::Text("reason", r.reason),
        Kind::Conversation => Repairable::Tree,
        _ => Repairable::Nothing,
    }
}

/// What happens to a report or column version (SPEC §3), and its line of the id map.
fn version_change(p: &Probe, groups: &Groups, dry: bool) -> Decision {
    let r = &p.raw;
    let column = p.kind == Kind::BiReportColumn;
    let oid = p.int(r.oid).unwrap_or_default();
    let Some(v) = groups.version(column, oid) else {
        return Decision::Same;
    };
    let legacy = r.external_id.and_then(raw_str).unwrap_or_default();
    let stable_report = groups.stables.get(v.stable);
    let (stable, report) = if column {
        let report = r.report.and_then(raw_str).unwrap_or_default();
        // The group's stable id: this version's suffix (the same in every version), prefixed
        // as the survivor's is (SPEC §2, in keys::ColumnKey).
        let key = keys::ColumnKey {
            prefixed: v.prefixed,
            ..keys::ColumnKey::of(&legacy, &report)
        };
        let stable = key.stable_external_id(stable_report);
        (stable, Some(report))
    } else if v.left {
        (legacy.to_string(), None)
    } else {
        (stable_report.to_string(), None)
    };
    let mut action = v.action;
    let change = match action {
        Action::Retire => raw_change(p, None, dry),
        Action::Rekey => {
            let mut edits = Vec::new();
            if stable != legacy {
                edits.push((
                    r.external_id.expect("validated"),
                    "external_id",
                    json_string(&stable),
                ));
            }
            if report.as_ref().is_some_and(|rep| rep != stable_report) {
                edits.push((
                    r.report.expect("validated"),
                    "report",
                    json_string(stable_report),
                ));
            }
            if edits.is_empty() {
                action = Action::Keep;
                None
            } else {
                edit_change(p, edits, dry)
            }
        }
        Action::Keep => None,
    };
    let server = p.int(r.server_id).unwrap_or_default();
    let column_rekeyed = (column && action == Action::Rekey).then_some(server);
    if dry {
        return Decision::Version {
            change,
            idmap: (Vec::new(), Vec::new()),
            column_rekeyed,
        };
    }
    let otype = if column { COLUMN } else { REPORT };
    let line = IdMapLine {
        server_id: server,
        otype,
        oid,
        legacy_external_id: legacy.into_owned(),
        stable_external_id: stable,
        survivor_oid: v.survivor,
        action,
    };
    let mut key = ((server as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.push(column as u8);
    key.extend_from_slice(line.stable_external_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&v.rank.to_be_bytes());
    key.extend_from_slice(&((oid as u64) ^ (1 << 63)).to_be_bytes());
    let idmap = (key, line.to_json());
    Decision::Version {
        change,
        idmap,
        column_rekeyed,
    }
}

/// The Value route, for records whose repair is not one string: conversations' posts and
/// object sets that name reports.
fn full_repair(line: &Line, fields: &Fields, groups: &Groups, dry: bool) -> Decision {
    let rec = match parse_line(&line.bytes) {
        Ok(r) => r,
        Err(e) => return Decision::Bad(e),
    };
    let mut after = rec.clone();
    match refs::repair(&mut after, fields, groups) {
        0 => Decision::Same,
        n => {
            let record = serde_json::to_vec(&after.obj).expect("a JSON map always serialises");
            Decision::Lines(
                change_line(
                    rec.kind_name(),
                    &rec.key(),
                    Some(&line.bytes),
                    Some(&record),
                    dry,
                )
                .into_iter()
                .collect(),
                n,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_splice_replaces_the_value_and_keeps_every_other_byte() {
        let line =
            br#"  {"kind":"tag", "subject" : {"oid":1,"otype":"bi_report"},"name":"a\u00e9"} "#;
        let p = Probe::parse(line).unwrap();
        let new = r#"{"otype":"bi_report","oid":9}"#;
        let out = splice(p.line, p.raw.subject.unwrap(), new);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"kind":"tag", "subject" : {"otype":"bi_report","oid":9},"name":"a\u00e9"}"#
        );
    }
}
