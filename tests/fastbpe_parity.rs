//! fastbpe against the `tokenizers` crate: identical ids on a deterministic sample of the
//! shipped corpora (raw lines, every JSON string, and chat-template renderings) and on fuzzed
//! text, for every shipped tokenizer; and `None` for tokenizer.json files it does not support.
//! The full-corpus check is `cargo run --release --example fastbpe_parity`.

mod fastbpe_common;

use std::sync::LazyLock;

use _core::fastbpe::FastTokenizer;
use fastbpe_common::{corpora, rendered, strings_in, tokenizer_json, FAMILIES};
use proptest::prelude::*;
use tokenizers::Tokenizer;

struct Pair {
    family: &'static str,
    reference: Tokenizer,
    fast: FastTokenizer,
}

static PAIRS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
    FAMILIES
        .iter()
        .map(|&family| {
            let json = tokenizer_json(family);
            let reference = Tokenizer::from_bytes(&json).expect("tokenizers loads it");
            let fast = FastTokenizer::from_tokenizer_json(&json)
                .unwrap_or_else(|| panic!("{family}: FastTokenizer refused a shipped tokenizer"));
            Pair { family, reference, fast }
        })
        .collect()
});

fn reference_ids(t: &Tokenizer, text: &str) -> Vec<u32> {
    t.encode_fast(text, false).expect("reference encode").get_ids().to_vec()
}

fn assert_same(pair: &Pair, text: &str) {
    let want = reference_ids(&pair.reference, text);
    let got = pair.fast.encode(text);
    assert!(got == want, "{}: ids differ on {text:?}\n fast: {got:?}\n  ref: {want:?}", pair.family);
}

/// Every 10th line of every corpus: the line, its strings, and its rendering with the family's
/// chat template.
#[test]
fn corpus_sample_matches_tokenizers() {
    let sample: Vec<String> = corpora().into_iter().flat_map(|(_, lines)| lines.into_iter().step_by(10)).collect();
    assert!(sample.len() > 1000, "corpora missing? {} lines", sample.len());
    let strings: Vec<String> = sample.iter().flat_map(|l| strings_in(l)).collect();
    for pair in PAIRS.iter() {
        let chats = rendered(pair.family, &sample);
        assert!(chats.len() > 300, "{}: only {} rendered", pair.family, chats.len());
        for text in sample.iter().chain(&strings).chain(&chats) {
            assert_same(pair, text);
        }
        eprintln!(
            "{}: {} lines, {} strings, {} chats identical",
            pair.family,
            sample.len(),
            strings.len(),
            chats.len()
        );
    }
}

#[test]
fn edge_cases_match_tokenizers() {
    let cases = [
        "",
        " ",
        "\n",
        "<|im_start|>",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start",
        "<|im_end|>x<|endoftext|><|endoftext|>",
        "  <|end|>  \n<|assistant|>\n hi",
        "<s>[INST] hello [/INST] answer</s>",
        "▁▁ ▁x▁ ▁",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023<|eot_id|>",
        "<start_of_turn>user\nhi<end_of_turn>\n",
        "e\u{301} \u{212B} \u{1100}\u{1161}\u{11A8} Å ﬁ",
        "it's IT'S 'll 'LL 'ſ",
        "1234567 ٣٤٥٦ ⅷ",
        "\r\n\r\n   \t\t  x",
        "中文English混合，测试！😀👨‍👩‍👧 🏳️‍🌈",
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}",
        "\u{fffd}\u{10ffff}\u{e000}\u{1}",
    ];
    let long_han: String = "人工智能是计算机科学的一个分支".repeat(40);
    let long_spaces = " ".repeat(300) + "x" + &"\n".repeat(200);
    let long_word = "a".repeat(1000);
    for pair in PAIRS.iter() {
        for text in cases.iter().copied().chain([long_han.as_str(), long_spaces.as_str(), long_word.as_str()]) {
            assert_same(pair, text);
        }
    }
}

fn atom() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        "\n\n",
        " \n ",
        "\r",
        "\u{3000}",
        "\u{a0}",
        "\u{2028}",
        "\u{85}",
        "'s",
        "'LL",
        "'Re",
        "'ve",
        "'ſ",
        "'",
        "''",
        "'d'",
        "<|im_start|>",
        "<|im_end|>",
        "<|im_start",
        "<|im_end|>x",
        "<|endoftext|>",
        "<|im_",
        "|>",
        "<|",
        "<s>",
        "</s>",
        "<unk>",
        "[INST]",
        "[/INST]",
        "<|assistant|>",
        "<|end|>",
        "<|user|>",
        "<|system|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|begin_of_text|>",
        "<think>",
        "</think>",
        "<tool_call>",
        "e\u{301}",
        "\u{301}",
        "A\u{30A}",
        "\u{1100}\u{1161}\u{11A8}",
        "\u{212B}",
        "ﬁ",
        "\u{0f73}",
        "\u{1d15e}",
        "😀",
        "👍🏽",
        "👨‍👩‍👧",
        "🏳️‍🌈",
        "\u{200d}",
        "\u{fe0f}",
        "{\"name\": \"",
        "\", \"arguments\": {",
        "}}",
        "\\n",
        "```python\n",
        "    ",
        "\u{2581}",
        "▁▁",
        "123",
        "4567890",
        "٣٤٥",
        "½",
        "Ⅻ",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        2 => "[a-zA-Z]{1,12}",
        2 => "[\u{4e00}-\u{9fff}]{1,16}",
        1 => "[а-яА-Я]{1,8}",
        1 => "[0-9]{1,9}",
        1 => "[ \t\n\r]{1,6}",
        1 => "[!-/:-@\\[-`{-~]{1,4}",
        2 => any::<char>().prop_map(|c| c.to_string()),
        1 => "\\PC{1,6}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(atom(), 0..40).prop_map(|v| v.concat()),
        1 => (atom(), 20usize..120).prop_map(|(a, n)| a.repeat(n)),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn fuzzed_text_matches_tokenizers(s in text()) {
        for pair in PAIRS.iter() {
            let want = reference_ids(&pair.reference, &s);
            prop_assert_eq!(pair.fast.encode(&s), want, "{} on {:?}", pair.family, s);
        }
    }
}

/// One tokenizer shared by many threads (per-thread caches, no locks) gives every thread the
/// ids one thread gets.
#[test]
fn concurrent_threads_get_the_same_ids() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FastTokenizer>();
    let texts: Vec<String> = corpora().into_iter().flat_map(|(_, lines)| lines.into_iter().step_by(25)).collect();
    for pair in PAIRS.iter().filter(|p| ["qwen2.5", "llama3.1", "mistral-7b-instruct-v0.3"].contains(&p.family)) {
        let want: Vec<Vec<u32>> = texts.iter().map(|t| reference_ids(&pair.reference, t)).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|k| {
                    let (texts, fast) = (&texts, &pair.fast);
                    // Each thread starts at a different text, so caches fill in different orders.
                    scope.spawn(move || {
                        let n = texts.len();
                        (0..n).map(|i| (k * n / 4 + i) % n).map(|i| (i, fast.encode(&texts[i]))).collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, ids) in h.join().expect("thread") {
                    assert_eq!(ids, want[i], "{}: text {i}", pair.family);
                }
            }
        });
    }
}

/// Each edit makes the file use something fastbpe does not implement: it must refuse it.
#[test]
fn unsupported_components_are_refused() {
    let base: serde_json::Value = serde_json::from_slice(&tokenizer_json("qwen2.5")).expect("json");
    assert!(FastTokenizer::from_tokenizer_json(&serde_json::to_vec(&base).expect("json")).is_some());
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 9] = [
        ("normalizer NFKC", |v| v["normalizer"] = serde_json::json!({"type": "NFKC"})),
        ("normalizer Lowercase", |v| {
            v["normalizer"] =
                serde_json::json!({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]})
        }),
        ("another split regex", |v| {
            v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
                serde_json::json!(r"\p{N}{1,2}|\p{L}+|\s+|[^\s\p{L}\p{N}]+")
        }),
        ("split behavior", |v| v["pre_tokenizer"]["pretokenizers"][0]["behavior"] = serde_json::json!("Removed")),
        ("byte-level prefix space", |v| {
            v["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = serde_json::json!(true)
        }),
        ("dropout", |v| v["model"]["dropout"] = serde_json::json!(0.1)),
        ("single_word added token", |v| v["added_tokens"][1]["single_word"] = serde_json::json!(true)),
        ("truncation", |v| {
            v["truncation"] =
                serde_json::json!({"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0})
        }),
        ("continuing subword prefix", |v| v["model"]["continuing_subword_prefix"] = serde_json::json!("##")),
    ];
    for (what, edit) in edits {
        let mut v = base.clone();
        edit(&mut v);
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(FastTokenizer::from_tokenizer_json(&bytes).is_none(), "{what}: accepted");
    }
    let mut unigram = serde_json::from_slice::<serde_json::Value>(&tokenizer_json("gpt2")).expect("json");
    unigram["model"] = serde_json::json!({"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]]});
    assert!(FastTokenizer::from_tokenizer_json(&serde_json::to_vec(&unigram).expect("json")).is_none());
    assert!(FastTokenizer::from_tokenizer_json(b"not json").is_none());
}
