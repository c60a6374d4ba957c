//! Assistant spans for templates that do not render history as a prefix of the whole (Mistral
//! v0.3 moves the system prompt into the last user turn; Qwen3 drops earlier reasoning).
//!
//! The conversation is rendered a second time with each assistant reply replaced by a unique
//! marker. The marked rendering splits into the template's own text around the replies; the real
//! rendering must be exactly those pieces with each reply (or the reply trimmed, for templates
//! that trim) in between — otherwise the row is rejected. Each span then runs from the end of the
//! assistant header (the generation prompt, where the template has one) before the reply through
//! the first end-of-turn token after it.

use super::{Span, MARK_END, MARK_START};
use crate::schema::{Reject, RejectReason};

fn marker(k: usize) -> String {
    format!("{MARK_START}{k}{MARK_END}")
}

pub fn rejected(detail: impl Into<String>) -> Reject {
    Reject::new(RejectReason::SpanNotFound, detail)
}

/// `replies`: (message index, reply text) of each assistant message, in order. `render_marked`
/// renders the conversation with reply k replaced by `marker(k)`.
pub fn find_spans(
    text: &str,
    replies: &[(usize, &str)],
    render_marked: impl FnOnce(&[String]) -> Result<String, Reject>,
    header: Option<&str>,
    end_of_turn: &str,
) -> Result<Vec<Span>, Reject> {
    let markers: Vec<String> = (0..replies.len()).map(marker).collect();
    let marked = render_marked(&markers)?;
    // The template's own text between the replies.
    let mut pieces = Vec::with_capacity(replies.len() + 1);
    let mut rest = marked.as_str();
    for m in &markers {
        let at = rest.find(m.as_str()).ok_or_else(|| rejected("the template does not print every assistant reply once"))?;
        pieces.push(&rest[..at]);
        rest = &rest[at + m.len()..];
        if rest.contains(m.as_str()) {
            return Err(rejected("the template prints an assistant reply twice"));
        }
    }
    pieces.push(rest);

    let mut spans = Vec::with_capacity(replies.len());
    let mut at = 0;
    let mut previous_end = 0;
    for (k, &(message, reply)) in replies.iter().enumerate() {
        if !text[at..].starts_with(pieces[k]) {
            return Err(rejected(format!("the template renders the text around assistant message {} differently", message + 1)));
        }
        at += pieces[k].len();
        let next = pieces[k + 1];
        let is_last = k + 1 == replies.len();
        let fits = |candidate: &str| {
            let after = &text[at..];
            after.starts_with(candidate) && if is_last { &after[candidate.len()..] == next } else { after[candidate.len()..].starts_with(next) }
        };
        let rendered = [reply, reply.trim(), reply.trim_start(), reply.trim_end()]
            .into_iter()
            .find(|c| fits(c))
            .ok_or_else(|| rejected(format!("assistant message {} is not rendered as written (nor trimmed)", message + 1)))?;
        let content_start = at;
        let content_end = at + rendered.len();
        let start = match header.filter(|h| !h.is_empty()) {
            Some(h) => text[previous_end..content_start].rfind(h).map(|p| previous_end + p + h.len()).ok_or_else(|| {
                rejected(format!("no assistant header before assistant message {}", message + 1))
            })?,
            None => content_start,
        };
        let eot_start = text[content_end..]
            .find(end_of_turn)
            .map(|p| content_end + p)
            .ok_or_else(|| rejected(format!("no {end_of_turn} after assistant message {}", message + 1)))?;
        let end = eot_start + end_of_turn.len();
        spans.push(Span { message, start, eot_start, end });
        previous_end = end;
        at = content_end;
    }
    // Spans must not run into the next reply.
    for pair in spans.windows(2) {
        if pair[0].end > pair[1].start {
            return Err(rejected(format!("the turn of assistant message {} has no end-of-turn token of its own", pair[0].message + 1)));
        }
    }
    Ok(spans)
}
