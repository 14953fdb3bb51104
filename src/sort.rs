//! An external sort of (key, line) pairs, so that the change set and the id map of a catalog of
//! any size are written in their sorted order with bounded memory: pairs collect in one arena
//! until it is full, then go to disk as a sorted run; [`Sorter::finish`] merges the runs.

use anyhow::{Context, Result};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

/// Bytes of pairs held in memory before a run is written.
pub const DEFAULT_LIMIT: usize = 32 << 20;

/// The in-memory run size of a sorter: `LOOKMIG_SORT_RUN_BYTES` when set (a test knob, read once, so
/// that small exports spill runs too), else `default`.
pub fn run_bytes(default: usize) -> usize {
    static SET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    SET.get_or_init(|| crate::input::size_from_env("LOOKMIG_SORT_RUN_BYTES"))
        .unwrap_or(default)
}

/// Runs spilled to disk by every sorter of this process (reported with `LOOKMIG_TIMING`, so a
/// test can see that a small `LOOKMIG_SORT_RUN_BYTES` did spill).
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many sorted runs the sorters of this process spilled to disk.
pub fn runs_spilled() -> u64 {
    RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where a pair is in an arena, and the first bytes of its key.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The key's first 16 bytes, big-endian, zero-padded ([`prefix`]).
    prefix: u128,
    offset: usize,
    key: u32,
    line: u32,
}

/// The pairs of an arena.
type Index = Vec<Entry>;

/// The first 16 bytes of `key` as one big-endian number, zero-padded: prefixes order keys as
/// their bytes do, except that equal prefixes leave it to the whole keys. Most comparisons of a
/// sort then take one integer comparison instead of a call to `memcmp` (the merge's held
/// curation is keyed by 16 bytes exactly).
fn prefix(key: &[u8]) -> u128 {
    let mut first = [0u8; 16];
    let n = key.len().min(16);
    first[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(first)
}

/// A run being sorted and written by a thread of its own, which hands back the run's file and
/// its emptied buffers for the next run.
type Pending = std::thread::JoinHandle<Result<(File, Vec<u8>, Index)>>;

/// Collects pairs and gives them back sorted by key (keys are compared as bytes).
pub struct Sorter {
    arena: Vec<u8>,
    /// The pairs in `arena`.
    index: Index,
    limit: usize,
    runs: Vec<File>,
    count: u64,
    /// The run spilled last, while it is still being sorted and written: the caller (a
    /// pipeline's sink, on which every pair waits) goes on filling the next one meanwhile.
    pending: Option<Pending>,
}

impl Sorter {
    /// A sorter that spills past `limit` bytes.
    pub fn new(limit: usize) -> Sorter {
        Sorter {
            arena: Vec::new(),
            index: Vec::new(),
            limit,
            runs: Vec::new(),
            count: 0,
            pending: None,
        }
    }

    /// Adds one pair.
    pub fn push(&mut self, key: &[u8], line: &[u8]) -> Result<()> {
        self.index.push(Entry {
            prefix: prefix(key),
            offset: self.arena.len(),
            key: key.len() as u32,
            line: line.len() as u32,
        });
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(line);
        self.count += 1;
        if self.arena.len() + self.index.len() * std::mem::size_of::<Entry>() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// How many pairs were pushed.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn sort_index(&mut self) {
        sort_index(&self.arena, &mut self.index);
    }

    /// Sends the pairs held to a run on disk, sorted by a thread of its own; at most one run
    /// is in flight, so memory holds two runs' pairs at most.
    fn spill(&mut self) -> Result<()> {
        let (arena, index) = self.wait()?;
        let arena = std::mem::replace(&mut self.arena, arena);
        let index = std::mem::replace(&mut self.index, index);
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // The buffers go to the thread once it has started: where none can start, the run is
        // written here.
        match std::thread::Builder::new()
            .name("sort-run".into())
            .spawn(move || {
                let (arena, index) = rx.recv().expect("the run is sent once spawned");
                write_run(arena, index)
            }) {
            Ok(h) => {
                tx.send((arena, index))
                    .expect("the run thread waits for its run");
                self.pending = Some(h);
            }
            Err(_) => {
                let (file, arena, index) = write_run(arena, index)?;
                self.runs.push(file);
                self.arena = arena;
                self.index = index;
            }
        }
        Ok(())
    }

    /// Waits for the run in flight, if any, and keeps its file; its emptied buffers are returned
    /// (new ones when there was none).
    fn wait(&mut self) -> Result<(Vec<u8>, Index)> {
        let Some(h) = self.pending.take() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (file, arena, index) = h.join().expect("writing a sort run does not panic")?;
        self.runs.push(file);
        Ok((arena, index))
    }

    /// Calls `f(key, line)` for every pair in key order.
    pub fn finish(mut self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        if self.runs.is_empty() && self.pending.is_none() {
            self.sort_index();
            for e in &self.index {
                let (o, k) = (e.offset, e.key as usize);
                f(
                    &self.arena[o..o + k],
                    &self.arena[o + k..o + k + e.line as usize],
                )?;
            }
            return Ok(());
        }
        if !self.index.is_empty() {
            self.spill()?;
        }
        self.wait()?;
        self.arena = Vec::new();
        self.index = Vec::new();
        let mut readers: Vec<Run> = Vec::with_capacity(self.runs.len());
        for mut file in std::mem::take(&mut self.runs) {
            use std::io::Seek;
            file.rewind()?;
            readers.push(Run {
                r: BufReader::with_capacity(64 << 10, file),
                line: Vec::new(),
            });
        }
        // The heap holds each run's next key, ordered by (key, run), the key's prefix first.
        // The pair handed out is replaced in place by its run's next one (one sift, and its
        // key read into the same buffer): no allocation per pair, and the same order as
        // popping and pushing.
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            let mut key = Vec::new();
            if r.next(&mut key)? {
                heap.push(Reverse((prefix(&key), key, i)));
            }
        }
        while let Some(mut top) = heap.peek_mut() {
            let Reverse((first, key, i)) = &mut *top;
            let r = &mut readers[*i];
            f(key, &r.line)?;
            let more = r.next(key)?;
            *first = prefix(key);
            if !more {
                std::collections::binary_heap::PeekMut::pop(top);
            }
        }
        // Closing a run frees its pages in the kernel, on the caller's time: gigabytes of
        // runs at 800,000 reports (3.5% of the bundle stage). Another thread closes them.
        // (Where no thread can start, they close here.)
        let _ = std::thread::Builder::new().spawn(move || drop(readers));
        Ok(())
    }
}

fn sort_index(arena: &[u8], index: &mut Index) {
    let key = |e: &Entry| &arena[e.offset..e.offset + e.key as usize];
    index.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| key(a).cmp(key(b))));
}

/// Sorts one run's pairs and writes them to a temporary file; gives back the file and the
/// buffers, emptied.
fn write_run(mut arena: Vec<u8>, mut index: Index) -> Result<(File, Vec<u8>, Index)> {
    sort_index(&arena, &mut index);
    let file =
        tempfile::tempfile().context("creating a temporary file for sorting (is TMPDIR full?)")?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    for e in &index {
        w.write_all(&e.key.to_le_bytes())?;
        w.write_all(&e.line.to_le_bytes())?;
        w.write_all(&arena[e.offset..e.offset + e.key as usize + e.line as usize])?;
    }
    w.flush().context("writing a sort run (is TMPDIR full?)")?;
    drop(w);
    arena.clear();
    index.clear();
    Ok((file, arena, index))
}

/// A sorted run on disk, and the line of the pair last read from it (its key is in the
/// merge's heap).
struct Run {
    r: BufReader<File>,
    line: Vec<u8>,
}

impl Run {
    /// Reads the next pair: its key into `key`, its line into `self.line`; false at the end.
    fn next(&mut self, key: &mut Vec<u8>) -> Result<bool> {
        let mut lens = [0u8; 8];
        match self.r.read_exact(&mut lens) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e).context("reading a sort run"),
        }
        let k = u32::from_le_bytes(lens[..4].try_into().expect("4 bytes")) as usize;
        let l = u32::from_le_bytes(lens[4..].try_into().expect("4 bytes")) as usize;
        key.resize(k, 0);
        self.line.resize(l, 0);
        self.r.read_exact(key).context("reading a sort run")?;
        self.r
            .read_exact(&mut self.line)
            .context("reading a sort run")?;
        Ok(true)
    }
}

/// An external sort of fixed-size pairs of integers, for the many small records of one kind a
/// pass produces (a key hash and a line number per line of the export): no per-pair
/// allocation, a plain integer sort per run, and a merge that compares integers.
pub struct PairSorter {
    pairs: Vec<(u64, u64)>,
    /// Pairs held in memory before a run is written.
    limit: usize,
    runs: Vec<File>,
}

impl PairSorter {
    /// A sorter that spills past `memory` bytes of pairs.
    pub fn new(memory: usize) -> PairSorter {
        PairSorter {
            pairs: Vec::new(),
            limit: (memory / std::mem::size_of::<(u64, u64)>()).max(1),
            runs: Vec::new(),
        }
    }

    /// Adds one pair.
    pub fn push(&mut self, a: u64, b: u64) -> Result<()> {
        if self.pairs.capacity() == 0 {
            // One allocation of the whole run, not a doubling that copies it on the way.
            self.pairs.reserve_exact(self.limit.min(1 << 16));
        } else if self.pairs.len() == self.pairs.capacity() {
            self.pairs.reserve_exact(self.limit - self.pairs.len());
        }
        self.pairs.push((a, b));
        if self.pairs.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.pairs.sort_unstable();
        let file = tempfile::tempfile()
            .context("creating a temporary file for sorting (is TMPDIR full?)")?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        for &(a, b) in &self.pairs {
            w.write_all(&a.to_le_bytes())?;
            w.write_all(&b.to_le_bytes())?;
        }
        w.flush().context("writing a sort run (is TMPDIR full?)")?;
        drop(w);
        self.runs.push(file);
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pairs.clear();
        Ok(())
    }

    /// Calls `f(a, b)` for every pair in order.
    pub fn finish(mut self, mut f: impl FnMut(u64, u64) -> Result<()>) -> Result<()> {
        if self.runs.is_empty() {
            self.pairs.sort_unstable();
            for &(a, b) in &self.pairs {
                f(a, b)?;
            }
            return Ok(());
        }
        if !self.pairs.is_empty() {
            self.spill()?;
        }
        self.pairs = Vec::new();
        let mut readers = Vec::with_capacity(self.runs.len());
        for mut file in std::mem::take(&mut self.runs) {
            use std::io::Seek;
            file.rewind()?;
            readers.push(BufReader::with_capacity(64 << 10, file));
        }
        let next = |r: &mut BufReader<File>| -> Result<Option<(u64, u64)>> {
            let mut buf = [0u8; 16];
            match r.read_exact(&mut buf) {
                Ok(()) => Ok(Some((
                    u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(buf[8..].try_into().expect("8 bytes")),
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
                Err(e) => Err(e).context("reading a sort run"),
            }
        };
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some((a, b)) = next(r)? {
                heap.push(Reverse((a, b, i)));
            }
        }
        while let Some(Reverse((a, b, i))) = heap.pop() {
            f(a, b)?;
            if let Some((a, b)) = next(&mut readers[i])? {
                heap.push(Reverse((a, b, i)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(pairs: &[(Vec<u8>, Vec<u8>)], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut s = Sorter::new(limit);
        for (k, l) in pairs {
            s.push(k, l).unwrap();
        }
        let mut out = Vec::new();
        s.finish(|k, l| {
            out.push((k.to_vec(), l.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    proptest! {
        #[test]
        fn spilling_gives_the_same_order_as_sorting_in_memory(
            pairs in proptest::collection::vec((
                // Short keys, and keys that share 15 bytes and end past the 16 of a prefix.
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..6))
                    .prop_map(|(long, k)| if long { [&[7u8; 15][..], &k].concat() } else { k }),
                proptest::collection::vec(any::<u8>(), 0..20),
            ), 0..300),
            limit in 40usize..400,
        ) {
            // Unique keys, as the change set has.
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<_> = pairs.into_iter().filter(|p| seen.insert(p.0.clone())).collect();
            let mut want = pairs.clone();
            want.sort();
            prop_assert_eq!(sorted(&pairs, limit), want.clone());
            prop_assert_eq!(sorted(&pairs, usize::MAX), want);
        }
    }

    proptest! {
        #[test]
        fn pairs_spilled_or_not_come_back_sorted(
            pairs in proptest::collection::vec((0u64..50, any::<u64>()), 0..400),
            memory in 16usize..2000,
        ) {
            let mut want = pairs.clone();
            want.sort_unstable();
            for memory in [memory, usize::MAX] {
                let mut s = PairSorter::new(memory);
                for &(a, b) in &pairs {
                    s.push(a, b).unwrap();
                }
                let mut got = Vec::new();
                s.finish(|a, b| {
                    got.push((a, b));
                    Ok(())
                })
                .unwrap();
                prop_assert_eq!(&got, &want);
            }
        }
    }
}
