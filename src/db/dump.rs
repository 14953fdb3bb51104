//! `dump`: write the catalog held in the database back out as an export (SPEC §1).
//!
//! One read-only, repeatable-read transaction, so the export is one consistent snapshot even
//! while the catalog changes. The header comes first, then every table in the order of
//! [`TABLES`](super::schema::TABLES), each by its primary key, then the records of other kinds
//! by (kind, key). Each record is rebuilt exactly as restore reads it ([`super::read_row`]).

use super::schema::{OTHER, TABLES};
use super::Database;
use crate::output::{AtomicFile, LineWriter, Target};
use crate::progress::Progress;
use anyhow::{Context, Result};
use postgres::fallible_iterator::FallibleIterator;

/// Options of `dump`.
#[derive(Debug, Clone)]
pub struct Options {
    /// zstd level when the output ends in `.zst`.
    pub level: i32,
    /// Show a progress bar.
    pub progress: bool,
}

/// Writes the export; returns the number of records.
pub fn dump(db: &Database, out: &Target, opts: &Options) -> Result<u64> {
    let mut client = db.connect()?;
    super::check_schema(db, &mut client)?;
    let file = AtomicFile::create(out)?;
    let compress = out.path.extension().is_some_and(|e| e == "zst");
    let mut w = LineWriter::new(file.file(), compress, opts.level, 0)?;
    let werr = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "{}: writing (is the disk full?)",
            out.path.display()
        ))
    };
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| db.error(&e, "starting a transaction"))?;
    let bar = Progress::new(opts.progress, "dumping", None);
    let mut n = 0u64;
    for t in TABLES {
        let order = if t.key.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", t.key.join(", "))
        };
        let sql = format!("SELECT {} FROM {}{order}", t.column_list(), t.name);
        let mut rows = tx
            .query_raw(&sql, std::iter::empty::<i32>())
            .map_err(|e| db.error(&e, &format!("reading {}", t.name)))?;
        while let Some(row) = rows
            .next()
            .map_err(|e| db.error(&e, &format!("reading {}", t.name)))?
        {
            let rec = super::read_row(t, &row)
                .with_context(|| format!("database {}: reading {}", db.shown(), t.name))?;
            w.line(&serde_json::to_vec(&rec)?).map_err(werr)?;
            n += 1;
            if n.is_multiple_of(4096) {
                bar.add(4096);
            }
        }
    }
    let sql = format!("SELECT record FROM {OTHER} ORDER BY kind, key");
    let mut rows = tx
        .query_raw(&sql, std::iter::empty::<i32>())
        .map_err(|e| db.error(&e, "reading other_record"))?;
    while let Some(row) = rows
        .next()
        .map_err(|e| db.error(&e, "reading other_record"))?
    {
        let rec: serde_json::Value = row.try_get(0)?;
        w.line(&serde_json::to_vec(&rec)?).map_err(werr)?;
        n += 1;
    }
    drop(rows);
    tx.commit()
        .map_err(|e| db.error(&e, "ending the transaction"))?;
    bar.finish();
    w.finish().map_err(werr)?;
    file.commit().context("finishing the dump")?;
    Ok(n)
}
