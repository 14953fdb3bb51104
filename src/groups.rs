//! Groups and survivors (SPEC §3): the versions of one report (or column) that share a stable
//! key, their order, which one survives, which retire, and the reference map that follows.
//!
//! Everything here works on small fixed-size facts collected in the first pass over the export
//! ([`ReportInfo`], [`ColumnInfo`]); strings are hashed or interned, so that catalogs of
//! millions of objects fit in little memory. No curation is looked at.

use crate::record::latest_first;
use crate::refs::RefMap;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The otype of reports in subjects and mentions.
pub const REPORT: &str = "bi_report";
/// The otype of report columns in subjects and mentions.
pub const COLUMN: &str = "bi_report_column";
/// No timestamp (sorts last).
pub const NO_TIME: i64 = i64::MIN;
/// Not in a group with several versions.
pub const NO_GROUP: u32 = u32::MAX;

/// The hash of a (server, external_id) pair: how a column finds its report.
pub fn external_hash(server: i64, external_id: &str) -> u64 {
    crate::record::SeenKeys::hash(&server.to_string(), external_id) as u64
}

/// A timestamp as one number for ordering: nanoseconds since the epoch, clamped, or [`NO_TIME`].
pub fn time_key(t: Option<(i64, u32)>) -> i64 {
    match t {
        Some((s, n)) => s
            .saturating_mul(1_000_000_000)
            .saturating_add(n as i64)
            .max(NO_TIME + 1),
        None => NO_TIME,
    }
}

/// What the first pass keeps of a bi_report of a migrated server.
#[derive(Debug, Clone, Copy)]
pub struct ReportInfo {
    pub oid: i64,
    pub server_id: i64,
    /// [`external_hash`] of its external_id.
    pub external: u64,
    /// Index of its stable external_id in [`Groups::stables`].
    pub stable: u32,
    /// Its external_id already equals the stable one.
    pub already_stable: bool,
    /// The rule that resolved it.
    pub rule: crate::keys::Rule,
    pub deleted: bool,
    /// [`time_key`] of `last_updated`.
    pub last_updated: i64,
}

/// What the first pass keeps of a bi_report_column of a migrated server.
#[derive(Debug, Clone, Copy)]
pub struct ColumnInfo {
    pub oid: i64,
    pub server_id: i64,
    /// [`external_hash`] of the external_id of its report.
    pub report: u64,
    /// Hash of its suffix (SPEC §2: what follows `<report id>.`, or the whole external_id).
    pub suffix: u64,
    /// Its external_id starts with its report's id and `.`, so its stable id is `<stable>.<suffix>`.
    pub prefixed: bool,
    pub deleted: bool,
    /// [`time_key`] of `last_updated`.
    pub last_updated: i64,
    /// Set by [`build`]: its report's stable index, and whether that report is its group's
    /// survivor (0 and false until then).
    pub stable: u32,
    pub of_survivor: bool,
}

/// What happens to one version (the `action` of `idmap.ndjson.zst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The survivor, whose external_id (or column `report`) changes.
    Rekey,
    /// Leaves the catalog; its curation moves to the survivor.
    Retire,
    /// Left as it is: a survivor already in stable form, or a deleted version without
    /// `--recover-deleted`.
    Keep,
}

/// The decision for one version of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub survivor: i64,
    /// Index into [`Groups::stables`]: the stable id of the report (of its report, for a column).
    pub stable: u32,
    pub action: Action,
    /// A deleted version left as it is.
    pub left: bool,
    /// Index into [`Groups::groups`] when the group has several participants, else [`NO_GROUP`].
    pub group: u32,
    /// Rank in version order (0 = the survivor).
    pub rank: u32,
    /// For a column: the survivor's external_id is `<report id>.<suffix>`, so the group's stable
    /// id is `<stable report id>.<suffix>` (else the bare suffix).
    pub prefixed: bool,
}

/// One line of `idmap.ndjson.zst`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IdMapLine {
    pub server_id: i64,
    pub otype: &'static str,
    pub oid: i64,
    pub legacy_external_id: String,
    pub stable_external_id: String,
    pub survivor_oid: i64,
    pub action: Action,
}

/// A group with more than one participating version, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub server_id: i64,
    pub otype: &'static str,
    /// The stable external_id of the report (of the columns' report, for a column group).
    #[serde(rename = "report_stable_external_id")]
    pub stable: String,
    pub survivor_oid: i64,
    /// Participating versions in version order, survivor first.
    pub versions: Vec<i64>,
    /// Deleted versions left as they are (no `--recover-deleted`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted_left: Vec<i64>,
}

/// A report no rule could resolve (SPEC §2 rule 5).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unresolved {
    pub server_id: i64,
    pub oid: i64,
    pub external_id: String,
}

/// Per-server counts for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ServerCounts {
    pub reports: u64,
    pub columns: u64,
    pub reports_rekeyed: u64,
    pub reports_retired: u64,
    pub columns_rekeyed: u64,
    pub columns_retired: u64,
    pub report_groups_with_versions: u64,
    pub deleted_versions_left: u64,
    pub unresolved: u64,
    pub by_rule: BTreeMap<String, u64>,
}

/// Everything §3 decides, ready for the second pass.
#[derive(Debug, Default)]
pub struct Groups {
    /// Interned stable external_ids of reports.
    pub stables: Vec<String>,
    /// Every version of every report group, sorted by oid.
    pub reports: Vec<(i64, Version)>,
    /// Every version of every column group, sorted by oid.
    pub columns: Vec<(i64, Version)>,
    /// Retired oids → survivor oids, per otype.
    pub refs: RefMap,
    /// The groups with several participating versions (reports and columns), as the report
    /// lists them.
    pub groups: crate::report::Spill,
    /// Per group: is it a column group, and its survivor's oid.
    pub survivors: Vec<(bool, i64)>,
    pub warnings: Vec<String>,
    pub servers: BTreeMap<i64, ServerCounts>,
}

impl Groups {
    /// The decision for a report (`column` false) or column version.
    pub fn version(&self, column: bool, oid: i64) -> Option<&Version> {
        let list = if column { &self.columns } else { &self.reports };
        list.binary_search_by_key(&oid, |(o, _)| *o)
            .ok()
            .map(|i| &list[i].1)
    }

    /// Group index and rank of a participant of a multi-version group.
    pub fn member_of(&self, otype: &str, oid: i64) -> Option<(usize, usize)> {
        let column = match otype {
            REPORT => false,
            COLUMN => true,
            _ => return None,
        };
        let v = self.version(column, oid)?;
        (v.group != NO_GROUP && !v.left).then_some((v.group as usize, v.rank as usize))
    }

    /// The survivor subject of a group.
    pub fn survivor(&self, group: usize) -> crate::record::Subject {
        let (column, oid) = self.survivors[group];
        crate::record::Subject {
            otype: if column { COLUMN } else { REPORT }.to_string(),
            oid,
        }
    }
}

/// Version order (SPEC §3): not deleted first, then `last_updated` latest first (missing last),
/// then `oid` highest first.
fn version_order(a: (bool, i64, i64), b: (bool, i64, i64)) -> std::cmp::Ordering {
    let t = |x: i64| (x != NO_TIME).then_some((x, 0u32));
    a.0.cmp(&b.0)
        .then(latest_first(t(a.1), t(b.1)))
        .then(b.2.cmp(&a.2))
}

/// Builds the groups from the reports and columns of the migrated servers. `unresolved` holds
/// the [`external_hash`] of each unresolved report; `stables` are the interned stable ids the
/// reports point into; `servers` already holds what the scan counted.
///
/// Takes the scan's lists, to free them as soon as they are used: the report facts once the
/// columns know their report's group, the columns' at the end.
pub fn build(
    reports: Vec<ReportInfo>,
    unresolved: &[u64],
    mut columns: Vec<ColumnInfo>,
    stables: Vec<String>,
    recover_deleted: bool,
    servers: BTreeMap<i64, ServerCounts>,
) -> Result<Groups> {
    let mut g = Groups {
        stables,
        servers,
        ..Groups::default()
    };
    g.reports.reserve_exact(reports.len());
    // (server, external_id) → report, for columns; AMBIGUOUS when several reports share one
    // (a deleted version left as it is may already hold the id its survivor takes).
    const AMBIGUOUS: u32 = u32::MAX;
    // An unresolved report: its columns stay as they are, like it.
    const UNRESOLVED: u32 = u32::MAX - 1;
    let mut by_external: HashMap<u64, u32> =
        HashMap::with_capacity(reports.len() + unresolved.len());
    let all = reports
        .iter()
        .enumerate()
        .map(|(i, r)| (r.external, i as u32));
    for (external, i) in all.chain(unresolved.iter().map(|h| (*h, UNRESOLVED))) {
        by_external
            .entry(external)
            .and_modify(|e| *e = AMBIGUOUS)
            .or_insert(i);
    }

    // Report groups: runs of equal stable index, in version order within.
    let mut order: Vec<u32> = (0..reports.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (x, y) = (&reports[a as usize], &reports[b as usize]);
        x.stable.cmp(&y.stable).then(version_order(
            (x.deleted, x.last_updated, x.oid),
            (y.deleted, y.last_updated, y.oid),
        ))
    });
    // Per report index: the survivor's index when it takes part.
    let mut part_of: Vec<Option<u32>> = vec![None; reports.len()];
    for run in order.chunk_by(|&a, &b| reports[a as usize].stable == reports[b as usize].stable) {
        let survivor = run[0];
        let s = reports[survivor as usize];
        let (part, left): (Vec<u32>, Vec<u32>) = run
            .iter()
            .partition(|&&i| i == survivor || recover_deleted || !reports[i as usize].deleted);
        let counts = g.servers.entry(s.server_id).or_default();
        counts.deleted_versions_left += left.len() as u64;
        let group = if part.len() > 1 {
            counts.report_groups_with_versions += 1;
            g.survivors.push((false, s.oid));
            g.groups.push(&Group {
                server_id: s.server_id,
                otype: REPORT,
                stable: g.stables[s.stable as usize].clone(),
                survivor_oid: s.oid,
                versions: part.iter().map(|&i| reports[i as usize].oid).collect(),
                deleted_left: left.iter().map(|&i| reports[i as usize].oid).collect(),
            })?;
            (g.survivors.len() - 1) as u32
        } else {
            NO_GROUP
        };
        for (rank, &i) in part.iter().enumerate() {
            let r = &reports[i as usize];
            part_of[i as usize] = Some(survivor);
            let action = if i != survivor {
                counts.reports_retired += 1;
                g.refs.insert(REPORT, r.oid, s.oid);
                Action::Retire
            } else if !r.already_stable {
                counts.reports_rekeyed += 1;
                Action::Rekey
            } else {
                Action::Keep
            };
            let v = Version {
                survivor: s.oid,
                stable: s.stable,
                action,
                left: false,
                group,
                rank: rank as u32,
                prefixed: false,
            };
            g.reports.push((r.oid, v));
        }
        for &i in &left {
            let r = &reports[i as usize];
            let v = Version {
                survivor: r.oid,
                stable: s.stable,
                action: Action::Keep,
                left: true,
                group: NO_GROUP,
                rank: 0,
                prefixed: false,
            };
            g.reports.push((r.oid, v));
        }
    }
    g.reports.sort_unstable_by_key(|(oid, _)| *oid);

    // Column groups: (report group, suffix), the survivor report's columns first. The columns
    // that join no group are dropped from the list, the others learn their report's group.
    columns.retain_mut(|c| {
        g.servers.entry(c.server_id).or_default().columns += 1;
        let ri = match by_external.get(&c.report) {
            Some(&AMBIGUOUS) => {
                g.warnings.push(format!(
                    "bi_report_column oid {} (server {}) names an external_id that several reports of that \
                     server share; left as it is",
                    c.oid, c.server_id
                ));
                return false;
            }
            Some(&UNRESOLVED) => return false,
            Some(&ri) => ri,
            None => {
                g.warnings.push(format!(
                    "bi_report_column oid {} (server {}) names a report that is not a report of that server; \
                     left as it is",
                    c.oid, c.server_id
                ));
                return false;
            }
        };
        let Some(survivor) = part_of[ri as usize] else {
            return false; // unresolved, or a deleted version left as it is: its columns stay too
        };
        c.stable = reports[ri as usize].stable;
        c.of_survivor = ri == survivor;
        true
    });
    // The report side is done with: freed before the column versions are made (at 200,000
    // reports the report facts and this look-up hold 30 MB, at migrate's peak).
    drop((by_external, part_of, order, reports));
    columns.sort_unstable_by(|x, y| {
        (x.stable, x.suffix)
            .cmp(&(y.stable, y.suffix))
            .then(y.of_survivor.cmp(&x.of_survivor))
            .then(version_order(
                (x.deleted, x.last_updated, x.oid),
                (y.deleted, y.last_updated, y.oid),
            ))
    });
    g.columns.reserve_exact(columns.len());
    let same = |a: &ColumnInfo, b: &ColumnInfo| (a.stable, a.suffix) == (b.stable, b.suffix);
    for run in columns.chunk_by(same) {
        let s = run[0];
        let counts = g.servers.entry(s.server_id).or_default();
        let group = if run.len() > 1 {
            g.survivors.push((true, s.oid));
            g.groups.push(&Group {
                server_id: s.server_id,
                otype: COLUMN,
                stable: g.stables[run[0].stable as usize].clone(),
                survivor_oid: s.oid,
                versions: run.iter().map(|c| c.oid).collect(),
                deleted_left: vec![],
            })?;
            (g.survivors.len() - 1) as u32
        } else {
            NO_GROUP
        };
        for (rank, c) in run.iter().enumerate() {
            // Whether the survivor's id or `report` really changes is known only from its record
            // (pass 2); Rekey here means "rewrite from the stable report id".
            let action = if rank > 0 {
                counts.columns_retired += 1;
                g.refs.insert(COLUMN, c.oid, s.oid);
                Action::Retire
            } else {
                Action::Rekey
            };
            let v = Version {
                survivor: s.oid,
                stable: c.stable,
                action,
                left: false,
                group,
                rank: rank as u32,
                prefixed: s.prefixed,
            };
            g.columns.push((c.oid, v));
        }
    }
    drop(columns);
    g.columns.sort_unstable_by_key(|(oid, _)| *oid);
    g.refs.finish();
    Ok(g)
}

#[cfg(test)]
mod tests {
    //! SPEC §3 rule by rule, on hand-made facts: each test breaks if its rule is broken.

    use super::*;
    use crate::keys::Rule;

    const SERVER: i64 = 1;

    /// The facts of a report of [`SERVER`] whose external_id is `ext<oid>`, in stable group
    /// `stable`; `updated` is `last_updated` in seconds since the epoch (None: missing).
    fn report(oid: i64, stable: u32, deleted: bool, updated: Option<i64>) -> ReportInfo {
        ReportInfo {
            oid,
            server_id: SERVER,
            external: external_hash(SERVER, &format!("ext{oid}")),
            stable,
            already_stable: false,
            rule: Rule::Legacy,
            deleted,
            last_updated: time_key(updated.map(|s| (s, 0))),
        }
    }

    /// The facts of a column of the report `ext<report>` with the suffix `suffix`.
    fn column(
        oid: i64,
        report: i64,
        suffix: &str,
        deleted: bool,
        updated: Option<i64>,
    ) -> ColumnInfo {
        ColumnInfo {
            oid,
            server_id: SERVER,
            report: external_hash(SERVER, &format!("ext{report}")),
            suffix: external_hash(0, suffix),
            prefixed: true,
            deleted,
            last_updated: time_key(updated.map(|s| (s, 0))),
            stable: 0,
            of_survivor: false,
        }
    }

    fn build_with(reports: &[ReportInfo], columns: &[ColumnInfo], recover: bool) -> Groups {
        let stables = vec!["dashboard/1".to_string(), "dashboard/2".to_string()];
        let (reports, columns) = (reports.to_vec(), columns.to_vec());
        build(reports, &[], columns, stables, recover, BTreeMap::new()).unwrap()
    }

    /// The versions that take part, in version order (by rank), of the group whose survivor
    /// is `survivor`.
    fn order(g: &Groups, column: bool, survivor: i64) -> Vec<i64> {
        let list = if column { &g.columns } else { &g.reports };
        let mut part: Vec<(u32, i64)> = list
            .iter()
            .filter(|(_, v)| v.survivor == survivor && !v.left)
            .map(|(oid, v)| (v.rank, *oid))
            .collect();
        part.sort();
        part.into_iter().map(|(_, oid)| oid).collect()
    }

    /// The groups the report lists, as JSON.
    fn listed(g: &Groups) -> Vec<serde_json::Value> {
        let mut out = vec![];
        g.groups
            .for_each(|l| {
                out.push(serde_json::from_slice(l).unwrap());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn not_deleted_comes_before_a_later_and_higher_deleted_version() {
        // The deleted version is the latest and has the highest oid: only the first rule puts
        // it behind.
        let g = build_with(
            &[
                report(1, 0, false, Some(100)),
                report(9, 0, true, Some(900)),
            ],
            &[],
            true,
        );
        assert_eq!(order(&g, false, 1), vec![1, 9]);
        assert_eq!(g.version(false, 9).unwrap().action, Action::Retire);
    }

    #[test]
    fn last_updated_latest_first_and_a_missing_one_last() {
        // The oids run the other way, so the oid rule alone would give 5, 4, 3, 2, 1.
        let g = build_with(
            &[
                report(1, 0, false, Some(300)),
                report(2, 0, false, Some(-50)), // before the epoch: still before a missing one
                report(3, 0, false, Some(200)),
                report(4, 0, false, None),
                report(5, 0, false, Some(100)),
            ],
            &[],
            false,
        );
        assert_eq!(order(&g, false, 1), vec![1, 3, 5, 2, 4]);
        assert_eq!(g.version(false, 4).unwrap().rank, 4);
    }

    #[test]
    fn last_updated_compares_instants_not_seconds_only() {
        let mut a = report(1, 0, false, Some(100));
        a.last_updated = time_key(Some((100, 5)));
        let b = report(2, 0, false, Some(100));
        let g = build_with(&[a, b], &[], false);
        assert_eq!(
            order(&g, false, 1),
            vec![1, 2],
            "100.000000005 is later than 100"
        );
    }

    #[test]
    fn equal_times_order_by_oid_highest_first() {
        let g = build_with(
            &[
                report(5, 0, false, Some(100)),
                report(7, 0, false, Some(100)),
                report(6, 0, false, Some(100)),
                report(8, 0, false, None),
                report(9, 0, false, None),
            ],
            &[],
            false,
        );
        assert_eq!(order(&g, false, 7), vec![7, 6, 5, 9, 8]);
    }

    #[test]
    fn the_survivor_keeps_its_oid_and_the_others_retire_onto_it() {
        let g = build_with(
            &[
                report(1, 0, false, Some(100)),
                report(2, 0, false, Some(300)),
                report(3, 0, false, Some(200)),
                report(4, 1, false, Some(50)), // another stable id: a group of its own
            ],
            &[],
            false,
        );
        let s = g.version(false, 2).unwrap();
        assert_eq!((s.survivor, s.action, s.rank), (2, Action::Rekey, 0));
        assert_eq!(g.refs.get(REPORT, 2), None, "the survivor keeps its oid");
        for oid in [1, 3] {
            let v = g.version(false, oid).unwrap();
            assert_eq!((v.survivor, v.action), (2, Action::Retire), "oid {oid}");
            assert_eq!(g.refs.get(REPORT, oid), Some(2), "oid {oid}");
        }
        // A group of one: the report is its own survivor, nothing retires onto it.
        let alone = g.version(false, 4).unwrap();
        assert_eq!((alone.survivor, alone.group), (4, NO_GROUP));
        assert_eq!(g.refs.get(REPORT, 4), None);
        let groups = listed(&g);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0]["survivor_oid"], 2);
        assert_eq!(groups[0]["versions"], serde_json::json!([2, 3, 1]));
        assert_eq!(groups[0]["report_stable_external_id"], "dashboard/1");
        assert_eq!(g.servers[&SERVER].reports_retired, 2);
        assert_eq!(g.servers[&SERVER].report_groups_with_versions, 1);
    }

    #[test]
    fn a_survivor_already_in_stable_form_is_kept() {
        let mut s = report(2, 0, false, Some(300));
        s.already_stable = true;
        let g = build_with(&[report(1, 0, false, Some(100)), s], &[], false);
        assert_eq!(g.version(false, 2).unwrap().action, Action::Keep);
        assert_eq!(g.version(false, 1).unwrap().action, Action::Retire);
    }

    #[test]
    fn deleted_versions_are_left_alone_without_recover_deleted() {
        let reports = [
            report(1, 0, false, Some(100)),
            report(2, 0, true, Some(500)),
            report(3, 0, false, Some(50)),
        ];
        let g = build_with(&reports, &[], false);
        assert_eq!(order(&g, false, 1), vec![1, 3]);
        let left = g.version(false, 2).unwrap();
        assert!(left.left);
        assert_eq!(left.action, Action::Keep);
        assert_eq!(left.group, NO_GROUP);
        assert_eq!(
            left.survivor, 2,
            "a version left alone points at nothing else"
        );
        assert_eq!(g.refs.get(REPORT, 2), None, "references to it stay");
        assert_eq!(g.member_of(REPORT, 2), None, "its curation stays on it");
        assert_eq!(g.servers[&SERVER].deleted_versions_left, 1);
        assert_eq!(listed(&g)[0]["deleted_left"], serde_json::json!([2]));
    }

    #[test]
    fn deleted_versions_take_part_with_recover_deleted() {
        let reports = [
            report(1, 0, false, Some(100)),
            report(2, 0, true, Some(500)),
            report(3, 0, false, Some(50)),
        ];
        let g = build_with(&reports, &[], true);
        assert_eq!(order(&g, false, 1), vec![1, 3, 2]);
        let v = g.version(false, 2).unwrap();
        assert!(!v.left);
        assert_eq!(v.action, Action::Retire);
        assert_eq!(g.refs.get(REPORT, 2), Some(1));
        assert_eq!(g.member_of(REPORT, 2), Some((v.group as usize, 2)));
        assert_eq!(g.servers[&SERVER].deleted_versions_left, 0);
    }

    #[test]
    fn a_deleted_survivor_survives_when_every_version_is_deleted() {
        let g = build_with(
            &[report(1, 0, true, Some(100)), report(2, 0, true, Some(200))],
            &[],
            false,
        );
        let s = g.version(false, 2).unwrap();
        assert_eq!((s.survivor, s.action, s.left), (2, Action::Rekey, false));
        assert!(
            g.version(false, 1).unwrap().left,
            "the other deleted one stays"
        );
        assert_eq!(g.refs.get(REPORT, 1), None);
    }

    #[test]
    fn the_survivor_reports_columns_come_first_then_their_own_order() {
        // Report 2 survives (latest). Column 10 of report 2 is deleted, older and has the lowest
        // oid: every rule on its own fields puts it last, yet it survives.
        let reports = [
            report(1, 0, false, Some(100)),
            report(2, 0, false, Some(300)),
            report(3, 0, false, Some(200)),
        ];
        let columns = [
            column(10, 2, "a", true, Some(1)),
            column(11, 1, "a", false, Some(50)),
            column(12, 3, "a", false, Some(60)),
            column(13, 1, "a", true, Some(99)),
            column(14, 3, "b", false, Some(70)), // another suffix: a group of its own
        ];
        let g = build_with(&reports, &columns, false);
        assert_eq!(order(&g, true, 10), vec![10, 12, 11, 13]);
        assert_eq!(g.version(true, 10).unwrap().action, Action::Rekey);
        for oid in [11, 12, 13] {
            assert_eq!(g.version(true, oid).unwrap().action, Action::Retire);
            assert_eq!(g.refs.get(COLUMN, oid), Some(10), "column {oid}");
        }
        // The deleted column 13 takes part even without --recover-deleted: a column never
        // dangles from a report that left.
        assert!(!g.version(true, 13).unwrap().left);
        let b = g.version(true, 14).unwrap();
        assert_eq!(
            (b.survivor, b.action, b.group),
            (14, Action::Rekey, NO_GROUP)
        );
        let cols: Vec<_> = listed(&g)
            .into_iter()
            .filter(|x| x["otype"] == COLUMN)
            .collect();
        assert_eq!(cols.len(), 1);
        assert_eq!(cols[0]["versions"], serde_json::json!([10, 12, 11, 13]));
        assert_eq!(cols[0]["report_stable_external_id"], "dashboard/1");
    }

    #[test]
    fn columns_of_a_deleted_version_left_alone_stay_too() {
        let reports = [
            report(1, 0, false, Some(100)),
            report(2, 0, true, Some(500)),
        ];
        let columns = [
            column(10, 1, "a", false, Some(1)),
            column(20, 2, "a", false, Some(9)),
        ];
        let g = build_with(&reports, &columns, false);
        assert_eq!(
            g.version(true, 20),
            None,
            "the left report's column is left as it is"
        );
        assert_eq!(g.refs.get(COLUMN, 20), None);
        assert_eq!(g.version(true, 10).unwrap().survivor, 10);
        let g = build_with(&reports, &columns, true);
        assert_eq!(g.refs.get(COLUMN, 20), Some(10));
    }

    #[test]
    fn a_column_whose_report_names_no_report_is_left_with_a_warning() {
        let g = build_with(
            &[report(1, 0, false, Some(100))],
            &[
                column(10, 1, "a", false, None),
                column(11, 77, "a", false, None),
            ],
            false,
        );
        assert_eq!(g.version(true, 11), None);
        assert_eq!(g.refs.get(COLUMN, 11), None);
        assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
        assert!(
            g.warnings[0].contains("oid 11") && g.warnings[0].contains("names a report"),
            "{:?}",
            g.warnings
        );
        assert!(g.version(true, 10).is_some());
        assert_eq!(g.servers[&SERVER].columns, 2);
    }
}
