//! Byte offsets of SentencePiece-style tokens (Llama 2 / Mistral / TinyLlama / Phi-3 / Gemma),
//! exactly as the `tokenizers` crate's `encode(text, false)` reports them, so that masks can be
//! drawn from fastbpe's output without running the crate.
//!
//! What the crate does, and so what this reproduces (`NormalizedString` alignments,
//! `BPE::merge_word`, `PreTokenizedString::into_encoding`):
//! - every byte of the normalized piece is aligned to the original character it came from: a
//!   space replaced by `▁` gives three bytes aligned to that one space; a prepended `▁` (by a
//!   `Prepend` normalizer or the `Metaspace` pre-tokenizer) is aligned to the piece's first
//!   character;
//! - a token covers the normalized bytes of its string, except a byte-fallback token `<0xNN>`,
//!   which covers one byte (so each byte token of a character reports the whole character);
//! - a token's offsets are the start of its first byte's alignment and the end of its last's;
//! - an added token's offsets are its match, widened over the whitespace it strips.
//!
//! Supported layouts (`OffsetPlan::new` refuses anything else): a `Replace(" ", "▁")`
//! normalizer, optionally with one `Prepend`, and no pre-tokenizer (Mistral v0.1, Phi-3, and
//! Gemma, whose `Split` on " " finds nothing after that normalizer); or no normalizer and a
//! `Metaspace` pre-tokenizer (Mistral v0.3, TinyLlama). The model must have every `<0xNN>` byte
//! token (so it never emits `unk`) and no merge may produce one (so a byte token's length is
//! never ambiguous).
//!
//! Every piece is checked as it is walked: each token's string must equal the normalized bytes
//! it is placed on, and the tokens must cover the piece exactly. A piece that fails the check
//! makes [`super::FastTokenizer::encode_with_offsets`] return `None`, and the caller falls back
//! to the `tokenizers` crate: offsets are never guessed.

use super::cache::FxHashMap;
use super::json::{MergeJson, ModelJson};
use super::model::Model;
use super::normalize::{Normalizer, Step};
use super::sentencepiece::METASPACE;
use super::tables::{Reader, Writer};

/// What `▁` stands for in the original text.
const SPACE: u8 = b' ';
const METASPACE_LEN: usize = METASPACE.len_utf8();

/// A token's normalized bytes: `len` bytes at `offset` in the arena, or, when `len` is 0, the one
/// byte `offset` of a byte-fallback token.
#[derive(Clone, Copy)]
struct TokenText {
    offset: u32,
    len: u32,
}

const NO_TEXT: TokenText = TokenText { offset: u32::MAX, len: u32::MAX };

pub struct OffsetPlan {
    texts: Vec<TokenText>,
    arena: Vec<u8>,
}

impl OffsetPlan {
    pub(super) fn write(&self, w: &mut Writer) {
        let flat: Vec<u32> = self.texts.iter().flat_map(|t| [t.offset, t.len]).collect();
        w.u32s(&flat);
        w.bytes(&self.arena);
    }

    /// `None` unless every token's text lies inside the arena.
    pub(super) fn read(r: &mut Reader) -> Option<OffsetPlan> {
        let flat = r.u32s().filter(|f| f.len() % 2 == 0)?;
        let arena = r.bytes()?.to_vec();
        let texts: Vec<TokenText> = flat.chunks_exact(2).map(|c| TokenText { offset: c[0], len: c[1] }).collect();
        let fits = |t: &TokenText| {
            (t.offset, t.len) == (NO_TEXT.offset, NO_TEXT.len)
                || t.len == 0
                || (t.offset as usize).checked_add(t.len as usize).is_some_and(|end| end <= arena.len())
        };
        texts.iter().all(fits).then_some(OffsetPlan { texts, arena })
    }
}

impl OffsetPlan {
    /// The plan for a SentencePiece-style file, or `None` when its layout is not one whose
    /// offsets this module reproduces (see the module doc).
    pub fn new(model_json: &ModelJson, model: &Model, normalizer: &Normalizer, metaspace: bool, normalized_tokens: bool) -> Option<OffsetPlan> {
        if normalized_tokens {
            return None; // added tokens matched inside normalized text: not implemented
        }
        let replace = |s: &Step| matches!(s, Step::Replace(from, to) if from == " " && to == "\u{2581}");
        let prepend = |s: &Step| matches!(s, Step::Prepend(p) if !p.is_empty());
        let layout_ok = match (metaspace, normalizer.steps.as_slice()) {
            (true, []) => true,
            (false, [r]) => replace(r),
            (false, [a, b]) => (prepend(a) && replace(b)) || (replace(a) && prepend(b)),
            _ => false,
        };
        if !layout_ok {
            return None;
        }
        let fallback = model.byte_fallback.as_ref()?;
        // A missing byte token would make the model emit `unk` (whose length is not its
        // string's), unless the byte is an ASCII character that is a token itself (Gemma has
        // `\t` and no `<0x09>`): no other character holds that byte.
        let spelled = |b: usize| b < 0x80 && model.token_id(&[b as u8]).is_some();
        if fallback.iter().enumerate().any(|(b, id)| id.is_none() && !spelled(b)) {
            return None;
        }
        if produces_byte_token(model_json.merges.as_deref()?) {
            return None;
        }
        // id → string, deduplicated as the crate reads the vocabulary (a later entry wins).
        let mut by_string: FxHashMap<&str, u32> = FxHashMap::default();
        for (s, id) in model_json.vocab.as_ref()? {
            by_string.insert(s.as_ref(), u32::try_from(*id).ok()?);
        }
        let size = by_string.values().max().map_or(0, |&m| m as usize + 1);
        let mut texts = vec![NO_TEXT; size];
        let mut arena = Vec::with_capacity(by_string.keys().map(|s| s.len()).sum());
        for (s, &id) in &by_string {
            texts[id as usize] = TokenText { offset: u32::try_from(arena.len()).ok()?, len: s.len() as u32 };
            arena.extend_from_slice(s.as_bytes());
        }
        for (b, id) in fallback.iter().enumerate() {
            if let Some(id) = id {
                texts[*id as usize] = TokenText { offset: b as u32, len: 0 };
            }
        }
        Some(OffsetPlan { texts, arena })
    }

    /// Appends the offsets of `ids`, the model's tokens of one piece: `raw` is the piece as it
    /// is in the input (starting at byte `base`), `normalized` what the model saw (the prefix,
    /// then `raw` with every space as `▁`). False when the tokens do not spell `normalized`.
    pub fn piece(&self, raw: &str, base: usize, normalized: &str, ids: &[u32], out: &mut Vec<(usize, usize)>) -> bool {
        let (raw, norm) = (raw.as_bytes(), normalized.as_bytes());
        let spaces = memchr::memchr_iter(SPACE, raw).count();
        let mapped = raw.len() + spaces * (METASPACE_LEN - 1);
        let Some(prefix) = norm.len().checked_sub(mapped) else { return false };
        if raw.is_empty() {
            return ids.is_empty();
        }
        let mut cursor = Cursor { q: prefix, r: 0, next_space: next_space(raw, 0), prefix };
        let mut q = 0;
        for &id in ids {
            let Some(text) = self.texts.get(id as usize).copied() else { return false };
            let len = match text.len {
                0 => (norm.get(q) == Some(&(text.offset as u8))).then_some(1),
                u32::MAX => None,
                n => {
                    let n = n as usize;
                    let want = &self.arena[text.offset as usize..text.offset as usize + n];
                    (norm.get(q..q + n) == Some(want)).then_some(n)
                }
            };
            let Some(len) = len else { return false };
            let start = char_start(raw, cursor.locate(raw, q));
            let end = char_end(raw, cursor.locate(raw, q + len - 1));
            out.push((base + start, base + end));
            q += len;
        }
        q == norm.len()
    }
}

/// Whether a merge's result is spelled like a byte-fallback token `<0xNN>`.
fn produces_byte_token(merges: &[MergeJson]) -> bool {
    merges.iter().any(|m| {
        let (a, b) = match m {
            MergeJson::Joined(s) => s.split_once(' ').unwrap_or((s, "")),
            MergeJson::Pair(a, b) => (a.as_ref(), b.as_ref()),
            MergeJson::Invalid => return true,
        };
        if a.len() + b.len() != 6 {
            return false;
        }
        let mut joined = [0u8; 6];
        joined[..a.len()].copy_from_slice(a.as_bytes());
        joined[a.len()..].copy_from_slice(b.as_bytes());
        joined.starts_with(b"<0x") && joined[5] == b'>' && joined[3..5].iter().all(u8::is_ascii_hexdigit)
    })
}

/// Walks the normalized piece and the raw one together, forward only: normalized byte `q` is raw
/// byte `r`, at the start of a character or inside one whose bytes are unchanged.
struct Cursor {
    q: usize,
    r: usize,
    /// The first space at or after `r` (or the end).
    next_space: usize,
    prefix: usize,
}

impl Cursor {
    /// The raw byte that normalized byte `p` (never before the previous call's) belongs to.
    fn locate(&mut self, raw: &[u8], p: usize) -> usize {
        if p < self.prefix {
            return 0; // the prepended `▁` belongs to the first character
        }
        loop {
            let run = self.next_space - self.r;
            if p < self.q + run {
                self.r += p - self.q;
                self.q = p;
                return self.r;
            }
            self.q += run;
            self.r = self.next_space;
            if p < self.q + METASPACE_LEN {
                return self.r; // inside the `▁` standing for this space
            }
            self.q += METASPACE_LEN;
            self.r += 1;
            self.next_space = next_space(raw, self.r);
        }
    }
}

fn next_space(raw: &[u8], from: usize) -> usize {
    memchr::memchr(SPACE, &raw[from..]).map_or(raw.len(), |i| from + i)
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The start of the character holding byte `i`.
fn char_start(raw: &[u8], mut i: usize) -> usize {
    while i > 0 && is_continuation(raw[i]) {
        i -= 1;
    }
    i
}

/// The end of the character holding byte `i`.
fn char_end(raw: &[u8], i: usize) -> usize {
    let mut e = i + 1;
    while e < raw.len() && is_continuation(raw[e]) {
        e += 1;
    }
    e
}
