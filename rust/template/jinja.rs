//! The model's own chat template, rendered with minijinja the way `transformers` renders it
//! (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`, loop controls,
//! `raise_exception`, Python-style `tojson`, `strftime_now`, Python string methods).
//!
//! Spans come from `{% generation %}` blocks when the template has them. Otherwise each assistant
//! message's span is found without trusting the template: the conversation up to that message,
//! rendered with `add_generation_prompt=True`, must be a prefix of the full rendering; the span
//! runs from there through the first end-of-turn marker, and must contain the message's text.
//! When any check fails the row is rejected, never guessed.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};

use super::generation;
use super::markers;
use super::native::{self, NativeTemplate};
use super::pyjson::{to_python_json, PyJsonOptions};
use super::{Rendered, Span, SpecialTokens, MARK_END, MARK_START};
use crate::error::{Error, Result};
use crate::schema::{Conversation, Message, Reject, RejectReason, Role};

const NAME: &str = "chat_template";

pub struct JinjaTemplate {
    env: Environment<'static>,
    special: SpecialTokens,
    has_generation: bool,
    /// The token that closes an assistant turn, found by rendering a probe conversation.
    end_of_turn: Option<String>,
    /// What `add_generation_prompt=True` appends (the assistant header), found the same way.
    generation_prompt: Option<String>,
    /// A native renderer that passed the start-up self-check against this template, if any.
    native: Option<NativeTemplate>,
}

impl JinjaTemplate {
    pub fn new(source: &str, special: SpecialTokens) -> Result<Self> {
        let (source, has_generation) = generation::rewrite_tags(source);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(super::pystr::unknown_method);
        env.add_filter("trim", super::pystr::trim);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: String| super::strftime::now(&format));
        env.add_filter("tojson", tojson);
        env.add_filter(generation::FILTER_NAME, generation::mark);
        env.add_template_owned(NAME, source).map_err(|e| Error::template(format!("cannot parse: {e:#}")))?;
        let mut template = JinjaTemplate { env, special, has_generation, end_of_turn: None, generation_prompt: None, native: None };
        template.end_of_turn = template.probe_end_of_turn();
        template.generation_prompt = template.probe_generation_prompt();
        template.native = template.matching_native();
        Ok(template)
    }

    /// The native family rendering this template, when one passed the self-check.
    pub fn native_family(&self) -> Option<native::Family> {
        self.native.as_ref().map(|n| n.family)
    }

    pub fn render(&self, conversation: &Conversation) -> std::result::Result<Rendered, Reject> {
        if conversation.messages.iter().any(|m| m.content.contains([MARK_START, MARK_END])) {
            return Err(Reject::new(RejectReason::ReservedCharacter, "text contains U+FDD0/U+FDD1, which fastsft reserves as markers"));
        }
        if let Some(result) = self.native.as_ref().and_then(|n| n.render(conversation)) {
            return result;
        }
        self.render_jinja(conversation)
    }

    /// The first native renderer that agrees with this template on every probe it covers (and
    /// covers at least three), or `None`.
    fn matching_native(&self) -> Option<NativeTemplate> {
        if self.has_generation {
            return None;
        }
        let token = |name: &str| self.special.named.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
        let probes = native::probe_set();
        native::FAMILIES.into_iter().map(|family| NativeTemplate::new(family, token("bos_token"), token("eos_token"))).find(|candidate| {
            let mut covered = 0;
            for probe in &probes {
                let Some(fast) = candidate.render(probe) else { continue };
                covered += 1;
                let same = match (fast, self.render_jinja(probe)) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                };
                if !same {
                    return false;
                }
            }
            covered >= 3
        })
    }

    fn render_jinja(&self, conversation: &Conversation) -> std::result::Result<Rendered, Reject> {
        let messages: Vec<Value> = conversation.messages.iter().map(message_value).collect();
        let tools = if conversation.tools.is_empty() { Value::from(()) } else { Value::from_serialize(&conversation.tools) };
        if self.has_generation {
            self.render_marked(conversation, &messages, &tools)
        } else {
            self.render_by_prefixes(conversation, &messages, &tools)
        }
    }

    /// The plain rendering of a whole conversation (no generation prompt), for tests.
    #[cfg(test)]
    pub fn render_text_for_tests(&self, conversation: &Conversation) -> std::result::Result<String, Reject> {
        let messages: Vec<Value> = conversation.messages.iter().map(message_value).collect();
        self.render_messages(&messages, &Value::from(()), false)
    }

    fn render_messages(&self, messages: &[Value], tools: &Value, add_generation_prompt: bool) -> std::result::Result<String, Reject> {
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages.to_vec())),
            ("tools", tools.clone()),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        for (name, token) in &self.special.named {
            context.push((name.as_str(), Value::from(token.as_str())));
        }
        let context: Value = context.into_iter().collect();
        let template = self.env.get_template(NAME).map_err(template_reject)?;
        template.render(context).map_err(template_reject)
    }

    fn render_marked(&self, conversation: &Conversation, messages: &[Value], tools: &Value) -> std::result::Result<Rendered, Reject> {
        let marked = self.render_messages(messages, tools, false)?;
        let (text, blocks) = generation::extract(&marked)
            .ok_or_else(|| Reject::new(RejectReason::SpanNotFound, "{% generation %} blocks are nested or unbalanced"))?;
        let assistants: Vec<usize> = assistant_indices(conversation).collect();
        if blocks.len() != assistants.len() {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                format!("the template marked {} generation blocks for {} assistant messages", blocks.len(), assistants.len()),
            ));
        }
        let spans = blocks
            .into_iter()
            .zip(assistants)
            .map(|((start, end), message)| {
                let eot_start = match &self.end_of_turn {
                    Some(eot) if text[start..end].ends_with(eot.as_str()) => end - eot.len(),
                    _ => end,
                };
                Span { message, start, eot_start, end }
            })
            .collect();
        Ok(Rendered { text, spans })
    }

    fn render_by_prefixes(&self, conversation: &Conversation, messages: &[Value], tools: &Value) -> std::result::Result<Rendered, Reject> {
        let text = self.render_messages(messages, tools, false)?;
        let Some(eot) = &self.end_of_turn else {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                "the template closes assistant turns with no special token, so their end cannot be found; \
                 add {% generation %} blocks to the template",
            ));
        };
        if let Some(index) = assistant_indices(conversation).find(|&i| conversation.messages[i].content.contains(eot.as_str())) {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                format!("assistant message {} contains the end-of-turn token {eot} in its text", index + 1),
            ));
        }
        match self.spans_by_prefixes(conversation, messages, tools, &text, eot) {
            Ok(spans) => Ok(Rendered { text, spans }),
            Err(prefix_reject) => {
                let replies: Vec<(usize, &str)> =
                    assistant_indices(conversation).map(|i| (i, conversation.messages[i].content.as_str())).collect();
                let render_marked = |markers: &[String]| {
                    let mut marked = messages.to_vec();
                    for ((index, _), marker) in replies.iter().zip(markers) {
                        let mut message = conversation.messages[*index].clone();
                        message.content = marker.clone();
                        marked[*index] = message_value(&message);
                    }
                    self.render_messages(&marked, tools, false)
                };
                let spans = markers::find_spans(&text, &replies, render_marked, self.generation_prompt.as_deref(), eot)
                    .map_err(|e| Reject::new(e.reason, format!("{}; {}", prefix_reject.detail, e.detail)))?;
                for span in &spans {
                    check_content(&conversation.messages[span.message], &text[span.start..span.eot_start], span.message)?;
                }
                Ok(Rendered { text, spans })
            }
        }
    }

    /// Spans when the conversation before each assistant message, rendered with the generation
    /// prompt, is a prefix of the whole rendering (most templates): one render per reply.
    fn spans_by_prefixes(&self, conversation: &Conversation, messages: &[Value], tools: &Value, text: &str, eot: &str) -> std::result::Result<Vec<Span>, Reject> {
        let mut spans = Vec::new();
        let mut previous_end = 0;
        for index in assistant_indices(conversation) {
            let prompt = self.render_messages(&messages[..index], tools, true)?;
            if !text.starts_with(&prompt) || prompt.len() < previous_end {
                return Err(Reject::new(
                    RejectReason::SpanNotFound,
                    format!("the template does not render the conversation before message {} as a prefix of the whole", index + 1),
                ));
            }
            let start = prompt.len();
            let Some(eot_offset) = text[start..].find(eot) else {
                return Err(Reject::new(RejectReason::SpanNotFound, format!("no {eot} after assistant message {}", index + 1)));
            };
            let eot_start = start + eot_offset;
            let end = eot_start + eot.len();
            check_content(&conversation.messages[index], &text[start..eot_start], index)?;
            spans.push(Span { message: index, start, eot_start, end });
            previous_end = end;
        }
        Ok(spans)
    }

    /// The assistant header: what `[user]` rendered with the generation prompt adds to `[user]`.
    fn probe_generation_prompt(&self) -> Option<String> {
        let user = Message { role: Role::User, content: "fastsft probe question".into(), tool_calls: None, train: None };
        let values = vec![message_value(&user)];
        let with = self.render_messages(&values, &Value::from(()), true).ok()?;
        let without = self.render_messages(&values, &Value::from(()), false).ok()?;
        with.strip_prefix(without.as_str()).map(str::to_string)
    }

    /// Renders `[user, assistant]` (with a system turn if the template insists) and takes the
    /// first special token after the assistant's text: `<|im_end|>`, `<|eot_id|>`, `</s>`, ...
    fn probe_end_of_turn(&self) -> Option<String> {
        const REPLY: &str = "fastsft probe reply";
        let turn = |role, content: &str| Message { role, content: content.into(), tool_calls: None, train: None };
        let probes = [
            vec![turn(Role::User, "fastsft probe question"), turn(Role::Assistant, REPLY)],
            vec![turn(Role::System, "fastsft probe system"), turn(Role::User, "fastsft probe question"), turn(Role::Assistant, REPLY)],
        ];
        for probe in probes {
            let values: Vec<Value> = probe.iter().map(message_value).collect();
            let Ok(text) = self.render_messages(&values, &Value::from(()), false) else { continue };
            let text = generation::extract(&text).map(|(t, _)| t).unwrap_or(text);
            let Some(at) = text.rfind(REPLY) else { continue };
            let after = &text[at + REPLY.len()..];
            return self
                .special
                .special
                .iter()
                .filter_map(|token| after.find(token.as_str()).map(|pos| (pos, std::cmp::Reverse(token.len()), token)))
                .min()
                .map(|(_, _, token)| token.clone());
        }
        None
    }
}

fn assistant_indices(conversation: &Conversation) -> impl Iterator<Item = usize> + '_ {
    conversation.messages.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant).map(|(i, _)| i)
}

/// The span must hold the message's text (templates may trim it), so that a reply containing
/// the end-of-turn string itself, or a template that moves text around, is caught.
fn check_content(message: &Message, span: &str, index: usize) -> std::result::Result<(), Reject> {
    // Reasoning templates (Qwen3) re-render or drop a `<think>` block: check the answer after it.
    let answer = message.content.rsplit_once("</think>").map_or(message.content.as_str(), |(_, answer)| answer);
    let content = answer.trim_matches(super::pystr::is_python_space);
    if content.is_empty() || span.contains(content) {
        return Ok(());
    }
    Err(Reject::new(
        RejectReason::SpanNotFound,
        format!("assistant message {} is not rendered whole inside its turn (does it contain the end-of-turn token?)", index + 1),
    ))
}

/// What a template sees of a message: `role`, `content`, and `tool_calls` only where present.
fn message_value(message: &Message) -> Value {
    let mut entries: Vec<(&str, Value)> = vec![("role", Value::from(message.role.as_str())), ("content", Value::from(message.content.as_str()))];
    if let Some(calls) = &message.tool_calls {
        entries.push(("tool_calls", Value::from_serialize(calls)));
    }
    entries.into_iter().collect()
}

fn template_reject(error: minijinja::Error) -> Reject {
    let detail = match error.kind() {
        ErrorKind::InvalidOperation if error.detail().is_some() => error.detail().unwrap_or_default().to_string(),
        _ => format!("{error:#}"),
    };
    Reject::new(RejectReason::TemplateError, detail)
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_usize() {
            Some(n) => " ".repeat(n),
            None => v.as_str().unwrap_or_default().to_string(),
        }),
    };
    let mut options = PyJsonOptions::with_indent(indent);
    options.ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    options.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    if let Some(separators) = kwargs.get::<Option<Vec<String>>>("separators")? {
        if let [item, key] = separators.as_slice() {
            options.item_separator = item.clone();
            options.key_separator = key.clone();
        }
    }
    kwargs.assert_all_used()?;
    to_python_json(value, &options)
        .map(Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}
