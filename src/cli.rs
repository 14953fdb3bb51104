//! The command line (SPEC §8): clap types, turned into each command's plain options before any
//! work starts, and `main`, which prints an error once and exits with the code
//! [`crate::error::exit_code`] gives it.

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

/// Migrate the curation of Looker reports in a data catalog across the connector's report-ID
/// change (connector 1.4.1): plan, migrate to a bundle, inspect, verify, restore and roll back.
#[derive(Parser, Debug)]
#[command(name = "lookmig", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Dry run: what a migration of EXPORT would do. Writes nothing.
    Plan {
        /// The catalog export (NDJSON, plain or zstd; `-` for stdin).
        export: String,
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Migrate EXPORT into a bundle (a checksummed change set).
    Migrate {
        /// The catalog export (NDJSON, plain or zstd; `-` for stdin).
        export: String,
        /// The bundle directory to write (must not exist unless --overwrite).
        #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
        output: String,
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show what a bundle will do.
    Inspect {
        /// The bundle directory.
        bundle: String,
        /// How many changes to show (0 for all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Also write groups.csv, conflicts.csv, unresolved.csv and idmap.csv into DIR (for
        /// spreadsheets).
        #[arg(long, value_name = "DIR")]
        csv: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Write one self-contained HTML page to review and sign off a bundle, and decide its
    /// conflicts and unresolved reports (saved as a decisions file for `migrate --decisions`).
    Review {
        /// The bundle directory.
        bundle: String,
        /// The HTML file to write.
        #[arg(short = 'o', long = "output", value_name = "HTML")]
        output: String,
        /// Embed the before/after details of groups up to about this many MB of data (groups
        /// with conflicts first); the page says which groups have none.
        #[arg(long, value_name = "MB", default_value_t = 48)]
        details_mb: u64,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Check a bundle against its manifest and, with --export, the conservation law.
    Verify {
        /// The bundle directory.
        bundle: String,
        /// The export the bundle was made from.
        #[arg(long, value_name = "EXPORT")]
        export: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Apply a bundle onto a copy of an export (writing a new export), or onto a database.
    Restore(RestoreArgs),
    /// Undo a bundle on an export (writing a new export) or a database it was restored onto.
    Rollback(RestoreArgs),
    /// The catalog database: create its schema, load an export into it.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Write the catalog held in a database out as an export.
    Dump {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The export to write (`.zst` is compressed).
        #[arg(short = 'o', long = "output", value_name = "EXPORT")]
        output: String,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Write a synthetic catalog export (deterministic per seed).
    Generate {
        /// Logical Looker reports (each with 1-4 versions).
        #[arg(long, default_value_t = 1000)]
        reports: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Looker servers.
        #[arg(long, default_value_t = 2)]
        servers: u32,
        /// Output file (`.zst` is compressed; `-` for stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// The `db` commands.
#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Create the catalog schema (one table per kind) in an empty database.
    Init {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Load an export into the catalog tables (a staging copy), in one transaction.
    Load {
        /// The catalog export (NDJSON, plain or zstd; `-` for stdin).
        export: String,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Empty the catalog tables first (in the same transaction).
        #[arg(long)]
        replace: bool,
        /// Skip up to N malformed lines (each listed) and load the rest, instead of failing.
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_errors: u64,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// The database to work on. The URL's password is never shown.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=MODE&sslrootcert=CA]
    /// (or key=value pairs); what it leaves out comes from PGHOST, PGPORT, PGUSER, PGDATABASE,
    /// PGPASSWORD, PGSSLMODE, PGSSLROOTCERT and ~/.pgpass, as for psql.
    #[arg(
        long = "database",
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database: String,
}

/// Options of the rules (SPEC §2–§3, §8).
#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// Migrate only this server (repeatable; default: every bi_server of type looker).
    #[arg(long = "server", value_name = "ID")]
    pub servers: Vec<i64>,
    /// Map legacy external_ids to stable ones (CSV with a header, or NDJSON).
    #[arg(long, value_name = "FILE")]
    pub id_map: Option<String>,
    /// Let deleted versions other than the survivor take part in their group.
    #[arg(long)]
    pub recover_deleted: bool,
    /// Fail (exit 1) when any report stays unresolved.
    #[arg(long)]
    pub strict: bool,
    /// A reviewer's decisions (CSV, saved by the `lookmig review` page or written by hand):
    /// conflict winners chosen, unresolved reports given their stable id. A line that matches
    /// nothing or contradicts another is an error.
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<String>,
    /// Skip up to N malformed lines, listing each in the report, instead of failing.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_errors: u64,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Worker threads (0 = one per core). The output is the same whatever the number.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Refuse any input line (export, id-map) longer than this many bytes, decompressed, instead
    /// of buffering it: memory stays bounded on hostile input. Bundle files get four times it.
    #[arg(long, value_name = "N", default_value_t = crate::input::DEFAULT_MAX_LINE as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line_bytes: u64,
}

/// Options of commands that write a file or bundle.
#[derive(Args, Debug, Clone)]
pub struct WriteArgs {
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
    /// zstd compression level of compressed outputs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
}

/// Options of `restore` and `rollback`: onto an export (`--onto EXPORT -o OUT`) or onto a
/// database (`--database URL`, or `DATABASE_URL`; `--onto` wins when both are given).
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["onto", "database"])))]
pub struct RestoreArgs {
    /// The bundle directory.
    pub bundle: String,
    /// The export to apply it onto (it is not changed).
    #[arg(long, value_name = "EXPORT", requires = "output")]
    pub onto: Option<String>,
    /// The new export to write (`.zst` is compressed).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<String>,
    /// Apply the changes to this PostgreSQL database instead
    /// (postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=MODE&sslrootcert=CA]; the PG*
    /// variables and ~/.pgpass fill what it leaves out, as for psql).
    #[arg(
        long = "database",
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// Apply the changes even over conflicting records.
    #[arg(long)]
    pub force: bool,
    /// Carry curation made since the export that refers to a retired version onto its survivor
    /// (SPEC §4-§5) instead of refusing the restore.
    #[arg(long)]
    pub carry_new: bool,
    /// Refuse the bundle unless its id (the SHA-256 of its manifest, shown by migrate and
    /// inspect) is this one: what was signed off is what runs.
    #[arg(long, value_name = "ID")]
    pub expect: Option<String>,
    /// Database: commit every N changes (resumable; without it, one transaction).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Database: how long to wait for a row another session holds before stopping, naming it.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub lock_timeout: f64,
    /// Copy up to N malformed target lines through unchanged (each listed) instead of failing.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_errors: u64,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Parses the command line, runs the command, prints an error once and returns the exit code
/// of SPEC §8 (the table is in [`crate::error`]): 0 done, 1 error, 2 usage, 3 conflicts or
/// failed verification.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match crate::cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = crate::error::exit_code(&e);
            if code != 0 {
                eprintln!("lookmig: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}
