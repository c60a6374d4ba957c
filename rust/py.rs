//! All of pyo3: the `fastsft._core` module. Extracts owned Rust values, runs the work with the
//! GIL released (`py.detach`), builds Python objects after. Maps [`Error`] variants to typed
//! Python exceptions; nothing here panics.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};

use crate::encode::Encoder;
use crate::options::{from_json, EncoderOptions, PrepOptions};
use crate::pack::pack_best_fit_decreasing;
use crate::pipeline::run;
use crate::py_errors::usage_error;
use crate::schema::parse_record;

#[path = "py_batch.rs"]
mod py_batch;
#[path = "py_assemble.rs"]
mod py_assemble;

/// `bytes` as a writable numpy array of `dtype` (one copy; numpy is fastsft's one dependency).
fn to_numpy<'py>(py: Python<'py>, bytes: &[u8], dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    let buffer = PyByteArray::new(py, bytes);
    py.import("numpy")?.getattr("frombuffer")?.call1((buffer, dtype))
}

fn mask_array<'py>(py: Python<'py>, mask: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    to_numpy(py, mask, "uint8")
}

/// Keep the last encoder loaded, for this process's next `prep` with the same tokenizer,
/// template and options (rust/encoder_reuse.rs): for processes that run many (Ray workers).
#[pyfunction]
fn reuse_encoders(enabled: bool) {
    crate::encoder_reuse::set_enabled(enabled);
}

/// Runs the whole pipeline; returns the summary as a dict. `options`: the JSON of
/// `{"encoder": EncodeOptions fields, "run": the run's}` (`fastsft.config`), by name.
/// `array_checksums=False`: for a Ray work unit of several (rust/pipeline.rs `PrepConfig`).
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, output, options=None, array_checksums=true))]
fn prep<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    tokenizer: PathBuf,
    output: PathBuf,
    options: Option<&str>,
    array_checksums: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let options: PrepOptions = match options {
        Some(text) => from_json(text)?,
        None => PrepOptions::default(),
    };
    let mut config = options.into_config(inputs, tokenizer, output)?;
    config.array_checksums = array_checksums;
    // Ctrl-C: the pipeline asks between chunks whether a signal arrived.
    let interrupted = || Python::attach(|py| py.check_signals().is_err());
    let summary = py.detach(|| run(&config, &interrupted))?;
    // The dataset is complete and in place: a Ctrl-C that arrived while it was being committed
    // is consumed here rather than raised after the fact next to a finished dataset.
    let _ = py.check_signals();
    let c = &summary.counts;
    let dict = PyDict::new(py);
    dict.set_item("output", summary.output.display().to_string())?;
    dict.set_item("read", c.read)?;
    dict.set_item("written", c.written)?;
    dict.set_item("rejected", c.rejected)?;
    dict.set_item("samples", c.samples)?;
    dict.set_item("split_records", c.split_records)?;
    dict.set_item("split_samples", c.split_samples)?;
    dict.set_item("rejected_by_reason", c.rejected_by_reason.clone())?;
    dict.set_item("truncated", c.truncated)?;
    dict.set_item("tokens", c.tokens)?;
    dict.set_item("trained_tokens", c.trained_tokens)?;
    dict.set_item("seconds", summary.seconds)?;
    dict.set_item("threads", summary.threads)?;
    dict.set_item("skipped", summary.skipped)?;
    Ok(dict)
}

/// The defaults of [`EncoderOptions`], by name: `tests/test_options_schema.py` compares them
/// with the dataclass that defines the options.
#[pyfunction]
fn encoder_option_defaults() -> String {
    EncoderOptions::default().to_json().to_string()
}

/// Best-fit-decreasing packing of `lengths` (a contiguous int64 numpy array) into packs of at most
/// `capacity` tokens. Returns `(order, bounds)` as int64 numpy arrays: pack j is
/// `order[bounds[j]:bounds[j+1]]`.
#[pyfunction]
fn pack<'py>(py: Python<'py>, lengths: pyo3::buffer::PyBuffer<i64>, capacity: i64) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    // The buffer protocol: a numpy array is read in one copy, not element by element.
    let lengths = lengths.to_vec(py)?;
    let mut values = Vec::with_capacity(lengths.len());
    for (i, &v) in lengths.iter().enumerate() {
        if v < 0 {
            return Err(usage_error(format!("sample {i} has a negative length {v}")));
        }
        values.push(v as u64);
    }
    if capacity <= 0 {
        return Err(usage_error(format!("capacity must be positive, got {capacity}")));
    }
    let packs = py.detach(|| pack_best_fit_decreasing(&values, capacity as u64)).map_err(|e| usage_error(e.to_string()))?;
    let to_bytes = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect() };
    Ok((to_numpy(py, &to_bytes(&packs.order), "<i8")?, to_numpy(py, &to_bytes(&packs.bounds), "<i8")?))
}

/// One record at a time, for tests, `inspect`, and engines that bring their own parallelism.
#[pyclass(frozen, module = "fastsft._core")]
struct RecordEncoder {
    encoder: Encoder,
}

#[pymethods]
impl RecordEncoder {
    /// `options`: the JSON of `fastsft.config.EncodeOptions`'s fields, by name (all optional).
    #[new]
    #[pyo3(signature = (tokenizer, options=None))]
    fn new(py: Python<'_>, tokenizer: PathBuf, options: Option<&str>) -> PyResult<Self> {
        let options: EncoderOptions = match options {
            Some(text) => from_json(text)?,
            None => EncoderOptions::default(),
        };
        let (schema, encode) = (options.schema()?, options.encode()?);
        let encoder = py.detach(|| Encoder::load(&tokenizer, options.template.as_deref(), schema, encode))?;
        Ok(RecordEncoder { encoder })
    }

    /// `{"input_ids", "loss_mask", "truncated", "turn", "samples"}` — the first sample's arrays,
    /// and every sample (one per trained turn when the record was split) in `samples` — or
    /// `{"reject": code, "detail": text}`.
    fn encode<'py>(&self, py: Python<'py>, record: &str) -> PyResult<Bound<'py, PyDict>> {
        let outcome = py.detach(|| self.encoder.encode_record(record.as_bytes()));
        let dict = PyDict::new(py);
        match outcome {
            Ok(samples) => {
                let list = pyo3::types::PyList::empty(py);
                for (i, encoded) in samples.into_iter().enumerate() {
                    let sample = PyDict::new(py);
                    sample.set_item("input_ids", encoded.ids)?;
                    sample.set_item("loss_mask", mask_array(py, &encoded.mask)?)?;
                    sample.set_item("truncated", encoded.truncated)?;
                    sample.set_item("turn", encoded.turn)?;
                    if i == 0 {
                        for key in ["input_ids", "loss_mask", "truncated", "turn"] {
                            dict.set_item(key, sample.get_item(key)?)?;
                        }
                    }
                    list.append(sample)?;
                }
                dict.set_item("samples", list)?;
            }
            Err(reject) => {
                dict.set_item("reject", reject.reason.code())?;
                dict.set_item("detail", reject.detail)?;
            }
        }
        Ok(dict)
    }

    /// Many records at once, in parallel on `threads` threads (0 = every core) with an owned pool.
    /// Returns `{"input_ids": [[...]], "loss_mask": [[...]], "truncated": [...], "reject": [code or
    /// None], "detail": [text or None], "row": [...], "turn": [...]}`, one entry per sample (a
    /// rejected record is one entry with empty arrays), in input order; `row` is the record's
    /// index in `records`, `turn` the assistant message of a per-turn sample (else None).
    #[pyo3(signature = (records, threads=1))]
    fn encode_batch<'py>(&self, py: Python<'py>, records: Vec<String>, threads: usize) -> PyResult<Bound<'py, PyDict>> {
        use rayon::prelude::*;
        let outcomes = py.detach(|| -> Result<Vec<_>, String> {
            let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
            if threads == 1 {
                return Ok(records.iter().map(|r| self.encoder.encode_record(r.as_bytes())).collect());
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
            Ok(pool.install(|| records.par_iter().map(|r| self.encoder.encode_record(r.as_bytes())).collect()))
        });
        let outcomes = outcomes.map_err(usage_error)?;
        let n = outcomes.len();
        let (mut ids, mut masks, mut truncated, mut rejects, mut details) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut rows, mut turns) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (row, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(samples) => {
                    for encoded in samples {
                        ids.push(encoded.ids);
                        masks.push(encoded.mask);
                        truncated.push(encoded.truncated);
                        rejects.push(None);
                        details.push(None);
                        rows.push(row);
                        turns.push(encoded.turn);
                    }
                }
                Err(reject) => {
                    rows.push(row);
                    turns.push(None);
                    ids.push(Vec::new());
                    masks.push(Vec::new());
                    truncated.push(false);
                    rejects.push(Some(reject.reason.code()));
                    details.push(Some(reject.detail));
                }
            }
        }
        let dict = PyDict::new(py);
        dict.set_item("input_ids", ids)?;
        dict.set_item("loss_mask", masks)?;
        dict.set_item("truncated", truncated)?;
        dict.set_item("reject", rejects)?;
        dict.set_item("detail", details)?;
        dict.set_item("row", rows)?;
        dict.set_item("turn", turns)?;
        Ok(dict)
    }

    /// `{"text", "spans": [(start, end), ...], "samples": [...]}` with character (not byte)
    /// offsets — `text`/`spans` of the first sample, and each sample (`text`, `spans`,
    /// `prompt_chars` and `turn` for a per-turn sample) in `samples` — or a reject.
    fn render<'py>(&self, py: Python<'py>, record: &str) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let turns = self.encoder.turn_options();
        let rendered = parse_record(record.as_bytes(), self.encoder.schema()).and_then(|c| self.encoder.template().render(&c, &turns));
        match rendered {
            Ok(samples) => {
                let list = pyo3::types::PyList::empty(py);
                for (i, rendered) in samples.iter().enumerate() {
                    let char_at = |byte: usize| rendered.text[..byte].chars().count();
                    let spans: Vec<(usize, usize)> = rendered.spans.iter().map(|s| (char_at(s.start), char_at(s.end))).collect();
                    let sample = PyDict::new(py);
                    sample.set_item("text", rendered.text.as_str())?;
                    sample.set_item("spans", spans.clone())?;
                    sample.set_item("prompt_chars", rendered.split.map(|(at, _)| char_at(at)))?;
                    sample.set_item("turn", rendered.split.map(|(_, turn)| turn))?;
                    if i == 0 {
                        dict.set_item("text", rendered.text.as_str())?;
                        dict.set_item("spans", spans)?;
                    }
                    list.append(sample)?;
                }
                dict.set_item("samples", list)?;
            }
            Err(reject) => {
                dict.set_item("reject", reject.reason.code())?;
                dict.set_item("detail", reject.detail)?;
            }
        }
        Ok(dict)
    }

    /// The record as the template sees it: `{"messages": [...], "tools": [...]}` (JSON text), or a
    /// reject. Lets other engines (transformers, in `fastsft verify`) render the same conversation.
    fn conversation<'py>(&self, py: Python<'py>, record: &str) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        match parse_record(record.as_bytes(), self.encoder.schema()) {
            Ok(conversation) => dict.set_item("json", conversation_json(&conversation).to_string())?,
            Err(reject) => {
                dict.set_item("reject", reject.reason.code())?;
                dict.set_item("detail", reject.detail)?;
            }
        }
        Ok(dict)
    }

    #[getter]
    fn tokenizer_sha256(&self) -> String {
        self.encoder.tokenizer_info.sha256.clone()
    }
}

/// Token ids back to text with the extension's own `tokenizers` crate (for `fastsft inspect`, so it
/// needs no Python `tokenizers`). Method names and defaults are those of `tokenizers.Tokenizer`.
#[pyclass(frozen, module = "fastsft._core")]
struct TokenDecoder {
    decoder: crate::decode::TokenDecoder,
}

#[pymethods]
impl TokenDecoder {
    #[new]
    fn new(py: Python<'_>, tokenizer: PathBuf) -> PyResult<Self> {
        let decoder = py.detach(|| crate::decode::TokenDecoder::load(&tokenizer))?;
        Ok(TokenDecoder { decoder })
    }

    #[pyo3(signature = (ids, skip_special_tokens=true))]
    fn decode(&self, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        Ok(self.decoder.decode(&ids, skip_special_tokens)?)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.decoder.id_to_token(id)
    }

    #[pyo3(signature = (with_added_tokens=true))]
    fn get_vocab_size(&self, with_added_tokens: bool) -> usize {
        self.decoder.vocab_size(with_added_tokens)
    }
}

fn conversation_json(conversation: &crate::schema::Conversation) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = conversation
        .messages
        .iter()
        .map(|m| {
            let mut message = serde_json::Map::new();
            message.insert("role".into(), m.role.as_str().into());
            message.insert("content".into(), m.content.clone().into());
            if let Some(calls) = &m.tool_calls {
                message.insert("tool_calls".into(), serde_json::Value::Array(calls.clone()));
            }
            if let Some(reasoning) = &m.reasoning {
                message.insert("reasoning_content".into(), reasoning.clone().into());
            }
            for (key, value) in &m.extra {
                message.insert(key.clone(), value.clone());
            }
            if let Some(train) = m.train {
                message.insert("train".into(), train.into());
            }
            serde_json::Value::Object(message)
        })
        .collect();
    serde_json::json!({"messages": messages, "tools": conversation.tools})
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The classes live in Python (`fastsft.errors`); the base is here too for `from fastsft._core import FastSFTError`.
    m.add("FastSFTError", m.py().import("fastsft.errors")?.getattr("FastSFTError")?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(prep, m)?)?;
    m.add_function(wrap_pyfunction!(reuse_encoders, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(encoder_option_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(crate::py_errors::error_classes, m)?)?;
    m.add_function(wrap_pyfunction!(crate::py_errors::raise_error_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(py_batch::encode_batch_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(py_assemble::assemble_units, m)?)?;
    m.add_class::<py_assemble::UnitAssembler>()?;
    m.add_class::<RecordEncoder>()?;
    m.add_class::<TokenDecoder>()?;
    m.add_class::<crate::py_reader::InputRecords>()?;
    Ok(())
}
