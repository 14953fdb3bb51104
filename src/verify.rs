//! Verify (SPEC §7): a bundle against its manifest and, given the source export, the
//! **conservation law** — every curation item of every group is on the survivor afterwards or
//! is a conflict in the report; no record outside the change set differs; and the change set
//! applied to the export, then rolled back, gives the export again.
//!
//! The restore and the rollback are rehearsed with the restore's own engine — its change index
//! ([`crate::restore::ChangeIndex`]), the guards and results of [`crate::changeset`], the check
//! for records made after the export ([`crate::carry`]) and its summary of conflicts — in one
//! streaming pass over the export, record by record, instead of writing the restored and the
//! rolled-back exports to files and reading them again: a record of the export is judged by its
//! change, the record the restore leaves by the inverse of that change, and what comes back is
//! compared with the export through an order-free digest of line hashes. A line no change names
//! goes through both unchanged, as the restore copies it; so "no record outside the change set
//! differs" comes down to every record the change set makes being a valid record with its
//! change's key.
//!
//! What the restore leaves is then looked at independently of the merge code, so a bug in the
//! merge shows here instead of being repeated: the merge keys, "empty" and the reference repair
//! the law needs are verify's own ([`law`]).

use crate::bundle::{self, Bundle};
use crate::carry::{self, Newer, Retired};
use crate::changeset::{Change, Head, RawRecord, Step};
use crate::error::Failure;
use crate::export::{Item, Reader};
use crate::groups::{COLUMN, REPORT};
use crate::input::{Finder, Input, Line};
use crate::record::{canonical_json, DuplicateKeys, Kind, Probe, Record, SeenKeys, Subject};
use crate::restore::{self, ChangeIndex, Conflict, Summary};
use anyhow::{Context, Result};
use memchr::memmem;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

mod law;

/// What verify found.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// Files checked against the manifest.
    pub files: u64,
    /// Curation items of multi-version groups checked on their survivor.
    pub curation_items: u64,
    /// Records of the export checked through restore and rollback.
    pub records: u64,
    /// Every broken rule, one line each; empty when the bundle is sound.
    pub failures: Vec<String>,
}

/// Verifies `dir` and, when given, the law against `export`.
pub fn run(dir: &std::path::Path, export: Option<&Input>, threads: usize) -> Result<Verdict> {
    let b = bundle::open(dir)?;
    let mut v = Verdict {
        files: b.manifest.files.len() as u64 + 1,
        ..Verdict::default()
    };
    let Some(export) = export else { return Ok(v) };
    let sha = export.sha256()?;
    if sha != b.manifest.input_sha256 {
        v.failures.push(format!(
            "{} is not the export this bundle was made from (SHA-256 {sha}, the manifest says {})",
            export.name, b.manifest.input_sha256
        ));
        return Ok(v);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| check_law(&b, export, &mut v))?;
    Ok(v)
}

/// The change set, indexed as the restore indexes it; checks on the way that it is in the order
/// of [`crate::changeset`] (its streams: phase, then kind) with each key once.
fn change_index(b: &Bundle, v: &mut Verdict) -> Result<ChangeIndex> {
    let mut prev = 0;
    let mut in_order = true;
    let mut index = ChangeIndex::new(false, |f| {
        crate::changeset::for_each(b, |_, line| {
            let h = Head::quick(line)?;
            let stream = crate::changeset::stream(h.op, &h.kind);
            if in_order && stream < prev {
                in_order = false;
                v.failures.push(format!(
                    "changes are not in order (phase, kind) at {} {:?}",
                    h.kind, h.key
                ));
            }
            prev = stream;
            f(line)
        })
    })?;
    index.read_whole_when_dense(b);
    if index.named_twice()?.is_some() {
        v.failures
            .push("the change set names one (kind, key) twice".into());
    }
    Ok(index)
}

/// The hash of a line for the order-free digests: restore and rollback write every record as
/// the bundle or the export holds it, so the rolled-back export must give back the same bytes.
fn line_hash(bytes: &[u8]) -> u128 {
    SeenKeys::hash("line", &String::from_utf8_lossy(bytes.trim_ascii()))
}

/// An order-free digest of lines (count, sum and xor of their hashes): equal when two exports
/// hold the same lines in any order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    lines: u64,
    sum: u128,
    xor: u128,
}

impl Digest {
    fn add(&mut self, hash: u128) {
        self.lines += 1;
        self.sum = self.sum.wrapping_add(hash);
        self.xor ^= hash;
    }
}

/// Restore then rollback of one change, onto the record the export holds (or its absence).
struct Rehearsed {
    restore: Step,
    /// The conflict, when the restore's step is one.
    restore_conflict: Option<Conflict>,
    /// The restore leaves a record with the change's key (false: it removes it, or makes none).
    restored: bool,
    /// What is wrong with the record the restore leaves: it is not a valid record, or it has
    /// another key than its change's (the rollback then copies it as a line no change names).
    stray: Option<String>,
    rollback: Step,
    rollback_conflict: Option<Conflict>,
    /// The export's line comes back as it was: counted on both sides, hashed on neither.
    same: bool,
    /// Hashes of the export's line and of the line after restore then rollback (None: absent).
    before: Option<u128>,
    after: Option<u128>,
    /// What the restored record holds on a survivor, for the law.
    found: Vec<u128>,
}

/// Rehearses change `c` onto `cur` (the export's record for its key, or None), as
/// [`crate::restore`] applies it and then its inverse onto the result.
fn rehearse(c: Change, cur: Option<RawRecord>, law: &Law) -> Result<Rehearsed> {
    let current = cur.as_ref().map(|r| r.bytes);
    let mut r = Rehearsed {
        restore: c.judge(cur.as_ref()),
        restore_conflict: None,
        restored: false,
        stray: None,
        rollback: Step::Already,
        rollback_conflict: None,
        same: false,
        before: None,
        after: None,
        found: Vec::new(),
    };
    let restored = match r.restore {
        Step::Conflict => {
            r.restore_conflict = Some(Conflict::of_change(&c, cur.as_ref(), None));
            return Ok(r); // verify stops at the restore: no digest
        }
        Step::Apply => c.result(cur.as_ref()),
        Step::Already => current.map(<[u8]>::to_vec),
    };
    let Some(bytes) = &restored else {
        // The record is gone: the rollback meets the inverse with no record.
        let inverse = c.inverse_given(cur.as_ref());
        r.rollback = inverse.judge(None);
        match r.rollback {
            Step::Conflict => {
                r.rollback_conflict = Some(Conflict::of_change(&inverse, None, None));
            }
            Step::Apply => round_trip(&mut r, current, inverse.result(None).as_deref()),
            Step::Already => round_trip(&mut r, current, None),
        }
        return Ok(r);
    };
    r.restored = true;
    // Read whole once: validated, keyed, looked in for the law, and judged by the rollback.
    let probe = match Probe::parse_whole(bytes) {
        Err(e) => Err(format!("is not a valid record ({e})")),
        Ok(p) if p.kind_name != c.kind || p.key() != c.key => {
            Err(format!("is {} {:?}", p.kind_name, p.key()))
        }
        Ok(p) => {
            r.found = law.found_in(&p, bytes);
            Ok(p)
        }
    };
    let p = match probe {
        Ok(p) => p,
        Err(s) => {
            r.stray = Some(format!(
                "the record that the change of {} {:?} leaves {s}",
                c.kind, c.key
            ));
            round_trip(&mut r, current, Some(bytes));
            return Ok(r);
        }
    };
    let now = RawRecord::of_probe(&p);
    let inverse = c.inverse_given(cur.as_ref());
    r.rollback = inverse.judge(Some(&now));
    match r.rollback {
        Step::Conflict => {
            r.rollback_conflict = Some(Conflict::of_change(&inverse, Some(&now), None));
        }
        Step::Apply => round_trip(&mut r, current, inverse.result(Some(&now)).as_deref()),
        Step::Already => round_trip(&mut r, current, Some(bytes)),
    }
    Ok(r)
}

/// Notes what restore then rollback gave back for the export's `current` line: the same line
/// (most often: byte for byte) needs no hash, for it adds the same to both digests.
fn round_trip(r: &mut Rehearsed, current: Option<&[u8]>, back: Option<&[u8]>) {
    match (current, back) {
        (Some(a), Some(b)) if a.trim_ascii() == b.trim_ascii() => r.same = true,
        _ => {
            r.before = current.map(line_hash);
            r.after = back.map(line_hash);
        }
    }
}

/// What the rehearsal keeps of a record of the export besides its change
/// ([`restore::Seen::more`]).
struct Found {
    /// No change names it, and it refers to a version the bundle retires.
    newer: Option<Newer>,
    /// What the law needs of it on its survivor.
    needs: Needs,
    /// What it holds on a survivor as it stands (when no change names it).
    found: Vec<u128>,
}

/// What the rehearsal found for one record of the export: the change that names it (its
/// entry), rehearsed, and the rest ([`Found`]).
type Seen = restore::Seen<Box<Rehearsed>, Found>;

/// What the rehearsal gathers on its way, in the order the restore and the rollback meet it.
#[derive(Default)]
struct Tally {
    /// The restore, as `restore` reports it.
    restore: Summary,
    /// The rollback of the restore's result.
    rollback: Summary,
    /// Rollback conflicts of changes whose record the restore left absent: the rollback meets
    /// them after every line, in the order of the change file (position, conflict).
    rollback_unmet: Vec<(u64, Conflict)>,
    /// Lines of the restored export so far (the rollback's conflicts name them).
    restored_lines: u64,
    /// What the restore leaves that its change does not name.
    strays: Vec<String>,
    /// The export, and the export after restore then rollback. A line no change names is
    /// counted in both and hashed in neither: it is the same line in both.
    before: Digest,
    after: Digest,
    ledger: Ledger,
}

impl Tally {
    /// A line both restore and rollback copy as it is.
    fn copied(&mut self) {
        self.before.lines += 1;
        self.after.lines += 1;
        self.restored_lines += 1;
    }

    /// The rehearsal of one change (`line`: of the export, when it holds the record).
    fn rehearsed(&mut self, position: u64, r: Rehearsed, line: Option<u64>) -> Result<()> {
        if r.same {
            self.before.lines += 1;
            self.after.lines += 1;
        }
        if let Some(h) = r.before {
            self.before.add(h);
        }
        let mut conflict = r.restore_conflict;
        self.restore.judged(r.restore, false, || {
            let mut c = conflict.take().expect("a conflict has its detail");
            c.line = line;
            c
        });
        if r.restore == Step::Conflict {
            return Ok(()); // verify stops at the restore's conflicts
        }
        if r.restored {
            self.restored_lines += 1;
        }
        if let Some(h) = r.after {
            self.after.add(h);
        }
        self.ledger.found(r.found)?;
        if let Some(s) = r.stray {
            self.strays.push(s);
        } else if r.restored {
            let line = self.restored_lines;
            let mut conflict = r.rollback_conflict;
            self.rollback.judged(r.rollback, false, || {
                let mut c = conflict.take().expect("a conflict has its detail");
                c.line = Some(line);
                c
            });
        } else if r.rollback != Step::Conflict {
            self.rollback.judged(r.rollback, false, || unreachable!());
        } else {
            // Only the order of the conflicts matters: the rest is counted now.
            let c = r.rollback_conflict.expect("a conflict has its detail");
            self.rollback_unmet.push((position, c));
        }
        Ok(())
    }
}

/// The law: restore then rollback rehearsed over the export in one pass, then the curation of
/// every group looked for on its survivor.
fn check_law(b: &Bundle, export: &Input, v: &mut Verdict) -> Result<()> {
    crate::migrate::timing("start");
    // Three reads of their own (the change set; the id map; the id map, the conflicts and the
    // export's field definitions), side by side.
    let (index, retired, law) = std::thread::scope(|s| {
        let retired = s.spawn(|| Retired::load(b, false));
        let law = s.spawn(|| Law::load(b, export));
        let index = change_index(b, v);
        let retired = retired.join().expect("loading the id map does not panic");
        let law = law.join().expect("loading the law's tables does not panic");
        Ok::<_, anyhow::Error>((index?, retired?, law?))
    })?;
    crate::migrate::timing("loaded");
    let opts = restore::Options {
        direction: restore::Direction::Restore,
        force: false,
        threads: 0,
        progress: false,
        level: 1,
        max_errors: b.manifest.options["max_errors"].as_u64().unwrap_or(0),
        carry_new: false,
    };
    let mut t = Tally::default();
    let mut newer: Vec<Newer> = Vec::new();
    // The restore's own rule that needs the lines in order.
    let mut in_order = restore::InOrder::new(&index);
    let read = |l: &Line| {
        restore::read_line(&index, &l.bytes, |p, change| {
            let (survivor, is_survivor) = law.survivor(p);
            let Some((i, line)) = change else {
                // No change names it: the restore copies it, and looks in it for references to
                // retired versions. Its record is parsed once, for every check that needs it.
                let at = survivor.as_ref().filter(|_| is_survivor);
                let may_refer = retired.may_refer(p);
                let rec =
                    (survivor.is_some() || may_refer).then(|| Record::from_validated(&l.bytes));
                let (mut found, mut newer) = (Vec::new(), None);
                if let Some(r) = &rec {
                    if let Some(at) = at {
                        found = law.found(&at.otype, at.oid, r);
                    }
                    if may_refer {
                        newer = carry::check(&retired, r, Some(&law.defs), Some(l.no));
                    }
                }
                let needs = match (survivor, rec) {
                    (Some(s), Some(r)) => law.needs(s, r, l.no),
                    _ => Needs::default(),
                };
                return Ok((
                    None,
                    Found {
                        newer,
                        needs,
                        found,
                    },
                ));
            };
            let c = index.change(&line)?;
            let needs = match survivor {
                Some(s) => law.needs(s, Record::from_validated(&l.bytes), l.no),
                None => Needs::default(),
            };
            let r = rehearse(c, Some(RawRecord::of_probe(p)), &law)
                .with_context(|| format!("{}:{}", export.name, l.no))?;
            Ok((
                Some((i, Box::new(r))),
                Found {
                    newer: None,
                    needs,
                    found: Vec::new(),
                },
            ))
        })
    };
    let reader = Reader::new(export, restore::bad_lines(&opts), 1 << 20, read)?;
    let mut outcome = reader.for_each(|order, line, item| {
        let Item::Good(seen) = item else {
            t.copied();
            return Ok(());
        };
        let place = in_order.place(order, &line, &seen)?;
        let Seen {
            change, more: f, ..
        } = seen;
        t.ledger.needs(f.needs)?;
        newer.extend(f.newer);
        match (place, change) {
            (restore::Place::Changed(i), Some((_, r))) => {
                t.rehearsed(index.position(i), *r, Some(line.no))?
            }
            (restore::Place::Duplicate, _) => {
                // Copied as it is: what it holds on a survivor stays there.
                if let Ok(p) = Probe::parse(&line.bytes) {
                    t.ledger.found(law.found_in(&p, &line.bytes))?;
                }
                t.copied();
            }
            _ => {
                // Unnamed: copied as it is.
                t.ledger.found(f.found)?;
                t.copied();
            }
        }
        Ok(())
    })?;
    crate::migrate::timing("export");
    // Changes whose record the export does not hold, in the change file's order: the restore
    // writes what they make last.
    for chunk in in_order.unmet(&index).chunks(4096) {
        let done: Vec<Result<Rehearsed>> = chunk
            .par_iter()
            .map(|&i| rehearse(index.get(i as usize)?, None, &law))
            .collect();
        for (&i, r) in chunk.iter().zip(done) {
            t.rehearsed(index.position(i as usize), r?, None)?;
        }
    }
    // Each pass starts a summary of its own, so the skipped lines are the reader's.
    t.restore.skipped_lines.append(&mut outcome.skipped);
    for n in &newer {
        t.restore.conflict(Conflict::of_newer(n, &retired));
    }
    if t.restore.conflict_count > 0 {
        v.failures.push(format!(
            "the change set does not apply to the export it was made from: {}",
            Failure::Conflicts(Box::new(t.restore))
        ));
        return Ok(());
    }
    t.rollback_unmet.sort_by_key(|u| u.0);
    for (_, conflict) in std::mem::take(&mut t.rollback_unmet) {
        t.rollback.judged(Step::Conflict, false, || conflict);
    }
    if t.rollback.conflict_count > 0 {
        v.failures.push(format!(
            "the change set does not roll back: {}",
            Failure::Conflicts(Box::new(t.rollback))
        ));
        return Ok(());
    }
    v.records = t.before.lines;
    if t.before != t.after {
        v.failures.push(format!(
            "restore then rollback does not give the export back ({} lines before, {} after, or contents differ)",
            t.before.lines, t.after.lines
        ));
    }
    if let Some(first) = t.strays.first() {
        let more = match t.strays.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        v.failures.push(format!(
            "a record outside the change set differs after the restore: {first}{more}"
        ));
    }
    drop(index);
    crate::migrate::timing("unmet");
    let done = conservation(export, t.ledger, v);
    crate::migrate::timing("law");
    done
}

/// Bytes of the ledger's pairs held in memory before a sorted run goes to disk.
const LEDGER_BYTES: usize = 4 << 20;

/// What the law needs on the survivors and what they hold, as one external sort of (hash,
/// tag) pairs, so that verify's memory does not grow with the curation it checks (at 800,000
/// reports: 5 million needs and 9 million hashes held, 310 MB as lists).
///
/// The hash is the top 64 bits of [`SeenKeys::hash`]: a lost item passes for found only if its
/// hash meets another's in 64 bits, about one chance in 2^64 / 9 million. What the survivors
/// hold has tag 0, and a need `1 + (line << 2 | kind)`: in the sorted stream the holdings of a
/// hash come before the needs of that hash.
struct Ledger {
    pairs: crate::sort::PairSorter,
    /// Needs put in the sort.
    needs: u64,
    /// Needs met already (by a reported conflict).
    met: u64,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::with_memory(crate::sort::run_bytes(LEDGER_BYTES))
    }
}

impl Ledger {
    fn with_memory(bytes: usize) -> Ledger {
        Ledger {
            pairs: crate::sort::PairSorter::new(bytes),
            needs: 0,
            met: 0,
        }
    }

    fn key(hash: u128) -> u64 {
        (hash >> 64) as u64
    }

    /// What a survivor holds.
    fn found(&mut self, hashes: Vec<u128>) -> Result<()> {
        hashes
            .into_iter()
            .try_for_each(|h| self.pairs.push(Ledger::key(h), 0))
    }

    /// What a record needs on its survivor.
    fn needs(&mut self, needs: Needs) -> Result<()> {
        self.met += needs.met;
        for n in needs.list {
            assert!(n.line < 1 << 61, "a line number over 2^61");
            self.needs += 1;
            let tag = 1 + ((n.line << 2) | n.kind as u64);
            self.pairs.push(Ledger::key(n.hash), tag)?;
        }
        Ok(())
    }

    /// Calls `lost(line, kind)` for every need whose hash no survivor holds, in hash order.
    fn check(self, mut lost: impl FnMut(u64, NeedKind)) -> Result<()> {
        let mut held: Option<u64> = None;
        self.pairs.finish(|hash, tag| {
            if tag == 0 {
                held = Some(hash);
            } else if held != Some(hash) {
                let kind = NeedKind::ALL[((tag - 1) & 3) as usize];
                lost((tag - 1) >> 2, kind);
            }
            Ok(())
        })
    }
}

/// What the law needs of one record on its survivor.
#[derive(Default)]
struct Needs {
    /// To be found on the survivor.
    list: Vec<Need>,
    /// Met already: values and items of records the report lists as conflicts.
    met: u64,
}

/// What kind of evidence a piece of curation needs on its survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NeedKind {
    /// A single value (or a flag's reason): equal on the survivor, or a reported conflict.
    Single,
    /// An item of a multi-valued field: in the survivor's list, or a reported conflict.
    Item,
    /// A flag, tag or star: its merge key present on the survivor.
    Present,
    /// A conversation by id, or another record by content, now on the survivor.
    Moved,
}

impl NeedKind {
    /// Every kind, by its discriminant (the ledger keeps a need's kind in two bits).
    const ALL: [NeedKind; 4] = [
        NeedKind::Single,
        NeedKind::Item,
        NeedKind::Present,
        NeedKind::Moved,
    ];
}

/// One piece of curation that must be found on its survivor afterwards, as a hash (a value or
/// an item whose record the report lists as a conflict is met already, and not kept).
struct Need {
    kind: NeedKind,
    /// Hash of what must be found.
    hash: u128,
    /// Line of the export, to name it when it is missing.
    line: u64,
}

fn subject_text(s: &Subject) -> String {
    format!("{}:{}", s.otype, s.oid)
}

fn canonical_hash(v: &Value) -> u128 {
    SeenKeys::hash("value", &canonical_json(v))
}

/// What the law is checked with: the groups from the id map and the conflicts from the report
/// (not from the merge code), and the export's field definitions.
struct Law {
    /// Every version of a multi-version group → its survivor's oid.
    refmap: law::RefMap,
    fields: law::Fields,
    /// The same definitions as the restore reads them, for its check of newer records.
    defs: crate::refs::Fields,
    /// Hashes of the losing records the report lists as conflicts.
    conflicts: HashSet<u128>,
    /// Their (kind, key)s, hashed ([`DuplicateKeys::hash`]): a record whose key is none of
    /// these is no loser, and its whole canonical form need not be hashed to tell.
    conflict_keys: HashSet<u64>,
}

impl Law {
    fn load(b: &Bundle, export: &Input) -> Result<Law> {
        let mut refmap = law::RefMap::default();
        #[derive(serde::Deserialize)]
        struct IdMapRow {
            otype: String,
            oid: i64,
            survivor_oid: i64,
            action: String,
        }
        b.for_each_line(bundle::IDMAP, |_, bytes| {
            let row: IdMapRow = crate::record::from_json_bytes(bytes)?;
            if row.action == "retire" && (row.otype == REPORT || row.otype == COLUMN) {
                refmap.insert(&row.otype, row.oid, row.survivor_oid);
            }
            Ok(())
        })?;
        #[derive(serde::Deserialize)]
        struct Loser {
            loser: Value,
        }
        let mut conflicts: HashSet<u128> = HashSet::new();
        let mut conflict_keys: HashSet<u64> = HashSet::new();
        b.for_each_item(bundle::CONFLICTS, |c: Loser| {
            conflicts.insert(canonical_hash(&c.loser));
            if let Value::Object(obj) = c.loser {
                let r = Record::from_map(obj);
                conflict_keys.insert(DuplicateKeys::hash(r.kind_name(), &r.key()));
            }
            Ok(())
        })?;
        // Field definitions first: a value is judged by its field's type. Only a line that
        // names `custom_field`, or may spell it with an escape, can define one.
        let mut fields = law::Fields::default();
        let mut defs = crate::refs::Fields::default();
        let mut lines = export.lines()?;
        while let Some(l) = lines.next_line()? {
            static CUSTOM_FIELD: Finder = Finder::new(|| memmem::Finder::new(b"custom_field"));
            static ESCAPE: Finder = Finder::new(|| memmem::Finder::new(b"\\u"));
            if CUSTOM_FIELD.find(&l.bytes).is_none() && ESCAPE.find(&l.bytes).is_none() {
                continue;
            }
            let Ok(p) = Probe::parse(&l.bytes) else {
                continue;
            };
            if p.kind == Kind::CustomField {
                let r = Record::from_validated(&l.bytes);
                fields.define(
                    r.int("id").unwrap_or(0),
                    r.str("field_type").unwrap_or(""),
                    r.flag("allow_multiple"),
                );
                defs.insert_record(&r);
            }
        }
        refmap.finish();
        Ok(Law {
            refmap,
            fields,
            defs,
            conflicts,
            conflict_keys,
        })
    }

    /// The survivor of a version of a multi-version group.
    fn participant(&self, otype: &str, oid: i64) -> Option<i64> {
        self.refmap.survivor(otype, oid)
    }

    /// The survivor of a line's subject, when it is a version of a multi-version group, and
    /// whether the subject is that survivor.
    fn survivor(&self, p: &Probe) -> (Option<Subject>, bool) {
        let Some((otype, oid)) = p.subject() else {
            return (None, false);
        };
        match self.participant(&otype, oid) {
            Some(s) => (
                Some(Subject {
                    otype: otype.into_owned(),
                    oid: s,
                }),
                s == oid,
            ),
            None => (None, false),
        }
    }

    /// A line's subject, when it is a survivor.
    fn survivor_subject<'p>(&self, p: &'p Probe) -> Option<(std::borrow::Cow<'p, str>, i64)> {
        p.subject()
            .filter(|(otype, oid)| self.participant(otype, *oid) == Some(*oid))
    }

    /// What the export's record `r` needs on its subject's `survivor`.
    fn needs(&self, survivor: Subject, mut r: Record, line: u64) -> Needs {
        let mut needs = Needs::default();
        // Only a record with a loser's key can be one: the others skip the whole hash.
        let conflict = self
            .conflict_keys
            .contains(&DuplicateKeys::hash(r.kind_name(), &r.key()))
            && {
                // The record's hash as the report's conflicts would list it (without copying
                // it).
                let whole = Value::Object(std::mem::take(&mut r.obj));
                let record = canonical_hash(&whole);
                let Value::Object(obj) = whole else {
                    unreachable!("an object stays an object")
                };
                r.obj = obj;
                self.conflicts.contains(&record)
            };
        law::repair(&mut r, &self.fields, &self.refmap);
        let at = subject_text(&survivor);
        let mut need = |kind, hash| {
            if conflict && matches!(kind, NeedKind::Single | NeedKind::Item) {
                needs.met += 1;
            } else {
                needs.list.push(Need { kind, hash, line });
            }
        };
        match (r.kind, law::merge_key(&r)) {
            (Kind::FieldValue, Some(merge)) => {
                let field = r.int("field_id").unwrap_or(0);
                let value = &r.obj["value"];
                let multi = self.fields.multi(field).unwrap_or(value.is_array());
                if multi {
                    for item in value.as_array().into_iter().flatten() {
                        need(
                            NeedKind::Item,
                            SeenKeys::hash(&format!("item {at} {merge}"), &canonical_json(item)),
                        );
                    }
                } else if !law::is_empty(value) {
                    need(
                        NeedKind::Single,
                        SeenKeys::hash(&format!("single {at} {merge}"), &canonical_json(value)),
                    );
                }
            }
            (Kind::TrustFlag, Some(merge)) => {
                need(
                    NeedKind::Present,
                    SeenKeys::hash("present", &format!("{at} {merge}")),
                );
                let reason = r.obj.get("reason").cloned().unwrap_or(Value::Null);
                if !law::is_empty(&reason) {
                    need(
                        NeedKind::Single,
                        SeenKeys::hash(&format!("single {at} {merge}"), &canonical_json(&reason)),
                    );
                }
            }
            (Kind::Tag | Kind::Star, Some(merge)) => {
                need(
                    NeedKind::Present,
                    SeenKeys::hash("present", &format!("{at} {merge}")),
                );
            }
            _ => {
                // Conversations keep their id; other kinds are found by their whole content.
                if r.kind != Kind::Conversation {
                    r.set_subject(&survivor);
                }
                need(
                    NeedKind::Moved,
                    SeenKeys::hash("moved", &format!("{at} {} {}", r.kind_name(), r.key())),
                );
            }
        }
        needs
    }

    /// What a line of the restored export holds on a survivor (nothing when its subject is
    /// none).
    fn found_in(&self, p: &Probe, bytes: &[u8]) -> Vec<u128> {
        match self.survivor_subject(p) {
            Some((otype, oid)) => self.found(&otype, oid, &Record::from_validated(bytes)),
            None => Vec::new(),
        }
    }

    /// What a record of the restored export holds on its subject, the survivor (otype, oid),
    /// as the hashes of [`Law::needs`].
    fn found(&self, otype: &str, oid: i64, r: &Record) -> Vec<u128> {
        let mut found = Vec::new();
        let at = format!("{otype}:{oid}");
        match law::merge_key(r) {
            Some(merge) => {
                found.push(SeenKeys::hash("present", &format!("{at} {merge}")));
                let value = match r.kind {
                    Kind::FieldValue => r.obj["value"].clone(),
                    Kind::TrustFlag => r.obj.get("reason").cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                found.push(SeenKeys::hash(
                    &format!("single {at} {merge}"),
                    &canonical_json(&value),
                ));
                for item in value.as_array().into_iter().flatten() {
                    found.push(SeenKeys::hash(
                        &format!("item {at} {merge}"),
                        &canonical_json(item),
                    ));
                }
            }
            None => {
                found.push(SeenKeys::hash(
                    "moved",
                    &format!("{at} {} {}", r.kind_name(), r.key()),
                ));
            }
        }
        found
    }
}

/// Every need is found on its survivor, or is a reported conflict.
fn conservation(export: &Input, ledger: Ledger, v: &mut Verdict) -> Result<()> {
    v.curation_items += ledger.met + ledger.needs;
    // The first lost items of the export (by line) are named, the rest counted.
    const NAMED: usize = 20;
    let mut first: std::collections::BinaryHeap<(u64, NeedKind)> = Default::default();
    let mut count = 0u64;
    ledger.check(|line, kind| {
        count += 1;
        first.push((line, kind));
        if first.len() > NAMED {
            first.pop();
        }
    })?;
    let lost = first.into_sorted_vec();
    if !lost.is_empty() {
        let mut sorted: Vec<u64> = lost.iter().map(|(l, _)| *l).collect();
        sorted.dedup();
        let texts: HashMap<u64, Vec<u8>> = sorted
            .iter()
            .copied()
            .zip(export.lines_at(&sorted)?)
            .collect();
        for (line, kind) in &lost {
            let what = match kind {
                NeedKind::Single => "its value",
                NeedKind::Item => "an item of its list",
                NeedKind::Present => "its merge key",
                NeedKind::Moved => "the record itself",
            };
            let text = texts
                .get(line)
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default();
            v.failures.push(format!(
                "curation lost: {}:{line} ({}): {what} is not on its survivor and is not a reported conflict",
                export.name,
                crate::record::short(&serde_json::from_str(&text).unwrap_or(Value::String(text.clone())))
            ));
        }
        if count > NAMED as u64 {
            v.failures.push(format!(
                "curation lost: ... and {} more",
                count - NAMED as u64
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(hash: u128, line: u64, kind: NeedKind) -> Needs {
        Needs {
            list: vec![Need { kind, hash, line }],
            met: 0,
        }
    }

    /// What the ledger finds lost, given what survivors hold and what records need, with room
    /// for `memory` bytes of pairs (small: spilled runs).
    fn lost(memory: usize, held: &[u128], needs: Vec<Needs>) -> (Vec<(u64, NeedKind)>, u64) {
        let mut l = Ledger::with_memory(memory);
        for n in needs {
            l.needs(n).unwrap();
        }
        l.found(held.to_vec()).unwrap();
        let count = l.needs + l.met;
        let mut out = Vec::new();
        l.check(|line, kind| out.push((line, kind))).unwrap();
        out.sort();
        (out, count)
    }

    #[test]
    fn the_ledger_names_each_need_no_survivor_holds() {
        let h = |top: u64, low: u64| (u128::from(top) << 64) | u128::from(low);
        // Filler holdings and needs met by them, to fill several runs.
        let filler: Vec<u128> = (1000..3000).map(|i| h(i, 9)).collect();
        for memory in [16 << 10, 1 << 20] {
            let mut needs: Vec<Needs> = (1000..3000)
                .map(|i| need(h(i, 1), i, NeedKind::Present))
                .collect();
            needs.push(need(h(2, 5), 7, NeedKind::Item)); // held (another low half)
            needs.push(need(h(4, 0), 9, NeedKind::Single)); // not held
            needs.push(need(h(4, 0), 3, NeedKind::Moved)); // not held, an earlier line
            needs.push(need(h(u64::MAX, 0), (1 << 61) - 1, NeedKind::Item)); // not held
            needs.push(Needs {
                list: vec![],
                met: 2,
            });
            let mut held = filler.clone();
            held.extend([h(1, 0), h(2, 0), h(3, 0), h(5, 0)]);
            let (lost, count) = lost(memory, &held, needs);
            assert_eq!(
                lost,
                vec![
                    (3, NeedKind::Moved),
                    (9, NeedKind::Single),
                    ((1 << 61) - 1, NeedKind::Item)
                ],
                "memory {memory}"
            );
            assert_eq!(count, 2000 + 4 + 2);
        }
        assert!(
            crate::sort::runs_spilled() > 0,
            "the small ledger spilled no run"
        );
    }
}
