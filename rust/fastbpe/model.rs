//! The BPE model of `tokenizer.json` (`"type": "BPE"`): vocabulary, merge ranks, and the word →
//! ids step for both flavours.
//!
//! - Byte-level (GPT-2 family): a word's initial symbols are its bytes; the vocabulary is keyed
//!   by raw bytes (the GPT-2 byte↔unicode mapping is a bijection, so looking up the mapped string
//!   in the original vocabulary is the same as looking up the bytes here).
//! - SentencePiece-style: initial symbols are characters; a character missing from the
//!   vocabulary becomes `<0xXX>` byte tokens (`byte_fallback`) or `unk` (fused when `fuse_unk`),
//!   exactly as `BPE::merge_word` does.
//!
//! `ignore_merges` (Llama 3): a word that is itself in the vocabulary is that one token.

use serde_json::Value;

use super::bpe::Merges;
use super::cache::{FxHashMap, PairCache};
use super::json::{MergeJson, ModelJson};
use super::tables::{Reader, Writer};
use super::vocab::Vocab;

pub struct Model {
    /// Token string (raw bytes for byte-level models) → id.
    vocab: Vocab,
    /// SentencePiece: id of each BMP character that is a token (`u32::MAX` if none).
    char_ids: Vec<u32>,
    /// Entries in the JSON vocabulary (its `len()` numbers new added tokens).
    pub vocab_len: usize,
    pub merges: Merges,
    pub ignore_merges: bool,
    /// Byte-level: id of each byte's token.
    pub byte_ids: [u32; 256],
    /// SentencePiece: ids of `<0x00>`..`<0xFF>` (those in the vocabulary) when `byte_fallback`.
    pub byte_fallback: Option<[Option<u32>; 256]>,
    pub unk: Option<u32>,
    pub fuse_unk: bool,
    byte_level: bool,
}

/// GPT-2's byte → char table (`bytes_char` in `tokenizers`).
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

impl Model {
    /// Parses the model; `byte_level` re-keys the vocabulary by raw bytes. `None` for anything
    /// not implemented exactly (dropout, subword prefixes/suffixes, merges into unknown tokens).
    pub fn from_parsed(m: &ModelJson, byte_level: bool) -> Option<Model> {
        let obj = &m.fields;
        if m.kind() != Some("BPE") {
            return None;
        }
        for (key, v) in obj {
            let ok = match key.as_str() {
                "type" => true,
                "dropout" => v.is_null() || v.as_f64() == Some(0.0),
                "continuing_subword_prefix" | "end_of_word_suffix" => v.is_null() || v.as_str() == Some(""),
                "unk_token" => v.is_null() || v.is_string(),
                "fuse_unk" | "byte_fallback" | "ignore_merges" => v.is_null() || v.is_boolean(),
                _ => true, // ignored by the `tokenizers` crate as well
            };
            if !ok {
                return None;
            }
        }
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let json_vocab = m.vocab.as_ref()?;
        let mut by_string: FxHashMap<&str, u32> = FxHashMap::default();
        by_string.reserve(json_vocab.len());
        for (k, v) in json_vocab {
            by_string.insert(k.as_ref(), u32::try_from(*v).ok()?);
        }

        let merges_json = m.merges.as_ref()?;
        let mut merges = Merges::with_capacity(merges_json.len());
        let mut concat = String::new();
        for (rank, pair) in merges_json.iter().enumerate() {
            let (a, b) = match pair {
                MergeJson::Joined(s) => {
                    let mut parts = s.split(' ');
                    let (a, b) = (parts.next()?, parts.next()?);
                    if parts.next().is_some() {
                        return None;
                    }
                    (a, b)
                }
                MergeJson::Pair(a, b) => (a.as_ref(), b.as_ref()),
                MergeJson::Invalid => return None,
            };
            concat.clear();
            concat.push_str(a);
            concat.push_str(b);
            let (ia, ib, im) = (*by_string.get(a)?, *by_string.get(b)?, *by_string.get(concat.as_str())?);
            merges.insert(ia, ib, u32::try_from(rank).ok()?, im);
        }

        let mut vocab = Vocab::with_capacity(by_string.len());
        let mut char_ids = Vec::new();
        let mut byte_ids = [u32::MAX; 256];
        if byte_level {
            let table = byte_to_char();
            let mut char_to_byte: FxHashMap<char, u8> = FxHashMap::default();
            for (b, c) in table.iter().enumerate() {
                char_to_byte.insert(*c, b as u8);
            }
            for (s, &id) in &by_string {
                // Entries with chars outside the byte alphabet can never match a mapped word.
                let bytes: Option<Vec<u8>> = s.chars().map(|c| char_to_byte.get(&c).copied()).collect();
                if let Some(bytes) = bytes {
                    vocab.insert(&bytes, id);
                }
            }
            for (b, c) in table.iter().enumerate() {
                byte_ids[b] = *by_string.get(c.to_string().as_str())?;
            }
            merges.index_byte_pairs(&byte_ids);
        } else {
            char_ids = vec![u32::MAX; 0x10000];
            for (s, &id) in &by_string {
                vocab.insert(s.as_bytes(), id);
                let mut chars = s.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    if (c as u32) < 0x10000 {
                        char_ids[c as usize] = id;
                    }
                }
            }
        }

        let byte_fallback = if flag("byte_fallback") {
            let mut ids = [None; 256];
            for (b, slot) in ids.iter_mut().enumerate() {
                *slot = by_string.get(format!("<0x{b:02X}>").as_str()).copied();
            }
            Some(ids)
        } else {
            None
        };
        let unk = match obj.get("unk_token").and_then(Value::as_str) {
            Some(t) => Some(*by_string.get(t)?),
            None => None,
        };
        Some(Model {
            vocab_len: by_string.len(),
            vocab,
            char_ids,
            merges,
            ignore_merges: flag("ignore_merges"),
            byte_ids,
            byte_fallback,
            unk,
            fuse_unk: flag("fuse_unk"),
            byte_level,
        })
    }

    pub(super) fn write(&self, w: &mut Writer) {
        self.vocab.write(w);
        w.u32s(&self.char_ids);
        w.u64(self.vocab_len as u64);
        self.merges.write(w);
        w.bool(self.ignore_merges);
        w.u32s(&self.byte_ids);
        w.bool(self.byte_fallback.is_some());
        for id in self.byte_fallback.unwrap_or([None; 256]) {
            w.opt_u32(id);
        }
        w.opt_u32(self.unk);
        w.bool(self.fuse_unk);
        w.bool(self.byte_level);
    }

    pub(super) fn read(r: &mut Reader) -> Option<Model> {
        let vocab = Vocab::read(r)?;
        let char_ids = r.u32s().filter(|c| c.is_empty() || c.len() == 0x10000)?;
        let vocab_len = usize::try_from(r.u64()?).ok()?;
        let merges = Merges::read(r)?;
        let ignore_merges = r.bool()?;
        let byte_ids: [u32; 256] = r.u32s()?.try_into().ok()?;
        let has_fallback = r.bool()?;
        let mut fallback = [None; 256];
        for slot in fallback.iter_mut() {
            *slot = r.opt_u32()?;
        }
        Some(Model {
            vocab,
            char_ids,
            vocab_len,
            merges,
            ignore_merges,
            byte_ids,
            byte_fallback: has_fallback.then_some(fallback),
            unk: r.opt_u32()?,
            fuse_unk: r.bool()?,
            byte_level: r.bool()?,
        })
    }

    #[inline]
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.vocab.get(bytes)
    }

    /// Id of a token written as in the JSON vocabulary (byte-level: in mapped characters).
    pub fn json_token_id(&self, s: &str) -> Option<u32> {
        if !self.byte_level {
            return self.token_id(s.as_bytes());
        }
        let table = byte_to_char();
        let bytes: Option<Vec<u8>> = s.chars().map(|c| table.iter().position(|&t| t == c).map(|b| b as u8)).collect();
        self.token_id(&bytes?)
    }

    /// Byte-level: ids of one pre-tokenized word (non-empty), appended to `out`.
    pub fn byte_level_word(&self, word: &[u8], pairs: &mut PairCache, scratch: &mut Vec<u32>, out: &mut Vec<u32>) {
        if word.len() == 1 {
            out.push(self.byte_ids[word[0] as usize]);
            return;
        }
        if self.ignore_merges {
            if let Some(id) = self.token_id(word) {
                out.push(id);
                return;
            }
        }
        let merges = &self.merges;
        merges.apply_bytes(word, &self.byte_ids, scratch, &mut |a, b| pairs.get(merges, a, b));
        out.extend_from_slice(scratch);
    }

    /// SentencePiece-style: ids of one word (non-empty), appended to `out`.
    pub fn char_level_word(&self, word: &str, pairs: &mut PairCache, scratch: &mut Vec<u32>, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(id) = self.token_id(word.as_bytes()) {
                out.push(id);
                return;
            }
        }
        scratch.clear();
        // Pending unknown token (fused runs count once), flushed before the next known char.
        let mut unk_pending = false;
        let mut buf = [0u8; 4];
        for c in word.chars() {
            let s = c.encode_utf8(&mut buf);
            let id = match self.char_ids.get(c as usize) {
                Some(&id) => (id != u32::MAX).then_some(id),
                None => self.token_id(s.as_bytes()),
            };
            if let Some(id) = id {
                if unk_pending {
                    scratch.extend(self.unk);
                    unk_pending = false;
                }
                scratch.push(id);
            } else if let Some(bytes) =
                self.byte_fallback.as_ref().filter(|t| s.bytes().all(|b| t[b as usize].is_some()))
            {
                // As in `tokenizers`: byte tokens do not flush a pending unk.
                scratch.extend(s.bytes().filter_map(|b| bytes[b as usize]));
            } else if self.unk.is_some() {
                if unk_pending && !self.fuse_unk {
                    scratch.extend(self.unk);
                }
                unk_pending = true;
            }
        }
        if unk_pending {
            scratch.extend(self.unk);
        }
        let merges = &self.merges;
        merges.apply(scratch, &mut |a, b| pairs.get(merges, a, b));
        out.extend_from_slice(scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_to_char();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'\n' as usize], '\u{10A}');
        assert_eq!(t[0], '\u{100}');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
