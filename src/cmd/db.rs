//! `lookmig db init|load` and `lookmig dump`: the catalog database (issue 4).

use super::{out, out_json};
use crate::cli::DbCommand;
use crate::db::Database;
use crate::input::Input;
use crate::output::Target;
use anyhow::Result;

/// Runs a `db` subcommand.
pub fn run(cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Init { database, common } => init(&InitOptions {
            database: database.database,
            json: common.json,
        }),
        DbCommand::Load {
            export,
            database,
            replace,
            max_errors,
            common,
        } => load(&LoadOptions {
            export,
            database: database.database,
            replace,
            max_errors,
            threads: common.threads,
            json: common.json,
        }),
    }
}

/// Options of `db init`.
pub struct InitOptions {
    pub database: String,
    pub json: bool,
}

/// Creates the schema (nothing happens when it is there already).
pub fn init(o: &InitOptions) -> Result<()> {
    let db = Database::parse(&o.database)?;
    let created = crate::db::load::init(&db)?;
    if o.json {
        return out_json(&serde_json::json!({ "database": db.shown(), "created": created }));
    }
    if created {
        out(&format!(
            "created the lookmig catalog schema in database {}",
            db.shown()
        ))
    } else {
        out(&format!(
            "database {} already holds the lookmig catalog schema; nothing changed",
            db.shown()
        ))
    }
}

/// Options of `db load`.
pub struct LoadOptions {
    pub export: String,
    pub database: String,
    pub replace: bool,
    /// Bad lines that may be skipped (each listed) before the load fails.
    pub max_errors: u64,
    pub threads: usize,
    pub json: bool,
}

/// Loads an export into the catalog tables, in one transaction.
pub fn load(o: &LoadOptions) -> Result<()> {
    let db = Database::parse(&o.database)?;
    let input = Input::new(&o.export)?;
    let opts = crate::db::load::Options {
        replace: o.replace,
        progress: true,
        threads: o.threads,
        max_errors: o.max_errors,
    };
    let loaded = crate::db::load::load(&db, &input, &opts)?;
    if o.json {
        return out_json(&loaded);
    }
    let kinds: Vec<String> = loaded
        .by_kind
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let mut s = format!(
        "loaded {} records from {} into database {}: {}",
        loaded.records,
        o.export,
        db.shown(),
        kinds.join(", ")
    );
    // As migrate lists them in its summary (the text of each is in the --json output).
    for k in &loaded.skipped_lines {
        s += &format!("\nskipped line {}: {}", k.line, k.error);
    }
    out(&s)
}

/// Options of `dump`.
pub struct DumpOptions {
    pub database: String,
    pub output: String,
    pub json: bool,
    pub overwrite: bool,
    pub level: i32,
}

/// Writes the catalog out as an export.
pub fn dump(o: &DumpOptions) -> Result<()> {
    let db = Database::parse(&o.database)?;
    let target = Target {
        path: o.output.clone().into(),
        overwrite: o.overwrite,
    };
    target.check()?;
    let n = crate::db::dump::dump(
        &db,
        &target,
        &crate::db::dump::Options {
            level: o.level,
            progress: true,
        },
    )?;
    if o.json {
        return out_json(
            &serde_json::json!({ "database": db.shown(), "records": n, "output": o.output }),
        );
    }
    out(&format!(
        "dumped {n} records from database {} to {}",
        db.shown(),
        o.output
    ))
}
