//! Groups and survivors (SPEC §3): the versions of one report (or column) that share a stable
//! key, their order, which one survives, which retire, and the reference map that follows.
//!
//! Everything here works on the small per-object facts collected in the first pass over the
//! export ([`ReportInfo`], [`ColumnInfo`]); no curation is looked at.

use crate::keys::{self, IdMap, Rule};
use crate::record::{latest_first, Subject};
use crate::refs::RefMap;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The otype of reports in subjects and mentions.
pub const REPORT: &str = "bi_report";
/// The otype of report columns in subjects and mentions.
pub const COLUMN: &str = "bi_report_column";

/// What the first pass keeps of a bi_report of a migrated server.
#[derive(Debug, Clone)]
pub struct ReportInfo {
    pub oid: i64,
    pub server_id: i64,
    pub external_id: String,
    pub deleted: bool,
    pub last_updated: Option<(i64, u32)>,
    pub source_url: Option<String>,
}

/// What the first pass keeps of a bi_report_column of a migrated server.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub oid: i64,
    pub server_id: i64,
    pub external_id: String,
    pub report: String,
    pub deleted: bool,
    pub last_updated: Option<(i64, u32)>,
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

/// The new fields of a survivor whose key changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekey {
    /// The stable external_id.
    pub external_id: String,
    /// For a column: the stable external_id of its report.
    pub report: Option<String>,
}

/// A group with more than one participating version, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub server_id: i64,
    pub otype: &'static str,
    pub stable_external_id: String,
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
    /// Survivors whose fields change, by (otype, oid).
    pub rekey: HashMap<(bool, i64), Rekey>,
    /// Retired oids → survivor oids, per otype.
    pub refs: RefMap,
    /// Participants of multi-version groups: (otype, oid) → (group index, rank in version order).
    pub members: HashMap<(bool, i64), (usize, usize)>,
    /// The multi-version groups (reports and columns), indexed by `members`.
    pub groups: Vec<Group>,
    /// Every version of every group, for `idmap.ndjson.zst`, in a stable order.
    pub idmap: Vec<IdMapLine>,
    pub unresolved: Vec<Unresolved>,
    pub warnings: Vec<String>,
    pub servers: BTreeMap<i64, ServerCounts>,
}

impl Groups {
    /// The survivor subject of the group a member belongs to.
    pub fn survivor(&self, group: usize) -> Subject {
        let g = &self.groups[group];
        Subject {
            otype: g.otype.to_string(),
            oid: g.survivor_oid,
        }
    }

    /// Group index and rank of a participating subject of a multi-version group.
    pub fn member(&self, s: &Subject) -> Option<(usize, usize)> {
        self.member_of(&s.otype, s.oid)
    }

    /// [`Groups::member`] of an (otype, oid) pair.
    pub fn member_of(&self, otype: &str, oid: i64) -> Option<(usize, usize)> {
        let is_column = match otype {
            REPORT => false,
            COLUMN => true,
            _ => return None,
        };
        self.members.get(&(is_column, oid)).copied()
    }
}

/// Version order (SPEC §3): not deleted first, then `last_updated` latest first (missing last),
/// then `oid` highest first.
fn version_order(
    a: (bool, Option<(i64, u32)>, i64),
    b: (bool, Option<(i64, u32)>, i64),
) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then(latest_first(a.1, b.1))
        .then(b.2.cmp(&a.2))
}

/// Builds the groups from the reports and columns of the migrated servers.
pub fn build(
    reports: Vec<ReportInfo>,
    columns: Vec<ColumnInfo>,
    migrated: &[i64],
    id_map: &IdMap,
    recover_deleted: bool,
) -> Result<Groups> {
    let mut g = Groups::default();
    for s in migrated {
        g.servers.entry(*s).or_default();
    }
    // (server, external_id) → index into reports; columns find their report through it.
    let mut by_external: HashMap<(i64, &str), usize> = HashMap::with_capacity(reports.len());
    for (i, r) in reports.iter().enumerate() {
        if let Some(prev) = by_external.insert((r.server_id, r.external_id.as_str()), i) {
            bail!(
                "bi_report oids {} and {} of server {} share external_id {:?}; a catalog holds one report per \
                 (server_id, external_id): fix the export before migrating",
                reports[prev].oid,
                r.oid,
                r.server_id,
                r.external_id
            );
        }
    }

    // Stable key per report, then groups of (server, stable key).
    let mut report_groups: BTreeMap<(i64, String), Vec<usize>> = BTreeMap::new();
    let mut stable_of: Vec<Option<String>> = vec![None; reports.len()];
    for (i, r) in reports.iter().enumerate() {
        let counts = g.servers.entry(r.server_id).or_default();
        counts.reports += 1;
        match keys::resolve(id_map, r.server_id, &r.external_id, r.source_url.as_deref()) {
            Some((stable, rule)) => {
                *counts.by_rule.entry(rule_name(rule).into()).or_default() += 1;
                report_groups
                    .entry((r.server_id, stable.clone()))
                    .or_default()
                    .push(i);
                stable_of[i] = Some(stable);
            }
            None => {
                counts.unresolved += 1;
                g.unresolved.push(Unresolved {
                    server_id: r.server_id,
                    oid: r.oid,
                    external_id: r.external_id.clone(),
                });
            }
        }
    }
    g.unresolved.sort();

    // Per report index: Some(rank) when it takes part, and the group's survivor index.
    let mut takes_part: Vec<Option<(usize, usize)>> = vec![None; reports.len()];
    for ((server, stable), mut idx) in report_groups {
        idx.sort_by(|&a, &b| {
            let (ra, rb) = (&reports[a], &reports[b]);
            version_order(
                (ra.deleted, ra.last_updated, ra.oid),
                (rb.deleted, rb.last_updated, rb.oid),
            )
        });
        let survivor = idx[0];
        let (part, left): (Vec<usize>, Vec<usize>) = idx
            .iter()
            .partition(|&&i| i == survivor || recover_deleted || !reports[i].deleted);
        let counts = g.servers.entry(server).or_default();
        counts.deleted_versions_left += left.len() as u64;
        let s = &reports[survivor];
        let group_no = (part.len() > 1).then(|| {
            counts.report_groups_with_versions += 1;
            g.groups.push(Group {
                server_id: server,
                otype: REPORT,
                stable_external_id: stable.clone(),
                survivor_oid: s.oid,
                versions: part.iter().map(|&i| reports[i].oid).collect(),
                deleted_left: left.iter().map(|&i| reports[i].oid).collect(),
            });
            g.groups.len() - 1
        });
        for (rank, &i) in part.iter().enumerate() {
            let r = &reports[i];
            takes_part[i] = Some((rank, survivor));
            let action = if i != survivor {
                counts.reports_retired += 1;
                g.refs.insert(REPORT, r.oid, s.oid);
                Action::Retire
            } else if r.external_id != stable {
                counts.reports_rekeyed += 1;
                g.rekey.insert(
                    (false, r.oid),
                    Rekey {
                        external_id: stable.clone(),
                        report: None,
                    },
                );
                Action::Rekey
            } else {
                Action::Keep
            };
            if let Some(n) = group_no {
                g.members.insert((false, r.oid), (n, rank));
            }
            g.idmap.push(IdMapLine {
                server_id: server,
                otype: REPORT,
                oid: r.oid,
                legacy_external_id: r.external_id.clone(),
                stable_external_id: stable.clone(),
                survivor_oid: s.oid,
                action,
            });
        }
        for &i in &left {
            let r = &reports[i];
            g.idmap.push(IdMapLine {
                server_id: server,
                otype: REPORT,
                oid: r.oid,
                legacy_external_id: r.external_id.clone(),
                stable_external_id: r.external_id.clone(),
                survivor_oid: r.oid,
                action: Action::Keep,
            });
        }
    }

    // Columns: grouped by (server, stable report key, suffix).
    type ColumnGroupKey = (i64, String, String);
    let mut column_groups: BTreeMap<ColumnGroupKey, Vec<(usize, bool, String)>> = BTreeMap::new();
    for (ci, c) in columns.iter().enumerate() {
        g.servers.entry(c.server_id).or_default().columns += 1;
        let Some(&ri) = by_external.get(&(c.server_id, c.report.as_str())) else {
            g.warnings.push(format!(
                "bi_report_column oid {} (server {}) names report {:?}, which is not a report of that server; left as it is",
                c.oid, c.server_id, c.report
            ));
            continue;
        };
        let (Some((_, survivor)), Some(stable)) = (takes_part[ri], stable_of[ri].as_ref()) else {
            continue; // unresolved, or a deleted version left as it is: its columns stay too
        };
        let r = &reports[ri];
        let (suffix, new_id) = match c
            .external_id
            .strip_prefix(r.external_id.as_str())
            .and_then(|s| s.strip_prefix('.'))
        {
            Some(suffix) => (suffix.to_string(), format!("{stable}.{suffix}")),
            None => (c.external_id.clone(), c.external_id.clone()),
        };
        column_groups
            .entry((c.server_id, stable.clone(), suffix))
            .or_default()
            .push((ci, ri == survivor, new_id));
    }
    for ((server, stable_report, _suffix), mut members) in column_groups {
        members.sort_by(|a, b| {
            let (ca, cb) = (&columns[a.0], &columns[b.0]);
            b.1.cmp(&a.1).then(version_order(
                (ca.deleted, ca.last_updated, ca.oid),
                (cb.deleted, cb.last_updated, cb.oid),
            ))
        });
        let s = &columns[members[0].0];
        let new_id = members[0].2.clone();
        let counts = g.servers.entry(server).or_default();
        let group_no = (members.len() > 1).then(|| {
            g.groups.push(Group {
                server_id: server,
                otype: COLUMN,
                stable_external_id: new_id.clone(),
                survivor_oid: s.oid,
                versions: members.iter().map(|m| columns[m.0].oid).collect(),
                deleted_left: vec![],
            });
            g.groups.len() - 1
        });
        for (rank, (ci, _, _)) in members.iter().enumerate() {
            let c = &columns[*ci];
            let action = if rank > 0 {
                counts.columns_retired += 1;
                g.refs.insert(COLUMN, c.oid, s.oid);
                Action::Retire
            } else if c.external_id != new_id || c.report != stable_report {
                counts.columns_rekeyed += 1;
                g.rekey.insert(
                    (true, c.oid),
                    Rekey {
                        external_id: new_id.clone(),
                        report: Some(stable_report.clone()),
                    },
                );
                Action::Rekey
            } else {
                Action::Keep
            };
            if let Some(n) = group_no {
                g.members.insert((true, c.oid), (n, rank));
            }
            g.idmap.push(IdMapLine {
                server_id: server,
                otype: COLUMN,
                oid: c.oid,
                legacy_external_id: c.external_id.clone(),
                stable_external_id: new_id.clone(),
                survivor_oid: s.oid,
                action,
            });
        }
    }
    Ok(g)
}

fn rule_name(r: Rule) -> &'static str {
    match r {
        Rule::IdMap => "id_map",
        Rule::Stable => "already_stable",
        Rule::Legacy => "legacy",
        Rule::SourceUrl => "source_url",
    }
}
