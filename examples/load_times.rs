//! Where tokenizer start-up time goes, step by step, for one `tokenizer.json` (median of a few
//! runs each). Usage: `cargo run --release --example load_times -- assets/tokenizers/qwen2.5 [runs]`
use std::path::PathBuf;
use std::time::Instant;

use _core::fastbpe::{FastTokenizer, TokenizerJson};
use _core::tokenizer::LoadedTokenizer;
use _core::tokenizer_cache::{self, CacheDir};
use _core::{EncodeOptions, Encoder, SchemaOptions};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(runs: usize, label: &str, mut f: impl FnMut() -> T) {
    let samples = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!("{label:44} {:9.1} ms", median(samples));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let runs = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let file = dir.join("tokenizer.json");
    let bytes = std::fs::read(&file).expect("reads");
    let cache = CacheDir(std::env::temp_dir().join(format!("load_times-{}", std::process::id())));
    time(runs, "read tokenizer.json", || std::fs::read(&file).expect("reads"));
    time(runs, "sha256", || _core::template::sha256_hex(&bytes));
    time(runs, "parse sections (borrowed)", || TokenizerJson::parse(&bytes).expect("parses").model.map(|m| m.fields.len()));
    time(runs, "serde_json::Value of the whole file (old)", || serde_json::from_slice::<serde_json::Value>(&bytes).expect("parses"));
    let parsed = TokenizerJson::parse(&bytes).expect("parses");
    time(runs, "FastTokenizer::from_parsed", || FastTokenizer::from_parsed(&parsed).is_some());
    let sections = tokenizer_cache::encode_sections(&parsed);
    time(runs, "cache: encode sections", || tokenizer_cache::encode_sections(&parsed).len());
    time(runs, "cache: decode sections", || tokenizer_cache::decode_sections(&sections).expect("decodes").model.is_some());
    time(runs, "tokenizers::Tokenizer::from_bytes", || tokenizers::Tokenizer::from_bytes(&bytes).expect("loads"));
    time(runs, "LoadedTokenizer cold (no cache) + verify", || {
        let mut t = LoadedTokenizer::load_with_cache(&file, None).expect("loads");
        t.verify().expect("verifies");
        t.fast().is_some()
    });
    let mut prime = LoadedTokenizer::load_with_cache(&file, Some(cache.clone())).expect("loads");
    prime.verify().expect("verifies");
    time(runs, "LoadedTokenizer warm (cache) + verify", || {
        let mut t = LoadedTokenizer::load_with_cache(&file, Some(cache.clone())).expect("loads");
        t.verify().expect("verifies");
        t.fast().is_some()
    });
    time(runs, "Encoder::load (environment's cache)", || {
        Encoder::load(&dir, None, SchemaOptions::default(), EncodeOptions::default()).expect("loads").tokenizer_info.vocab_size
    });
    time(runs, "Encoder::load --template chatml", || {
        Encoder::load(&dir, Some("chatml"), SchemaOptions::default(), EncodeOptions::default()).expect("loads").tokenizer_info.vocab_size
    });
    let _ = std::fs::remove_dir_all(&cache.0);
}
