//! Assembles the work units of a Ray run (`fastsft prep --engine ray`) into one dataset: the
//! bytes `fastsft prep` of the same inputs writes on one machine, manifest included.
//!
//! Each unit is a complete dataset the pipeline wrote from a run of consecutive input files, or
//! from one round-robin share of one file (`--num-shards K --shard-index k` of that file alone),
//! so its ids, masks and rejects are the single-machine ones by construction. What changes here
//! is only where samples sit: they are put back in input order (file, then line; a record's
//! per-turn samples keep their order), `origin.npy` numbers files among all inputs, reject lines
//! name the inputs as the user gave them, and one manifest covers the whole, built by
//! `manifest::build` as the pipeline builds its own (same fingerprint and plan).
//!
//! Output goes through the pipeline's [`OutputDir`] (temporary name, renamed when complete), and
//! the run's reject bar is checked over all units, as `reject_policy` checks a local run. Memory
//! stays bounded: arrays are streamed, the shares of a file merged through one reader each.
//! This does not encode, and decides nothing about records.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{build, write_manifest, ManifestParts};
use crate::npy_reader::{copy_bytes, DataReader, I64Reader};
use crate::pipeline::{Counts, PrepConfig, FORMAT_VERSION};
use crate::reject_policy::{check_rejects, keep_rejects};
use crate::source::Shard;
use crate::writer::{write_file, ArrayWriters, OutputDir};

const COPY_BYTES: usize = 4 << 20;
const ARRAY_FILES: [&str; 5] = ["input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy"];

/// What the driver of a Ray run hands over (JSON, `fastsft/ray_assemble.py`).
#[derive(Debug, serde::Deserialize)]
pub struct Assembly {
    pub output: PathBuf,
    pub overwrite: bool,
    pub max_reject_fraction: Option<f64>,
    /// The inputs as the user named them (the manifest and rejects name them so) and their sizes
    /// (the plan records them; an object's size for an object-store input).
    pub files: Vec<String>,
    pub sizes: Vec<u64>,
    /// The inputs as the units read them (absolute paths, or local copies of objects).
    pub read_as: Vec<String>,
    /// The template as the user named it (the units were given an absolute path).
    pub template: Option<String>,
    pub units: Vec<UnitSpec>,
    /// Written as `report.json`, with the assembly's seconds added.
    pub report: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, serde::Deserialize)]
pub struct UnitSpec {
    pub directory: PathBuf,
    /// Global indices of the unit's input files.
    pub files: Vec<usize>,
    pub share: u64,
    pub shares: u64,
    /// A unit whose every record was rejected holds only `rejects.jsonl`; these are its counts
    /// and inputs (`{"read", "rejected", "rejected_by_reason", "inputs"}`).
    pub rejected_only: Option<serde_json::Value>,
    /// The paths the unit read its files as, when not `Assembly::read_as` (local copies of objects).
    #[serde(default)]
    pub read_as: Option<Vec<String>>,
}

struct Unit<'a> {
    spec: &'a UnitSpec,
    /// The unit's manifest, or its `rejected_only` record.
    manifest: &'a serde_json::Value,
    has_data: bool,
}

struct Outputs {
    arrays: ArrayWriters,
    ids_size: usize,
    /// Tokens written so far: the next sample's start.
    tokens: i64,
}

/// Writes the dataset at `assembly.output` from units that are all finished; returns its counts.
pub fn assemble(assembly: Assembly) -> Result<Counts> {
    let report = assembly.report.clone();
    let mut assembler = Assembler::new(assembly)?;
    for index in 0..assembler.assembly.units.len() {
        assembler.add(index, None)?;
    }
    assembler.finish(report)
}

/// The assembly of a run whose units finish one by one: each unit is added as soon as it is
/// finished ([`Assembler::add`]), and the samples of every piece (a run of whole files, or the
/// shares of one file) whose units are all in, and of all pieces before it, are written at once,
/// while the cluster still encodes the later units. [`Assembler::finish`] writes the manifest
/// and puts the dataset in place; dropped unfinished, it leaves nothing at the output.
pub struct Assembler {
    assembly: Assembly,
    out: Option<OutputDir>,
    /// Per unit: its manifest (or `rejected_only` record) and whether it holds arrays, once added.
    added: Vec<Option<(serde_json::Value, bool)>>,
    /// Unit indices by piece, in input order, shares in order.
    pieces: Vec<Vec<usize>>,
    /// Pieces written so far (a prefix of `pieces`).
    written: usize,
    /// The one unit of a run of one unit over whole files: linked at the end, never copied.
    whole: bool,
    /// The first unit with arrays: every other must agree with its tokenizer, template, options.
    first: Option<usize>,
    outputs: Option<Outputs>,
    rejects: BufWriter<File>,
    rejects_path: PathBuf,
    counts: Counts,
    inputs: Vec<serde_json::Value>,
    /// Time spent assembling (in `add` and `finish`), for the report.
    seconds: f64,
}

impl Assembler {
    pub fn new(assembly: Assembly) -> Result<Self> {
        let started = std::time::Instant::now();
        check_plan(&assembly)?;
        let pieces = pieces(&assembly.units);
        let whole = matches!(assembly.units.as_slice(), [only] if only.shares == 1);
        let out = OutputDir::create(&assembly.output, assembly.overwrite)?;
        let rejects_path = out.file("rejects.jsonl");
        let rejects = match File::create(&rejects_path) {
            Ok(file) => BufWriter::new(file),
            Err(e) => {
                out.abandon();
                return Err(Error::io(&rejects_path, e));
            }
        };
        Ok(Assembler {
            added: assembly.units.iter().map(|_| None).collect(),
            assembly,
            out: Some(out),
            pieces,
            written: 0,
            whole,
            first: None,
            outputs: None,
            rejects,
            rejects_path,
            counts: Counts::default(),
            inputs: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Unit `index` is finished: `rejected_only` as its `UnitSpec` field (given here when the
    /// unit's run decided it, else the spec's). Writes every piece now complete in order.
    pub fn add(&mut self, index: usize, rejected_only: Option<serde_json::Value>) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.add_unit(index, rejected_only);
        self.seconds += started.elapsed().as_secs_f64();
        result
    }

    fn add_unit(&mut self, index: usize, rejected_only: Option<serde_json::Value>) -> Result<()> {
        let Some(spec) = self.assembly.units.get(index) else {
            return Err(Error::config(format!("assembly: no unit {index}")));
        };
        if self.added[index].is_some() {
            return Err(Error::config(format!("assembly: {} added twice", spec.directory.display())));
        }
        let added = match rejected_only.or_else(|| spec.rejected_only.clone()) {
            Some(record) => (record, false),
            None => {
                let path = spec.directory.join("manifest.json");
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let manifest = serde_json::from_str(&text).map_err(|e| Error::BadFile { path: path.clone(), detail: e.to_string() })?;
                (manifest, true)
            }
        };
        if added.1 {
            self.check_agrees(index, &added.0)?;
        }
        self.added[index] = Some(added);
        let before = self.written;
        while self.written < self.pieces.len() && self.pieces[self.written].iter().all(|&u| self.added[u].is_some()) {
            self.write_piece(self.written)?;
            self.written += 1;
        }
        // The driver would only wait for the next unit: put what it wrote on disk now, so that
        // `finish`, after the last unit, syncs only the last pieces (0.06 s of fsync per 37M tokens, benches/RESULTS.md).
        match self.outputs.as_mut() {
            Some(outputs) if self.written > before && self.written < self.pieces.len() => outputs.arrays.sync_so_far(),
            _ => Ok(()),
        }
    }

    /// A unit's manifest against the first unit's: same format, tokenizer, template, options.
    fn check_agrees(&mut self, index: usize, manifest: &serde_json::Value) -> Result<()> {
        let spec = &self.assembly.units[index];
        let Some(first) = self.first.and_then(|f| self.added[f].as_ref().map(|(m, _)| (f, m))) else {
            if manifest["format_version"] != FORMAT_VERSION {
                return Err(Error::BadFile {
                    path: spec.directory.join("manifest.json"),
                    detail: format!("format version {}, expected {FORMAT_VERSION}; remove the work directory and run again", manifest["format_version"]),
                });
            }
            self.first = Some(index);
            return Ok(());
        };
        for key in ["tokenizer", "template", "options", "input_ids_dtype", "format_version"] {
            if manifest[key] != first.1[key] {
                return Err(Error::BadFile {
                    path: spec.directory.clone(),
                    detail: format!("its {key} differs from {}'s; remove the work directory and run again", self.assembly.units[first.0].directory.display()),
                });
            }
        }
        Ok(())
    }

    fn write_piece(&mut self, piece: usize) -> Result<()> {
        let units: Vec<Unit> = self.pieces[piece]
            .iter()
            .filter_map(|&u| self.added[u].as_ref().map(|(manifest, has_data)| Unit { spec: &self.assembly.units[u], manifest, has_data: *has_data }))
            .collect();
        let units: Vec<&Unit> = units.iter().collect();
        if !self.whole && self.outputs.is_none() {
            if let Some(first) = units.iter().find(|u| u.has_data) {
                let wide = first.manifest["input_ids_dtype"] == "uint32";
                let Some(out) = self.out.as_ref() else { return Err(Error::config("assembly: already finished")) };
                self.outputs = Some(Outputs { arrays: ArrayWriters::create(out, wide)?, ids_size: if wide { 4 } else { 2 }, tokens: 0 });
            }
        }
        if let Some(outputs) = self.outputs.as_mut() {
            copy_samples(&units, outputs)?;
        }
        copy_rejects(&units, &self.assembly, &mut self.rejects, &mut self.counts)?;
        for unit in &units {
            add_counts(&mut self.counts, unit.manifest, unit.has_data);
        }
        self.inputs.extend(input_infos(&units, &self.assembly)?);
        Ok(())
    }

    /// Every unit added: checks the reject bar, writes the manifest and `report` (as
    /// `report.json`, the assembly's seconds added) and puts the dataset in place.
    pub fn finish(mut self, report: serde_json::Map<String, serde_json::Value>) -> Result<Counts> {
        let started = std::time::Instant::now();
        let Some(out) = self.out.take() else { return Err(Error::config("assembly: already finished")) };
        match self.write_rest(&out, report, started) {
            Ok(counts) => {
                out.commit()?;
                Ok(counts)
            }
            Err(error) => {
                out.abandon();
                Err(error)
            }
        }
    }

    fn write_rest(&mut self, out: &OutputDir, mut report: serde_json::Map<String, serde_json::Value>, started: std::time::Instant) -> Result<Counts> {
        if let Some(missing) = self.added.iter().position(Option::is_none) {
            return Err(Error::config(format!("assembly: unit {} was never added", self.assembly.units[missing].directory.display())));
        }
        let rejects_path = &self.rejects_path;
        self.rejects.flush().map_err(|e| Error::io(rejects_path, e))?;
        self.rejects.get_ref().sync_all().map_err(|e| Error::io(rejects_path, e))?;
        let mut policy = PrepConfig::new(Vec::new(), PathBuf::new(), self.assembly.output.clone());
        policy.max_reject_fraction = self.assembly.max_reject_fraction;
        if let Err(error) = check_rejects(&policy, &self.counts) {
            return Err(keep_rejects(&policy, rejects_path, error));
        }
        let Some((first, _)) = self.first.and_then(|f| self.added[f].as_ref()) else {
            return Err(Error::config("no work unit wrote a dataset: every record of every input was rejected"));
        };
        let array_sha256 = match self.outputs.take() {
            Some(outputs) => outputs.arrays.finish()?,
            None if self.whole => link_arrays(&self.assembly.units[0], first, out)?,
            None => return Err(Error::config("assembly: no arrays written")),
        };
        let wide = first["input_ids_dtype"] == "uint32";
        let mut options = first["options"].clone();
        if let Some(template) = &self.assembly.template {
            options["template"] = serde_json::Value::String(template.clone());
        }
        let parts = ManifestParts {
            tokenizer: first["tokenizer"].clone(),
            template: first["template"].clone(),
            options,
            inputs: serde_json::Value::Array(std::mem::take(&mut self.inputs)),
            shard: Shard::WHOLE,
            input_ids_dtype: if wide { "uint32" } else { "uint16" }.to_string(),
        };
        let plan_inputs: Vec<(String, u64)> = self.assembly.files.iter().cloned().zip(self.assembly.sizes.iter().copied()).collect();
        write_manifest(&out.file("manifest.json"), build(&parts, &plan_inputs, &self.counts), array_sha256)?;
        let assemble_seconds = self.seconds + started.elapsed().as_secs_f64();
        let seconds = report.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0) + assemble_seconds;
        report.insert("seconds".into(), seconds.into());
        report.insert("assemble_seconds".into(), assemble_seconds.into());
        report.insert("records_per_second".into(), (self.counts.read as f64 / seconds.max(1e-9)).into());
        report.insert("tokens_per_second".into(), (self.counts.tokens as f64 / seconds.max(1e-9)).into());
        write_file(&out.file("report.json"), format!("{:#}\n", serde_json::Value::Object(report)).as_bytes())?;
        Ok(std::mem::take(&mut self.counts))
    }
}

impl Drop for Assembler {
    /// Dropped before `finish` (a unit failed, the driver stopped): nothing at the output.
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            out.abandon();
        }
    }
}

/// The arrays of a unit that is the whole dataset, in the output directory without a copy: hard
/// links (the work directory is beside the output, on the same filesystem; a copy where it is
/// not), with the unit's own checksums. The unit stays intact, for a re-run should this one fail.
/// Measured: 0.09 s of copying and hashing saved per 9.2M tokens (benches/RESULTS.md).
fn link_arrays(unit: &UnitSpec, manifest: &serde_json::Value, out: &OutputDir) -> Result<serde_json::Value> {
    let sums = &manifest["array_sha256"];
    for name in ARRAY_FILES {
        if !sums[name].is_string() {
            return Err(Error::BadFile { path: unit.directory.join("manifest.json"), detail: format!("no checksum for {name}") });
        }
        let (source, target) = (unit.directory.join(name), out.file(name));
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| Error::io(&source, e))?;
        }
    }
    Ok(sums.clone())
}

fn check_plan(assembly: &Assembly) -> Result<()> {
    if assembly.files.len() != assembly.sizes.len() || assembly.files.len() != assembly.read_as.len() {
        return Err(Error::config("assembly: files, sizes and read_as differ in length"));
    }
    for spec in &assembly.units {
        if spec.files.is_empty() || spec.files.iter().any(|&i| i >= assembly.files.len()) || spec.share >= spec.shares {
            return Err(Error::config(format!("{}: not a unit of these inputs", spec.directory.display())));
        }
    }
    Ok(())
}

/// Unit indices grouped by what they cover (a run of whole files, or the shares of one file), in
/// input order, shares in order.
fn pieces(units: &[UnitSpec]) -> Vec<Vec<usize>> {
    let mut grouped: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    for (index, unit) in units.iter().enumerate() {
        grouped.entry(&unit.files).or_default().push(index);
    }
    grouped
        .into_values()
        .map(|mut group| {
            group.sort_by_key(|&u| units[u].share);
            group
        })
        .collect()
}

fn add_counts(counts: &mut Counts, record: &serde_json::Value, has_data: bool) {
    let source = if has_data { &record["counts"] } else { record };
    let number = |key: &str| source[key].as_u64().unwrap_or(0);
    counts.read += number("read");
    counts.written += number("written");
    counts.rejected += number("rejected");
    counts.samples += number("samples");
    counts.split_records += number("split_records");
    counts.split_samples += number("split_samples");
    counts.truncated += number("truncated");
    counts.tokens += number("tokens");
    counts.trained_tokens += number("trained_tokens");
    if let Some(reasons) = source["rejected_by_reason"].as_object() {
        for (reason, n) in reasons {
            *counts.rejected_by_reason.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
}

/// The manifest's entries for a piece's inputs (size, sha256), named as the user gave them.
fn input_infos(piece: &[&Unit], assembly: &Assembly) -> Result<Vec<serde_json::Value>> {
    let unit = piece[0];
    let infos = unit.manifest["inputs"].as_array().cloned().unwrap_or_default();
    if infos.len() != unit.spec.files.len() {
        return Err(Error::BadFile {
            path: unit.spec.directory.clone(),
            detail: format!("lists {} inputs, expected {}", infos.len(), unit.spec.files.len()),
        });
    }
    Ok(infos
        .into_iter()
        .zip(&unit.spec.files)
        .map(|(mut info, &i)| {
            info["path"] = serde_json::Value::String(assembly.files[i].clone());
            info
        })
        .collect())
}

/// Reject lines in input order (the shares of a file merged by line), each naming its input as
/// the user gave it; counts the first reject of each reason for the reject bar's message.
fn copy_rejects(piece: &[&Unit], assembly: &Assembly, out: &mut BufWriter<File>, counts: &mut Counts) -> Result<()> {
    let mut entries: Vec<(u64, serde_json::Value)> = Vec::new();
    for unit in piece {
        let path = unit.spec.directory.join("rejects.jsonl");
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| Error::io(&path, e))?;
            let mut reject: serde_json::Value = serde_json::from_str(&line).map_err(|e| Error::BadFile { path: path.clone(), detail: e.to_string() })?;
            let read_as = |k: usize, i: usize| unit.spec.read_as.as_ref().and_then(|r| r.get(k)).unwrap_or(&assembly.read_as[i]);
            let Some(index) = unit.spec.files.iter().enumerate().find(|&(k, &i)| reject["file"] == read_as(k, i).as_str()).map(|(_, &i)| i) else {
                return Err(Error::BadFile { path, detail: "a reject line names none of the unit's inputs".into() });
            };
            reject["file"] = serde_json::Value::String(assembly.files[index].clone());
            entries.push((reject["line"].as_u64().unwrap_or(0), reject));
        }
    }
    if piece.len() > 1 {
        entries.sort_by_key(|(line, _)| *line); // stable: a record's lines keep their order
    }
    let out_path = PathBuf::from("rejects.jsonl");
    for (line, reject) in entries {
        let reason = reject["reason"].as_str().unwrap_or("?").to_string();
        counts.first_reject.entry(reason).or_insert_with(|| {
            format!("{}:{line}: {}", reject["file"].as_str().unwrap_or(""), reject["detail"].as_str().unwrap_or(""))
        });
        writeln!(out, "{reject}").map_err(|e| Error::io(&out_path, e))?;
    }
    Ok(())
}

fn copy_samples(piece: &[&Unit], out: &mut Outputs) -> Result<()> {
    let parts: Vec<&Unit> = piece.iter().copied().filter(|u| u.has_data && u.manifest["num_samples"].as_u64() != Some(0)).collect();
    let first_file = piece[0].spec.files[0] as i64;
    match parts.as_slice() {
        [] => Ok(()),
        [whole] => copy_whole(&whole.spec.directory, first_file, out),
        _ => merge_shares(&parts, first_file, out),
    }
}

/// A unit of whole files: its arrays as they are, offsets moved past the tokens so far and
/// files numbered among all inputs.
fn copy_whole(directory: &Path, first_file: i64, out: &mut Outputs) -> Result<()> {
    let ids_size = out.ids_size;
    copy_bytes(&directory.join("input_ids.npy"), ids_size, &mut out.arrays.ids)?;
    copy_bytes(&directory.join("loss_mask.npy"), 1, &mut out.arrays.mask)?;
    copy_bytes(&directory.join("turns.npy"), 8, &mut out.arrays.turns)?;
    let base = out.tokens;
    let mut last = 0;
    let mut offsets = I64Reader::open(&directory.join("offsets.npy"))?;
    offsets.next()?; // the leading 0
    let mut batch = Vec::with_capacity(COPY_BYTES / 8);
    while let Some(offset) = offsets.next()? {
        last = offset;
        batch.push(base + offset);
        if batch.len() == batch.capacity() {
            out.arrays.offsets.write_i64(&batch)?;
            batch.clear();
        }
    }
    out.arrays.offsets.write_i64(&batch)?;
    out.tokens = base + last;
    let mut origin = I64Reader::open(&directory.join("origin.npy"))?;
    batch.clear();
    let mut column = 0;
    while let Some(value) = origin.next()? {
        batch.push(if column == 0 { value + first_file } else { value });
        column ^= 1;
        if batch.len() == batch.capacity() {
            out.arrays.origin.write_i64(&batch)?;
            batch.clear();
        }
    }
    out.arrays.origin.write_i64(&batch)
}

/// The shares of one file, merged by line (share k holds every K-th record, so their lines
/// interleave); a record's per-turn samples are consecutive in its share and stay in order.
fn merge_shares(parts: &[&Unit], first_file: i64, out: &mut Outputs) -> Result<()> {
    let mut cursors = parts.iter().map(|u| ShareCursor::open(&u.spec.directory, out.ids_size)).collect::<Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::new();
    for (k, cursor) in cursors.iter_mut().enumerate() {
        if let Some(line) = cursor.advance()? {
            heap.push(Reverse((line, k)));
        }
    }
    let mut buffer = Vec::new();
    while let Some(Reverse((_, k))) = heap.pop() {
        let cursor = &mut cursors[k];
        let (file, line, turn, tokens) = cursor.current;
        buffer.resize(tokens * out.ids_size, 0);
        cursor.ids.read(&mut buffer)?;
        out.arrays.ids.write_bytes(&buffer)?;
        buffer.resize(tokens, 0);
        cursor.mask.read(&mut buffer)?;
        out.arrays.mask.write_bytes(&buffer)?;
        out.tokens += tokens as i64;
        out.arrays.offsets.write_i64(&[out.tokens])?;
        out.arrays.origin.write_i64(&[file + first_file, line])?;
        out.arrays.turns.write_i64(&[turn])?;
        if let Some(line) = cursor.advance()? {
            heap.push(Reverse((line, k)));
        }
    }
    Ok(())
}

/// Reads one unit's samples in order, one at a time.
struct ShareCursor {
    offsets: I64Reader,
    origin: I64Reader,
    turns: I64Reader,
    ids: DataReader,
    mask: DataReader,
    end: i64,
    /// The sample under the cursor: (file, line, turn, tokens).
    current: (i64, i64, i64, usize),
}

impl ShareCursor {
    fn open(directory: &Path, ids_size: usize) -> Result<Self> {
        let mut offsets = I64Reader::open(&directory.join("offsets.npy"))?;
        let end = offsets.next()?.unwrap_or(0);
        Ok(ShareCursor {
            offsets,
            origin: I64Reader::open(&directory.join("origin.npy"))?,
            turns: I64Reader::open(&directory.join("turns.npy"))?,
            ids: DataReader::open(&directory.join("input_ids.npy"), ids_size)?,
            mask: DataReader::open(&directory.join("loss_mask.npy"), 1)?,
            end,
            current: (0, 0, 0, 0),
        })
    }

    /// Moves to the next sample; returns its line, None at the end.
    fn advance(&mut self) -> Result<Option<i64>> {
        let Some(end) = self.offsets.next()? else { return Ok(None) };
        let (Some(file), Some(line), Some(turn)) = (self.origin.next()?, self.origin.next()?, self.turns.next()?) else {
            return Err(Error::BadFile { path: self.origin.data.path.clone(), detail: "fewer rows than offsets.npy has samples".into() });
        };
        let tokens = usize::try_from(end - self.end).map_err(|_| Error::BadFile { path: self.offsets.data.path.clone(), detail: "offsets decrease".into() })?;
        self.end = end;
        self.current = (file, line, turn, tokens);
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::run;

    const QWEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tokenizers/qwen2.5");

    fn prep(inputs: &[PathBuf], output: &Path, shard: Shard) -> crate::pipeline::Summary {
        let mut config = PrepConfig::new(inputs.to_vec(), PathBuf::from(QWEN), output.to_path_buf());
        config.shard = shard;
        config.threads = 1;
        run(&config, &|| false).unwrap()
    }

    fn spec(directory: &Path, files: Vec<usize>, share: u64, shares: u64) -> UnitSpec {
        UnitSpec { directory: directory.to_path_buf(), files, share, shares, rejected_only: None, read_as: None }
    }

    /// A file of 40 records of varied lengths and one malformed line (a reject).
    fn corpus(path: &Path, tag: &str) {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{tag} question {i}\"}}, {{\"role\": \"assistant\", \"content\": \"answer {}\"}}]}}\n",
                "x".repeat(i % 7)
            ));
            if i == 17 {
                text.push_str("{\"messages\": [\n");
            }
        }
        std::fs::write(path, text).unwrap();
    }

    /// Three files prepared whole, then as units: files 0-1 as one unit, file 2 as three
    /// round-robin shares. Returns the directory of the whole run and the assembly of the units.
    fn whole_and_units(dir: &Path) -> (PathBuf, Assembly) {
        std::fs::create_dir_all(dir).unwrap();
        let inputs = vec![dir.join("a.jsonl"), dir.join("b.jsonl"), dir.join("c.jsonl")];
        for (path, tag) in inputs.iter().zip(["a", "b", "c"]) {
            corpus(path, tag);
        }
        prep(&inputs, &dir.join("whole"), Shard::WHOLE);
        prep(&inputs[..2], &dir.join("u01"), Shard::WHOLE);
        let mut units = vec![spec(&dir.join("u01"), vec![0, 1], 0, 1)];
        for k in 0..3 {
            let unit = dir.join(format!("u2-{k}"));
            prep(&inputs[2..], &unit, Shard { index: k, count: 3 });
            units.push(spec(&unit, vec![2], k, 3));
        }
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        let assembly = Assembly {
            output: dir.join("assembled"),
            overwrite: false,
            max_reject_fraction: None,
            sizes: inputs.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect(),
            files: names.clone(),
            read_as: names,
            template: None,
            units,
            report: serde_json::Map::new(),
        };
        (dir.join("whole"), assembly)
    }

    fn assert_same_bytes(whole: &Path, assembled: &Path) {
        for name in [ARRAY_FILES.as_slice(), &["rejects.jsonl", "manifest.json"]].concat() {
            let expected = std::fs::read(whole.join(name)).unwrap();
            assert_eq!(std::fs::read(assembled.join(name)).unwrap(), expected, "{name} differs");
        }
    }

    #[test]
    fn units_assemble_into_the_bytes_of_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let (whole, assembly) = whole_and_units(dir.path());
        let counts = assemble(assembly).unwrap();
        assert_eq!((counts.read, counts.rejected), (123, 3));
        assert_same_bytes(&whole, &dir.path().join("assembled"));
    }

    #[test]
    fn units_added_as_they_finish_in_any_order_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (whole, assembly) = whole_and_units(dir.path());
        let output = assembly.output.clone();
        let mut assembler = Assembler::new(assembly).unwrap();
        // Shares first, then the unit before them: nothing can be written until it is in.
        for index in [3, 1, 2] {
            assembler.add(index, None).unwrap();
            assert_eq!(assembler.written, 0);
        }
        assembler.add(0, None).unwrap();
        assert_eq!(assembler.written, 2, "both pieces written once the first unit is in");
        assert!(assembler.add(0, None).is_err(), "a unit added twice is refused");
        assembler.finish(serde_json::Map::new()).unwrap();
        assert_same_bytes(&whole, &output);

        // Dropped before `finish` (a unit failed): no output, no temporary directory.
        let (_, mut again) = whole_and_units(&dir.path().join("again"));
        again.output = dir.path().join("dropped");
        let mut assembler = Assembler::new(again).unwrap();
        assembler.add(0, None).unwrap();
        drop(assembler);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!left.iter().any(|n| n.contains("dropped")), "{left:?}");
    }
}
