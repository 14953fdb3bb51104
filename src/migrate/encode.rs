//! The change lines of the migration (SPEC §6), built from the raw bytes of the export's lines
//! by [`crate::changeset`]'s encoder, each with the stream that puts it in the bundle's order;
//! in a dry run ([`super::plan`]) only their kind of operation, to be counted.

use crate::changeset::Op;
use crate::output::Streams;
use crate::record::Probe;
use anyhow::Result;
use serde_json::value::RawValue;

/// Counts the changes and keeps them in `streams` (None in a dry run).
pub(super) fn push_raw(
    mut streams: Option<&mut Streams>,
    changes: Vec<RawChange>,
    counts: &mut crate::report::Counts,
) -> Result<()> {
    for c in changes {
        if let Some(s) = streams.as_deref_mut() {
            s.line(c.stream, &c.line)?;
        }
        match c.op {
            Op::Create => counts.changes_create += 1,
            Op::Update => counts.changes_update += 1,
            Op::Delete => counts.changes_delete += 1,
        }
    }
    Ok(())
}

/// The update of a probed line that replaces some of its top-level values, each given as
/// (its raw value in the line, the field's name, the new JSON text) and each different from
/// the old value: every other byte of the record stays as it was, so the update sets exactly
/// these fields, in the order they have in the line.
pub(super) fn edit_change(
    p: &Probe,
    mut edits: Vec<(&RawValue, &str, String)>,
    dry: bool,
) -> Option<RawChange> {
    if dry {
        return (!edits.is_empty()).then(|| dry_change(Op::Update));
    }
    edits.sort_by_key(|(raw, _, _)| raw.get().as_ptr() as usize);
    let set: Vec<(&str, &str)> = edits
        .iter()
        .map(|(_, name, new)| (*name, new.as_str()))
        .collect();
    let key = p.key();
    let line = crate::changeset::encode_set(&p.kind_name, &key, p.line, &set)?;
    Some(RawChange {
        stream: crate::changeset::stream(Op::Update, &p.kind_name),
        line,
        op: Op::Update,
    })
}

/// The change of a probed line: its original bytes are the prior; `record` the new bytes, or
/// a delete when None.
pub(super) fn raw_change(p: &Probe, record: Option<&[u8]>, dry: bool) -> Option<RawChange> {
    if dry && record.is_none() {
        return Some(dry_change(Op::Delete));
    }
    change_line(&p.kind_name, &p.key(), Some(p.line), record, dry)
}

/// A change line (SPEC §6) from raw JSON bytes, with its stream (phase and kind: the order of
/// [`crate::changeset`]). A prior of None creates the record, a record of None deletes it;
/// None when the two are equal.
pub(super) fn change_line(
    kind: &str,
    key: &str,
    prior: Option<&[u8]>,
    record: Option<&[u8]>,
    dry: bool,
) -> Option<RawChange> {
    if dry {
        let op = match (prior, record) {
            (None, _) => Op::Create,
            (Some(_), None) => Op::Delete,
            (Some(p), Some(r)) => {
                crate::changeset::update_fields(p, r)
                    .expect("validated records are JSON objects")?;
                Op::Update
            }
        };
        return Some(dry_change(op));
    }
    let (op, line) = crate::changeset::encode(kind, key, prior, record)
        .expect("validated records are JSON objects")?;
    Some(RawChange {
        stream: crate::changeset::stream(op, kind),
        line,
        op,
    })
}

/// The update of a record of a merged group, from its trees ([`crate::changeset::encode_update`]);
/// None when the merge left it as it was.
pub(super) fn tree_update(
    kind: &str,
    key: &str,
    prior: &[u8],
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
) -> Option<RawChange> {
    let line = crate::changeset::encode_update(kind, key, prior, before, after)?;
    Some(RawChange {
        stream: crate::changeset::stream(Op::Update, kind),
        line,
        op: Op::Update,
    })
}

/// A change of a dry run: its kind of operation, counted, and nothing else.
pub(super) fn dry_change(op: Op) -> RawChange {
    RawChange {
        stream: 0,
        line: Vec::new(),
        op,
    }
}

/// A change already serialised, with its stream ([`crate::changeset::stream`]).
pub(super) struct RawChange {
    stream: usize,
    line: Vec<u8>,
    op: Op,
}
