//! SentencePiece-style BPE (Llama 2 / Mistral / TinyLlama / Phi-3 / Gemma): spaces become `▁`
//! (a `Metaspace` pre-tokenizer or a `Replace`/`Prepend` normalizer) and the model runs on the
//! whole piece between added tokens — one "word" that can be a paragraph long.
//!
//! Speed without changing the result: the piece is cut before every `▁` that follows another
//! character, when the merge table has no merge `(a, b)` with `b` starting with `▁` and `a` not
//! ending with it (checked at load; true of all shipped vocabularies). Then no merge can ever
//! join the two sides, and BPE on each side gives the same tokens as on the whole, so segments
//! can be cached like words.

use serde_json::Value;

use super::cache::WordCache;
use super::json::MergeJson;
use super::model::Model;

pub const METASPACE: char = '\u{2581}';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrependScheme {
    Always,
    First,
    Never,
}

/// `Metaspace` with `split: false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metaspace {
    pub prepend: PrependScheme,
}

impl Metaspace {
    /// `None` unless the replacement is `▁` and `split` is false (the shipped configurations).
    pub fn from_json(v: &Value) -> Option<Metaspace> {
        if v.get("replacement")?.as_str()? != METASPACE.to_string() {
            return None;
        }
        // Defaults as in `tokenizers`: split true, prepend_scheme always; add_prefix_space:
        // false means never (and must agree with the scheme).
        if v.get("split").and_then(Value::as_bool).unwrap_or(true) {
            return None;
        }
        let mut prepend = match v.get("prepend_scheme").and_then(Value::as_str).unwrap_or("always") {
            "always" => PrependScheme::Always,
            "first" => PrependScheme::First,
            "never" => PrependScheme::Never,
            _ => return None,
        };
        if v.get("add_prefix_space").and_then(Value::as_bool) == Some(false) {
            if prepend != PrependScheme::Never {
                return None;
            }
            prepend = PrependScheme::Never;
        }
        Some(Metaspace { prepend })
    }

    /// The piece as the model sees it. `at_origin`: the piece starts at byte 0 of the input.
    pub fn apply(&self, piece: &str, at_origin: bool) -> String {
        let replaced = piece.replace(' ', "\u{2581}");
        let prepend = match self.prepend {
            PrependScheme::Always => true,
            PrependScheme::First => at_origin,
            PrependScheme::Never => false,
        };
        if prepend && !replaced.starts_with(METASPACE) {
            let mut s = String::with_capacity(replaced.len() + 3);
            s.push(METASPACE);
            s.push_str(&replaced);
            s
        } else {
            replaced
        }
    }
}

/// Whether cutting before `▁` is safe for this merge table (see the module doc).
pub fn can_segment(merges: &[MergeJson]) -> bool {
    merges.iter().all(|pair| {
        let (a, b) = match pair {
            MergeJson::Joined(s) => match s.split_once(' ') {
                Some(p) => p,
                None => return false,
            },
            MergeJson::Pair(a, b) => (a.as_ref(), b.as_ref()),
            MergeJson::Invalid => return false,
        };
        !b.starts_with(METASPACE) || a.ends_with(METASPACE)
    })
}

/// Ids of one whole piece, cut into segments when `segment`, each cached.
pub fn encode_piece(
    model: &Model,
    piece: &str,
    segment: bool,
    cache: &mut WordCache,
    scratch: &mut Vec<u32>,
    out: &mut Vec<u32>,
) {
    if piece.is_empty() {
        return;
    }
    if !segment {
        model.char_level_word(piece, &mut cache.pairs, scratch, out);
        return;
    }
    let mut start = 0;
    let mut prev_is_meta = true;
    for (i, c) in piece.char_indices() {
        let is_meta = c == METASPACE;
        if is_meta && !prev_is_meta && i > start {
            encode_segment(model, &piece[start..i], cache, scratch, out);
            start = i;
        }
        prev_is_meta = is_meta;
    }
    encode_segment(model, &piece[start..], cache, scratch, out);
}

fn encode_segment(model: &Model, seg: &str, cache: &mut WordCache, scratch: &mut Vec<u32>, out: &mut Vec<u32>) {
    if let Some(ids) = cache.get(seg.as_bytes()) {
        out.extend_from_slice(ids);
        return;
    }
    let from = out.len();
    model.char_level_word(seg, &mut cache.pairs, scratch, out);
    cache.insert(seg.as_bytes(), &out[from..]);
}
