//! The live catalog (issue 8) against a real PostgreSQL server: what curators make between the
//! export and the restore (newer records, a stale bundle), curators writing while the restore
//! runs, a restore in batches killed and resumed, and `lock_timeout`.
//!
//! Every test runs the real binary on a database of its own (`tests/common/db.rs`: a throwaway
//! cluster unless `DATABASE_URL` names a server); without the server binaries they fail.

#[path = "common/db.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

/// Sample 10: reports 101 and 102 are retired, 103 survives and takes `dashboard/12`.
fn collapse() -> PathBuf {
    sample("10-collapse-versions/export.ndjson")
}

/// `export` with `extra` lines appended: the catalog as curators left it after the export.
fn with_lines(export: &Path, extra: &[String], out: &Path) {
    let mut text = std::fs::read_to_string(export).unwrap();
    for l in extra {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(out, text).unwrap();
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The bundle id `inspect --json` shows (what `restore --expect` wants).
fn bundle_id(bundle: &Path) -> String {
    lookmig::bundle::open(bundle).unwrap().id().unwrap()
}

/// A migrated sample 10 and a database holding it plus `extra` (made after the export).
struct Setup {
    db: TestDb,
    tmp: tempfile::TempDir,
    bundle: PathBuf,
    /// The export plus the newer records: what the database holds before the restore.
    target: PathBuf,
    id: String,
}

impl Setup {
    fn new(test: &str, extra: &[String]) -> Setup {
        let db = TestDb::new(test);
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        let target = tmp.path().join("target.ndjson");
        ok(&["migrate", s(&collapse()), "-o", s(&bundle)], None);
        with_lines(&collapse(), extra, &target);
        ok(&["db", "init"], Some(&db.url));
        ok(&["db", "load", s(&target)], Some(&db.url));
        let id = bundle_id(&bundle);
        let setup = Setup {
            db,
            tmp,
            bundle,
            target,
            id,
        };
        setup.same_as(&setup.target.clone(), "load");
        setup
    }

    /// Restores the bundle offline (with `extra` options) onto the target export, as
    /// `offline.ndjson`.
    fn restore_offline(&self, extra: &[&str]) -> Out {
        let out = self.path("offline.ndjson");
        let mut args = vec![
            "restore",
            s(&self.bundle),
            "--onto",
            s(&self.target),
            "-o",
            s(&out),
            "--overwrite",
        ];
        args.extend(extra);
        lookmig(&args, None)
    }

    /// [`Setup::restore_offline`], which must succeed, and the database compared with it.
    #[track_caller]
    fn same_as_offline(&self, extra: &[&str], what: &str) {
        let o = self.restore_offline(extra);
        assert_eq!(o.code, 0, "offline restore {extra:?}: {}", o.stderr);
        self.same_as(&self.path("offline.ndjson"), what);
    }

    fn url(&self) -> Option<&str> {
        Some(self.db.url.as_str())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Dumps the database and compares it with `expected`, record for record.
    #[track_caller]
    fn same_as(&self, expected: &Path, what: &str) {
        let dump = self.path("dump.ndjson");
        ok(&["dump", "-o", s(&dump), "--overwrite"], self.url());
        same_records(expected, &dump, what);
    }
}

/// One kind of record made after the export that refers to a retired version: refused without
/// `--carry-new` (exit 3, listed with kind, key and the version, nothing written); carried onto
/// the survivor with it, recorded in `lookmig_carried`, the same records as the offline restore
/// gives, and rolled back to exactly the catalog before.
fn newer_record(test: &str, line: Value, kind: &str, key: &str, names: &str) -> Setup {
    let t = Setup::new(test, &[line.to_string()]);
    let url = t.url();

    // Without --carry-new: a conflict, listed; nothing written.
    let o = lookmig(&["restore", s(&t.bundle), "--expect", &t.id], url);
    assert_eq!(o.code, 3, "{test}: {}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(&format!("newer {kind} {key:?}")) && o.stderr.contains(names),
        "{test}: the conflict does not name {kind} {key:?} and {names}: {}",
        o.stderr
    );
    assert!(o.stderr.contains("--carry-new"), "{}", o.stderr);
    t.same_as(&t.target, &format!("{test}: a refused restore wrote"));
    let o = lookmig(&["restore", s(&t.bundle), "--json"], url);
    assert_eq!(o.code, 3, "{}", o.stderr);
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    let listed: Vec<&Value> = j["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "newer")
        .collect();
    assert_eq!(listed.len(), 1, "{test}: {j}");
    assert_eq!(listed[0]["kind"], kind);
    assert_eq!(listed[0]["key"], key);
    assert!(
        listed[0]["refers_to"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| names.contains(&r.as_str().unwrap().replace(':', " "))),
        "{test}: {j}"
    );
    // Offline, the same refusal.
    let o = t.restore_offline(&[]);
    assert_eq!(o.code, 3, "{test} offline: {}", o.stderr);
    assert!(
        o.stderr.contains(&format!("newer {kind} {key:?}")),
        "{}",
        o.stderr
    );

    // With --carry-new: carried, counted, recorded; the same records as offline.
    let o = ok(
        &[
            "restore",
            s(&t.bundle),
            "--expect",
            &t.id,
            "--carry-new",
            "--json",
        ],
        url,
    );
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["conflict_count"], 0, "{test}: {j}");
    assert_eq!(j["newer"], 1, "{test}: {j}");
    assert_eq!(j["carried"][kind], 1, "{test}: {j}");
    let changes = j["carry_changes"].as_i64().unwrap();
    assert!(changes >= 1, "{test}: {j}");
    let mut c = t.db.client();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM lookmig_carried"),
        changes,
        "{test}: lookmig_carried does not hold the changes that carried"
    );
    t.same_as_offline(
        &["--carry-new"],
        &format!("{test}: --carry-new onto the database vs offline"),
    );
    // Nothing of it is left on a retired version, and the text summary counts it.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM (SELECT subject_oid FROM tag UNION ALL SELECT subject_oid FROM star
             UNION ALL SELECT subject_oid FROM field_value UNION ALL SELECT subject_oid FROM trust_flag
             UNION ALL SELECT subject_oid FROM conversation) s WHERE subject_oid IN (101, 102)"
        ),
        0,
        "{test}"
    );
    t
}

/// Rolls back on the database and offline: both give the catalog before the restore.
fn rolls_back(t: &Setup) {
    let o = ok(&["rollback", s(&t.bundle), "--json"], t.url());
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(j["carry_changes"].as_i64().unwrap() >= 1, "{j}");
    t.same_as(&t.target, "rollback after --carry-new");
    let mut c = t.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lookmig_carried"), 0);
    let back = t.path("back.ndjson");
    ok(
        &[
            "rollback",
            s(&t.bundle),
            "--onto",
            s(&t.path("offline.ndjson")),
            "-o",
            s(&back),
        ],
        None,
    );
    same_records(&t.target, &back, "offline rollback after --carry-new");
}

#[test]
fn a_new_tag_on_a_retired_report_is_refused_or_carried() {
    let line = json!({"kind":"tag","name":"quarterly","subject":{"otype":"bi_report","oid":102},"added_by":9});
    let t = newer_record(
        "tag",
        line,
        "tag",
        "bi_report:102:quarterly",
        "bi_report 102",
    );
    let mut c = t.db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM tag WHERE subject_oid = 103 AND name = 'quarterly'"
        ),
        1
    );
    rolls_back(&t);
}

#[test]
fn a_new_tag_the_survivor_already_has_is_not_doubled() {
    let line = json!({"kind":"tag","name":"finance","subject":{"otype":"bi_report","oid":102},"added_by":9});
    let t = newer_record(
        "tag_twice",
        line,
        "tag",
        "bi_report:102:finance",
        "bi_report 102",
    );
    let mut c = t.db.client();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM tag WHERE name = 'finance'"),
        1
    );
    // The survivor's own tag (added by user 5) is the one kept.
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM tag WHERE name = 'finance' AND subject_oid = 103 AND extra->>'added_by' = '5'"),
        1
    );
    rolls_back(&t);
}

#[test]
fn a_new_star_on_a_retired_report_is_refused_or_carried() {
    let line = json!({"kind":"star","user_id":8,"subject":{"otype":"bi_report","oid":101},"ts_created":"2024-02-01T00:00:00Z"});
    let t = newer_record("star", line, "star", "bi_report:101:8", "bi_report 101");
    let mut c = t.db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM star WHERE subject_oid = 103 AND user_id = 8"
        ),
        1
    );
    rolls_back(&t);
}

#[test]
fn a_new_steward_naming_a_retired_report_is_refused_or_repaired() {
    let line = json!({"kind":"field_value","field_id":8,"subject":{"otype":"table","oid":900},"value":[{"otype":"user","oid":7},{"otype":"bi_report","oid":101}]});
    let t = newer_record(
        "steward",
        line,
        "field_value",
        "table:900:8",
        "bi_report 101",
    );
    let mut c = t.db.client();
    let v: Value = c
        .query_one(
            "SELECT value FROM field_value WHERE subject_otype = 'table' AND subject_oid = 900 AND field_id = 8",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        v,
        json!([{"otype":"user","oid":7},{"otype":"bi_report","oid":103}])
    );
    rolls_back(&t);
}

#[test]
fn a_new_trust_flag_on_a_retired_report_is_refused_or_carried() {
    let line = json!({"kind":"trust_flag","id":600,"flag_type":"WARNING","subject":{"otype":"bi_report","oid":102},"user_id":9,"reason":"<p>Numbers lag a day.</p>","ts_created":"2024-02-01T00:00:00Z"});
    let t = newer_record("flag", line, "trust_flag", "600", "bi_report 102");
    let mut c = t.db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM trust_flag WHERE id = 600 AND subject_oid = 103"
        ),
        1
    );
    rolls_back(&t);
}

#[test]
fn a_new_field_value_on_a_retired_report_is_refused_or_carried_with_its_conflict() {
    // A title on 102 after the export; the survivor gets 101's title from the bundle, so the
    // carried value loses (first non-empty in version order) and is reported.
    let line = json!({"kind":"field_value","field_id":3,"subject":{"otype":"bi_report","oid":102},"value":"Sales, by region"});
    let t = newer_record(
        "field_value",
        line,
        "field_value",
        "bi_report:102:3",
        "bi_report 102",
    );
    let mut c = t.db.client();
    let v: Value = c
        .query_one(
            "SELECT value FROM field_value WHERE subject_oid = 103 AND field_id = 3",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, json!("Sales (legacy)"));
    rolls_back(&t);
    // The conflict while carrying is reported, in the text and in --json.
    let o = ok(&["restore", s(&t.bundle), "--carry-new"], t.url());
    assert!(
        o.stdout
            .contains("conflict while carrying: field_value field 3 on bi_report:103"),
        "{}",
        o.stdout
    );
    ok(&["rollback", s(&t.bundle)], t.url());
    let o = ok(&["restore", s(&t.bundle), "--carry-new", "--json"], t.url());
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    let conflicts = j["carry_conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{j}");
    assert!(
        conflicts[0].to_string().contains("Sales, by region"),
        "the losing value is not in the report: {j}"
    );
}

#[test]
fn a_new_article_mentioning_a_retired_report_is_refused_or_repaired() {
    let line = json!({"kind":"article","id":700,"title":"Where sales live","body":"<p>See <a data-otype=\"bi_report\" data-oid=\"102\" href=\"/r/102\">Sales</a>.</p>"});
    let t = newer_record("article", line, "article", "700", "bi_report 102");
    let mut c = t.db.client();
    let body: String = c
        .query_one("SELECT body FROM article WHERE id = 700", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        body,
        "<p>See <a data-otype=\"bi_report\" data-oid=\"103\" href=\"/r/103\">Sales</a>.</p>"
    );
    rolls_back(&t);
}

#[test]
fn a_new_conversation_on_a_retired_report_is_refused_or_carried() {
    let line = json!({"kind":"conversation","id":800,"subject":{"otype":"bi_report","oid":101},"posts":[{"id":1,"user_id":5,"text":"<p>Is this still used?</p>","ts_created":"2024-02-01T00:00:00Z"}]});
    let t = newer_record("conversation", line, "conversation", "800", "bi_report 101");
    let mut c = t.db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM conversation WHERE id = 800 AND subject_oid = 103"
        ),
        1
    );
    rolls_back(&t);
}

/// A record of a kind the SPEC does not name (`other_record`, one `jsonb` each) refers by its
/// subject only; the database finds it with a join on that subject's oid held in the `jsonb`.
#[test]
fn a_new_record_of_another_kind_on_a_retired_report_is_refused_or_carried() {
    let line = json!({"kind":"view_event","id":"v-900","subject":{"otype":"bi_report","oid":101},"user_id":5});
    let t = newer_record("view_event", line, "view_event", "v-900", "bi_report 101");
    let mut c = t.db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM other_record WHERE kind = 'view_event' AND key = 'v-900' \
             AND record->'subject'->'oid' = '103'"
        ),
        1
    );
    rolls_back(&t);
}

/// Records of another kind whose subject the database cannot read as a report's oid (a string,
/// a fraction, a number past `bigint`) refer to nothing: the restore goes through, and no
/// cast of them fails the statement that looks.
#[test]
fn a_record_of_another_kind_with_an_odd_subject_oid_refers_to_nothing() {
    let lines = [
        json!({"kind":"view_event","id":"odd-1","subject":{"otype":"bi_report","oid":"101"}}),
        json!({"kind":"view_event","id":"odd-2","subject":{"otype":"bi_report","oid":101.5}}),
        json!({"kind":"view_event","id":"odd-3","subject":{"otype":"bi_report","oid":1e30}}),
        json!({"kind":"view_event","id":"odd-4","subject":{"otype":"bi_report","oid":null}}),
    ]
    .map(|l| l.to_string());
    let t = Setup::new("odd_oid", &lines);
    let o = lookmig(&["restore", s(&t.bundle), "--expect", &t.id], t.url());
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    t.same_as_offline(&[], "odd subject oids: the database vs offline");
}

#[test]
fn a_report_version_extracted_after_the_export_makes_the_bundle_stale() {
    let line = json!({"kind":"bi_report","oid":104,"server_id":1,"external_id":"dashboard_12_1710000000","name":"Sales v4","last_updated":"2024-03-01T00:00:00Z"});
    let t = Setup::new("stale", &[line.to_string()]);
    for carry in [false, true] {
        let mut args = vec!["restore", s(&t.bundle), "--expect", &t.id];
        if carry {
            args.push("--carry-new");
        }
        let o = lookmig(&args, t.url());
        assert_eq!(o.code, 3, "carry {carry}: {}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("newer bi_report \"104\"")
                && o.stderr.contains("the bundle is stale")
                && o.stderr
                    .contains("dump a fresh export and migrate it again"),
            "carry {carry}: {}",
            o.stderr
        );
        t.same_as(&t.target, &format!("carry {carry}: a stale bundle wrote"));
        let o = t.restore_offline(if carry { &["--carry-new"] } else { &[] });
        assert_eq!(o.code, 3, "offline, carry {carry}: {}", o.stderr);
        assert!(o.stderr.contains("the bundle is stale"), "{}", o.stderr);
    }
    // In batches, the pre-check stops it before the first commit.
    let o = lookmig(&["restore", s(&t.bundle), "--batch-size", "2"], t.url());
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("the bundle is stale"), "{}", o.stderr);
    t.same_as(&t.target, "a stale bundle in batches wrote");
    let mut c = t.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lookmig_restore"), 0);
}

#[test]
fn several_newer_records_carry_on_the_database_as_offline() {
    let lines = [
        json!({"kind":"tag","name":"finance","subject":{"otype":"bi_report","oid":102}}),
        json!({"kind":"tag","name":"weekly","subject":{"otype":"bi_report","oid":101}}),
        json!({"kind":"star","user_id":9,"subject":{"otype":"bi_report","oid":102}}),
        json!({"kind":"field_value","field_id":22,"subject":{"otype":"bi_report","oid":102},"value":["nordics"]}),
        json!({"kind":"article","id":701,"body":"<a DATA-OID=101 data-otype='bi_report' href='/x/101/y'>v1</a>"}),
    ]
    .map(|l| l.to_string());
    let t = Setup::new("several", &lines);
    let o = lookmig(&["restore", s(&t.bundle)], t.url());
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("5 conflict(s)"), "{}", o.stderr);
    t.same_as(&t.target, "a refused restore wrote");
    let o = ok(&["restore", s(&t.bundle), "--carry-new", "--json"], t.url());
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["newer"], 5, "{j}");
    t.same_as_offline(&["--carry-new"], "several carried: database vs offline");
    rolls_back(&t);
}

// ---------------------------------------------------------------------------------------------
// Curators writing while the restore runs

/// The (otype, oid) pairs of the id map with this action.
fn versions(bundle: &Path, action: &str) -> Vec<(String, i64)> {
    let b = lookmig::bundle::open(bundle).unwrap();
    let mut out = Vec::new();
    b.for_each_item(lookmig::bundle::IDMAP, |row: Value| {
        if row["action"] == action {
            out.push((
                row["otype"].as_str().unwrap().to_string(),
                row["oid"].as_i64().unwrap(),
            ));
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Curation rows whose subject is a report or column that does not exist, as `table:key`.
fn dangling(c: &mut postgres::Client) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in ["tag", "star", "field_value", "trust_flag", "conversation"] {
        for (otype, table) in [
            ("bi_report", "bi_report"),
            ("bi_report_column", "bi_report_column"),
        ] {
            let sql = format!(
                "SELECT x::text FROM {t} x WHERE subject_otype = '{otype}' \
                 AND NOT EXISTS (SELECT 1 FROM {table} r WHERE r.oid = x.subject_oid)"
            );
            for r in c.query(&sql, &[]).unwrap() {
                out.insert(format!("{t}:{}", r.get::<_, String>(0)));
            }
        }
    }
    out
}

/// What the catalog application does to add a tag or a star: lock the report against deletion
/// (`FOR KEY SHARE`), and add the row only if the report is still there.
fn curator_adds(c: &mut postgres::Client, oid: i64, n: u64) -> Result<bool, postgres::Error> {
    let mut tx = c.transaction()?;
    let there = tx
        .query_opt(
            "SELECT 1 FROM bi_report WHERE oid = $1 FOR KEY SHARE",
            &[&oid],
        )?
        .is_some();
    if there {
        if n.is_multiple_of(2) {
            tx.execute(
                "INSERT INTO tag (subject_otype, subject_oid, name) VALUES ('bi_report', $1, $2)",
                &[&oid, &format!("curator-{n}")],
            )?;
        } else {
            tx.execute(
                "INSERT INTO star (subject_otype, subject_oid, user_id) VALUES ('bi_report', $1, $2)",
                &[&oid, &(1_000_000 + n as i64)],
            )?;
        }
    }
    tx.commit()?;
    Ok(there)
}

#[test]
fn curators_adding_tags_during_the_restore_never_leave_one_on_a_missing_report() {
    let db = TestDb::new("writers");
    let url = Some(db.url.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let export = sample("demo.ndjson.zst");
    let bundle = tmp.path().join("bundle");
    ok(&["migrate", s(&export), "-o", s(&bundle)], None);
    ok(&["db", "init"], url);
    let mut oids: Vec<i64> = versions(&bundle, "retire")
        .into_iter()
        .chain(versions(&bundle, "rekey"))
        .filter(|(o, _)| o == "bi_report")
        .map(|(_, oid)| oid)
        .collect();
    oids.sort();
    assert!(oids.len() > 100, "{}", oids.len());
    let oids = Arc::new(oids);
    let counter = Arc::new(AtomicU64::new(0));
    // Rounds: one transaction held open a while; batches with pauses between them; batches
    // without pauses.
    type Round<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let rounds: [Round; 3] = [
        (&[], &[("LOOKMIG_TEST_PAUSE_BEFORE_COMMIT_MS", "300")]),
        (
            &["--batch-size", "400"],
            &[("LOOKMIG_TEST_PAUSE_AFTER_BATCH_MS", "40")],
        ),
        (&["--batch-size", "250"], &[]),
    ];
    for (round, (args, env)) in rounds.iter().enumerate() {
        ok(&["db", "load", "--replace", s(&export)], url);
        let mut c = db.client();
        c.batch_execute("DROP TABLE IF EXISTS lookmig_restore, lookmig_carried")
            .unwrap();
        let before = dangling(&mut c);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (stop, oids, counter, url) =
                    (stop.clone(), oids.clone(), counter.clone(), db.url.clone());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    let mut rng = fastrand::Rng::with_seed(round as u64 * 10 + w);
                    let (mut added, mut errors) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let oid = oids[rng.usize(..oids.len())];
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        match curator_adds(&mut c, oid, n) {
                            Ok(true) => added += 1,
                            Ok(false) => {}
                            // A deadlock the server broke, or a lock wait: the curator retries.
                            Err(_) => errors += 1,
                        }
                        std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
                    }
                    (added, errors)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100)); // some rows before the restore starts
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookmig"));
        cmd.args([
            "restore",
            s(&bundle),
            "--carry-new",
            "--json",
            "--database",
            &db.url,
        ])
        .args(*args);
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // and some after
        stop.store(true, Ordering::Relaxed);
        let added: u64 = writers.into_iter().map(|w| w.join().unwrap().0).sum();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "round {round}: {stderr}");
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            j["newer"].as_u64().unwrap() > 0 && added > 0,
            "round {round}: nothing was written while the restore ran: {j}"
        );
        let after = dangling(&mut c);
        let new: Vec<&String> = after.difference(&before).collect();
        assert!(
            new.is_empty(),
            "round {round}: curation points at reports that are gone: {new:?}"
        );
        // And nothing is left on a retired version either.
        let retired: Vec<i64> = versions(&bundle, "retire")
            .into_iter()
            .filter(|(o, _)| o == "bi_report")
            .map(|(_, oid)| oid)
            .collect();
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM tag WHERE subject_otype = 'bi_report' AND subject_oid = ANY($1)",
                &[&retired],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "round {round}");
    }
}

/// Waits until another session holds the row of `bi_report` `oid` (a `FOR UPDATE NOWAIT` probe
/// fails), or the child ends.
fn wait_until_held(c: &mut postgres::Client, oid: i64, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut tx = c.transaction().unwrap();
        let held = tx
            .query(
                "SELECT 1 FROM bi_report WHERE oid = $1 FOR UPDATE NOWAIT",
                &[&oid],
            )
            .is_err();
        drop(tx);
        if held {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "the restore never locked {oid}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until another session holds `bi_report` locked against writers (the restore's lock of
/// the curation tables), or the child ends.
fn wait_until_tables_locked(c: &mut postgres::Client, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let locked: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
                 WHERE r.relname = 'bi_report' AND l.mode = 'ShareRowExclusiveLock' \
                 AND l.granted AND l.pid <> pg_backend_pid())",
                &[],
            )
            .unwrap()
            .get(0);
        if locked {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "the restore never locked the tables"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A curator's `UPDATE` of a row the restore holds (survivor 103, which it re-keys) waits for
/// the restore, then either edits the restored row or, when it met the restore in a deadlock
/// (it came before the restore locked the curation tables: README "What is locked"), fails
/// with an error — never `UPDATE 0` in silence. Once the restore holds the tables too, the
/// edit always lands.
#[test]
fn a_curator_editing_a_row_the_restore_holds_edits_the_restored_row() {
    for (label, args, tables_first) in [
        ("one transaction", vec![], false),
        ("batches", vec!["--batch-size", "4"], false),
        ("one transaction, tables locked", vec![], true),
    ] {
        let t = Setup::new(
            match (args.is_empty(), tables_first) {
                (true, false) => "edit_one",
                (false, _) => "edit_batches",
                (true, true) => "edit_tables",
            },
            &[],
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_lookmig"))
            .args(["restore", s(&t.bundle), "--database", &t.db.url])
            .args(&args)
            .env("LOOKMIG_TEST_PAUSE_BEFORE_COMMIT_MS", "1500")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut probe = t.db.client();
        assert!(
            wait_until_held(&mut probe, 103, &mut child),
            "{label}: the restore ended before it held the survivor"
        );
        if tables_first {
            assert!(
                wait_until_tables_locked(&mut probe, &mut child),
                "{label}: the restore ended before it locked the tables"
            );
        }
        let mut curator = t.db.client();
        let started = Instant::now();
        let edit = curator.execute(
            "UPDATE bi_report SET name = name || ' (edited)' WHERE oid = 103",
            &[],
        );
        let waited = started.elapsed();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            waited > Duration::from_millis(200),
            "{label}: the edit did not wait for the restore ({waited:?})"
        );
        let name = match edit {
            Ok(n) => {
                assert_eq!(
                    n, 1,
                    "{label}: the curator's UPDATE changed nothing, in silence"
                );
                "Sales v3 (edited)"
            }
            Err(e) => {
                assert!(
                    !tables_first,
                    "{label}: behind the table lock the edit must land: {e}"
                );
                assert_eq!(
                    e.code(),
                    Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED),
                    "{label}: {e}"
                );
                "Sales v3"
            }
        };
        let r =
            t.db.client()
                .query_one(
                    "SELECT name, external_id FROM bi_report WHERE oid = 103",
                    &[],
                )
                .unwrap();
        assert_eq!(
            (r.get::<_, String>(0), r.get::<_, String>(1)),
            (name.to_string(), "dashboard/12".to_string()),
            "{label}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Restore in batches, killed and resumed; lock_timeout

/// `lookmig_restore`'s row for a direction: (next_change, total, state).
fn progress(c: &mut postgres::Client, direction: &str) -> Option<(i64, i64, String)> {
    let exists: bool = c
        .query_one("SELECT to_regclass('lookmig_restore') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    c.query_opt(
        "SELECT next_change, total, state FROM lookmig_restore WHERE direction = $1",
        &[&direction],
    )
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[test]
fn a_restore_in_batches_killed_between_batches_resumes_to_the_one_transaction_result() {
    let db = TestDb::new("batches");
    let url = Some(db.url.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("gen.ndjson.zst");
    let bundle = tmp.path().join("bundle");
    let dump = tmp.path().join("dump.ndjson");
    ok(
        &[
            "generate",
            "--reports",
            "300",
            "--seed",
            "3",
            "-o",
            s(&export),
        ],
        None,
    );
    ok(&["migrate", s(&export), "-o", s(&bundle)], None);
    ok(&["db", "init"], url);
    ok(&["db", "load", s(&export)], url);
    let mut c = db.client();
    let baseline = dangling(&mut c);
    const N: i64 = 400;

    let mut child = Command::new(env!("CARGO_BIN_EXE_lookmig"))
        .args(["restore", s(&bundle), "--database", &db.url])
        .args(["--batch-size", &N.to_string()])
        .env("LOOKMIG_TEST_PAUSE_AFTER_BATCH_MS", "5000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at = loop {
        if let Some(p) = progress(&mut c, "restore") {
            if p.0 >= N {
                break p;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before its first batch was committed");
        }
        assert!(Instant::now() < deadline, "no batch was ever committed");
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let (next, total, state) = progress(&mut c, "restore").unwrap();
    assert_eq!((next, state.as_str()), (at.0, "running"), "{at:?}");
    assert!(
        next % N == 0 && next < total,
        "next_change {next} of {total}"
    );
    assert!(total > 3 * N, "make the export larger: {total} changes");
    let now = dangling(&mut c);
    let new: Vec<&String> = now.difference(&baseline).collect();
    assert!(
        new.is_empty(),
        "after {next} changes, curation points at missing reports: {new:?}"
    );

    // The same command again resumes after the committed batches.
    let o = ok(
        &[
            "restore",
            s(&bundle),
            "--batch-size",
            &N.to_string(),
            "--json",
        ],
        url,
    );
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["changes"], total, "{j}");
    assert!(j["already_applied"].as_i64().unwrap() >= next, "{j}");
    assert_eq!(
        progress(&mut c, "restore").map(|p| p.2),
        Some("done".to_string())
    );
    ok(&["dump", "-o", s(&dump)], url);

    // The same bundle in one transaction on a fresh database gives the same records.
    let fresh = TestDb::new("batches_fresh");
    let furl = Some(fresh.url.as_str());
    ok(&["db", "init"], furl);
    ok(&["db", "load", s(&export)], furl);
    ok(&["restore", s(&bundle)], furl);
    let one = tmp.path().join("one.ndjson");
    ok(&["dump", "-o", s(&one)], furl);
    same_records(
        &one,
        &dump,
        "batches resumed after a kill vs one transaction",
    );

    // Rollback in batches gives the export back.
    ok(&["rollback", s(&bundle), "--batch-size", "300"], url);
    ok(&["dump", "-o", s(&dump), "--overwrite"], url);
    same_records(&export, &dump, "rollback in batches");
    assert_eq!(
        progress(&mut c, "rollback").map(|p| p.2),
        Some("done".to_string())
    );
    assert_eq!(
        progress(&mut c, "restore"),
        None,
        "rollback leaves no restore row"
    );
}

#[test]
fn a_row_held_past_lock_timeout_stops_the_restore_and_names_it() {
    let t = Setup::new("lock_timeout", &[]);
    let mut holder = t.db.client();
    let mut tx = holder.transaction().unwrap();
    tx.query("SELECT * FROM bi_report WHERE oid = 103 FOR UPDATE", &[])
        .unwrap();
    let started = Instant::now();
    let o = lookmig(&["restore", s(&t.bundle), "--lock-timeout", "1"], t.url());
    let took = started.elapsed();
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(took < Duration::from_secs(8), "it took {took:?}");
    assert!(
        o.stderr.contains("bi_report oid=103") && o.stderr.contains("lock_timeout"),
        "{}",
        o.stderr
    );
    t.same_as(&t.target, "a restore stopped by lock_timeout wrote");

    // In batches: the batches before the held row are committed; the command run again once
    // the row is free resumes and finishes.
    let o = lookmig(
        &[
            "restore",
            s(&t.bundle),
            "--lock-timeout",
            "1",
            "--batch-size",
            "5",
        ],
        t.url(),
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("bi_report oid=103"), "{}", o.stderr);
    assert!(o.stderr.contains("resumes"), "{}", o.stderr);
    let mut c = t.db.client();
    let (next, _, state) = progress(&mut c, "restore").expect("a progress row");
    assert_eq!(state, "running");
    assert_eq!(next % 5, 0);
    tx.commit().unwrap();
    ok(&["restore", s(&t.bundle), "--batch-size", "5"], t.url());
    t.same_as_offline(&[], "resumed after lock_timeout vs offline");
}
