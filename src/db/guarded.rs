//! Creates, updates and deletes the database judges and writes itself.
//!
//! An update is one `UPDATE … FROM unnest(…)` per table and shape of change, guarded in SQL by
//! the rule of SPEC §7: each field the update sets holds its new value or its prior one, each
//! field it unsets is absent or holds its prior one, and not every field already holds what the
//! update leaves. A delete is one `DELETE … USING unnest(…)` per chunk, guarded by the whole
//! row: every column and `extra` as the prior record makes them (the row
//! [`super::schema::to_row`] stores for it, which reads back as that record). A create is one
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`: it applies where no row holds its
//! key. Records of kinds the SPEC does not name (`other_record`, one `jsonb` each) are deleted
//! when the record is the prior one by its text, and created the same way. A row such a
//! statement writes is applied, and locked until the commit; a change it leaves alone (already
//! applied, a conflict, a row a curator edited or inserted) goes on to the exact path of
//! [`super::apply`]: lock, read, judge in Rust. For the pre-check of a restore in batches the same conditions
//! make a `SELECT` (what the statement would write), which locks and writes nothing.
//!
//! The SQL guard may only be stricter than [`crate::changeset::Change::judge`], never looser,
//! since what it lets through is written without further look: it compares a field only where
//! its column holds it exactly (no copy in `extra`, checked in the statement), `jsonb` by its
//! text (as the exact path reads it back: `jsonb` equality calls `1` and `1.0` equal, JSON
//! values do not), and a change any of whose values its column could not hold exactly is not
//! taken here at all. `tests/db.rs` (`the_database_never_writes_what_the_exact_guard_refuses`)
//! holds a case for each of these.

use super::apply::{column_param, Params};
use super::schema::{Cell, Table, Ty, OTHER};
use crate::changeset::{Change, Op};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// One field of a table: its name, its type, and its columns (two for a subject).
struct Col {
    name: &'static str,
    ty: Ty,
    required: bool,
    columns: Vec<usize>,
}

fn cols(table: &Table) -> Vec<Col> {
    let mut at = 0;
    table
        .fields
        .iter()
        .map(|f| {
            let n = if f.ty == Ty::Subject { 2 } else { 1 };
            let c = Col {
                name: f.name,
                ty: f.ty,
                required: f.required,
                columns: (at..at + n).collect(),
            };
            at += n;
            c
        })
        .collect()
}

/// The cells of a field's value when its column(s) hold it exactly, with nothing left for
/// `extra`; None when they cannot (the exact path then decides).
fn clean(ty: Ty, v: &Value) -> Option<Vec<Cell>> {
    super::schema::storable(v).ok()?;
    match super::schema::field_cells(ty, Some(v)) {
        (cells, false) => Some(cells),
        (_, true) => None,
    }
}

/// A change in the form the statement takes: which fields it sets and unsets (by index into
/// the table's fields, sorted), and per guarded field its prior cells then per set field its
/// new cells.
struct Shaped {
    set: Vec<usize>,
    unset: Vec<usize>,
    prior: Vec<Cell>,
    new: Vec<Cell>,
}

/// A shaped change and its place in the chunk.
type Placed = (usize, Shaped);

/// The shape of an update, or None when it must take the exact path.
fn shape(fields: &[Col], change: &Change) -> Option<Shaped> {
    if change.op != Op::Update || change.exact_after.is_some() {
        return None;
    }
    let prior = change.prior_fields();
    let index = |name: &str| fields.iter().position(|f| f.name == name);
    let mut set: Vec<(usize, &serde_json::value::RawValue)> = Vec::new();
    for (name, v) in &change.set {
        set.push((index(name)?, v));
    }
    let mut unset = Vec::new();
    for name in &change.unset {
        let i = index(name)?;
        if fields[i].required {
            return None;
        }
        unset.push(i);
    }
    set.sort_unstable_by_key(|(i, _)| *i);
    unset.sort_unstable();
    let mut s = Shaped {
        set: set.iter().map(|(i, _)| *i).collect(),
        unset,
        prior: Vec::new(),
        new: Vec::new(),
    };
    for &i in s.set.iter().chain(&s.unset) {
        let f = &fields[i];
        match prior.get(f.name) {
            None => s.prior.extend(f.columns.iter().map(|_| Cell::Null)),
            Some(raw) => {
                let v: Value = serde_json::from_str(raw.get()).ok()?;
                s.prior.extend(clean(f.ty, &v)?);
            }
        }
    }
    for (i, raw) in &set {
        let v: Value = serde_json::from_str(raw.get()).ok()?;
        s.new.extend(clean(fields[*i].ty, &v)?);
    }
    Some(s)
}

/// The guarded statements of one chunk of changes, built away from the connection (while it
/// runs the chunk before): deletes first, then one update per shape.
pub(super) struct Prepared {
    statements: Vec<Statement>,
}

/// One statement: its SQL, its parameters, and the place in the chunk of each `u.i`.
struct Statement {
    sql: String,
    params: Params,
    at: Vec<usize>,
    /// For an insert, which returns the key columns of the rows it wrote (an `INSERT`'s
    /// `RETURNING` cannot name `u.i`): the key columns' types, and each key's index in `at`.
    by_key: Option<(Vec<Ty>, HashMap<String, usize>)>,
}

/// The array parameters of a statement over `unnest(…) AS u(…)`: one per column of the rows
/// it carries, each with its cast and its alias.
#[derive(Default)]
pub(super) struct Unnest {
    pub(super) params: Params,
    casts: Vec<String>,
    aliases: Vec<String>,
}

impl Unnest {
    /// Starting with `u.i`, each row's place among `n` (what a guarded statement returns).
    fn placed(n: usize) -> Unnest {
        Unnest {
            params: vec![Box::new((0..n as i32).collect::<Vec<i32>>())],
            casts: vec!["$1::int4[]".to_string()],
            aliases: vec!["i".to_string()],
        }
    }

    /// Adds the array of a column of type `ty`, one cell per row, as `u.<alias>`.
    pub(super) fn column(&mut self, alias: String, ty: Ty, cells: &[&Cell]) {
        let (b, cast) = column_param(ty, cells, self.params.len() + 1);
        self.push(alias, b, cast);
    }

    /// Adds the array of the rows' `extra`, as `u.<alias>`.
    pub(super) fn extra<'r>(
        &mut self,
        alias: &str,
        rows: impl Iterator<Item = &'r super::schema::Row>,
    ) {
        let v: Vec<Value> = rows.map(|r| Value::Object(r.extra.clone())).collect();
        let cast = format!("${}::jsonb[]", self.params.len() + 1);
        self.push(alias.to_string(), Box::new(v), cast);
    }

    fn push(
        &mut self,
        alias: String,
        param: Box<dyn postgres::types::ToSql + Sync + Send>,
        cast: String,
    ) {
        self.params.push(param);
        self.casts.push(cast);
        self.aliases.push(alias);
    }

    /// `unnest(…) AS u(…)`.
    pub(super) fn sql(&self) -> String {
        format!(
            "unnest({}) AS u({})",
            self.casts.join(", "),
            self.aliases.join(", ")
        )
    }
}

/// A key as one string, to find an inserted row's change by the key the insert returns.
fn key_text<'c>(cells: impl Iterator<Item = &'c Cell>) -> Option<String> {
    let mut out = String::new();
    for c in cells {
        match c {
            Cell::Int(i) => out.push_str(&i.to_string()),
            Cell::Text(s) => out.push_str(s),
            _ => return None,
        }
        // No key text holds U+0000: a row cannot store it (`schema::storable`).
        out.push('\0');
    }
    Some(out)
}

/// The guarded statements of a chunk of changes of table `t` of [`super::schema::TABLES`]
/// (past the last: `other_record`); `.1` is each change's key cells.
pub(super) fn prepare_chunk(t: usize, changes: &[(Change, Vec<Cell>)], dry: bool) -> Prepared {
    let mut prepared = match super::schema::TABLES.get(t) {
        Some(table) => prepare(table, changes, dry),
        None => prepare_other(changes, dry),
    };
    // Where the server waits for each statement (the writes); the pre-check's reads keep the
    // server less busy than its preparing thread, which then does not take the encoding over.
    if !dry {
        use rayon::prelude::*;
        prepared.statements.par_iter_mut().for_each(encode_ahead);
    }
    prepared
}

/// A parameter encoded in PostgreSQL's binary format ahead, on the thread that prepares the
/// chunk: the connection's thread then only copies its bytes. Serialising the arrays there (a
/// chunk's JSON values among them) kept the server waiting between a statement's parse and its
/// bind.
#[derive(Debug)]
struct Encoded {
    ty: postgres::types::Type,
    bytes: Option<bytes::Bytes>,
}

impl postgres::types::ToSql for Encoded {
    fn to_sql(
        &self,
        _: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match &self.bytes {
            Some(b) => {
                out.extend_from_slice(b);
                postgres::types::IsNull::No
            }
            None => postgres::types::IsNull::Yes,
        })
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty != self.ty {
            return Err(format!("a parameter encoded as {} where {ty} is wanted", self.ty).into());
        }
        self.to_sql(ty, out)
    }
}

/// Encodes a statement's parameters ahead ([`Encoded`]), each as the array type its cast in
/// the SQL names (`$N::bigint[]`); one it cannot place is left to the connection.
fn encode_ahead(st: &mut Statement) {
    use postgres::types::Type;
    for (i, param) in st.params.iter_mut().enumerate() {
        let cast = format!("${}::", i + 1);
        let Some(at) = st.sql.find(&cast) else {
            continue;
        };
        let rest = &st.sql[at + cast.len()..];
        let ty = match rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '[' || c == ']'))
            .next()
        {
            Some("int4[]") => Type::INT4_ARRAY,
            Some("bigint[]") | Some("int8[]") => Type::INT8_ARRAY,
            Some("text[]") => Type::TEXT_ARRAY,
            Some("jsonb[]") => Type::JSONB_ARRAY,
            Some("boolean[]") | Some("bool[]") => Type::BOOL_ARRAY,
            _ => continue,
        };
        let mut buf = bytes::BytesMut::new();
        let Ok(null) = param.to_sql_checked(&ty, &mut buf) else {
            continue; // the connection reports it
        };
        let bytes = match null {
            postgres::types::IsNull::No => Some(buf.freeze()),
            postgres::types::IsNull::Yes => None,
        };
        *param = Box::new(Encoded { ty, bytes });
    }
}

/// Builds the guarded deletes and updates of a chunk of changes of `table` (`.1` each change's
/// key cells).
fn prepare(table: &Table, changes: &[(Change, Vec<Cell>)], dry: bool) -> Prepared {
    let mut statements = Vec::new();
    if table.key.is_empty() {
        return Prepared { statements };
    }
    if changes.iter().any(|(c, _)| c.op == Op::Delete) {
        statements.extend(delete(table, changes, dry));
    }
    if changes.iter().any(|(c, _)| c.op == Op::Update) {
        statements.extend(update(table, changes, dry));
        if changes.iter().any(|(c, _)| c.exact_after.is_some()) {
            statements.extend(exact_updates(table, changes, dry));
        }
    }
    if changes.iter().any(|(c, _)| c.op == Op::Create) {
        statements.extend(create(table, changes, dry));
    }
    Prepared { statements }
}

/// Builds the guarded deletes and creates of a chunk of records of kinds the SPEC does not
/// name (table `other_record`: kind, key, the whole record as `jsonb`). A delete goes when the
/// record is the prior one (compared by its text, as for `jsonb` columns); a create as for
/// any table. Their updates take the exact path.
fn prepare_other(changes: &[(Change, Vec<Cell>)], dry: bool) -> Prepared {
    let statements = [Op::Delete, Op::Create]
        .into_iter()
        .filter_map(|op| {
            // (place, kind, key, the record: prior of a delete, new one of a create)
            let rows: Vec<(usize, String, String, Value)> = records_of(changes, op, |c, raw| {
                let v: Value = serde_json::from_str(raw.get()).ok()?;
                super::schema::storable(&v).ok()?;
                Some((c.kind.clone(), c.key.clone(), v))
            })
            .into_iter()
            .map(|(i, (kind, key, v))| (i, kind, key, v))
            .collect();
            if rows.is_empty() {
                return None;
            }
            let at: Vec<usize> = rows.iter().map(|r| r.0).collect();
            let kinds: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
            let keys: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
            let mut by_key = None;
            let (sql, params): (String, Params) = match (op, dry) {
                (Op::Create, false) => {
                    let mut index = HashMap::with_capacity(rows.len());
                    for (j, r) in rows.iter().enumerate() {
                        let cells = [Cell::Text(r.1.clone()), Cell::Text(r.2.clone())];
                        index.insert(key_text(cells.iter())?, j);
                    }
                    by_key = Some((vec![Ty::Text, Ty::Text], index));
                    let records: Vec<Value> = rows.into_iter().map(|r| r.3).collect();
                    (
                        format!(
                            "INSERT INTO {OTHER} (kind, key, record) SELECT * FROM \
                             unnest($1::text[], $2::text[], $3::jsonb[]) \
                             ON CONFLICT DO NOTHING RETURNING kind, key"
                        ),
                        vec![Box::new(kinds), Box::new(keys), Box::new(records)],
                    )
                }
                (Op::Create, true) => (
                    format!(
                        "SELECT u.i FROM unnest($1::int4[], $2::text[], $3::text[]) AS u(i, kind, key) \
                         WHERE NOT EXISTS (SELECT 1 FROM {OTHER} AS t WHERE t.kind = u.kind AND t.key = u.key)"
                    ),
                    vec![
                        Box::new((0..at.len() as i32).collect::<Vec<i32>>()),
                        Box::new(kinds),
                        Box::new(keys),
                    ],
                ),
                _ => {
                    let records: Vec<Value> = rows.into_iter().map(|r| r.3).collect();
                    let unnest = "unnest($1::int4[], $2::text[], $3::text[], $4::jsonb[]) AS u(i, kind, key, prior)";
                    let conds = "t.kind = u.kind AND t.key = u.key AND t.record::text = u.prior::text";
                    (
                        if dry {
                            format!("SELECT u.i FROM {OTHER} AS t, {unnest} WHERE {conds}")
                        } else {
                            format!("DELETE FROM {OTHER} AS t USING {unnest} WHERE {conds} RETURNING u.i")
                        },
                        vec![
                            Box::new((0..at.len() as i32).collect::<Vec<i32>>()),
                            Box::new(kinds),
                            Box::new(keys),
                            Box::new(records),
                        ],
                    )
                }
            };
            Some(Statement {
                sql,
                params,
                at,
                by_key,
            })
        })
        .collect();
    Prepared { statements }
}

/// Runs the prepared statements; returns, for each change of the chunk, whether it was applied
/// here (the statements' row locks are held until the commit).
pub(super) fn run(
    tx: &mut postgres::Transaction,
    prepared: &Prepared,
    n: usize,
) -> Result<Vec<bool>, postgres::Error> {
    let mut applied = vec![false; n];
    if prepared.statements.is_empty() {
        return Ok(applied);
    }
    // Run within `nested_loops_only` (a range of chunks): each change finds its row by the
    // primary key.
    for st in &prepared.statements {
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = st
            .params
            .iter()
            .map(|b| b.as_ref() as &(dyn postgres::types::ToSql + Sync))
            .collect();
        for row in tx.query(&st.sql, &refs)? {
            let j = match &st.by_key {
                None => row.get::<_, i32>(0) as usize,
                Some((types, at)) => {
                    let cells: Vec<Cell> = types
                        .iter()
                        .enumerate()
                        .map(|(c, ty)| match ty {
                            Ty::Int => Cell::Int(row.get(c)),
                            _ => Cell::Text(row.get(c)),
                        })
                        .collect();
                    let key = key_text(cells.iter()).expect("key cells are text or integers");
                    *at.get(&key)
                        .expect("an inserted row is one of the statement's")
                }
            };
            applied[st.at[j]] = true;
        }
    }
    Ok(applied)
}

/// Has the planner find each change's row by the primary key, until [`planner_reset`]. Told
/// the array's length, it would rather hash a scan of the whole table (filtered by the guards)
/// for every chunk: as slow as the index at 50,000 reports, and growing with the table after
/// that. Set once for a range of chunks (two round trips a chunk kept the server waiting).
pub(super) fn nested_loops_only(
    db: &super::Database,
    tx: &mut postgres::Transaction,
) -> anyhow::Result<()> {
    tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .map_err(|e| db.error(&e, "setting the planner"))
}

/// Undoes [`nested_loops_only`] (the newer-record look joins by hash).
pub(super) fn planner_reset(
    db: &super::Database,
    tx: &mut postgres::Transaction,
) -> anyhow::Result<()> {
    tx.batch_execute("RESET enable_hashjoin; RESET enable_mergejoin")
        .map_err(|e| db.error(&e, "setting the planner"))
}

/// The guarded updates of a chunk, one statement per shape.
fn update(table: &Table, changes: &[(Change, Vec<Cell>)], dry: bool) -> Vec<Statement> {
    use rayon::prelude::*;
    let fields = cols(table);
    let shaped: Vec<Option<Shaped>> = changes.par_iter().map(|(c, _)| shape(&fields, c)).collect();
    // By shape, in change order within each.
    let mut groups: BTreeMap<(Vec<usize>, Vec<usize>), Vec<Placed>> = BTreeMap::new();
    for (i, s) in shaped.into_iter().enumerate() {
        if let Some(s) = s {
            groups
                .entry((s.set.clone(), s.unset.clone()))
                .or_default()
                .push((i, s));
        }
    }
    groups
        .into_iter()
        .map(|((set, unset), list)| {
            let (sql, params) = statement(table, &fields, (&set, &unset), changes, &list, dry);
            Statement {
                sql,
                params,
                at: list.iter().map(|(i, _)| *i).collect(),
                by_key: None,
            }
        })
        .collect()
}

/// The statement of one shape (for the pre-check, `dry`, a `SELECT` of what it would write),
/// and its parameters: one array per column, `u.i` the change's
/// place in `list`.
fn statement(
    table: &Table,
    fields: &[Col],
    (set, unset): (&[usize], &[usize]),
    changes: &[(Change, Vec<Cell>)],
    list: &[Placed],
    dry: bool,
) -> (String, Params) {
    let names = table.columns();
    let types = table.column_types();
    let key_pos = table.key_positions();
    let mut u = Unnest::placed(list.len());
    for (j, &p) in key_pos.iter().enumerate() {
        let cells: Vec<&Cell> = list.iter().map(|(i, _)| &changes[*i].1[j]).collect();
        u.column(format!("k{j}"), types[p], &cells);
    }
    // The guarded fields' columns, in the order of `Shaped::prior`, then the set ones'.
    let guarded: Vec<usize> = set
        .iter()
        .chain(unset)
        .flat_map(|&f| fields[f].columns.clone())
        .collect();
    for (j, &c) in guarded.iter().enumerate() {
        let cells: Vec<&Cell> = list.iter().map(|(_, s)| &s.prior[j]).collect();
        u.column(format!("p{j}"), types[c], &cells);
    }
    let written: Vec<usize> = set
        .iter()
        .flat_map(|&f| fields[f].columns.clone())
        .collect();
    for (j, &c) in written.iter().enumerate() {
        let cells: Vec<&Cell> = list.iter().map(|(_, s)| &s.new[j]).collect();
        u.column(format!("n{j}"), types[c], &cells);
    }
    // A column compared as the exact path reads it back (jsonb by its text).
    let same = |c: usize, other: String| {
        if types[c] == Ty::Json {
            format!("t.{}::text IS NOT DISTINCT FROM {other}::text", names[c])
        } else {
            format!("t.{} IS NOT DISTINCT FROM {other}", names[c])
        }
    };
    let mut guards = Vec::new();
    let mut not_done = Vec::new();
    let mut p = 0;
    let mut n = 0;
    let mut sets = Vec::new();
    // Each field holds what the update leaves (`done`) or its prior value; not all are done.
    let mut guard = |done: Vec<String>, is_prior: Vec<String>| {
        let done = done.join(" AND ");
        guards.push(format!("(({done}) OR ({}))", is_prior.join(" AND ")));
        not_done.push(format!("NOT ({done})"));
    };
    for &f in set {
        let mut is_new = Vec::new();
        let mut is_prior = Vec::new();
        for &c in &fields[f].columns {
            is_new.push(same(c, format!("u.n{n}")));
            is_prior.push(same(c, format!("u.p{p}")));
            sets.push(format!("{} = u.n{n}", names[c]));
            n += 1;
            p += 1;
        }
        guard(is_new, is_prior);
    }
    for &f in unset {
        let mut absent = Vec::new();
        let mut is_prior = Vec::new();
        for &c in &fields[f].columns {
            absent.push(format!("t.{} IS NULL", names[c]));
            is_prior.push(same(c, format!("u.p{p}")));
            sets.push(format!("{} = NULL", names[c]));
            p += 1;
        }
        guard(absent, is_prior);
    }
    let on: Vec<String> = key_pos
        .iter()
        .enumerate()
        .map(|(j, &c)| format!("t.{} = u.k{j}", names[c]))
        .collect();
    let spilled: Vec<String> = set
        .iter()
        .chain(unset)
        .map(|&f| format!("'{}'", fields[f].name))
        .collect();
    let conds = format!(
        "{} AND {} AND ({}) AND NOT (t.extra ?| ARRAY[{}])",
        on.join(" AND "),
        guards.join(" AND "),
        not_done.join(" OR "),
        spilled.join(", ")
    );
    let sql = assemble(table, Some(&sets.join(", ")), &u.sql(), &conds, dry);
    (sql, u.params)
}

/// A guarded statement: `UPDATE … SET sets` (or `DELETE` without `sets`) of the rows of
/// `table` joined with `unnest` that meet `conds`, returning `u.i`; for the pre-check (`dry`)
/// a `SELECT` of the same rows, which writes and locks nothing.
fn assemble(table: &Table, sets: Option<&str>, unnest: &str, conds: &str, dry: bool) -> String {
    let name = table.name;
    match (dry, sets) {
        (true, _) => format!("SELECT u.i FROM {name} AS t, {unnest} WHERE {conds}"),
        (false, Some(sets)) => {
            format!("UPDATE {name} AS t SET {sets} FROM {unnest} WHERE {conds} RETURNING u.i")
        }
        (false, None) => {
            format!("DELETE FROM {name} AS t USING {unnest} WHERE {conds} RETURNING u.i")
        }
    }
}

/// The row `table` stores for a record given as JSON; None where a row cannot hold it.
fn row_of(table: &Table, raw: &serde_json::value::RawValue) -> Option<super::schema::Row> {
    let obj: serde_json::Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
    super::schema::to_row(table, &obj).ok()
}

/// The changes of a chunk with this `op` (a delete or a create), each with its place and what
/// `make` builds of it and its record (a delete's prior, a create's record); those it builds
/// nothing of are left out, for the exact path.
fn records_of<R: Send>(
    changes: &[(Change, Vec<Cell>)],
    op: Op,
    make: impl Fn(&Change, &serde_json::value::RawValue) -> Option<R> + Sync,
) -> Vec<(usize, R)> {
    use rayon::prelude::*;
    changes
        .par_iter()
        .enumerate()
        .filter_map(|(i, (c, _))| {
            if c.op != op {
                return None;
            }
            let raw = if op == Op::Delete {
                &c.prior
            } else {
                &c.record
            };
            make(c, raw.as_ref()?).map(|r| (i, r))
        })
        .collect()
}

/// [`records_of`] as the rows `table` stores for them.
fn rows_of(
    table: &Table,
    changes: &[(Change, Vec<Cell>)],
    op: Op,
) -> Vec<(usize, super::schema::Row)> {
    records_of(changes, op, |_, raw| row_of(table, raw))
}

/// The guarded delete of a chunk: a row goes when every column and `extra` hold what the
/// change's prior record makes of them.
fn delete(table: &Table, changes: &[(Change, Vec<Cell>)], dry: bool) -> Option<Statement> {
    let rows = rows_of(table, changes, Op::Delete);
    if rows.is_empty() {
        return None;
    }
    let list: Vec<RowChange> = rows.iter().map(|(i, r)| (*i, r, None)).collect();
    Some(whole_row(table, &[], &list, dry))
}

/// An update that knows the whole record after it (`Change::exact_after`: a rollback's, which
/// gives back the export's own record): it applies as that record where the row is exactly
/// the prior one (`Change::result`), writing the columns (an index past the last: `extra`)
/// in which the two rows differ. None where the exact path must decide.
type ExactUpdate = (Vec<usize>, super::schema::Row, super::schema::Row);

fn exact_update(table: &Table, change: &Change) -> Option<ExactUpdate> {
    if change.op != Op::Update {
        return None;
    }
    let prior = row_of(table, change.prior.as_ref()?)?;
    let after = row_of(table, change.exact_after.as_ref()?)?;
    let mut cols: Vec<usize> = (0..prior.cells.len())
        .filter(|&c| prior.cells[c] != after.cells[c])
        .collect();
    if prior.extra != after.extra {
        cols.push(prior.cells.len());
    }
    // Nothing to write is for the exact path to call already applied; a row is found by its
    // key, which an update does not change.
    let keys = table.key_positions();
    if cols.is_empty() || cols.iter().any(|c| keys.contains(c)) {
        return None;
    }
    Some((cols, prior, after))
}

/// The rollback's updates of a chunk ([`exact_update`]), one statement per set of columns.
fn exact_updates(table: &Table, changes: &[(Change, Vec<Cell>)], dry: bool) -> Vec<Statement> {
    use rayon::prelude::*;
    let shaped: Vec<Option<ExactUpdate>> = changes
        .par_iter()
        .map(|(c, _)| exact_update(table, c))
        .collect();
    let mut groups: BTreeMap<Vec<usize>, Vec<RowChange>> = BTreeMap::new();
    for (i, s) in shaped.iter().enumerate() {
        if let Some((cols, prior, after)) = s {
            groups
                .entry(cols.clone())
                .or_default()
                .push((i, prior, Some(after)));
        }
    }
    groups
        .iter()
        .map(|(cols, list)| whole_row(table, cols, list, dry))
        .collect()
}

/// A change of a [`whole_row`] statement: its place in the chunk, the prior row, the new row
/// of an update.
type RowChange<'r> = (
    usize,
    &'r super::schema::Row,
    Option<&'r super::schema::Row>,
);

fn new_row<'r>(c: &RowChange<'r>) -> &'r super::schema::Row {
    c.2.expect("an update has its new row")
}

/// A statement guarded by the whole row: it touches a row where every column and `extra` hold
/// what the prior row (`.1`) has. Without `cols` it deletes the row; with them it sets those
/// columns (an index past the last: `extra`) to the new row's (`.2`).
fn whole_row(table: &Table, cols: &[usize], list: &[RowChange], dry: bool) -> Statement {
    let names = table.columns();
    let types = table.column_types();
    let key_pos = table.key_positions();
    let mut u = Unnest::placed(list.len());
    let mut on = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let cells: Vec<&Cell> = list.iter().map(|(_, r, _)| &r.cells[c]).collect();
        u.column(format!("c{c}"), types[c], &cells);
        on.push(if key_pos.contains(&c) {
            format!("t.{name} = u.c{c}")
        } else if types[c] == Ty::Json {
            format!("t.{name}::text IS NOT DISTINCT FROM u.c{c}::text")
        } else {
            format!("t.{name} IS NOT DISTINCT FROM u.c{c}")
        });
    }
    u.extra("extra", list.iter().map(|(_, r, _)| *r));
    on.push("t.extra::text = u.extra::text".into());
    let mut sets = Vec::new();
    for &c in cols {
        if c == names.len() {
            u.extra("n_extra", list.iter().map(new_row));
            sets.push("extra = u.n_extra".to_string());
        } else {
            let cells: Vec<&Cell> = list.iter().map(|r| &new_row(r).cells[c]).collect();
            u.column(format!("n{c}"), types[c], &cells);
            sets.push(format!("{} = u.n{c}", names[c]));
        }
    }
    let sets = sets.join(", ");
    let sql = assemble(
        table,
        (!cols.is_empty()).then_some(sets.as_str()),
        &u.sql(),
        &on.join(" AND "),
        dry,
    );
    Statement {
        sql,
        params: u.params,
        at: list.iter().map(|(i, _, _)| *i).collect(),
        by_key: None,
    }
}

/// The guarded creates of a chunk: a row goes in when no row holds its key. `ON CONFLICT DO
/// NOTHING` leaves a change whose key is taken (before, or by a session that commits while
/// this one waits) to the exact path, which judges it against that row; a create whose record
/// a row cannot hold is left to it too (it then fails, saying why). For the pre-check, a
/// `SELECT` of the creates whose key no row holds.
fn create(table: &Table, changes: &[(Change, Vec<Cell>)], dry: bool) -> Option<Statement> {
    let rows = rows_of(table, changes, Op::Create);
    if rows.is_empty() {
        return None;
    }
    let names = table.columns();
    let types = table.column_types();
    let key_pos = table.key_positions();
    let at: Vec<usize> = rows.iter().map(|(i, _)| *i).collect();
    if dry {
        let mut u = Unnest::placed(rows.len());
        let mut on = Vec::new();
        for (j, &p) in key_pos.iter().enumerate() {
            let cells: Vec<&Cell> = rows.iter().map(|(_, r)| &r.cells[p]).collect();
            u.column(format!("k{j}"), types[p], &cells);
            on.push(format!("t.{} = u.k{j}", names[p]));
        }
        let sql = format!(
            "SELECT u.i FROM {} WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})",
            u.sql(),
            table.name,
            on.join(" AND ")
        );
        return Some(Statement {
            sql,
            params: u.params,
            at,
            by_key: None,
        });
    }
    let mut u = Unnest::default();
    for (c, ty) in types.iter().enumerate() {
        let cells: Vec<&Cell> = rows.iter().map(|(_, r)| &r.cells[c]).collect();
        u.column(format!("c{c}"), *ty, &cells);
    }
    u.extra("extra", rows.iter().map(|(_, r)| r));
    let returning: Vec<&str> = key_pos.iter().map(|&p| names[p].as_str()).collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM {} ON CONFLICT DO NOTHING RETURNING {}",
        table.name,
        table.column_list(),
        u.sql(),
        returning.join(", ")
    );
    let mut by_key = HashMap::with_capacity(rows.len());
    for (j, (_, r)) in rows.iter().enumerate() {
        let key = key_text(key_pos.iter().map(|&p| &r.cells[p]))?;
        by_key.insert(key, j);
    }
    Some(Statement {
        sql,
        params: u.params,
        at,
        by_key: Some((key_pos.iter().map(|&p| types[p]).collect(), by_key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::TABLES;

    fn table(kind: &str) -> &'static Table {
        TABLES.iter().find(|t| t.kind == kind).unwrap()
    }

    fn change(line: &str) -> Change {
        Change::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn plain_updates_take_the_sql_path_and_odd_values_do_not() {
        let t = table("trust_flag");
        let f = cols(t);
        let ok = change(
            r#"{"op":"update","kind":"trust_flag","key":"1","prior":{"kind":"trust_flag","id":1,"subject":{"otype":"bi_report","oid":5},"flag_type":"endorse","user_id":3},"set":{"subject":{"otype":"bi_report","oid":7}}}"#,
        );
        let s = shape(&f, &ok).expect("a plain subject move");
        assert_eq!(s.prior, vec![Cell::Text("bi_report".into()), Cell::Int(5)]);
        assert_eq!(s.new, vec![Cell::Text("bi_report".into()), Cell::Int(7)]);
        // A subject with a third key spills into `extra`: the exact path decides.
        let odd = change(
            r#"{"op":"update","kind":"trust_flag","key":"1","prior":{"kind":"trust_flag","id":1,"subject":{"otype":"bi_report","oid":5,"x":1},"flag_type":"endorse","user_id":3},"set":{"subject":{"otype":"bi_report","oid":7}}}"#,
        );
        assert!(shape(&f, &odd).is_none());
        // A field the table has no column for lives in `extra`.
        let other = change(
            r#"{"op":"update","kind":"trust_flag","key":"1","prior":{"kind":"trust_flag","id":1,"flag_type":"endorse","user_id":3},"set":{"note":"x"}}"#,
        );
        assert!(shape(&f, &other).is_none());
        // A text column given a number spills too.
        let wrong = change(
            r#"{"op":"update","kind":"trust_flag","key":"1","prior":{"kind":"trust_flag","id":1,"flag_type":"endorse","user_id":3},"set":{"flag_type":7}}"#,
        );
        assert!(shape(&f, &wrong).is_none());
    }

    #[test]
    fn the_statement_guards_every_field_it_sets_and_unsets() {
        let t = table("trust_flag");
        let f = cols(t);
        let c = change(
            r#"{"op":"update","kind":"trust_flag","key":"1","prior":{"kind":"trust_flag","id":1,"subject":{"otype":"bi_report","oid":5},"flag_type":"endorse","user_id":3,"reason":"<p>r</p>"},"set":{"subject":{"otype":"bi_report","oid":7}},"unset":["reason"]}"#,
        );
        let s = shape(&f, &c).unwrap();
        let key = vec![Cell::Int(1)];
        let (set, unset) = (s.set.clone(), s.unset.clone());
        let changes = vec![(c, key)];
        let (sql, params) = statement(t, &f, (&set, &unset), &changes, &[(0, s)], false);
        assert!(
            sql.contains(r#"subject_otype = u.n0, subject_oid = u.n1, "reason" = NULL"#),
            "{sql}"
        );
        assert!(sql.contains(r#"t."reason" IS NULL"#), "{sql}");
        assert!(
            sql.contains(r#"t."reason" IS NOT DISTINCT FROM u.p2"#),
            "{sql}"
        );
        assert!(sql.contains("?| ARRAY['subject', 'reason']"), "{sql}");
        // i, the key, three prior cells, two new ones.
        assert_eq!(params.len(), 1 + 1 + 3 + 2);
    }

    #[test]
    fn parameters_are_encoded_ahead_as_their_casts_name_them() {
        use postgres::types::{IsNull, ToSql, Type};
        let ints: Vec<i32> = vec![0, 1];
        let texts: Vec<Option<String>> = vec![Some("a".into()), None];
        let json: Vec<Value> = vec![serde_json::json!({"b": [1, 2.5]}), Value::Null];
        let direct = |p: &dyn ToSql, ty: &Type| {
            let mut b = bytes::BytesMut::new();
            assert!(matches!(p.to_sql_checked(ty, &mut b).unwrap(), IsNull::No));
            b.to_vec()
        };
        let want = [
            (Type::INT4_ARRAY, direct(&ints, &Type::INT4_ARRAY)),
            (Type::TEXT_ARRAY, direct(&texts, &Type::TEXT_ARRAY)),
            (Type::JSONB_ARRAY, direct(&json, &Type::JSONB_ARRAY)),
        ];
        let mut st = Statement {
            // $4 has no cast: left to the connection.
            sql: "SELECT * FROM unnest($1::int4[], $2::text[], $3::jsonb[]) WHERE $4 IS NULL"
                .into(),
            params: vec![
                Box::new(ints),
                Box::new(texts),
                Box::new(json),
                Box::new(Some(7i64)),
            ],
            at: Vec::new(),
            by_key: None,
        };
        encode_ahead(&mut st);
        for (i, (ty, bytes)) in want.iter().enumerate() {
            assert!(
                format!("{:?}", st.params[i]).starts_with("Encoded"),
                "${}",
                i + 1
            );
            assert_eq!(direct(st.params[i].as_ref(), ty), *bytes, "${}", i + 1);
        }
        // Asked for another type (which the value itself would take), it refuses rather than
        // send what the server would misread.
        let mut b = bytes::BytesMut::new();
        assert!(st.params[1]
            .to_sql_checked(&Type::VARCHAR_ARRAY, &mut b)
            .is_err());
        assert!(st.params[2]
            .to_sql_checked(&Type::JSON_ARRAY, &mut b)
            .is_err());
        assert!(!format!("{:?}", st.params[3]).starts_with("Encoded"));
        assert_eq!(
            direct(st.params[3].as_ref(), &Type::INT8),
            direct(&7i64, &Type::INT8)
        );
    }
}
