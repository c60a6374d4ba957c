//! The built-in ChatML template (`--template chatml`), rendered natively with exact spans:
//!
//! ```text
//! <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n   (when the conversation has none)
//! <|im_start|>{role}\n{content}<|im_end|>\n                        (every message)
//! ```
//!
//! Tool schemas are listed in the system turn and tool calls written as `<tool_call>` JSON lines,
//! as Qwen's ChatML does, so tool-use corpora are not silently flattened.

use super::pyjson::{to_python_json, PyJsonOptions};
use super::{Rendered, Span};
use crate::schema::{Conversation, Reject, RejectReason, Role};

pub struct ChatMl;

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

impl ChatMl {
    /// What the manifest hashes for this template: the layout, versioned with the code.
    pub const DESCRIPTION: &'static str =
        "fastsft chatml v1: <|im_start|>{role}\\n{content}<|im_end|>\\n; default system 'You are a helpful assistant.'";

    pub fn render(&self, conversation: &Conversation) -> Result<Rendered, Reject> {
        let mut text = String::with_capacity(256 + conversation.messages.iter().map(|m| m.text().len() + 32).sum::<usize>());
        let mut spans = Vec::new();
        let has_system = conversation.messages.first().is_some_and(|m| m.role == Role::System);
        if !has_system {
            push_turn(&mut text, "system", &with_tools(DEFAULT_SYSTEM, conversation)?);
        }
        for (index, message) in conversation.messages.iter().enumerate() {
            match message.role {
                Role::Assistant => {
                    text.push_str(START);
                    text.push_str("assistant\n");
                    let start = text.len();
                    if message.text().contains(END) {
                        return Err(Reject::new(
                            RejectReason::SpanNotFound,
                            format!("assistant message {} contains the end-of-turn token {END} in its text", index + 1),
                        ));
                    }
                    text.push_str(message.text());
                    for (i, call) in message.tool_calls.iter().flatten().enumerate() {
                        if i > 0 || !message.text().is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&tool_call_text(call)?);
                    }
                    let eot_start = text.len();
                    text.push_str(END);
                    spans.push(Span { message: index, start, eot_start, end: text.len() });
                    text.push('\n');
                }
                Role::System if index == 0 => push_turn(&mut text, "system", &with_tools(message.text(), conversation)?),
                role => push_turn(&mut text, role.as_str(), message.text()),
            }
        }
        Ok(Rendered::whole(text, spans))
    }
}

fn push_turn(text: &mut String, role: &str, content: &str) {
    text.push_str(START);
    text.push_str(role);
    text.push('\n');
    text.push_str(content);
    text.push_str(END);
    text.push('\n');
}

fn json(value: &serde_json::Value) -> Result<String, Reject> {
    to_python_json(&crate::exact_json::to_template(value)?, &PyJsonOptions::default())
        .map_err(|e| Reject::new(RejectReason::WrongType, format!("cannot serialize tool JSON: {e}")))
}

fn with_tools(system: &str, conversation: &Conversation) -> Result<String, Reject> {
    if conversation.tools.is_empty() {
        return Ok(system.to_string());
    }
    let mut text = format!("{system}\n\n# Tools\n\n<tools>");
    for tool in &conversation.tools {
        text.push('\n');
        text.push_str(&json(tool)?);
    }
    text.push_str("\n</tools>");
    Ok(text)
}

fn tool_call_text(call: &serde_json::Value) -> Result<String, Reject> {
    let function = call.get("function").unwrap_or(call);
    let name = function.get("name").and_then(|n| n.as_str()).unwrap_or_default();
    let arguments = function.get("arguments").cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    Ok(format!(
        "<tool_call>\n{{\"name\": {}, \"arguments\": {}}}\n</tool_call>",
        json(&serde_json::Value::String(name.to_string()))?,
        json(&arguments)?
    ))
}
