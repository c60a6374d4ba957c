//! `{% generation %}` blocks, which minijinja has no tag for.
//!
//! The tags are rewritten into a filter block (`{% filter _fastsft_generation %}`), which keeps
//! Jinja's whitespace control (`{%-`, `-%}`, trim/lstrip blocks) exactly as written. The filter
//! wraps its output in two marker characters; after rendering, the markers are removed and their
//! positions become the trainable spans — the same spans `transformers`' `AssistantTracker`
//! records for `return_assistant_tokens_mask`.

use super::{MARK_END, MARK_START};

pub const FILTER_NAME: &str = "_fastsft_generation";

/// Rewrites `{% generation %}` / `{% endgeneration %}` (with any `-`/`+` modifiers); returns the
/// new source and whether any tag was found.
pub fn rewrite_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len() + 64);
    let mut rest = source;
    let mut found = false;
    while let Some(open) = rest.find("{%") {
        let Some(close_rel) = rest[open..].find("%}") else { break };
        let close = open + close_rel;
        let inner = &rest[open + 2..close];
        let left = if inner.starts_with('-') || inner.starts_with('+') { &inner[..1] } else { "" };
        let right = if inner.ends_with('-') || inner.ends_with('+') { &inner[inner.len() - 1..] } else { "" };
        let word = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..open]);
        match word {
            "generation" => {
                found = true;
                out.push_str(&format!("{{%{left} filter {FILTER_NAME} {right}%}}"));
            }
            "endgeneration" => {
                found = true;
                out.push_str(&format!("{{%{left} endfilter {right}%}}"));
            }
            _ => out.push_str(&rest[open..close + 2]),
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    (out, found)
}

pub fn mark(text: String) -> String {
    let mut out = String::with_capacity(text.len() + 6);
    out.push(MARK_START);
    out.push_str(&text);
    out.push(MARK_END);
    out
}

/// Removes the markers; returns the clean text and the byte spans they enclosed, or `None` if
/// they do not pair up (a nested or unbalanced block).
pub fn extract(marked: &str) -> Option<(String, Vec<(usize, usize)>)> {
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in marked.chars() {
        match c {
            MARK_START => {
                if open.is_some() {
                    return None;
                }
                open = Some(text.len());
            }
            MARK_END => spans.push((open.take()?, text.len())),
            _ => text.push(c),
        }
    }
    open.is_none().then_some((text, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tags_keeping_whitespace_control() {
        let (out, found) = rewrite_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}d{% endif %}");
        assert!(found);
        assert_eq!(out, "a{%- filter _fastsft_generation %}b{% endfilter -%}c{% if x %}d{% endif %}");
        assert_eq!(rewrite_tags("{{ x }}"), ("{{ x }}".to_string(), false));
    }

    #[test]
    fn extracts_spans() {
        let marked = format!("ab{}cd{}e{}{}", MARK_START, MARK_END, MARK_START, MARK_END);
        assert_eq!(extract(&marked), Some(("abcde".to_string(), vec![(2, 4), (5, 5)])));
        assert_eq!(extract(&format!("{MARK_START}{MARK_START}")), None);
    }
}
