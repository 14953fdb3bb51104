//! `lookmig inspect BUNDLE`: what a bundle will do, for a person (or `--json`).

use super::{out, out_json};
use crate::bundle;
use crate::changeset::{Change, Head, Op, RawRecord};
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
    let id = b.id()?;
    // Changes are streamed: counted by kind and operation, the first `limit` kept to show.
    let mut by_kind: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut shown: Vec<Change> = Vec::new();
    let mut total = 0usize;
    crate::changeset::for_each(&b, |_, line| {
        let h = Head::parse(line)?;
        *by_kind
            .entry(h.kind.into_owned())
            .or_default()
            .entry(h.op.name())
            .or_default() += 1;
        if o.limit == 0 || shown.len() < o.limit {
            shown.push(Change::parse(line)?);
        }
        total += 1;
        Ok(())
    })?;
    let groups: Vec<Value> = b.items(bundle::GROUPS, 10)?;
    let conflicts: Vec<Value> = b.items(bundle::CONFLICTS, 10)?;
    let counts = &b.manifest.counts;
    if o.json {
        let path = b.dir.join(bundle::REPORT);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: reading", path.display()))?;
        let report: Box<serde_json::value::RawValue> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        return out_json(&serde_json::json!({
            "id": id, "manifest": b.manifest, "changes_by_kind": by_kind, "report": report,
        }));
    }
    let m = &b.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "bundle {} made by {} (checksums OK)", o.bundle, m.tool);
    let _ = writeln!(s, "bundle id {id} (restore --expect {id})");
    let _ = writeln!(s, "input export SHA-256 {}", m.input_sha256);
    let _ = writeln!(s, "options {}", m.options);
    let _ = writeln!(s, "changes by kind:");
    for (kind, ops) in &by_kind {
        let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
        let _ = writeln!(s, "  {kind:<18} {}", ops.join(", "));
    }
    let _ = writeln!(s, "groups with several versions: {}", counts["groups"]);
    for g in &groups {
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
    let _ = writeln!(s, "conflicts: {}", counts["conflicts"]);
    for c in &conflicts {
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
    let _ = writeln!(s, "unresolved reports: {}", counts["unresolved"]);
    let _ = writeln!(s, "changes ({} of {total}):", shown.len());
    for c in &shown {
        let _ = writeln!(s, "  {}", describe(c));
    }
    out(&s)
}

/// One line for a person: what a change does, field by field.
fn describe(c: &Change) -> String {
    let short = |r: &serde_json::value::RawValue| {
        serde_json::from_str::<Value>(r.get())
            .map(|v| crate::record::short(&v))
            .unwrap_or_default()
    };
    match c.op {
        Op::Delete => format!("delete {} {}", c.kind, c.key),
        Op::Create => format!(
            "create {} {}: {}",
            c.kind,
            c.key,
            c.record.as_deref().map(short).unwrap_or_default()
        ),
        Op::Update => {
            let prior = c
                .prior
                .as_deref()
                .and_then(|p| RawRecord::parse(p.get().as_bytes()).ok());
            let mut diffs = Vec::new();
            for (k, v) in &c.set {
                let old = prior
                    .as_ref()
                    .and_then(|p| p.get(k))
                    .map_or("absent".to_string(), short);
                diffs.push(format!("{k}: {old} -> {}", short(v)));
            }
            for k in &c.unset {
                diffs.push(format!("{k}: removed"));
            }
            format!("update {} {}: {}", c.kind, c.key, diffs.join("; "))
        }
    }
}
