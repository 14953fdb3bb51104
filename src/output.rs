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
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

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

/// A writer for NDJSON lines, zstd-compressed when `compress` is set, that checksums the bytes
/// it writes (so a bundle's manifest needs no second read of its files).
pub enum LineWriter<'a> {
    Plain(Hashing<BufWriter<&'a File>>),
    Zstd(Frames<Hashing<BufWriter<&'a File>>>),
}

impl<'a> LineWriter<'a> {
    /// A writer over `file`; compression runs on `workers(threads)` threads of its own.
    pub fn new(
        file: &'a File,
        compress: bool,
        level: i32,
        threads: usize,
    ) -> Result<LineWriter<'a>> {
        let out = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        Ok(if compress {
            LineWriter::Zstd(Frames::new(out, level, workers(threads))?)
        } else {
            LineWriter::Plain(out)
        })
    }

    /// Writes one line and its `\n`.
    pub fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            LineWriter::Plain(w) => {
                w.write_all(bytes)?;
                w.write_all(b"\n")
            }
            LineWriter::Zstd(w) => w.line(bytes),
        }
    }

    /// Ends the output and flushes it; returns the SHA-256 (hex) of the bytes written.
    pub fn finish(self) -> std::io::Result<String> {
        let mut out = match self {
            LineWriter::Plain(w) => w,
            LineWriter::Zstd(w) => w.finish()?,
        };
        out.flush()?;
        Ok(out.sha256())
    }
}

/// A writer that keeps the SHA-256 of everything written through it.
pub struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: sha2::Digest::new(),
        }
    }

    fn sha256(self) -> String {
        crate::input::hex(&sha2::Digest::finalize(self.hash))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Input bytes of one zstd frame: a frame holds whole lines and closes once it reaches this
/// size. The frames are independent, compressed side by side and written in order, so this
/// size (not the worker count) decides every byte of the output, and `--threads` never
/// changes one. Readers of zstd take the frames one after the other as one stream.
pub const FRAME_BYTES: usize = 2 << 20;

/// A compressed frame and its input, given back for reuse.
type Frame = std::io::Result<(Vec<u8>, Vec<u8>)>;

/// A frame's input, and where its worker sends the frame back.
type FrameJob = (Vec<u8>, SyncSender<Frame>);

/// zstd compression on worker threads of its own, one independent frame a job. zstd's own
/// multithreaded mode kept about one core busy at level 1 (its single caller thread copies
/// every byte and flushes the jobs in order); whole frames keep every worker busy while the
/// caller goes on with the next lines.
struct Pool {
    jobs: Option<SyncSender<FrameJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The most frames a writer keeps sent and not yet written (the memory it holds: about
    /// twice this many frames' input).
    max_pending: usize,
}

impl Pool {
    /// Compresses at `level` on `workers` threads (at least one).
    fn new(level: i32, workers: usize) -> Result<Pool> {
        let workers = workers.max(1);
        // Fail here, on the caller's thread, when the level is refused.
        zstd::bulk::Compressor::new(level).context("starting zstd compression")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<FrameJob>(workers);
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let rx = Arc::clone(&rx);
            let handle = std::thread::Builder::new()
                .name("lookmig-zstd".into())
                .spawn(move || {
                    let mut c = zstd::bulk::Compressor::new(level);
                    loop {
                        // The lock is held only to take the next job.
                        let job = rx
                            .lock()
                            .map_err(|_| ())
                            .and_then(|r| r.recv().map_err(|_| ()));
                        let Ok((input, reply)) = job else { return };
                        let frame = match &mut c {
                            Ok(c) => c.compress(&input).map(|f| (f, input)),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        };
                        // The caller gone (an error of its own) leaves nothing to do.
                        let _ = reply.send(frame);
                    }
                })
                .context("starting zstd worker threads")?;
            handles.push(handle);
        }
        Ok(Pool {
            jobs: Some(tx),
            workers: handles,
            max_pending: workers + 1,
        })
    }

    /// Sends one frame's input to the workers; the frame (and the input, for reuse) arrives
    /// on the receiver.
    fn compress(&self, input: Vec<u8>) -> std::io::Result<Receiver<Frame>> {
        let (reply, frame) = std::sync::mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().expect("jobs are open until dropped");
        jobs.send((input, reply)).map_err(|_| stopped())?;
        Ok(frame)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Waits for a frame sent to a [`Pool`]; its input goes back to `spare`, emptied, for reuse.
fn receive(frame: Receiver<Frame>, spare: &mut Vec<Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let (frame, mut input) = frame.recv().map_err(|_| stopped())??;
    input.clear();
    spare.push(input);
    Ok(frame)
}

/// A new frame's input buffer: a spare one, or a new one of a frame's size.
fn frame_buffer(spare: &mut Vec<Vec<u8>>) -> Vec<u8> {
    spare
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(FRAME_BYTES + (64 << 10)))
}

/// Lines compressed as a sequence of independent zstd frames ([`FRAME_BYTES`]) by a [`Pool`]
/// of its own.
pub struct Frames<W: Write> {
    /// Taken by `finish`.
    out: Option<W>,
    buf: Vec<u8>,
    pool: Pool,
    pending: VecDeque<Receiver<Frame>>,
    spare: Vec<Vec<u8>>,
    /// At least one frame was sent (an empty output is still one empty frame).
    started: bool,
}

impl<W: Write> Frames<W> {
    /// Compresses at `level` on `workers` threads (at least one).
    pub fn new(out: W, level: i32, workers: usize) -> Result<Frames<W>> {
        Ok(Frames {
            out: Some(out),
            buf: Vec::with_capacity(FRAME_BYTES + (64 << 10)),
            pool: Pool::new(level, workers)?,
            pending: VecDeque::new(),
            spare: Vec::new(),
            started: false,
        })
    }

    /// Adds one line and its `\n`; a full frame goes to the workers.
    pub fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.buf.push(b'\n');
        if self.buf.len() >= FRAME_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        while self.pending.len() >= self.pool.max_pending {
            self.write_oldest()?;
        }
        let next = frame_buffer(&mut self.spare);
        let input = std::mem::replace(&mut self.buf, next);
        self.pending.push_back(self.pool.compress(input)?);
        self.started = true;
        Ok(())
    }

    fn write_oldest(&mut self) -> std::io::Result<()> {
        let Some(frame) = self.pending.pop_front() else {
            return Ok(());
        };
        let frame = receive(frame, &mut self.spare)?;
        let out = self.out.as_mut().expect("the writer is there until finish");
        out.write_all(&frame)
    }

    /// Sends the last frame, writes every frame in order and stops the workers; gives the
    /// writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() || !self.started {
            self.send()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.out.take().expect("the writer is there until finish"))
    }
}

/// Lines sorted into numbered streams and written as one zstd file: stream 0's lines, then
/// stream 1's, and so on, each stream's in the order they came. A writer that needs its lines
/// grouped (the change set by phase and kind, [`crate::changeset`]) gets them so without a
/// sort. Each stream is cut into frames as [`Frames`] cuts its lines, so the bytes depend on
/// each stream's lines alone, never on `--threads`. The frames wait in a temporary file, in
/// the order they were compressed, until [`Streams::finish`] writes them out in stream order.
///
/// Memory does not grow with the lines: one frame's input per stream that has lines (the
/// change set has at most 26 such streams of its 52), and the frames in flight.
pub struct Streams {
    pool: Pool,
    level: i32,
    /// Per stream, the input of its frame being filled (empty, without capacity, until its
    /// first line: most streams stay empty).
    bufs: Vec<Vec<u8>>,
    /// Per stream, (offset, length) in `spill` of its frames compressed so far, in order.
    frames: Vec<Vec<(u64, usize)>>,
    spill: BufWriter<File>,
    spilled: u64,
    pending: VecDeque<(usize, Receiver<Frame>)>,
    spare: Vec<Vec<u8>>,
    lines: u64,
}

impl Streams {
    /// `streams` empty streams, to be compressed at `level` on `workers` threads.
    pub fn new(streams: usize, level: i32, workers: usize) -> Result<Streams> {
        let spill = tempfile::tempfile()
            .context("creating a temporary file for compressed lines (is TMPDIR full?)")?;
        Ok(Streams {
            pool: Pool::new(level, workers)?,
            level,
            bufs: vec![Vec::new(); streams],
            frames: vec![Vec::new(); streams],
            spill: BufWriter::with_capacity(1 << 20, spill),
            spilled: 0,
            pending: VecDeque::new(),
            spare: Vec::new(),
            lines: 0,
        })
    }

    /// Adds one line and its `\n` to stream `stream`.
    pub fn line(&mut self, stream: usize, bytes: &[u8]) -> std::io::Result<()> {
        let buf = &mut self.bufs[stream];
        if buf.capacity() == 0 {
            *buf = frame_buffer(&mut self.spare);
        }
        buf.extend_from_slice(bytes);
        buf.push(b'\n');
        self.lines += 1;
        if buf.len() >= FRAME_BYTES {
            self.send(stream)?;
        }
        Ok(())
    }

    /// How many lines were added.
    pub fn len(&self) -> u64 {
        self.lines
    }

    /// True when no line was added.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    fn send(&mut self, stream: usize) -> std::io::Result<()> {
        while self.pending.len() >= self.pool.max_pending {
            self.spill_oldest()?;
        }
        let input = std::mem::take(&mut self.bufs[stream]);
        self.pending.push_back((stream, self.pool.compress(input)?));
        Ok(())
    }

    /// Frames come back in the order they were sent, which is each stream's own order.
    fn spill_oldest(&mut self) -> std::io::Result<()> {
        let Some((stream, frame)) = self.pending.pop_front() else {
            return Ok(());
        };
        let frame = receive(frame, &mut self.spare)?;
        self.spill.write_all(&frame).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing compressed lines to a temporary file (is TMPDIR full?): {e}"),
            )
        })?;
        self.frames[stream].push((self.spilled, frame.len()));
        self.spilled += frame.len() as u64;
        Ok(())
    }

    /// Compresses the last frames and writes every stream's frames, in stream order, to
    /// `file`; returns the SHA-256 (hex) of the bytes written. No lines at all is one empty
    /// frame, as [`Frames`] writes it.
    pub fn finish(mut self, file: &File) -> Result<String> {
        for stream in 0..self.bufs.len() {
            if !self.bufs[stream].is_empty() {
                self.send(stream)?;
            }
        }
        while !self.pending.is_empty() {
            self.spill_oldest()?;
        }
        let spill = self
            .spill
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing compressed lines to a temporary file (is TMPDIR full?)")?;
        let mut out = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        if self.spilled == 0 {
            out.write_all(&zstd::bulk::compress(&[], self.level)?)?;
        }
        let mut frame = Vec::new();
        for &(offset, len) in self.frames.iter().flatten() {
            frame.resize(len, 0);
            std::os::unix::fs::FileExt::read_exact_at(&spill, &mut frame, offset)
                .context("reading compressed lines back from a temporary file")?;
            out.write_all(&frame)?;
        }
        out.flush()?;
        Ok(out.sha256())
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("a zstd worker thread stopped")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a `LineWriter` over a fresh file writes for `lines`, and the checksum it gave.
    fn written(lines: &[Vec<u8>], compress: bool, threads: usize) -> (Vec<u8>, String) {
        let file = tempfile::tempfile().unwrap();
        let mut w = LineWriter::new(&file, compress, 1, threads).unwrap();
        for l in lines {
            w.line(l).unwrap();
        }
        let sha = w.finish().unwrap();
        (read_back(file), sha)
    }

    /// Everything written to `file`, from its start.
    fn read_back(mut file: File) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn frames(mut bytes: &[u8]) -> usize {
        let mut n = 0;
        while !bytes.is_empty() {
            let size = zstd::zstd_safe::find_frame_compressed_size(bytes).unwrap();
            bytes = &bytes[size..];
            n += 1;
        }
        n
    }

    #[test]
    fn frames_hold_whole_lines_and_do_not_depend_on_the_workers() {
        // About 2.5 frames of varied lines.
        let lines: Vec<Vec<u8>> = (0..80_000u32)
            .map(|i| {
                format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "x".repeat((i % 97) as usize)
                )
                .into_bytes()
            })
            .collect();
        let mut text = lines.join(&b'\n');
        text.push(b'\n');
        assert!(text.len() > 2 * FRAME_BYTES && text.len() < 3 * FRAME_BYTES);
        let (one, sha) = written(&lines, true, 1);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), text);
        assert_eq!(frames(&one), 3);
        assert_eq!(sha, crate::input::sha256_bytes(&one));
        // Each frame ends a line.
        let mut rest = &one[..];
        while !rest.is_empty() {
            let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            let frame = zstd::decode_all(&rest[..size]).unwrap();
            assert_eq!(frame.last(), Some(&b'\n'));
            rest = &rest[size..];
        }
        for threads in [2, 3, 0] {
            assert_eq!(written(&lines, true, threads).0, one, "{threads} threads");
        }
    }

    /// The bytes `Streams` writes for (stream, line) pairs given in this order.
    fn streamed(lines: &[(usize, Vec<u8>)], workers: usize) -> (Vec<u8>, String) {
        let mut s = Streams::new(3, 1, workers).unwrap();
        for (stream, l) in lines {
            s.line(*stream, l).unwrap();
        }
        assert_eq!(s.len(), lines.len() as u64);
        let file = tempfile::tempfile().unwrap();
        let sha = s.finish(&file).unwrap();
        (read_back(file), sha)
    }

    #[test]
    fn streams_come_out_in_stream_order_each_in_its_own_order() {
        // Stream 2 gets more than two frames' worth, interleaved with the others; stream 1 none.
        let lines: Vec<(usize, Vec<u8>)> = (0..90_000u32)
            .map(|i| {
                let stream = if i % 3 == 0 { 0 } else { 2 };
                let line = format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "y".repeat((i % 89) as usize)
                );
                (stream, line.into_bytes())
            })
            .collect();
        let mut want = Vec::new();
        for stream in 0..3 {
            for (s, l) in &lines {
                if *s == stream {
                    want.extend_from_slice(l);
                    want.push(b'\n');
                }
            }
        }
        let (one, sha) = streamed(&lines, 1);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), want);
        assert_eq!(sha, crate::input::sha256_bytes(&one));
        assert!(frames(&one) >= 3, "stream 2 alone fills two frames");
        let mut rest = &one[..];
        while !rest.is_empty() {
            let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            let frame = zstd::decode_all(&rest[..size]).unwrap();
            assert!(
                frame.len() < FRAME_BYTES + 200,
                "a frame closes at its size"
            );
            assert_eq!(frame.last(), Some(&b'\n'));
            rest = &rest[size..];
        }
        for workers in [2, 3] {
            assert_eq!(streamed(&lines, workers).0, one, "{workers} workers");
        }
        let (empty, _) = streamed(&[], 2);
        assert_eq!(
            empty,
            written(&[], true, 1).0,
            "no lines is one empty frame"
        );
    }

    #[test]
    fn no_lines_is_one_empty_frame_and_plain_is_checksummed_too() {
        let (bytes, sha) = written(&[], true, 2);
        assert_eq!(frames(&bytes), 1);
        assert!(zstd::decode_all(&bytes[..]).unwrap().is_empty());
        assert_eq!(sha, crate::input::sha256_bytes(&bytes));
        let (plain, sha) = written(&[b"a".to_vec(), b"{}".to_vec()], false, 2);
        assert_eq!(plain, b"a\n{}\n");
        assert_eq!(sha, crate::input::sha256_bytes(b"a\n{}\n"));
    }
}
