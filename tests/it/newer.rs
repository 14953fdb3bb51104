//! Restore onto a catalog that kept changing (SPEC §7): records made after the export that
//! refer to a version the bundle retires are conflicts, or with `--carry-new` follow SPEC §4–§5;
//! a version extracted after the export means the bundle is stale. A rollback after
//! `--carry-new` gives the target back. File targets here; `tests/db.rs` holds the database.

use crate::util::{self, Dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Sample 10 (survivor 103; 101 and 102 retired), migrated, and a target that is its export
/// with `lines` added after the export.
fn setup(lines: &[&str]) -> (Dir, PathBuf, PathBuf) {
    let dir = Dir::new();
    let export = dir.copy(
        &util::sample("10-collapse-versions").join("export.ndjson"),
        "export.ndjson",
    );
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &export, &bundle, &[]).ok();
    let mut text = std::fs::read_to_string(&export).unwrap();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let target = dir.write("target.ndjson", text);
    (dir, bundle, target)
}

fn find(path: &Path, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    util::values(path).into_iter().filter(|v| pred(v)).collect()
}

fn subject_is(v: &Value, oid: i64) -> bool {
    v["subject"]["otype"] == "bi_report" && v["subject"]["oid"] == oid
}

/// One record made after the export: refused without `--carry-new` (exit 3, nothing written,
/// named with the retired version), carried with it (`check` looks at the result), and undone by
/// the rollback of the result.
fn case(line: &str, key: &str, names: &str, check: impl Fn(&Path)) {
    let (dir, bundle, target) = setup(&[line]);
    let out = dir.join("out.ndjson");
    let before = dir.names();
    util::restore(dir.path(), &bundle, &target, &out, &[])
        .code(3)
        .stderr_has("newer")
        .stderr_has(key)
        .stderr_has(names)
        .stderr_has("--carry-new");
    assert_eq!(dir.names(), before, "a refused restore wrote something");
    let json = util::restore(dir.path(), &bundle, &target, &out, &["--json"]).code(3);
    let listed = json.json()["conflicts"].clone();
    assert!(
        listed.as_array().unwrap().iter().any(|c| c["op"] == "newer"
            && c["key"] == key
            && !c["refers_to"].as_array().unwrap().is_empty()),
        "{listed}"
    );

    let s = util::restore(
        dir.path(),
        &bundle,
        &target,
        &out,
        &["--carry-new", "--json"],
    )
    .ok()
    .json();
    assert_eq!(s["newer"], 1, "{s}");
    assert!(s["carry_changes"].as_u64().unwrap() >= 1, "{s}");
    let carried = dir.join("out.ndjson.carried.ndjson");
    assert!(carried.exists(), "no record of what was carried");
    check(&out);
    // Restoring the result again changes nothing.
    let again = dir.join("again.ndjson");
    let s2 = util::restore(dir.path(), &bundle, &out, &again, &["--json"])
        .ok()
        .json();
    assert_eq!(s2["applied"], 0, "{s2}");
    // The rollback reads the record beside the output and gives the target back.
    let back = dir.join("back.ndjson");
    let r = util::rollback(dir.path(), &bundle, &out, &back, &[]).ok();
    assert!(r.stdout.contains("carried"), "{}", r.stdout);
    util::assert_same_records(&back, &target, "rollback after --carry-new");
}

#[test]
fn a_tag_made_after_the_export_on_a_retired_version() {
    case(
        r#"{"kind":"tag","name":"added-after-export","subject":{"otype":"bi_report","oid":102}}"#,
        "bi_report:102:added-after-export",
        "bi_report 102 (retired; survivor 103)",
        |out| {
            let tags = find(out, |v| {
                v["kind"] == "tag" && v["name"] == "added-after-export"
            });
            assert_eq!(tags.len(), 1, "{tags:?}");
            assert!(subject_is(&tags[0], 103), "{tags:?}");
        },
    );
}

#[test]
fn a_tag_the_survivor_already_has_is_not_doubled() {
    case(
        r#"{"kind":"tag","name":"finance","subject":{"otype":"bi_report","oid":102},"added_by":9}"#,
        "bi_report:102:finance",
        "bi_report 102",
        |out| {
            let tags = find(out, |v| v["kind"] == "tag" && v["name"] == "finance");
            assert_eq!(tags.len(), 1, "{tags:?}");
            assert!(subject_is(&tags[0], 103));
            assert_eq!(
                tags[0]["added_by"], 5,
                "the survivor's own tag wins (SPEC §4)"
            );
        },
    );
}

#[test]
fn a_star_made_after_the_export() {
    case(
        r#"{"kind":"star","user_id":8,"subject":{"otype":"bi_report","oid":101},"ts_created":"2024-02-01T00:00:00Z"}"#,
        "bi_report:101:8",
        "bi_report 101",
        |out| {
            let stars = find(out, |v| v["kind"] == "star" && v["user_id"] == 8);
            assert_eq!(stars.len(), 1);
            assert!(subject_is(&stars[0], 103));
        },
    );
}

#[test]
fn an_object_set_member_pointing_at_a_retired_version() {
    case(
        r#"{"kind":"field_value","field_id":8,"subject":{"otype":"table","oid":5},"value":[{"otype":"user","oid":3},{"otype":"bi_report","oid":102}]}"#,
        "table:5:8",
        "bi_report 102",
        |out| {
            let v = find(out, |v| {
                v["kind"] == "field_value" && v["subject"]["otype"] == "table"
            });
            assert_eq!(
                v[0]["value"],
                serde_json::json!([{"otype":"user","oid":3},{"otype":"bi_report","oid":103}])
            );
        },
    );
}

#[test]
fn a_trust_flag_made_after_the_export() {
    case(
        r#"{"kind":"trust_flag","id":506,"flag_type":"DEPRECATION","subject":{"otype":"bi_report","oid":102},"user_id":6,"reason":"<p>Old.</p>","ts_created":"2024-01-01T00:00:00Z"}"#,
        "506",
        "bi_report 102",
        |out| {
            let f = find(out, |v| v["kind"] == "trust_flag" && v["id"] == 506);
            assert!(subject_is(&f[0], 103), "{f:?}");
        },
    );
}

#[test]
fn a_field_value_that_conflicts_with_the_survivor_is_carried_as_a_conflict() {
    // Field 3 (title) of 101 moved to 103 ("Sales (legacy)"); a title set on 102 after the
    // export loses to it, and the carry reports the conflict.
    let line = r#"{"kind":"field_value","field_id":3,"subject":{"otype":"bi_report","oid":102},"value":"Sales v2 title"}"#;
    case(line, "bi_report:102:3", "bi_report 102", |out| {
        let v = find(out, |v| v["kind"] == "field_value" && v["field_id"] == 3);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(subject_is(&v[0], 103));
        assert_eq!(v[0]["value"], "Sales (legacy)");
    });
    let (dir, bundle, target) = setup(&[line]);
    let out = dir.join("out.ndjson");
    let r = util::restore(dir.path(), &bundle, &target, &out, &["--carry-new"]).ok();
    assert!(
        r.stdout.contains("conflict while carrying") && r.stdout.contains("Sales v2 title"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_article_mentioning_a_retired_version() {
    case(
        r#"{"kind":"article","id":901,"title":"Guide","body":"<p>See <a data-otype=\"bi_report\" data-oid=\"102\" href=\"/r/102\">Sales</a>.</p>"}"#,
        "901",
        "bi_report 102",
        |out| {
            let a = find(out, |v| v["kind"] == "article");
            assert_eq!(
                a[0]["body"],
                "<p>See <a data-otype=\"bi_report\" data-oid=\"103\" href=\"/r/103\">Sales</a>.</p>"
            );
        },
    );
}

#[test]
fn a_conversation_started_on_a_retired_version() {
    case(
        r#"{"kind":"conversation","id":950,"subject":{"otype":"bi_report","oid":101},"posts":[{"id":1,"user_id":5,"text":"<p>Still used?</p>","ts_created":"2024-01-02T00:00:00Z"}]}"#,
        "950",
        "bi_report 101",
        |out| {
            let c = find(out, |v| v["kind"] == "conversation" && v["id"] == 950);
            assert!(subject_is(&c[0], 103), "{c:?}");
        },
    );
}

#[test]
fn a_text_field_holding_a_link_is_not_a_reference() {
    // SPEC §5: only rich text and object sets hold references; a TEXT value is left alone.
    let (dir, bundle, target) = setup(&[
        r#"{"kind":"field_value","field_id":3,"subject":{"otype":"table","oid":5},"value":"<a data-otype=\"bi_report\" data-oid=\"102\">x</a>"}"#,
    ]);
    util::restore(dir.path(), &bundle, &target, &dir.join("out.ndjson"), &[]).ok();
}

#[test]
fn a_version_extracted_after_the_export_means_the_bundle_is_stale() {
    let (dir, bundle, target) = setup(&[
        r#"{"kind":"bi_report","oid":104,"server_id":1,"external_id":"dashboard_12_1710000000","name":"Sales v4"}"#,
    ]);
    let out = dir.join("out.ndjson");
    for extra in [&[][..], &["--carry-new"][..]] {
        util::restore(dir.path(), &bundle, &target, &out, extra)
            .code(3)
            .stderr_has("bi_report \"104\"")
            .stderr_has("the bundle is stale")
            .stderr_has("migrate it again");
        assert!(!out.exists());
    }
}

#[test]
fn a_report_of_another_server_is_not_stale() {
    let (dir, bundle, target) = setup(&[
        r#"{"kind":"bi_server","id":2,"type":"tableau"}"#,
        r#"{"kind":"bi_report","oid":900,"server_id":2,"external_id":"dashboard_5_1","name":"Other"}"#,
    ]);
    util::restore(dir.path(), &bundle, &target, &dir.join("out.ndjson"), &[]).ok();
}

#[test]
fn a_restore_without_carry_new_removes_an_old_record_of_carried_curation() {
    let line =
        r#"{"kind":"tag","name":"added-after-export","subject":{"otype":"bi_report","oid":102}}"#;
    let (dir, bundle, target) = setup(&[line]);
    let out = dir.join("out.ndjson");
    util::restore(dir.path(), &bundle, &target, &out, &["--carry-new"]).ok();
    assert!(dir.join("out.ndjson.carried.ndjson").exists());
    // The same output replaced by a plain restore of the export: the old record must go, or a
    // later rollback would undo a carry that never happened.
    let export = dir.join("export.ndjson");
    util::restore(dir.path(), &bundle, &export, &out, &["--overwrite"]).ok();
    assert!(!dir.join("out.ndjson.carried.ndjson").exists());
    let back = dir.join("back.ndjson");
    util::rollback(dir.path(), &bundle, &out, &back, &[]).ok();
    util::assert_same_records(&back, &export, "rollback of a plain restore");
}
