//! One writer for every output: built beside the target and renamed into place last, so a
//! reader never sees half a file or half a bundle; an existing target is refused unless the
//! user asked to overwrite it.
//!
//! The work is written to `.lookmig-XXXXXX.tmp` beside the target, flushed to disk (fsync),
//! renamed into place, and the directory is flushed too. A process killed at any point leaves
//! the old target or the complete new one, never a mix; what it may leave is its
//! `.lookmig-*.tmp` work, which no reader takes for an output and which is safe to delete (the
//! next run does not delete it, since another run may be writing it). A replaced bundle
//! directory is swapped with the new one in one step (Linux `renameat2(RENAME_EXCHANGE)`).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a new output goes, and whether an existing one may be replaced.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub overwrite: bool,
}

impl Target {
    /// Refuses an existing target unless overwriting; call before any work starts.
    pub fn check(&self) -> Result<()> {
        if self.path.exists() && !self.overwrite {
            bail!(
                "{}: already exists; choose another path or pass --overwrite to replace it",
                self.path.display()
            );
        }
        Ok(())
    }

    fn parent(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// A file being written beside its target; [`AtomicFile::commit`] renames it into place.
pub struct AtomicFile {
    target: Target,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Starts a new file beside `target`.
    pub fn create(target: &Target) -> Result<AtomicFile> {
        target.check()?;
        let tmp = work_builder(0o666)
            .tempfile_in(target.parent())
            .with_context(|| {
                format!("{}: cannot create a file beside it", target.path.display())
            })?;
        Ok(AtomicFile {
            target: target.clone(),
            tmp,
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Flushes to disk and renames into place.
    pub fn commit(self) -> Result<()> {
        let name = self.target.path.display().to_string();
        self.tmp
            .as_file()
            .sync_all()
            .with_context(|| format!("{name}: writing to disk (is the disk full?)"))?;
        if self.target.overwrite {
            self.tmp.persist(&self.target.path).map_err(|e| e.error)
        } else {
            self.tmp
                .persist_noclobber(&self.target.path)
                .map_err(|e| e.error)
        }
        .with_context(|| format!("{name}: moving the finished file into place"))?;
        sync_dir(&self.target.parent());
        Ok(())
    }
}

/// A builder for work beside a target: named `.lookmig-XXXXXX.tmp`, with the permissions a new
/// file or directory would get (`mode` less the umask), not tempfile's private 0600/0700.
fn work_builder(mode: u32) -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".lookmig-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

/// Flushes a directory's entries (a rename) to disk. Best effort: some file systems refuse it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Swaps two paths in one atomic step, where the system can.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A writer for NDJSON lines, zstd-compressed when `compress` is set.
pub enum LineWriter<'a> {
    Plain(BufWriter<&'a File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<&'a File>>),
}

impl<'a> LineWriter<'a> {
    /// A writer over `file`. Compression always runs in zstd's multithreaded mode, whose output
    /// is the same for any number of workers (at least one), so `--threads` never changes a byte.
    pub fn new(
        file: &'a File,
        compress: bool,
        level: i32,
        threads: usize,
    ) -> Result<LineWriter<'a>> {
        let buf = BufWriter::with_capacity(1 << 20, file);
        Ok(if compress {
            let mut enc = zstd::stream::write::Encoder::new(buf, level)
                .context("starting zstd compression")?;
            enc.multithread(workers(threads) as u32)
                .context("starting zstd worker threads")?;
            LineWriter::Zstd(enc)
        } else {
            LineWriter::Plain(buf)
        })
    }

    /// Writes one line and its `\n`.
    pub fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let w: &mut dyn Write = match self {
            LineWriter::Plain(w) => w,
            LineWriter::Zstd(w) => w,
        };
        w.write_all(bytes)?;
        w.write_all(b"\n")
    }

    /// Ends the stream (the zstd frame) and flushes.
    pub fn finish(self) -> std::io::Result<()> {
        match self {
            LineWriter::Plain(mut w) => w.flush(),
            LineWriter::Zstd(w) => w.finish()?.flush(),
        }
    }
}

/// The worker count for `--threads N`: N, or one per core for 0.
pub fn workers(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// A directory being built beside its target; [`AtomicDir::commit`] renames it into place.
pub struct AtomicDir {
    target: Target,
    tmp: tempfile::TempDir,
}

impl AtomicDir {
    /// Starts a new directory beside `target`.
    pub fn create(target: &Target) -> Result<AtomicDir> {
        target.check()?;
        let tmp = work_builder(0o777)
            .tempdir_in(target.parent())
            .with_context(|| {
                format!(
                    "{}: cannot create a directory beside it",
                    target.path.display()
                )
            })?;
        Ok(AtomicDir {
            target: target.clone(),
            tmp,
        })
    }

    /// The path of a file inside the directory being built.
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Renames the finished directory into place (replacing an old one when overwriting).
    pub fn commit(self) -> Result<()> {
        let name = self.target.path.display().to_string();
        for entry in
            std::fs::read_dir(self.tmp.path()).with_context(|| format!("{name}: listing"))?
        {
            let f = File::open(entry?.path())?;
            f.sync_all()
                .with_context(|| format!("{name}: writing to disk (is the disk full?)"))?;
        }
        sync_dir(self.tmp.path());
        let tmp = self.tmp.keep();
        let parent = self.target.parent();
        if self.target.path.exists() {
            if !self.target.overwrite {
                let _ = std::fs::remove_dir_all(&tmp);
                bail!("{name}: appeared while the bundle was being written; nothing was replaced");
            }
            // One atomic swap: the new bundle takes the old one's place, the old one takes the
            // work directory's name and is removed. A kill leaves one or the other in place.
            if exchange(&tmp, &self.target.path).is_ok() {
                sync_dir(&parent);
                return remove_old(&tmp);
            }
            // No atomic swap here: move the old one aside first (a kill between the two renames
            // leaves it as `.lookmig-*.old`, and no bundle at the target).
            let old = tmp.with_extension("old");
            std::fs::rename(&self.target.path, &old)
                .with_context(|| format!("{name}: moving the old one aside"))?;
            std::fs::rename(&tmp, &self.target.path)
                .with_context(|| format!("{name}: moving the finished bundle into place"))?;
            sync_dir(&parent);
            return remove_old(&old);
        }
        std::fs::rename(&tmp, &self.target.path)
            .with_context(|| format!("{name}: moving the finished bundle into place"))?;
        sync_dir(&parent);
        Ok(())
    }
}

/// Removes a replaced output (a bundle directory, or a file where one stood).
fn remove_old(p: &Path) -> Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
    .with_context(|| format!("{}: removing the replaced bundle", p.display()))
}
