//! Loading `tokenizer.json` for the encoder: read and hashed once, parsed once into the sections
//! fastsft reads ([`TokenizerJson`]), from which come the special tokens, the byte length of every
//! token (for byte-level offsets) and the exact fast BPE (`fastbpe`).
//!
//! The fast BPE's self-check runs on a cut-down build of the `tokenizers` crate's tokenizer
//! (`tokenizer_probe`: milliseconds). The crate's whole tokenizer (the reference) is built only
//! when a text or a tokenizer the fast path does not cover needs it; where the fast BPE does
//! not support the file, or the cut-down check does not apply to it, it is built from the same
//! bytes on a background thread while the caller loads the template. When the on-disk cache
//! ([`crate::tokenizer_cache`]) holds this file's entry (`tokenizer_entry`: its small sections,
//! what the load derived, the fast BPE's built tables) and a passed self-check, the JSON is not
//! parsed at all and no table is built.
//!
//! Not here: encoding (`encode.rs`), the template (`template/`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use serde_json::Value;
use tokenizers::{Encoding, Tokenizer};

use crate::error::{Error, Result};
use crate::fastbpe::{FastTokenizer, FxHashMap, TokenizerJson};
use crate::template::sha256_hex;
use crate::tokenizer_cache::{self, CacheDir};
use crate::tokenizer_probe;

/// `tokenizer.json`, loaded.
pub struct LoadedTokenizer {
    pub file: PathBuf,
    pub sha256: String,
    /// One past the largest id (model and added tokens).
    pub vocab_size: usize,
    /// Indexed by token id: true for the special added tokens.
    pub special_ids: Vec<bool>,
    /// The special added tokens' texts, sorted.
    pub special: Vec<String>,
    pub offsets: OffsetSource,
    /// The fast BPE, when it supports this file; `verified` says whether it passed the self-check.
    fast: Option<FastTokenizer>,
    verified: bool,
    /// Cold loads: the cut-down self-check's verdict (`None`: it did not apply; the full check runs).
    probe_verdict: Option<bool>,
    pub reference: Reference,
    /// Cold loads: where the cache entry goes, and two of its parts (`tokenizer_entry`: the small
    /// sections, what the load derived), taken before the encoder takes the special texts; stored once verified.
    pending_cache: Option<(CacheDir, Vec<u8>, Vec<u8>)>,
}

/// Where token offsets come from (see `Encoder::tokenize`).
pub enum OffsetSource {
    /// Byte-level BPE: each id's length in bytes; `nfc` when a NFC normalizer runs first (then
    /// only text already in NFC, whose bytes the normalizer leaves alone, can use the lengths).
    ByteLengths { lengths: Vec<u32>, nfc: bool },
    /// SentencePiece-style BPE (Mistral, Phi-3, Gemma, TinyLlama): the fast BPE reports the
    /// offsets the `tokenizers` crate would (`FastTokenizer::encode_with_offsets`), checking each
    /// text as it goes; a text that fails the check goes to the crate.
    FastBpe,
    Tokenizer,
}

/// Texts on which the fast BPE must give the `tokenizers` crate's ids (and, for SentencePiece
/// files, its offsets) before it is used: chat markup of every shipped family, mixed scripts,
/// whitespace runs and leading spaces, digits, emoji and characters outside every vocabulary
/// (byte fallback), special-token look-alikes and tokens inside words, a literal `▁`.
pub(crate) const PROBES: [&str; 12] = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n請翻譯:今天天氣真好<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|>",
    "  leading   and trailing spaces \t\t\n\n\n  \r\n x",
    "Numbers 1234567 3.14159 and 10,000,000; it's they'RE we'll I'd",
    "emoji 😀👩‍💻🇫🇷 mixed русский 日本語 한국어 العربية e\u{301} café",
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}",
    "<|im_start <|im_end|>x <|endoftext|><|endoftext|> </s> <s>[INST]",
    "\u{1f}\u{1c}\u{a0}\u{3000}\u{2028} odd whitespace",
    "<bos><start_of_turn>user\nHi  there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
    "<|user|>\n  What?<|end|>\n<|assistant|>\n Fine.<|end|>\n<|endoftext|></s>  x",
    " 𠜎𪚥\u{0}\u{7f}ꙮ𝔘 ▁▁ ▁x▁ ▁ mid</s>word[INST]in<s>side [/INST] ",
    "",
];

impl LoadedTokenizer {
    /// Reads `file`. With a valid cache entry for its bytes, nothing else is parsed; otherwise
    /// the sections are parsed here and the reference tokenizer is built in the background.
    /// The cache is the one of the environment ([`CacheDir::from_env`]).
    pub fn load(file: &Path) -> Result<LoadedTokenizer> {
        LoadedTokenizer::load_with_cache(file, CacheDir::from_env())
    }

    pub fn load_with_cache(file: &Path, cache: Option<CacheDir>) -> Result<LoadedTokenizer> {
        let bytes: Arc<[u8]> = std::fs::read(file).map_err(|e| Error::io(file, e))?.into();
        let sha256 = sha256_hex(&bytes);
        let reference_only = std::env::var("FASTSFT_TOKENIZER").is_ok_and(|v| v == "reference");
        let cache = if reference_only { None } else { cache };
        if let Some(entry) = cache.as_ref().and_then(|dir| tokenizer_cache::read(dir, &sha256)) {
            if let Some(loaded) = entry::load(&entry, file, &sha256, bytes.clone()) {
                return Ok(loaded);
            }
        }
        let parsed = TokenizerJson::parse(&bytes)
            .map_err(|e| Error::Tokenizer { path: file.to_path_buf(), detail: format!("invalid JSON: {e}") })?;
        let vocab = model_vocab(&parsed);
        let mut loaded = LoadedTokenizer::from_sections(&parsed, vocab.as_ref(), file, &sha256, bytes.clone(), reference_only)?;
        if let (Some(fast), Some(vocab)) = (&loaded.fast, &vocab) {
            let offsets = matches!(loaded.offsets, OffsetSource::FastBpe);
            loaded.probe_verdict = tokenizer_probe::check(&parsed, vocab, fast, offsets, &PROBES);
        }
        if loaded.probe_verdict.is_none() {
            loaded.reference.start(); // needed now: for the full self-check, or as the tokenizer
        }
        if let (Some(dir), Some(_)) = (cache, &loaded.fast) {
            loaded.pending_cache = Some((dir, entry::small_sections(&parsed), entry::derived(&loaded)));
        }
        Ok(loaded)
    }

    /// `model_vocab`: [`model_vocab`] of `parsed`. The reference is not started here.
    fn from_sections(
        parsed: &TokenizerJson,
        model_vocab: Option<&VocabMap>,
        file: &Path,
        sha256: &str,
        bytes: Arc<[u8]>,
        reference_only: bool,
    ) -> Result<LoadedTokenizer> {
        let reference = Reference::new(file.to_path_buf(), bytes);
        let added = AddedTokens::from_json(&parsed.added_tokens, model_vocab);
        let model_len = model_vocab.map_or(0, |v| v.len());
        let vocab_size = added.max_id.map_or(0, |m| m as usize + 1).max(model_len + added.new_count);
        let mut special_ids = vec![false; vocab_size];
        for (id, _) in added.tokens.iter().filter(|(_, t)| t.special) {
            special_ids[*id as usize] = true;
        }
        let mut special: Vec<String> = added.tokens.iter().filter(|(_, t)| t.special).map(|(_, t)| t.content.clone()).collect();
        special.sort();
        let mut offsets = detect_offsets(parsed, model_vocab, &added, model_len + added.new_count);
        let fast = match offsets {
            _ if reference_only => None,
            OffsetSource::ByteLengths { .. } => FastTokenizer::from_parsed(parsed),
            // Without byte lengths, the fast BPE serves only files whose offsets it reproduces.
            _ => FastTokenizer::from_parsed(parsed).filter(FastTokenizer::has_offsets),
        };
        if fast.is_some() && matches!(offsets, OffsetSource::Tokenizer) {
            offsets = OffsetSource::FastBpe;
        }
        Ok(LoadedTokenizer {
            file: file.to_path_buf(),
            sha256: sha256.to_string(),
            vocab_size,
            special_ids,
            special,
            offsets,
            fast,
            verified: false,
            probe_verdict: None,
            reference,
            pending_cache: None,
        })
    }

    /// Runs the fast BPE's self-check (unless a cache entry already vouches for it, or the
    /// cut-down check of the load gave its verdict), drops the fast BPE if it fails, and stores a
    /// passed check in the cache. Until this runs, [`LoadedTokenizer::fast`] is `None`.
    /// Without a fast BPE the reference is the tokenizer: its load errors surface here.
    pub fn verify(&mut self) -> Result<()> {
        if self.verified {
            return Ok(());
        }
        let Some(fast) = self.fast.as_ref() else {
            return self.reference.get().map(|_| ());
        };
        let same = match self.probe_verdict {
            Some(verdict) => verdict,
            None => full_check(fast, &self.offsets, self.reference.get()?),
        };
        if !same {
            self.fast = None;
            if matches!(self.offsets, OffsetSource::FastBpe) {
                self.offsets = OffsetSource::Tokenizer;
            }
            return Ok(());
        }
        self.verified = true;
        if let (Some((dir, sections, derived)), Some(fast)) = (self.pending_cache.take(), &self.fast) {
            // The cache is an optimisation: a directory that cannot be written is not an error.
            let _ = tokenizer_cache::write(&dir, &self.sha256, &entry::payload(&sections, &derived, fast), true);
        }
        Ok(())
    }

    /// The fast BPE, once verified.
    pub fn fast(&self) -> Option<&FastTokenizer> {
        self.fast.as_ref().filter(|_| self.verified)
    }

    /// Takes the verified fast BPE out (the encoder owns it).
    pub fn take_fast(&mut self) -> Option<FastTokenizer> {
        if self.verified {
            self.fast.take()
        } else {
            None
        }
    }
}

/// The self-check against the crate's whole tokenizer: the fast BPE gives its ids (and, for
/// SentencePiece layouts, its offsets) on every probe.
fn full_check(fast: &FastTokenizer, offsets: &OffsetSource, reference: &Tokenizer) -> bool {
    match offsets {
        OffsetSource::FastBpe => PROBES.iter().all(|text| {
            reference.encode(*text, false).is_ok_and(|e| {
                fast.encode_with_offsets(text).is_some_and(|(ids, offsets)| e.get_ids() == ids && e.get_offsets() == offsets)
            })
        }),
        _ => PROBES.iter().all(|text| reference.encode(*text, false).is_ok_and(|e| e.get_ids() == fast.encode(text).as_slice())),
    }
}

/// A token of `added_tokens`, as the `tokenizers` crate's `AddedVocabulary` keeps it.
struct AddedToken {
    content: String,
    special: bool,
    strips: bool,
}

/// `added_tokens` with ids assigned as `AddedVocabulary::add_tokens` assigns them: a repeated
/// content keeps its first id (its last flags win), a model token keeps its model id, a new
/// one gets the next id after the model's vocabulary.
struct AddedTokens {
    tokens: Vec<(u32, AddedToken)>,
    max_id: Option<u32>,
    /// Added tokens that are not model tokens.
    new_count: usize,
}

impl AddedTokens {
    fn from_json(v: &Value, model: Option<&VocabMap>) -> AddedTokens {
        let model_len = model.map_or(0, |m| m.len()) as u32;
        let mut tokens: Vec<(u32, AddedToken)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut next_id = model_len;
        let mut new_count = 0;
        for t in v.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(content) = t.get("content").and_then(Value::as_str) else { continue };
            if content.is_empty() {
                continue;
            }
            let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
            let token = AddedToken { content: content.to_string(), special: flag("special"), strips: flag("lstrip") || flag("rstrip") };
            if let Some(&i) = index.get(content) {
                tokens[i].1 = token;
                continue;
            }
            let id = match model.and_then(|m| m.get(content)) {
                Some(&id) => id,
                None => {
                    next_id += 1;
                    new_count += 1;
                    next_id - 1
                }
            };
            index.insert(content.to_string(), tokens.len());
            tokens.push((id, token));
        }
        let max_id = tokens.iter().map(|(id, _)| *id).max();
        AddedTokens { tokens, max_id, new_count }
    }
}

type VocabMap<'a> = FxHashMap<&'a str, u32>;

/// The model's vocabulary of `parsed`, if it has one of integer ids.
fn model_vocab<'a>(parsed: &'a TokenizerJson) -> Option<VocabMap<'a>> {
    parsed.model.as_ref().and_then(|m| m.vocab.as_deref()).map(vocab_map)
}

/// The vocabulary as a map, deduplicated as the `tokenizers` crate reads it (a later entry for
/// the same token wins).
fn vocab_map<'a>(entries: &'a [(Cow<'a, str>, u64)]) -> VocabMap<'a> {
    let mut map = VocabMap::with_capacity_and_hasher(entries.len(), Default::default());
    for (token, id) in entries {
        map.insert(token.as_ref(), *id as u32);
    }
    map
}

/// Byte lengths for byte-level BPE files whose normalizer, if any, is NFC and whose added tokens
/// strip no whitespace (those cover more bytes than their text); the tokenizer's own offsets
/// otherwise.
fn detect_offsets(parsed: &TokenizerJson, vocab: Option<&VocabMap>, added: &AddedTokens, size: usize) -> OffsetSource {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let pre = &parsed.pre_tokenizer;
    let byte_level = kind(pre) == "ByteLevel"
        || pre.get("pretokenizers").and_then(Value::as_array).is_some_and(|list| list.iter().any(|p| kind(p) == "ByteLevel"));
    let bpe = parsed.model.as_ref().and_then(|m| m.kind()) == Some("BPE");
    let nfc = match parsed.normalizer.is_null() {
        true => false,
        false if kind(&parsed.normalizer) == "NFC" => true,
        false => return OffsetSource::Tokenizer,
    };
    let stripping = added.tokens.iter().any(|(_, t)| t.strips);
    let Some(vocab) = vocab else { return OffsetSource::Tokenizer };
    if !byte_level || !bpe || stripping {
        return OffsetSource::Tokenizer;
    }
    let mut lengths = vec![0u32; size.max(1)];
    for (token, &id) in vocab {
        // Each character of a byte-level token stands for exactly one byte.
        if let Some(slot) = lengths.get_mut(id as usize) {
            *slot = token.chars().count() as u32;
        }
    }
    for (id, token) in &added.tokens {
        if (*id as usize) >= lengths.len() {
            lengths.resize(*id as usize + 1, 0);
        }
        lengths[*id as usize] = token.content.len() as u32;
    }
    OffsetSource::ByteLengths { lengths, nfc }
}

/// The `tokenizers` crate's tokenizer of the file, built once, on first use or ahead of it on a
/// background thread.
pub struct Reference {
    file: PathBuf,
    bytes: Arc<[u8]>,
    building: Mutex<Option<JoinHandle<std::result::Result<Tokenizer, String>>>>,
    built: OnceLock<std::result::Result<Tokenizer, String>>,
}

impl Reference {
    fn new(file: PathBuf, bytes: Arc<[u8]>) -> Reference {
        Reference { file, bytes, building: Mutex::new(None), built: OnceLock::new() }
    }

    /// Starts building on a background thread (unless built or started already).
    fn start(&self) {
        if self.built.get().is_some() {
            return;
        }
        if let Ok(mut building) = self.building.lock() {
            if building.is_none() {
                let bytes = self.bytes.clone();
                *building = Some(std::thread::spawn(move || build_reference(&bytes)));
            }
        }
    }

    /// Whether the reference has been built or is being built (tests: a cached load must not).
    pub fn started(&self) -> bool {
        self.built.get().is_some() || self.building.lock().is_ok_and(|h| h.is_some())
    }

    pub fn get(&self) -> Result<&Tokenizer> {
        let built = self.built.get_or_init(|| {
            let handle = self.building.lock().map(|mut h| h.take()).unwrap_or(None);
            match handle {
                Some(h) => h.join().unwrap_or_else(|_| Err("the tokenizer failed to load".to_string())),
                None => build_reference(&self.bytes),
            }
        });
        built.as_ref().map_err(|detail| Error::Tokenizer { path: self.file.clone(), detail: detail.clone() })
    }

    /// `Tokenizer::encode_fast` of the reference (built if needed).
    pub fn encode_fast(&self, text: &str, add_special_tokens: bool) -> tokenizers::Result<Encoding> {
        self.get().map_err(|e| e.to_string())?.encode_fast(text, add_special_tokens)
    }

    /// `Tokenizer::encode` of the reference (built if needed).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> tokenizers::Result<Encoding> {
        self.get().map_err(|e| e.to_string())?.encode(text, add_special_tokens)
    }
}

/// The file through the `tokenizers` crate, with `trim_offsets` off in every ByteLevel
/// post-processor: trimming makes whitespace-only tokens report empty ranges (and so fall out of
/// the mask). It changes only offsets, never ids.
pub(crate) fn build_reference(bytes: &[u8]) -> std::result::Result<Tokenizer, String> {
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| format!("not a tokenizers file: {e}"))?;
    if let Some(post) = tokenizer.get_post_processor() {
        let mut json = serde_json::to_value(post).map_err(|e| e.to_string())?;
        if untrim_offsets(&mut json) {
            let patched: tokenizers::processors::PostProcessorWrapper = serde_json::from_value(json).map_err(|e| e.to_string())?;
            tokenizer.with_post_processor(Some(patched));
        }
    }
    tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Sets `trim_offsets: false` in every ByteLevel processor; true if it changed anything.
pub(crate) fn untrim_offsets(processor: &mut Value) -> bool {
    let mut changed = false;
    if processor.get("type").and_then(Value::as_str) == Some("ByteLevel") && processor.get("trim_offsets") != Some(&Value::Bool(false)) {
        processor["trim_offsets"] = Value::Bool(false);
        changed = true;
    }
    if let Some(Value::Array(list)) = processor.get_mut("processors") {
        for p in list.iter_mut() {
            changed |= untrim_offsets(p);
        }
    }
    changed
}

#[path = "tokenizer_entry.rs"]
mod entry;

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
