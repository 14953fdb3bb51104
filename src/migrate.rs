//! The migration pipeline: export in, change set out. It reads the export twice.
//!
//! 1. **Scan** (§1): parse and validate every line, refuse duplicate keys, and keep only what the
//!    rules need — servers, field definitions, and the few fields of each report and column.
//! 2. **Decide** (§2, §3): stable keys, groups, survivors and the reference map ([`crate::groups`]).
//! 3. **Change** (§4, §5): re-read; re-key and retire versions, repair references everywhere,
//!    and hold the curation of multi-version groups to merge it ([`crate::merge`]).
//!
//! Lines are parsed in parallel batches (rayon) and folded in file order, so the result is the
//! same whatever the thread count.

use crate::changeset::Op;
use crate::groups::{
    self, Action, ColumnInfo, Groups, IdMapLine, ReportInfo, ServerCounts, Unresolved, COLUMN,
    REPORT,
};
use crate::input::{Input, Line};
use crate::keys;
use crate::keys::IdMap;
use crate::merge::{self, Item};
use crate::progress::Progress;
use crate::record::{
    instant_str, parse_line, raw_str, DuplicateKeys, FieldDef, Kind, Probe, Record,
};
use crate::refs::{self, Fields};
use crate::report::{Report, Skipped};
use crate::sort::Sorter;
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The options of `plan` and `migrate` (SPEC §8).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Options {
    /// Servers to migrate; empty means every `bi_server` of type `looker`.
    pub servers: Vec<i64>,
    /// The `--id-map` file.
    #[serde(skip)]
    pub id_map: Option<String>,
    pub recover_deleted: bool,
    pub strict: bool,
    /// Bad lines that may be skipped (each listed in the report) before the run fails.
    pub max_errors: u64,
    /// Worker threads; 0 = one per core. Not part of the result.
    #[serde(skip)]
    pub threads: usize,
    /// Show a progress bar on a terminal.
    #[serde(skip)]
    pub progress: bool,
    /// A reviewer's decisions (`--decisions`): conflict winners and unresolved reports' ids.
    #[serde(skip)]
    pub decisions: Option<std::sync::Arc<crate::decisions::Decisions>>,
}

/// The result of a migration, ready to be written as a bundle.
pub struct Outcome {
    /// The change lines, keyed by (kind, key); written in that order.
    pub changes: Sorter,
    /// The id-map lines, keyed by (server, otype, stable id, rank).
    pub idmap: Sorter,
    pub report: Report,
    pub input_sha256: String,
    /// The options as recorded in the manifest.
    pub options: Value,
}

/// Bytes of lines parsed per parallel batch.
const BATCH_BYTES: usize = 2 << 20;

/// With `LOOKMIG_TIMING` set, prints how long each stage took on stderr (for profiling).
pub fn timing(stage: &str) {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static LAST: OnceLock<Mutex<Instant>> = OnceLock::new();
    if std::env::var_os("LOOKMIG_TIMING").is_none() {
        return;
    }
    let mut last = LAST
        .get_or_init(|| Mutex::new(Instant::now()))
        .lock()
        .expect("timing lock");
    eprintln!("timing: {stage:<8} {:>8.3} s", last.elapsed().as_secs_f64());
    *last = Instant::now();
}

/// Runs the pipeline on `input`.
pub fn run(input: &Input, opts: &Options) -> Result<Outcome> {
    in_pool(opts, || run_in_pool(input, opts, false))
}

/// The dry run of `plan`: the same pipeline and the same report as [`run`], but the change and
/// id-map lines are only counted, never kept — no sort runs, no bundle, no checksum of the input.
pub fn plan(input: &Input, opts: &Options) -> Result<Report> {
    in_pool(opts, || run_in_pool(input, opts, true)).map(|o| o.report)
}

fn in_pool<T: Send>(opts: &Options, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| anyhow::anyhow!("starting {} worker threads: {e}", opts.threads))?;
    pool.install(f)
}

/// `dry`: count the changes without keeping them ([`plan`]).
fn run_in_pool(input: &Input, opts: &Options, dry: bool) -> Result<Outcome> {
    timing("start");
    let mut id_map = match &opts.id_map {
        Some(p) => IdMap::load(p)?,
        None => IdMap::default(),
    };
    if let Some(d) = &opts.decisions {
        d.add_to_id_map(&mut id_map, opts.id_map.as_deref())?;
    }
    let progress = Progress::lines(opts.progress, "scanning");
    let mut scan = scan(input, opts, &id_map, &progress)?;
    progress.finish();
    timing("scan");

    let migrated = choose_servers(&scan, opts, input)?;
    let mut servers: BTreeMap<i64, ServerCounts> = migrated
        .iter()
        .map(|s| (*s, ServerCounts::default()))
        .collect();
    let bad = &scan.bad_lines;
    let keep = |server: i64, line: u64| migrated.contains(&server) && !bad.contains(&line);
    if !bad.is_empty() {
        // A report or column line skipped after the scan kept it repeats an earlier line's key
        // (its oid): the first line wins, as it does for every other kind.
        first_by_oid(&mut scan.reports, |r| r.oid);
        first_by_oid(&mut scan.columns, |c| c.oid);
    }
    scan.reports.retain(|r| migrated.contains(&r.server_id));
    scan.columns.retain(|c| migrated.contains(&c.server_id));
    scan.unresolved.retain(|(u, line)| keep(u.server_id, *line));
    if let Some(d) = &opts.decisions {
        d.check_mapped(&scan.reports)?;
    }
    for r in &scan.reports {
        let c = servers.entry(r.server_id).or_default();
        c.reports += 1;
        *c.by_rule.entry(r.rule.name().into()).or_default() += 1;
    }
    let mut unresolved: Vec<Unresolved> = scan.unresolved.drain(..).map(|(u, _)| u).collect();
    unresolved.sort();
    for u in &unresolved {
        let c = servers.entry(u.server_id).or_default();
        c.reports += 1;
        c.unresolved += 1;
    }
    if opts.strict && !unresolved.is_empty() {
        let list: Vec<String> = unresolved
            .iter()
            .take(20)
            .map(|u| {
                format!(
                    "  server {} oid {} external_id {:?}",
                    u.server_id, u.oid, u.external_id
                )
            })
            .collect();
        bail!(
            "{}: {} unresolved report(s) and --strict is set; map them with --id-map or drop --strict:\n{}",
            input.name,
            unresolved.len(),
            list.join("\n")
        );
    }
    let stables = std::mem::take(&mut scan.stables);
    let unresolved_ids: Vec<u64> = unresolved
        .iter()
        .map(|u| groups::external_hash(u.server_id, &u.external_id))
        .collect();
    let groups = groups::build(
        &scan.reports,
        &unresolved_ids,
        &scan.columns,
        stables,
        opts.recover_deleted,
        servers,
    )?;
    scan.reports = Vec::new();
    scan.columns = Vec::new();
    timing("groups");

    let mut report = Report {
        skipped_lines: std::mem::take(&mut scan.skipped),
        servers: groups.servers.clone(),
        ..Report::default()
    };
    let progress = Progress::lines(opts.progress, "changing");
    let (changes, idmap) = change(input, opts, &scan, &groups, &mut report, &progress, dry)?;
    progress.finish();

    let c = &mut report.counts;
    c.lines = scan.lines;
    c.records_by_kind = std::mem::take(&mut scan.by_kind);
    c.migrated_servers = migrated.clone();
    c.conflicts = report.conflicts.len();
    c.unresolved = unresolved.len() as u64;
    c.skipped_lines = report.skipped_lines.len() as u64;
    report.groups = groups.groups;
    report.unresolved = unresolved;
    let mut warnings = groups.warnings;
    warnings.append(&mut report.warnings);
    report.warnings = warnings;
    report.counts.warnings = report.warnings.len() as u64;

    if let Some(d) = &opts.decisions {
        d.check_used()?;
        report.counts.decisions = d.len() as u64;
        report.decisions = Some(d.used());
    }
    let mut options = serde_json::to_value(opts)?;
    options["servers"] = serde_json::to_value(&migrated)?;
    options["id_map_sha256"] = opts
        .id_map
        .as_ref()
        .map(|_| Value::from(id_map.sha256.clone()))
        .unwrap_or(Value::Null);
    options["decisions_sha256"] = opts
        .decisions
        .as_ref()
        .map(|d| Value::from(d.sha256.clone()))
        .unwrap_or(Value::Null);
    Ok(Outcome {
        changes,
        idmap,
        report,
        input_sha256: if dry { String::new() } else { input.sha256()? },
        options,
    })
}

/// What the first pass keeps.
#[derive(Default)]
struct Scan {
    /// Every report and column oid of the export, sorted: what a subject may point at.
    known_reports: Vec<i64>,
    known_columns: Vec<i64>,
    /// Server id → type.
    servers: BTreeMap<i64, String>,
    fields: Fields,
    reports: Vec<ReportInfo>,
    columns: Vec<ColumnInfo>,
    /// Interned stable ids, per (server, stable id).
    stables: Vec<String>,
    stable_index: HashMap<(i64, String), u32>,
    unresolved: Vec<(Unresolved, u64)>,
    bad_lines: BTreeSet<u64>,
    skipped: Vec<Skipped>,
    lines: u64,
    by_kind: BTreeMap<String, u64>,
}

/// A malformed line: fail, or skip it and list it when `--max-errors` allows.
fn bad_line(
    input: &Input,
    opts: &Options,
    skipped: &mut Vec<Skipped>,
    bad: &mut BTreeSet<u64>,
    line: &Line,
    error: String,
) -> Result<()> {
    let rules = crate::export::BadLines {
        max_errors: opts.max_errors,
        hint: crate::export::SKIP_HINT,
    };
    rules.bad(input, skipped, line.no, error, &line.bytes)?;
    bad.insert(line.no);
    Ok(())
}

fn scan(input: &Input, opts: &Options, id_map: &IdMap, progress: &Progress) -> Result<Scan> {
    let mut s = Scan::default();
    // Record keys go through an external sort, so duplicate detection needs no table of keys.
    let mut keys = DuplicateKeys::new(crate::sort::run_bytes(SORT_BYTES));
    let mut first_seen_kind = false;
    // Records of each named kind, by `Kind as usize` (joined to `by_kind` at the end).
    let mut named = [0u64; Kind::Other as usize];
    for batch in input.batches(crate::input::batch_bytes(BATCH_BYTES))? {
        let batch = batch?;
        let parsed: Vec<Result<Scanned, String>> = batch
            .par_iter()
            .map(|l| {
                let p = Probe::parse(&l.bytes)?;
                Ok(Scanned {
                    hash: DuplicateKeys::hash(&p.kind_name, &p.key()),
                    kept: keep(&p, id_map),
                    probe_kind: p.kind,
                    other_kind: (p.kind == Kind::Other).then(|| p.kind_name.to_string()),
                })
            })
            .collect();
        for (line, p) in batch.iter().zip(parsed) {
            s.lines = line.no;
            let first = !first_seen_kind;
            first_seen_kind = true;
            let scanned = match p {
                Ok(ok) => ok,
                Err(e) => {
                    bad_line(input, opts, &mut s.skipped, &mut s.bad_lines, line, e)?;
                    continue;
                }
            };
            if let Err(e) = crate::export::header_first(scanned.probe_kind, first) {
                bad_line(input, opts, &mut s.skipped, &mut s.bad_lines, line, e)?;
                continue;
            }
            keys.add_hash(scanned.hash, line.no)?;
            match scanned.other_kind {
                Some(k) => *s.by_kind.entry(k).or_default() += 1,
                None => named[scanned.probe_kind as usize] += 1,
            }
            match scanned.kept {
                Kept::Nothing => {}
                Kept::Server(id, t) => {
                    s.servers.entry(id).or_insert(t);
                }
                Kept::Field(id, def) => s.fields.insert_first(id, def),
                Kept::Report { mut info, stable } => {
                    let next = s.stables.len() as u32;
                    info.stable = *s
                        .stable_index
                        .entry((info.server_id, stable.clone()))
                        .or_insert_with(|| {
                            s.stables.push(stable);
                            next
                        });
                    s.reports.push(info);
                }
                Kept::Unresolved(u) => s.unresolved.push((u, line.no)),
                Kept::Column(c) => s.columns.push(c),
            }
        }
        progress.add(batch.len() as u64);
    }
    s.stable_index = HashMap::new();
    for (i, n) in named.into_iter().enumerate() {
        if n > 0 {
            *s.by_kind.entry(KINDS[i].name().to_string()).or_default() += n;
        }
    }
    // Every report and column of the export, exactly sized (these lists are large).
    s.known_reports = s
        .reports
        .iter()
        .map(|r| r.oid)
        .chain(s.unresolved.iter().map(|(u, _)| u.oid))
        .collect();
    s.known_reports.sort_unstable();
    s.known_columns = s.columns.iter().map(|c| c.oid).collect();
    s.known_columns.sort_unstable();
    let dups = keys.finish(input)?;
    if !dups.is_empty() {
        for (no, msg, bytes) in dups {
            let line = Line { no, bytes };
            bad_line(input, opts, &mut s.skipped, &mut s.bad_lines, &line, msg)?;
        }
        s.skipped.sort_by_key(|k| k.line);
    }
    Ok(s)
}

/// The named kinds, in the order of [`Kind`].
const KINDS: [Kind; Kind::Other as usize] = [
    Kind::Header,
    Kind::BiServer,
    Kind::BiFolder,
    Kind::BiReport,
    Kind::BiReportColumn,
    Kind::CustomField,
    Kind::FieldValue,
    Kind::TrustFlag,
    Kind::Tag,
    Kind::Star,
    Kind::Article,
    Kind::Conversation,
];

/// Keeps the first item of each oid, in order.
fn first_by_oid<T>(items: &mut Vec<T>, oid: impl Fn(&T) -> i64) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(oid(i)));
}

/// What the first pass learnt from one line.
struct Scanned {
    hash: u64,
    probe_kind: Kind,
    /// The `kind` string of a kind the SPEC does not name.
    other_kind: Option<String>,
    kept: Kept,
}

/// What §2–§3 need of one record.
enum Kept {
    Nothing,
    Server(i64, String),
    Field(i64, FieldDef),
    Report { info: ReportInfo, stable: String },
    Unresolved(Unresolved),
    Column(ColumnInfo),
}

fn keep(p: &Probe, id_map: &IdMap) -> Kept {
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
            Kept::Column(ColumnInfo {
                oid: int(r.oid),
                server_id: server,
                report: groups::external_hash(server, &report),
                suffix: groups::external_hash(0, key.suffix),
                prefixed: key.prefixed,
                deleted,
                last_updated: last_updated(),
            })
        }
        _ => Kept::Nothing,
    }
}

fn choose_servers(scan: &Scan, opts: &Options, input: &Input) -> Result<Vec<i64>> {
    if opts.servers.is_empty() {
        let looker: Vec<i64> = scan
            .servers
            .iter()
            .filter(|(_, t)| *t == "looker")
            .map(|(id, _)| *id)
            .collect();
        if looker.is_empty() {
            bail!(
                "{}: no bi_server of type \"looker\"; name the servers to migrate with --server ID",
                input.name
            );
        }
        return Ok(looker);
    }
    let mut out = opts.servers.clone();
    out.sort_unstable();
    out.dedup();
    for id in &out {
        if !scan.servers.contains_key(id) {
            bail!(
                "--server {id}: {} has no bi_server with id {id}",
                input.name
            );
        }
    }
    Ok(out)
}

/// What the second pass decides for one line.
enum Decision {
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

fn change(
    input: &Input,
    opts: &Options,
    scan: &Scan,
    groups: &Groups,
    report: &mut Report,
    progress: &Progress,
    dry: bool,
) -> Result<(Sorter, Sorter)> {
    let (fields, bad) = (&scan.fields, &scan.bad_lines);
    // Records whose subject is a report or column the export lacks: kept, counted, a few named.
    let mut dangling: (u64, Vec<String>) = (0, Vec::new());
    let mut changes = Sorter::new(crate::sort::run_bytes(SORT_BYTES));
    let mut idmap = Sorter::new(crate::sort::run_bytes(SORT_BYTES / 2));
    // Curation of multi-version groups waits on disk, ordered by (group, rank, line).
    let mut held = Sorter::new(crate::sort::run_bytes(SORT_BYTES));
    let mut more_bad = BTreeSet::new();
    // Workers decide a batch while this thread's sink folds the previous one into the sorters,
    // in file order: the fold is sequential, and on its own it would leave a core idle.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(Vec<Line>, Vec<(Decision, Option<String>)>)>(1);
        let sink = scope.spawn(|| -> Result<()> {
            for (batch, decisions) in rx {
                for (line, (d, lost)) in batch.iter().zip(decisions) {
                    if let Some(key) = lost {
                        dangling.0 += 1;
                        if dangling.1.len() < 5 {
                            dangling.1.push(key);
                        }
                    }
                    match d {
                        Decision::Same => {}
                        Decision::Lines(c, n) => {
                            push_raw(&mut changes, c, &mut report.counts, dry)?;
                            report.counts.references_repaired += n;
                        }
                        Decision::Version {
                            change,
                            idmap: (key, row),
                            column_rekeyed,
                        } => {
                            push_raw(
                                &mut changes,
                                change.into_iter().collect(),
                                &mut report.counts,
                                dry,
                            )?;
                            if !dry {
                                idmap.push(&key, &row)?;
                            }
                            if let Some(server) = column_rekeyed {
                                report.servers.entry(server).or_default().columns_rekeyed += 1;
                            }
                        }
                        Decision::Member(g, rank) => {
                            let mut key = Vec::with_capacity(16);
                            key.extend_from_slice(&(g as u32).to_be_bytes());
                            key.extend_from_slice(&(rank as u32).to_be_bytes());
                            key.extend_from_slice(&line.no.to_be_bytes());
                            held.push(&key, &line.bytes)?;
                        }
                        Decision::Bad(e) => bad_line(
                            input,
                            opts,
                            &mut report.skipped_lines,
                            &mut more_bad,
                            line,
                            e,
                        )?,
                    }
                }
                progress.add(batch.len() as u64);
            }
            Ok(())
        });
        for batch in input.batches(crate::input::batch_bytes(BATCH_BYTES))? {
            let batch = batch?;
            let decisions: Vec<(Decision, Option<String>)> = batch
                .par_iter()
                .map(|l| {
                    if bad.contains(&l.no) {
                        (Decision::Same, None)
                    } else {
                        decide(l, fields, groups, scan, dry)
                    }
                })
                .collect();
            if tx.send((batch, decisions)).is_err() {
                break; // the sink stopped on an error, which join reports
            }
        }
        drop(tx);
        sink.join().expect("the sink thread does not panic")
    })?;
    timing("change");
    // Merge group by group, a batch of groups at a time in parallel.
    let mut batch: Vec<HeldGroup> = Vec::new();
    let mut batch_bytes = 0;
    let chooser = opts.decisions.as_deref().map(|d| d as &dyn merge::Chooser);
    let flush =
        |batch: &mut Vec<HeldGroup>, changes: &mut Sorter, report: &mut Report| -> Result<()> {
            let merged: Vec<GroupResult> = batch
                .par_iter()
                .map(|(g, items)| merge_one(*g, items, fields, groups, chooser, dry))
                .collect();
            for m in merged {
                for (k, n) in m.carried {
                    *report.counts.curation_carried.entry(k).or_default() += n;
                }
                report.counts.references_repaired += m.repaired;
                for c in &m.conflicts {
                    report.conflicts.push(c)?;
                }
                push_raw(changes, m.changes, &mut report.counts, dry)?;
            }
            batch.clear();
            Ok(())
        };
    held.finish(|key, line| {
        let g = u32::from_be_bytes(key[..4].try_into().expect("group")) as usize;
        let rank = u32::from_be_bytes(key[4..8].try_into().expect("rank")) as usize;
        let no = u64::from_be_bytes(key[8..16].try_into().expect("line"));
        match batch.last_mut() {
            Some((last, items)) if *last == g => items.push((rank, no, line.to_vec())),
            _ => {
                if batch_bytes > crate::input::batch_bytes(BATCH_BYTES) {
                    flush(&mut batch, &mut changes, report)?;
                    batch_bytes = 0;
                }
                batch.push((g, vec![(rank, no, line.to_vec())]));
            }
        }
        batch_bytes += line.len();
        Ok(())
    })?;
    flush(&mut batch, &mut changes, report)?;
    timing("merge");
    if dangling.0 > 0 {
        report.warnings.push(format!(
            "{} record(s) have a subject that is no report or column of the export (e.g. {}); kept as they are",
            dangling.0,
            dangling.1.join(", ")
        ));
    }
    Ok((changes, idmap))
}

/// One group's held curation: its index and (rank, line number, line) per record.
type HeldGroup = (usize, Vec<(usize, u64, Vec<u8>)>);

/// Bytes of pairs a sorter holds in memory before it spills a run to disk.
const SORT_BYTES: usize = 8 << 20;

/// Counts the changes and, unless `dry`, keeps them in `sorter`.
fn push_raw(
    sorter: &mut Sorter,
    changes: Vec<RawChange>,
    counts: &mut crate::report::Counts,
    dry: bool,
) -> Result<()> {
    for c in changes {
        if !dry {
            sorter.push(&c.sort, &c.line)?;
        }
        match c.op {
            Op::Create => counts.changes_create += 1,
            Op::Update => counts.changes_update += 1,
            Op::Delete => counts.changes_delete += 1,
        }
    }
    Ok(())
}

/// What merging one group gave.
struct GroupResult {
    changes: Vec<RawChange>,
    conflicts: Vec<crate::merge::Conflict>,
    carried: BTreeMap<String, u64>,
    repaired: u64,
}

fn merge_one(
    g: usize,
    raw: &[(usize, u64, Vec<u8>)],
    fields: &Fields,
    groups: &Groups,
    decisions: Option<&dyn merge::Chooser>,
    dry: bool,
) -> GroupResult {
    let mut repaired = 0;
    // Each record's original bytes (the prior of its change) and its index among the items.
    let mut before: HashMap<(String, String), (&[u8], usize)> = HashMap::with_capacity(raw.len());
    let mut items = Vec::with_capacity(raw.len());
    for (i, (rank, line, bytes)) in raw.iter().enumerate() {
        let rec = Record::from_validated(bytes);
        before.insert((rec.kind_name().to_string(), rec.key()), (bytes, i));
        let mut after = rec.clone();
        repaired += refs::repair(&mut after, fields, &groups.refs);
        items.push(Item {
            rank: *rank,
            line: *line,
            before: rec,
            after,
        });
    }
    let originals: Vec<Map<String, Value>> =
        items.iter().map(|i: &Item| i.before.obj.clone()).collect();
    let merged = merge::merge_group_with(&groups.survivor(g), items, fields, decisions);
    // The difference between the group's curation before and after, matched by key.
    let mut changes = Vec::new();
    for a in merged.records {
        let (kind, key) = (a.kind_name().to_string(), a.key());
        let prior = before.remove(&(kind.clone(), key.clone()));
        if prior.is_some_and(|(_, i)| originals[i] == a.obj) {
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
        let record = serde_json::to_vec(&a.obj).expect("a JSON map always serialises");
        changes.extend(change_line(
            &kind,
            &key,
            prior.map(|(p, _)| p),
            Some(&record),
            false,
        ));
    }
    for ((kind, key), (prior, _)) in before {
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
fn decide(
    line: &Line,
    fields: &Fields,
    groups: &Groups,
    scan: &Scan,
    dry: bool,
) -> (Decision, Option<String>) {
    let p = match Probe::parse(&line.bytes) {
        Ok(p) => p,
        Err(e) => return (Decision::Bad(e), None),
    };
    let dangling = p.subject().and_then(|(otype, oid)| {
        let known = match otype.as_ref() {
            REPORT => &scan.known_reports,
            COLUMN => &scan.known_columns,
            _ => return None,
        };
        known
            .binary_search(&oid)
            .is_err()
            .then(|| format!("{} {}", p.kind_name, p.key()))
    });
    (decide_probed(&p, line, fields, groups, dry), dangling)
}

/// [`decide`] for a line already read.
/// `dry`: the changes are only counted ([`plan`]), so their lines are not built.
fn decide_probed(p: &Probe, line: &Line, fields: &Fields, groups: &Groups, dry: bool) -> Decision {
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
            if let Some((g, rank)) = p
                .subject()
                .and_then(|(otype, oid)| groups.member_of(&otype, oid))
            {
                return Decision::Member(g, rank);
            }
            if groups.refs.is_empty() {
                return Decision::Same;
            }
            // Rich text in one string field: rewritten in place, the rest of the line kept.
            let (name, rich) = match p.kind {
                Kind::FieldValue => match p.int(r.field_id).and_then(|id| fields.get(id)) {
                    Some(def) if def.field_type == "RICH_TEXT" => ("value", r.value),
                    Some(def)
                        if def.field_type == "OBJECT_SET"
                            && memchr::memmem::find(
                                r.value.expect("validated").get().as_bytes(),
                                b"bi_report",
                            )
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
            match refs::rewrite_rich(&text, &groups.refs) {
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
    let stable_report = &groups.stables[v.stable as usize];
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
        (stable_report.clone(), None)
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
    let idmap = (
        key,
        serde_json::to_vec(&line).expect("an id-map line serialises"),
    );
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
    match refs::repair(&mut after, fields, &groups.refs) {
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

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// The update of a probed line that replaces some of its top-level values, each given as
/// (its raw value in the line, the field's name, the new JSON text) and each different from
/// the old value: every other byte of the record stays as it was, so the update sets exactly
/// these fields, in the order they have in the line.
fn edit_change(
    p: &Probe,
    mut edits: Vec<(&RawValue, &str, String)>,
    dry: bool,
) -> Option<RawChange> {
    if dry {
        return (!edits.is_empty()).then(|| dry_change(Op::Update));
    }
    edits.sort_by_key(|(raw, _, _)| raw.get().as_ptr() as usize);
    let set: Vec<(&str, &str)> = edits
        .iter()
        .map(|(_, name, new)| (*name, new.as_str()))
        .collect();
    let key = p.key();
    let line = crate::changeset::encode_set(&p.kind_name, &key, p.line, &set)?;
    Some(RawChange {
        sort: sort_key(Op::Update, &p.kind_name, &key),
        line,
        op: Op::Update,
    })
}

/// The change of a probed line: its original bytes are the prior; `record` the new bytes, or
/// a delete when None.
fn raw_change(p: &Probe, record: Option<&[u8]>, dry: bool) -> Option<RawChange> {
    if dry && record.is_none() {
        return Some(dry_change(Op::Delete));
    }
    change_line(&p.kind_name, &p.key(), Some(p.line), record, dry)
}

/// A change line (SPEC §6) from raw JSON bytes, with its sort key (phase, kind, key: the order
/// of [`crate::changeset`]). A prior of None creates the record, a record of None deletes it;
/// None when the two are equal.
fn change_line(
    kind: &str,
    key: &str,
    prior: Option<&[u8]>,
    record: Option<&[u8]>,
    dry: bool,
) -> Option<RawChange> {
    if dry {
        let op = match (prior, record) {
            (None, _) => Op::Create,
            (Some(_), None) => Op::Delete,
            (Some(p), Some(r)) => {
                crate::changeset::update_fields(p, r)
                    .expect("validated records are JSON objects")?;
                Op::Update
            }
        };
        return Some(dry_change(op));
    }
    let (op, line) = crate::changeset::encode(kind, key, prior, record)
        .expect("validated records are JSON objects")?;
    Some(RawChange {
        sort: sort_key(op, kind, key),
        line,
        op,
    })
}

/// The order of change lines: (phase, kind, key), as [`crate::changeset`] documents it.
fn sort_key(op: Op, kind: &str, key: &str) -> Vec<u8> {
    let mut sort = Vec::with_capacity(kind.len() + 2 + key.len());
    sort.push(crate::changeset::phase(op, kind));
    sort.extend_from_slice(kind.as_bytes());
    sort.push(0);
    sort.extend_from_slice(key.as_bytes());
    sort
}

/// A change of a dry run: its kind of operation, counted, and nothing else.
fn dry_change(op: Op) -> RawChange {
    RawChange {
        sort: Vec::new(),
        line: Vec::new(),
        op,
    }
}

/// A change already serialised, with its sort key.
struct RawChange {
    sort: Vec<u8>,
    line: Vec<u8>,
    op: Op,
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_listed_in_their_order() {
        for (i, k) in super::KINDS.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }
}
