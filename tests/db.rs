//! The live-database target (issue 4) against a real PostgreSQL server: load, dump, restore,
//! rollback, conflicts and a killed restore.
//!
//! The server, the helpers and how a throwaway cluster is started and stopped are in
//! `tests/common/db.rs`.

#[path = "common/db.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole cycle for one export: load → dump is the export; restore → dump is the offline
/// restore; restoring again changes nothing; rollback → dump is the export.
fn cycle(db: &TestDb, dir: &Path, export: &Path, migrate_args: &[String], label: &str) {
    let url = Some(db.url.as_str());
    let bundle = dir.join("bundle");
    let offline = dir.join("offline.ndjson");
    let dump = dir.join("dump.ndjson");
    let mut margs: Vec<&str> = vec!["migrate", s(export), "-o", s(&bundle), "--overwrite"];
    margs.extend(migrate_args.iter().map(String::as_str));
    ok(&margs, None);
    ok(
        &[
            "restore",
            s(&bundle),
            "--onto",
            s(export),
            "-o",
            s(&offline),
            "--overwrite",
        ],
        None,
    );

    ok(&["db", "load", s(export), "--replace"], url);
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(export, &dump, &format!("{label}: load then dump"));

    let o = ok(&["restore", s(&bundle)], url);
    assert!(o.stdout.contains("onto database"), "{}", o.stdout);
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(
        &offline,
        &dump,
        &format!("{label}: restore onto the database vs offline"),
    );

    let o = ok(&["restore", s(&bundle), "--json"], url);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        summary["applied"], 0,
        "{label}: restoring twice applied something: {summary}"
    );
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&offline, &dump, &format!("{label}: restore twice"));

    ok(&["rollback", s(&bundle)], url);
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(export, &dump, &format!("{label}: rollback"));
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn every_sample_loads_restores_and_rolls_back_like_offline() {
    let db = TestDb::new("samples");
    ok(&["db", "init"], Some(&db.url));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut done = 0;
    for dir in names {
        if !dir.join("expected.ndjson").exists() {
            continue; // the error samples: migrate refuses them
        }
        // The sample's extra migrate options; a word naming a file of the folder is that file.
        let args: Vec<String> = std::fs::read_to_string(dir.join("args"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|w| {
                if dir.join(w).is_file() {
                    dir.join(w).to_string_lossy().into_owned()
                } else {
                    w.to_string()
                }
            })
            .collect();
        let tmp = tempfile::tempdir().unwrap();
        cycle(
            &db,
            tmp.path(),
            &dir.join("export.ndjson"),
            &args,
            &dir.file_name().unwrap().to_string_lossy(),
        );
        done += 1;
    }
    assert!(done >= 15, "only {done} samples ran");
    let tmp = tempfile::tempdir().unwrap();
    cycle(
        &db,
        tmp.path(),
        &samples.join("demo.ndjson.zst"),
        &[],
        "demo",
    );
}

#[test]
fn a_generated_export_round_trips_with_and_without_recover_deleted() {
    let db = TestDb::new("generated");
    ok(&["db", "init"], Some(&db.url));
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("gen.ndjson.zst");
    ok(
        &[
            "generate",
            "--reports",
            "800",
            "--seed",
            "11",
            "--servers",
            "3",
            "-o",
            s(&export),
        ],
        None,
    );
    cycle(&db, tmp.path(), &export, &[], "generated");
    cycle(
        &db,
        tmp.path(),
        &export,
        &["--recover-deleted".to_string()],
        "generated --recover-deleted",
    );
}

#[test]
fn init_is_idempotent_and_load_refuses_a_full_catalog_and_bad_lines() {
    let db = TestDb::new("init");
    let url = Some(db.url.as_str());
    let o = lookmig(&["dump", "-o", "/dev/null", "--overwrite"], url);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("db init"), "{}", o.stderr);
    ok(&["db", "init"], url);
    assert!(ok(&["db", "init"], url).stdout.contains("already"));
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    ok(
        &[
            "db",
            "load",
            s(&sample.join("01-legacy-dashboard/export.ndjson")),
        ],
        url,
    );
    let o = lookmig(
        &[
            "db",
            "load",
            s(&sample.join("02-legacy-look/export.ndjson")),
        ],
        url,
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("--replace"), "{}", o.stderr);
    for (name, needle) in [
        ("18-malformed", ":3"),
        ("19-duplicate-key", ":5"),
        ("20-wrong-type", ":3"),
    ] {
        let o = lookmig(
            &[
                "db",
                "load",
                "--replace",
                s(&sample.join(name).join("export.ndjson")),
            ],
            url,
        );
        assert_eq!(o.code, 1, "{name}");
        assert!(o.stderr.contains(needle), "{name}: {}", o.stderr);
    }
    // Nothing of the refused loads is in the database: it still holds sample 01.
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("d.ndjson");
    ok(&["dump", "-o", s(&dump)], url);
    same_records(
        &sample.join("01-legacy-dashboard/export.ndjson"),
        &dump,
        "after refused loads",
    );
}

/// Writes `lines` (with a final newline) to `dir/name`.
fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The non-blank lines of an export file.
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// The arguments of `lookmig db load --replace --max-errors MAX ARGS…`.
fn load_replacing<'a>(max_errors: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["db", "load", "--replace", "--max-errors", max_errors];
    all.extend_from_slice(args);
    all
}

/// `db load` reads an export with the rules of every command (issue 11): a header past the
/// first line is a bad line naming file:line; `--max-errors N` skips up to N bad lines
/// (malformed, late header, duplicate key), lists each, and loads the rest; without it, or past
/// N, nothing is loaded.
#[test]
fn load_follows_the_export_rules_and_max_errors_skips_bad_lines() {
    let db = TestDb::new("load_rules");
    let url = Some(db.url.as_str());
    ok(&["db", "init"], url);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("d.ndjson");
    let good = samples.join("01-legacy-dashboard/export.ndjson");
    ok(&["db", "load", s(&good)], url);

    // A header on line 2: refused like migrate and restore refuse it, nothing loaded.
    let mut late = lines_of(&good);
    late.swap(0, 1);
    let late_path = write_lines(tmp.path(), "late.ndjson", &late);
    let o = lookmig(&["db", "load", "--replace", s(&late_path)], url);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("late.ndjson:2: a header must be the first line")
            && o.stderr.contains("--max-errors"),
        "{}",
        o.stderr
    );
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&good, &dump, "after a refused late header");

    // The same with --max-errors 1: every line but the late header is loaded.
    let o = ok(&load_replacing("1", &[s(&late_path)]), url);
    assert!(
        o.stdout
            .contains("skipped line 2: a header must be the first line"),
        "{}",
        o.stdout
    );
    let mut expect = late.clone();
    expect.remove(1);
    let expect_path = write_lines(tmp.path(), "expect.ndjson", &expect);
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&expect_path, &dump, "late header skipped");

    // A malformed line (sample 18, line 3) and a duplicate key (sample 19, line 5): skipped and
    // listed verbatim in --json; the duplicate's second occurrence is not loaded although it is
    // only found once the whole export was read.
    for (name, bad) in [("18-malformed", 3usize), ("19-duplicate-key", 5)] {
        let export = samples.join(name).join("export.ndjson");
        let all = lines_of(&export);
        let o = ok(&load_replacing("1", &["--json", s(&export)]), url);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        let skipped = v["skipped_lines"].as_array().expect("skipped_lines");
        assert_eq!(skipped.len(), 1, "{name}: {v}");
        assert_eq!(skipped[0]["line"], bad as u64, "{name}: {v}");
        assert_eq!(skipped[0]["text"], all[bad - 1].as_str(), "{name}: {v}");
        assert_eq!(v["records"], (all.len() - 1) as u64, "{name}: {v}");
        let mut rest = all.clone();
        rest.remove(bad - 1);
        let rest_path = write_lines(tmp.path(), "rest.ndjson", &rest);
        ok(&["dump", "-o", s(&dump), "--overwrite"], url);
        same_records(&rest_path, &dump, &format!("{name} with --max-errors 1"));
    }

    // --max-errors is a limit: two bad lines (a malformed one, then a duplicate key found after
    // the read) with --max-errors 1 load nothing, and the error names the second.
    let mut two = lines_of(&samples.join("18-malformed/export.ndjson"));
    two.push(two[4].clone());
    let two_path = write_lines(tmp.path(), "two.ndjson", &two);
    let o = lookmig(&load_replacing("1", &[s(&two_path)]), url);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("two.ndjson:6: duplicate record key"),
        "{}",
        o.stderr
    );
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    // The database still holds the last load: sample 19 without its line 5.
    same_records(
        &tmp.path().join("rest.ndjson"),
        &dump,
        "after a load past --max-errors",
    );
    ok(&load_replacing("2", &[s(&two_path)]), url);
}

#[test]
fn the_schema_has_the_catalog_keys() {
    let db = TestDb::new("keys");
    ok(&["db", "init"], Some(&db.url));
    let mut c = db.client();
    let mut bad = |sql: &str| {
        let e = c.batch_execute(sql).expect_err(sql);
        assert!(e.as_db_error().is_some(), "{sql}: {e}");
    };
    bad("INSERT INTO bi_report (oid, server_id, external_id) VALUES (1, 1, 'look/1'), (2, 1, 'look/1')");
    bad("INSERT INTO field_value (subject_otype, subject_oid, field_id, value) VALUES ('t', 1, 3, '\"a\"'), ('t', 1, 3, '\"b\"')");
    bad("INSERT INTO tag (subject_otype, subject_oid, name) VALUES ('t', 1, 'x'), ('t', 1, 'x')");
    bad("INSERT INTO star (subject_otype, subject_oid, user_id) VALUES ('t', 1, 5), ('t', 1, 5)");
    bad("INSERT INTO custom_field (id, field_type) VALUES (1, 'NUMBER')");
    // A deleted version may keep the stable id its survivor takes (SPEC §3, see schema.rs).
    c.batch_execute(
        "INSERT INTO bi_report (oid, server_id, external_id, deleted) VALUES (1, 1, 'look/1', true), (2, 1, 'look/1', null)",
    )
    .unwrap();
}

/// A change of the bundle that updates the value of an existing field_value: (subject otype,
/// oid, field) and the value the change writes.
fn some_field_value_update(bundle: &Path) -> (String, i64, i64, Value) {
    let c = first_change(bundle, lookmig::changeset::Op::Update, |c| {
        c.kind == "field_value" && c.set.iter().any(|(k, _)| k == "value")
    });
    let p: serde_json::Value = serde_json::from_str(c.prior.unwrap().get()).unwrap();
    let value = c
        .set
        .iter()
        .find(|(k, _)| k == "value")
        .map(|(_, v)| serde_json::from_str::<Value>(v.get()).unwrap())
        .unwrap();
    (
        p["subject"]["otype"].as_str().unwrap().to_string(),
        p["subject"]["oid"].as_i64().unwrap(),
        p["field_id"].as_i64().unwrap(),
        value,
    )
}

/// The value of one field_value row, read with SQL (not through `dump`).
fn field_value(db: &TestDb, otype: &str, oid: i64, field: i64) -> Value {
    let row = db
        .client()
        .query_one(
            "SELECT value FROM field_value WHERE subject_otype = $1 AND subject_oid = $2 AND field_id = $3",
            &[&otype, &oid, &field],
        )
        .unwrap();
    row.get::<_, Option<Value>>(0).unwrap_or(Value::Null)
}

/// Polls `count_sql` on `db` until the count is positive, running `between` after each poll
/// that is not (it may panic); the test fails saying `never` after `secs` seconds.
#[track_caller]
fn wait_for(db: &TestDb, count_sql: &str, secs: u64, never: &str, mut between: impl FnMut()) {
    let mut watcher = db.client();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let count: i64 = watcher.query_one(count_sql, &[]).unwrap().get(0);
        if count > 0 {
            return;
        }
        between();
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The demo export migrated (into a temporary folder, with the export's path and the bundle's)
/// and loaded into `db`.
fn demo_loaded(db: &TestDb) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let url = Some(db.url.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let export = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.ndjson.zst");
    let bundle = tmp.path().join("bundle");
    ok(&["migrate", s(&export), "-o", s(&bundle)], None);
    ok(&["db", "init"], url);
    ok(&["db", "load", s(&export)], url);
    (tmp, export, bundle)
}

#[test]
fn an_edit_made_after_the_export_is_a_conflict_even_while_the_restore_runs() {
    let db = TestDb::new("conflict");
    let url = Some(db.url.as_str());
    let (tmp, export, bundle) = demo_loaded(&db);
    let dump = tmp.path().join("dump.ndjson");
    let before = tmp.path().join("before.ndjson");
    let (otype, oid, field, new_value) = some_field_value_update(&bundle);
    assert_ne!(new_value, Value::from("edited in the catalog"));
    let edit = format!(
        "UPDATE field_value SET value = '\"edited in the catalog\"' WHERE subject_otype = '{otype}' AND subject_oid = {oid} AND field_id = {field}"
    );

    let key = format!("\"{otype}:{oid}:{field}\"");

    // 1. Edited and committed before the restore.
    db.client().batch_execute(&edit).unwrap();
    ok(&["dump", "-o", s(&before)], url);
    let o = lookmig(&["restore", s(&bundle)], url);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("1 conflict") && o.stderr.contains(&key),
        "{}",
        o.stderr
    );
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&before, &dump, "a refused restore changed the database");

    // 2. Edited by a session that holds the row while the restore starts: the restore waits
    //    for the lock, then sees the committed edit and refuses.
    ok(&["db", "load", "--replace", s(&export)], url);
    let mut editor = db.client();
    let mut tx = editor.transaction().unwrap();
    tx.batch_execute(&edit).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lookmig"))
        .args(["restore", s(&bundle), "--database", &db.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lookmig' AND datname = current_database() AND wait_event_type = 'Lock'",
        60,
        "the restore never waited for the locked row",
        || {},
    );
    tx.commit().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("1 conflict") && stderr.contains(&key),
        "{stderr}"
    );
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(
        &before,
        &dump,
        "a restore refused after waiting changed the database",
    );

    // 3. --force applies over the edit: the edit is overwritten with the bundle's value, and
    //    the forced change is counted, in the text and in --json.
    assert_eq!(
        field_value(&db, &otype, oid, field),
        Value::from("edited in the catalog")
    );
    let o = ok(&["restore", s(&bundle), "--force"], url);
    assert!(
        o.stdout
            .contains("1 conflicting changes applied anyway (--force)"),
        "{}",
        o.stdout
    );
    assert_eq!(
        field_value(&db, &otype, oid, field),
        new_value,
        "--force did not overwrite the edit"
    );
    ok(&["db", "load", "--replace", s(&export)], url);
    db.client().batch_execute(&edit).unwrap();
    let o = ok(&["restore", s(&bundle), "--force", "--json"], url);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["forced"], 1, "{summary}");
    assert_eq!(summary["conflict_count"], 1, "{summary}");
    assert_eq!(
        field_value(&db, &otype, oid, field),
        new_value,
        "--force --json did not overwrite the edit"
    );
}

/// The first change of the bundle with this op that `pick` accepts.
fn first_change(
    bundle: &Path,
    op: lookmig::changeset::Op,
    pick: impl Fn(&lookmig::changeset::Change) -> bool,
) -> lookmig::changeset::Change {
    let b = lookmig::bundle::open(bundle).unwrap();
    let mut found = None;
    b.for_each_line(lookmig::bundle::CHANGES, |_, line| {
        let c = lookmig::changeset::Change::parse(line)?;
        if found.is_none() && c.op == op && pick(&c) {
            found = Some(c);
        }
        Ok(())
    })
    .unwrap();
    found.expect("such a change in the bundle")
}

/// Most updates and deletes are judged by the database in SQL (src/db/guarded.rs); a row whose
/// value only SQL would call equal to the prior one must still be a conflict, as the exact
/// guard of SPEC §7 says: a subject with a third key (kept in `extra`, its columns unchanged),
/// and an object set whose oids were rewritten as decimals (equal as `jsonb` numbers, not as
/// JSON values). And a row the bundle deletes goes only as the export had it: not a retired
/// version renamed since, nor a tag given a field the export did not have (held in `extra`).
/// A create finds its key taken: by a row unlike its record (a conflict, the row kept), or by
/// its very record (already applied). Records of kinds the SPEC does not name (one `jsonb`
/// each): one edited since the export stays, and one already there is already applied.
#[test]
fn the_database_never_writes_what_the_exact_guard_refuses() {
    let db = TestDb::new("guarded");
    let url = Some(db.url.as_str());
    let (tmp, _, bundle) = demo_loaded(&db);
    let dump = tmp.path().join("dump.ndjson");
    let before = tmp.path().join("before.ndjson");
    use lookmig::changeset::Op;
    let flag = first_change(&bundle, Op::Update, |c| {
        c.kind == "trust_flag" && c.set.iter().any(|(k, _)| k == "subject")
    })
    .key;
    let value = first_change(&bundle, Op::Update, |c| {
        c.kind == "field_value"
            && c.set.iter().any(|(k, _)| k == "value")
            && c.prior.as_ref().is_some_and(|p| {
                let p: Value = serde_json::from_str(p.get()).unwrap();
                p["value"][0]["oid"].is_i64()
            })
    })
    .key;
    let report = first_change(&bundle, Op::Delete, |c| c.kind == "bi_report").key;
    let tag = first_change(&bundle, Op::Delete, |c| c.kind == "tag").key;
    let created = first_change(&bundle, Op::Create, |c| c.kind == "tag").key;
    let already = first_change(&bundle, Op::Create, |c| c.kind == "tag" && c.key != created);
    let record: Value = serde_json::from_str(already.record.as_ref().unwrap().get()).unwrap();
    assert_eq!(
        record.as_object().unwrap().len(),
        3,
        "a tag record of kind, subject and name: {record}"
    );
    let viewed = first_change(&bundle, Op::Delete, |c| c.kind == "view_event").key;
    let view = first_change(&bundle, Op::Create, |c| c.kind == "view_event");
    let t: Vec<&str> = tag.splitn(3, ':').collect();
    let parts: Vec<&str> = value.split(':').collect();
    db.client()
        .execute(
            "UPDATE other_record SET record = record || '{\"note\": \"kept\"}' \
             WHERE kind = 'view_event' AND key = $1",
            &[&viewed],
        )
        .unwrap();
    let view_record: Value = serde_json::from_str(view.record.as_ref().unwrap().get()).unwrap();
    db.client()
        .execute(
            "INSERT INTO other_record (kind, key, record) VALUES ('view_event', $1, $2)",
            &[&view.key, &view_record],
        )
        .unwrap();
    let insert_tag = |key: &str, extra: &str| {
        let k: Vec<&str> = key.splitn(3, ':').collect();
        format!(
            "INSERT INTO tag (subject_otype, subject_oid, name, extra) VALUES ('{}', {}, '{}', '{extra}');",
            k[0],
            k[1],
            k[2].replace('\'', "''")
        )
    };
    db.client()
        .batch_execute(&format!(
            "{}{}",
            insert_tag(&created, r#"{"note": "made by a curator"}"#),
            insert_tag(&already.key, "{}")
        ))
        .unwrap();
    db.client()
        .batch_execute(&format!(
            "UPDATE trust_flag SET extra = extra || jsonb_build_object('subject', \
               jsonb_build_object('otype', subject_otype, 'oid', subject_oid, 'note', 'kept')) \
             WHERE id = {flag};
             UPDATE field_value SET value = (SELECT jsonb_agg(jsonb_set(e, '{{oid}}', \
               to_jsonb((e->>'oid')::numeric + 0.0))) FROM jsonb_array_elements(value) e) \
             WHERE subject_otype = '{}' AND subject_oid = {} AND field_id = {};
             UPDATE bi_report SET name = name || ' (renamed)' WHERE oid = {report};
             UPDATE tag SET extra = extra || '{{\"note\": \"kept\"}}' \
             WHERE subject_otype = '{}' AND subject_oid = {} AND name = '{}'",
            parts[0],
            parts[1],
            parts[2],
            t[0],
            t[1],
            t[2].replace('\'', "''")
        ))
        .unwrap();
    ok(&["dump", "-o", s(&before)], url);
    let o = lookmig(&["restore", s(&bundle), "--json"], url);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    // The four changes (and newer-record conflicts: the flag left on its retired report, which
    // the bundle did not move, and whatever still refers to the report kept).
    let mut judged: Vec<(String, String, String)> = summary["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] != "newer")
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap().to_string();
            (text("op"), text("kind"), text("key"))
        })
        .collect();
    judged.sort();
    let want =
        |op: &str, kind: &str, key: &str| (op.to_string(), kind.to_string(), key.to_string());
    assert_eq!(
        judged,
        [
            want("create", "tag", &created),
            want("delete", "bi_report", &report),
            want("delete", "tag", &tag),
            want("delete", "view_event", &viewed),
            want("update", "field_value", &value),
            want("update", "trust_flag", &flag),
        ],
        "{summary}"
    );
    assert_eq!(summary["already_applied"], 2, "{summary}");
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&before, &dump, "a refused restore changed the database");
}

/// A rollback gives the export's record back where the row is as the restore left it (the
/// database writes those itself: src/db/guarded.rs, `exact_update`), and judges field by field
/// where a curator edited the row since: an edit to a field the rollback does not touch is
/// kept, one to a field it sets back is a conflict.
#[test]
fn a_rollback_keeps_a_later_edit_of_another_field_and_refuses_to_undo_one_of_its_own() {
    let db = TestDb::new("rollback_edits");
    let url = Some(db.url.as_str());
    let (tmp, export, bundle) = demo_loaded(&db);
    ok(&["restore", s(&bundle)], url);
    use lookmig::changeset::Op;
    let rekeyed = |other: &str| {
        first_change(&bundle, Op::Update, |c| {
            let sets = |f: &str| c.set.iter().any(|(k, _)| k == f);
            c.kind == "bi_report" && c.key != other && sets("external_id") && !sets("name")
        })
        .key
    };
    let renamed = rekeyed("");
    let moved = rekeyed(&renamed);
    db.client()
        .batch_execute(&format!(
            "UPDATE bi_report SET name = name || ' (edited)' WHERE oid = {renamed};
             UPDATE bi_report SET external_id = external_id || '-edited' WHERE oid = {moved}"
        ))
        .unwrap();
    let o = lookmig(&["rollback", s(&bundle), "--json"], url);
    assert_eq!(o.code, 3, "{}\n{}", o.stdout, o.stderr);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    let conflicts: Vec<(&str, &str)> = summary["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["key"].as_str().unwrap()))
        .collect();
    assert_eq!(conflicts, [("bi_report", moved.as_str())], "{summary}");
    // With the second edit undone, the rollback goes through and keeps the first.
    db.client()
        .batch_execute(&format!(
            "UPDATE bi_report SET external_id = left(external_id, -7) WHERE oid = {moved}"
        ))
        .unwrap();
    ok(&["rollback", s(&bundle)], url);
    let dump = tmp.path().join("dump.ndjson");
    ok(&["dump", "-o", s(&dump)], url);
    let raw = zstd::decode_all(std::fs::File::open(&export).unwrap()).unwrap();
    let mut want = std::collections::BTreeMap::new();
    let mut edited = 0;
    for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut v: Value = serde_json::from_slice(line).unwrap();
        if v["kind"] == "bi_report" && v["oid"] == renamed.parse::<i64>().unwrap() {
            let name = format!("{} (edited)", v["name"].as_str().unwrap());
            v["name"] = Value::from(name);
            edited += 1;
        }
        *want
            .entry(lookmig::record::canonical_json(&v))
            .or_insert(0usize) += 1;
    }
    assert_eq!(edited, 1);
    assert!(
        records(&dump) == want,
        "the rollback did not give back the export with the one edit kept"
    );
}

#[test]
fn a_killed_restore_leaves_the_database_unchanged_and_a_second_one_succeeds() {
    let db = TestDb::new("kill");
    let url = Some(db.url.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("gen.ndjson.zst");
    let bundle = tmp.path().join("bundle");
    let offline = tmp.path().join("offline.ndjson");
    let dump = tmp.path().join("dump.ndjson");
    ok(
        &[
            "generate",
            "--reports",
            "5000",
            "--seed",
            "5",
            "-o",
            s(&export),
        ],
        None,
    );
    ok(&["migrate", s(&export), "-o", s(&bundle)], None);
    ok(
        &[
            "restore",
            s(&bundle),
            "--onto",
            s(&export),
            "-o",
            s(&offline),
        ],
        None,
    );
    ok(&["db", "init"], url);
    ok(&["db", "load", s(&export)], url);

    let mut child = Command::new(env!("CARGO_BIN_EXE_lookmig"))
        .args(["restore", s(&bundle), "--database", &db.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it writes: its backend holds a row-exclusive lock on a catalog table
    // (taken by the deletes and the COPY, after every row was locked and checked).
    wait_for(
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE a.application_name = 'lookmig' AND a.datname = current_database()
           AND l.mode = 'RowExclusiveLock' AND l.granted AND l.relation IS NOT NULL",
        120,
        "the restore never started writing",
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the restore ended ({status}) before it could be killed mid-way; make the export larger");
            }
        },
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the restore finished before the kill");

    ok(&["dump", "-o", s(&dump)], url);
    same_records(&export, &dump, "a killed restore changed the database");

    // The server rolls back the dead session; the next restore waits for its locks and succeeds.
    let o = ok(&["restore", s(&bundle), "--json"], url);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["already_applied"], 0, "{summary}");
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&offline, &dump, "restore after a killed one");
}

/// The same server URL with the port set to `port` (where nothing listens).
fn with_port(url: &str, port: u16) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (user, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        format!("{scheme}://{user}{host}:{port}{tail}")
    } else {
        format!("{url} port={port}")
    }
}

/// `url` with the password `secret` (trust auth ignores it, so the server still answers).
fn with_password(url: &str, secret: &str) -> String {
    if url.contains("://") {
        let bad = url.replacen("postgres@", &format!("postgres:{secret}@"), 1);
        assert!(bad.contains(secret), "no user in {url}");
        bad
    } else {
        format!("{url} password={secret}")
    }
}

#[test]
fn the_password_never_appears_in_output_or_errors() {
    let db = TestDb::new("secret");
    let tmp = tempfile::tempdir().unwrap();
    let export = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.ndjson.zst");
    let bundle = tmp.path().join("bundle");
    ok(&["migrate", s(&export), "-o", s(&bundle)], None);
    let dump = tmp.path().join("never.ndjson");
    // A URL with a password and a database that does not exist: the server answers (it names
    // the database), so every command gets as far as the database, bundle read and all.
    let no_db = with_password(&with_dbname(&db.url, "no_such_db"), "Sup3rS3cret");
    // The same with a port where nothing listens: the connection itself fails.
    let no_port = with_password(&with_port(&db.url, 1), "Sup3rS3cret");
    for (what, bad, reached) in [
        // The server's own answer, not lookmig's context (which names the database too).
        (
            "a missing database",
            &no_db,
            "\"no_such_db\" does not exist",
        ),
        ("a wrong port", &no_port, "cannot connect"),
    ] {
        for args in [
            vec!["db", "init"],
            vec!["db", "load", s(&export)],
            vec!["dump", "-o", s(&dump)],
            vec!["restore", s(&bundle)],
            vec!["rollback", s(&bundle)],
        ] {
            for (how, flag) in [("--database", true), ("DATABASE_URL", false)] {
                let mut a = args.clone();
                if flag {
                    a.extend(["--database", bad.as_str()]);
                }
                let o = lookmig(&a, if flag { None } else { Some(bad) });
                assert_eq!(o.code, 1, "{args:?} {how} {what}: {}", o.stderr);
                assert!(
                    o.stderr.contains(reached),
                    "{args:?} {how} {what}: did not get as far as the database: {}",
                    o.stderr
                );
                assert!(
                    !o.stderr.contains("Sup3rS3cret") && !o.stdout.contains("Sup3rS3cret"),
                    "{args:?} {how} {what}: {}",
                    o.stderr
                );
            }
        }
    }
    assert!(!dump.exists());
    let o = lookmig(&["restore", "--help"], Some(&no_db));
    assert!(!o.stdout.contains("Sup3rS3cret"), "{}", o.stdout);
}

/// The database restore counts the change set's lines as it streams them (the bundle check
/// before it only checksums that part): a change set longer than its manifest says is refused
/// before anything is committed, in one transaction and in batches.
#[test]
fn a_change_set_longer_than_its_manifest_says_is_refused_before_any_commit() {
    use sha2::{Digest, Sha256};
    let db = TestDb::new("count");
    let url = Some(db.url.as_str());
    let (tmp, export, bundle) = demo_loaded(&db);
    // One line more (a copy of the first), the checksum made to match, the count left.
    let part = bundle.join("changes.ndjson.zst");
    let mut text = zstd::decode_all(&std::fs::read(&part).unwrap()[..]).unwrap();
    let n = text.iter().filter(|&&b| b == b'\n').count();
    let first = text[..=text.iter().position(|&b| b == b'\n').unwrap()].to_vec();
    text.extend_from_slice(&first);
    let bytes = zstd::encode_all(&text[..], 3).unwrap();
    std::fs::write(&part, &bytes).unwrap();
    let mpath = bundle.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "changes.ndjson.zst" {
            assert_eq!(f["records"], n as u64);
            f["sha256"] = lookmig::input::hex(&Sha256::digest(&bytes)).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let dump = tmp.path().join("dump.ndjson");
    for extra in [&[][..], &["--batch-size", "5"][..]] {
        let mut args = vec!["restore", s(&bundle)];
        args.extend(extra);
        let o = lookmig(&args, url);
        assert_eq!(o.code, 1, "{extra:?}: {}", o.stderr);
        let want = format!(
            "holds {} change lines, the manifest says {n}; nothing was committed",
            n + 1
        );
        assert!(o.stderr.contains(&want), "{extra:?}: {}", o.stderr);
        ok(&["dump", "-o", s(&dump), "--overwrite"], url);
        same_records(&export, &dump, "a refused change set changed the database");
    }
    // Offline, the bundle check counts it.
    let o = lookmig(
        &[
            "restore",
            s(&bundle),
            "--onto",
            s(&export),
            "-o",
            s(&dump),
            "--overwrite",
        ],
        None,
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("the manifest says"), "{}", o.stderr);
}

/// `db load` writes the rows as a vacuumed catalog holds them (`COPY … FREEZE` into tables
/// emptied in its transaction): the pages are marked all-visible, so the first restore after a
/// load does not rewrite every page it reads.
#[test]
fn load_writes_the_rows_frozen_and_visible() {
    let db = TestDb::new("frozen");
    let (_tmp, _export, _bundle) = demo_loaded(&db);
    let mut c = db.client();
    for t in [
        "bi_report",
        "bi_report_column",
        "field_value",
        "other_record",
    ] {
        let (pages, visible): (i32, i32) = {
            let r = c
                .query_one(
                    "SELECT relpages, relallvisible FROM pg_class WHERE relname = $1",
                    &[&t],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert!(pages > 0, "{t}: no pages");
        assert_eq!(
            visible, pages,
            "{t}: {visible} of {pages} pages all-visible"
        );
    }
}
