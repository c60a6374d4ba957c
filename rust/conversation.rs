//! The conversation model every input layout is read into ([`crate::schema`]) and every template
//! renders: messages with a role, text, tool calls, reasoning and every other field as given.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// The text as given; `None` for `content: null` (the template sees `none`, as in
    /// transformers). Text parts are joined into one string.
    pub content: Option<String>,
    /// OpenAI-style `[{"type": "function", "function": {"name", "arguments"}}]`, key order kept.
    pub tool_calls: Option<Vec<Value>>,
    /// `Some(false)` when the record says `"train": false` or `"weight": 0`.
    pub train: Option<bool>,
    /// Reasoning given in a field (`reasoning_content`, `reasoning` or `thinking`). Reasoning
    /// written inline (`<think>…</think>` in the content) stays in `content`; see `reasoning.rs`.
    pub reasoning: Option<String>,
    /// Every other field of the message, as given (`name`, `tool_call_id`, keys a custom template
    /// reads), in the record's key order.
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with just a role and a text (probes, tests, Alpaca).
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: Some(content.into()), tool_calls: None, train: None, reasoning: None, extra: Map::new() }
    }

    /// The content as text (`""` for `content: null`).
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// Tool schemas, each `{"type": "function", "function": {...}}`.
    pub tools: Vec<Value>,
    /// Record-level template variables: `documents`, and the keys of a `chat_template_kwargs`
    /// object (as TRL and Levanter datasets carry them), passed to the template as given.
    pub context: Map<String, Value>,
}
