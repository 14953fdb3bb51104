//! The report of a migration (SPEC §6 `report.json`, and what `plan` prints): counts per server,
//! the groups with several versions, the conflicts, the unresolved reports, the warnings, and
//! the lines skipped under `--max-errors`, verbatim so that nothing is lost silently.

use crate::groups::{Group, ServerCounts, Unresolved};
use crate::merge::Conflict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A line skipped under `--max-errors`, kept verbatim.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub line: u64,
    pub error: String,
    /// The line as it was (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
}

/// Totals over the whole export.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub lines: u64,
    pub records_by_kind: BTreeMap<String, u64>,
    pub migrated_servers: Vec<i64>,
    pub changes_put: u64,
    pub changes_delete: u64,
    /// Curation records of retired versions carried onto survivors, by kind.
    pub curation_carried: BTreeMap<String, u64>,
    /// Object-set members and mentions pointed from a retired version to its survivor.
    pub references_repaired: u64,
    pub conflicts: u64,
    pub unresolved: u64,
    pub warnings: u64,
    pub skipped_lines: u64,
}

/// Everything a migration found and decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub counts: Counts,
    pub servers: BTreeMap<i64, ServerCounts>,
    pub groups: Vec<Group>,
    pub conflicts: Vec<Conflict>,
    pub unresolved: Vec<Unresolved>,
    pub warnings: Vec<String>,
    pub skipped_lines: Vec<Skipped>,
}

impl Report {
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
            "changes: {} put, {} delete",
            c.changes_put, c.changes_delete
        );
        let _ = writeln!(
            s,
            "conflicts: {} (kept the winner; each listed in full with --json)",
            c.conflicts
        );
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
