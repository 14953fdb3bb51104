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
//!
//! This module is the pipeline: the passes, their threads and sorters, and the report. What
//! happens to each line is decided in [`decide`]; the change lines are built in [`encode`].

mod decide;
mod encode;

use crate::export::{Item, Parsed, Reader};
use crate::groups::{self, Columns, Groups, ReportInfo, ServerCounts, Unresolved};
use crate::input::{Input, Line};
use crate::keys::IdMap;
use crate::merge;
use crate::output::Streams;
use crate::progress::Progress;
use crate::record::{Kind, Probe};
use crate::refs::Fields;
use crate::report::{Report, Skipped};
use crate::sort::Sorter;
use anyhow::{bail, Result};
use decide::{decide, keep, merge_one, Decision, GroupResult, Kept};
use encode::push_raw;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The change lines, in their streams of [`crate::changeset::stream`]; None in a dry run.
    pub changes: Option<crate::output::Streams>,
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
    // The peak so far shows which stage holds the most memory; the CPU time beside the wall
    // time, how much of the stage ran in parallel.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
            .unwrap_or_default()
    };
    static CPU: Mutex<f64> = Mutex::new(0.0);
    let cpu = cpu_seconds();
    let mut before = CPU.lock().expect("timing lock");
    eprintln!(
        "timing: {stage:<8} {:>8.3} s  cpu {:>8.3} s  rss {} kB  peak {} kB",
        last.elapsed().as_secs_f64(),
        cpu - *before,
        kib("VmRSS:"),
        kib("VmHWM:")
    );
    *before = cpu;
    *last = Instant::now();
}

/// User and system CPU seconds of this process so far (0 where /proc cannot tell).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of proc(5)'s stat: 12 and 13 after the name and
    // state, in clock ticks, which /proc counts at USER_HZ = 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the pipeline on `input`; the change lines are compressed at zstd `level` as they are
/// made.
pub fn run(input: &Input, opts: &Options, level: i32) -> Result<Outcome> {
    in_pool(opts, || run_in_pool(input, opts, Some(level)))
}

/// The dry run of `plan`: the same pipeline and the same report as [`run`], but the change and
/// id-map lines are only counted, never kept — no sort runs, no compression, no bundle, no
/// checksum of the input.
pub fn plan(input: &Input, opts: &Options) -> Result<Report> {
    in_pool(opts, || run_in_pool(input, opts, None)).map(|o| o.report)
}

fn in_pool<T: Send>(opts: &Options, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| anyhow::anyhow!("starting {} worker threads: {e}", opts.threads))?;
    pool.install(f)
}

/// `level`: the zstd level of the change lines; None counts the changes without keeping them
/// ([`plan`]).
fn run_in_pool(input: &Input, opts: &Options, level: Option<i32>) -> Result<Outcome> {
    let dry = level.is_none();
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
        let mut seen = std::collections::HashSet::new();
        scan.columns.retain(|c, _| seen.insert(c.oid));
    }
    // Reports of other servers and unresolved ones stay as they are, known to the second pass.
    let mut outside_reports: Vec<i64> = scan.unresolved.iter().map(|(u, _)| u.oid).collect();
    scan.reports.retain(|r| {
        let migrating = migrated.contains(&r.server_id);
        if !migrating {
            outside_reports.push(r.oid);
        }
        migrating
    });
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
    let facts = groups::Facts {
        reports: std::mem::take(&mut scan.reports),
        columns: std::mem::take(&mut scan.columns),
        unresolved: unresolved
            .iter()
            .map(|u| groups::external_hash(u.server_id, &u.external_id))
            .collect(),
        outside_reports,
        stables: std::mem::take(&mut scan.stables),
    };
    let groups = groups::build(facts, &migrated, opts.recover_deleted, servers)?;
    timing("groups");

    let mut report = Report {
        skipped_lines: std::mem::take(&mut scan.skipped),
        servers: groups.servers.clone(),
        ..Report::default()
    };
    let progress = Progress::lines(opts.progress, "changing");
    let (changes, idmap) = change(input, opts, &scan, &groups, &mut report, &progress, level)?;
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
    /// Server id → type.
    servers: BTreeMap<i64, String>,
    fields: Fields,
    reports: Vec<ReportInfo>,
    columns: Columns,
    /// Interned stable ids, per (server, stable id).
    stables: groups::Stables,
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
    // Records of each named kind, by `Kind as usize` (joined to `by_kind` at the end).
    let mut named = [0u64; Kind::Other as usize];
    let rules = crate::export::BadLines {
        max_errors: opts.max_errors,
        hint: crate::export::SKIP_HINT,
    };
    let batch_bytes = crate::input::batch_bytes(BATCH_BYTES);
    let reader = Reader::new(input, rules, batch_bytes, |l: &Line| {
        Ok(Probe::parse(&l.bytes).map(|p| {
            let scanned = Scanned {
                kept: keep(&p, id_map),
                probe_kind: p.kind,
                other_kind: (p.kind == Kind::Other).then(|| p.kind_name.to_string()),
            };
            Parsed::new(p.kind, &p.kind_name, &p.key(), scanned)
        }))
    })?
    .progress(progress);
    let outcome = reader.for_each(|_, line, item| {
        s.lines = line.no;
        let Item::Good(scanned) = item else {
            return Ok(());
        };
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
                info.stable = s.stables.intern(info.server_id, &stable);
                s.reports.push(info);
            }
            Kept::Unresolved(u) => s.unresolved.push((u, line.no)),
            Kept::Column(c, server) => s.columns.push(c, server),
        }
        Ok(())
    })?;
    s.stables.done();
    for (i, n) in named.into_iter().enumerate() {
        if n > 0 {
            *s.by_kind
                .entry(Kind::NAMED[i].name().to_string())
                .or_default() += n;
        }
    }
    // Bad lines and duplicates alike are passed over by the second pass.
    let mut skipped = outcome.skipped;
    skipped.sort_by_key(|k| k.line);
    s.bad_lines = skipped.iter().map(|k| k.line).collect();
    s.skipped = skipped;
    Ok(s)
}

/// Keeps the first item of each oid, in order.
fn first_by_oid<T>(items: &mut Vec<T>, oid: impl Fn(&T) -> i64) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(oid(i)));
}

/// What the first pass learnt from one line.
struct Scanned {
    probe_kind: Kind,
    /// The `kind` string of a kind the SPEC does not name.
    other_kind: Option<String>,
    kept: Kept,
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

fn change(
    input: &Input,
    opts: &Options,
    scan: &Scan,
    groups: &Groups,
    report: &mut Report,
    progress: &Progress,
    level: Option<i32>,
) -> Result<(Option<Streams>, Sorter)> {
    let dry = level.is_none();
    let (fields, bad) = (&scan.fields, &scan.bad_lines);
    // Records whose subject is a report or column the export lacks: kept, counted, a few named.
    let mut dangling: (u64, Vec<String>) = (0, Vec::new());
    // Grouped by phase and kind as they come (no sort), and compressed meanwhile.
    let mut changes = match level {
        Some(level) => Some(Streams::new(
            crate::changeset::STREAMS,
            level,
            crate::output::workers(opts.threads),
        )?),
        None => None,
    };
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
                            push_raw(changes.as_mut(), c, &mut report.counts)?;
                            report.counts.references_repaired += n;
                        }
                        Decision::Version {
                            change,
                            idmap: (key, row),
                            column_rekeyed,
                        } => {
                            push_raw(
                                changes.as_mut(),
                                change.into_iter().collect(),
                                &mut report.counts,
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
                        decide(l, fields, groups, dry)
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
    // Merge group by group, a batch of groups at a time in parallel. Three stages side by
    // side: a thread reads the held curation back in group order, the pool merges a batch,
    // and a sink folds the batch merged before into the change set and the report.
    let chooser = opts.decisions.as_deref().map(|d| d as &dyn merge::Chooser);
    std::thread::scope(|scope| -> Result<()> {
        let (read_tx, read_rx) = std::sync::mpsc::sync_channel::<Vec<HeldGroup>>(1);
        let (merged_tx, merged_rx) = std::sync::mpsc::sync_channel::<Vec<GroupResult>>(1);
        let reading = scope.spawn(move || -> Result<()> {
            let mut batch: Vec<HeldGroup> = Vec::new();
            let mut batch_bytes = 0;
            held.finish(|key, line| {
                let g = u32::from_be_bytes(key[..4].try_into().expect("group")) as usize;
                let rank = u32::from_be_bytes(key[4..8].try_into().expect("rank")) as usize;
                let no = u64::from_be_bytes(key[8..16].try_into().expect("line"));
                match batch.last_mut() {
                    Some((last, items)) if *last == g => items.push((rank, no, line.to_vec())),
                    _ => {
                        if batch_bytes > crate::input::batch_bytes(BATCH_BYTES) {
                            read_tx
                                .send(std::mem::take(&mut batch))
                                .map_err(|_| anyhow::anyhow!("the merge stopped"))?;
                            batch_bytes = 0;
                        }
                        batch.push((g, vec![(rank, no, line.to_vec())]));
                    }
                }
                batch_bytes += line.len();
                Ok(())
            })?;
            // A failed send means the merge stopped on an error of its own, which it reports.
            let _ = read_tx.send(batch);
            Ok(())
        });
        let (changes, report) = (&mut changes, &mut *report);
        let sink = scope.spawn(move || -> Result<()> {
            for merged in merged_rx {
                for m in merged {
                    for (k, n) in m.carried {
                        *report.counts.curation_carried.entry(k).or_default() += n;
                    }
                    report.counts.references_repaired += m.repaired;
                    for c in &m.conflicts {
                        report.conflicts.push(c)?;
                    }
                    push_raw(changes.as_mut(), m.changes, &mut report.counts)?;
                }
            }
            Ok(())
        });
        for batch in read_rx {
            let merged: Vec<GroupResult> = batch
                .par_iter()
                .map(|(g, items)| merge_one(*g, items, fields, groups, chooser, dry))
                .collect();
            if merged_tx.send(merged).is_err() {
                break; // the sink stopped on an error, which join reports
            }
        }
        drop(merged_tx);
        let sunk = sink.join().expect("the merge's sink does not panic");
        let read = reading
            .join()
            .expect("reading held curation does not panic");
        sunk.and(read)
    })?;
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
