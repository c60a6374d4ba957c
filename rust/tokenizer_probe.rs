//! The fast BPE's self-check on a cold start, in milliseconds instead of a full load of the
//! `tokenizers` crate's tokenizer: the probe texts go through the crate's own pipeline, built
//! from this file with its BPE vocabulary and merges cut down to the entries those texts can
//! reach, and the fast BPE must give the same ids (and, for SentencePiece layouts, offsets).
//!
//! Why the cut-down tokenizer encodes the probes exactly as the whole one does (so this check
//! proves what the full check proved):
//! - Normalizer, pre-tokenizer, added tokens and post-processor are the file's own sections,
//!   deserialized by the crate, so the words it hands the model are the same. The added tokens'
//!   ids depend on the model only through `token_to_id` of their texts (every added text in the
//!   vocabulary keeps its entry) and `get_vocab_size` (the model reports the whole vocabulary's
//!   size: `ProbeModel`).
//! - `BPE::merge_word` on a word reads the vocabulary only at the word's character-aligned
//!   substrings, at `<0xXX>` (byte fallback) and at `unk_token`; `Word::merge_all` looks merges
//!   up only for pairs of adjacent symbols, whose concatenation is again such a substring, and
//!   compares their ranks only with each other. Kept: every vocabulary entry among those
//!   strings, and every merge whose parts joined are one, in file order (so ranks keep their
//!   order). Merges are keyed by ids; with one id per token text, no dropped merge shares a key
//!   with a kept one.
//! - The words are recorded from the crate itself: a first build with no merges only records
//!   what its model is asked to tokenize; the cut-down build must then be asked the same words.
//!
//! Where an assumption does not hold (another model, subword prefixes or suffixes, dropout, two
//! token texts sharing an id, ids beyond `u32`, merges the crate would reject), [`check`]
//! returns `None` and the caller falls back to the full tokenizer. Tested against the full
//! tokenizer for every shipped family (`tokenizer_tests.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use serde::{de::Error as _, Deserialize, Deserializer};
use serde_json::{Map, Value};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::{DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token, TokenizerImpl};

use crate::fastbpe::json::MergeJson;
use crate::fastbpe::{FastTokenizer, FxHashMap, TokenizerJson};

/// Keys of the cut-down model section that only `ProbeModel` reads (the crate's BPE ignores
/// unknown keys, and `ProbeModel` removes them first anyway).
const VOCAB_SIZE_KEY: &str = "fastsft_probe_vocab_size";
const RECORD_ONLY_KEY: &str = "fastsft_probe_record_only";

pub(crate) type ProbeTokenizer = TokenizerImpl<ProbeModel, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// Whether `fast` encodes every probe as the `tokenizers` crate does with this file (`offsets`:
/// compare offsets too, with `trim_offsets` off as in `crate::tokenizer`'s reference); `None`
/// when this cut-down check does not apply (see the module documentation).
/// `vocab`: the model vocabulary, deduplicated as the crate reads it (a later entry wins).
pub(crate) fn check(parsed: &TokenizerJson, vocab: &FxHashMap<&str, u32>, fast: &FastTokenizer, offsets: bool, probes: &[&str]) -> Option<bool> {
    let reduced = cut_down(parsed, vocab, probes)?;
    let mut same = true;
    for probe in probes {
        let encoding = reduced.encode(*probe, false).ok()?;
        same &= match offsets {
            true => fast
                .encode_with_offsets(probe)
                .is_some_and(|(ids, offsets)| encoding.get_ids() == ids && encoding.get_offsets() == offsets),
            false => encoding.get_ids() == fast.encode(probe).as_slice(),
        };
    }
    Some(same)
}

/// The crate's tokenizer of this file cut down for `probes` (see the module documentation); it
/// encodes them, and only them, as the whole tokenizer does.
pub(crate) fn cut_down(parsed: &TokenizerJson, vocab: &FxHashMap<&str, u32>, probes: &[&str]) -> Option<ProbeTokenizer> {
    let model = parsed.model.as_ref()?;
    let entries = model.vocab.as_deref()?;
    let merges = model.merges.as_deref()?;
    let empty_or_null = |key: &str| model.fields.get(key).is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if model.kind() != Some("BPE")
        || !model.fields.get("dropout").is_none_or(Value::is_null)
        || !empty_or_null("continuing_subword_prefix")
        || !empty_or_null("end_of_word_suffix")
        || entries.iter().any(|(_, id)| *id > u64::from(u32::MAX))
        || !one_text_per_id(vocab)
    {
        return None;
    }
    let max_token_len = vocab.keys().map(|t| t.len()).max().unwrap_or(0);
    let mut kept_vocab = Map::new();
    let added = parsed.added_tokens.as_array().map(Vec::as_slice).unwrap_or_default();
    for content in added.iter().filter_map(|t| t.get("content").and_then(Value::as_str)) {
        if let Some(&id) = vocab.get(content) {
            kept_vocab.insert(content.to_string(), id.into());
        }
    }

    // The words the crate's pipeline hands the model.
    let recorder = build(parsed, kept_vocab.clone(), Vec::new(), vocab.len(), true)?;
    let mut words = Vec::with_capacity(probes.len());
    for probe in probes {
        recorder.encode(*probe, false).ok()?;
        words.push(recorder.get_model().take_words()?);
    }

    let mut reach: FxHashMap<&str, ()> = FxHashMap::default();
    for word in words.iter().flatten() {
        let bounds: Vec<usize> = word.char_indices().map(|(i, _)| i).chain([word.len()]).collect();
        for (i, &start) in bounds.iter().enumerate() {
            for &end in bounds[i + 1..].iter().take_while(|&&end| end - start <= max_token_len) {
                reach.insert(&word[start..end], ());
            }
        }
    }
    let byte_tokens: Vec<String> = (0..=255u8).map(|b| format!("<{b:#04X}>")).collect();
    let unk = model.fields.get("unk_token").and_then(Value::as_str);
    for text in reach.keys().copied().chain(byte_tokens.iter().map(String::as_str)).chain(unk) {
        if let Some(&id) = vocab.get(text) {
            kept_vocab.insert(text.to_string(), id.into());
        }
    }
    let kept_merges = reachable_merges(merges, &reach)?;

    let reduced = build(parsed, kept_vocab, kept_merges, vocab.len(), false)?;
    // The cut-down build must hand its model the words the first build recorded.
    for (probe, recorded) in probes.iter().zip(&words) {
        reduced.encode(*probe, false).ok()?;
        if reduced.get_model().take_words()? != *recorded {
            return None;
        }
    }
    Some(reduced)
}

/// True when no id belongs to two token texts.
fn one_text_per_id(vocab: &FxHashMap<&str, u32>) -> bool {
    let max = vocab.values().copied().max().unwrap_or(0) as usize;
    if max > 4 * vocab.len() + 1024 {
        return false; // sparse ids: not worth a table here
    }
    let mut seen = vec![0u64; max / 64 + 1];
    vocab.values().all(|&id| {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        let fresh = seen[word] & bit == 0;
        seen[word] |= bit;
        fresh
    })
}

/// The merges whose parts joined are in `reach`, as the file writes them, in file order; `None`
/// for merges the crate would read otherwise or reject: mixed forms, a string that is not two
/// parts, a `#version` line (skipped by the crate, so not counted in ranks). A part or result
/// outside the vocabulary, which the crate rejects too, cannot occur here: the fast BPE
/// (`fastbpe::model`) declines such a file, and without a fast BPE there is no check.
fn reachable_merges(merges: &[MergeJson], reach: &FxHashMap<&str, ()>) -> Option<Vec<Value>> {
    let joined = matches!(merges.first(), Some(MergeJson::Joined(_)));
    let mut kept = Vec::new();
    let mut both = String::new();
    for merge in merges {
        let (a, b) = match (merge, joined) {
            (MergeJson::Joined(s), true) if !s.starts_with("#version") => {
                let mut parts = s.split(' ');
                let pair = (parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                pair
            }
            (MergeJson::Pair(a, b), false) => (a.as_ref(), b.as_ref()),
            _ => return None,
        };
        both.clear();
        both.push_str(a);
        both.push_str(b);
        if reach.contains_key(both.as_str()) {
            kept.push(match merge {
                MergeJson::Joined(s) => Value::String(s.to_string()),
                _ => Value::Array(vec![Value::String(a.to_string()), Value::String(b.to_string())]),
            });
        }
    }
    Some(kept)
}

/// The crate's tokenizer of the file's sections with this vocabulary and these merges (the
/// post-processor with `trim_offsets` off, as `crate::tokenizer`'s reference has it).
fn build(parsed: &TokenizerJson, vocab: Map<String, Value>, merges: Vec<Value>, vocab_size: usize, record_only: bool) -> Option<ProbeTokenizer> {
    let mut model = parsed.model.as_ref()?.fields.clone();
    model.insert("vocab".into(), Value::Object(vocab));
    model.insert("merges".into(), Value::Array(merges));
    model.insert(VOCAB_SIZE_KEY.into(), vocab_size.into());
    model.insert(RECORD_ONLY_KEY.into(), record_only.into());
    let mut post_processor = parsed.post_processor.clone();
    crate::tokenizer::untrim_offsets(&mut post_processor);
    let mut root = Map::new();
    if let Some(version) = &parsed.version {
        root.insert("version".into(), version.clone());
    }
    let sections = [
        ("truncation", &parsed.truncation),
        ("padding", &parsed.padding),
        ("added_tokens", &parsed.added_tokens),
        ("normalizer", &parsed.normalizer),
        ("pre_tokenizer", &parsed.pre_tokenizer),
        ("post_processor", &post_processor),
    ];
    for (key, value) in sections.into_iter().filter(|(_, v)| !v.is_null()) {
        root.insert(key.into(), value.clone());
    }
    root.insert("model".into(), Value::Object(model));
    ProbeTokenizer::from_str(&Value::Object(root).to_string()).ok()
}

/// The file's BPE (deserialized as the crate deserializes a `"model"`), reporting the whole
/// vocabulary's size, and recording every word it is asked to tokenize; `record_only`: it
/// tokenizes nothing.
pub(crate) struct ProbeModel {
    bpe: ModelWrapper,
    vocab_size: usize,
    record_only: bool,
    words: Mutex<Vec<String>>,
}

impl ProbeModel {
    fn take_words(&self) -> Option<Vec<String>> {
        self.words.lock().ok().map(|mut words| std::mem::take(&mut *words))
    }
}

impl<'de> Deserialize<'de> for ProbeModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut section = Value::deserialize(d)?;
        let fields = section.as_object_mut().ok_or_else(|| D::Error::custom("model: not an object"))?;
        let vocab_size = fields.remove(VOCAB_SIZE_KEY).and_then(|v| v.as_u64()).ok_or_else(|| D::Error::custom("no vocabulary size"))?;
        let record_only = fields.remove(RECORD_ONLY_KEY).and_then(|v| v.as_bool()).unwrap_or(false);
        let bpe = ModelWrapper::deserialize(section).map_err(D::Error::custom)?;
        if !matches!(bpe, ModelWrapper::BPE(_)) {
            return Err(D::Error::custom("not a BPE model"));
        }
        Ok(ProbeModel { bpe, vocab_size: vocab_size as usize, record_only, words: Mutex::new(Vec::new()) })
    }
}

impl Model for ProbeModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        self.words.lock().map_err(|_| "poisoned")?.push(sequence.to_string());
        match self.record_only {
            true => Ok(Vec::new()),
            false => self.bpe.tokenize(sequence),
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.bpe.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.bpe.id_to_token(id)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.bpe.get_vocab()
    }

    fn get_vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        self.bpe.save(folder, prefix)
    }

    fn get_trainer(&self) -> TrainerWrapper {
        self.bpe.get_trainer()
    }
}

#[cfg(test)]
#[path = "tokenizer_probe_tests.rs"]
mod tests;
