//! Offsets for byte-level files whose normalizer is NFC alone (Qwen2.5, Qwen3), on text that NFC
//! changes: the offsets the `tokenizers` crate reports, without the crate.
//!
//! For text NFC leaves alone, a byte-level token's offsets are the running sum of byte lengths
//! (`crate::encode`). Where NFC changes the text (combining marks composed, singletons replaced:
//! ~3% of records in a 179-language corpus), the tokens cover *normalized* bytes, and the crate
//! maps them back through the alignments its `NormalizedString` keeps. Sending those texts to
//! the crate cost Qwen2.5 a fifth of its run time, and the first one built the crate's tokenizer
//! while every thread waited. This computes the same alignments (the rules of the crate's
//! `NormalizedString::transform_range`, on the same `unicode-normalization-alignments` NFC), piece
//! by piece between added tokens as the crate normalizes them, and checks that the token lengths
//! cover each normalized piece exactly; anything else returns `None` and the crate decides.

use super::normalize::Step;
use super::{FastTokenizer, IdsAndOffsets, PreTokenizer};
use unicode_normalization_alignments::UnicodeNormalization;

impl FastTokenizer {
    /// The ids of `encode(text, false)` and the crate's byte offsets for them, for a byte-level
    /// file whose normalizer is exactly NFC. `lengths[id]`: the token's length in normalized
    /// bytes (an added token's: its content's). `None` for any other file, or when the lengths do
    /// not cover a piece exactly.
    pub fn encode_with_nfc_offsets(&self, text: &str, lengths: &[u32]) -> Option<IdsAndOffsets> {
        if !matches!(self.pre_tokenizer, PreTokenizer::ByteLevel(_)) || self.normalizer.steps != [Step::Nfc] {
            return None;
        }
        let mut scratch = Vec::new();
        self.encode_pieces_with_offsets(text, |start, end, cache, ids, offsets| {
            let raw = &text[start..end];
            let from = ids.len();
            self.encode_piece(raw, start == 0, cache, &mut scratch, ids);
            map_offsets(&nfc_alignments(raw), &ids[from..], lengths, start, offsets)
        })
    }
}

/// For each byte of `NFC(raw)`, the byte range in `raw` the crate aligns it with: a character
/// NFC keeps or replaces (`change <= 0`) takes the range of the original character it replaces
/// (a composition consumes the following `-change` characters without widening it); a character
/// NFC inserts (`change > 0`) shares the range of the original character before it, or `(0, 0)`
/// at the start.
fn nfc_alignments(raw: &str) -> Vec<(usize, usize)> {
    let mut alignments = Vec::with_capacity(raw.len() + 8);
    let mut originals = raw.char_indices().map(|(at, c)| (at, at + c.len_utf8()));
    let mut previous = (0, 0);
    for (c, change) in raw.nfc() {
        let align = if change > 0 {
            previous
        } else {
            let Some(replaced) = originals.next() else { break };
            previous = replaced;
            for _ in 0..(-change) {
                if let Some(removed) = originals.next() {
                    previous = removed;
                }
            }
            replaced
        };
        alignments.extend(std::iter::repeat_n(align, c.len_utf8()));
    }
    alignments
}

/// Appends the original offsets (shifted by `base`) of `ids`, which cover the normalized bytes
/// whose alignments are given, token after token; false unless they cover them exactly.
fn map_offsets(alignments: &[(usize, usize)], ids: &[u32], lengths: &[u32], base: usize, offsets: &mut Vec<(usize, usize)>) -> bool {
    let mut at = 0usize;
    for &id in ids {
        let len = lengths.get(id as usize).copied().unwrap_or(0) as usize;
        if len == 0 || at + len > alignments.len() {
            return false;
        }
        offsets.push((base + alignments[at].0, base + alignments[at + len - 1].1));
        at += len;
    }
    at == alignments.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignments_follow_the_crate_rules() {
        // "e" + COMBINING ACUTE composes into "é": aligned with the "e" alone.
        assert_eq!(nfc_alignments("e\u{301}x"), [(0, 1), (0, 1), (3, 4)]);
        // ANGSTROM SIGN (3 bytes) becomes Å (2 bytes), aligned with the whole sign.
        assert_eq!(nfc_alignments("\u{212b}"), [(0, 3), (0, 3)]);
        // Unchanged text: each byte its own character's range.
        assert_eq!(nfc_alignments("aé"), [(0, 1), (1, 3), (1, 3)]);
        assert!(nfc_alignments("").is_empty());
    }

    #[test]
    fn offsets_must_cover_the_piece_exactly() {
        let alignments = nfc_alignments("ab");
        let mut offsets = Vec::new();
        assert!(map_offsets(&alignments, &[7, 8], &[0, 0, 0, 0, 0, 0, 0, 1, 1], 10, &mut offsets));
        assert_eq!(offsets, [(10, 11), (11, 12)]);
        assert!(!map_offsets(&alignments, &[7], &[0, 0, 0, 0, 0, 0, 0, 1], 0, &mut Vec::new()));
        assert!(!map_offsets(&alignments, &[7, 7, 7], &[0, 0, 0, 0, 0, 0, 0, 1], 0, &mut Vec::new()));
    }
}
