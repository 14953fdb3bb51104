//! The named fields of each kind (SPEC §1), in one table: their names, types and whether they
//! are required. The probe checks a line against it ([`super::Probe::parse`]), and the database
//! schema gives each field a typed column from it (`crate::db::schema::TABLES`), so the two
//! cannot disagree on what a kind holds.
//!
//! The rules on values that a type does not say (the header's format and version, the custom
//! field types, the trust flag types, the posts of a conversation) are the probe's.

use super::Kind;

/// The type of a named field's value, and of its database column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A JSON integer that fits i64 (`bigint`).
    Int,
    /// A JSON string (`text`).
    Text,
    /// `true` or `false` (`boolean`).
    Bool,
    /// Any JSON value (`jsonb`).
    Json,
    /// `{"otype": string, "oid": integer}` (two columns, `subject_otype text` and
    /// `subject_oid bigint`).
    Subject,
}

/// A named field of a kind.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name in the record (and of its column, except for `subject`).
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Required by SPEC §1 (the column is `NOT NULL`). An optional field may be `null`.
    pub required: bool,
    /// A value of another type makes the line malformed (SPEC §1). The SPEC names some fields
    /// without typing them (`name`, `report_type`, `parent_folder`): those are not checked,
    /// and a value of another type is kept beside the columns in the database.
    pub checked: bool,
}

/// A required field.
const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
        checked: true,
    }
}

/// An optional field.
const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        checked: true,
    }
}

/// An optional field whose type the SPEC does not check.
const fn free(name: &'static str) -> Field {
    Field {
        name,
        ty: Ty::Text,
        required: false,
        checked: false,
    }
}

use Ty::*;

const HEADER: &[Field] = &[req("format", Text), req("version", Int)];
const BI_SERVER: &[Field] = &[
    req("id", Int),
    req("type", Text),
    opt("title", Text),
    opt("uri", Text),
];
const BI_FOLDER: &[Field] = &[
    req("oid", Int),
    req("server_id", Int),
    req("external_id", Text),
    free("name"),
    free("parent_folder"),
];
const BI_REPORT: &[Field] = &[
    req("oid", Int),
    req("server_id", Int),
    req("external_id", Text),
    free("name"),
    free("report_type"),
    free("parent_folder"),
    opt("source_url", Text),
    opt("created_at", Text),
    opt("last_updated", Text),
    opt("deleted", Bool),
];
const BI_REPORT_COLUMN: &[Field] = &[
    req("oid", Int),
    req("server_id", Int),
    req("external_id", Text),
    req("report", Text),
    free("name"),
    opt("created_at", Text),
    opt("last_updated", Text),
    opt("deleted", Bool),
];
const CUSTOM_FIELD: &[Field] = &[
    req("id", Int),
    req("field_type", Text),
    free("name"),
    opt("allow_multiple", Bool),
];
const FIELD_VALUE: &[Field] = &[
    req("subject", Subject),
    req("field_id", Int),
    req("value", Json),
    opt("ts_updated", Text),
];
const TRUST_FLAG: &[Field] = &[
    req("id", Int),
    req("flag_type", Text),
    req("subject", Subject),
    req("user_id", Int),
    opt("reason", Text),
    opt("ts_created", Text),
];
const TAG: &[Field] = &[req("subject", Subject), req("name", Text)];
const STAR: &[Field] = &[
    req("subject", Subject),
    req("user_id", Int),
    opt("ts_created", Text),
];
const ARTICLE: &[Field] = &[req("id", Int), opt("title", Text), req("body", Text)];
const CONVERSATION: &[Field] = &[req("id", Int), opt("subject", Subject), req("posts", Json)];

/// The named fields of a kind, in the SPEC's order (none for [`Kind::Other`]).
pub const fn fields(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Header => HEADER,
        Kind::BiServer => BI_SERVER,
        Kind::BiFolder => BI_FOLDER,
        Kind::BiReport => BI_REPORT,
        Kind::BiReportColumn => BI_REPORT_COLUMN,
        Kind::CustomField => CUSTOM_FIELD,
        Kind::FieldValue => FIELD_VALUE,
        Kind::TrustFlag => TRUST_FLAG,
        Kind::Tag => TAG,
        Kind::Star => STAR,
        Kind::Article => ARTICLE,
        Kind::Conversation => CONVERSATION,
        Kind::Other => &[],
    }
}

/// The fields of a post of a conversation (SPEC §1), checked like a record's.
pub const POST: &[Field] = &[
    req("id", Int),
    req("user_id", Int),
    req("text", Text),
    opt("ts_created", Text),
];
