//! What a finished dataset says about itself (`manifest.json`): counts, tokenizer, template,
//! options, inputs, the fingerprint over all of them, and the plan a sharded run compares to
//! keep a finished shard instead of preparing it again.

use std::collections::BTreeMap;

use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::pipeline::{Counts, PrepConfig, Summary, FORMAT_VERSION};
use crate::source::{Shard, Source};
use crate::template::sha256_hex;

pub fn manifest(config: &PrepConfig, encoder: &Encoder, source: &Source, counts: &Counts, ids_descr: &str) -> serde_json::Value {
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
