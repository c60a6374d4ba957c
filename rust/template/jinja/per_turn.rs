//! The inference view (DESIGN §3.1): one sample per trained turn (the template's own prompt for
//! the messages before it, then what the model generates after it), and one sample whose later
//! prompts keep earlier turns as written (`--history as-written`).

use minijinja::value::Value;

use super::{assistant_indices, Context, JinjaTemplate};
use crate::schema::{Conversation, Message, Reject, RejectReason};
use crate::template::reasoning::{self, ReasoningPolicy};
use crate::template::{trained_turns, turns, Rendered, Span, TurnOptions};

impl JinjaTemplate {
    /// One sample per trained turn (DESIGN §3.1): the template's own prompt for the messages
    /// before the turn, then the completion the model generates after it.
    pub(super) fn render_turns(&self, conversation: &Conversation, turns: &TurnOptions) -> std::result::Result<Vec<Rendered>, Reject> {
        let messages = self.message_values(conversation, turns.reasoning)?;
        let context = Context::new(self, conversation)?;
        let eot = self.required_end_of_turn()?;
        let mut samples = Vec::new();
        for index in trained_turns(conversation, turns.last_only) {
            let (prompt, completion) = self.prompt_and_completion(conversation, &messages, &context, index, turns.reasoning, eot)?;
            let text = format!("{prompt}{completion}");
            let span = Span { message: index, start: prompt.len(), eot_start: text.len() - eot.len(), end: text.len() };
            turns::check_turn(conversation, index, &text[span.start..span.eot_start], turns.reasoning)?;
            samples.push(Rendered { text, spans: vec![span], split: Some((prompt.len(), index)) });
        }
        Ok(samples)
    }

    /// The whole conversation as the model wrote it (`--history as-written`): each assistant turn
    /// is its completion (reasoning included), and what the template writes between turns comes
    /// from its own prompts. One sample holds every turn; the prompt of a later turn is its
    /// history as generated, not as the template would re-render it.
    pub(super) fn render_as_written(&self, conversation: &Conversation, policy: ReasoningPolicy) -> std::result::Result<Rendered, Reject> {
        let messages = self.message_values(conversation, policy)?;
        let context = Context::new(self, conversation)?;
        let eot = self.required_end_of_turn()?;
        let mut text = String::new();
        let mut spans = Vec::new();
        let mut previous: Option<String> = None;
        for index in assistant_indices(conversation) {
            let (prompt, completion) = self.prompt_and_completion(conversation, &messages, &context, index, policy, eot)?;
            let between = match &previous {
                None => prompt.as_str(),
                Some(before) => {
                    let opened = before.len() - self.reasoning_open.len();
                    let base = if prompt.starts_with(before.as_str()) {
                        before.len()
                    } else if !self.reasoning_open.is_empty() && before.ends_with(&self.reasoning_open) && prompt.starts_with(&before[..opened]) {
                        opened
                    } else {
                        return Err(Reject::new(
                            RejectReason::SpanNotFound,
                            format!("the template's prompt for message {} does not start with its prompt for the turn before", index + 1),
                        ));
                    };
                    let eot_at = prompt[base..].find(eot).ok_or_else(|| {
                        Reject::new(RejectReason::SpanNotFound, format!("no {eot} closes the turn before message {}", index + 1))
                    })?;
                    &prompt[base + eot_at + eot.len()..]
                }
            };
            text.push_str(between);
            let start = text.len();
            text.push_str(&completion);
            spans.push(Span { message: index, start, eot_start: text.len() - eot.len(), end: text.len() });
            previous = Some(prompt);
        }
        Ok(Rendered::whole(text, spans))
    }

    /// The template's prompt for the messages before `index` (with the generation prompt) and the
    /// completion the model generates after it: the template's own rendering of the turn as the
    /// conversation's last message, through the end-of-turn token. When the prompt opens a
    /// reasoning block that the template's rendering of the turn does not hold (DeepSeek-R1
    /// distills strip reasoning even from the last turn), the completion is the reasoning as
    /// written, through `</think>`, followed by the template's rendering of the rest.
    pub(super) fn prompt_and_completion(
        &self,
        conversation: &Conversation,
        messages: &[Value],
        context: &Context,
        index: usize,
        policy: ReasoningPolicy,
        eot: &str,
    ) -> std::result::Result<(String, String), Reject> {
        let prompt = self.render_plain(&messages[..index], context, true)?;
        let full = self.render_plain(&messages[..=index], context, false)?;
        let rest_after = |at: usize| -> std::result::Result<&str, Reject> {
            let rest = &full[at..];
            let eot_at = rest
                .find(eot)
                .ok_or_else(|| Reject::new(RejectReason::SpanNotFound, format!("no {eot} after assistant message {}", index + 1)))?;
            Ok(&rest[..eot_at + eot.len()])
        };
        let completion = if full.starts_with(&prompt) {
            rest_after(prompt.len())?.to_string()
        } else if !self.reasoning_open.is_empty()
            && prompt.ends_with(&self.reasoning_open)
            && full.starts_with(&prompt[..prompt.len() - self.reasoning_open.len()])
        {
            let rendered_rest = rest_after(prompt.len() - self.reasoning_open.len())?;
            format!("{}{rendered_rest}", self.written_reasoning(&messages[index], &conversation.messages[index], index, policy)?)
        } else {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                format!("the template renders assistant message {} differently from the prompt it builds for it", index + 1),
            ));
        };
        Ok((prompt, completion))
    }

    /// The reasoning the model writes after a prompt that opened the block: the content as the
    /// template was given it, from after the opening marker through `</think>`.
    pub(super) fn written_reasoning(&self, value: &Value, message: &Message, index: usize, policy: ReasoningPolicy) -> std::result::Result<String, Reject> {
        let parts = reasoning::parts(message, index)?;
        if parts.reasoning.is_none() || policy == ReasoningPolicy::Drop {
            let why = if policy == ReasoningPolicy::Drop { "--reasoning drop cannot remove it" } else { "the message has no reasoning" };
            return Err(Reject::new(
                RejectReason::MissingReasoning,
                format!(
                    "the template's generation prompt opens a reasoning block ({}) that the model must close, but {why} (assistant message {})",
                    self.reasoning_open.trim_end(),
                    index + 1
                ),
            ));
        }
        let content = value.get_attr("content").ok().and_then(|c| c.as_str().map(str::to_string)).unwrap_or_default();
        let close = content.find(reasoning::CLOSE).map(|at| at + reasoning::CLOSE.len()).ok_or_else(|| {
            Reject::new(RejectReason::MissingReasoning, format!("assistant message {}: the template was not given its reasoning inline", index + 1))
        })?;
        let written = &content[..close];
        let written = written.strip_prefix(self.reasoning_open.as_str()).or_else(|| written.strip_prefix(reasoning::OPEN)).unwrap_or(written);
        Ok(written.to_string())
    }
}
