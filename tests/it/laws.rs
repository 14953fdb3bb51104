//! The laws, checked with property tests over synthetic exports of `lookmig::generate`:
//! the bundle does not depend on the thread count (SPEC §6), migration is idempotent, rollback
//! undoes restore, a fresh bundle verifies against its export (SPEC §7), and `plan --json`
//! reports exactly what `migrate` writes to `report.json`.
//!
//! Few cases of small exports, so that the suite stays fast in a debug build; the test knobs
//! `LOOKMIG_BATCH_BYTES` and `LOOKMIG_SORT_RUN_BYTES` (README) take small exports through many
//! batches and spilled sort runs, as a big catalog goes.

use crate::util::{self, arg, assert_same_records, Dir};
use lookmig::generate::{generate, GenerateOptions};
use proptest::prelude::*;
use std::path::PathBuf;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 8,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A temporary directory holding `export.ndjson`, a synthetic export of `reports` reports.
fn generated(reports: u64, seed: u64) -> (Dir, PathBuf) {
    let dir = Dir::new();
    let path = dir.join("export.ndjson");
    let file = std::fs::File::create(&path).expect("creating the export");
    generate(
        &GenerateOptions {
            reports,
            seed,
            servers: 2,
        },
        file,
    )
    .expect("generating the export");
    (dir, path)
}

fn no_args() -> Vec<String> {
    Vec::new()
}

proptest! {
    #![proptest_config(config())]

    /// SPEC §6: byte for byte the same bundle whatever the thread count.
    #[test]
    fn bundle_is_the_same_whatever_the_thread_count(seed in any::<u64>(), reports in 5u64..60) {
        let (dir, export) = generated(reports, seed);
        let one = dir.join("one");
        let two = dir.join("two");
        util::migrate(dir.path(), &export, &one, &["--threads".into(), "1".into()]).ok();
        util::migrate(dir.path(), &export, &two, &["--threads".into(), "2".into()]).ok();
        let differs = util::first_difference(&one, &two);
        prop_assert!(differs.is_none(), "{:?} differs between --threads 1 and --threads 2", differs);
    }

    /// Migrating the restored export again finds nothing left to change.
    #[test]
    fn migration_is_idempotent(seed in any::<u64>(), reports in 5u64..60) {
        let (dir, export) = generated(reports, seed);
        let bundle = dir.join("bundle");
        let out = dir.join("out.ndjson");
        let again = dir.join("again");
        util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
        util::restore(dir.path(), &bundle, &export, &out, &[]).ok();
        util::migrate(dir.path(), &out, &again, &no_args()).ok();
        let changes = util::changes(&again);
        prop_assert!(
            changes.is_empty(),
            "second migration gives {} changes; first: {}",
            changes.len(),
            util::canonical(&changes[0])
        );
    }

    /// SPEC §7: rollback after restore gives the export again (as records).
    #[test]
    fn rollback_undoes_restore(seed in any::<u64>(), reports in 5u64..60) {
        let (dir, export) = generated(reports, seed);
        let bundle = dir.join("bundle");
        let out = dir.join("out.ndjson");
        let back = dir.join("back.ndjson");
        util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
        prop_assert!(!util::changes(&bundle).is_empty(), "a generated export should need changes");
        util::restore(dir.path(), &bundle, &export, &out, &[]).ok();
        prop_assert!(util::records(&out) != util::records(&export), "restore changed nothing");
        util::rollback(dir.path(), &bundle, &out, &back, &[]).ok();
        assert_same_records(&back, &export, "restore then rollback");
        // Rolling back again changes nothing: rollback twice is rollback once.
        let twice = dir.join("twice.ndjson");
        util::rollback(dir.path(), &bundle, &back, &twice, &[]).ok();
        assert_same_records(&twice, &export, "rollback twice");
    }

    /// SPEC §7: a fresh bundle verifies against the export it was made from.
    #[test]
    fn fresh_bundle_verifies(seed in any::<u64>(), reports in 5u64..60) {
        let (dir, export) = generated(reports, seed);
        let bundle = dir.join("bundle");
        util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
        let verdict = util::run(dir.path(), ["verify", "--json", &arg(&bundle), "--export", &arg(&export)]).ok().json();
        prop_assert_eq!(&verdict["failures"], &serde_json::json!([]));
        prop_assert!(verdict["records"].as_u64().unwrap_or(0) > 0, "verify checked no records: {}", verdict);
    }

    /// `plan --json` is the report `migrate` writes.
    #[test]
    fn plan_reports_what_migrate_writes(seed in any::<u64>(), reports in 5u64..60) {
        let (dir, export) = generated(reports, seed);
        let bundle = dir.join("bundle");
        util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
        let plan = util::run(dir.path(), ["plan", "--json", &arg(&export)]).ok().json();
        prop_assert_eq!(plan, util::report(&bundle));
    }
}

/// How `migrate` with `LOOKMIG_TIMING` says it cut up the work: (batches read, sort runs
/// spilled).
fn work_cut(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("batches read"))
        .unwrap_or_else(|| panic!("no batch count with LOOKMIG_TIMING:\n{stderr}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 2, "{line}");
    (n[0], n[1])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..config() })]

    /// SPEC §6 where it is hard: a few hundred reports read in many small batches, and every
    /// external sort spilling many runs (the README's test knobs), give byte for byte the
    /// bundle of one batch and no spilled run, whatever the thread count.
    #[test]
    fn bundle_is_the_same_across_batches_spilled_runs_and_threads(
        seed in any::<u64>(),
        reports in 200u64..400,
        batch in prop::sample::select(vec![4096usize, 16384]),
        run in prop::sample::select(vec![16384usize, 65536]),
    ) {
        let (dir, export) = generated(reports, seed);
        let export_bytes = std::fs::metadata(&export).unwrap().len() as usize;
        let reference = dir.join("reference");
        let o = util::run_with_env(
            dir.path(),
            ["migrate", &arg(&export), "-o", &arg(&reference), "--threads", "1"],
            None,
            &[("LOOKMIG_TIMING", "1")],
        ).ok();
        let (batches, runs) = work_cut(&o.stderr);
        prop_assert_eq!(runs, 0, "the default sizes spilled a run for a small export");
        prop_assert!(batches <= 2, "{} batches at the default size", batches);
        for threads in ["1", "2", "3"] {
            let small = dir.join(&format!("small-{threads}"));
            let (batch_s, run_s) = (batch.to_string(), run.to_string());
            let o = util::run_with_env(
                dir.path(),
                ["migrate", &arg(&export), "-o", &arg(&small), "--threads", threads],
                None,
                &[
                    ("LOOKMIG_TIMING", "1"),
                    ("LOOKMIG_BATCH_BYTES", &batch_s),
                    ("LOOKMIG_SORT_RUN_BYTES", &run_s),
                ],
            ).ok();
            let (batches, runs) = work_cut(&o.stderr);
            // Two passes over the export, each in batches of about `batch` bytes.
            prop_assert!(
                batches as usize >= export_bytes / batch,
                "{} batches of {} bytes for an export of {} bytes", batches, batch, export_bytes
            );
            prop_assert!(runs >= 8, "only {} sort runs spilled at {} bytes a run", runs, run);
            let differs = util::first_difference(&reference, &small);
            prop_assert!(
                differs.is_none(),
                "{:?} differs with {}-byte batches, {}-byte runs and --threads {}",
                differs, batch, run, threads
            );
        }
    }
}

/// Regression: a deleted version left as it is may already hold the stable id its survivor
/// takes, so two reports share an external_id after the migration. That must neither stop a
/// second migration nor make it change anything (found by `migration_is_idempotent`).
#[test]
fn a_deleted_version_holding_the_stable_id_keeps_a_second_migration_empty() {
    let (dir, export) = generated(25, 2708814557047598355);
    let (bundle, out, again) = (
        dir.join("bundle"),
        dir.join("out.ndjson"),
        dir.join("again"),
    );
    util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
    util::restore(dir.path(), &bundle, &export, &out, &[]).ok();
    util::migrate(dir.path(), &out, &again, &no_args()).ok();
    assert!(util::changes(&again).is_empty());
    let warnings = util::report(&again)["warnings"].to_string();
    assert!(
        warnings.contains("several reports of that server share"),
        "{warnings}"
    );
}

/// Restore and verify read a target line whole only when changes name one line in eight of
/// the export or more (`ChangeIndex::read_whole_when_dense`); on a catalog where the reports
/// are a small part they read it plainly. The laws hold either way.
#[test]
fn a_catalog_where_few_lines_change_restores_rolls_back_and_verifies() {
    let (dir, export) = generated(10, 11);
    let mut text = std::fs::read_to_string(&export).unwrap();
    for i in 0..4000 {
        text.push_str(&format!(
            "{{\"kind\":\"glossary_term\",\"id\":{},\"term\":\"t{i}\"}}\n",
            100_000 + i
        ));
    }
    std::fs::write(&export, text).unwrap();
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &export, &bundle, &no_args()).ok();
    let (changes, lines) = (util::changes(&bundle).len(), util::records(&export).len());
    assert!(
        changes > 0 && changes * 8 < lines,
        "{changes} changes for {lines} lines: not a sparse change set"
    );
    let (out, back) = (dir.join("out.ndjson"), dir.join("back.ndjson"));
    util::restore(dir.path(), &bundle, &export, &out, &[]).ok();
    assert!(
        util::records(&out) != util::records(&export),
        "restore changed nothing"
    );
    util::rollback(dir.path(), &bundle, &out, &back, &[]).ok();
    assert_same_records(&back, &export, "restore then rollback");
    let verdict = util::run(
        dir.path(),
        ["verify", "--json", &arg(&bundle), "--export", &arg(&export)],
    )
    .ok()
    .json();
    assert_eq!(verdict["failures"], serde_json::json!([]));
}

/// Migrates `export` into `dir/NAME`, with `LOOKMIG_MERGE_TREES` set when `trees`; the plan's
/// JSON report too.
fn migrated(dir: &Dir, export: &std::path::Path, name: &str, trees: bool) -> (PathBuf, String) {
    let bundle = dir.join(name);
    let env: &[(&str, &str)] = if trees {
        &[("LOOKMIG_MERGE_TREES", "1")]
    } else {
        &[]
    };
    util::run_with_env(
        dir.path(),
        ["migrate", &arg(export), "-o", &arg(&bundle)],
        None,
        env,
    )
    .ok();
    let plan = util::run_with_env(dir.path(), ["plan", "--json", &arg(export)], None, env).ok();
    (bundle, plan.stdout)
}

/// Asserts that the merge judging lone records on their bytes gives, byte for byte, the bundle
/// and the plan of the merge of trees alone (`LOOKMIG_MERGE_TREES`).
fn assert_lone_records_merge_as_trees(dir: &Dir, export: &std::path::Path) {
    let (bytes, plan_bytes) = migrated(dir, export, "by-bytes", false);
    let (trees, plan_trees) = migrated(dir, export, "trees", true);
    let differs = util::first_difference(&bytes, &trees);
    assert!(
        differs.is_none(),
        "{differs:?} differs when lone records are judged on their bytes"
    );
    assert_eq!(plan_bytes, plan_trees, "the plan differs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..config() })]

    /// The merge's short way for records alone under their merge key (src/migrate/decide.rs,
    /// `lone`) is only a short way: the same bundle as merging every record as a tree.
    #[test]
    fn lone_records_merge_as_trees_merge_them(seed in any::<u64>(), reports in 20u64..200) {
        let (dir, export) = generated(reports, seed);
        assert_lone_records_merge_as_trees(&dir, &export);
    }
}

/// The records alone under their merge key that the short way must leave to the tree merge:
/// a multi-valued field whose union changes its value (an item twice, a null, an undefined
/// field holding an array), and mentions, object-set members and flag reasons the repair
/// changes. Next to them, lone records the short way takes: moved tags, stars, a flag and a
/// field, and the survivor's own.
#[test]
fn lone_records_that_change_beyond_their_subject_merge_as_trees() {
    let dir = Dir::new();
    let s = |oid: u32| format!(r#"{{"otype":"bi_report","oid":{oid}}}"#);
    let mention =
        r#"<p>See <a data-otype=\"bi_report\" data-oid=\"102\" href=\"/reports/102\">v2</a></p>"#;
    let lines = [
        r#"{"kind":"header","format":"catalog-export","version":1}"#.to_string(),
        r#"{"kind":"bi_server","id":1,"type":"looker","title":"Looker prod"}"#.into(),
        r#"{"kind":"custom_field","id":21,"field_type":"MULTI_PICKER","name":"Regions"}"#.into(),
        r#"{"kind":"custom_field","id":22,"field_type":"MULTI_PICKER","name":"Teams"}"#.into(),
        r#"{"kind":"custom_field","id":23,"field_type":"OBJECT_SET","allow_multiple":true,"name":"Related"}"#.into(),
        r#"{"kind":"custom_field","id":24,"field_type":"RICH_TEXT","name":"Notes"}"#.into(),
        r#"{"kind":"custom_field","id":25,"field_type":"PICKER","name":"Owner"}"#.into(),
        r#"{"kind":"bi_report","oid":101,"server_id":1,"external_id":"dashboard_12_1690000000","name":"Sales v1"}"#.into(),
        r#"{"kind":"bi_report","oid":102,"server_id":1,"external_id":"dashboard_12_1695000000","name":"Sales v2"}"#.into(),
        r#"{"kind":"bi_report","oid":103,"server_id":1,"external_id":"dashboard_12_1700000000","name":"Sales v3"}"#.into(),
        format!(r#"{{"kind":"field_value","field_id":21,"subject":{},"value":["emea","apac","emea"]}}"#, s(101)),
        format!(r#"{{"kind":"field_value","field_id":22,"subject":{},"value":null}}"#, s(101)),
        format!(r#"{{"kind":"field_value","field_id":99,"subject":{},"value":["x","x"]}}"#, s(102)),
        format!(r#"{{"kind":"field_value","field_id":23,"subject":{},"value":[{}]}}"#, s(101), s(102)),
        format!(r#"{{"kind":"field_value","field_id":24,"subject":{},"value":"{mention}"}}"#, s(102)),
        format!(r#"{{"kind":"trust_flag","id":7,"flag_type":"WARNING","subject":{},"user_id":5,"reason":"{mention}","ts_created":"2023-01-01T00:00:00Z"}}"#, s(101)),
        format!(r#"{{"kind":"trust_flag","id":8,"flag_type":"ENDORSEMENT","subject":{},"user_id":5,"reason":"<p>ok</p>","ts_created":"2023-01-01T00:00:00Z"}}"#, s(102)),
        format!(r#"{{"kind":"field_value","field_id":25,"subject":{},"value":"Finance"}}"#, s(101)),
        format!(r#"{{"kind":"tag","name":"finance","subject":{}}}"#, s(102)),
        format!(r#"{{"kind":"tag","name":"pii","subject":{}}}"#, s(103)),
        format!(r#"{{"kind":"star","user_id":9,"subject":{},"ts_created":"2023-02-01T00:00:00Z"}}"#, s(101)),
    ];
    let export = dir.write("export.ndjson", lines.join("\n") + "\n");
    assert_lone_records_merge_as_trees(&dir, &export);
    // What the tree merge made of them, so that the comparison above meets each case.
    let after: Vec<serde_json::Value> = util::changes(&dir.join("by-bytes"))
        .iter()
        .map(util::after)
        .filter(|r| !r.is_null())
        .collect();
    let on_survivor = |kind: &str, field: &str, value: serde_json::Value| {
        after
            .iter()
            .find(|r| r["kind"] == kind && r[field] == value && r["subject"]["oid"] == 103)
    };
    let value_of =
        |id: u64| on_survivor("field_value", "field_id", id.into()).map(|r| r["value"].clone());
    assert_eq!(
        value_of(21),
        Some(serde_json::json!(["emea", "apac"])),
        "an item twice is taken once"
    );
    assert_eq!(
        value_of(22),
        Some(serde_json::json!([])),
        "a null multi-valued value merges to an empty list"
    );
    assert_eq!(
        value_of(99),
        Some(serde_json::json!(["x"])),
        "an undefined field's array is a union too"
    );
    assert_eq!(
        value_of(23).unwrap()[0]["oid"],
        103,
        "the member is repaired"
    );
    assert!(value_of(24)
        .unwrap()
        .as_str()
        .unwrap()
        .contains(r#"data-oid="103""#));
    assert_eq!(
        value_of(25),
        Some(serde_json::json!("Finance")),
        "a single value moves as it is"
    );
    let flag = on_survivor("trust_flag", "id", 7.into()).expect("flag 7 moves");
    assert!(flag["reason"]
        .as_str()
        .unwrap()
        .contains(r#"href="/reports/103""#));
    for (kind, field, value) in [
        ("trust_flag", "id", serde_json::json!(8)),
        ("tag", "name", serde_json::json!("finance")),
        ("star", "user_id", serde_json::json!(9)),
    ] {
        assert!(
            on_survivor(kind, field, value.clone()).is_some(),
            "the {kind} with {field} {value} moves"
        );
    }
    assert!(
        on_survivor("tag", "name", "pii".into()).is_none(),
        "the survivor's own tag is no change"
    );
}
