//! A reviewer's decisions (`--decisions FILE`, made on the `lookmig review` page or by hand):
//! the conflict of SPEC §4 a person settled differently from the rule, and the stable id of a
//! report no rule could resolve (§2 rule 5).
//!
//! The file is CSV with a header line naming its columns (any order; absent columns are empty):
//!
//! | column | `choose` (take a conflict's other value) | `map` (give an unresolved report its id) |
//! |---|---|---|
//! | `action` | `choose` | `map` |
//! | `server_id` | — | the report's server (empty: every server, as in an id-map) |
//! | `survivor_otype`, `survivor_oid` | the group's survivor | — |
//! | `kind` | `field_value` or `trust_flag` | — |
//! | `merge_key` | as the conflict lists it, e.g. `field 4`, `ENDORSEMENT by user 5` | — |
//! | `choose_oid` | the version (subject oid) whose record must win | — |
//! | `value_sha256` | SHA-256 of the chosen record's canonical JSON, as the conflict lists it | — |
//! | `legacy_external_id`, `stable_external_id` | — | as in `--id-map` |
//! | `note` | free text, ignored (the page writes what was chosen, for a person reading the file) | |
//!
//! A `choose` line needs `choose_oid` or `value_sha256` (the page writes both; when both are
//! given both must match). The hash makes a decision robust: if the export changed since the
//! review, the decision matches nothing and the run stops instead of choosing something else.
//!
//! Rules: a decision that matches nothing (no conflict with that survivor, kind and merge key
//! holds such a record; no report of a migrated server has that external_id) is an error; so is
//! one that contradicts another line (two different choices for one conflict, two stable ids
//! for one report) or a line of `--id-map`. Every error names the file and the line. The same
//! decision twice is one decision.

use crate::merge::Chooser;
use crate::record::{canonical_json_map, Subject};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The columns of a decisions file, in the order the page writes them.
pub const COLUMNS: [&str; 11] = [
    "action",
    "server_id",
    "survivor_otype",
    "survivor_oid",
    "kind",
    "merge_key",
    "choose_oid",
    "value_sha256",
    "legacy_external_id",
    "stable_external_id",
    "note",
];

/// One decision, with the line of the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The line of the decisions file (the header is line 1).
    pub line: u64,
    #[serde(flatten)]
    pub what: What,
    /// How many conflicts it decided (`choose`) or reports it mapped (`map`) in this run.
    pub applied: u64,
}

impl Decision {
    /// True for a `choose` decision.
    pub fn is_choose(&self) -> bool {
        matches!(self.what, What::Choose { .. })
    }
}

/// What a decision says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum What {
    /// This record wins the merge key of the survivor's group.
    Choose {
        survivor: Subject,
        kind: String,
        merge_key: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        choose_oid: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_sha256: Option<String>,
    },
    /// This report's stable external_id, as an `--id-map` line gives it.
    Map {
        server_id: Option<i64>,
        legacy_external_id: String,
        stable_external_id: String,
    },
}

/// A decisions file, loaded and checked against itself; the merge consults it as a
/// [`Chooser`], and [`Decisions::check_used`] says afterwards which line matched nothing.
#[derive(Debug)]
pub struct Decisions {
    /// The file, as given on the command line (for messages).
    pub path: String,
    /// Its SHA-256, recorded in the bundle's options.
    pub sha256: String,
    items: Vec<Decision>,
    /// `choose` decisions by survivor: (otype, oid) → indexes into `items`.
    by_survivor: HashMap<(String, i64), Vec<usize>>,
    /// Per item: how many times it applied.
    applied: Vec<AtomicU64>,
    /// Decisions that met a conflict they cannot settle (an ambiguous choice), by line.
    problems: Mutex<Vec<(u64, String)>>,
}

impl Decisions {
    /// Reads and checks a decisions file.
    pub fn load(path: &str) -> Result<Decisions> {
        let input = crate::input::Input::new(path).context("opening the --decisions file")?;
        let sha256 = input.sha256()?;
        // The line reader holds every line to the line limit and to UTF-8 first.
        let mut lines = input.lines()?;
        while let Some(l) = lines.next_line()? {
            if std::str::from_utf8(&l.bytes).is_err() {
                bail!("{path}:{}: invalid UTF-8 in the decisions file", l.no);
            }
        }
        Decisions::parse(path, sha256, input.open()?)
    }

    /// Parses decisions from CSV text (`path` names it in messages).
    pub fn parse(path: &str, sha256: String, reader: impl std::io::Read) -> Result<Decisions> {
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(reader);
        let headers = rdr
            .headers()
            .with_context(|| format!("{path}:1: reading the CSV header"))?
            .clone();
        for h in headers.iter() {
            if !COLUMNS.contains(&h) {
                bail!(
                    "{path}:1: unknown column {h:?}; a decisions file has the columns {}",
                    COLUMNS.join(",")
                );
            }
        }
        if !headers.iter().any(|h| h == "action") {
            bail!("{path}:1: the header must name the column action (and the columns of each action: see the README)");
        }
        let col = |name: &str| headers.iter().position(|h| h == name);
        let cols: HashMap<&str, usize> = COLUMNS
            .iter()
            .filter_map(|c| col(c).map(|i| (*c, i)))
            .collect();
        let mut d = Decisions {
            path: path.to_string(),
            sha256,
            items: Vec::new(),
            by_survivor: HashMap::new(),
            applied: Vec::new(),
            problems: Mutex::new(Vec::new()),
        };
        // Seen decisions, to find duplicates and contradictions: key → index into items.
        let mut chosen: HashMap<(String, i64, String, String), usize> = HashMap::new();
        let mut mapped: HashMap<(Option<i64>, String), usize> = HashMap::new();
        for row in rdr.records() {
            let row = row.map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                anyhow::anyhow!("{path}:{line}: bad CSV line in the decisions file ({e})")
            })?;
            let no = row.position().map(|p| p.line()).unwrap_or(0);
            if row.iter().all(str::is_empty) {
                continue;
            }
            let vals: HashMap<&str, &str> = cols
                .iter()
                .map(|(c, i)| (*c, row.get(*i).unwrap_or("")))
                .collect();
            let what = parse_row(path, no, &vals)?;
            match &what {
                What::Choose {
                    survivor,
                    kind,
                    merge_key,
                    ..
                } => {
                    let key = (
                        survivor.otype.clone(),
                        survivor.oid,
                        kind.clone(),
                        merge_key.clone(),
                    );
                    if let Some(&i) = chosen.get(&key) {
                        if d.items[i].what == what {
                            continue;
                        }
                        bail!(
                            "{path}:{no}: contradicts line {}: both decide {kind} {merge_key:?} of {} {} but choose different records; keep one",
                            d.items[i].line,
                            survivor.otype,
                            survivor.oid
                        );
                    }
                    chosen.insert(key, d.items.len());
                    d.by_survivor
                        .entry((survivor.otype.clone(), survivor.oid))
                        .or_default()
                        .push(d.items.len());
                }
                What::Map {
                    server_id,
                    legacy_external_id,
                    ..
                } => {
                    let key = (*server_id, legacy_external_id.clone());
                    if let Some(&i) = mapped.get(&key) {
                        if d.items[i].what == what {
                            continue;
                        }
                        bail!(
                            "{path}:{no}: contradicts line {}: both map {legacy_external_id:?} but to different stable ids; keep one",
                            d.items[i].line
                        );
                    }
                    mapped.insert(key, d.items.len());
                }
            }
            d.items.push(Decision {
                line: no,
                what,
                applied: 0,
            });
            d.applied.push(AtomicU64::new(0));
        }
        Ok(d)
    }

    /// How many decisions the file holds (a repeated line counts once).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the file holds no decision.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds the `map` decisions to the id-map (SPEC §2 rule 1), refusing one that contradicts a
    /// line of the `--id-map` file (`id_map_path`).
    pub fn add_to_id_map(
        &self,
        map: &mut crate::keys::IdMap,
        id_map_path: Option<&str>,
    ) -> Result<()> {
        for d in &self.items {
            let What::Map {
                server_id,
                legacy_external_id,
                stable_external_id,
            } = &d.what
            else {
                continue;
            };
            if let Some((other, at)) = map.line_for(*server_id, legacy_external_id) {
                if other != stable_external_id {
                    bail!(
                        "{}:{}: maps {legacy_external_id:?} to {stable_external_id:?}, but line {at} of the --id-map file {} maps it to {other:?}; keep one",
                        self.path,
                        d.line,
                        id_map_path.unwrap_or("")
                    );
                }
            }
            map.add(
                *server_id,
                legacy_external_id.clone(),
                stable_external_id.clone(),
                d.line,
            );
        }
        Ok(())
    }

    /// Counts the reports each `map` decision resolved, among the reports of the migrated
    /// servers (those the id-map rule resolved).
    pub fn check_mapped(&self, reports: &[crate::groups::ReportInfo]) -> Result<()> {
        let by_map: std::collections::HashSet<(i64, u64)> = reports
            .iter()
            .filter(|r| r.rule == crate::keys::Rule::IdMap)
            .map(|r| (r.server_id, r.external))
            .collect();
        let servers: std::collections::BTreeSet<i64> = by_map.iter().map(|(s, _)| *s).collect();
        for (i, d) in self.items.iter().enumerate() {
            let What::Map {
                server_id,
                legacy_external_id,
                ..
            } = &d.what
            else {
                continue;
            };
            let n = match server_id {
                Some(s) => reports
                    .iter()
                    .filter(|r| r.rule == crate::keys::Rule::IdMap && r.server_id == *s)
                    .filter(|r| r.external == crate::groups::external_hash(*s, legacy_external_id))
                    .count(),
                None => servers
                    .iter()
                    .filter(|s| {
                        by_map
                            .contains(&(**s, crate::groups::external_hash(**s, legacy_external_id)))
                    })
                    .count(),
            };
            self.applied[i].fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Refuses the run when a decision matched nothing or could not be applied, naming the
    /// file and the line of each (the first ten).
    pub fn check_used(&self) -> Result<()> {
        let mut errors: Vec<(u64, String)> = self.problems.lock().expect("decisions lock").clone();
        for (i, d) in self.items.iter().enumerate() {
            if self.applied[i].load(Ordering::Relaxed) > 0 {
                continue;
            }
            let why = match &d.what {
                What::Choose {
                    survivor,
                    kind,
                    merge_key,
                    choose_oid,
                    value_sha256,
                } => format!(
                    "matches no conflict: no {kind} {merge_key:?} of the group of {} {} holds the chosen record ({}{}); was the export or the bundle changed since the review?",
                    survivor.otype,
                    survivor.oid,
                    choose_oid.map_or(String::new(), |o| format!("version oid {o}")),
                    value_sha256.as_ref().map_or(String::new(), |h| format!(
                        "{}SHA-256 {h}",
                        if choose_oid.is_some() { ", " } else { "" }
                    )),
                ),
                What::Map {
                    server_id,
                    legacy_external_id,
                    ..
                } => format!(
                    "matches no report: no report of {} has external_id {legacy_external_id:?}",
                    server_id.map_or("a migrated server".to_string(), |s| format!(
                        "migrated server {s}"
                    ))
                ),
            };
            errors.push((d.line, why));
        }
        if errors.is_empty() {
            return Ok(());
        }
        errors.sort();
        errors.dedup();
        let list: Vec<String> = errors
            .iter()
            .take(10)
            .map(|(no, why)| format!("{}:{no}: {why}", self.path))
            .collect();
        let more = if errors.len() > 10 {
            format!("\n... and {} more", errors.len() - 10)
        } else {
            String::new()
        };
        bail!(
            "{}{more}\n(fix or remove these lines of the decisions file; nothing was written)",
            list.join("\n")
        )
    }

    /// The decisions as applied in this run, in file order.
    pub fn used(&self) -> Vec<Decision> {
        self.items
            .iter()
            .zip(&self.applied)
            .map(|(d, n)| Decision {
                applied: n.load(Ordering::Relaxed),
                ..d.clone()
            })
            .collect()
    }
}

impl Chooser for Decisions {
    fn choose(
        &self,
        survivor: &Subject,
        kind: &str,
        merge_key: &str,
        candidates: &[&Map<String, Value>],
    ) -> Option<(usize, u64)> {
        let list = self
            .by_survivor
            .get(&(survivor.otype.clone(), survivor.oid))?;
        for &i in list {
            let d = &self.items[i];
            let What::Choose {
                kind: k,
                merge_key: m,
                choose_oid,
                value_sha256,
                ..
            } = &d.what
            else {
                continue;
            };
            if k != kind || m != merge_key {
                continue;
            }
            let matching: Vec<usize> = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    choose_oid.is_none_or(|o| {
                        c.get("subject")
                            .and_then(Subject::from_value)
                            .is_some_and(|s| s.oid == o)
                    })
                })
                .filter(|(_, c)| value_sha256.as_ref().is_none_or(|h| *h == record_sha256(c)))
                .map(|(i, _)| i)
                .collect();
            match matching.as_slice() {
                [] => return None,
                [one] => {
                    self.applied[i].fetch_add(1, Ordering::Relaxed);
                    return Some((*one, d.line));
                }
                _ => {
                    self.problems.lock().expect("decisions lock").push((
                        d.line,
                        format!(
                            "{} records of version oid {} compete for {kind} {merge_key:?}; give value_sha256 to say which",
                            matching.len(),
                            choose_oid.unwrap_or_default()
                        ),
                    ));
                    return None;
                }
            }
        }
        None
    }
}

/// The SHA-256 of a record's canonical JSON (SPEC §1): what a `choose` decision's
/// `value_sha256` names.
pub fn record_sha256(record: &Map<String, Value>) -> String {
    crate::input::sha256_bytes(canonical_json_map(record).as_bytes())
}

/// One row, checked.
fn parse_row(path: &str, no: u64, vals: &HashMap<&str, &str>) -> Result<What> {
    let get = |c: &str| -> &str { vals.get(c).copied().unwrap_or("") };
    let int = |c: &str| -> Result<Option<i64>> {
        match get(c) {
            "" => Ok(None),
            s => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{path}:{no}: {c} must be an integer, found {s:?}")),
        }
    };
    let need = |c: &str, action: &str| -> Result<String> {
        match get(c) {
            "" => bail!("{path}:{no}: a {action} decision needs {c}"),
            s => Ok(s.to_string()),
        }
    };
    let refuse = |cols: &[&str], action: &str| -> Result<()> {
        for c in cols {
            if !get(c).is_empty() {
                bail!("{path}:{no}: a {action} decision has no {c} (found {:?}); is the action right?", get(c));
            }
        }
        Ok(())
    };
    match get("action") {
        "choose" => {
            refuse(&["legacy_external_id", "stable_external_id"], "choose")?;
            let otype = need("survivor_otype", "choose")?;
            if otype != crate::groups::REPORT && otype != crate::groups::COLUMN {
                bail!("{path}:{no}: survivor_otype must be bi_report or bi_report_column, found {otype:?}");
            }
            let oid = int("survivor_oid")?.ok_or_else(|| {
                anyhow::anyhow!("{path}:{no}: a choose decision needs survivor_oid")
            })?;
            let kind = need("kind", "choose")?;
            if kind != "field_value" && kind != "trust_flag" {
                bail!("{path}:{no}: kind must be field_value or trust_flag (the conflicts a decision can settle), found {kind:?}");
            }
            let merge_key = need("merge_key", "choose")?;
            let choose_oid = int("choose_oid")?;
            let value_sha256 = match get("value_sha256") {
                "" => None,
                h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some(h.to_ascii_lowercase())
                }
                h => bail!("{path}:{no}: value_sha256 must be 64 hex digits, found {h:?}"),
            };
            if choose_oid.is_none() && value_sha256.is_none() {
                bail!("{path}:{no}: a choose decision needs choose_oid or value_sha256 (or both) to say which record wins");
            }
            Ok(What::Choose {
                survivor: Subject { otype, oid },
                kind,
                merge_key,
                choose_oid,
                value_sha256,
            })
        }
        "map" => {
            refuse(
                &[
                    "survivor_otype",
                    "survivor_oid",
                    "kind",
                    "merge_key",
                    "choose_oid",
                    "value_sha256",
                ],
                "map",
            )?;
            let legacy = need("legacy_external_id", "map")?;
            let stable = need("stable_external_id", "map")?;
            if !crate::keys::is_stable(&stable) {
                bail!("{path}:{no}: stable_external_id {stable:?} is not a stable id (dashboard/ID, look/ID or lookml_dashboard/MODEL::NAME)");
            }
            Ok(What::Map {
                server_id: int("server_id")?,
                legacy_external_id: legacy,
                stable_external_id: stable,
            })
        }
        "" => bail!("{path}:{no}: action is empty; it must be choose or map"),
        a => bail!("{path}:{no}: unknown action {a:?}; it must be choose or map"),
    }
}

/// Quotes one CSV cell (RFC 4180), for the lines the page and the tests write.
pub fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Decisions> {
        Decisions::parse("d.csv", String::new(), text.as_bytes())
    }

    const HEAD: &str = "action,server_id,survivor_otype,survivor_oid,kind,merge_key,choose_oid,value_sha256,legacy_external_id,stable_external_id,note\n";

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn surv() -> Subject {
        Subject {
            otype: "bi_report".into(),
            oid: 103,
        }
    }

    #[test]
    fn parses_both_actions_with_columns_in_any_order_and_notes() {
        let d = parse(&format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,,,,\"Old, \"\"quoted\"\" note\"\nmap,1,,,,,,,report-alpha,dashboard/9,\n"
        ))
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.items[0].line, 2);
        assert!(
            matches!(&d.items[0].what, What::Choose { choose_oid: Some(101), merge_key, .. } if merge_key == "field 4")
        );
        assert!(
            matches!(&d.items[1].what, What::Map { server_id: Some(1), stable_external_id, .. } if stable_external_id == "dashboard/9")
        );
        let d = parse("legacy_external_id,action,stable_external_id\nx,map,look/3\n").unwrap();
        assert!(matches!(
            &d.items[0].what,
            What::Map {
                server_id: None,
                ..
            }
        ));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let cases = [
            ("{HEAD}pick,,,,,,,,,,\n", "d.csv:2: unknown action \"pick\""),
            (
                "{HEAD}choose,,bi_report,x,field_value,field 4,1,,,,\n",
                "d.csv:2: survivor_oid must be an integer",
            ),
            (
                "{HEAD}choose,,bi_report,1,field_value,field 4,,,,,\n",
                "d.csv:2: a choose decision needs choose_oid or value_sha256",
            ),
            (
                "{HEAD}choose,,bi_report,1,tag,tag x,1,,,,\n",
                "d.csv:2: kind must be field_value or trust_flag",
            ),
            (
                "{HEAD}choose,,bi_report,1,field_value,field 4,,abc,,,\n",
                "d.csv:2: value_sha256 must be 64 hex digits",
            ),
            (
                "{HEAD}map,1,,,,,,,x,not-stable,\n",
                "d.csv:2: stable_external_id \"not-stable\" is not a stable id",
            ),
            (
                "{HEAD}map,1,bi_report,,,,,,x,look/1,\n",
                "d.csv:2: a map decision has no survivor_otype",
            ),
            (
                "{HEAD}map,1,,,,,,,,look/1,\n",
                "d.csv:2: a map decision needs legacy_external_id",
            ),
            (
                "action,colour\nmap,red\n",
                "d.csv:1: unknown column \"colour\"",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text.replace("{HEAD}", HEAD))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn contradictions_are_errors_and_repeats_are_one_decision() {
        let e = parse(&format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,,,,\nchoose,,bi_report,103,field_value,field 4,102,,,,\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("d.csv:3: contradicts line 2"), "{e}");
        let e = parse(&format!(
            "{HEAD}map,1,,,,,,,x,look/1,\nmap,1,,,,,,,x,look/2,\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("d.csv:3: contradicts line 2"), "{e}");
        let d = parse(&format!(
            "{HEAD}map,1,,,,,,,x,look/1,\nmap,1,,,,,,,x,look/1,a note differs\n"
        ))
        .unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_choice_names_its_record_by_version_and_hash_and_unused_ones_are_errors() {
        let a = rec(
            json!({"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":102},"value":"new"}),
        );
        let b = rec(
            json!({"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":101},"value":"old"}),
        );
        let hb = record_sha256(&b);
        let d = parse(&format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,{hb},,,\nchoose,,bi_report,103,field_value,field 20,101,,,,\n"
        ))
        .unwrap();
        assert_eq!(
            d.choose(&surv(), "field_value", "field 4", &[&a, &b]),
            Some((1, 2))
        );
        assert_eq!(d.choose(&surv(), "trust_flag", "field 4", &[&a, &b]), None);
        let e = d.check_used().unwrap_err().to_string();
        assert!(
            e.contains("d.csv:3: matches no conflict") && !e.contains("d.csv:2"),
            "{e}"
        );
        // A hash that no longer matches (the record changed) matches nothing.
        let d = parse(&format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,{},,,\n",
            "0".repeat(64)
        ))
        .unwrap();
        assert_eq!(d.choose(&surv(), "field_value", "field 4", &[&a, &b]), None);
        assert!(d.check_used().unwrap_err().to_string().contains("d.csv:2"));
    }

    #[test]
    fn the_merge_takes_the_chosen_value_and_marks_the_conflicts() {
        use crate::merge::{merge_group_with, Item};
        let item = |rank: usize, v: Value| {
            let r = crate::record::parse_line(v.to_string().as_bytes()).unwrap();
            Item {
                rank,
                line: rank as u64,
                before: r.clone().into(),
                after: r,
            }
        };
        let s = |oid: i64| json!({"otype":"bi_report","oid":oid});
        let items = vec![
            item(
                0,
                json!({"kind":"field_value","field_id":4,"subject":s(103),"value":"new"}),
            ),
            item(
                1,
                json!({"kind":"field_value","field_id":4,"subject":s(101),"value":"old"}),
            ),
        ];
        let d = parse(&format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,,,,\n"
        ))
        .unwrap();
        let m = merge_group_with(&surv(), items, &crate::refs::Fields::default(), Some(&d));
        assert_eq!(m.records[0].obj["value"], json!("old"));
        assert_eq!(m.records[0].obj["subject"], s(103));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].loser["value"], json!("new"));
        assert_eq!(m.conflicts[0].decision_line, Some(2));
        d.check_used().unwrap();
        assert_eq!(d.used()[0].applied, 1);
    }

    #[test]
    fn cells_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
