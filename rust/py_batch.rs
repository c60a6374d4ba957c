//! `encode_batch_arrays`: a batch of records → flat arrays, for engines (Ray Data, Spark) that move
//! batches between processes. A child module of `py.rs` (it reads `RecordEncoder`'s encoder).
//!
//! The list output of `RecordEncoder.encode_batch` builds one Python int per token, and the
//! labels were then built token by token in Python: half the speed of `fastsft prep` on one core
//! (issue 17). Here every token stays in one `bytes` object per array — `input_ids` (`<u4`),
//! `loss_mask` (`|u1`), `offsets` (`<i8`, samples + 1) — and only per-sample values (row, turn,
//! truncated, reject) are small arrays or lists; Python views them with `np.frombuffer`, no copy.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::RecordEncoder;
use crate::py_errors::usage_error;

/// One entry per sample, in input order; a rejected record is one entry with no tokens, its
/// reason in `reject` (None for samples) and `detail`. `row` is the record's index in `records`,
/// `turn` the assistant message a per-turn sample trains (-1 for a whole conversation).
#[pyfunction]
#[pyo3(signature = (encoder, records, threads=1))]
pub fn encode_batch_arrays<'py>(py: Python<'py>, encoder: PyRef<'py, RecordEncoder>, records: Vec<String>, threads: usize) -> PyResult<Bound<'py, PyDict>> {
    use rayon::prelude::*;
    let encoder = &encoder.encoder;
    let flat = py.detach(|| -> Result<FlatBatch, String> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let outcomes: Vec<_> = if threads == 1 {
            records.iter().map(|r| encoder.encode_record(r.as_bytes())).collect()
        } else {
            // An owned pool per call, as the pipeline does: the global pool does not survive fork.
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
            pool.install(|| records.par_iter().map(|r| encoder.encode_record(r.as_bytes())).collect())
        };
        let mut flat = FlatBatch::default();
        flat.offsets.push(0);
        for (row, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(samples) => {
                    for encoded in samples {
                        flat.ids.extend(encoded.ids.iter().flat_map(|id| id.to_le_bytes()));
                        flat.mask.extend_from_slice(&encoded.mask);
                        flat.push_sample(row, encoded.turn.map_or(-1, i64::from), encoded.truncated, encoded.mask.len(), None);
                    }
                }
                Err(reject) => flat.push_sample(row, -1, false, 0, Some((reject.reason.code(), reject.detail))),
            }
        }
        Ok(flat)
    });
    let flat = flat.map_err(usage_error)?;
    let i64_bytes = |values: &[i64]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let dict = PyDict::new(py);
    dict.set_item("input_ids", PyBytes::new(py, &flat.ids))?;
    dict.set_item("loss_mask", PyBytes::new(py, &flat.mask))?;
    dict.set_item("offsets", PyBytes::new(py, &i64_bytes(&flat.offsets)))?;
    dict.set_item("row", PyBytes::new(py, &i64_bytes(&flat.rows)))?;
    dict.set_item("turn", PyBytes::new(py, &i64_bytes(&flat.turns)))?;
    dict.set_item("truncated", PyBytes::new(py, &flat.truncated))?;
    dict.set_item("reject", flat.rejects)?;
    dict.set_item("detail", flat.details)?;
    Ok(dict)
}

#[derive(Default)]
struct FlatBatch {
    ids: Vec<u8>,
    mask: Vec<u8>,
    offsets: Vec<i64>,
    rows: Vec<i64>,
    turns: Vec<i64>,
    truncated: Vec<u8>,
    rejects: Vec<Option<&'static str>>,
    details: Vec<Option<String>>,
}

impl FlatBatch {
    fn push_sample(&mut self, row: usize, turn: i64, truncated: bool, tokens: usize, reject: Option<(&'static str, String)>) {
        let end = self.offsets.last().copied().unwrap_or(0) + tokens as i64;
        self.offsets.push(end);
        self.rows.push(row as i64);
        self.turns.push(turn);
        self.truncated.push(u8::from(truncated));
        let (code, detail) = reject.map_or((None, None), |(c, d)| (Some(c), Some(d)));
        self.rejects.push(code);
        self.details.push(detail);
    }
}
