//! fastbpe: an exact, faster re-implementation of the `tokenizers` crate's `encode(text, false)`
//! for the BPE tokenizers fastsft ships, used when it supports a `tokenizer.json` completely
//! ([`FastTokenizer::from_tokenizer_json`] returns `None` otherwise, and the caller falls back to
//! the `tokenizers` crate).
//!
//! Same pipeline, same order as `tokenizers`: added tokens are cut out of the raw text
//! (`added`), each piece between them is normalized (`normalize`), pre-tokenized into words by a
//! hand-written equivalent of the split regex (`pretokenize`, byte-level) or turned into one
//! `▁`-piece (`sentencepiece`), and each word goes through BPE (`model`, `bpe`) behind a
//! per-thread word cache (`cache`). What makes it faster: no regex engine, no offset bookkeeping,
//! no per-token strings, NFC only for text that is not already NFC, merge lookups in a compact
//! table behind a per-thread pair cache (`bpe`, `cache`), a trie for added tokens.
//!
//! Exactness is tested against the `tokenizers` crate: every code point through the split
//! patterns and classes, the shipped corpora, fuzzed text (`tests/fastbpe_parity.rs`), and the
//! full corpora for every shipped tokenizer (`cargo run --release --example fastbpe_parity`).
//! Speed: `cargo run --release --example tokenizer_speed` (results in `benches/fastbpe.md`).
//!
//! Offsets: byte-level callers derive them from each token's byte length; for the SentencePiece
//! layouts `encode_with_offsets` reports the `tokenizers` crate's own offsets (`offsets`), checked
//! piece by piece as they are computed.
//!
//! Supported: `model` BPE (no dropout, no subword prefix/suffix), normalizer null / NFC /
//! `Prepend` / literal `Replace` / `Sequence` of these; pre-tokenizer `Sequence[Split(Qwen or
//! Llama 3 regex, Isolated), ByteLevel(use_regex: false)]`, `ByteLevel(use_regex: true)` (GPT-2),
//! `Metaspace(split: false)`, none; added tokens with `lstrip`/`rstrip`/`normalized` (not
//! `single_word`); no truncation or padding in the file.

mod added;
mod bpe;
mod cache;
mod classes;
pub mod json;
mod model;
mod normalize;
mod nfc_offsets;
mod offsets;
mod pretokenize;
mod sentencepiece;
pub mod tables;
#[rustfmt::skip]
mod unicode_data;
mod vocab;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use added::{Matcher, Segment, Strip};
pub use cache::FxHashMap;
pub use json::TokenizerJson;
pub use normalize::nfc_leaves_unchanged;
use cache::{with_cache, WordCache};
use model::Model;
use normalize::Normalizer;
use offsets::OffsetPlan;
use pretokenize::Pattern;
use sentencepiece::Metaspace;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// What turns a normalized piece into model input.
#[derive(Debug, Clone, Copy)]
enum PreTokenizer {
    /// Split into words by the pattern, then byte-level BPE per word.
    ByteLevel(Pattern),
    /// `Metaspace(split: false)`, then the whole piece through the char-level model.
    Metaspace(Metaspace),
    /// The whole (normalized) piece through the char-level model.
    Whole,
}

pub struct FastTokenizer {
    instance: u64,
    /// Added tokens with `normalized: false`, matched in the raw text.
    raw_tokens: Option<Matcher>,
    /// Added tokens with `normalized: true`, matched in each normalized piece.
    normalized_tokens: Option<Matcher>,
    normalizer: Normalizer,
    pre_tokenizer: PreTokenizer,
    model: Model,
    /// SentencePiece: pieces may be cut before `▁` (see `sentencepiece`).
    segment: bool,
    /// SentencePiece layouts whose token offsets fastbpe reproduces (see `offsets`).
    offsets: Option<OffsetPlan>,
}

/// Token ids and their byte offsets in the input.
pub type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

impl FastTokenizer {
    /// Builds the fast tokenizer from the bytes of a `tokenizer.json`, or `None` if anything in
    /// it is not implemented here exactly (then use the `tokenizers` crate).
    pub fn from_tokenizer_json(json: &[u8]) -> Option<FastTokenizer> {
        FastTokenizer::from_parsed(&TokenizerJson::parse(json).ok()?)
    }

    /// [`FastTokenizer::from_tokenizer_json`] of a file already parsed.
    pub fn from_parsed(root: &TokenizerJson) -> Option<FastTokenizer> {
        if let Some(v) = &root.version {
            if v.as_str() != Some("1.0") {
                return None;
            }
        }
        if !root.truncation.is_null() || !root.padding.is_null() {
            return None;
        }
        if !post_processor_keeps_ids(&root.post_processor) {
            return None;
        }
        let normalizer = Normalizer::from_json(&root.normalizer)?;
        let pre_tokenizer = parse_pre_tokenizer(&root.pre_tokenizer, &normalizer)?;
        let byte_level = matches!(pre_tokenizer, PreTokenizer::ByteLevel(_));
        let model_json = root.model.as_ref()?;
        let model = Model::from_parsed(model_json, byte_level)?;
        if byte_level && model.byte_fallback.is_some() {
            return None; // never needed: byte-level vocabularies hold every byte
        }
        if matches!(pre_tokenizer, PreTokenizer::Metaspace(m) if m.prepend == sentencepiece::PrependScheme::First)
            && !normalizer.is_identity()
        {
            return None; // "first" needs original offsets through a normalizer
        }
        let segment = !byte_level && !model.ignore_merges && sentencepiece::can_segment(model_json.merges.as_deref()?);
        let (raw_tokens, normalized_tokens) = added_tokens(&root.added_tokens, &model, &normalizer)?;
        let offsets = match pre_tokenizer {
            PreTokenizer::ByteLevel(_) => None,
            PreTokenizer::Metaspace(_) | PreTokenizer::Whole => {
                let metaspace = matches!(pre_tokenizer, PreTokenizer::Metaspace(_));
                OffsetPlan::new(model_json, &model, &normalizer, metaspace, normalized_tokens.is_some())
            }
        };
        Some(FastTokenizer::assemble((raw_tokens, normalized_tokens), normalizer, pre_tokenizer, model, segment, offsets))
    }

    /// The one place a `FastTokenizer` is put together, built from a file or read from a cache.
    fn assemble(
        (raw_tokens, normalized_tokens): (Option<Matcher>, Option<Matcher>),
        normalizer: Normalizer,
        pre_tokenizer: PreTokenizer,
        model: Model,
        segment: bool,
        offsets: Option<OffsetPlan>,
    ) -> FastTokenizer {
        classes::init();
        FastTokenizer {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            raw_tokens,
            normalized_tokens,
            normalizer,
            pre_tokenizer,
            model,
            segment,
            offsets,
        }
    }

    /// The built tables (model, offset plan) as bytes, for [`FastTokenizer::from_tables`].
    pub fn write_tables(&self, w: &mut tables::Writer) {
        self.model.write(w);
        w.bool(self.segment);
        w.bool(self.offsets.is_some());
        if let Some(plan) = &self.offsets {
            plan.write(w);
        }
    }

    /// The fast tokenizer of a file whose tables [`FastTokenizer::write_tables`] wrote, with the
    /// small parts (normalizer, pre-tokenizer, added tokens) built from `root`'s sections, as
    /// [`FastTokenizer::from_parsed`] builds them; `root` needs no vocabulary or merges. `None`
    /// for tables that do not read back whole, or sections this build would not accept.
    pub fn from_tables(root: &TokenizerJson, r: &mut tables::Reader) -> Option<FastTokenizer> {
        let normalizer = Normalizer::from_json(&root.normalizer)?;
        let pre_tokenizer = parse_pre_tokenizer(&root.pre_tokenizer, &normalizer)?;
        let model = Model::read(r)?;
        let segment = r.bool()?;
        let offsets = match r.bool()? {
            true => Some(OffsetPlan::read(r)?),
            false => None,
        };
        let added = added_tokens(&root.added_tokens, &model, &normalizer)?;
        Some(FastTokenizer::assemble(added, normalizer, pre_tokenizer, model, segment, offsets))
    }

    /// Whether [`FastTokenizer::encode_with_offsets`] serves this file (the SentencePiece
    /// layouts of `offsets`; byte-level offsets are each token's byte length, see
    /// `crate::tokenizer::OffsetSource`).
    pub fn has_offsets(&self) -> bool {
        self.offsets.is_some()
    }

    /// The ids of `tokenizers::Tokenizer::encode(text, false)` and the byte offsets that encoding
    /// reports, or `None` when this file has no offset plan or a piece fails the plan's check.
    pub fn encode_with_offsets(&self, text: &str) -> Option<IdsAndOffsets> {
        let plan = self.offsets.as_ref()?;
        let mut scratch = Vec::new();
        self.encode_pieces_with_offsets(text, |start, end, cache, ids, offsets| {
            let raw = &text[start..end];
            let normalized = self.normalizer.apply(raw);
            let model_input = match self.pre_tokenizer {
                PreTokenizer::Metaspace(m) => Cow::Owned(m.apply(&normalized, start == 0)),
                _ => normalized,
            };
            let from = ids.len();
            sentencepiece::encode_piece(&self.model, &model_input, self.segment, cache, &mut scratch, ids);
            plan.piece(raw, start, &model_input, &ids[from..], offsets)
        })
    }

    /// Ids and offsets of `text`: raw added tokens cut out with their own offsets, and each piece
    /// between them given to `piece(start, end, ...)`, which appends its ids and offsets and says
    /// whether its check passed; `None` as soon as one fails.
    fn encode_pieces_with_offsets(
        &self,
        text: &str,
        mut piece: impl FnMut(usize, usize, &mut WordCache, &mut Vec<u32>, &mut Vec<(usize, usize)>) -> bool,
    ) -> Option<IdsAndOffsets> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        let mut offsets = Vec::with_capacity(ids.capacity());
        let mut consistent = true;
        with_cache(self.instance, |cache| match &self.raw_tokens {
            None => {
                if !text.is_empty() {
                    consistent = piece(0, text.len(), cache, &mut ids, &mut offsets);
                }
            }
            Some(m) => m.split(text, |seg| match seg {
                Segment::Token(id, start, end) => {
                    ids.push(id);
                    offsets.push((start, end));
                }
                Segment::Text(a, b) => consistent = consistent && piece(a, b, cache, &mut ids, &mut offsets),
            }),
        });
        consistent.then_some((ids, offsets))
    }

    /// The ids of `tokenizers::Tokenizer::encode(text, false)`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        let mut scratch = Vec::new();
        with_cache(self.instance, |cache| {
            let mut piece = |start: usize, end: usize, out: &mut Vec<u32>| {
                self.encode_piece(&text[start..end], start == 0, cache, &mut scratch, out)
            };
            match &self.raw_tokens {
                None => {
                    if !text.is_empty() {
                        piece(0, text.len(), &mut out)
                    }
                }
                Some(m) => m.split(text, |seg| match seg {
                    Segment::Token(id, ..) => out.push(id),
                    Segment::Text(a, b) => piece(a, b, &mut out),
                }),
            }
        });
        out
    }

    /// A non-empty piece of raw text between added tokens.
    fn encode_piece(
        &self,
        raw: &str,
        at_origin: bool,
        cache: &mut WordCache,
        scratch: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) {
        let normalized = self.normalizer.apply(raw);
        match &self.normalized_tokens {
            None => self.encode_normalized(&normalized, at_origin, cache, scratch, out),
            Some(m) => m.split(&normalized, |seg| match seg {
                Segment::Token(id, ..) => out.push(id),
                Segment::Text(a, b) => {
                    self.encode_normalized(&normalized[a..b], at_origin && a == 0, cache, scratch, out)
                }
            }),
        }
    }

    fn encode_normalized(
        &self,
        s: &str,
        at_origin: bool,
        cache: &mut WordCache,
        scratch: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) {
        if s.is_empty() {
            return;
        }
        match self.pre_tokenizer {
            PreTokenizer::ByteLevel(pattern) => pattern.split(s, |a, b| {
                let word = &s.as_bytes()[a..b];
                if word.len() == 1 {
                    out.push(self.model.byte_ids[word[0] as usize]);
                } else if let Some(ids) = cache.get(word) {
                    out.extend_from_slice(ids);
                } else {
                    let from = out.len();
                    self.model.byte_level_word(word, &mut cache.pairs, scratch, out);
                    cache.insert(word, &out[from..]);
                }
            }),
            PreTokenizer::Metaspace(m) => {
                let piece = m.apply(s, at_origin);
                sentencepiece::encode_piece(&self.model, &piece, self.segment, cache, scratch, out)
            }
            PreTokenizer::Whole => sentencepiece::encode_piece(&self.model, s, self.segment, cache, scratch, out),
        }
    }
}

/// Post-processors that, with `add_special_tokens=false`, change offsets or type ids only.
fn post_processor_keeps_ids(v: &Value) -> bool {
    match v.get("type").and_then(Value::as_str) {
        None => v.is_null(),
        Some("ByteLevel" | "TemplateProcessing" | "RobertaProcessing" | "BertProcessing") => true,
        Some("Sequence") => {
            v.get("processors").and_then(Value::as_array).is_some_and(|ps| ps.iter().all(post_processor_keeps_ids))
        }
        Some(_) => false,
    }
}

fn parse_pre_tokenizer(v: &Value, normalizer: &Normalizer) -> Option<PreTokenizer> {
    if v.is_null() {
        return Some(PreTokenizer::Whole);
    }
    let byte_level_ok = |b: &Value, use_regex: bool| {
        b.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && b.get("add_prefix_space").and_then(Value::as_bool) == Some(false)
            && b.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == use_regex
    };
    match v.get("type")?.as_str()? {
        "ByteLevel" if byte_level_ok(v, true) => Some(PreTokenizer::ByteLevel(Pattern::Gpt2)),
        "Sequence" => {
            let items = v.get("pretokenizers")?.as_array()?;
            let [split, byte_level] = items.as_slice() else { return None };
            if split.get("type")?.as_str()? != "Split"
                || split.get("behavior")?.as_str()? != "Isolated"
                || split.get("invert")?.as_bool()?
                || !byte_level_ok(byte_level, false)
            {
                return None;
            }
            let regex = split.get("pattern")?.get("Regex")?.as_str()?;
            Some(PreTokenizer::ByteLevel(Pattern::from_regex(regex)?))
        }
        "Metaspace" => Some(PreTokenizer::Metaspace(Metaspace::from_json(v)?)),
        // Gemma: a split on " " after a normalizer that has replaced every " " finds nothing.
        "Split" => {
            let pattern = v.get("pattern")?.get("String")?.as_str()?;
            let removed = matches!(normalizer.steps.last(),
                Some(normalize::Step::Replace(from, to)) if from == pattern && !to.contains(pattern));
            if removed && !v.get("invert")?.as_bool()? {
                Some(PreTokenizer::Whole)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The two added-token matchers, with ids assigned as `AddedVocabulary::add_tokens` assigns
/// them: an existing added or model token keeps its id, a new one gets the next free id.
fn added_tokens(v: &Value, model: &Model, normalizer: &Normalizer) -> Option<(Option<Matcher>, Option<Matcher>)> {
    if v.is_null() {
        return Some((None, None));
    }
    struct Token {
        id: u32,
        strip: Strip,
        normalized: bool,
    }
    let mut by_content: FxHashMap<String, Token> = FxHashMap::default();
    let mut order: Vec<String> = Vec::new();
    let mut next_id = model.vocab_len as u32;
    for t in v.as_array()? {
        let content = t.get("content")?.as_str()?;
        let flag = |k: &str| t.get(k).and_then(Value::as_bool);
        if flag("single_word")? {
            return None;
        }
        if content.is_empty() {
            continue;
        }
        let token = |id| Token {
            id,
            strip: Strip { lstrip: flag("lstrip").unwrap_or(false), rstrip: flag("rstrip").unwrap_or(false) },
            normalized: flag("normalized").unwrap_or(true),
        };
        if let Some(existing) = by_content.get(content) {
            let id = existing.id;
            by_content.insert(content.to_string(), token(id));
            continue;
        }
        let id = match model.json_token_id(content) {
            Some(id) => id,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        by_content.insert(content.to_string(), token(id));
        order.push(content.to_string());
    }
    let mut raw = Vec::new();
    let mut normalized = Vec::new();
    for content in order {
        let t = by_content.get(&content)?;
        if t.normalized {
            let pattern = normalizer.apply(&content).into_owned();
            if pattern.is_empty() {
                return None;
            }
            normalized.push((pattern, t.id, t.strip));
        } else {
            raw.push((content, t.id, t.strip));
        }
    }
    Some((Matcher::new(raw).ok()?, Matcher::new(normalized).ok()?))
}
