//! fastbpe's offsets on text a NFC normalizer changes (Qwen2.5, Qwen3) against the `tokenizers`
//! crate's `encode(text, false)` (offsets untrimmed, as fastsft's reference builds it):
//! identical ids and byte offsets on every shipped corpus line and chat rendering made into
//! text NFC changes, on edge cases (compositions, singletons, expansions, canonical reordering, Hangul,
//! marks at the start of a piece and after an added token), and on fuzzed mixtures of them.
//! Every text must take the fast path (`Some`): a fallback would hide a wrong mapping.

mod fastbpe_common;

use std::sync::LazyLock;

use _core::fastbpe::{nfc_leaves_unchanged, FastTokenizer};
use _core::tokenizer::{LoadedTokenizer, OffsetSource};
use fastbpe_common::{corpora, rendered, tokenizer_dir};
use proptest::prelude::*;
use unicode_normalization_alignments::UnicodeNormalization;

const NFC_FAMILIES: [&str; 2] = ["qwen2.5", "qwen3"];

struct Pair {
    family: &'static str,
    loaded: LoadedTokenizer,
    fast: FastTokenizer,
    lengths: Vec<u32>,
}

static PAIRS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
    NFC_FAMILIES
        .iter()
        .map(|&family| {
            let mut loaded = LoadedTokenizer::load_with_cache(&tokenizer_dir(family).join("tokenizer.json"), None).expect("load");
            loaded.verify().expect("self-check");
            let fast = loaded.take_fast().expect("fastbpe supports it");
            let OffsetSource::ByteLengths { lengths, nfc: true } = &loaded.offsets else { panic!("{family}: not byte lengths with NFC") };
            let lengths = lengths.clone();
            Pair { family, loaded, fast, lengths }
        })
        .collect()
});

fn assert_same(pair: &Pair, text: &str) {
    let want = pair.loaded.reference.encode(text, false).expect("reference encode");
    let Some((ids, offsets)) = pair.fast.encode_with_nfc_offsets(text, &pair.lengths) else {
        panic!("{}: fastbpe declined {text:?}", pair.family)
    };
    assert!(ids == want.get_ids(), "{}: ids differ on {text:?}\n fast: {ids:?}\n  ref: {:?}", pair.family, want.get_ids());
    assert!(offsets == want.get_offsets(), "{}: offsets differ on {text:?}\n fast: {offsets:?}\n  ref: {:?}", pair.family, want.get_offsets());
}

/// A corpus text made into one NFC changes: decomposed (NFD), with a combining acute accent
/// after every seventh character (composing with vowels, stacking on everything else).
fn unnormalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, (c, _)) in text.nfd().enumerate() {
        out.push(c);
        if i % 7 == 6 {
            out.push('\u{301}');
        }
    }
    out
}

/// Every shipped corpus line and its chat rendering, made into text NFC changes (the corpora
/// themselves are all NFC already). One test per family, so that they run in parallel.
fn every_corpus_text_made_unnormalized(family: &str) {
    let pair = PAIRS.iter().find(|p| p.family == family).expect("a NFC family");
    let lines: Vec<String> = corpora().into_iter().flat_map(|(_, lines)| lines).collect();
    let chats = rendered(pair.family, &lines);
    assert!(chats.len() > 3000, "{}: only {} rendered", pair.family, chats.len());
    let mut changed = 0;
    for text in lines.iter().chain(&chats).map(|t| unnormalized(t)) {
        if !nfc_leaves_unchanged(&text) {
            changed += 1;
            assert_same(pair, &text);
        }
    }
    assert!(changed > 10_000, "{}: only {changed} texts NFC changes", pair.family);
    eprintln!("{}: {changed} texts NFC changes, identical", pair.family);
}

#[test]
fn every_corpus_text_made_unnormalized_qwen25() {
    every_corpus_text_made_unnormalized("qwen2.5");
}

#[test]
fn every_corpus_text_made_unnormalized_qwen3() {
    every_corpus_text_made_unnormalized("qwen3");
}

const EDGE_CASES: [&str; 16] = [
    "e\u{301}",                                  // composition
    "\u{301}start with a mark",                  // a mark first: nothing to compose with
    "Cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e", // several, mid-word
    "\u{212b}ngstr\u{f6}m \u{2126}hm",           // singletons: ANGSTROM SIGN, OHM SIGN
    "a\u{344}b",                                 // expansion: one character becomes two marks
    "a\u{301}\u{323} q\u{307}\u{323}",           // canonical reordering, then composition
    "\u{1100}\u{1161}\u{11a8} \u{1112}\u{1161}\u{11ab}", // Hangul jamo into syllables
    "\u{f900}\u{f901} CJK compatibility",        // CJK compatibility ideographs
    "\u{915}\u{93c} \u{928}\u{93c}",             // composition exclusions (Devanagari nukta)
    "<|im_end|>\u{338}",                         // a mark right after an added token
    "x >\u{338} =\u{338} <\u{338}",              // NOT GREATER-THAN and friends
    "<|im_start|>user\ne\u{301}<|im_end|>\n<|im_start|>assistant\n\u{212b}<|im_end|>",
    "  \u{301}\u{301}  \n\n\u{300}",             // marks on whitespace
    "😀\u{301} 👩\u{200d}💻\u{308}",               // marks on emoji
    "\u{1e9b}\u{323}",                           // long s with dot above + dot below
    "e\u{301}\u{0}e\u{301}",                     // NUL between
];

#[test]
fn edge_cases_have_the_crates_offsets() {
    for pair in PAIRS.iter() {
        for text in EDGE_CASES {
            assert_same(pair, text);
        }
    }
}

const FRAGMENTS: [&str; 22] = [
    "e", "a", "o", "A", " ", "\n", "  ", ">", "=", "<|im_end|>", "<|endoftext|>", "\u{301}", "\u{308}", "\u{323}", "\u{338}",
    "\u{344}", "\u{212b}", "\u{1100}", "\u{1161}", "\u{11a8}", "\u{f900}", "語",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]
    #[test]
    fn fuzzed_text_has_the_crates_offsets(picks in prop::collection::vec(0..FRAGMENTS.len(), 0..24), family in 0..NFC_FAMILIES.len()) {
        let text: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
        assert_same(&PAIRS[family], &text);
    }
}
