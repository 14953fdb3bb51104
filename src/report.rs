//! The report of a migration (SPEC §6 `report.json`, and what `plan` prints): counts per server,
//! the groups with several versions, the conflicts, the unresolved reports, the warnings, and
//! the lines skipped under `--max-errors`, verbatim so that nothing is lost silently.

use crate::groups::{ServerCounts, Unresolved};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// A line skipped under `--max-errors`, kept verbatim.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub line: u64,
    pub error: String,
    /// The line as it was (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
    /// The exact bytes in hex, when the line is not UTF-8 (so `text` could not hold them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_hex: Option<String>,
}

impl Skipped {
    /// A skipped line, kept so that no byte of it is lost.
    pub fn new(line: u64, error: String, bytes: &[u8]) -> Skipped {
        let bytes_hex = std::str::from_utf8(bytes)
            .is_err()
            .then(|| crate::input::hex(bytes));
        Skipped {
            line,
            error,
            text: String::from_utf8_lossy(bytes).into_owned(),
            bytes_hex,
        }
    }
}

/// Totals over the whole export.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub lines: u64,
    pub records_by_kind: BTreeMap<String, u64>,
    pub migrated_servers: Vec<i64>,
    pub changes_create: u64,
    pub changes_update: u64,
    pub changes_delete: u64,
    /// Curation records of retired versions carried onto survivors, by kind.
    pub curation_carried: BTreeMap<String, u64>,
    /// Object-set members and mentions pointed from a retired version to its survivor.
    pub references_repaired: u64,
    pub conflicts: u64,
    pub unresolved: u64,
    pub warnings: u64,
    pub skipped_lines: u64,
    /// Lines of the `--decisions` file applied (each listed in `decisions.ndjson.zst`).
    pub decisions: u64,
}

/// A list that can grow past memory: items are serialised as they come and kept in a
/// temporary file, then written out as a JSON array when the report is.
#[derive(Default)]
pub struct Spill {
    file: Option<File>,
    on_disk: u64,
    tail: Vec<u8>,
    len: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spill({} items)", self.len)
    }
}

impl Spill {
    /// Adds one item.
    pub fn push<T: Serialize>(&mut self, item: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.tail, item)?;
        self.tail.push(b'\n');
        self.len += 1;
        if self.tail.len() >= 1 << 20 {
            use anyhow::Context;
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(
                    tempfile::tempfile().context("creating a temporary file for the report")?,
                ),
            };
            file.write_all_at(&self.tail, self.on_disk)
                .context("writing the report (is TMPDIR full?)")?;
            self.on_disk += self.tail.len() as u64;
            self.tail.clear();
        }
        Ok(())
    }

    /// How many items were added.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with each item's JSON, in order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut pending: Vec<u8> = Vec::new();
        let mut at = 0;
        if let Some(file) = &self.file {
            while at < self.on_disk {
                let n = file.read_at(&mut buf, at)?;
                if n == 0 {
                    break;
                }
                at += n as u64;
                pending.extend_from_slice(&buf[..n]);
                let mut start = 0;
                while let Some(i) = memchr::memchr(b'\n', &pending[start..]) {
                    f(&pending[start..start + i])?;
                    start += i + 1;
                }
                pending.drain(..start);
            }
        }
        for line in self.tail.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            f(line)?;
        }
        Ok(())
    }
}

impl Serialize for Spill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.len as usize))?;
        let mut failure = None;
        let read = self.for_each(|line| {
            let raw: &serde_json::value::RawValue =
                serde_json::from_slice(line).map_err(std::io::Error::other)?;
            if let Err(e) = seq.serialize_element(raw) {
                failure = Some(e);
                return Err(std::io::Error::other("serialising"));
            }
            Ok(())
        });
        if let Some(e) = failure {
            return Err(e);
        }
        read.map_err(|e| S::Error::custom(format!("reading the report's temporary file: {e}")))?;
        seq.end()
    }
}

/// Everything a migration found and decided.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub counts: Counts,
    pub servers: BTreeMap<i64, ServerCounts>,
    /// The groups with several versions ([`crate::groups::Group`]).
    pub groups: Spill,
    /// Conflicts ([`crate::merge::Conflict`]), each in full.
    pub conflicts: Spill,
    pub unresolved: Vec<Unresolved>,
    pub warnings: Vec<String>,
    pub skipped_lines: Vec<Skipped>,
    /// The reviewer's decisions applied, when `--decisions` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Vec<crate::decisions::Decision>>,
}

/// What `report.json` holds: the counts and the summaries per server, small whatever the size
/// of the catalog (the long lists are parts of their own, SPEC §6).
#[derive(Debug, Serialize)]
pub struct Small<'a> {
    pub counts: &'a Counts,
    pub servers: &'a BTreeMap<i64, ServerCounts>,
}

impl Report {
    /// The part of the report that `report.json` holds.
    pub fn small(&self) -> Small<'_> {
        Small {
            counts: &self.counts,
            servers: &self.servers,
        }
    }

    /// A short summary for a person.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} lines read, {} records",
            c.lines,
            c.records_by_kind.values().sum::<u64>()
        );
        for (id, sc) in &self.servers {
            let _ = writeln!(
                s,
                "server {id}: {} reports, {} columns; {} reports re-keyed, {} groups with several versions, \
                 {} reports and {} columns retired, {} deleted versions left as they are, {} unresolved",
                sc.reports,
                sc.columns,
                sc.reports_rekeyed,
                sc.report_groups_with_versions,
                sc.reports_retired,
                sc.columns_retired,
                sc.deleted_versions_left,
                sc.unresolved
            );
        }
        let carried: Vec<String> = c
            .curation_carried
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let _ = writeln!(
            s,
            "curation carried to survivors: {}",
            if carried.is_empty() {
                "none".to_string()
            } else {
                carried.join(", ")
            }
        );
        let _ = writeln!(s, "references repaired: {}", c.references_repaired);
        let _ = writeln!(
            s,
            "changes: {} create, {} update, {} delete",
            c.changes_create, c.changes_update, c.changes_delete
        );
        let _ = writeln!(
            s,
            "conflicts: {} (kept the winner; each listed in full with --json)",
            c.conflicts
        );
        if let Some(d) = &self.decisions {
            let choose = d.iter().filter(|d| d.is_choose()).count();
            let _ = writeln!(
                s,
                "decisions applied: {} ({choose} conflict winners chosen, {} unresolved reports mapped)",
                d.len(),
                d.len() - choose
            );
        }
        for u in self.unresolved.iter().take(10) {
            let _ = writeln!(
                s,
                "unresolved: server {} report oid {} external_id {:?}",
                u.server_id, u.oid, u.external_id
            );
        }
        if self.unresolved.len() > 10 {
            let _ = writeln!(
                s,
                "unresolved: ... and {} more (see --json)",
                self.unresolved.len() - 10
            );
        }
        for w in self.warnings.iter().take(10) {
            let _ = writeln!(s, "warning: {w}");
        }
        if self.warnings.len() > 10 {
            let _ = writeln!(
                s,
                "warning: ... and {} more (see --json)",
                self.warnings.len() - 10
            );
        }
        for k in &self.skipped_lines {
            let _ = writeln!(s, "skipped line {}: {}", k.line, k.error);
        }
        s
    }
}
