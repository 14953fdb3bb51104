//! `restore --database` and `rollback --database`: apply a bundle's change set to the catalog
//! held in the database, under the guards of SPEC §7 ([`crate::restore::step`]).
//!
//! Everything happens in one transaction:
//! 1. every record the change set touches is read by its primary key with `SELECT … FOR UPDATE`
//!    (in batches), which locks the rows that exist, and is rebuilt as dump would write it;
//! 2. each change is judged by [`crate::restore::step`] against that record: applied when the row
//!    holds `prior`, skipped when it already holds `record` (so restoring twice changes nothing),
//!    a conflict otherwise — an edit made in the catalog since the export is never overwritten;
//! 3. any conflict rolls the transaction back (exit 3), unless `--force`;
//! 4. the rows of every applied change are deleted, for every table, and only then are the new
//!    records copied in (`COPY … FROM STDIN`). An update is so a delete and an insert of the row
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

/// Applies `changes` (as the bundle holds them) to the database, in one transaction.
pub fn apply(db: &Database, changes: Vec<Change>, opts: &Options) -> Result<Summary> {
    let changes: Vec<Change> = match opts.direction {
        Direction::Restore => changes,
        Direction::Rollback => changes.iter().map(Change::inverse).collect(),
    };
    let mut summary = Summary {
        changes: changes.len() as u64,
        ..Summary::default()
    };
    // Changes by table (index TABLES.len() = other_record), with their keys.
    let mut by_table: Vec<Vec<(usize, KeyCells)>> = vec![Vec::new(); TABLES.len() + 1];
    for (i, c) in changes.iter().enumerate() {
        let (t, key) = key_cells(c)?;
        by_table[t].push((i, key));
    }
    let mut client = db.connect()?;
    super::check_schema(db, &mut client)?;
    let mut tx = client
        .transaction()
        .map_err(|e| db.error(&e, "starting a transaction"))?;
    let bar = Bar::new(opts.progress, "checking", Some(2 * changes.len() as u64));

    // 1–2: lock, read and judge.
    let mut deletes: Vec<Vec<KeyCells>> = vec![Vec::new(); TABLES.len() + 1];
    let mut inserts: Vec<Vec<u8>> = vec![Vec::new(); TABLES.len() + 1];
    let mut insert_counts = vec![0u64; TABLES.len() + 1];
    for (t, items) in by_table.iter().enumerate() {
        for chunk in items.chunks(BATCH) {
            let keys: Vec<&KeyCells> = chunk.iter().map(|(_, k)| k).collect();
            let current = select_for_update(db, &mut tx, t, &keys)?;
            for (i, key) in chunk {
                let change = &changes[*i];
                let found = current.get(&(change.kind.clone(), change.key.clone()));
                let write = match step(change, found) {
                    Step::Apply => {
                        summary.applied += 1;
                        true
                    }
                    Step::Already => {
                        summary.already_applied += 1;
                        false
                    }
                    Step::Conflict => {
                        summary.conflicts.push(Conflict {
                            kind: change.kind.clone(),
                            key: change.key.clone(),
                            line: None,
                            expected: change.prior.clone(),
                            found: found.cloned(),
                        });
                        if opts.force {
                            summary.forced += 1;
                        }
                        opts.force
                    }
                };
                if write {
                    if found.is_some() {
                        deletes[t].push(key.clone());
                    }
                    if let Some(rec) = &change.record {
                        let (rt, bytes) = encode_record(&change.kind, &change.key, rec)?;
                        debug_assert_eq!(rt, t);
                        inserts[rt].extend_from_slice(&bytes);
                        insert_counts[rt] += 1;
                    }
                }
            }
            bar.add(chunk.len() as u64);
        }
    }
    if !summary.conflicts.is_empty() && !opts.force {
        bar.finish();
        drop(tx); // rolls back, releasing the locks
        return Err(Conflicts(summary).into());
    }

    // 4: every delete, then every insert.
    bar.message("writing");
    for (t, keys) in deletes.iter().enumerate() {
        for chunk in keys.chunks(BATCH) {
            let refs: Vec<&KeyCells> = chunk.iter().collect();
            let (sql, params) = keyed(t, "DELETE FROM", "", &refs);
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&sql, &p)
                .map_err(|e| db.error(&e, &format!("deleting from {}", table_name(t))))?;
            bar.add(chunk.len() as u64);
        }
    }
    for (t, rows) in inserts.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let cols = TABLES
            .get(t)
            .map_or("kind, key, record".to_string(), Table::column_list);
        let name = table_name(t);
        let mut w = tx
            .copy_in(&format!("COPY {name} ({cols}) FROM STDIN"))
            .map_err(|e| db.error(&e, &format!("starting COPY into {name}")))?;
        std::io::Write::write_all(&mut w, rows)
            .with_context(|| format!("database {}: copying into {name}", db.shown()))?;
        w.finish()
            .map_err(|e| db.error(&e, &format!("inserting into {name}")))?;
        summary.lines_written += insert_counts[t];
    }
    bar.add(2 * changes.len() as u64);
    tx.commit().map_err(|e| db.error(&e, "committing"))?;
    bar.finish();
    Ok(summary)
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
