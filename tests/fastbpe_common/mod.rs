//! Shared by `tests/fastbpe_parity.rs` and `examples/{fastbpe_parity,tokenizer_speed}.rs`: the
//! shipped tokenizers and the texts fastbpe is checked and timed on.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use _core::schema::parse_record;
use _core::{EncodeOptions, Encoder, SchemaOptions};

pub const FAMILIES: [&str; 9] = [
    "qwen2.5",
    "qwen3",
    "llama3.1",
    "gpt2",
    "mistral-7b-instruct-v0.1",
    "mistral-7b-instruct-v0.3",
    "tinyllama-chat",
    "phi3",
    "gemma",
];

/// The corpora of `benches/bench_prep.py` (the benchmark corpus).
pub const BENCH_CORPORA: [&str; 7] = [
    "medicalgpt_sharegpt_zh_1k",
    "llamafactory_alpaca_zh_demo",
    "llamafactory_alpaca_en_demo",
    "llamafactory_glaive_toolcall_en_demo",
    "llamafactory_glaive_toolcall_zh_demo",
    "llamafactory_identity",
    "fastchat_dummy_conversation",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tokenizer_dir(family: &str) -> PathBuf {
    root().join("assets/tokenizers").join(family)
}

pub fn tokenizer_json(family: &str) -> Vec<u8> {
    std::fs::read(tokenizer_dir(family).join("tokenizer.json")).expect("read tokenizer.json")
}

/// Every shipped corpus: (name, non-empty lines).
pub fn corpora() -> Vec<(String, Vec<String>)> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("assets/corpora"))
        .expect("corpora dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".jsonl.gz").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let lines = corpus_lines(&n);
            (n, lines)
        })
        .collect()
}

pub fn corpus_lines(name: &str) -> Vec<String> {
    let path = root().join("assets/corpora").join(format!("{name}.jsonl.gz"));
    let file = std::fs::File::open(&path).expect("open corpus");
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).expect("gunzip corpus");
    text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// Every string value in a JSON line (message texts, tool schemas, …).
pub fn strings_in(line: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        walk(&v, &mut out);
    }
    out
}

/// The chat texts fastsft tokenizes: each line rendered with the family's own template (ChatML
/// when it has none or it cannot be loaded). Lines that are rejected are skipped.
pub fn rendered(family: &str, lines: &[String]) -> Vec<String> {
    let dir = tokenizer_dir(family);
    let encoder = load_encoder(&dir, None).or_else(|| load_encoder(&dir, Some("chatml")));
    let Some(encoder) = encoder else { return Vec::new() };
    let schema = SchemaOptions::default();
    lines
        .iter()
        .filter_map(|l| parse_record(l.as_bytes(), &schema).ok())
        .filter_map(|c| encoder.template().render(&c, &encoder.turn_options()).ok())
        .flatten()
        .map(|r| r.text)
        .collect()
}

fn load_encoder(dir: &Path, template: Option<&str>) -> Option<Encoder> {
    Encoder::load(dir, template, SchemaOptions::default(), EncodeOptions::default()).ok()
}

/// Per-thread CPU time in seconds (immune to other processes' load on a shared machine).
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc_timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; CLOCK_THREAD_CPUTIME_ID = 3 on Linux.
    unsafe { clock_gettime(3, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
}
