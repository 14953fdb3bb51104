//! The relational catalog schema (issue 4): one table per kind of SPEC §1, with the real keys
//! and constraints of a catalog, and the exact mapping between a record and a row.
//!
//! # Tables
//!
//! | kind | table | primary key | other constraints |
//! |---|---|---|---|
//! | `header` | `export_header` | one row (`one` = true) | `format`, `version` not null |
//! | `bi_server` | `bi_server` | `id` | |
//! | `bi_folder` | `bi_folder` | `oid` | |
//! | `bi_report` | `bi_report` | `oid` | `(server_id, external_id)` unique among reports not deleted |
//! | `bi_report_column` | `bi_report_column` | `oid` | index on `(server_id, report)` |
//! | `custom_field` | `custom_field` | `id` | `field_type` one of the SPEC's six |
//! | `field_value` | `field_value` | `(subject_otype, subject_oid, field_id)` | one value per (subject, field) |
//! | `trust_flag` | `trust_flag` | `id` | `flag_type` one of the SPEC's three; index on the subject |
//! | `tag` | `tag` | `(subject_otype, subject_oid, name)` | |
//! | `star` | `star` | `(subject_otype, subject_oid, user_id)` | |
//! | `article` | `article` | `id` | |
//! | `conversation` | `conversation` | `id` | the subject is both columns or neither; `posts` a JSON list |
//! | anything else | `other_record` | `(kind, key)` | `record` holds the whole record |
//!
//! A report's `(server_id, external_id)` is unique among the reports that are not deleted (a
//! partial unique index), not among all reports: without `--recover-deleted`, SPEC §3 leaves a
//! deleted version exactly as it is, and when that version already carries the stable
//! external_id its survivor is re-keyed to (`look/1947` deleted beside `look_1947_…` live), the
//! migrated catalog holds both. A full unique key would refuse such a bundle, which the
//! exports of `lookmig generate` produce.
//!
//! The primary keys are the record keys of SPEC §1, so "a key occurs once per export" is the
//! database's own rule. There are no foreign keys: an export need not be closed (subjects point
//! at tables and other objects that are not in it, field values at built-in fields that have no
//! `custom_field` line), and the staging copy must hold any export the tool reads.
//!
//! # The record ↔ row mapping, exactly
//!
//! Every named field of the SPEC has a typed column: integers `bigint`, strings `text`, flags
//! `boolean`, a subject two columns `subject_otype text, subject_oid bigint`; JSON (`jsonb`) only
//! where the SPEC's values are free-form (`field_value.value`, `conversation.posts`). A field
//! goes into its column when the record holds it with the column's type. Every other field —
//! fields the SPEC does not name, an optional named field that is JSON `null` (so that null and
//! absent stay apart: SQL NULL in a column always means *absent*), a named field the SPEC does not
//! type-check holding another type (e.g. a numeric `name`), a subject with fields besides `otype`
//! and `oid` (its columns are filled too, for the keys) — is kept in the row's `extra jsonb`,
//! and wins over the columns when the record is rebuilt. So dump gives back the same record, as
//! a JSON value, for every record the tool accepts.
//!
//! Timestamps (`created_at`, `last_updated`, `ts_updated`, `ts_created`) are kept as `text`:
//! the SPEC allows unparsable ones (they sort last), and a `timestamptz` would re-format the
//! string and lose its offset, so the export would not come back as it was. Compare them as
//! instants with a cast (`last_updated::timestamptz`) where they parse.
//!
//! Two values JSON allows and PostgreSQL cannot hold exactly are refused with a clear error
//! when loading: a string holding U+0000, and a float written with an exponent whose value is a
//! whole number of 17 to 20 digits (`1e16`; `jsonb` would give it back as an integer).

use crate::record::{fields, Kind};
use anyhow::{bail, Result};
use serde_json::{Map, Value};

/// The type of a named field and of its column(s), and a named field of a kind: the table of
/// SPEC §1 in `crate::record::fields`, which the probe checks lines against.
pub use crate::record::{Field, Ty};

/// A table holding one kind.
#[derive(Debug)]
pub struct Table {
    /// The `kind` of its records.
    pub kind: &'static str,
    /// The table name.
    pub name: &'static str,
    /// The named fields, in the SPEC's order: [`crate::record::fields`] of the kind.
    pub fields: &'static [Field],
    /// The SQL columns of the primary key (empty for the one-row header table).
    pub key: &'static [&'static str],
}

use Ty::*;

/// Every table of a known kind, in the order dump writes them (header first).
pub static TABLES: &[Table] = &[
    Table {
        kind: "header",
        name: "export_header",
        fields: fields(Kind::Header),
        key: &[],
    },
    Table {
        kind: "bi_server",
        name: "bi_server",
        fields: fields(Kind::BiServer),
        key: &["id"],
    },
    Table {
        kind: "bi_folder",
        name: "bi_folder",
        fields: fields(Kind::BiFolder),
        key: &["oid"],
    },
    Table {
        kind: "bi_report",
        name: "bi_report",
        fields: fields(Kind::BiReport),
        key: &["oid"],
    },
    Table {
        kind: "bi_report_column",
        name: "bi_report_column",
        fields: fields(Kind::BiReportColumn),
        key: &["oid"],
    },
    Table {
        kind: "custom_field",
        name: "custom_field",
        fields: fields(Kind::CustomField),
        key: &["id"],
    },
    Table {
        kind: "field_value",
        name: "field_value",
        fields: fields(Kind::FieldValue),
        key: &["subject_otype", "subject_oid", "field_id"],
    },
    Table {
        kind: "trust_flag",
        name: "trust_flag",
        fields: fields(Kind::TrustFlag),
        key: &["id"],
    },
    Table {
        kind: "tag",
        name: "tag",
        fields: fields(Kind::Tag),
        key: &["subject_otype", "subject_oid", "name"],
    },
    Table {
        kind: "star",
        name: "star",
        fields: fields(Kind::Star),
        key: &["subject_otype", "subject_oid", "user_id"],
    },
    Table {
        kind: "article",
        name: "article",
        fields: fields(Kind::Article),
        key: &["id"],
    },
    Table {
        kind: "conversation",
        name: "conversation",
        fields: fields(Kind::Conversation),
        key: &["id"],
    },
];

/// The table of records of unknown kinds: `(kind, key, record jsonb)`.
pub const OTHER: &str = "other_record";

/// Index into [`TABLES`] for a kind, or None for unknown kinds (stored in [`OTHER`]).
pub fn table_index(kind: Kind) -> Option<usize> {
    let i = match kind {
        Kind::Header => 0,
        Kind::BiServer => 1,
        Kind::BiFolder => 2,
        Kind::BiReport => 3,
        Kind::BiReportColumn => 4,
        Kind::CustomField => 5,
        Kind::FieldValue => 6,
        Kind::TrustFlag => 7,
        Kind::Tag => 8,
        Kind::Star => 9,
        Kind::Article => 10,
        Kind::Conversation => 11,
        Kind::Other => return None,
    };
    Some(i)
}

/// The DDL of the whole schema, in one string (run in one transaction by `db init`).
pub fn ddl() -> String {
    let mut s = String::new();
    s.push_str("CREATE TABLE lookmig_schema (version integer NOT NULL PRIMARY KEY);\n");
    s.push_str("INSERT INTO lookmig_schema VALUES (1);\n");
    s.push_str(
        "COMMENT ON TABLE lookmig_schema IS 'the lookmig catalog schema: one table per kind of the export (SPEC section 1)';\n",
    );
    for t in TABLES {
        let mut cols: Vec<String> = Vec::new();
        if t.key.is_empty() {
            cols.push("one boolean PRIMARY KEY DEFAULT true CHECK (one)".into());
        }
        for fld in t.fields {
            let null = if fld.required { " NOT NULL" } else { "" };
            match fld.ty {
                Subject => {
                    cols.push(format!("subject_otype text{null}"));
                    cols.push(format!("subject_oid bigint{null}"));
                }
                Int => cols.push(format!("{} bigint{null}", quote(fld.name))),
                Text => cols.push(format!("{} text{null}", quote(fld.name))),
                Bool => cols.push(format!("{} boolean{null}", quote(fld.name))),
                Json => cols.push(format!("{} jsonb{null}", quote(fld.name))),
            }
        }
        cols.push(
            "extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra) = 'object')".into(),
        );
        if !t.key.is_empty() {
            cols.push(format!("PRIMARY KEY ({})", t.key.join(", ")));
        }
        match t.name {
            "custom_field" => cols.push(format!(
                "CHECK (field_type IN ({}))",
                crate::record::FIELD_TYPES
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            "trust_flag" => {
                cols.push("CHECK (flag_type IN ('ENDORSEMENT', 'WARNING', 'DEPRECATION'))".into())
            }
            "conversation" => {
                cols.push("CHECK ((subject_otype IS NULL) = (subject_oid IS NULL))".into());
                cols.push("CHECK (jsonb_typeof(posts) = 'array')".into());
            }
            _ => {}
        }
        s.push_str(&format!(
            "CREATE TABLE {} (\n  {}\n);\n",
            t.name,
            cols.join(",\n  ")
        ));
        s.push_str(&format!(
            "COMMENT ON TABLE {} IS 'records of kind {}';\n",
            t.name, t.kind
        ));
    }
    s.push_str(
        "CREATE UNIQUE INDEX bi_report_live_external_id ON bi_report (server_id, external_id) WHERE deleted IS NOT TRUE;\n",
    );
    s.push_str("CREATE INDEX bi_report_external_id ON bi_report (server_id, external_id);\n");
    s.push_str("CREATE INDEX bi_report_column_report ON bi_report_column (server_id, report);\n");
    s.push_str("CREATE INDEX trust_flag_subject ON trust_flag (subject_otype, subject_oid);\n");
    s.push_str("CREATE INDEX conversation_subject ON conversation (subject_otype, subject_oid);\n");
    s.push_str(&format!(
        "CREATE TABLE {OTHER} (\n  kind text NOT NULL,\n  key text NOT NULL,\n  record jsonb NOT NULL CHECK (jsonb_typeof(record) = 'object'),\n  PRIMARY KEY (kind, key)\n);\n"
    ));
    s.push_str(&format!(
        "COMMENT ON TABLE {OTHER} IS 'records of kinds the export format does not name, whole, under their record key';\n"
    ));
    s
}

/// Every table name, for emptiness checks and `--replace`.
pub fn all_tables() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).chain([OTHER]).collect()
}

/// Quotes an SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    /// The SQL columns, in order, without `extra`.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        for fld in self.fields {
            if fld.ty == Subject {
                out.push("subject_otype".into());
                out.push("subject_oid".into());
            } else {
                out.push(quote(fld.name));
            }
        }
        out
    }

    /// The column list for SELECT and COPY, `extra` last.
    pub fn column_list(&self) -> String {
        let mut c = self.columns();
        c.push("extra".into());
        c.join(", ")
    }

    /// Positions of the key columns among [`Table::columns`].
    pub fn key_positions(&self) -> Vec<usize> {
        let cols = self.columns();
        self.key
            .iter()
            .map(|k| {
                cols.iter()
                    .position(|c| c.trim_matches('"') == *k)
                    .expect("a key column")
            })
            .collect()
    }

    /// The SQL type of each column, `extra` excluded.
    pub fn column_types(&self) -> Vec<Ty> {
        let mut out = Vec::new();
        for fld in self.fields {
            if fld.ty == Subject {
                out.push(Text);
                out.push(Int);
            } else {
                out.push(fld.ty);
            }
        }
        out
    }
}

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL: the field is absent (or kept in `extra`).
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    /// A JSON value (`jsonb`).
    Json(Value),
}

/// A record as the cells of its table's columns plus `extra`.
#[derive(Debug, Clone)]
pub struct Row {
    pub cells: Vec<Cell>,
    pub extra: Map<String, Value>,
}

/// The cells of a named field's value (`None`: absent) in its column(s), and whether the value
/// also goes into `extra`, where it wins when the record is rebuilt: the one rule of which
/// values a column holds (see the module docs), for [`to_row`] and the guarded statements.
pub fn field_cells(ty: Ty, v: Option<&Value>) -> (Vec<Cell>, bool) {
    match (ty, v) {
        (Subject, Some(s)) => match crate::record::Subject::from_value(s) {
            Some(sub) => (
                vec![Cell::Text(sub.otype), Cell::Int(sub.oid)],
                s.as_object().is_some_and(|o| o.len() != 2),
            ),
            None => (vec![Cell::Null, Cell::Null], true),
        },
        (Subject, None) => (vec![Cell::Null, Cell::Null], false),
        (_, None) => (vec![Cell::Null], false),
        (Int, Some(Value::Number(n))) if n.as_i64().is_some() => {
            (vec![Cell::Int(n.as_i64().unwrap_or_default())], false)
        }
        (Text, Some(Value::String(s))) => (vec![Cell::Text(s.clone())], false),
        (Bool, Some(Value::Bool(b))) => (vec![Cell::Bool(*b)], false),
        (Json, Some(v)) => (vec![Cell::Json(v.clone())], false),
        (_, Some(_)) => (vec![Cell::Null], true),
    }
}

/// Splits a record into its table's cells and `extra` (see the module docs for the rules).
pub fn to_row(t: &Table, obj: &Map<String, Value>) -> Result<Row> {
    storable_fields(obj)?;
    let mut cells = Vec::with_capacity(t.fields.len() + 1);
    let mut extra = Map::new();
    for fld in t.fields {
        let v = obj.get(fld.name);
        let (these, spill) = field_cells(fld.ty, v);
        cells.extend(these);
        if let (true, Some(v)) = (spill, v) {
            extra.insert(fld.name.to_string(), v.clone());
        }
        if fld.required && cells.last() == Some(&Cell::Null) {
            bail!(
                "field `{}` of a {} record has no value its column can hold",
                fld.name,
                t.kind
            );
        }
    }
    for (k, v) in obj {
        if k != "kind" && !t.fields.iter().any(|f| f.name == k) {
            extra.insert(k.clone(), v.clone());
        }
    }
    Ok(Row { cells, extra })
}

/// Rebuilds the record from its row: `kind`, the columns that hold a value, then `extra`
/// (which wins).
pub fn from_row(t: &Table, row: Row) -> Value {
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::String(t.kind.into()));
    let mut cells = row.cells.into_iter();
    for fld in t.fields {
        let v = if fld.ty == Subject {
            match (cells.next(), cells.next()) {
                (Some(Cell::Text(otype)), Some(Cell::Int(oid))) => {
                    Some(crate::record::Subject { otype, oid }.to_value())
                }
                _ => None,
            }
        } else {
            match cells.next() {
                Some(Cell::Int(i)) => Some(Value::from(i)),
                Some(Cell::Text(s)) => Some(Value::String(s)),
                Some(Cell::Bool(b)) => Some(Value::Bool(b)),
                Some(Cell::Json(j)) => Some(j),
                _ => None,
            }
        };
        if let Some(v) = v {
            obj.insert(fld.name.into(), v);
        }
    }
    for (k, v) in row.extra {
        obj.insert(k, v);
    }
    Value::Object(obj)
}

/// [`storable`] for each field of an object (and its name), without copying the object.
fn storable_fields(m: &Map<String, Value>) -> Result<()> {
    for (k, v) in m {
        if k.contains('\0') {
            bail!("a field name holds U+0000, which PostgreSQL cannot store");
        }
        storable(v)?;
    }
    Ok(())
}

/// Refuses what PostgreSQL cannot hold exactly: U+0000 in a string (or a field name), and a
/// whole-number float that `jsonb` would give back as an integer.
pub fn storable(v: &Value) -> Result<()> {
    match v {
        Value::String(s) if s.contains('\0') => {
            bail!("a string holds U+0000, which PostgreSQL text cannot store")
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|_| n.is_f64()) {
                if x.fract() == 0.0 && x.abs() >= 1e16 && x.abs() < 1.9e19 {
                    bail!("the number {n} would come back from PostgreSQL as an integer; write it without an exponent");
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(storable),
        Value::Object(m) => storable_fields(m),
        _ => Ok(()),
    }
}

/// Appends one row in COPY text format (tab-separated, `\N` for NULL, backslash escapes).
pub fn copy_line(out: &mut Vec<u8>, cells: &[Cell], extra: Option<&Map<String, Value>>) {
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::replace(&mut first, false) {
            out.push(b'\t');
        }
    };
    for c in cells {
        sep(out);
        match c {
            Cell::Null => out.extend_from_slice(b"\\N"),
            Cell::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Cell::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Cell::Text(s) => escape(out, s),
            Cell::Json(v) => escape(
                out,
                &serde_json::to_string(v).expect("a JSON value always serialises"),
            ),
        }
    }
    if let Some(e) = extra {
        sep(out);
        escape(
            out,
            &serde_json::to_string(e).expect("a JSON map always serialises"),
        );
    }
    out.push(b'\n');
}

fn escape(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(line: &str) {
        let rec = crate::record::parse_line(line.as_bytes()).unwrap();
        let t = &TABLES[table_index(rec.kind).unwrap()];
        let row = to_row(t, &rec.obj).unwrap();
        assert_eq!(from_row(t, row), Value::Object(rec.obj), "{line}");
    }

    #[test]
    fn null_absent_unknown_and_odd_subjects_come_back() {
        roundtrip(
            r#"{"kind":"bi_report","oid":1,"server_id":2,"external_id":"x","name":null,"deleted":false,"zz":[1,{"a":null}]}"#,
        );
        roundtrip(
            r#"{"kind":"bi_report","oid":1,"server_id":2,"external_id":"x","name":7,"report_type":{"a":1}}"#,
        );
        roundtrip(r#"{"kind":"conversation","id":1,"subject":null,"posts":[]}"#);
        roundtrip(
            r#"{"kind":"conversation","id":1,"posts":[{"id":1,"user_id":2,"text":"a\tb\\"}]}"#,
        );
        roundtrip(r#"{"kind":"tag","name":"n","subject":{"otype":"t","oid":3,"x":1}}"#);
        roundtrip(
            r#"{"kind":"field_value","field_id":3,"subject":{"otype":"t","oid":3},"value":null}"#,
        );
        roundtrip(r#"{"kind":"header","format":"catalog-export","version":1,"exported_at":"now"}"#);
    }

    #[test]
    fn every_known_kind_has_its_table() {
        for (i, t) in TABLES.iter().enumerate() {
            assert_eq!(table_index(Kind::from_name(t.kind)), Some(i));
        }
        assert_eq!(table_index(Kind::Other), None);
    }

    #[test]
    fn unstorable_values_are_refused() {
        assert!(storable(&serde_json::json!({"a": "x\u{0}"})).is_err());
        assert!(storable(&serde_json::from_str::<Value>("[1e16]").unwrap()).is_err());
        assert!(storable(
            &serde_json::from_str::<Value>("[1e15, 1.5, 1e300, 12345678901234567890]").unwrap()
        )
        .is_ok());
    }
}
