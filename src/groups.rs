//! Groups and survivors (SPEC §3): the versions of one report (or column) that share a stable
//! key, their order, which one survives, which retire, and the reference map that follows.
//!
//! Everything here works on small fixed-size facts collected in the first pass over the export
//! ([`ReportInfo`], [`ColumnInfo`]); strings are hashed or interned, so that catalogs of
//! millions of objects fit in little memory. No curation is looked at.

use crate::record::latest_first;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// The otype of reports in subjects and mentions.
pub const REPORT: &str = "bi_report";
/// The otype of report columns in subjects and mentions.
pub const COLUMN: &str = "bi_report_column";

/// A searcher for [`REPORT`], which [`COLUMN`] begins with too: a line without it names no
/// report or column.
pub static REPORT_TEXT: crate::input::Finder =
    crate::input::Finder::new(|| memchr::memmem::Finder::new(REPORT.as_bytes()));
/// No timestamp (sorts last).
pub const NO_TIME: i64 = i64::MIN;
/// Not in a group with several versions.
pub const NO_GROUP: u32 = u32::MAX;

/// For a reference's otype: Some(true) for a column, Some(false) for a report, None for any
/// other otype (which has no versions).
pub fn is_column(otype: &str) -> Option<bool> {
    match otype {
        REPORT => Some(false),
        COLUMN => Some(true),
        _ => None,
    }
}

/// The hash of a column's suffix: the order of a report's column groups (in the report and
/// the change set), so a hash fixed for good, whatever the build (the first 8 bytes of a
/// SHA-256).
fn suffix_hash(suffix: &str) -> u64 {
    crate::record::SeenKeys::hash("0", suffix) as u64
}

/// The seed of [`external_hash`] (any fixed number).
const EXTERNAL_SEED: u64 = 0x6c6f_6f6b_6578_7421;

/// The hash of a (server, external_id) pair: how a column finds its report. Only compared
/// within one run, and no order follows it, so foldhash with a fixed seed: a few nanoseconds
/// where a SHA-256 took about 80 (it is taken for every report and column line).
pub fn external_hash(server: i64, external_id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(EXTERNAL_SEED).hash_one((server, external_id))
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

/// The stable external_ids of reports, each (server, id) once, numbered in the order first
/// seen: the ids in one string, and a table of their numbers alone (no id is stored twice;
/// there are as many as there are reports).
#[derive(Debug, Default)]
pub struct Stables {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
    /// The server of each id.
    servers: Vec<i64>,
    index: hashbrown::HashTable<u32>,
}

impl Stables {
    fn hash(server: i64, id: &str) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one((server, id))
    }

    /// The number of (server, id), given it the first time.
    pub fn intern(&mut self, server: i64, id: &str) -> u32 {
        let hash = Self::hash(server, id);
        let Stables {
            text,
            ends,
            servers,
            index,
        } = self;
        if let Some(&i) = index.find(hash, |&i| at(text, ends, servers, i) == (server, id)) {
            return i;
        }
        let i = ends.len() as u32;
        text.push_str(id);
        ends.push(text.len());
        servers.push(server);
        index.insert_unique(hash, i, |&i| {
            let (server, id) = at(text, ends, servers, i);
            Self::hash(server, id)
        });
        i
    }

    /// Frees the look-up table once every id is in.
    pub fn done(&mut self) {
        self.index = hashbrown::HashTable::new();
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.servers.shrink_to_fit();
    }

    /// The id numbered `i`.
    pub fn get(&self, i: u32) -> &str {
        at(&self.text, &self.ends, &self.servers, i).1
    }

    /// The server of the id numbered `i`.
    pub fn server(&self, i: u32) -> i64 {
        self.servers[i as usize]
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// The (server, id) numbered `i` in a [`Stables`]' parts.
fn at<'a>(text: &'a str, ends: &[usize], servers: &[i64], i: u32) -> (i64, &'a str) {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    (servers[i], &text[start..ends[i]])
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

/// What the first pass keeps of a bi_report_column: 32 bytes, for there are millions.
#[derive(Debug, Clone, Copy)]
pub struct ColumnInfo {
    pub oid: i64,
    /// [`external_hash`] of the external_id of its report, until [`build`] has found that
    /// report; then its report's group: the stable index shifted left once, the low bit set
    /// when the report is its group's survivor.
    report: u64,
    /// The hash of its suffix (SPEC §2: what follows `<report id>.`, or the whole external_id)
    /// in the high 62 bits, so that columns sort as by the whole hash; [`PREFIXED`] and
    /// [`DELETED`] in the low two.
    suffix: u64,
    /// [`time_key`] of `last_updated`.
    pub last_updated: i64,
}

/// Its external_id starts with its report's id and `.`, so its stable id is `<stable>.<suffix>`.
const PREFIXED: u64 = 1;
const DELETED: u64 = 2;

impl ColumnInfo {
    /// The facts of a column: `report` is the [`external_hash`] of its report's external_id,
    /// `suffix` its [`crate::keys::ColumnKey`] suffix.
    pub fn new(
        oid: i64,
        report: u64,
        suffix: &str,
        prefixed: bool,
        deleted: bool,
        last_updated: i64,
    ) -> ColumnInfo {
        let flags = if prefixed { PREFIXED } else { 0 } | if deleted { DELETED } else { 0 };
        ColumnInfo {
            oid,
            report,
            suffix: suffix_hash(suffix) & !3 | flags,
            last_updated,
        }
    }

    fn prefixed(&self) -> bool {
        self.suffix & PREFIXED != 0
    }

    fn deleted(&self) -> bool {
        self.suffix & DELETED != 0
    }

    /// Its report's stable index, once [`build`] has found the report.
    fn stable(&self) -> u32 {
        (self.report >> 1) as u32
    }

    /// Its group: (its report's stable index, its suffix), once [`build`] has found the report.
    fn group(&self) -> (u32, u64) {
        (self.stable(), self.suffix >> 2)
    }

    /// Its report is its group's survivor, once [`build`] has found the report.
    fn of_survivor(&self) -> bool {
        self.report & 1 == 1
    }
}

/// The column facts of the first pass in file order, with their servers as runs: a column's
/// server is needed only until [`build`] has matched it to its report, and consecutive columns
/// mostly share one.
#[derive(Debug, Default)]
pub struct Columns {
    list: Vec<ColumnInfo>,
    /// (index of the first column of a run, the run's server_id).
    servers: Vec<(usize, i64)>,
}

impl Columns {
    /// Adds the facts of a column of `server`.
    pub fn push(&mut self, c: ColumnInfo, server: i64) {
        note_server(&mut self.servers, self.list.len(), server);
        self.list.push(c);
    }

    /// How many columns there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Keeps the columns for which `keep(column, its server)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut ColumnInfo, i64) -> bool) {
        let runs = std::mem::take(&mut self.servers);
        let (mut run, mut i, mut kept) = (0, 0, 0);
        let servers = &mut self.servers;
        self.list.retain_mut(|c| {
            while run + 1 < runs.len() && runs[run + 1].0 <= i {
                run += 1;
            }
            let server = runs[run].1;
            i += 1;
            if !keep(c, server) {
                return false;
            }
            note_server(servers, kept, server);
            kept += 1;
            true
        });
    }
}

/// Notes that the column at index `at` is of `server`: a new run when the server changes.
fn note_server(servers: &mut Vec<(usize, i64)>, at: usize, server: i64) {
    if servers.last().is_none_or(|&(_, s)| s != server) {
        servers.push((at, server));
    }
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

impl IdMapLine {
    /// The line as serde_json writes it (same fields, order and escapes), into one buffer of
    /// the right size: a line per version, a million at 200,000 reports.
    pub fn to_json(&self) -> Vec<u8> {
        let ids = self.legacy_external_id.len() + self.stable_external_id.len();
        let mut out = Vec::with_capacity(160 + ids + ids / 8);
        let int = |out: &mut Vec<u8>, name: &str, n: i64| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        };
        int(&mut out, "{\"server_id\":", self.server_id);
        out.extend_from_slice(b",\"otype\":");
        json_str(&mut out, self.otype);
        int(&mut out, ",\"oid\":", self.oid);
        out.extend_from_slice(b",\"legacy_external_id\":");
        json_str(&mut out, &self.legacy_external_id);
        out.extend_from_slice(b",\"stable_external_id\":");
        json_str(&mut out, &self.stable_external_id);
        int(&mut out, ",\"survivor_oid\":", self.survivor_oid);
        out.extend_from_slice(match self.action {
            Action::Rekey => b",\"action\":\"rekey\"}",
            Action::Retire => b",\"action\":\"retire\"}",
            Action::Keep => b",\"action\":\"keep\"}",
        });
        out
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serialises");
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
///
/// Every report and every column of the export is in one table per otype, 16 bytes an entry:
/// its version's decision packed in a word ([`pack`]), or [`OUTSIDE`] for one that takes no
/// part (another server's, an unresolved report, a column of a version left as it is), which
/// the export still holds. A version of a group with several participants finds its survivor
/// and stable id in the group's [`Head`]; any other version is its own survivor.
#[derive(Debug, Default)]
pub struct Groups {
    /// Interned stable external_ids of reports.
    pub stables: Stables,
    /// (oid, packed decision) of every report, sorted by oid.
    reports: Vec<(i64, u64)>,
    /// (oid, packed decision) of every column, sorted by oid.
    columns: Vec<(i64, u64)>,
    /// Where each range of oids starts in `reports` and `columns`.
    report_buckets: crate::lookup::Buckets,
    column_buckets: crate::lookup::Buckets,
    /// Per group with several participating versions.
    heads: Vec<Head>,
    /// Versions that retire: when none does, no reference needs repair.
    retired: u64,
    /// The groups with several participating versions (reports and columns), as the report
    /// lists them.
    pub groups: crate::report::Spill,
    pub warnings: Vec<String>,
    pub servers: BTreeMap<i64, ServerCounts>,
}

/// A group with several participating versions: its survivor and its report's stable id.
#[derive(Debug, Clone, Copy)]
struct Head {
    survivor: i64,
    stable: u32,
    column: bool,
}

/// A packed decision: the group index (in a group with several participants) or the stable
/// index in the low 32 bits, then the rank, [`IN_GROUP`], the action (2 bits, [`OUTSIDE`]
/// for none), [`LEFT`] and [`PREFIXED_STABLE`].
const RANK_SHIFT: u32 = 32;
const MAX_RANK: u32 = (1 << 27) - 1;
const IN_GROUP: u64 = 1 << 59;
const ACTION_SHIFT: u32 = 60;
const OUTSIDE: u64 = 3 << ACTION_SHIFT;
const LEFT: u64 = 1 << 62;
const PREFIXED_STABLE: u64 = 1 << 63;

fn pack(v: &Version) -> u64 {
    let (index, grouped) = match v.group {
        NO_GROUP => (v.stable, 0),
        g => (g, IN_GROUP),
    };
    let action = match v.action {
        Action::Rekey => 0,
        Action::Retire => 1,
        Action::Keep => 2,
    };
    index as u64
        | (v.rank as u64) << RANK_SHIFT
        | grouped
        | action << ACTION_SHIFT
        | if v.left { LEFT } else { 0 }
        | if v.prefixed { PREFIXED_STABLE } else { 0 }
}

impl Groups {
    fn unpack(&self, oid: i64, w: u64) -> Option<Version> {
        let action = match (w >> ACTION_SHIFT) & 3 {
            0 => Action::Rekey,
            1 => Action::Retire,
            2 => Action::Keep,
            _ => return None,
        };
        let index = w as u32;
        let (survivor, stable, group) = if w & IN_GROUP != 0 {
            let h = self.heads[index as usize];
            (h.survivor, h.stable, index)
        } else {
            (oid, index, NO_GROUP)
        };
        Some(Version {
            survivor,
            stable,
            action,
            left: w & LEFT != 0,
            group,
            rank: ((w >> RANK_SHIFT) as u32) & MAX_RANK,
            prefixed: w & PREFIXED_STABLE != 0,
        })
    }

    fn entry(&self, column: bool, oid: i64) -> Option<u64> {
        let (list, buckets) = if column {
            (&self.columns, &self.column_buckets)
        } else {
            (&self.reports, &self.report_buckets)
        };
        buckets.find(list, |e| e.0, oid).map(|e| e.1)
    }

    /// The decision for a report (`column` false) or column version.
    pub fn version(&self, column: bool, oid: i64) -> Option<Version> {
        self.unpack(oid, self.entry(column, oid)?)
    }

    /// The export holds this report (`column` false) or column, of any server.
    pub fn known(&self, column: bool, oid: i64) -> bool {
        self.entry(column, oid).is_some()
    }

    /// Group index and rank of a participant of a multi-version group.
    pub fn member_of(&self, otype: &str, oid: i64) -> Option<(usize, usize)> {
        let v = self.version(is_column(otype)?, oid)?;
        (v.group != NO_GROUP && !v.left).then_some((v.group as usize, v.rank as usize))
    }

    /// The survivor subject of a group.
    pub fn survivor(&self, group: usize) -> crate::record::Subject {
        let h = self.heads[group];
        crate::record::Subject {
            otype: if h.column { COLUMN } else { REPORT }.to_string(),
            oid: h.survivor,
        }
    }

    /// Starts a group with several participants; its index.
    fn head(&mut self, survivor: i64, stable: u32, column: bool) -> Result<u32> {
        if self.heads.len() >= NO_GROUP as usize {
            anyhow::bail!("more than {} groups with several versions", NO_GROUP - 1);
        }
        self.heads.push(Head {
            survivor,
            stable,
            column,
        });
        Ok((self.heads.len() - 1) as u32)
    }
}

/// The reference map of §5 is the groups' own: a retired version points at its survivor.
impl crate::refs::Moves for Groups {
    fn moved(&self, otype: &str, oid: i64) -> Option<i64> {
        self.version(is_column(otype)?, oid)
            .filter(|v| v.action == Action::Retire)
            .map(|v| v.survivor)
    }

    fn nothing_moves(&self) -> bool {
        self.retired == 0
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

/// What the first pass collected for [`build`].
#[derive(Debug, Default)]
pub struct Facts {
    /// The reports of the migrated servers.
    pub reports: Vec<ReportInfo>,
    /// The columns of every server.
    pub columns: Columns,
    /// The [`external_hash`] of each unresolved report of the migrated servers.
    pub unresolved: Vec<u64>,
    /// The other reports of the export (other servers', unresolved ones): known, untouched.
    pub outside_reports: Vec<i64>,
    /// Interned stable ids, which the reports point into.
    pub stables: Stables,
}

/// How a report's external_id leads its columns, in [`build`]: to its group (the stable index
/// shifted left once, the low bit set for the survivor), or to one of these.
const AMBIGUOUS: u32 = u32::MAX;
/// An unresolved report: its columns stay as they are, like it.
const UNRESOLVED: u32 = u32::MAX - 1;
/// A deleted version left as it is: its columns stay too.
const NOT_PART: u32 = u32::MAX - 2;

/// Builds the groups from the facts of the first pass; `migrated` are the migrated servers,
/// `servers` already holds what the scan counted.
///
/// Takes the facts and gives their memory back as it goes: reports, then columns, are sorted
/// backwards and taken run by run from the end of their list, which shrinks.
pub fn build(
    facts: Facts,
    migrated: &[i64],
    recover_deleted: bool,
    servers: BTreeMap<i64, ServerCounts>,
) -> Result<Groups> {
    let Facts {
        mut reports,
        mut columns,
        unresolved,
        outside_reports,
        stables,
    } = facts;
    if stables.len() >= (NOT_PART >> 1) as usize {
        anyhow::bail!("more than {} stable report ids", NOT_PART >> 1);
    }
    let mut g = Groups {
        stables,
        servers,
        ..Groups::default()
    };
    g.reports
        .reserve_exact(reports.len() + outside_reports.len());
    g.reports
        .extend(outside_reports.iter().map(|&oid| (oid, OUTSIDE)));
    drop(outside_reports);
    // (server, external_id) → where the report leads its columns; AMBIGUOUS when several
    // reports share one (a deleted version left as it is may already hold the id its survivor
    // takes).
    let mut by_external = Leads::with_capacity(reports.len() + unresolved.len());
    for &h in &unresolved {
        by_external.insert(h, UNRESOLVED);
    }

    // Report groups: runs of equal stable index, in version order within. Sorted backwards
    // and taken from the end, as the columns are below.
    reports.sort_unstable_by(|y, x| {
        x.stable.cmp(&y.stable).then(version_order(
            (x.deleted, x.last_updated, x.oid),
            (y.deleted, y.last_updated, y.oid),
        ))
    });
    while !reports.is_empty() {
        let start = last_run(&reports, |a, b| a.stable == b.stable);
        // The run in version order: the survivor first.
        let s = reports[reports.len() - 1];
        let (part, left): (Vec<&ReportInfo>, Vec<&ReportInfo>) = reports[start..]
            .iter()
            .rev()
            .partition(|r| r.oid == s.oid || recover_deleted || !r.deleted);
        let group = if part.len() > 1 {
            g.groups.push(&Group {
                server_id: s.server_id,
                otype: REPORT,
                stable: g.stables.get(s.stable).to_string(),
                survivor_oid: s.oid,
                versions: part.iter().map(|r| r.oid).collect(),
                deleted_left: left.iter().map(|r| r.oid).collect(),
            })?;
            g.head(s.oid, s.stable, false)?
        } else {
            NO_GROUP
        };
        let counts = g.servers.entry(s.server_id).or_default();
        counts.deleted_versions_left += left.len() as u64;
        counts.report_groups_with_versions += u64::from(group != NO_GROUP);
        for (rank, r) in part.iter().enumerate() {
            let action = if rank > 0 {
                counts.reports_retired += 1;
                g.retired += 1;
                Action::Retire
            } else if !r.already_stable {
                counts.reports_rekeyed += 1;
                Action::Rekey
            } else {
                Action::Keep
            };
            by_external.insert(r.external, s.stable << 1 | u32::from(rank == 0));
            let v = Version {
                survivor: s.oid,
                stable: s.stable,
                action,
                left: false,
                group,
                rank: rank_of(rank)?,
                prefixed: false,
            };
            g.reports.push((r.oid, pack(&v)));
        }
        for r in &left {
            by_external.insert(r.external, NOT_PART);
            let v = Version {
                survivor: r.oid,
                stable: s.stable,
                action: Action::Keep,
                left: true,
                group: NO_GROUP,
                rank: 0,
                prefixed: false,
            };
            g.reports.push((r.oid, pack(&v)));
        }
        drop_run(&mut reports, start);
    }
    drop(reports);
    g.reports.sort_unstable_by_key(|(oid, _)| *oid);
    g.report_buckets = crate::lookup::Buckets::new(&g.reports, |e| e.0);

    // Column groups: (report group, suffix), the survivor report's columns first. The columns
    // that join no group are set aside as known, the others learn their report's group.
    let mut outside_columns: Vec<i64> = Vec::new();
    columns.retain(|c, server| {
        if !migrated.contains(&server) {
            outside_columns.push(c.oid);
            return false;
        }
        g.servers.entry(server).or_default().columns += 1;
        let code = match by_external.get(c.report) {
            Some(AMBIGUOUS) => {
                g.warnings.push(format!(
                    "bi_report_column oid {} (server {server}) names an external_id that several reports of that \
                     server share; left as it is",
                    c.oid
                ));
                None
            }
            // An unresolved report, or a deleted version left as it is: its columns stay too.
            Some(UNRESOLVED | NOT_PART) => None,
            Some(code) => Some(code),
            None => {
                g.warnings.push(format!(
                    "bi_report_column oid {} (server {server}) names a report that is not a report of that server; \
                     left as it is",
                    c.oid
                ));
                None
            }
        };
        match code {
            Some(code) => {
                c.report = code as u64;
                true
            }
            None => {
                outside_columns.push(c.oid);
                false
            }
        }
    });
    drop(by_external);
    // Sorted backwards and taken from the end, run by run, so that the facts give their memory
    // back as the versions take theirs.
    let mut columns = columns.list;
    columns.sort_unstable_by(|y, x| {
        x.group()
            .cmp(&y.group())
            .then(y.of_survivor().cmp(&x.of_survivor()))
            .then(version_order(
                (x.deleted(), x.last_updated, x.oid),
                (y.deleted(), y.last_updated, y.oid),
            ))
    });
    g.columns
        .reserve_exact(columns.len() + outside_columns.len());
    g.columns
        .extend(outside_columns.iter().map(|&oid| (oid, OUTSIDE)));
    drop(outside_columns);
    while !columns.is_empty() {
        let start = last_run(&columns, |a, b| a.group() == b.group());
        // The run in version order: the survivor first.
        let run = || columns[start..].iter().rev();
        let s = columns[columns.len() - 1];
        let stable = s.stable();
        let server = g.stables.server(stable);
        let group = if columns.len() - start > 1 {
            g.groups.push(&Group {
                server_id: server,
                otype: COLUMN,
                stable: g.stables.get(stable).to_string(),
                survivor_oid: s.oid,
                versions: run().map(|c| c.oid).collect(),
                deleted_left: vec![],
            })?;
            g.head(s.oid, stable, true)?
        } else {
            NO_GROUP
        };
        let counts = g.servers.entry(server).or_default();
        for (rank, c) in run().enumerate() {
            // Whether the survivor's id or `report` really changes is known only from its record
            // (pass 2); Rekey here means "rewrite from the stable report id".
            let action = if rank > 0 {
                counts.columns_retired += 1;
                g.retired += 1;
                Action::Retire
            } else {
                Action::Rekey
            };
            let v = Version {
                survivor: s.oid,
                stable,
                action,
                left: false,
                group,
                rank: rank_of(rank)?,
                prefixed: s.prefixed(),
            };
            g.columns.push((c.oid, pack(&v)));
        }
        drop_run(&mut columns, start);
    }
    drop(columns);
    g.columns.sort_unstable_by_key(|(oid, _)| *oid);
    g.column_buckets = crate::lookup::Buckets::new(&g.columns, |e| e.0);
    Ok(g)
}

/// Where each report's external_id leads its columns, by [`external_hash`]: a table of the
/// hashes alone, which need no hashing again.
struct Leads(hashbrown::HashTable<(u64, u32)>);

impl Leads {
    fn with_capacity(n: usize) -> Leads {
        Leads(hashbrown::HashTable::with_capacity(n))
    }

    /// Adds a report's lead; a second report with the same hash makes it [`AMBIGUOUS`].
    fn insert(&mut self, hash: u64, lead: u32) {
        match self.0.entry(hash, |e| e.0 == hash, |e| e.0) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = AMBIGUOUS,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((hash, lead));
            }
        }
    }

    fn get(&self, hash: u64) -> Option<u32> {
        self.0.find(hash, |e| e.0 == hash).map(|e| e.1)
    }
}

/// Facts taken off a list before it gives their memory back (8 MiB of column facts).
const SHRINK_STEP: usize = 1 << 18;

/// Where the last run of a list sorted backwards starts: from there on the elements are equal
/// by `same`, and in version order when read from the end.
fn last_run<T>(list: &[T], same: impl Fn(&T, &T) -> bool) -> usize {
    let Some(last) = list.last() else { return 0 };
    list.iter()
        .rposition(|x| !same(x, last))
        .map_or(0, |i| i + 1)
}

/// Takes the run from `start` off the list, and gives the room of [`SHRINK_STEP`] taken
/// facts back at a time.
fn drop_run<T>(list: &mut Vec<T>, start: usize) {
    list.truncate(start);
    if list.capacity() - list.len() >= SHRINK_STEP {
        list.shrink_to_fit();
    }
}

/// A rank as packed ([`MAX_RANK`] at most).
fn rank_of(rank: usize) -> Result<u32> {
    if rank > MAX_RANK as usize {
        anyhow::bail!("a group of more than {MAX_RANK} versions");
    }
    Ok(rank as u32)
}

#[cfg(test)]
mod tests {
    //! SPEC §3 rule by rule, on hand-made facts: each test breaks if its rule is broken.

    use super::*;
    use crate::keys::Rule;
    use crate::refs::Moves;

    #[test]
    fn the_hash_that_orders_column_groups_is_fixed() {
        // A report's column groups come out in the order of their suffixes' hashes (groups
        // part, change set): a new hash would reorder bundles of the same export.
        assert_eq!(
            suffix_hash("sales.amount"),
            2581510228586895404,
            "the suffix hash changed"
        );
    }

    const SERVER: i64 = 1;

    proptest::proptest! {
        #[test]
        fn an_id_map_line_is_written_as_serde_writes_it(
            server in proptest::num::i64::ANY,
            oid in proptest::num::i64::ANY,
            survivor in proptest::num::i64::ANY,
            legacy in ".{0,12}",
            stable in "[a-z\\\\\"\u{0}-\u{1f}\u{7f}é_]{0,12}",
            column: bool,
            action in 0..3u8,
        ) {
            let line = IdMapLine {
                server_id: server,
                otype: if column { COLUMN } else { REPORT },
                oid,
                legacy_external_id: legacy,
                stable_external_id: stable,
                survivor_oid: survivor,
                action: [Action::Rekey, Action::Retire, Action::Keep][action as usize],
            };
            proptest::prop_assert_eq!(
                String::from_utf8(line.to_json()).unwrap(),
                serde_json::to_string(&line).unwrap()
            );
        }
    }

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
        let report = external_hash(SERVER, &format!("ext{report}"));
        ColumnInfo::new(
            oid,
            report,
            suffix,
            true,
            deleted,
            time_key(updated.map(|s| (s, 0))),
        )
    }

    /// Stable ids of [`SERVER`], numbered in order.
    fn stables(ids: &[&str]) -> Stables {
        let mut s = Stables::default();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.intern(SERVER, id), i as u32);
        }
        s.done();
        s
    }

    #[test]
    fn stable_ids_are_numbered_once_per_server() {
        let mut s = Stables::default();
        assert_eq!(s.intern(1, "look/1"), 0);
        assert_eq!(s.intern(1, "look/2"), 1);
        assert_eq!(
            s.intern(2, "look/1"),
            2,
            "another server's id is another id"
        );
        assert_eq!(s.intern(1, "look/1"), 0);
        assert_eq!(s.intern(1, ""), 3);
        assert_eq!(s.intern(1, "look/"), 4, "ids run together in one string");
        s.done();
        assert_eq!(
            (s.get(0), s.get(2), s.get(3), s.get(4)),
            ("look/1", "look/1", "", "look/")
        );
        assert_eq!((s.server(1), s.server(2), s.len()), (1, 2, 5));
    }

    fn build_with(reports: &[ReportInfo], columns: &[ColumnInfo], recover: bool) -> Groups {
        let mut facts = Facts {
            reports: reports.to_vec(),
            stables: stables(&["dashboard/1", "dashboard/2"]),
            ..Facts::default()
        };
        for c in columns {
            facts.columns.push(*c, SERVER);
        }
        build(facts, &[SERVER], recover, BTreeMap::new()).unwrap()
    }

    /// The versions that take part, in version order (by rank), of the group whose survivor
    /// is `survivor`.
    fn order(g: &Groups, column: bool, survivor: i64) -> Vec<i64> {
        let list = if column { &g.columns } else { &g.reports };
        let mut part: Vec<(u32, i64)> = list
            .iter()
            .filter_map(|&(oid, _)| Some((oid, g.version(column, oid)?)))
            .filter(|(_, v)| v.survivor == survivor && !v.left)
            .map(|(oid, v)| (v.rank, oid))
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
        assert_eq!(g.moved(REPORT, 2), None, "the survivor keeps its oid");
        for oid in [1, 3] {
            let v = g.version(false, oid).unwrap();
            assert_eq!((v.survivor, v.action), (2, Action::Retire), "oid {oid}");
            assert_eq!(g.moved(REPORT, oid), Some(2), "oid {oid}");
        }
        // A group of one: the report is its own survivor, nothing retires onto it.
        let alone = g.version(false, 4).unwrap();
        assert_eq!((alone.survivor, alone.group), (4, NO_GROUP));
        assert_eq!(g.moved(REPORT, 4), None);
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
        assert_eq!(g.moved(REPORT, 2), None, "references to it stay");
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
        assert_eq!(g.moved(REPORT, 2), Some(1));
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
        assert_eq!(g.moved(REPORT, 1), None);
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
            assert_eq!(g.moved(COLUMN, oid), Some(10), "column {oid}");
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
        assert_eq!(g.moved(COLUMN, 20), None);
        assert_eq!(g.version(true, 10).unwrap().survivor, 10);
        let g = build_with(&reports, &columns, true);
        assert_eq!(g.moved(COLUMN, 20), Some(10));
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
        assert_eq!(g.moved(COLUMN, 11), None);
        assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
        assert!(
            g.warnings[0].contains("oid 11") && g.warnings[0].contains("names a report"),
            "{:?}",
            g.warnings
        );
        assert!(g.version(true, 10).is_some());
        assert_eq!(g.servers[&SERVER].columns, 2);
    }

    #[test]
    fn a_packed_decision_reads_back_as_it_was() {
        let mut g = Groups::default();
        let group = g.head(77, 5, true).unwrap();
        let versions = [
            Version {
                survivor: 77,
                stable: 5,
                action: Action::Retire,
                left: false,
                group,
                rank: MAX_RANK,
                prefixed: true,
            },
            Version {
                survivor: 9,
                stable: u32::MAX - 1,
                action: Action::Keep,
                left: true,
                group: NO_GROUP,
                rank: 0,
                prefixed: false,
            },
            Version {
                survivor: 9,
                stable: 0,
                action: Action::Rekey,
                left: false,
                group: NO_GROUP,
                rank: 0,
                prefixed: true,
            },
        ];
        for v in versions {
            assert_eq!(g.unpack(v.survivor.max(9), pack(&v)), Some(v));
        }
        assert_eq!(g.unpack(9, OUTSIDE), None);
        assert!(rank_of(MAX_RANK as usize + 1).is_err());
    }

    #[test]
    fn what_takes_no_part_is_still_known() {
        let mut facts = Facts {
            reports: vec![
                report(1, 0, false, Some(100)),
                report(2, 0, true, Some(500)),
            ],
            unresolved: vec![external_hash(SERVER, "ext3")],
            outside_reports: vec![3, 40],
            stables: stables(&["dashboard/1"]),
            ..Facts::default()
        };
        facts.columns.push(column(10, 1, "a", false, None), SERVER);
        facts.columns.push(column(20, 2, "a", false, None), SERVER); // of a version left alone
        facts.columns.push(column(30, 3, "a", false, None), SERVER); // of an unresolved report
        facts.columns.push(column(41, 40, "a", false, None), 4); // another server's
        facts.columns.push(column(11, 1, "b", false, None), SERVER);
        let g = build(facts, &[SERVER], false, BTreeMap::new()).unwrap();
        for oid in [1, 2, 3, 40] {
            assert!(g.known(false, oid), "report {oid}");
        }
        for oid in [10, 11, 20, 30, 41] {
            assert!(g.known(true, oid), "column {oid}");
        }
        assert!(!g.known(false, 10) && !g.known(true, 1) && !g.known(true, 99));
        for oid in [20, 30, 41] {
            assert_eq!(g.version(true, oid), None, "column {oid} takes no part");
        }
        assert_eq!(g.version(true, 11).unwrap().survivor, 11);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        assert_eq!(
            g.servers[&SERVER].columns, 4,
            "the other server's column is not counted"
        );
        assert!(g.nothing_moves());
    }

    #[test]
    fn columns_keep_their_servers_through_a_retain() {
        let mut c = Columns::default();
        for (oid, server) in [(1, 7), (2, 7), (3, 8), (4, 8), (5, 7), (6, 9)] {
            c.push(column(oid, 1, "a", false, None), server);
        }
        assert_eq!(c.servers.len(), 4, "one run per change of server");
        c.retain(|col, _| col.oid % 2 == 0);
        let mut seen = vec![];
        c.retain(|col, server| {
            seen.push((col.oid, server));
            true
        });
        assert_eq!(seen, vec![(2, 7), (4, 8), (6, 9)]);
        assert_eq!(c.len(), 3);
    }
}
