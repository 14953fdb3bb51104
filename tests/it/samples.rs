//! The hand-checked samples of `samples/` (see `samples/README.md`), one module per folder.
//!
//! A folder with `expected.ndjson`: `migrate` then `restore --onto export.ndjson` gives the
//! expected records, the bundle verifies against its export, a second migration of the result
//! changes nothing, restoring twice is restoring once, and rolling back gives the export again.
//! A folder with `expect`: `migrate` exits with the code on its first line, says the substring
//! on its second line, and writes nothing.
//!
//! Every command runs with the sample folder as its current directory, because the `args`
//! files name their files relative to it; every output goes to a temporary directory.

use crate::util::{self, arg, assert_same_records, Dir};
use std::path::PathBuf;

/// The extra `migrate` options of a sample (its `args` file, split on white space).
fn sample_args(name: &str) -> Vec<String> {
    let p = util::sample(name).join("args");
    match std::fs::read_to_string(&p) {
        Ok(text) => text.split_whitespace().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// A sample migrated into a bundle and restored onto its own export.
struct Restored {
    name: &'static str,
    folder: PathBuf,
    export: PathBuf,
    dir: Dir,
    bundle: PathBuf,
    out: PathBuf,
}

fn migrate_and_restore(name: &'static str) -> Restored {
    let folder = util::sample(name);
    let export = folder.join("export.ndjson");
    let dir = Dir::new();
    let bundle = dir.join("bundle");
    let out = dir.join("out.ndjson");
    util::migrate(&folder, &export, &bundle, &sample_args(name)).ok();
    assert!(
        bundle.join("manifest.json").is_file(),
        "{name}: migrate wrote no manifest"
    );
    util::restore(&folder, &bundle, &export, &out, &[]).ok();
    Restored {
        name,
        folder,
        export,
        dir,
        bundle,
        out,
    }
}

fn restore_gives_expected(name: &'static str) {
    let r = migrate_and_restore(name);
    assert_same_records(
        &r.out,
        &r.folder.join("expected.ndjson"),
        &format!("sample {name}: restored export"),
    );
    let export_lines = util::lines(&r.export);
    if export_lines
        .first()
        .is_some_and(|l| l.contains("\"header\""))
    {
        let out_lines = util::lines(&r.out);
        assert_eq!(
            out_lines.first(),
            export_lines.first(),
            "sample {name}: the header is not the first line of OUT"
        );
    }
}

fn verify_passes(name: &'static str) {
    let folder = util::sample(name);
    let dir = Dir::new();
    let bundle = dir.join("bundle");
    util::migrate(
        &folder,
        &folder.join("export.ndjson"),
        &bundle,
        &sample_args(name),
    )
    .ok();
    util::run(
        &folder,
        ["verify", &arg(&bundle), "--export", "export.ndjson"],
    )
    .ok();
    util::run(&folder, ["verify", &arg(&bundle)]).ok();
}

fn second_migration_changes_nothing(name: &'static str) {
    let r = migrate_and_restore(name);
    let again = r.dir.join("again");
    util::migrate(&r.folder, &r.out, &again, &sample_args(name)).ok();
    let changes = util::changes(&again);
    assert!(
        changes.is_empty(),
        "sample {}: migrating the restored export again gives {} changes, expected none; first: {}",
        r.name,
        changes.len(),
        util::canonical(&changes[0])
    );
    let inspect = util::run(&r.folder, ["inspect", "--json", &arg(&again)])
        .ok()
        .json();
    assert_eq!(
        inspect["manifest"]["counts"]["changes"], 0,
        "sample {}: inspect --json of the second bundle",
        r.name
    );
}

fn restore_twice_is_restore_once(name: &'static str) {
    let r = migrate_and_restore(name);
    let twice = r.dir.join("twice.ndjson");
    let out = util::restore(&r.folder, &r.bundle, &r.out, &twice, &["--json"]).ok();
    let summary = out.json();
    assert_eq!(
        summary["applied"], 0,
        "sample {}: restoring again applied changes: {summary}",
        r.name
    );
    assert_eq!(
        summary["already_applied"], summary["changes"],
        "sample {}: {summary}",
        r.name
    );
    assert_same_records(
        &twice,
        &r.out,
        &format!("sample {}: restored twice vs once", r.name),
    );
}

fn rollback_gives_export(name: &'static str) {
    let r = migrate_and_restore(name);
    let back = r.dir.join("back.ndjson");
    util::rollback(&r.folder, &r.bundle, &r.out, &back, &[]).ok();
    assert_same_records(&back, &r.export, &format!("sample {}: rolled back", r.name));
}

fn fails_as_expected(name: &'static str) {
    let folder = util::sample(name);
    let expect = std::fs::read_to_string(folder.join("expect")).expect("the expect file");
    let mut lines = expect.lines();
    let code: i32 = lines
        .next()
        .and_then(|l| l.trim().strip_prefix("exit "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("sample {name}: the first line of expect is not `exit N`"));
    let needle = lines
        .next()
        .unwrap_or_else(|| panic!("sample {name}: expect has no second line"));
    let dir = Dir::new();
    let bundle = dir.join("bundle");
    util::migrate(
        &folder,
        &folder.join("export.ndjson"),
        &bundle,
        &sample_args(name),
    )
    .code(code)
    .stderr_has(needle);
    assert!(
        !bundle.exists(),
        "sample {name}: the bundle exists after a failed migrate"
    );
    assert_eq!(
        dir.names(),
        Vec::<String>::new(),
        "sample {name}: a failed migrate left files behind"
    );
    // The dry run fails the same way.
    let mut plan = vec!["plan".to_string(), "export.ndjson".into()];
    plan.extend(sample_args(name));
    util::run(&folder, plan).code(code).stderr_has(needle);
}

macro_rules! samples {
    (
        restored: [$($ok:ident => $okdir:literal),* $(,)?],
        failing: [$($bad:ident => $baddir:literal),* $(,)?] $(,)?
    ) => {
        $(
            mod $ok {
                #[test]
                fn restore_gives_expected() {
                    super::restore_gives_expected($okdir);
                }
                #[test]
                fn verify_passes() {
                    super::verify_passes($okdir);
                }
                #[test]
                fn second_migration_changes_nothing() {
                    super::second_migration_changes_nothing($okdir);
                }
                #[test]
                fn restore_twice_is_restore_once() {
                    super::restore_twice_is_restore_once($okdir);
                }
                #[test]
                fn rollback_gives_export() {
                    super::rollback_gives_export($okdir);
                }
            }
        )*
        $(
            #[test]
            fn $bad() {
                fails_as_expected($baddir);
            }
        )*

        /// Every folder of `samples/` is listed above, each in the right list.
        #[test]
        fn every_sample_folder_is_tested() {
            let restored: &[&str] = &[$($okdir),*];
            let failing: &[&str] = &[$($baddir),*];
            let mut listed: Vec<&str> = restored.iter().chain(failing).copied().collect();
            listed.sort();
            let on_disk: Vec<String> = util::names(&util::samples_dir())
                .into_iter()
                .filter(|n| util::samples_dir().join(n).is_dir())
                .collect();
            assert_eq!(listed, on_disk, "the sample list of tests/it/samples.rs and samples/ disagree");
            for name in restored {
                assert!(util::sample(name).join("expected.ndjson").is_file(), "{name} has no expected.ndjson");
            }
            for name in failing {
                assert!(util::sample(name).join("expect").is_file(), "{name} has no expect");
            }
        }
    };
}

samples! {
    restored: [
        s01_legacy_dashboard => "01-legacy-dashboard",
        s02_legacy_look => "02-legacy-look",
        s03_legacy_lookml_dashboard => "03-legacy-lookml-dashboard",
        s04_already_stable => "04-already-stable",
        s05_source_url_fallback => "05-source-url-fallback",
        s06_unresolved => "06-unresolved",
        s08_id_map_csv => "08-id-map-csv",
        s09_id_map_ndjson => "09-id-map-ndjson",
        s10_collapse_versions => "10-collapse-versions",
        s11_deleted_versions => "11-deleted-versions",
        s12_deleted_recover => "12-deleted-recover",
        s13_columns => "13-columns",
        s14_mentions => "14-mentions",
        s15_object_sets => "15-object-sets",
        s16_two_servers => "16-two-servers",
        s16b_server_option => "16b-server-option",
        s17_unknown_kinds => "17-unknown-kinds",
    ],
    failing: [
        s07_unresolved_strict => "07-unresolved-strict",
        s18_malformed => "18-malformed",
        s19_duplicate_key => "19-duplicate-key",
        s20_wrong_type => "20-wrong-type",
        s21_header_version => "21-header-version",
        s22_server_missing => "22-server-missing",
        s23_idmap_conflict => "23-idmap-conflict",
        s24_no_looker_server => "24-no-looker-server",
    ],
}
