//! All of pyo3: the `fastsft._core` module. Extracts owned Rust values, runs the work with the
//! GIL released (`py.detach`), builds Python objects after. Maps [`Error`] variants to typed
//! Python exceptions; nothing here panics.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{PyFileExistsError, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::encode::{EncodeOptions, Encoder, TrainOn, Truncation};
use crate::error::Error;
use crate::pack::pack_best_fit_decreasing;
use crate::pipeline::{run, PrepConfig, DEFAULT_CHUNK_SIZE};
use crate::schema::{parse_record, FieldNames, Format, SchemaOptions};
use crate::source::Shard;
use crate::template::{HistoryTurns, ReasoningPolicy, SplitTurns, TemplateOptions};

create_exception!(fastsft, FastSFTError, PyValueError, "A fastsft run or input could not be processed.");

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        match error {
            Error::NotFound { .. } => PyFileNotFoundError::new_err(message),
            Error::OutputExists { .. } => PyFileExistsError::new_err(message),
            Error::Io { .. } => PyOSError::new_err(message),
            Error::Interrupted => PyKeyboardInterrupt::new_err(message),
            _ => FastSFTError::new_err(message),
        }
    }
}

fn parse_choice<T>(value: &str, flag: &str, choices: &[(&str, T)]) -> PyResult<T>
where
    T: Copy,
{
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        FastSFTError::new_err(format!("{flag} {value:?}: expected one of {}", names.join(", ")))
    })
}

fn schema_options(format: Option<&str>, role_map: Option<HashMap<String, String>>, fields: Option<HashMap<String, String>>) -> PyResult<SchemaOptions> {
    let mut names = FieldNames::default();
    for (key, value) in fields.unwrap_or_default() {
        let slot = match key.as_str() {
            "messages" => &mut names.messages,
            "role" => &mut names.role,
            "content" => &mut names.content,
            "system" => &mut names.system,
            _ => return Err(FastSFTError::new_err(format!("unknown field mapping {key:?}: expected messages, role, content or system"))),
        };
        *slot = Some(value);
    }
    let format = match format {
        None => None,
        Some(name) => Some(Format::parse(name).ok_or_else(|| {
            FastSFTError::new_err(format!("--format {name:?}: expected one of sharegpt, openai, alpaca"))
        })?),
    };
    Ok(SchemaOptions { format, role_map: role_map.unwrap_or_default(), fields: names })
}

/// The reasoning, per-turn and template-argument options shared by every entry point.
#[derive(FromPyObject, Default)]
struct TurnArgs {
    reasoning: Option<String>,
    split_turns: Option<String>,
    history: Option<String>,
    /// `{name: JSON text}`, as `--template-arg name=JSON` gives them.
    template_args: Option<Vec<(String, String)>>,
    date: Option<String>,
}

fn apply_turn_args(options: &mut EncodeOptions, args: TurnArgs) -> PyResult<()> {
    if let Some(name) = args.reasoning.as_deref() {
        options.reasoning = ReasoningPolicy::parse(name)
            .ok_or_else(|| FastSFTError::new_err(format!("--reasoning {name:?}: expected one of train, mask, drop")))?;
    }
    if let Some(name) = args.split_turns.as_deref() {
        options.split_turns = SplitTurns::parse(name)
            .ok_or_else(|| FastSFTError::new_err(format!("--split-turns {name:?}: expected one of never, auto, always")))?;
    }
    if let Some(name) = args.history.as_deref() {
        options.history = HistoryTurns::parse(name)
            .ok_or_else(|| FastSFTError::new_err(format!("--history {name:?}: expected one of template, as-written")))?;
    }
    let mut kwargs = Vec::new();
    for (name, text) in args.template_args.unwrap_or_default() {
        let value = crate::exact_json::parse_str(&text)
            .map_err(|e| FastSFTError::new_err(format!("--template-arg {name}={text}: the value is not JSON ({e}); quote strings as JSON, e.g. {name}='\"text\"'")))?;
        kwargs.push((name, value));
    }
    if let Some(date) = &args.date {
        if crate::template::parse_date(date).is_none() {
            return Err(FastSFTError::new_err(format!("--date {date:?}: expected a day as YYYY-MM-DD")));
        }
    }
    options.template = TemplateOptions { kwargs, date: args.date };
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn encode_options(
    max_len: Option<usize>,
    truncation: &str,
    train_on: &str,
    train_eot: bool,
    train_on_prompt: bool,
    max_record_bytes: Option<usize>,
    turns: TurnArgs,
) -> PyResult<EncodeOptions> {
    if max_len == Some(0) {
        return Err(FastSFTError::new_err("--max-len must be positive"));
    }
    let mut options = EncodeOptions {
        max_len,
        truncation: parse_choice(truncation, "--truncation", &[("right", Truncation::Right), ("drop", Truncation::Drop)])?,
        train_on: parse_choice(train_on, "--train-on", &[("all", TrainOn::All), ("last", TrainOn::Last)])?,
        train_eot,
        train_on_prompt,
        max_record_bytes: max_record_bytes.unwrap_or(crate::encode::DEFAULT_MAX_RECORD_BYTES),
        ..EncodeOptions::default()
    };
    apply_turn_args(&mut options, turns)?;
    Ok(options)
}

/// Runs the whole pipeline; returns the summary as a dict.
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, output, *, template=None, format=None, role_map=None, fields=None, max_len=None,
    truncation="right", train_on="all", train_eot=true, train_on_prompt=false, threads=0, chunk_size=None,
    overwrite=false, progress=false, strict=false, max_reject_fraction=None, num_shards=1, shard_index=0,
    max_record_bytes=None, reasoning=None, split_turns=None, history=None, template_args=None, date=None))]
#[allow(clippy::too_many_arguments)]
fn prep<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    tokenizer: PathBuf,
    output: PathBuf,
    template: Option<String>,
    format: Option<&str>,
    role_map: Option<HashMap<String, String>>,
    fields: Option<HashMap<String, String>>,
    max_len: Option<usize>,
    truncation: &str,
    train_on: &str,
    train_eot: bool,
    train_on_prompt: bool,
    threads: usize,
    chunk_size: Option<usize>,
    overwrite: bool,
    progress: bool,
    strict: bool,
    max_reject_fraction: Option<f64>,
    num_shards: u64,
    shard_index: u64,
    max_record_bytes: Option<usize>,
    reasoning: Option<String>,
    split_turns: Option<String>,
    history: Option<String>,
    template_args: Option<Vec<(String, String)>>,
    date: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    if num_shards == 0 || shard_index >= num_shards {
        return Err(FastSFTError::new_err(format!(
            "--shard-index {shard_index} with --num-shards {num_shards}: need 0 <= shard index < number of shards"
        )));
    }
    let mut config = PrepConfig::new(inputs, tokenizer, output);
    config.template = template;
    config.schema = schema_options(format, role_map, fields)?;
    let turns = TurnArgs { reasoning, split_turns, history, template_args, date };
    config.encode = encode_options(max_len, truncation, train_on, train_eot, train_on_prompt, max_record_bytes, turns)?;
    config.threads = threads;
    config.chunk_size = chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    config.overwrite = overwrite;
    config.progress = progress;
    config.strict = strict;
    config.max_reject_fraction = max_reject_fraction;
    config.shard = Shard { index: shard_index, count: num_shards };
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

/// Best-fit-decreasing packing. `lengths`: little-endian int64 bytes. Returns `(order, bounds)`
/// as little-endian int64 bytes: pack j is `order[bounds[j]:bounds[j+1]]`.
#[pyfunction]
fn pack<'py>(py: Python<'py>, lengths: &[u8], capacity: i64) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    if lengths.len() % 8 != 0 {
        return Err(FastSFTError::new_err("lengths must be int64 bytes (a multiple of 8 bytes)"));
    }
    let mut values = Vec::with_capacity(lengths.len() / 8);
    for (i, chunk) in lengths.chunks_exact(8).enumerate() {
        let v = i64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if v < 0 {
            return Err(FastSFTError::new_err(format!("sample {i} has a negative length {v}")));
        }
        values.push(v as u64);
    }
    if capacity <= 0 {
        return Err(FastSFTError::new_err(format!("capacity must be positive, got {capacity}")));
    }
    let packs = py
        .detach(|| pack_best_fit_decreasing(&values, capacity as u64))
        .map_err(|e| FastSFTError::new_err(e.to_string()))?;
    let to_bytes = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect() };
    Ok((PyBytes::new(py, &to_bytes(&packs.order)), PyBytes::new(py, &to_bytes(&packs.bounds))))
}

/// One record at a time, for tests, `inspect`, and engines that bring their own parallelism.
#[pyclass(frozen, module = "fastsft._core")]
struct RecordEncoder {
    encoder: Encoder,
}

#[pymethods]
impl RecordEncoder {
    #[new]
    #[pyo3(signature = (tokenizer, *, template=None, format=None, role_map=None, fields=None, max_len=None, truncation="right",
        train_on="all", train_eot=true, train_on_prompt=false, max_record_bytes=None, reasoning=None, split_turns=None,
        history=None, template_args=None, date=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        tokenizer: PathBuf,
        template: Option<String>,
        format: Option<&str>,
        role_map: Option<HashMap<String, String>>,
        fields: Option<HashMap<String, String>>,
        max_len: Option<usize>,
        truncation: &str,
        train_on: &str,
        train_eot: bool,
        train_on_prompt: bool,
        max_record_bytes: Option<usize>,
        reasoning: Option<String>,
        split_turns: Option<String>,
        history: Option<String>,
        template_args: Option<Vec<(String, String)>>,
        date: Option<String>,
    ) -> PyResult<Self> {
        let schema = schema_options(format, role_map, fields)?;
        let turns = TurnArgs { reasoning, split_turns, history, template_args, date };
        let options = encode_options(max_len, truncation, train_on, train_eot, train_on_prompt, max_record_bytes, turns)?;
        Ok(RecordEncoder { encoder: Encoder::load(&tokenizer, template.as_deref(), schema, options)? })
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
                    sample.set_item("loss_mask", encoded.mask)?;
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
        let outcomes = outcomes.map_err(FastSFTError::new_err)?;
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
    m.add("FastSFTError", m.py().get_type::<FastSFTError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(prep, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_class::<RecordEncoder>()?;
    m.add_class::<TokenDecoder>()?;
    m.add_class::<crate::py_reader::InputRecords>()?;
    Ok(())
}
