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

use crate::encode::{EncodeOptions, Encoded, Encoder};
use crate::encoder_reuse;
use crate::options::EncoderOptions;
use crate::error::{Error, Result};
use crate::schema::{Reject, SchemaOptions};
use crate::source::{RawRecord, Shard, Source};
use crate::manifest::{completed_shard, manifest, write_manifest};
use crate::progress::Progress;
use crate::reject_policy::{check_rejects, keep_rejects};
use crate::writer::{write_file, ArrayWriters, OutputDir};

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
    /// The options as given, by their Python names: what the manifest records.
    pub options: EncoderOptions,
    /// False only for a Ray work unit of several, whose arrays the assembly copies and hashes
    /// again: its manifest's `array_sha256` entries are then null.
    pub array_checksums: bool,
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
            options: EncoderOptions::default(),
            array_checksums: true,
        }
    }
}

/// 2,048 records: large enough that a chunk keeps both cores busy between the serial
/// write/read steps, small enough to stay a few MB on typical chat corpora.
pub const DEFAULT_CHUNK_SIZE: usize = 2048;
const CHUNK_BYTES: usize = 64 << 20;
/// At most this many records per rayon task. Rayon splits a parallel iterator only while it
/// is being stolen from, so without a cap a worker can be left running a quarter of a chunk
/// alone while the other waits at the chunk's end; at ~0.1 ms a record, 8 records keep that
/// wait under a millisecond for a negligible cost per task.
const RECORDS_PER_TASK: usize = 8;

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
    arrays: ArrayWriters,
    rejects: BufWriter<std::fs::File>,
    rejects_path: PathBuf,
}

pub fn run(config: &PrepConfig, should_stop: &dyn Fn() -> bool) -> Result<Summary> {
    let started = Instant::now();
    tokenizers::utils::parallelism::set_parallelism(false);
    let encoder = encoder_reuse::load(&config.tokenizer, config.template.as_deref(), config.schema.clone(), config.encode.clone())?;
    let encoder = &*encoder;
    let mut source = Source::new(config.inputs.clone())?.with_shard(config.shard);
    if let Some(done) = completed_shard(config, encoder)? {
        return Ok(done);
    }
    let threads = if config.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.threads };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastsft-{i}"))
        .build()
        .map_err(|e| Error::config(format!("cannot start {threads} threads: {e}")))?;
    let out = OutputDir::create(&config.output, config.overwrite)?;
    let result = write_dataset(config, encoder, &mut source, &pool, &out, should_stop, started, threads);
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
    let ids_descr = if wide { "<u4" } else { "<u2" };
    let rejects_path = out.file("rejects.jsonl");
    let rejects_file = std::fs::File::create(&rejects_path).map_err(|e| Error::io(&rejects_path, e))?;
    let arrays = ArrayWriters::create(out, wide)?;
    let arrays = if config.array_checksums { arrays } else { arrays.without_checksums() };
    let mut files = DatasetFiles { arrays, rejects: BufWriter::new(rejects_file), rejects_path };
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
                || {
                    current
                        .par_iter()
                        .with_max_len(RECORDS_PER_TASK)
                        .map(|record| encoder.encode_record(&record.bytes))
                        .collect::<Vec<Outcome>>()
                },
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

    let DatasetFiles { arrays, mut rejects, rejects_path } = files;
    rejects.flush().map_err(|e| Error::io(&rejects_path, e))?;
    rejects.into_inner().map_err(|e| Error::io(&rejects_path, e.into_error()))?.sync_all().map_err(|e| Error::io(&rejects_path, e))?;
    if let Err(error) = check_rejects(config, &counts) {
        return Err(keep_rejects(config, &rejects_path, error));
    }
    let array_sha256 = arrays.finish()?;

    if should_stop() {
        return Err(Error::Interrupted);
    }
    write_manifest(&out.file("manifest.json"), manifest(config, encoder, source, &counts, ids_descr), array_sha256)?;
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
                    files.arrays.ids.write_ids(&encoded.ids)?;
                    files.arrays.mask.write_u8(&encoded.mask)?;
                    files.arrays.offsets.write_i64(&[offset])?;
                    files.arrays.origin.write_i64(&[record.file as i64, record.line as i64])?;
                    files.arrays.turns.write_i64(&[encoded.turn.map_or(-1, i64::from)])?;
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
