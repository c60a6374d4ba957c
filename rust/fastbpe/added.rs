//! Added tokens (`<|im_start|>`, `</s>`, …) found in the text, as the `tokenizers` crate's
//! `AddedVocabulary::find_matches` finds them: a leftmost-longest Aho-Corasick search (the same
//! `daachorse` automaton), then `lstrip`/`rstrip` widening the match over adjacent whitespace.
//!
//! Two automata, as there: tokens with `normalized: false` are searched in the raw text, the
//! others in each normalized piece between those. `single_word` is not implemented (the loader
//! refuses it).

use daachorse::{DoubleArrayAhoCorasick, DoubleArrayAhoCorasickBuilder, MatchKind};

use super::cache::FxHashMap;

#[derive(Debug, Clone, Copy)]
pub struct Strip {
    pub lstrip: bool,
    pub rstrip: bool,
}

pub struct Matcher {
    automaton: DoubleArrayAhoCorasick<u32>,
    strip: FxHashMap<u32, Strip>,
    /// Bytes that can start a match: a text without any is returned whole without a search.
    first_bytes: [bool; 256],
}

/// A part of the text: an added token, or a byte range of text between tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Token(u32),
    Text(usize, usize),
}

impl Matcher {
    /// `None` when there are no patterns; `Err` when the automaton cannot be built (e.g. a
    /// duplicate pattern), which makes the `tokenizers` crate fail too.
    pub fn new(patterns: Vec<(String, u32, Strip)>) -> Result<Option<Matcher>, ()> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut first_bytes = [false; 256];
        for (p, _, _) in &patterns {
            first_bytes[p.as_bytes()[0] as usize] = true;
        }
        let strip = patterns.iter().map(|(_, id, s)| (*id, *s)).collect();
        let automaton = DoubleArrayAhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build_with_values(patterns.iter().map(|(p, id, _)| (p.as_str(), *id)))
            .map_err(|_| ())?;
        Ok(Some(Matcher { automaton, strip, first_bytes }))
    }

    /// Calls `emit` with the segments of `text` in order; empty text segments are skipped (the
    /// `tokenizers` crate drops empty splits).
    pub fn split(&self, text: &str, mut emit: impl FnMut(Segment)) {
        if !text.bytes().any(|b| self.first_bytes[b as usize]) {
            if !text.is_empty() {
                emit(Segment::Text(0, text.len()));
            }
            return;
        }
        let mut start_offset = 0;
        let text_segment = |a: usize, b: usize, emit: &mut dyn FnMut(Segment)| {
            if a < b {
                emit(Segment::Text(a, b));
            }
        };
        for m in self.automaton.leftmost_find_iter(text) {
            let (mut start, mut stop, id) = (m.start(), m.end(), m.value());
            let strip = self.strip.get(&id).copied().unwrap_or(Strip { lstrip: false, rstrip: false });
            if strip.lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(start_offset);
            }
            if strip.rstrip {
                stop += text[stop..].len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            }
            if start_offset < start {
                text_segment(start_offset, start, &mut emit);
            }
            emit(Segment::Token(id));
            start_offset = stop;
        }
        if start_offset < text.len() {
            text_segment(start_offset, text.len(), &mut emit);
        }
    }
}
