//! Verify (SPEC §7): a bundle against its manifest and, given the source export, the
//! **conservation law** — every curation item of every group is on the survivor afterwards or
//! is a conflict in the report; no record outside the change set differs; and the change set
//! applied to the export, then rolled back, gives the export again.
//!
//! The checks run the real restore and rollback on temporary files and then look at the result
//! independently of the merge code, so a bug in the merge shows here instead of being repeated:
//! the merge keys, "empty" and the reference repair the law needs are verify's own ([`law`]).

use crate::bundle::{self, Bundle};
use crate::groups::{COLUMN, REPORT};
use crate::input::Input;
use crate::output::Target;
use crate::record::{canonical_json, Kind, Probe, Record, SeenKeys, Subject};
use crate::restore::{self, Direction};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

mod law;

/// What verify found.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// Files checked against the manifest.
    pub files: u64,
    /// Curation items of multi-version groups checked on their survivor.
    pub curation_items: u64,
    /// Records of the export checked through restore and rollback.
    pub records: u64,
    /// Every broken rule, one line each; empty when the bundle is sound.
    pub failures: Vec<String>,
}

/// Verifies `dir` and, when given, the law against `export`.
pub fn run(dir: &std::path::Path, export: Option<&Input>, threads: usize) -> Result<Verdict> {
    let b = bundle::open(dir)?;
    let mut v = Verdict {
        files: b.manifest.files.len() as u64 + 1,
        ..Verdict::default()
    };
    let Some(export) = export else { return Ok(v) };
    let sha = export.sha256()?;
    if sha != b.manifest.input_sha256 {
        v.failures.push(format!(
            "{} is not the export this bundle was made from (SHA-256 {sha}, the manifest says {})",
            export.name, b.manifest.input_sha256
        ));
        return Ok(v);
    }
    let changed = changed_keys(&b, &mut v)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory for the rehearsal")?;
    let restored = tmp.path().join("restored.ndjson");
    let rolled = tmp.path().join("rolled-back.ndjson");
    let max_errors = b.manifest.options["max_errors"].as_u64().unwrap_or(0);
    let opts = |direction| restore::Options {
        direction,
        force: false,
        threads,
        progress: false,
        level: 3,
        max_errors,
        carry_new: false,
    };
    let target = |p: &std::path::Path| Target {
        path: p.to_path_buf(),
        overwrite: false,
    };
    match restore::run(&b, export, &target(&restored), &opts(Direction::Restore)) {
        Ok(_) => {}
        // Bad input or I/O (a line over the limit, a full disk) is an error (exit 1), not a
        // failed verification: only a change that does not apply breaks the law.
        Err(e) if crate::error::Failure::conflicts_of(&e).is_none() => return Err(e),
        Err(e) => {
            v.failures.push(format!(
                "the change set does not apply to the export it was made from: {e:#}"
            ));
            return Ok(v);
        }
    }
    let mut restored_input = Input::new(&restored.to_string_lossy())?;
    // Restored records come from change lines, which bundle files may hold up to 4× the limit.
    restored_input.max_line = restored_input.max_line.saturating_mul(4);
    if let Err(e) = restore::run(
        &b,
        &restored_input,
        &target(&rolled),
        &opts(Direction::Rollback),
    ) {
        if crate::error::Failure::conflicts_of(&e).is_none() {
            return Err(e);
        }
        v.failures
            .push(format!("the change set does not roll back: {e:#}"));
        return Ok(v);
    }
    v.records = same_records(
        export,
        &Input::new(&rolled.to_string_lossy())?,
        &mut v.failures,
    )?;
    outside_unchanged(export, &restored_input, &changed, &mut v.failures)?;
    conservation(&b, export, &restored_input, &mut v)?;
    Ok(v)
}

/// The hashes of the (kind, key) of every change, sorted; checks on the way that the change
/// set is in the order of [`crate::changeset`] (phase, kind, key) with each key once.
fn changed_keys(b: &Bundle, v: &mut Verdict) -> Result<Vec<u128>> {
    let mut prev: Option<(u8, String, String)> = None;
    let mut out = Vec::new();
    crate::changeset::for_each(b, |_, line| {
        let h = crate::changeset::Head::parse(line)?;
        let this = (
            crate::changeset::phase(h.op, &h.kind),
            h.kind.into_owned(),
            h.key.into_owned(),
        );
        if prev.as_ref().is_some_and(|p| *p >= this)
            && !v
                .failures
                .iter()
                .any(|f| f.starts_with("changes are not in order"))
        {
            v.failures.push(format!(
                "changes are not in order (phase, kind, key) at {} {:?}",
                this.1, this.2
            ));
        }
        out.push(SeenKeys::hash(&this.1, &this.2));
        prev = Some(this);
        Ok(())
    })?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        v.failures
            .push("the change set names one (kind, key) twice".into());
    }
    Ok(out)
}

/// An order-free digest of an export's lines (count, sum and xor of their hashes): equal when
/// two exports hold the same lines in any order. Restore and rollback write every record as
/// the bundle or the export holds it, so the rolled-back export must give back the same bytes.
fn digest(input: &Input) -> Result<(u64, u128, u128)> {
    let (mut n, mut sum, mut xor) = (0u64, 0u128, 0u128);
    let mut lines = input.lines()?;
    while let Some(l) = lines.next_line()? {
        let h = SeenKeys::hash("line", &String::from_utf8_lossy(l.bytes.trim_ascii()));
        n += 1;
        sum = sum.wrapping_add(h);
        xor ^= h;
    }
    Ok((n, sum, xor))
}

fn same_records(a: &Input, b: &Input, failures: &mut Vec<String>) -> Result<u64> {
    let (x, y) = (digest(a)?, digest(b)?);
    if x != y {
        failures.push(format!(
            "restore then rollback does not give the export back ({} lines before, {} after, or contents differ)",
            x.0, y.0
        ));
    }
    Ok(x.0)
}

/// The (kind, key) hash of a line, or None for a line that is not a record (skipped under
/// `--max-errors`, and copied through as it is).
fn key_hash(bytes: &[u8]) -> Option<u128> {
    let p = Probe::parse(bytes).ok()?;
    Some(SeenKeys::hash(&p.kind_name, &p.key()))
}

/// Every record whose key the change set does not name is byte-identical after the restore,
/// and in the same order: the two files, less the changed records, are walked side by side.
fn outside_unchanged(
    export: &Input,
    restored: &Input,
    changed: &[u128],
    failures: &mut Vec<String>,
) -> Result<()> {
    let untouched =
        |bytes: &[u8]| key_hash(bytes).is_none_or(|k| changed.binary_search(&k).is_err());
    let mut before = export.lines()?;
    let mut after = restored.lines()?;
    loop {
        let a = loop {
            match before.next_line()? {
                Some(l) if !untouched(&l.bytes) => continue,
                other => break other,
            }
        };
        let b = loop {
            match after.next_line()? {
                Some(l) if !untouched(&l.bytes) => continue,
                other => break other,
            }
        };
        match (a, b) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) if a.bytes == b.bytes => {}
            (Some(a), _) => {
                failures.push(format!(
                    "{}:{}: a record outside the change set differs or is missing after the restore",
                    export.name, a.no
                ));
                return Ok(());
            }
            (None, Some(b)) => {
                failures.push(format!(
                    "line {} of the restored export is a record outside the change set that the export lacks",
                    b.no
                ));
                return Ok(());
            }
        }
    }
}

/// What kind of evidence a piece of curation needs on its survivor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NeedKind {
    /// A single value (or a flag's reason): equal on the survivor, or a reported conflict.
    Single,
    /// An item of a multi-valued field: in the survivor's list, or a reported conflict.
    Item,
    /// A flag, tag or star: its merge key present on the survivor.
    Present,
    /// A conversation by id, or another record by content, now on the survivor.
    Moved,
}

/// One piece of curation that must be found on its survivor afterwards, as hashes.
struct Need {
    kind: NeedKind,
    /// Hash of what must be found.
    hash: u128,
    /// Hash of the record it came from, as the report's conflicts would list it.
    record: u128,
    /// Line of the export, to name it when it is missing.
    line: u64,
}

fn subject_text(s: &Subject) -> String {
    format!("{}:{}", s.otype, s.oid)
}

fn canonical_hash(v: &Value) -> u128 {
    SeenKeys::hash("value", &canonical_json(v))
}

fn conservation(b: &Bundle, export: &Input, restored: &Input, v: &mut Verdict) -> Result<()> {
    // Participants of multi-version groups, from the id map (not from the merge code).
    let mut survivor_of: HashMap<(bool, i64), i64> = HashMap::new();
    let mut refmap = law::RefMap::default();
    #[derive(serde::Deserialize)]
    struct IdMapRow {
        otype: String,
        oid: i64,
        survivor_oid: i64,
        action: String,
    }
    b.for_each_line(bundle::IDMAP, |_, bytes| {
        let row: IdMapRow = serde_json::from_slice(bytes)?;
        if row.action == "retire" && (row.otype == REPORT || row.otype == COLUMN) {
            let column = row.otype == COLUMN;
            survivor_of.insert((column, row.oid), row.survivor_oid);
            survivor_of.insert((column, row.survivor_oid), row.survivor_oid);
            refmap.insert(&row.otype, row.oid, row.survivor_oid);
        }
        Ok(())
    })?;
    let participant = |otype: &str, oid: i64| match otype {
        REPORT => survivor_of.get(&(false, oid)).copied(),
        COLUMN => survivor_of.get(&(true, oid)).copied(),
        _ => None,
    };
    #[derive(serde::Deserialize)]
    struct Loser {
        loser: Value,
    }
    let mut conflicts: HashSet<u128> = HashSet::new();
    b.for_each_item(bundle::CONFLICTS, |c: Loser| {
        conflicts.insert(canonical_hash(&c.loser));
        Ok(())
    })?;

    // Field definitions first: a value is judged by its field's type.
    let mut fields = law::Fields::default();
    let mut lines = export.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(p) = Probe::parse(&l.bytes) else {
            continue;
        };
        if p.kind == Kind::CustomField {
            let r = Record::from_validated(&l.bytes);
            fields.define(
                r.int("id").unwrap_or(0),
                r.str("field_type").unwrap_or(""),
                r.flag("allow_multiple"),
            );
        }
    }

    // What the export's group curation needs on its survivors.
    let mut needs: Vec<Need> = Vec::new();
    let mut survivors: HashSet<(bool, i64)> = HashSet::new();
    let mut lines = export.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(p) = Probe::parse(&l.bytes) else {
            continue;
        };
        let Some(survivor) = p.subject().and_then(|(otype, oid)| {
            participant(&otype, oid).map(|s| Subject {
                otype: otype.into_owned(),
                oid: s,
            })
        }) else {
            continue;
        };
        survivors.insert((survivor.otype == COLUMN, survivor.oid));
        let mut r = Record::from_validated(&l.bytes);
        let record = canonical_hash(&Value::Object(r.obj.clone()));
        law::repair(&mut r, &fields, &refmap);
        let at = subject_text(&survivor);
        let mut need = |kind, hash| {
            needs.push(Need {
                kind,
                hash,
                record,
                line: l.no,
            })
        };
        match (r.kind, law::merge_key(&r)) {
            (Kind::FieldValue, Some(merge)) => {
                let field = r.int("field_id").unwrap_or(0);
                let value = &r.obj["value"];
                let multi = fields.multi(field).unwrap_or(value.is_array());
                if multi {
                    for item in value.as_array().into_iter().flatten() {
                        need(
                            NeedKind::Item,
                            SeenKeys::hash(&format!("item {at} {merge}"), &canonical_json(item)),
                        );
                    }
                } else if !law::is_empty(value) {
                    need(
                        NeedKind::Single,
                        SeenKeys::hash(&format!("single {at} {merge}"), &canonical_json(value)),
                    );
                }
            }
            (Kind::TrustFlag, Some(merge)) => {
                need(
                    NeedKind::Present,
                    SeenKeys::hash("present", &format!("{at} {merge}")),
                );
                let reason = r.obj.get("reason").cloned().unwrap_or(Value::Null);
                if !law::is_empty(&reason) {
                    need(
                        NeedKind::Single,
                        SeenKeys::hash(&format!("single {at} {merge}"), &canonical_json(&reason)),
                    );
                }
            }
            (Kind::Tag | Kind::Star, Some(merge)) => {
                need(
                    NeedKind::Present,
                    SeenKeys::hash("present", &format!("{at} {merge}")),
                );
            }
            _ => {
                // Conversations keep their id; other kinds are found by their whole content.
                if r.kind != Kind::Conversation {
                    r.set_subject(&survivor);
                }
                need(
                    NeedKind::Moved,
                    SeenKeys::hash("moved", &format!("{at} {} {}", r.kind_name(), r.key())),
                );
            }
        }
    }

    // What the survivors hold after the restore, as the same hashes.
    let mut found: HashSet<u128> = HashSet::new();
    let mut lines = restored.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(p) = Probe::parse(&l.bytes) else {
            continue;
        };
        let Some((otype, oid)) = p.subject() else {
            continue;
        };
        if !survivors.contains(&(otype == COLUMN, oid)) || (otype != REPORT && otype != COLUMN) {
            continue;
        }
        let r = Record::from_validated(&l.bytes);
        let at = format!("{otype}:{oid}");
        match law::merge_key(&r) {
            Some(merge) => {
                found.insert(SeenKeys::hash("present", &format!("{at} {merge}")));
                let value = match r.kind {
                    Kind::FieldValue => r.obj["value"].clone(),
                    Kind::TrustFlag => r.obj.get("reason").cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                found.insert(SeenKeys::hash(
                    &format!("single {at} {merge}"),
                    &canonical_json(&value),
                ));
                for item in value.as_array().into_iter().flatten() {
                    found.insert(SeenKeys::hash(
                        &format!("item {at} {merge}"),
                        &canonical_json(item),
                    ));
                }
            }
            None => {
                found.insert(SeenKeys::hash(
                    "moved",
                    &format!("{at} {} {}", r.kind_name(), r.key()),
                ));
            }
        }
    }
    let mut lost: Vec<(u64, NeedKind)> = Vec::new();
    for n in &needs {
        v.curation_items += 1;
        let ok = found.contains(&n.hash)
            || (matches!(n.kind, NeedKind::Single | NeedKind::Item)
                && conflicts.contains(&n.record));
        if !ok {
            lost.push((n.line, n.kind));
        }
    }
    if !lost.is_empty() {
        let lines: Vec<u64> = lost.iter().take(20).map(|(l, _)| *l).collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let texts: HashMap<u64, Vec<u8>> = sorted
            .iter()
            .copied()
            .zip(export.lines_at(&sorted)?)
            .collect();
        for (line, kind) in lost.iter().take(20) {
            let what = match kind {
                NeedKind::Single => "its value",
                NeedKind::Item => "an item of its list",
                NeedKind::Present => "its merge key",
                NeedKind::Moved => "the record itself",
            };
            let text = texts
                .get(line)
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default();
            v.failures.push(format!(
                "curation lost: {}:{line} ({}): {what} is not on its survivor and is not a reported conflict",
                export.name,
                crate::record::short(&serde_json::from_str(&text).unwrap_or(Value::String(text.clone())))
            ));
        }
        if lost.len() > 20 {
            v.failures
                .push(format!("curation lost: ... and {} more", lost.len() - 20));
        }
    }
    Ok(())
}
