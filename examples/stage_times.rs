//! Where single-thread `prep` time goes, stage by stage: JSON → conversation, conversation →
//! text + spans, text → ids (+ mask). Usage: `cargo run --release --example stage_times -- TOKENIZER_DIR FILE.jsonl`
use std::path::PathBuf;
use std::time::Instant;

use _core::schema::parse_record;
use _core::{EncodeOptions, Encoder, SchemaOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let tokenizer = PathBuf::from(&args[1]);
    let text = std::fs::read_to_string(&args[2])?;
    let template = args.get(3).map(String::as_str);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let encoder = Encoder::load(&tokenizer, template, SchemaOptions::default(), EncodeOptions::default())?;
    let schema = SchemaOptions::default();

    let t = Instant::now();
    let conversations: Vec<_> = lines.iter().filter_map(|l| parse_record(l.as_bytes(), &schema).ok()).collect();
    let parse = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let turns = encoder.turn_options();
    let rendered: Vec<_> = conversations.iter().filter_map(|c| encoder.template().render(c, &turns).ok()).collect();
    let render = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tokens = 0usize;
    for c in &conversations {
        if let Ok(samples) = encoder.encode_conversation(c) {
            tokens += samples.iter().map(|e| e.ids.len()).sum::<usize>();
        }
    }
    let encode = t.elapsed().as_secs_f64() - render;
    let t = Instant::now();
    for line in &lines {
        let _ = encoder.encode_record(line.as_bytes());
    }
    let total = t.elapsed().as_secs_f64();
    let n = lines.len() as f64;
    println!("{} records, {} rendered, {tokens} tokens", lines.len(), rendered.len());
    println!("parse   {:7.3} s  {:8.0} rec/s", parse, n / parse);
    println!("render  {:7.3} s  {:8.0} rec/s", render, n / render);
    println!("encode  {:7.3} s  (tokenize + mask, excluding render)", encode);
    println!("total   {:7.3} s  {:8.0} rec/s", total, n / total);
    Ok(())
}
