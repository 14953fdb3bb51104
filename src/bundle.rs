//! The bundle (SPEC §6): a directory holding the change set, the id map and the report, with a
//! manifest that checksums every file. Written completely or not at all, byte for byte the same
//! for the same input and options; a bundle whose files disagree with its manifest is refused.

use crate::input::sha256_file;
use crate::output::{AtomicDir, LineWriter, Target};
use crate::report::Report;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The change-set file.
pub const CHANGES: &str = "changes.ndjson.zst";
/// The id-map file.
pub const IDMAP: &str = "idmap.ndjson.zst";
/// The report file.
pub const REPORT: &str = "report.json";
/// The manifest file.
pub const MANIFEST: &str = "manifest.json";

/// `put` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Put,
    Delete,
}

/// One changed record (SPEC §6): a put whose prior is null creates it; a delete removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    pub kind: String,
    pub key: String,
    pub prior: Option<Value>,
    pub record: Option<Value>,
}

impl Change {
    /// The change that undoes this one (rollback): prior and record swap.
    pub fn inverse(&self) -> Change {
        Change {
            op: if self.prior.is_none() {
                Op::Delete
            } else {
                Op::Put
            },
            kind: self.kind.clone(),
            key: self.key.clone(),
            prior: self.record.clone(),
            record: self.prior.clone(),
        }
    }
}

/// One file of a bundle, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub records: u64,
    pub sha256: String,
}

/// The bundle's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    pub tool: String,
    pub input_sha256: String,
    pub options: Value,
    pub counts: Value,
    pub files: Vec<FileEntry>,
}

/// What a bundle is written from.
pub struct Contents<'a> {
    /// The change lines in (kind, key) order.
    pub changes: crate::sort::Sorter,
    /// The id-map lines in their order.
    pub idmap: crate::sort::Sorter,
    pub report: &'a Report,
    pub input_sha256: String,
    pub options: Value,
    pub level: i32,
    /// Compression workers (0 = one per core); the bytes do not depend on it.
    pub threads: usize,
}

/// Writes a bundle beside `target` and renames it into place.
pub fn write(target: &Target, c: Contents) -> Result<()> {
    let dir = AtomicDir::create(target)?;
    let changes = dir.join(CHANGES);
    let idmap_len = c.idmap.len();
    let n = c.changes.len();
    let mut files = vec![
        write_lines(&changes, CHANGES, n, c.level, c.threads, |w| {
            c.changes.finish(|_, line| Ok(w.line(line)?))
        })?,
        write_lines(
            &dir.join(IDMAP),
            IDMAP,
            c.idmap.len(),
            c.level,
            c.threads,
            |w| c.idmap.finish(|_, line| Ok(w.line(line)?)),
        )?,
    ];
    let report = serde_json::to_vec(c.report).context("serialising the report")?;
    std::fs::write(dir.join(REPORT), &report)
        .with_context(|| format!("{}: writing {REPORT}", target.path.display()))?;
    files.push(FileEntry {
        name: REPORT.into(),
        records: 1,
        sha256: crate::input::sha256_bytes(&report),
    });
    let (puts, deletes) = (c.report.counts.changes_put, c.report.counts.changes_delete);
    let manifest = Manifest {
        format: "lookmig-bundle".into(),
        version: 1,
        tool: format!("lookmig {}", env!("CARGO_PKG_VERSION")),
        input_sha256: c.input_sha256.clone(),
        options: c.options.clone(),
        counts: serde_json::json!({
            "changes": puts + deletes,
            "put": puts,
            "delete": deletes,
            "idmap": idmap_len,
            "conflicts": c.report.conflicts.len(),
            "unresolved": c.report.unresolved.len(),
        }),
        files,
    };
    let mut m = serde_json::to_vec_pretty(&manifest).context("serialising the manifest")?;
    m.push(b'\n');
    std::fs::write(dir.join(MANIFEST), m)
        .with_context(|| format!("{}: writing {MANIFEST}", target.path.display()))?;
    dir.commit()
}

fn write_lines(
    path: &Path,
    name: &str,
    records: u64,
    level: i32,
    threads: usize,
    body: impl FnOnce(&mut LineWriter) -> Result<()>,
) -> Result<FileEntry> {
    let file = File::create(path).with_context(|| format!("{}: creating", path.display()))?;
    let mut w = LineWriter::new(&file, true, level, threads)?;
    body(&mut w).with_context(|| format!("{}: writing (is the disk full?)", path.display()))?;
    w.finish()
        .with_context(|| format!("{}: writing (is the disk full?)", path.display()))?;
    drop(file);
    Ok(FileEntry {
        name: name.into(),
        records,
        sha256: sha256_file(path)?,
    })
}

/// A bundle whose files disagree with its manifest: refused everywhere, and a failed
/// verification (exit 3) for `verify`.
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

macro_rules! damaged {
    ($($t:tt)*) => { return Err(Damaged(format!($($t)*)).into()) };
}

/// A bundle on disk whose files were checked against its manifest.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Opens a bundle and checks it: manifest format and version, every file listed present with
/// its checksum and record count, no file outside the bundle, none missing, none extra.
pub fn open(dir: &Path) -> Result<Bundle> {
    let name = dir.display();
    if !dir.is_dir() {
        bail!("{name}: not a bundle directory (make one with `lookmig migrate EXPORT -o {name}`)");
    }
    let mpath = dir.join(MANIFEST);
    let Ok(text) = std::fs::read(&mpath) else {
        damaged!("{name}: cannot read {MANIFEST}; the bundle is incomplete");
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        Damaged(format!(
            "{}: not a valid manifest ({e}); the bundle is damaged, make it again",
            mpath.display()
        ))
    })?;
    if manifest.format != "lookmig-bundle" || manifest.version != 1 {
        damaged!(
            "{}: format {:?} version {} is not a bundle this lookmig reads (lookmig-bundle version 1)",
            mpath.display(),
            manifest.format,
            manifest.version
        );
    }
    let mut expected: Vec<&str> = vec![MANIFEST];
    for f in &manifest.files {
        if f.name.is_empty()
            || f.name.contains(['/', '\\'])
            || f.name == "."
            || f.name == ".."
            || f.name == MANIFEST
        {
            damaged!(
                "{}: names {:?}, which is not a file inside the bundle; refusing it",
                mpath.display(),
                f.name
            );
        }
        expected.push(&f.name);
    }
    for required in [CHANGES, IDMAP, REPORT] {
        if !expected.contains(&required) {
            damaged!(
                "{}: does not list {required}; the bundle is incomplete",
                mpath.display()
            );
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("{name}: listing"))? {
        let entry = entry?;
        let fname = entry.file_name().to_string_lossy().to_string();
        if !expected.contains(&fname.as_str()) {
            damaged!(
                "{name}: holds {fname:?}, which the manifest does not list; the bundle was changed"
            );
        }
    }
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let Ok(sha) = sha256_file(&path) else {
            damaged!(
                "{name}: {} is missing or unreadable; the bundle is incomplete",
                f.name
            );
        };
        if sha != f.sha256 {
            damaged!("{}: checksum differs from the manifest; the bundle was changed or damaged, make it again", path.display());
        }
        let records = if f.name.ends_with(".ndjson.zst") {
            count_lines(&path)?
        } else {
            1
        };
        if records != f.records {
            damaged!(
                "{}: holds {records} records, the manifest says {}",
                path.display(),
                f.records
            );
        }
    }
    check_counts(dir, &manifest)?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// The manifest's counts must agree with the checksummed files (the change and id-map record
/// counts, and the report's counts), so that an edited count is refused like an edited file.
fn check_counts(dir: &Path, manifest: &Manifest) -> Result<()> {
    let mpath = dir.join(MANIFEST);
    let records = |name: &str| {
        manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.records)
    };
    #[derive(Deserialize, Default)]
    struct CountsOnly {
        #[serde(default)]
        counts: Value,
    }
    let report: CountsOnly = File::open(dir.join(REPORT))
        .ok()
        .and_then(|f| serde_json::from_reader(std::io::BufReader::new(f)).ok())
        .unwrap_or_default();
    let rc = &report.counts;
    let expected = [
        ("changes", records(CHANGES)),
        ("idmap", records(IDMAP)),
        ("put", rc["changes_put"].as_u64()),
        ("delete", rc["changes_delete"].as_u64()),
        ("conflicts", rc["conflicts"].as_u64()),
        ("unresolved", rc["unresolved"].as_u64()),
    ];
    for (name, want) in expected {
        let have = manifest.counts.get(name).and_then(Value::as_u64);
        if have != want || want.is_none() {
            damaged!(
                "{}: counts.{name} is {}, but the bundle's files say {}; the manifest was changed",
                mpath.display(),
                have.map_or("missing".into(), |n| n.to_string()),
                want.map_or("nothing".into(), |n| n.to_string())
            );
        }
    }
    Ok(())
}

/// Opens a file of a bundle. A change line holds a record twice (prior and record), and a merged
/// record may have grown, so bundle files get four times the line limit of exports.
fn bundle_input(path: &Path) -> Result<crate::input::Input> {
    let mut input = crate::input::Input::new(&path.to_string_lossy())?;
    input.max_line = input.max_line.saturating_mul(4);
    Ok(input)
}

fn count_lines(path: &Path) -> Result<u64> {
    let mut lines = bundle_input(path)?.lines()?;
    let mut n = 0;
    while lines.next_line()?.is_some() {
        n += 1;
    }
    Ok(n)
}

impl Bundle {
    /// Calls `f` with each line (number, bytes) of one of the bundle's NDJSON files, streaming.
    pub fn for_each_line(
        &self,
        name: &str,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let path = self.dir.join(name);
        let mut lines = bundle_input(&path)?.lines()?;
        while let Some(l) = lines.next_line()? {
            f(l.no, &l.bytes).with_context(|| {
                format!("{}:{}: not a valid line of {name}", path.display(), l.no)
            })?;
        }
        Ok(())
    }

    /// Reads the parts of `report.json` that `T` names, streaming past the rest (the report of a
    /// large catalog is large).
    pub fn report_part<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.dir.join(REPORT);
        let file = File::open(&path).with_context(|| format!("{}: reading", path.display()))?;
        serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("{}: not a valid report", path.display()))
    }
}
