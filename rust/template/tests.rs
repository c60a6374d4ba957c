//! Template tests: golden renderings and spans for the built-in ChatML, the Qwen2.5 template
//! without generation markers, a generation-marked template, and the HF-compatible environment.

use std::path::PathBuf;

use super::*;
use crate::schema::{parse_record, RejectReason, SchemaOptions};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers")
}

fn special(tokens: &[&str]) -> SpecialTokens {
    SpecialTokens { named: vec![("eos_token".into(), "<|im_end|>".into())], special: tokens.iter().map(|s| s.to_string()).collect() }
}

fn conversation(json: &str) -> Conversation {
    parse_record(json.as_bytes(), &SchemaOptions::default()).unwrap()
}

/// The one whole-conversation sample of a rendering.
fn render_one(template: &Template, conversation: &Conversation) -> std::result::Result<Rendered, Reject> {
    let mut samples = template.render(conversation, &TurnOptions { split: SplitTurns::Never, ..Default::default() })?;
    assert_eq!(samples.len(), 1);
    Ok(samples.remove(0))
}

fn span_texts(rendered: &Rendered) -> Vec<&str> {
    rendered.spans.iter().map(|s| &rendered.text[s.start..s.end]).collect()
}

const TWO_TURNS: &str = r#"{"conversations":[{"from":"human","value":"請翻譯:今天天氣真好"},{"from":"gpt","value":"The weather is nice today."},
    {"from":"human","value":"Thanks"},{"from":"gpt","value":"You're welcome."}]}"#;

#[test]
fn builtin_chatml_golden() {
    let (template, _) = Template::load(Some("chatml"), &assets(), SpecialTokens::default(), &TemplateOptions::default()).unwrap();
    let rendered = render_one(&template, &conversation(TWO_TURNS)).unwrap();
    assert_eq!(
        rendered.text,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n請翻譯:今天天氣真好<|im_end|>\n\
         <|im_start|>assistant\nThe weather is nice today.<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n\
         <|im_start|>assistant\nYou're welcome.<|im_end|>\n"
    );
    assert_eq!(span_texts(&rendered), ["The weather is nice today.<|im_end|>", "You're welcome.<|im_end|>"]);
    let first = rendered.spans[0];
    assert_eq!(&rendered.text[first.eot_start..first.end], "<|im_end|>");
    assert_eq!(first.message, 1);
}

#[test]
fn qwen25_template_spans_found_by_prefixes() {
    let dir = assets().join("qwen2.5");
    let (template, info) = Template::load(None, &dir, special(&["<|im_start|>", "<|im_end|>", "<|endoftext|>"]), &TemplateOptions::default()).unwrap();
    assert_eq!(info.name, "tokenizer_config.json");
    let rendered = render_one(&template, &conversation(TWO_TURNS)).unwrap();
    assert!(rendered.text.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"));
    assert_eq!(span_texts(&rendered), ["The weather is nice today.<|im_end|>", "You're welcome.<|im_end|>"]);
    // Tool calls: the span covers the whole <tool_call> block, header excluded.
    let tools = conversation(
        r#"{"tools":[{"name":"f","parameters":{"b":1.5,"a":"<&>"}}],"conversations":[{"from":"human","value":"q"},
        {"from":"function_call","value":"{\"name\": \"f\", \"arguments\": {\"x\": [1, 2]}}"},{"from":"observation","value":"r"},{"from":"gpt","value":"done"}]}"#,
    );
    let rendered = render_one(&template, &tools).unwrap();
    assert!(rendered.text.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"b\": 1.5, \"a\": \"<&>\"}}}\n</tools>"));
    assert_eq!(
        span_texts(&rendered),
        ["<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call><|im_end|>", "done<|im_end|>"]
    );
}

#[test]
fn generation_blocks_give_the_spans() {
    let source = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{% if m.role == 'assistant' %}{% generation %}{{ m.content + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
    let template = Template::Jinja(Box::new(jinja::JinjaTemplate::new(source, special(&["<|im_start|>", "<|im_end|>"]), &TemplateOptions::default()).unwrap()));
    let rendered = render_one(&template, &conversation(TWO_TURNS)).unwrap();
    assert_eq!(span_texts(&rendered), ["The weather is nice today.<|im_end|>", "You're welcome.<|im_end|>"]);
    assert!(!rendered.text.contains(MARK_START));
    let span = rendered.spans[1];
    assert_eq!((span.message, &rendered.text[span.eot_start..span.end]), (3, "<|im_end|>"));
}

#[test]
fn raise_exception_becomes_a_reject_with_its_message() {
    let source = "{% if messages[0].role != 'system' %}{{ raise_exception('Conversation must start with a system message') }}{% endif %}";
    let template = Template::Jinja(Box::new(jinja::JinjaTemplate::new(source, special(&[]), &TemplateOptions::default()).unwrap()));
    let reject = render_one(&template, &conversation(TWO_TURNS)).unwrap_err();
    assert_eq!(reject.reason, RejectReason::TemplateError);
    assert!(reject.detail.contains("Conversation must start with a system message"), "{}", reject.detail);
}

#[test]
fn hf_environment_features() {
    // trim_blocks/lstrip_blocks, loop controls, Python string methods, namespace, tojson kwargs.
    let source = "{% set ns = namespace(n=0) %}\n  {% for m in messages %}\n{% if loop.index > 2 %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}[{{ m.content.strip().split(' ')[0] | upper }}]{% endfor %}\n{{ ns.n }}{{ {'k': [1, 2]} | tojson(indent=1) }}{{ messages[-1].content.startswith('You') }}";
    let template = Template::Jinja(Box::new(jinja::JinjaTemplate::new(source, special(&[]), &TemplateOptions::default()).unwrap()));
    let conv = conversation(TWO_TURNS);
    let text = template.render_text_for_tests(&conv).unwrap();
    assert_eq!(text, "[請翻譯:今天天氣真好][THE]2{\n \"k\": [\n  1,\n  2\n ]\n}True");
}

#[test]
fn reply_containing_the_end_of_turn_token_is_rejected() {
    let dir = assets().join("qwen2.5");
    let (template, _) = Template::load(None, &dir, special(&["<|im_start|>", "<|im_end|>"]), &TemplateOptions::default()).unwrap();
    let c = conversation(r#"{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a<|im_end|>b"}]}"#);
    assert_eq!(render_one(&template, &c).unwrap_err().reason, RejectReason::SpanNotFound);
}

fn model_template(family: &str) -> crate::Encoder {
    crate::Encoder::load(&assets().join(family), None, SchemaOptions::default(), crate::EncodeOptions::default()).unwrap()
}

const SYSTEM_TWO_TURNS: &str = r#"{"system":"Be brief.","conversations":[{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello."},
    {"from":"human","value":"Bye"},{"from":"gpt","value":" Goodbye! "}]}"#;

#[test]
fn mistral_v03_moves_the_system_prompt_yet_spans_are_found() {
    // The template prints the system prompt only in a user turn that is the last message, so the
    // prompt before the first reply has it and the whole conversation does not: prefixes differ.
    let encoder = model_template("mistral-7b-instruct-v0.3");
    let rendered = render_one(encoder.template(), &conversation(SYSTEM_TWO_TURNS)).unwrap();
    assert_eq!(rendered.text, "<s>[INST] Hi[/INST] Hello.</s>[INST] Bye[/INST] Goodbye!</s>");
    assert_eq!(span_texts(&rendered), [" Hello.</s>", " Goodbye!</s>"]);
}

#[test]
fn every_family_finds_both_turns() {
    let expected = [
        ("qwen2.5", ["Hello.<|im_end|>", " Goodbye! <|im_end|>"]),
        ("qwen3", ["Hello.<|im_end|>", "<think>\n\n</think>\n\n Goodbye! <|im_end|>"]),
        ("llama3.1", ["Hello.<|eot_id|>", "Goodbye!<|eot_id|>"]),
        ("phi3", ["Hello.<|end|>", " Goodbye! <|end|>"]),
        ("tinyllama-chat", ["Hello.</s>", " Goodbye! </s>"]),
    ];
    for (family, spans) in expected {
        let encoder = model_template(family);
        let rendered = render_one(encoder.template(), &conversation(SYSTEM_TWO_TURNS)).unwrap();
        assert_eq!(span_texts(&rendered), spans, "{family}: {:?}", rendered.text);
    }
    // Gemma's template raises on a system message; without one both turns are found.
    let encoder = model_template("gemma");
    let plain = conversation(r#"{"conversations":[{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello."},{"from":"human","value":"Bye"},{"from":"gpt","value":" Goodbye! "}]}"#);
    assert_eq!(span_texts(&render_one(encoder.template(), &plain).unwrap()), ["Hello.<end_of_turn>", "Goodbye!<end_of_turn>"]);
    let reject = render_one(encoder.template(), &conversation(SYSTEM_TWO_TURNS)).unwrap_err();
    assert_eq!((reject.reason, reject.detail.as_str()), (RejectReason::TemplateError, "System role not supported"));
}

#[test]
fn python_whitespace_in_trim_and_strip() {
    let source = "{{ messages[0].content | trim }}|{{ messages[0].content.strip() }}|{{ messages[0].content.split() | length }}";
    let template = Template::Jinja(Box::new(jinja::JinjaTemplate::new(source, special(&[]), &TemplateOptions::default()).unwrap()));
    let conv = conversation("{\"conversations\":[{\"from\":\"human\",\"value\":\"\\u001f a b\\u001c\"},{\"from\":\"gpt\",\"value\":\"x\"}]}");
    assert_eq!(template.render_text_for_tests(&conv).unwrap(), "a b|a b|2");
}

#[test]
fn native_renderers_pass_the_self_check_only_for_their_own_templates() {
    let expected = [
        ("qwen2.5", Some(native::Family::Qwen25)),
        ("qwen3", Some(native::Family::Qwen3)),
        ("llama3.1", Some(native::Family::Llama31)),
        ("mistral-7b-instruct-v0.3", Some(native::Family::MistralV03)),
        ("mistral-7b-instruct-v0.1", None),
        ("gemma", None),
        ("phi3", None),
    ];
    for (family, native) in expected {
        let encoder = model_template(family);
        let Template::Jinja(template) = encoder.template() else { panic!("{family}") };
        assert_eq!(template.native_family(), native, "{family}");
    }
}

/// Every record of every shipped corpus, and each of its prefixes that ends with a reply (so
/// that each reply is once the last message), rendered by each native renderer and by its
/// Jinja template: the same text, spans and rejects wherever the native renderer takes the
/// conversation.
#[test]
fn native_renderers_equal_jinja_on_every_corpus_record() {
    use std::io::{BufRead, BufReader};
    let corpora = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/corpora");
    let mut conversations = Vec::new();
    for entry in std::fs::read_dir(&corpora).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        for line in BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let Ok(conversation) = parse_record(line.unwrap().as_bytes(), &SchemaOptions::default()) else { continue };
            for (i, message) in conversation.messages.iter().enumerate() {
                if message.role == Role::Assistant && i + 1 < conversation.messages.len() {
                    conversations.push(Conversation { messages: conversation.messages[..=i].to_vec(), ..conversation.clone() });
                }
            }
            conversations.push(conversation);
        }
    }
    assert!(conversations.len() > 9_000, "{}", conversations.len());
    for family in ["qwen2.5", "qwen3", "llama3.1", "mistral-7b-instruct-v0.3"] {
        let encoder = model_template(family);
        let Template::Jinja(template) = encoder.template() else { panic!("{family}") };
        let mut taken = 0;
        for conversation in &conversations {
            let Some((native, jinja)) = template.native_and_jinja_for_tests(conversation) else { continue };
            taken += 1;
            assert_eq!(native, jinja, "{family}: {:?}", conversation.messages);
        }
        // The corpora are mostly plain chat: the native renderer must take most of them.
        assert!(taken * 2 > conversations.len(), "{family}: native took {taken} of {}", conversations.len());
    }
}
