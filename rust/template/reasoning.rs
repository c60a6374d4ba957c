//! Reasoning in assistant turns, as APIs and datasets write it, and the policies that decide
//! what becomes of it (DESIGN §3.1).
//!
//! Reasoning arrives in a field (`reasoning_content`, `reasoning`, `thinking`; see `schema.rs`)
//! or inline in the content: `<think>…</think>answer`, or R1-style traces that start mid-thought
//! with only `…</think>answer`. `<think>`/`</think>` are the data's markup here, not a model table:
//! which marker a template's generation prompt opens is probed from the template itself.

use crate::schema::{Message, Reject, RejectReason};

pub const OPEN: &str = "<think>";
pub const CLOSE: &str = "</think>";

/// What happens to an assistant turn's reasoning (`--reasoning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningPolicy {
    /// Rendered and trained, like the rest of what the model generates (the default).
    Train,
    /// Rendered where the template puts it, but not trained.
    Mask,
    /// Removed before rendering.
    Drop,
}

impl ReasoningPolicy {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "train" => Some(ReasoningPolicy::Train),
            "mask" => Some(ReasoningPolicy::Mask),
            "drop" => Some(ReasoningPolicy::Drop),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReasoningPolicy::Train => "train",
            ReasoningPolicy::Mask => "mask",
            ReasoningPolicy::Drop => "drop",
        }
    }
}

/// When a conversation becomes one sample per trained turn (`--split-turns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitTurns {
    /// One sample per conversation; a conversation the whole rendering cannot train exactly is
    /// rejected.
    Never,
    /// One sample per conversation when the whole rendering trains every turn exactly (it holds
    /// each turn as the model generates it), else one sample per trained turn.
    Auto,
    /// Always one sample per trained turn.
    Always,
}

impl SplitTurns {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "never" => Some(SplitTurns::Never),
            "auto" => Some(SplitTurns::Auto),
            "always" => Some(SplitTurns::Always),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SplitTurns::Never => "never",
            SplitTurns::Auto => "auto",
            SplitTurns::Always => "always",
        }
    }
}

/// What the prompt of a later turn holds of earlier assistant turns (`--history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryTurns {
    /// As the template renders history (which may drop reasoning): each turn's prompt is exactly
    /// `apply_chat_template(messages[:i], add_generation_prompt=True)` (the default).
    Template,
    /// As the model wrote them: earlier turns keep their reasoning, so one sample holds every turn
    /// (on-policy multi-turn training); prompts then differ from the template's where it strips.
    AsWritten,
}

impl HistoryTurns {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "template" => Some(HistoryTurns::Template),
            "as-written" => Some(HistoryTurns::AsWritten),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HistoryTurns::Template => "template",
            HistoryTurns::AsWritten => "as-written",
        }
    }
}

/// An assistant message's reasoning (if any) and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub reasoning: Option<&'a str>,
    pub answer: &'a str,
    /// The reasoning is written in the content (`…</think>answer`), not in a field.
    pub inline: bool,
}

/// Splits an assistant message into reasoning and answer; rejects markup that cannot be read
/// one way only (a `<think>` never closed, two closing markers, reasoning both in a field and
/// inline).
pub fn parts(message: &Message, position: usize) -> Result<Parts<'_>, Reject> {
    let content = message.text();
    let close = content.find(CLOSE);
    if let Some(reasoning) = message.reasoning.as_deref() {
        if close.is_some() || content.contains(OPEN) {
            return Err(Reject::new(
                RejectReason::MixedReasoning,
                format!("message {} has reasoning both in a field and inline (<think>…</think>) in its content", position + 1),
            ));
        }
        return Ok(Parts { reasoning: Some(reasoning), answer: content, inline: false });
    }
    match close {
        None if content.contains(OPEN) => Err(Reject::new(
            RejectReason::MixedReasoning,
            format!("message {} opens a <think> block that is never closed", position + 1),
        )),
        None => Ok(Parts { reasoning: None, answer: content, inline: false }),
        Some(at) => {
            let answer = &content[at + CLOSE.len()..];
            if answer.contains(CLOSE) {
                return Err(Reject::new(RejectReason::MixedReasoning, format!("message {} closes </think> twice", position + 1)));
            }
            let before = &content[..at];
            let reasoning = before.rsplit_once(OPEN).map_or(before, |(_, r)| r);
            Ok(Parts { reasoning: Some(reasoning), answer, inline: true })
        }
    }
}

/// Reasoning from a field, written inline for templates that read only `content` (QwQ,
/// DeepSeek-R1 distills): the layout those models generate and Qwen3's template renders.
pub fn inline(reasoning: &str, answer: &str) -> String {
    format!("{OPEN}\n{reasoning}\n{CLOSE}\n\n{answer}")
}

/// The byte range of the reasoning block inside a trained span `[start, end)` of `text`: from
/// `<think>` (or from the span start, when the prompt before it left a `<think>` open) through
/// `</think>`.
pub fn block_in_span(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let before = &text[..start];
    let open_before = before.rfind(OPEN).is_some_and(|at| !before[at..].contains(CLOSE));
    let span = &text[start..end];
    let block_start = if open_before { start } else { start + span.find(OPEN)? };
    let close = text[block_start..end].find(CLOSE)?;
    Some((block_start, block_start + close + CLOSE.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Role;

    fn assistant(content: &str) -> Message {
        Message::new(Role::Assistant, content)
    }

    #[test]
    fn inline_reasoning_with_and_without_opening_tag() {
        let m = assistant("<think>\nadd\n</think>\n\n4");
        assert_eq!(parts(&m, 0).unwrap(), Parts { reasoning: Some("\nadd\n"), answer: "\n\n4", inline: true });
        let m = assistant("mid-thought</think>4");
        assert_eq!(parts(&m, 0).unwrap(), Parts { reasoning: Some("mid-thought"), answer: "4", inline: true });
        let m = Message { reasoning: Some("r".into()), ..assistant("4") };
        assert_eq!(parts(&m, 0).unwrap(), Parts { reasoning: Some("r"), answer: "4", inline: false });
    }

    #[test]
    fn ambiguous_markup_is_rejected() {
        for m in [assistant("<think>never closed"), assistant("a</think>b</think>c"), Message { reasoning: Some("r".into()), ..assistant("x</think>y") }] {
            assert_eq!(parts(&m, 2).unwrap_err().reason, RejectReason::MixedReasoning);
        }
    }

    #[test]
    fn reasoning_block_in_a_span() {
        let text = "P<think>\nr\n</think>\n\nA<eot>";
        assert_eq!(block_in_span(text, 1, text.len()), Some((1, 19)));
        let opened = "P<think>\nr\n</think>A";
        assert_eq!(block_in_span(opened, 9, opened.len()), Some((9, 19)));
        assert_eq!(block_in_span("PA", 1, 2), None);
    }
}
