//! Raw record → [`Conversation`]: ShareGPT/Belle, OpenAI `messages`, Alpaca.
//!
//! The layout is detected per record (or forced with `--format`); role names are mapped through
//! the user's `--role-map` first, then through the usual aliases (`human`→user, `gpt`→assistant,
//! `function_call`→assistant tool call, `observation`→tool). Anything that is not a well-formed
//! conversation ending in an assistant reply is a [`Reject`] with a reason; nothing here panics.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::exact_json;

pub use crate::conversation::{Conversation, Message, Role};
pub use crate::reject::{Reject, RejectReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ShareGpt,
    OpenAi,
    Alpaca,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "sharegpt" | "belle" => Some(Format::ShareGpt),
            "openai" | "messages" => Some(Format::OpenAi),
            "alpaca" => Some(Format::Alpaca),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::ShareGpt => "sharegpt",
            Format::OpenAi => "openai",
            Format::Alpaca => "alpaca",
        }
    }
}

/// How records become conversations: the forced format (if any), the user's role renames, and
/// field names for unusual layouts (as Axolotl's `field_messages`/`message_property_mappings`).
#[derive(Debug, Clone, Default)]
pub struct SchemaOptions {
    pub format: Option<Format>,
    pub role_map: HashMap<String, String>,
    pub fields: FieldNames,
}

/// Overrides of the field names a layout uses; `None` keeps the layout's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldNames {
    /// The list of messages (`conversations` in ShareGPT, `messages` in OpenAI).
    pub messages: Option<String>,
    /// A message's role (`from` / `role`).
    pub role: Option<String>,
    /// A message's text (`value` / `content`).
    pub content: Option<String>,
    /// A top-level system prompt (`system`).
    pub system: Option<String>,
}

impl FieldNames {
    pub fn is_default(&self) -> bool {
        *self == FieldNames::default()
    }
}

/// The keys one layout reads.
struct Keys<'a> {
    messages: &'a str,
    role: &'a str,
    content: &'a str,
    system: &'a str,
}

impl SchemaOptions {
    fn keys(&self, format: Format) -> Keys<'_> {
        let (messages, role, content) = match format {
            Format::ShareGpt => ("conversations", "from", "value"),
            _ => ("messages", "role", "content"),
        };
        let f = &self.fields;
        Keys {
            messages: f.messages.as_deref().unwrap_or(messages),
            role: f.role.as_deref().unwrap_or(role),
            content: f.content.as_deref().unwrap_or(content),
            system: f.system.as_deref().unwrap_or("system"),
        }
    }
}

type Parsed<T> = Result<T, Reject>;

pub fn parse_record(bytes: &[u8], options: &SchemaOptions) -> Parsed<Conversation> {
    if exact_json::holds_mark(bytes) {
        return Err(Reject::new(RejectReason::ReservedCharacter, "text contains U+FDD2, which fastsft reserves for exact big integers"));
    }
    let value: Value = exact_json::parse(bytes).map_err(|e| match std::str::from_utf8(bytes) {
        Err(bad) => Reject::new(RejectReason::InvalidJson, format!("invalid UTF-8 at byte {}", bad.valid_up_to())),
        Ok(text) if text.contains('\u{feff}') => {
            Reject::new(RejectReason::InvalidJson, format!("malformed JSON: {e} (the line holds a byte-order mark: files concatenated with their BOMs?)"))
        }
        Ok(_) => Reject::new(RejectReason::InvalidJson, format!("malformed JSON: {e}")),
    })?;
    let Value::Object(record) = value else {
        return Err(Reject::new(RejectReason::NotAnObject, format!("record is {}, not a JSON object", kind(&value))));
    };
    let format = match options.format {
        Some(format) => format,
        None => detect(&record, options)?,
    };
    let conversation = match format {
        Format::Alpaca => alpaca(&record, options),
        chat => messages(&record, chat, options),
    };
    validate(conversation.map_err(|reject| hint_layout(reject, &record, options))?)
}

/// A forced `--format` that does not fit: say what the records look like instead.
fn hint_layout(mut reject: Reject, record: &Map<String, Value>, options: &SchemaOptions) -> Reject {
    if reject.reason == RejectReason::MissingField && options.format.is_some() {
        if let Ok(looks_like) = detect(record, &SchemaOptions::default()) {
            if Some(looks_like) != options.format {
                let article = if looks_like == Format::Alpaca || looks_like == Format::OpenAi { "an" } else { "a" };
                reject.detail.push_str(&format!("; this looks like {article} {0} record: try --format {0}", looks_like.name()));
            }
        }
    }
    reject
}

fn detect(record: &Map<String, Value>, options: &SchemaOptions) -> Parsed<Format> {
    if let Some(key) = &options.fields.messages {
        if record.contains_key(key) {
            // A renamed list: OpenAI-style keys unless the messages use ShareGPT's `from`.
            let sharegpt = record[key].as_array().and_then(|l| l.first()).is_some_and(|m| m.get("from").is_some());
            return Ok(if sharegpt { Format::ShareGpt } else { Format::OpenAi });
        }
    }
    // A null field counts as absent: columnar rows (Parquet, Arrow) carry every column.
    let has = |key: &str| record.get(key).is_some_and(|v| !v.is_null());
    if has("conversations") {
        Ok(Format::ShareGpt)
    } else if has("messages") {
        Ok(Format::OpenAi)
    } else if has("instruction") && has("output") {
        Ok(Format::Alpaca)
    } else {
        let keys: Vec<&str> = record.keys().map(String::as_str).take(8).collect();
        Err(Reject::new(
            RejectReason::UnknownLayout,
            format!(
                "no 'conversations', 'messages' or 'instruction'+'output' field (keys: {})",
                keys.join(", ")
            ),
        ))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field<'a>(record: &'a Map<String, Value>, name: &str) -> Parsed<&'a Value> {
    record.get(name).ok_or_else(|| Reject::new(RejectReason::MissingField, format!("missing '{name}'")))
}

fn string_field(record: &Map<String, Value>, name: &str, what: &str) -> Parsed<String> {
    let value = record.get(name).ok_or_else(|| Reject::new(RejectReason::MissingField, format!("{what} has no '{name}'")))?;
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(Reject::new(RejectReason::WrongType, format!("{what} '{name}' is {}, expected a string", kind(other)))),
    }
}

fn optional_string(record: &Map<String, Value>, name: &str) -> Parsed<Option<String>> {
    match record.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Reject::new(RejectReason::WrongType, format!("'{name}' is {}, expected a string", kind(other)))),
    }
}

/// What a role name means once mapped: a plain role, or a ShareGPT function call.
enum MappedRole {
    Plain(Role),
    FunctionCall,
}

fn map_role(raw: &str, options: &SchemaOptions, position: usize) -> Parsed<MappedRole> {
    let name = options.role_map.get(raw).map(String::as_str).unwrap_or(raw);
    let role = match name {
        "system" | "developer" => MappedRole::Plain(Role::System),
        "user" | "human" => MappedRole::Plain(Role::User),
        "assistant" | "gpt" | "model" => MappedRole::Plain(Role::Assistant),
        "tool" | "observation" | "function" | "ipython" => MappedRole::Plain(Role::Tool),
        "function_call" => MappedRole::FunctionCall,
        _ => {
            return Err(Reject::new(
                RejectReason::UnknownRole,
                format!(
                    "message {} has role \"{raw}\"; expected one of user, assistant, system, tool, \
                     function_call, observation (map it with --role-map {raw}=assistant)",
                    position + 1
                ),
            ))
        }
    };
    Ok(role)
}

/// `"train": false` or `"weight": 0` on a message turns its training off.
fn train_flag(message: &Map<String, Value>) -> Option<bool> {
    if let Some(Value::Bool(b)) = message.get("train") {
        return Some(*b);
    }
    match message.get("weight") {
        Some(Value::Number(n)) => Some(n.as_f64() != Some(0.0)),
        _ => None,
    }
}

/// ShareGPT (`conversations` of `{from, value}`) and OpenAI (`messages` of `{role, content}`)
/// differ only in their keys: content may be a string, null or text parts in both; tool calls,
/// `function_call` turns and per-message train flags are accepted in both.
fn messages(record: &Map<String, Value>, format: Format, options: &SchemaOptions) -> Parsed<Conversation> {
    let keys = options.keys(format);
    let Value::Array(items) = field(record, keys.messages)? else {
        return Err(Reject::new(RejectReason::WrongType, format!("'{}' is not an array", keys.messages)));
    };
    let mut messages = Vec::with_capacity(items.len() + 1);
    if let Some(system) = optional_string(record, keys.system)? {
        if !system.is_empty() {
            messages.push(Message::new(Role::System, system));
        }
    }
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(Reject::new(RejectReason::WrongType, format!("message {} is {}, not an object", i + 1, kind(item))));
        };
        let raw_role = string_field(item, keys.role, &format!("message {}", i + 1))?;
        let content = match item.get(keys.content) {
            None if format == Format::OpenAi => None,
            value => text_content(value, keys.content, i)?,
        };
        let train = train_flag(item);
        let reasoning = reasoning_field(item, i)?;
        let extra: Map<String, Value> = item
            .iter()
            .filter(|(key, _)| {
                let key = key.as_str();
                key != keys.role && key != keys.content && key != "tool_calls" && !REASONING_FIELDS.contains(&key)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match map_role(&raw_role, options, i)? {
            MappedRole::Plain(role) => {
                let tool_calls = tool_calls(item.get("tool_calls"), i)?;
                messages.push(Message { role, content, tool_calls, train, reasoning, extra });
            }
            MappedRole::FunctionCall => {
                let call = parse_function_call(content.as_deref().unwrap_or(""), i)?;
                messages.push(Message { role: Role::Assistant, content: Some(String::new()), tool_calls: Some(vec![call]), train, reasoning, extra });
            }
        }
    }
    Ok(Conversation { messages, tools: tools(record)?, context: context(record)? })
}

/// Where reasoning arrives as a field: OpenAI-compatible servers, DeepSeek and Qwen write
/// `reasoning_content`; other APIs and datasets `reasoning` or `thinking`.
pub const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "reasoning", "thinking"];

fn reasoning_field(message: &Map<String, Value>, position: usize) -> Parsed<Option<String>> {
    let mut found: Option<(&str, String)> = None;
    for key in REASONING_FIELDS {
        match message.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                if let Some((first, _)) = &found {
                    return Err(Reject::new(
                        RejectReason::MixedReasoning,
                        format!("message {} has reasoning in both '{first}' and '{key}'", position + 1),
                    ));
                }
                found = Some((key, text.clone()));
            }
            Some(other) => {
                return Err(Reject::new(RejectReason::WrongType, format!("message {}: '{key}' is {}, expected a string", position + 1, kind(other))))
            }
        }
    }
    Ok(found.map(|(_, text)| text))
}

/// Record-level template variables: `documents` and the keys of `chat_template_kwargs`.
fn context(record: &Map<String, Value>) -> Parsed<Map<String, Value>> {
    let mut context = Map::new();
    if let Some(documents) = record.get("documents").filter(|d| !d.is_null()) {
        context.insert("documents".into(), documents.clone());
    }
    match record.get("chat_template_kwargs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(kwargs)) => context.extend(kwargs.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(other) => {
            return Err(Reject::new(RejectReason::WrongType, format!("'chat_template_kwargs' is {}, expected an object", kind(other))))
        }
    }
    Ok(context)
}

/// OpenAI `tool_calls`; string `arguments` holding JSON become the object they encode.
fn tool_calls(value: Option<&Value>, position: usize) -> Parsed<Option<Vec<Value>>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(calls)) if calls.is_empty() => Ok(None),
        Some(Value::Array(calls)) => {
            let mut calls = calls.clone();
            for call in &mut calls {
                if let Some(arguments) = call.get_mut("function").and_then(|f| f.get_mut("arguments")) {
                    parse_json_string_in_place(arguments);
                }
            }
            Ok(Some(calls))
        }
        Some(other) => Err(Reject::new(RejectReason::WrongType, format!("message {}: 'tool_calls' is {}", position + 1, kind(other)))),
    }
}

/// A ShareGPT `function_call` value: `{"name": ..., "arguments": ...}` as a JSON string.
fn parse_function_call(text: &str, position: usize) -> Parsed<Value> {
    let value: Value = exact_json::parse_str(text).map_err(|e| {
        Reject::new(RejectReason::WrongType, format!("message {}: function_call value is not JSON ({e})", position + 1))
    })?;
    let Value::Object(mut call) = value else {
        return Err(Reject::new(RejectReason::WrongType, format!("message {}: function_call is not a JSON object", position + 1)));
    };
    if !matches!(call.get("name"), Some(Value::String(_))) {
        return Err(Reject::new(RejectReason::MissingField, format!("message {}: function_call has no 'name'", position + 1)));
    }
    if let Some(arguments) = call.get_mut("arguments") {
        parse_json_string_in_place(arguments);
    }
    let mut wrapped = Map::new();
    wrapped.insert("type".into(), Value::String("function".into()));
    wrapped.insert("function".into(), Value::Object(call));
    Ok(Value::Object(wrapped))
}

/// Tool-call arguments given as a JSON string become the object they encode, as templates expect.
fn parse_json_string_in_place(value: &mut Value) {
    if let Value::String(s) = value {
        if let Ok(parsed @ Value::Object(_)) = exact_json::parse_str(s) {
            *value = parsed;
        }
    }
}

/// Top-level `tools`: a list, or a JSON string holding one; bare function schemas are wrapped.
fn tools(record: &Map<String, Value>) -> Parsed<Vec<Value>> {
    let list = match record.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => match exact_json::parse_str(s) {
            Ok(Value::Array(list)) => list,
            _ => return Err(Reject::new(RejectReason::WrongType, "'tools' is a string that does not hold a JSON array")),
        },
        Some(Value::Array(list)) => list.clone(),
        Some(other) => return Err(Reject::new(RejectReason::WrongType, format!("'tools' is {}, expected an array", kind(other)))),
    };
    list.into_iter()
        .map(|tool| match tool {
            Value::Object(ref map) if map.contains_key("type") => Ok(tool),
            Value::Object(_) => {
                let mut wrapped = Map::new();
                wrapped.insert("type".into(), Value::String("function".into()));
                wrapped.insert("function".into(), tool);
                Ok(Value::Object(wrapped))
            }
            other => Err(Reject::new(RejectReason::WrongType, format!("a tool is {}, expected an object", kind(&other)))),
        })
        .collect()
}

/// Message content: a string, null (`None`), or a list of `{type: "text", text}` parts.
fn text_content(value: Option<&Value>, name: &str, position: usize) -> Parsed<Option<String>> {
    match value {
        None => Err(Reject::new(RejectReason::MissingField, format!("message {} has no '{name}'", position + 1))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) => Ok(None),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                let part_type = part.get("type").and_then(Value::as_str);
                match (part_type, part.get("text")) {
                    (Some("text"), Some(Value::String(s))) => text.push_str(s),
                    _ => {
                        return Err(Reject::new(
                            RejectReason::NonTextContent,
                            format!("message {} has a content part of type {:?}; only text parts are supported", position + 1, part_type.unwrap_or("?")),
                        ))
                    }
                }
            }
            Ok(Some(text))
        }
        Some(other) => Err(Reject::new(
            RejectReason::WrongType,
            format!("message {}: '{name}' is {}, expected a string", position + 1, kind(other)),
        )),
    }
}

fn alpaca(record: &Map<String, Value>, options: &SchemaOptions) -> Parsed<Conversation> {
    let instruction = string_field(record, "instruction", "the record")?;
    let input = optional_string(record, "input")?.unwrap_or_default();
    let output = string_field(record, "output", "the record")?;
    let mut messages = Vec::new();
    let message = Message::new;
    if let Some(system) = optional_string(record, options.keys(Format::Alpaca).system)? {
        if !system.is_empty() {
            messages.push(message(Role::System, system));
        }
    }
    match record.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(q), Value::String(a)]) => {
                        messages.push(message(Role::User, q.clone()));
                        messages.push(message(Role::Assistant, a.clone()));
                    }
                    _ => return Err(Reject::new(RejectReason::WrongType, "'history' items must be [question, answer] string pairs")),
                }
            }
        }
        Some(other) => return Err(Reject::new(RejectReason::WrongType, format!("'history' is {}, expected an array", kind(other)))),
    }
    let prompt = if input.is_empty() { instruction } else { format!("{instruction}\n{input}") };
    messages.push(message(Role::User, prompt));
    messages.push(message(Role::Assistant, output));
    Ok(Conversation { messages, tools: Vec::new(), context: Map::new() })
}

fn validate(conversation: Conversation) -> Parsed<Conversation> {
    let messages = &conversation.messages;
    if messages.is_empty() {
        return Err(Reject::new(RejectReason::EmptyConversation, "the conversation has no messages"));
    }
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(Reject::new(RejectReason::NoAssistant, "the conversation has no assistant message to train on"));
    }
    if let Some(last) = messages.last() {
        if last.role != Role::Assistant {
            return Err(Reject::new(
                RejectReason::EndsWithoutAssistant,
                format!("the conversation ends with a {} message, not an assistant reply", last.role.as_str()),
            ));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role == Role::Assistant && m.text().is_empty() && m.tool_calls.is_none() && m.reasoning.as_deref().is_none_or(str::is_empty) {
            return Err(Reject::new(RejectReason::EmptyAssistant, format!("message {} is an empty assistant reply", i + 1)));
        }
    }
    Ok(conversation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Parsed<Conversation> {
        parse_record(json.as_bytes(), &SchemaOptions::default())
    }

    fn roles(c: &Conversation) -> Vec<&'static str> {
        c.messages.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn sharegpt_with_system_and_function_call() {
        let c = parse(r#"{"system":"S","tools":"[{\"name\":\"f\",\"parameters\":{}}]","conversations":[
            {"from":"human","value":"q"},{"from":"function_call","value":"{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}"},
            {"from":"observation","value":"r"},{"from":"gpt","value":"a"}]}"#)
        .unwrap();
        assert_eq!(roles(&c), ["system", "user", "assistant", "tool", "assistant"]);
        let call = &c.messages[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.to_string(), r#"{"type":"function","function":{"name":"f","arguments":{"x":1}}}"#);
        assert_eq!(c.tools[0].to_string(), r#"{"type":"function","function":{"name":"f","parameters":{}}}"#);
    }

    #[test]
    fn openai_text_parts_and_null_content() {
        let c = parse(r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","content":"1"},{"role":"assistant","content":"ok"}]}"#)
        .unwrap();
        assert_eq!(c.messages[0].text(), "ab");
        assert_eq!(c.messages[1].content, None);
        assert_eq!(roles(&c), ["user", "assistant", "tool", "assistant"]);
    }

    #[test]
    fn every_field_is_kept_and_reasoning_fields_are_read() {
        let c = parse(r#"{"chat_template_kwargs": {"enable_thinking": false}, "documents": [{"title": "t"}], "id": 7, "messages": [
            {"role": "user", "content": "q", "name": "ann"},
            {"role": "assistant", "content": "4", "thinking": "add", "custom": {"n": 123456789012345678901234567890}},
            {"role": "tool", "content": null, "tool_call_id": "abcDEF123"},
            {"role": "assistant", "content": "ok"}]}"#)
        .unwrap();
        assert_eq!(c.messages[0].extra.get("name"), Some(&Value::String("ann".into())));
        assert_eq!(c.messages[1].reasoning.as_deref(), Some("add"));
        assert!(!c.messages[1].extra.contains_key("thinking"));
        assert_eq!(exact_json::display(&c.messages[1].extra["custom"]["n"]), "123456789012345678901234567890");
        assert_eq!((c.messages[2].content.as_deref(), c.messages[2].extra["tool_call_id"].as_str()), (None, Some("abcDEF123")));
        let keys: Vec<&str> = c.context.keys().map(String::as_str).collect();
        assert_eq!(keys, ["documents", "enable_thinking"], "record-level 'id' is data, not a template variable");
        let twice = parse(r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "4", "reasoning": "a", "thinking": "b"}]}"#);
        assert_eq!(twice.unwrap_err().reason, RejectReason::MixedReasoning);
        let reserved = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"\u{FDD2}1\"}]}");
        assert_eq!(reserved.unwrap_err().reason, RejectReason::ReservedCharacter);
    }

    #[test]
    fn alpaca_with_input_and_history() {
        let c = parse(r#"{"instruction":"i","input":"x","output":"o","history":[["q","a"]]}"#).unwrap();
        let contents: Vec<&str> = c.messages.iter().map(Message::text).collect();
        assert_eq!(contents, ["q", "a", "i\nx", "o"]);
    }

    #[test]
    fn rejects_carry_reasons() {
        let cases = [
            ("{bad", RejectReason::InvalidJson),
            ("[1]", RejectReason::NotAnObject),
            (r#"{"text":"x"}"#, RejectReason::UnknownLayout),
            (r#"{"conversations":[{"from":"bot","value":"x"}]}"#, RejectReason::UnknownRole),
            (r#"{"conversations":[]}"#, RejectReason::EmptyConversation),
            (r#"{"conversations":[{"from":"human","value":"x"}]}"#, RejectReason::NoAssistant),
            (r#"{"conversations":[{"from":"gpt","value":"x"},{"from":"human","value":"y"}]}"#, RejectReason::EndsWithoutAssistant),
            (r#"{"conversations":[{"from":"human","value":1},{"from":"gpt","value":"y"}]}"#, RejectReason::WrongType),
            (r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]},{"role":"assistant","content":"y"}]}"#, RejectReason::NonTextContent),
            (r#"{"conversations":[{"from":"human","value":"x"},{"from":"gpt","value":""}]}"#, RejectReason::EmptyAssistant),
            (r#"{"conversations":[{"value":"x"}]}"#, RejectReason::MissingField),
        ];
        for (json, reason) in cases {
            assert_eq!(parse(json).unwrap_err().reason, reason, "{json}");
        }
    }

    #[test]
    fn field_names_map_unusual_layouts() {
        let options = SchemaOptions {
            fields: FieldNames {
                messages: Some("dialog".into()),
                role: Some("speaker".into()),
                content: Some("text".into()),
                system: Some("persona".into()),
            },
            ..Default::default()
        };
        let c = parse_record(br#"{"persona":"P","dialog":[{"speaker":"user","text":"q"},{"speaker":"assistant","text":"a"}]}"#, &options).unwrap();
        assert_eq!(roles(&c), ["system", "user", "assistant"]);
        assert_eq!(c.messages[2].text(), "a");
    }

    #[test]
    fn forced_format_that_does_not_fit_names_the_likely_one() {
        let options = SchemaOptions { format: Some(Format::ShareGpt), ..Default::default() };
        let reject = parse_record(br#"{"instruction":"i","input":"","output":"o"}"#, &options).unwrap_err();
        assert_eq!(reject.reason, RejectReason::MissingField);
        assert!(reject.detail.ends_with("this looks like an alpaca record: try --format alpaca"), "{}", reject.detail);
    }

    #[test]
    fn role_map_renames_before_aliases() {
        let options = SchemaOptions {
            role_map: [("bot".to_string(), "assistant".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let c = parse_record(br#"{"conversations":[{"from":"human","value":"x"},{"from":"bot","value":"y"}]}"#, &options).unwrap();
        assert_eq!(roles(&c), ["user", "assistant"]);
    }
}
