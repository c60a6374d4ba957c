//! The options of a run as the Python API defines them (`python/fastsft/config.py`, the one
//! definition), read by name from the JSON the bindings pass, and turned into the core's
//! [`EncodeOptions`], [`SchemaOptions`] and [`PrepConfig`].
//!
//! Field names here are those of the dataclasses, so an option the two sides disagree on is an
//! error at the first call (`deny_unknown_fields`), and `tests/test_options_schema.py` compares
//! [`EncoderOptions::default`] with the dataclass defaults. The manifest's `options` are
//! [`EncoderOptions`] serialized: the same names as the CLI flags and keyword arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::encode::{EncodeOptions, TrainOn, Truncation, DEFAULT_MAX_RECORD_BYTES};
use crate::error::{Error, Result};
use crate::pipeline::{PrepConfig, DEFAULT_CHUNK_SIZE};
use crate::schema::{FieldNames, Format, SchemaOptions};
use crate::source::Shard;
use crate::template::{HistoryTurns, ReasoningPolicy, SplitTurns, TemplateOptions};

/// What turns a record into samples: every option that changes the bytes written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderOptions {
    pub format: Option<String>,
    pub template: Option<String>,
    pub role_map: Option<BTreeMap<String, String>>,
    pub messages_field: Option<String>,
    pub role_field: Option<String>,
    pub content_field: Option<String>,
    pub system_field: Option<String>,
    pub max_len: Option<usize>,
    pub truncation: String,
    pub train_on: String,
    pub train_eot: bool,
    pub train_on_prompt: bool,
    pub reasoning: String,
    pub split_turns: String,
    pub history: String,
    /// In the caller's key order; numbers exact (big integers as [`crate::exact_json`] marks them).
    pub template_args: Option<serde_json::Map<String, serde_json::Value>>,
    pub date: Option<String>,
    pub max_record_bytes: Option<usize>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            format: None,
            template: None,
            role_map: None,
            messages_field: None,
            role_field: None,
            content_field: None,
            system_field: None,
            max_len: None,
            truncation: "right".into(),
            train_on: "all".into(),
            train_eot: true,
            train_on_prompt: false,
            reasoning: "train".into(),
            split_turns: "auto".into(),
            history: "template".into(),
            template_args: None,
            date: None,
            max_record_bytes: None,
        }
    }
}

/// How a run goes, never what it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunOptions {
    pub threads: usize,
    pub chunk_size: Option<usize>,
    pub overwrite: bool,
    pub strict: bool,
    pub max_reject_fraction: Option<f64>,
    pub progress: bool,
    pub num_shards: Option<u64>,
    pub shard_index: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: 0,
            chunk_size: None,
            overwrite: false,
            strict: false,
            max_reject_fraction: None,
            progress: true,
            num_shards: None,
            shard_index: None,
        }
    }
}

/// `{"encoder": {...}, "run": {...}}`, as `fastsft.prep` sends them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepOptions {
    pub encoder: EncoderOptions,
    pub run: RunOptions,
}

/// Reads options JSON exactly (integers beyond 64 bits in template arguments stay exact).
pub fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    let value = crate::exact_json::parse_str(text).map_err(|e| Error::config(format!("options are not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| Error::config(format!("options: {e}")))
}

fn truncation(name: &str) -> Option<Truncation> {
    match name {
        "right" => Some(Truncation::Right),
        "drop" => Some(Truncation::Drop),
        _ => None,
    }
}

fn train_on(name: &str) -> Option<TrainOn> {
    match name {
        "all" => Some(TrainOn::All),
        "last" => Some(TrainOn::Last),
        _ => None,
    }
}

fn choice<T: Copy>(flag: &str, value: &str, parse: impl Fn(&str) -> Option<T>, names: &[&str]) -> Result<T> {
    parse(value).ok_or_else(|| Error::config(format!("{flag} {value:?}: expected one of {}", names.join(", "))))
}

impl EncoderOptions {
    /// The manifest's `options`: these very fields, by name.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn schema(&self) -> Result<SchemaOptions> {
        let format = match &self.format {
            None => None,
            Some(name) => Some(choice("--format", name, Format::parse, &["sharegpt", "openai", "alpaca"])?),
        };
        let fields = FieldNames {
            messages: self.messages_field.clone(),
            role: self.role_field.clone(),
            content: self.content_field.clone(),
            system: self.system_field.clone(),
        };
        let role_map = self.role_map.clone().unwrap_or_default().into_iter().collect();
        Ok(SchemaOptions { format, role_map, fields })
    }

    pub fn encode(&self) -> Result<EncodeOptions> {
        if self.max_len == Some(0) {
            return Err(Error::config("--max-len must be positive"));
        }
        if self.max_record_bytes == Some(0) {
            return Err(Error::config("--max-record-bytes must be positive"));
        }
        if let Some(date) = &self.date {
            if crate::template::parse_date(date).is_none() {
                return Err(Error::config(format!("--date {date:?}: expected a day as YYYY-MM-DD")));
            }
        }
        let kwargs = self.template_args.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(EncodeOptions {
            max_len: self.max_len,
            truncation: choice("--truncation", &self.truncation, truncation, &["right", "drop"])?,
            train_on: choice("--train-on", &self.train_on, train_on, &["all", "last"])?,
            train_eot: self.train_eot,
            train_on_prompt: self.train_on_prompt,
            max_record_bytes: self.max_record_bytes.unwrap_or(DEFAULT_MAX_RECORD_BYTES),
            reasoning: choice("--reasoning", &self.reasoning, ReasoningPolicy::parse, &["train", "mask", "drop"])?,
            split_turns: choice("--split-turns", &self.split_turns, SplitTurns::parse, &["never", "auto", "always"])?,
            history: choice("--history", &self.history, HistoryTurns::parse, &["template", "as-written"])?,
            template: TemplateOptions { kwargs, date: self.date.clone() },
        })
    }
}

impl PrepOptions {
    pub fn into_config(self, inputs: Vec<PathBuf>, tokenizer: PathBuf, output: PathBuf) -> Result<PrepConfig> {
        let run = &self.run;
        let (count, index) = (run.num_shards.unwrap_or(1), run.shard_index.unwrap_or(0));
        if count == 0 || index >= count {
            return Err(Error::config(format!(
                "--shard-index {index} with --num-shards {count}: need 0 <= shard index < number of shards"
            )));
        }
        let mut config = PrepConfig::new(inputs, tokenizer, output);
        config.template = self.encoder.template.clone();
        config.schema = self.encoder.schema()?;
        config.encode = self.encoder.encode()?;
        config.threads = run.threads;
        config.chunk_size = run.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        config.overwrite = run.overwrite;
        config.progress = run.progress;
        config.strict = run.strict;
        config.max_reject_fraction = run.max_reject_fraction;
        config.shard = Shard { index, count };
        config.options = self.encoder;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_option_is_an_error_naming_it() {
        let err = from_json::<EncoderOptions>(r#"{"max_lenn": 5}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_lenn`"), "{err}");
    }

    #[test]
    fn template_args_keep_big_integers_and_order() {
        let options: EncoderOptions = from_json(r#"{"template_args": {"z": 123456789012345678901234567890, "a": 1.5}}"#).unwrap();
        let encode = options.encode().unwrap();
        let names: Vec<&str> = encode.template.kwargs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        let big = crate::exact_json::to_template(&encode.template.kwargs[0].1).unwrap();
        assert_eq!(big.to_string(), "123456789012345678901234567890");
    }

    #[test]
    fn bad_choice_names_the_flag() {
        let options = EncoderOptions { reasoning: "think".into(), ..Default::default() };
        assert_eq!(options.encode().unwrap_err().to_string(), r#"--reasoning "think": expected one of train, mask, drop"#);
    }
}
