//! Verify (SPEC §7): a bundle against its manifest and, given the source export, the
//! **conservation law** — every curation item of every group is on the survivor afterwards or
//! is a conflict in the report; no record outside the change set differs; and the change set
//! applied to the export, then rolled back, gives the export again.
//!
//! The checks run the real restore and rollback on temporary files and then look at the result
//! independently of the merge code, so a bug in the merge shows here instead of being repeated.

use crate::bundle::{self, Bundle};
use crate::groups::{COLUMN, REPORT};
use crate::input::Input;
use crate::output::Target;
use crate::record::{canonical_json, parse_line, FieldDef, Kind, Record, SeenKeys, Subject};
use crate::refs::{self, Fields, RefMap};
use crate::restore::{self, Direction};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

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
    };
    let target = |p: &std::path::Path| Target {
        path: p.to_path_buf(),
        overwrite: false,
    };
    match restore::run(&b, export, &target(&restored), &opts(Direction::Restore)) {
        Ok(_) => {}
        // Bad input or I/O (a line over the limit, a full disk) is an error (exit 1), not a
        // failed verification: only a change that does not apply breaks the law.
        Err(e) if e.downcast_ref::<restore::Conflicts>().is_none() => return Err(e),
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
        if e.downcast_ref::<restore::Conflicts>().is_none() {
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
/// set is sorted by (kind, key) with each key once.
fn changed_keys(b: &Bundle, v: &mut Verdict) -> Result<Vec<u128>> {
    #[derive(serde::Deserialize)]
    struct Head {
        kind: String,
        key: String,
    }
    let path = b.dir.join(bundle::CHANGES);
    let mut lines = Input::new(&path.to_string_lossy())?.lines()?;
    let mut prev: Option<(String, String)> = None;
    let mut out = Vec::new();
    while let Some(l) = lines.next_line()? {
        let h: Head = serde_json::from_slice(&l.bytes)
            .with_context(|| format!("{}:{}: not a change line", path.display(), l.no))?;
        let this = (h.kind, h.key);
        if prev.as_ref().is_some_and(|p| *p >= this)
            && !v
                .failures
                .iter()
                .any(|f| f.starts_with("changes are not sorted"))
        {
            v.failures.push(format!(
                "changes are not sorted by (kind, key) at {} {:?}",
                this.0, this.1
            ));
        }
        out.push(SeenKeys::hash(&this.0, &this.1));
        prev = Some(this);
    }
    out.sort_unstable();
    Ok(out)
}

/// Hashes of every record's canonical JSON, sorted: equal when two exports hold the same records.
fn record_hashes(input: &Input) -> Result<Vec<u128>> {
    let mut out = Vec::new();
    let mut lines = input.lines()?;
    while let Some(l) = lines.next_line()? {
        out.push(match parse_line(&l.bytes) {
            Ok(r) => SeenKeys::hash("", &canonical_json(&Value::Object(r.obj))),
            // A line skipped under --max-errors is compared as it is.
            Err(_) => SeenKeys::hash("\n", &String::from_utf8_lossy(&l.bytes)),
        });
    }
    out.sort_unstable();
    Ok(out)
}

fn same_records(a: &Input, b: &Input, failures: &mut Vec<String>) -> Result<u64> {
    let (x, y) = (record_hashes(a)?, record_hashes(b)?);
    if x != y {
        failures.push(format!(
            "restore then rollback does not give the export back ({} records before, {} after, or contents differ)",
            x.len(),
            y.len()
        ));
    }
    Ok(x.len() as u64)
}

/// Every record whose key the change set does not name is byte-identical after the restore.
fn outside_unchanged(
    export: &Input,
    restored: &Input,
    changed: &[u128],
    failures: &mut Vec<String>,
) -> Result<()> {
    let is_changed = |k: &u128| changed.binary_search(k).is_ok();
    let mut before: HashMap<u128, u128> = HashMap::new();
    let mut lines = export.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(r) = parse_line(&l.bytes) else {
            continue;
        }; // skipped under --max-errors
        let k = SeenKeys::hash(r.kind_name(), &r.key());
        if !is_changed(&k) {
            before.insert(k, SeenKeys::hash("", &String::from_utf8_lossy(&l.bytes)));
        }
    }
    let mut lines = restored.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(r) = parse_line(&l.bytes) else {
            continue;
        }; // skipped under --max-errors
        let k = SeenKeys::hash(r.kind_name(), &r.key());
        if is_changed(&k) {
            continue;
        }
        match before.remove(&k) {
            Some(h) if h == SeenKeys::hash("", &String::from_utf8_lossy(&l.bytes)) => {}
            _ => failures.push(format!(
                "{} {:?} differs after the restore but is not in the change set",
                r.kind_name(),
                r.key()
            )),
        }
    }
    if !before.is_empty() {
        failures.push(format!(
            "{} record(s) outside the change set are missing after the restore",
            before.len()
        ));
    }
    Ok(())
}

/// One piece of curation that must be found on the survivor afterwards.
struct Need {
    survivor: Subject,
    what: NeedKind,
    /// The record it came from, for messages and for the conflict list.
    record: Value,
}

enum NeedKind {
    /// A single value of a field (or a flag's reason), or a conflict in the report.
    Single {
        kind: &'static str,
        merge: String,
        value: Value,
    },
    /// An item of a multi-valued field.
    Item { field: i64, item: Value },
    /// A flag, tag or star: its merge key present on the survivor.
    Present { kind: &'static str, merge: String },
    /// A conversation by id, or another record by content, with the survivor as subject.
    Moved { kind: String, id: String },
}

fn conservation(b: &Bundle, export: &Input, restored: &Input, v: &mut Verdict) -> Result<()> {
    // Participants of multi-version groups, from the id map (not from the merge code).
    let mut survivor_of: HashMap<(String, i64), i64> = HashMap::new();
    let mut refmap = RefMap::default();
    let mut multi: HashSet<(String, i64)> = HashSet::new();
    #[derive(serde::Deserialize)]
    struct IdMapRow {
        otype: String,
        oid: i64,
        survivor_oid: i64,
        action: String,
    }
    b.for_each_line(bundle::IDMAP, |_, bytes| {
        let row: IdMapRow = serde_json::from_slice(bytes)?;
        if row.action == "retire" {
            survivor_of.insert((row.otype.clone(), row.oid), row.survivor_oid);
            multi.insert((row.otype.clone(), row.survivor_oid));
            if row.otype == REPORT || row.otype == COLUMN {
                refmap.insert(&row.otype, row.oid, row.survivor_oid);
            }
        }
        Ok(())
    })?;
    refmap.finish();
    for s in multi.clone() {
        survivor_of.insert(s.clone(), s.1);
    }
    #[derive(serde::Deserialize)]
    struct Loser {
        loser: Value,
    }
    #[derive(serde::Deserialize)]
    struct Losers {
        conflicts: Vec<Loser>,
    }
    let losers: Losers = b.report_part()?;
    let conflicts: HashSet<String> = losers
        .conflicts
        .iter()
        .map(|c| canonical_json(&c.loser))
        .collect();
    drop(losers);

    let mut fields = Fields::default();
    let mut held: Vec<Record> = Vec::new();
    let mut lines = export.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(r) = parse_line(&l.bytes) else {
            continue;
        }; // skipped under --max-errors
        if r.kind == Kind::CustomField {
            fields.insert(
                r.int("id").unwrap_or(0),
                FieldDef {
                    field_type: r.str("field_type").unwrap_or("").into(),
                    allow_multiple: r.flag("allow_multiple"),
                },
            );
        }
        if r.subject()
            .is_some_and(|s| survivor_of.contains_key(&(s.otype.clone(), s.oid)))
        {
            held.push(r);
        }
    }
    let mut needs = Vec::new();
    for mut r in held {
        let s = r.subject().expect("held records have a subject");
        let survivor = Subject {
            oid: survivor_of[&(s.otype.clone(), s.oid)],
            otype: s.otype,
        };
        let record = Value::Object(r.obj.clone());
        refs::repair(&mut r, &fields, &refmap);
        let what: Vec<NeedKind> = match r.kind {
            Kind::FieldValue => {
                let field = r.int("field_id").unwrap_or(0);
                let value = r.obj["value"].clone();
                let multi = match fields.get(field) {
                    Some(d) => d.multi(),
                    None => value.is_array(),
                };
                if multi {
                    value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| NeedKind::Item {
                            field,
                            item: i.clone(),
                        })
                        .collect()
                } else if crate::merge::is_empty(&value) {
                    vec![]
                } else {
                    vec![NeedKind::Single {
                        kind: "field_value",
                        merge: format!("field {field}"),
                        value,
                    }]
                }
            }
            Kind::TrustFlag => {
                let merge = format!(
                    "{} by user {}",
                    r.str("flag_type").unwrap_or(""),
                    r.int("user_id").unwrap_or(0)
                );
                let reason = r.obj.get("reason").cloned().unwrap_or(Value::Null);
                let mut w = vec![NeedKind::Present {
                    kind: "trust_flag",
                    merge: merge.clone(),
                }];
                if !crate::merge::is_empty(&reason) {
                    w.push(NeedKind::Single {
                        kind: "trust_flag",
                        merge,
                        value: reason,
                    });
                }
                w
            }
            Kind::Tag => vec![NeedKind::Present {
                kind: "tag",
                merge: format!("tag {}", r.str("name").unwrap_or("")),
            }],
            Kind::Star => vec![NeedKind::Present {
                kind: "star",
                merge: format!("star by user {}", r.int("user_id").unwrap_or(0)),
            }],
            Kind::Conversation => vec![NeedKind::Moved {
                kind: "conversation".into(),
                id: r.key(),
            }],
            _ => {
                r.set_subject(&survivor);
                vec![NeedKind::Moved {
                    kind: r.kind_name().to_string(),
                    id: r.key(),
                }]
            }
        };
        needs.extend(what.into_iter().map(|what| Need {
            survivor: survivor.clone(),
            what,
            record: record.clone(),
        }));
    }

    // The survivors' curation after the restore.
    let survivors: HashSet<Subject> = needs.iter().map(|n| n.survivor.clone()).collect();
    let mut after: HashMap<(Subject, String), Value> = HashMap::new();
    let mut moved: HashSet<(Subject, String, String)> = HashSet::new();
    let mut lines = restored.lines()?;
    while let Some(l) = lines.next_line()? {
        let Ok(r) = parse_line(&l.bytes) else {
            continue;
        }; // skipped under --max-errors
        let Some(s) = r.subject().filter(|s| survivors.contains(s)) else {
            continue;
        };
        let merge = match r.kind {
            Kind::FieldValue => Some((
                format!("field {}", r.int("field_id").unwrap_or(0)),
                r.obj["value"].clone(),
            )),
            Kind::TrustFlag => Some((
                format!(
                    "{} by user {}",
                    r.str("flag_type").unwrap_or(""),
                    r.int("user_id").unwrap_or(0)
                ),
                r.obj.get("reason").cloned().unwrap_or(Value::Null),
            )),
            Kind::Tag => Some((format!("tag {}", r.str("name").unwrap_or("")), Value::Null)),
            Kind::Star => Some((
                format!("star by user {}", r.int("user_id").unwrap_or(0)),
                Value::Null,
            )),
            _ => None,
        };
        match merge {
            Some((m, value)) => {
                after.insert((s, m), value);
            }
            None => {
                moved.insert((s, r.kind_name().to_string(), r.key()));
            }
        }
    }
    for n in needs {
        v.curation_items += 1;
        let ok = match &n.what {
            NeedKind::Single { merge, value, .. } => {
                match after.get(&(n.survivor.clone(), merge.clone())) {
                    Some(a) if a == value => true,
                    _ => conflicts.contains(&canonical_json(&n.record)),
                }
            }
            NeedKind::Item { field, item } => {
                after
                    .get(&(n.survivor.clone(), format!("field {field}")))
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.contains(item))
                    || conflicts.contains(&canonical_json(&n.record))
            }
            NeedKind::Present { merge, .. } => {
                after.contains_key(&(n.survivor.clone(), merge.clone()))
            }
            NeedKind::Moved { kind, id } => {
                moved.contains(&(n.survivor.clone(), kind.clone(), id.clone()))
            }
        };
        if !ok {
            let what = match &n.what {
                NeedKind::Single { kind, merge, .. } | NeedKind::Present { kind, merge } => {
                    format!("{kind} {merge}")
                }
                NeedKind::Item { field, item } => format!("item {item} of field {field}"),
                NeedKind::Moved { kind, id } => format!("{kind} {id}"),
            };
            v.failures.push(format!(
                "curation lost: {what} of {} is not on survivor {}:{} and is not a reported conflict",
                crate::record::short(&n.record),
                n.survivor.otype,
                n.survivor.oid
            ));
        }
    }
    Ok(())
}
