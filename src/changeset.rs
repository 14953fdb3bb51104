//! The change set (SPEC §6–§7), one engine for every reader: a change line is read here, turned
//! into (before, after) here, and judged applied / already applied / conflict here — for a
//! restore onto a file, onto the database, and for verify's rehearsal alike.
//!
//! Format version 2: `create` (the record), `update` (the whole `prior`, and only the top-level
//! fields that change: `set`, `unset`) and `delete` (the whole `prior`).
//!
//! **Order of the change lines** (deterministic, chosen so that a restore committed in batches
//! never leaves curation on neither version nor a unique key taken twice between two batches):
//! 1. creates and updates of every kind but reports and columns (curation arrives on the
//!    survivor, references are repaired),
//! 2. deletes of every kind but reports and columns (curation leaves the retired versions),
//! 3. deletes of reports and columns (the retired versions leave),
//! 4. creates and updates of reports and columns (survivors take their stable ids, which the
//!    retired versions no longer hold);
//!
//! and within each phase by kind, in the order of [`Kind`] (kinds the SPEC does not name last,
//! together), then in the order they are made: the export's order for the changes of single
//! records, then group by group (the order of the report's groups) for the merged curation of
//! groups with more than one version. A rollback reads them in the reverse order. Nothing
//! sorts them: the migration writes each (phase, kind) to a stream of its own
//! ([`crate::output::Streams`]), and the streams one after the other.

use crate::groups::{COLUMN, REPORT};
use crate::record::Kind;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    /// The word of the change line.
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// The phase of a change in the change file (see the module's doc): the first byte of its
/// sort key.
pub fn phase(op: Op, kind: &str) -> u8 {
    let versioned = kind == REPORT || kind == COLUMN;
    match (versioned, op) {
        (false, Op::Create | Op::Update) => 0,
        (false, Op::Delete) => 1,
        (true, Op::Delete) => 2,
        (true, Op::Create | Op::Update) => 3,
    }
}

/// The streams of the change file: one per phase and [`Kind`].
pub const STREAMS: usize = 4 * KINDS;

/// The kinds of one phase: the named ones and [`Kind::Other`].
const KINDS: usize = Kind::Other as usize + 1;

/// The stream of a change (see the module's doc): its place in the change file is its
/// stream's, and the streams are in the order of this number.
pub fn stream(op: Op, kind: &str) -> usize {
    phase(op, kind) as usize * KINDS + Kind::from_name(kind) as usize
}

/// One change, its records as the raw JSON the bundle holds (so that a record is written back
/// byte for byte, never re-serialised).
#[derive(Debug, Clone)]
pub struct Change {
    pub op: Op,
    pub kind: String,
    pub key: String,
    /// The record before (update, delete).
    pub prior: Option<Box<RawValue>>,
    /// The record a create makes.
    pub record: Option<Box<RawValue>>,
    /// The fields an update sets, in order, with their new values.
    pub set: Vec<(String, Box<RawValue>)>,
    /// The fields an update removes.
    pub unset: Vec<String>,
    /// The whole record after an update, byte for byte, when it is known exactly (the inverse
    /// of an update knows the export's own bytes): written when the target holds exactly `prior`.
    pub exact_after: Option<Box<RawValue>>,
}

/// A change line as it is on disk.
#[derive(Deserialize)]
struct Wire<'a> {
    op: Op,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default)]
    prior: Option<Box<RawValue>>,
    #[serde(default)]
    record: Option<Box<RawValue>>,
    #[serde(default)]
    set: Option<Box<RawValue>>,
    #[serde(default)]
    unset: Vec<String>,
}

/// The head of a change line: enough to find it.
#[derive(Deserialize)]
pub struct Head<'a> {
    pub op: Op,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub key: Cow<'a, str>,
}

impl Head<'_> {
    /// Reads the head of a change line.
    pub fn parse(line: &[u8]) -> Result<Head<'_>> {
        crate::record::from_json_bytes(line).context("not a change line")
    }

    /// Reads the head of a change line from its first bytes when it begins as
    /// [`Change::to_line`] writes it (`{"op":…,"kind":…,"key":…`, strings without escapes),
    /// without reading the rest; any other line goes through [`Head::parse`]. The rest of the
    /// line is not checked here: whoever uses the change reads it with [`Change::parse`]
    /// (or, on the record its prior names, [`OnPrior::read`]).
    pub fn quick(line: &[u8]) -> Result<Head<'_>> {
        match Head::fast(line) {
            Some((h, _)) => Ok(h),
            None => Head::parse(line),
        }
    }

    /// The head of a line that begins as [`Change::to_line`] writes it, and the bytes after
    /// it (from the `,` or `}` that follows the key).
    fn fast(line: &[u8]) -> Option<(Head<'_>, &[u8])> {
        fn string(b: &[u8]) -> Option<(&str, &[u8])> {
            let inner = b.strip_prefix(b"\"")?;
            let end = memchr::memchr2(b'"', b'\\', inner)?;
            if inner[end] != b'"' || inner[..end].iter().any(|c| *c < 0x20) {
                return None;
            }
            Some((std::str::from_utf8(&inner[..end]).ok()?, &inner[end + 1..]))
        }
        let rest = line.strip_prefix(b"{\"op\":\"")?;
        let (op, rest) = [Op::Create, Op::Update, Op::Delete]
            .into_iter()
            .find_map(|op| Some((op, rest.strip_prefix(op.name().as_bytes())?)))?;
        let rest = rest.strip_prefix(b"\",\"kind\":")?;
        let (kind, rest) = string(rest)?;
        let rest = rest.strip_prefix(b",\"key\":")?;
        let (key, rest) = string(rest)?;
        matches!(rest.first(), Some(b',' | b'}')).then_some((
            Head {
                op,
                kind: Cow::Borrowed(kind),
                key: Cow::Borrowed(key),
            },
            rest,
        ))
    }
}

/// A delete or an update whose `prior` is, byte for byte, the record a target holds: what
/// restore meets on nearly every line it changes. Read from the change line without reading
/// the prior again (the target's line was read already), when the line is laid out as
/// migrate writes it: `{"op":…,"kind":…,"key":…,"prior":PRIOR}`, or for an update
/// `…,"prior":PRIOR,"set":{…}}` with `,"unset":[…]` before the last brace when it unsets.
/// Any other line is read whole ([`Change::parse`]), as before.
#[derive(Debug)]
pub enum OnPrior<'a> {
    /// A delete of the record: it applies.
    Delete,
    /// An update of the record: the fields it sets (raw values) and unsets.
    Update {
        set: Vec<(Cow<'a, str>, &'a RawValue)>,
        unset: Vec<String>,
    },
}

impl<'a> OnPrior<'a> {
    /// The change `line` asks of `current` (the target's record), when `line` is a delete or
    /// update of that layout whose prior is `current`'s bytes; None otherwise.
    pub fn read(line: &'a [u8], current: &[u8]) -> Option<OnPrior<'a>> {
        let (head, rest) = Head::fast(line)?;
        let rest = rest
            .strip_prefix(b",\"prior\":")?
            .strip_prefix(current.trim_ascii())?;
        match head.op {
            Op::Delete => (rest == b"}").then_some(OnPrior::Delete),
            Op::Update => {
                let rest = std::str::from_utf8(rest.strip_prefix(b",\"set\":")?).ok()?;
                if !rest.starts_with('{') {
                    return None;
                }
                let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
                let set = values.next()?.ok()?;
                let rest = &rest[values.byte_offset()..];
                let (unset, rest) = match rest.strip_prefix(",\"unset\":") {
                    Some(u) => {
                        let mut names =
                            serde_json::Deserializer::from_str(u).into_iter::<Vec<String>>();
                        let unset = names.next()?.ok()?;
                        (unset, &u[names.byte_offset()..])
                    }
                    None => (Vec::new(), rest),
                };
                if rest != "}" {
                    return None;
                }
                let set = crate::record::raw_object(set.get().as_bytes()).ok()?;
                Some(OnPrior::Update { set, unset })
            }
            Op::Create => None,
        }
    }

    /// The guard of SPEC §7 on the record that holds the prior: a delete applies; an update
    /// is judged as [`Change::judge`] judges it, its prior being `current` itself, so it is
    /// already applied or applies, never a conflict.
    pub fn judge(&self, current: &RawRecord) -> Step {
        match self {
            OnPrior::Delete => Step::Apply,
            OnPrior::Update { set, unset } => judge_update(current, current, set, unset),
        }
    }

    /// The record to write when it applies onto `current` (None: removed), as
    /// [`Change::result`] gives it.
    pub fn result(&self, current: &RawRecord) -> Option<Vec<u8>> {
        match self {
            OnPrior::Delete => None,
            OnPrior::Update { set, unset } => Some(apply_fields(current, set, unset)),
        }
    }
}

/// Whether a record the target holds lets a change apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The target holds what the change expects: apply.
    Apply,
    /// The target already holds the result: skip.
    Already,
    /// The target holds something else.
    Conflict,
}

impl Change {
    /// Reads a change line.
    pub fn parse(line: &[u8]) -> Result<Change> {
        let w: Wire = crate::record::from_json_bytes(line).context("not a valid change line")?;
        let set = match &w.set {
            Some(s) => RawRecord::parse(s.get().as_bytes())
                .context("`set` is not an object")?
                .fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.to_owned()))
                .collect(),
            None => Vec::new(),
        };
        let need = |what: &str, v: &Option<Box<RawValue>>| {
            if v.as_ref().is_none_or(|r| !r.get().starts_with('{')) {
                bail!("a {} change needs `{what}` as an object", w.op.name());
            }
            Ok(())
        };
        match w.op {
            Op::Create => need("record", &w.record)?,
            Op::Update => {
                need("prior", &w.prior)?;
                if w.set.is_none() && w.unset.is_empty() {
                    bail!("an update with neither `set` nor `unset`");
                }
            }
            Op::Delete => need("prior", &w.prior)?,
        }
        Ok(Change {
            op: w.op,
            kind: w.kind.into_owned(),
            key: w.key.into_owned(),
            prior: w.prior,
            record: w.record,
            set,
            unset: w.unset,
            exact_after: None,
        })
    }

    /// The change line (SPEC §6).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(b"{\"op\":\"");
        line.extend_from_slice(self.op.name().as_bytes());
        line.extend_from_slice(b"\",\"kind\":");
        line.extend_from_slice(json_string(&self.kind).as_bytes());
        line.extend_from_slice(b",\"key\":");
        line.extend_from_slice(json_string(&self.key).as_bytes());
        if let Some(p) = &self.prior {
            line.extend_from_slice(b",\"prior\":");
            line.extend_from_slice(p.get().as_bytes());
        }
        if let Some(r) = &self.record {
            line.extend_from_slice(b",\"record\":");
            line.extend_from_slice(r.get().as_bytes());
        }
        if self.op == Op::Update {
            line.extend_from_slice(b",\"set\":");
            let fields: Vec<(&str, &RawValue)> =
                self.set.iter().map(|(k, v)| (k.as_str(), &**v)).collect();
            write_object(&mut line, &fields);
            if !self.unset.is_empty() {
                line.extend_from_slice(b",\"unset\":");
                line.extend_from_slice(
                    serde_json::to_string(&self.unset)
                        .expect("strings serialise")
                        .as_bytes(),
                );
            }
        }
        line.push(b'}');
        line
    }

    /// The record before the change (None: absent).
    pub fn before(&self) -> Option<&RawValue> {
        self.prior.as_deref()
    }

    /// The record after the change (None: absent), applied to `prior` for an update.
    pub fn after(&self) -> Option<Box<RawValue>> {
        match self.op {
            Op::Create => self.record.clone(),
            Op::Delete => None,
            Op::Update => Some(match &self.exact_after {
                Some(e) => e.clone(),
                None => {
                    let prior = self.prior.as_ref().expect("an update has a prior");
                    let rec = RawRecord::parse(prior.get().as_bytes())
                        .expect("a change's prior is an object");
                    raw(self.apply_fields(&rec))
                }
            }),
        }
    }

    /// The change that undoes this one: before and after swap.
    pub fn inverse(&self) -> Change {
        self.inverse_given(None)
    }

    /// [`Change::inverse`], given a record already read that may hold the prior byte for byte
    /// (then the prior is not read again).
    pub fn inverse_given(&self, read: Option<&RawRecord>) -> Change {
        let base = |op, prior, record| Change {
            op,
            kind: self.kind.clone(),
            key: self.key.clone(),
            prior,
            record,
            set: Vec::new(),
            unset: Vec::new(),
            exact_after: None,
        };
        match self.op {
            Op::Create => base(Op::Delete, self.record.clone(), None),
            Op::Delete => base(Op::Create, None, self.prior.clone()),
            Op::Update => {
                let prior = self.prior.as_ref().expect("an update has a prior");
                let parsed;
                let before = match read {
                    Some(r) if self.holds_prior(r) => r,
                    _ => {
                        parsed = RawRecord::parse(prior.get().as_bytes())
                            .expect("a change's prior is an object");
                        &parsed
                    }
                };
                // `after`, from the prior already read.
                let after = match &self.exact_after {
                    Some(e) => e.clone(),
                    None => raw(self.apply_fields(before)),
                };
                let mut c = base(Op::Update, Some(after), None);
                for name in self.set.iter().map(|(k, _)| k).chain(&self.unset) {
                    match before.get(name) {
                        Some(v) => c.set.push((name.clone(), v.to_owned())),
                        None => c.unset.push(name.clone()),
                    }
                }
                c.exact_after = Some(prior.clone());
                c
            }
        }
    }

    /// The guard of SPEC §7 against the record the target holds (None: absent). An update is
    /// judged on the fields it sets or unsets, one by one; other fields may have changed.
    pub fn judge(&self, current: Option<&RawRecord>) -> Step {
        match (self.op, current) {
            (Op::Create, None) => Step::Apply,
            (Op::Create, Some(c)) => {
                if c.equals(self.record.as_deref().expect("a create has a record")) {
                    Step::Already
                } else {
                    Step::Conflict
                }
            }
            (Op::Delete, None) => Step::Already,
            (Op::Delete, Some(c)) => {
                if c.equals(self.prior.as_deref().expect("a delete has a prior")) {
                    Step::Apply
                } else {
                    Step::Conflict
                }
            }
            (Op::Update, None) => Step::Conflict,
            (Op::Update, Some(c)) => {
                // The target most often holds the prior byte for byte: read once, not twice.
                let parsed;
                let prior = if self.holds_prior(c) {
                    c
                } else {
                    parsed = self.prior_fields();
                    &parsed
                };
                judge_update(c, prior, &self.set, &self.unset)
            }
        }
    }

    /// The record to write when the change is applied (or forced) onto `current`; None
    /// removes it. An update keeps every field it does not touch as the target has it.
    pub fn result(&self, current: Option<&RawRecord>) -> Option<Vec<u8>> {
        match self.op {
            Op::Create => self.record.as_ref().map(|r| r.get().as_bytes().to_vec()),
            Op::Delete => None,
            Op::Update => {
                let prior = self.prior.as_ref().expect("an update has a prior");
                if let Some(exact) = &self.exact_after {
                    if current.is_none_or(|c| c.equals(prior)) {
                        return Some(exact.get().as_bytes().to_vec());
                    }
                }
                match current {
                    Some(c) => Some(self.apply_fields(c)),
                    None => Some(
                        self.apply_fields(
                            &RawRecord::parse(prior.get().as_bytes())
                                .expect("a change's prior is an object"),
                        ),
                    ),
                }
            }
        }
    }

    /// What the target holds that the change did not expect, field by field, for a person.
    pub fn explain(&self, current: Option<&RawRecord>) -> String {
        let show = |v: Option<&RawValue>| match v {
            None => "absent".to_string(),
            Some(v) => serde_json::from_str::<Value>(v.get())
                .map(|v| crate::record::short(&v))
                .unwrap_or_else(|_| v.get().to_string()),
        };
        match (self.op, current) {
            (Op::Create, Some(c)) => {
                let rec = RawRecord::parse(self.record.as_ref().expect("record").get().as_bytes())
                    .expect("a change's record is an object");
                format!("exists already, differently: {}", differences(&rec, c))
            }
            (Op::Delete, Some(c)) => {
                let prior = self.prior_fields();
                format!("changed since the export: {}", differences(&prior, c))
            }
            (Op::Update, None) | (Op::Delete, None) => "the record is absent".into(),
            (Op::Update, Some(c)) => {
                let prior = self.prior_fields();
                let mut out = Vec::new();
                for (name, new) in &self.set {
                    let (now, was) = (c.get(name), prior.get(name));
                    if !now.is_some_and(|v| raw_eq(v, new)) && !opt_eq(now, was) {
                        out.push(format!(
                            "{name}: expected {} (or {}), found {}",
                            show(was),
                            show(Some(new)),
                            show(now)
                        ));
                    }
                }
                for name in &self.unset {
                    let (now, was) = (c.get(name), prior.get(name));
                    if now.is_some() && !opt_eq(now, was) {
                        out.push(format!(
                            "{name}: expected {} (or absent), found {}",
                            show(was),
                            show(now)
                        ));
                    }
                }
                out.join("; ")
            }
            (Op::Create, None) => String::new(),
        }
    }

    /// True when `current` is the change's prior byte for byte.
    fn holds_prior(&self, current: &RawRecord) -> bool {
        self.prior
            .as_ref()
            .is_some_and(|p| current.bytes.trim_ascii() == p.get().as_bytes())
    }

    pub(crate) fn prior_fields(&self) -> RawRecord<'_> {
        RawRecord::parse(
            self.prior
                .as_ref()
                .expect("an update or delete has a prior")
                .get()
                .as_bytes(),
        )
        .expect("a change's prior is an object")
    }

    /// `base` with the update's fields set and unset: fields in place, new ones last.
    fn apply_fields(&self, base: &RawRecord) -> Vec<u8> {
        apply_fields(base, &self.set, &self.unset)
    }
}

/// The guard of SPEC §7 for an update that sets `set` (name, new raw value) and removes
/// `unset`, on the record `current` holds, against the record the update expects (`prior`):
/// each field holds its prior value or already its new one, else a conflict; already applied
/// when every field holds its new one.
fn judge_update<N, V, U>(
    current: &RawRecord,
    prior: &RawRecord,
    set: &[(N, V)],
    unset: &[U],
) -> Step
where
    N: AsRef<str>,
    V: std::borrow::Borrow<RawValue>,
    U: AsRef<str>,
{
    let mut done = true;
    for (name, new) in set {
        let now = current.get(name.as_ref());
        if now.is_some_and(|v| raw_eq(v, new.borrow())) {
            continue;
        }
        done = false;
        if !opt_eq(now, prior.get(name.as_ref())) {
            return Step::Conflict;
        }
    }
    for name in unset {
        let Some(now) = current.get(name.as_ref()) else {
            continue;
        };
        done = false;
        if !prior.get(name.as_ref()).is_some_and(|p| raw_eq(now, p)) {
            return Step::Conflict;
        }
    }
    if done {
        Step::Already
    } else {
        Step::Apply
    }
}

/// `base` with the fields `set` (name, new raw value) set and `unset` removed: fields in
/// place, new ones last (SPEC §6).
fn apply_fields<N, V, U>(base: &RawRecord, set: &[(N, V)], unset: &[U]) -> Vec<u8>
where
    N: AsRef<str>,
    V: std::borrow::Borrow<RawValue>,
    U: AsRef<str>,
{
    let mut fields: Vec<(&str, &RawValue)> = Vec::with_capacity(base.fields.len() + 2);
    for (name, v) in &base.fields {
        if unset.iter().any(|u| u.as_ref() == name) {
            continue;
        }
        let new = set
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.borrow());
        fields.push((name, new.unwrap_or(v)));
    }
    for (name, v) in set {
        if base.get(name.as_ref()).is_none() {
            fields.push((name.as_ref(), v.borrow()));
        }
    }
    let mut out = Vec::with_capacity(base.bytes.len() + 64);
    write_object(&mut out, &fields);
    out
}

/// The update that turns `prior` into `record` (both objects' raw bytes), or None when they
/// hold the same fields with equal values: the `set` and `unset` of SPEC §6.
pub fn update_fields(prior: &[u8], record: &[u8]) -> Result<Option<UpdateFields>> {
    let p = RawRecord::parse(prior)?;
    let r = RawRecord::parse(record)?;
    let mut set = Vec::new();
    for (name, v) in &r.fields {
        if !p.get(name).is_some_and(|old| raw_eq(old, v)) {
            set.push((name.to_string(), v.get().to_string()));
        }
    }
    let unset: Vec<String> = p
        .fields
        .iter()
        .filter(|(name, _)| r.get(name).is_none())
        .map(|(name, _)| name.to_string())
        .collect();
    Ok((!set.is_empty() || !unset.is_empty()).then_some(UpdateFields { set, unset }))
}

/// [`encode`]'s update line of two records already held as trees: `before` is `prior` parsed,
/// `after` the record it becomes. The same line as `encode(kind, key, Some(prior),
/// Some(&to_vec(after)))`, without writing `after` whole and parsing both back (the merge of a
/// group holds both trees). None when they are equal.
pub fn encode_update(
    kind: &str,
    key: &str,
    prior: &[u8],
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Option<Vec<u8>> {
    // Value equality is raw_eq's: a set value differs from its prior as the parsed texts do.
    let set: Vec<(&str, String)> = after
        .iter()
        .filter(|(name, v)| before.get(*name) != Some(*v))
        .map(|(name, v)| (name.as_str(), v.to_string()))
        .collect();
    let unset: Vec<String> = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .cloned()
        .collect();
    if set.is_empty() && unset.is_empty() {
        return None;
    }
    let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Some(update_line(kind, key, prior, &set, &unset))
}

/// The fields an update sets (raw JSON values) and unsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateFields {
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
}

/// A change line built from raw records (the migration's encoder): `prior` None creates,
/// `record` None deletes, both present updates (or nothing, when they are equal).
pub fn encode(
    kind: &str,
    key: &str,
    prior: Option<&[u8]>,
    record: Option<&[u8]>,
) -> Result<Option<(Op, Vec<u8>)>> {
    // The records are validated lines or serde_json's own output: written as they are, not
    // parsed again (a RawValue would validate each one a second time).
    let size = prior.map_or(0, <[u8]>::len) + record.map_or(0, <[u8]>::len);
    match (prior, record) {
        (None, Some(r)) => {
            let mut line = line_head(Op::Create, kind, key, size);
            line.extend_from_slice(b",\"record\":");
            line.extend_from_slice(r.trim_ascii());
            line.push(b'}');
            Ok(Some((Op::Create, line)))
        }
        (Some(p), None) => {
            let mut line = line_head(Op::Delete, kind, key, size);
            line.extend_from_slice(b",\"prior\":");
            line.extend_from_slice(p.trim_ascii());
            line.push(b'}');
            Ok(Some((Op::Delete, line)))
        }
        (Some(p), Some(r)) => {
            let Some(u) = update_fields(p, r)? else {
                return Ok(None);
            };
            let set: Vec<(&str, &str)> = u
                .set
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Ok(Some((
                Op::Update,
                update_line(kind, key, p, &set, &u.unset),
            )))
        }
        (None, None) => bail!("{kind} {key:?}: a change with neither prior nor record"),
    }
}

/// The update line of `prior` whose changed fields are known, each (name, new raw JSON value),
/// in the order the fields have in `prior`: what [`encode`] writes for the record with those
/// values replaced in place, without comparing the two records. None when `set` is empty.
pub fn encode_set(kind: &str, key: &str, prior: &[u8], set: &[(&str, &str)]) -> Option<Vec<u8>> {
    (!set.is_empty()).then(|| update_line(kind, key, prior, set, &[]))
}

/// `{"op":…,"kind":…,"key":…` — the start of every change line ([`Change::to_line`]).
fn line_head(op: Op, kind: &str, key: &str, size: usize) -> Vec<u8> {
    let mut line = Vec::with_capacity(size + kind.len() + key.len() + 48);
    line.extend_from_slice(b"{\"op\":\"");
    line.extend_from_slice(op.name().as_bytes());
    line.extend_from_slice(b"\",\"kind\":");
    push_json_string(&mut line, kind);
    line.extend_from_slice(b",\"key\":");
    push_json_string(&mut line, key);
    line
}

fn update_line(
    kind: &str,
    key: &str,
    prior: &[u8],
    set: &[(&str, &str)],
    unset: &[String],
) -> Vec<u8> {
    let size = prior.len()
        + set
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
    let mut line = line_head(Op::Update, kind, key, size);
    line.extend_from_slice(b",\"prior\":");
    line.extend_from_slice(prior.trim_ascii());
    line.extend_from_slice(b",\"set\":{");
    for (i, (k, v)) in set.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        push_json_string(&mut line, k);
        line.push(b':');
        line.extend_from_slice(v.as_bytes());
    }
    line.push(b'}');
    if !unset.is_empty() {
        line.extend_from_slice(b",\"unset\":");
        serde_json::to_writer(&mut line, unset).expect("strings serialise");
    }
    line.push(b'}');
    line
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serialises");
}

/// A record as raw JSON: its top-level fields in order, each value's bytes as written.
#[derive(Debug)]
pub struct RawRecord<'a> {
    pub bytes: &'a [u8],
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawRecord<'a> {
    /// Reads a JSON object's top-level fields without parsing their values.
    pub fn parse(bytes: &'a [u8]) -> Result<RawRecord<'a>> {
        let fields = crate::record::raw_object(bytes).context("not a JSON object")?;
        Ok(RawRecord { bytes, fields })
    }

    /// The record of a validated line: the fields a probe read with
    /// [`crate::record::Probe::parse_whole`] kept, or else read now.
    pub fn of_probe(p: &crate::record::Probe<'a>) -> RawRecord<'a> {
        if p.fields.is_empty() {
            return RawRecord::parse(p.line).expect("a validated line is a JSON object");
        }
        RawRecord {
            bytes: p.line,
            fields: p.fields.clone(),
        }
    }

    /// A field's raw value.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// True when the record holds exactly the fields of `other` (raw JSON of an object) with
    /// equal values, in any order.
    pub fn equals(&self, other: &RawValue) -> bool {
        if self.bytes.trim_ascii() == other.get().as_bytes() {
            return true;
        }
        let Ok(o) = RawRecord::parse(other.get().as_bytes()) else {
            return false;
        };
        o.fields.len() == self.fields.len()
            && o.fields
                .iter()
                .all(|(k, v)| self.get(k).is_some_and(|mine| raw_eq(mine, v)))
    }

    /// The record as a JSON map.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_slice(self.bytes).unwrap_or_default()
    }
}

/// Two raw JSON values are equal: the same bytes, or the same value once parsed.
pub fn raw_eq(a: &RawValue, b: &RawValue) -> bool {
    let (x, y) = (a.get(), b.get());
    if x == y {
        return true;
    }
    // Most values an update sets are strings and integers: two that have one spelling each
    // differ when their bytes do, with no need to build and compare their trees.
    if one_spelling(x) && one_spelling(y) {
        return false;
    }
    matches!(
        (serde_json::from_str::<Value>(x), serde_json::from_str::<Value>(y)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// True when no other JSON text parses to a value equal to this one's (serde_json's
/// equality): a string without escapes, `true`, `false`, `null`, or an integer that fits 64
/// bits exactly (at most 18 digits), without a fraction, an exponent or a leading zero (not
/// `-0`).
fn one_spelling(v: &str) -> bool {
    // At most 18 digits: under 10^18, inside both i64 and u64, never read as a float.
    let digits = |d: &[u8]| d.len() <= 17 && d.iter().all(u8::is_ascii_digit);
    match v.as_bytes() {
        [b'"', inner @ .., b'"'] => memchr::memchr(b'\\', inner).is_none(),
        b"true" | b"false" | b"null" | b"0" => true,
        [b'1'..=b'9', rest @ ..] | [b'-', b'1'..=b'9', rest @ ..] => digits(rest),
        _ => false,
    }
}

fn opt_eq(a: Option<&RawValue>, b: Option<&RawValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => raw_eq(a, b),
        _ => false,
    }
}

fn differences(expected: &RawRecord, found: &RawRecord) -> String {
    let show = |v: &RawValue| {
        serde_json::from_str::<Value>(v.get())
            .map(|v| crate::record::short(&v))
            .unwrap_or_default()
    };
    let mut out: Vec<String> = Vec::new();
    for (k, v) in &expected.fields {
        match found.get(k) {
            Some(f) if raw_eq(f, v) => {}
            Some(f) => out.push(format!("{k}: expected {}, found {}", show(v), show(f))),
            None => out.push(format!("{k}: expected {}, found absent", show(v))),
        }
    }
    for (k, v) in &found.fields {
        if expected.get(k).is_none() {
            out.push(format!("{k}: expected absent, found {}", show(v)));
        }
    }
    out.join("; ")
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

fn write_object(out: &mut Vec<u8>, fields: &[(&str, &RawValue)]) {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json_string(k).as_bytes());
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
}

fn raw(bytes: Vec<u8>) -> Box<RawValue> {
    RawValue::from_string(String::from_utf8(bytes).expect("JSON is UTF-8")).expect("valid JSON")
}

/// The change file of a bundle, read one change at a time with the bundle's line limit.
pub fn for_each(
    bundle: &crate::bundle::Bundle,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    bundle.for_each_line(crate::bundle::CHANGES, |no, line| f(no, line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON texts of values, several spellings of one value among them, and integers on both
    /// sides of where serde_json reads them as floats.
    const SPELLINGS: &[&str] = &[
        "0",
        "-0",
        "0.0",
        "1",
        "1.0",
        "1e0",
        "10",
        "1E1",
        "-1",
        "true",
        "false",
        "null",
        "\"\"",
        "\"a\"",
        "\"\\u0061\"",
        "\"\\/\"",
        "\"/\"",
        "\"b\"",
        "[]",
        "{}",
        "999999999999999999",
        "-999999999999999999",
        "1000000000000000000",
        "-1000000000000000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "-9223372036854775810",
        "18446744073709551616",
        "18446744073709551617",
        "123456789012345678901",
        "123456789012345678902",
        "[1,\"a\"]",
        "[1, \"a\"]",
    ];

    fn assert_raw_eq_parses(a: &str, b: &str) {
        let (x, y): (Box<RawValue>, Box<RawValue>) = (
            serde_json::from_str(a).unwrap(),
            serde_json::from_str(b).unwrap(),
        );
        let want =
            serde_json::from_str::<Value>(a).unwrap() == serde_json::from_str::<Value>(b).unwrap();
        assert_eq!(raw_eq(&x, &y), want, "{a} against {b}");
    }

    /// An update built from two trees is the line built from their bytes: changed, re-spelt
    /// (1.0 against 1), equal and removed fields.
    #[test]
    fn an_update_from_trees_is_the_update_from_bytes() {
        let prior = br#"{"kind":"tag","id":3,"name":"a","n":1.0,"gone":[1],"same":{"x":1}}"#;
        let before: Map<String, Value> = serde_json::from_slice(prior).unwrap();
        for after in [
            r#"{"kind":"tag","id":3,"name":"b","n":1.0,"same":{"x":1},"new":"\u00e9"}"#,
            r#"{"kind":"tag","id":3,"name":"a","n":1,"gone":[1],"same":{"x":1}}"#,
            r#"{"kind":"tag","id":3,"name":"a","n":1.0,"gone":[1],"same":{"x":1}}"#,
            r#"{"id":3,"kind":"tag"}"#,
        ] {
            let after: Map<String, Value> = serde_json::from_str(after).unwrap();
            let bytes = serde_json::to_vec(&after).unwrap();
            let want = encode("tag", "3", Some(prior), Some(&bytes))
                .unwrap()
                .map(|(_, l)| l);
            let got = encode_update("tag", "3", prior, &before, &after);
            assert_eq!(got, want, "{after:?}");
        }
    }

    /// The shortcut of `raw_eq` (values with one spelling) says what comparing the parsed
    /// values says, for every pair of spellings.
    #[test]
    fn raw_eq_is_the_equality_of_parsed_values() {
        for a in SPELLINGS {
            for b in SPELLINGS {
                assert_raw_eq_parses(a, b);
            }
        }
    }

    proptest! {
        /// The same, for integers and strings with escapes.
        #[test]
        fn raw_eq_is_the_equality_of_parsed_integers_and_strings(
            a in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "[a\\\\/]{0,3}".prop_map(|s| serde_json::to_string(&s).unwrap()),
                // The same strings spelt with escapes that need none.
                "[a/]{0,3}".prop_map(|s| format!("\"{}\"", s.replace('/', "\\/").replace('a', "\\u0061"))),
            ],
            b in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "[a\\\\/]{0,3}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            ],
        ) {
            assert_raw_eq_parses(&a, &b);
        }
    }

    /// A small record: a few fields of a few values, escapes and nesting among them.
    fn small_record() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("1".to_string()),
            Just("1.0".to_string()),
            Just("\"a\"".to_string()),
            Just("\"\\u0061\\\"}\"".to_string()),
            Just("[1,{\"b\":null}]".to_string()),
            Just("{}".to_string()),
        ];
        proptest::collection::vec(("[abc]", value), 0..4).prop_map(|fields| {
            let mut seen = std::collections::HashSet::new();
            let body: Vec<String> = fields
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{\"kind\":\"tag\",{}}}", body.join(",")).replace("\"tag\",}", "\"tag\"}")
        })
    }

    proptest! {
        /// A change read as [`OnPrior`] on the record its prior names judges and results as
        /// the change read whole does; on any other record, or any other layout, it is not
        /// read so.
        #[test]
        fn a_change_read_on_its_prior_is_the_change_read_whole(
            prior in small_record(),
            record in small_record(),
            other in small_record(),
        ) {
            let mut lines = Vec::new();
            if let Some((_, l)) = encode("tag", "k", Some(prior.as_bytes()), Some(record.as_bytes())).unwrap() {
                lines.push(l);
            }
            lines.push(encode("tag", "k", Some(prior.as_bytes()), None).unwrap().unwrap().1);
            for line in lines {
                let whole = Change::parse(&line).unwrap();
                let current = rec(&prior);
                let on = OnPrior::read(&line, prior.as_bytes());
                let on = on.expect("a line migrate writes, on its prior");
                prop_assert_eq!(on.judge(&current), whole.judge(Some(&current)));
                prop_assert_eq!(on.result(&current), whole.result(Some(&current)));
                // The line as Change::to_line writes it is read the same way.
                let again = whole.to_line();
                let on = OnPrior::read(&again, prior.as_bytes()).expect("to_line's layout");
                prop_assert_eq!(on.result(&current), whole.result(Some(&current)));
                if other != prior {
                    prop_assert!(OnPrior::read(&line, other.as_bytes()).is_none());
                }
                // Another layout of the same change: read whole.
                let v: Value = serde_json::from_slice(&line).unwrap();
                let pretty = serde_json::to_vec_pretty(&v).unwrap();
                prop_assert!(OnPrior::read(&pretty, prior.as_bytes()).is_none());
            }
        }
    }

    #[test]
    fn a_line_with_more_after_its_fields_is_read_whole() {
        let prior = r#"{"kind":"tag","a":1}"#;
        for line in [
            format!(r#"{{"op":"delete","kind":"tag","key":"k","prior":{prior},"prior":{{}}}}"#),
            format!(
                r#"{{"op":"update","kind":"tag","key":"k","prior":{prior},"set":{{"a":2}},"set":{{"a":3}}}}"#
            ),
            format!(
                r#"{{"op":"update","kind":"tag","key":"k","prior":{prior},"set":{{"a":2}},"unset":["b"],"x":1}}"#
            ),
            format!(r#"{{"op":"update","kind":"tag","key":"k","prior":{prior},"set":[1]}}"#),
            format!(r#"{{"op":"create","kind":"tag","key":"k","prior":{prior}}}"#),
            format!(r#"{{"op":"delete","kind":"tag","key":"k","prior":{prior}}} "#),
        ] {
            assert!(
                OnPrior::read(line.as_bytes(), prior.as_bytes()).is_none(),
                "{line}"
            );
        }
        let line = format!(
            r#"{{"op":"update","kind":"tag","key":"k","prior":{prior},"set":{{"a":2}},"unset":["b"]}}"#
        );
        let on = OnPrior::read(line.as_bytes(), prior.as_bytes()).unwrap();
        assert_eq!(
            on.result(&rec(prior)).unwrap(),
            br#"{"kind":"tag","a":2}"#.to_vec()
        );
    }

    #[test]
    fn an_update_judged_on_the_prior_itself_applies_or_is_already_done() {
        let c = update(
            r#"{"kind":"bi_report","oid":1,"name":"a"}"#,
            r#"{"kind":"bi_report","oid":1,"name":"b"}"#,
        );
        let prior = r#"{"kind":"bi_report","oid":1,"name":"a"}"#;
        assert_eq!(c.judge(Some(&rec(prior))), Step::Apply);
        assert_eq!(
            c.judge(Some(&rec(r#"{"kind":"bi_report","oid":1,"name":"b"}"#))),
            Step::Already
        );
        assert_eq!(
            c.judge(Some(&rec(r#"{"kind":"bi_report","oid":1,"name":"c"}"#))),
            Step::Conflict
        );
        assert_eq!(
            c.result(Some(&rec(prior))).unwrap(),
            br#"{"kind":"bi_report","oid":1,"name":"b"}"#
        );
    }

    fn rec(s: &str) -> RawRecord<'_> {
        RawRecord::parse(s.as_bytes()).unwrap()
    }

    fn update(prior: &str, record: &str) -> Change {
        let (_, line) = encode(
            "bi_report",
            "1",
            Some(prior.as_bytes()),
            Some(record.as_bytes()),
        )
        .unwrap()
        .unwrap();
        Change::parse(&line).unwrap()
    }

    #[test]
    fn an_update_holds_only_the_fields_that_change() {
        let (op, line) = encode(
            "bi_report",
            "1",
            Some(br#"{"kind":"bi_report","oid":1,"name":"a","x":1}"#),
            Some(br#"{"kind":"bi_report","oid":1,"name":"b","y":2}"#),
        )
        .unwrap()
        .unwrap();
        assert_eq!(op, Op::Update);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["set"], serde_json::json!({"name": "b", "y": 2}));
        assert_eq!(v["unset"], serde_json::json!(["x"]));
        assert!(v.get("record").is_none());
    }

    #[test]
    fn equal_records_make_no_change() {
        assert!(encode(
            "tag",
            "k",
            Some(br#"{"a":1,"b":[1, 2]}"#),
            Some(br#"{"b":[1,2],"a":1}"#)
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn update_guard_is_by_field() {
        let c = update(
            r#"{"oid":1,"name":"a","external_id":"x_1"}"#,
            r#"{"oid":1,"name":"a","external_id":"x"}"#,
        );
        // Untouched field edited since the export: still applies, and the edit is kept.
        let cur = rec(r#"{"oid":1,"name":"edited","external_id":"x_1"}"#);
        assert_eq!(c.judge(Some(&cur)), Step::Apply);
        assert_eq!(
            c.result(Some(&cur)).unwrap(),
            br#"{"oid":1,"name":"edited","external_id":"x"}"#
        );
        // The touched field already holds its new value.
        assert_eq!(
            c.judge(Some(&rec(r#"{"oid":1,"name":"z","external_id":"x"}"#))),
            Step::Already
        );
        // The touched field holds a third value.
        let other = rec(r#"{"oid":1,"name":"a","external_id":"y"}"#);
        assert_eq!(c.judge(Some(&other)), Step::Conflict);
        assert!(c.explain(Some(&other)).contains("external_id"));
        assert_eq!(c.judge(None), Step::Conflict);
    }

    #[test]
    fn unset_fields_are_judged_too() {
        let c = update(r#"{"a":1,"b":2}"#, r#"{"a":1}"#);
        assert_eq!(c.judge(Some(&rec(r#"{"a":1,"b":2}"#))), Step::Apply);
        assert_eq!(c.judge(Some(&rec(r#"{"a":5}"#))), Step::Already);
        assert_eq!(c.judge(Some(&rec(r#"{"a":1,"b":3}"#))), Step::Conflict);
    }

    #[test]
    fn inverse_of_an_update_gives_the_prior_bytes_back() {
        let prior = r#"{"b": 2, "a":"x","c":3}"#;
        let c = update(prior, r#"{"b":2,"a":"y","d":4}"#);
        let after = c.result(Some(&rec(prior))).unwrap();
        assert_eq!(after, br#"{"b":2,"a":"y","d":4}"#);
        let inv = c.inverse();
        let cur = RawRecord::parse(&after).unwrap();
        assert_eq!(inv.judge(Some(&cur)), Step::Apply);
        assert_eq!(inv.result(Some(&cur)).unwrap(), prior.as_bytes());
        // Onto a record edited elsewhere, the inverse keeps the edit.
        let edited = rec(r#"{"b":9,"a":"y","d":4}"#);
        assert_eq!(inv.judge(Some(&edited)), Step::Apply);
        assert_eq!(
            inv.result(Some(&edited)).unwrap(),
            br#"{"b":9,"a":"x","c":3}"#
        );
    }

    #[test]
    fn the_record_of_a_probe_is_the_lines_whether_it_kept_the_fields_or_not() {
        use crate::record::Probe;
        let line =
            br#"{ "kind":"tag", "x":1, "name":"a", "x":[2], "subject":{"otype":"t","oid":1} }"#;
        let want = RawRecord::parse(line).unwrap();
        let text = |r: &RawRecord| -> Vec<(String, String)> {
            r.fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.get().to_string()))
                .collect()
        };
        for p in [
            Probe::parse(line).unwrap(),
            Probe::parse_whole(line).unwrap(),
        ] {
            let got = RawRecord::of_probe(&p);
            assert_eq!(got.bytes, want.bytes);
            assert_eq!(text(&got), text(&want));
        }
    }

    #[test]
    fn an_inverse_given_a_record_is_the_inverse() {
        let prior = r#"{"b":2,"a":"x","c":3}"#;
        let c = update(prior, r#"{"b":2,"a":"y","d":4}"#);
        let want = c.inverse().to_line();
        // The prior itself, a record that differs, and none.
        for given in [Some(prior), Some(r#"{"b":2,"a":"z","c":3}"#), None] {
            let read = given.map(rec);
            assert_eq!(c.inverse_given(read.as_ref()).to_line(), want, "{given:?}");
        }
    }

    #[test]
    fn create_and_delete_guards() {
        let (_, line) = encode("tag", "k", None, Some(br#"{"a":1}"#))
            .unwrap()
            .unwrap();
        let c = Change::parse(&line).unwrap();
        assert_eq!(c.judge(None), Step::Apply);
        assert_eq!(c.judge(Some(&rec(r#"{ "a" : 1 }"#))), Step::Already);
        assert_eq!(c.judge(Some(&rec(r#"{"a":2}"#))), Step::Conflict);
        let d = c.inverse();
        assert_eq!(d.op, Op::Delete);
        assert_eq!(d.judge(Some(&rec(r#"{"a":1}"#))), Step::Apply);
        assert_eq!(d.judge(None), Step::Already);
        assert_eq!(d.judge(Some(&rec(r#"{"a":1,"b":1}"#))), Step::Conflict);
    }

    #[test]
    fn the_quick_head_reads_what_the_full_parse_reads() {
        let lines: [&[u8]; 5] = [
            br#"{"op":"create","kind":"tag","key":"bi_report:1:x","record":{"a":1}}"#,
            br#"{"op":"delete","kind":"tag","key":"a\"b","prior":{"a":1}}"#,
            br#"{"kind":"tag","op":"update","key":"k","prior":{},"set":{"a":1}}"#,
            br#"{"op":"update","kind":"t\u00e9","key":"1","prior":{},"set":{"a":1}}"#,
            br#"{"op":"delete","kind":"tag","key":"\u00e9t\u00e9","prior":{}}"#,
        ];
        for l in lines {
            let (q, p) = (Head::quick(l).unwrap(), Head::parse(l).unwrap());
            assert_eq!((q.op, &q.kind, &q.key), (p.op, &p.kind, &p.key));
        }
        assert!(Head::quick(b"{\"op\":\"create\"").is_err());
        assert!(Head::quick(b"not json").is_err());
    }

    #[test]
    fn phases_put_curation_first_and_rekeys_last() {
        assert!(phase(Op::Create, "tag") < phase(Op::Delete, "tag"));
        assert!(phase(Op::Delete, "tag") < phase(Op::Delete, REPORT));
        assert!(phase(Op::Delete, COLUMN) < phase(Op::Update, REPORT));
    }

    #[test]
    fn streams_go_by_phase_then_kind_with_other_kinds_last() {
        assert!(stream(Op::Update, "tag") < stream(Op::Create, "star"));
        assert_eq!(stream(Op::Update, "tag"), stream(Op::Create, "tag"));
        assert!(stream(Op::Create, "mystery") < stream(Op::Delete, "bi_folder"));
        assert!(stream(Op::Create, "article") < stream(Op::Create, "mystery"));
        assert_eq!(stream(Op::Create, "mystery"), stream(Op::Create, "enigma"));
        assert!(stream(Op::Delete, "tag") < stream(Op::Delete, REPORT));
        assert!(stream(Op::Delete, COLUMN) < stream(Op::Update, REPORT));
        assert!(stream(Op::Update, COLUMN) < STREAMS);
    }
}
