//! The shared helper: run the real binary in a temporary directory, read exports and bundles,
//! and compare exports the way SPEC §1 and §7 compare them — as multisets of records in
//! canonical JSON, since the order of lines is not part of the contract.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The zstd frame magic number, as it appears at the start of a file.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The folder holding the hand-checked samples.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// One sample folder.
pub fn sample(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Out {
    /// What was run, for messages.
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics (showing the output) unless the exit code is `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run succeeded (exit 0).
    #[track_caller]
    pub fn ok(self) -> Out {
        self.code(0)
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Out {
        assert!(
            self.stderr.contains(needle),
            "`{}`: stderr does not contain {needle:?}\n--- stderr\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("`{}`: stdout is not JSON ({e})\n{}", self.what, self.stdout)
        })
    }
}

/// Runs `lookmig ARGS` with `cwd` as the current directory and `stdin` as its input.
pub fn run_with_stdin<I, S>(cwd: &Path, args: I, stdin: Option<Vec<u8>>) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_env(cwd, args, stdin, &[])
}

/// Runs `lookmig ARGS` with `cwd` as the current directory, `stdin` as its input and the
/// environment variables `env` set (the test knobs of the README).
pub fn run_with_env<I, S>(cwd: &Path, args: I, stdin: Option<Vec<u8>>, env: &[(&str, &str)]) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let what = format!(
        "lookmig {}",
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = assert_cmd::Command::cargo_bin("lookmig").expect("the lookmig binary is built");
    cmd.current_dir(cwd)
        .args(&args)
        .timeout(Duration::from_secs(120));
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(input) = stdin {
        cmd.write_stdin(input);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("`{what}`: cannot run ({e})"));
    Out {
        what,
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `lookmig ARGS` with `cwd` as the current directory.
pub fn run<I, S>(cwd: &Path, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_stdin(cwd, args, None)
}

/// A temporary working directory, removed when dropped.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::Builder::new()
                .prefix("lookmig-test-")
                .tempdir()
                .expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A path inside the directory (nothing is created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// Copies a file into the directory and returns its new path.
    pub fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::copy(from, &p)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), p.display()));
        p
    }

    /// Runs `lookmig ARGS` in this directory.
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.path(), args)
    }

    /// The names in the directory, sorted (hidden ones included).
    pub fn names(&self) -> Vec<String> {
        names(self.path())
    }
}

/// The names in a directory, sorted (hidden ones included).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `lookmig migrate EXPORT -o BUNDLE ARGS…`, run in `cwd`.
pub fn migrate(cwd: &Path, export: &Path, bundle: &Path, extra: &[String]) -> Out {
    let mut a = vec!["migrate".to_string(), arg(export), "-o".into(), arg(bundle)];
    a.extend(extra.iter().cloned());
    run(cwd, a)
}

/// `lookmig restore BUNDLE --onto EXPORT -o OUT ARGS…`, run in `cwd`.
pub fn restore(cwd: &Path, bundle: &Path, onto: &Path, out: &Path, extra: &[&str]) -> Out {
    apply("restore", cwd, bundle, onto, out, extra)
}

/// `lookmig rollback BUNDLE --onto EXPORT -o OUT ARGS…`, run in `cwd`.
pub fn rollback(cwd: &Path, bundle: &Path, onto: &Path, out: &Path, extra: &[&str]) -> Out {
    apply("rollback", cwd, bundle, onto, out, extra)
}

fn apply(verb: &str, cwd: &Path, bundle: &Path, onto: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut a = vec![
        verb.to_string(),
        arg(bundle),
        "--onto".into(),
        arg(onto),
        "-o".into(),
        arg(out),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    run(cwd, a)
}

/// The bytes of a file, decompressed when they start with the zstd magic number.
pub fn read_decoded(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if bytes.starts_with(&ZSTD_MAGIC) {
        zstd::decode_all(&bytes[..])
            .unwrap_or_else(|e| panic!("{}: not valid zstd ({e})", path.display()))
    } else {
        bytes
    }
}

/// zstd-compresses bytes.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd compression")
}

/// The non-blank lines of an NDJSON file (plain or zstd), each parsed as JSON.
pub fn values(path: &Path) -> Vec<Value> {
    let bytes = read_decoded(path);
    let text =
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{}: not UTF-8 ({e})", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

/// A JSON value in canonical form: object keys sorted (recursively), no white space.
/// (serde_json is built with `preserve_order` here, so its own output keeps the input order.)
pub fn canonical(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, s: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            s.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(k).unwrap());
                s.push(':');
                write_canonical(v, s);
            }
            s.push('}');
        }
        Value::Array(items) => {
            s.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_canonical(v, s);
            }
            s.push(']');
        }
        other => s.push_str(&serde_json::to_string(other).unwrap()),
    }
}

/// An NDJSON file (plain or zstd) as a sorted multiset of canonical JSON records.
pub fn records(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = values(path).iter().map(canonical).collect();
    v.sort();
    v
}

/// Asserts two exports hold the same records (as multisets), listing the differences.
#[track_caller]
pub fn assert_same_records(actual: &Path, expected: &Path, context: &str) {
    let a = records(actual);
    let e = records(expected);
    if a == e {
        return;
    }
    let (only_a, only_e) = multiset_difference(&a, &e);
    let mut msg = format!(
        "{context}: {} and {} differ as records ({} vs {} records)\n",
        actual.display(),
        expected.display(),
        a.len(),
        e.len()
    );
    for r in &only_a {
        msg += &format!("  only in {}: {r}\n", actual.display());
    }
    for r in &only_e {
        msg += &format!("  only in {}: {r}\n", expected.display());
    }
    panic!("{msg}");
}

/// The records only in `a` and only in `b`, counting repeats.
pub fn multiset_difference(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for r in a {
        *counts.entry(r).or_default() += 1;
    }
    for r in b {
        *counts.entry(r).or_default() -= 1;
    }
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    for (r, n) in counts {
        for _ in 0..n.max(0) {
            only_a.push(r.to_string());
        }
        for _ in 0..(-n).max(0) {
            only_b.push(r.to_string());
        }
    }
    (only_a, only_b)
}

/// The changes of a bundle (`changes.ndjson.zst`), parsed.
pub fn changes(bundle: &Path) -> Vec<Value> {
    values(&bundle.join("changes.ndjson.zst"))
}

/// The record a change leaves (SPEC §6): a create's `record`, an update's `prior` with `set`
/// and `unset` applied, null for a delete.
pub fn after(c: &Value) -> Value {
    match c["op"].as_str() {
        Some("create") => c["record"].clone(),
        Some("update") => {
            let mut r = c["prior"]
                .as_object()
                .expect("an update has a prior")
                .clone();
            for (k, v) in c["set"].as_object().into_iter().flatten() {
                r.insert(k.clone(), v.clone());
            }
            for k in c["unset"].as_array().into_iter().flatten() {
                r.shift_remove(k.as_str().unwrap_or(""));
            }
            Value::Object(r)
        }
        _ => Value::Null,
    }
}

/// The report of a bundle: `report.json` with its long lists read back from their parts
/// (`groups`, `conflicts`, `unresolved`, `warnings` as strings, `skipped_lines`), parsed.
pub fn report(bundle: &Path) -> Value {
    let p = bundle.join("report.json");
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut r: Value =
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e})", p.display()));
    let part = |name: &str| Value::Array(values(&bundle.join(name)));
    r["groups"] = part("groups.ndjson.zst");
    r["conflicts"] = part("conflicts.ndjson.zst");
    r["unresolved"] = part("unresolved.ndjson.zst");
    r["warnings"] = Value::Array(
        values(&bundle.join("warnings.ndjson.zst"))
            .into_iter()
            .map(|w| w["warning"].clone())
            .collect(),
    );
    r["skipped_lines"] = part("skipped.ndjson.zst");
    r
}

/// The manifest of a bundle (`manifest.json`), parsed.
pub fn manifest(bundle: &Path) -> Value {
    let p = bundle.join("manifest.json");
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e})", p.display()))
}

/// Every file of a bundle directory, by name, with its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    names(dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n))
                .unwrap_or_else(|e| panic!("{}/{n}: {e}", dir.display()));
            (n, bytes)
        })
        .collect()
}

/// The first file by which two bundle directories differ — one lacks it, or its bytes differ
/// — named without its megabytes; None when they hold the same files byte for byte.
pub fn first_difference(a: &Path, b: &Path) -> Option<String> {
    let (a, b) = (files(a), files(b));
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let first = names.into_iter().find_map(|n| match (a.get(n), b.get(n)) {
        (Some(x), Some(y)) if x == y => None,
        (Some(_), Some(_)) => Some(format!("{n} (its bytes)")),
        (Some(_), None) => Some(format!("{n} (only in the first)")),
        _ => Some(format!("{n} (only in the second)")),
    });
    first
}

/// The lines of a file, without their `\n`.
pub fn lines(path: &Path) -> Vec<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.lines().map(str::to_string).collect()
}

/// The SHA-256 of some bytes, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn canonical_sorts_keys_at_every_depth() {
    let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":"s"}}"#).unwrap();
    assert_eq!(
        canonical(&a),
        r#"{"a":{"c":"s","d":[{"x":2,"y":1}]},"b":1}"#
    );
}

#[test]
fn records_tell_different_exports_apart() {
    let s = sample("01-legacy-dashboard");
    assert_ne!(
        records(&s.join("export.ndjson")),
        records(&s.join("expected.ndjson"))
    );
    let (only_a, only_b) = multiset_difference(&["x".into(), "x".into()], &["x".into()]);
    assert_eq!((only_a, only_b), (vec!["x".to_string()], vec![]));
}
