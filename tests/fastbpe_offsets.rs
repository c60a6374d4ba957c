//! fastbpe's offsets for the SentencePiece families against the `tokenizers` crate's
//! `encode(text, false)`: identical ids and byte offsets on every line of every shipped corpus,
//! on each line rendered with the family's chat template, and on fuzzed text (whitespace runs,
//! leading spaces, characters only byte fallback can spell, added tokens inside words, a literal
//! `▁`, empty strings). Every text must take the fast path (`Some`): a fallback would hide a
//! wrong plan behind the crate.

mod fastbpe_common;

use std::sync::LazyLock;

use _core::fastbpe::FastTokenizer;
use fastbpe_common::{corpora, rendered, tokenizer_json};
use proptest::prelude::*;
use tokenizers::Tokenizer;

const SENTENCEPIECE: [&str; 5] = ["gemma", "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "phi3", "tinyllama-chat"];

struct Pair {
    family: &'static str,
    reference: Tokenizer,
    fast: FastTokenizer,
}

static PAIRS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
    SENTENCEPIECE
        .iter()
        .map(|&family| {
            let json = tokenizer_json(family);
            let reference = Tokenizer::from_bytes(&json).expect("tokenizers loads it");
            let fast = FastTokenizer::from_tokenizer_json(&json).expect("fastbpe supports it");
            assert!(fast.has_offsets(), "{family}: no offset plan");
            Pair { family, reference, fast }
        })
        .collect()
});

fn assert_same(pair: &Pair, text: &str) {
    let want = pair.reference.encode(text, false).expect("reference encode");
    let Some((ids, offsets)) = pair.fast.encode_with_offsets(text) else {
        panic!("{}: fastbpe declined {text:?}", pair.family)
    };
    assert!(ids == want.get_ids(), "{}: ids differ on {text:?}\n fast: {ids:?}\n  ref: {:?}", pair.family, want.get_ids());
    if offsets != want.get_offsets() {
        let i = offsets.iter().zip(want.get_offsets()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{}: offsets differ on {text:?} at token {i} (id {}): fast {:?}, ref {:?}",
            pair.family,
            ids[i],
            &offsets[i..(i + 3).min(offsets.len())],
            &want.get_offsets()[i..(i + 3).min(offsets.len())]
        );
    }
}

/// Every line of every shipped corpus, raw and rendered with the family's chat template (one
/// test per family, so that they run in parallel).
fn every_corpus_line(family: &str) {
    let pair = PAIRS.iter().find(|p| p.family == family).expect("a SentencePiece family");
    let lines: Vec<String> = corpora().into_iter().flat_map(|(_, lines)| lines).collect();
    assert!(lines.len() > 10_000, "corpora missing? {} lines", lines.len());
    let chats = rendered(pair.family, &lines);
    assert!(chats.len() > 3000, "{}: only {} rendered", pair.family, chats.len());
    for text in lines.iter().chain(&chats) {
        assert_same(pair, text);
    }
    eprintln!("{}: {} lines and {} chats identical", pair.family, lines.len(), chats.len());
}

#[test]
fn every_corpus_line_gemma() {
    every_corpus_line("gemma");
}

#[test]
fn every_corpus_line_mistral_v01() {
    every_corpus_line("mistral-7b-instruct-v0.1");
}

#[test]
fn every_corpus_line_mistral_v03() {
    every_corpus_line("mistral-7b-instruct-v0.3");
}

#[test]
fn every_corpus_line_phi3() {
    every_corpus_line("phi3");
}

#[test]
fn every_corpus_line_tinyllama() {
    every_corpus_line("tinyllama-chat");
}

#[test]
fn edge_cases_have_the_crates_offsets() {
    let cases = [
        "",
        " ",
        "  ",
        "\n",
        "▁",
        " ▁",
        "▁ x",
        "a",
        " a",
        "   leading spaces",
        "trailing spaces   ",
        "𠜎",
        " 𠜎x",
        "\u{0}\u{1}\u{7f}",
        "</s>",
        " </s> ",
        "x</s>y",
        "<s>[INST] hello [/INST] answer</s>",
        "<|user|>\n hi<|end|>\n<|assistant|>\n\n  ok<|end|>\n",
        "<|end|>",
        "<|end|>   ",
        "<start_of_turn>user\n<end_of_turn><start_of_turn>model\n",
        "<bos><bos>",
        "word<unk>word",
        "日本語のテキスト、中文，한국어.",
        "e\u{301}\u{302} 👩‍💻 🇫🇷",
    ];
    for pair in PAIRS.iter() {
        for text in cases {
            assert_same(pair, text);
        }
    }
}

/// Fragments the fuzzer joins: whitespace, a literal `▁`, letters, CJK, emoji, characters no
/// vocabulary holds, and every family's added tokens (so they land inside words).
const FRAGMENTS: [&str; 30] = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "▁", "▁▁", "a", "the", "word", "Hello", "1234", ".", ",",
    "日本", "中文", "한", "😀", "👩‍💻", "𠜎", "\u{0}", "ꙮ", "e\u{301}", "</s>", "<s>", "[INST]", "<|end|>",
    "<start_of_turn>",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn fuzzed_text_has_the_crates_offsets(picks in prop::collection::vec(0..FRAGMENTS.len(), 0..24)) {
        let text: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
        for pair in PAIRS.iter() {
            assert_same(pair, &text);
        }
    }
}

/// Byte-level files keep their own offsets (each token's byte length, in `tokenizer.rs`).
#[test]
fn byte_level_files_have_no_plan() {
    for family in ["qwen2.5", "llama3.1", "gpt2"] {
        let fast = FastTokenizer::from_tokenizer_json(&tokenizer_json(family)).expect("supported");
        assert!(!fast.has_offsets(), "{family}");
        assert!(fast.encode_with_offsets("hello").is_none(), "{family}");
    }
}
