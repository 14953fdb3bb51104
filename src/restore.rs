//! Restore and rollback onto an export file (SPEC §7): the change set applied onto a copy of
//! the target, each change judged by [`crate::changeset::Change::judge`] against the record the
//! target holds now, so that restoring twice changes nothing and an edit made since the export
//! is a conflict, never overwritten (unless `--force`).
//!
//! Records the bundle does not name are looked at too ([`crate::carry`]): one made after the
//! export that refers to a retired version, or a version extracted after the export, is a
//! conflict; with `--carry-new` such curation follows SPEC §4–§5, and what was carried is
//! written beside the output (`OUT.carried.ndjson`) so that a rollback of that output undoes it.
//!
//! Untouched lines are copied byte for byte, the header stays first, an updated record is
//! written where it stood, and records the change set creates come last.

use crate::bundle::Bundle;
use crate::carry::{self, Newer, Retired};
use crate::changeset::{Change, Head, OnPrior, RawRecord, Step};
use crate::error::Failure;
use crate::export::{BadLines, Item, Order, ParseResult, Parsed, Reader};
use crate::input::{Input, Line};
use crate::output::{AtomicFile, LineWriter, Target};
use crate::progress::Progress;
use crate::record::{Kind, Probe, Record};
use crate::refs::Fields;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Which way the change set is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// before → after.
    Restore,
    /// after → before.
    Rollback,
}

/// A change whose guard failed, or a record of the target the bundle does not know.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub kind: String,
    pub key: String,
    /// Line of the target holding the record, when it holds one (file targets).
    pub line: Option<u64>,
    /// `create`, `update`, `delete`, or `newer` for a record the bundle does not name.
    pub op: String,
    /// What differs, or what the record refers to, for a person.
    pub detail: String,
    /// What the target holds (None = absent).
    pub found: Option<Value>,
    /// For a newer record: the retired versions it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refers_to: Vec<String>,
    /// For a newer record: a version the bundle does not know (the bundle is stale).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale_version: bool,
}

impl Conflict {
    /// The conflict of a change judged against `current`.
    pub fn of_change(c: &Change, current: Option<&RawRecord>, line: Option<u64>) -> Conflict {
        Conflict {
            kind: c.kind.clone(),
            key: c.key.clone(),
            line,
            op: c.op.name().into(),
            detail: c.explain(current),
            found: current.map(|r| Value::Object(r.to_map())),
            refers_to: Vec::new(),
            stale_version: false,
        }
    }

    /// The conflict of a record made after the export.
    pub fn of_newer(n: &Newer, retired: &Retired) -> Conflict {
        Conflict {
            kind: n.kind.clone(),
            key: n.key.clone(),
            line: n.line,
            op: "newer".into(),
            detail: n.describe(retired),
            found: None,
            refers_to: n.refers_to.clone(),
            stale_version: n.stale_version,
        }
    }
}

/// What a restore or rollback did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub changes: u64,
    pub applied: u64,
    pub already_applied: u64,
    /// Conflicting changes applied anyway under `--force`.
    pub forced: u64,
    pub lines_written: u64,
    /// How many conflicts were met (changes and newer records).
    pub conflict_count: u64,
    /// Records made after the export that refer to retired versions (or stale versions).
    pub newer: u64,
    /// Newer records carried onto survivors with `--carry-new`, by kind.
    pub carried: BTreeMap<String, u64>,
    /// The changes that carried them (applied after the bundle's).
    pub carry_changes: u64,
    /// Conflicts of the merge while carrying (the winner kept, as in the migration's report).
    pub carry_conflicts: Vec<crate::merge::Conflict>,
    /// Where what was carried is recorded for a rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_record: Option<String>,
    /// The conflicts, each in full (the first [`MAX_LISTED`]).
    pub conflicts: Vec<Conflict>,
    /// Target lines that are not valid records, copied as they are under `--max-errors`.
    pub skipped_lines: Vec<crate::report::Skipped>,
}

/// How many conflicts a summary lists in full; the rest are counted.
pub const MAX_LISTED: usize = 10_000;

impl Summary {
    /// Records a conflict.
    pub fn conflict(&mut self, c: Conflict) {
        self.conflict_count += 1;
        if c.op == "newer" {
            self.newer += 1;
        }
        if self.conflicts.len() < MAX_LISTED {
            self.conflicts.push(c);
        }
    }

    /// Counts one judged change; returns whether to write its result.
    pub fn judged(&mut self, step: Step, force: bool, conflict: impl FnOnce() -> Conflict) -> bool {
        self.changes += 1;
        match step {
            Step::Apply => {
                self.applied += 1;
                true
            }
            Step::Already => {
                self.already_applied += 1;
                false
            }
            Step::Conflict => {
                self.conflict(conflict());
                if force {
                    self.forced += 1;
                }
                force
            }
        }
    }
}

/// Options of `restore` and `rollback`.
#[derive(Debug, Clone)]
pub struct Options {
    pub direction: Direction,
    pub force: bool,
    pub threads: usize,
    pub progress: bool,
    pub level: i32,
    /// Malformed target lines that may be copied through unchanged (and listed) instead of failing.
    pub max_errors: u64,
    /// Carry curation made after the export onto the survivors instead of refusing it.
    pub carry_new: bool,
}

impl Summary {
    /// The message of conflicts that stopped a restore ([`Failure::Conflicts`], exit 3).
    pub fn write_conflicts(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self;
        writeln!(
            f,
            "{} conflict(s): the target changed since the export; nothing was written",
            s.conflict_count
        )?;
        for c in s.conflicts.iter().take(20) {
            writeln!(
                f,
                "  {} {} {:?}{}: {}",
                c.op,
                c.kind,
                c.key,
                c.line.map_or(String::new(), |l| format!(" (line {l})")),
                c.detail
            )?;
        }
        if s.conflict_count > 20 {
            writeln!(f, "  ... and {} more (see --json)", s.conflict_count - 20)?;
        }
        let stale = s.conflicts.iter().any(|c| c.stale_version);
        let refs = s.conflicts.iter().any(|c| !c.refers_to.is_empty());
        // The last advice ends the message without a line end.
        if stale {
            writeln!(
                f,
                "the bundle is stale: report versions were extracted after the export it was made from; \
                 dump a fresh export and migrate it again"
            )?;
        }
        if refs {
            writeln!(
                f,
                "records made after the export refer to versions the bundle retires: pass --carry-new to \
                 carry them onto the survivors (SPEC §4-§5), or move them by hand, then restore again"
            )?;
        }
        if s.conflict_count > s.newer {
            write!(
                f,
                "check the records that changed, or pass --force to apply the change set over them"
            )?;
        }
        Ok(())
    }
}

/// A change set indexed by a hash of (kind, key), the lines on disk: memory holds 12 bytes per
/// change (and 1 per 4 changes for the buckets), and a change is read back, in one read, when a
/// target record matches it.
pub struct ChangeIndex {
    file: File,
    /// Bytes in `file`.
    size: u64,
    /// Tells this index's blocks apart in the threads' [`BlockCache`]s.
    id: u64,
    /// Sorted by hash.
    entries: Vec<Entry>,
    /// The first entry of each bucket of hashes (their top `bits` bits), and one past the last:
    /// a look-up goes to its bucket of about four entries instead of a binary search through
    /// the whole table, whose every step is a cache miss on a large change set.
    buckets: Vec<u32>,
    bits: u32,
    invert: bool,
    /// Target lines are read whole ([`Probe::parse_whole`]), for the changes that name them
    /// to be judged without a second read: see [`ChangeIndex::read_whole_when_dense`].
    whole: bool,
}

/// One change of a [`ChangeIndex`]: 12 bytes (alignment 4), where a pair of `u64` took 16 — 48
/// MB less at 800,000 reports. Fields in sort order: by hash, then by place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    /// The top 32 bits of the hash of (kind, key): with 12 million changes, one look-up in 360
    /// meets another change's hash and reads a line to tell them apart.
    hash: u32,
    /// Where the line is ([`ChangeIndex::pack`]), high half first.
    at: [u32; 2],
}

impl Entry {
    fn new(hash: u32, at: u64) -> Entry {
        Entry {
            hash,
            at: [(at >> 32) as u32, at as u32],
        }
    }

    fn at(&self) -> u64 {
        (u64::from(self.at[0]) << 32) | u64::from(self.at[1])
    }
}

/// The index's hash of a change's (kind, key): equal keys meet, and a shared hash only reads
/// one more line to compare.
fn hash32(kind: &str, key: &str) -> u32 {
    (crate::record::DuplicateKeys::hash(kind, key) >> 32) as u32
}

/// Bytes of a block of the change file that a thread keeps ([`BlockCache`]).
const BLOCK: u64 = 4 << 10;

/// The blocks of change files a thread read last, most recent last. The target is read in
/// its order and the changes sit in theirs (phase and kind, then mostly the export's order), so
/// look-ups of neighbouring lines fall in a few regions of the change file: at 50,000 reports
/// 32 blocks of 4 KiB served 83% of look-ups (measured when the changes were still sorted by
/// key), where each was a system call of its own (13% of restore's CPU).
#[derive(Default)]
struct BlockCache {
    /// (index id, block number, bytes: BLOCK, or fewer at the end of the file).
    blocks: Vec<(u64, u64, Vec<u8>)>,
}

thread_local! {
    static BLOCKS: std::cell::RefCell<BlockCache> = std::cell::RefCell::default();
}

impl BlockCache {
    const BLOCKS: usize = 32;

    /// Fills `out` with the bytes of `index`'s file from `at` on.
    fn read(&mut self, index: &ChangeIndex, at: u64, out: &mut [u8]) -> std::io::Result<()> {
        let end = at + out.len() as u64;
        if end > index.size {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut pos = at;
        while pos < end {
            let n = pos / BLOCK;
            let block = self.block(index, n)?;
            let from = (pos - n * BLOCK) as usize;
            let take = ((end - pos) as usize).min(block.len() - from);
            let done = (pos - at) as usize;
            out[done..done + take].copy_from_slice(&block[from..from + take]);
            pos += take as u64;
        }
        Ok(())
    }

    fn block(&mut self, index: &ChangeIndex, n: u64) -> std::io::Result<&[u8]> {
        let found = self
            .blocks
            .iter()
            .rposition(|(id, b, _)| *id == index.id && *b == n);
        let i = match found {
            Some(i) => i,
            None => {
                let mut bytes = if self.blocks.len() == Self::BLOCKS {
                    self.blocks.remove(0).2
                } else {
                    vec![0; BLOCK as usize]
                };
                let len = BLOCK.min(index.size - n * BLOCK) as usize;
                bytes.resize(len, 0);
                index.file.read_exact_at(&mut bytes, n * BLOCK)?;
                self.blocks.push((index.id, n, bytes));
                self.blocks.len() - 1
            }
        };
        // The most recent last: the one removed when full is the least recently used.
        let last = self.blocks.len() - 1;
        if i != last {
            let b = self.blocks.remove(i);
            self.blocks.push(b);
        }
        Ok(&self.blocks[last].2)
    }
}

/// Lengths at or over this are read from the line's length prefix, not from the entry.
const LONG: u64 = (1 << 24) - 1;

impl ChangeIndex {
    /// Indexes change lines; `invert` applies each one's inverse (rollback).
    pub fn new(
        invert: bool,
        lines: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<ChangeIndex> {
        let file = tempfile::tempfile()
            .context("creating a temporary file for the change set (is TMPDIR full?)")?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut entries = Vec::new();
        let mut offset = 0u64;
        lines(&mut |line| {
            let head = Head::quick(line)?;
            entries.push(Entry::new(
                hash32(&head.kind, &head.key),
                ChangeIndex::pack(offset, line.len()),
            ));
            w.write_all(&(line.len() as u32).to_le_bytes())?;
            w.write_all(line)?;
            offset += 4 + line.len() as u64;
            Ok(())
        })?;
        w.flush()
            .context("writing the change set to a temporary file (is TMPDIR full?)")?;
        drop(w);
        entries.sort_unstable();
        let bits = (entries.len() / 4).max(2).ilog2().min(31);
        let mut buckets = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for b in 0..(1u64 << bits) {
            while i < entries.len() && u64::from(entries[i].hash >> (32 - bits)) < b {
                i += 1;
            }
            buckets.push(i as u32);
        }
        buckets.push(entries.len() as u32);
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(ChangeIndex {
            file,
            size: offset,
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            entries,
            buckets,
            bits,
            invert,
            whole: true,
        })
    }

    /// Reads target lines whole only when the changes name at least one line in eight of the
    /// export `bundle` was made from. A whole read costs 14% more than the probe's alone
    /// (criterion, `read/probe whole+key`), while a line a change names is otherwise read twice:
    /// on a catalog where the reports are a small part, most lines are read once, plainly.
    pub fn read_whole_when_dense(&mut self, bundle: &Bundle) {
        #[derive(serde::Deserialize)]
        struct Report {
            counts: Counts,
        }
        #[derive(serde::Deserialize)]
        struct Counts {
            lines: u64,
        }
        // A report without the count (it was checked against the manifest) reads whole.
        if let Ok(r) = bundle.report_part::<Report>() {
            self.whole = self.len() as u64 * 8 >= r.counts.lines;
        }
    }

    /// Where a line is, in one number: its offset (40 bits: a terabyte) and its length (24
    /// bits, or [`LONG`] for a longer line, read from its prefix).
    fn pack(offset: u64, len: usize) -> u64 {
        assert!(offset < 1 << 40, "a change set over a terabyte");
        (offset << 24) | (len as u64).min(LONG)
    }

    /// The change set of a bundle.
    pub fn of_bundle(bundle: &Bundle, invert: bool) -> Result<ChangeIndex> {
        let mut index = ChangeIndex::new(invert, |f| {
            crate::changeset::for_each(bundle, |_, line| f(line))
        })?;
        index.read_whole_when_dense(bundle);
        Ok(index)
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it holds no change.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn read(&self, packed: u64) -> Result<Vec<u8>> {
        let (offset, len) = (packed >> 24, packed & LONG);
        let len = if len == LONG {
            let mut len = [0u8; 4];
            self.file.read_exact_at(&mut len, offset)?;
            u32::from_le_bytes(len) as u64
        } else {
            len
        };
        let mut line = vec![0u8; len as usize];
        if len > BLOCK * 4 {
            self.file.read_exact_at(&mut line, offset + 4)?;
        } else {
            BLOCKS.with(|c| c.borrow_mut().read(self, offset + 4, &mut line))?;
        }
        Ok(line)
    }

    /// The change of a line of this index's change set (its inverse for a rollback).
    pub fn change(&self, line: &[u8]) -> Result<Change> {
        let c = Change::parse(line).context("reading the change set")?;
        Ok(if self.invert { c.inverse() } else { c })
    }

    /// Where entry `i` stands in the change file (to sort entries in its order).
    pub fn position(&self, i: usize) -> u64 {
        self.entries[i].at()
    }

    /// The change of entry `i` (its inverse for a rollback).
    pub fn get(&self, i: usize) -> Result<Change> {
        self.change(&self.read(self.entries[i].at())?)
    }

    /// One (kind, key) that two changes name, if any: equal keys have equal hashes, which sit
    /// side by side; lines with equal hashes are read to tell a collision apart.
    pub fn named_twice(&self) -> Result<Option<(String, String)>> {
        for (i, w) in self.entries.windows(2).enumerate() {
            if w[0].hash != w[1].hash {
                continue;
            }
            let (a, b) = (self.read(w[0].at())?, self.read(w[1].at())?);
            let (a, b) = (Head::quick(&a)?, Head::quick(&b)?);
            if a.kind == b.kind && a.key == b.key {
                return Ok(Some((a.kind.into_owned(), a.key.into_owned())));
            }
            // A collision of the hash: compare with the other entries of this hash too.
            for e in &self.entries[i + 2..] {
                if e.hash != w[0].hash {
                    break;
                }
                let c = self.read(e.at())?;
                let c = Head::quick(&c)?;
                if (c.kind == a.kind && c.key == a.key) || (c.kind == b.kind && c.key == b.key) {
                    return Ok(Some((c.kind.into_owned(), c.key.into_owned())));
                }
            }
        }
        Ok(None)
    }

    /// The entry and the change for (kind, key), if the change set has one.
    pub fn find(&self, kind: &str, key: &str) -> Result<Option<(usize, Change)>> {
        match self.find_line(kind, key)? {
            Some((i, line)) => Ok(Some((i, self.change(&line)?))),
            None => Ok(None),
        }
    }

    /// [`ChangeIndex::find`], giving the change line as it is in the change set (not yet
    /// read, nor inverted: see [`ChangeIndex::change`]).
    pub fn find_line(&self, kind: &str, key: &str) -> Result<Option<(usize, Vec<u8>)>> {
        let h = hash32(kind, key);
        let b = (h >> (32 - self.bits)) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let start = lo + self.entries[lo..hi].partition_point(|e| e.hash < h);
        for i in start..hi {
            if self.entries[i].hash != h {
                break;
            }
            // An inverse names the same (kind, key) as its change: its head tells.
            let line = self.read(self.entries[i].at())?;
            let head = Head::quick(&line).context("reading the change set")?;
            if head.kind == kind && head.key == key {
                return Ok(Some((i, line)));
            }
        }
        Ok(None)
    }

    /// True when the index applies each change's inverse (rollback).
    pub fn inverts(&self) -> bool {
        self.invert
    }
}

/// Applies the change set of `bundle` onto the export `target`, writing `out`.
pub fn run(bundle: &Bundle, target: &Input, out: &Target, opts: &Options) -> Result<Summary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    pool.install(|| run_in_pool(bundle, target, out, opts))
}

/// Where a restore with `--carry-new` records what it carried: beside its output.
pub fn carried_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".carried.ndjson");
    PathBuf::from(name)
}

/// The first line of a carried record: which bundle it follows.
#[derive(Serialize, serde::Deserialize)]
struct CarriedHead {
    kind: String,
    bundle: String,
    changes: u64,
}

fn run_in_pool(bundle: &Bundle, target: &Input, out: &Target, opts: &Options) -> Result<Summary> {
    let tmp = |what: &str| -> Result<tempfile::NamedTempFile> {
        let dir = out
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tempfile::Builder::new()
            .prefix(".lookmig-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("{}: creating {what} (is the disk full?)", dir.display()))
    };
    let mut summary = Summary::default();
    match opts.direction {
        Direction::Rollback => {
            // What a `--carry-new` restore carried is undone first, then the bundle.
            let carried = carried_path(target.path());
            let first = read_carried(&carried, &bundle.id()?)?;
            let Some(lines) = first else {
                let index = ChangeIndex::of_bundle(bundle, true)?;
                apply_to(target, out, &index, None, opts, &mut summary, false)?;
                return finish(summary, opts);
            };
            let cindex = ChangeIndex::new(true, |f| lines.iter().try_for_each(|l| f(l)))?;
            let t = tmp("a temporary export")?;
            let t_target = Target {
                path: t.path().to_path_buf(),
                overwrite: true,
            };
            let mut first_summary = Summary::default();
            apply_to(
                target,
                &t_target,
                &cindex,
                None,
                opts,
                &mut first_summary,
                false,
            )?;
            summary.carry_changes = first_summary.changes;
            summary.carried_record = Some(carried.display().to_string());
            if first_summary.conflict_count > 0 && !opts.force {
                return Err(Failure::conflicts(first_summary));
            }
            let index = ChangeIndex::of_bundle(bundle, true)?;
            let mid = wide(Input::new(&t.path().to_string_lossy())?);
            apply_to(&mid, out, &index, None, opts, &mut summary, false)?;
            finish(summary, opts)
        }
        Direction::Restore => {
            // Two parts of the bundle, each read on a core of its own.
            let (retired, index) = std::thread::scope(|s| {
                let retired = s.spawn(|| Retired::load(bundle, opts.carry_new));
                let index = ChangeIndex::of_bundle(bundle, false);
                let retired = retired.join().expect("loading the id map does not panic");
                Ok::<_, anyhow::Error>((retired?, index?))
            })?;
            crate::migrate::timing("index");
            let carried = carried_path(&out.path);
            if !opts.carry_new {
                let newer = apply_to(
                    target,
                    out,
                    &index,
                    Some(&retired),
                    opts,
                    &mut summary,
                    false,
                )?;
                debug_assert!(newer.is_empty());
                remove_stale(&carried)?;
                return finish(summary, opts);
            }
            // Pass 1: the bundle, into a temporary export, keeping the newer records aside.
            let t1 = tmp("a temporary export")?;
            let t1_target = Target {
                path: t1.path().to_path_buf(),
                overwrite: true,
            };
            let newer = apply_to(
                target,
                &t1_target,
                &index,
                Some(&retired),
                opts,
                &mut summary,
                true,
            )?;
            if summary.conflict_count > 0 && !opts.force {
                return Err(Failure::conflicts(summary));
            }
            let mid = wide(Input::new(&t1.path().to_string_lossy())?);
            // Pass 2: the survivors' curation and the field definitions, as the bundle left them.
            let newer_records: Vec<(u64, Record)> = newer
                .into_iter()
                .filter_map(|(no, bytes)| crate::record::parse_line(&bytes).ok().map(|r| (no, r)))
                .filter(|(_, r)| !retired.is_stale(r))
                .collect();
            let survivors = carry::survivors_of(
                &retired,
                &newer_records
                    .iter()
                    .map(|(_, r)| r.clone())
                    .collect::<Vec<_>>(),
            );
            let mut fields = Fields::default();
            let mut current = Vec::new();
            let mut lines = mid.lines()?;
            while let Some(l) = lines.next_line()? {
                let Ok(p) = Probe::parse(&l.bytes) else {
                    continue;
                };
                if p.kind == Kind::CustomField {
                    fields.insert_record(&Record::from_validated(&l.bytes));
                } else if let Some((otype, oid)) = p.subject() {
                    let s = crate::record::Subject {
                        otype: otype.into_owned(),
                        oid,
                    };
                    if survivors
                        .binary_search_by(|x| (&x.otype, x.oid).cmp(&(&s.otype, s.oid)))
                        .is_ok()
                    {
                        current.push((l.no, Record::from_validated(&l.bytes)));
                    }
                }
            }
            let carried_set = carry::carry(&retired, &fields, newer_records, current)?;
            summary.carried = carried_set.by_kind;
            summary.carry_conflicts = carried_set.conflicts;
            // Pass 3: what was carried, onto the result of pass 1.
            let lines = carried_set.changes;
            let cindex = ChangeIndex::new(false, |f| lines.iter().try_for_each(|l| f(l)))?;
            let mut third = Summary::default();
            apply_to(&mid, out, &cindex, None, opts, &mut third, false)?;
            if third.conflict_count > 0 {
                bail!(
                    "carrying the newer curation met its own conflicts (a bug): {}",
                    Failure::conflicts(third)
                );
            }
            summary.carry_changes = third.changes;
            summary.lines_written = third.lines_written;
            summary.skipped_lines = third
                .skipped_lines
                .clone()
                .into_iter()
                .chain(summary.skipped_lines)
                .collect();
            if lines.is_empty() {
                remove_stale(&carried)?;
            } else {
                write_carried(&carried, &bundle.id()?, &lines)?;
                summary.carried_record = Some(carried.display().to_string());
            }
            finish(summary, opts)
        }
    }
}

/// Inputs written by a pass hold records from change lines, which may be up to the bundle's
/// line limit.
fn wide(mut input: Input) -> Input {
    input.max_line = input.max_line.saturating_mul(4);
    input
}

fn finish(mut summary: Summary, opts: &Options) -> Result<Summary> {
    summary.skipped_lines.sort_by_key(|s| s.line);
    if summary.conflict_count > 0 && !opts.force {
        return Err(Failure::conflicts(summary));
    }
    Ok(summary)
}

fn remove_stale(carried: &Path) -> Result<()> {
    match std::fs::remove_file(carried) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
            format!(
                "{}: removing an earlier record of carried curation",
                carried.display()
            )
        }),
        _ => Ok(()),
    }
}

fn write_carried(path: &Path, bundle_id: &str, lines: &[Vec<u8>]) -> Result<()> {
    let target = Target {
        path: path.to_path_buf(),
        overwrite: true,
    };
    let file = AtomicFile::create(&target)?;
    let mut w = std::io::BufWriter::new(file.file());
    let head = CarriedHead {
        kind: "lookmig-carried".into(),
        bundle: bundle_id.into(),
        changes: lines.len() as u64,
    };
    serde_json::to_writer(&mut w, &head)?;
    w.write_all(b"\n")?;
    for l in lines {
        w.write_all(l)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("{}: writing (is the disk full?)", path.display()))?;
    drop(w);
    file.commit()
}

/// The change lines a `--carry-new` restore recorded beside `path`, if it is there and follows
/// this bundle.
fn read_carried(path: &Path, bundle_id: &str) -> Result<Option<Vec<Vec<u8>>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: reading", path.display())),
    };
    let mut lines = std::io::BufReader::new(file).split(b'\n');
    let Some(head) = lines.next() else {
        return Ok(None);
    };
    let head: CarriedHead = serde_json::from_slice(&head?)
        .with_context(|| format!("{}:1: not a record of carried curation", path.display()))?;
    if head.bundle != bundle_id {
        bail!(
            "{}: records curation carried by another bundle ({}); roll that one back first, or move the file away",
            path.display(),
            head.bundle
        );
    }
    let mut out = Vec::new();
    for l in lines {
        let l = l.with_context(|| format!("{}: reading", path.display()))?;
        if !l.is_empty() {
            out.push(l);
        }
    }
    Ok(Some(out))
}

/// The `--max-errors` rule of a pass: a target line that is not a valid record is copied
/// through as it is, and listed, or fails the pass when more than `--max-errors` lines are.
pub(crate) fn bad_lines(opts: &Options) -> BadLines {
    BadLines {
        max_errors: opts.max_errors,
        hint: "fix the line in the target export, or pass --max-errors N to copy bad lines through",
    }
}

/// A target line as the parallel part of a pass (restore, rollback and verify's rehearsal of
/// both) read it: a record, named by its kind and key, with the change of the index that has
/// the same key, if any (its entry, and what the pass made of it: `C`), and what else the pass
/// keeps of the line (`X`).
pub(crate) struct Seen<C, X> {
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) change: Option<(usize, C)>,
    pub(crate) more: X,
}

/// The per-line rules of SPEC §7 that need no order, for the parallel part of a pass: reads one
/// target line, or says why it is no record (such a line goes through as it is, since no change
/// can name it). `then` gets the line's record and its change, and says what the pass makes of
/// the change and what else it keeps.
pub(crate) fn read_line<'a, C, X>(
    index: &ChangeIndex,
    bytes: &'a [u8],
    then: impl FnOnce(&Probe<'a>, Option<(usize, Vec<u8>)>) -> Result<(Option<(usize, C)>, X)>,
) -> Result<ParseResult<Seen<C, X>>> {
    // Every field kept, when changes are many: a line a change names is judged on its whole
    // record next ([`RawRecord::of_probe`]).
    let read = if index.whole {
        Probe::parse_whole
    } else {
        Probe::parse
    };
    let probe = match read(bytes) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let (kind, key) = (probe.kind_name.to_string(), probe.key());
    let (change, more) = then(&probe, index.find_line(&kind, &key)?)?;
    // The key of a change is checked in order ([`InOrder::place`]); the others after the pass.
    let key_hash = change
        .is_none()
        .then(|| crate::export::key_hash(&kind, &key));
    Ok(Ok(Parsed {
        kind: probe.kind,
        key_hash,
        value: Seen {
            kind,
            key,
            change,
            more,
        },
    }))
}

/// Where [`InOrder`] puts a target record.
pub(crate) enum Place {
    /// A later line with the key of a change already met: noted as skipped, copied as it is.
    Duplicate,
    /// No change names it: copied as it is (its key is checked for duplicates at the end).
    Unnamed,
    /// The change with this index names it: judged by it.
    Changed(usize),
}

/// Restore's own per-line rule that needs the lines in file order, for restore, rollback and
/// verify alike: of two lines with the key of a change, the later one is a bad line, met here
/// (the keys of other lines are checked by the [`Reader`] after the pass). It also remembers
/// which changes met their record, for the changes left to apply after the last line.
pub(crate) struct InOrder {
    /// Per entry of the index, a bit: a target record met it (1.5 MB for 12 million changes).
    met: Vec<u64>,
}

impl InOrder {
    /// No change of `index` met yet.
    pub(crate) fn new(index: &ChangeIndex) -> InOrder {
        InOrder {
            met: vec![0; index.len().div_ceil(64)],
        }
    }

    /// A target record met entry `i`.
    fn is_met(&self, i: usize) -> bool {
        self.met[i / 64] & (1 << (i % 64)) != 0
    }

    /// Places the record `seen` on `line`, noting it with `order` as skipped when it is the
    /// second line with the key of a change (or failing past `--max-errors`).
    pub(crate) fn place<C, X>(
        &mut self,
        order: &mut Order<'_>,
        line: &Line,
        seen: &Seen<C, X>,
    ) -> Result<Place> {
        let Some((i, _)) = seen.change else {
            return Ok(Place::Unnamed);
        };
        let before = self.is_met(i);
        self.met[i / 64] |= 1 << (i % 64);
        if before {
            let e = format!(
                "duplicate record key: {} {:?} occurs on an earlier line",
                seen.kind, seen.key
            );
            order.bad(line, e)?;
            return Ok(Place::Duplicate);
        }
        Ok(Place::Changed(i))
    }

    /// The entries of `index` no target record met, in the order of the change file (as u32,
    /// half the memory: the index's buckets count entries in u32 already).
    pub(crate) fn unmet(&self, index: &ChangeIndex) -> Vec<u32> {
        let mut rest: Vec<u32> = (0..index.len())
            .filter(|&i| !self.is_met(i))
            .map(|i| i as u32)
            .collect();
        rest.sort_unstable_by_key(|&i| index.position(i as usize));
        rest
    }
}

/// A change judged against the record a target line holds, in the parallel part of a pass;
/// the pass counts it, in order, only when the line is the first with the change's key.
struct Judged {
    /// The change, read whole: None for one read as [`OnPrior`], which never conflicts.
    change: Option<Change>,
    /// The step, and what to write when the change is carried out (applies, or is forced):
    /// the record after, or None for a delete.
    step: Step,
    result: Option<Option<Vec<u8>>>,
}

fn judge_line(
    index: &ChangeIndex,
    line: &[u8],
    current: &RawRecord,
    force: bool,
) -> Result<Judged> {
    // Most changes a restore meets expect the target's record byte for byte: their prior is
    // not read again (a rollback's inverse is read whole).
    if !index.inverts() {
        if let Some(on) = OnPrior::read(line, current.bytes) {
            let step = on.judge(current);
            let result = (step == Step::Apply).then(|| on.result(current));
            return Ok(Judged {
                change: None,
                step,
                result,
            });
        }
    }
    let change = index.change(line)?;
    let step = change.judge(Some(current));
    let carried_out = step == Step::Apply || (force && step == Step::Conflict);
    let result = carried_out.then(|| change.result(Some(current)));
    Ok(Judged {
        change: Some(change),
        step,
        result,
    })
}

/// One pass: `index` applied onto `target`, written to `out` (committed only when there is no
/// conflict, or `--force`). With `retired`, records no change covers are checked for
/// references to retired versions; those found are conflicts, or, with `keep_newer`, returned
/// (line, bytes) for carrying.
fn apply_to(
    target: &Input,
    out: &Target,
    index: &ChangeIndex,
    retired: Option<&Retired>,
    opts: &Options,
    summary: &mut Summary,
    keep_newer: bool,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let file = AtomicFile::create(out)?;
    let compress = out.path.extension().is_some_and(|e| e == "zst");
    let mut w = LineWriter::new(file.file(), compress, opts.level, opts.threads)?;
    let werr = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "{}: writing (is the disk full?)",
            out.path.display()
        ))
    };
    let mut kept_newer = Vec::new();
    let mut candidates: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut fields = Fields::default();
    let mut in_order = InOrder::new(index);
    let progress = Progress::lines(opts.progress, "restoring");
    let read = |l: &Line| {
        read_line(index, &l.bytes, |p, change| {
            let newer = match (retired, &change) {
                (Some(r), None) if r.may_refer(p) => {
                    carry::check(r, &Record::from_validated(&l.bytes), None, Some(l.no))
                }
                _ => None,
            };
            let judged = match change {
                Some((i, line)) => {
                    let current = RawRecord::of_probe(p);
                    Some((i, Box::new(judge_line(index, &line, &current, opts.force)?)))
                }
                None => None,
            };
            Ok((judged, newer))
        })
    };
    let reader = Reader::new(target, bad_lines(opts), 2 << 20, read)?.progress(&progress);
    let mut outcome = reader.for_each(|order, line, item| {
        let Item::Good(seen) = item else {
            // No change can name a line that is not a record: it goes through as it is.
            w.line(&line.bytes).map_err(werr)?;
            summary.lines_written += 1;
            return Ok(());
        };
        let place = in_order.place(order, &line, &seen)?;
        if seen.kind == "custom_field" {
            fields.insert_record(&Record::from_validated(&line.bytes));
        }
        if seen.more.is_some() {
            // Judged once every field definition is known.
            candidates.push((line.no, line.bytes.to_vec()));
        }
        let write = match (place, seen.change) {
            (Place::Changed(_), Some((_, judged))) => {
                let Judged {
                    change,
                    step,
                    result,
                } = *judged;
                let conflict = || {
                    let current = RawRecord::parse(&line.bytes).expect("parsed once already");
                    let change = change
                        .as_ref()
                        .expect("a change that conflicts was read whole");
                    Conflict::of_change(change, Some(&current), Some(line.no))
                };
                if summary.judged(step, opts.force, conflict) {
                    Some(result.expect("the result of a change that applies"))
                } else {
                    None
                }
            }
            // Unnamed, or a duplicate: copied as it is.
            _ => None,
        };
        match write {
            None => w.line(&line.bytes).map_err(werr)?,
            Some(None) => return Ok(()),
            Some(Some(b)) => w.line(&b).map_err(werr)?,
        }
        summary.lines_written += 1;
        Ok(())
    })?;
    progress.finish();
    // Changes whose record the target does not hold, in the change file's order.
    for i in in_order.unmet(index) {
        let change = index.get(i as usize)?;
        let step = change.judge(None);
        if summary.judged(step, opts.force, || {
            Conflict::of_change(&change, None, None)
        }) {
            if let Some(b) = change.result(None) {
                w.line(&b).map_err(werr)?;
                summary.lines_written += 1;
            }
        }
    }
    // Each pass starts a summary of its own, so the skipped lines are the reader's.
    summary.skipped_lines.append(&mut outcome.skipped);
    if let Some(r) = retired {
        for (no, bytes) in candidates {
            let rec = Record::from_validated(&bytes);
            let Some(n) = carry::check(r, &rec, Some(&fields), Some(no)) else {
                continue;
            };
            if keep_newer && !n.stale_version {
                summary.newer += 1;
                kept_newer.push((no, bytes));
            } else {
                summary.conflict(Conflict::of_newer(&n, r));
            }
        }
    }
    if summary.conflict_count > 0 && !opts.force {
        return Ok(kept_newer); // nothing is committed; the caller reports the conflicts
    }
    w.finish().map_err(werr)?;
    file.commit().context("finishing the restored export")?;
    Ok(kept_newer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Two tag keys whose 32-bit index hashes are equal (a birthday search: about 80,000 keys).
    fn colliding_keys() -> (String, String) {
        let mut seen: HashMap<u32, String> = HashMap::new();
        for i in 0.. {
            let key = format!("bi_report:{i}:pii");
            if let Some(first) = seen.insert(hash32("tag", &key), key.clone()) {
                return (first, key);
            }
        }
        unreachable!()
    }

    fn delete_line(key: &str) -> String {
        let oid: i64 = key.split(':').nth(1).unwrap().parse().unwrap();
        format!(
            r#"{{"op":"delete","kind":"tag","key":"{key}","prior":{{"kind":"tag","name":"pii","subject":{{"otype":"bi_report","oid":{oid}}}}}}}"#
        )
    }

    fn index_of(keys: &[&str]) -> ChangeIndex {
        let lines: Vec<String> = keys.iter().map(|k| delete_line(k)).collect();
        ChangeIndex::new(false, |f| lines.iter().try_for_each(|l| f(l.as_bytes()))).unwrap()
    }

    #[test]
    fn lines_read_through_the_block_cache_are_the_lines_written() {
        // Lengths around and past a block, so that lines start and end anywhere in one and
        // span two or more; two indexes read in turn share each thread's cache.
        let lines = |pad: &str| -> Vec<String> {
            (0..300)
                .map(|i| {
                    let note = pad.repeat((i * 37) % 1500 + if i % 50 == 0 { 6000 } else { 0 });
                    format!(
                        r#"{{"op":"create","kind":"tag","key":"bi_report:{i}:x","record":{{"kind":"tag","name":"{note}","subject":{{"otype":"bi_report","oid":{i}}}}}}}"#
                    )
                })
                .collect()
        };
        let (a, b) = (lines("a"), lines("bc"));
        let index = |ls: &[String]| {
            ChangeIndex::new(false, |f| ls.iter().try_for_each(|l| f(l.as_bytes())))
        };
        let (ia, ib) = (index(&a).unwrap(), index(&b).unwrap());
        assert!(
            ia.size > (BlockCache::BLOCKS as u64) * BLOCK,
            "the lines fill more blocks than a cache holds"
        );
        // Look-ups far apart and back, as a restore's threads make them.
        let order = (0..300).map(|i| (i * 151) % 300).chain(0..300);
        for i in order {
            for (ix, ls) in [(&ia, &a), (&ib, &b)] {
                let key = format!("bi_report:{i}:x");
                let (e, _) = ix.find("tag", &key).unwrap().expect("indexed");
                let line = ix.read(ix.entries[e].at()).unwrap();
                assert_eq!(line, ls[i].as_bytes(), "line {i}");
            }
        }
    }

    #[test]
    fn keys_that_share_a_hash_are_told_apart_by_their_lines() {
        let (a, b) = colliding_keys();
        assert_eq!(hash32("tag", &a), hash32("tag", &b));
        let index = index_of(&["bi_report:1:pii", &a, &b, "bi_report:2:pii"]);
        assert_eq!(index.len(), 4);
        for key in [&a, &b, "bi_report:1:pii", "bi_report:2:pii"] {
            let (i, c) = index.find("tag", key).unwrap().expect(key);
            assert_eq!(c.key, key);
            assert_eq!(index.get(i).unwrap().key, key);
        }
        assert!(index.find("tag", "bi_report:3:pii").unwrap().is_none());
        assert!(index.find("star", &a).unwrap().is_none());
        assert_eq!(
            index.named_twice().unwrap(),
            None,
            "a collision is no repeat"
        );
        // A key given twice is found among colliding ones, whichever sorts first.
        let twice = index_of(&[&a, &b, &a]);
        assert_eq!(
            twice.named_twice().unwrap(),
            Some(("tag".into(), a.clone()))
        );
        let twice = index_of(&[&b, &a, &b]);
        assert_eq!(
            twice.named_twice().unwrap(),
            Some(("tag".into(), b.clone()))
        );
    }

    #[test]
    fn entries_keep_where_their_line_is() {
        for at in [
            0,
            1,
            u64::from(u32::MAX),
            (1 << 40) - 1,
            ChangeIndex::pack(12345, 77),
        ] {
            assert_eq!(Entry::new(7, at).at(), at);
        }
        // Sorted by hash first, then by place.
        assert!(Entry::new(1, u64::MAX) < Entry::new(2, 0));
        assert!(Entry::new(2, 1 << 32) > Entry::new(2, (1 << 32) - 1));
    }
}
