//! Property tests for the readers, schemas and templates (DESIGN §5): whatever bytes, JSON values or
//! Unicode text a corpus holds, the core returns a conversation or a reject with a reason, and
//! never panics (a panic would surface in Python as `PanicException`, past `except Exception`).
//!
//! An integration test on the public API (`_core::schema::parse_record`, `_core::Encoder`,
//! `_core::source::Source`), so it also checks that what Python and other engines reach is safe.

use std::path::PathBuf;
use std::sync::OnceLock;

use _core::schema::{parse_record, Conversation, Role};
use _core::source::Source;
use _core::{EncodeOptions, Encoder, Format, SchemaOptions};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn tokenizer_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers").join(name)
}

/// Loading a tokenizer takes a while (more so in a debug build): once per test binary.
fn encoder(name: &'static str) -> &'static Encoder {
    static QWEN: OnceLock<Encoder> = OnceLock::new();
    static GEMMA: OnceLock<Encoder> = OnceLock::new();
    let cell = match name {
        "qwen2.5" => &QWEN,
        "gemma" => &GEMMA,
        _ => unreachable!("no encoder cached for {name}"),
    };
    cell.get_or_init(|| {
        let options = EncodeOptions { max_len: Some(64), ..EncodeOptions::default() };
        Encoder::load(&tokenizer_dir(name), None, SchemaOptions::default(), options).expect("shipped tokenizer loads")
    })
}

fn all_formats() -> [SchemaOptions; 4] {
    [None, Some(Format::ShareGpt), Some(Format::OpenAi), Some(Format::Alpaca)]
        .map(|format| SchemaOptions { format, ..SchemaOptions::default() })
}

/// What every accepted conversation must satisfy, whatever the record looked like.
fn check_conversation(c: &Conversation) -> Result<(), TestCaseError> {
    prop_assert!(!c.messages.is_empty());
    prop_assert_eq!(c.messages.last().map(|m| m.role), Some(Role::Assistant));
    for m in &c.messages {
        if m.role == Role::Assistant {
            prop_assert!(!m.text().is_empty() || m.tool_calls.is_some() || m.reasoning.is_some(), "empty assistant reply accepted");
        }
    }
    Ok(())
}

fn parse_all_ways(bytes: &[u8]) -> Result<(), TestCaseError> {
    for options in all_formats() {
        match parse_record(bytes, &options) {
            Ok(conversation) => check_conversation(&conversation)?,
            Err(reject) => prop_assert!(!reject.reason.code().is_empty() && !reject.detail.is_empty()),
        }
    }
    Ok(())
}

/// Text that stresses templates and tokenizers: any Unicode, plus Jinja syntax, special tokens,
/// the in-band markers fastsft uses internally (U+FDD0/U+FDD1), controls and combining marks.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<String>(),
        1 => Just("{{ raise_exception('x') }}".to_string()),
        1 => Just("{% for m in messages %}{{ m }}{% endfor %}".to_string()),
        1 => Just("<|im_start|>assistant\n".to_string()),
        1 => Just("<|im_end|>".to_string()),
        1 => Just("<end_of_turn>\n<start_of_turn>model\n".to_string()),
        1 => Just("\u{FDD0}\u{FDD1}".to_string()),
        1 => Just("e\u{301}\u{212b}\u{fb01}\r\n\u{2028}\0\t".to_string()),
        1 => Just(String::new()),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|parts| parts.concat())
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A role name: the known ones and their aliases, and anything else.
fn role() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "user", "assistant", "system", "tool", "human", "gpt", "model", "developer", "observation",
            "function_call", "function", "ipython", "bot",
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Message content: mostly text, sometimes null, content parts (text or not), or any value.
fn content() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        Just(json!({"type": "image", "image": "x.png"})),
        Just(json!({"type": "image_url", "image_url": {"url": "x"}})),
        json_value(),
    ];
    prop_oneof![
        6 => text().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => prop::collection::vec(part, 0..3).prop_map(Value::Array),
        1 => json_value(),
    ]
}

/// A message-like object in either layout, with fields sometimes missing or extra.
fn message() -> impl Strategy<Value = Value> {
    (role(), content(), any::<bool>(), prop::option::of(json_value()), prop::option::of(any::<bool>())).prop_map(
        |(role, content, sharegpt, extra, train)| {
            let (role_key, content_key) = if sharegpt { ("from", "value") } else { ("role", "content") };
            let mut m = Map::new();
            if !role.is_null() {
                m.insert(role_key.into(), role);
            }
            m.insert(content_key.into(), content);
            if let Some(extra) = extra {
                m.insert("tool_calls".into(), extra);
            }
            if let Some(train) = train {
                m.insert("train".into(), Value::Bool(train));
            }
            Value::Object(m)
        },
    )
}

/// Records shaped like the supported layouts, with every part liable to be wrong.
fn record() -> impl Strategy<Value = Value> {
    let messages = || prop::collection::vec(message(), 0..6);
    prop_oneof![
        (messages(), prop::option::of(json_value()), prop::option::of(text()))
            .prop_map(|(m, tools, system)| json!({"conversations": m, "tools": tools, "system": system})),
        (messages(), prop::option::of(json_value())).prop_map(|(m, tools)| json!({"messages": m, "tools": tools})),
        // Well-formed alternating chats, so that many cases get as far as the template and tokenizer.
        (prop::collection::vec((text(), text()), 1..4), prop::option::of(text())).prop_map(|(turns, system)| {
            let mut messages: Vec<Value> = system.into_iter().map(|s| json!({"role": "system", "content": s})).collect();
            for (q, a) in turns {
                messages.push(json!({"role": "user", "content": q}));
                messages.push(json!({"role": "assistant", "content": a}));
            }
            json!({"messages": messages})
        }),
        (content(), content(), content(), prop::option::of(json_value()))
            .prop_map(|(i, x, o, history)| json!({"instruction": i, "input": x, "output": o, "history": history})),
        json_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_all_ways(&bytes)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        parse_all_ways(value.to_string().as_bytes())?;
    }

    #[test]
    fn record_shaped_json_never_panics(value in record()) {
        parse_all_ways(value.to_string().as_bytes())?;
    }

    #[test]
    fn corrupted_records_never_panic(value in record(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        // A valid-looking record with one byte replaced: invalid UTF-8, broken syntax, lone escapes.
        let mut bytes = value.to_string().into_bytes();
        let at = cut.index(bytes.len());
        bytes[at] = byte;
        parse_all_ways(&bytes)?;
        parse_all_ways(&bytes[..at])?;
    }
}

proptest! {
    // Templates and tokenizers are slower (a debug build renders and tokenizes every case).
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn templates_and_tokenizer_never_panic(value in record()) {
        let bytes = value.to_string().into_bytes();
        // Qwen2.5 renders anything; Gemma's template raises on system turns and non-alternating roles.
        for name in ["qwen2.5", "gemma"] {
            match encoder(name).encode_record(&bytes) {
                Ok(samples) => {
                    prop_assert!(!samples.is_empty());
                    for encoded in samples {
                        prop_assert_eq!(encoded.ids.len(), encoded.mask.len());
                        prop_assert!(encoded.ids.len() <= 64, "--max-len 64 exceeded: {}", encoded.ids.len());
                        prop_assert!(encoded.mask.contains(&1), "a sample with no trained token was accepted");
                        prop_assert!(encoded.mask.iter().all(|&m| m <= 1));
                    }
                }
                Err(reject) => prop_assert!(!reject.detail.is_empty(), "reject {} without detail", reject.reason.code()),
            }
        }
    }

    #[test]
    fn source_yields_every_non_blank_line(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20), crlf in any::<bool>(), bom in any::<bool>()) {
        // Raw bytes, one record per line: the reader neither drops nor merges lines, whatever they hold.
        let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.into_iter().filter(|&b| b != b'\n').collect()).collect();
        let mut file = Vec::new();
        if bom {
            file.extend_from_slice(b"\xef\xbb\xbf");
        }
        for line in &lines {
            file.extend_from_slice(line);
            file.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        // Compression is sniffed from magic bytes: keep this a plain file. (Its .jsonl name makes
        // it JSON Lines even when the first record is an array.)
        prop_assume!(!file.starts_with(&[0x1f, 0x8b]) && !file.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("random.jsonl");
        std::fs::write(&path, &file).expect("write");
        let mut source = Source::new(vec![path]).expect("the file exists");
        let mut records = Vec::new();
        loop {
            let mut chunk = Vec::new();
            if !source.next_chunk(7, 1 << 20, &mut chunk).expect("a plain file reads to the end") {
                break;
            }
            prop_assert!(chunk.len() <= 7);
            records.extend(chunk);
        }
        let expected: Vec<u64> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.iter().all(|b| b.is_ascii_whitespace()))
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let got: Vec<u64> = records.iter().map(|r| r.line).collect();
        prop_assert_eq!(got, expected);
        // Each record holds its line's bytes as they were (the BOM dropped from the first).
        for r in &records {
            let line = &lines[r.line as usize - 1];
            prop_assert!(r.bytes.starts_with(line), "line {} changed", r.line);
        }
        prop_assert_eq!(source.infos().len(), 1);
        prop_assert_eq!(source.infos()[0].size, file.len() as u64);
    }
}
