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
//!   versions, number of columns) can be recomputed cheaply from anywhere.
//! - **Streamed, constant memory**: oids are a pure function of the report index, the version
//!   slot and the column index, so a mention can point at any report version of the export
//!   (before or after the current line) without remembering what was written. Nothing grows
//!   with the number of reports.
//! - **Fast**: lines are formatted by hand into one reused `String` and written through a
//!   `BufWriter`; no `serde_json::Value` is built.
//!
//! Every line is valid per SPEC §1, every record key (kind, key) occurs once, and every mention
//! and object-set member points at an object that exists in the export (report versions, report
//! columns, `user` and `table` records).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use anyhow::{ensure, Context, Result};
use fastrand::Rng;

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
        buf: String::with_capacity(4096),
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

// ---------------------------------------------------------------------------------------------
// Kinds and vocabulary

const HEADER: usize = 0;
const USER: usize = 1;
const CUSTOM_FIELD: usize = 2;
const BI_SERVER: usize = 3;
const BI_FOLDER: usize = 4;
const BI_REPORT: usize = 5;
const BI_REPORT_COLUMN: usize = 6;
const FIELD_VALUE: usize = 7;
const TRUST_FLAG: usize = 8;
const TAG: usize = 9;
const STAR: usize = 10;
const ARTICLE: usize = 11;
const CONVERSATION: usize = 12;
const TABLE: usize = 13;
const GLOSSARY_TERM: usize = 14;
const VIEW_EVENT: usize = 15;

const KINDS: [&str; 16] = [
    "header",
    "user",
    "custom_field",
    "bi_server",
    "bi_folder",
    "bi_report",
    "bi_report_column",
    "field_value",
    "trust_flag",
    "tag",
    "star",
    "article",
    "conversation",
    "table",
    "glossary_term",
    "view_event",
];

/// Number of `user` records; user ids are `1..=USERS`.
const USERS: u64 = 60;
/// Oid slots reserved per logical report (its versions) and per version (its columns).
const VERSION_SLOTS: u64 = 4;
const COLUMN_SLOTS: u64 = 5;
/// Columns of every non-Looker report version.
const TAB_COLUMNS: u64 = 3;

/// Built-in fields (SPEC §1).
const F_TITLE: u64 = 3;
const F_DESCRIPTION: u64 = 4;
const F_STEWARD: u64 = 8;
/// A field id with no definition: its values are judged by their JSON type.
const F_UNDEFINED: u64 = 20001;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Text,
    RichText,
    Picker,
    MultiPicker,
    Date,
    ObjectSet { multiple: bool },
}

struct FieldDef {
    id: u64,
    name: &'static str,
    ty: FieldType,
    options: &'static [&'static str],
    /// Chance, in percent, that a curated report version carries a value.
    pct: u32,
}

const DOMAINS: &[&str] = &["Finance", "Marketing", "Sales", "Operations", "Product"];
const CERTIFICATION: &[&str] = &["Bronze", "Silver", "Gold"];
const AUDIENCE: &[&str] = &[
    "Executives",
    "Analysts",
    "Sales reps",
    "Support",
    "Everyone",
];
const REGIONS: &[&str] = &["EMEA", "AMER", "APAC", "LATAM"];

const CUSTOM_FIELDS: &[FieldDef] = &[
    FieldDef {
        id: 10001,
        name: "Business owner note",
        ty: FieldType::Text,
        options: &[],
        pct: 10,
    },
    FieldDef {
        id: 10002,
        name: "Refresh cadence",
        ty: FieldType::Text,
        options: &[],
        pct: 8,
    },
    FieldDef {
        id: 10003,
        name: "Usage notes",
        ty: FieldType::RichText,
        options: &[],
        pct: 10,
    },
    FieldDef {
        id: 10004,
        name: "Data domain",
        ty: FieldType::Picker,
        options: DOMAINS,
        pct: 12,
    },
    FieldDef {
        id: 10005,
        name: "Certification",
        ty: FieldType::Picker,
        options: CERTIFICATION,
        pct: 8,
    },
    FieldDef {
        id: 10006,
        name: "Audience",
        ty: FieldType::MultiPicker,
        options: AUDIENCE,
        pct: 12,
    },
    FieldDef {
        id: 10007,
        name: "Next review",
        ty: FieldType::Date,
        options: &[],
        pct: 8,
    },
    FieldDef {
        id: 10008,
        name: "Related assets",
        ty: FieldType::ObjectSet { multiple: true },
        options: &[],
        pct: 10,
    },
    FieldDef {
        id: 10009,
        name: "Primary source",
        ty: FieldType::ObjectSet { multiple: false },
        options: &[],
        pct: 6,
    },
    FieldDef {
        id: 10010,
        name: "Regions",
        ty: FieldType::MultiPicker,
        options: REGIONS,
        pct: 6,
    },
    FieldDef {
        id: 10011,
        name: "Certified on",
        ty: FieldType::Date,
        options: &[],
        pct: 4,
    },
    FieldDef {
        id: 10012,
        name: "Known issues",
        ty: FieldType::RichText,
        options: &[],
        pct: 5,
    },
    FieldDef {
        id: 10013,
        name: "Upstream reports",
        ty: FieldType::ObjectSet { multiple: true },
        options: &[],
        pct: 4,
    },
];
const F_RELATED: u64 = 10008;
const F_DOMAIN: u64 = 10004;

const SUBJECTS: &[&str] = &[
    "Revenue",
    "Sales pipeline",
    "Churn",
    "Marketing spend",
    "Inventory",
    "Support tickets",
    "Active users",
    "Conversion funnel",
    "Retention",
    "Gross margin",
    "Headcount",
    "Umsatz Übersicht",
    "売上レポート",
    "Café KPIs",
    "Net \"Top\" accounts",
    "Ops \\ backlog",
];
const QUALIFIERS: &[&str] = &[
    "Weekly",
    "Daily",
    "Executive",
    "Regional",
    "Quarterly",
    "Monthly",
    "EMEA",
    "Self-serve",
    "Legacy",
    "Draft",
];
const COLUMNS: &[&str] = &[
    "revenue",
    "order_count",
    "region",
    "created_date",
    "customer_name",
    "margin_pct",
    "ticket_id",
    "status",
    "country",
    "channel",
    "avg_order_value",
    "sku",
    "segment",
    "week",
    "user_count",
    "cost_usd",
    "campaign",
    "plan",
    "churned",
    "nps",
];
/// The data type of each of [`COLUMNS`], by position.
const DATA_TYPES: &[&str] = &[
    "number", "number", "string", "date", "string", "number", "string", "string", "string",
    "string", "number", "string", "tier", "date", "number", "number", "string", "string", "yesno",
    "number",
];
const MODELS: &[&str] = &[
    "ecommerce",
    "marketing",
    "finance_v2",
    "support",
    "product_analytics",
];
const TAGS: &[&str] = &[
    "finance",
    "marketing",
    "pii",
    "certified",
    "needs-review",
    "exec",
    "weekly",
    "sales",
    "ops",
    "deprecated-soon",
    "gold",
    "größe",
];
const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chloé", "Dmitri", "Eve", "Farah", "Günther", "Hiro", "Ines", "Jamal",
];
const LAST_NAMES: &[&str] = &["Lovelace", "Silva", "Martin", "Ivanov", "Okafor", "Tanaka"];
const TEXT_VALUES: &[&str] = &[
    "Owned by the revenue operations team",
    "Refreshed nightly at 02:00 UTC",
    "Hourly",
    "Ask #data-help before changing filters",
    "Ne pas modifier — validé par la finance",
];
const SENTENCE_HEADS: &[&str] = &[
    "Shows",
    "Tracks",
    "Summarises",
    "Breaks down",
    "Compares",
    "Lists",
];
const SENTENCE_BY: &[&str] = &[
    "by region",
    "by week",
    "per customer segment",
    "for the last 13 months",
    "against the plan",
    "across channels",
];
const FLAG_TYPES: &[&str] = &["ENDORSEMENT", "WARNING", "DEPRECATION"];

// ---------------------------------------------------------------------------------------------
// Deterministic layout: oids and report shapes are pure functions of the indexes.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn mix(seed: u64, i: u64, salt: u64) -> u64 {
    splitmix(seed ^ splitmix(i.wrapping_mul(8).wrapping_add(salt)))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// `dashboard_<digits>_<stamp>`
    Dashboard,
    /// `look_<digits>_<stamp>`
    Look,
    /// `lookml_dashboard_<model>::<name>_<stamp>`
    LookmlDashboard,
    /// Newest version already `dashboard/<digits>` or `look/<digits>`; older ones legacy.
    Stable,
    /// Unparseable external_id, stable id only in `source_url`.
    UrlOnly,
    /// Neither pattern nor usable `source_url`.
    Unresolvable,
}

#[derive(Clone, Copy, Debug)]
struct Shape {
    form: Form,
    nv: u64,
    ncols: u64,
    oldest_lacks_last: bool,
    /// Oids assigned newest-first (so the oldest version has the highest oid).
    reversed: bool,
}

impl Shape {
    fn slot(&self, v: u64) -> u64 {
        if self.reversed {
            self.nv - 1 - v
        } else {
            v
        }
    }
    fn cols(&self, v: u64) -> u64 {
        if v == 0 && self.oldest_lacks_last {
            self.ncols - 1
        } else {
            self.ncols
        }
    }
}

fn shape(seed: u64, i: u64) -> Shape {
    let mut r = Rng::with_seed(mix(seed, i, 1));
    let form = match r.u32(0..100) {
        0..=44 => Form::Dashboard,
        45..=72 => Form::Look,
        73..=84 => Form::LookmlDashboard,
        85..=88 => Form::Stable,
        89..=95 => Form::UrlOnly,
        _ => Form::Unresolvable,
    };
    let nv = match form {
        Form::Unresolvable => 1 + r.u64(0..2),
        Form::Stable => 1 + u64::from(r.u32(0..10) < 3),
        _ => match r.u32(0..100) {
            0..=29 => 1,
            30..=64 => 2,
            65..=84 => 3,
            _ => 4,
        },
    };
    let ncols = r.u64(2..=5);
    let oldest_lacks_last = nv > 1 && ncols >= 3 && r.u32(0..10) == 0;
    let reversed = nv > 1 && r.u32(0..12) == 0;
    Shape {
        form,
        nv,
        ncols,
        oldest_lacks_last,
        reversed,
    }
}

#[derive(Clone, Copy)]
struct Layout {
    seed: u64,
    n: u64,
    servers: u64,
    tab_reports: u64,
    tables: u64,
}

const TABLE_EVERY: u64 = 50;
const GLOSSARY_EVERY: u64 = 40;
const GLOSSARY_AT: u64 = 7;

impl Layout {
    fn new(o: &GenerateOptions) -> Layout {
        let n = o.reports;
        Layout {
            seed: o.seed,
            n,
            servers: u64::from(o.servers),
            tab_reports: 3 + n / 100,
            tables: n.div_ceil(TABLE_EVERY),
        }
    }
    fn tab_server(&self) -> u64 {
        self.servers + 1
    }
    fn report_oid(&self, i: u64, slot: u64) -> u64 {
        1 + i * VERSION_SLOTS + slot
    }
    fn column_oid(&self, i: u64, slot: u64, c: u64) -> u64 {
        1 + (i * VERSION_SLOTS + slot) * COLUMN_SLOTS + c
    }
    fn tab_versions(&self, k: u64) -> u64 {
        1 + k % 2
    }
    fn tab_report_oid(&self, k: u64, v: u64) -> u64 {
        1 + self.n * VERSION_SLOTS + k * 2 + v
    }
    fn tab_column_oid(&self, k: u64, v: u64, c: u64) -> u64 {
        1 + self.n * VERSION_SLOTS * COLUMN_SLOTS + (k * 2 + v) * COLUMN_SLOTS + c
    }
    fn folders_per_server(&self) -> u64 {
        3 + self.n / (self.servers * 40)
    }

    /// A report version other than those of report `exclude`. `shift` moves the version
    /// chosen for the same random draw (to make values that differ only in a version's oid).
    fn pick_report(&self, r: &mut Rng, exclude: Option<u64>, shift: u64) -> u64 {
        let looker = self.n > 1 || (self.n == 1 && exclude.is_none());
        if !looker || r.u32(0..100) < 3 {
            let k = r.u64(0..self.tab_reports);
            let v = (r.u64(0..2) + shift) % self.tab_versions(k);
            return self.tab_report_oid(k, v);
        }
        let j = loop {
            let j = r.u64(0..self.n);
            if Some(j) != exclude {
                break j;
            }
        };
        let sh = shape(self.seed, j);
        let v = (r.u64(0..4) + shift) % sh.nv;
        self.report_oid(j, sh.slot(v))
    }

    /// A column of a report version other than those of report `exclude`.
    fn pick_column(&self, r: &mut Rng, exclude: Option<u64>) -> u64 {
        let looker = self.n > 1 || (self.n == 1 && exclude.is_none());
        if !looker || r.u32(0..100) < 3 {
            let k = r.u64(0..self.tab_reports);
            let v = r.u64(0..self.tab_versions(k));
            return self.tab_column_oid(k, v, r.u64(0..TAB_COLUMNS));
        }
        let j = loop {
            let j = r.u64(0..self.n);
            if Some(j) != exclude {
                break j;
            }
        };
        let sh = shape(self.seed, j);
        let v = r.u64(0..sh.nv);
        self.column_oid(j, sh.slot(v), r.u64(0..sh.cols(v)))
    }

    /// An object-set member: mostly report versions, sometimes columns or tables.
    fn pick_member(&self, r: &mut Rng, exclude: Option<u64>) -> Subj {
        match r.u32(0..10) {
            0 if self.tables > 0 => Subj::new("table", 1 + r.u64(0..self.tables)),
            1 => Subj::new("bi_report_column", self.pick_column(r, exclude)),
            _ => Subj::new("bi_report", self.pick_report(r, exclude, 0)),
        }
    }

    /// Writes rich text (HTML) into `out`, drawn from `seed`. `mentions` is the chance, in
    /// percent, of a mention after each sentence.
    fn rich(&self, out: &mut String, seed: u64, shift: u64, exclude: Option<u64>, mentions: u32) {
        let mut r = Rng::with_seed(seed);
        out.clear();
        let paras = 1 + r.u32(0..3);
        for p in 0..paras {
            if p > 0 && r.bool() {
                out.push('\n');
            }
            let list = r.u32(0..8) == 0;
            out.push_str(if list { "<ul><li>" } else { "<p>" });
            let sentences = 1 + r.u32(0..2);
            for s in 0..sentences {
                if s > 0 {
                    out.push_str(if list { "</li><li>" } else { " " });
                }
                out.push_str(pick(&mut r, SENTENCE_HEADS));
                out.push(' ');
                let subject = pick(&mut r, SUBJECTS);
                if r.u32(0..6) == 0 {
                    out.push_str("<b>");
                    push_html_text(out, subject);
                    out.push_str("</b>");
                } else {
                    push_html_text(out, subject);
                }
                out.push(' ');
                out.push_str(pick(&mut r, SENTENCE_BY));
                if r.u32(0..10) == 0 {
                    out.push_str(" &amp; targets&nbsp;(FY)");
                }
                out.push('.');
                if r.u32(0..100) < mentions {
                    out.push_str(" See ");
                    self.mention(out, &mut r, exclude, shift);
                    out.push('.');
                }
            }
            out.push_str(if list { "</li></ul>" } else { "</p>" });
        }
    }

    /// One `<a …>` link, mostly a mention of a report version, in one of several spellings.
    fn mention(&self, out: &mut String, r: &mut Rng, exclude: Option<u64>, shift: u64) {
        let (otype, oid, path) = match r.u32(0..20) {
            0..=1 => ("user", 1 + r.u64(0..USERS), "/user/"),
            2 => (
                "bi_report_column",
                self.pick_column(r, exclude),
                "/bi/v2/report_column/",
            ),
            3 if self.tables > 0 => ("table", 1 + r.u64(0..self.tables), "/bi/v2/table/"),
            4 => {
                // A plain link: not a mention.
                out.push_str("<a href=\"https://looker.example.com/dashboards/");
                push_u64(out, r.u64(1..5000));
                out.push_str("\" target=\"_blank\">the Looker dashboard</a>");
                return;
            }
            _ => (
                "bi_report",
                self.pick_report(r, exclude, shift),
                "/bi/v2/report/",
            ),
        };
        let label = pick(r, SUBJECTS);
        match r.u32(0..10) {
            // Reversed attribute order, single quotes.
            0 => {
                out.push_str("<a data-otype='");
                out.push_str(otype);
                out.push_str("' data-oid='");
                push_u64(out, oid);
                out.push_str("' href='");
                out.push_str(path);
                push_u64(out, oid);
                out.push_str("/'>");
            }
            // Upper-case names, unquoted values, absolute href with a query.
            1 => {
                out.push_str("<A HREF=\"https://catalog.example.com");
                out.push_str(path);
                push_u64(out, oid);
                out.push_str("/?tab=curation\" DATA-OID=");
                push_u64(out, oid);
                out.push_str(" DATA-OTYPE=");
                out.push_str(otype);
                out.push('>');
            }
            // Extra attributes, no trailing slash.
            2 => {
                out.push_str("<a class=\"mention\" href=\"");
                out.push_str(path);
                push_u64(out, oid);
                out.push_str("\" data-oid=\"");
                push_u64(out, oid);
                out.push_str("\" rel=\"noopener\" data-otype=\"");
                out.push_str(otype);
                out.push_str("\">");
            }
            _ => {
                out.push_str("<a href=\"");
                out.push_str(path);
                push_u64(out, oid);
                out.push_str("/\" data-oid=\"");
                push_u64(out, oid);
                out.push_str("\" data-otype=\"");
                out.push_str(otype);
                out.push_str("\">");
            }
        }
        if otype == "user" {
            out.push('@');
            out.push_str(FIRST_NAMES[(oid % FIRST_NAMES.len() as u64) as usize]);
        } else {
            push_html_text(out, label);
        }
        out.push_str("</a>");
    }
}

#[derive(Clone, Copy)]
struct Subj {
    otype: &'static str,
    oid: u64,
}

impl Subj {
    fn new(otype: &'static str, oid: u64) -> Subj {
        Subj { otype, oid }
    }
}

/// A timestamp: unix seconds and a spelling (0 `Z`, 1 `+02:00`, 2 milliseconds).
#[derive(Clone, Copy)]
struct Ts {
    secs: i64,
    style: u8,
    millis: u32,
}

fn ts(r: &mut Rng, secs: i64) -> Ts {
    let style = match r.u32(0..100) {
        0..=91 => 0,
        92..=96 => 1,
        _ => 2,
    };
    Ts {
        secs,
        style,
        millis: if style == 2 { r.u32(0..1000) } else { 0 },
    }
}

fn pick<'a>(r: &mut Rng, items: &[&'a str]) -> &'a str {
    items[r.u32(0..items.len() as u32) as usize]
}

/// Up to 8 distinct indexes in `0..n` (`k` is capped at `n` and 8).
fn distinct(r: &mut Rng, k: usize, n: u64) -> ([u64; 8], usize) {
    let k = k.min(8).min(n as usize);
    let mut out = [0u64; 8];
    let mut len = 0;
    while len < k {
        let x = r.u64(0..n);
        if !out[..len].contains(&x) {
            out[len] = x;
            len += 1;
        }
    }
    (out, len)
}

// ---------------------------------------------------------------------------------------------
// Formatting

fn push_u64(out: &mut String, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&tmp[i..]).unwrap_or("0"));
}

fn push_2(out: &mut String, v: u32) {
    out.push((b'0' + (v / 10) as u8) as char);
    out.push((b'0' + (v % 10) as u8) as char);
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_date(out: &mut String, secs: i64) {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    push_u64(out, y as u64);
    out.push('-');
    push_2(out, m);
    out.push('-');
    push_2(out, d);
}

fn push_ts(out: &mut String, t: Ts) {
    let secs = if t.style == 1 { t.secs + 7200 } else { t.secs };
    push_date(out, secs);
    let sod = secs.rem_euclid(86_400) as u32;
    out.push('T');
    push_2(out, sod / 3600);
    out.push(':');
    push_2(out, sod / 60 % 60);
    out.push(':');
    push_2(out, sod % 60);
    match t.style {
        1 => out.push_str("+02:00"),
        2 => {
            out.push('.');
            out.push((b'0' + (t.millis / 100) as u8) as char);
            push_2(out, t.millis % 100);
            out.push('Z');
        }
        _ => out.push('Z'),
    }
}

/// A JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Text escaped for HTML content.
fn push_html_text(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

struct Gen<W: Write> {
    out: BufWriter<W>,
    lay: Layout,
    /// The line being built.
    buf: String,
    /// Rich text and other values built before being escaped into `buf`.
    scratch: String,
    counts: [u64; KINDS.len()],
    next_flag: u64,
    next_article: u64,
    next_conversation: u64,
    next_post: u64,
}

/// One version of a report, as its curation needs it.
struct VersionCtx {
    /// The logical report (excluded from its own mentions), None for non-Looker reports.
    report: Option<u64>,
    subject: Subj,
    stamp: i64,
    /// Seed of the report's shared description, so that versions often agree.
    desc_seed: u64,
}

impl<W: Write> Gen<W> {
    // -- line building ------------------------------------------------------------------------

    fn begin(&mut self, kind: usize) {
        self.buf.clear();
        self.buf.push_str("{\"kind\":\"");
        self.buf.push_str(KINDS[kind]);
        self.buf.push('"');
    }

    fn key(&mut self, name: &str) {
        self.buf.push_str(",\"");
        self.buf.push_str(name);
        self.buf.push_str("\":");
    }

    fn num(&mut self, name: &str, v: u64) {
        self.key(name);
        push_u64(&mut self.buf, v);
    }

    fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        push_json_str(&mut self.buf, v);
    }

    fn raw(&mut self, name: &str, v: &str) {
        self.key(name);
        self.buf.push_str(v);
    }

    fn ts(&mut self, name: &str, t: Ts) {
        self.key(name);
        self.buf.push('"');
        push_ts(&mut self.buf, t);
        self.buf.push('"');
    }

    fn subj_json(buf: &mut String, s: Subj) {
        buf.push_str("{\"otype\":\"");
        buf.push_str(s.otype);
        buf.push_str("\",\"oid\":");
        push_u64(buf, s.oid);
        buf.push('}');
    }

    fn subject(&mut self, s: Subj) {
        self.key("subject");
        Self::subj_json(&mut self.buf, s);
    }

    /// Writes `scratch` as a JSON string field.
    fn scratch_field(&mut self, name: &str) {
        self.key(name);
        push_json_str(&mut self.buf, &self.scratch);
    }

    fn end(&mut self, kind: usize) -> Result<()> {
        self.buf.push_str("}\n");
        self.out
            .write_all(self.buf.as_bytes())
            .context("generate: cannot write the export")?;
        self.counts[kind] += 1;
        Ok(())
    }

    fn rich_scratch(&mut self, seed: u64, shift: u64, exclude: Option<u64>, mentions: u32) {
        let lay = self.lay;
        lay.rich(&mut self.scratch, seed, shift, exclude, mentions);
    }

    fn dashboard_url(r: &mut Rng, uri: &str, ident: u64) -> String {
        let page = if r.u32(0..4) == 0 {
            "dashboards-next"
        } else {
            "dashboards"
        };
        format!("{uri}/{page}/{ident}")
    }

    // -- the export ---------------------------------------------------------------------------

    fn run(&mut self) -> Result<()> {
        let lay = self.lay;
        self.begin(HEADER);
        self.raw("format", "\"catalog-export\"");
        self.raw("version", "1");
        self.end(HEADER)?;

        let mut r = Rng::with_seed(mix(lay.seed, u64::MAX, 0));
        for u in 1..=USERS {
            self.begin(USER);
            self.num("id", u);
            let first = FIRST_NAMES[(u % FIRST_NAMES.len() as u64) as usize];
            let last = pick(&mut r, LAST_NAMES);
            self.scratch.clear();
            self.scratch.push_str(first);
            self.scratch.push(' ');
            self.scratch.push_str(last);
            self.scratch_field("name");
            self.scratch.clear();
            self.scratch.push_str("user");
            push_u64(&mut self.scratch, u);
            self.scratch.push_str("@example.com");
            self.scratch_field("email");
            self.end(USER)?;
        }

        for f in CUSTOM_FIELDS {
            self.begin(CUSTOM_FIELD);
            self.num("id", f.id);
            self.str("name", f.name);
            let ty = match f.ty {
                FieldType::Text => "TEXT",
                FieldType::RichText => "RICH_TEXT",
                FieldType::Picker => "PICKER",
                FieldType::MultiPicker => "MULTI_PICKER",
                FieldType::Date => "DATE",
                FieldType::ObjectSet { .. } => "OBJECT_SET",
            };
            self.str("field_type", ty);
            if let FieldType::ObjectSet { multiple } = f.ty {
                self.raw("allow_multiple", if multiple { "true" } else { "false" });
            }
            if !f.options.is_empty() {
                self.key("options");
                self.buf.push('[');
                for (k, o) in f.options.iter().enumerate() {
                    if k > 0 {
                        self.buf.push(',');
                    }
                    push_json_str(&mut self.buf, o);
                }
                self.buf.push(']');
            }
            self.end(CUSTOM_FIELD)?;
        }

        for s in 1..=lay.servers {
            self.begin(BI_SERVER);
            self.num("id", s);
            self.str("type", "looker");
            let title = match s {
                1 => "Looker production".to_string(),
                2 => "Looker staging".to_string(),
                _ => format!("Looker instance {s}"),
            };
            self.str("title", &title);
            self.str("uri", &looker_uri(s));
            self.end(BI_SERVER)?;
        }
        self.begin(BI_SERVER);
        self.num("id", lay.tab_server());
        self.str("type", "tableau");
        self.str("title", "Tableau Server");
        self.str("uri", "https://tableau.example.com");
        self.end(BI_SERVER)?;

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

    fn folders(&mut self) -> Result<()> {
        let lay = self.lay;
        let per = lay.folders_per_server();
        let mut oid = 1;
        let mut r = Rng::with_seed(mix(lay.seed, u64::MAX, 1));
        for s in 1..=lay.tab_server() {
            for f in 0..per {
                self.begin(BI_FOLDER);
                self.num("oid", oid);
                oid += 1;
                self.num("server_id", s);
                let ext = folder_ext(&lay, s, f);
                self.str("external_id", &ext);
                self.scratch.clear();
                self.scratch.push_str(pick(&mut r, QUALIFIERS));
                self.scratch.push(' ');
                self.scratch.push_str(pick(&mut r, SUBJECTS));
                self.scratch_field("name");
                if f > 0 {
                    let parent = folder_ext(&lay, s, (f - 1) / 4);
                    self.str("parent_folder", &parent);
                }
                self.end(BI_FOLDER)?;
            }
        }
        Ok(())
    }

    /// Reports of the non-Looker server: some look like legacy Looker ids on purpose.
    fn tab_report(&mut self, k: u64) -> Result<()> {
        let lay = self.lay;
        let mut r = Rng::with_seed(mix(lay.seed, k, 5));
        let nv = lay.tab_versions(k);
        let server = lay.tab_server();
        let created = 1_546_300_800 + r.i64(0..94_608_000);
        let mut stamp = created + r.i64(3600..864_000);
        let desc_seed = r.u64(..);
        let name = format!("{} {}", pick(&mut r, QUALIFIERS), pick(&mut r, SUBJECTS));
        let folder = folder_ext(&lay, server, r.u64(0..lay.folders_per_server()));
        for v in 0..nv {
            let ext = match k % 3 {
                0 => format!("dashboard_{}_{}", k + 1, stamp),
                1 => format!("workbook-{:08x}-{}", mix(lay.seed, k, 6) as u32, v + 1),
                _ => format!("look_{}_{}", k + 1, stamp),
            };
            self.begin(BI_REPORT);
            self.num("oid", lay.tab_report_oid(k, v));
            self.num("server_id", server);
            self.str("external_id", &ext);
            self.str("name", &name);
            self.str("report_type", "workbook");
            self.str("parent_folder", &folder);
            self.str(
                "source_url",
                &format!(
                    "https://tableau.example.com/#/views/{}/dashboards/{}",
                    k + 1,
                    k + 1
                ),
            );
            self.ts("created_at", ts(&mut r, created));
            self.ts("last_updated", ts(&mut r, stamp));
            self.end(BI_REPORT)?;
            for c in 0..TAB_COLUMNS {
                self.begin(BI_REPORT_COLUMN);
                self.num("oid", lay.tab_column_oid(k, v, c));
                self.num("server_id", server);
                self.str("external_id", &format!("{}.{}", ext, COLUMNS[c as usize]));
                self.str("report", &ext);
                self.str("name", COLUMNS[c as usize]);
                self.end(BI_REPORT_COLUMN)?;
            }
            let ctx = VersionCtx {
                report: None,
                subject: Subj::new("bi_report", lay.tab_report_oid(k, v)),
                stamp,
                desc_seed,
            };
            self.curate_version(&mut r, &ctx)?;
            stamp += r.i64(3600..2_592_000);
        }
        Ok(())
    }

    /// One logical Looker report: its versions, their columns and their curation.
    fn report(&mut self, i: u64) -> Result<()> {
        let lay = self.lay;
        let sh = shape(lay.seed, i);
        let mut r = Rng::with_seed(mix(lay.seed, i, 2));
        let server = i % lay.servers + 1;
        let ident = i / lay.servers + 1;
        let uri = looker_uri(server);
        let nv = sh.nv as usize;

        // Version stamps (unix seconds) and timestamps.
        let created = 1_546_300_800 + r.i64(0..94_608_000);
        let mut stamps = [0i64; 4];
        let mut updated: [Option<i64>; 4] = [None; 4];
        let mut deleted = [false; 4];
        let mut t = created + r.i64(0..7_776_000);
        for v in 0..nv {
            t += r.i64(3600..5_184_000);
            stamps[v] = t;
            updated[v] = match r.u32(0..100) {
                0..=2 => None,
                3..=7 if v > 0 => updated[v - 1],
                _ => Some(t + r.i64(0..600)),
            };
            deleted[v] = if v + 1 < nv {
                r.u32(0..100) < 20
            } else {
                r.u32(0..100) < 3
            };
        }

        let model = pick(&mut r, MODELS);
        let lookml_name = format!("{}_{}", pick(&mut r, COLUMNS), ident);
        let look = r.bool();
        let (report_type, stable_prefix) = match sh.form {
            Form::Look => ("look", "look"),
            Form::LookmlDashboard => ("lookml_dashboard", "lookml_dashboard"),
            Form::Stable | Form::UrlOnly if look => ("look", "look"),
            _ => ("dashboard", "dashboard"),
        };
        let url_variant = r.u32(0..4);
        let base_name = format!("{} {}", pick(&mut r, QUALIFIERS), pick(&mut r, SUBJECTS));
        let folders = lay.folders_per_server();
        let mut folder = r.u64(0..folders);
        let desc_seed = r.u64(..);

        // Column names shared by the versions.
        let mut cols = [0usize; 5];
        {
            let (idx, len) = distinct(&mut r, sh.ncols as usize, COLUMNS.len() as u64);
            for c in 0..len {
                cols[c] = idx[c] as usize;
            }
        }

        let mut exts: [String; 4] = Default::default();
        for v in 0..nv {
            let stamp = stamps[v];
            exts[v] = match sh.form {
                Form::Dashboard => format!("dashboard_{ident}_{stamp}"),
                Form::Look => format!("look_{ident}_{stamp}"),
                Form::LookmlDashboard => {
                    format!("lookml_dashboard_{model}::{lookml_name}_{stamp}")
                }
                Form::Stable if v + 1 == nv => format!("{stable_prefix}/{ident}"),
                Form::Stable => format!("{stable_prefix}_{ident}_{stamp}"),
                Form::UrlOnly => match (look, url_variant % 2) {
                    (false, 0) => format!("dashboard_ext_{ident}_{stamp}"),
                    (false, _) => format!("dashboard-{ident}-v{stamp}"),
                    (true, 0) => format!("look-{ident}@{stamp}"),
                    (true, _) => format!("looks_{ident}_{stamp}"),
                },
                Form::Unresolvable => match (i + v as u64) % 4 {
                    0 => format!("explore_{:012x}", mix(lay.seed, i, 3 + v as u64) >> 16),
                    1 => format!("dashboard_{ident}"),
                    2 => format!("report-{}-{}", ident, v + 1),
                    _ => format!("look_{ident}_v{}", v + 1),
                },
            };
        }

        // Report versions.
        for v in 0..nv {
            let oid = lay.report_oid(i, sh.slot(v as u64));
            self.begin(BI_REPORT);
            self.num("oid", oid);
            self.num("server_id", server);
            self.str("external_id", &exts[v]);
            if r.u32(0..10) == 0 {
                self.scratch.clear();
                self.scratch.push_str(&base_name);
                self.scratch.push_str(" (v");
                push_u64(&mut self.scratch, v as u64 + 1);
                self.scratch.push(')');
                self.scratch_field("name");
            } else {
                self.str("name", &base_name);
            }
            self.str("report_type", report_type);
            if r.u32(0..10) == 0 {
                folder = r.u64(0..folders);
            }
            let fext = folder_ext(&lay, server, folder);
            self.str("parent_folder", &fext);
            let url = match sh.form {
                Form::Dashboard => Some(Self::dashboard_url(&mut r, &uri, ident)),
                Form::Stable if !look => Some(Self::dashboard_url(&mut r, &uri, ident)),
                Form::Look | Form::Stable => Some(format!("{uri}/looks/{ident}")),
                Form::LookmlDashboard => Some(format!("{uri}/dashboards/{model}::{lookml_name}")),
                Form::UrlOnly => Some(match (look, url_variant) {
                    (false, 0) => format!("{uri}/dashboards-next/{ident}?x=1"),
                    (false, 1) => format!("{uri}/dashboards/{ident}/"),
                    (false, 2) => format!("{uri}/embed/dashboards/{ident}#tab=2"),
                    (false, _) => format!("{uri}/dashboards/{model}::{lookml_name}"),
                    (true, 0) => format!("{uri}/looks/{ident}/"),
                    (true, 1) => format!("{uri}/looks/{ident}?qid=abc&toggle=fil"),
                    (true, _) => format!("{uri}/looks/{ident}"),
                }),
                Form::Unresolvable => match (i + v as u64) % 3 {
                    0 => None,
                    1 => Some(format!("{uri}/explore/{model}/orders?qid=Zx{ident}")),
                    _ => Some(format!("{uri}/browse/boards/{ident}")),
                },
            };
            if let Some(url) = url {
                self.str("source_url", &url);
            }
            self.ts("created_at", ts(&mut r, created));
            if let Some(u) = updated[v] {
                self.ts(
                    "last_updated",
                    Ts {
                        secs: u,
                        style: 0,
                        millis: 0,
                    },
                );
            }
            if deleted[v] {
                self.raw("deleted", "true");
            } else if r.bool() {
                self.raw("deleted", "false");
            }
            match r.u32(0..20) {
                0 => self.num("owner_id", 1 + r.u64(0..USERS)),
                1 => {
                    self.key("metadata");
                    self.buf.push_str("{\"tiles\":");
                    push_u64(&mut self.buf, r.u64(1..30));
                    self.buf
                        .push_str(",\"filters\":[\"date\",\"region\"],\"ratio\":0.75}");
                }
                _ => {}
            }
            self.end(BI_REPORT)?;
        }

        // Columns.
        for v in 0..nv {
            let slot = sh.slot(v as u64);
            for c in 0..sh.cols(v as u64) {
                let name = COLUMNS[cols[c as usize]];
                self.begin(BI_REPORT_COLUMN);
                self.num("oid", lay.column_oid(i, slot, c));
                self.num("server_id", server);
                self.scratch.clear();
                if r.u32(0..100) >= 8 {
                    self.scratch.push_str(&exts[v]);
                    self.scratch.push('.');
                }
                self.scratch.push_str(name);
                self.scratch_field("external_id");
                self.str("report", &exts[v]);
                self.str("name", name);
                self.str("data_type", DATA_TYPES[cols[c as usize]]);
                if deleted[v] || r.u32(0..100) < 3 {
                    self.raw("deleted", "true");
                }
                self.end(BI_REPORT_COLUMN)?;
            }
        }

        // Curation of report versions.
        let curated = r.u32(0..100) < 75;
        for (v, &stamp) in stamps[..nv].iter().enumerate() {
            if !curated || r.u32(0..100) >= 85 {
                continue;
            }
            let ctx = VersionCtx {
                report: Some(i),
                subject: Subj::new("bi_report", lay.report_oid(i, sh.slot(v as u64))),
                stamp,
                desc_seed,
            };
            self.curate_version(&mut r, &ctx)?;
        }

        // Curation of columns.
        for c in 0..sh.ncols {
            let col_desc_seed = r.u64(..);
            for (v, &stamp) in stamps[..nv].iter().enumerate() {
                if c >= sh.cols(v as u64) {
                    continue;
                }
                let subj = Subj::new("bi_report_column", lay.column_oid(i, sh.slot(v as u64), c));
                self.curate_column(&mut r, i, subj, stamp, col_desc_seed)?;
            }
        }

        // View events: id-less records with a top-level subject. Event `e` gets its own
        // time, so two never coincide; sometimes one view is recorded on two versions at
        // the same time, which collapses once the versions merge.
        let events = r.u32(0..4);
        for e in 0..events {
            let v = r.u32(0..nv as u32) as usize;
            let user = 1 + r.u64(0..USERS);
            let at = stamps[v] + i64::from(e) * 97 + r.i64(0..90);
            let copies = if nv > 1 && r.u32(0..5) == 0 { 2 } else { 1 };
            for k in 0..copies {
                let tv = (v + k) % nv;
                self.begin(VIEW_EVENT);
                self.subject(Subj::new(
                    "bi_report",
                    lay.report_oid(i, sh.slot(tv as u64)),
                ));
                self.num("user_id", user);
                self.ts(
                    "at",
                    Ts {
                        secs: at,
                        style: 0,
                        millis: 0,
                    },
                );
                self.end(VIEW_EVENT)?;
            }
        }

        // Conversations about this report (or about nothing).
        if r.u32(0..100) < 7 {
            let v = r.u64(0..sh.nv);
            let subject = match r.u32(0..20) {
                0..=2 => None,
                3..=5 => Some(None),
                6..=7 => Some(Some(Subj::new(
                    "bi_report_column",
                    lay.column_oid(i, sh.slot(v), r.u64(0..sh.cols(v))),
                ))),
                _ => Some(Some(Subj::new("bi_report", lay.report_oid(i, sh.slot(v))))),
            };
            self.conversation(&mut r, Some(i), subject, stamps[v as usize])?;
        }
        Ok(())
    }

    /// Field values, trust flags, tags and stars on one report version.
    fn curate_version(&mut self, r: &mut Rng, ctx: &VersionCtx) -> Result<()> {
        let subj = ctx.subject;
        let ex = ctx.report;

        // Title (3).
        if r.u32(0..100) < 12 {
            self.fv_begin(subj, F_TITLE);
            let title = if r.u32(0..10) == 0 {
                ""
            } else {
                pick(r, SUBJECTS)
            };
            self.str("value", title);
            self.fv_end(r, ctx.stamp)?;
        }
        // Description (4): often the report's shared text (mentions may name another
        // version of the same report), sometimes a conflicting one, sometimes empty.
        if r.u32(0..100) < 55 {
            self.fv_begin(subj, F_DESCRIPTION);
            match r.u32(0..100) {
                0..=59 => {
                    let shift = if r.u32(0..3) == 0 { r.u64(1..4) } else { 0 };
                    self.rich_scratch(ctx.desc_seed, shift, ex, 45);
                    self.scratch_field("value");
                }
                60..=86 => {
                    self.rich_scratch(r.u64(..), 0, ex, 45);
                    self.scratch_field("value");
                }
                _ => {
                    let empty = pick(r, &["", "<p></p>", "<p>&nbsp;</p>", "  ", "<p> <br></p>"]);
                    self.str("value", empty);
                }
            }
            self.fv_end(r, ctx.stamp)?;
        }
        // Stewards (8): users, overlapping between versions.
        if r.u32(0..100) < 35 {
            self.fv_begin(subj, F_STEWARD);
            self.key("value");
            self.buf.push('[');
            if r.u32(0..20) != 0 {
                let k = 1 + r.u32(0..3) as usize;
                let (users, len) = distinct(r, k, 15);
                for (k, u) in users[..len].iter().enumerate() {
                    if k > 0 {
                        self.buf.push(',');
                    }
                    Self::subj_json(&mut self.buf, Subj::new("user", u + 1));
                }
            }
            self.buf.push(']');
            self.fv_end(r, ctx.stamp)?;
        }
        for f in CUSTOM_FIELDS {
            if r.u32(0..100) < f.pct {
                self.fv_begin(subj, f.id);
                self.field_value(r, f, ex);
                self.fv_end(r, ctx.stamp)?;
            }
        }
        // A field without definition: judged by its value.
        if r.u32(0..100) < 2 {
            self.fv_begin(subj, F_UNDEFINED);
            if r.bool() {
                self.raw("value", "[\"alpha\",\"beta\"]");
            } else {
                self.str("value", pick(r, TEXT_VALUES));
            }
            self.fv_end(r, ctx.stamp)?;
        }

        // Trust flags: a small pool of users, so (flag type, user) pairs recur across versions.
        if r.u32(0..100) < 25 {
            let k = 1 + r.u32(0..2) as usize;
            let (types, len) = distinct(r, k, 3);
            for &ft in &types[..len] {
                let user = 1 + r.u64(0..10);
                self.flag(r, subj, FLAG_TYPES[ft as usize], user, ctx.stamp, ex)?;
            }
        }
        // Tags: at most one of a name per version.
        if r.u32(0..100) < 30 {
            let k = 1 + r.u32(0..3) as usize;
            let (names, len) = distinct(r, k, TAGS.len() as u64);
            for &t in &names[..len] {
                self.begin(TAG);
                self.str("name", TAGS[t as usize]);
                self.subject(subj);
                self.end(TAG)?;
            }
        }
        // Stars: at most one per user per version.
        if r.u32(0..100) < 30 {
            let k = 1 + r.u32(0..4) as usize;
            let (users, len) = distinct(r, k, 40);
            for &u in &users[..len] {
                self.star(r, subj, u + 1, ctx.stamp)?;
            }
        }
        Ok(())
    }

    fn curate_column(
        &mut self,
        r: &mut Rng,
        i: u64,
        subj: Subj,
        stamp: i64,
        desc_seed: u64,
    ) -> Result<()> {
        if r.u32(0..100) < 15 {
            self.fv_begin(subj, F_DESCRIPTION);
            let seed = if r.u32(0..4) == 0 {
                r.u64(..)
            } else {
                desc_seed
            };
            self.rich_scratch(seed, 0, Some(i), 15);
            self.scratch_field("value");
            self.fv_end(r, stamp)?;
        }
        if r.u32(0..100) < 5 {
            self.fv_begin(subj, F_DOMAIN);
            self.str("value", pick(r, DOMAINS));
            self.fv_end(r, stamp)?;
        }
        if r.u32(0..100) < 6 {
            self.begin(TAG);
            self.str("name", pick(r, TAGS));
            self.subject(subj);
            self.end(TAG)?;
        }
        if r.u32(0..100) < 2 {
            let ft = pick(r, FLAG_TYPES);
            let user = 1 + r.u64(0..10);
            self.flag(r, subj, ft, user, stamp, Some(i))?;
        }
        if r.u32(0..100) < 2 {
            let user = 1 + r.u64(0..40);
            self.star(r, subj, user, stamp)?;
        }
        Ok(())
    }

    fn fv_begin(&mut self, subj: Subj, field: u64) {
        self.begin(FIELD_VALUE);
        self.num("field_id", field);
        self.subject(subj);
    }

    fn fv_end(&mut self, r: &mut Rng, stamp: i64) -> Result<()> {
        if r.u32(0..100) >= 5 {
            let at = stamp + r.i64(0..2_592_000);
            self.ts("ts_updated", ts(r, at));
        }
        self.end(FIELD_VALUE)
    }

    /// The `value` of a custom field, of the field's type.
    fn field_value(&mut self, r: &mut Rng, f: &FieldDef, ex: Option<u64>) {
        let lay = self.lay;
        match f.ty {
            FieldType::Text => {
                let v = if r.u32(0..20) == 0 {
                    "   "
                } else {
                    pick(r, TEXT_VALUES)
                };
                self.str("value", v);
            }
            FieldType::RichText => {
                self.rich_scratch(r.u64(..), 0, ex, 30);
                self.scratch_field("value");
            }
            FieldType::Picker => {
                let v = pick(r, f.options);
                self.str("value", v);
            }
            FieldType::MultiPicker => {
                let k = if r.u32(0..20) == 0 {
                    0
                } else {
                    1 + r.u32(0..3) as usize
                };
                let (idx, len) = distinct(r, k, f.options.len() as u64);
                self.key("value");
                self.buf.push('[');
                for (n, &o) in idx[..len].iter().enumerate() {
                    if n > 0 {
                        self.buf.push(',');
                    }
                    push_json_str(&mut self.buf, f.options[o as usize]);
                }
                self.buf.push(']');
            }
            FieldType::Date => {
                let secs = 1_672_531_200 + r.i64(0..63_072_000);
                self.key("value");
                self.buf.push('"');
                push_date(&mut self.buf, secs);
                self.buf.push('"');
            }
            FieldType::ObjectSet { multiple } => {
                let k = if multiple { 1 + r.u32(0..4) } else { 1 };
                self.key("value");
                self.buf.push('[');
                for n in 0..k {
                    if n > 0 {
                        self.buf.push(',');
                    }
                    let m = lay.pick_member(r, ex);
                    Self::subj_json(&mut self.buf, m);
                }
                self.buf.push(']');
            }
        }
    }

    fn flag(
        &mut self,
        r: &mut Rng,
        subj: Subj,
        flag_type: &str,
        user: u64,
        stamp: i64,
        ex: Option<u64>,
    ) -> Result<()> {
        self.begin(TRUST_FLAG);
        self.num("id", self.next_flag);
        self.next_flag += 1;
        self.str("flag_type", flag_type);
        self.subject(subj);
        self.num("user_id", user);
        match r.u32(0..10) {
            0..=4 => {
                self.rich_scratch(r.u64(..), 0, ex, 25);
                self.scratch_field("reason");
            }
            5..=6 => self.str("reason", ""),
            _ => {}
        }
        let at = stamp + r.i64(0..5_184_000);
        self.ts("ts_created", ts(r, at));
        self.end(TRUST_FLAG)
    }

    fn star(&mut self, r: &mut Rng, subj: Subj, user: u64, stamp: i64) -> Result<()> {
        self.begin(STAR);
        self.num("user_id", user);
        self.subject(subj);
        let at = stamp + r.i64(0..5_184_000);
        self.ts("ts_created", ts(r, at));
        self.end(STAR)
    }

    /// `subject`: None = absent, Some(None) = null.
    fn conversation(
        &mut self,
        r: &mut Rng,
        ex: Option<u64>,
        subject: Option<Option<Subj>>,
        stamp: i64,
    ) -> Result<()> {
        self.begin(CONVERSATION);
        self.num("id", self.next_conversation);
        self.next_conversation += 1;
        match subject {
            None => {}
            Some(None) => self.raw("subject", "null"),
            Some(Some(s)) => self.subject(s),
        }
        self.str("title", pick(r, SUBJECTS));
        self.key("posts");
        self.buf.push('[');
        let posts = 1 + r.u32(0..3);
        let mut at = stamp + r.i64(0..864_000);
        for p in 0..posts {
            if p > 0 {
                self.buf.push(',');
            }
            self.buf.push_str("{\"id\":");
            push_u64(&mut self.buf, self.next_post);
            self.next_post += 1;
            self.buf.push_str(",\"user_id\":");
            push_u64(&mut self.buf, 1 + r.u64(0..USERS));
            self.buf.push_str(",\"text\":");
            self.rich_scratch(r.u64(..), 0, ex, 35);
            push_json_str(&mut self.buf, &self.scratch);
            self.buf.push_str(",\"ts_created\":\"");
            push_ts(&mut self.buf, ts(r, at));
            self.buf.push_str("\"}");
            at += r.i64(60..172_800);
        }
        self.buf.push(']');
        self.end(CONVERSATION)
    }

    /// Records that are not Looker objects but refer to them: articles, tables with object
    /// sets, glossary terms and free-standing conversations.
    fn extras(&mut self, i: u64) -> Result<()> {
        let lay = self.lay;
        let mut r = Rng::with_seed(mix(lay.seed, i, 4));
        let stamp = 1_600_000_000 + r.i64(0..94_608_000);
        if r.u32(0..100) < 5 {
            self.begin(ARTICLE);
            self.num("id", self.next_article);
            self.next_article += 1;
            self.scratch.clear();
            self.scratch.push_str("How to read the ");
            self.scratch.push_str(pick(&mut r, SUBJECTS));
            self.scratch.push_str(" dashboards");
            self.scratch_field("title");
            self.rich_scratch(r.u64(..), 0, None, 70);
            self.scratch_field("body");
            self.ts("ts_updated", ts(&mut r, stamp));
            self.end(ARTICLE)?;
        }
        if r.u32(0..100) < 2 {
            self.conversation(&mut r, None, None, stamp)?;
        }
        if i.is_multiple_of(TABLE_EVERY) {
            let id = i / TABLE_EVERY + 1;
            self.begin(TABLE);
            self.num("id", id);
            self.scratch.clear();
            self.scratch.push_str("analytics.");
            self.scratch.push_str(pick(&mut r, COLUMNS));
            self.scratch.push_str("_facts_");
            push_u64(&mut self.scratch, id);
            self.scratch_field("name");
            self.str("schema", "analytics");
            self.end(TABLE)?;
            let subj = Subj::new("table", id);
            self.fv_begin(subj, F_RELATED);
            self.key("value");
            self.buf.push('[');
            let k = 1 + r.u32(0..4);
            for n in 0..k {
                if n > 0 {
                    self.buf.push(',');
                }
                let m = lay.pick_member(&mut r, None);
                Self::subj_json(&mut self.buf, m);
            }
            self.buf.push(']');
            self.fv_end(&mut r, stamp)?;
            if r.bool() {
                self.fv_begin(subj, F_DESCRIPTION);
                self.rich_scratch(r.u64(..), 0, None, 50);
                self.scratch_field("value");
                self.fv_end(&mut r, stamp)?;
            }
        }
        if i % GLOSSARY_EVERY == GLOSSARY_AT {
            self.begin(GLOSSARY_TERM);
            self.num("id", i / GLOSSARY_EVERY + 1);
            self.str("term", pick(&mut r, SUBJECTS));
            self.key("extra");
            self.buf.push_str("{\"synonyms\":[\"");
            self.buf.push_str(pick(&mut r, QUALIFIERS));
            self.buf.push_str(
                "\",\"KPI\"],\"weight\":0.25,\"nested\":{\"a\":[1,2,{\"b\":null}],\"ok\":true}}",
            );
            self.end(GLOSSARY_TERM)?;
        }
        Ok(())
    }
}

fn looker_uri(server: u64) -> String {
    if server == 1 {
        "https://looker.example.com".to_string()
    } else {
        format!("https://looker{server}.example.com")
    }
}

fn folder_ext(lay: &Layout, server: u64, f: u64) -> String {
    if server == lay.tab_server() {
        format!("project-{}", f + 1)
    } else {
        (f + 1).to_string()
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn timestamps_are_rfc3339() {
        let mut s = String::new();
        push_ts(
            &mut s,
            Ts {
                secs: 1_680_689_472,
                style: 0,
                millis: 0,
            },
        );
        assert_eq!(s, "2023-04-05T10:11:12Z");
        s.clear();
        push_ts(
            &mut s,
            Ts {
                secs: 1_680_689_472,
                style: 1,
                millis: 0,
            },
        );
        assert_eq!(s, "2023-04-05T12:11:12+02:00");
        s.clear();
        push_ts(
            &mut s,
            Ts {
                secs: 951_782_400,
                style: 2,
                millis: 7,
            },
        );
        assert_eq!(s, "2000-02-29T00:00:00.007Z");
        s.clear();
        push_json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
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

    /// `cargo test --release --lib generate::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing_200k() {
        let out = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let t = std::time::Instant::now();
        let opts = GenerateOptions {
            reports: 200_000,
            seed: 1,
            servers: 2,
        };
        let stats = generate(&opts, out).unwrap();
        eprintln!(
            "200000 reports: {} lines ({:.1}/report) in {:?}; {:?}",
            stats.lines,
            stats.lines as f64 / 200_000.0,
            t.elapsed(),
            stats.by_kind
        );
    }
}
