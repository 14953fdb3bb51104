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
use crate::record::{instant_str, parse_line, raw_str, FieldDef, Kind, Probe, Record};
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

pub(super) fn merge_one(
    g: usize,
    raw: &[(usize, u64, Vec<u8>)],
    fields: &Fields,
    groups: &Groups,
    decisions: Option<&dyn merge::Chooser>,
    dry: bool,
) -> GroupResult {
    let mut repaired = 0;
    // Each record's original bytes (the prior of its change) and its index among the items.
    let mut before: foldhash::HashMap<(String, String), (&[u8], usize)> =
        foldhash::HashMap::with_capacity_and_hasher(raw.len(), Default::default());
    let mut items = Vec::with_capacity(raw.len());
    for (i, (rank, line, bytes)) in raw.iter().enumerate() {
        let rec = std::sync::Arc::new(Record::from_validated(bytes));
        before.insert((rec.kind_name().to_string(), rec.key()), (bytes, i));
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
    let merged = merge::merge_group_with(&groups.survivor(g), items, fields, decisions);
    // The difference between the group's curation before and after, matched by key.
    let mut changes = Vec::new();
    for a in merged.records {
        let (kind, key) = (a.kind_name().to_string(), a.key());
        let prior = before.remove(&(kind.clone(), key.clone()));
        if prior.is_some_and(|(_, i)| originals[i].obj == a.obj) {
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
            Some((p, i)) => changes.extend(tree_update(&kind, &key, p, &originals[i].obj, &a.obj)),
            None => {
                let record = serde_json::to_vec(&a.obj).expect("a JSON map always serialises");
                changes.extend(change_line(&kind, &key, None, Some(&record), false));
            }
        }
    }
    // The records the merge left out leave in the group's order (version, then line), not
    // the map's: the change file's order is part of the bundle's bytes.
    let mut gone: Vec<_> = before.into_iter().collect();
    gone.sort_unstable_by_key(|(_, (_, i))| *i);
    for ((kind, key), (prior, _)) in gone {
        changes.extend(change_line(&kind, &key, Some(prior), None, dry));
    }
    GroupResult {
        changes,
        conflicts: merged.conflicts,
        carried: merged.carried,
        repaired,
    }
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
            let (name, rich) = match p.kind {
                Kind::FieldValue => match p.int(r.field_id).and_then(|id| fields.get(id)) {
                    Some(def) if def.field_type == "RICH_TEXT" => ("value", r.value),
                    Some(def)
                        if def.field_type == "OBJECT_SET"
                            && groups::REPORT_TEXT
                                .find(r.value.expect("validated").get().as_bytes())
                                .is_some() =>
                    {
                        return full_repair(line, fields, groups, dry);
                    }
                    _ => ("", None),
                },
                Kind::Article => ("body", r.body),
                Kind::TrustFlag => ("reason", r.reason),
                Kind::Conversation => return full_repair(line, fields, groups, dry),
                _ => ("", None),
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
