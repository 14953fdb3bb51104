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
            },
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
    let b = crate::bundle::open(std::path::Path::new(&o.bundle))?;
    let input = Input::new(onto)?;
    let result = crate::restore::run(&b, &input, &target, &o.restore);
    report(
        o,
        result,
        &format!("onto {onto}"),
        &format!("lines written to {output}"),
    )
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
            if let Some(c) = e.downcast_ref::<crate::restore::Conflicts>() {
                out_json(&c.0)?;
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
    out(&s)
}

/// Restore or rollback onto the database, in one transaction.
fn run_database(o: &Options) -> Result<()> {
    if o.output.is_some() {
        bail!("-o/--output goes with --onto EXPORT; a restore onto a database (--database) writes no file");
    }
    let Some(url) = &o.database else {
        bail!("give --onto EXPORT -o OUT, or --database URL (or set DATABASE_URL)");
    };
    let db = crate::db::Database::parse(url)?;
    let b = crate::bundle::open(std::path::Path::new(&o.bundle))?;
    let opts = crate::db::apply::Options {
        direction: o.restore.direction,
        force: o.restore.force,
        progress: o.restore.progress,
    };
    let (total, changes) = crate::db::apply::changes_of(&b)?;
    let result = crate::db::apply::apply(&db, changes, total, &opts);
    report(
        o,
        result,
        &format!("onto database {}", db.shown()),
        "rows written, in one transaction",
    )
}
