//! Single-thread tokenization throughput, fastbpe vs the `tokenizers` crate (`encode_fast`, what
//! fastsft calls), on the chat renderings of the benchmark corpora (`benches/bench_prep.py`'s).
//!
//! Time is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so other processes on a shared
//! machine do not inflate it; each side is run REPS times, each time on a freshly loaded
//! tokenizer (cold caches: both libraries cache words per thread), and the median is reported.
//! Usage: `cargo run --release --example tokenizer_speed [REPS] [FAMILY...]`
//! (default: 5 reps; qwen2.5, llama3.1, qwen3, gpt2, mistral-7b-instruct-v0.3, gemma).
//! `OFFSETS=1`: ids and offsets on both sides, what masks of the SentencePiece families need:
//! the crate's `encode` against `FastTokenizer::encode_with_offsets`.
#[path = "../tests/fastbpe_common/mod.rs"]
mod common;

use _core::fastbpe::FastTokenizer;
use tokenizers::Tokenizer;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let named: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let families = if named.is_empty() {
        vec!["qwen2.5", "llama3.1", "qwen3", "gpt2", "mistral-7b-instruct-v0.3", "gemma"]
    } else {
        named
    };
    let lines: Vec<String> = common::BENCH_CORPORA.iter().flat_map(|c| common::corpus_lines(c)).collect();
    println!("family                      texts      MB   tokenizers MB/s   fastbpe MB/s   ratio   (median of {reps}, thread CPU time)");
    for family in families {
        let json = common::tokenizer_json(family);
        let texts = common::rendered(family, &lines);
        let mb = texts.iter().map(String::len).sum::<usize>() as f64 / 1e6;
        let mut ref_times = Vec::new();
        let mut fast_times = Vec::new();
        let mut tokens = (0, 0);
        // FASTBPE_ONLY=1: time fastbpe alone (for profiling it).
        let only_fast = std::env::var_os("FASTBPE_ONLY").is_some();
        let offsets = std::env::var_os("OFFSETS").is_some();
        for _ in 0..reps {
            if !only_fast {
                let reference = Tokenizer::from_bytes(&json).expect("tokenizers loads it");
                let t = common::thread_cpu_seconds();
                let mut n = 0;
                for text in &texts {
                    n += match offsets {
                        true => reference.encode(text.as_str(), false).expect("encode").len(),
                        false => reference.encode_fast(text.as_str(), false).expect("encode").len(),
                    };
                }
                ref_times.push(common::thread_cpu_seconds() - t);
                tokens.0 = n;
            }

            let Some(fast) = FastTokenizer::from_tokenizer_json(&json) else {
                println!("{family}: not supported by fastbpe");
                break;
            };
            let t = common::thread_cpu_seconds();
            let mut n = 0;
            for text in &texts {
                n += match offsets {
                    true => fast.encode_with_offsets(text).expect("fastbpe offsets for this family").1.len(),
                    false => fast.encode(text).len(),
                };
            }
            fast_times.push(common::thread_cpu_seconds() - t);
            tokens.1 = n;
        }
        if fast_times.is_empty() {
            continue;
        }
        if only_fast {
            println!("{family:<26} {:>6} {:>7.2} {:>17} {:>14.2}", texts.len(), mb, "-", mb / median(fast_times));
            continue;
        }
        assert_eq!(tokens.0, tokens.1, "{family}: token counts differ");
        let (r, f) = (median(ref_times), median(fast_times));
        println!("{family:<26} {:>6} {:>7.2} {:>17.2} {:>14.2} {:>7.2}x", texts.len(), mb, mb / r, mb / f, r / f);
    }
}
