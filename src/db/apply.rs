//! `restore --database` and `rollback --database`: a bundle's change set applied to the catalog
//! held in the database, each change judged by the one engine of [`crate::changeset`] against
//! the row as it is now, with the row locked.
//!
//! **Order and transactions.** Changes are applied in the change file's order (its phases keep
//! every state between two of them consistent: curation arrives on the survivor before it leaves
//! the retired versions, and the retired versions leave before the survivors take their stable
//! ids); a rollback goes backwards. Without `--batch-size` everything is one transaction. With
//! `--batch-size N` every N changes are committed, and a table `lookmig_restore` records how far
//! the restore got in the same transaction: a kill or a lost connection between two batches
//! leaves a consistent catalog, and running the same command again resumes there. A restore in
//! batches first judges every change without locking (nothing written), so that a conflict known
//! at the start stops it before the first commit.
//!
//! **Locks.** A batch goes through its changes a chunk at a time (one table, at most [`CHUNK`]
//! changes). Most are judged and written by the server itself, in statements whose `WHERE`
//! holds the guard ([`super::guarded`]); the rest — already applied, conflicts, values the
//! columns do not hold exactly — are read with `SELECT … FOR UPDATE`, judged here and written at
//! once: `DELETE`, `COPY` for creates, and an `UPDATE` of only the columns that change (one
//! statement per chunk and set of columns), so a curator's `UPDATE` of such a row waits for the
//! commit and then lands on the restored row. Every row lock is held until its batch commits.
//! `lock_timeout` bounds the wait for a row a curator's open transaction holds: the restore
//! stops with the row named.
//!
//! A chunk of deletes the guarded statement left is one `DELETE … RETURNING`, judged on the rows
//! it returns (a conflict rolls the batch back, so this equals lock, judge, delete).
//!
//! The client's share — reading change lines, building the guarded statements and encoding
//! their parameters — runs on every core (rayon) in a thread of its own, a chunk ahead of the
//! connection, so that it overlaps the server's; judging the rows read back runs on every core
//! between two statements. The change set is copied out of the bundle ([`Changes`]) and the id
//! map read on threads of their own while the first chunks are written: the server does not
//! wait for lookmig to set up, nor between two statements.
//!
//! **Newer records.** A batch that deletes report or column versions (and the last batch), once
//! its rows are written, locks the curation tables `IN SHARE ROW EXCLUSIVE MODE` (reads go on;
//! other writers wait until the commit) — after its row locks, not before: a curator holding a
//! report's `FOR KEY SHARE` lock and then adding curation would otherwise deadlock with the
//! batch, which waited first and always lost. Before it commits, every row that refers to a
//! retired version — by its subject, an OBJECT_SET member or a
//! mention — is looked for ([`crate::carry`]): such a row was made after the export. It is a
//! conflict, or with `--carry-new` it is carried onto the survivor under SPEC §4–§5 in the same
//! transaction, and the changes that carried it are recorded in `lookmig_carried` for a rollback.

use super::guarded;
use super::schema::{self, Cell, Table, Ty, OTHER, TABLES};
use super::Database;
use crate::bundle::Bundle;
use crate::carry::{self, Newer, Retired};
use crate::changeset::{Change, Op, RawRecord, Step};
use crate::error::Failure;
use crate::groups::{COLUMN, REPORT};
use crate::progress::Progress;
use crate::record::{Kind, Record, Subject};
use crate::restore::{Conflict, Direction, Summary};
use anyhow::{bail, Context, Result};
use postgres::types::ToSql;
use postgres::Transaction;
use rayon::prelude::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt;

/// How many keys one statement names.
pub const CHUNK: usize = 20000;

/// Options of a restore or rollback onto a database.
#[derive(Debug, Clone)]
pub struct Options {
    pub direction: Direction,
    pub force: bool,
    pub progress: bool,
    /// Carry curation made after the export onto the survivors instead of refusing it.
    pub carry_new: bool,
    /// Commit every N changes (None: one transaction).
    pub batch_size: Option<u64>,
    /// How long to wait for a row another session holds before stopping.
    pub lock_timeout: std::time::Duration,
}

/// lookmig's own bookkeeping tables, made when first needed.
pub const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS lookmig_restore (
  bundle_id text NOT NULL,
  direction text NOT NULL CHECK (direction IN ('restore', 'rollback')),
  next_change bigint NOT NULL,
  total bigint NOT NULL,
  state text NOT NULL CHECK (state IN ('running', 'done')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (bundle_id, direction)
);
COMMENT ON TABLE lookmig_restore IS 'lookmig: how far a restore or rollback of a bundle got (one row per bundle and direction); next_change is the number of changes committed';
CREATE TABLE IF NOT EXISTS lookmig_carried (
  bundle_id text NOT NULL,
  seq integer NOT NULL,
  change jsonb NOT NULL,
  line text NOT NULL,
  carried_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (bundle_id, seq)
);
COMMENT ON TABLE lookmig_carried IS 'lookmig: the changes restore --carry-new made to carry curation made after the export onto survivors; rollback undoes them first and deletes them';
";

/// The key of a record in its table: the key columns' values.
type KeyCells = Vec<Cell>;

/// The bundle's change lines in the order they are applied, on disk (16 bytes of memory each).
/// Filled by [`Changes::fill`] on a thread of its own while the first changes are already being
/// applied: [`Changes::get`] waits for a line not yet copied.
struct Changes {
    file: std::fs::File,
    /// The number of change lines: the manifest's, which [`Changes::complete`] checks.
    total: u64,
    invert: bool,
    loaded: std::sync::Mutex<Loaded>,
    more: std::sync::Condvar,
    /// Set when the apply is over: the filling stops.
    stop: std::sync::atomic::AtomicBool,
}

/// What [`Changes::fill`] has copied so far.
#[derive(Default)]
struct Loaded {
    /// (offset, length) of each line, in the change file's order.
    at: Vec<(u64, u32)>,
    /// Set when the filling ends: `Err` with what went wrong.
    done: Option<std::result::Result<(), String>>,
}

impl Changes {
    fn new(b: &Bundle, invert: bool) -> Result<Changes> {
        let file = tempfile::tempfile()
            .context("creating a temporary file for the change set (is TMPDIR full?)")?;
        let total = b.change_count();
        Ok(Changes {
            file,
            total,
            invert,
            loaded: Default::default(),
            more: Default::default(),
            stop: Default::default(),
        })
    }

    /// Copies the change set out of the bundle, publishing the lines a block at a time.
    fn fill(&self, b: &Bundle) {
        let done = self.fill_inner(b).map_err(|e| format!("{e:#}"));
        let mut loaded = self
            .loaded
            .lock()
            .expect("the change set's lock is not poisoned");
        if done.is_ok() && loaded.at.len() as u64 != self.total {
            loaded.done = Some(Err(format!(
                "{}: holds {} change lines, the manifest says {}",
                crate::bundle::CHANGES,
                loaded.at.len(),
                self.total
            )));
        } else {
            loaded.done = Some(done);
        }
        self.more.notify_all();
    }

    fn fill_inner(&self, b: &Bundle) -> Result<()> {
        use std::sync::atomic::Ordering;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &self.file);
        let mut pending = Vec::new();
        let mut offset = 0u64;
        let publish = |w: &mut std::io::BufWriter<&std::fs::File>,
                       pending: &mut Vec<(u64, u32)>|
         -> Result<()> {
            w.flush()
                .context("writing a temporary file (is TMPDIR full?)")?;
            let mut loaded = self
                .loaded
                .lock()
                .expect("the change set's lock is not poisoned");
            loaded.at.append(pending);
            self.more.notify_all();
            Ok(())
        };
        crate::changeset::for_each(b, |_, line| {
            if self.stop.load(Ordering::Relaxed) {
                bail!("stopped");
            }
            w.write_all(line)
                .context("writing a temporary file (is TMPDIR full?)")?;
            pending.push((offset, line.len() as u32));
            offset += line.len() as u64;
            if pending.len() >= 4096 {
                publish(&mut w, &mut pending)?;
            }
            Ok(())
        })?;
        publish(&mut w, &mut pending)
    }

    /// The lines copied so far, once `ready` holds of them or the filling has ended.
    fn wait_until(&self, ready: impl Fn(&Loaded) -> bool) -> std::sync::MutexGuard<'_, Loaded> {
        let poisoned = "the change set's lock is not poisoned";
        let mut loaded = self.loaded.lock().expect(poisoned);
        while loaded.done.is_none() && !ready(&loaded) {
            loaded = self.more.wait(loaded).expect(poisoned);
        }
        loaded
    }

    /// Waits until the change set is copied whole, and fails if it could not be or if its
    /// lines are not the manifest's count: called before every commit.
    fn complete(&self) -> Result<()> {
        match &self.wait_until(|_| false).done {
            Some(Err(e)) => bail!(Failure::Damaged(format!("{e}; nothing was committed"))),
            _ => Ok(()),
        }
    }

    /// Change `i` in the order of application (a rollback's: the change file's, backwards).
    fn get(&self, i: usize) -> Result<Change> {
        let j = if self.invert {
            (self.total as usize)
                .checked_sub(i + 1)
                .context("past the end of the change set")?
        } else {
            i
        };
        let (offset, len) = {
            let loaded = self.wait_until(|l| l.at.len() > j);
            match (loaded.at.get(j), &loaded.done) {
                (Some(&at), _) => at,
                (None, Some(Err(e))) => bail!("reading the change set: {e}"),
                (None, _) => bail!("change {j} is past the end of the change set"),
            }
        };
        let mut line = vec![0u8; len as usize];
        self.file.read_exact_at(&mut line, offset)?;
        let c = Change::parse(&line).context("reading the change set")?;
        Ok(if self.invert { c.inverse() } else { c })
    }
}

/// The retired versions of the bundle, read on a thread of their own while the writes begin:
/// only the newer-record look at the end needs them.
type LaterRetired = std::sync::OnceLock<Result<Retired>>;

/// The retired versions once they are read.
fn retired_of(later: &LaterRetired) -> Result<&Retired> {
    match later.wait() {
        Ok(r) => Ok(r),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    }
}

/// A connection with the schema checked, the bookkeeping tables made and `lock_timeout` set.
fn connect_ready(db: &Database, opts: &Options) -> Result<postgres::Client> {
    let mut client = db.connect()?;
    super::check_schema(db, &mut client)?;
    client
        .batch_execute(BOOKKEEPING)
        .map_err(|e| db.error(&e, "creating lookmig's bookkeeping tables"))?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            opts.lock_timeout.as_millis().max(1)
        ))
        .map_err(|e| db.error(&e, "setting lock_timeout"))?;
    Ok(client)
}

/// Applies (or undoes) `bundle` on the database.
pub fn apply(db: &Database, bundle: &Bundle, opts: &Options) -> Result<Summary> {
    let clock = std::time::Instant::now();
    let id = bundle.id()?;
    let restore = opts.direction == Direction::Restore;
    let changes = Changes::new(bundle, !restore)?;
    // The retired versions are read on a thread not waited for: an early error (a refused
    // connection) is reported at once.
    let retired = std::sync::Arc::new(LaterRetired::new());
    {
        let (retired, bundle) = (retired.clone(), bundle.clone());
        let carry_new = opts.carry_new;
        std::thread::spawn(move || {
            let r = if restore {
                Retired::load(&bundle, carry_new)
            } else {
                Ok(Retired::default())
            };
            timing(format_args!(
                "prepare  retired versions {:.3} s",
                clock.elapsed().as_secs_f64()
            ));
            let _ = retired.set(r);
        });
    }
    // The change set is copied out of the bundle (the retired versions are read above) while the
    // connection is made and the first changes are applied.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            changes.fill(bundle);
            timing(format_args!(
                "prepare  change set {:.3} s",
                clock.elapsed().as_secs_f64()
            ));
        });
        let result = apply_with(db, opts, &id, &changes, &retired, clock);
        changes
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// [`apply`] once the change set and the retired versions are on their way.
fn apply_with(
    db: &Database,
    opts: &Options,
    id: &str,
    changes: &Changes,
    retired: &LaterRetired,
    clock: std::time::Instant,
) -> Result<Summary> {
    let restore = opts.direction == Direction::Restore;
    let mut client = connect_ready(db, opts)?;
    timing(format_args!(
        "prepare  connection {:.3} s",
        clock.elapsed().as_secs_f64()
    ));
    let direction = if restore { "restore" } else { "rollback" };
    let total = changes.total;
    // Where an earlier run of the same command stopped.
    let row = client
        .query_opt(
            "SELECT next_change, state FROM lookmig_restore WHERE bundle_id = $1 AND direction = $2",
            &[&id, &direction],
        )
        .map_err(|e| db.error(&e, "reading lookmig_restore"))?;
    let mut start = match row {
        Some(r) if r.get::<_, String>(1) == "running" => r.get::<_, i64>(0) as u64,
        _ => 0,
    };
    if start > total {
        start = 0;
    }
    let mut run = Run::new(db, opts, retired, id);
    let bar = Progress::new(opts.progress, direction, Some(total));
    if opts.batch_size.is_some() && start == 0 {
        // Judge everything first, without locks and without writing: a conflict known now stops
        // the restore before its first commit.
        bar.message("checking");
        let started = std::time::Instant::now();
        let mut check = Run::new(db, opts, retired, id);
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| db.error(&e, "starting a transaction"))?;
        check.range(&mut tx, changes, 0, total, true, &bar)?;
        if restore {
            check.newer(&mut tx, true, true)?;
        }
        drop(tx);
        timing(format_args!(
            "check    {:8.3} s (every change judged, nothing locked)",
            started.elapsed().as_secs_f64()
        ));
        check.spent.show("check   ");
        if check.summary.conflict_count > 0 && !opts.force {
            bar.finish();
            return Err(Failure::conflicts(check.summary));
        }
        bar.message(direction);
    }
    let batch = opts.batch_size.unwrap_or(u64::MAX).max(1);
    run.summary.changes = start; // changes committed by an earlier run
    run.summary.already_applied = start;
    let mut from = start;
    let mut first = true;
    let mut number = from / batch;
    // A batch the server aborts to break a deadlock with a curator's transaction (the
    // curator waits for a row this batch holds while holding a table lock it needs) is run
    // again from its start: nothing of it was committed.
    let mut retries = 0;
    loop {
        let started = std::time::Instant::now();
        let to = from.saturating_add(batch).min(total);
        let last = to == total;
        let saved = (run.summary.clone(), run.gone.len(), run.covered.len());
        match run.batch(&mut client, changes, (from, to), first, &bar) {
            Ok(()) => retries = 0,
            Err(e) if super::is_retryable(&e) && retries < 5 => {
                retries += 1;
                run.summary = saved.0;
                run.gone.truncate(saved.1);
                run.covered.truncate(saved.2);
                timing(format_args!("batch changes {from}..{to}: retried ({e:#})"));
                std::thread::sleep(std::time::Duration::from_millis(50 * retries));
                continue;
            }
            Err(e) => {
                bar.finish();
                return Err(e);
            }
        }
        first = false;
        // How long this batch held its row locks (all of them until the commit), and how long
        // the curation tables were locked against writers.
        number += 1;
        timing(format_args!(
            "batch {number} changes {from}..{to}: {:.3} s locked; curation tables locked {:.3} s",
            started.elapsed().as_secs_f64(),
            run.tables_locked.map_or(0.0, |t| t.elapsed().as_secs_f64())
        ));
        if let Ok(ms) = std::env::var("LOOKMIG_TEST_PAUSE_AFTER_BATCH_MS") {
            // Tests: a window between two commits to kill the process in.
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        if last {
            break;
        }
        from = to;
    }
    bar.finish();
    run.spent.show("spent   ");
    Ok(run.summary)
}

/// The state of one apply.
struct Run<'a> {
    db: &'a Database,
    opts: &'a Options,
    retired: &'a LaterRetired,
    summary: Summary,
    bundle_id: &'a str,
    /// When this batch locked the curation tables (for `LOOKMIG_TIMING`).
    tables_locked: Option<std::time::Instant>,
    /// Time spent in each step (for `LOOKMIG_TIMING`).
    spent: Spent,
    /// The report and column versions this batch deletes (for the newer-record look, which
    /// keeps the retired ones).
    gone: Vec<Subject>,
    /// Where [`Run::range`] frees what a chunk is done with (`None`: freed in place).
    bin: Option<std::sync::mpsc::Sender<Box<dyn Send>>>,
    /// The pre-check: hashes of the (kind, key) of every change judged, sorted before the
    /// newer-record look. Nothing is written then, so the rows the bundle deletes or moves
    /// are still there: they are the bundle's, not newer.
    covered: Vec<u64>,
}

/// Time spent in each step of an apply (reading and locking rows, judging them, writing).
#[derive(Default)]
struct Spent {
    /// The guarded statements ([`guarded`]).
    guarded: std::time::Duration,
    select: std::time::Duration,
    judge: std::time::Duration,
    delete: std::time::Duration,
    update: std::time::Duration,
    copy: std::time::Duration,
    newer: std::time::Duration,
    /// Waiting for the next chunk's statements (the connection idle).
    wait: std::time::Duration,
}

impl Spent {
    /// The `LOOKMIG_TIMING` line of where the time went.
    fn show(&self, what: &str) {
        timing(format_args!(
            "{what} guarded {:.1} s, select {:.1} s, judge {:.1} s, delete {:.1} s, update {:.1} s, copy {:.1} s, newer-record look {:.1} s, waiting for the next chunk {:.1} s",
            self.guarded.as_secs_f64(),
            self.select.as_secs_f64(),
            self.judge.as_secs_f64(),
            self.delete.as_secs_f64(),
            self.update.as_secs_f64(),
            self.copy.as_secs_f64(),
            self.newer.as_secs_f64(),
            self.wait.as_secs_f64()
        ));
    }
}

/// What one chunk writes.
#[derive(Default)]
struct Writes {
    deletes: Vec<KeyCells>,
    creates: Vec<u8>,
    /// Updates by the set of columns they change: (keys, new rows).
    updates: BTreeMap<Vec<usize>, Vec<(KeyCells, schema::Row)>>,
    /// Updates of unknown kinds: (kind, key, record).
    other_updates: Vec<(String, String, Value)>,
}

impl<'a> Run<'a> {
    /// A run that has judged nothing yet.
    fn new(
        db: &'a Database,
        opts: &'a Options,
        retired: &'a LaterRetired,
        bundle_id: &'a str,
    ) -> Self {
        Run {
            db,
            opts,
            retired,
            summary: Summary::default(),
            bundle_id,
            tables_locked: None,
            spent: Spent::default(),
            gone: Vec::new(),
            bin: None,
            covered: Vec::new(),
        }
    }

    /// One batch, changes `from..to`, in a transaction of its own: judged, written, newer
    /// records looked for, progress recorded, committed — or, on a conflict, rolled back.
    fn batch(
        &mut self,
        client: &mut postgres::Client,
        changes: &Changes,
        (from, to): (u64, u64),
        first: bool,
        bar: &Progress,
    ) -> Result<()> {
        let db = self.db;
        let opts = self.opts;
        let id = self.bundle_id;
        let restore = opts.direction == Direction::Restore;
        let (direction, other) = if restore {
            ("restore", "rollback")
        } else {
            ("rollback", "restore")
        };
        let total = changes.total;
        let last = to == total;
        self.tables_locked = None;
        let mut tx = client
            .transaction()
            .map_err(|e| db.error(&e, "starting a transaction"))?;
        if first {
            tx.execute(
                "DELETE FROM lookmig_restore WHERE bundle_id = $1 AND direction = $2",
                &[&id, &other],
            )
            .map_err(|e| db.error(&e, "writing lookmig_restore"))?;
            if !restore {
                self.uncarry(&mut tx)?;
            }
        }
        // The curation tables are locked after the rows (in `newer`), not before: a curator
        // holding a report's FOR KEY SHARE lock and then inserting curation would otherwise meet
        // this batch in a deadlock the batch always loses (it waits first). In the other order a
        // curator waiting for a row this batch holds is the one the server aborts, and a batch
        // aborted all the same is run again.
        self.range(&mut tx, changes, from, to, false, bar)?;
        if restore {
            self.newer(&mut tx, last, false)?;
        }
        if self.summary.conflict_count > 0 && !opts.force {
            bar.finish();
            drop(tx); // rolls the batch back, releases its locks
            return Err(Failure::conflicts(self.summary.clone()));
        }
        let state = if last { "done" } else { "running" };
        tx.execute(
            "INSERT INTO lookmig_restore (bundle_id, direction, next_change, total, state) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (bundle_id, direction) DO UPDATE SET \
             next_change = EXCLUDED.next_change, total = EXCLUDED.total, state = EXCLUDED.state, \
             updated_at = now()",
            &[&id, &direction, &(to as i64), &(total as i64), &state],
        )
        .map_err(|e| db.error(&e, "writing lookmig_restore"))?;
        if let Ok(ms) = std::env::var("LOOKMIG_TEST_PAUSE_BEFORE_COMMIT_MS") {
            // Tests: a window in which the batch holds every lock it takes, written and not yet
            // committed, for another session to run into.
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        changes.complete()?;
        tx.commit().map_err(|e| db.error(&e, "committing"))?;
        Ok(())
    }

    /// Judges (and unless `dry`, applies) changes `from..to`, a chunk of one table at a time.
    ///
    /// A thread of its own reads, keys and prepares the next chunks (on every core) while this
    /// one waits for the database to run the chunk before: the client's work and the server's
    /// overlap instead of taking turns.
    fn range(
        &mut self,
        tx: &mut Transaction,
        changes: &Changes,
        from: u64,
        to: u64,
        dry: bool,
        bar: &Progress,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (send, chunks) = std::sync::mpsc::sync_channel::<Result<Ready>>(2);
            scope.spawn(move || {
                if let Err(e) = produce(changes, from, to, dry, &send) {
                    let _ = send.send(Err(e));
                }
            });
            // What a chunk is done with is freed on a thread of its own: tens of thousands of
            // changes a chunk, freed between two statements, kept the server waiting.
            let (bin, garbage) = std::sync::mpsc::channel::<Box<dyn Send>>();
            scope.spawn(move || garbage.into_iter().for_each(drop));
            self.bin = Some(bin);
            let result = guarded::nested_loops_only(self.db, tx)
                .and_then(|()| self.consume(tx, &chunks, dry, bar))
                .and_then(|()| guarded::planner_reset(self.db, tx));
            self.bin = None; // ends the freeing thread
            result
        })
    }

    /// The connection's side of [`Run::range`]: runs each chunk as it comes.
    fn consume(
        &mut self,
        tx: &mut Transaction,
        chunks: &std::sync::mpsc::Receiver<Result<Ready>>,
        dry: bool,
        bar: &Progress,
    ) -> Result<()> {
        // Returning early (an error) drops `chunks`, which stops the producer.
        loop {
            let clock = std::time::Instant::now();
            let Ok(ready) = chunks.recv() else { break };
            self.spent.wait += clock.elapsed();
            let Ready {
                table,
                mut chunk,
                prepared,
            } = ready?;
            let n = chunk.len() as u64;
            self.chunk(tx, table, &mut chunk, prepared, dry)?;
            self.discard(chunk);
            bar.add(n);
        }
        Ok(())
    }

    /// Frees `x` on the freeing thread of [`Run::range`] (here, outside it).
    fn discard(&self, x: impl Send + 'static) {
        if let Some(bin) = &self.bin {
            let _ = bin.send(Box::new(x));
        }
    }

    /// Locks, reads, judges and writes one chunk of changes of table `t`; empties `chunk`.
    fn chunk(
        &mut self,
        tx: &mut Transaction,
        t: usize,
        chunk: &mut Vec<(Change, KeyCells)>,
        prepared: guarded::Prepared,
        dry: bool,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.guarded(tx, t, chunk, &prepared, dry)?;
        self.discard(prepared);
        if chunk.is_empty() {
            return Ok(());
        }
        let keys: Vec<&KeyCells> = chunk.iter().map(|(_, k)| k).collect();
        // A chunk of deletes deletes first and judges the rows it deleted: a row that differs
        // from `prior` is a conflict, which rolls the batch back (or under `--force` is deleted
        // anyway), so this is the same as locking, judging and deleting, in one statement.
        let deleted = !dry && chunk.iter().all(|(c, _)| c.op == Op::Delete);
        let clock = std::time::Instant::now();
        let current = if deleted {
            let current = self.read(tx, t, &keys, "DELETE FROM", "")?;
            self.spent.delete += clock.elapsed();
            current
        } else {
            let current =
                self.read(tx, t, &keys, "SELECT", if dry { "" } else { " FOR UPDATE" })?;
            self.spent.select += clock.elapsed();
            current
        };
        let clock = std::time::Instant::now();
        let force = self.opts.force;
        // Judged and planned on every core; counted and gathered in the change file's order.
        let judged: Vec<Judged> = chunk
            .par_iter()
            .map(|(change, key)| {
                let found = current.get(&(change.kind.clone(), change.key.clone()));
                let bytes = found.map(|v| serde_json::to_vec(v).expect("a JSON value serialises"));
                let cur = bytes
                    .as_deref()
                    .map(RawRecord::parse)
                    .transpose()
                    .context("a row rebuilt as a record")?;
                let step = change.judge(cur.as_ref());
                let conflict = (step == Step::Conflict)
                    .then(|| Conflict::of_change(change, cur.as_ref(), None));
                let write = match step {
                    Step::Apply => true,
                    Step::Already => false,
                    Step::Conflict => force,
                };
                let plan = if write && !dry && !deleted {
                    plan(t, change, key, cur.as_ref())?
                } else {
                    Vec::new()
                };
                Ok(Judged {
                    step,
                    conflict,
                    plan,
                })
            })
            .collect::<Result<_>>()?;
        let mut w = Writes::default();
        for ((change, _), j) in chunk.iter().zip(judged) {
            if dry {
                self.covered.push(covered_hash(&change.kind, &change.key));
            }
            self.judged_delete(change);
            let mut conflict = j.conflict;
            self.summary.judged(j.step, force, || {
                conflict
                    .take()
                    .expect("a conflict is judged with its description")
            });
            for p in j.plan {
                match p {
                    Planned::Delete(k) => w.deletes.push(k),
                    Planned::Create(row) => {
                        w.creates.extend_from_slice(&row);
                        self.summary.lines_written += 1;
                    }
                    Planned::Update(cols, k, row) => {
                        self.summary.lines_written += 1;
                        if !cols.is_empty() {
                            w.updates.entry(cols).or_default().push((k, row));
                        }
                    }
                    Planned::Other(kind, key, rec) => {
                        self.summary.lines_written += 1;
                        w.other_updates.push((kind, key, rec));
                    }
                }
            }
        }
        self.spent.judge += clock.elapsed();
        if !dry {
            self.flush(tx, t, w)?;
        }
        self.discard(std::mem::take(chunk));
        Ok(())
    }

    /// Runs the guarded deletes and updates of a chunk ([`guarded`]), counts what they applied
    /// (in the pre-check, `dry`: would apply) and takes it out of `chunk`; the rest go the exact
    /// way.
    fn guarded(
        &mut self,
        tx: &mut Transaction,
        t: usize,
        chunk: &mut Vec<(Change, KeyCells)>,
        prepared: &guarded::Prepared,
        dry: bool,
    ) -> Result<()> {
        let clock = std::time::Instant::now();
        let applied = match guarded::run(tx, prepared, chunk.len()) {
            Ok(a) => a,
            Err(e) if is_lock_timeout(&e) => {
                let keys: Vec<&KeyCells> = chunk.iter().map(|(_, k)| k).collect();
                return Err(self.locked(t, &keys, &e));
            }
            Err(e) => return Err(self.db.error(&e, &format!("writing {}", table_name(t)))),
        };
        self.spent.guarded += clock.elapsed();
        for ((c, _), _) in chunk.iter().zip(&applied).filter(|(_, a)| **a) {
            self.judged_delete(c);
            self.summary
                .judged(Step::Apply, self.opts.force, || unreachable!("applied"));
            if dry {
                self.covered.push(covered_hash(&c.kind, &c.key));
            } else if c.op != Op::Delete {
                self.summary.lines_written += 1;
            }
        }
        let mut done = Vec::with_capacity(chunk.len());
        let mut kept = Vec::new();
        for (item, a) in std::mem::take(chunk).into_iter().zip(applied) {
            if a {
                done.push(item);
            } else {
                kept.push(item);
            }
        }
        *chunk = kept;
        self.discard(done);
        Ok(())
    }

    /// Notes a report or column version a delete removes, for the newer-record look.
    fn judged_delete(&mut self, change: &Change) {
        if change.op == Op::Delete && carry::is_versioned(&change.kind) {
            if let Ok(oid) = change.key.parse::<i64>() {
                self.gone.push(Subject {
                    otype: change.kind.clone(),
                    oid,
                });
            }
        }
    }

    /// Runs the writes of a chunk: deletes, then updates, then creates.
    fn flush(&mut self, tx: &mut Transaction, t: usize, w: Writes) -> Result<()> {
        let db = self.db;
        if !w.deletes.is_empty() {
            let clock = std::time::Instant::now();
            let keys: Vec<&KeyCells> = w.deletes.iter().collect();
            let (sql, params) = keyed(t, "DELETE FROM", "", &keys);
            tx.execute(&sql, &refs(&params))
                .map_err(|e| db.error(&e, &format!("deleting from {}", table_name(t))))?;
            self.spent.delete += clock.elapsed();
        }
        let clock = std::time::Instant::now();
        for (cols, rows) in &w.updates {
            let table = &TABLES[t];
            let (sql, params) = update_sql(table, cols, rows);
            tx.execute(&sql, &refs(&params))
                .map_err(|e| db.error(&e, &format!("updating {}", table.name)))?;
        }
        for (kind, key, rec) in &w.other_updates {
            tx.execute(
                &format!("UPDATE {OTHER} SET record = $3 WHERE kind = $1 AND key = $2"),
                &[kind, key, rec],
            )
            .map_err(|e| db.error(&e, &format!("updating {OTHER}")))?;
        }
        self.spent.update += clock.elapsed();
        if !w.creates.is_empty() {
            let clock = std::time::Instant::now();
            let cols = TABLES
                .get(t)
                .map_or("kind, key, record".to_string(), Table::column_list);
            db.copy_into(tx, table_name(t), &cols, false, &w.creates[..])?;
            self.spent.copy += clock.elapsed();
        }
        Ok(())
    }

    /// Reads the rows with these keys, as records by (kind, key): `SELECT` (with `tail` ` FOR
    /// UPDATE` to lock them), or `DELETE FROM` (the rows deleted). A row another session holds
    /// longer than `lock_timeout` stops the restore, naming it.
    fn read(
        &self,
        tx: &mut Transaction,
        t: usize,
        keys: &[&KeyCells],
        verb: &str,
        tail: &str,
    ) -> Result<HashMap<(String, String), Value>> {
        let cols = TABLES
            .get(t)
            .map_or("kind, key, record".to_string(), Table::column_list);
        let (sql, params) = if verb == "SELECT" {
            keyed(t, &format!("SELECT {cols} FROM"), tail, keys)
        } else {
            keyed(t, verb, &format!("{tail} RETURNING {cols}"), keys)
        };
        let rows = match tx.query(&sql, &refs(&params)) {
            Ok(rows) => rows,
            Err(e) if is_lock_timeout(&e) => {
                return Err(self.locked(t, keys, &e));
            }
            Err(e) => return Err(self.db.error(&e, &format!("reading {}", table_name(t)))),
        };
        rows_to_records(t, rows)
    }

    /// The error for a lock wait that ran out: which rows another session holds (looked up
    /// with `SKIP LOCKED` in a session of its own), and what to do.
    fn locked(&self, t: usize, keys: &[&KeyCells], e: &postgres::Error) -> anyhow::Error {
        let mut named = Vec::new();
        if let Ok(mut c) = self.db.connect() {
            let cols = TABLES
                .get(t)
                .map_or("kind, key, record".to_string(), Table::column_list);
            let (sql, params) = keyed(
                t,
                &format!("SELECT {cols} FROM"),
                " FOR UPDATE SKIP LOCKED",
                keys,
            );
            if let Ok(mut tx) = c.transaction() {
                if let Ok(rows) = tx.query(&sql, &refs(&params)) {
                    if let Ok(free) = rows_to_records(t, rows) {
                        for k in keys {
                            let desc = describe_key(t, k);
                            let kk = key_string(t, k);
                            if !free.keys().any(|(_, key)| *key == kk) {
                                named.push(desc);
                            }
                        }
                    }
                }
            }
        }
        let rows = if named.is_empty() {
            format!("a row of {}", table_name(t))
        } else {
            named.into_iter().take(5).collect::<Vec<_>>().join(", ")
        };
        let mut err = self.db.error(e, "waiting for a row lock");
        err = err.context(format!(
            "{rows} is held by another session's open transaction (waited lock_timeout = {} ms); \
             nothing of this batch was written: let that transaction finish (or end it), then run \
             the same command again{}",
            self.opts.lock_timeout.as_millis(),
            if self.opts.batch_size.is_some() {
                " — it resumes after the last committed batch"
            } else {
                ""
            }
        ));
        err
    }

    /// Locks the curation tables against writers (reads go on) until the commit.
    fn lock_tables(&mut self, tx: &mut Transaction) -> Result<()> {
        let db = self.db;
        tx.batch_execute(&format!(
            "LOCK TABLE field_value, trust_flag, tag, star, conversation, article, bi_report, bi_report_column, {OTHER} IN SHARE ROW EXCLUSIVE MODE"
        ))
        .map_err(|e| {
            if is_lock_timeout(&e) {
                db.error(&e, "locking the curation tables against writers (another session held a conflicting lock past lock_timeout; nothing of this batch was written: run the same command again)")
            } else {
                db.error(&e, "locking the curation tables")
            }
        })?;
        self.tables_locked = Some(std::time::Instant::now());
        Ok(())
    }

    /// Looks for rows that refer to retired versions (and versions the bundle does not know)
    /// once the retired versions of changes `from..to` are gone, with the curation tables locked
    /// against writers. Conflicts, or with `--carry-new` carried. `full` looks at object sets and
    /// mentions too (a scan of the rich text), which the last batch always does.
    fn newer(&mut self, tx: &mut Transaction, full: bool, dry: bool) -> Result<()> {
        let clock = std::time::Instant::now();
        let r = self.newer_inner(tx, full, dry);
        self.spent.newer += clock.elapsed();
        r
    }

    fn newer_inner(&mut self, tx: &mut Transaction, full: bool, dry: bool) -> Result<()> {
        let retired: &'a Retired = retired_of(self.retired)?;
        // The retired versions this batch deletes (all of them for a full look).
        let mut gone = std::mem::take(&mut self.gone);
        gone.retain(|s| retired.survivor(&s.otype, s.oid).is_some());
        if gone.is_empty() && !full {
            return Ok(());
        }
        let db = self.db;
        if !dry && self.tables_locked.is_none() {
            self.lock_tables(tx)?;
        }
        let fields = read_fields(db, tx)?;
        if dry {
            self.covered.sort_unstable();
        }
        let covered = &self.covered;
        // The connection runs the next query while a worker turns the rows of the last one
        // into records and checks them (on every core): the server and the client overlap.
        let (send, queried) = std::sync::mpsc::sync_channel::<(usize, Vec<postgres::Row>, bool)>(1);
        let newer: Vec<(Newer, Record)> = std::thread::scope(|scope| -> Result<_> {
            let worker = scope.spawn(move || -> Result<Vec<(Newer, Record)>> {
                let mut out = Vec::new();
                for (t, rows, versions) in queried {
                    let found: Vec<Result<Option<(Newer, Record)>>> = rows
                        .into_par_iter()
                        .map(|row| {
                            let rec = row_record(t, &row)?;
                            // A version counts only as one the bundle does not know.
                            if versions && !retired.is_stale(&rec) {
                                return Ok(None);
                            }
                            if dry
                                && covered
                                    .binary_search(&covered_hash(rec.kind_name(), &rec.key()))
                                    .is_ok()
                            {
                                return Ok(None);
                            }
                            Ok(carry::check(retired, &rec, Some(&fields), None).map(|n| (n, rec)))
                        })
                        .collect();
                    for f in found {
                        out.extend(f?);
                    }
                }
                Ok(out)
            });
            let queries = self.newer_queries(tx, retired, full, &gone, &send);
            drop(send);
            let clock = std::time::Instant::now();
            let newer = worker
                .join()
                .expect("the newer-record worker does not panic");
            timing(format_args!(
                "newer    check (after the last query) {:.3} s",
                clock.elapsed().as_secs_f64()
            ));
            queries?;
            newer
        })?;
        // Each record once (one may be found by its subject and by a scan), in key order.
        let mut newer: Vec<((String, String), (Newer, Record))> = newer
            .into_iter()
            .map(|(n, r)| ((n.kind.clone(), n.key.clone()), (n, r)))
            .collect();
        newer.sort_by(|a, b| a.0.cmp(&b.0));
        newer.dedup_by(|a, b| a.0 == b.0);
        let newer: Vec<(Newer, Record)> = newer.into_iter().map(|(_, nr)| nr).collect();
        if newer.is_empty() {
            return Ok(());
        }
        if !self.opts.carry_new || dry {
            for (n, _) in &newer {
                if self.opts.carry_new && !n.stale_version {
                    continue; // the dry run leaves what --carry-new will carry
                }
                self.summary.conflict(Conflict::of_newer(n, retired));
            }
            return Ok(());
        }
        let mut carried = Vec::new();
        for (n, r) in newer {
            if n.stale_version {
                self.summary.conflict(Conflict::of_newer(&n, retired));
            } else {
                self.summary.newer += 1;
                carried.push((0u64, r));
            }
        }
        self.carry(tx, carried)
    }

    /// Runs the queries of the newer-record look and sends each one's rows (with its table, and
    /// whether they are versions, to be kept only when the bundle does not know them) on to
    /// the worker of [`Run::newer_inner`]. Stops early when the worker is gone (its error).
    fn newer_queries(
        &self,
        tx: &mut Transaction,
        retired: &Retired,
        full: bool,
        gone: &[Subject],
        send: &std::sync::mpsc::SyncSender<(usize, Vec<postgres::Row>, bool)>,
    ) -> Result<()> {
        let db = self.db;
        // A closed channel means the worker failed: its error is the one to report.
        let pass = |t: usize, rows: Vec<postgres::Row>, versions: bool| {
            let _ = send.send((t, rows, versions));
        };
        // Hashes of tens of megabytes (a million subjects) stay in memory instead of spilling
        // to disk in batches; for this transaction only.
        tx.batch_execute("SET LOCAL work_mem = '64MB'")
            .map_err(|e| db.error(&e, "setting work_mem"))?;
        let clock = std::time::Instant::now();
        let unnest = "SELECT * FROM unnest($1::text[], $2::bigint[])";
        // The rows of table `i` of the subject tables (past the last: other_record, by its
        // subject) whose subject is one of `kinds` / `keys`.
        let holding = |tx: &mut Transaction,
                       i: usize,
                       kinds: &[&str],
                       keys: &[i64]|
         -> Result<()> {
            let (ti, name, sql) = match SUBJECT_TABLES.get(i) {
                Some(t) => {
                    let ti = table(t);
                    let cols = TABLES[ti].column_list();
                    (
                        ti,
                        *t,
                        format!("SELECT {cols} FROM {t} WHERE (subject_otype, subject_oid) IN ({unnest})"),
                    )
                }
                None => (
                    TABLES.len(),
                    OTHER,
                    format!(
                        "SELECT kind, key, record FROM {OTHER} WHERE \
                         (record->'subject'->>'otype', {OTHER_OID}) IN ({unnest})"
                    ),
                ),
            };
            let rows = tx
                .query(&sql, &[&kinds, &keys])
                .map_err(|e| db.error(&e, &format!("reading {name}")))?;
            pass(ti, rows, false);
            Ok(())
        };
        if full {
            // Every subject a curation table holds on a report or a column, read out and
            // looked up here among the retired versions: the server only scans (no table of
            // the retired versions to fill, no hash of them to build on its one busy core).
            // After the writes none is left unless a curator made it since the export; in the
            // batch pre-check, before anything moved, most are covered by a change.
            let mut arms: Vec<String> = SUBJECT_TABLES
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        "SELECT {i}, subject_otype, subject_oid::text FROM {t} \
                         WHERE subject_otype IN ('{REPORT}', '{COLUMN}')"
                    )
                })
                .collect();
            // other_record's oid as its text: what is not an integer there (a string, a
            // fraction) refers to nothing, and a string of digits that passes is dropped by the
            // exact read of the rows that hold it and their check.
            arms.push(format!(
                "SELECT {}, record->'subject'->>'otype', record->'subject'->>'oid' FROM {OTHER} \
                 WHERE record->'subject'->>'otype' IN ('{REPORT}', '{COLUMN}')",
                SUBJECT_TABLES.len()
            ));
            let mut hits: Vec<Vec<(&'static str, i64)>> =
                vec![Vec::new(); SUBJECT_TABLES.len() + 1];
            copy_out_lines(
                db,
                tx,
                &arms.join(" UNION ALL "),
                "the subjects of the curation tables",
                |[t, otype, oid]| {
                    let otype = match otype {
                        b"bi_report" => REPORT,
                        b"bi_report_column" => COLUMN,
                        _ => return,
                    };
                    let (Some(t), Some(oid)) = (parse_int(t), parse_int(oid)) else {
                        return;
                    };
                    if retired.survivor(otype, oid).is_some() {
                        if let Some(h) = hits.get_mut(t as usize) {
                            h.push((otype, oid));
                        }
                    }
                },
            )?;
            for (i, mut h) in hits.into_iter().enumerate() {
                h.sort_unstable();
                h.dedup();
                if !h.is_empty() {
                    let (kinds, keys): (Vec<&str>, Vec<i64>) = h.into_iter().unzip();
                    holding(tx, i, &kinds, &keys)?;
                }
            }
        } else if !gone.is_empty() {
            // A batch: the versions it deleted, table by table.
            let mut gone: Vec<(&str, i64)> =
                gone.iter().map(|s| (s.otype.as_str(), s.oid)).collect();
            gone.sort_unstable();
            let (kinds, keys): (Vec<&str>, Vec<i64>) = gone.into_iter().unzip();
            for i in 0..SUBJECT_TABLES.len() {
                holding(tx, i, &kinds, &keys)?;
            }
        }
        timing(format_args!(
            "newer    subjects {:.3} s",
            clock.elapsed().as_secs_f64()
        ));
        if !full {
            return Ok(());
        }
        let clock = std::time::Instant::now();
        // Object sets and mentions, wherever they may be.
        let scans = [
            ("field_value", "value::text LIKE '%bi\\_report%'"),
            ("article", "body ILIKE '%data-oid%'"),
            ("trust_flag", "reason ILIKE '%data-oid%'"),
            ("conversation", "posts::text ILIKE '%data-oid%'"),
        ];
        for (t, cond) in scans {
            let ti = table(t);
            let cols = TABLES[ti].column_list();
            let rows = tx
                .query(&format!("SELECT {cols} FROM {t} WHERE {cond}"), &[])
                .map_err(|e| db.error(&e, &format!("reading {t}")))?;
            pass(ti, rows, false);
        }
        timing(format_args!(
            "newer    scans {:.3} s",
            clock.elapsed().as_secs_f64()
        ));
        let clock = std::time::Instant::now();
        // Versions extracted after the export: of a migrated server, and unknown to the
        // bundle. Their oids (and a column's report) are read out and looked up here; only
        // the rows that may be such a version are then read whole (`Retired::is_stale` has
        // the last word).
        let servers = retired.servers();
        if !servers.is_empty() {
            let list = servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            for (ti, column) in [(3usize, false), (4, true)] {
                let name = TABLES[ti].name;
                let report = if column { "report" } else { "NULL" };
                let mut oids: Vec<i64> = Vec::new();
                copy_out_lines(
                    db,
                    tx,
                    &format!(
                        "SELECT oid, server_id, {report} FROM {name} WHERE server_id IN ({list})"
                    ),
                    &format!("the versions of {name}"),
                    |[oid, server, report]| {
                        let (Some(oid), Some(server)) = (parse_int(oid), parse_int(server)) else {
                            return;
                        };
                        // A report with an escape in COPY's text is left to the whole row.
                        let report = (column && !report.contains(&b'\\'))
                            .then(|| std::str::from_utf8(report).ok())
                            .flatten();
                        if retired.may_be_stale(column, server, oid, report) {
                            oids.push(oid);
                        }
                    },
                )?;
                if !oids.is_empty() {
                    let cols = TABLES[ti].column_list();
                    let rows = tx
                        .query(
                            &format!("SELECT {cols} FROM {name} WHERE oid = ANY($1)"),
                            &[&oids],
                        )
                        .map_err(|e| db.error(&e, &format!("reading {name}")))?;
                    pass(ti, rows, true);
                }
            }
        }
        timing(format_args!(
            "newer    versions {:.3} s",
            clock.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Carries newer records onto their survivors in this transaction, and records how.
    fn carry(&mut self, tx: &mut Transaction, newer: Vec<(u64, Record)>) -> Result<()> {
        if newer.is_empty() {
            return Ok(());
        }
        let db = self.db;
        let records: Vec<Record> = newer.iter().map(|(_, r)| r.clone()).collect();
        let retired = retired_of(self.retired)?;
        let survivors = carry::survivors_of(retired, &records);
        let mut current = Vec::new();
        for t in SUBJECT_TABLES {
            let ti = table(t);
            let cols = TABLES[ti].column_list();
            for otype in [crate::groups::REPORT, crate::groups::COLUMN] {
                let oids: Vec<i64> = survivors
                    .iter()
                    .filter(|s| s.otype == otype)
                    .map(|s| s.oid)
                    .collect();
                if oids.is_empty() {
                    continue;
                }
                let rows = tx
                    .query(
                        &format!("SELECT {cols} FROM {t} WHERE subject_otype = $1 AND subject_oid = ANY($2)"),
                        &[&otype, &oids],
                    )
                    .map_err(|e| db.error(&e, &format!("reading {t}")))?;
                for r in rows_to_records(ti, rows)?.into_values() {
                    current.push((0u64, value_record(r)));
                }
            }
        }
        let fields = read_fields(db, tx)?;
        let carried = carry::carry(retired, &fields, newer, current)?;
        for (k, n) in carried.by_kind {
            *self.summary.carried.entry(k).or_default() += n;
        }
        self.summary.carry_conflicts.extend(carried.conflicts);
        let seq0: i32 = tx
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM lookmig_carried WHERE bundle_id = $1",
                &[&self.bundle_id],
            )
            .map_err(|e| db.error(&e, "reading lookmig_carried"))?
            .get(0);
        let mut parsed = Vec::new();
        for (i, line) in carried.changes.iter().enumerate() {
            let c = Change::parse(line)?;
            let v: Value = crate::record::from_json_bytes(line)?;
            let text = String::from_utf8_lossy(line).into_owned();
            tx.execute(
                "INSERT INTO lookmig_carried (bundle_id, seq, change, line) VALUES ($1, $2, $3, $4)",
                &[&self.bundle_id, &(seq0 + 1 + i as i32), &v, &text],
            )
            .map_err(|e| db.error(&e, "writing lookmig_carried"))?;
            parsed.push(c);
        }
        self.summary.carry_changes += parsed.len() as u64;
        self.apply_list(tx, parsed)
    }

    /// Applies a short list of changes (carried curation, or its undoing), in order.
    fn apply_list(&mut self, tx: &mut Transaction, list: Vec<Change>) -> Result<()> {
        let before = self.summary.clone();
        guarded::nested_loops_only(self.db, tx)?;
        for c in list {
            let (t, key) = key_cells(&c)?;
            let mut chunk = vec![(c, key)];
            let prepared = guarded::prepare_chunk(t, &chunk, false);
            self.chunk(tx, t, &mut chunk, prepared, false)?;
        }
        guarded::planner_reset(self.db, tx)?;
        // These are not the bundle's changes: only their conflicts count.
        let conflicts = self.summary.conflict_count - before.conflict_count;
        let (forced, written) = (self.summary.forced, self.summary.lines_written);
        let mut s = before;
        s.conflict_count += conflicts;
        s.conflicts = self.summary.conflicts.clone();
        s.forced = forced;
        s.lines_written = written;
        s.carried = self.summary.carried.clone();
        s.carry_conflicts = self.summary.carry_conflicts.clone();
        s.carry_changes = self.summary.carry_changes;
        s.newer = self.summary.newer;
        self.summary = s;
        Ok(())
    }

    /// Undoes what `--carry-new` carried for this bundle (before the bundle itself is undone).
    fn uncarry(&mut self, tx: &mut Transaction) -> Result<()> {
        let db = self.db;
        let rows = tx
            .query(
                "SELECT line FROM lookmig_carried WHERE bundle_id = $1 ORDER BY seq DESC",
                &[&self.bundle_id],
            )
            .map_err(|e| db.error(&e, "reading lookmig_carried"))?;
        if rows.is_empty() {
            return Ok(());
        }
        let list: Vec<Change> = rows
            .iter()
            .map(|r| Change::parse(r.get::<_, String>(0).as_bytes()).map(|c| c.inverse()))
            .collect::<Result<_>>()?;
        self.summary.carry_changes = list.len() as u64;
        self.apply_list(tx, list)?;
        tx.execute(
            "DELETE FROM lookmig_carried WHERE bundle_id = $1",
            &[&self.bundle_id],
        )
        .map_err(|e| db.error(&e, "writing lookmig_carried"))?;
        Ok(())
    }
}

/// A chunk of changes of one table, read, keyed and (unless dry) its guarded statements built.
struct Ready {
    table: usize,
    chunk: Vec<(Change, KeyCells)>,
    prepared: guarded::Prepared,
}

/// Reads changes `from..to` a window at a time on every core, cuts them into chunks of one
/// table of at most [`CHUNK`] changes, builds their guarded statements, and sends them on in
/// order. Stops when the receiver is gone.
fn produce(
    changes: &Changes,
    from: u64,
    to: u64,
    dry: bool,
    send: &std::sync::mpsc::SyncSender<Result<Ready>>,
) -> Result<()> {
    let ready = |table: usize, chunk: Vec<(Change, KeyCells)>| {
        let prepared = guarded::prepare_chunk(table, &chunk, dry);
        Ready {
            table,
            chunk,
            prepared,
        }
    };
    let mut chunk: Vec<(Change, KeyCells)> = Vec::with_capacity(CHUNK);
    let mut chunk_table = usize::MAX;
    let window = CHUNK as u64;
    let mut start = from;
    while start < to {
        let end = (start + window).min(to);
        let read: Vec<(usize, Change, KeyCells)> = (start..end)
            .into_par_iter()
            .map(|i| {
                let c = changes.get(i as usize)?;
                let (t, key) = key_cells(&c)?;
                Ok((t, c, key))
            })
            .collect::<Result<_>>()?;
        start = end;
        for (t, c, key) in read {
            if (t != chunk_table || chunk.len() >= CHUNK) && !chunk.is_empty() {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                if send.send(Ok(ready(chunk_table, full))).is_err() {
                    return Ok(());
                }
            }
            chunk_table = t;
            chunk.push((c, key));
        }
    }
    if !chunk.is_empty() {
        let _ = send.send(Ok(ready(chunk_table, chunk)));
    }
    Ok(())
}

/// A change judged against the row as it is: the verdict, the conflict to report, and what to
/// write.
struct Judged {
    step: Step,
    conflict: Option<Conflict>,
    plan: Vec<Planned>,
}

/// One write of an applied change.
enum Planned {
    /// The row leaves.
    Delete(KeyCells),
    /// A row to `COPY` in (its text-format line).
    Create(Vec<u8>),
    /// The columns that change (an index past the last is `extra`), the key, the new row.
    Update(Vec<usize>, KeyCells, schema::Row),
    /// An update of an unknown kind: (kind, key, record).
    Other(String, String, Value),
}

/// Plans the write of one applied change against the row as it is (`cur`).
fn plan(
    t: usize,
    change: &Change,
    key: &KeyCells,
    cur: Option<&RawRecord>,
) -> Result<Vec<Planned>> {
    let create = |rec: &[u8]| -> Result<Planned> {
        let v: Value = crate::record::from_json_bytes(rec)?;
        let (_, row) = super::load::encode_record(&change.kind, &change.key, &v)?;
        Ok(Planned::Create(row))
    };
    Ok(match (change.result(cur), cur) {
        (None, Some(_)) => vec![Planned::Delete(key.clone())],
        (None, None) => Vec::new(),
        (Some(rec), None) => vec![create(&rec)?],
        // A forced create over a record that differs: replaced whole.
        (Some(rec), Some(_)) if change.op == Op::Create => {
            vec![Planned::Delete(key.clone()), create(&rec)?]
        }
        (Some(rec), Some(cur)) => {
            let new: Map<String, Value> = crate::record::from_json_bytes(&rec)?;
            match TABLES.get(t) {
                None => vec![Planned::Other(
                    change.kind.clone(),
                    change.key.clone(),
                    Value::Object(new),
                )],
                Some(table) => {
                    let old = schema::to_row(table, &cur.to_map())?;
                    let row = schema::to_row(table, &new)
                        .with_context(|| format!("{} {:?}", change.kind, change.key))?;
                    let mut cols: Vec<usize> = (0..row.cells.len())
                        .filter(|&i| row.cells[i] != old.cells[i])
                        .collect();
                    if row.extra != old.extra {
                        cols.push(row.cells.len()); // `extra`
                    }
                    vec![Planned::Update(cols, key.clone(), row)]
                }
            }
        }
    })
}

fn value_record(v: Value) -> Record {
    let Value::Object(obj) = v else {
        unreachable!("rows are rebuilt as objects")
    };
    Record::from_map(obj)
}

/// The custom field definitions, for carrying values under their field's type.
fn read_fields(db: &Database, tx: &mut Transaction) -> Result<crate::refs::Fields> {
    let mut fields = crate::refs::Fields::default();
    let rows = tx
        .query(
            "SELECT id, field_type, coalesce(allow_multiple, false) FROM custom_field",
            &[],
        )
        .map_err(|e| db.error(&e, "reading custom_field"))?;
    for r in rows {
        fields.insert(
            r.get(0),
            crate::record::FieldDef {
                field_type: r.get(1),
                allow_multiple: r.get(2),
            },
        );
    }
    Ok(fields)
}

/// The index in [`TABLES`] of the table called `name`.
fn table(name: &str) -> usize {
    TABLES
        .iter()
        .position(|x| x.name == name)
        .expect("a table of the schema")
}

/// The tables whose rows have a `subject` (otype, oid) in columns of their own.
const SUBJECT_TABLES: [&str; 5] = ["field_value", "trust_flag", "tag", "star", "conversation"];
/// Runs `COPY (query) TO STDOUT`, a query of three columns, and calls `f` with each line's
/// fields (COPY's text format: `\\N` for NULL, escapes left as they are).
fn copy_out_lines(
    db: &Database,
    tx: &mut Transaction,
    query: &str,
    what: &str,
    mut f: impl FnMut([&[u8]; 3]),
) -> Result<()> {
    use std::io::BufRead;
    let reader = tx
        .copy_out(&format!("COPY ({query}) TO STDOUT"))
        .map_err(|e| db.error(&e, &format!("reading {what}")))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("database {}: reading {what}", db.shown()))?;
        if n == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let mut fields = text.split(|&b| b == b'\t');
        if let (Some(a), Some(b), Some(c)) = (fields.next(), fields.next(), fields.next()) {
            f([a, b, c]);
        }
    }
}

/// A COPY text field as an integer (`None` for `\\N` or anything else).
fn parse_int(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The `subject.oid` of an `other_record` row as a `bigint` where it is a number in range
/// (rounded: a non-integer matches at most a row the check then refuses, a superset of what
/// [`crate::record::Subject::from_value`] takes), else NULL: a cast that cannot fail.
const OTHER_OID: &str = "CASE WHEN jsonb_typeof(record->'subject'->'oid') = 'number' \
     AND (record->'subject'->'oid')::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 \
     THEN (record->'subject'->'oid')::numeric::bigint END";
/// A 64-bit hash of a record's (kind, key), for [`Run::covered`] (a collision only lets the
/// pre-check miss a newer record, which the batch itself then finds).
fn covered_hash(kind: &str, key: &str) -> u64 {
    crate::record::SeenKeys::hash(kind, key) as u64
}

/// With `LOOKMIG_TIMING` set, prints a line on stderr (how long batches hold their locks).
fn timing(line: std::fmt::Arguments) {
    if std::env::var_os("LOOKMIG_TIMING").is_some() {
        eprintln!("timing: {line}");
    }
}

fn is_lock_timeout(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// A row of table `t` (past the last: `other_record`) as the record it holds.
fn row_record(t: usize, row: &postgres::Row) -> Result<Record> {
    let v = match TABLES.get(t) {
        Some(table) => super::read_row(table, row)?,
        None => row.try_get::<_, Value>(2)?,
    };
    Ok(value_record(v))
}

fn rows_to_records(t: usize, rows: Vec<postgres::Row>) -> Result<HashMap<(String, String), Value>> {
    let keyed: Vec<((String, String), Value)> = rows
        .par_iter()
        .map(|row| {
            let rec = row_record(t, row)?;
            let kind = match TABLES.get(t) {
                Some(table) => table.kind.to_string(),
                None => row.try_get(0)?,
            };
            let key = match TABLES.get(t) {
                Some(_) => rec.key(),
                None => row.try_get(1)?,
            };
            Ok(((kind, key), Value::Object(rec.obj)))
        })
        .collect::<Result<_>>()?;
    Ok(keyed.into_iter().collect())
}

fn table_name(t: usize) -> &'static str {
    TABLES.get(t).map_or(OTHER, |t| t.name)
}

/// A row's key for a person: `bi_report oid=1`.
fn describe_key(t: usize, k: &KeyCells) -> String {
    let cols: Vec<&str> = TABLES
        .get(t)
        .map_or(vec!["kind", "key"], |tb| tb.key.to_vec());
    let vals: Vec<String> = cols
        .iter()
        .zip(k)
        .map(|(c, v)| match v {
            Cell::Int(i) => format!("{c}={i}"),
            Cell::Text(s) => format!("{c}={s:?}"),
            _ => format!("{c}=?"),
        })
        .collect();
    format!("{} {}", table_name(t), vals.join(" "))
}

/// The record key of a table key (for matching rows read back).
fn key_string(t: usize, k: &KeyCells) -> String {
    let text = |c: &Cell| match c {
        Cell::Int(i) => i.to_string(),
        Cell::Text(s) => s.clone(),
        _ => String::new(),
    };
    match (TABLES.get(t), k.as_slice()) {
        (None, [_, key]) => text(key),
        (_, cells) => cells.iter().map(text).collect::<Vec<_>>().join(":"),
    }
}

/// The table of a change and its key columns' values (taken from its record or prior).
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
            if let Some(cells) = raw_key_cells(&TABLES[t], rec.get().as_bytes()) {
                return Ok((t, cells));
            }
            let obj: Map<String, Value> = serde_json::from_str(rec.get())
                .with_context(|| format!("{} {:?}: not a JSON object", c.kind, c.key))?;
            let row = schema::to_row(&TABLES[t], &obj)
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

/// The key columns' values read from the record's raw fields, without building the record;
/// None where a key field does not hold its column's type (the full mapping then decides).
fn raw_key_cells(table: &Table, bytes: &[u8]) -> Option<KeyCells> {
    let raw = RawRecord::parse(bytes).ok()?;
    let mut subject = None;
    let mut cells = Vec::with_capacity(table.key.len());
    for &col in table.key {
        let cell = match col {
            "subject_otype" | "subject_oid" => {
                if subject.is_none() {
                    let v: Value = serde_json::from_str(raw.get("subject")?.get()).ok()?;
                    subject = Some(Subject::from_value(&v)?);
                }
                let s = subject.as_ref()?;
                if col == "subject_otype" {
                    Cell::Text(s.otype.clone())
                } else {
                    Cell::Int(s.oid)
                }
            }
            name => {
                let v = raw.get(name)?.get();
                match table.fields.iter().find(|f| f.name == name)?.ty {
                    Ty::Int => Cell::Int(serde_json::from_str::<i64>(v).ok()?),
                    Ty::Text => Cell::Text(serde_json::from_str::<String>(v).ok()?),
                    _ => return None,
                }
            }
        };
        cells.push(cell);
    }
    Some(cells)
}

/// Statement parameters (`Send`: guarded statements are built on another thread).
pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// An array parameter holding column `j` of every row, and its SQL cast.
pub(super) fn column_param(
    ty: Ty,
    cells: &[&Cell],
    n: usize,
) -> (Box<dyn ToSql + Sync + Send>, String) {
    fn array<T>(cells: &[&Cell], pick: impl Fn(&Cell) -> Option<T>) -> Box<dyn ToSql + Sync + Send>
    where
        Vec<Option<T>>: ToSql + Sync + Send + 'static,
    {
        Box::new(cells.iter().map(|c| pick(c)).collect::<Vec<_>>())
    }
    let (param, sql_type) = match ty {
        Ty::Int => (
            array(cells, |c| match c {
                Cell::Int(i) => Some(*i),
                _ => None,
            }),
            "bigint",
        ),
        Ty::Bool => (
            array(cells, |c| match c {
                Cell::Bool(b) => Some(*b),
                _ => None,
            }),
            "boolean",
        ),
        Ty::Json => (
            array(cells, |c| match c {
                Cell::Json(j) => Some(j.clone()),
                _ => None,
            }),
            "jsonb",
        ),
        Ty::Text | Ty::Subject => (
            array(cells, |c| match c {
                Cell::Text(s) => Some(s.clone()),
                _ => None,
            }),
            "text",
        ),
    };
    (param, format!("${n}::{sql_type}[]"))
}

/// One `UPDATE … FROM unnest(…)` setting columns `cols` (an index past the last column is
/// `extra`) of every row, matched by key.
fn update_sql(table: &Table, cols: &[usize], rows: &[(KeyCells, schema::Row)]) -> (String, Params) {
    let names = table.columns();
    let types = table.column_types();
    let key_pos = table.key_positions();
    let mut u = guarded::Unnest::default();
    for (j, p) in key_pos.iter().enumerate() {
        let cells: Vec<&Cell> = rows.iter().map(|(k, _)| &k[j]).collect();
        u.column(format!("k{j}"), types[*p], &cells);
    }
    let mut sets = Vec::new();
    for &c in cols {
        let alias = format!("v{c}");
        if c == names.len() {
            u.extra(&alias, rows.iter().map(|(_, r)| r));
            sets.push(format!("extra = u.{alias}"));
        } else {
            let cells: Vec<&Cell> = rows.iter().map(|(_, r)| &r.cells[c]).collect();
            sets.push(format!("{} = u.{alias}", names[c]));
            u.column(alias, types[c], &cells);
        }
    }
    let on: Vec<String> = key_pos
        .iter()
        .enumerate()
        .map(|(j, p)| format!("t.{} = u.k{j}", names[*p]))
        .collect();
    let sql = format!(
        "UPDATE {} AS t SET {} FROM {} WHERE {}",
        table.name,
        sets.join(", "),
        u.sql(),
        on.join(" AND ")
    );
    (sql, u.params)
}

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
        let cells: Vec<&Cell> = keys.iter().map(|k| &k[j]).collect();
        let (b, cast) = column_param(*ty, &cells, j + 1);
        params.push(b);
        casts.push(cast);
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
