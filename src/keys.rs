//! Stable keys (SPEC §2): which stable `external_id` a Looker report gets, by the first rule
//! that applies — the id-map, already stable, the legacy pattern, then the `source_url` — and
//! which one a report column gets ([`ColumnKey`]).

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Which rule of SPEC §2 gave a report its stable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// 1: the `--id-map` file.
    IdMap,
    /// 2: already in the stable form.
    Stable,
    /// 3: the legacy `<prefix>_<middle>_<stamp>` form.
    Legacy,
    /// 4: the `source_url`.
    SourceUrl,
}

fn stable_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(dashboard|look|lookml_dashboard)/(.+)$").unwrap())
}

fn legacy_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(lookml_dashboard|dashboard|look)_(.+)_([0-9]+)$").unwrap())
}

fn lookml_middle_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_]+::[A-Za-z0-9_]+$").unwrap())
}

impl Rule {
    /// The rule's name in the report's per-server counts.
    pub fn name(self) -> &'static str {
        match self {
            Rule::IdMap => "id_map",
            Rule::Stable => "already_stable",
            Rule::Legacy => "legacy",
            Rule::SourceUrl => "source_url",
        }
    }
}

/// Rule 2: the id is already stable.
pub fn is_stable(external_id: &str) -> bool {
    stable_re().is_match(external_id)
}

/// Rule 3: the stable form of a legacy id, if it is one.
pub fn from_legacy(external_id: &str) -> Option<String> {
    let c = legacy_re().captures(external_id)?;
    let (prefix, middle) = (&c[1], &c[2]);
    let ok = match prefix {
        "lookml_dashboard" => lookml_middle_re().is_match(middle),
        _ => middle.bytes().all(|b| b.is_ascii_digit()),
    };
    ok.then(|| format!("{prefix}/{middle}"))
}

/// Rule 4: the stable id from a report's `source_url`.
pub fn from_source_url(url: &str) -> Option<String> {
    let url = url.split('#').next().unwrap_or("");
    let url = url.split('?').next().unwrap_or("");
    let url = url.strip_suffix('/').unwrap_or(url);
    let (rest, id) = url.rsplit_once('/')?;
    if id.is_empty() {
        return None;
    }
    let kind = rest.rsplit('/').next()?;
    match kind {
        "dashboards" | "dashboards-next" if id.contains("::") => {
            Some(format!("lookml_dashboard/{id}"))
        }
        "dashboards" | "dashboards-next" => Some(format!("dashboard/{id}")),
        "looks" => Some(format!("look/{id}")),
        _ => None,
    }
}

/// The `--id-map` file: legacy external_id → stable external_id, optionally per server.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    any_server: HashMap<String, (String, u64)>,
    per_server: HashMap<(i64, String), (String, u64)>,
    /// The checksum of the file, recorded in the bundle's options.
    pub sha256: String,
}

impl IdMap {
    /// Loads a CSV (`legacy_external_id,stable_external_id[,server_id]` with a header line) or
    /// NDJSON (objects with those fields) id-map; the format is told by the first byte.
    pub fn load(path: &str) -> Result<IdMap> {
        let input = crate::input::Input::new(path).context("opening the --id-map file")?;
        let mut map = IdMap {
            sha256: input.sha256()?,
            ..IdMap::default()
        };
        // Read through the one line reader, so the id-map is held to the line limit
        // (`--max-line-bytes`) and every error names its line.
        let mut lines = input.lines()?;
        let mut next = lines.next_line()?;
        let utf8 = |l: &crate::input::Line| -> Result<String> {
            String::from_utf8(l.bytes.to_vec()).map_err(|e| {
                anyhow::anyhow!(
                    "{path}:{}: invalid UTF-8 in the id-map ({}); it must be UTF-8 text",
                    l.no,
                    e.utf8_error()
                )
            })
        };
        if next
            .as_ref()
            .is_some_and(|l| l.bytes.trim_ascii_start().starts_with(b"{"))
        {
            while let Some(l) = next {
                let no = l.no;
                let line = utf8(&l)?;
                let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                    anyhow::anyhow!("{path}:{no}: malformed JSON in the id-map ({e})")
                })?;
                let field = |f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_string);
                let (Some(legacy), Some(stable)) =
                    (field("legacy_external_id"), field("stable_external_id"))
                else {
                    bail!("{path}:{no}: an id-map line needs string fields legacy_external_id and stable_external_id");
                };
                let server = match v.get("server_id") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(s) => Some(s.as_i64().ok_or_else(|| {
                        anyhow::anyhow!("{path}:{no}: server_id must be an integer, found {s}")
                    })?),
                };
                map.insert(path, no, server, legacy, stable)?;
                next = lines.next_line()?;
            }
        } else {
            // A first pass holds every line to the limit and to UTF-8; the CSV reader then
            // streams the file.
            while let Some(l) = next {
                utf8(&l)?;
                next = lines.next_line()?;
            }
            let mut rdr = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(input.open()?);
            let headers = rdr
                .headers()
                .with_context(|| format!("{path}:1: reading the CSV header"))?
                .clone();
            let col = |name: &str| headers.iter().position(|h| h == name);
            let (Some(lc), Some(sc)) = (col("legacy_external_id"), col("stable_external_id"))
            else {
                bail!("{path}:1: the id-map header must name legacy_external_id and stable_external_id (and optionally server_id)");
            };
            let server_col = col("server_id");
            for row in rdr.records() {
                let row = row.map_err(|e| {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    anyhow::anyhow!("{path}:{line}: bad CSV line in the id-map ({e})")
                })?;
                let no = row.position().map(|p| p.line()).unwrap_or(0);
                let get = |c: usize| row.get(c).unwrap_or("").to_string();
                let (legacy, stable) = (get(lc), get(sc));
                if legacy.is_empty() || stable.is_empty() {
                    bail!(
                        "{path}:{no}: legacy_external_id and stable_external_id must not be empty"
                    );
                }
                let server = match server_col.map(get).filter(|s| !s.is_empty()) {
                    None => None,
                    Some(s) => Some(s.parse::<i64>().map_err(|_| {
                        anyhow::anyhow!("{path}:{no}: server_id must be an integer, found {s:?}")
                    })?),
                };
                map.insert(path, no, server, legacy, stable)?;
            }
        }
        Ok(map)
    }

    fn insert(
        &mut self,
        path: &str,
        no: u64,
        server: Option<i64>,
        legacy: String,
        stable: String,
    ) -> Result<()> {
        let slot = match server {
            Some(s) => self.per_server.entry((s, legacy.clone())),
            None => {
                return match self.any_server.get(&legacy) {
                    Some((prev, at)) if *prev != stable => bail!(
                        "{path}:{no}: {legacy:?} is mapped to {stable:?} here and to {prev:?} on line {at}; keep one"
                    ),
                    Some(_) => Ok(()),
                    None => {
                        self.any_server.insert(legacy, (stable, no));
                        Ok(())
                    }
                }
            }
        };
        match slot {
            std::collections::hash_map::Entry::Occupied(o) if o.get().0 != stable => bail!(
                "{path}:{no}: {legacy:?} on server {} is mapped to {stable:?} here and to {:?} on line {}; keep one",
                server.unwrap_or_default(),
                o.get().0,
                o.get().1
            ),
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((stable, no));
                Ok(())
            }
        }
    }

    /// The mapped stable id; a line naming the server beats one without.
    pub fn get(&self, server: i64, legacy: &str) -> Option<&str> {
        self.per_server
            .get(&(server, legacy.to_string()))
            .or_else(|| self.any_server.get(legacy))
            .map(|(s, _)| s.as_str())
    }

    /// The stable id a line gives exactly this pair (a line naming `server`, or with None a
    /// line for every server), with its line number.
    pub fn line_for(&self, server: Option<i64>, legacy: &str) -> Option<(&str, u64)> {
        match server {
            Some(s) => self.per_server.get(&(s, legacy.to_string())),
            None => self.any_server.get(legacy),
        }
        .map(|(s, no)| (s.as_str(), *no))
    }

    /// Adds a line from elsewhere (a reviewer's decision); the caller checked that it
    /// contradicts no line already there.
    pub fn add(&mut self, server: Option<i64>, legacy: String, stable: String, no: u64) {
        match server {
            Some(s) => self.per_server.insert((s, legacy), (stable, no)),
            None => self.any_server.insert(legacy, (stable, no)),
        };
    }

    /// True when the map holds no line.
    pub fn is_empty(&self) -> bool {
        self.any_server.is_empty() && self.per_server.is_empty()
    }
}

/// The stable external_id of a report and the rule that gave it, or None when unresolved.
pub fn resolve(
    id_map: &IdMap,
    server: i64,
    external_id: &str,
    source_url: Option<&str>,
) -> Option<(String, Rule)> {
    if let Some(s) = id_map.get(server, external_id) {
        return Some((s.to_string(), Rule::IdMap));
    }
    if is_stable(external_id) {
        return Some((external_id.to_string(), Rule::Stable));
    }
    if let Some(s) = from_legacy(external_id) {
        return Some((s, Rule::Legacy));
    }
    source_url
        .and_then(from_source_url)
        .map(|s| (s, Rule::SourceUrl))
}

/// A report column's key (SPEC §2): its suffix, and whether its external_id carried its
/// report's id in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnKey<'a> {
    /// What follows `<report's legacy external_id>.`, or the whole external_id.
    pub suffix: &'a str,
    /// The external_id started with the report's external_id and `.`.
    pub prefixed: bool,
}

impl<'a> ColumnKey<'a> {
    /// The key of a column whose external_id is `external_id` and whose `report` (its report's
    /// legacy external_id) is `report_external_id`.
    pub fn of(external_id: &'a str, report_external_id: &str) -> ColumnKey<'a> {
        match external_id
            .strip_prefix(report_external_id)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            Some(suffix) => ColumnKey {
                suffix,
                prefixed: true,
            },
            None => ColumnKey {
                suffix: external_id,
                prefixed: false,
            },
        }
    }

    /// The column's stable external_id once its report's is `stable_report`:
    /// `<stable_report>.<suffix>` when prefixed, else the suffix unchanged.
    pub fn stable_external_id(&self, stable_report: &str) -> String {
        if self.prefixed {
            format!("{stable_report}.{}", self.suffix)
        } else {
            self.suffix.to_string()
        }
    }
}

/// SPEC §2's column rule in one call: the stable external_id of a column (`external_id`) of the
/// report whose legacy external_id is `report_external_id` and stable one `stable_report`.
pub fn stable_column_id(
    external_id: &str,
    report_external_id: &str,
    stable_report: &str,
) -> String {
    ColumnKey::of(external_id, report_external_id).stable_external_id(stable_report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_column_prefixed_by_its_report_id_takes_the_stable_report_id() {
        let k = ColumnKey::of("dashboard_12_1700000000.revenue", "dashboard_12_1700000000");
        assert_eq!(
            k,
            ColumnKey {
                suffix: "revenue",
                prefixed: true
            }
        );
        assert_eq!(k.stable_external_id("dashboard/12"), "dashboard/12.revenue");
        // The suffix is everything after the first `<report id>.`, dots included.
        assert_eq!(
            stable_column_id("look_7_2.orders.count", "look_7_2", "look/7"),
            "look/7.orders.count"
        );
    }

    #[test]
    fn a_column_not_prefixed_by_its_report_id_keeps_its_external_id() {
        for (ext, report) in [
            ("revenue", "dashboard_12_1700000000"),
            // The report id without the `.` is not a prefix.
            ("dashboard_12_1700000000revenue", "dashboard_12_1700000000"),
            ("dashboard_12_1700000000", "dashboard_12_1700000000"),
            // Another version's id is not this report's id.
            ("dashboard_12_1600000000.revenue", "dashboard_12_1700000000"),
        ] {
            let k = ColumnKey::of(ext, report);
            assert!(!k.prefixed, "{ext}");
            assert_eq!(k.suffix, ext);
            assert_eq!(stable_column_id(ext, report, "dashboard/12"), ext);
        }
        // A prefixed column with an empty suffix is still prefixed.
        assert_eq!(
            stable_column_id("look_7_2.", "look_7_2", "look/7"),
            "look/7."
        );
    }

    use super::*;

    #[test]
    fn legacy_forms() {
        assert_eq!(
            from_legacy("dashboard_123_1690000000").as_deref(),
            Some("dashboard/123")
        );
        assert_eq!(from_legacy("look_7_2").as_deref(), Some("look/7"));
        assert_eq!(
            from_legacy("lookml_dashboard_sales::overview_99").as_deref(),
            Some("lookml_dashboard/sales::overview")
        );
        assert_eq!(
            from_legacy("lookml_dashboard_sales_2::q_1_99").as_deref(),
            Some("lookml_dashboard/sales_2::q_1")
        );
        assert_eq!(from_legacy("dashboard_12a_3"), None);
        assert_eq!(
            from_legacy("dashboard_1_2_3"),
            None,
            "middle must be all digits"
        );
        assert_eq!(from_legacy("dashboard_123"), None, "no stamp");
        assert_eq!(from_legacy("lookml_dashboard_sales_99"), None, "no ::");
        assert_eq!(from_legacy("dashboard/123"), None);
    }

    #[test]
    fn stable_forms_are_kept() {
        assert!(is_stable("dashboard/123"));
        assert!(is_stable("lookml_dashboard/a::b"));
        assert!(!is_stable("dashboards/1"));
        assert!(!is_stable("look/"));
    }

    #[test]
    fn source_urls() {
        let cases = [
            ("https://l.example.com/dashboards/42", Some("dashboard/42")),
            (
                "https://l.example.com/dashboards-next/42/?a=1#x",
                Some("dashboard/42"),
            ),
            (
                "https://l.example.com/dashboards/sales::overview",
                Some("lookml_dashboard/sales::overview"),
            ),
            (
                "https://l.example.com/looks/9#frag/looks/10",
                Some("look/9"),
            ),
            ("/looks/9//", None),
            ("https://l.example.com/explore/9", None),
            ("https://l.example.com/dashboards/", None),
            ("https://l.example.com/looks/a%2Fb", Some("look/a%2Fb")),
        ];
        for (url, want) in cases {
            assert_eq!(from_source_url(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn resolve_takes_the_first_rule_that_applies() {
        let m = IdMap::default();
        assert_eq!(
            resolve(&m, 1, "dashboard/5", None),
            Some(("dashboard/5".into(), Rule::Stable))
        );
        assert_eq!(
            resolve(&m, 1, "dashboard_5_9", Some("/looks/3")),
            Some(("dashboard/5".into(), Rule::Legacy))
        );
        assert_eq!(
            resolve(&m, 1, "weird", Some("/looks/3")),
            Some(("look/3".into(), Rule::SourceUrl))
        );
        assert_eq!(resolve(&m, 1, "weird", None), None);
    }

    fn load(text: &str, ext: &str) -> Result<IdMap> {
        let f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        IdMap::load(f.path().to_str().unwrap())
    }

    #[test]
    fn id_map_csv_and_ndjson_with_server_lines_winning() {
        let m = load("legacy_external_id,stable_external_id,server_id\nx_1,dashboard/1,\nx_1,dashboard/2,7\n", ".csv").unwrap();
        assert_eq!(m.get(7, "x_1"), Some("dashboard/2"));
        assert_eq!(m.get(8, "x_1"), Some("dashboard/1"));
        let m = load("{\"legacy_external_id\":\"a\",\"stable_external_id\":\"look/1\"}\n\n{\"legacy_external_id\":\"b\",\"stable_external_id\":\"look/2\",\"server_id\":3}\n", ".ndjson").unwrap();
        assert_eq!(m.get(1, "a"), Some("look/1"));
        assert_eq!(m.get(3, "b"), Some("look/2"));
        assert_eq!(m.get(1, "b"), None);
    }

    #[test]
    fn id_map_errors_name_the_line() {
        let e = load(
            "legacy_external_id,stable_external_id\na,look/1\na,look/2\n",
            ".csv",
        )
        .unwrap_err();
        assert!(
            format!("{e:#}")
                .contains(":3: \"a\" is mapped to \"look/2\" here and to \"look/1\" on line 2"),
            "{e:#}"
        );
        let e = load("{\"legacy_external_id\":\"a\"}\n", ".ndjson").unwrap_err();
        assert!(
            format!("{e:#}").contains(":1: an id-map line needs"),
            "{e:#}"
        );
        let e = load(
            "{\"legacy_external_id\":\"a\",\"stable_external_id\":\"b\"}\nnot json\n",
            ".ndjson",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains(":2: malformed JSON"), "{e:#}");
        let e = load("old,new\na,b\n", ".csv").unwrap_err();
        assert!(format!("{e:#}").contains("header must name"), "{e:#}");
        let e = load(
            "legacy_external_id,stable_external_id,server_id\na,b,x\n",
            ".csv",
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains(":2: server_id must be an integer"),
            "{e:#}"
        );
    }
}
