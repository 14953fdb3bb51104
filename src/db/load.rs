//! `db init` and `db load`: create the catalog schema, and load an export into it (a staging
//! copy of the catalog).
//!
//! Loading reads the export once, checks every line as every other command does
//! ([`crate::export`], SPEC §1: a malformed line, a header past the first line or a duplicate
//! key names the file and the line, and nothing is loaded; `--max-errors N` skips up to N such
//! lines and lists them), spools each table's rows in COPY text format to a temporary file, and
//! then copies every table in with `COPY … FROM STDIN WITH (FREEZE)` (the tables emptied in the
//! same transaction, which FREEZE needs), all in one transaction: the database holds the whole
//! export, less the lines skipped, or nothing of it, its rows frozen as in a vacuumed catalog.

use super::schema::{self, copy_line, to_row, TABLES};
use super::Database;
use crate::input::Input;
use crate::progress::Progress;
use crate::record::{parse_line, Kind};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};

/// Creates the schema in one transaction. Returns false when it was already there.
pub fn init(db: &Database) -> Result<bool> {
    let mut client = db.connect()?;
    let mut tx = client
        .transaction()
        .map_err(|e| db.error(&e, "starting a transaction"))?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('lookmig_schema') IS NOT NULL", &[])
        .map_err(|e| db.error(&e, "reading the schema"))?
        .get(0);
    if exists {
        return Ok(false);
    }
    tx.batch_execute(&schema::ddl())
        .map_err(|e| db.error(&e, "creating the schema"))?;
    tx.commit()
        .map_err(|e| db.error(&e, "committing the schema"))?;
    Ok(true)
}

/// Options of `db load`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Empty the catalog tables first (in the same transaction).
    pub replace: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Bad lines that may be skipped (each listed) before the load fails (`--max-errors`).
    pub max_errors: u64,
}

/// What was loaded: records by kind, and the lines skipped under `--max-errors`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Loaded {
    pub records: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Lines left out under `--max-errors`, verbatim, in line order.
    pub skipped_lines: Vec<crate::report::Skipped>,
}

/// Loads `input` into the database, in one transaction.
pub fn load(db: &Database, input: &Input, opts: &Options) -> Result<Loaded> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    let mut client = db.connect()?;
    super::check_schema(db, &mut client)?;
    let (spools, loaded) = pool.install(|| spool(input, opts))?;
    let bar = Progress::new(
        opts.progress,
        "copying into the database",
        Some(loaded.records),
    );
    let mut tx = client
        .transaction()
        .map_err(|e| db.error(&e, "starting a transaction"))?;
    let tables = schema::all_tables();
    if !opts.replace {
        for t in &tables {
            let any: bool = tx
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {t})"), &[])
                .map_err(|e| db.error(&e, "checking that the tables are empty"))?
                .get(0);
            if any {
                bail!(
                    "database {}: table {t} already holds records; load into an empty catalog, or pass --replace to empty it first",
                    db.shown()
                );
            }
        }
    }
    // Emptied in this transaction (with --replace, or tables checked empty), the tables take
    // their rows frozen and marked visible (COPY … FREEZE), as a vacuumed catalog holds them:
    // otherwise the first statement to read each row after the load (a restore's) writes its
    // page again to record that the load committed.
    tx.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .map_err(|e| db.error(&e, "emptying the tables"))?;
    for (i, (mut file, rows)) in spools.into_iter().enumerate() {
        if rows == 0 {
            continue;
        }
        let (name, cols) = match TABLES.get(i) {
            Some(t) => (t.name, t.column_list()),
            None => (schema::OTHER, "kind, key, record".to_string()),
        };
        std::io::Seek::rewind(&mut file).context("reading a temporary file")?;
        db.copy_into(&mut tx, name, &cols, true, &mut file)?;
        bar.add(rows);
    }
    bar.message("analysing");
    tx.batch_execute(&format!("ANALYZE {}", tables.join(", ")))
        .map_err(|e| db.error(&e, "analysing"))?;
    tx.commit()
        .map_err(|e| db.error(&e, "committing the load"))?;
    bar.finish();
    Ok(loaded)
}

type Spools = Vec<(std::fs::File, u64)>;

/// Reads and checks the export, writing each table's COPY rows to its own temporary file. The
/// rules are every command's ([`crate::export`]); a duplicate key is found only once the whole
/// export is read, after its line was spooled, so when `--max-errors` skips one the export is
/// spooled again without it.
fn spool(input: &Input, opts: &Options) -> Result<(Spools, Loaded)> {
    let (mut spools, mut loaded, outcome) = spool_once(input, opts, &BTreeSet::new())?;
    if !outcome.duplicates.is_empty() {
        (spools, loaded, _) = spool_once(input, opts, &outcome.duplicates)?;
    }
    loaded.skipped_lines = outcome.skipped;
    Ok((spools, loaded))
}

fn spool_once(
    input: &Input,
    opts: &Options,
    leave_out: &BTreeSet<u64>,
) -> Result<(Spools, Loaded, crate::export::Outcome)> {
    let mut writers: Vec<(BufWriter<std::fs::File>, u64)> = (0..=TABLES.len())
        .map(|_| {
            Ok((
                BufWriter::with_capacity(
                    1 << 20,
                    tempfile::tempfile().context("creating a temporary file")?,
                ),
                0,
            ))
        })
        .collect::<Result<_>>()?;
    let mut loaded = Loaded::default();
    let bar = Progress::new(opts.progress, "reading", None);
    let rules = crate::export::BadLines {
        max_errors: opts.max_errors,
        hint: crate::export::SKIP_HINT,
    };
    let outcome = crate::export::read(
        input,
        rules,
        crate::input::batch_bytes(8 << 20),
        leave_out,
        encode,
        |_, (name, table, bytes)| {
            let (w, n) = &mut writers[table];
            w.write_all(&bytes)
                .context("writing a temporary file (is the disk full?)")?;
            *n += 1;
            loaded.records += 1;
            *loaded.by_kind.entry(name).or_default() += 1;
            bar.add(1);
            Ok(())
        },
    )?;
    bar.finish();
    let spools = writers
        .into_iter()
        .map(|(w, n)| {
            Ok((
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .context("writing a temporary file")?,
                n,
            ))
        })
        .collect::<Result<_>>()?;
    Ok((spools, loaded, outcome))
}

/// A line's kind name, table index and COPY row.
type Encoded = (String, usize, Vec<u8>);

/// One line → its kind and key (for the rules of [`crate::export`]), and its kind name, table
/// index and COPY row.
fn encode(bytes: &[u8]) -> Result<crate::export::Parsed<Encoded>, String> {
    let rec = parse_line(bytes)?;
    let key = rec.key();
    let name = rec.kind_name().to_string();
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let table = match schema::table_index(rec.kind) {
        Some(i) => {
            let row = to_row(&TABLES[i], &rec.obj).map_err(|e| e.to_string())?;
            copy_line(&mut out, &row.cells, Some(&row.extra));
            i
        }
        None => {
            let v = serde_json::Value::Object(rec.obj);
            schema::storable(&v).map_err(|e| e.to_string())?;
            let cells = [
                schema::Cell::Text(name.clone()),
                schema::Cell::Text(key.clone()),
                schema::Cell::Json(v),
            ];
            copy_line(&mut out, &cells, None);
            TABLES.len()
        }
    };
    Ok(crate::export::Parsed {
        kind: rec.kind,
        key_hash: Some(crate::export::key_hash(&name, &key)),
        value: (name, table, out),
    })
}

/// Encodes a record (for apply's inserts) as its table index and COPY row.
pub fn encode_record(
    kind: &str,
    key: &str,
    record: &serde_json::Value,
) -> Result<(usize, Vec<u8>)> {
    let Some(obj) = record.as_object() else {
        bail!("{kind} {key:?}: the bundle's record is not a JSON object");
    };
    let mut out = Vec::new();
    match schema::table_index(Kind::from_name(kind)) {
        Some(i) => {
            let row = to_row(&TABLES[i], obj).with_context(|| format!("{kind} {key:?}"))?;
            copy_line(&mut out, &row.cells, Some(&row.extra));
            Ok((i, out))
        }
        None => {
            schema::storable(record).with_context(|| format!("{kind} {key:?}"))?;
            let cells = [
                schema::Cell::Text(kind.to_string()),
                schema::Cell::Text(key.to_string()),
                schema::Cell::Json(record.clone()),
            ];
            copy_line(&mut out, &cells, None);
            Ok((TABLES.len(), out))
        }
    }
}
