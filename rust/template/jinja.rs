//! The model's own chat template, rendered with minijinja the way `transformers` renders it
//! (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`, loop controls,
//! `raise_exception`, Python-style `tojson`, `strftime_now`, Python string methods).
//!
//! Spans come from `{% generation %}` blocks when the template has them. Otherwise each assistant
//! message's span is found without trusting the template: the conversation up to that message,
//! rendered with `add_generation_prompt=True`, must be a prefix of the full rendering; the span
//! runs from there through the first end-of-turn marker, and must contain the message's text.
//! When any check fails the row is rejected, never guessed.

use minijinja::value::Value;
use minijinja::Environment;

use super::generation;
use super::markers;
use super::native::{self, NativeTemplate};

use super::reasoning::{self, HistoryTurns, ReasoningPolicy, SplitTurns};
use super::turns;
use super::pyjson::python_float_repr;
use super::{Rendered, Span, SpecialTokens, TemplateOptions, TurnOptions, MARK_END, MARK_START};
use crate::error::{Error, Result};
use crate::exact_json;
use crate::schema::{Conversation, Message, Reject, RejectReason, Role};

mod environment;
mod per_turn;
mod probes;

use environment::{python_string, raise_exception, template_reject, tojson};

const NAME: &str = "chat_template";

pub struct JinjaTemplate {
    env: Environment<'static>,
    special: SpecialTokens,
    has_generation: bool,
    /// Template keyword arguments (`--template-arg`), given to every rendering.
    kwargs: Vec<(String, Value)>,
    /// The token that closes an assistant turn, found by rendering a probe conversation.
    end_of_turn: Option<String>,
    /// What `add_generation_prompt=True` appends (the assistant header), found the same way.
    generation_prompt: Option<String>,
    /// What the generation prompt opens beyond the header the template writes for an assistant
    /// turn it renders (`<think>\n` for QwQ and the DeepSeek-R1 distills); empty for most.
    reasoning_open: String,
    /// Whether the template renders a message's `reasoning_content` (Qwen3 does; QwQ reads only
    /// the content).
    reads_reasoning_content: bool,
    /// A native renderer written for exactly this template text, after its self-check.
    native: Option<NativeTemplate>,
}

impl JinjaTemplate {
    pub fn new(source: &str, special: SpecialTokens, options: &TemplateOptions) -> Result<Self> {
        let (rewritten, has_generation) = generation::rewrite_tags(source);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(super::pystr::unknown_method);
        env.add_filter("trim", super::pystr::trim);
        env.add_filter("string", python_string);
        env.set_formatter(|out, state, value| {
            if value.kind() == minijinja::value::ValueKind::Number && !value.is_integer() {
                if let Ok(float) = f64::try_from(value.clone()) {
                    return out.write_str(&python_float_repr(float)).map_err(minijinja::Error::from);
                }
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_function("raise_exception", raise_exception);
        match &options.date {
            Some(date) => {
                let seconds = super::strftime::parse_date(date)
                    .ok_or_else(|| Error::config(format!("--date {date}: expected a day as YYYY-MM-DD")))?;
                env.add_function("strftime_now", move |format: String| super::strftime::format_utc(&format, seconds));
            }
            None => env.add_function("strftime_now", |format: String| super::strftime::now_local(&format)),
        }
        env.add_filter("tojson", tojson);
        env.add_filter(generation::FILTER_NAME, generation::mark);
        env.add_template_owned(NAME, rewritten).map_err(|e| Error::template(format!("cannot parse: {e:#}")))?;
        let kwargs = options
            .kwargs
            .iter()
            .map(|(k, v)| exact_json::to_template(v).map(|v| (k.clone(), v)).map_err(|r| Error::config(format!("--template-arg {k}: {}", r.detail))))
            .collect::<Result<Vec<_>>>()?;
        let mut template = JinjaTemplate {
            env,
            special,
            has_generation,
            kwargs,
            end_of_turn: None,
            generation_prompt: None,
            reasoning_open: String::new(),
            reads_reasoning_content: false,
            native: None,
        };
        template.end_of_turn = template.probe_end_of_turn();
        template.generation_prompt = template.probe_generation_prompt();
        template.reasoning_open = template.probe_reasoning_open();
        template.reads_reasoning_content = template.probe_reads_reasoning_content();
        if options.kwargs.is_empty() {
            template.native = template.matching_native(&super::sha256_hex(source.as_bytes()));
        }
        Ok(template)
    }

    /// The native rendering of a conversation and the Jinja one, when the native renderer takes
    /// it: tests hold the two equal on real corpora, beyond the start-up probes.
    #[cfg(test)]
    pub fn native_and_jinja_for_tests(&self, conversation: &Conversation) -> Option<(std::result::Result<Rendered, Reject>, std::result::Result<Rendered, Reject>)> {
        let native = self.native_rendering(conversation)?;
        Some((native, self.render_whole(conversation, ReasoningPolicy::Train)))
    }

    /// The native renderer's whole rendering, when there is one for this template and it takes
    /// the conversation (plain chat, in its domain).
    fn native_rendering(&self, conversation: &Conversation) -> Option<std::result::Result<Rendered, Reject>> {
        self.native.as_ref().filter(|_| is_plain(conversation))?.render(conversation)
    }

    /// The native family rendering this template, when one passed the self-check.
    pub fn native_family(&self) -> Option<native::Family> {
        self.native.as_ref().map(|n| n.family)
    }

    pub fn render(&self, conversation: &Conversation, turns: &TurnOptions) -> std::result::Result<Vec<Rendered>, Reject> {
        if conversation.messages.iter().any(|m| m.text().contains([MARK_START, MARK_END])) {
            return Err(Reject::new(RejectReason::ReservedCharacter, "text contains U+FDD0/U+FDD1, which fastsft reserves as markers"));
        }
        if turns.history == HistoryTurns::AsWritten {
            let rendered = self.render_as_written(conversation, turns.reasoning)?;
            turns::check_whole(conversation, &rendered, turns)?;
            return Ok(vec![rendered]);
        }
        let mut whole_failure: Option<Reject> = None;
        if turns.split != SplitTurns::Always {
            let whole = match self.native_rendering(conversation) {
                Some(result) => result,
                None => self.render_whole(conversation, turns.reasoning),
            };
            let checked = whole.and_then(|rendered| turns::check_whole(conversation, &rendered, turns).map(|()| rendered));
            match checked {
                Ok(rendered) => return Ok(vec![rendered]),
                Err(reject) if !matches!(reject.reason, RejectReason::SpanNotFound | RejectReason::NeedsSplit) => return Err(reject),
                Err(reject) if turns.split == SplitTurns::Never && reject.reason == RejectReason::NeedsSplit => {
                    return Err(Reject::new(
                        RejectReason::NeedsSplit,
                        format!("{}; --split-turns auto would train each turn in a sample of its own", reject.detail),
                    ))
                }
                // A whole rendering that fails where per-turn samples would work: say which option helps.
                Err(reject) if turns.split == SplitTurns::Never => {
                    return Err(match self.render_turns(conversation, turns) {
                        Ok(_) => Reject::new(
                            RejectReason::NeedsSplit,
                            format!("{}; --split-turns auto would train each turn in a sample of its own", reject.detail),
                        ),
                        Err(_) => reject,
                    })
                }
                Err(reject) => whole_failure = Some(reject),
            }
        }
        self.render_turns(conversation, turns).map_err(|reject| match whole_failure {
            Some(whole) if reject.reason == RejectReason::SpanNotFound => {
                Reject::new(reject.reason, format!("{}; per turn: {}", whole.detail, reject.detail))
            }
            _ => reject,
        })
    }

    /// The first native renderer that was written for this exact template text (by sha256) and
    /// agrees with it on every probe it covers (at least three), or `None`.
    fn matching_native(&self, sha256: &str) -> Option<NativeTemplate> {
        if self.has_generation {
            return None;
        }
        let family = native::FAMILIES.into_iter().find(|family| native::template_sha256(*family) == sha256)?;
        let token = |name: &str| self.special.named.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
        let candidate = NativeTemplate::new(family, token("bos_token"), token("eos_token"));
        let mut covered = 0;
        for probe in &native::probe_set() {
            let Some(fast) = candidate.render(probe) else { continue };
            covered += 1;
            let same = match (fast, self.render_whole(probe, ReasoningPolicy::Train)) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a == b,
                _ => false,
            };
            if !same {
                return None;
            }
        }
        (covered >= 3).then_some(candidate)
    }

    /// What the template sees of each message, under the reasoning policy.
    fn message_values(&self, conversation: &Conversation, policy: ReasoningPolicy) -> std::result::Result<Vec<Value>, Reject> {
        conversation.messages.iter().enumerate().map(|(i, m)| self.message_value(m, i, policy)).collect()
    }

    /// `role`, `content` (left out when null, as transformers does) and `tool_calls` where present, then every other field
    /// as given. Reasoning from a field goes in as `reasoning_content` when the template reads
    /// it, else inline in the content; `--reasoning drop` removes it.
    fn message_value(&self, message: &Message, index: usize, policy: ReasoningPolicy) -> std::result::Result<Value, Reject> {
        let mut content = message.content.as_deref().map(str::to_string);
        let mut reasoning_content = None;
        if message.role == Role::Assistant {
            let parts = reasoning::parts(message, index)?;
            match (policy, parts.reasoning) {
                (_, None) => {}
                (ReasoningPolicy::Drop, Some(_)) => {
                    content = Some(if parts.inline { parts.answer.trim_start_matches(super::pystr::is_python_space).to_string() } else { parts.answer.to_string() })
                }
                (_, Some(thought)) if !parts.inline => {
                    if self.reads_reasoning_content {
                        reasoning_content = Some(thought.to_string());
                    } else {
                        content = Some(reasoning::inline(thought, parts.answer));
                    }
                }
                _ => {}
            }
        }
        let mut entries: Vec<(String, Value)> = Vec::with_capacity(4 + message.extra.len());
        entries.push(("role".into(), Value::from(message.role.as_str())));
        // transformers (5.x) leaves a null content out of the message: the template sees it undefined.
        if let Some(content) = content {
            entries.push(("content".into(), Value::from(content)));
        }
        if let Some(calls) = &message.tool_calls {
            entries.push(("tool_calls".into(), exact_json::to_template(&serde_json::Value::from(calls.clone()))?));
        }
        if let Some(thought) = reasoning_content {
            entries.push(("reasoning_content".into(), Value::from(thought)));
        }
        for (key, value) in &message.extra {
            entries.push((key.clone(), exact_json::to_template(value)?));
        }
        Ok(Value::from_iter(entries))
    }

    fn tools_value(conversation: &Conversation) -> std::result::Result<Value, Reject> {
        if conversation.tools.is_empty() {
            Ok(Value::from(()))
        } else {
            exact_json::to_template(&serde_json::Value::from(conversation.tools.clone()))
        }
    }

    /// One rendering of the whole conversation with a span per assistant message.
    fn render_whole(&self, conversation: &Conversation, policy: ReasoningPolicy) -> std::result::Result<Rendered, Reject> {
        let messages = self.message_values(conversation, policy)?;
        let context = Context::new(self, conversation)?;
        if self.has_generation {
            self.render_marked(conversation, &messages, &context)
        } else {
            self.render_by_prefixes(conversation, &messages, &context, policy)
        }
    }

    /// The plain rendering of a whole conversation (no generation prompt), for tests.
    #[cfg(test)]
    pub fn render_text_for_tests(&self, conversation: &Conversation) -> std::result::Result<String, Reject> {
        let messages = self.message_values(conversation, ReasoningPolicy::Train)?;
        self.render_messages(&messages, &Context::new(self, conversation)?, false)
    }

    fn render_messages(&self, messages: &[Value], context: &Context, add_generation_prompt: bool) -> std::result::Result<String, Reject> {
        let mut variables: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages.to_vec())),
            ("tools", context.tools.clone()),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        for (name, token) in &self.special.named {
            variables.push((name.as_str(), Value::from(token.as_str())));
        }
        // Later entries win: record-level context over the run's keyword arguments.
        for (name, value) in self.kwargs.iter().chain(context.record.iter()) {
            variables.push((name.as_str(), value.clone()));
        }
        let variables: Value = variables.into_iter().collect();
        let template = self.env.get_template(NAME).map_err(template_reject)?;
        template.render(variables).map_err(template_reject)
    }

    /// A rendering without `{% generation %}` markers.
    fn render_plain(&self, messages: &[Value], context: &Context, add_generation_prompt: bool) -> std::result::Result<String, Reject> {
        let text = self.render_messages(messages, context, add_generation_prompt)?;
        if !self.has_generation {
            return Ok(text);
        }
        generation::extract(&text)
            .map(|(text, _)| text)
            .ok_or_else(|| Reject::new(RejectReason::SpanNotFound, "{% generation %} blocks are nested or unbalanced"))
    }

    fn render_marked(&self, conversation: &Conversation, messages: &[Value], context: &Context) -> std::result::Result<Rendered, Reject> {
        let marked = self.render_messages(messages, context, false)?;
        let (text, blocks) = generation::extract(&marked)
            .ok_or_else(|| Reject::new(RejectReason::SpanNotFound, "{% generation %} blocks are nested or unbalanced"))?;
        let assistants: Vec<usize> = assistant_indices(conversation).collect();
        if blocks.len() != assistants.len() {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                format!("the template marked {} generation blocks for {} assistant messages", blocks.len(), assistants.len()),
            ));
        }
        let spans: Vec<Span> = blocks
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
        // Each block must hold its own message (a template could mark the wrong text).
        for span in &spans {
            check_content(&conversation.messages[span.message], &text[span.start..span.eot_start], span.message)?;
        }
        Ok(Rendered::whole(text, spans))
    }

    fn render_by_prefixes(
        &self,
        conversation: &Conversation,
        messages: &[Value],
        context: &Context,
        policy: ReasoningPolicy,
    ) -> std::result::Result<Rendered, Reject> {
        let text = self.render_messages(messages, context, false)?;
        let eot = self.required_end_of_turn()?;
        if let Some(index) = assistant_indices(conversation).find(|&i| conversation.messages[i].text().contains(eot)) {
            return Err(Reject::new(
                RejectReason::SpanNotFound,
                format!("assistant message {} contains the end-of-turn token {eot} in its text", index + 1),
            ));
        }
        match self.spans_by_prefixes(conversation, messages, context, &text, eot) {
            Ok(spans) => Ok(Rendered::whole(text, spans)),
            Err(prefix_reject) => {
                let replies: Vec<(usize, String)> = assistant_indices(conversation)
                    .map(|i| (i, messages[i].get_attr("content").ok().and_then(|c| c.as_str().map(str::to_string)).unwrap_or_default()))
                    .collect();
                let reply_refs: Vec<(usize, &str)> = replies.iter().map(|(i, r)| (*i, r.as_str())).collect();
                let render_marked = |markers: &[String]| {
                    let mut marked = messages.to_vec();
                    for ((index, _), marker) in replies.iter().zip(markers) {
                        let mut message = conversation.messages[*index].clone();
                        message.content = Some(marker.clone());
                        message.reasoning = None;
                        marked[*index] = self.message_value(&message, *index, policy)?;
                    }
                    self.render_messages(&marked, context, false)
                };
                let spans = markers::find_spans(&text, &reply_refs, render_marked, self.generation_prompt.as_deref(), eot)
                    .map_err(|e| Reject::new(e.reason, format!("{}; {}", prefix_reject.detail, e.detail)))?;
                for span in &spans {
                    check_content(&conversation.messages[span.message], &text[span.start..span.eot_start], span.message)?;
                }
                Ok(Rendered::whole(text, spans))
            }
        }
    }

    fn required_end_of_turn(&self) -> std::result::Result<&str, Reject> {
        self.end_of_turn.as_deref().ok_or_else(|| {
            Reject::new(
                RejectReason::SpanNotFound,
                "the template closes assistant turns with no special token, so their end cannot be found; \
                 add {% generation %} blocks to the template",
            )
        })
    }

    /// Spans when the conversation before each assistant message, rendered with the generation
    /// prompt, is a prefix of the whole rendering (most templates): one render per reply.
    fn spans_by_prefixes(
        &self,
        conversation: &Conversation,
        messages: &[Value],
        context: &Context,
        text: &str,
        eot: &str,
    ) -> std::result::Result<Vec<Span>, Reject> {
        let mut spans = Vec::new();
        let mut previous_end = 0;
        for index in assistant_indices(conversation) {
            let prompt = self.render_messages(&messages[..index], context, true)?;
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
}

const PROBE_REPLY: &str = "fastsft probe reply";

/// Template variables besides the messages: tools, and the record's own context.
struct Context {
    tools: Value,
    record: Vec<(String, Value)>,
}

impl Context {
    fn new(_template: &JinjaTemplate, conversation: &Conversation) -> std::result::Result<Context, Reject> {
        let record = conversation
            .context
            .iter()
            .map(|(k, v)| exact_json::to_template(v).map(|v| (k.clone(), v)))
            .collect::<std::result::Result<Vec<_>, Reject>>()?;
        Ok(Context { tools: JinjaTemplate::tools_value(conversation)?, record })
    }

    fn empty() -> Context {
        Context { tools: Value::from(()), record: Vec::new() }
    }
}

/// A conversation the native renderers can take: nothing beyond role, text and tool calls.
fn is_plain(conversation: &Conversation) -> bool {
    conversation.context.is_empty()
        && conversation.messages.iter().all(|m| {
            m.content.is_some()
                && m.extra.keys().all(|k| k == "train" || k == "weight")
                && m.reasoning.is_none()
                && !m.text().contains(reasoning::CLOSE)
        })
}

fn plain_value_entries(message: &Message) -> Vec<(String, Value)> {
    vec![("role".into(), Value::from(message.role.as_str())), ("content".into(), Value::from(message.text()))]
}

/// A probe message: role and content only.
fn plain_value(message: &Message) -> Value {
    Value::from_iter(plain_value_entries(message))
}

fn assistant_indices(conversation: &Conversation) -> impl Iterator<Item = usize> + '_ {
    conversation.messages.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant).map(|(i, _)| i)
}

/// The span must hold the message's answer (templates may trim it), so that a reply containing
/// the end-of-turn string itself, or a template that moves text around, is caught.
fn check_content(message: &Message, span: &str, index: usize) -> std::result::Result<(), Reject> {
    let answer = reasoning::parts(message, index).map_or(message.text(), |p| p.answer);
    let content = answer.trim_matches(super::pystr::is_python_space);
    if content.is_empty() || span.contains(content) {
        return Ok(());
    }
    Err(Reject::new(
        RejectReason::SpanNotFound,
        format!("assistant message {} is not rendered whole inside its turn (does it contain the end-of-turn token?)", index + 1),
    ))
}
