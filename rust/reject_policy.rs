//! When a run's rejects fail it: `--max-reject-fraction`, or nothing written. The error says
//! how many, the most common reason with its first example and the option that would fix it, and
//! keeps `rejects.jsonl` beside the output for the user to read.

use crate::error::{Error, Result};
use crate::pipeline::{Counts, PrepConfig};
use crate::progress::plural;

/// A failed run keeps its `rejects.jsonl` beside the output (`OUT.rejects.jsonl`), so the user
/// can see why, and names it in the error.
pub fn keep_rejects(config: &PrepConfig, rejects_path: &std::path::Path, error: Error) -> Error {
    let Error::TooManyRejects { detail, counts, read } = error else { return error };
    let mut name = config.output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".rejects.jsonl");
    let kept = config.output.with_file_name(name);
    match std::fs::copy(rejects_path, &kept) {
        Ok(_) => Error::TooManyRejects { detail: format!("{detail}; every reject is listed in {}", kept.display()), counts, read },
        Err(e) => Error::TooManyRejects { detail: format!("{detail}; (the rejects could not be kept in {}: {e})", kept.display()), counts, read },
    }
}

/// A run where (nearly) everything is rejected is a mistake to report, not a dataset to keep.
pub fn check_rejects(config: &PrepConfig, counts: &Counts) -> Result<()> {
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
        counts: counts.rejected_by_reason.clone(),
        read: counts.read,
    })
}
