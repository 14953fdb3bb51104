//! The commands as a user runs them (SPEC §8): what `plan`, `inspect`, `migrate --json`,
//! `verify --json` and `generate` print and write, the bundle's files (SPEC §6), and `--help`.

use crate::util::{self, Dir};
use serde_json::Value;
use std::collections::BTreeMap;

/// The commands SPEC §8 and the README name (a floor: the help test derives the full list
/// from the binary's help, so a new command is never left out).
const COMMANDS: [&str; 9] = [
    "plan", "migrate", "inspect", "verify", "restore", "rollback", "db", "dump", "generate",
];

fn sample_export(dir: &Dir, sample: &str) -> std::path::PathBuf {
    dir.copy(&util::sample(sample).join("export.ndjson"), "export.ndjson")
}

#[test]
fn plan_prints_a_summary_and_writes_nothing() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    let out = dir.run(["plan", "export.ndjson"]).ok();
    assert!(out.stdout.contains("nothing written"), "{}", out.stdout);
    assert!(
        out.stdout.contains("server 1"),
        "the summary has no line for server 1:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("conflicts: 3"),
        "the summary does not count the 3 conflicts:\n{}",
        out.stdout
    );
    assert_eq!(dir.names(), ["export.ndjson"], "plan wrote something");
}

#[test]
fn plan_json_has_counts() {
    let dir = Dir::new();
    let export = sample_export(&dir, "01-legacy-dashboard");
    let plan = dir.run(["plan", "--json", "export.ndjson"]).ok().json();
    let lines = util::lines(&export)
        .iter()
        .filter(|l| !l.trim().is_empty())
        .count();
    let counts = &plan["counts"];
    assert_eq!(counts["lines"], lines as u64, "{counts}");
    assert_eq!(counts["records_by_kind"]["bi_report"], 2, "{counts}");
    assert_eq!(counts["records_by_kind"]["bi_report_column"], 3, "{counts}");
    assert_eq!(
        counts["migrated_servers"],
        serde_json::json!([1]),
        "{counts}"
    );
    assert_eq!(counts["unresolved"], 0, "{counts}");
    assert_eq!(
        dir.names(),
        ["export.ndjson"],
        "plan --json wrote something"
    );
}

#[test]
fn migrate_json_names_the_bundle_and_holds_the_report() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    let out = dir
        .run(["migrate", "--json", "export.ndjson", "-o", "b"])
        .ok()
        .json();
    assert_eq!(out["bundle"], "b");
    let small: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("b/report.json")).unwrap()).unwrap();
    assert_eq!(out["report"], small);
    assert_eq!(
        out["id"],
        util::sha256_hex(&std::fs::read(dir.join("b/manifest.json")).unwrap()).as_str(),
        "the bundle id is the SHA-256 of its manifest"
    );
}

#[test]
fn bundle_manifest_describes_every_file() {
    let dir = Dir::new();
    let export = sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let b = dir.join("b");
    let parts = [
        "changes.ndjson.zst",
        "conflicts.ndjson.zst",
        "groups.ndjson.zst",
        "idmap.ndjson.zst",
        "report.json",
        "skipped.ndjson.zst",
        "unresolved.ndjson.zst",
        "warnings.ndjson.zst",
    ];
    let mut with_manifest = parts.to_vec();
    with_manifest.insert(4, "manifest.json");
    assert_eq!(util::names(&b), with_manifest);
    let m = util::manifest(&b);
    assert_eq!(m["format"], "lookmig-bundle");
    assert_eq!(m["version"], 2);
    assert_eq!(
        m["input_sha256"],
        util::sha256_hex(&std::fs::read(&export).unwrap()).as_str()
    );
    let files = m["files"].as_array().expect("manifest files");
    let mut listed: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, parts);
    for f in files {
        let name = f["name"].as_str().unwrap();
        let bytes = std::fs::read(b.join(name)).unwrap();
        assert_eq!(f["sha256"], util::sha256_hex(&bytes).as_str(), "{name}");
        if name.ends_with(".ndjson.zst") {
            assert!(bytes.starts_with(&util::ZSTD_MAGIC), "{name} is not zstd");
            assert_eq!(
                f["records"],
                util::values(&b.join(name)).len() as u64,
                "{name}"
            );
        }
    }
    assert_eq!(m["counts"]["changes"], util::changes(&b).len() as u64);
}

#[test]
fn changes_are_in_order_and_well_formed() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let changes = util::changes(&dir.join("b"));
    assert!(!changes.is_empty());
    // The documented order: curation creates and updates, curation deletes, version deletes,
    // version creates and updates; by kind within each (in the SPEC's order of kinds, other
    // kinds last), and nothing more.
    let phase = |c: &serde_json::Value| {
        let versioned = c["kind"] == "bi_report" || c["kind"] == "bi_report_column";
        match (versioned, c["op"] == "delete") {
            (false, false) => 0,
            (false, true) => 1,
            (true, true) => 2,
            (true, false) => 3,
        }
    };
    const KINDS: [&str; 12] = [
        "header",
        "bi_server",
        "bi_folder",
        "bi_report",
        "bi_report_column",
        "custom_field",
        "field_value",
        "trust_flag",
        "tag",
        "star",
        "article",
        "conversation",
    ];
    let kind = |c: &serde_json::Value| {
        KINDS
            .iter()
            .position(|k| c["kind"] == *k)
            .unwrap_or(KINDS.len())
    };
    let keys: Vec<(u8, usize, String)> = changes
        .iter()
        .map(|c| {
            (
                phase(c),
                kind(c),
                c["key"].as_str().expect("key is a string").to_string(),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(
            (w[0].0, w[0].1) <= (w[1].0, w[1].1),
            "changes not in (phase, kind) order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert!(
        keys.iter().any(|k| k.0 == 1) && keys.iter().any(|k| k.0 == 3),
        "the sample has curation deletes and re-keys: {keys:?}"
    );
    for c in &changes {
        match c["op"].as_str() {
            Some("create") => {
                assert!(c["record"].is_object(), "create without a record: {c}");
                assert!(c.get("prior").is_none(), "create with a prior: {c}");
            }
            Some("update") => {
                assert!(c["prior"].is_object(), "update without a prior: {c}");
                assert!(c.get("record").is_none(), "update with a whole record: {c}");
                let set = c["set"].as_object().expect("set is an object");
                for (k, v) in set {
                    assert_ne!(
                        &c["prior"][k], v,
                        "set holds a field that does not change: {c}"
                    );
                }
                for k in c["unset"].as_array().into_iter().flatten() {
                    assert!(
                        c["prior"].get(k.as_str().unwrap()).is_some(),
                        "unset of an absent field: {c}"
                    );
                }
                assert_ne!(
                    c["prior"],
                    util::after(c),
                    "an update that changes nothing: {c}"
                );
            }
            Some("delete") => {
                assert!(c["prior"].is_object(), "delete without a prior: {c}");
                assert!(c.get("record").is_none(), "delete with a record: {c}");
            }
            _ => panic!("bad op: {c}"),
        }
    }
    let idmap = util::values(&dir.join("b/idmap.ndjson.zst"));
    assert_eq!(idmap.len(), 3, "{idmap:?}");
    for line in &idmap {
        for field in [
            "server_id",
            "otype",
            "oid",
            "legacy_external_id",
            "stable_external_id",
            "survivor_oid",
            "action",
        ] {
            assert!(
                line.get(field).is_some(),
                "idmap line without {field}: {line}"
            );
        }
        assert_eq!(line["survivor_oid"], 103, "{line}");
        assert_eq!(line["stable_external_id"], "dashboard/12", "{line}");
    }
}

/// How many changes `inspect` lists in `text` (a line each).
fn changes_listed(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            ["  create ", "  update ", "  delete "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .count()
}

#[test]
fn inspect_describes_the_bundle() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let n = util::changes(&dir.join("b")).len();
    let text = dir.run(["inspect", "b", "--limit", "0"]).ok().stdout;
    assert!(text.contains("bi_report"), "{text}");
    let listed = changes_listed(&text);
    assert_eq!(
        listed, n,
        "inspect --limit 0 should list every change:\n{text}"
    );
    let short = dir.run(["inspect", "b", "--limit", "2"]).ok().stdout;
    let listed = changes_listed(&short);
    assert_eq!(listed, 2, "inspect --limit 2:\n{short}");
}

#[test]
fn inspect_json_counts_the_changes() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let changes = util::changes(&dir.join("b"));
    let j = dir.run(["inspect", "--json", "b"]).ok().json();
    assert_eq!(j["manifest"], util::manifest(&dir.join("b")));
    let small: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("b/report.json")).unwrap()).unwrap();
    assert_eq!(j["report"], small);
    let mut expected: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for c in &changes {
        let op = c["op"].as_str().unwrap();
        *expected
            .entry(c["kind"].as_str().unwrap().into())
            .or_default()
            .entry(op.into())
            .or_default() += 1;
    }
    let got: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_value(j["changes_by_kind"].clone())
            .expect("changes_by_kind is kind -> op -> count");
    assert_eq!(got, expected);
}

#[test]
fn verify_json_lists_no_failures_for_a_fresh_bundle() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let v = dir
        .run(["verify", "--json", "b", "--export", "export.ndjson"])
        .ok()
        .json();
    assert_eq!(v["failures"], serde_json::json!([]), "{v}");
    assert_eq!(v["files"], 9, "{v}");
    assert!(v["curation_items"].as_u64().unwrap_or(0) > 0, "{v}");
}

/// `lookmig generate --reports 50 --seed SEED -o OUT`, run in `dir`; it must succeed.
fn generate_50(dir: &Dir, seed: &str, out: &str) {
    dir.run(["generate", "--reports", "50", "--seed", seed, "-o", out])
        .ok();
}

#[test]
fn generate_is_deterministic_per_seed() {
    let dir = Dir::new();
    generate_50(&dir, "3", "x.ndjson");
    generate_50(&dir, "3", "y.ndjson");
    generate_50(&dir, "4", "z.ndjson");
    let x = std::fs::read(dir.join("x.ndjson")).unwrap();
    assert!(!x.is_empty());
    assert!(
        x == std::fs::read(dir.join("y.ndjson")).unwrap(),
        "the same seed gave different exports"
    );
    assert!(
        x != std::fs::read(dir.join("z.ndjson")).unwrap(),
        "different seeds gave the same export"
    );
    let stdout = dir
        .run(["generate", "--reports", "50", "--seed", "3", "-o", "-"])
        .ok()
        .stdout;
    assert!(
        stdout.as_bytes() == &x[..],
        "generate -o - differs from the file"
    );
    // The same as the library gives.
    let mut lib = Vec::new();
    lookmig::generate::generate(
        &lookmig::generate::GenerateOptions {
            reports: 50,
            seed: 3,
            servers: 2,
        },
        &mut lib,
    )
    .unwrap();
    assert!(
        lib == x,
        "the binary and the library generate different exports"
    );
}

#[test]
fn generate_zst_is_compressed_with_the_same_content() {
    let dir = Dir::new();
    generate_50(&dir, "3", "x.ndjson");
    generate_50(&dir, "3", "x.ndjson.zst");
    let packed = std::fs::read(dir.join("x.ndjson.zst")).unwrap();
    assert!(
        packed.starts_with(&util::ZSTD_MAGIC),
        "x.ndjson.zst is not zstd"
    );
    let plain = std::fs::read(dir.join("x.ndjson")).unwrap();
    assert!(
        zstd::decode_all(&packed[..]).unwrap() == plain,
        "decompressed content differs"
    );
}

#[test]
fn generated_export_is_valid_and_counted() {
    let dir = Dir::new();
    let stats = dir
        .run([
            "generate",
            "--json",
            "--reports",
            "20",
            "--seed",
            "9",
            "-o",
            "x.ndjson",
        ])
        .ok()
        .json();
    let lines = util::lines(&dir.join("x.ndjson"));
    assert_eq!(stats["lines"], lines.len() as u64, "{stats}");
    let by_kind: u64 = stats["by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, lines.len() as u64, "{stats}");
    assert!(
        lines[0].contains("\"header\""),
        "the header is not first: {}",
        lines[0]
    );
    let plan = dir.run(["plan", "--json", "x.ndjson"]).ok().json();
    assert_eq!(plan["counts"]["lines"], lines.len() as u64);
    assert_eq!(plan["counts"]["skipped_lines"], 0);
}

#[test]
fn generate_refuses_an_existing_output() {
    let dir = Dir::new();
    dir.write("x.ndjson", "precious\n");
    dir.run(["generate", "--reports", "5", "-o", "x.ndjson"])
        .code(1);
    assert_eq!(
        std::fs::read_to_string(dir.join("x.ndjson")).unwrap(),
        "precious\n"
    );
    dir.run([
        "generate",
        "--reports",
        "5",
        "-o",
        "x.ndjson",
        "--overwrite",
    ])
    .ok();
    assert_ne!(
        std::fs::read_to_string(dir.join("x.ndjson")).unwrap(),
        "precious\n"
    );
}

/// The subcommands a `--help` text lists (its `Commands:` section), without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn help_of_every_command_exits_0() {
    let dir = Dir::new();
    let top = dir.run(["--help"]).ok();
    let listed = subcommands(&top.stdout);
    for cmd in COMMANDS {
        assert!(
            listed.iter().any(|c| c == cmd),
            "--help does not list {cmd} among its commands {listed:?}:\n{}",
            top.stdout
        );
    }
    // Every command the binary lists, and the commands of those that have some (`db …`),
    // each with `--help` and `help …`.
    let mut todo: Vec<Vec<String>> = listed.into_iter().map(|c| vec![c]).collect();
    let mut seen = vec![];
    while let Some(path) = todo.pop() {
        let mut args = path.clone();
        args.push("--help".into());
        let out = dir.run(&args).ok();
        assert!(
            out.stdout.contains("Usage: lookmig ") && out.stdout.contains(&path.join(" ")),
            "{path:?} --help:\n{}",
            out.stdout
        );
        let mut args = vec!["help".to_string()];
        args.extend(path.iter().cloned());
        let via_help = dir.run(&args).ok();
        assert_eq!(
            via_help.stdout, out.stdout,
            "`help {path:?}` differs from `--help`"
        );
        for sub in subcommands(&out.stdout) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        seen.push(path.join(" "));
    }
    for nested in ["db init", "db load"] {
        assert!(
            seen.iter().any(|s| s == nested),
            "{nested} --help was not run: {seen:?}"
        );
    }
    let version = dir.run(["--version"]).ok();
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );
    assert!(dir.names().is_empty());
}

#[test]
fn restore_and_rollback_json_summaries_add_up() {
    let dir = Dir::new();
    let export = sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let n = util::changes(&dir.join("b")).len() as u64;
    let out = dir.join("out.ndjson.zst");
    let s: Value = util::restore(dir.path(), &dir.join("b"), &export, &out, &["--json"])
        .ok()
        .json();
    assert_eq!(s["changes"], n, "{s}");
    assert_eq!(s["applied"], n, "{s}");
    assert_eq!(s["already_applied"], 0, "{s}");
    assert_eq!(s["lines_written"], util::values(&out).len() as u64, "{s}");
    assert!(
        std::fs::read(&out).unwrap().starts_with(&util::ZSTD_MAGIC),
        "OUT named .zst is not compressed"
    );
    let back = dir.join("back.ndjson");
    let r: Value = util::rollback(dir.path(), &dir.join("b"), &out, &back, &["--json"])
        .ok()
        .json();
    assert_eq!(r["applied"], n, "{r}");
    util::assert_same_records(&back, &export, "rollback of a compressed restore");
    // Untouched lines are copied byte for byte (SPEC §7).
    let original = util::lines(&export);
    let back_lines = util::lines(&back);
    assert!(
        back_lines.contains(&original[1]),
        "the bi_server line was not copied byte for byte"
    );
}

#[test]
fn restore_copies_untouched_lines_byte_for_byte() {
    let dir = Dir::new();
    let mut text =
        std::fs::read_to_string(util::sample("01-legacy-dashboard").join("export.ndjson")).unwrap();
    // Lines no rule touches, written the way no serialiser would write them.
    let odd = [
        r#"{ "kind" : "bi_server",  "id": 9, "type": "tableau", "title": "T\u00e9 \/ x" }"#,
        r#"{"kind":"tag","subject":{"oid":102,"otype":"bi_report_column"},"name":"x","n":1.50}"#,
    ];
    for l in odd {
        text.push_str(l);
        text.push('\n');
    }
    let export = dir.write("export.ndjson", text);
    dir.run(["migrate", "export.ndjson", "-o", "b"]).ok();
    let out = dir.join("out.ndjson");
    util::restore(dir.path(), &dir.join("b"), &export, &out, &[]).ok();
    assert_copied(&out, &odd, "restore");
    let back = dir.join("back.ndjson");
    util::rollback(dir.path(), &dir.join("b"), &out, &back, &[]).ok();
    assert_copied(&back, &odd, "rollback");
}

/// Asserts that each of `lines` is a line of `path` byte for byte (`command` wrote `path`).
#[track_caller]
fn assert_copied(path: &std::path::Path, lines: &[&str], command: &str) {
    let written = util::lines(path);
    for l in lines {
        assert!(
            written.iter().any(|o| o == l),
            "{command} did not copy {l} byte for byte"
        );
    }
}

/// Regression: the columns of an unresolved report were reported as naming "a report that is
/// not a report of that server" (the lookup of reports held only resolved ones).
#[test]
fn columns_of_an_unresolved_report_draw_no_warning() {
    let dir = Dir::new();
    let export = sample_export(&dir, "06-unresolved");
    let out = dir.run(["plan", &util::arg(&export), "--json"]).ok();
    let report = out.json();
    assert!(report["counts"]["unresolved"].as_u64().unwrap() > 0);
    assert_eq!(
        report["warnings"],
        serde_json::json!([]),
        "{}",
        report["warnings"]
    );
}

/// `lookmig restore BUNDLE --onto export.ndjson -o out.ndjson --expect ID`, run in `dir`.
fn restore_expecting(dir: &Dir, bundle: &str, id: &str) -> util::Out {
    dir.run([
        "restore",
        bundle,
        "--onto",
        "export.ndjson",
        "-o",
        "out.ndjson",
        "--expect",
        id,
    ])
}

/// What was signed off is what runs: `restore --expect ID` refuses any other bundle, even one
/// whose checksums were made again, before the target is touched.
#[test]
fn restore_expect_refuses_another_bundle() {
    let dir = Dir::new();
    sample_export(&dir, "10-collapse-versions");
    dir.run(["migrate", "export.ndjson", "-o", "a"]).ok();
    dir.run(["migrate", "export.ndjson", "-o", "b", "--recover-deleted"])
        .ok();
    let id = util::sha256_hex(&std::fs::read(dir.join("a/manifest.json")).unwrap());
    let inspect = dir.run(["inspect", "a"]).ok();
    assert!(inspect.stdout.contains(&id), "{}", inspect.stdout);
    restore_expecting(&dir, "b", &id)
        .code(3)
        .stderr_has("not the expected")
        .stderr_has(&id);
    assert!(!dir.join("out.ndjson").exists());
    restore_expecting(&dir, "a", &id).ok();
}
