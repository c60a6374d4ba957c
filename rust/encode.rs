//! Rendered text + spans → token ids + loss mask, with truncation and per-row checks.
//!
//! The whole rendered string is tokenized once (`add_special_tokens=false`, as `transformers`'
//! `apply_chat_template` does): encoding pieces separately gives different ids wherever BPE
//! merges across a piece boundary. A token is trained iff its byte range overlaps a trainable
//! span, except a special token that starts before the span (a role header that swallows the
//! whitespace after it, like Phi-3's `<|assistant|>`).

use std::path::{Path, PathBuf};

use crate::fastbpe::FastTokenizer;
use crate::tokenizer::{LoadedTokenizer, OffsetSource, Reference};

use crate::error::{Error, Result};
use crate::schema::{parse_record, Conversation, Reject, RejectReason, SchemaOptions};
use crate::template::{HistoryTurns, ReasoningPolicy, Rendered, Span, SpecialTokens, SplitTurns, Template, TemplateInfo, TemplateOptions, TurnOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Keep the first `max_len` tokens.
    Right,
    /// Reject rows longer than `max_len`.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOn {
    All,
    Last,
}

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub max_len: Option<usize>,
    pub truncation: Truncation,
    pub train_on: TrainOn,
    /// Train the end-of-turn marker that closes each reply (DESIGN §3: yes).
    pub train_eot: bool,
    /// Train every token, prompt included.
    pub train_on_prompt: bool,
    /// Records larger than this are rejected unread: tokenizing takes ~100 bytes of memory per
    /// byte of text, so one 50 MB record would need GBs.
    pub max_record_bytes: usize,
    /// What becomes of assistant reasoning (`--reasoning train|mask|drop`).
    pub reasoning: ReasoningPolicy,
    /// When a conversation becomes one sample per trained turn (`--split-turns`).
    pub split_turns: SplitTurns,
    /// Earlier assistant turns as the template renders them or as written (`--history`).
    pub history: HistoryTurns,
    /// Template keyword arguments (`--template-arg`) and the pinned date (`--date`).
    pub template: TemplateOptions,
}

/// 4 MiB of JSON: about a million tokens, far beyond any SFT sample, ~0.5 GB to tokenize.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_len: None,
            truncation: Truncation::Right,
            train_on: TrainOn::All,
            train_eot: true,
            train_on_prompt: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            reasoning: ReasoningPolicy::Train,
            split_turns: SplitTurns::Auto,
            history: HistoryTurns::Template,
            template: TemplateOptions::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub truncated: bool,
    /// For a per-turn sample (`--split-turns`): the index of its assistant message.
    pub turn: Option<u32>,
}

/// What the manifest records of the tokenizer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenizerInfo {
    pub path: String,
    pub sha256: String,
    pub vocab_size: usize,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
}

pub struct Encoder {
    /// The `tokenizers` crate's tokenizer, built when first needed (rust/tokenizer.rs).
    tokenizer: Reference,
    /// The exact fast BPE (`fastbpe`), when it supports this tokenizer and passed the self-check.
    fast: Option<FastTokenizer>,
    offsets: OffsetSource,
    template: Template,
    schema: SchemaOptions,
    options: EncodeOptions,
    /// Indexed by token id: true for the tokenizer's special added tokens.
    special_ids: Vec<bool>,
    pub tokenizer_info: TokenizerInfo,
    pub template_info: TemplateInfo,
}

impl Encoder {
    /// `tokenizer`: a model directory holding `tokenizer.json` (and `tokenizer_config.json`), or
    /// the path of a `tokenizer.json`.
    pub fn load(tokenizer: &Path, template: Option<&str>, schema: SchemaOptions, options: EncodeOptions) -> Result<Encoder> {
        let (dir, file) = if tokenizer.is_dir() {
            (tokenizer.to_path_buf(), tokenizer.join("tokenizer.json"))
        } else {
            (tokenizer.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")), tokenizer.to_path_buf())
        };
        // The reference tokenizer builds in the background while the template loads; the fast
        // BPE's self-check then waits for it (unless the tokenizer cache vouches for it).
        let mut loaded = LoadedTokenizer::load(&file)?;
        let config = read_config(&dir)?;
        let token = |name: &str| config.as_ref().and_then(|c| token_string(c.get(name)));
        let named: Vec<(String, String)> = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .into_iter()
            .filter_map(|name| token(name).map(|t| (name.to_string(), t)))
            .collect();
        let special = std::mem::take(&mut loaded.special);
        let (template, template_info) = Template::load(template, &dir, SpecialTokens { named, special }, &options.template)?;
        loaded.verify()?;
        let fast = loaded.take_fast();
        let tokenizer_info = TokenizerInfo {
            path: file.display().to_string(),
            sha256: loaded.sha256,
            vocab_size: loaded.vocab_size,
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            pad_token: token("pad_token"),
        };
        let (tokenizer, offsets, special_ids) = (loaded.reference, loaded.offsets, loaded.special_ids);
        Ok(Encoder { tokenizer, fast, offsets, template, schema, options, special_ids, tokenizer_info, template_info })
    }

    pub fn options(&self) -> &EncodeOptions {
        &self.options
    }

    pub fn schema(&self) -> &SchemaOptions {
        &self.schema
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Raw JSON record → its samples (one, or one per trained turn), or the reason it cannot
    /// be trained on. A panic anywhere on the way (third-party crates included) becomes an
    /// `internal_error` reject of this record, never an aborted run.
    pub fn encode_record(&self, bytes: &[u8]) -> std::result::Result<Vec<Encoded>, Reject> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encode_record_unguarded(bytes))) {
            Ok(outcome) => outcome,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Reject::new(RejectReason::InternalError, format!("fastsft failed on this record ({what}); please report it")))
            }
        }
    }

    fn encode_record_unguarded(&self, bytes: &[u8]) -> std::result::Result<Vec<Encoded>, Reject> {
        if bytes.len() > self.options.max_record_bytes {
            return Err(Reject::new(
                RejectReason::TooLong,
                format!(
                    "the record is {:.1} MB, over the {:.1} MB limit for one record (--max-record-bytes)",
                    bytes.len() as f64 / 1e6,
                    self.options.max_record_bytes as f64 / 1e6
                ),
            ));
        }
        if let Some(trigger) = forged_panic_trigger() {
            if memchr::memmem::find(bytes, trigger.as_bytes()).is_some() {
                panic!("forged panic for tests (FASTSFT_TEST_FORGE_PANIC)");
            }
        }
        let conversation = parse_record(bytes, &self.schema)?;
        self.encode_conversation(&conversation)
    }

    pub fn turn_options(&self) -> TurnOptions {
        TurnOptions {
            reasoning: self.options.reasoning,
            split: self.options.split_turns,
            history: self.options.history,
            last_only: self.options.train_on == TrainOn::Last,
        }
    }

    pub fn encode_conversation(&self, conversation: &Conversation) -> std::result::Result<Vec<Encoded>, Reject> {
        let samples = self.template.render(conversation, &self.turn_options())?;
        samples.iter().map(|rendered| self.encode_rendered(conversation, rendered)).collect()
    }

    fn encode_rendered(&self, conversation: &Conversation, rendered: &Rendered) -> std::result::Result<Encoded, Reject> {
        let (mut ids, offsets) = match rendered.split {
            None => self.tokenize(&rendered.text)?,
            // The prompt alone, as `apply_chat_template(add_generation_prompt=True)` gives it to
            // the model, then the completion the model generates.
            Some((prompt_len, _)) => {
                let (mut ids, mut offsets) = self.tokenize(&rendered.text[..prompt_len])?;
                let (more_ids, more_offsets) = self.tokenize(&rendered.text[prompt_len..])?;
                ids.extend(more_ids);
                offsets.extend(more_offsets.into_iter().map(|(a, b)| (a + prompt_len, b + prompt_len)));
                (ids, offsets)
            }
        };
        let (spans, untrained) = self.trained_spans(conversation, rendered);
        let mut mask = if self.options.train_on_prompt {
            vec![1u8; ids.len()]
        } else {
            self.mask_from_offsets(&ids, &offsets, &spans)
        };
        // `--reasoning mask`: no token that holds any of a reasoning block trains, even one that
        // also holds the answer's first bytes (a tokenizer without a `</think>` token merges
        // `>` with the newlines after it).
        for &(start, end) in &untrained {
            for (m, &(a, b)) in mask.iter_mut().zip(&offsets) {
                if a < end && b > start {
                    *m = 0;
                }
            }
        }
        let mut truncated = false;
        if let Some(max_len) = self.options.max_len {
            if ids.len() > max_len {
                if self.options.truncation == Truncation::Drop {
                    return Err(Reject::new(RejectReason::TooLong, format!("{} tokens > --max-len {max_len}", ids.len())));
                }
                ids.truncate(max_len);
                mask.truncate(max_len);
                truncated = true;
            }
        }
        if !mask.contains(&1) {
            let detail = if truncated {
                format!("no assistant token within the first {} tokens (--max-len)", ids.len())
            } else {
                "no token is trained (every assistant turn is excluded)".to_string()
            };
            return Err(Reject::new(RejectReason::NoTrainedTokens, detail));
        }
        Ok(Encoded { ids, mask, truncated, turn: rendered.split.map(|(_, turn)| turn as u32) })
    }

    /// Ids and byte offsets of the whole text. For byte-level BPE the offsets are the running sum
    /// of each token's byte length: exact by construction, whatever the tokenizer's offset
    /// tracking reports (Llama 3's zero-width offsets, trimmed whitespace), and `encode_fast`
    /// skips the offset bookkeeping; on text a NFC normalizer changes, the crate's offsets as
    /// `fastbpe::nfc_offsets` maps them. SentencePiece files the fast BPE covers get its offsets, the
    /// crate's own by construction (`fastbpe::offsets`), checked text by text. Anything else, and
    /// any text that fails a check, uses the tokenizer's own offsets.
    fn tokenize(&self, text: &str) -> std::result::Result<crate::fastbpe::IdsAndOffsets, Reject> {
        let failed = |e: tokenizers::Error| Reject::new(RejectReason::TokenizerError, format!("tokenizer failed: {e}"));
        if let OffsetSource::ByteLengths { lengths, nfc } = &self.offsets {
            let unchanged = !nfc || crate::fastbpe::nfc_leaves_unchanged(text);
            if unchanged {
                let ids = match &self.fast {
                    Some(fast) => fast.encode(text),
                    None => self.tokenizer.encode_fast(text, false).map_err(failed)?.get_ids().to_vec(),
                };
                let mut offsets = Vec::with_capacity(ids.len());
                let mut at = 0usize;
                for &id in &ids {
                    let len = lengths.get(id as usize).copied().unwrap_or(0) as usize;
                    offsets.push((at, at + len));
                    at += len;
                }
                if at == text.len() {
                    return Ok((ids, offsets));
                }
            } else if let Some(found) = self.fast.as_ref().and_then(|fast| fast.encode_with_nfc_offsets(text, lengths)) {
                // Text NFC changes: the crate's offsets, mapped through NFC's alignments.
                return Ok(found);
            }
        }
        if let (OffsetSource::FastBpe, Some(fast)) = (&self.offsets, &self.fast) {
            if let Some(found) = fast.encode_with_offsets(text) {
                return Ok(found);
            }
        }
        let encoding = self.tokenizer.encode(text, false).map_err(failed)?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// The byte ranges that train under the options (per-message flags, last turn only, whether
    /// the end-of-turn marker is included), and the reasoning blocks that must not train under
    /// `--reasoning mask`.
    fn trained_spans(&self, conversation: &Conversation, rendered: &Rendered) -> (ByteRanges, ByteRanges) {
        let trained = crate::template::trained_turns(conversation, self.options.train_on == TrainOn::Last);
        let mut ranges = Vec::new();
        let mut untrained = Vec::new();
        for span in rendered.spans.iter().filter(|s: &&Span| trained.binary_search(&s.message).is_ok()) {
            let end = if self.options.train_eot { span.end } else { span.eot_start };
            let masked = match self.options.reasoning {
                ReasoningPolicy::Mask => crate::template::reasoning::block_in_span(&rendered.text, span.start, span.eot_start),
                _ => None,
            };
            match masked {
                Some((block_start, block_end)) => {
                    ranges.push((span.start, block_start));
                    ranges.push((block_end, end));
                    untrained.push((block_start, block_end));
                }
                None => ranges.push((span.start, end)),
            }
        }
        ranges.retain(|(start, end)| start < end);
        (ranges, untrained)
    }

    fn mask_from_offsets(&self, ids: &[u32], offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> Vec<u8> {
        let mut mask = vec![0u8; ids.len()];
        let mut next = 0;
        for (i, (&id, &(start, end))) in ids.iter().zip(offsets).enumerate() {
            while next < spans.len() && spans[next].1 <= start {
                next += 1;
            }
            let Some(&(span_start, span_end)) = spans.get(next) else { break };
            let overlaps = if start == end { start >= span_start && start < span_end } else { start < span_end && end > span_start };
            let header = start < span_start && self.special_ids.get(id as usize).copied().unwrap_or(false);
            mask[i] = u8::from(overlaps && !header);
        }
        mask
    }
}

/// `[start, end)` byte ranges of a rendered text.
type ByteRanges = Vec<(usize, usize)>;

/// Test hook: records containing the text in `FASTSFT_TEST_FORGE_PANIC` panic inside the
/// encoder, so tests can prove a panic becomes a counted reject. Read once per process.
fn forged_panic_trigger() -> Option<&'static str> {
    static TRIGGER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TRIGGER.get_or_init(|| std::env::var("FASTSFT_TEST_FORGE_PANIC").ok().filter(|t| !t.is_empty())).as_deref()
}

fn read_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Tokenizer { path, detail: format!("invalid JSON: {e}") })
}

/// A special token in `tokenizer_config.json`: a string, or `{"content": ...}`.
fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}
