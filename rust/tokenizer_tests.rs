//! Loading against the `tokenizers` crate (the old load path as the oracle), and the cache:
//! cached and uncached loads agree, and damaged, stale, misnamed or concurrently written entries
//! are never trusted.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::*;
use crate::tokenizer_cache::{self, CacheDir};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers")
}

const FAMILIES: [&str; 9] =
    ["qwen2.5", "qwen3", "llama3.1", "gpt2", "gemma", "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "phi3", "tinyllama-chat"];

/// What the encoder used to compute from the `tokenizers` crate's tokenizer: vocab size, special
/// ids, sorted special texts, byte lengths (for byte-level BPE without stripping added tokens).
type Oracle = (usize, Vec<bool>, Vec<String>, Option<(Vec<u32>, bool)>);

fn oracle(file: &Path) -> Oracle {
    let tokenizer = Tokenizer::from_file(file).expect("loads");
    let json: Value = serde_json::from_slice(&std::fs::read(file).expect("reads")).expect("json");
    let added = tokenizer.get_added_tokens_decoder();
    let size = tokenizer.get_vocab_size(true);
    let max_id = added.keys().copied().max().map_or(0, |m| m as usize + 1).max(size);
    let mut special_ids = vec![false; max_id];
    let mut special = Vec::new();
    for (id, t) in &added {
        if t.special {
            special_ids[*id as usize] = true;
            special.push(t.content.clone());
        }
    }
    special.sort();
    let kind = |v: &Value| v.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string();
    let pre = json.get("pre_tokenizer").cloned().unwrap_or_default();
    let byte_level = kind(&pre) == "ByteLevel"
        || pre.get("pretokenizers").and_then(|p| p.as_array()).is_some_and(|l| l.iter().any(|p| kind(p) == "ByteLevel"));
    let bpe = json.get("model").map(kind).as_deref() == Some("BPE");
    let normalizer = json.get("normalizer").filter(|n| !n.is_null()).map(kind);
    let stripping = added.values().any(|t| t.lstrip || t.rstrip);
    let lengths = match normalizer.as_deref() {
        Some(n) if n != "NFC" => None,
        _ if !byte_level || !bpe || stripping => None,
        n => {
            let mut lengths = vec![0u32; size.max(1)];
            for (token, id) in tokenizer.get_vocab(false) {
                if let Some(slot) = lengths.get_mut(id as usize) {
                    *slot = token.chars().count() as u32;
                }
            }
            for (id, t) in &added {
                if (*id as usize) >= lengths.len() {
                    lengths.resize(*id as usize + 1, 0);
                }
                lengths[*id as usize] = t.content.len() as u32;
            }
            Some((lengths, n == Some("NFC")))
        }
    };
    (max_id, special_ids, special, lengths)
}

fn lengths(loaded: &LoadedTokenizer) -> Option<(Vec<u32>, bool)> {
    match &loaded.offsets {
        OffsetSource::ByteLengths { lengths, nfc } => Some((lengths.clone(), *nfc)),
        OffsetSource::FastBpe | OffsetSource::Tokenizer => None,
    }
}

#[test]
fn loaded_info_equals_the_tokenizers_crate() {
    for family in FAMILIES {
        let file = assets().join(family).join("tokenizer.json");
        let mut loaded = LoadedTokenizer::load_with_cache(&file, None).expect("loads");
        loaded.verify().expect("verifies");
        let (vocab_size, special_ids, special, want_lengths) = oracle(&file);
        assert_eq!(loaded.vocab_size, vocab_size, "{family}");
        assert_eq!(loaded.special_ids, special_ids, "{family}");
        assert_eq!(loaded.special, special, "{family}");
        let byte_level = want_lengths.is_some();
        assert!(lengths(&loaded) == want_lengths, "{family}: byte lengths differ");
        // The fast BPE serves every file shipped (it passed the self-check), and gives the
        // offsets of every SentencePiece one.
        assert!(loaded.fast().is_some(), "{family}");
        assert_eq!(matches!(loaded.offsets, OffsetSource::FastBpe), !byte_level, "{family}");
    }
}

/// Texts beyond the self-check's probes, NFC-changing ones included.
const TEXTS: [&str; 4] = [
    "<|im_start|>user\nCafe\u{301} A\u{30a} 日本語<|im_end|>\n<|im_start|>assistant\nété 😀<|im_end|>\n",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n123456789 tokens<|eot_id|>",
    "",
];

#[test]
fn a_cached_load_skips_the_reference_and_encodes_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir(dir.path().join("c"));
    for family in FAMILIES {
        let file = assets().join(family).join("tokenizer.json");
        let mut cold = LoadedTokenizer::load_with_cache(&file, Some(cache.clone())).expect("loads");
        // The self-check ran on the cut-down tokenizer (`tokenizer_probe`), not the whole one.
        assert_eq!(cold.probe_verdict, Some(true), "{family}");
        assert!(!cold.reference.started(), "{family}: a cold load must not build the whole reference");
        let special = std::mem::take(&mut cold.special); // as the encoder does before `verify`
        cold.verify().expect("verifies");
        let entry = cache.entry_path(&cold.sha256);
        assert!(entry.is_file(), "{family}: a verified cold load stores its entry");
        let warm = LoadedTokenizer::load_with_cache(&file, Some(cache.clone())).expect("loads");
        assert!(!warm.reference.started(), "{family}: a cached load must not build the reference");
        assert_eq!((warm.vocab_size, &warm.special_ids, &warm.special), (cold.vocab_size, &cold.special_ids, &special));
        assert!(!special.is_empty(), "{family}");
        assert!(lengths(&warm) == lengths(&cold));
        let reference = cold.reference.get().expect("reference");
        assert!(cold.reference.started());
        // The fast BPE read back from the entry's tables (`fastbpe::tables`), not rebuilt.
        let fast = warm.fast().expect("a cached load has the verified fast BPE");
        assert_eq!(fast.has_offsets(), cold.fast().expect("verified").has_offsets(), "{family}");
        assert_eq!(fast.has_offsets(), !matches!(warm.offsets, OffsetSource::ByteLengths { .. }), "{family}");
        for text in PROBES.iter().chain(&TEXTS) {
            let want = reference.encode(*text, false).expect("encodes");
            assert_eq!(fast.encode(text), want.get_ids(), "{family}: {text:?}");
            // SentencePiece: the cached fast BPE gives the crate's offsets too.
            if let Some((ids, offsets)) = fast.encode_with_offsets(text) {
                assert_eq!((ids.as_slice(), offsets.as_slice()), (want.get_ids(), want.get_offsets()), "{family}: {text:?}");
            }
        }
        // The reference is still there when a text needs it, built on first use.
        assert_eq!(warm.reference.encode(TEXTS[0], false).expect("encodes").get_ids(), reference.encode(TEXTS[0], false).expect("encodes").get_ids());
        assert!(warm.reference.started());
    }
}

/// Loads `family` cold into `cache`; returns the entry's path and bytes.
fn fresh_entry(cache: &CacheDir, family: &str) -> (PathBuf, Vec<u8>, String) {
    let file = assets().join(family).join("tokenizer.json");
    let mut loaded = LoadedTokenizer::load_with_cache(&file, Some(cache.clone())).expect("loads");
    loaded.verify().expect("verifies");
    let path = cache.entry_path(&loaded.sha256);
    let bytes = std::fs::read(&path).expect("entry written");
    (path, bytes, loaded.sha256.clone())
}

#[test]
fn damaged_stale_and_misnamed_entries_are_ignored_and_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir(dir.path().to_path_buf());
    let (path, good, sha) = fresh_entry(&cache, "gpt2");
    assert!(tokenizer_cache::read(&cache, &sha).is_some_and(|e| e.fast_verified));
    let header = good.windows(sha.len()).position(|w| w == sha.as_bytes()).expect("sha in header") + sha.len() + 16;
    let build = tokenizer_cache::build_id();
    let build_at = good.windows(build.len()).position(|w| w == build.as_bytes()).expect("build in header");
    let mut damaged: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    flipped[header + (good.len() - header) / 2] ^= 0x20;
    damaged.push(("a flipped payload bit", flipped));
    damaged.push(("a truncated file", good[..good.len() - 1000].to_vec()));
    damaged.push(("an empty file", Vec::new()));
    let mut stale = good.clone();
    stale[build_at] ^= 0x01; // another version or build of fastsft
    damaged.push(("another build", stale));
    let mut other_format = good.clone();
    other_format[24] = other_format[24].wrapping_add(1);
    damaged.push(("another format", other_format));
    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes).expect("write");
        assert!(tokenizer_cache::read(&cache, &sha).is_none(), "{what} was trusted");
        let loaded = LoadedTokenizer::load_with_cache(&assets().join("gpt2/tokenizer.json"), Some(cache.clone())).expect("loads");
        assert_eq!(loaded.probe_verdict, Some(true), "{what}: not a cache hit (a cold load's self-check ran)");
        let mut loaded = loaded;
        loaded.verify().expect("verifies");
        assert_eq!(std::fs::read(&path).expect("rewritten"), good, "{what}: the entry is rebuilt, identical");
    }
    // An entry copied under another tokenizer's name is not that tokenizer's.
    let other = "0".repeat(64);
    std::fs::copy(&path, cache.entry_path(&other)).expect("copy");
    assert!(tokenizer_cache::read(&cache, &other).is_none());
}

#[test]
fn an_entry_whose_tables_do_not_read_back_is_loaded_cold_and_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir(dir.path().to_path_buf());
    for family in ["gpt2", "gemma"] {
        let (path, good, sha) = fresh_entry(&cache, family);
        let entry = tokenizer_cache::read(&cache, &sha).expect("entry");
        let parts = entry.parts().expect("parts");
        assert_eq!(parts.len(), 3, "sections, derived, tables");
        // Well-formed entries (right checksum) whose parts are cut short or have a byte too many.
        let cut = |p: &[u8]| p[..p.len() - 3].to_vec();
        let longer = |p: &[u8]| [p, &[0u8][..]].concat();
        for (what, derived, tables) in [
            ("tables cut short", parts[1].to_vec(), cut(parts[2])),
            ("a byte after the tables", parts[1].to_vec(), longer(parts[2])),
            ("derived cut short", cut(parts[1]), parts[2].to_vec()),
        ] {
            let payload = tokenizer_cache::join_parts(&[parts[0], &derived, &tables]);
            tokenizer_cache::write(&cache, &sha, &payload, true).expect("writes");
            let mut loaded = LoadedTokenizer::load_with_cache(&assets().join(family).join("tokenizer.json"), Some(cache.clone())).expect("loads");
            assert_eq!(loaded.probe_verdict, Some(true), "{family}, {what}: loaded cold");
            loaded.verify().expect("verifies");
            assert_eq!(std::fs::read(&path).expect("rewritten"), good, "{family}, {what}: the entry is rebuilt, identical");
        }
    }
}

#[test]
fn concurrent_writers_leave_one_whole_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheDir(dir.path().join("shared"));
    let json = std::fs::read(assets().join("qwen2.5/tokenizer.json")).expect("reads");
    let sections = tokenizer_cache::encode_sections(&TokenizerJson::parse(&json).expect("parses"));
    let payload = tokenizer_cache::join_parts(&[&sections, b"second part"]);
    let sha = sha256_hex(&json);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..3 {
                    tokenizer_cache::write(&cache, &sha, &payload, true).expect("writes");
                }
            });
            s.spawn(|| {
                for _ in 0..20 {
                    // Readers see a whole entry or none, never a partial one.
                    if let Some(entry) = tokenizer_cache::read(&cache, &sha) {
                        assert_eq!(entry.parts().expect("parts")[1], b"second part");
                        assert_eq!(tokenizer_cache::encode_sections(&entry.sections().expect("decodes")), sections);
                    }
                }
            });
        }
    });
    let names: Vec<String> = std::fs::read_dir(&cache.0).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [cache.entry_path(&sha).file_name().expect("name").to_string_lossy().into_owned()], "temporaries left");
    let entry = tokenizer_cache::read(&cache, &sha).expect("valid entry");
    assert_eq!(tokenizer_cache::encode_sections(&entry.sections().expect("decodes")), sections);
}

#[test]
fn sections_round_trip_through_the_binary_layout() {
    for family in ["qwen2.5", "gemma", "phi3"] {
        let json = std::fs::read(assets().join(family).join("tokenizer.json")).expect("reads");
        let parsed = TokenizerJson::parse(&json).expect("parses");
        let bytes = tokenizer_cache::encode_sections(&parsed);
        let decoded = tokenizer_cache::decode_sections(&bytes).expect("decodes");
        assert_eq!(tokenizer_cache::encode_sections(&decoded), bytes, "{family}");
        let (a, b) = (parsed.model.as_ref().expect("model"), decoded.model.as_ref().expect("model"));
        assert_eq!((&a.fields, &a.vocab, &a.merges), (&b.fields, &b.vocab, &b.merges), "{family}");
        assert_eq!((&parsed.added_tokens, &parsed.normalizer, &parsed.pre_tokenizer), (&decoded.added_tokens, &decoded.normalizer, &decoded.pre_tokenizer));
        assert!(tokenizer_cache::decode_sections(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn cache_directory_and_off_switch() {
    let os = |s: &'static str| Some(OsStr::new(s));
    let dir = |c: Option<CacheDir>| c.map(|c| c.0);
    assert_eq!(dir(CacheDir::from_vars(None, os("/x/cache"), os("/home/u"))), Some(PathBuf::from("/x/cache/fastsft/tokenizers")));
    assert_eq!(dir(CacheDir::from_vars(None, os(""), os("/home/u"))), Some(PathBuf::from("/home/u/.cache/fastsft/tokenizers")));
    assert_eq!(dir(CacheDir::from_vars(os("1"), None, os("/home/u"))), Some(PathBuf::from("/home/u/.cache/fastsft/tokenizers")));
    for off in ["0", "false", "off", "no"] {
        assert_eq!(dir(CacheDir::from_vars(os(off), os("/x/cache"), os("/home/u"))), None, "{off}");
    }
    assert_eq!(dir(CacheDir::from_vars(None, None, None)), None);
}
