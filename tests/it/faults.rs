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

/// Runs `lookmig ARGS` in `cwd`, killing it (SIGKILL) after `after` unless it ended first.
/// Returns whether it was killed.
fn run_killed(cwd: &Path, args: &[String], after: Duration) -> bool {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("lookmig"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lookmig starts");
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().expect("wait");
    true
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

/// The points in time to kill at: spread over the length of a complete run, and past its end.
fn kill_points(full: Duration) -> Vec<Duration> {
    [0.0, 0.2, 0.5, 0.8, 0.95, 1.1]
        .iter()
        .map(|f| full.mul_f64(*f))
        .collect()
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
    for at in kill_points(full) {
        run_killed(dir.path(), &args, at);
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
        run_killed(dir.path(), &args, at);
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
        for at in kill_points(full) {
            if extra.is_some() {
                dir.write(out, "old\n");
            }
            run_killed(dir.path(), &args, at);
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
    }
}

/// A tmpfs of `size` mounted on a new folder of `dir`, unmounted when dropped; None (with the
/// reason printed) where mounting is not allowed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Dir, size: &str) -> Option<SmallDisk> {
        let p = dir.join("small");
        std::fs::create_dir(&p).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk(p)),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a small tmpfs ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                None
            }
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
    let Some(disk) = SmallDisk::mount(&dir, "64k") else {
        return;
    };
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
