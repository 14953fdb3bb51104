//! Bad input (issue 5): one test per row of the README's table "Bad input and faults". Each
//! feeds the binary one kind of damage and holds it to the same promise: the right exit code, a
//! message naming the file, the line (where there is one) and the problem, and nothing written —
//! no output, and no `.lookmig-*.tmp` left beside it.

use crate::util::{self, arg, Dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The sample every case starts from: 12 valid lines, one Looker server.
const BASE: &str = "01-legacy-dashboard";

fn base_export() -> PathBuf {
    util::sample(BASE).join("export.ndjson")
}

/// The base export's bytes, with `extra` appended as line 13.
fn with_line_13(extra: &[u8]) -> Vec<u8> {
    let mut bytes = std::fs::read(base_export()).unwrap();
    assert!(bytes.ends_with(b"\n"));
    assert_eq!(
        util::lines(&base_export()).len(),
        12,
        "the base sample changed"
    );
    bytes.extend_from_slice(extra);
    bytes.push(b'\n');
    bytes
}

/// A bundle of the base sample, in a directory of its own, for restoring onto bad targets.
fn base_bundle() -> (Dir, PathBuf) {
    let dir = Dir::new();
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &base_export(), &bundle, &[]).ok();
    (dir, bundle)
}

/// Asserts that nothing was written in `dir`: the names are exactly `before`, so neither an
/// output nor a `.lookmig-*.tmp` leftover.
#[track_caller]
fn nothing_written(dir: &Dir, before: &[String], what: &str) {
    assert_eq!(dir.names(), before, "{what} left files behind");
}

/// Writes `bytes` as `name` in a new directory and asserts that `plan`, `migrate` and `restore`
/// (onto it) all refuse it with `code`, every message holding each of `needles`, and that nothing
/// is written. Returns the directory for further checks.
#[track_caller]
fn refused_everywhere(name: &str, bytes: &[u8], code: i32, needles: &[&str]) -> Dir {
    let dir = Dir::new();
    dir.write(name, bytes);
    let before = dir.names();
    let mut runs = vec![
        dir.run(["plan", name]),
        dir.run(["migrate", name, "-o", "bundle"]),
    ];
    let (_keep, bundle) = base_bundle();
    runs.push(dir.run(["restore", &arg(&bundle), "--onto", name, "-o", "out.ndjson"]));
    for out in runs {
        let out = out.code(code);
        for n in needles {
            let out_ref = &out;
            assert!(
                out_ref.stderr.contains(n),
                "`{}`: stderr does not name {n:?}\n{}",
                out_ref.what,
                out_ref.stderr
            );
        }
    }
    nothing_written(&dir, &before, "a refused run");
    dir
}

#[test]
fn malformed_json_is_exit_1_naming_file_line_and_problem() {
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(br#"{"kind":"tag","name":"x","subject":{"otype":"bi_report","oid":101}"#),
        1,
        &["bad.ndjson:13", "malformed JSON"],
    );
}

#[test]
fn truncated_last_line_is_malformed() {
    let mut bytes = std::fs::read(base_export()).unwrap();
    bytes.truncate(bytes.len() - 30); // cut inside the last object, no final newline
    refused_everywhere(
        "cut.ndjson",
        &bytes,
        1,
        &["cut.ndjson:12", "malformed JSON"],
    );
}

#[test]
fn last_line_without_newline_is_read_like_any_other() {
    let dir = Dir::new();
    let bytes = std::fs::read(base_export()).unwrap();
    dir.write("nl.ndjson", &bytes);
    dir.write("no-nl.ndjson", &bytes[..bytes.len() - 1]);
    dir.run(["migrate", "nl.ndjson", "-o", "a"]).ok();
    dir.run(["migrate", "no-nl.ndjson", "-o", "b"]).ok();
    assert_eq!(
        std::fs::read(dir.join("a/changes.ndjson.zst")).unwrap(),
        std::fs::read(dir.join("b/changes.ndjson.zst")).unwrap(),
        "a missing final newline changed the change set"
    );
}

#[test]
fn invalid_utf8_is_exit_1_naming_the_line() {
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(b"{\"kind\":\"tag\",\"name\":\"\xff\xfe\",\"subject\":{\"otype\":\"bi_report\",\"oid\":101}}"),
        1,
        &["bad.ndjson:13", "invalid UTF-8"],
    );
}

/// Runs `lookmig ARGS` in `cwd` with its address space capped at `kib` KiB, so that a reader
/// that buffered a whole hostile line would be killed (exit 134) rather than refuse it.
fn run_capped(cwd: &Path, kib: u64, args: &[&str]) -> util::Out {
    let bin = assert_cmd::cargo::cargo_bin("lookmig");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(&bin)
        .args(args)
        .current_dir(cwd)
        // One malloc arena per thread would reserve 64 MiB of address space each.
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("sh runs");
    util::Out {
        what: format!(
            "lookmig {} (address space capped at {kib} KiB)",
            args.join(" ")
        ),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn line_of_100_mb_is_refused_past_the_limit_in_bounded_memory() {
    let dir = Dir::new();
    let mut line = b"{\"kind\":\"blob\",\"data\":\"".to_vec();
    line.resize(line.len() + 100_000_000, b'a');
    line.extend_from_slice(b"\"}");
    dir.write("huge.ndjson", with_line_13(&line));
    drop(line);
    let before = dir.names();
    // The default limit (64 MiB) refuses it, within 125 MiB of address space (it needs about
    // 85): the line is buffered only up to the limit, never whole.
    run_capped(
        dir.path(),
        128_000,
        &["migrate", "huge.ndjson", "-o", "bundle"],
    )
    .code(1)
    .stderr_has("huge.ndjson:13: line longer than 67108864 bytes")
    .stderr_has("--max-line-bytes");
    // A smaller limit, in much less memory (it needs under 30 MiB).
    run_capped(
        dir.path(),
        48_000,
        &["plan", "huge.ndjson", "--max-line-bytes", "1000000"],
    )
    .code(1)
    .stderr_has("huge.ndjson:13: line longer than 1000000 bytes");
    nothing_written(&dir, &before, "a refused huge line");
}

#[test]
fn max_line_bytes_applies_to_every_command_that_reads() {
    let dir = Dir::new();
    dir.copy(&base_export(), "export.ndjson");
    let (_keep, bundle) = base_bundle();
    let before = dir.names();
    dir.run(["plan", "export.ndjson", "--max-line-bytes", "250"])
        .code(1)
        .stderr_has("export.ndjson:4: line longer than 250 bytes");
    dir.run([
        "restore",
        &arg(&bundle),
        "--onto",
        "export.ndjson",
        "-o",
        "out.ndjson",
        "--max-line-bytes",
        "250",
    ])
    .code(1)
    .stderr_has("export.ndjson:4: line longer than 250 bytes");
    dir.run([
        "verify",
        &arg(&bundle),
        "--export",
        "export.ndjson",
        "--max-line-bytes",
        "250",
    ])
    .code(1)
    .stderr_has("line longer than");
    dir.run(["plan", "export.ndjson", "--max-line-bytes", "0"])
        .code(2);
    nothing_written(&dir, &before, "a refused long line");
}

/// `frames` zstd frames of 1 MiB of zeros each, one after the other (a valid zstd stream of
/// `frames` MiB that compresses to a few KiB).
fn zero_bomb(frames: usize) -> Vec<u8> {
    let frame = util::compress(&vec![0u8; 1 << 20]);
    frame.repeat(frames)
}

#[test]
fn decompression_bomb_without_newlines_is_refused_fast() {
    let dir = Dir::new();
    let bomb = zero_bomb(200);
    assert!(bomb.len() < 200_000, "the bomb is {} bytes", bomb.len());
    dir.write("bomb.zst", &bomb);
    let before = dir.names();
    let start = Instant::now();
    run_capped(
        dir.path(),
        128_000,
        &["migrate", "bomb.zst", "-o", "bundle"],
    )
    .code(1)
    .stderr_has("bomb.zst:1: line longer than")
    .stderr_has("--max-line-bytes");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "refusing the bomb took {:?}",
        start.elapsed()
    );
    nothing_written(&dir, &before, "a refused bomb");
}

#[test]
fn deep_nesting_is_malformed_json_not_a_crash() {
    // An id-less unknown kind: its key is the SHA-256 of its canonical JSON, which needs the
    // whole tree (this used to panic in the probe).
    let deep = format!(
        r#"{{"kind":"blob","a":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    refused_everywhere(
        "deep.ndjson",
        &with_line_13(deep.as_bytes()),
        1,
        &["deep.ndjson:13", "recursion limit exceeded"],
    );
    // Deep inside a known kind's value, too.
    let deep = format!(
        r#"{{"kind":"field_value","field_id":77,"subject":{{"otype":"bi_report","oid":101}},"value":{}1{}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    refused_everywhere(
        "deep.ndjson",
        &with_line_13(deep.as_bytes()),
        1,
        &["deep.ndjson:13", "recursion limit exceeded"],
    );
}

#[test]
fn wrong_type_for_a_required_field_is_exit_1() {
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(
            br#"{"kind":"bi_report","oid":"103","server_id":1,"external_id":"look_3_1"}"#,
        ),
        1,
        &["bad.ndjson:13", "field `oid` must be an integer"],
    );
}

#[test]
fn missing_required_field_is_exit_1() {
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(br#"{"kind":"bi_report","server_id":1,"external_id":"look_3_1"}"#),
        1,
        &["bad.ndjson:13", "missing required field `oid`"],
    );
}

#[test]
fn duplicate_record_key_is_exit_1_everywhere() {
    refused_everywhere(
        "dup.ndjson",
        &with_line_13(
            br#"{"kind":"tag","name":"finance","subject":{"otype":"bi_report","oid":101}}"#,
        ),
        1,
        &["dup.ndjson:13", "duplicate record key"],
    );
}

#[test]
fn unknown_header_version_is_exit_1_everywhere() {
    let mut bytes = br#"{"kind":"header","format":"catalog-export","version":2}"#.to_vec();
    bytes.push(b'\n');
    let base = std::fs::read(base_export()).unwrap();
    bytes.extend(base.split(|b| *b == b'\n').skip(1).flat_map(|l| {
        let mut l = l.to_vec();
        if !l.is_empty() {
            l.push(b'\n');
        }
        l
    }));
    refused_everywhere(
        "v2.ndjson",
        &bytes,
        1,
        &["v2.ndjson:1", "version 2 is not supported"],
    );
}

#[test]
fn truncated_zstd_stream_is_exit_1() {
    let z = util::compress(&std::fs::read(base_export()).unwrap());
    refused_everywhere(
        "cut.zst",
        &z[..z.len() - 10],
        1,
        &["cut.zst:", "truncated zstd stream"],
    );
}

#[test]
fn corrupt_zstd_stream_is_exit_1() {
    // Written with a content checksum, as the zstd tool writes by default, so that the decoder
    // catches the damage (without one, damage shows as bad JSON or UTF-8 on some line).
    let text = std::fs::read(base_export()).unwrap();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut enc, &text).unwrap();
    let mut z = enc.finish().unwrap();
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 8] {
        *b ^= 0xFF;
    }
    refused_everywhere("bad.zst", &z, 1, &["bad.zst:", "zstd"]);
    // Without a checksum: still exit 1, naming the file and a line.
    let mut z = util::compress(&text);
    for b in &mut z[20..30] {
        *b ^= 0xFF;
    }
    refused_everywhere("bad.zst", &z, 1, &["bad.zst:"]);
}

#[test]
fn empty_export_is_exit_1_with_a_clear_message() {
    for (name, bytes) in [("empty.ndjson", &b""[..]), ("blank.ndjson", b"\n  \n\n")] {
        let dir = Dir::new();
        dir.write(name, bytes);
        let before = dir.names();
        dir.run(["migrate", name, "-o", "bundle"])
            .code(1)
            .stderr_has(&format!("{name}: the export is empty"));
        dir.run(["plan", name])
            .code(1)
            .stderr_has("the export is empty");
        nothing_written(&dir, &before, "a refused empty export");
    }
    // An empty zstd stream is empty too.
    let dir = Dir::new();
    dir.write("empty.zst", util::compress(b""));
    dir.run(["plan", "empty.zst"])
        .code(1)
        .stderr_has("the export is empty");
}

/// Migrates the base sample into `dir/bundle`, returning the export's and the bundle's paths.
fn migrated() -> (Dir, PathBuf, PathBuf) {
    let dir = Dir::new();
    let export = dir.copy(&base_export(), "export.ndjson");
    let bundle = dir.join("bundle");
    util::migrate(dir.path(), &export, &bundle, &[]).ok();
    (dir, export, bundle)
}

/// Asserts that verify (exit 3), restore and inspect (exit 1) refuse the bundle, naming `needle`,
/// and that restore wrote nothing.
#[track_caller]
fn bundle_refused(dir: &Dir, export: &Path, bundle: &Path, needle: &str) {
    dir.run(["verify", &arg(bundle), "--export", &arg(export)])
        .code(3)
        .stderr_has(needle);
    let before = dir.names();
    util::restore(dir.path(), bundle, export, &dir.join("out.ndjson"), &[])
        .code(1)
        .stderr_has(needle);
    dir.run(["inspect", &arg(bundle)])
        .code(1)
        .stderr_has(needle);
    nothing_written(dir, &before, "a refused bundle");
}

fn edit_manifest(bundle: &Path, edit: impl FnOnce(&mut Value)) {
    let mpath = bundle.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn manifest_naming_an_absolute_path_is_refused() {
    let (dir, export, bundle) = migrated();
    let abs = dir.write("x", "{}");
    edit_manifest(&bundle, |m| {
        m["files"].as_array_mut().unwrap().push(serde_json::json!({
            "name": arg(&abs),
            "records": 1,
            "sha256": util::sha256_hex(b"{}"),
        }))
    });
    bundle_refused(&dir, &export, &bundle, "not a file inside the bundle");
}

#[test]
fn manifest_renaming_a_part_outside_the_bundle_is_refused() {
    let (dir, export, bundle) = migrated();
    // The change set moved next to the bundle, and the manifest pointing at it there.
    std::fs::rename(
        bundle.join("changes.ndjson.zst"),
        dir.join("changes.ndjson.zst"),
    )
    .unwrap();
    edit_manifest(&bundle, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["name"] == "changes.ndjson.zst" {
                f["name"] = "../changes.ndjson.zst".into();
            }
        }
    });
    bundle_refused(&dir, &export, &bundle, "../changes.ndjson.zst");
}

#[test]
fn manifest_with_an_edited_count_is_refused() {
    let (dir, export, bundle) = migrated();
    edit_manifest(&bundle, |m| m["counts"]["create"] = 1000.into());
    bundle_refused(&dir, &export, &bundle, "counts.create");
}

#[test]
fn manifest_with_an_edited_record_count_is_refused() {
    let (dir, export, bundle) = migrated();
    let mut changes = 0;
    edit_manifest(&bundle, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["name"] == "changes.ndjson.zst" {
                changes = f["records"].as_u64().unwrap();
                f["records"] = (changes + 1).into();
            }
        }
    });
    assert!(changes > 0);
    bundle_refused(
        &dir,
        &export,
        &bundle,
        &format!("holds {changes} records, the manifest says {}", changes + 1),
    );
}

#[test]
fn manifest_that_is_not_json_is_refused() {
    let (dir, export, bundle) = migrated();
    std::fs::write(bundle.join("manifest.json"), "{ not json").unwrap();
    bundle_refused(&dir, &export, &bundle, "not a valid manifest");
}

#[test]
fn missing_manifest_is_refused() {
    let (dir, export, bundle) = migrated();
    std::fs::remove_file(bundle.join("manifest.json")).unwrap();
    bundle_refused(&dir, &export, &bundle, "manifest.json");
}

#[test]
fn changed_report_is_refused() {
    let (dir, export, bundle) = migrated();
    let p = bundle.join("report.json");
    let mut text = std::fs::read(&p).unwrap();
    text.extend_from_slice(b" ");
    std::fs::write(&p, text).unwrap();
    bundle_refused(&dir, &export, &bundle, "report.json: checksum differs");
}

/// Runs `migrate --id-map MAP` on the base sample with `map` as the id-map and asserts exit 1,
/// the needles, and nothing written.
#[track_caller]
fn id_map_refused(name: &str, map: &[u8], needles: &[&str]) {
    let dir = Dir::new();
    dir.copy(&base_export(), "export.ndjson");
    dir.write(name, map);
    let before = dir.names();
    for args in [
        vec!["migrate", "export.ndjson", "-o", "bundle", "--id-map", name],
        vec!["plan", "export.ndjson", "--id-map", name],
    ] {
        let out = dir.run(&args).code(1);
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "`{}`: stderr lacks {n:?}\n{}",
                out.what,
                out.stderr
            );
        }
    }
    nothing_written(&dir, &before, "a refused id-map");
}

#[test]
fn id_map_with_a_bad_line_is_exit_1_naming_it() {
    id_map_refused(
        "map.csv",
        b"legacy_external_id,stable_external_id\ndashboard_12_1700000000,dashboard/12\na,b,c\n",
        &["map.csv:3", "bad CSV line"],
    );
    id_map_refused(
        "map.ndjson",
        b"{\"legacy_external_id\":\"dashboard_12_1700000000\",\"stable_external_id\":\"dashboard/12\"}\n{\"legacy_external_id\":\n",
        &["map.ndjson:2", "malformed JSON"],
    );
    id_map_refused(
        "map.ndjson",
        b"{\"legacy_external_id\":\"dashboard_12_1700000000\",\"stable_external_id\":\"dashboard/12\"}\n{\"legacy_external_id\":\"\xff\",\"stable_external_id\":\"x\"}\n",
        &["map.ndjson:2", "invalid UTF-8"],
    );
    id_map_refused(
        "map.csv",
        b"legacy_external_id,stable_external_id\n\xff,dashboard/1\n",
        &["map.csv:2", "invalid UTF-8"],
    );
}

#[test]
fn id_map_with_two_maps_for_one_id_is_exit_1_naming_both_lines() {
    id_map_refused(
        "map.csv",
        b"legacy_external_id,stable_external_id\ndashboard_12_1700000000,dashboard/12\ndashboard_12_1700000000,dashboard/13\n",
        &["map.csv:3", "on line 2", "keep one"],
    );
}

#[test]
fn id_map_is_held_to_the_line_limit() {
    let dir = Dir::new();
    dir.copy(&base_export(), "export.ndjson");
    let mut map = b"legacy_external_id,stable_external_id\n".to_vec();
    map.extend(vec![b'x'; 5000]);
    map.extend_from_slice(b",dashboard/1\n");
    dir.write("map.csv", &map);
    dir.run([
        "plan",
        "export.ndjson",
        "--id-map",
        "map.csv",
        "--max-line-bytes",
        "4096",
    ])
    .code(1)
    .stderr_has("map.csv:2: line longer than 4096 bytes");
}

#[test]
fn subject_pointing_at_nothing_is_kept_as_it_is() {
    // A description of report 999, which the export does not hold: the SPEC does not forbid it,
    // the tool has nothing to move it to, so it stays exactly as it is — not dropped.
    let dangling =
        br#"{"kind":"field_value","field_id":4,"subject":{"otype":"bi_report","oid":999},"value":"<p>orphan</p>"}"#;
    let dir = Dir::new();
    dir.write("export.ndjson", with_line_13(dangling));
    dir.run(["migrate", "export.ndjson", "-o", "bundle"]).ok();
    assert!(
        util::changes(&dir.join("bundle"))
            .iter()
            .all(|c| !c["key"].as_str().unwrap_or("").contains(":999:")),
        "the dangling record was changed"
    );
    let warnings = util::report(&dir.join("bundle"))["warnings"].to_string();
    assert!(
        warnings.contains("1 record(s) have a subject that is no report or column of the export")
            && warnings.contains("field_value bi_report:999:4"),
        "the dangling record is not named in the report's warnings: {warnings}"
    );
    dir.run(["verify", "bundle", "--export", "export.ndjson"])
        .ok();
    util::restore(
        dir.path(),
        &dir.join("bundle"),
        &dir.join("export.ndjson"),
        &dir.join("out.ndjson"),
        &[],
    )
    .ok();
    let kept = util::lines(&dir.join("out.ndjson"));
    assert!(
        kept.iter().any(|l| l.as_bytes() == dangling),
        "the dangling record was not kept byte for byte"
    );
}

#[test]
fn a_skipped_line_that_is_not_utf8_keeps_its_exact_bytes_in_the_report() {
    let dir = Dir::new();
    let bytes = with_line_13(b"{\"kind\":\"tag\",\"name\":\"\xff\"}");
    dir.write("export.ndjson", &bytes);
    dir.run([
        "migrate",
        "export.ndjson",
        "-o",
        "bundle",
        "--max-errors",
        "1",
    ])
    .ok();
    let skipped = &util::report(&dir.join("bundle"))["skipped_lines"][0];
    assert_eq!(skipped["line"], 13);
    let hex = skipped["bytes_hex"]
        .as_str()
        .expect("bytes_hex for a line that is not UTF-8");
    let back: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(back, b"{\"kind\":\"tag\",\"name\":\"\xff\"}".to_vec());
}

#[test]
fn max_errors_keeps_every_skipped_line_in_the_report() {
    let bad = br#"{"kind":"tag","name":"#;
    let dir = Dir::new();
    let mut bytes = with_line_13(bad);
    bytes.extend_from_slice(b"{\"kind\":\"bi_report\",\"server_id\":1}\n");
    dir.write("export.ndjson", &bytes);
    dir.run([
        "migrate",
        "export.ndjson",
        "-o",
        "bundle",
        "--max-errors",
        "2",
    ])
    .ok();
    let skipped = util::report(&dir.join("bundle"))["skipped_lines"].clone();
    let skipped = skipped.as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0]["line"], 13);
    assert_eq!(skipped[0]["text"], std::str::from_utf8(bad).unwrap());
    assert_eq!(skipped[1]["line"], 14);
    assert_eq!(skipped[1]["text"], r#"{"kind":"bi_report","server_id":1}"#);
}

#[test]
fn lone_surrogate_escape_is_malformed_json_not_a_crash() {
    // `\ud800` alone is not a character: the probe let it through and the record builder
    // panicked on an id-less unknown kind (found by the fuzz target `probe`).
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(br#"{"kind":"blob","a":"\ud800"}"#),
        1,
        &["bad.ndjson:13", "malformed JSON"],
    );
    refused_everywhere(
        "bad.ndjson",
        &with_line_13(
            br#"{"kind":"tag","name":"\udfff","subject":{"otype":"bi_report","oid":101}}"#,
        ),
        1,
        &["bad.ndjson:13", "malformed JSON"],
    );
}

/// One change-set engine, one line limit: a change line longer than `--max-line-bytes` (but
/// within the bundle's 4×) is read alike by restore onto a file, rollback and verify's
/// rehearsal (`tests/db.rs` holds the database path to the same reader).
#[test]
fn a_change_line_past_the_export_limit_is_read_alike_everywhere() {
    let dir = Dir::new();
    let mut text =
        std::fs::read_to_string(util::sample("10-collapse-versions").join("export.ndjson"))
            .unwrap();
    // An article of ~3,000 bytes mentioning a retired report: its update holds the whole prior
    // and the whole new body, so its change line is about twice the export line.
    let filler = "x".repeat(1400);
    text.push_str(&format!(
        "{{\"kind\":\"article\",\"id\":7,\"body\":\"<p>{filler}<a data-otype=bi_report data-oid=102 href=/r/102>s</a>{filler}</p>\"}}\n"
    ));
    dir.write("export.ndjson", &text);
    let limit = "3200";
    dir.run([
        "migrate",
        "export.ndjson",
        "-o",
        "b",
        "--max-line-bytes",
        limit,
    ])
    .ok();
    let longest = util::values(&dir.join("b/changes.ndjson.zst"))
        .iter()
        .map(|c| serde_json::to_string(c).unwrap().len())
        .max()
        .unwrap();
    assert!(
        longest > 3200,
        "the test needs a change line past the limit ({longest})"
    );
    dir.run([
        "restore",
        "b",
        "--onto",
        "export.ndjson",
        "-o",
        "out.ndjson",
        "--max-line-bytes",
        limit,
    ])
    .ok();
    dir.run([
        "rollback",
        "b",
        "--onto",
        "out.ndjson",
        "-o",
        "back.ndjson",
        "--max-line-bytes",
        limit,
    ])
    .ok();
    dir.run([
        "verify",
        "b",
        "--export",
        "export.ndjson",
        "--max-line-bytes",
        limit,
    ])
    .ok();
    util::assert_same_records(
        &dir.join("back.ndjson"),
        &dir.join("export.ndjson"),
        "rollback",
    );
}
