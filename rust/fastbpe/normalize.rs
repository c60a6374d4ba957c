//! The normalizers fastbpe implements: NFC, `Prepend`, `Replace` with a literal pattern, and
//! `Sequence`s of these, applied to each piece of text between added tokens (as the `tokenizers`
//! crate does, so `Prepend` marks every piece, not just the first).
//!
//! NFC uses `unicode-normalization-alignments`, the crate (and Unicode 9.0 tables) that
//! `tokenizers` normalizes with: a newer Unicode version composes and reorders differently for
//! characters added since. A piece that the quick check proves NFC is not copied.

use std::borrow::Cow;

use serde_json::Value;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nfc,
    Prepend(String),
    /// Every non-overlapping occurrence, left to right (an escaped literal regex in `tokenizers`).
    Replace(String, String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalizer {
    pub steps: Vec<Step>,
}

impl Normalizer {
    /// `None` for a normalizer fastbpe does not implement exactly.
    pub fn from_json(v: &Value) -> Option<Normalizer> {
        let mut steps = Vec::new();
        if !v.is_null() {
            push_steps(v, &mut steps)?;
        }
        Some(Normalizer { steps })
    }

    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        // Llama 2 / Mistral v0.1 / Phi-3: `Prepend` then a one-character `Replace`, in one copy
        // instead of two (no match can straddle the prefix and the text).
        if let [Step::Prepend(p), Step::Replace(from, to)] = self.steps.as_slice() {
            if !text.is_empty() && from.chars().count() == 1 {
                let mut out = String::with_capacity(p.len() + text.len() + text.len() / 4);
                replace_into(&mut out, p, from, to);
                replace_into(&mut out, text, from, to);
                return Cow::Owned(out);
            }
        }
        let mut s = Cow::Borrowed(text);
        for step in &self.steps {
            match step {
                Step::Nfc => {
                    if !is_nfc(&s) {
                        s = Cow::Owned(s.nfc().map(|(c, _)| c).collect());
                    }
                }
                Step::Prepend(p) => {
                    if !s.is_empty() {
                        s = Cow::Owned(format!("{p}{s}"));
                    }
                }
                Step::Replace(from, to) => {
                    if s.contains(from.as_str()) {
                        s = Cow::Owned(s.replace(from.as_str(), to));
                    }
                }
            }
        }
        s
    }
}

/// Whether the `tokenizers` crate's NFC (its Unicode 9.0 tables) leaves `s` as it is. The quick
/// check answers most texts; when it says "maybe" (combining marks, Hangul jamo, Indic vowel
/// signs: common in multilingual text), the text is normalized and compared, which costs far
/// less than the crate's offset-tracking encode that a "not sure" would otherwise send it to.
pub fn nfc_leaves_unchanged(s: &str) -> bool {
    if s.is_ascii() || s.chars().all(is_inert) {
        return true;
    }
    match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => true,
        IsNormalized::No => false,
        IsNormalized::Maybe => s.nfc().map(|(c, _)| c).eq(s.chars()),
    }
}

/// Appends `s` with every `from` replaced by `to` (as `str::replace`).
fn replace_into(out: &mut String, s: &str, from: &str, to: &str) {
    let mut last = 0;
    for (i, _) in s.match_indices(from) {
        out.push_str(&s[last..i]);
        out.push_str(to);
        last = i + from.len();
    }
    out.push_str(&s[last..]);
}

/// The Unicode quick check, answered without table lookups for text made only of characters
/// that are NFC_Quick_Check=Yes with combining class 0 in every version (Latin-1, the common
/// CJK blocks, fullwidth forms; `inert_ranges_are_inert` checks them against the tables).
fn is_nfc(s: &str) -> bool {
    s.is_ascii() || s.chars().all(is_inert) || is_nfc_quick(s.chars()) == IsNormalized::Yes
}

#[inline(always)]
fn is_inert(c: char) -> bool {
    matches!(c as u32, 0..=0x2FF | 0x3000..=0x3029 | 0x3041..=0x3096 | 0x30A1..=0x30FA | 0x4E00..=0x9FFF | 0xFF01..=0xFFEF)
}

fn push_steps(v: &Value, steps: &mut Vec<Step>) -> Option<()> {
    let kind = v.get("type")?.as_str()?;
    match kind {
        "NFC" => steps.push(Step::Nfc),
        "Prepend" => steps.push(Step::Prepend(v.get("prepend")?.as_str()?.to_string())),
        "Replace" => {
            let from = v.get("pattern")?.get("String")?.as_str()?;
            if from.is_empty() {
                return None;
            }
            steps.push(Step::Replace(from.to_string(), v.get("content")?.as_str()?.to_string()));
        }
        "Sequence" => {
            for n in v.get("normalizers")?.as_array()? {
                push_steps(n, steps)?;
            }
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nfc_composes_and_skips_normalized_text() {
        let n = Normalizer::from_json(&json!({"type": "NFC"})).expect("nfc");
        assert_eq!(n.apply("e\u{301}"), "\u{e9}");
        assert!(matches!(n.apply("plain 中文"), Cow::Borrowed(_)));
    }

    #[test]
    fn nfc_check_is_exact_where_the_quick_check_is_unsure() {
        // U+0915 U+093C (ka + nukta) has a composition excluded from NFC: "maybe", and unchanged.
        assert_eq!(is_nfc_quick("\u{915}\u{93c}".chars()), IsNormalized::Maybe);
        assert!(nfc_leaves_unchanged("\u{915}\u{93c}"));
        // e + combining acute: "maybe", and composed by NFC.
        assert_eq!(is_nfc_quick("e\u{301}".chars()), IsNormalized::Maybe);
        assert!(!nfc_leaves_unchanged("e\u{301}"));
        assert!(!nfc_leaves_unchanged("\u{212b}")); // Angstrom sign: "no"
        assert!(nfc_leaves_unchanged("plain, 中文, é"));
    }

    #[test]
    fn inert_ranges_are_inert() {
        use unicode_normalization_alignments::char::canonical_combining_class;
        for c in (0..0x110000u32).filter_map(char::from_u32).filter(|&c| is_inert(c)) {
            assert_eq!(is_nfc_quick(std::iter::once(c)), IsNormalized::Yes, "U+{:04X}", c as u32);
            assert_eq!(canonical_combining_class(c), 0, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn sentencepiece_sequence() {
        let v = json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
        let n = Normalizer::from_json(&v).expect("sequence");
        assert_eq!(n.apply("a b"), "\u{2581}a\u{2581}b");
        assert_eq!(n.apply(" a  b "), "\u{2581}\u{2581}a\u{2581}\u{2581}b\u{2581}");
        assert_eq!(n.apply(""), "");
    }

    #[test]
    fn refuses_what_it_does_not_implement() {
        assert!(Normalizer::from_json(&json!({"type": "NFKC"})).is_none());
        assert!(
            Normalizer::from_json(&json!({"type": "Replace", "pattern": {"Regex": " +"}, "content": "_"})).is_none()
        );
        assert!(Normalizer::from_json(&json!({"type": "Sequence", "normalizers": [{"type": "Lowercase"}]})).is_none());
    }
}
