//! `fastsft._core.InputRecords`: the records of `prep`'s inputs, read by `prep`'s own reader.
//!
//! Python code that must start from exactly the records `prep` saw (`fastsft verify` re-reads the
//! records behind sampled rows) iterates over this instead of reading files itself, so it reads
//! every input kind `prep` reads (JSONL or a JSON array, plain, gzip or zstd; Parquet, Arrow IPC,
//! `save_to_disk` directories) and numbers records as `origin.npy` does. The reading is
//! `source.rs`/`columnar.rs`; this file only hands the records over, with the GIL released while
//! files are read. No parsing: a record is its raw bytes (a columnar row: its JSON object).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::source::{RawRecord, Source};

/// Records read per trip through the reader: enough to amortize releasing the GIL.
const CHUNK_RECORDS: usize = 4096;
const CHUNK_BYTES: usize = 16 << 20;

/// Iterates over `(file, line, record)`: the index of the file in `paths`, the record's 1-based
/// line (JSONL), element index (JSON array) or row (columnar), and its bytes. Blank lines are
/// skipped, as `prep` skips them. `only` (`{file: lines}`) keeps just those records; every file is
/// still read to its end, so `inputs` is complete once the iterator is exhausted.
#[pyclass(module = "fastsft._core")]
pub struct InputRecords {
    /// In a mutex only because a pyclass must be `Sync` (free-threaded Python); `__next__` takes
    /// `&mut self`, so the lock is never contended.
    source: Mutex<Source>,
    only: Option<HashMap<u32, HashSet<u64>>>,
    pending: VecDeque<RawRecord>,
    exhausted: bool,
}

#[pymethods]
impl InputRecords {
    #[new]
    #[pyo3(signature = (paths, only=None))]
    fn new(paths: Vec<PathBuf>, only: Option<HashMap<u32, HashSet<u64>>>) -> PyResult<Self> {
        Ok(InputRecords { source: Mutex::new(Source::new(paths)?), only, pending: VecDeque::new(), exhausted: false })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(u32, u64, Bound<'py, PyBytes>)>> {
        while self.pending.is_empty() && !self.exhausted {
            let source = self.source.get_mut().unwrap_or_else(PoisonError::into_inner);
            let only = &self.only;
            let chunk = py.detach(|| -> crate::error::Result<Option<Vec<RawRecord>>> {
                let mut chunk = Vec::new();
                if !source.next_chunk(CHUNK_RECORDS, CHUNK_BYTES, &mut chunk)? {
                    return Ok(None);
                }
                if let Some(only) = only {
                    chunk.retain(|r| only.get(&r.file).is_some_and(|lines| lines.contains(&r.line)));
                }
                Ok(Some(chunk))
            })?;
            match chunk {
                Some(records) => self.pending.extend(records),
                None => self.exhausted = true,
            }
        }
        Ok(self.pending.pop_front().map(|r| (r.file, r.line, PyBytes::new(py, &r.bytes))))
    }

    /// `[{"path", "size", "sha256"}, ...]` of the files read to their end so far, in order: what
    /// the manifest records of each input.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        source
            .infos()
            .iter()
            .map(|info| {
                let dict = PyDict::new(py);
                dict.set_item("path", &info.path)?;
                dict.set_item("size", info.size)?;
                dict.set_item("sha256", &info.sha256)?;
                Ok(dict)
            })
            .collect()
    }
}
