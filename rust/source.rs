//! Input files → raw records, each with its file index and 1-based line (or array index).
//!
//! Handles plain, gzip and zstd files (by magic bytes, not by name), and both JSON Lines and a
//! top-level JSON array (by the first non-blank byte). Blank lines are skipped; a UTF-8 BOM is
//! dropped. Records are returned as raw bytes: parsing happens later, in parallel, and a record
//! that does not parse becomes a reject there. A file that cannot be read to the end (missing,
//! truncated compression stream) is an [`Error`] naming it. While reading, the raw file bytes are
//! hashed for the manifest, so each input is read once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::columnar::{is_columnar, ColumnarReader};
use crate::error::{Error, Result};
use crate::hashing::{drain, HashingReader};

/// One record as read from disk, not yet parsed.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub file: u32,
    /// 1-based line number (JSONL) or 1-based element index (JSON array).
    pub line: u64,
    pub bytes: Vec<u8>,
}

/// What the manifest records of each input file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputInfo {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

const READ_BUFFER: usize = 1 << 20;

/// Reads the raw file bytes through a hasher, so the sha256 covers exactly what is on disk.
enum Decoded {
    Plain(HashingReader<File>),
    Gzip(Box<flate2::read::MultiGzDecoder<HashingReader<File>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<HashingReader<File>>>>),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
        }
    }
}

impl Decoded {
    fn raw(&mut self) -> &mut HashingReader<File> {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(r) => r.get_mut(),
            Decoded::Zstd(r) => r.get_mut().get_mut(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Lines,
    Array,
}

struct OpenFile {
    index: u32,
    path: PathBuf,
    reader: BufReader<Decoded>,
    layout: Layout,
    /// Lines read (JSONL) or elements started (array).
    position: u64,
    /// The array's closing bracket was seen.
    array_done: bool,
}

/// Streams the records of several files in order.
pub struct Source {
    paths: Vec<PathBuf>,
    next_file: usize,
    current: Option<Input>,
    infos: Vec<InputInfo>,
    shard: Shard,
    /// Non-blank records seen so far, across files: the key of the shard split.
    seen: u64,
}

/// Shard `index` of `count` keeps records `index, index + count, index + 2·count, ...` (counted
/// over all non-blank records of all inputs, in order): deterministic, balanced whatever the file
/// sizes, and the union of all shards is exactly the unsharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

/// One open input: a text file (JSONL or a JSON array), or a columnar one (`columnar.rs`:
/// Parquet, Arrow IPC, a `datasets.save_to_disk` directory) whose rows arrive as JSON objects.
enum Input {
    Text(Box<OpenFile>),
    Columnar { index: u32, path: PathBuf, reader: Box<ColumnarReader> },
}

impl Input {
    fn open(index: u32, path: &Path) -> Result<Input> {
        if is_columnar(path) {
            let reader = Box::new(ColumnarReader::open(path)?);
            Ok(Input::Columnar { index, path: path.to_path_buf(), reader })
        } else {
            Ok(Input::Text(Box::new(open(index, path)?)))
        }
    }

    fn next_record(&mut self) -> Result<Option<RawRecord>> {
        match self {
            Input::Text(file) => file.next_record(),
            Input::Columnar { index, reader, .. } => {
                Ok(reader.next_row()?.map(|(row, bytes)| RawRecord { file: *index, line: row, bytes }))
            }
        }
    }

    fn finish(self) -> Result<InputInfo> {
        match self {
            Input::Text(file) => file.finish(),
            Input::Columnar { path, reader, .. } => {
                let (size, sha256) = reader.finish()?;
                Ok(InputInfo { path: path.display().to_string(), size, sha256 })
            }
        }
    }
}

impl Source {
    /// Checks that every file exists before any work starts, so a typo fails at once.
    pub fn new(paths: Vec<PathBuf>) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::config("no input files"));
        }
        for path in &paths {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            if !meta.is_file() && !is_columnar(path) {
                return Err(Error::BadFile {
                    path: path.clone(),
                    detail: "not a file (directories are read only when written by datasets' save_to_disk)".into(),
                });
            }
        }
        Ok(Source { paths, next_file: 0, current: None, infos: Vec::new(), shard: Shard::WHOLE, seen: 0 })
    }

    /// Reads only this shard's records.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Size and sha256 of every input, complete once all records have been read.
    pub fn infos(&self) -> &[InputInfo] {
        &self.infos
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Appends up to `max_records` records (or about `max_bytes` of them) to `out`.
    /// Returns false once every file is exhausted and nothing was appended.
    pub fn next_chunk(&mut self, max_records: usize, max_bytes: usize, out: &mut Vec<RawRecord>) -> Result<bool> {
        let mut bytes = 0usize;
        while out.len() < max_records && bytes < max_bytes {
            if self.current.is_none() {
                if self.next_file == self.paths.len() {
                    break;
                }
                let index = self.next_file;
                self.next_file += 1;
                self.current = Some(Input::open(index as u32, &self.paths[index])?);
            }
            let Some(file) = self.current.as_mut() else { break };
            match file.next_record()? {
                Some(record) => {
                    let mine = self.seen % self.shard.count == self.shard.index;
                    self.seen += 1;
                    if mine {
                        bytes += record.bytes.len();
                        out.push(record);
                    }
                }
                None => {
                    if let Some(done) = self.current.take() {
                        self.infos.push(done.finish()?);
                    }
                }
            }
        }
        Ok(!out.is_empty())
    }
}

fn open(index: u32, path: &Path) -> Result<OpenFile> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    // Sniff the compression from the magic bytes, then rewind so the hash covers every byte.
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        let n = file.read(&mut magic[got..]).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    let raw = HashingReader::new(file);
    let head = &magic[..got];
    let decoded = if head.starts_with(&[0x1f, 0x8b]) {
        Decoded::Gzip(Box::new(flate2::read::MultiGzDecoder::new(raw)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(raw)).map_err(|e| Error::io(path, e))?;
        Decoded::Zstd(Box::new(decoder))
    } else {
        Decoded::Plain(raw)
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, decoded);
    let layout = sniff_layout(&mut reader, path).map_err(|e| read_error(path, e))?;
    Ok(OpenFile { index, path: path.to_path_buf(), reader, layout, position: 0, array_done: false })
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => Error::BadFile { path: path.to_path_buf(), detail: e.to_string() },
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData | std::io::ErrorKind::Other => {
            Error::Corrupt { path: path.to_path_buf(), detail: e.to_string() }
        }
        _ => Error::io(path, e),
    }
}

/// Skips a BOM. A `.jsonl`/`.ndjson` name (before any `.gz`/`.zst`) means JSON Lines, even when
/// the first record is itself an array; otherwise a `[` as the first non-blank byte means a
/// top-level JSON array.
fn sniff_layout<R: BufRead>(reader: &mut R, path: &Path) -> std::io::Result<Layout> {
    let buf = reader.fill_buf()?;
    let bom = buf.starts_with(&[0xef, 0xbb, 0xbf]);
    if bom {
        reader.consume(3);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let stem = name.trim_end_matches(".gz").trim_end_matches(".zst").trim_end_matches(".zstd");
    if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") || stem.ends_with(".jsonlines") {
        return Ok(Layout::Lines);
    }
    let buf = reader.fill_buf()?;
    let first = buf.iter().find(|b| !b.is_ascii_whitespace()).copied();
    Ok(if first == Some(b'[') { Layout::Array } else { Layout::Lines })
}

impl OpenFile {
    fn next_record(&mut self) -> Result<Option<RawRecord>> {
        let result = match self.layout {
            Layout::Lines => self.next_line(),
            Layout::Array => self.next_element(),
        };
        result.map_err(|e| read_error(&self.path, e))
    }

    fn next_line(&mut self) -> std::io::Result<Option<RawRecord>> {
        loop {
            let mut bytes = Vec::new();
            let n = self.reader.read_until(b'\n', &mut bytes)?;
            if n == 0 {
                return Ok(None);
            }
            self.position += 1;
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Ok(Some(RawRecord { file: self.index, line: self.position, bytes }));
        }
    }

    /// Splits a top-level JSON array into its elements without parsing them: tracks strings,
    /// escapes and bracket depth. Malformed elements are returned as they are, to become rejects.
    fn next_element(&mut self) -> std::io::Result<Option<RawRecord>> {
        if self.array_done {
            return Ok(None);
        }
        if self.position == 0 {
            // Consume up to and including the opening bracket.
            let mut skipped = Vec::new();
            self.reader.read_until(b'[', &mut skipped)?;
        }
        let mut element: Vec<u8> = Vec::new();
        let mut depth = 0i64;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                self.array_done = true;
                // An unterminated array: whatever is left is a (malformed) last element.
                if element.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(None);
                }
                self.position += 1;
                return Ok(Some(RawRecord { file: self.index, line: self.position, bytes: element }));
            }
            let mut used = 0;
            let mut finished: Option<bool> = None; // Some(true) = closing bracket
            for &b in buf {
                used += 1;
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    element.push(b);
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' if depth == 0 => {
                        finished = Some(true);
                        break;
                    }
                    b']' | b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        finished = Some(false);
                        break;
                    }
                    _ => {}
                }
                element.push(b);
            }
            self.reader.consume(used);
            if let Some(closing) = finished {
                if closing {
                    self.array_done = true;
                    self.expect_only_whitespace()?;
                    if element.iter().all(|b| b.is_ascii_whitespace()) {
                        return Ok(None);
                    }
                }
                self.position += 1;
                return Ok(Some(RawRecord { file: self.index, line: self.position, bytes: element }));
            }
        }
    }

    /// After the array's closing bracket only whitespace may follow: anything else would be data
    /// that is neither a sample nor a reject.
    fn expect_only_whitespace(&mut self) -> std::io::Result<()> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            if let Some(at) = buf.iter().position(|b| !b.is_ascii_whitespace()) {
                let snippet = String::from_utf8_lossy(&buf[at..buf.len().min(at + 20)]).into_owned();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("content after the closing bracket of the top-level JSON array ({snippet:?}...); a .json file holds one array, JSON Lines files are named .jsonl"),
                ));
            }
            let n = buf.len();
            self.reader.consume(n);
        }
    }

    /// Reads whatever the parser left (trailing bytes, compression trailer) so the hash and size
    /// cover the whole file.
    fn finish(mut self) -> Result<InputInfo> {
        drain(self.reader.get_mut()).map_err(|e| read_error(&self.path, e))?;
        let raw = self.reader.get_mut().raw();
        drain(raw).map_err(|e| Error::io(&self.path, e))?;
        let (size, sha256) = raw.take_digest();
        Ok(InputInfo { path: self.path.display().to_string(), size, sha256 })
    }
}

