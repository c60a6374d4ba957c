//! Conversation → rendered text + the character spans the loss trains on.
//!
//! Two renderers: the model's own Jinja template (`jinja.rs`, via minijinja, HF-compatible) and
//! the built-in ChatML layout (`builtin.rs`). Both return byte spans into the rendered text, one
//! per assistant message: from the end of the assistant header through the end-of-turn marker
//! (DESIGN §3). Which spans actually train (last turn only, per-message flags, the end-of-turn
//! token) is decided in `encode.rs`, not here.

mod builtin;
mod generation;
mod jinja;
mod markers;
mod native;
pub mod pyjson;
mod pystr;
pub mod reasoning;
mod strftime;
mod turns;

use std::path::Path;


use crate::error::{Error, Result};
use crate::schema::{Conversation, Reject, Role};

pub use reasoning::{HistoryTurns, ReasoningPolicy, SplitTurns};
pub use strftime::parse_date;

/// The trainable span of one assistant message, as byte offsets into the rendered text.
/// `[eot_start, end)` is the end-of-turn marker (empty when the template has none in the span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub message: usize,
    pub start: usize,
    pub eot_start: usize,
    pub end: usize,
}

/// One sample's text and spans. A whole conversation is tokenized in one piece, as
/// `apply_chat_template(tokenize=True)` does. A per-turn sample (`--split-turns`) is the
/// template's own prompt for the turn, `text[..prompt_len]`, followed by the completion the model
/// generates after it; the two are tokenized apart, as at inference.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub spans: Vec<Span>,
    /// Per-turn samples only: the length of the prompt and the message index of the turn.
    pub split: Option<(usize, usize)>,
}

impl Rendered {
    pub fn whole(text: String, spans: Vec<Span>) -> Rendered {
        Rendered { text, spans, split: None }
    }
}

/// How assistant turns become samples (DESIGN §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnOptions {
    pub reasoning: ReasoningPolicy,
    pub split: SplitTurns,
    pub history: HistoryTurns,
    /// Only the last assistant turn trains (`--train-on last`).
    pub last_only: bool,
}

impl Default for TurnOptions {
    fn default() -> Self {
        TurnOptions { reasoning: ReasoningPolicy::Train, split: SplitTurns::Auto, history: HistoryTurns::Template, last_only: false }
    }
}

/// What `apply_chat_template(**kwargs)` would be given besides the messages: template keyword
/// arguments (`enable_thinking=False`, ...) and the date `strftime_now` reports.
#[derive(Debug, Clone, Default)]
pub struct TemplateOptions {
    pub kwargs: Vec<(String, serde_json::Value)>,
    /// `YYYY-MM-DD`: pins `strftime_now` for reproducible runs; `None` is local time, as in
    /// transformers.
    pub date: Option<String>,
}

/// The assistant messages that train: not switched off by `"train": false`, and only the last
/// one under `--train-on last`.
pub fn trained_turns(conversation: &Conversation, last_only: bool) -> Vec<usize> {
    let assistants: Vec<usize> =
        conversation.messages.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant).map(|(i, _)| i).collect();
    let last = assistants.last().copied();
    assistants
        .into_iter()
        .filter(|&i| conversation.messages[i].train != Some(false))
        .filter(|&i| !last_only || Some(i) == last)
        .collect()
}

/// Token strings the template sees (`bos_token`, ...) and the tokenizer's special tokens, which
/// is where an end-of-turn marker is looked for.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub named: Vec<(String, String)>,
    pub special: Vec<String>,
}

/// Characters that never occur in real text (Unicode noncharacters), used as in-band markers.
pub(crate) const MARK_START: char = '\u{FDD0}';
pub(crate) const MARK_END: char = '\u{FDD1}';

pub enum Template {
    ChatMl(builtin::ChatMl),
    Jinja(Box<jinja::JinjaTemplate>),
}

/// Name and hash of the template text, for the manifest and the fingerprint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateInfo {
    pub name: String,
    pub sha256: String,
    /// "jinja", or the native family that passed the self-check against the template.
    pub renderer: String,
}

impl Template {
    /// `choice`: `None` for the model's own template, `"chatml"` for the built-in one, or a path
    /// to a `.jinja` file.
    pub fn load(choice: Option<&str>, tokenizer_dir: &Path, special: SpecialTokens, options: &TemplateOptions) -> Result<(Template, TemplateInfo)> {
        match choice {
            Some("chatml") => {
                let info = TemplateInfo {
                    name: "chatml (built-in)".into(),
                    sha256: sha256_hex(builtin::ChatMl::DESCRIPTION.as_bytes()),
                    renderer: "native chatml".into(),
                };
                Ok((Template::ChatMl(builtin::ChatMl), info))
            }
            Some(path) => {
                let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                Self::jinja(&source, path.to_string(), path.to_string(), special, options)
            }
            None => {
                let (source, name) = model_template(tokenizer_dir)?;
                let file = name.split(' ').next().unwrap_or_default();
                let location = tokenizer_dir.join(file).display().to_string();
                Self::jinja(&source, name, location, special, options)
            }
        }
    }

    /// `name`: what the manifest records; `location`: the file an error names.
    fn jinja(source: &str, name: String, location: String, special: SpecialTokens, options: &TemplateOptions) -> Result<(Template, TemplateInfo)> {
        let template = jinja::JinjaTemplate::new(source, special, options).map_err(|e| match e {
            Error::Template { detail, .. } => Error::Template { detail: format!("{location}: {detail}"), template: Some(location.clone()) },
            other => other,
        })?;
        let renderer = match template.native_family() {
            Some(family) => format!("native {family:?} (for this exact template text, self-checked)"),
            None => "jinja".into(),
        };
        let info = TemplateInfo { name, sha256: sha256_hex(source.as_bytes()), renderer };
        Ok((Template::Jinja(Box::new(template)), info))
    }

    #[cfg(test)]
    pub fn render_text_for_tests(&self, conversation: &Conversation) -> std::result::Result<String, Reject> {
        match self {
            Template::Jinja(t) => t.render_text_for_tests(conversation),
            Template::ChatMl(t) => t.render(conversation).map(|r| r.text),
        }
    }

    /// One sample per conversation, or one per trained turn when `--split-turns` asks for it.
    pub fn render(&self, conversation: &Conversation, turns: &TurnOptions) -> std::result::Result<Vec<Rendered>, Reject> {
        match self {
            Template::ChatMl(t) => {
                let rendered = t.render(conversation)?;
                turns::check_whole(conversation, &rendered, turns)?;
                Ok(vec![rendered])
            }
            Template::Jinja(t) => t.render(conversation, turns),
        }
    }
}

pub use crate::hashing::sha256_hex;

/// The model's own template: `chat_template.jinja` beside `tokenizer.json`, else
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates of which
/// "default" is used).
fn model_template(dir: &Path) -> Result<(String, String)> {
    let jinja_file = dir.join("chat_template.jinja");
    if jinja_file.is_file() {
        let source = std::fs::read_to_string(&jinja_file).map_err(|e| Error::io(&jinja_file, e))?;
        return Ok((source, "chat_template.jinja".into()));
    }
    let config_file = dir.join("tokenizer_config.json");
    let missing = || {
        Error::template(format!(
            "{} has no chat template (no chat_template.jinja, no 'chat_template' in tokenizer_config.json); \
             pass --template chatml or --template FILE.jinja",
            dir.display()
        ))
    };
    let Ok(text) = std::fs::read_to_string(&config_file) else { return Err(missing()) };
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Tokenizer { path: config_file.clone(), detail: format!("invalid JSON: {e}") })?;
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok((s.clone(), "tokenizer_config.json".into())),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template").and_then(|s| s.as_str()))
            .map(|s| (s.to_string(), "tokenizer_config.json (default)".into()))
            .ok_or_else(missing),
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests;
