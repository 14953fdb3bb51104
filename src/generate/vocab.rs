//! What the lines are made of: the kinds of lines (in the order the counts keep them), the
//! custom fields, and the words names and rich text are drawn from. Some words hold `"`, `\`,
//! `<`, `&` and non-ASCII letters on purpose, so that escaping is exercised.

/// Indexes into [`KINDS`].
pub(super) const HEADER: usize = 0;
pub(super) const USER: usize = 1;
pub(super) const CUSTOM_FIELD: usize = 2;
pub(super) const BI_SERVER: usize = 3;
pub(super) const BI_FOLDER: usize = 4;
pub(super) const BI_REPORT: usize = 5;
pub(super) const BI_REPORT_COLUMN: usize = 6;
pub(super) const FIELD_VALUE: usize = 7;
pub(super) const TRUST_FLAG: usize = 8;
pub(super) const TAG: usize = 9;
pub(super) const STAR: usize = 10;
pub(super) const ARTICLE: usize = 11;
pub(super) const CONVERSATION: usize = 12;
pub(super) const TABLE: usize = 13;
pub(super) const GLOSSARY_TERM: usize = 14;
pub(super) const VIEW_EVENT: usize = 15;

pub(super) const KINDS: [&str; 16] = [
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
pub(super) const USERS: u64 = 60;
/// Oid slots reserved per logical report (its versions) and per version (its columns).
pub(super) const VERSION_SLOTS: u64 = 4;
pub(super) const COLUMN_SLOTS: u64 = 5;
/// Columns of every non-Looker report version.
pub(super) const TAB_COLUMNS: u64 = 3;

/// Built-in fields (SPEC §1).
pub(super) const F_TITLE: u64 = 3;
pub(super) const F_DESCRIPTION: u64 = 4;
pub(super) const F_STEWARD: u64 = 8;
/// A field id with no definition: its values are judged by their JSON type.
pub(super) const F_UNDEFINED: u64 = 20001;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldType {
    Text,
    RichText,
    Picker,
    MultiPicker,
    Date,
    ObjectSet { multiple: bool },
}

pub(super) struct FieldDef {
    pub(super) id: u64,
    pub(super) name: &'static str,
    pub(super) ty: FieldType,
    /// The choices of a PICKER or MULTI_PICKER.
    pub(super) options: &'static [&'static str],
    /// Chance, in percent, that a curated report version carries a value.
    pub(super) pct: u32,
}

pub(super) const DOMAINS: &[&str] = &["Finance", "Marketing", "Sales", "Operations", "Product"];
pub(super) const CERTIFICATION: &[&str] = &["Bronze", "Silver", "Gold"];
pub(super) const AUDIENCE: &[&str] = &[
    "Executives",
    "Analysts",
    "Sales reps",
    "Support",
    "Everyone",
];
pub(super) const REGIONS: &[&str] = &["EMEA", "AMER", "APAC", "LATAM"];

pub(super) const CUSTOM_FIELDS: &[FieldDef] = &[
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
pub(super) const F_RELATED: u64 = 10008;
pub(super) const F_DOMAIN: u64 = 10004;

pub(super) const SUBJECTS: &[&str] = &[
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
pub(super) const QUALIFIERS: &[&str] = &[
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
pub(super) const COLUMNS: &[&str] = &[
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
pub(super) const DATA_TYPES: &[&str] = &[
    "number", "number", "string", "date", "string", "number", "string", "string", "string",
    "string", "number", "string", "tier", "date", "number", "number", "string", "string", "yesno",
    "number",
];
pub(super) const MODELS: &[&str] = &[
    "ecommerce",
    "marketing",
    "finance_v2",
    "support",
    "product_analytics",
];
pub(super) const TAGS: &[&str] = &[
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
pub(super) const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chloé", "Dmitri", "Eve", "Farah", "Günther", "Hiro", "Ines", "Jamal",
];
pub(super) const LAST_NAMES: &[&str] =
    &["Lovelace", "Silva", "Martin", "Ivanov", "Okafor", "Tanaka"];
pub(super) const TEXT_VALUES: &[&str] = &[
    "Owned by the revenue operations team",
    "Refreshed nightly at 02:00 UTC",
    "Hourly",
    "Ask #data-help before changing filters",
    "Ne pas modifier — validé par la finance",
];
pub(super) const SENTENCE_HEADS: &[&str] = &[
    "Shows",
    "Tracks",
    "Summarises",
    "Breaks down",
    "Compares",
    "Lists",
];
pub(super) const SENTENCE_BY: &[&str] = &[
    "by region",
    "by week",
    "per customer segment",
    "for the last 13 months",
    "against the plan",
    "across channels",
];
pub(super) const FLAG_TYPES: &[&str] = &["ENDORSEMENT", "WARNING", "DEPRECATION"];
