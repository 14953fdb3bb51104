//! `restore --database` and `rollback --database`: apply a bundle's change set to the catalog
//! held in the database, under the guards of SPEC §7 ([`crate::restore::step`]).
//!
//! Everything happens in one transaction:
//! 1. the change set is read a batch at a time (it is sorted by kind, so a batch is one table);
//!    every record it touches is read by its primary key with `SELECT … FOR UPDATE`, which locks
//!    the rows that exist, and is rebuilt as dump would write it;
//! 2. each change is judged by [`crate::restore::step`] against that record: applied when the row
//!    holds `prior`, skipped when it already holds `record` (so restoring twice changes nothing),
//!    a conflict otherwise — an edit made in the catalog since the export is never overwritten;
//! 3. the rows the applied changes replace or remove are deleted right away (inside the
//!    transaction), and their new records are spooled to temporary files;
//! 4. any conflict rolls the transaction back (exit 3), unless `--force`; otherwise, once every
//!    delete of every table is done, the new records are copied in (`COPY … FROM STDIN`).
//!    An update is so a delete and an insert of the row
//!    in the same transaction; because every delete comes before every insert, a re-keyed
//!    survivor never collides on `UNIQUE (server_id, external_id)` with a version the same
//!    change set retires, whatever the order of the changes;
//! 5. commit. A failure, or a kill at any point before the commit, leaves the database as it
//!    was: PostgreSQL rolls back a transaction whose connection is gone.
//!
//! A record that does not exist cannot be locked: if another session creates it while the
//! restore runs, the insert fails on the primary key and the whole restore is rolled back.

use super::load::encode_record;
use super::schema::{self, Cell, Table, Ty, OTHER, TABLES};
use super::{Bar, Database};
use crate::bundle::Change;
use crate::record::Kind;
use crate::restore::{step, Conflict, Conflicts, Direction, Step, Summary};
use anyhow::{bail, Context, Result};
use postgres::types::ToSql;
use postgres::Transaction;
use serde_json::Value;
use std::collections::HashMap;

/// How many keys one SELECT or DELETE names.
const BATCH: usize = 5000;

/// Options of a restore or rollback onto a database.
#[derive(Debug, Clone)]
pub struct Options {
    pub direction: Direction,
    pub force: bool,
    pub progress: bool,
}

/// The key of a record in its table: the key columns' values.
type KeyCells = Vec<Cell>;

/// Reads the change set of a bundle one change at a time (the bundle was checked by
/// [`crate::bundle::open`]); with the number of changes its manifest lists.
pub fn changes_of(
    b: &crate::bundle::Bundle,
) -> Result<(u64, impl Iterator<Item = Result<Change>>)> {
    let path = b.dir.join(crate::bundle::CHANGES);
    let total = b
        .manifest
        .files
        .iter()
        .find(|f| f.name == crate::bundle::CHANGES)
        .map_or(0, |f| f.records);
    let input = crate::input::Input::new(&path.to_string_lossy())?;
    let mut lines = input.lines()?;
    let iter = std::iter::from_fn(move || match lines.next_line() {
        Ok(None) => None,
        Ok(Some(l)) => Some(
            serde_json::from_slice::<Change>(&l.bytes)
                .with_context(|| format!("{}:{}: not a valid change", path.display(), l.no)),
        ),
        Err(e) => Some(Err(e)),
    });
    Ok((total, iter))
}

/// Applies `changes` (as the bundle holds them, `total` of them) to the database, in one
/// transaction. Memory stays bounded: changes are read, locked and judged a batch at a time,
/// the rows they replace are deleted at once (inside the transaction, so nobody sees it before
/// the commit, and a conflict found later rolls it back), and the new rows wait in temporary
/// files until every delete is done.
pub fn apply(
    db: &Database,
    changes: impl Iterator<Item = Result<Change>>,
    total: u64,
    opts: &Options,
) -> Result<Summary> {
    let mut client = db.connect()?;
    super::check_schema(db, &mut client)?;
    let mut tx = client
        .transaction()
        .map_err(|e| db.error(&e, "starting a transaction"))?;
    let bar = Bar::new(opts.progress, "checking and deleting", Some(total));
    let mut run = Run {
        db,
        opts,
        summary: Summary::default(),
        spools: (0..=TABLES.len()).map(|_| None).collect(),
        counts: vec![0; TABLES.len() + 1],
    };
    let mut chunk: Vec<(Change, KeyCells)> = Vec::with_capacity(BATCH);
    let mut chunk_table = usize::MAX;
    for c in changes {
        let c = c?;
        let c = if opts.direction == Direction::Rollback {
            c.inverse()
        } else {
            c
        };
        let (t, key) = key_cells(&c)?;
        if t != chunk_table || chunk.len() >= BATCH {
            let n = chunk.len() as u64;
            run.chunk(&mut tx, chunk_table, &mut chunk)?;
            bar.add(n);
            chunk_table = t;
        }
        chunk.push((c, key));
    }
    run.chunk(&mut tx, chunk_table, &mut chunk)?;
    if run.summary.conflict_count > 0 && !opts.force {
        bar.finish();
        drop(tx); // rolls back the deletes, releases the locks
        return Err(Conflicts(run.summary).into());
    }
    bar.message("inserting");
    for (t, spool) in run.spools.into_iter().enumerate() {
        let Some(spool) = spool else { continue };
        let mut file = spool
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing a temporary file")?;
        let cols = TABLES
            .get(t)
            .map_or("kind, key, record".to_string(), Table::column_list);
        db.copy_into(&mut tx, table_name(t), &cols, &mut file)?;
        run.summary.lines_written += run.counts[t];
    }
    bar.message("committing");
    tx.commit().map_err(|e| db.error(&e, "committing"))?;
    bar.finish();
    Ok(run.summary)
}

/// The state of one apply.
struct Run<'a> {
    db: &'a Database,
    opts: &'a Options,
    summary: Summary,
    /// The new rows of each table, in COPY text format.
    spools: Vec<Option<std::io::BufWriter<std::fs::File>>>,
    counts: Vec<u64>,
}

impl Run<'_> {
    /// Locks, reads and judges one batch of changes of table `t`, and deletes the rows the
    /// applied ones replace; empties `chunk`.
    fn chunk(
        &mut self,
        tx: &mut Transaction,
        t: usize,
        chunk: &mut Vec<(Change, KeyCells)>,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let db = self.db;
        let keys: Vec<&KeyCells> = chunk.iter().map(|(_, k)| k).collect();
        let current = select_for_update(db, tx, t, &keys)?;
        let mut deletes: Vec<&KeyCells> = Vec::new();
        for (change, key) in chunk.iter() {
            self.summary.changes += 1;
            let found = current.get(&(change.kind.clone(), change.key.clone()));
            let write = match step(change, found) {
                Step::Apply => {
                    self.summary.applied += 1;
                    true
                }
                Step::Already => {
                    self.summary.already_applied += 1;
                    false
                }
                Step::Conflict => {
                    self.summary.conflict(Conflict {
                        kind: change.kind.clone(),
                        key: change.key.clone(),
                        line: None,
                        expected: change.prior.clone(),
                        found: found.cloned(),
                    });
                    if self.opts.force {
                        self.summary.forced += 1;
                    }
                    self.opts.force
                }
            };
            if !write {
                continue;
            }
            if found.is_some() {
                deletes.push(key);
            }
            if let Some(rec) = &change.record {
                let (rt, bytes) = encode_record(&change.kind, &change.key, rec)?;
                let spool = match &mut self.spools[rt] {
                    Some(s) => s,
                    slot => slot.insert(std::io::BufWriter::with_capacity(
                        1 << 20,
                        tempfile::tempfile().context("creating a temporary file")?,
                    )),
                };
                std::io::Write::write_all(spool, &bytes)
                    .context("writing a temporary file (is the disk full?)")?;
                self.counts[rt] += 1;
            }
        }
        if !deletes.is_empty() {
            let (sql, params) = keyed(t, "DELETE FROM", "", &deletes);
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&sql, &p)
                .map_err(|e| db.error(&e, &format!("deleting from {}", table_name(t))))?;
        }
        chunk.clear();
        Ok(())
    }
}

fn table_name(t: usize) -> &'static str {
    TABLES.get(t).map_or(OTHER, |t| t.name)
}

/// The table of a change and its key columns' values (taken from its prior or its record).
fn key_cells(c: &Change) -> Result<(usize, KeyCells)> {
    let Some(rec) = c.record.as_ref().or(c.prior.as_ref()) else {
        bail!(
            "{} {:?}: a change with neither prior nor record; the bundle is damaged",
            c.kind,
            c.key
        );
    };
    match schema::table_index(Kind::from_name(&c.kind)) {
        None => Ok((
            TABLES.len(),
            vec![Cell::Text(c.kind.clone()), Cell::Text(c.key.clone())],
        )),
        Some(t) => {
            let obj = rec
                .as_object()
                .with_context(|| format!("{} {:?}: not a JSON object", c.kind, c.key))?;
            let row = schema::to_row(&TABLES[t], obj)
                .with_context(|| format!("{} {:?}", c.kind, c.key))?;
            Ok((
                t,
                TABLES[t]
                    .key_positions()
                    .into_iter()
                    .map(|p| row.cells[p].clone())
                    .collect(),
            ))
        }
    }
}

type Params = Vec<Box<dyn ToSql + Sync>>;

/// `<verb> <table> WHERE <key in the given keys><tail>` and its array parameters.
fn keyed(t: usize, verb: &str, tail: &str, keys: &[&KeyCells]) -> (String, Params) {
    let (name, key_cols, types): (&str, Vec<String>, Vec<Ty>) = match TABLES.get(t) {
        Some(table) => {
            let types = table.column_types();
            (
                table.name,
                table.key.iter().map(|k| schema::quote(k)).collect(),
                table.key_positions().iter().map(|&p| types[p]).collect(),
            )
        }
        None => (
            OTHER,
            vec!["kind".into(), "key".into()],
            vec![Ty::Text, Ty::Text],
        ),
    };
    if key_cols.is_empty() {
        return (format!("{verb} {name}{tail}"), Vec::new());
    }
    let mut params: Params = Vec::new();
    let mut casts = Vec::new();
    for (j, ty) in types.iter().enumerate() {
        match ty {
            Ty::Int => {
                let v: Vec<i64> = keys
                    .iter()
                    .map(|k| if let Cell::Int(i) = k[j] { i } else { 0 })
                    .collect();
                params.push(Box::new(v));
                casts.push(format!("${}::bigint[]", j + 1));
            }
            _ => {
                let v: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        if let Cell::Text(s) = &k[j] {
                            s.clone()
                        } else {
                            String::new()
                        }
                    })
                    .collect();
                params.push(Box::new(v));
                casts.push(format!("${}::text[]", j + 1));
            }
        }
    }
    let sql = if key_cols.len() == 1 {
        format!(
            "{verb} {name} WHERE {} = ANY({}){tail}",
            key_cols[0], casts[0]
        )
    } else {
        format!(
            "{verb} {name} WHERE ({}) IN (SELECT * FROM unnest({})){tail}",
            key_cols.join(", "),
            casts.join(", ")
        )
    };
    (sql, params)
}

/// Locks and reads the rows with these keys, as records by (kind, key).
fn select_for_update(
    db: &Database,
    tx: &mut Transaction,
    t: usize,
    keys: &[&KeyCells],
) -> Result<HashMap<(String, String), Value>> {
    let cols = TABLES
        .get(t)
        .map_or("kind, key, record".to_string(), Table::column_list);
    let (sql, params) = keyed(t, &format!("SELECT {cols} FROM"), " FOR UPDATE", keys);
    let p: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = tx
        .query(&sql, &p)
        .map_err(|e| db.error(&e, &format!("reading {}", table_name(t))))?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        match TABLES.get(t) {
            Some(table) => {
                let rec = super::read_row(table, &row)?;
                let Value::Object(obj) = rec else {
                    unreachable!("read_row builds objects")
                };
                let key = schema::key_of(Kind::from_name(table.kind), obj.clone());
                out.insert((table.kind.to_string(), key), Value::Object(obj));
            }
            None => {
                out.insert(
                    (row.try_get(0)?, row.try_get(1)?),
                    row.try_get::<_, Value>(2)?,
                );
            }
        }
    }
    Ok(out)
}
