//! Errors and refusals (SPEC §1, §6, §7, §8): bad input names its file and line and writes
//! nothing, a changed bundle is refused, a restore over a changed target stops with exit 3,
//! an existing output is never replaced by accident, and the exit codes are the SPEC's.

use crate::util::{self, arg, Dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The export of the sample `sample`.
fn export_of(sample: &str) -> PathBuf {
    util::sample(sample).join("export.ndjson")
}

/// The text of the export of the sample `sample`.
fn export_text(sample: &str) -> String {
    std::fs::read_to_string(export_of(sample)).unwrap()
}

/// A copy of the export of the sample `sample` in `dir`, named `name`.
fn copy_export(dir: &Dir, sample: &str, name: &str) -> PathBuf {
    dir.copy(&export_of(sample), name)
}

/// `lookmig migrate EXPORT -o bundle --max-errors N`, run in `dir`.
fn migrate_skipping(dir: &Dir, export: &str, max_errors: &str) -> util::Out {
    dir.run([
        "migrate",
        export,
        "-o",
        "bundle",
        "--max-errors",
        max_errors,
    ])
}

/// A JSON file of a bundle, parsed.
fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Writes `value` as the JSON file `path`, the way the bundle writes its manifest.
fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// The bi_report with oid `oid` among the records of `path`.
#[track_caller]
fn report_in(path: &Path, oid: i64) -> Value {
    util::values(path)
        .into_iter()
        .find(|r| r["kind"] == "bi_report" && r["oid"] == oid)
        .unwrap_or_else(|| panic!("no report {oid} in {}", path.display()))
}

/// Line 3 of the sample `18-malformed`, which is not valid JSON.
fn malformed_line() -> String {
    util::lines(&export_of("18-malformed"))[2].clone()
}

/// A directory holding `export.ndjson` (a copy of a sample's) and its bundle `bundle`.
fn migrated(sample: &str) -> (Dir, PathBuf, PathBuf) {
    let dir = Dir::new();
    let export = copy_export(&dir, sample, "export.ndjson");
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &export, &bundle, &[]).ok();
    (dir, export, bundle)
}

/// Asserts that `verify` and `restore` both refuse the bundle, and that restore wrote nothing.
#[track_caller]
fn assert_bundle_refused(dir: &Dir, export: &Path, bundle: &Path, needle: &str) {
    let verify = dir.run(["verify", &arg(bundle), "--export", &arg(export)]);
    assert!(
        verify.code == 3,
        "verify must fail a changed bundle with exit 3 (SPEC §8), got exit {}\n{}{}",
        verify.code,
        verify.stdout,
        verify.stderr
    );
    verify.stderr_has(needle);
    let out = dir.join("out.ndjson");
    util::restore(dir.path(), bundle, export, &out, &[])
        .code(1)
        .stderr_has(needle);
    assert!(
        !out.exists(),
        "restore wrote {} from a refused bundle",
        out.display()
    );
    dir.run(["inspect", &arg(bundle)]).code(1);
}

#[test]
fn malformed_line_names_file_and_line_and_writes_nothing() {
    let dir = Dir::new();
    copy_export(&dir, "18-malformed", "bad.ndjson");
    dir.run(["migrate", "bad.ndjson", "-o", "bundle"])
        .code(1)
        .stderr_has("bad.ndjson:3");
    assert_eq!(
        dir.names(),
        ["bad.ndjson"],
        "a failed migrate left files behind"
    );
    dir.run(["plan", "bad.ndjson"])
        .code(1)
        .stderr_has("bad.ndjson:3");
}

#[test]
fn max_errors_skips_the_bad_line_and_keeps_it_verbatim_in_the_report() {
    let dir = Dir::new();
    copy_export(&dir, "18-malformed", "bad.ndjson");
    migrate_skipping(&dir, "bad.ndjson", "1").ok();
    let report = util::report(&dir.join("bundle"));
    let skipped = report["skipped_lines"]
        .as_array()
        .expect("report.json has skipped_lines");
    assert_eq!(skipped.len(), 1, "skipped_lines: {skipped:?}");
    assert_eq!(skipped[0]["line"], 3, "skipped_lines: {skipped:?}");
    assert_eq!(
        skipped[0]["text"].as_str(),
        Some(malformed_line().as_str()),
        "the skipped line is not verbatim"
    );
    assert_eq!(report["counts"]["skipped_lines"], 1);
    // The good lines were still migrated: report 102 is re-keyed.
    let changes = util::changes(&dir.join("bundle"));
    assert!(
        changes
            .iter()
            .any(|c| c["kind"] == "bi_report" && util::after(c)["external_id"] == "dashboard/13"),
        "report 102 was not re-keyed: {changes:?}"
    );
}

#[test]
fn max_errors_is_a_limit() {
    let dir = Dir::new();
    let mut text = export_text("18-malformed");
    text.push_str("not json either\n");
    dir.write("bad.ndjson", text);
    migrate_skipping(&dir, "bad.ndjson", "1")
        .code(1)
        .stderr_has("bad.ndjson:6");
    assert!(!dir.join("bundle").exists());
    migrate_skipping(&dir, "bad.ndjson", "2").ok();
    assert_eq!(
        util::report(&dir.join("bundle"))["skipped_lines"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn duplicate_key_is_a_malformed_line_at_its_second_occurrence() {
    let dir = Dir::new();
    let mut lines = util::lines(&export_of("01-legacy-dashboard"));
    let tag = lines
        .iter()
        .find(|l| l.contains("\"kind\":\"tag\""))
        .unwrap()
        .clone();
    lines.push(tag);
    let n = lines.len();
    dir.write("dup.ndjson", lines.join("\n") + "\n");
    dir.run(["migrate", "dup.ndjson", "-o", "bundle"])
        .code(1)
        .stderr_has(&format!("dup.ndjson:{n}"));
    assert_eq!(dir.names(), ["dup.ndjson"]);
}

#[test]
fn header_version_2_is_refused() {
    let dir = Dir::new();
    let text = export_text("01-legacy-dashboard").replacen("\"version\":1", "\"version\":2", 1);
    dir.write("v2.ndjson", text);
    dir.run(["migrate", "v2.ndjson", "-o", "bundle"])
        .code(1)
        .stderr_has("version");
    assert_eq!(dir.names(), ["v2.ndjson"]);
}

#[test]
fn header_after_the_first_line_is_refused() {
    let dir = Dir::new();
    let mut lines = util::lines(&export_of("01-legacy-dashboard"));
    lines.swap(0, 1);
    dir.write("late.ndjson", lines.join("\n") + "\n");
    dir.run(["migrate", "late.ndjson", "-o", "bundle"])
        .code(1)
        .stderr_has("late.ndjson:2")
        .stderr_has("a header must be the first line");
    assert_eq!(dir.names(), ["late.ndjson"]);
    // One rule for every reader: restore refuses it the same way, and like any bad line it
    // can be copied through with --max-errors.
    let (_keep, _, bundle) = migrated("01-legacy-dashboard");
    let (late, out) = (dir.join("late.ndjson"), dir.join("out.ndjson"));
    util::restore(dir.path(), &bundle, &late, &out, &[])
        .code(1)
        .stderr_has("late.ndjson:2: a header must be the first line");
    util::restore(dir.path(), &bundle, &late, &out, &["--max-errors", "1"]).ok();
    migrate_skipping(&dir, "late.ndjson", "1").ok();
}

#[test]
fn changed_byte_in_changes_is_refused_with_a_checksum_message() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    let path = bundle.join("changes.ndjson.zst");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
    assert_bundle_refused(&dir, &export, &bundle, "checksum");
}

#[test]
fn extra_file_in_bundle_is_refused() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    std::fs::write(bundle.join("extra.txt"), "hello").unwrap();
    assert_bundle_refused(&dir, &export, &bundle, "extra.txt");
}

#[test]
fn missing_file_in_bundle_is_refused() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    std::fs::remove_file(bundle.join("idmap.ndjson.zst")).unwrap();
    assert_bundle_refused(&dir, &export, &bundle, "idmap.ndjson.zst");
}

#[test]
fn manifest_naming_a_file_outside_the_bundle_is_refused() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    // A real file beside the bundle, with the right checksum: only its place is wrong.
    let x = dir.write("x", "{}");
    let mpath = bundle.join("manifest.json");
    let mut manifest = read_json(&mpath);
    manifest["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "../x",
            "records": 1,
            "sha256": util::sha256_hex(&std::fs::read(&x).unwrap()),
        }));
    write_json(&mpath, &manifest);
    assert_bundle_refused(&dir, &export, &bundle, "../x");
}

#[test]
fn verify_against_another_export_fails_with_exit_3() {
    let (dir, _export, bundle) = migrated("10-collapse-versions");
    let other = copy_export(&dir, "01-legacy-dashboard", "other.ndjson");
    dir.run(["verify", &arg(&bundle), "--export", &arg(&other)])
        .code(3)
        .stderr_has("other.ndjson");
}

/// Sample 01 with the external_id of report 101 — the field the bundle re-keys — changed
/// since the export (and its name too, which the bundle does not touch).
fn edited_target(dir: &Dir) -> PathBuf {
    let text = export_text("01-legacy-dashboard");
    let old = "\"external_id\":\"dashboard_12_1700000000\",\"name\":\"Sales overview\"";
    assert!(text.contains(old));
    dir.write(
        "edited.ndjson",
        text.replace(
            old,
            "\"external_id\":\"dashboard_12_1800000000\",\"name\":\"Sales overview (edited)\"",
        ),
    )
}

/// Guards by field (SPEC §7): a field the update does not touch may have changed since the
/// export; the update applies and the edit is kept.
#[test]
fn restore_keeps_an_edit_of_a_field_the_bundle_does_not_touch() {
    let (dir, _export, bundle) = migrated("10-collapse-versions");
    let target = dir.write(
        "renamed.ndjson",
        export_text("10-collapse-versions").replace(
            "\"name\":\"Sales v3\"",
            "\"name\":\"renamed after the export\"",
        ),
    );
    let out = dir.join("out.ndjson");
    util::restore(dir.path(), &bundle, &target, &out, &[]).ok();
    let survivor = report_in(&out, 103);
    assert_eq!(survivor["external_id"], "dashboard/12");
    assert_eq!(survivor["name"], "renamed after the export");
    // And back: the rollback restores the legacy id and keeps the rename too.
    let back = dir.join("back.ndjson");
    util::rollback(dir.path(), &bundle, &out, &back, &[]).ok();
    let r = report_in(&back, 103);
    assert_eq!(r["external_id"], "dashboard_12_1700000000");
    assert_eq!(r["name"], "renamed after the export");
}

/// Sample 01 migrated, and its bundle restored onto [`edited_target`] with `extra` options.
struct EditedRestore {
    dir: Dir,
    /// The names in `dir` before the restore.
    before: Vec<String>,
    out: PathBuf,
    /// The restore, its exit code not checked yet.
    run: util::Out,
}

fn restore_onto_edited(extra: &[&str]) -> EditedRestore {
    let (dir, _export, bundle) = migrated("01-legacy-dashboard");
    let target = edited_target(&dir);
    let before = dir.names();
    let out = dir.join("out.ndjson");
    let run = util::restore(dir.path(), &bundle, &target, &out, extra);
    EditedRestore {
        dir,
        before,
        out,
        run,
    }
}

#[test]
fn restore_over_an_edited_record_is_a_conflict_and_writes_nothing() {
    let EditedRestore {
        dir,
        before,
        out,
        run,
    } = restore_onto_edited(&[]);
    run.code(3)
        .stderr_has("conflict")
        .stderr_has("bi_report")
        .stderr_has("\"101\"")
        // The edit itself, not two truncated records.
        .stderr_has("external_id: expected \"dashboard_12_1700000000\" (or \"dashboard/12\"), found \"dashboard_12_1800000000\"");
    assert!(!out.exists(), "a conflicting restore wrote its output");
    assert_eq!(
        dir.names(),
        before,
        "a conflicting restore left files behind"
    );
}

/// `--json` is the machine-readable output (SPEC §8), and the conflict message itself sends
/// the user to it ("see --json"): the conflicts are listed there in full.
#[test]
fn restore_conflicts_are_listed_in_full_with_json() {
    let r = restore_onto_edited(&["--json"]);
    let run = r.run.code(3);
    assert!(!r.out.exists(), "a conflicting restore wrote its output");
    let summary = run.json();
    let conflicts = summary["conflicts"]
        .as_array()
        .expect("a conflicts list in the --json output");
    assert_eq!(conflicts.len(), 1, "{summary}");
    assert_eq!(conflicts[0]["kind"], "bi_report");
    assert_eq!(conflicts[0]["key"], "101");
    assert_eq!(
        conflicts[0]["found"]["external_id"],
        "dashboard_12_1800000000"
    );
}

#[test]
fn restore_with_force_applies_over_conflicts() {
    let r = restore_onto_edited(&["--force", "--json"]);
    let summary = r.run.ok().json();
    assert_eq!(summary["forced"], 1, "{summary}");
    let report = report_in(&r.out, 101);
    assert_eq!(report["external_id"], "dashboard/12");
    assert_eq!(
        report["name"], "Sales overview (edited)",
        "--force overwrites only the fields the change sets"
    );
}

#[test]
fn migrate_to_an_existing_output_is_refused_without_overwrite() {
    let dir = Dir::new();
    let export = copy_export(&dir, "01-legacy-dashboard", "export.ndjson");
    std::fs::create_dir(dir.join("bundle")).unwrap();
    dir.write("bundle/keep.txt", "precious");
    util::migrate(dir.path(), &export, &dir.join("bundle"), &[])
        .code(1)
        .stderr_has("--overwrite");
    assert_eq!(util::names(&dir.join("bundle")), ["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("bundle/keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        dir.names(),
        ["bundle", "export.ndjson"],
        "a refused migrate left files behind"
    );
}

#[test]
fn migrate_with_overwrite_replaces_an_existing_bundle() {
    let dir = Dir::new();
    let first = copy_export(&dir, "01-legacy-dashboard", "first.ndjson");
    let second = copy_export(&dir, "10-collapse-versions", "second.ndjson");
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &first, &bundle, &[]).ok();
    util::migrate(dir.path(), &second, &bundle, &["--overwrite".into()]).ok();
    let sha = util::sha256_hex(&std::fs::read(&second).unwrap());
    assert_eq!(util::manifest(&bundle)["input_sha256"], sha.as_str());
    dir.run(["verify", "bundle", "--export", "second.ndjson"])
        .ok();
    assert_eq!(
        dir.names(),
        ["bundle", "first.ndjson", "second.ndjson"],
        "the old bundle was left behind"
    );
}

#[test]
fn restore_to_an_existing_output_is_refused_without_overwrite() {
    let (dir, export, bundle) = migrated("01-legacy-dashboard");
    let out = dir.write("out.ndjson", "precious\n");
    util::restore(dir.path(), &bundle, &export, &out, &[])
        .code(1)
        .stderr_has("--overwrite");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    util::restore(dir.path(), &bundle, &export, &out, &["--overwrite"]).ok();
    assert_eq!(
        util::records(&out),
        util::records(&util::sample("01-legacy-dashboard").join("expected.ndjson"))
    );
}

#[test]
fn zstd_input_gives_the_same_bundle_as_plain_input() {
    let dir = Dir::new();
    let plain = copy_export(&dir, "10-collapse-versions", "export.ndjson");
    // No `.zst` in the name: compression is detected by the magic bytes.
    let packed = dir.write(
        "export.data",
        util::compress(&std::fs::read(&plain).unwrap()),
    );
    util::migrate(dir.path(), &plain, &dir.join("a"), &[]).ok();
    util::migrate(dir.path(), &packed, &dir.join("b"), &[]).ok();
    let a = util::read_decoded(&dir.join("a/changes.ndjson.zst"));
    let b = util::read_decoded(&dir.join("b/changes.ndjson.zst"));
    assert!(!a.is_empty(), "the plain export gave no changes");
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    assert_eq!(util::report(&dir.join("a")), util::report(&dir.join("b")));
    dir.run(["verify", "b", "--export", "export.data"]).ok();
    // Restoring onto the compressed export gives the expected records too.
    util::restore(
        dir.path(),
        &dir.join("b"),
        &packed,
        &dir.join("out.ndjson"),
        &[],
    )
    .ok();
    util::assert_same_records(
        &dir.join("out.ndjson"),
        &util::sample("10-collapse-versions").join("expected.ndjson"),
        "restore onto a zstd export",
    );
}

#[test]
fn plain_input_named_zst_is_read_as_plain() {
    let dir = Dir::new();
    let export = copy_export(&dir, "10-collapse-versions", "export.ndjson.zst");
    util::migrate(dir.path(), &export, &dir.join("b"), &[]).ok();
    assert!(!util::changes(&dir.join("b")).is_empty());
}

/// `migrate -` with `stdin` gives the changes `migrate EXPORT` gives (bundles `b` and `a`).
#[track_caller]
fn assert_stdin_migrates_as_the_file(dir: &Dir, export: &Path, stdin: Vec<u8>) {
    util::run_with_stdin(dir.path(), ["migrate", "-", "-o", "b"], Some(stdin)).ok();
    util::migrate(dir.path(), export, &dir.join("a"), &[]).ok();
    assert_eq!(util::changes(&dir.join("b")), util::changes(&dir.join("a")));
}

#[test]
fn stdin_dash_works_for_plan_and_migrate() {
    let dir = Dir::new();
    let export = copy_export(&dir, "10-collapse-versions", "export.ndjson");
    let bytes = std::fs::read(&export).unwrap();
    let from_file = dir.run(["plan", "--json", "export.ndjson"]).ok().json();
    let from_stdin = util::run_with_stdin(dir.path(), ["plan", "--json", "-"], Some(bytes.clone()))
        .ok()
        .json();
    assert!(from_file["counts"]["lines"].as_u64().unwrap_or(0) > 0);
    assert_eq!(from_stdin, from_file);
    assert_stdin_migrates_as_the_file(&dir, &export, bytes);
}

#[test]
fn server_absent_from_the_export_is_exit_1() {
    let dir = Dir::new();
    let export = copy_export(&dir, "01-legacy-dashboard", "export.ndjson");
    util::migrate(
        dir.path(),
        &export,
        &dir.join("b"),
        &["--server".into(), "999".into()],
    )
    .code(1)
    .stderr_has("999");
    assert!(!dir.join("b").exists());
    dir.run(["plan", "export.ndjson", "--server", "999"])
        .code(1)
        .stderr_has("999");
}

#[test]
fn usage_errors_are_exit_2() {
    let dir = Dir::new();
    copy_export(&dir, "01-legacy-dashboard", "export.ndjson");
    dir.run(["migrate", "export.ndjson", "-o", "b", "--no-such-flag"])
        .code(2)
        .stderr_has("--no-such-flag");
    dir.run(["migrate", "export.ndjson"]).code(2);
    dir.run(["no-such-command"]).code(2);
    dir.run(["plan", "export.ndjson", "--threads", "many"])
        .code(2);
    assert_eq!(dir.names(), ["export.ndjson"]);
}

#[test]
fn missing_export_is_exit_1_and_names_it() {
    let dir = Dir::new();
    dir.run(["migrate", "nowhere.ndjson", "-o", "b"])
        .code(1)
        .stderr_has("nowhere.ndjson");
    assert!(dir.names().is_empty());
}

/// Rewrites a bundle's change set as `changes`, with a manifest that agrees with it, so that
/// only the conservation law can tell that something is wrong.
fn rewrite_changes(bundle: &Path, changes: &[Value]) {
    let mut text = String::new();
    for c in changes {
        text += &serde_json::to_string(c).unwrap();
        text.push('\n');
    }
    let packed = util::compress(text.as_bytes());
    std::fs::write(bundle.join("changes.ndjson.zst"), &packed).unwrap();
    let count = |op: &str| changes.iter().filter(|c| c["op"] == op).count();
    // The manifest's counts are checked against the report's, so the report agrees too.
    let rpath = bundle.join("report.json");
    let mut report = read_json(&rpath);
    for op in ["create", "update", "delete"] {
        report["counts"][format!("changes_{op}")] = count(op).into();
    }
    let report = serde_json::to_vec(&report).unwrap();
    std::fs::write(&rpath, &report).unwrap();
    let mpath = bundle.join("manifest.json");
    let mut m = read_json(&mpath);
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "changes.ndjson.zst" {
            f["sha256"] = util::sha256_hex(&packed).into();
            f["records"] = changes.len().into();
        }
        if f["name"] == "report.json" {
            f["sha256"] = util::sha256_hex(&report).into();
        }
    }
    m["counts"]["changes"] = changes.len().into();
    for op in ["create", "update", "delete"] {
        m["counts"][op] = count(op).into();
    }
    write_json(&mpath, &m);
}

#[test]
fn verify_catches_a_curation_item_the_change_set_loses() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    let mut changes = util::changes(&bundle);
    let before = changes.len();
    // The tag `pii` of the retired versions moves to the survivor 103; drop that put.
    changes.retain(|c| {
        !(c["kind"] == "tag" && c["op"] == "create" && c["key"] == "bi_report:103:pii")
    });
    assert_eq!(
        changes.len(),
        before - 1,
        "the sample no longer moves the tag pii onto 103"
    );
    rewrite_changes(&bundle, &changes);
    // The manifest agrees with the files, so the bundle opens ...
    dir.run(["verify", &arg(&bundle)]).ok();
    // ... but the law is broken.
    dir.run(["verify", &arg(&bundle), "--export", &arg(&export)])
        .code(3)
        .stderr_has("pii");
}

#[test]
fn verify_catches_change_lines_out_of_their_phases() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    let mut changes = util::changes(&bundle);
    // A report re-keyed before the curation that moves onto it: a restore committed in batches
    // would hold the stable id before the retired version gave it up.
    let first_report = changes
        .iter()
        .position(|c| c["kind"] == "bi_report" && c["op"] != "delete")
        .expect("sample 10 re-keys a report");
    let line = changes.remove(first_report);
    changes.insert(0, line);
    rewrite_changes(&bundle, &changes);
    dir.run(["verify", &arg(&bundle), "--export", &arg(&export)])
        .code(3)
        .stderr_has("not in order (phase, kind)");
}

/// Migrates sample 10, lets `edit` change its change set (it must change exactly one line; a
/// line it sets to null is dropped), and asserts that verify, given the export, fails the law
/// with a message that holds each of `needles`.
#[track_caller]
fn assert_law_broken(what: &str, needles: &[&str], edit: impl Fn(&mut Value) -> bool) {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    let mut changes = util::changes(&bundle);
    let mut edited = 0;
    changes.retain_mut(|c| {
        if edit(c) {
            edited += 1;
        }
        !c.is_null()
    });
    assert_eq!(edited, 1, "sample 10 no longer has the change that {what}");
    rewrite_changes(&bundle, &changes);
    dir.run(["verify", &arg(&bundle)]).ok();
    let o = dir
        .run(["verify", &arg(&bundle), "--export", &arg(&export)])
        .code(3);
    let mut o = o.stderr_has("curation lost");
    for needle in needles {
        o = o.stderr_has(needle);
    }
}

/// [`assert_law_broken`] by an edit of the value that the change set sets on the field_value
/// with record key `key` (`edit` gets that value and says whether it changed it).
#[track_caller]
fn assert_value_edit_breaks_law(
    what: &str,
    needles: &[&str],
    key: &str,
    edit: impl Fn(&mut Value) -> bool,
) {
    assert_law_broken(what, needles, |c| {
        c["kind"] == "field_value" && c["key"] == key && edit(&mut c["set"]["value"])
    });
}

#[test]
fn verify_catches_a_lost_item_of_a_multi_valued_field() {
    // Regions (21) merge into the union emea, apac, amer, latam on 103; latam comes only from
    // the retired 101 (line 17). Leave it out of the union.
    let needles = ["ndjson:17 (", "an item of its list"];
    assert_value_edit_breaks_law(
        "merges Regions onto 103",
        &needles,
        "bi_report:103:21",
        |v| {
            let list = v.as_array_mut().expect("the union is set");
            let before = list.len();
            list.retain(|v| v != "latam");
            list.len() == before - 1
        },
    );
}

#[test]
fn verify_catches_a_lost_star() {
    // User 6 starred 102 (no time) and 101; the star moves onto 103. Drop that create.
    let needles = ["\"user_id\":6", "its merge key"];
    assert_law_broken("moves user 6's star onto 103", &needles, |c| {
        if c["kind"] == "star" && c["op"] == "create" && c["key"] == "bi_report:103:6" {
            *c = Value::Null;
            return true;
        }
        false
    });
}

#[test]
fn verify_catches_a_merged_value_that_takes_the_loser_without_a_conflict() {
    // The description (4) of 103 is empty; 102's wins and 101's is the reported conflict.
    // Set 101's instead: 102's (line 9) is then neither on 103 nor a conflict.
    let needles = ["ndjson:9 (", "its value"];
    let what = "merges the description onto 103";
    assert_value_edit_breaks_law(what, &needles, "bi_report:103:4", |value| {
        if value != "<p>Revenue by region.</p>" {
            return false;
        }
        *value = "<p>Old description.</p>".into();
        true
    });
}

#[test]
fn manifest_of_another_version_is_refused() {
    let (dir, export, bundle) = migrated("10-collapse-versions");
    let mpath = bundle.join("manifest.json");
    let mut m = read_json(&mpath);
    m["version"] = 1.into();
    write_json(&mpath, &m);
    assert_bundle_refused(&dir, &export, &bundle, "version 1");
    dir.run(["inspect", &arg(&bundle)])
        .code(1)
        .stderr_has("migrate the export again");
}

#[test]
fn restore_onto_a_target_missing_a_changed_record_is_a_conflict() {
    let (dir, export, bundle) = migrated("01-legacy-dashboard");
    let lines: Vec<String> = util::lines(&export)
        .into_iter()
        .filter(|l| !l.contains("\"external_id\":\"dashboard_12_1700000000\""))
        .collect();
    let target = dir.write("target.ndjson", lines.join("\n") + "\n");
    let out = dir.join("out.ndjson");
    util::restore(dir.path(), &bundle, &target, &out, &[])
        .code(3)
        .stderr_has("bi_report")
        .stderr_has("absent");
    assert!(!out.exists(), "a conflicting restore wrote its output");
}

#[test]
fn zstd_on_stdin_is_detected() {
    let dir = Dir::new();
    let export = copy_export(&dir, "10-collapse-versions", "export.ndjson");
    let packed = util::compress(&std::fs::read(&export).unwrap());
    assert_stdin_migrates_as_the_file(&dir, &export, packed);
}

/// A second bi_report line with an oid already seen is skipped under --max-errors, and the
/// first line's report is the one migrated (the scan had kept both before the duplicate was
/// known).
#[test]
fn a_duplicate_report_line_skipped_under_max_errors_leaves_the_first_one() {
    let dir = Dir::new();
    let mut export = export_text("01-legacy-dashboard").into_bytes();
    export.extend_from_slice(
        br#"{"kind":"bi_report","oid":101,"server_id":1,"external_id":"look_55_1","name":"impostor"}"#,
    );
    export.push(b'\n');
    dir.write("export.ndjson", &export);
    migrate_skipping(&dir, "export.ndjson", "1").ok();
    let report = util::report(&dir.join("bundle"));
    assert_eq!(report["skipped_lines"].as_array().unwrap().len(), 1);
    assert!(report["skipped_lines"][0]["text"]
        .as_str()
        .unwrap()
        .contains("impostor"));
    let put = util::changes(&dir.join("bundle"))
        .into_iter()
        .find(|c| c["kind"] == "bi_report" && c["key"] == "101")
        .expect("report 101 is re-keyed");
    assert_eq!(util::after(&put)["external_id"], "dashboard/12");
}
