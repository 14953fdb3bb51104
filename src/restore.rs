//! Restore and rollback (SPEC §7): apply a change set onto a target, each change guarded by the
//! record the target holds now, so that restoring twice changes nothing and a target edited
//! since the export is a conflict, never overwritten (unless `--force`).
//!
//! Offline the target is an export file and the result a new one: untouched lines are copied
//! byte for byte, the header stays first, and records the change set creates come last.

use crate::bundle::{Bundle, Change};
use crate::input::Input;
use crate::migrate::Progress;
use crate::output::{AtomicFile, LineWriter, Target};
use crate::record::SeenKeys;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Which way the change set is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// prior → record.
    Restore,
    /// record → prior.
    Rollback,
}

/// What one change does to the record a target holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The target holds `prior`: apply.
    Apply,
    /// The target already holds `record` (absent, for a delete): skip.
    Already,
    /// The target holds something else.
    Conflict,
}

/// The guard of SPEC §7 for one change against the target's current record (None = absent).
pub fn step(change: &Change, current: Option<&Value>) -> Step {
    guard(change.prior.as_ref(), change.record.as_ref(), current)
}

/// The guard itself: apply where the target holds `prior`, skip where it already holds
/// `record`, else a conflict. Records compare as JSON values (field order aside).
pub fn guard(prior: Option<&Value>, record: Option<&Value>, current: Option<&Value>) -> Step {
    if current == prior {
        Step::Apply
    } else if current == record {
        Step::Already
    } else {
        Step::Conflict
    }
}

/// [`guard`] on raw JSON: equal bytes decide at once, and only a record whose bytes differ from
/// both sides is parsed to compare as values. `null` stands for absent.
pub fn guard_raw(prior: &RawValue, record: &RawValue, current: Option<&[u8]>) -> Step {
    let absent = |r: &RawValue| r.get() == "null";
    let Some(cur) = current.map(<[u8]>::trim_ascii) else {
        return guard(
            (!absent(prior)).then_some(&Value::Null),
            (!absent(record)).then_some(&Value::Null),
            None,
        );
    };
    if cur == prior.get().as_bytes() {
        return Step::Apply;
    }
    if cur == record.get().as_bytes() {
        return Step::Already;
    }
    let value = |r: &RawValue| {
        (!absent(r))
            .then(|| serde_json::from_str::<Value>(r.get()).ok())
            .flatten()
    };
    let cur: Option<Value> = serde_json::from_slice(cur).ok();
    guard(value(prior).as_ref(), value(record).as_ref(), cur.as_ref())
}

/// A change whose guard failed.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub kind: String,
    pub key: String,
    /// Line of the target holding the record, when it holds one.
    pub line: Option<u64>,
    /// What the change expected to find (None = absent).
    pub expected: Option<Value>,
    /// What the target holds (None = absent).
    pub found: Option<Value>,
}

/// What a restore or rollback did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub changes: u64,
    pub applied: u64,
    pub already_applied: u64,
    /// Conflicting changes applied anyway under `--force`.
    pub forced: u64,
    pub lines_written: u64,
    /// How many changes met a conflict.
    pub conflict_count: u64,
    /// The conflicts, each in full (the first [`MAX_LISTED`]).
    pub conflicts: Vec<Conflict>,
    /// Target lines that are not valid records, copied as they are under `--max-errors`.
    pub skipped_lines: Vec<crate::report::Skipped>,
}

/// How many conflicts a summary lists in full; the rest are counted.
pub const MAX_LISTED: usize = 10_000;

impl Summary {
    /// Records a conflict.
    pub fn conflict(&mut self, c: Conflict) {
        self.conflict_count += 1;
        if self.conflicts.len() < MAX_LISTED {
            self.conflicts.push(c);
        }
    }
}

/// Options of `restore` and `rollback`.
#[derive(Debug, Clone)]
pub struct Options {
    pub direction: Direction,
    pub force: bool,
    pub threads: usize,
    pub progress: bool,
    pub level: i32,
    /// Malformed target lines that may be copied through unchanged (and listed) instead of failing.
    pub max_errors: u64,
}

/// Raised when conflicts stop a restore; the binary maps it to exit 3.
#[derive(Debug)]
pub struct Conflicts(pub Summary);

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} conflict(s): the target changed since the export; nothing was written",
            self.0.conflict_count
        )?;
        for c in self.0.conflicts.iter().take(20) {
            writeln!(
                f,
                "  {} {:?}{}: {}",
                c.kind,
                c.key,
                c.line.map_or(String::new(), |l| format!(" (line {l})")),
                difference(c.expected.as_ref(), c.found.as_ref())
            )?;
        }
        if self.0.conflict_count > 20 {
            writeln!(
                f,
                "  ... and {} more (see --json)",
                self.0.conflict_count - 20
            )?;
        }
        write!(
            f,
            "check the target, or pass --force to apply the change set over these records"
        )
    }
}

impl std::error::Error for Conflicts {}

/// What differs between the record a change expected and the one the target holds, field by
/// field, so that a person sees the edit rather than two truncated records.
fn difference(expected: Option<&Value>, found: Option<&Value>) -> String {
    let short = |v: Option<&Value>| v.map_or("absent".to_string(), crate::record::short);
    match (expected, found) {
        (Some(Value::Object(e)), Some(Value::Object(f))) => {
            let mut out: Vec<String> = e
                .iter()
                .filter(|(k, v)| f.get(*k) != Some(*v))
                .map(|(k, v)| {
                    format!(
                        "{k}: expected {}, found {}",
                        crate::record::short(v),
                        short(f.get(k))
                    )
                })
                .collect();
            out.extend(
                f.iter().filter(|(k, _)| !e.contains_key(*k)).map(|(k, v)| {
                    format!("{k}: expected absent, found {}", crate::record::short(v))
                }),
            );
            out.join("; ")
        }
        (e, f) => format!("expected {}, found {}", short(e), short(f)),
    }
}

/// The change set on disk, indexed by a hash of (kind, key) so that memory holds 16 bytes per
/// change: the lines themselves are read back from a temporary file when a target record
/// matches.
struct ChangeIndex {
    file: File,
    /// (hash of kind and key, offset of the line in `file`), sorted.
    entries: Vec<(u64, u64)>,
    /// Per entry: a target record matched it.
    seen: Vec<bool>,
}

/// The head of a change line: enough to find it.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

/// A change line with its records as raw JSON.
#[derive(serde::Deserialize)]
struct RawChange<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    prior: &'a RawValue,
    #[serde(borrow)]
    record: &'a RawValue,
}

fn hash64(kind: &str, key: &str) -> u64 {
    SeenKeys::hash(kind, key) as u64
}

impl ChangeIndex {
    fn load(bundle: &Bundle) -> Result<ChangeIndex> {
        let file = tempfile::tempfile()
            .context("creating a temporary file for the change set (is TMPDIR full?)")?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut entries = Vec::new();
        let mut offset = 0u64;
        bundle.for_each_line(crate::bundle::CHANGES, |_, line| {
            let head: Head = serde_json::from_slice(line)?;
            entries.push((hash64(&head.kind, &head.key), offset));
            w.write_all(&(line.len() as u32).to_le_bytes())?;
            w.write_all(line)?;
            offset += 4 + line.len() as u64;
            Ok(())
        })?;
        w.flush()
            .context("writing the change set to a temporary file (is TMPDIR full?)")?;
        drop(w);
        entries.sort_unstable();
        let seen = vec![false; entries.len()];
        Ok(ChangeIndex {
            file,
            entries,
            seen,
        })
    }

    fn read(&self, offset: u64) -> Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.file.read_exact_at(&mut len, offset)?;
        let mut line = vec![0u8; u32::from_le_bytes(len) as usize];
        self.file.read_exact_at(&mut line, offset + 4)?;
        Ok(line)
    }

    /// The entry and line of the change for (kind, key), if the change set has one.
    fn find(&self, kind: &str, key: &str) -> Result<Option<(usize, Vec<u8>)>> {
        let h = hash64(kind, key);
        let start = self.entries.partition_point(|e| e.0 < h);
        for i in start..self.entries.len() {
            if self.entries[i].0 != h {
                break;
            }
            let line = self.read(self.entries[i].1)?;
            let head: Head = serde_json::from_slice(&line)?;
            if head.kind == kind && head.key == key {
                return Ok(Some((i, line)));
            }
        }
        Ok(None)
    }
}

/// What to write for a target line.
enum Emit {
    /// The line as it is.
    Keep,
    /// Nothing: the record is deleted.
    Drop,
    /// These bytes.
    Bytes(Vec<u8>),
}

/// Applies the change set of `bundle` onto the export `target`, writing `out`.
pub fn run(bundle: &Bundle, target: &Input, out: &Target, opts: &Options) -> Result<Summary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    pool.install(|| run_in_pool(bundle, target, out, opts))
}

fn skip(
    summary: &mut Summary,
    opts: &Options,
    target: &Input,
    no: u64,
    error: String,
    bytes: &[u8],
) -> Result<()> {
    if summary.skipped_lines.len() as u64 >= opts.max_errors {
        bail!(
            "{}:{no}: {error}; fix the line in the target export, or pass --max-errors N to copy bad lines through",
            target.name
        );
    }
    summary
        .skipped_lines
        .push(crate::report::Skipped::new(no, error, bytes));
    Ok(())
}

fn run_in_pool(bundle: &Bundle, target: &Input, out: &Target, opts: &Options) -> Result<Summary> {
    let mut index = ChangeIndex::load(bundle)?;
    let mut summary = Summary {
        changes: index.entries.len() as u64,
        ..Summary::default()
    };
    let rollback = opts.direction == Direction::Rollback;
    let file = AtomicFile::create(out)?;
    let compress = out.path.extension().is_some_and(|e| e == "zst");
    let mut w = LineWriter::new(file.file(), compress, opts.level, opts.threads)?;
    let werr = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "{}: writing (is the disk full?)",
            out.path.display()
        ))
    };
    // Duplicate keys of unchanged records are found after the pass, by sorting key hashes.
    let mut keys = crate::record::DuplicateKeys::new(8 << 20);
    let mut any_line = false;
    let progress = Progress::new(opts.progress, "restoring");
    for batch in target.batches(4 << 20)? {
        let batch = batch?;
        let parsed: Vec<Result<(String, String), String>> = batch
            .par_iter()
            .map(|l| {
                crate::record::Probe::parse(&l.bytes).map(|p| (p.kind_name.to_string(), p.key()))
            })
            .collect();
        for (line, p) in batch.iter().zip(parsed) {
            let (kind, key) = match p {
                Ok(ok) => ok,
                Err(e) => {
                    // No change can name a line that is not a record: it goes through as it is.
                    skip(&mut summary, opts, target, line.no, e, &line.bytes)?;
                    w.line(&line.bytes).map_err(werr)?;
                    summary.lines_written += 1;
                    continue;
                }
            };
            if kind == "header" && std::mem::replace(&mut any_line, true) {
                bail!(
                    "{}:{}: a header must be the first line",
                    target.name,
                    line.no
                );
            }
            any_line = true;
            let found = index.find(&kind, &key)?;
            let write = match found {
                None => {
                    keys.add(&kind, &key, line.no)?;
                    Emit::Keep
                }
                Some((i, _)) if index.seen[i] => {
                    let e =
                        format!("duplicate record key: {kind} {key:?} occurs on an earlier line");
                    skip(&mut summary, opts, target, line.no, e, &line.bytes)?;
                    Emit::Keep
                }
                Some((i, change)) => {
                    index.seen[i] = true;
                    let c: RawChange =
                        serde_json::from_slice(&change).context("reading the change set")?;
                    let (prior, record) = if rollback {
                        (c.record, c.prior)
                    } else {
                        (c.prior, c.record)
                    };
                    let outcome = guard_raw(prior, record, Some(&line.bytes));
                    let apply = || match record.get() {
                        "null" => Emit::Drop,
                        r => Emit::Bytes(r.as_bytes().to_vec()),
                    };
                    match outcome {
                        Step::Apply => {
                            summary.applied += 1;
                            apply()
                        }
                        Step::Already => {
                            summary.already_applied += 1;
                            Emit::Keep
                        }
                        Step::Conflict => {
                            summary.conflict(Conflict {
                                kind: c.kind.to_string(),
                                key: c.key.to_string(),
                                line: Some(line.no),
                                expected: serde_json::from_str::<Option<Value>>(prior.get())
                                    .ok()
                                    .flatten(),
                                found: serde_json::from_slice(&line.bytes).ok(),
                            });
                            if opts.force {
                                summary.forced += 1;
                                apply()
                            } else {
                                Emit::Keep
                            }
                        }
                    }
                }
            };
            match write {
                Emit::Keep => w.line(&line.bytes).map_err(werr)?,
                Emit::Drop => continue,
                Emit::Bytes(b) => w.line(&b).map_err(werr)?,
            }
            summary.lines_written += 1;
        }
        progress.add(batch.len() as u64);
    }
    progress.finish();
    // Changes whose record the target does not hold, in the change set's (kind, key) order.
    let mut rest: Vec<u64> = index
        .entries
        .iter()
        .zip(&index.seen)
        .filter(|(_, seen)| !**seen)
        .map(|(e, _)| e.1)
        .collect();
    rest.sort_unstable();
    for offset in rest {
        let change = index.read(offset)?;
        let c: RawChange = serde_json::from_slice(&change).context("reading the change set")?;
        let (prior, record) = if rollback {
            (c.record, c.prior)
        } else {
            (c.prior, c.record)
        };
        let write = match guard_raw(prior, record, None) {
            Step::Apply => {
                summary.applied += 1;
                true
            }
            Step::Already => {
                summary.already_applied += 1;
                false
            }
            Step::Conflict => {
                summary.conflict(Conflict {
                    kind: c.kind.to_string(),
                    key: c.key.to_string(),
                    line: None,
                    expected: serde_json::from_str::<Option<Value>>(prior.get())
                        .ok()
                        .flatten(),
                    found: None,
                });
                if opts.force {
                    summary.forced += 1;
                }
                opts.force
            }
        };
        if write && record.get() != "null" {
            w.line(record.get().as_bytes()).map_err(werr)?;
            summary.lines_written += 1;
        }
    }
    // Duplicate keys among the records the change set does not name.
    for (no, msg, bytes) in keys.finish(target)? {
        skip(&mut summary, opts, target, no, msg, &bytes)?;
    }
    summary.skipped_lines.sort_by_key(|s| s.line);
    if summary.conflict_count > 0 && !opts.force {
        return Err(Conflicts(summary).into());
    }
    w.finish().map_err(werr)?;
    file.commit().context("finishing the restored export")?;
    Ok(summary)
}
