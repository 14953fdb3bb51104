//! `lookmig restore|rollback BUNDLE --onto EXPORT -o OUT`: apply (or undo) a bundle onto a copy
//! of an export, guarded by SPEC §7; with `--database URL` instead, onto the catalog database
//! ([`crate::db::apply`]).

use super::{out, out_json};
use crate::cli::RestoreArgs;
use crate::input::Input;
use crate::output::Target;
use crate::restore::Direction;
use anyhow::{bail, Result};

/// Options of `restore` and `rollback`.
pub struct Options {
    pub bundle: String,
    /// The export to apply onto (offline), or None for the database.
    pub onto: Option<String>,
    pub output: Option<String>,
    /// The database URL (used when `onto` is None).
    pub database: Option<String>,
    pub json: bool,
    pub overwrite: bool,
    pub restore: crate::restore::Options,
    /// The bundle id that must match (`--expect`).
    pub expect: Option<String>,
    pub batch_size: Option<u64>,
    pub lock_timeout: std::time::Duration,
}

impl Options {
    /// From the parsed command line.
    pub fn from_args(a: RestoreArgs, direction: Direction) -> Options {
        Options {
            bundle: a.bundle,
            onto: a.onto,
            output: a.output,
            database: a.database,
            json: a.common.json,
            overwrite: a.write.overwrite,
            restore: crate::restore::Options {
                direction,
                force: a.force,
                threads: a.common.threads,
                progress: true,
                level: a.write.level,
                max_errors: a.max_errors,
                carry_new: a.carry_new,
            },
            expect: a.expect,
            batch_size: a.batch_size,
            lock_timeout: std::time::Duration::from_secs_f64(a.lock_timeout.max(0.001)),
        }
    }
}

/// Runs `restore` or `rollback`; conflicts are exit 3 and nothing is written.
pub fn run(o: &Options) -> Result<()> {
    let (Some(onto), Some(output)) = (&o.onto, &o.output) else {
        return run_database(o);
    };
    let target = Target {
        path: output.into(),
        overwrite: o.overwrite,
    };
    target.check()?;
    let b = open(o, false)?;
    if o.batch_size.is_some() {
        bail!("--batch-size goes with --database URL; a restore onto a file writes it whole");
    }
    let input = Input::new(onto)?;
    let result = crate::restore::run(&b, &input, &target, &o.restore);
    crate::migrate::timing("applied");
    report(
        o,
        result,
        &format!("onto {onto}"),
        &format!("lines written to {output}"),
    )
}

/// Opens the bundle, and with `--expect` refuses any other than the one signed off. A
/// restore onto the database counts the change set's lines as it reads them (`count_later`).
fn open(o: &Options, count_later: bool) -> Result<crate::bundle::Bundle> {
    crate::migrate::timing("start");
    let path = std::path::Path::new(&o.bundle);
    let b = if count_later {
        crate::bundle::open_counting_changes_later(path)?
    } else {
        crate::bundle::open(path)?
    };
    if let Some(want) = &o.expect {
        let id = b.id()?;
        if !id.eq_ignore_ascii_case(want.trim()) {
            return Err(crate::error::Failure::NotExpected(format!(
                "{}: bundle id {id} is not the expected {want}; this is not the bundle that was signed off, nothing was touched",
                o.bundle
            ))
            .into());
        }
    }
    Ok(b)
}

/// Prints what a restore or rollback did (or, with `--json`, its conflicts before failing).
fn report(
    o: &Options,
    result: Result<crate::restore::Summary>,
    onto: &str,
    written: &str,
) -> Result<()> {
    let summary = match result {
        Err(e) if o.json => {
            if let Some(c) = crate::error::Failure::conflicts_of(&e) {
                out_json(c)?;
            }
            return Err(e);
        }
        other => other?,
    };
    if o.json {
        return out_json(&summary);
    }
    let verb = if o.restore.direction == Direction::Restore {
        "restored"
    } else {
        "rolled back"
    };
    let mut s = format!(
        "{verb} {} {onto}: {} changes, {} applied, {} already applied, {} {written}",
        o.bundle, summary.changes, summary.applied, summary.already_applied, summary.lines_written
    );
    if summary.forced > 0 {
        s += &format!(
            "\n{} conflicting changes applied anyway (--force)",
            summary.forced
        );
    }
    if !summary.carried.is_empty() {
        let kinds: Vec<String> = summary
            .carried
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        s += &format!(
            "\ncarried onto survivors (--carry-new): {} record(s) made after the export ({}), by {} change(s)",
            summary.newer,
            kinds.join(", "),
            summary.carry_changes
        );
        // The competing values, not the records that hold them.
        let value = |r: &serde_json::Value| {
            crate::record::short(r.get("value").or(r.get("reason")).unwrap_or(r))
        };
        for c in summary.carry_conflicts.iter().take(10) {
            s += &format!(
                "\n  conflict while carrying: {} {} on {}:{}: kept {} over {} (the loser is listed in full with --json)",
                c.kind,
                c.merge_key,
                c.survivor.otype,
                c.survivor.oid,
                value(&c.winner),
                value(&c.loser)
            );
        }
    } else if summary.carry_changes > 0 {
        s += &format!(
            "\nundid {} change(s) that carried curation made after the export",
            summary.carry_changes
        );
    }
    if let Some(r) = &summary.carried_record {
        if o.restore.direction == Direction::Restore {
            s += &format!("\nwhat was carried is recorded in {r} (rollback reads it)");
        } else {
            s += &format!(" (recorded in {r})");
        }
    }
    out(&s)
}

/// Restore or rollback onto the database.
fn run_database(o: &Options) -> Result<()> {
    if o.output.is_some() {
        bail!("-o/--output goes with --onto EXPORT; a restore onto a database (--database) writes no file");
    }
    let Some(url) = &o.database else {
        bail!("give --onto EXPORT -o OUT, or --database URL (or set DATABASE_URL)");
    };
    let db = crate::db::Database::parse(url)?;
    let b = open(o, true)?;
    let opts = crate::db::apply::Options {
        direction: o.restore.direction,
        force: o.restore.force,
        progress: o.restore.progress,
        carry_new: o.restore.carry_new,
        batch_size: o.batch_size,
        lock_timeout: o.lock_timeout,
    };
    let result = crate::db::apply::apply(&db, &b, &opts);
    let how = match o.batch_size {
        Some(n) => format!("rows written, in batches of {n} changes"),
        None => "rows written, in one transaction".into(),
    };
    report(o, result, &format!("onto database {}", db.shown()), &how)
}
