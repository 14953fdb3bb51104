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
    /// A directory to write the lists into as CSV files (`--csv DIR`).
    pub csv: Option<String>,
    /// Replace an existing `--csv` directory.
    pub overwrite: bool,
    pub json: bool,
}

/// Runs `inspect`.
pub fn run(o: &Options) -> Result<()> {
    let b = bundle::open(std::path::Path::new(&o.bundle))?;
    let id = b.id()?;
    if let Some(dir) = &o.csv {
        let target = crate::output::Target {
            path: dir.into(),
            overwrite: o.overwrite,
        };
        target.check()?;
        let n = write_csv(&b, &target)?;
        if !o.json {
            out(&format!(
                "wrote {dir}/: groups.csv ({} rows), conflicts.csv ({}), unresolved.csv ({}), idmap.csv ({})",
                n[0], n[1], n[2], n[3]
            ))?;
        }
    }
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

/// Writes the bundle's lists as CSV files (a header row, RFC 4180 quoting) into a directory
/// built beside `target` and renamed into place; returns the rows of each file.
fn write_csv(b: &bundle::Bundle, target: &crate::output::Target) -> Result<[u64; 4]> {
    let dir = crate::output::AtomicDir::create(target)?;
    let name = target.path.display().to_string();
    let open = |file: &str| -> Result<csv::Writer<std::io::BufWriter<std::fs::File>>> {
        let f = std::fs::File::create(dir.join(file))
            .with_context(|| format!("{name}/{file}: creating"))?;
        Ok(csv::Writer::from_writer(std::io::BufWriter::new(f)))
    };
    let done = |w: csv::Writer<std::io::BufWriter<std::fs::File>>, file: &str| -> Result<()> {
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|mut f| Ok(std::io::Write::flush(&mut f)?))
            .with_context(|| format!("{name}/{file}: writing (is the disk full?)"))
    };
    let mut n = [0u64; 4];
    // Report names come from the change set: the prior (or created record) of each report.
    let mut names: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    crate::changeset::for_each(b, |_, line| {
        let h = Head::parse(line)?;
        if h.kind != crate::groups::REPORT {
            return Ok(());
        }
        let c = Change::parse(line)?;
        if let Some(r) = c.prior.as_deref().or(c.record.as_deref()) {
            let v: Value = serde_json::from_str(r.get())?;
            if let (Some(oid), Some(name)) = (v["oid"].as_i64(), v["name"].as_str()) {
                names.insert(oid, name.to_string());
            }
        }
        Ok(())
    })?;
    let value_of = |r: &Value, kind: &str| -> String {
        let v = if kind == "trust_flag" {
            &r["reason"]
        } else {
            &r["value"]
        };
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }
    };
    let mut conflicts_of: std::collections::HashMap<(String, i64), u64> =
        std::collections::HashMap::new();
    let mut w = open("conflicts.csv")?;
    w.write_record([
        "survivor_otype",
        "survivor_oid",
        "report_name",
        "kind",
        "merge_key",
        "winner_oid",
        "winner_value",
        "loser_oid",
        "loser_value",
        "loser_sha256",
        "decision_line",
    ])?;
    b.for_each_item(bundle::CONFLICTS, |c: Value| {
        let kind = c["kind"].as_str().unwrap_or("");
        let otype = c["survivor"]["otype"].as_str().unwrap_or("").to_string();
        let oid = c["survivor"]["oid"].as_i64().unwrap_or(0);
        *conflicts_of.entry((otype.clone(), oid)).or_default() += 1;
        let sha = c["loser"]
            .as_object()
            .map(crate::decisions::record_sha256)
            .unwrap_or_default();
        let name = if otype == crate::groups::REPORT {
            names.get(&oid).cloned().unwrap_or_default()
        } else {
            String::new()
        };
        w.write_record([
            otype,
            oid.to_string(),
            name,
            kind.to_string(),
            c["merge_key"].as_str().unwrap_or("").to_string(),
            c["winner"]["subject"]["oid"].to_string(),
            value_of(&c["winner"], kind),
            c["loser"]["subject"]["oid"].to_string(),
            value_of(&c["loser"], kind),
            sha,
            c["decision_line"]
                .as_u64()
                .map_or(String::new(), |l| l.to_string()),
        ])?;
        n[1] += 1;
        Ok(())
    })?;
    done(w, "conflicts.csv")?;
    let mut w = open("groups.csv")?;
    w.write_record([
        "server_id",
        "otype",
        "report_stable_external_id",
        "report_name",
        "survivor_oid",
        "versions",
        "version_oids",
        "deleted_left_oids",
        "conflicts",
    ])?;
    b.for_each_item(bundle::GROUPS, |g: Value| {
        let oids = |v: &Value| -> Vec<i64> {
            v.as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default()
        };
        let versions = oids(&g["versions"]);
        let otype = g["otype"].as_str().unwrap_or("").to_string();
        let survivor = g["survivor_oid"].as_i64().unwrap_or(0);
        let name = if otype == crate::groups::REPORT {
            versions
                .iter()
                .find_map(|v| names.get(v).cloned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let join = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
        w.write_record([
            g["server_id"].to_string(),
            otype.clone(),
            g["report_stable_external_id"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name,
            survivor.to_string(),
            versions.len().to_string(),
            join(&versions),
            join(&oids(&g["deleted_left"])),
            conflicts_of
                .get(&(otype, survivor))
                .copied()
                .unwrap_or(0)
                .to_string(),
        ])?;
        n[0] += 1;
        Ok(())
    })?;
    done(w, "groups.csv")?;
    let mut w = open("unresolved.csv")?;
    w.write_record([
        "server_id",
        "oid",
        "external_id",
        "suggested_stable_external_id",
    ])?;
    b.for_each_item(bundle::UNRESOLVED, |u: Value| {
        let ext = u["external_id"].as_str().unwrap_or("").to_string();
        let suggestion = crate::review::suggest_stable(&ext).unwrap_or_default();
        w.write_record([
            u["server_id"].to_string(),
            u["oid"].to_string(),
            ext,
            suggestion,
        ])?;
        n[2] += 1;
        Ok(())
    })?;
    done(w, "unresolved.csv")?;
    let mut w = open("idmap.csv")?;
    let cols = [
        "server_id",
        "otype",
        "oid",
        "legacy_external_id",
        "stable_external_id",
        "survivor_oid",
        "action",
    ];
    w.write_record(cols)?;
    b.for_each_item(bundle::IDMAP, |r: Value| {
        w.write_record(cols.iter().map(|c| match &r[*c] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }))?;
        n[3] += 1;
        Ok(())
    })?;
    done(w, "idmap.csv")?;
    dir.commit()?;
    Ok(n)
}
