//! Synthetic catalog exports (SPEC §1) of any size, for tests, rehearsals and benchmarks.
//!
//! A real export holds customer data and cannot be shipped with the tool, yet the migration must
//! be exercised on exports that look like production ones: several versions of one Looker report
//! with curation spread over old and new versions, conflicting descriptions, mentions of old
//! versions in rich text, deleted versions, reports whose id can only be recovered from their
//! `source_url`, reports that cannot be resolved at all, and objects of other servers and kinds
//! that must be left alone. [`generate`] writes such an export.
//!
//! Design:
//! - **Deterministic**: the same [`GenerateOptions`] give the same bytes. Every logical report `i`
//!   draws from its own random generator seeded from `(seed, i)`, so its shape (form, number of
//!   versions, number of columns) can be recomputed cheaply from anywhere. The bytes are part of
//!   the contract of the tests and benches (and of `samples/demo.ndjson.zst`): a change that
//!   moves one random draw changes every export after it.
//! - **Streamed, constant memory**: oids are a pure function of the report index, the version
//!   slot and the column index, so a mention can point at any report version of the export
//!   (before or after the current line) without remembering what was written. Nothing grows
//!   with the number of reports.
//! - **Fast**: each line is built in one reused buffer (values encoded by `serde_json`, times
//!   by `chrono`) and written through a `BufWriter`; no `serde_json::Value` is built.
//!
//! The parts:
//! - [`vocab`](self::vocab): the kinds of lines, the custom fields and the words drawn from;
//! - [`layout`](self::layout): oids and report shapes as pure functions of the indexes;
//! - [`catalog`](self::catalog): users, servers, folders, reports and their columns;
//! - [`curation`](self::curation): field values, trust flags, tags, stars, conversations, and the
//!   records of other kinds that refer to reports;
//! - [`text`](self::text): names and rich text with mentions;
//! - [`write`](self::write): one line at a time, JSON and RFC 3339 timestamps.
//!
//! Every line is valid per SPEC §1, every record key (kind, key) occurs once, and every mention
//! and object-set member points at an object that exists in the export (report versions, report
//! columns, `user` and `table` records).

mod catalog;
mod curation;
mod layout;
mod text;
mod vocab;
mod write;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use anyhow::{ensure, Context, Result};
use layout::Layout;
use vocab::{HEADER, KINDS};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of logical Looker reports; each has 1–4 versions written as separate `bi_report`
    /// records.
    pub reports: u64,
    /// Seed of the random generator: the same options give the same bytes.
    pub seed: u64,
    /// Number of Looker servers (at least 1; default 2). One non-Looker server is always added.
    pub servers: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            reports: 1000,
            seed: 1,
            servers: 2,
        }
    }
}

/// Counts of what was written, by kind.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GenerateStats {
    /// Number of lines written (the header included).
    pub lines: u64,
    /// Number of lines per `kind`.
    pub by_kind: BTreeMap<String, u64>,
}

/// Writes the export to `out`.
///
/// The writer is wrapped in a `BufWriter` and flushed at the end; pass it unbuffered.
pub fn generate<W: Write>(opts: &GenerateOptions, out: W) -> Result<GenerateStats> {
    ensure!(
        opts.servers >= 1,
        "generate: at least one Looker server is needed (got --servers 0)"
    );
    let lay = Layout::new(opts);
    let mut g = Gen {
        out: BufWriter::with_capacity(1 << 20, out),
        lay,
        buf: Vec::with_capacity(4096),
        scratch: String::with_capacity(2048),
        counts: [0; KINDS.len()],
        next_flag: 1,
        next_article: 1,
        next_conversation: 1,
        next_post: 1,
    };
    g.run()?;
    g.out.flush().context("generate: cannot write the export")?;
    let mut stats = GenerateStats::default();
    for (k, &n) in g.counts.iter().enumerate() {
        stats.lines += n;
        if n > 0 {
            stats.by_kind.insert(KINDS[k].to_string(), n);
        }
    }
    Ok(stats)
}

/// The generator's state: the output, the line being built, and the running ids.
struct Gen<W: Write> {
    out: BufWriter<W>,
    lay: Layout,
    /// The line being built (JSON text).
    buf: Vec<u8>,
    /// Rich text and other string values, built before being encoded into `buf`.
    scratch: String,
    counts: [u64; KINDS.len()],
    next_flag: u64,
    next_article: u64,
    next_conversation: u64,
    next_post: u64,
}

impl<W: Write> Gen<W> {
    /// The export, in the order its lines are written.
    fn run(&mut self) -> Result<()> {
        let lay = self.lay;
        self.begin(HEADER);
        self.raw("format", "\"catalog-export\"");
        self.raw("version", "1");
        self.end(HEADER)?;
        self.users()?;
        self.custom_fields()?;
        self.servers()?;
        self.folders()?;
        for k in 0..lay.tab_reports {
            self.tab_report(k)?;
        }
        for i in 0..lay.n {
            self.report(i)?;
            self.extras(i)?;
        }
        Ok(())
    }
}

/// The lines of a generated export of `reports` reports on two servers, for unit tests
/// elsewhere that need realistic lines.
#[cfg(test)]
pub(crate) fn sample_lines(reports: u64, seed: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let opts = GenerateOptions {
        reports,
        seed,
        servers: 2,
    };
    generate(&opts, &mut out).expect("generating into memory");
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::vocab::{FLAG_TYPES, F_UNDEFINED};
    use super::*;
    use serde_json::Value;
    use sha2::{Digest, Sha256};
    use std::collections::{HashMap, HashSet};

    fn gen(reports: u64, seed: u64) -> (Vec<u8>, GenerateStats) {
        let mut out = Vec::new();
        let stats = generate(
            &GenerateOptions {
                reports,
                seed,
                servers: 2,
            },
            &mut out,
        )
        .unwrap();
        (out, stats)
    }

    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (n, k) in keys.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    canonical(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (n, x) in a.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            _ => out.push_str(&serde_json::to_string(v).unwrap()),
        }
    }

    fn subj_key(v: &Value) -> (String, u64) {
        let s = v.get("subject").expect("subject");
        (
            s["otype"].as_str().expect("otype").to_string(),
            s["oid"].as_u64().expect("oid"),
        )
    }

    /// Mentions in rich text, by a simple scan of `<a …>` start tags.
    fn mentions(text: &str) -> Vec<(String, u64)> {
        let lower = text.to_ascii_lowercase();
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(k) = lower[pos..].find("<a ") {
            let start = pos + k;
            let end = start + lower[start..].find('>').expect("closed tag");
            let tag = &lower[start..end];
            let attr = |name: &str| -> Option<String> {
                let p = tag.find(name)? + name.len();
                let rest = &tag[p..];
                let (q, rest) = match rest.as_bytes()[0] {
                    b'"' => ('"', &rest[1..]),
                    b'\'' => ('\'', &rest[1..]),
                    _ => (' ', rest),
                };
                Some(rest.split(q).next().unwrap().to_string())
            };
            if let (Some(oid), Some(otype)) = (attr("data-oid="), attr("data-otype=")) {
                out.push((otype, oid.parse().expect("numeric data-oid")));
            }
            pos = end;
        }
        out
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, sa) = gen(200, 7);
        let (b, sb) = gen(200, 7);
        assert_eq!(a, b);
        assert_eq!(sa.lines, sb.lines);
        assert_eq!(sa.by_kind, sb.by_kind);
    }

    #[test]
    fn different_seed_different_bytes() {
        let (a, _) = gen(200, 7);
        let (b, _) = gen(200, 8);
        assert_ne!(a, b);
    }

    #[test]
    fn zero_servers_is_an_error() {
        let opts = GenerateOptions {
            reports: 1,
            seed: 1,
            servers: 0,
        };
        assert!(generate(&opts, Vec::new()).is_err());
    }

    #[test]
    fn tiny_exports_work() {
        for n in 0..4 {
            let (out, stats) = gen(n, 3);
            assert_eq!(
                out.iter().filter(|&&b| b == b'\n').count() as u64,
                stats.lines
            );
        }
    }

    /// Every line is valid per SPEC §1, keys are unique, and every reference resolves.
    #[test]
    fn valid_unique_and_resolvable() {
        let (out, stats) = gen(300, 42);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with('\n'));
        let mut keys: HashSet<(String, String)> = HashSet::new();
        let mut exists: HashSet<(String, u64)> = HashSet::new();
        let mut refs: Vec<(String, u64)> = Vec::new();
        let mut fields: HashMap<u64, (String, bool)> = HashMap::new();
        fields.insert(3, ("TEXT".into(), false));
        fields.insert(4, ("RICH_TEXT".into(), false));
        fields.insert(8, ("OBJECT_SET".into(), true));
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut report_servers: HashMap<u64, u64> = HashMap::new();
        let mut looker_servers = HashSet::new();
        let mut n_lines = 0;
        let rich_refs = |t: &str, refs: &mut Vec<(String, u64)>| refs.extend(mentions(t));
        for (ln, line) in text.lines().enumerate() {
            n_lines += 1;
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{ln}: {e}"));
            let kind = v["kind"].as_str().expect("kind").to_string();
            *by_kind.entry(kind.clone()).or_default() += 1;
            let int = |f: &str| {
                v[f].as_u64()
                    .unwrap_or_else(|| panic!("{ln}: {f} in {line}"))
            };
            let string = |f: &str| {
                v[f].as_str()
                    .unwrap_or_else(|| panic!("{ln}: {f} in {line}"))
                    .to_string()
            };
            if ln == 0 {
                assert_eq!(kind, "header");
                assert_eq!(v["format"], "catalog-export");
                assert_eq!(v["version"], 1);
                continue;
            }
            for t in ["created_at", "last_updated", "ts_updated", "ts_created"] {
                if let Some(s) = v.get(t) {
                    let s = s.as_str().unwrap();
                    assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{s}");
                }
            }
            let key = match kind.as_str() {
                "bi_server" => {
                    if string("type") == "looker" {
                        looker_servers.insert(int("id"));
                    }
                    int("id").to_string()
                }
                "bi_folder" | "bi_report" | "bi_report_column" => {
                    int("server_id");
                    string("external_id");
                    if kind == "bi_report_column" {
                        string("report");
                    }
                    if kind == "bi_report" {
                        report_servers.insert(int("oid"), int("server_id"));
                    }
                    if let Some(d) = v.get("deleted") {
                        assert!(d.is_boolean());
                    }
                    exists.insert((kind.clone(), int("oid")));
                    int("oid").to_string()
                }
                "custom_field" => {
                    let multi = v.get("allow_multiple").map(|b| b.as_bool().unwrap());
                    fields.insert(int("id"), (string("field_type"), multi.unwrap_or(false)));
                    int("id").to_string()
                }
                "field_value" => {
                    let (o, oid) = subj_key(&v);
                    refs.push((o.clone(), oid));
                    let f = int("field_id");
                    let val = &v["value"];
                    match fields.get(&f).map(|(t, _)| t.as_str()) {
                        Some("TEXT" | "PICKER" | "DATE") => assert!(val.is_string(), "{line}"),
                        Some("RICH_TEXT") => {
                            rich_refs(val.as_str().expect("rich text"), &mut refs);
                        }
                        Some("MULTI_PICKER") => {
                            assert!(val.as_array().unwrap().iter().all(|x| x.is_string()))
                        }
                        Some("OBJECT_SET") => {
                            let items = val.as_array().unwrap();
                            if !fields[&f].1 {
                                assert!(items.len() <= 1, "{line}");
                            }
                            for m in items {
                                let o = m["otype"].as_str().unwrap().to_string();
                                refs.push((o, m["oid"].as_u64().unwrap()));
                            }
                        }
                        Some(t) => panic!("unknown type {t}"),
                        None => assert_eq!(f, F_UNDEFINED),
                    }
                    format!("{o}:{oid}:{f}")
                }
                "trust_flag" => {
                    assert!(FLAG_TYPES.contains(&string("flag_type").as_str()));
                    int("user_id");
                    refs.push(subj_key(&v));
                    if let Some(r) = v.get("reason") {
                        rich_refs(r.as_str().unwrap(), &mut refs);
                    }
                    int("id").to_string()
                }
                "tag" => {
                    let (o, oid) = subj_key(&v);
                    refs.push((o.clone(), oid));
                    format!("{o}:{oid}:{}", string("name"))
                }
                "star" => {
                    let (o, oid) = subj_key(&v);
                    refs.push((o.clone(), oid));
                    format!("{o}:{oid}:{}", int("user_id"))
                }
                "article" => {
                    rich_refs(&string("body"), &mut refs);
                    int("id").to_string()
                }
                "conversation" => {
                    match v.get("subject") {
                        None | Some(Value::Null) => {}
                        Some(_) => refs.push(subj_key(&v)),
                    }
                    for p in v["posts"].as_array().unwrap() {
                        p["id"].as_u64().unwrap();
                        p["user_id"].as_u64().unwrap();
                        rich_refs(p["text"].as_str().unwrap(), &mut refs);
                    }
                    int("id").to_string()
                }
                _ => {
                    if kind == "user" || kind == "table" {
                        exists.insert((kind.clone(), int("id")));
                    }
                    if v.get("subject").is_some() {
                        refs.push(subj_key(&v));
                    }
                    match v.get("id") {
                        Some(id) => id.as_u64().unwrap().to_string(),
                        None => {
                            let mut c = String::new();
                            canonical(&v, &mut c);
                            format!("{:x}", Sha256::digest(c.as_bytes()))
                        }
                    }
                }
            };
            assert!(
                keys.insert((kind.clone(), key.clone())),
                "duplicate key {kind} {key}: {line}"
            );
        }
        assert_eq!(n_lines, stats.lines);
        assert_eq!(by_kind, stats.by_kind);
        for r in &refs {
            assert!(exists.contains(r), "dangling reference {r:?}");
        }
        // The non-Looker server has reports, and every kind the brief asks for is present.
        assert_eq!(looker_servers.len(), 2);
        assert!(report_servers.values().any(|s| !looker_servers.contains(s)));
        for k in KINDS {
            assert!(stats.by_kind.contains_key(k), "no {k}");
        }
        // Mentions are frequent enough to matter.
        assert!(refs.len() > 1000);
    }

    /// The report forms of the brief all occur: legacy ids with several versions, stable ids,
    /// ids only in source_url, unresolvable ones, and deleted versions.
    #[test]
    fn report_forms_occur() {
        let (out, _) = gen(300, 42);
        let text = std::str::from_utf8(&out).unwrap();
        let mut seen = HashMap::new();
        let mut deleted = 0;
        let mut no_update = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["kind"] != "bi_report" || v["server_id"].as_u64().unwrap() > 2 {
                continue;
            }
            let ext = v["external_id"].as_str().unwrap();
            let form = if ext.starts_with("lookml_dashboard_") {
                "lookml"
            } else if ext.starts_with("dashboard/") || ext.starts_with("look/") {
                "stable"
            } else if ext.starts_with("dashboard_ext_")
                || ext.starts_with("dashboard-")
                || ext.starts_with("look-")
                || ext.starts_with("looks_")
            {
                "url"
            } else if ext.starts_with("dashboard_") && ext.matches('_').count() == 2 {
                "dashboard"
            } else if ext.starts_with("look_") && !ext.contains("_v") {
                "look"
            } else {
                "other"
            };
            *seen.entry(form).or_insert(0) += 1;
            deleted += usize::from(v.get("deleted") == Some(&Value::Bool(true)));
            no_update += usize::from(v.get("last_updated").is_none());
        }
        for f in ["lookml", "stable", "url", "dashboard", "look", "other"] {
            assert!(
                seen.get(f).copied().unwrap_or(0) > 0,
                "no {f} reports: {seen:?}"
            );
        }
        assert!(deleted > 0 && no_update > 0);
    }

    #[test]
    fn streams_large_exports() {
        let mut lines = 0u64;
        struct Count<'a>(&'a mut u64);
        impl Write for Count<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                *self.0 += memchr::memchr_iter(b'\n', b).count() as u64;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let opts = GenerateOptions {
            reports: 20_000,
            seed: 5,
            servers: 3,
        };
        let stats = generate(&opts, Count(&mut lines)).unwrap();
        assert_eq!(lines, stats.lines);
        assert!(stats.lines > 20_000 * 10);
    }
}
