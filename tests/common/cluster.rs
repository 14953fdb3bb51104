//! A throwaway PostgreSQL cluster, shared by the database tests (`tests/common/db.rs` for
//! `tests/db.rs` and `tests/db_live.rs`, and `tests/db_tls.rs`): `.ci/pg start` in a folder of
//! its own, and a watchdog that runs `.ci/pg stop` (pg_ctl stop -m immediate, then removes the
//! folder) when the test process ends, however it ends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `.ci/pg` script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg")
}

/// A fresh folder for a cluster, `lookmig-<what>-<pid>` under the temporary folder, emptied.
pub fn folder(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lookmig-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts the watchdog of a cluster in `dir`: a child that waits for the end of its stdin,
/// which this process holds, and then stops the cluster. Start it before the cluster, so that a
/// cluster that started is always stopped; hold the child, and never wait for it: it outlives
/// this process by design.
pub fn watchdog(dir: &Path) -> Child {
    #[allow(clippy::zombie_processes)]
    let child = Command::new("sh")
        .arg("-c")
        .arg("cat >/dev/null; exec \"$0\" stop \"$1\"")
        .arg(script())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the cluster watchdog");
    child
}

/// Runs `.ci/pg start DIR`, with `LOOKMIG_PG_OPTS` set to `opts` when given, and returns the
/// URL it prints. Fails the test, saying what to install, when the cluster does not start.
pub fn start(dir: &Path, opts: Option<&str>) -> String {
    let mut cmd = Command::new(script());
    cmd.arg("start").arg(dir);
    if let Some(opts) = opts {
        cmd.env("LOOKMIG_PG_OPTS", opts);
    }
    let out = cmd.output().expect("running .ci/pg start");
    assert!(
        out.status.success(),
        ".ci/pg start failed (is PostgreSQL installed? `apt-get install postgresql`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
