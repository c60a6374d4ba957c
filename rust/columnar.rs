//! Columnar inputs → the JSON records the JSONL path would see, one row at a time.
//!
//! Reads Parquet files, Arrow IPC files (the file format, which Feather v2 is, and the stream
//! format), and `datasets.Dataset.save_to_disk` directories (Arrow stream files listed in
//! `state.json`), in record batches, so memory stays bounded whatever the file size. Each row
//! becomes the bytes of one JSON object: a `list<struct>` column becomes an array of objects,
//! strings stay strings, nulls become `null` (struct fields included). Rows are numbered from 1,
//! across all the files of a directory. What it does not do: parse the records (`schema` does),
//! or split shards (`source` does).
//!
//! The raw bytes of every file are hashed for the manifest in a separate sequential pass when the
//! file is opened: Parquet and the IPC file format are read by seeking, so the read itself cannot
//! feed a hasher in order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StructArray};
use arrow_json::writer::{make_encoder, EncoderOptions};
use arrow_schema::{ArrowError, Field, FieldRef};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hashing::{drain, hex, HashingReader};

/// Rows converted to JSON at a time: bounds the JSON buffer when a file was written in huge batches.
const ROWS_PER_SLICE: usize = 256;
/// Rows per Parquet record batch.
const PARQUET_BATCH_ROWS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parquet,
    IpcFile,
    IpcStream,
    FeatherV1,
}

fn sniff(path: &Path) -> std::io::Result<Option<Kind>> {
    let mut head = [0u8; 6];
    let mut file = File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        let n = file.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    Ok(if head.starts_with(b"PAR1") {
        Some(Kind::Parquet)
    } else if head.starts_with(b"ARROW1") {
        Some(Kind::IpcFile)
    } else if head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        Some(Kind::IpcStream)
    } else if head.starts_with(b"FEA1") {
        Some(Kind::FeatherV1)
    } else {
        None
    })
}

/// True for a Parquet file, an Arrow IPC file or stream, or a `save_to_disk` directory.
pub fn is_columnar(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("state.json").is_file() || path.join("dataset_dict.json").is_file();
    }
    matches!(sniff(path), Ok(Some(_)))
}

/// The data files of a `save_to_disk` directory, in `state.json`'s `_data_files` order.
fn saved_dataset_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let dict = dir.join("dataset_dict.json");
    if dict.is_file() {
        let text = std::fs::read_to_string(&dict).map_err(|e| Error::io(&dict, e))?;
        let splits: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("splits").and_then(|s| s.as_array()).cloned())
            .map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let example = dir.join(splits.first().map(String::as_str).unwrap_or("train"));
        return Err(Error::config(format!(
            "{}: a DatasetDict (splits: {}); pass one split's directory, e.g. {}",
            dir.display(),
            if splits.is_empty() { "?".to_string() } else { splits.join(", ") },
            example.display()
        )));
    }
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Corrupt { path: state_path.clone(), detail: format!("invalid JSON: {e}") })?;
    let Some(entries) = state.get("_data_files").and_then(|f| f.as_array()) else {
        return Err(Error::Corrupt { path: state_path, detail: "no '_data_files' list".into() });
    };
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(name) = entry.get("filename").and_then(|f| f.as_str()) else {
            return Err(Error::Corrupt { path: state_path, detail: "a '_data_files' entry has no 'filename'".into() });
        };
        let file = dir.join(name);
        if !file.is_file() {
            return Err(Error::NotFound { path: file });
        }
        files.push(file);
    }
    Ok(files)
}

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

fn open_batches(path: &Path) -> Result<Batches> {
    let kind = sniff(path).map_err(|e| Error::io(path, e))?;
    let file = || File::open(path).map_err(|e| Error::io(path, e));
    let corrupt = |detail: String| Error::Corrupt { path: path.to_path_buf(), detail };
    Ok(match kind {
        Some(Kind::Parquet) => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file()?)
                .and_then(|b| b.with_batch_size(PARQUET_BATCH_ROWS).build())
                .map_err(|e| corrupt(e.to_string()))?;
            Box::new(reader)
        }
        Some(Kind::IpcFile) => {
            let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file()?), None)
                .map_err(|e| corrupt(e.to_string()))?;
            Box::new(reader)
        }
        Some(Kind::IpcStream) => {
            let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file()?), None)
                .map_err(|e| corrupt(e.to_string()))?;
            Box::new(reader)
        }
        Some(Kind::FeatherV1) => {
            return Err(Error::config(format!(
                "{}: Feather version 1 is not supported; rewrite it as Feather 2 \
                 (pyarrow.feather.write_feather(table, path)) or Parquet",
                path.display()
            )))
        }
        None => {
            return Err(Error::config(format!(
                "{}: not a Parquet file, an Arrow IPC file or stream, or a datasets.save_to_disk directory",
                path.display()
            )))
        }
    })
}

/// Streams the rows of a columnar file or `save_to_disk` directory as JSON objects.
pub struct ColumnarReader {
    files: VecDeque<PathBuf>,
    current: Option<(PathBuf, Batches)>,
    /// The batch being converted, and how many of its rows are converted already.
    batch: Option<(RecordBatch, usize)>,
    /// Converted rows: their JSON back to back, and where each ends.
    json: Vec<u8>,
    ends: VecDeque<(usize, usize)>,
    row: u64,
    hasher: Sha256,
    size: u64,
}

impl ColumnarReader {
    /// Opens a Parquet file, an Arrow IPC file or stream, or a `save_to_disk` directory.
    pub fn open(path: &Path) -> Result<ColumnarReader> {
        let files = if path.is_dir() {
            saved_dataset_files(path)?
        } else {
            std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            vec![path.to_path_buf()]
        };
        let mut reader = ColumnarReader {
            files: files.into(),
            current: None,
            batch: None,
            json: Vec::new(),
            ends: VecDeque::new(),
            row: 0,
            hasher: Sha256::new(),
            size: 0,
        };
        reader.open_next()?; // a file that cannot be opened fails here, before any work starts
        Ok(reader)
    }

    /// Opens the next file (hashing it first); false when none is left.
    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.files.pop_front() else {
            self.current = None;
            return Ok(false);
        };
        self.hash_file(&path)?;
        let batches = open_batches(&path)?;
        self.current = Some((path, batches));
        Ok(true)
    }

    fn hash_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // One running hash over every file of a directory, in order.
        let mut reader = HashingReader { inner: file, hasher: std::mem::take(&mut self.hasher), size: 0 };
        drain(&mut reader).map_err(|e| Error::io(path, e))?;
        self.hasher = reader.hasher;
        self.size += reader.size;
        Ok(())
    }

    /// The next row: its 1-based index (across the files of a directory) and its JSON object.
    pub fn next_row(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            if let Some((start, end)) = self.ends.pop_front() {
                self.row += 1;
                return Ok(Some((self.row, self.json[start..end].to_vec())));
            }
            if let Some((batch, done)) = self.batch.take() {
                if done < batch.num_rows() {
                    let len = ROWS_PER_SLICE.min(batch.num_rows() - done);
                    self.convert(&batch.slice(done, len))?;
                    self.batch = Some((batch, done + len));
                    continue;
                }
            }
            let Some((path, batches)) = self.current.as_mut() else { return Ok(None) };
            match batches.next() {
                Some(Ok(batch)) => self.batch = Some((batch, 0)),
                Some(Err(e)) => return Err(Error::Corrupt { path: path.clone(), detail: e.to_string() }),
                None => {
                    if !self.open_next()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// `batch`'s rows as JSON objects into `self.json`.
    fn convert(&mut self, batch: &RecordBatch) -> Result<()> {
        self.json.clear();
        self.ends.clear();
        if batch.num_columns() == 0 {
            for _ in 0..batch.num_rows() {
                let start = self.json.len();
                self.json.extend_from_slice(b"{}");
                self.ends.push_back((start, self.json.len()));
            }
            return Ok(());
        }
        let path = self.current.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
        let array = StructArray::from(batch.clone());
        let field: FieldRef = Arc::new(Field::new_struct("", batch.schema().fields().clone(), false));
        let options = EncoderOptions::default().with_explicit_nulls(true);
        let mut encoder = make_encoder(&field, &array, &options).map_err(|e| {
            Error::config(format!("{}: a column cannot be turned into JSON ({e}); drop or convert it", path.display()))
        })?;
        for i in 0..array.len() {
            let start = self.json.len();
            encoder.encode(i, &mut self.json);
            self.ends.push_back((start, self.json.len()));
        }
        Ok(())
    }

    /// Size and sha256 (hex) of the raw bytes of every file, in order. Files not read yet are
    /// hashed now, so the result always covers the whole input.
    pub fn finish(mut self) -> Result<(u64, String)> {
        while let Some(path) = self.files.pop_front() {
            self.hash_file(&path)?;
        }
        Ok((self.size, hex(&self.hasher.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
    use arrow_schema::Schema;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    use serde_json::{json, Value};
    use std::io::Cursor;

    /// Records as the JSONL path would hold them, with the key sets varying between rows.
    fn records() -> Vec<Value> {
        vec![
            json!({"conversations": [{"from": "human", "value": "你好 \"q\"\n"}, {"from": "gpt", "value": "a1"}], "system": "S"}),
            json!({"conversations": [{"from": "human", "value": "q2"}, {"from": "gpt", "value": null}]}),
            json!({"conversations": [], "system": null}),
            json!({"conversations": null, "system": "only"}),
            json!({"conversations": [{"from": "human", "value": "q5"}, {"from": "gpt", "value": "😀 \u{2028} \\ end"}], "system": ""}),
        ]
    }

    /// What the reader must give for `records()`: absent keys become explicit nulls, as a
    /// columnar schema has every column in every row.
    fn expected() -> Vec<Value> {
        records()
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().map(|o| o.entry("system").or_insert(Value::Null));
                r
            })
            .collect()
    }

    fn batch(values: &[Value]) -> RecordBatch {
        let lines: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let text = lines.join("\n");
        let (schema, _) = arrow_json::reader::infer_json_schema(Cursor::new(text.as_bytes()), None).unwrap();
        let mut reader = arrow_json::ReaderBuilder::new(Arc::new(schema)).build(Cursor::new(text.as_bytes())).unwrap();
        reader.next().unwrap().unwrap()
    }

    fn write_parquet(path: &Path, batch: &RecordBatch, compression: Compression, row_group: usize) {
        let props = WriterProperties::builder().set_compression(compression).set_max_row_group_size(row_group).build();
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    fn write_ipc_file(path: &Path, batches: &[RecordBatch], options: IpcWriteOptions) {
        let mut w = FileWriter::try_new_with_options(File::create(path).unwrap(), &batches[0].schema(), options).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }

    fn write_ipc_stream(path: &Path, batches: &[RecordBatch]) {
        let mut w = StreamWriter::try_new(File::create(path).unwrap(), &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }

    fn read_all(path: &Path) -> (Vec<(u64, Value)>, (u64, String)) {
        let mut reader = ColumnarReader::open(path).unwrap();
        let mut rows = Vec::new();
        while let Some((row, bytes)) = reader.next_row().unwrap() {
            rows.push((row, serde_json::from_slice(&bytes).unwrap()));
        }
        (rows, reader.finish().unwrap())
    }

    fn numbered(values: Vec<Value>) -> Vec<(u64, Value)> {
        values.into_iter().enumerate().map(|(i, v)| (i as u64 + 1, v)).collect()
    }

    use crate::hashing::sha256_hex;

    #[test]
    fn parquet_rows_are_the_jsonl_records() {
        let dir = tempfile::tempdir().unwrap();
        let b = batch(&records());
        for (name, compression) in [
            ("snappy", Compression::SNAPPY),
            ("zstd", Compression::ZSTD(ZstdLevel::default())),
            ("lz4", Compression::LZ4_RAW),
            ("gzip", Compression::GZIP(Default::default())),
            ("none", Compression::UNCOMPRESSED),
        ] {
            let path = dir.path().join(format!("{name}.parquet"));
            write_parquet(&path, &b, compression, 2); // three row groups
            assert!(is_columnar(&path));
            let (rows, (size, sha)) = read_all(&path);
            assert_eq!(rows, numbered(expected()), "{name}");
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!((size, sha), (bytes.len() as u64, sha256_hex(&bytes)));
        }
    }

    #[test]
    fn ipc_file_and_stream_rows_are_the_jsonl_records() {
        let dir = tempfile::tempdir().unwrap();
        let all = records();
        let batches = [batch(&all[..2]), batch(&all[2..])];
        // The two halves infer different schemas; write both with the full one.
        let schema = batch(&all).schema();
        let batches: Vec<RecordBatch> = batches.iter().map(|b| cast_to(b, &schema)).collect();
        let plain = dir.path().join("plain.arrow");
        write_ipc_file(&plain, &batches, IpcWriteOptions::default());
        let lz4 = dir.path().join("lz4.feather");
        let opts = IpcWriteOptions::default().try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME)).unwrap();
        write_ipc_file(&lz4, &batches, opts);
        let zstd = dir.path().join("zstd.arrow");
        let opts = IpcWriteOptions::default().try_with_compression(Some(arrow_ipc::CompressionType::ZSTD)).unwrap();
        write_ipc_file(&zstd, &batches, opts);
        let stream = dir.path().join("stream.arrows");
        write_ipc_stream(&stream, &batches);
        for path in [plain, lz4, zstd, stream] {
            assert!(is_columnar(&path), "{}", path.display());
            let (rows, (size, _)) = read_all(&path);
            assert_eq!(rows, numbered(expected()), "{}", path.display());
            assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        }
    }

    /// `batch` with `schema`'s columns (those it lacks all null), via a JSON round trip.
    fn cast_to(batch: &RecordBatch, schema: &Arc<Schema>) -> RecordBatch {
        let mut buf = Vec::new();
        let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
        w.write(batch).unwrap();
        w.finish().unwrap();
        let mut reader = arrow_json::ReaderBuilder::new(schema.clone()).build(Cursor::new(buf)).unwrap();
        reader.next().unwrap().unwrap()
    }

    #[test]
    fn save_to_disk_directory_reads_files_in_state_order() {
        let dir = tempfile::tempdir().unwrap();
        let all = expected();
        let schema = batch(&all).schema();
        // Two files; state.json lists the one whose name sorts last first.
        let first = cast_to(&batch(&all[..3]), &schema);
        let second = cast_to(&batch(&all[3..]), &schema);
        write_ipc_stream(&dir.path().join("data-00001-of-00002.arrow"), &[first.slice(0, 1), first.slice(1, 2)]);
        write_ipc_stream(&dir.path().join("data-00000-of-00002.arrow"), &[second]);
        let state = json!({"_data_files": [{"filename": "data-00001-of-00002.arrow"}, {"filename": "data-00000-of-00002.arrow"}],
                           "_fingerprint": "x", "_split": "train"});
        std::fs::write(dir.path().join("state.json"), state.to_string()).unwrap();
        std::fs::write(dir.path().join("dataset_info.json"), "{}").unwrap();
        assert!(is_columnar(dir.path()));
        let (rows, (size, sha)) = read_all(dir.path());
        assert_eq!(rows, numbered(all)); // rows 1..=5, numbered across both files
        let mut bytes = std::fs::read(dir.path().join("data-00001-of-00002.arrow")).unwrap();
        bytes.extend(std::fs::read(dir.path().join("data-00000-of-00002.arrow")).unwrap());
        assert_eq!((size, sha), (bytes.len() as u64, sha256_hex(&bytes)));
    }

    #[test]
    fn finish_before_the_end_still_hashes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = batch(&records());
        write_ipc_stream(&dir.path().join("a.arrow"), std::slice::from_ref(&b));
        write_ipc_stream(&dir.path().join("b.arrow"), &[b]);
        let state = json!({"_data_files": [{"filename": "a.arrow"}, {"filename": "b.arrow"}]});
        std::fs::write(dir.path().join("state.json"), state.to_string()).unwrap();
        let mut reader = ColumnarReader::open(dir.path()).unwrap();
        assert_eq!(reader.next_row().unwrap().map(|(row, _)| row), Some(1));
        let (size, sha) = reader.finish().unwrap();
        let mut bytes = std::fs::read(dir.path().join("a.arrow")).unwrap();
        bytes.extend(std::fs::read(dir.path().join("b.arrow")).unwrap());
        assert_eq!((size, sha), (bytes.len() as u64, sha256_hex(&bytes)));
    }

    #[test]
    fn large_batches_are_converted_in_slices() {
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<Value> =
            (0..ROWS_PER_SLICE * 2 + 7).map(|i| json!({"instruction": format!("i{i}"), "output": i.to_string()})).collect();
        let path = dir.path().join("one_batch.arrow");
        write_ipc_file(&path, &[batch(&many)], IpcWriteOptions::default());
        let (rows, _) = read_all(&path);
        assert_eq!(rows, numbered(many));
    }

    #[test]
    fn sniffing() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert!(!is_columnar(&p("a.jsonl", b"{\"messages\": []}\n")));
        assert!(!is_columnar(&p("a.json", b"[{}]")));
        assert!(!is_columnar(&p("a.gz", &[0x1f, 0x8b, 8, 0])));
        assert!(!is_columnar(&p("empty", b"")));
        assert!(!is_columnar(&dir.path().join("missing.parquet")));
        assert!(!is_columnar(dir.path())); // a directory without state.json
        assert!(is_columnar(&p("x", b"PAR1....")));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.parquet");
        write_parquet(&path, &batch(&records()), Compression::SNAPPY, 100);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = ColumnarReader::open(&path).err().unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("cut.parquet"), "{err}");

        let feather1 = dir.path().join("old.feather");
        std::fs::write(&feather1, b"FEA1\0\0\0\0").unwrap();
        let err = ColumnarReader::open(&feather1).err().unwrap().to_string();
        assert!(err.contains("old.feather") && err.contains("Feather version 1"), "{err}");

        let dict = dir.path().join("dict");
        std::fs::create_dir(&dict).unwrap();
        std::fs::write(dict.join("dataset_dict.json"), r#"{"splits": ["train", "test"]}"#).unwrap();
        let err = ColumnarReader::open(&dict).err().unwrap().to_string();
        assert!(err.contains("splits: train, test") && err.contains("dict/train"), "{err}");

        let missing = dir.path().join("missing");
        std::fs::create_dir(&missing).unwrap();
        std::fs::write(missing.join("state.json"), r#"{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}"#).unwrap();
        let err = ColumnarReader::open(&missing).err().unwrap();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }
}
