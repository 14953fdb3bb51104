//! The review page (`lookmig review BUNDLE -o review.html`): one self-contained HTML file for
//! the administrator who signs a migration off, made from the bundle alone.
//!
//! Why a page: the person who signs off reads screens, not JSON, and a catalog of 200,000
//! reports has tens of thousands of conflicts. The page shows the bundle id and the exact
//! `restore --expect` command, totals and charts (inline SVG, drawn here so they show before
//! any script runs), a searchable list of the groups, each group's versions with their curation
//! before and the survivor's afterwards, the conflicts side by side, the unresolved reports and
//! the warnings; and it lets the reviewer decide conflicts and unresolved reports, saving
//! `decisions.csv` for `migrate --decisions` ([`crate::decisions`]).
//!
//! Building streams the bundle's parts: the groups and conflicts first (to know which oid
//! belongs to which group), then the change set once, each change routed to its group through
//! an external sort ([`crate::sort::Sorter`]) so memory does not grow with the change set. The
//! page embeds the list of groups in one JSON block and each group's details in chunks of their
//! own, parsed only when a group is opened; details stop at a byte budget (groups with
//! conflicts first), and the page says which groups have none.

use crate::bundle::{self, Bundle};
use crate::sort::Sorter;
use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Bytes of group details per embedded chunk (one `<script type="application/json">` block).
const CHUNK_BYTES: usize = 256 << 10;
/// Change lines longer than this are embedded with their long strings cut.
const LONG_LINE: usize = 16 << 10;
/// Strings longer than this are cut in a long line.
const LONG_STRING: usize = 2000;
/// Bytes of change lines kept per group; a group with more says how many were left out.
const PER_GROUP_BYTES: usize = 24 << 10;

/// What building a page found, for the command's summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    /// Groups of reports with more than one version (the list of the page).
    pub groups: u64,
    /// Of those, the groups whose details are embedded.
    pub groups_with_details: u64,
    pub conflicts: u64,
    pub unresolved: u64,
    pub changes: u64,
    /// Bytes of the page.
    pub bytes: u64,
}

/// One report group of the page's list.
struct Row {
    server: i64,
    stable: String,
    survivor: i64,
    versions: Vec<i64>,
    deleted_left: Vec<i64>,
    column_groups: u32,
    conflicts: u32,
    changes: u32,
    /// The name of the earliest version in version order that has one: (rank, name).
    name: Option<(usize, String)>,
    /// Bytes of its change lines held for the details.
    held: usize,
    /// Its change lines left out of the details (past [`PER_GROUP_BYTES`]).
    left_out: u32,
    /// The details chunk holding its group, or -1.
    chunk: i64,
    /// Whether that chunk holds its changes too, or only its conflicts.
    full: bool,
}

#[derive(Deserialize)]
struct GroupLine {
    server_id: i64,
    otype: String,
    report_stable_external_id: String,
    survivor_oid: i64,
    versions: Vec<i64>,
    #[serde(default)]
    deleted_left: Vec<i64>,
}

/// The fields of a change line the page routes by.
#[derive(Deserialize)]
struct ChangeHead<'a> {
    op: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    prior: Option<&'a RawValue>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
}

/// The fields of a record the page routes by.
#[derive(Deserialize, Default)]
struct RecordHead {
    #[serde(default)]
    oid: Option<i64>,
    #[serde(default)]
    server_id: Option<i64>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    subject: Option<Value>,
}

/// Which group an oid of a version belongs to: sorted (oid, row) pairs per otype.
#[derive(Default)]
struct Members {
    reports: Vec<(i64, u32)>,
    columns: Vec<(i64, u32)>,
}

impl Members {
    fn find(&self, otype: &str, oid: i64) -> Option<u32> {
        let list = match otype {
            crate::groups::REPORT => &self.reports,
            crate::groups::COLUMN => &self.columns,
            _ => return None,
        };
        list.binary_search_by_key(&oid, |(o, _)| *o)
            .ok()
            .map(|i| list[i].1)
    }
}

/// Writes the review page of `b` to `out`; `details_bytes` bounds the embedded group details.
pub fn write_page(b: &Bundle, details_bytes: usize, out: &mut dyn Write) -> Result<Stats> {
    let id = b.id()?;
    let mut stats = Stats::default();

    // 1. The groups: report groups are the rows; column groups join their report's row.
    let mut rows: Vec<Row> = Vec::new();
    let mut members = Members::default();
    let mut by_stable: HashMap<(i64, String), u32> = HashMap::new();
    let mut versions_hist: BTreeMap<usize, u64> = BTreeMap::new();
    b.for_each_item(bundle::GROUPS, |g: GroupLine| {
        if g.otype == crate::groups::REPORT {
            let i = rows.len() as u32;
            *versions_hist.entry(g.versions.len()).or_default() += 1;
            by_stable.insert((g.server_id, g.report_stable_external_id.clone()), i);
            for v in g.versions.iter().chain(&g.deleted_left) {
                members.reports.push((*v, i));
            }
            rows.push(Row {
                server: g.server_id,
                stable: g.report_stable_external_id,
                survivor: g.survivor_oid,
                versions: g.versions,
                deleted_left: g.deleted_left,
                column_groups: 0,
                conflicts: 0,
                changes: 0,
                name: None,
                held: 0,
                left_out: 0,
                chunk: -1,
                full: false,
            });
        }
        Ok(())
    })?;
    // A second read for the column groups, so that they are never all held at once.
    b.for_each_item(bundle::GROUPS, |g: GroupLine| {
        if g.otype != crate::groups::REPORT {
            if let Some(&i) = by_stable.get(&(g.server_id, g.report_stable_external_id)) {
                rows[i as usize].column_groups += 1;
                members.columns.extend(g.versions.iter().map(|v| (*v, i)));
            }
        }
        Ok(())
    })?;
    drop(by_stable);
    members.reports.sort_unstable();
    members.columns.sort_unstable();
    stats.groups = rows.len() as u64;

    // 2. The conflicts: counted, and each embedded with its group whatever the budget (they
    //    are the decisions to make); groups with conflicts come first in the details.
    let mut details = Sorter::new(crate::sort::run_bytes(8 << 20));
    let mut seq: u64 = 0;
    let mut conflicts_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut conflicts_by_key: BTreeMap<String, u64> = BTreeMap::new();
    b.for_each_item(bundle::CONFLICTS, |mut c: Value| {
        stats.conflicts += 1;
        let kind = c["kind"].as_str().unwrap_or("").to_string();
        *conflicts_by_kind.entry(kind.clone()).or_default() += 1;
        let key = c["merge_key"].as_str().unwrap_or("").to_string();
        *conflicts_by_key.entry(format!("{kind} {key}")).or_default() += 1;
        let otype = c["survivor"]["otype"].as_str().unwrap_or("");
        let Some(row) = members.find(otype, c["survivor"]["oid"].as_i64().unwrap_or(0)) else {
            return Ok(());
        };
        rows[row as usize].conflicts += 1;
        for side in ["winner", "loser"] {
            let h = c[side]
                .as_object()
                .map(crate::decisions::record_sha256)
                .unwrap_or_default();
            c[format!("{side}_sha256")] = Value::from(h);
            cut_long(&mut c[side]);
        }
        let mut line = b"{\"conflict\":".to_vec();
        line.extend_from_slice(&serde_json::to_vec(&c)?);
        line.push(b'}');
        details.push(&detail_key(0, row, 0, &mut seq), &line)
    })?;

    // 3. The change set, once: counts, names, and each change routed to its group.
    let mut by_op: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_server: BTreeMap<String, u64> = BTreeMap::new();
    crate::changeset::for_each(b, |_, line| {
        stats.changes += 1;
        let h: ChangeHead = serde_json::from_slice(line).context("not a change line")?;
        *by_op.entry(h.op.to_string()).or_default() += 1;
        *by_kind.entry(h.kind.to_string()).or_default() += 1;
        let rec = h.prior.or(h.record);
        let head: RecordHead = match rec {
            Some(r) => serde_json::from_str(r.get()).unwrap_or_default(),
            None => RecordHead::default(),
        };
        let row = match h.kind.as_ref() {
            crate::groups::REPORT | crate::groups::COLUMN => {
                members.find(&h.kind, head.oid.unwrap_or(i64::MIN))
            }
            _ => head
                .subject
                .as_ref()
                .and_then(|s| members.find(s["otype"].as_str()?, s["oid"].as_i64()?)),
        };
        let server = head
            .server_id
            .or_else(|| row.map(|r| rows[r as usize].server));
        *by_server
            .entry(server.map_or("no server".into(), |s| format!("server {s}")))
            .or_default() += 1;
        let Some(row) = row else {
            return Ok(());
        };
        let r = &mut rows[row as usize];
        if h.kind == crate::groups::REPORT {
            if let (Some(oid), Some(Value::String(name))) = (head.oid, &head.name) {
                let rank = r
                    .versions
                    .iter()
                    .position(|v| *v == oid)
                    .unwrap_or(usize::MAX);
                if r.name.as_ref().is_none_or(|(at, _)| rank < *at) {
                    r.name = Some((rank, name.clone()));
                }
            }
        }
        r.changes += 1;
        // A column's own re-key or retirement is counted, not shown (a group's columns can
        // be many); the columns' curation is shown.
        if h.kind == crate::groups::COLUMN || r.held >= PER_GROUP_BYTES {
            r.left_out += u32::from(h.kind != crate::groups::COLUMN);
            return Ok(());
        }
        let prio = u8::from(r.conflicts == 0);
        let mut bytes = line.to_vec();
        if bytes.len() > LONG_LINE {
            let mut v: Value = serde_json::from_slice(line)?;
            cut_long(&mut v);
            bytes = serde_json::to_vec(&v)?;
        }
        r.held += bytes.len();
        details.push(&detail_key(prio, row, 1, &mut seq), &bytes)
    })?;

    // 4. The page: head and summary first (they show before the rest has loaded).
    let counts: Value = b
        .report_part::<Value>()
        .map(|r| r["counts"].clone())
        .unwrap_or(Value::Null);
    let unresolved: Vec<Value> = b.items(bundle::UNRESOLVED, 0)?;
    stats.unresolved = unresolved.len() as u64;
    let warnings: Vec<Value> = b.items(bundle::WARNINGS, 0)?;
    let earlier: Vec<Value> = if b.manifest.files.iter().any(|f| f.name == bundle::DECISIONS) {
        b.items(bundle::DECISIONS, 0)?
    } else {
        Vec::new()
    };
    let m = &b.manifest;
    let name = b.dir.file_name().map_or_else(
        || b.dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let path = b.dir.display().to_string();
    let mut w = Counter { inner: out, n: 0 };
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>lookmig review: {}</title><style>{CSS}</style></head><body>\n",
        esc(&name)
    )?;
    write!(
        w,
        "<header><h1>Review of bundle <code>{}</code></h1>\
         <p class=\"id\">Bundle id <code id=\"bundle-id\">{id}</code></p>\
         <p>Sign off this id. To apply exactly this bundle, and nothing else:</p>\
         <pre id=\"restore-cmd\">lookmig restore {} --expect {id} --database URL</pre>\
         <p class=\"small\">(or <code>--onto EXPORT -o OUT</code> for a rehearsal on a copy of the export). \
         Made by {} from the export with SHA-256 <code>{}</code>; options <code>{}</code>.</p></header>",
        esc(&path),
        esc(&shell_word(&path)),
        esc(&m.tool),
        esc(&m.input_sha256),
        esc(&m.options.to_string()),
    )?;
    w.write_all(b"\n<nav id=\"tabs\"><button data-tab=\"summary\" class=\"on\">Summary</button><button data-tab=\"groups\">Groups</button><button data-tab=\"unresolved\">Unresolved</button><button data-tab=\"warnings\">Warnings</button><button data-tab=\"decisions\">Decisions <span id=\"decision-count\">0</span></button></nav>\n<main>\n<section id=\"summary\">")?;
    let c = |k: &str| counts[k].as_u64().unwrap_or(0);
    let totals = [
        ("changes", stats.changes),
        ("create", by_op.get("create").copied().unwrap_or(0)),
        ("update", by_op.get("update").copied().unwrap_or(0)),
        ("delete", by_op.get("delete").copied().unwrap_or(0)),
        ("report groups with several versions", stats.groups),
        ("conflicts", stats.conflicts),
        ("unresolved reports", stats.unresolved),
        ("references repaired", c("references_repaired")),
        ("warnings", warnings.len() as u64),
        ("lines skipped (--max-errors)", c("skipped_lines")),
        ("decisions applied", c("decisions")),
    ];
    w.write_all(b"<div class=\"stats\">")?;
    for (k, v) in totals {
        write!(w, "<div><b>{}</b><span>{k}</span></div>", thousands(v))?;
    }
    w.write_all(b"</div><div class=\"charts\">")?;
    let top = |m: &BTreeMap<String, u64>, n: usize| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    };
    let ops: Vec<(String, u64)> = ["create", "update", "delete"]
        .iter()
        .map(|o| (o.to_string(), by_op.get(*o).copied().unwrap_or(0)))
        .collect();
    w.write_all(chart("Changes by operation", &ops).as_bytes())?;
    w.write_all(chart("Changes by kind", &top(&by_kind, 14)).as_bytes())?;
    w.write_all(chart("Changes by server", &top(&by_server, 14)).as_bytes())?;
    let hist: Vec<(String, u64)> = versions_hist
        .iter()
        .map(|(n, k)| (format!("{n} versions"), *k))
        .collect();
    w.write_all(chart("Report groups by number of versions", &hist).as_bytes())?;
    let carried: BTreeMap<String, u64> = counts["curation_carried"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    w.write_all(chart("Curation carried to survivors, by kind", &top(&carried, 14)).as_bytes())?;
    w.write_all(chart("Conflicts by kind", &top(&conflicts_by_kind, 14)).as_bytes())?;
    w.write_all(
        chart(
            "Conflicts by merge key (top 10)",
            &top(&conflicts_by_key, 10),
        )
        .as_bytes(),
    )?;
    w.write_all(b"</div>")?;
    w.write_all(b"<p class=\"note\">What the page shows comes from the bundle alone: every record the migration changes or removes, before (its <code>prior</code>) and after. Curation that only the survivor held and that the migration does not touch is not in the bundle, so a group's \"after\" lists what changes, not everything the survivor keeps. References repaired in other records (mentions in articles, object sets) are counted above, not listed per group.</p></section>\n")?;
    w.write_all(b"<section id=\"groups\" hidden></section><section id=\"unresolved\" hidden></section><section id=\"warnings\" hidden></section><section id=\"decisions\" hidden></section>\n</main>\n")?;

    // 5. The list data and the script, before the details: the page works while they load.
    //    Written row by row, never built as one tree.
    let unresolved: Vec<Value> = unresolved
        .into_iter()
        .map(|u| {
            let ext = u["external_id"].as_str().unwrap_or("").to_string();
            json!([u["server_id"], u["oid"], ext, suggest_stable(&ext)])
        })
        .collect();
    let head = json!({
        "id": id,
        "bundle": path,
        "counts": counts,
        "group_fields": ["name","stable_external_id","server_id","survivor_oid","versions","deleted_left","column_groups","conflicts","changes","changes_left_out"],
        "details": {
            "budget_bytes": details_bytes,
            "per_group_bytes": PER_GROUP_BYTES,
        },
        "unresolved": unresolved,
        "warnings": warnings,
        "decisions": earlier,
        "decision_columns": crate::decisions::COLUMNS,
    });
    let mut head = serde_json::to_vec(&head)?;
    head.pop(); // the closing brace: the groups follow
    w.write_all(b"<script type=\"application/json\" id=\"data\">")?;
    w.write_all(&script_safe(&head))?;
    w.write_all(b",\"groups\":[")?;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        let row = json!([
            r.name.as_ref().map_or("", |(_, n)| n.as_str()),
            r.stable,
            r.server,
            r.survivor,
            r.versions,
            r.deleted_left,
            r.column_groups,
            r.conflicts,
            r.changes,
            r.left_out
        ]);
        w.write_all(&script_safe(&serde_json::to_vec(&row)?))?;
    }
    w.write_all(b"]}</script>\n<script>")?;
    w.write_all(JS.as_bytes())?;
    w.write_all(b"</script>\n")?;

    // 6. The details, group by group, in chunks: every group's conflicts, and its changes
    //    while the budget lasts; then which chunk holds which group.
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunks = 0i64;
    let mut group: Option<u32> = None;
    let mut conflicts: Vec<u8> = Vec::new();
    let mut entries: Vec<u8> = Vec::new();
    let mut spent = 0usize;
    let mut over = false;
    let mut flush_group = |group: Option<u32>,
                           conflicts: &mut Vec<u8>,
                           entries: &mut Vec<u8>,
                           chunk: &mut Vec<u8>,
                           w: &mut Counter,
                           rows: &mut Vec<Row>,
                           last: bool|
     -> Result<()> {
        if let Some(g) = group {
            // Once a group's changes do not fit, no later group's do (the page says so).
            let full = !over && spent + entries.len() <= details_bytes;
            over |= !full;
            if full || !conflicts.is_empty() {
                chunk.extend_from_slice(if chunk.is_empty() { b"[" } else { b"," });
                write!(chunk, "[{g},[")?;
                chunk.extend_from_slice(conflicts);
                if full {
                    spent += entries.len();
                    if !conflicts.is_empty() && !entries.is_empty() {
                        chunk.push(b',');
                    }
                    chunk.extend_from_slice(entries);
                }
                chunk.extend_from_slice(b"]]");
                let r = &mut rows[g as usize];
                r.chunk = chunks;
                r.full = full;
            }
        }
        conflicts.clear();
        entries.clear();
        if !chunk.is_empty() && (chunk.len() >= CHUNK_BYTES || last) {
            chunk.push(b']');
            write!(w, "<script type=\"application/json\" id=\"c{chunks}\">")?;
            w.write_all(&script_safe(chunk))?;
            w.write_all(b"</script>\n")?;
            chunk.clear();
            chunks += 1;
        }
        Ok(())
    };
    details.finish(|key, line| {
        let g = u32::from_be_bytes(key[1..5].try_into().expect("group"));
        if group != Some(g) {
            flush_group(
                group,
                &mut conflicts,
                &mut entries,
                &mut chunk,
                &mut w,
                &mut rows,
                false,
            )?;
            group = Some(g);
        }
        let to = if key[5] == 0 {
            &mut conflicts
        } else {
            &mut entries
        };
        if !to.is_empty() {
            to.push(b',');
        }
        to.extend_from_slice(line);
        Ok(())
    })?;
    flush_group(
        group,
        &mut conflicts,
        &mut entries,
        &mut chunk,
        &mut w,
        &mut rows,
        true,
    )?;
    stats.groups_with_details = rows.iter().filter(|r| r.full).count() as u64;
    let index = json!({
        "groups_with_details": stats.groups_with_details,
        "chunks": rows.iter().map(|r| r.chunk).collect::<Vec<i64>>(),
        "full": rows.iter().map(|r| u8::from(r.full)).collect::<Vec<u8>>(),
    });
    w.write_all(b"<script type=\"application/json\" id=\"chunk-index\">")?;
    w.write_all(&script_safe(&serde_json::to_vec(&index)?))?;
    w.write_all(b"</script>\n</body></html>\n")?;
    w.flush()?;
    stats.bytes = w.n;
    Ok(stats)
}

/// A stable id to suggest for an unresolved report: the first number in its external_id, as a
/// look when the id says so and a dashboard otherwise. Only a suggestion: the reviewer checks
/// it against Looker before using it.
pub fn suggest_stable(external_id: &str) -> Option<String> {
    let digits: String = external_id
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() {
        return None;
    }
    let lower = external_id.to_ascii_lowercase();
    let prefix = if lower.contains("look") && !lower.contains("lookml") {
        "look"
    } else {
        "dashboard"
    };
    Some(format!("{prefix}/{digits}"))
}

/// The sort key of a detail line: groups with conflicts first, then group by group, the
/// conflicts (`section` 0) before the changes (1), in the order they came.
fn detail_key(prio: u8, row: u32, section: u8, seq: &mut u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[0] = prio;
    k[1..5].copy_from_slice(&row.to_be_bytes());
    k[5] = section;
    k[6..].copy_from_slice(&seq.to_be_bytes());
    *seq += 1;
    k
}

/// Cuts every string longer than [`LONG_STRING`] characters, saying how much was left out.
fn cut_long(v: &mut Value) {
    match v {
        Value::String(s) if s.chars().count() > LONG_STRING => {
            let total = s.chars().count();
            let kept: String = s.chars().take(LONG_STRING).collect();
            *s = format!(
                "{kept}… ({} more characters not shown)",
                total - LONG_STRING
            );
        }
        Value::Array(a) => a.iter_mut().for_each(cut_long),
        Value::Object(o) => o.values_mut().for_each(cut_long),
        _ => {}
    }
}

/// JSON made safe inside a `<script>` element: `</` and `<!` cannot occur (only strings
/// hold `<`, and there `<\/` and `<\u0021` mean the same).
fn script_safe(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 64);
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'<', &json[i..]) {
        let at = i + at;
        out.extend_from_slice(&json[i..=at]);
        match json.get(at + 1) {
            Some(b'/') => out.push(b'\\'),
            Some(b'!') => {
                out.extend_from_slice(b"\\u0021");
                i = at + 2;
                continue;
            }
            _ => {}
        }
        i = at + 1;
    }
    out.extend_from_slice(&json[i..]);
    out
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A path as one shell word (quoted when it needs to be).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// A horizontal bar chart as inline SVG.
fn chart(title: &str, bars: &[(String, u64)]) -> String {
    let (label_w, bar_w, row_h) = (190.0, 230.0, 20.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let h = row_h * bars.len().max(1) as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{}</figcaption><svg role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{h}\" viewBox=\"0 0 {} {h}\">",
        esc(title),
        esc(title),
        label_w + bar_w + 80.0,
        label_w + bar_w + 80.0
    );
    if bars.is_empty() {
        let _ = write!(s, "<text x=\"0\" y=\"15\" class=\"l\">none</text>");
    }
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = row_h * i as f64 + 4.0;
        let w = (*v as f64 / max * bar_w).max(if *v > 0 { 1.0 } else { 0.0 });
        let short: String = if label.chars().count() > 28 {
            label.chars().take(27).collect::<String>() + "…"
        } else {
            label.clone()
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"l\" text-anchor=\"end\"><title>{}</title>{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" class=\"b\"/><text x=\"{}\" y=\"{}\" class=\"v\">{}</text>",
            label_w - 6.0,
            y + 12.0,
            esc(label),
            esc(&short),
            row_h - 6.0,
            label_w + w + 4.0,
            y + 12.0,
            thousands(*v)
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// A writer that counts the bytes it passes on.
struct Counter<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_a_script_element_cannot_close_it() {
        let s = script_safe(br#"{"v":"<p>x</p></script><!--"}"#);
        let text = String::from_utf8(s).unwrap();
        assert!(!text.contains("</") && !text.contains("<!"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["v"], "<p>x</p></script><!--");
    }

    #[test]
    fn suggestions_take_the_first_number() {
        assert_eq!(
            suggest_stable("dash-42-v3").as_deref(),
            Some("dashboard/42")
        );
        assert_eq!(suggest_stable("Look 7 copy").as_deref(), Some("look/7"));
        assert_eq!(suggest_stable("report-alpha"), None);
    }

    #[test]
    fn long_strings_are_cut_and_say_so() {
        let mut v = json!({"value": "x".repeat(LONG_STRING + 5)});
        cut_long(&mut v);
        assert!(v["value"]
            .as_str()
            .unwrap()
            .ends_with("(5 more characters not shown)"));
    }

    #[test]
    fn charts_escape_their_labels() {
        let c = chart("t", &[("<b>".into(), 3)]);
        assert!(c.contains("&lt;b&gt;") && !c.contains("<b>"));
    }
}
