//! Reading an export: the rules every command applies to its lines (SPEC §1, §8), in one place.
//!
//! - A line that is not a valid record is an error naming the file and the line; with
//!   `--max-errors N` up to N such lines are skipped instead, each kept verbatim for the report
//!   ([`BadLines`]).
//! - A header, when there is one, is the first line; a header anywhere else is a bad line
//!   ([`header_first`]).
//! - A record key occurs once per export; the second occurrence is a bad line. Keys are found by
//!   an external sort of their hashes ([`crate::record::DuplicateKeys`]), so memory stays bounded
//!   whatever the size of the export.
//!
//! Every command reads an export through one front end, [`Reader`], which applies all three
//! while it hands the lines, parsed in parallel, to the command in line order: `migrate` and
//! `plan` (their scan), `restore`, `rollback` and `verify` (its rehearsal of both), and
//! `db load` (through [`read`]). What each command does with a line is its own: what migrate
//! keeps of it, restore's look-up of the change that names it (and its rule that a second line
//! with a changed key is the duplicate, met in order), db load's table rows.
//!
//! One read re-reads an export without this front end: migrate's second pass, which rewrites
//! the lines its scan (through [`Reader`]) accepted and passes over the ones it refused, so
//! no rule of this module is left for it to apply.

use crate::input::{Input, Line};
use crate::progress::Progress;
use crate::record::{DuplicateKeys, Kind};
use crate::report::Skipped;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::BTreeSet;

/// What the message of a refused bad line suggests, when a command skips bad lines (migrate,
/// plan, `db load`).
pub const SKIP_HINT: &str =
    "fix or remove the line, or pass --max-errors N to skip bad lines (each is listed in the report)";

/// The `--max-errors` rule: a bad line fails the command, naming the file and line, unless fewer
/// than `max_errors` lines were skipped so far; then it is skipped and listed.
#[derive(Debug, Clone, Copy)]
pub struct BadLines {
    /// `--max-errors N`.
    pub max_errors: u64,
    /// What the error message suggests after `file:line: what is wrong; `.
    pub hint: &'static str,
}

impl BadLines {
    /// Judges one bad line: an error naming `input`'s file and the line, or the line added to
    /// `skipped` (verbatim) when `--max-errors` still allows one more.
    pub fn bad(
        &self,
        input: &Input,
        skipped: &mut Vec<Skipped>,
        no: u64,
        error: String,
        bytes: &[u8],
    ) -> Result<()> {
        if skipped.len() as u64 >= self.max_errors {
            bail!("{}:{no}: {error}; {}", input.name, self.hint);
        }
        skipped.push(Skipped::new(no, error, bytes));
        Ok(())
    }
}

/// The header rule (SPEC §1): a header past the first line of the export is a bad line. `first`
/// is whether this is the first (non-blank) line, valid or not.
pub fn header_first(kind: Kind, first: bool) -> Result<(), String> {
    if kind == Kind::Header && !first {
        return Err("a header must be the first line".into());
    }
    Ok(())
}

/// The hash of a record's kind name and key that [`DuplicateKeys`] sorts.
pub type KeyHash = u64;

/// The [`KeyHash`] of the record of kind `kind_name` with record key `key`.
pub fn key_hash(kind_name: &str, key: &str) -> KeyHash {
    DuplicateKeys::hash(kind_name, key)
}

/// One line as a command's parser sees it: its kind and key (for the rules), and what the
/// command keeps of it.
pub struct Parsed<T> {
    pub kind: Kind,
    /// [`key_hash`] of the kind name and the record key, for the duplicate check after the
    /// read; None when the command checks this key itself, in order (restore: the key of a
    /// change).
    pub key_hash: Option<KeyHash>,
    pub value: T,
}

impl<T> Parsed<T> {
    /// A parsed line of kind `kind` (named `kind_name`) with record key `key`.
    pub fn new(kind: Kind, kind_name: &str, key: &str, value: T) -> Parsed<T> {
        Parsed {
            kind,
            key_hash: Some(key_hash(kind_name, key)),
            value,
        }
    }
}

/// What a read found besides the good lines.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every line skipped under `--max-errors`: those judged in order, in line order, then the
    /// duplicates found after the read, in line order ([`read`] sorts them all).
    pub skipped: Vec<Skipped>,
    /// The lines among `skipped` that repeat an earlier key. They are found once the whole
    /// export is read, so they went to the command like good lines: a command that kept them
    /// reads again with them left out ([`Reader::leave_out`]).
    pub duplicates: BTreeSet<u64>,
}

/// One line of the export, in order, as [`Reader::next_line`] hands it to a command.
#[derive(Debug)]
pub enum Item<T> {
    /// A record: what the command's parser kept of it.
    Good(T),
    /// Not a valid record, or a header past the first line: already judged by [`BadLines`]
    /// (skipped and listed, or the read failed). Commands that copy lines copy it as it is.
    Bad(String),
}

/// What a command's parser makes of one line: the record (its kind and key, and what the
/// command keeps of it), or why the line is no record. An `Err` of the outer `Result` is no bad
/// line but a failure of the command, which stops the read when its line is reached.
pub type ParseResult<T> = std::result::Result<Parsed<T>, String>;

/// The one front end every command reads an export through (migrate's scan, restore, rollback,
/// verify's rehearsal of both, `db load`).
///
/// It reads batches of about `batch_bytes` of lines and parses each line on the rayon pool with
/// the command's parser; a thread of its own then hands the lines out one at a time in line
/// order ([`Reader::for_each`]), applying on the way the rules that need that order ([`Order`]):
/// the header rule ([`header_first`]) and [`BadLines`] for the lines that are no record; the key
/// of each good line goes to [`DuplicateKeys`], whose duplicates are judged once the whole
/// export is read. The pool parses the next batch while the command takes in the last one, so
/// a command's in-order work costs no parsing time.
///
/// Memory holds a few batches and the sort runs of the key hashes, whatever the size of the
/// export.
pub struct Reader<'a, T, P> {
    parse: P,
    leave_out: Option<&'a BTreeSet<u64>>,
    batches: std::sync::mpsc::IntoIter<Result<Vec<Line>>>,
    order: Order<'a>,
    _parsed: std::marker::PhantomData<fn() -> T>,
}

/// The rules a [`Reader`] applies in line order, and what they found so far. A command with an
/// in-order rule of its own reports the lines it refuses through it ([`Order::bad`]), under the
/// same `--max-errors` count.
pub struct Order<'a> {
    input: &'a Input,
    rules: BadLines,
    progress: Option<&'a Progress>,
    first: bool,
    keys: DuplicateKeys,
    skipped: Vec<Skipped>,
}

impl Order<'_> {
    /// Judges `line` bad for a rule of the command's own (restore's duplicate of a changed key),
    /// under the same `--max-errors` count as the rules of the export.
    pub fn bad(&mut self, line: &Line, why: String) -> Result<()> {
        self.rules
            .bad(self.input, &mut self.skipped, line.no, why, &line.bytes)
    }

    /// The next line's parse, with the rules that need the order applied. Fails on a bad line
    /// past `--max-errors`, or on the parser's own failure for this line.
    fn judge<T>(&mut self, line: &Line, parsed: Result<ParseResult<T>>) -> Result<Item<T>> {
        let first = std::mem::replace(&mut self.first, false);
        let parsed = parsed?.and_then(|p| header_first(p.kind, first).map(|()| p));
        Ok(match parsed {
            Ok(p) => {
                if let Some(h) = p.key_hash {
                    self.keys.add_hash(h, line.no)?;
                }
                Item::Good(p.value)
            }
            Err(e) => {
                self.bad(line, e.clone())?;
                Item::Bad(e)
            }
        })
    }

    /// After the last line: judges the duplicate keys, and says what was skipped.
    fn finish(self) -> Result<Outcome> {
        let mut out = Outcome {
            skipped: self.skipped,
            duplicates: BTreeSet::new(),
        };
        for (no, msg, bytes) in self.keys.finish(self.input)? {
            self.rules
                .bad(self.input, &mut out.skipped, no, msg, &bytes)?;
            out.duplicates.insert(no);
        }
        Ok(out)
    }
}

/// A batch of lines and their parses, or the failure to read it.
type ParsedBatch<T> = Result<(Vec<Line>, Vec<Result<ParseResult<T>>>)>;

impl<'a, T, P> Reader<'a, T, P>
where
    T: Send,
    P: Fn(&Line) -> Result<ParseResult<T>> + Sync,
{
    /// Starts reading `input` in batches of about `batch_bytes`, parsing each line with
    /// `parse`; bad lines fail the read or are skipped as `rules` says.
    pub fn new(
        input: &'a Input,
        rules: BadLines,
        batch_bytes: usize,
        parse: P,
    ) -> Result<Reader<'a, T, P>> {
        Ok(Reader {
            parse,
            leave_out: None,
            batches: input.batches(batch_bytes)?,
            order: Order {
                input,
                rules,
                progress: None,
                first: true,
                keys: DuplicateKeys::new(crate::sort::run_bytes(8 << 20)),
                skipped: Vec::new(),
            },
            _parsed: std::marker::PhantomData,
        })
    }

    /// Passes over the lines in `leave_out` as if they were absent (a second read after
    /// [`Outcome::duplicates`]).
    pub fn leave_out(mut self, leave_out: &'a BTreeSet<u64>) -> Self {
        self.leave_out = Some(leave_out);
        self
    }

    /// Counts the lines read on `progress`, a batch at a time.
    pub fn progress(mut self, progress: &'a Progress) -> Self {
        self.order.progress = Some(progress);
        self
    }

    /// Hands every line, good or bad, to `each` in line order, then judges the duplicate keys
    /// and says what was skipped. Stops at the first error: a bad line past `--max-errors`, the
    /// parser's own failure for a line, or one of `each`.
    ///
    /// `each` runs on a thread of its own while the calling thread parses the next batch on
    /// the rayon pool (call it from within the pool the command chose).
    pub fn for_each(
        self,
        mut each: impl FnMut(&mut Order<'a>, Line, Item<T>) -> Result<()> + Send,
    ) -> Result<Outcome> {
        let Reader {
            parse,
            leave_out,
            batches,
            mut order,
            ..
        } = self;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<ParsedBatch<T>>(1);
            let in_order = std::thread::Builder::new()
                .name("lookmig-order".into())
                .spawn_scoped(scope, move || -> Result<Order<'a>> {
                    for batch in rx {
                        let (batch, parsed) = batch?;
                        let n = batch.len() as u64;
                        for (line, parsed) in batch.into_iter().zip(parsed) {
                            let item = order.judge(&line, parsed)?;
                            each(&mut order, line, item)?;
                        }
                        if let Some(p) = order.progress {
                            p.add(n);
                        }
                    }
                    Ok(order)
                })
                .context("starting the thread that takes lines in order")?;
            for batch in batches {
                let batch = batch.map(|mut batch| {
                    if let Some(out) = leave_out {
                        batch.retain(|l| !out.contains(&l.no));
                    }
                    let parsed = batch.par_iter().map(&parse).collect();
                    (batch, parsed)
                });
                let failed = batch.is_err();
                // A send fails when the in-order side stopped on an error, which join reports.
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
            drop(tx);
            let order = in_order
                .join()
                .expect("the in-order side of a read does not panic")?;
            order.finish()
        })
    }
}

/// Reads `input` through a [`Reader`], handing each good line to `each` in line order. Lines in
/// `leave_out` are passed over as if absent (a second read after [`Outcome::duplicates`]).
/// Bad lines fail the read or are skipped as `rules` says; duplicate keys are judged after the
/// read, within the same limit. `skipped` comes back in line order.
pub fn read<T: Send>(
    input: &Input,
    rules: BadLines,
    batch_bytes: usize,
    leave_out: &BTreeSet<u64>,
    parse: impl Fn(&[u8]) -> ParseResult<T> + Sync,
    mut each: impl FnMut(&Line, T) -> Result<()> + Send,
) -> Result<Outcome> {
    let reader = Reader::new(input, rules, batch_bytes, |l: &Line| Ok(parse(&l.bytes)))?
        .leave_out(leave_out);
    let mut out = reader.for_each(|_, line, item| match item {
        Item::Good(value) => each(&line, value),
        Item::Bad(_) => Ok(()),
    })?;
    out.skipped.sort_by_key(|s| s.line);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn export(text: &str) -> (tempfile::NamedTempFile, Input) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let input = Input::new(f.path().to_str().unwrap()).unwrap();
        (f, input)
    }

    fn keys(bytes: &[u8]) -> Result<Parsed<u64>, String> {
        let p = crate::record::Probe::parse(bytes)?;
        Ok(Parsed::new(p.kind, &p.kind_name, &p.key(), 0))
    }

    const HEADER: &str = r#"{"kind":"header","format":"catalog-export","version":1}"#;
    const TAG: &str =
        r#"{"kind":"tag","name":"finance","subject":{"otype":"bi_report","oid":101}}"#;

    #[test]
    fn bad_lines_header_and_duplicates_are_skipped_within_the_limit_and_refused_past_it() {
        let text = format!("not json\n{HEADER}\n{TAG}\n\n{TAG}\n");
        let (_f, input) = export(&text);
        let rules = |max_errors| BadLines {
            max_errors,
            hint: SKIP_HINT,
        };
        let mut good = Vec::new();
        let out = read(&input, rules(3), 1 << 20, &BTreeSet::new(), keys, |l, _| {
            good.push(l.no);
            Ok(())
        })
        .unwrap();
        let skipped: Vec<(u64, &str)> = out
            .skipped
            .iter()
            .map(|s| (s.line, s.error.as_str()))
            .collect();
        assert_eq!(skipped[0].0, 1);
        assert_eq!(skipped[1], (2, "a header must be the first line"));
        assert_eq!(skipped[2].0, 5);
        assert!(
            skipped[2].1.starts_with("duplicate record key"),
            "{skipped:?}"
        );
        assert_eq!(out.skipped[2].text, TAG);
        // The duplicate went to `each` (it is found after the read), and is named for a reread.
        assert_eq!(good, [3, 5]);
        assert_eq!(out.duplicates, BTreeSet::from([5]));
        let mut again = Vec::new();
        read(&input, rules(3), 1 << 20, &out.duplicates, keys, |l, _| {
            again.push(l.no);
            Ok(())
        })
        .unwrap();
        assert_eq!(again, [3]);
        // One fewer allowed: the duplicate, judged last, fails the read, naming file:line.
        let e = read(&input, rules(2), 1 << 20, &BTreeSet::new(), keys, |_, _| {
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("{}:5: duplicate record key", input.name)),
            "{e}"
        );
        assert!(e.ends_with(SKIP_HINT), "{e}");
        let e = read(&input, rules(0), 1 << 20, &BTreeSet::new(), keys, |_, _| {
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with(&format!("{}:1: ", input.name)), "{e}");
    }

    /// The lines a [`Reader`] hands out, as (line number, good?), the command refusing line
    /// `refuse` with a rule of its own; then what it skipped, or the error.
    fn read_all(
        input: &Input,
        max_errors: u64,
        refuse: u64,
        keyed: bool,
    ) -> Result<(Vec<(u64, bool)>, Outcome)> {
        let rules = BadLines {
            max_errors,
            hint: SKIP_HINT,
        };
        let parse = |l: &Line| {
            Ok(keys(&l.bytes).map(|mut p| {
                if !keyed {
                    p.key_hash = None;
                }
                p
            }))
        };
        let reader = Reader::new(input, rules, 1 << 20, parse)?;
        let mut seen = Vec::new();
        let out = reader.for_each(|order, line, item| {
            seen.push((line.no, matches!(item, Item::Good(_))));
            if line.no == refuse {
                order.bad(&line, "refused by the command".into())?;
            }
            Ok(())
        })?;
        Ok((seen, out))
    }

    #[test]
    fn the_reader_hands_out_every_line_in_order_and_counts_a_command_s_own_bad_lines() {
        let (_f, input) = export(&format!("{HEADER}\nnot json\n{TAG}\n{TAG}\n"));
        let (seen, out) = read_all(&input, 3, 3, true).unwrap();
        assert_eq!(seen, [(1, true), (2, false), (3, true), (4, true)]);
        let skipped: Vec<(u64, &str)> = out
            .skipped
            .iter()
            .map(|s| (s.line, s.error.as_str()))
            .collect();
        assert_eq!(skipped[1], (3, "refused by the command"));
        assert_eq!(skipped[2].0, 4);
        assert_eq!(out.duplicates, BTreeSet::from([4]));
        // The command's bad line counts against the limit: the duplicate is one too many ...
        let e = read_all(&input, 2, 3, true).unwrap_err().to_string();
        assert!(e.contains(":4: duplicate record key"), "{e}");
        // ... and, with room for one, so is the command's own.
        let e = read_all(&input, 1, 3, true).unwrap_err().to_string();
        assert!(e.contains(":3: refused by the command"), "{e}");
        // A key the command checks itself (no key hash) is no duplicate for the reader.
        let (_, out) = read_all(&input, 3, 0, false).unwrap();
        assert!(out.duplicates.is_empty());
        assert_eq!(out.skipped.len(), 1);
    }

    /// The command's own failure stops the read at its line, while the pool has batches
    /// parsed ahead: no later line reaches the command, and nothing waits forever.
    #[test]
    fn an_error_of_the_command_stops_the_read_at_its_line() {
        let text: String = (0..2000).map(|i| {
            format!("{{\"kind\":\"tag\",\"name\":\"t{i}\",\"subject\":{{\"otype\":\"bi_report\",\"oid\":1}}}}\n")
        }).collect();
        let (_f, input) = export(&text);
        let rules = BadLines {
            max_errors: 0,
            hint: SKIP_HINT,
        };
        // Batches of a few lines each, so that several are in flight when the command fails.
        let reader = Reader::new(&input, rules, 256, |l: &Line| Ok(keys(&l.bytes))).unwrap();
        let mut seen = Vec::new();
        let e = reader
            .for_each(|_, line, _| {
                seen.push(line.no);
                if line.no == 37 {
                    anyhow::bail!("the command failed at line {}", line.no);
                }
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "the command failed at line 37");
        assert_eq!(seen, (1..=37).collect::<Vec<u64>>());
    }

    #[test]
    fn a_header_on_the_first_line_is_good_even_after_blank_lines() {
        let (_f, input) = export(&format!("\n{HEADER}\n{TAG}\n"));
        let rules = BadLines {
            max_errors: 0,
            hint: SKIP_HINT,
        };
        let out = read(
            &input,
            rules,
            1 << 20,
            &BTreeSet::new(),
            keys,
            |_, _| Ok(()),
        )
        .unwrap();
        assert!(out.skipped.is_empty());
    }
}
