//! What a finished dataset says about itself (`manifest.json`): counts, tokenizer, template,
//! options, inputs, the fingerprint over all of them, and the plan a sharded run compares to
//! keep a finished shard instead of preparing it again.

use std::collections::BTreeMap;
use std::path::Path;

use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::pipeline::{Counts, PrepConfig, Summary, FORMAT_VERSION};
use crate::source::{Shard, Source};
use crate::template::sha256_hex;
use crate::writer::write_file;

pub fn manifest(config: &PrepConfig, encoder: &Encoder, source: &Source, counts: &Counts, ids_descr: &str) -> serde_json::Value {
    let parts = ManifestParts {
        tokenizer: serde_json::to_value(&encoder.tokenizer_info).unwrap_or_default(),
        template: serde_json::to_value(&encoder.template_info).unwrap_or_default(),
        options: options_json(config),
        inputs: serde_json::to_value(source.infos()).unwrap_or_default(),
        shard: config.shard,
        input_ids_dtype: if ids_descr == "<u2" { "uint16" } else { "uint32" }.to_string(),
    };
    build(&parts, &plan_inputs(config), counts)
}

/// What a manifest is made of besides counts, as JSON values: the pipeline takes them from its
/// encoder and source, the assembly of a Ray run's units (`assemble.rs`) from the units' own
/// manifests. Both end in [`build`], so both write the same keys, fingerprint and plan.
pub struct ManifestParts {
    pub tokenizer: serde_json::Value,
    pub template: serde_json::Value,
    pub options: serde_json::Value,
    /// `[{"path", "size", "sha256"}, ...]`, the inputs named as the user gave them.
    pub inputs: serde_json::Value,
    pub shard: Shard,
    pub input_ids_dtype: String,
}

/// The manifest (without `array_sha256`, added once the arrays are finished). `plan_inputs`: the
/// inputs as given and their sizes, which the plan records.
pub fn build(parts: &ManifestParts, plan_inputs: &[(String, u64)], counts: &Counts) -> serde_json::Value {
    let input_sha256: Vec<serde_json::Value> =
        parts.inputs.as_array().map(|a| a.iter().map(|i| i["sha256"].clone()).collect()).unwrap_or_default();
    let fingerprint_input = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "tokenizer": parts.tokenizer["sha256"],
        "template": parts.template["sha256"],
        "options": parts.options,
        "inputs": input_sha256,
        "shard": shard_json(parts.shard),
    });
    serde_json::json!({
        "format_version": FORMAT_VERSION,
        "fastsft_version": env!("CARGO_PKG_VERSION"),
        "num_samples": counts.samples,
        "num_tokens": counts.tokens,
        "num_trained_tokens": counts.trained_tokens,
        "input_ids_dtype": parts.input_ids_dtype,
        "tokenizer": parts.tokenizer,
        "template": parts.template,
        "options": parts.options,
        "inputs": parts.inputs,
        "shard": shard_json(parts.shard),
        "plan": plan_of(parts, plan_inputs),
        "counts": counts,
        "fingerprint": sha256_hex(fingerprint_input.to_string().as_bytes()),
    })
}

/// Writes `manifest.json`, the last file of a dataset: the manifest with each array's checksum.
pub fn write_manifest(path: &Path, mut manifest: serde_json::Value, array_sha256: serde_json::Value) -> Result<()> {
    // sha256 of each array's data bytes (after the .npy header); `fastsft check` compares them
    manifest["array_sha256"] = array_sha256;
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::config(e.to_string()))?;
    write_file(path, format!("{text}\n").as_bytes())
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
    let parts = ManifestParts {
        tokenizer: serde_json::json!({"sha256": encoder.tokenizer_info.sha256}),
        template: serde_json::json!({"sha256": encoder.template_info.sha256}),
        options: options_json(config),
        inputs: serde_json::Value::Null,
        shard: config.shard,
        input_ids_dtype: String::new(),
    };
    plan_of(&parts, &plan_inputs(config))
}

/// Each input's path as given and its size (0 when it cannot be read): what the plan records.
fn plan_inputs(config: &PrepConfig) -> Vec<(String, u64)> {
    config.inputs.iter().map(|p| (p.display().to_string(), std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))).collect()
}

fn plan_of(parts: &ManifestParts, plan_inputs: &[(String, u64)]) -> String {
    let inputs: Vec<serde_json::Value> = plan_inputs.iter().map(|(path, size)| serde_json::json!([path, size])).collect();
    let plan = serde_json::json!({
        "tokenizer": parts.tokenizer["sha256"],
        "template": parts.template["sha256"],
        "options": parts.options,
        "shard": shard_json(parts.shard),
        "inputs": inputs,
    });
    sha256_hex(plan.to_string().as_bytes())
}

/// For a sharded run: the summary of an already complete shard with the same plan, if any.
pub fn completed_shard(config: &PrepConfig, encoder: &Encoder) -> Result<Option<Summary>> {
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
    config.options.to_json()
}
