//! The only place with threads: read a chunk → encode it in parallel → write in input order.
//!
//! One owned rayon pool per run (never the global pool: it does not survive `fork`, and a library
//! must not size it for its host). While the pool encodes chunk k, one task writes chunk k-1 and
//! reads chunk k+1, so I/O overlaps encoding. Output order is input order, so the bytes written do
//! not depend on the thread count or the chunk size. Memory holds the tokenizer plus about three
//! chunks, whatever the corpus size.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use crate::encode::{EncodeOptions, Encoded, Encoder, TrainOn, Truncation};
use crate::error::{Error, Result};
use crate::schema::{Reject, SchemaOptions};
use crate::source::{RawRecord, Shard, Source};
use crate::template::sha256_hex;
use crate::writer::{write_file, NpyWriter, OutputDir};

/// 2: `turns.npy` (the assistant message of a per-turn sample, -1 for a whole conversation);
/// readers still accept version 1, which has no such file.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone)]
pub struct PrepConfig {
    pub inputs: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub output: PathBuf,
    /// `None`: the model's own template; `"chatml"`; or a `.jinja` file.
    pub template: Option<String>,
    pub schema: SchemaOptions,
    pub encode: EncodeOptions,
    /// 0 means every core.
    pub threads: usize,
    /// Records per chunk; changes memory and speed, never the output.
    pub chunk_size: usize,
    pub overwrite: bool,
    pub progress: bool,
    pub strict: bool,
    /// Fail the run when more than this fraction of records is rejected.
    pub max_reject_fraction: Option<f64>,
    /// Which part of the records this run prepares (`Shard::WHOLE` for all).
    pub shard: Shard,
}

impl PrepConfig {
    pub fn new(inputs: Vec<PathBuf>, tokenizer: PathBuf, output: PathBuf) -> Self {
        PrepConfig {
            inputs,
            tokenizer,
            output,
            template: None,
            schema: SchemaOptions::default(),
            encode: EncodeOptions::default(),
            threads: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
            overwrite: false,
            progress: false,
            strict: false,
            max_reject_fraction: None,
            shard: Shard::WHOLE,
        }
    }
}

/// 2,048 records: large enough that a chunk keeps both cores busy between the serial
/// write/read steps, small enough to stay a few MB on typical chat corpora.
pub const DEFAULT_CHUNK_SIZE: usize = 2048;
const CHUNK_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    /// Records read, written (as one sample or several) and rejected: `read = written + rejected`.
    pub read: u64,
    pub written: u64,
    pub rejected: u64,
    /// Samples written: `written` plus the extra samples of records split into turns.
    pub samples: u64,
    /// Records split into one sample per trained turn (`--split-turns`), and the samples they gave.
    pub split_records: u64,
    pub split_samples: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub truncated: u64,
    pub tokens: u64,
    pub trained_tokens: u64,
    /// The first reject of each reason, `file:line: detail`, for error messages.
    #[serde(skip)]
    pub first_reject: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub counts: Counts,
    /// True when a finished shard was found and kept instead of being prepared again.
    pub skipped: bool,
    pub seconds: f64,
    pub threads: usize,
    pub output: PathBuf,
}

type Outcome = std::result::Result<Vec<Encoded>, Reject>;

struct DatasetFiles {
    ids: NpyWriter,
    mask: NpyWriter,
    offsets: NpyWriter,
    origin: NpyWriter,
    turns: NpyWriter,
    rejects: BufWriter<std::fs::File>,
    rejects_path: PathBuf,
}

pub fn run(config: &PrepConfig, should_stop: &dyn Fn() -> bool) -> Result<Summary> {
    let started = Instant::now();
    tokenizers::utils::parallelism::set_parallelism(false);
    let encoder = Encoder::load(&config.tokenizer, config.template.as_deref(), config.schema.clone(), config.encode.clone())?;
    let mut source = Source::new(config.inputs.clone())?.with_shard(config.shard);
    if let Some(done) = completed_shard(config, &encoder)? {
        return Ok(done);
    }
    let threads = if config.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.threads };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastsft-{i}"))
        .build()
        .map_err(|e| Error::config(format!("cannot start {threads} threads: {e}")))?;
    let out = OutputDir::create(&config.output, config.overwrite)?;
    let result = write_dataset(config, &encoder, &mut source, &pool, &out, should_stop, started, threads);
    match result {
        Ok(counts) => {
            out.commit()?;
            Ok(Summary { counts, seconds: started.elapsed().as_secs_f64(), threads, output: config.output.clone(), skipped: false })
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_dataset(
    config: &PrepConfig,
    encoder: &Encoder,
    source: &mut Source,
    pool: &rayon::ThreadPool,
    out: &OutputDir,
    should_stop: &dyn Fn() -> bool,
    started: Instant,
    threads: usize,
) -> Result<Counts> {
    let wide = encoder.tokenizer_info.vocab_size > 1 << 16;
    let (ids_descr, ids_size) = if wide { ("<u4", 4) } else { ("<u2", 2) };
    let rejects_path = out.file("rejects.jsonl");
    let rejects_file = std::fs::File::create(&rejects_path).map_err(|e| Error::io(&rejects_path, e))?;
    let mut files = DatasetFiles {
        ids: NpyWriter::create(out.file("input_ids.npy"), ids_descr, ids_size, None)?,
        mask: NpyWriter::create(out.file("loss_mask.npy"), "|u1", 1, None)?,
        offsets: NpyWriter::create(out.file("offsets.npy"), "<i8", 8, None)?,
        origin: NpyWriter::create(out.file("origin.npy"), "<i8", 8, Some(2))?,
        turns: NpyWriter::create(out.file("turns.npy"), "<i8", 8, None)?,
        rejects: BufWriter::new(rejects_file),
        rejects_path,
    };
    files.offsets.write_i64(&[0])?;
    let mut counts = Counts::default();
    let mut progress = Progress::new(config.progress);
    let chunk_size = config.chunk_size.max(1);

    let mut current = Vec::with_capacity(chunk_size);
    source.next_chunk(chunk_size, CHUNK_BYTES, &mut current)?;
    let mut previous: Option<(Vec<RawRecord>, Vec<Outcome>)> = None;
    while !current.is_empty() || previous.is_some() {
        if should_stop() {
            return Err(Error::Interrupted);
        }
        let (outcomes, io) = pool.install(|| {
            rayon::join(
                || current.par_iter().map(|record| encoder.encode_record(&record.bytes)).collect::<Vec<Outcome>>(),
                || -> Result<Vec<RawRecord>> {
                    if let Some((records, outcomes)) = previous.take() {
                        write_chunk(config, source, &mut files, &mut counts, &records, outcomes)?;
                    }
                    let mut next = Vec::with_capacity(chunk_size);
                    source.next_chunk(chunk_size, CHUNK_BYTES, &mut next)?;
                    Ok(next)
                },
            )
        });
        let next = io?;
        progress.update(&counts, started);
        previous = if current.is_empty() { None } else { Some((std::mem::take(&mut current), outcomes)) };
        current = next;
    }
    progress.finish(&counts, started);

    let DatasetFiles { ids, mask, offsets, origin, turns, mut rejects, rejects_path } = files;
    rejects.flush().map_err(|e| Error::io(&rejects_path, e))?;
    rejects.into_inner().map_err(|e| Error::io(&rejects_path, e.into_error()))?.sync_all().map_err(|e| Error::io(&rejects_path, e))?;
    if let Err(error) = check_rejects(config, &counts) {
        return Err(keep_rejects(config, &rejects_path, error));
    }
    let array_sha256 = serde_json::json!({
        "input_ids.npy": ids.finish()?,
        "loss_mask.npy": mask.finish()?,
        "offsets.npy": offsets.finish()?,
        "origin.npy": origin.finish()?,
        "turns.npy": turns.finish()?,
    });

    if should_stop() {
        return Err(Error::Interrupted);
    }
    let mut manifest = manifest(config, encoder, source, &counts, ids_descr);
    // sha256 of each array's data bytes (after the .npy header); `fastsft check` compares them
    manifest["array_sha256"] = array_sha256;
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::config(e.to_string()))?;
    write_file(&out.file("manifest.json"), format!("{text}\n").as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "seconds": seconds,
        "threads": threads,
        "records_per_second": counts.read as f64 / seconds.max(1e-9),
        "tokens_per_second": counts.tokens as f64 / seconds.max(1e-9),
    });
    write_file(&out.file("report.json"), format!("{report:#}\n").as_bytes())?;
    Ok(counts)
}

fn write_chunk(
    config: &PrepConfig,
    source: &Source,
    files: &mut DatasetFiles,
    counts: &mut Counts,
    records: &[RawRecord],
    outcomes: Vec<Outcome>,
) -> Result<()> {
    let mut offset = counts.tokens as i64;
    for (record, outcome) in records.iter().zip(outcomes) {
        counts.read += 1;
        match outcome {
            Ok(samples) => {
                counts.written += 1;
                if samples.iter().any(|s| s.turn.is_some()) {
                    counts.split_records += 1;
                    counts.split_samples += samples.len() as u64;
                }
                for encoded in samples {
                    counts.samples += 1;
                    counts.truncated += u64::from(encoded.truncated);
                    counts.tokens += encoded.ids.len() as u64;
                    counts.trained_tokens += encoded.mask.iter().map(|&m| m as u64).sum::<u64>();
                    offset += encoded.ids.len() as i64;
                    files.ids.write_ids(&encoded.ids)?;
                    files.mask.write_u8(&encoded.mask)?;
                    files.offsets.write_i64(&[offset])?;
                    files.origin.write_i64(&[record.file as i64, record.line as i64])?;
                    files.turns.write_i64(&[encoded.turn.map_or(-1, i64::from)])?;
                }
            }
            Err(reject) => {
                let file = source.paths()[record.file as usize].display().to_string();
                if config.strict {
                    return Err(Error::Strict { file, line: record.line, reason: reject.reason.code(), detail: reject.detail });
                }
                counts.rejected += 1;
                *counts.rejected_by_reason.entry(reject.reason.code().to_string()).or_default() += 1;
                counts
                    .first_reject
                    .entry(reject.reason.code().to_string())
                    .or_insert_with(|| format!("{file}:{}: {}", record.line, reject.detail));
                let line = serde_json::json!({"file": file, "line": record.line, "reason": reject.reason.code(), "detail": reject.detail});
                writeln!(files.rejects, "{line}").map_err(|e| Error::io(&files.rejects_path, e))?;
            }
        }
    }
    Ok(())
}

/// A failed run keeps its `rejects.jsonl` beside the output (`OUT.rejects.jsonl`), so the user
/// can see why, and names it in the error.
fn keep_rejects(config: &PrepConfig, rejects_path: &std::path::Path, error: Error) -> Error {
    let Error::TooManyRejects { detail } = error else { return error };
    let mut name = config.output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".rejects.jsonl");
    let kept = config.output.with_file_name(name);
    match std::fs::copy(rejects_path, &kept) {
        Ok(_) => Error::TooManyRejects { detail: format!("{detail}; every reject is listed in {}", kept.display()) },
        Err(e) => Error::TooManyRejects { detail: format!("{detail}; (the rejects could not be kept in {}: {e})", kept.display()) },
    }
}

/// A run where (nearly) everything is rejected is a mistake to report, not a dataset to keep.
fn check_rejects(config: &PrepConfig, counts: &Counts) -> Result<()> {
    let fraction = if counts.read == 0 { 0.0 } else { counts.rejected as f64 / counts.read as f64 };
    let limit = config.max_reject_fraction.unwrap_or(1.0);
    let nothing_written = counts.read > 0 && counts.written == 0;
    if fraction <= limit && !nothing_written {
        return Ok(());
    }
    let (reason, n) = counts.rejected_by_reason.iter().max_by_key(|(_, n)| **n).map(|(r, n)| (r.as_str(), *n)).unwrap_or(("?", 0));
    // A forced layout is not advised again: the records lack what it reads.
    let forced = config.schema.format.map(|f| format!("; the records lack fields that --format {} reads", f.name()));
    let hint = match reason {
        "missing_field" if forced.is_some() => forced.as_deref().unwrap_or_default(),
        "unknown_layout" | "missing_field" => "; check the records' fields, or force the layout with --format sharegpt|openai|alpaca",
        "unknown_role" => "; map unusual role names with --role-map NAME=user|assistant|system|tool",
        "too_long" => "; raise --max-len or use --truncation right",
        "template_error" => "; the chat template refused these conversations (see rejects.jsonl for its messages)",
        _ => "",
    };
    let example = counts.first_reject.get(reason).map(|e| format!("; first: {e}")).unwrap_or_default();
    Err(Error::TooManyRejects {
        detail: format!(
            "{} of {} rejected ({:.1}%{}); most common reason: {reason} ({}){example}{hint}",
            counts.rejected,
            plural(counts.read, "record"),
            fraction * 100.0,
            if nothing_written { ", nothing written".to_string() } else { format!(" > --max-reject-fraction {limit}") },
            plural(n, "record"),
        ),
    })
}

fn manifest(config: &PrepConfig, encoder: &Encoder, source: &Source, counts: &Counts, ids_descr: &str) -> serde_json::Value {
    let options = options_json(config);
    let inputs = source.infos();
    let fingerprint_input = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "tokenizer": encoder.tokenizer_info.sha256,
        "template": encoder.template_info.sha256,
        "options": options,
        "inputs": inputs.iter().map(|i| i.sha256.as_str()).collect::<Vec<_>>(),
        "shard": shard_json(config.shard),
    });
    serde_json::json!({
        "format_version": FORMAT_VERSION,
        "fastsft_version": env!("CARGO_PKG_VERSION"),
        "num_samples": counts.samples,
        "num_tokens": counts.tokens,
        "num_trained_tokens": counts.trained_tokens,
        "input_ids_dtype": if ids_descr == "<u2" { "uint16" } else { "uint32" },
        "tokenizer": encoder.tokenizer_info,
        "template": encoder.template_info,
        "options": options,
        "inputs": inputs,
        "shard": shard_json(config.shard),
        "plan": plan(config, encoder),
        "counts": counts,
        "fingerprint": sha256_hex(fingerprint_input.to_string().as_bytes()),
    })
}

fn fields_json(fields: &crate::schema::FieldNames) -> serde_json::Value {
    if fields.is_default() {
        return serde_json::Value::Null;
    }
    serde_json::json!({"messages": fields.messages, "role": fields.role, "content": fields.content, "system": fields.system})
}

fn shard_json(shard: Shard) -> serde_json::Value {
    if shard == Shard::WHOLE {
        serde_json::Value::Null
    } else {
        serde_json::json!({"index": shard.index, "count": shard.count})
    }
}

/// What a run will produce, known before reading any input: tokenizer, template, options, shard
/// and each input's path and size. A finished shard with the same plan is not prepared again.
fn plan(config: &PrepConfig, encoder: &Encoder) -> String {
    let inputs: Vec<serde_json::Value> = config
        .inputs
        .iter()
        .map(|p| serde_json::json!([p.display().to_string(), std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)]))
        .collect();
    let plan = serde_json::json!({
        "tokenizer": encoder.tokenizer_info.sha256,
        "template": encoder.template_info.sha256,
        "options": options_json(config),
        "shard": shard_json(config.shard),
        "inputs": inputs,
    });
    sha256_hex(plan.to_string().as_bytes())
}

/// For a sharded run: the summary of an already complete shard with the same plan, if any.
fn completed_shard(config: &PrepConfig, encoder: &Encoder) -> Result<Option<Summary>> {
    if config.shard == Shard::WHOLE || config.overwrite {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(config.output.join("manifest.json")) else { return Ok(None) };
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if manifest.get("plan").and_then(|p| p.as_str()) != Some(plan(config, encoder).as_str()) {
        return Err(Error::config(format!(
            "{} holds a shard prepared with other inputs or options; pass --overwrite to prepare it again",
            config.output.display()
        )));
    }
    let counts = manifest.get("counts").cloned().unwrap_or_default();
    let number = |key: &str| counts.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let rejected_by_reason = counts
        .get("rejected_by_reason")
        .and_then(|r| r.as_object())
        .map(|r| r.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    let counts = Counts {
        read: number("read"),
        written: number("written"),
        rejected: number("rejected"),
        samples: counts.get("samples").and_then(|v| v.as_u64()).unwrap_or(number("written")),
        split_records: number("split_records"),
        split_samples: number("split_samples"),
        rejected_by_reason,
        truncated: number("truncated"),
        tokens: number("tokens"),
        trained_tokens: number("trained_tokens"),
        first_reject: BTreeMap::new(),
    };
    Ok(Some(Summary { counts, seconds: 0.0, threads: 0, output: config.output.clone(), skipped: true }))
}

/// Every option that changes the bytes written (not threads or chunk size, which never do).
fn options_json(config: &PrepConfig) -> serde_json::Value {
    let role_map: BTreeMap<&String, &String> = config.schema.role_map.iter().collect();
    let e = &config.encode;
    serde_json::json!({
        "format": config.schema.format.map(|f| f.name()),
        "role_map": role_map,
        "fields": fields_json(&config.schema.fields),
        "template": config.template,
        "max_len": e.max_len,
        "truncation": match e.truncation { Truncation::Right => "right", Truncation::Drop => "drop" },
        "train_on": match e.train_on { TrainOn::All => "all", TrainOn::Last => "last" },
        "train_eot": e.train_eot,
        "train_on_prompt": e.train_on_prompt,
        "max_record_bytes": e.max_record_bytes,
        "reasoning": e.reasoning.name(),
        "split_turns": e.split_turns.name(),
        "history": e.history.name(),
        "template_args": e.template.kwargs.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<String, serde_json::Value>>(),
        "date": e.template.date,
    })
}

/// A one-line progress display on stderr, redrawn at most twice a second.
/// On a terminal the line is redrawn in place; in a log file a plain line is written every 10 s.
struct Progress {
    enabled: bool,
    terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Progress { enabled, terminal: std::io::stderr().is_terminal(), last: None }
    }

    fn line(counts: &Counts, started: Instant) -> String {
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "fastsft prep: {}, {}, {:.0} records/s, {:.2}M tokens/s",
            plural(counts.read, "record"),
            plural(counts.tokens, "token"),
            counts.read as f64 / seconds,
            counts.tokens as f64 / seconds / 1e6
        )
    }

    fn update(&mut self, counts: &Counts, started: Instant) {
        let interval = if self.terminal { 500 } else { 10_000 };
        if !self.enabled || self.last.is_some_and(|t| t.elapsed().as_millis() < interval) {
            return;
        }
        if self.last.is_none() && !self.terminal {
            self.last = Some(Instant::now());
            return;
        }
        self.last = Some(Instant::now());
        if self.terminal {
            eprint!("\r{}\x1b[K", Self::line(counts, started));
        } else {
            eprintln!("{}", Self::line(counts, started));
        }
    }

    fn finish(&mut self, counts: &Counts, started: Instant) {
        if self.enabled && self.terminal {
            eprintln!("\r{}\x1b[K", Self::line(counts, started));
        }
    }
}

/// `1 record`, `2 records`: counts in messages read as English.
fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
