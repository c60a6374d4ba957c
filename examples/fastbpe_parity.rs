//! Full parity check of fastbpe against the `tokenizers` crate: every line of every shipped
//! corpus, every JSON string in it, and every chat rendering, for every shipped tokenizer (or the
//! families given as arguments). Exits non-zero on the first difference.
//! Usage: `cargo run --release --example fastbpe_parity [FAMILY...]`
#[path = "../tests/fastbpe_common/mod.rs"]
mod common;

use _core::fastbpe::FastTokenizer;
use rayon::prelude::*;
use tokenizers::Tokenizer;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let families: Vec<&str> =
        if args.is_empty() { common::FAMILIES.to_vec() } else { args.iter().map(String::as_str).collect() };
    let corpora = common::corpora();
    let lines: Vec<String> = corpora.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
    let strings: Vec<String> = lines.iter().flat_map(|l| common::strings_in(l)).collect();
    let mut failed = false;
    for family in families {
        let json = common::tokenizer_json(family);
        let reference = Tokenizer::from_bytes(&json).expect("tokenizers loads it");
        let Some(fast) = FastTokenizer::from_tokenizer_json(&json) else {
            println!("{family}: not supported by fastbpe (falls back to tokenizers)");
            continue;
        };
        let chats = common::rendered(family, &lines);
        let mut report = Vec::new();
        for (what, texts) in [("lines", &lines), ("strings", &strings), ("chats", &chats)] {
            let bad: Vec<&String> = texts
                .par_iter()
                .filter(|t| fast.encode(t) != reference.encode_fast(t.as_str(), false).expect("encode").get_ids())
                .collect();
            let bytes: usize = texts.iter().map(String::len).sum();
            report.push(format!(
                "{} {what} ({:.1} MB){}",
                texts.len(),
                bytes as f64 / 1e6,
                if bad.is_empty() { String::new() } else { format!(" — {} DIFFER", bad.len()) }
            ));
            if let Some(t) = bad.first() {
                failed = true;
                println!("{family}: first difference on {t:?}");
            }
        }
        println!("{family}: {}", report.join(", "));
    }
    if failed {
        std::process::exit(1);
    }
    println!("all identical");
}
