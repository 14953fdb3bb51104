//! One reader for every input: a path or `-` (stdin), plain or zstd (detected by the magic bytes,
//! never by the file name), read line by line with the line number kept for every error.
//!
//! Migration reads its export twice (first the structure, then the records to change), so stdin
//! is spooled to a temporary file once; everything else is streamed from disk each pass.
//!
//! Memory stays bounded on hostile input: a line is buffered only up to the line limit
//! (`--max-line-bytes`, default 64 MiB, plus at most one read of the decompressor's 1 MiB
//! buffer) and refused as soon as it passes it, so neither a huge
//! line nor a decompression bomb without line ends is followed into an out-of-memory kill. A bomb
//! of many short lines is only a large export, streamed like any other.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A substring searcher for a `static`, built on first use: `memmem::find` builds one per call,
/// a cost paid on every line of an export.
pub type Finder = std::sync::LazyLock<memchr::memmem::Finder<'static>>;

/// The zstd frame magic number, little-endian on disk.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Default refusal limit for one line (bytes), `--max-line-bytes`; see [`Input::max_line`].
pub const DEFAULT_MAX_LINE: usize = 64 << 20;

/// The line limit of this run, given to every [`Input`] it opens — also those the library opens
/// itself (the `--id-map` file, bundle files), so one option bounds them all.
static MAX_LINE: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_LINE);

/// Sets the line limit of every input opened from now on (`--max-line-bytes`).
pub fn set_max_line(bytes: usize) {
    MAX_LINE.store(bytes.max(1), Ordering::Relaxed);
}

/// The line limit of this run.
pub fn max_line() -> usize {
    MAX_LINE.load(Ordering::Relaxed)
}

/// A size in bytes from the environment variable `var`; None when it is unset, not a number or
/// 0. Only tests set these (README, "Test knobs"): tiny batches and sort runs take small exports
/// down the paths that big catalogs take.
pub fn size_from_env(var: &str) -> Option<usize> {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// The bytes of lines per batch of [`Input::batches`]: `LOOKMIG_BATCH_BYTES` when set (a test
/// knob, read once), else `default`.
pub fn batch_bytes(default: usize) -> usize {
    static SET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    SET.get_or_init(|| size_from_env("LOOKMIG_BATCH_BYTES"))
        .unwrap_or(default)
}

/// Batches handed out by [`Input::batches`] in this process (reported with `LOOKMIG_TIMING`, so
/// a test can see that a small `LOOKMIG_BATCH_BYTES` did split its input).
static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many batches [`Input::batches`] handed out in this process.
pub fn batches_read() -> u64 {
    BATCHES.load(Ordering::Relaxed)
}

/// An input file that can be opened as many times as a command needs to read it.
pub struct Input {
    /// The name shown in messages: the path as given, or `<stdin>`.
    pub name: String,
    path: PathBuf,
    /// Keeps a spooled copy of stdin alive for as long as the input is used.
    _spool: Option<tempfile::NamedTempFile>,
    /// Longest line accepted, in bytes; longer lines are refused rather than buffered.
    pub max_line: usize,
}

impl Input {
    /// Opens `arg` (a path, or `-` for stdin) for reading.
    pub fn new(arg: &str) -> Result<Input> {
        if arg == "-" {
            let mut spool = tempfile::NamedTempFile::new()
                .context("creating a temporary file to hold standard input")?;
            io::copy(&mut io::stdin().lock(), spool.as_file_mut())
                .context("reading standard input")?;
            let path = spool.path().to_path_buf();
            return Ok(Input {
                name: "<stdin>".into(),
                path,
                _spool: Some(spool),
                max_line: max_line(),
            });
        }
        let path = PathBuf::from(arg);
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("{arg}: cannot open the file; check the path"))?;
        if meta.is_dir() {
            anyhow::bail!("{arg}: is a directory, expected an export file");
        }
        Ok(Input {
            name: arg.to_string(),
            path,
            _spool: None,
            max_line: max_line(),
        })
    }

    /// The file on disk (the spool for stdin).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A decompressed, buffered reader over the whole input.
    pub fn open(&self) -> Result<Box<dyn BufRead + Send>> {
        open_path(&self.path, &self.name)
    }

    /// A line reader over the decompressed input.
    pub fn lines(&self) -> Result<Lines> {
        Ok(Lines {
            inner: self.open()?,
            name: self.name.clone(),
            line_no: 0,
            max_line: self.max_line,
            rest: Vec::new(),
            queue: Default::default(),
            deferred: None,
        })
    }

    /// Batches of about `max_bytes` of lines, read and decompressed on a thread of their own so
    /// that reading overlaps the parsing of the previous batch. A read error ends the stream.
    pub fn batches(
        &self,
        max_bytes: usize,
    ) -> Result<std::sync::mpsc::IntoIter<Result<Vec<Line>>>> {
        let mut lines = self.lines()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("lookmig-reader".into())
            .spawn(move || loop {
                match lines.next_batch(max_bytes) {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => {
                        BATCHES.fetch_add(1, Ordering::Relaxed);
                        if tx.send(Ok(b)).is_err() {
                            return; // the consumer stopped early
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .context("starting the reader thread")?;
        Ok(rx.into_iter())
    }

    /// The bytes of the given lines (numbers sorted), read again: for the rare error path that
    /// must quote lines it did not keep.
    pub fn lines_at(&self, wanted: &[u64]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut lines = self.lines()?;
        let mut next = wanted.iter().peekable();
        while next.peek().is_some() {
            let Some(l) = lines.next_line()? else { break };
            while next.peek() == Some(&&l.no) {
                out.push(l.bytes.to_vec());
                next.next();
            }
        }
        Ok(out)
    }

    /// SHA-256 of the raw bytes of the file (compressed or not), as lowercase hex.
    pub fn sha256(&self) -> Result<String> {
        sha256_file(&self.path).with_context(|| format!("{}: reading to checksum", self.name))
    }
}

/// Opens a file and wraps it in a zstd decoder when it starts with the zstd magic.
pub fn open_path(path: &Path, name: &str) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("{name}: cannot open the file"))?;
    let mut raw = BufReader::with_capacity(1 << 20, file);
    let head = raw.fill_buf().with_context(|| format!("{name}: reading"))?;
    if head.len() >= 4 && head[..4] == ZSTD_MAGIC {
        let dec = zstd::stream::read::Decoder::with_buffer(raw)
            .with_context(|| format!("{name}: starting zstd decompression"))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, dec)))
    } else {
        Ok(Box::new(raw))
    }
}

/// SHA-256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{:02x}")` per byte: keys of id-less records are hex digests.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize]);
        s.push(DIGITS[(b & 15) as usize]);
    }
    String::from_utf8(s).expect("hex digits are ASCII")
}

/// One line of an input: its 1-based number and its bytes without the `\n`.
///
/// The lines of a batch ([`Lines::next_batch`]) share one buffer: a line is a slice of it, so
/// reading a batch allocates once, not once per line. Whatever keeps a line past its batch
/// copies it (`to_vec`), or it would keep the whole batch's buffer alive.
#[derive(Debug)]
pub struct Line {
    /// 1-based line number in the decompressed input.
    pub no: u64,
    /// The bytes of the line, without the line end.
    pub bytes: bytes::Bytes,
}

/// Iterates over the non-blank lines of an input, refusing lines longer than the limit.
///
/// One reader splits the lines, whether they are taken a line at a time or in batches: a line
/// at a time is handed out from a small batch, so a line costs no allocation of its own.
pub struct Lines {
    inner: Box<dyn BufRead + Send>,
    name: String,
    line_no: u64,
    max_line: usize,
    /// The start of a line that the last batch read without its end.
    rest: Vec<u8>,
    /// Lines of the last small batch that [`Lines::next_line`] has not handed out yet.
    queue: std::collections::VecDeque<Line>,
    /// The error that ended that batch, due once its lines are out.
    deferred: Option<anyhow::Error>,
}

/// Bytes of the batches behind [`Lines::next_line`]: small, since a caller that keeps a line
/// keeps its batch's buffer.
const LINE_BATCH: usize = 64 << 10;

impl Lines {
    /// The next non-blank line, or None at the end of the input. The lines before a refused
    /// line or a read error come out first, then the error.
    pub fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            if let Some(l) = self.queue.pop_front() {
                return Ok(Some(l));
            }
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            let (lines, err) = self.fill(LINE_BATCH);
            if lines.is_empty() && err.is_none() {
                return Ok(None);
            }
            self.queue.extend(lines);
            self.deferred = err;
        }
    }

    /// Reads about `max_bytes` of lines (at least one, unless the input is at its end) into a
    /// batch, for parallel work. The decompressed bytes are copied once, in large pieces, into
    /// one buffer that the batch's lines share. An error loses the batch's lines.
    pub fn next_batch(&mut self, max_bytes: usize) -> Result<Vec<Line>> {
        if !self.queue.is_empty() || self.deferred.is_some() {
            // Lines left by a line at a time come first, as a batch of their own.
            let lines: Vec<Line> = self.queue.drain(..).collect();
            return match self.deferred.take() {
                Some(e) => Err(e),
                None => Ok(lines),
            };
        }
        match self.fill(max_bytes) {
            (lines, None) => Ok(lines),
            (_, Some(e)) => Err(e),
        }
    }

    /// The batch of [`Lines::next_batch`]: the lines read, and the error that stopped it early.
    fn fill(&mut self, max_bytes: usize) -> (Vec<Line>, Option<anyhow::Error>) {
        let mut buf = std::mem::take(&mut self.rest);
        buf.reserve(max_bytes.min(64 << 20) + (64 << 10));
        // (number, start, end) of each line found; `start` begins the line not yet ended, and
        // `scan` is where its search for a line end goes on.
        let mut spans: Vec<(u64, usize, usize)> = Vec::new();
        let (mut start, mut scan) = (0, buf.len());
        let err = loop {
            let mut found = Ok(());
            while let Some(i) = memchr::memchr(b'\n', &buf[scan..]) {
                let end = scan + i;
                found = self.line(&buf, start, end, &mut spans);
                if found.is_err() {
                    break;
                }
                start = end + 1;
                scan = start;
            }
            if let Err(e) = found {
                break Some(e);
            }
            scan = buf.len();
            if buf.len() - start > self.max_line {
                break Some(self.too_long());
            }
            if buf.len() >= max_bytes && !spans.is_empty() {
                break None;
            }
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) => {
                    break Some(anyhow::Error::new(e).context(format!(
                        "{}:{}: reading (a corrupt or truncated zstd stream?)",
                        self.name,
                        self.line_no + 1
                    )))
                }
            };
            if chunk.is_empty() {
                if start < buf.len() {
                    let end = buf.len();
                    if let Err(e) = self.line(&buf, start, end, &mut spans) {
                        break Some(e);
                    }
                    start = end;
                }
                break None;
            }
            // Up to the batch's size, then on to the next line end: a small batch size gives
            // small batches, whatever the size of the reader's buffer.
            let want = max_bytes.saturating_sub(buf.len());
            let take = if chunk.len() <= want {
                chunk.len()
            } else {
                memchr::memchr(b'\n', &chunk[want..]).map_or(chunk.len(), |i| want + i + 1)
            };
            // Grow at most to what the line limit allows, never past it as doubling would.
            let need = buf.len() + take;
            if need > buf.capacity() {
                let most = need.max(start + self.max_line.saturating_add(1) + take);
                buf.reserve_exact((buf.capacity() * 2).clamp(need, most) - buf.len());
            }
            buf.extend_from_slice(&chunk[..take]);
            self.inner.consume(take);
        };
        // After an error the part line is dropped: what follows it is no line start.
        self.rest = if err.is_none() {
            buf.split_off(start)
        } else {
            buf.truncate(start);
            Vec::new()
        };
        let shared = bytes::Bytes::from(buf);
        let lines = spans
            .into_iter()
            .map(|(no, s, e)| Line {
                no,
                bytes: shared.slice(s..e),
            })
            .collect();
        (lines, err)
    }

    /// Counts the line `buf[start..end]` (its `\n` at `end`) and keeps it unless it is blank.
    fn line(
        &mut self,
        buf: &[u8],
        start: usize,
        end: usize,
        spans: &mut Vec<(u64, usize, usize)>,
    ) -> Result<()> {
        if end - start > self.max_line {
            return Err(self.too_long());
        }
        self.line_no += 1;
        if !buf[start..end].iter().all(|b| b.is_ascii_whitespace()) {
            spans.push((self.line_no, start, end));
        }
        Ok(())
    }

    /// The error of a line over the limit: the line after the last one counted.
    fn too_long(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "{}:{}: line longer than {} bytes; raise the limit with --max-line-bytes if it is genuine",
            self.name,
            self.line_no + 1,
            self.max_line
        )
    }

    /// The name of the input, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn all_lines(input: &Input) -> Vec<(u64, String)> {
        let mut lines = input.lines().unwrap();
        let mut out = vec![];
        while let Some(l) = lines.next_line().unwrap() {
            out.push((l.no, String::from_utf8(l.bytes.to_vec()).unwrap()));
        }
        out
    }

    #[test]
    fn plain_and_zstd_read_the_same_lines_with_numbers() {
        let text = b"{\"a\":1}\n\n  \n{\"b\":2}";
        let plain = write_tmp(text);
        let zst = write_tmp(&zstd::encode_all(&text[..], 3).unwrap());
        for f in [&plain, &zst] {
            let input = Input::new(f.path().to_str().unwrap()).unwrap();
            assert_eq!(
                all_lines(&input),
                vec![(1, "{\"a\":1}".into()), (4, "{\"b\":2}".into())]
            );
        }
    }

    #[test]
    fn a_line_over_the_limit_is_refused_with_its_number() {
        let f = write_tmp(b"{}\n0123456789012345\n{}\n");
        let mut input = Input::new(f.path().to_str().unwrap()).unwrap();
        input.max_line = 8;
        let mut lines = input.lines().unwrap();
        assert!(lines.next_line().unwrap().is_some());
        let err = format!("{:#}", lines.next_line().unwrap_err());
        assert!(err.contains(":2: line longer than 8 bytes"), "{err}");
    }

    #[test]
    fn truncated_zstd_is_an_error_not_a_short_read() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let z = zstd::encode_all(&text[..], 3).unwrap();
        let f = write_tmp(&z[..z.len() / 2]);
        let input = Input::new(f.path().to_str().unwrap()).unwrap();
        let mut lines = input.lines().unwrap();
        let err = loop {
            match lines.next_line() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("truncated stream read to the end without error"),
                Err(e) => break format!("{e:#}"),
            }
        };
        assert!(err.contains("zstd"), "{err}");
    }
}
