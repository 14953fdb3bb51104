//! What the database tests share (`tests/db.rs`, `tests/db_live.rs`): a throwaway PostgreSQL
//! cluster, a database per test, the binary run with a database URL, and exports compared as
//! multisets of records.
//!
//! When `DATABASE_URL` is set, it names a server where the tests may create and drop databases
//! (one per test). Otherwise the tests start a throwaway cluster with `.ci/pg start` in a
//! temporary folder (unix socket only, trust auth) and stop it when the test process ends: a
//! watchdog child holds the other end of a pipe and runs `.ci/pg stop` (pg_ctl stop -m
//! immediate, then removes the folder) as soon as the pipe closes, which happens however this
//! process ends. Without the server binaries the first test fails and says what to install.

#![allow(dead_code)]

#[path = "cluster.rs"]
mod cluster;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// The server

/// A running server the tests may create databases on.
pub struct Server {
    /// A URL to a maintenance database (`postgres`), used to create the test databases.
    pub admin_url: String,
    /// The watchdog, whose stdin we hold: when it closes (this process ends), it stops the
    /// cluster. It is never waited for: it outlives this process by design.
    _watchdog: Option<std::process::Child>,
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                return Server {
                    admin_url: url,
                    _watchdog: None,
                };
            }
        }
        let dir = cluster::folder("pg");
        let watchdog = cluster::watchdog(&dir);
        let url = cluster::start(&dir, None);
        Server {
            admin_url: url,
            _watchdog: Some(watchdog),
        }
    })
}

/// A database of its own for one test, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(test: &str) -> TestDb {
        let s = server();
        let name = format!("lookmig_{test}_{}", std::process::id());
        let mut c = postgres::Client::connect(&s.admin_url, postgres::NoTls)
            .expect("connecting to the test server");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb {
            url: with_dbname(&s.admin_url, &name),
            name,
        }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .expect("connecting to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&server().admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The same server URL with another database name.
pub fn with_dbname(url: &str, db: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, format!("?{q}")),
            None => (rest, String::new()),
        };
        let authority = main.split('/').next().unwrap_or("");
        format!("{scheme}://{authority}/{db}{query}")
    } else {
        format!("{url} dbname={db}")
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary, reading exports

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn lookmig(args: &[&str], url: Option<&str>) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookmig"));
    cmd.args(args).env_remove("DATABASE_URL");
    if let Some(u) = url {
        cmd.env("DATABASE_URL", u);
    }
    let out = cmd.output().expect("running lookmig");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[track_caller]
pub fn ok(args: &[&str], url: Option<&str>) -> Out {
    let o = lookmig(args, url);
    assert_eq!(
        o.code, 0,
        "lookmig {args:?} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        o.code, o.stdout, o.stderr
    );
    o
}

/// An export as a multiset of records (canonical JSON → count): SPEC §7 compares records, not
/// lines or field order.
pub fn records(path: &Path) -> BTreeMap<String, usize> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .read_to_end(&mut raw)
        .unwrap();
    if raw.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        raw = zstd::decode_all(&raw[..]).unwrap();
    }
    let mut out = BTreeMap::new();
    for line in raw.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).unwrap();
        *out.entry(lookmig::record::canonical_json(&v)).or_default() += 1;
    }
    out
}

#[track_caller]
pub fn same_records(a: &Path, b: &Path, what: &str) {
    let (ra, rb) = (records(a), records(b));
    if ra != rb {
        let only_a: Vec<_> = ra.keys().filter(|k| !rb.contains_key(*k)).take(3).collect();
        let only_b: Vec<_> = rb.keys().filter(|k| !ra.contains_key(*k)).take(3).collect();
        panic!("{what}: {} and {} differ\nonly in the first: {only_a:#?}\nonly in the second: {only_b:#?}", a.display(), b.display());
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
