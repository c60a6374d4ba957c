//! The cut-down tokenizer against the whole one, and the check against a wrong fast BPE.

use std::path::PathBuf;

use super::*;
use crate::tokenizer::{build_reference, PROBES};

fn json(family: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers").join(family).join("tokenizer.json");
    std::fs::read(path).expect("reads")
}

fn vocab<'a>(parsed: &'a TokenizerJson) -> FxHashMap<&'a str, u32> {
    let entries = parsed.model.as_ref().and_then(|m| m.vocab.as_ref()).expect("vocab");
    entries.iter().map(|(t, id)| (t.as_ref(), *id as u32)).collect()
}

/// A change to a tokenizer.json.
type Edit = Box<dyn Fn(&mut Value)>;

/// `family`'s tokenizer.json with `edit` applied to its JSON.
fn edited(family: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&json(family)).expect("json");
    edit(&mut v);
    serde_json::to_vec(&v).expect("serializes")
}

#[test]
fn the_cut_down_tokenizer_encodes_the_probes_as_the_whole_one() {
    for family in ["qwen2.5", "qwen3", "llama3.1", "gpt2", "gemma", "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "phi3", "tinyllama-chat"] {
        let bytes = json(family);
        let parsed = TokenizerJson::parse(&bytes).expect("parses");
        let vocab = vocab(&parsed);
        let reduced = cut_down(&parsed, &vocab, &PROBES).unwrap_or_else(|| panic!("{family}: the cut-down check applies"));
        let size = |t: &ProbeTokenizer| t.get_model().bpe.get_vocab_size();
        assert!(size(&reduced) * 20 < vocab.len(), "{family}: cut down to {} of {}", size(&reduced), vocab.len());
        let whole = build_reference(&bytes).expect("loads");
        assert_eq!(reduced.get_vocab_size(true), whole.get_vocab_size(true), "{family}");
        for probe in PROBES {
            let (want, got) = (whole.encode(probe, false).expect("encodes"), reduced.encode(probe, false).expect("encodes"));
            assert_eq!((got.get_ids(), got.get_offsets()), (want.get_ids(), want.get_offsets()), "{family}: {probe:?}");
        }
        let fast = FastTokenizer::from_parsed(&parsed).expect("fast BPE");
        assert_eq!(check(&parsed, &vocab, &fast, fast.has_offsets(), &PROBES), Some(true), "{family}");
    }
}

#[test]
fn a_fast_bpe_that_differs_on_a_probe_fails_the_check() {
    // The fast BPE of an edited file, checked against the unchanged one: without the merge of two
    // spaces (`Ġ Ġ`, `▁ ▁`; Gemma: ids and offsets), or with two tokens' ids swapped (Llama 3.1,
    // whose `ignore_merges` takes whole words from the vocabulary).
    let drop_space_merge = |space: &'static str| {
        move |v: &mut Value| {
            let merges = v["model"]["merges"].as_array_mut().expect("merges");
            let at = merges.iter().position(|m| *m == serde_json::json!([space, space])).expect("a merge of two spaces");
            merges.remove(at);
        }
    };
    let swap_ids = |v: &mut Value| {
        let vocab = v["model"]["vocab"].as_object_mut().expect("vocab");
        let (a, b) = (vocab["Hello"].clone(), vocab["ĠHello"].clone());
        vocab["Hello"] = b;
        vocab["ĠHello"] = a;
    };
    let cases: [(&str, Edit); 3] =
        [("qwen2.5", Box::new(drop_space_merge("Ġ"))), ("llama3.1", Box::new(swap_ids)), ("gemma", Box::new(drop_space_merge("▁")))];
    for (family, edit) in cases {
        let bytes = json(family);
        let parsed = TokenizerJson::parse(&bytes).expect("parses");
        let vocab = vocab(&parsed);
        let right = FastTokenizer::from_parsed(&parsed).expect("fast BPE");
        let wrong = FastTokenizer::from_tokenizer_json(&edited(family, edit)).expect("fast BPE");
        assert!(PROBES.iter().any(|p| wrong.encode(p) != right.encode(p)), "{family}: the edit changes a probe");
        assert_eq!(check(&parsed, &vocab, &wrong, wrong.has_offsets(), &PROBES), Some(false), "{family}");
        assert_eq!(check(&parsed, &vocab, &right, right.has_offsets(), &PROBES), Some(true), "{family}");
    }
}

#[test]
fn files_outside_the_argument_get_no_verdict() {
    let cases: [(&str, Edit); 5] = [
        ("dropout", Box::new(|v| v["model"]["dropout"] = 0.5.into())),
        ("a subword prefix", Box::new(|v| v["model"]["continuing_subword_prefix"] = "##".into())),
        ("two texts with one id", Box::new(|v| v["model"]["vocab"]["zzzzqqqq"] = 50.into())),
        ("mixed merge forms", Box::new(|v| v["model"]["merges"][3] = "a b".into())),
        ("a #version line", Box::new(|v| {
            let merges = v["model"]["merges"].as_array_mut().expect("merges");
            *merges = merges.iter().map(|m| format!("{} {}", m[0].as_str().expect("a"), m[1].as_str().expect("b")).into()).collect();
            merges.insert(0, "#version: 0.2".into());
        })),
    ];
    let bytes = json("gpt2");
    let parsed = TokenizerJson::parse(&bytes).expect("parses");
    let fast = FastTokenizer::from_parsed(&parsed).expect("fast BPE");
    assert_eq!(check(&parsed, &vocab(&parsed), &fast, false, &PROBES), Some(true));
    for (what, edit) in cases {
        let bytes = edited("gpt2", edit);
        let parsed = TokenizerJson::parse(&bytes).expect("parses");
        assert_eq!(check(&parsed, &vocab(&parsed), &fast, false, &PROBES), None, "{what}");
    }
}
