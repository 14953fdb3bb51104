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
//! [`read`] applies all three while it hands each good line to a command (`db load` reads this
//! way). `migrate` and `restore` read with loops of their own, tuned to their passes, and call
//! the same [`BadLines`], [`header_first`] and `DuplicateKeys`.

use crate::input::{Input, Line};
use crate::record::{DuplicateKeys, Kind};
use crate::report::Skipped;
use anyhow::{bail, Result};
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
    /// [`key_hash`] of the kind name and the record key.
    pub key_hash: KeyHash,
    pub value: T,
}

impl<T> Parsed<T> {
    /// A parsed line of kind `kind` (named `kind_name`) with record key `key`.
    pub fn new(kind: Kind, kind_name: &str, key: &str, value: T) -> Parsed<T> {
        Parsed {
            kind,
            key_hash: key_hash(kind_name, key),
            value,
        }
    }
}

/// What [`read`] found besides the good lines.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every line skipped under `--max-errors`, in line order.
    pub skipped: Vec<Skipped>,
    /// The lines among `skipped` that repeat an earlier key. They are found once the whole
    /// export is read, so they went to `each` like good lines: a command that kept them reads
    /// again with them in `leave_out`.
    pub duplicates: BTreeSet<u64>,
}

/// Reads `input` in batches of about `batch_bytes`, parsing each line with `parse` on the rayon
/// pool and handing each good one to `each` in line order. Lines in `leave_out` are passed over
/// as if absent (a second read after [`Outcome::duplicates`]). Bad lines fail the read or are
/// skipped as `rules` says; duplicate keys are judged after the read, within the same limit.
pub fn read<T: Send>(
    input: &Input,
    rules: BadLines,
    batch_bytes: usize,
    leave_out: &BTreeSet<u64>,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, String> + Sync,
    mut each: impl FnMut(&Line, T) -> Result<()>,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let mut keys = DuplicateKeys::new(crate::sort::run_bytes(8 << 20));
    let mut first = true;
    for batch in input.batches(batch_bytes)? {
        let batch = batch?;
        let parsed: Vec<Option<Result<Parsed<T>, String>>> = batch
            .par_iter()
            .map(|l| (!leave_out.contains(&l.no)).then(|| parse(&l.bytes)))
            .collect();
        for (line, p) in batch.iter().zip(parsed) {
            let Some(p) = p else { continue };
            let is_first = std::mem::replace(&mut first, false);
            let p = p.and_then(|p| header_first(p.kind, is_first).map(|()| p));
            match p {
                Ok(p) => {
                    keys.add_hash(p.key_hash, line.no)?;
                    each(line, p.value)?;
                }
                Err(e) => rules.bad(input, &mut out.skipped, line.no, e, &line.bytes)?,
            }
        }
    }
    for (no, msg, bytes) in keys.finish(input)? {
        rules.bad(input, &mut out.skipped, no, msg, &bytes)?;
        out.duplicates.insert(no);
    }
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
