//! `lookmig inspect BUNDLE`: what a bundle will do, for a person (or `--json`).

use super::{out, out_json};
use crate::bundle::{self, Change, Op};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Options of `inspect`.
pub struct Options {
    pub bundle: String,
    /// Changes to list (0 = all).
    pub limit: usize,
    pub json: bool,
}

/// Runs `inspect`.
pub fn run(o: &Options) -> Result<()> {
    let b = bundle::open(std::path::Path::new(&o.bundle))?;
    // Changes are streamed: counted by kind and operation, the first `limit` kept to show.
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        op: Op,
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        prior: &'a serde_json::value::RawValue,
    }
    let mut by_kind: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut shown: Vec<Change> = Vec::new();
    let mut total = 0usize;
    b.for_each_line(bundle::CHANGES, |_, line| {
        let h: Head = serde_json::from_slice(line)?;
        let op = match (h.op, h.prior.get() == "null") {
            (Op::Delete, _) => "delete",
            (Op::Put, true) => "create",
            (Op::Put, false) => "update",
        };
        *by_kind
            .entry(h.kind.into_owned())
            .or_default()
            .entry(op)
            .or_default() += 1;
        if o.limit == 0 || shown.len() < o.limit {
            shown.push(serde_json::from_slice(line)?);
        }
        total += 1;
        Ok(())
    })?;
    // Only what is shown of the report is read; the raw text is printed for --json.
    #[derive(serde::Deserialize)]
    struct Shown {
        #[serde(default)]
        groups: Vec<Box<serde_json::value::RawValue>>,
        #[serde(default)]
        conflicts: Vec<Box<serde_json::value::RawValue>>,
        #[serde(default)]
        unresolved: Vec<serde::de::IgnoredAny>,
    }
    if o.json {
        let path = b.dir.join(bundle::REPORT);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: reading", path.display()))?;
        let report: Box<serde_json::value::RawValue> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        return out_json(&serde_json::json!({
            "manifest": b.manifest, "changes_by_kind": by_kind, "report": report,
        }));
    }
    let report: Shown = b.report_part()?;
    let m = &b.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "bundle {} made by {} (checksums OK)", o.bundle, m.tool);
    let _ = writeln!(s, "input export SHA-256 {}", m.input_sha256);
    let _ = writeln!(s, "options {}", m.options);
    let _ = writeln!(s, "changes by kind:");
    for (kind, ops) in &by_kind {
        let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
        let _ = writeln!(s, "  {kind:<18} {}", ops.join(", "));
    }
    let parse = |r: &serde_json::value::RawValue| {
        serde_json::from_str::<Value>(r.get()).unwrap_or(Value::Null)
    };
    let _ = writeln!(s, "groups with several versions: {}", report.groups.len());
    for g in report.groups.iter().take(10).map(|g| parse(g)) {
        let _ = writeln!(
            s,
            "  server {} {} of {} <- oids {} (survivor {})",
            g["server_id"],
            g["otype"],
            g["report_stable_external_id"],
            g["versions"],
            g["survivor_oid"]
        );
    }
    let _ = writeln!(s, "conflicts: {}", report.conflicts.len());
    for c in report.conflicts.iter().take(10).map(|c| parse(c)) {
        let _ = writeln!(
            s,
            "  {} {} on {}:{}: kept {} over {}",
            c["kind"],
            c["merge_key"],
            c["survivor"]["otype"].as_str().unwrap_or(""),
            c["survivor"]["oid"],
            crate::record::short(&c["winner"]),
            crate::record::short(&c["loser"])
        );
    }
    let _ = writeln!(s, "unresolved reports: {}", report.unresolved.len());
    let _ = writeln!(s, "changes ({} of {total}):", shown.len());
    for c in &shown {
        let _ = writeln!(s, "  {}", describe(c));
    }
    out(&s)
}

/// One line for a person: what a change does, field by field.
fn describe(c: &Change) -> String {
    match (&c.prior, &c.record) {
        (Some(_), None) => format!("delete {} {}", c.kind, c.key),
        (None, Some(r)) => format!("create {} {}: {}", c.kind, c.key, crate::record::short(r)),
        (Some(Value::Object(p)), Some(Value::Object(r))) => {
            let mut diffs = Vec::new();
            for (k, v) in r {
                if p.get(k) != Some(v) {
                    let old = p.get(k).map_or("absent".to_string(), crate::record::short);
                    diffs.push(format!("{k}: {old} -> {}", crate::record::short(v)));
                }
            }
            for k in p.keys().filter(|k| !r.contains_key(*k)) {
                diffs.push(format!("{k}: removed"));
            }
            format!("update {} {}: {}", c.kind, c.key, diffs.join("; "))
        }
        _ => format!("{:?} {} {}", c.op, c.kind, c.key),
    }
}
