//! What a template does, found by rendering probe conversations rather than by reading its text:
//! the generation prompt, whether it opens a reasoning block, whether it reads
//! `reasoning_content`, and the end-of-turn marker.

use minijinja::value::Value;

use super::{plain_value, plain_value_entries, Context, JinjaTemplate, PROBE_REPLY};
use crate::schema::{Message, Role};
use crate::template::reasoning;

impl JinjaTemplate {
    /// The assistant header: what `[user]` rendered with the generation prompt adds to `[user]`.
    pub(super) fn probe_generation_prompt(&self) -> Option<String> {
        let values = vec![plain_value(&Message::new(Role::User, "fastsft probe question"))];
        let context = Context::empty();
        let with = self.render_plain(&values, &context, true).ok()?;
        let without = self.render_plain(&values, &context, false).ok()?;
        with.strip_prefix(without.as_str()).map(str::to_string)
    }

    /// The part of the generation prompt that opens a reasoning block: what follows the header
    /// the template writes before an assistant reply it renders (`<think>\n` for QwQ).
    pub(super) fn probe_reasoning_open(&self) -> String {
        let Some(prompt) = &self.generation_prompt else { return String::new() };
        let probe = [Message::new(Role::User, "fastsft probe question"), Message::new(Role::Assistant, PROBE_REPLY)];
        let values: Vec<Value> = probe.iter().map(plain_value).collect();
        let context = Context::empty();
        let (Ok(user), Ok(both)) = (self.render_plain(&values[..1], &context, false), self.render_plain(&values, &context, false)) else {
            return String::new();
        };
        let Some(turn) = both.strip_prefix(user.as_str()) else { return String::new() };
        let common = prompt.char_indices().zip(turn.chars()).take_while(|((_, a), b)| a == b).last().map_or(0, |((at, c), _)| at + c.len_utf8());
        let open = &prompt[common..];
        if open.starts_with(reasoning::OPEN) {
            open.to_string()
        } else {
            String::new()
        }
    }

    /// Whether a `reasoning_content` field shows up in the rendering of a last assistant turn.
    pub(super) fn probe_reads_reasoning_content(&self) -> bool {
        const THOUGHT: &str = "fastsft probe thought";
        let mut assistant = plain_value_entries(&Message::new(Role::Assistant, PROBE_REPLY));
        assistant.push(("reasoning_content".into(), Value::from(THOUGHT)));
        let values = vec![plain_value(&Message::new(Role::User, "fastsft probe question")), Value::from_iter(assistant)];
        self.render_plain(&values, &Context::empty(), false).is_ok_and(|text| text.contains(THOUGHT))
    }

    /// Renders `[user, assistant]` (with a system turn if the template insists) and takes the
    /// first special token after the assistant's text: `<|im_end|>`, `<|eot_id|>`, `</s>`, ...
    pub(super) fn probe_end_of_turn(&self) -> Option<String> {
        let probes = [
            vec![Message::new(Role::User, "fastsft probe question"), Message::new(Role::Assistant, PROBE_REPLY)],
            vec![
                Message::new(Role::System, "fastsft probe system"),
                Message::new(Role::User, "fastsft probe question"),
                Message::new(Role::Assistant, PROBE_REPLY),
            ],
        ];
        for probe in probes {
            let values: Vec<Value> = probe.iter().map(plain_value).collect();
            let Ok(text) = self.render_plain(&values, &Context::empty(), false) else { continue };
            let Some(at) = text.rfind(PROBE_REPLY) else { continue };
            let after = &text[at + PROBE_REPLY.len()..];
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
