//! `lookmig inspect BUNDLE`: what a bundle will do, for a person (or `--json`).

use super::{out, out_json};
use crate::bundle::{self, Change, Op};
use anyhow::Result;
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
    let changes = b.changes()?;
    let report = b.report()?;
    let mut by_kind: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for c in &changes {
        let op = match (c.op, &c.prior) {
            (Op::Delete, _) => "delete",
            (Op::Put, None) => "create",
            (Op::Put, Some(_)) => "update",
        };
        *by_kind
            .entry(c.kind.clone())
            .or_default()
            .entry(op)
            .or_default() += 1;
    }
    if o.json {
        return out_json(&serde_json::json!({
            "manifest": b.manifest, "changes_by_kind": by_kind, "report": report,
        }));
    }
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
    let groups = report["groups"].as_array().map_or(0, Vec::len);
    let _ = writeln!(s, "groups with several versions: {groups}");
    for g in report["groups"].as_array().into_iter().flatten().take(10) {
        let _ = writeln!(
            s,
            "  server {} {} {} <- oids {} (survivor {})",
            g["server_id"], g["otype"], g["stable_external_id"], g["versions"], g["survivor_oid"]
        );
    }
    let _ = writeln!(
        s,
        "conflicts: {}",
        report["conflicts"].as_array().map_or(0, Vec::len)
    );
    for c in report["conflicts"]
        .as_array()
        .into_iter()
        .flatten()
        .take(10)
    {
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
    let _ = writeln!(
        s,
        "unresolved reports: {}",
        report["unresolved"].as_array().map_or(0, Vec::len)
    );
    let limit = if o.limit == 0 {
        changes.len()
    } else {
        o.limit.min(changes.len())
    };
    let _ = writeln!(s, "changes ({limit} of {}):", changes.len());
    for c in &changes[..limit] {
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
