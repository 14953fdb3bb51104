//! Restore and rollback (SPEC §7): apply a change set onto a target, each change guarded by the
//! record the target holds now, so that restoring twice changes nothing and a target edited
//! since the export is a conflict, never overwritten (unless `--force`).
//!
//! Offline the target is an export file and the result a new one: untouched lines are copied
//! byte for byte, the header stays first, and records the change set creates come last.

use crate::bundle::Change;
use crate::input::Input;
use crate::migrate::Progress;
use crate::output::{AtomicFile, LineWriter, Target};
use crate::record::{parse_line, Kind, SeenKeys};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

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
    if current == change.prior.as_ref() {
        Step::Apply
    } else if current == change.record.as_ref() {
        Step::Already
    } else {
        Step::Conflict
    }
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
    pub conflicts: Vec<Conflict>,
    /// Target lines that are not valid records, copied as they are under `--max-errors`.
    pub skipped_lines: Vec<crate::report::Skipped>,
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
            self.0.conflicts.len()
        )?;
        for c in self.0.conflicts.iter().take(20) {
            let show = |v: &Option<Value>| {
                v.as_ref()
                    .map_or("absent".to_string(), crate::record::short)
            };
            writeln!(
                f,
                "  {} {:?}{}: expected {}, found {}",
                c.kind,
                c.key,
                c.line.map_or(String::new(), |l| format!(" (line {l})")),
                show(&c.expected),
                show(&c.found)
            )?;
        }
        if self.0.conflicts.len() > 20 {
            writeln!(
                f,
                "  ... and {} more (see --json)",
                self.0.conflicts.len() - 20
            )?;
        }
        write!(
            f,
            "check the target, or pass --force to apply the change set over these records"
        )
    }
}

impl std::error::Error for Conflicts {}

/// Applies `changes` (as the bundle holds them) onto the export `target`, writing `out`.
pub fn run(changes: Vec<Change>, target: &Input, out: &Target, opts: &Options) -> Result<Summary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    pool.install(|| run_in_pool(changes, target, out, opts))
}

fn run_in_pool(
    changes: Vec<Change>,
    target: &Input,
    out: &Target,
    opts: &Options,
) -> Result<Summary> {
    let mut summary = Summary {
        changes: changes.len() as u64,
        ..Summary::default()
    };
    let mut pending: HashMap<(String, String), Change> = changes
        .into_iter()
        .map(|c| {
            let c = if opts.direction == Direction::Rollback {
                c.inverse()
            } else {
                c
            };
            ((c.kind.clone(), c.key.clone()), c)
        })
        .collect();
    let file = AtomicFile::create(out)?;
    let compress = out.path.extension().is_some_and(|e| e == "zst");
    let mut w = LineWriter::new(file.file(), compress, opts.level, opts.threads)?;
    let werr = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "{}: writing (is the disk full?)",
            out.path.display()
        ))
    };
    let mut seen = SeenKeys::default();
    let mut any_line = false;

    let progress = Progress::new(opts.progress, "restoring");
    for batch in target.batches(8 << 20)? {
        let batch = batch?;
        let parsed: Vec<_> = batch
            .par_iter()
            .map(|l| {
                parse_line(&l.bytes).map(|r| {
                    let key = r.key();
                    (r, key)
                })
            })
            .collect();
        for (line, p) in batch.iter().zip(parsed) {
            let (rec, key) = match p {
                Ok(ok) => ok,
                Err(e) if (summary.skipped_lines.len() as u64) < opts.max_errors => {
                    // No change can name a line that is not a record: it goes through as it is.
                    summary.skipped_lines.push(crate::report::Skipped {
                        line: line.no,
                        error: e,
                        text: String::from_utf8_lossy(&line.bytes).into_owned(),
                    });
                    w.line(&line.bytes).map_err(werr)?;
                    summary.lines_written += 1;
                    continue;
                }
                Err(e) => bail!(
                    "{}:{}: {e}; fix the line in the target export, or pass --max-errors N to copy bad lines through",
                    target.name,
                    line.no
                ),
            };
            if rec.kind == Kind::Header && std::mem::replace(&mut any_line, true) {
                bail!(
                    "{}:{}: a header must be the first line",
                    target.name,
                    line.no
                );
            }
            any_line = true;
            if !seen.insert(SeenKeys::hash(rec.kind_name(), &key)) {
                let e = format!(
                    "duplicate record key: {} {key:?} occurs on an earlier line",
                    rec.kind_name()
                );
                if (summary.skipped_lines.len() as u64) >= opts.max_errors {
                    bail!("{}:{}: {e}", target.name, line.no);
                }
                summary.skipped_lines.push(crate::report::Skipped {
                    line: line.no,
                    error: e,
                    text: String::from_utf8_lossy(&line.bytes).into_owned(),
                });
                w.line(&line.bytes).map_err(werr)?;
                summary.lines_written += 1;
                continue;
            }
            let Some(change) = pending.remove(&(rec.kind_name().to_string(), key)) else {
                w.line(&line.bytes).map_err(werr)?;
                summary.lines_written += 1;
                continue;
            };
            let current = Value::Object(rec.obj);
            // None: keep the line as it is; Some(None): drop it; Some(Some(v)): write v.
            let write: Option<Option<Value>> = match step(&change, Some(&current)) {
                Step::Apply => {
                    summary.applied += 1;
                    Some(change.record.clone())
                }
                Step::Already => {
                    summary.already_applied += 1;
                    None
                }
                Step::Conflict => {
                    summary.conflicts.push(Conflict {
                        kind: change.kind.clone(),
                        key: change.key.clone(),
                        line: Some(line.no),
                        expected: change.prior.clone(),
                        found: Some(current),
                    });
                    if opts.force {
                        summary.forced += 1;
                        Some(change.record.clone())
                    } else {
                        None
                    }
                }
            };
            match write {
                None => w.line(&line.bytes).map_err(werr)?,
                Some(None) => continue,
                Some(Some(v)) => w.line(&serde_json::to_vec(&v)?).map_err(werr)?,
            }
            summary.lines_written += 1;
        }
        progress.add(batch.len() as u64);
    }
    progress.finish();
    // Changes whose record the target does not hold, in (kind, key) order.
    let mut rest: Vec<Change> = pending.into_values().collect();
    rest.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
    for change in rest {
        let write = match step(&change, None) {
            Step::Apply => {
                summary.applied += 1;
                change.record.clone()
            }
            Step::Already => {
                summary.already_applied += 1;
                None
            }
            Step::Conflict => {
                summary.conflicts.push(Conflict {
                    kind: change.kind.clone(),
                    key: change.key.clone(),
                    line: None,
                    expected: change.prior.clone(),
                    found: None,
                });
                if opts.force {
                    summary.forced += 1;
                    change.record.clone()
                } else {
                    None
                }
            }
        };
        if let Some(v) = write {
            w.line(&serde_json::to_vec(&v)?).map_err(werr)?;
            summary.lines_written += 1;
        }
    }
    if !summary.conflicts.is_empty() && !opts.force {
        return Err(Conflicts(summary).into());
    }
    w.finish().map_err(werr)?;
    file.commit().context("finishing the restored export")?;
    Ok(summary)
}
