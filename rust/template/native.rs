//! Native renderers for the most used template families (Qwen2.5/ChatML, Qwen3, Llama 3.1,
//! Mistral v0.3): the same text and spans as their Jinja templates, without an interpreter.
//!
//! They are a fast path only. Each covers a stated domain of conversations (outside it:
//! `None`, and the Jinja template renders) and is switched on for a model only after a start-up
//! self-check renders a probe set of conversations both ways and finds them identical — text,
//! spans and rejects. A template that differs in any byte keeps the Jinja path.

use super::pyjson::{to_python_json, PyJsonOptions};
use super::pystr::is_python_space;
use super::{Rendered, Span};
use crate::schema::{Conversation, Message, Reject, RejectReason, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen25,
    Qwen3,
    Llama31,
    MistralV03,
}

pub const FAMILIES: [Family; 4] = [Family::Qwen25, Family::Qwen3, Family::Llama31, Family::MistralV03];

/// The sha256 of the template text each renderer was written for (the `chat_template` of the
/// shipped Qwen2.5-Instruct, Qwen3, Llama-3.1-Instruct and Mistral-7B-Instruct-v0.3 tokenizers). Any
/// other template, however similar, renders through Jinja.
pub fn template_sha256(family: Family) -> &'static str {
    match family {
        Family::Qwen25 => "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
        Family::Qwen3 => "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8",
        Family::Llama31 => "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
        Family::MistralV03 => "e16746b40344d6c5b5265988e0328a0bf7277be86f1c335156eae07e29c82826",
    }
}

pub struct NativeTemplate {
    pub family: Family,
    bos: String,
    eos: String,
}

type Rendering = Option<Result<Rendered, Reject>>;

impl NativeTemplate {
    pub fn new(family: Family, bos: Option<&str>, eos: Option<&str>) -> Self {
        NativeTemplate { family, bos: bos.unwrap_or_default().into(), eos: eos.unwrap_or_default().into() }
    }

    pub fn render(&self, conversation: &Conversation) -> Rendering {
        match self.family {
            Family::Qwen25 => qwen25(conversation),
            Family::Qwen3 => qwen3(conversation),
            Family::Llama31 => self.llama31(conversation),
            Family::MistralV03 => self.mistral_v03(conversation),
        }
    }

    /// Llama 3.1 without tools: a system header with the knowledge cut-off and the fixed date the
    /// template defaults to, then `<|start_header_id|>role<|end_header_id|>\n\n` + trimmed
    /// content + `<|eot_id|>` per message.
    fn llama31(&self, conversation: &Conversation) -> Rendering {
        let messages = &conversation.messages;
        if !conversation.tools.is_empty() || messages.iter().any(|m| m.role == Role::Tool || m.tool_calls.is_some()) {
            return None;
        }
        let (system, rest) = match messages.split_first() {
            Some((first, rest)) if first.role == Role::System => (first.text().trim_matches(is_python_space), rest),
            _ => ("", &messages[..]),
        };
        let mut text = String::with_capacity(256 + messages.iter().map(|m| m.text().len() + 48).sum::<usize>());
        text.push_str(&self.bos);
        text.push_str("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
        text.push_str(system);
        text.push_str("<|eot_id|>");
        let offset = messages.len() - rest.len();
        let mut spans = Vec::new();
        for (i, message) in rest.iter().enumerate() {
            text.push_str("<|start_header_id|>");
            text.push_str(message.role.as_str());
            text.push_str("<|end_header_id|>\n\n");
            let start = text.len();
            text.push_str(message.text().trim_matches(is_python_space));
            let eot_start = text.len();
            text.push_str("<|eot_id|>");
            if message.role == Role::Assistant {
                spans.push(Span { message: offset + i, start, eot_start, end: text.len() });
            }
        }
        finish(conversation, text, spans, "<|eot_id|>")
    }

    /// Mistral v0.3 without tools: `[INST] user[/INST] reply</s>`, the system prompt folded into a
    /// user turn that is the last message (so, in training data, never), roles must alternate.
    fn mistral_v03(&self, conversation: &Conversation) -> Rendering {
        let messages = &conversation.messages;
        if !conversation.tools.is_empty() || messages.iter().any(|m| m.role == Role::Tool || m.tool_calls.is_some()) {
            return None;
        }
        let (system, rest) = match messages.split_first() {
            Some((first, rest)) if first.role == Role::System => (Some(first.text()), rest),
            _ => (None, &messages[..]),
        };
        for (i, message) in rest.iter().enumerate() {
            if (message.role == Role::User) != (i % 2 == 0) {
                return Some(Err(template_error(
                    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...",
                )));
            }
        }
        let offset = messages.len() - rest.len();
        let mut text = self.bos.clone();
        let mut spans = Vec::new();
        for (i, message) in rest.iter().enumerate() {
            match message.role {
                Role::User => {
                    text.push_str("[INST] ");
                    if let (true, Some(system)) = (i + 1 == rest.len(), system) {
                        text.push_str(system);
                        text.push_str("\n\n");
                    }
                    text.push_str(message.text());
                    text.push_str("[/INST]");
                }
                Role::Assistant => {
                    let start = text.len();
                    text.push(' ');
                    text.push_str(message.text().trim_matches(is_python_space));
                    let eot_start = text.len();
                    text.push_str(&self.eos);
                    spans.push(Span { message: offset + i, start, eot_start, end: text.len() });
                }
                _ => {
                    return Some(Err(template_error(
                        "Only user and assistant roles are supported, with the exception of an initial optional system message!",
                    )))
                }
            }
        }
        finish(conversation, text, spans, &self.eos)
    }
}

/// Like the Jinja path: the template renders first (its own errors win), then a reply that
/// contains the end-of-turn token is rejected.
fn finish(conversation: &Conversation, text: String, spans: Vec<Span>, eot: &str) -> Rendering {
    let offending = conversation.messages.iter().position(|m| m.role == Role::Assistant && !eot.is_empty() && m.text().contains(eot));
    Some(match offending {
        Some(index) => Err(eot_in_reply(index, eot)),
        None => Ok(Rendered::whole(text, spans)),
    })
}

fn template_error(message: &str) -> Reject {
    Reject::new(RejectReason::TemplateError, message)
}

fn eot_in_reply(index: usize, eot: &str) -> Reject {
    Reject::new(RejectReason::SpanNotFound, format!("assistant message {} contains the end-of-turn token {eot} in its text", index + 1))
}

const QWEN_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// Qwen2.5's template, tools and tool calls included.
fn qwen25(conversation: &Conversation) -> Rendering {
    let messages = &conversation.messages;
    let json = |v: &serde_json::Value| to_python_json(&crate::exact_json::to_template(v).ok()?, &PyJsonOptions::default()).ok();
    let mut text = String::with_capacity(512 + messages.iter().map(|m| m.text().len() + 32).sum::<usize>());
    let first_is_system = messages.first().is_some_and(|m| m.role == Role::System);
    let system = if first_is_system { messages[0].text() } else { QWEN_SYSTEM };
    if conversation.tools.is_empty() {
        text.push_str("<|im_start|>system\n");
        text.push_str(system);
        text.push_str("<|im_end|>\n");
    } else {
        text.push_str("<|im_start|>system\n");
        text.push_str(system);
        text.push_str("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for tool in &conversation.tools {
            text.push('\n');
            text.push_str(&json(tool)?);
        }
        text.push_str("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
    }
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match message.role {
            Role::System if i == 0 => {}
            Role::Assistant if message.tool_calls.is_some() => {
                text.push_str("<|im_start|>assistant");
                let start = text.len() + 1; // after the newline that opens content or the first call
                if !message.text().is_empty() {
                    text.push('\n');
                    text.push_str(message.text());
                }
                for call in message.tool_calls.iter().flatten() {
                    let function = call.get("function").unwrap_or(call);
                    let name = function.get("name")?.as_str()?;
                    let arguments = function.get("arguments")?;
                    text.push_str("\n<tool_call>\n{\"name\": \"");
                    text.push_str(name);
                    text.push_str("\", \"arguments\": ");
                    text.push_str(&json(arguments)?);
                    text.push_str("}\n</tool_call>");
                }
                let eot_start = text.len();
                text.push_str("<|im_end|>");
                spans.push(Span { message: i, start, eot_start, end: text.len() });
                text.push('\n');
            }
            Role::Tool => {
                if i == 0 || messages[i - 1].role != Role::Tool {
                    text.push_str("<|im_start|>user");
                }
                text.push_str("\n<tool_response>\n");
                text.push_str(message.text());
                text.push_str("\n</tool_response>");
                if i + 1 == messages.len() || messages[i + 1].role != Role::Tool {
                    text.push_str("<|im_end|>\n");
                }
            }
            role => {
                text.push_str("<|im_start|>");
                text.push_str(role.as_str());
                text.push('\n');
                let start = text.len();
                text.push_str(message.text());
                let eot_start = text.len();
                text.push_str("<|im_end|>");
                if role == Role::Assistant {
                    spans.push(Span { message: i, start, eot_start, end: text.len() });
                }
                text.push('\n');
            }
        }
    }
    finish(conversation, text, spans, "<|im_end|>")
}

/// Qwen3 without tools, where every assistant message answers the user message just before it.
/// In that domain the template's `last_query_index` is the last user message, so the last
/// message, when it is a reply, opens with an empty `<think>\n\n</think>\n\n` block and its
/// content loses leading newlines; every other reply renders as written. Outside it (tool turns,
/// replies that follow a reply or open the conversation, user text that looks like a tool
/// response): `None`, and the Jinja template renders. Reasoning never reaches here (`is_plain`).
fn qwen3(conversation: &Conversation) -> Rendering {
    let messages = &conversation.messages;
    let is_tool_response = |m: &Message| m.text().starts_with("<tool_response>") && m.text().ends_with("</tool_response>");
    let answers_user = |i: usize| i > 0 && messages[i - 1].role == Role::User;
    let in_domain = !messages.is_empty()
        && conversation.tools.is_empty()
        && messages.iter().enumerate().all(|(i, m)| match m.role {
            Role::System => true,
            Role::User => !is_tool_response(m),
            Role::Assistant => m.tool_calls.is_none() && answers_user(i),
            Role::Tool => false,
        });
    if !in_domain {
        return None;
    }
    let mut text = String::with_capacity(64 + messages.iter().map(|m| m.text().len() + 32).sum::<usize>());
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        text.push_str("<|im_start|>");
        text.push_str(message.role.as_str());
        text.push('\n');
        let start = text.len();
        if message.role == Role::Assistant && i + 1 == messages.len() {
            text.push_str("<think>\n\n</think>\n\n");
            text.push_str(message.text().trim_start_matches('\n'));
        } else {
            text.push_str(message.text());
        }
        let eot_start = text.len();
        text.push_str("<|im_end|>");
        if message.role == Role::Assistant {
            spans.push(Span { message: i, start, eot_start, end: text.len() });
        }
        text.push('\n');
    }
    finish(conversation, text, spans, "<|im_end|>")
}

/// Conversations the self-check renders both ways: turns, systems, edge whitespace, Unicode,
/// template-looking text, tool use, and shapes the templates refuse.
pub fn probe_set() -> Vec<Conversation> {
    let m = |role, content: &str| Message::new(role, content);
    let call = |name: &str, args: serde_json::Value| {
        serde_json::json!({"type": "function", "function": {"name": name, "arguments": args}})
    };
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & \"here\"",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1.5}}}}});
    let plain = |messages: Vec<Message>| Conversation { messages, ..Default::default() };
    let with_tool_calls = |content: &str, calls: Vec<serde_json::Value>| Message { tool_calls: Some(calls), ..Message::new(Role::Assistant, content) };
    let mut with_calls = plain(vec![
        m(Role::User, "Weather in Paris?"),
        with_tool_calls("", vec![call("get_weather", serde_json::json!({"city": "Paris", "days": 2}))]),
        m(Role::Tool, "{\"temp\": 21}"),
        m(Role::Tool, "second result"),
        with_tool_calls("Checking again.", vec![call("get_weather", serde_json::json!({"city": "巴黎"})), call("x", serde_json::json!({}))]),
        m(Role::Tool, "ok"),
        m(Role::Assistant, "It is 21 °C."),
    ]);
    with_calls.tools = vec![tool.clone()];
    let mut system_tools = with_calls.clone();
    system_tools.messages.insert(0, m(Role::System, "Use tools."));
    vec![
        plain(vec![m(Role::User, "Hello, who are you?"), m(Role::Assistant, "I am a helpful assistant.")]),
        plain(vec![m(Role::System, "Be brief."), m(Role::User, "Hi"), m(Role::Assistant, "Hello.")]),
        plain(vec![
            m(Role::System, " spaced system \n"),
            m(Role::User, "  first\n"),
            m(Role::Assistant, "\n\n reply one  \n"),
            m(Role::User, "请翻译：今天天气真好 😀👩‍💻"),
            m(Role::Assistant, "The weather is nice today.\u{1f}"),
            m(Role::User, "{{ x }} {% if %} <|im_start|> [INST]"),
            m(Role::Assistant, "'quotes' \"double\" \\ back\tslash"),
        ]),
        plain(vec![m(Role::System, ""), m(Role::User, ""), m(Role::Assistant, "x")]),
        plain(vec![m(Role::User, "a"), m(Role::User, "b"), m(Role::Assistant, "c")]),
        plain(vec![m(Role::User, "a"), m(Role::Assistant, "b"), m(Role::System, "late system"), m(Role::User, "c"), m(Role::Assistant, "d")]),
        plain(vec![m(Role::Assistant, "starts with the assistant"), m(Role::User, "q"), m(Role::Assistant, "a")]),
        plain(vec![m(Role::User, "q"), m(Role::Assistant, "\n\n leading newlines, last reply\n")]),
        plain(vec![m(Role::User, "q"), m(Role::Assistant, "first"), m(Role::Assistant, "a reply after a reply")]),
        plain(vec![m(Role::User, "q"), m(Role::Assistant, "a"), m(Role::User, "<tool_response>\nlooks like a tool\n</tool_response>"), m(Role::Assistant, "b")]),
        plain(vec![m(Role::System, "s"), m(Role::User, "q"), m(Role::Assistant, "a"), m(Role::User, "ends with the user")]),
        with_calls,
        system_tools,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_set_exercises_tools_and_multi_turn() {
        let probes = probe_set();
        assert!(probes.iter().any(|c| !c.tools.is_empty()));
        assert!(probes.iter().any(|c| c.messages.iter().filter(|m| m.role == Role::Assistant).count() >= 3));
    }
}
