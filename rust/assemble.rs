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
    manifest: serde_json::Value,
    has_data: bool,
}

struct Outputs {
    arrays: ArrayWriters,
    ids_size: usize,
    /// Tokens written so far: the next sample's start.
    tokens: i64,
}

/// Writes the dataset at `assembly.output`; returns its counts.
pub fn assemble(assembly: &Assembly) -> Result<Counts> {
    let started = std::time::Instant::now();
    let units = load_units(assembly)?;
    let first = units.iter().find(|u| u.has_data).map(|u| &u.manifest);
    let wide = first.is_some_and(|m| m["input_ids_dtype"] == "uint32");
    let out = OutputDir::create(&assembly.output, assembly.overwrite)?;
    let result = (|| -> Result<Counts> {
        // A run of one unit covering every input: its arrays are the dataset's, byte for byte.
        let whole = match units.as_slice() {
            [only] if only.has_data && only.spec.shares == 1 => Some(only),
            _ => None,
        };
        let mut outputs = match whole {
            Some(_) => None,
            None => Some(Outputs { arrays: ArrayWriters::create(&out, wide)?, ids_size: if wide { 4 } else { 2 }, tokens: 0 }),
        };
        let rejects_path = out.file("rejects.jsonl");
        let mut rejects = BufWriter::new(File::create(&rejects_path).map_err(|e| Error::io(&rejects_path, e))?);
        let mut counts = Counts::default();
        let mut inputs = Vec::new();
        for piece in pieces(&units) {
            if let Some(outputs) = outputs.as_mut() {
                copy_samples(&piece, outputs)?;
            }
            copy_rejects(&piece, assembly, &mut rejects, &mut counts)?;
            for unit in &piece {
                add_counts(&mut counts, &unit.manifest, unit.has_data);
            }
            inputs.extend(input_infos(&piece, assembly)?);
        }
        rejects.flush().map_err(|e| Error::io(&rejects_path, e))?;
        rejects.into_inner().map_err(|e| Error::io(&rejects_path, e.into_error()))?.sync_all().map_err(|e| Error::io(&rejects_path, e))?;
        let mut policy = PrepConfig::new(Vec::new(), PathBuf::new(), assembly.output.clone());
        policy.max_reject_fraction = assembly.max_reject_fraction;
        if let Err(error) = check_rejects(&policy, &counts) {
            return Err(keep_rejects(&policy, &rejects_path, error));
        }
        let Some(first) = first else {
            return Err(Error::config("no work unit wrote a dataset: every record of every input was rejected"));
        };
        let array_sha256 = match (outputs, whole) {
            (Some(outputs), _) => outputs.arrays.finish()?,
            (None, Some(unit)) => link_arrays(unit, &out)?,
            (None, None) => return Err(Error::config("assembly: no arrays written")),
        };
        let mut options = first["options"].clone();
        if let Some(template) = &assembly.template {
            options["template"] = serde_json::Value::String(template.clone());
        }
        let parts = ManifestParts {
            tokenizer: first["tokenizer"].clone(),
            template: first["template"].clone(),
            options,
            inputs: serde_json::Value::Array(inputs),
            shard: Shard::WHOLE,
            input_ids_dtype: if wide { "uint32" } else { "uint16" }.to_string(),
        };
        let plan_inputs: Vec<(String, u64)> = assembly.files.iter().cloned().zip(assembly.sizes.iter().copied()).collect();
        write_manifest(&out.file("manifest.json"), build(&parts, &plan_inputs, &counts), array_sha256)?;
        write_report(&out.file("report.json"), assembly, &counts, started.elapsed().as_secs_f64())?;
        Ok(counts)
    })();
    match result {
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

/// The arrays of a unit that is the whole dataset, in the output directory without a copy: hard
/// links (the work directory is beside the output, on the same filesystem; a copy where it is
/// not), with the unit's own checksums. The unit stays intact, for a re-run should this one fail.
/// Measured: 0.09 s of copying and hashing saved per 9.2M tokens (benches/RESULTS.md).
fn link_arrays(unit: &Unit, out: &OutputDir) -> Result<serde_json::Value> {
    let sums = &unit.manifest["array_sha256"];
    for name in ARRAY_FILES {
        if !sums[name].is_string() {
            return Err(Error::BadFile { path: unit.spec.directory.join("manifest.json"), detail: format!("no checksum for {name}") });
        }
        let (source, target) = (unit.spec.directory.join(name), out.file(name));
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| Error::io(&source, e))?;
        }
    }
    Ok(sums.clone())
}

fn load_units(assembly: &Assembly) -> Result<Vec<Unit<'_>>> {
    if assembly.files.len() != assembly.sizes.len() || assembly.files.len() != assembly.read_as.len() {
        return Err(Error::config("assembly: files, sizes and read_as differ in length"));
    }
    let mut units = Vec::with_capacity(assembly.units.len());
    for spec in &assembly.units {
        if spec.files.is_empty() || spec.files.iter().any(|&i| i >= assembly.files.len()) || spec.share >= spec.shares {
            return Err(Error::config(format!("{}: not a unit of these inputs", spec.directory.display())));
        }
        let unit = match &spec.rejected_only {
            Some(record) => Unit { spec, manifest: record.clone(), has_data: false },
            None => {
                let path = spec.directory.join("manifest.json");
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let manifest = serde_json::from_str(&text).map_err(|e| Error::BadFile { path: path.clone(), detail: e.to_string() })?;
                Unit { spec, manifest, has_data: true }
            }
        };
        units.push(unit);
    }
    let mut with_data = units.iter().filter(|u| u.has_data);
    if let Some(first) = with_data.next() {
        if first.manifest["format_version"] != FORMAT_VERSION {
            return Err(Error::BadFile {
                path: first.spec.directory.join("manifest.json"),
                detail: format!("format version {}, expected {FORMAT_VERSION}; remove the work directory and run again", first.manifest["format_version"]),
            });
        }
        for unit in with_data {
            for key in ["tokenizer", "template", "options", "input_ids_dtype", "format_version"] {
                if unit.manifest[key] != first.manifest[key] {
                    return Err(Error::BadFile {
                        path: unit.spec.directory.clone(),
                        detail: format!("its {key} differs from {}'s; remove the work directory and run again", first.spec.directory.display()),
                    });
                }
            }
        }
    }
    Ok(units)
}

/// Units grouped by what they cover (a run of whole files, or the shares of one file), in input
/// order, shares in order.
fn pieces<'a, 'b>(units: &'b [Unit<'a>]) -> Vec<Vec<&'b Unit<'a>>> {
    let mut grouped: BTreeMap<&[usize], Vec<&Unit>> = BTreeMap::new();
    for unit in units {
        grouped.entry(&unit.spec.files).or_default().push(unit);
    }
    grouped
        .into_values()
        .map(|mut group| {
            group.sort_by_key(|u| u.spec.share);
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

fn write_report(path: &Path, assembly: &Assembly, counts: &Counts, assemble_seconds: f64) -> Result<()> {
    let mut report = assembly.report.clone();
    let seconds = report.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0) + assemble_seconds;
    report.insert("seconds".into(), seconds.into());
    report.insert("assemble_seconds".into(), assemble_seconds.into());
    report.insert("records_per_second".into(), (counts.read as f64 / seconds.max(1e-9)).into());
    report.insert("tokens_per_second".into(), (counts.tokens as f64 / seconds.max(1e-9)).into());
    write_file(path, format!("{:#}\n", serde_json::Value::Object(report)).as_bytes())
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

    #[test]
    fn units_assemble_into_the_bytes_of_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = vec![dir.path().join("a.jsonl"), dir.path().join("b.jsonl"), dir.path().join("c.jsonl")];
        for (path, tag) in inputs.iter().zip(["a", "b", "c"]) {
            corpus(path, tag);
        }
        prep(&inputs, &dir.path().join("whole"), Shard::WHOLE);
        // Files 0-1 as one unit, file 2 as three round-robin shares.
        prep(&inputs[..2], &dir.path().join("u01"), Shard::WHOLE);
        let mut units = vec![spec(&dir.path().join("u01"), vec![0, 1], 0, 1)];
        for k in 0..3 {
            let unit = dir.path().join(format!("u2-{k}"));
            prep(&inputs[2..], &unit, Shard { index: k, count: 3 });
            units.push(spec(&unit, vec![2], k, 3));
        }
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        let assembly = Assembly {
            output: dir.path().join("assembled"),
            overwrite: false,
            max_reject_fraction: None,
            sizes: inputs.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect(),
            files: names.clone(),
            read_as: names,
            template: None,
            units,
            report: serde_json::Map::new(),
        };
        let counts = assemble(&assembly).unwrap();
        assert_eq!((counts.read, counts.rejected), (123, 3));
        for name in [ARRAY_FILES.as_slice(), &["rejects.jsonl", "manifest.json"]].concat() {
            let whole = std::fs::read(dir.path().join("whole").join(name)).unwrap();
            assert_eq!(std::fs::read(dir.path().join("assembled").join(name)).unwrap(), whole, "{name} differs");
        }
    }
}
