//! Whether one rendering of a whole conversation trains every turn exactly (DESIGN §3.1).
//!
//! A trained span must hold everything the user gave for that turn — the answer, and the
//! reasoning unless it is dropped — and nothing of another message. When a template renders
//! history without its reasoning (Qwen3, QwQ), the whole rendering fails this check for the
//! earlier turns, and the conversation is split into per-turn samples or rejected, never trained
//! on text that lost what the model wrote.

use super::pystr::is_python_space;
use super::reasoning::{self, ReasoningPolicy};
use super::{trained_turns, Rendered, TurnOptions};
use crate::schema::{Conversation, Message, Reject, RejectReason, Role};

/// Checks every trained turn of a whole-conversation rendering.
pub fn check_whole(conversation: &Conversation, rendered: &Rendered, turns: &TurnOptions) -> Result<(), Reject> {
    for index in trained_turns(conversation, turns.last_only) {
        let span = rendered
            .spans
            .iter()
            .find(|s| s.message == index)
            .ok_or_else(|| Reject::new(RejectReason::SpanNotFound, format!("assistant message {} has no span in the rendering", index + 1)))?;
        check_turn(conversation, index, &rendered.text[span.start..span.eot_start], turns.reasoning)?;
    }
    Ok(())
}

/// The turn's text (`span`, without the end-of-turn marker) holds the message's answer and its
/// reasoning (unless dropped), and no other message's text that the message does not itself
/// contain.
pub fn check_turn(conversation: &Conversation, index: usize, span: &str, policy: ReasoningPolicy) -> Result<(), Reject> {
    let message = &conversation.messages[index];
    let parts = reasoning::parts(message, index)?;
    let answer = parts.answer.trim_matches(is_python_space);
    if !answer.is_empty() && !span.contains(answer) {
        return Err(Reject::new(
            RejectReason::SpanNotFound,
            format!("assistant message {} is not rendered whole inside its turn (does it contain the end-of-turn token?)", index + 1),
        ));
    }
    if policy != ReasoningPolicy::Drop {
        let thought = parts.reasoning.unwrap_or("").trim_matches(is_python_space);
        if !thought.is_empty() && !span.contains(thought) {
            return Err(Reject::new(
                RejectReason::NeedsSplit,
                format!("the template renders assistant message {} without its reasoning", index + 1),
            ));
        }
    }
    check_no_foreign_text(conversation, index, message, span)
}

/// Texts shorter than this are too likely to occur by chance in template markup.
const MIN_FOREIGN_TEXT: usize = 3;

fn check_no_foreign_text(conversation: &Conversation, index: usize, message: &Message, span: &str) -> Result<(), Reject> {
    // The tool calls' JSON is only serialized when another message's text shows up in the span.
    let own_calls = std::cell::OnceCell::new();
    let own = |text: &str| {
        message.text().contains(text)
            || message.reasoning.as_deref().is_some_and(|r| r.contains(text))
            || own_calls
                .get_or_init(|| message.tool_calls.as_ref().map(|calls| serde_json::Value::from(calls.clone()).to_string()).unwrap_or_default())
                .contains(text)
    };
    // A span that runs past its turn (or starts before it) takes in the messages around it: those
    // after it up to the next assistant turn, and the one before it. Checking only these keeps
    // the cost linear in the conversation (measured: all messages × all spans cost 20% of a
    // whole run on long ShareGPT conversations).
    let messages = &conversation.messages;
    let after = messages[index + 1..].iter().position(|m| m.role == Role::Assistant).map_or(messages.len(), |p| index + 1 + p);
    let neighbours = index.saturating_sub(1)..after;
    for (other, m) in messages.iter().enumerate().take(neighbours.end).skip(neighbours.start) {
        let text = m.text().trim_matches(is_python_space);
        if other == index || text.len() < MIN_FOREIGN_TEXT || !span.contains(text) || own(text) {
            continue;
        }
        return Err(Reject::new(
            RejectReason::SpanNotFound,
            format!("the turn of assistant message {} would also train the text of message {}", index + 1, other + 1),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Role;

    fn conversation(messages: Vec<Message>) -> Conversation {
        Conversation { messages, ..Default::default() }
    }

    #[test]
    fn a_span_with_another_turns_text_is_refused_unless_quoted() {
        let c = conversation(vec![Message::new(Role::User, "what is two plus two"), Message::new(Role::Assistant, "four")]);
        assert!(check_turn(&c, 1, "four", ReasoningPolicy::Train).is_ok());
        let err = check_turn(&c, 1, "four<eot>user: what is two plus two", ReasoningPolicy::Train).unwrap_err();
        assert_eq!(err.reason, RejectReason::SpanNotFound);
        let quoting = conversation(vec![Message::new(Role::User, "say hello"), Message::new(Role::Assistant, "You said: say hello")]);
        assert!(check_turn(&quoting, 1, "You said: say hello", ReasoningPolicy::Train).is_ok());
    }

    #[test]
    fn a_span_running_into_the_next_turns_is_refused() {
        let c = conversation(vec![
            Message::new(Role::User, "first question"),
            Message::new(Role::Assistant, "one"),
            Message::new(Role::User, "second question"),
            Message::new(Role::Tool, "tool output"),
            Message::new(Role::Assistant, "two"),
        ]);
        let err = check_turn(&c, 1, "one<eot>second question", ReasoningPolicy::Train).unwrap_err();
        assert!(err.detail.contains("message 3"), "{}", err.detail);
        let err = check_turn(&c, 1, "one<eot>x<eot>tool output", ReasoningPolicy::Train).unwrap_err();
        assert!(err.detail.contains("message 4"), "{}", err.detail);
    }

    #[test]
    fn reasoning_missing_from_the_span_needs_a_split_unless_dropped() {
        let m = Message { reasoning: Some("add two and two".into()), ..Message::new(Role::Assistant, "4") };
        let c = conversation(vec![Message::new(Role::User, "2+2?"), m]);
        assert_eq!(check_turn(&c, 1, "4", ReasoningPolicy::Train).unwrap_err().reason, RejectReason::NeedsSplit);
        assert_eq!(check_turn(&c, 1, "4", ReasoningPolicy::Mask).unwrap_err().reason, RejectReason::NeedsSplit);
        assert!(check_turn(&c, 1, "4", ReasoningPolicy::Drop).is_ok());
        assert!(check_turn(&c, 1, "<think>\nadd two and two\n</think>\n\n4", ReasoningPolicy::Train).is_ok());
    }
}
