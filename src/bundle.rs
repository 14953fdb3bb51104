//! The bundle (SPEC §6): a directory holding the change set, the id map and the report, with a
//! manifest that checksums every file. Written completely or not at all, byte for byte the same
//! for the same input and options; a bundle whose files disagree with its manifest is refused.

use crate::error::Failure;
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
/// The groups with more than one version, one a line.
pub const GROUPS: &str = "groups.ndjson.zst";
/// The conflicts of the merge, one a line.
pub const CONFLICTS: &str = "conflicts.ndjson.zst";
/// The unresolved reports, one a line.
pub const UNRESOLVED: &str = "unresolved.ndjson.zst";
/// The warnings, one `{"warning": …}` a line.
pub const WARNINGS: &str = "warnings.ndjson.zst";
/// The lines skipped under `--max-errors`, verbatim, one a line.
pub const SKIPPED: &str = "skipped.ndjson.zst";
/// The reviewer's decisions applied (`--decisions`), one a line; present only when given.
pub const DECISIONS: &str = "decisions.ndjson.zst";
/// The format version this lookmig writes and reads.
pub const VERSION: u64 = 2;

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

impl Manifest {
    /// The records of the part named `name`, as listed (`None`: not listed).
    pub fn records(&self, name: &str) -> Option<u64> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.records)
    }
}

/// What a bundle is written from.
pub struct Contents<'a> {
    /// The change lines, compressed in the streams of [`crate::changeset::stream`].
    pub changes: crate::output::Streams,
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
    let idmap_len = c.idmap.len();
    let (level, threads) = (c.level, c.threads);
    let r = c.report;
    // The change set is copied out of its temporary frames (and checksummed) on a thread of
    // its own while the id map's sort runs are merged here: neither waits for the other.
    let (changes, idmap) = std::thread::scope(|scope| {
        let changes = scope.spawn(|| write_streams(&dir.join(CHANGES), CHANGES, c.changes));
        let idmap = write_lines(&dir.join(IDMAP), IDMAP, idmap_len, level, threads, |w| {
            c.idmap.finish(|_, line| Ok(w.line(line)?))
        });
        let changes = changes
            .join()
            .expect("writing the change set does not panic");
        (changes, idmap)
    });
    let mut files = vec![
        changes?,
        idmap?,
        write_lines(
            &dir.join(GROUPS),
            GROUPS,
            r.groups.len(),
            level,
            threads,
            |w| Ok(r.groups.for_each(|line| w.line(line))?),
        )?,
        write_lines(
            &dir.join(CONFLICTS),
            CONFLICTS,
            r.conflicts.len(),
            level,
            threads,
            |w| Ok(r.conflicts.for_each(|line| w.line(line))?),
        )?,
        write_items(&dir.join(UNRESOLVED), UNRESOLVED, &r.unresolved, level)?,
        write_items(
            &dir.join(WARNINGS),
            WARNINGS,
            &r.warnings
                .iter()
                .map(|w| serde_json::json!({ "warning": w }))
                .collect::<Vec<_>>(),
            level,
        )?,
        write_items(&dir.join(SKIPPED), SKIPPED, &r.skipped_lines, level)?,
    ];
    if let Some(d) = &r.decisions {
        files.push(write_items(&dir.join(DECISIONS), DECISIONS, d, level)?);
    }
    let report = serde_json::to_vec_pretty(&r.small()).context("serialising the report")?;
    std::fs::write(dir.join(REPORT), &report)
        .with_context(|| format!("{}: writing {REPORT}", target.path.display()))?;
    files.push(FileEntry {
        name: REPORT.into(),
        records: 1,
        sha256: crate::input::sha256_bytes(&report),
    });
    let k = &r.counts;
    let manifest = Manifest {
        format: "lookmig-bundle".into(),
        version: VERSION,
        tool: format!("lookmig {}", env!("CARGO_PKG_VERSION")),
        input_sha256: c.input_sha256.clone(),
        options: c.options.clone(),
        counts: serde_json::json!({
            "changes": k.changes_create + k.changes_update + k.changes_delete,
            "create": k.changes_create,
            "update": k.changes_update,
            "delete": k.changes_delete,
            "idmap": idmap_len,
            "groups": r.groups.len(),
            "conflicts": r.conflicts.len(),
            "unresolved": r.unresolved.len(),
            "warnings": r.warnings.len(),
            "skipped": r.skipped_lines.len(),
        }),
        files,
    };
    let mut m = serde_json::to_vec_pretty(&manifest).context("serialising the manifest")?;
    m.push(b'\n');
    std::fs::write(dir.join(MANIFEST), m)
        .with_context(|| format!("{}: writing {MANIFEST}", target.path.display()))?;
    dir.commit()
}

fn write_items<T: Serialize>(
    path: &Path,
    name: &str,
    items: &[T],
    level: i32,
) -> Result<FileEntry> {
    write_lines(path, name, items.len() as u64, level, 1, |w| {
        for item in items {
            w.line(&serde_json::to_vec(item)?)?;
        }
        Ok(())
    })
}

fn write_streams(path: &Path, name: &str, streams: crate::output::Streams) -> Result<FileEntry> {
    let records = streams.len();
    let file = File::create(path).with_context(|| format!("{}: creating", path.display()))?;
    let sha256 = streams
        .finish(&file)
        .with_context(|| format!("{}: writing (is the disk full?)", path.display()))?;
    Ok(FileEntry {
        name: name.into(),
        records,
        sha256,
    })
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
    let sha256 = w
        .finish()
        .with_context(|| format!("{}: writing (is the disk full?)", path.display()))?;
    drop(file);
    Ok(FileEntry {
        name: name.into(),
        records,
        sha256,
    })
}

/// A bundle whose files disagree with its manifest ([`Failure::Damaged`]): refused everywhere,
/// and a failed verification (exit 3) for `verify`.
macro_rules! damaged {
    ($($t:tt)*) => { return Err(Failure::Damaged(format!($($t)*)).into()) };
}

/// A bundle on disk whose files were checked against its manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Opens a bundle and checks it: manifest format and version, every file listed present with
/// its checksum and record count, no file outside the bundle, none missing, none extra.
pub fn open(dir: &Path) -> Result<Bundle> {
    open_with(dir, true)
}

/// [`open`], except that the change set's records are not counted (its checksum is checked):
/// for a reader that streams it whole anyway and compares its lines with
/// [`Bundle::change_count`] before it commits anything (the database restore, which would
/// otherwise decompress the largest part twice before its first write).
pub fn open_counting_changes_later(dir: &Path) -> Result<Bundle> {
    open_with(dir, false)
}

fn open_with(dir: &Path, count_changes: bool) -> Result<Bundle> {
    let name = dir.display();
    if !dir.is_dir() {
        bail!("{name}: not a bundle directory (make one with `lookmig migrate EXPORT -o {name}`)");
    }
    let mpath = dir.join(MANIFEST);
    let Ok(text) = std::fs::read(&mpath) else {
        damaged!("{name}: cannot read {MANIFEST}; the bundle is incomplete");
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        Failure::Damaged(format!(
            "{}: not a valid manifest ({e}); the bundle is damaged, make it again",
            mpath.display()
        ))
    })?;
    if manifest.format != "lookmig-bundle" {
        damaged!(
            "{}: format {:?} is not a lookmig bundle (lookmig-bundle version {VERSION})",
            mpath.display(),
            manifest.format,
        );
    }
    if manifest.version != VERSION {
        damaged!(
            "{}: lookmig-bundle version {} is not a bundle this lookmig reads (it reads version {VERSION}); migrate the export again with this lookmig: lookmig migrate EXPORT -o BUNDLE",
            mpath.display(),
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
    for required in [
        CHANGES, IDMAP, REPORT, GROUPS, CONFLICTS, UNRESOLVED, WARNINGS, SKIPPED,
    ] {
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
    // Each file is read once (its checksum and its records together), the files side by side:
    // at 200,000 reports this check read 130 MB twice, one file after the other, before a
    // restore could start.
    use rayon::prelude::*;
    manifest.files.par_iter().try_for_each(|f| -> Result<()> {
        let path = dir.join(&f.name);
        let zst = f.name.ends_with(".ndjson.zst") && (count_changes || f.name != CHANGES);
        let (sha, records) = match checksum_and_records(&path, zst) {
            Ok(read) => read,
            // Not zstd, or cut short: its checksum says whether it is the file migrate wrote.
            Err(e) => match sha256_file(&path) {
                Ok(sha) if sha == f.sha256 => {
                    damaged!("{}: cannot be decompressed ({e}); the bundle is damaged, make it again", path.display())
                }
                Ok(sha) => (sha, None),
                Err(_) => damaged!(
                    "{name}: {} is missing or unreadable; the bundle is incomplete",
                    f.name
                ),
            },
        };
        if sha != f.sha256 {
            damaged!("{}: checksum differs from the manifest; the bundle was changed or damaged, make it again", path.display());
        }
        // A change set not counted here is counted by its reader.
        let records = records.unwrap_or(if f.name == CHANGES { f.records } else { 1 });
        if records != f.records {
            damaged!(
                "{}: holds {records} records, the manifest says {}",
                path.display(),
                f.records
            );
        }
        Ok(())
    })?;
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
    let records = |name: &str| manifest.records(name);
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
    let sum = |names: &[&str]| names.iter().map(|n| rc[*n].as_u64()).sum::<Option<u64>>();
    let expected = [
        ("changes", records(CHANGES)),
        (
            "changes",
            sum(&["changes_create", "changes_update", "changes_delete"]),
        ),
        ("idmap", records(IDMAP)),
        ("create", rc["changes_create"].as_u64()),
        ("update", rc["changes_update"].as_u64()),
        ("delete", rc["changes_delete"].as_u64()),
        ("groups", records(GROUPS)),
        ("conflicts", records(CONFLICTS)),
        ("conflicts", rc["conflicts"].as_u64()),
        ("unresolved", records(UNRESOLVED)),
        ("unresolved", rc["unresolved"].as_u64()),
        ("warnings", records(WARNINGS)),
        ("skipped", records(SKIPPED)),
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

/// The SHA-256 of a file's bytes and, for a zstd NDJSON part (`zst`), its records: the lines
/// that hold more than white space, as [`crate::input::Lines`] reads them. One read of the file
/// feeds both.
fn checksum_and_records(path: &Path, zst: bool) -> std::io::Result<(String, Option<u64>)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    /// Hashes what the decoder reads.
    struct Hashing<R> {
        inner: R,
        hash: Sha256,
    }
    impl<R: Read> Read for Hashing<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hash.update(&buf[..n]);
            Ok(n)
        }
    }
    if !zst {
        return Ok((sha256_file(path)?, None));
    }
    let mut raw = Hashing {
        inner: File::open(path)?,
        hash: Sha256::new(),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut records = 0u64;
    // Whether the line read so far holds anything but white space.
    let mut filled = false;
    {
        let mut dec = zstd::stream::read::Decoder::new(&mut raw)?;
        loop {
            let n = dec.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &buf[..n]).chain(std::iter::once(n)) {
                filled = filled || buf[start..end].iter().any(|b| !b.is_ascii_whitespace());
                if end < n {
                    records += u64::from(filled);
                    filled = false;
                }
                start = end + 1;
            }
        }
    }
    records += u64::from(filled);
    // Anything after the last frame is checksummed too.
    while raw.read(&mut buf)? > 0 {}
    Ok((crate::input::hex(&raw.hash.finalize()), Some(records)))
}

impl Bundle {
    /// The number of change lines, as the manifest lists it.
    pub fn change_count(&self) -> u64 {
        self.manifest.records(CHANGES).unwrap_or(0)
    }

    /// The bundle's id: the SHA-256 of its manifest, which holds every part's checksum. What
    /// was signed off is what runs: `restore --expect ID` refuses any other bundle.
    pub fn id(&self) -> Result<String> {
        let path = self.dir.join(MANIFEST);
        sha256_file(&path).with_context(|| format!("{}: reading", path.display()))
    }

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

    /// Calls `f` with each item of one of the bundle's list parts ([`GROUPS`], [`CONFLICTS`],
    /// …), parsed as `T`.
    pub fn for_each_item<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        mut f: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        self.for_each_line(name, |_, line| f(crate::record::from_json_bytes(line)?))
    }

    /// The first `limit` items of a list part (all when `limit` is 0).
    pub fn items<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.for_each_line(name, |_, line| {
            if limit == 0 || out.len() < limit {
                out.push(crate::record::from_json_bytes(line)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads the parts of `report.json` that `T` names.
    pub fn report_part<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.dir.join(REPORT);
        let file = File::open(&path).with_context(|| format!("{}: reading", path.display()))?;
        serde_json::from_reader(std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("{}: not a valid report", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zst(frames: &[&[u8]]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut bytes = Vec::new();
        for frame in frames {
            bytes.extend(zstd::encode_all(*frame, 3).unwrap());
        }
        std::fs::write(f.path(), &bytes).unwrap();
        f
    }

    #[test]
    fn records_are_the_lines_with_more_than_white_space() {
        for (frames, records) in [
            (&[&b"{}\n{}\n"[..]][..], 2),
            (&[&b"{}\n{}"[..]][..], 2),
            (&[&b""[..]][..], 0),
            (&[&b"\n \t\n{}\n\n"[..]][..], 1),
            // A line split across two frames is one line.
            (&[&b"{\"a\":"[..], &b"1}\n  {}"[..]][..], 2),
        ] {
            let f = zst(frames);
            let (sha, n) = checksum_and_records(f.path(), true).unwrap();
            assert_eq!(n, Some(records), "{frames:?}");
            assert_eq!(sha, sha256_file(f.path()).unwrap());
        }
    }

    #[test]
    fn a_file_that_is_not_zstd_is_an_error_not_a_count() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"{}\n").unwrap();
        assert!(checksum_and_records(f.path(), true).is_err());
        let (sha, n) = checksum_and_records(f.path(), false).unwrap();
        assert_eq!((sha, n), (sha256_file(f.path()).unwrap(), None));
    }
}
