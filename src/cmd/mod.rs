//! One module per command, each the same shape: a plain options struct and `run`.

pub mod db;
pub mod generate;
pub mod inspect;
pub mod migrate;
pub mod plan;
pub mod restore;
pub mod review;
pub mod verify;

use crate::cli::{Command, CommonArgs, RuleArgs};
use anyhow::Result;
use std::io::Write;

/// Runs one parsed command.
pub fn run(cmd: Command) -> Result<()> {
    crate::input::set_max_line(usize::try_from(common(&cmd).max_line_bytes).unwrap_or(usize::MAX));
    match cmd {
        Command::Plan {
            export,
            rules,
            common,
        } => plan::run(&plan::Options {
            export,
            migrate: migrate_options(&rules, &common)?,
            json: common.json,
        }),
        Command::Migrate {
            export,
            output,
            rules,
            common,
            write,
        } => migrate::run(&migrate::Options {
            export,
            output,
            migrate: migrate_options(&rules, &common)?,
            json: common.json,
            overwrite: write.overwrite,
            level: write.level,
        }),
        Command::Inspect {
            bundle,
            limit,
            csv,
            common,
            write,
        } => inspect::run(&inspect::Options {
            bundle,
            limit,
            csv,
            overwrite: write.overwrite,
            json: common.json,
        }),
        Command::Review {
            bundle,
            output,
            details_mb,
            common,
            write,
        } => review::run(&review::Options {
            bundle,
            output,
            details_bytes: details_mb.saturating_mul(1 << 20),
            overwrite: write.overwrite,
            json: common.json,
        }),
        Command::Verify {
            bundle,
            export,
            common,
        } => verify::run(&verify::Options {
            bundle,
            export,
            threads: common.threads,
            json: common.json,
        }),
        Command::Restore(a) => restore::run(&restore::Options::from_args(
            a,
            crate::restore::Direction::Restore,
        )),
        Command::Rollback(a) => restore::run(&restore::Options::from_args(
            a,
            crate::restore::Direction::Rollback,
        )),
        Command::Db { command } => db::run(command),
        Command::Dump {
            database,
            output,
            common,
            write,
        } => db::dump(&db::DumpOptions {
            database: database.database,
            output,
            json: common.json,
            overwrite: write.overwrite,
            level: write.level,
        }),
        Command::Generate {
            reports,
            seed,
            servers,
            output,
            common,
            write,
        } => generate::run(&generate::Options {
            gen: crate::generate::GenerateOptions {
                reports,
                seed,
                servers,
            },
            output,
            json: common.json,
            overwrite: write.overwrite,
            level: write.level,
        }),
    }
}

/// Refuses an export without a single record (an empty file, or only blank lines): there is
/// nothing to migrate, and an empty file is more often a failed dump than a real catalog.
pub fn require_records(input: &crate::input::Input) -> Result<()> {
    if input.lines()?.next_line()?.is_none() {
        anyhow::bail!(
            "{}: the export is empty (no records); check that the dump finished",
            input.name
        );
    }
    Ok(())
}

/// The options every command takes.
fn common(cmd: &Command) -> &CommonArgs {
    match cmd {
        Command::Plan { common, .. }
        | Command::Migrate { common, .. }
        | Command::Inspect { common, .. }
        | Command::Review { common, .. }
        | Command::Verify { common, .. }
        | Command::Generate { common, .. }
        | Command::Dump { common, .. } => common,
        Command::Db { command } => match command {
            crate::cli::DbCommand::Init { common, .. }
            | crate::cli::DbCommand::Load { common, .. } => common,
        },
        Command::Restore(a) | Command::Rollback(a) => &a.common,
    }
}

fn migrate_options(r: &RuleArgs, c: &CommonArgs) -> Result<crate::migrate::Options> {
    let decisions = match &r.decisions {
        Some(p) => Some(std::sync::Arc::new(crate::decisions::Decisions::load(p)?)),
        None => None,
    };
    Ok(crate::migrate::Options {
        servers: r.servers.clone(),
        id_map: r.id_map.clone(),
        recover_deleted: r.recover_deleted,
        strict: r.strict,
        max_errors: r.max_errors,
        threads: c.threads,
        progress: true,
        decisions,
    })
}

/// Prints to stdout, turning a closed pipe into an error the binary treats as success.
pub fn out(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        o.write_all(b"\n")?;
    }
    o.flush()?;
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn out_json<T: serde::Serialize>(v: &T) -> Result<()> {
    out(&serde_json::to_string_pretty(v)?)
}
