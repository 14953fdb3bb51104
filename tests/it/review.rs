//! Review and sign-off: `migrate --decisions` (a chosen value wins, an unresolved report is
//! mapped, a decision that matches nothing or contradicts another is exit 1 naming its line),
//! `inspect --csv` (headers, RFC 4180 quoting) and `review` (the page is written, self-contained).

use crate::util::{self, arg, canonical, changes, manifest, sample, sha256_hex, values, Dir};
use serde_json::{json, Value};
use std::path::Path;

const HEAD: &str = "action,server_id,survivor_otype,survivor_oid,kind,merge_key,choose_oid,value_sha256,legacy_external_id,stable_external_id,note\n";

/// The conflict of sample 10 over the description (field 4): 102's value won, 101's lost.
fn description_conflict(bundle: &Path) -> Value {
    values(&bundle.join("conflicts.ndjson.zst"))
        .into_iter()
        .find(|c| c["merge_key"] == "field 4")
        .expect("sample 10 has a conflict over field 4")
}

/// `lookmig migrate EXPORT -o BUNDLE --decisions FILE`, run in `d`, the bundle named in `d`.
fn migrate_deciding(d: &Dir, export: &Path, bundle: &str, decisions: &Path) -> util::Out {
    util::migrate(
        d.path(),
        export,
        &d.join(bundle),
        &["--decisions".into(), arg(decisions)],
    )
}

fn survivor_record(bundle: &Path, key: &str) -> Value {
    let c = changes(bundle)
        .into_iter()
        .find(|c| c["kind"] == "field_value" && c["key"] == key && c["op"] != "delete")
        .unwrap_or_else(|| panic!("no change leaves field_value {key}"));
    util::after(&c)
}

#[test]
fn a_chosen_value_wins_and_the_conflict_is_marked_decided() {
    let d = Dir::new();
    let export = sample("10-collapse-versions").join("export.ndjson");
    util::migrate(d.path(), &export, &d.join("a.bundle"), &[]).ok();
    let c = description_conflict(&d.join("a.bundle"));
    assert_eq!(c["loser"]["value"], "<p>Old description.</p>");
    let sha = sha256_hex(canonical(&c["loser"]).as_bytes());
    let file = d.write(
        "decisions.csv",
        format!("{HEAD}choose,,bi_report,103,field_value,field 4,101,{sha},,,\"Sales v1: Old, \"\"kept\"\"\"\n"),
    );
    let out = migrate_deciding(&d, &export, "b.bundle", &file).ok();
    assert!(
        out.stdout.contains("decisions applied: 1"),
        "{}",
        out.stdout
    );
    let b = d.join("b.bundle");
    let r = survivor_record(&b, "bi_report:103:4");
    assert_eq!(r["value"], "<p>Old description.</p>");
    assert_eq!(r["subject"], json!({"otype":"bi_report","oid":103}));
    // Still listed, now against the rule's winner, and marked with the decision's line.
    let c = description_conflict(&b);
    assert_eq!(c["winner"]["value"], "<p>Old description.</p>");
    assert_eq!(c["loser"]["value"], "<p>Revenue by region.</p>");
    assert_eq!(c["decision_line"], 2);
    let report = util::report(&b);
    assert_eq!(report["counts"]["decisions"], 1);
    let used = values(&b.join("decisions.ndjson.zst"));
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["line"], 2);
    assert_eq!(used[0]["applied"], 1);
    assert_eq!(
        manifest(&b)["options"]["decisions_sha256"],
        sha256_hex(&std::fs::read(&file).unwrap())
    );
    assert_eq!(
        manifest(&d.join("a.bundle"))["options"]["decisions_sha256"],
        Value::Null
    );
    // The decided bundle is a bundle like any other: it verifies and keeps the conservation law.
    d.run(["verify", &arg(&b), "--export", &arg(&export)]).ok();
    // The same file again gives the same bundle (the decision matches the same record).
    migrate_deciding(&d, &export, "c.bundle", &file).ok();
    assert_eq!(util::files(&b), util::files(&d.join("c.bundle")));
}

#[test]
fn a_trust_flag_decision_takes_the_other_flag() {
    let d = Dir::new();
    let export = sample("10-collapse-versions").join("export.ndjson");
    let file = d.write(
        "decisions.csv",
        format!("{HEAD}choose,,bi_report,103,trust_flag,ENDORSEMENT by user 5,101,,,,\n"),
    );
    migrate_deciding(&d, &export, "b.bundle", &file).ok();
    let ch = changes(&d.join("b.bundle"));
    let flag = |id: &str| {
        ch.iter()
            .find(|c| c["kind"] == "trust_flag" && c["key"].as_str() == Some(id))
            .map(|c| (c["op"].clone(), util::after(c)))
    };
    let (op, rec) = flag("502").expect("flag 502 changes");
    assert_eq!(op, "update");
    assert_eq!(rec["subject"]["oid"], 103, "502 moves to the survivor");
    assert_eq!(flag("501").expect("flag 501 changes").0, "delete");
}

#[test]
fn a_map_decision_resolves_an_unresolved_report_as_the_id_map_would() {
    let d = Dir::new();
    let export = sample("06-unresolved").join("export.ndjson");
    let file = d.write(
        "decisions.csv",
        "action,server_id,legacy_external_id,stable_external_id\nmap,1,report-alpha,dashboard/77\n",
    );
    let out = migrate_deciding(&d, &export, "b.bundle", &file).ok();
    assert!(
        out.stdout.contains("1 unresolved reports mapped"),
        "{}",
        out.stdout
    );
    let b = d.join("b.bundle");
    let idmap = values(&b.join("idmap.ndjson.zst"));
    let line = idmap
        .iter()
        .find(|l| l["oid"] == 601)
        .expect("report 601 is in the id map");
    assert_eq!(line["stable_external_id"], "dashboard/77");
    let unresolved = values(&b.join("unresolved.ndjson.zst"));
    assert!(unresolved.iter().all(|u| u["oid"] != 601), "{unresolved:?}");
    // Its column follows, as with --id-map.
    let col = changes(&b)
        .into_iter()
        .find(|c| c["kind"] == "bi_report_column" && c["key"] == "6011")
        .expect("column 6011 is re-keyed");
    assert_eq!(util::after(&col)["external_id"], "dashboard/77.total");
}

#[test]
fn a_decision_that_matches_nothing_is_exit_1_naming_its_line() {
    let d = Dir::new();
    let export = sample("10-collapse-versions").join("export.ndjson");
    let file = d.write(
        "decisions.csv",
        format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,,,,\nchoose,,bi_report,103,field_value,field 99,101,,,,\nmap,1,,,,,,,no-such-report,look/5,\n"
        ),
    );
    let out = migrate_deciding(&d, &export, "b.bundle", &file)
        .code(1)
        .stderr_has("decisions.csv:3: matches no conflict")
        .stderr_has("decisions.csv:4: matches no report");
    assert!(!out.stderr.contains("decisions.csv:2"), "{}", out.stderr);
    assert!(!d.join("b.bundle").exists(), "nothing is written");
    // A hash that no longer matches the record (the export changed) is the same error.
    let file = d.write(
        "stale.csv",
        format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,{},,,\n",
            "ab".repeat(32)
        ),
    );
    migrate_deciding(&d, &export, "b.bundle", &file)
        .code(1)
        .stderr_has("stale.csv:2: matches no conflict");
}

#[test]
fn contradicting_decisions_are_exit_1_naming_both_lines() {
    let d = Dir::new();
    let export = sample("10-collapse-versions").join("export.ndjson");
    let file = d.write(
        "decisions.csv",
        format!(
            "{HEAD}choose,,bi_report,103,field_value,field 4,101,,,,\nchoose,,bi_report,103,field_value,field 4,102,,,,\n"
        ),
    );
    d.run(["plan", &arg(&export), "--decisions", &arg(&file)])
        .code(1)
        .stderr_has("decisions.csv:3: contradicts line 2");
    // A map decision that contradicts the --id-map file.
    let export = sample("06-unresolved").join("export.ndjson");
    let map = d.write(
        "map.csv",
        "legacy_external_id,stable_external_id\nreport-alpha,dashboard/1\n",
    );
    let file = d.write(
        "decisions.csv",
        "action,legacy_external_id,stable_external_id\nmap,report-alpha,dashboard/2\n",
    );
    d.run([
        "plan",
        &arg(&export),
        "--id-map",
        &arg(&map),
        "--decisions",
        &arg(&file),
    ])
    .code(1)
    .stderr_has("decisions.csv:2: maps \"report-alpha\" to \"dashboard/2\", but line 2 of the --id-map file");
}

#[test]
fn inspect_csv_writes_headers_and_quotes_commas_and_quotes() {
    let d = Dir::new();
    let export = d.write(
        "export.ndjson",
        [
            r#"{"kind":"bi_server","id":1,"type":"looker"}"#,
            r#"{"kind":"bi_report","oid":1,"server_id":1,"external_id":"dashboard_5_1","name":"Sales, \"EMEA\"","last_updated":"2023-01-01T00:00:00Z"}"#,
            r#"{"kind":"bi_report","oid":2,"server_id":1,"external_id":"dashboard_5_2","name":"Sales, \"EMEA\" v2","last_updated":"2024-01-01T00:00:00Z"}"#,
            r#"{"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":2},"value":"He said \"hi\", twice"}"#,
            r#"{"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":1},"value":"older"}"#,
            r#"{"kind":"bi_report","oid":3,"server_id":1,"external_id":"odd, \"one\""}"#,
            "",
        ]
        .join("\n"),
    );
    let b = d.join("x.bundle");
    util::migrate(d.path(), &export, &b, &[]).ok();
    d.run(["inspect", &arg(&b), "--csv", &arg(&d.join("csv"))])
        .ok();
    assert_eq!(
        util::names(&d.join("csv")),
        ["conflicts.csv", "groups.csv", "idmap.csv", "unresolved.csv"]
    );
    let read = |name: &str| -> (String, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(d.join("csv").join(name)).unwrap();
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        let mut rows = vec![head];
        for r in rdr.records() {
            rows.push(r.unwrap().iter().map(String::from).collect());
        }
        (text, rows)
    };
    let (text, rows) = read("conflicts.csv");
    assert_eq!(
        rows[0][..5],
        [
            "survivor_otype",
            "survivor_oid",
            "report_name",
            "kind",
            "merge_key"
        ]
    );
    assert_eq!(rows.len(), 2, "{text}");
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    assert_eq!(rows[1][col("winner_value")], "He said \"hi\", twice");
    assert_eq!(rows[1][col("report_name")], "Sales, \"EMEA\" v2");
    assert!(text.contains("\"He said \"\"hi\"\", twice\""), "{text}");
    let (_, rows) = read("groups.csv");
    assert_eq!(rows[0][0], "server_id");
    assert_eq!(rows[1][3], "Sales, \"EMEA\" v2");
    assert_eq!(rows[1][6], "2 1");
    let (text, rows) = read("unresolved.csv");
    assert_eq!(
        rows[0],
        [
            "server_id",
            "oid",
            "external_id",
            "suggested_stable_external_id"
        ]
    );
    assert_eq!(rows[1][2], "odd, \"one\"");
    assert!(text.contains("\"odd, \"\"one\"\"\""), "{text}");
    let (_, rows) = read("idmap.csv");
    assert_eq!(rows[0][0], "server_id");
    assert_eq!(rows.len(), 3);
    // Like every output: an existing directory is refused unless --overwrite.
    d.run(["inspect", &arg(&b), "--csv", &arg(&d.join("csv"))])
        .code(1)
        .stderr_has("already exists");
    d.run([
        "inspect",
        &arg(&b),
        "--csv",
        &arg(&d.join("csv")),
        "--overwrite",
    ])
    .ok();
}

#[test]
fn review_writes_one_self_contained_page_with_the_bundle_id() {
    let d = Dir::new();
    let export = sample("10-collapse-versions").join("export.ndjson");
    let b = d.join("a.bundle");
    util::migrate(d.path(), &export, &b, &[]).ok();
    let id = sha256_hex(&std::fs::read(b.join("manifest.json")).unwrap());
    let out = d
        .run(["review", &arg(&b), "-o", &arg(&d.join("review.html"))])
        .ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    let html = std::fs::read_to_string(d.join("review.html")).unwrap();
    assert!(html.contains(&format!("--expect {id}")));
    for outside in ["src=\"http", "href=\"http", "<link", "@import", "src=\"//"] {
        assert!(!html.contains(outside), "the page refers to {outside}");
    }
    assert!(html.contains("<svg"), "charts are inline SVG");
    // Rich text cannot end a script element early.
    assert_eq!(
        html.matches("</script>").count(),
        html.matches("<script").count()
    );
    // With no room for details, the conflicts are still embedded: they are the decisions.
    let out = d
        .run([
            "review",
            &arg(&b),
            "-o",
            &arg(&d.join("small.html")),
            "--details-mb",
            "0",
        ])
        .ok();
    assert!(out.stdout.contains("(0 with details)"), "{}", out.stdout);
    let html = std::fs::read_to_string(d.join("small.html")).unwrap();
    assert!(html.contains("id=\"c0\"") && html.contains("Old description."));
}
