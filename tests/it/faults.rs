//! Faults (issue 5): the process killed at any point of `migrate` or `restore` leaves the old
//! output or the complete new one, never a part of it; a full disk is a clear error with no
//! partial output. The only thing a killed run may leave is its `.lookmig-*.tmp` work beside the
//! output, which is documented and safe to delete.

use crate::util::{self, arg, Dir};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generates a synthetic export big enough that `migrate` takes a while.
fn big_export(dir: &Dir) -> std::path::PathBuf {
    dir.run(["generate", "--reports", "1000", "-o", "big.ndjson.zst"])
        .ok();
    dir.join("big.ndjson.zst")
}

/// When [`run_killed`] kills the run.
#[derive(Debug, Clone, Copy)]
enum At {
    /// This long after the start.
    Time(Duration),
    /// As soon as its `.lookmig-*.tmp` work appears beside the output: mid-write, the moment
    /// the rename-into-place design is for (as `tests/db.rs` waits for the restore's locks).
    Work,
}

/// How a run under [`run_killed`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It ended on its own before the kill.
    Finished,
    /// Killed; `mid_write` when a `.lookmig-*.tmp` was left beside the output, which only a run
    /// killed while that work existed leaves.
    Killed { mid_write: bool },
}

/// Whether `dir` holds a `.lookmig-*.tmp`.
fn has_work(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let n = e.unwrap().file_name();
        let n = n.to_string_lossy();
        n.starts_with(".lookmig-") && n.ends_with(".tmp")
    })
}

/// Runs `lookmig ARGS` in `cwd` (where its output goes), killing it (SIGKILL) at `at` unless
/// it ended first.
fn run_killed(cwd: &Path, args: &[String], at: At) -> Ended {
    assert!(!has_work(cwd), "work of an earlier run is still there");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("lookmig"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lookmig starts");
    let start = Instant::now();
    loop {
        let due = match at {
            At::Time(after) => start.elapsed() >= after,
            At::Work => has_work(cwd),
        };
        if due {
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            return Ended::Finished;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "lookmig {args:?} ran for two minutes"
        );
        std::thread::sleep(Duration::from_micros(match at {
            At::Time(_) => 5000,
            At::Work => 200,
        }));
    }
    let _ = child.kill();
    let status = child.wait().expect("wait");
    if status.success() {
        // It ended between the last look and the kill.
        return Ended::Finished;
    }
    Ended::Killed {
        mid_write: has_work(cwd),
    }
}

/// Panics unless at least one kill of `ends` landed while the run's work existed, so the kill
/// tests test the moment they are about.
#[track_caller]
fn assert_some_kill_mid_write(ends: &[(At, Ended)]) {
    assert!(
        ends.iter()
            .any(|(_, e)| *e == Ended::Killed { mid_write: true }),
        "no kill landed while a .lookmig-*.tmp existed: {ends:?}"
    );
}

/// The names in `dir` that are not in `expected`, after removing (and allowing) the documented
/// `.lookmig-*.tmp` leftovers of a killed run.
#[track_caller]
fn assert_only(dir: &Dir, expected: &[&str]) {
    for n in dir.names() {
        if n.starts_with(".lookmig-") && n.ends_with(".tmp") {
            let p = dir.join(&n);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(dir.names(), want, "a killed run left something unexpected");
}

/// The points to kill at: spread over the length of a complete run and past its end, and
/// as soon as the run's work appears beside the output.
fn kill_points(full: Duration) -> Vec<At> {
    let mut at: Vec<At> = [0.0, 0.2, 0.5, 0.8, 0.95, 1.1]
        .iter()
        .map(|f| At::Time(full.mul_f64(*f)))
        .collect();
    at.push(At::Work);
    at
}

#[test]
fn killed_migrate_leaves_no_bundle_or_a_complete_one() {
    let dir = Dir::new();
    let export = big_export(&dir);
    let start = Instant::now();
    util::migrate(dir.path(), &export, &dir.join("ref"), &[]).ok();
    let full = start.elapsed();
    let want = util::files(&dir.join("ref"));
    let args: Vec<String> = ["migrate", "big.ndjson.zst", "-o", "out"]
        .map(String::from)
        .to_vec();
    let mut ends = vec![];
    for at in kill_points(full) {
        ends.push((at, run_killed(dir.path(), &args, at)));
        let out = dir.join("out");
        if out.exists() {
            assert_eq!(
                util::files(&out),
                want,
                "killed at {at:?}: the bundle in place is not the complete one"
            );
            dir.run(["verify", "out"]).ok();
            std::fs::remove_dir_all(&out).unwrap();
        }
        assert_only(&dir, &["big.ndjson.zst", "ref"]);
    }
    assert_some_kill_mid_write(&ends);
}

#[test]
fn killed_migrate_with_overwrite_leaves_the_old_bundle_or_the_new_one() {
    let dir = Dir::new();
    let export = big_export(&dir);
    let small = dir.copy(
        &util::sample("10-collapse-versions").join("export.ndjson"),
        "small.ndjson",
    );
    let start = Instant::now();
    util::migrate(dir.path(), &export, &dir.join("new"), &[]).ok();
    let full = start.elapsed();
    util::migrate(dir.path(), &small, &dir.join("old"), &[]).ok();
    let (old, new) = (util::files(&dir.join("old")), util::files(&dir.join("new")));
    let args: Vec<String> = ["migrate", "big.ndjson.zst", "-o", "out", "--overwrite"]
        .map(String::from)
        .to_vec();
    let mut ends = vec![];
    for at in kill_points(full) {
        // The old bundle in place before each run.
        let out = dir.join("out");
        if out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        }
        std::fs::create_dir(&out).unwrap();
        for (name, bytes) in &old {
            std::fs::write(out.join(name), bytes).unwrap();
        }
        ends.push((at, run_killed(dir.path(), &args, at)));
        let got = util::files(&out);
        assert!(
            got == old || got == new,
            "killed at {at:?}: the bundle in place is neither the old one nor the new one: {:?}",
            got.keys().collect::<Vec<_>>()
        );
        assert_only(
            &dir,
            &["big.ndjson.zst", "new", "old", "out", "small.ndjson"],
        );
    }
    assert_some_kill_mid_write(&ends);
}

#[test]
fn killed_restore_leaves_no_output_or_a_complete_one() {
    let dir = Dir::new();
    let export = big_export(&dir);
    util::migrate(dir.path(), &export, &dir.join("bundle"), &[]).ok();
    let start = Instant::now();
    util::restore(
        dir.path(),
        &dir.join("bundle"),
        &export,
        &dir.join("ref.ndjson.zst"),
        &[],
    )
    .ok();
    let full = start.elapsed();
    let want = util::read_decoded(&dir.join("ref.ndjson.zst"));
    for (out, extra) in [
        ("out.ndjson.zst", None),
        ("out.ndjson", Some("--overwrite")),
    ] {
        let mut args: Vec<String> = vec![
            "restore".into(),
            "bundle".into(),
            "--onto".into(),
            arg(&export),
            "-o".into(),
            out.into(),
        ];
        args.extend(extra.map(String::from));
        let mut ends = vec![];
        for at in kill_points(full) {
            if extra.is_some() {
                dir.write(out, "old\n");
            }
            ends.push((at, run_killed(dir.path(), &args, at)));
            let p = dir.join(out);
            let mut expected = vec!["big.ndjson.zst", "bundle", "ref.ndjson.zst"];
            if p.exists() {
                let got = util::read_decoded(&p);
                assert!(
                    got == want || (extra.is_some() && got == b"old\n"),
                    "killed at {at:?}: {out} is neither the old file nor the complete new one ({} bytes)",
                    got.len()
                );
                expected.push(out);
            }
            assert_only(&dir, &expected);
            if p.exists() {
                std::fs::remove_file(&p).unwrap();
            }
        }
        assert_some_kill_mid_write(&ends);
    }
}

/// A tmpfs of `size` mounted on a new folder of `dir`, unmounted when dropped. Mounting needs
/// root (CI runs as root); where it is not allowed the test fails and says so, rather than pass
/// without having run.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Dir, size: &str) -> SmallDisk {
        let p = dir.join("small");
        std::fs::create_dir(&p).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .output();
        match out {
            Ok(o) if o.status.success() => SmallDisk(p),
            Ok(o) => panic!(
                "cannot mount a small tmpfs, so the full-disk test cannot run here (run the tests \
                 as root, or as a user allowed to mount): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount, so the full-disk test cannot run here: {e}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_a_clear_error_and_leaves_nothing() {
    let dir = Dir::new();
    let export = big_export(&dir);
    let disk = SmallDisk::mount(&dir, "64k");
    let small = disk.0.clone();
    util::migrate(dir.path(), &export, &small.join("bundle"), &[])
        .code(1)
        .stderr_has("is the disk full?")
        .stderr_has("No space left on device");
    assert_eq!(
        util::names(&small),
        Vec::<String>::new(),
        "migrate left files"
    );
    dir.run(["migrate", "big.ndjson.zst", "-o", "bundle"]).ok();
    util::restore(
        dir.path(),
        &dir.join("bundle"),
        &export,
        &small.join("out.ndjson"),
        &[],
    )
    .code(1)
    .stderr_has("is the disk full?")
    .stderr_has("No space left on device");
    assert_eq!(
        util::names(&small),
        Vec::<String>::new(),
        "restore left files"
    );
    dir.run([
        "generate",
        "--reports",
        "2000",
        "-o",
        &arg(&small.join("gen.ndjson")),
    ])
    .code(1)
    .stderr_has("No space left on device");
    assert_eq!(
        util::names(&small),
        Vec::<String>::new(),
        "generate left files"
    );
}

/// Runs migrate with TMPDIR on a full 64k tmpfs (and `env` besides), and asserts that it stops
/// with `message` and "No space left on device", leaving no bundle and nothing in TMPDIR.
fn migrate_on_a_full_tmpdir(env: &[(&str, &str)], message: &str) {
    let dir = Dir::new();
    let export = big_export(&dir);
    let disk = SmallDisk::mount(&dir, "64k");
    let tmp = arg(&disk.0);
    let mut vars = vec![("TMPDIR", tmp.as_str())];
    vars.extend_from_slice(env);
    let o = util::run_with_env(
        dir.path(),
        ["migrate", &arg(&export), "-o", "bundle"],
        None,
        &vars,
    )
    .code(1)
    .stderr_has(message)
    .stderr_has("No space left on device");
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert_eq!(
        dir.names(),
        ["big.ndjson.zst", "small"],
        "migrate left files"
    );
    assert_eq!(util::names(&disk.0), Vec::<String>::new(), "left in TMPDIR");
}

/// The change lines' compressed frames wait in TMPDIR too (no sort run spills at this size with
/// the default run size): a full TMPDIR stops migrate there with a clear message.
#[test]
fn full_tmpdir_stops_migrate_while_it_keeps_the_change_lines() {
    migrate_on_a_full_tmpdir(
        &[],
        "writing compressed lines to a temporary file (is TMPDIR full?)",
    );
}

/// A full TMPDIR (where sort runs and the duplicate-key check spill) stops migrate with a clear
/// message, and no bundle appears.
#[test]
fn full_tmpdir_stops_migrate_with_a_clear_error_and_no_bundle() {
    migrate_on_a_full_tmpdir(
        &[("LOOKMIG_SORT_RUN_BYTES", "16384")],
        "writing a sort run (is TMPDIR full?)",
    );
}
