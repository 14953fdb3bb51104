//! One line at a time: each line is built in [`Gen::buf`](super::Gen) as JSON text, its values
//! encoded by `serde_json` and its timestamps spelled by `chrono`, then written out whole.
//!
//! Lines are built field by field rather than serialised from a struct or a `Value`, because the
//! order and presence of fields varies with the random draws and must stay exactly as it is:
//! the same options give the same bytes. Field names are written as they are: they are fixed
//! ASCII identifiers that need no escaping.

use super::layout::Subj;
use super::vocab::KINDS;
use super::Gen;
use anyhow::{Context, Result};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use fastrand::Rng;
use serde::Serialize;
use std::io::Write;

/// A timestamp: unix seconds and a spelling (0 `Z`, 1 `+02:00`, 2 milliseconds), since real
/// exports mix spellings and the migration compares them as instants.
#[derive(Clone, Copy)]
pub(super) struct Ts {
    pub(super) secs: i64,
    pub(super) style: u8,
    pub(super) millis: u32,
}

impl Ts {
    /// A timestamp in UTC, spelled with `Z` and whole seconds.
    pub(super) fn utc(secs: i64) -> Ts {
        Ts {
            secs,
            style: 0,
            millis: 0,
        }
    }

    /// The RFC 3339 spelling.
    pub(super) fn rfc3339(self) -> String {
        let at = instant(self.secs, self.millis);
        match self.style {
            1 => at
                .with_timezone(&FixedOffset::east_opt(2 * 3600).expect("+02:00 is a valid offset"))
                .to_rfc3339_opts(SecondsFormat::Secs, false),
            2 => at.to_rfc3339_opts(SecondsFormat::Millis, true),
            _ => at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// A timestamp at `secs`, drawing its spelling (mostly `Z`).
pub(super) fn ts(r: &mut Rng, secs: i64) -> Ts {
    let style = match r.u32(0..100) {
        0..=91 => 0,
        92..=96 => 1,
        _ => 2,
    };
    Ts {
        secs,
        style,
        millis: if style == 2 { r.u32(0..1000) } else { 0 },
    }
}

/// The calendar date (`YYYY-MM-DD`, UTC) of unix seconds `secs`: a DATE field's value.
pub(super) fn date(secs: i64) -> String {
    instant(secs, 0).date_naive().to_string()
}

fn instant(secs: i64, millis: u32) -> DateTime<Utc> {
    // The generator draws times between 2019 and 2026: always in chrono's range.
    DateTime::from_timestamp(secs, millis * 1_000_000).expect("a generated time is in range")
}

/// Appends `v` as JSON (strings escaped, numbers as serde_json writes them).
fn push_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(buf, v).expect("a string, number or Subj always serialises");
}

impl<W: Write> Gen<W> {
    /// Starts a line of kind `kind` (an index into [`KINDS`]).
    pub(super) fn begin(&mut self, kind: usize) {
        self.buf.clear();
        self.buf.extend_from_slice(b"{\"kind\":");
        push_json(&mut self.buf, KINDS[kind]);
    }

    /// Starts the field `name`; its value follows.
    pub(super) fn key(&mut self, name: &str) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// Appends JSON text as it is (punctuation, literals, fixed fragments).
    pub(super) fn put(&mut self, json: &str) {
        self.buf.extend_from_slice(json.as_bytes());
    }

    /// Appends a value as JSON.
    pub(super) fn json<T: Serialize + ?Sized>(&mut self, v: &T) {
        push_json(&mut self.buf, v);
    }

    /// A number field.
    pub(super) fn num(&mut self, name: &str, v: u64) {
        self.key(name);
        self.json(&v);
    }

    /// A string field.
    pub(super) fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        self.json(v);
    }

    /// A field whose value is JSON text, written as it is.
    pub(super) fn raw(&mut self, name: &str, v: &str) {
        self.key(name);
        self.put(v);
    }

    /// A timestamp field.
    pub(super) fn ts(&mut self, name: &str, t: Ts) {
        self.key(name);
        self.json(&t.rfc3339());
    }

    /// The `subject` field.
    pub(super) fn subject(&mut self, s: Subj) {
        self.key("subject");
        self.json(&s);
    }

    /// Writes `scratch` as a string field.
    pub(super) fn scratch_field(&mut self, name: &str) {
        self.key(name);
        push_json(&mut self.buf, &self.scratch);
    }

    /// Writes `scratch` as a JSON string where the line is.
    pub(super) fn scratch_value(&mut self) {
        push_json(&mut self.buf, &self.scratch);
    }

    /// Ends the line and writes it out.
    pub(super) fn end(&mut self, kind: usize) -> Result<()> {
        self.buf.extend_from_slice(b"}\n");
        self.out
            .write_all(&self.buf)
            .context("generate: cannot write the export")?;
        self.counts[kind] += 1;
        Ok(())
    }

    /// Draws rich text into `scratch` (see [`super::layout::Layout::rich`]).
    pub(super) fn rich_scratch(
        &mut self,
        seed: u64,
        shift: u64,
        exclude: Option<u64>,
        mentions: u32,
    ) {
        let lay = self.lay;
        lay.rich(&mut self.scratch, seed, shift, exclude, mentions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_three_spellings() {
        let t = |secs, style, millis| {
            Ts {
                secs,
                style,
                millis,
            }
            .rfc3339()
        };
        assert_eq!(t(1_680_689_472, 0, 0), "2023-04-05T10:11:12Z");
        assert_eq!(t(1_680_689_472, 1, 0), "2023-04-05T12:11:12+02:00");
        assert_eq!(t(951_782_400, 2, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(date(951_782_400 + 86_399), "2000-02-29");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut buf = Vec::new();
        push_json(&mut buf, "a\"b\\c\n\u{1}é");
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            r#""a\"b\\c\n\u0001é""#
        );
        buf.clear();
        push_json(&mut buf, &Subj::new("bi_report", 42));
        assert_eq!(buf, br#"{"otype":"bi_report","oid":42}"#);
    }
}
