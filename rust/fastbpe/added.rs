//! Added tokens (`<|im_start|>`, `</s>`, …) found in the text, as the `tokenizers` crate's
//! `AddedVocabulary::find_matches` finds them: leftmost-longest matches (its `daachorse`
//! automaton's `MatchKind::LeftmostLongest`), then `lstrip`/`rstrip` widening a match over
//! adjacent whitespace.
//!
//! Matching here is a `memchr` scan for the bytes that start a token and a trie walk from each
//! one — the automaton ran over every byte of the text (callgrind: 12% of Llama 3's encode).
//! A property test checks the matches against `daachorse` itself.
//!
//! Two matchers, as there: tokens with `normalized: false` are searched in the raw text, the
//! others in each normalized piece between those. `single_word` is not implemented (the loader
//! refuses it).

use super::cache::FxHashMap;

#[derive(Debug, Clone, Copy)]
pub struct Strip {
    pub lstrip: bool,
    pub rstrip: bool,
}

#[derive(Default)]
struct Node {
    /// (byte, child), sorted by byte.
    edges: Vec<(u8, u32)>,
    /// The token ending here.
    token: Option<u32>,
}

pub struct Matcher {
    nodes: Vec<Node>,
    strip: FxHashMap<u32, Strip>,
    /// Bytes that start a token, for `memchr` when there are at most three.
    starts: Vec<u8>,
    is_start: [bool; 256],
}

/// A part of the text: an added token (id, and the byte range it covers, widened over the
/// whitespace it strips), or a byte range of text between tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Token(u32, usize, usize),
    Text(usize, usize),
}

impl Matcher {
    /// `None` when there are no patterns; `Err` for a duplicate pattern, on which the
    /// `tokenizers` crate fails too.
    pub fn new(patterns: Vec<(String, u32, Strip)>) -> Result<Option<Matcher>, ()> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut m = Matcher {
            nodes: vec![Node::default()],
            strip: FxHashMap::default(),
            starts: Vec::new(),
            is_start: [false; 256],
        };
        for (pattern, id, strip) in &patterns {
            let mut node = 0usize;
            for &b in pattern.as_bytes() {
                node = match m.nodes[node].edges.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => m.nodes[node].edges[i].1 as usize,
                    Err(i) => {
                        m.nodes.push(Node::default());
                        let child = m.nodes.len() - 1;
                        m.nodes[node].edges.insert(i, (b, child as u32));
                        child
                    }
                };
            }
            if node == 0 || m.nodes[node].token.is_some() {
                return Err(()); // empty or duplicate pattern
            }
            m.nodes[node].token = Some(*id);
            m.strip.insert(*id, *strip);
        }
        for &(b, _) in &m.nodes[0].edges {
            m.starts.push(b);
            m.is_start[b as usize] = true;
        }
        Ok(Some(m))
    }

    /// The next position at or after `from` where a token may start.
    #[inline]
    fn next_start(&self, text: &[u8], from: usize) -> Option<usize> {
        let hay = &text[from..];
        let found = match self.starts.as_slice() {
            [a] => memchr::memchr(*a, hay),
            [a, b] => memchr::memchr2(*a, *b, hay),
            [a, b, c] => memchr::memchr3(*a, *b, *c, hay),
            _ => hay.iter().position(|&b| self.is_start[b as usize]),
        };
        found.map(|i| from + i)
    }

    /// The longest token starting at `at`: (end, id).
    #[inline]
    fn longest_at(&self, text: &[u8], at: usize) -> Option<(usize, u32)> {
        let mut node = 0usize;
        let mut best = None;
        for (j, &b) in text[at..].iter().enumerate() {
            let edges = &self.nodes[node].edges;
            let Some(&(_, child)) = edges.iter().find(|e| e.0 == b) else { break };
            node = child as usize;
            if let Some(id) = self.nodes[node].token {
                best = Some((at + j + 1, id));
            }
        }
        best
    }

    /// Leftmost-longest, non-overlapping matches: (start, end, id).
    fn matches<'a>(&'a self, text: &'a [u8]) -> impl Iterator<Item = (usize, usize, u32)> + 'a {
        let mut from = 0;
        std::iter::from_fn(move || {
            while from < text.len() {
                let at = self.next_start(text, from)?;
                if let Some((end, id)) = self.longest_at(text, at) {
                    from = end;
                    return Some((at, end, id));
                }
                from = at + 1;
            }
            None
        })
    }

    /// Calls `emit` with the segments of `text` in order; empty text segments are skipped (the
    /// `tokenizers` crate drops empty splits).
    pub fn split(&self, text: &str, mut emit: impl FnMut(Segment)) {
        let mut start_offset = 0;
        for (m_start, m_stop, id) in self.matches(text.as_bytes()) {
            let (mut start, mut stop) = (m_start, m_stop);
            let strip = self.strip.get(&id).copied().unwrap_or(Strip { lstrip: false, rstrip: false });
            if strip.lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(start_offset);
            }
            if strip.rstrip {
                stop += text[stop..].len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            }
            if start_offset < start {
                emit(Segment::Text(start_offset, start));
            }
            emit(Segment::Token(id, start, stop));
            start_offset = stop;
        }
        if start_offset < text.len() {
            emit(Segment::Text(start_offset, text.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daachorse::{DoubleArrayAhoCorasickBuilder, MatchKind};
    use proptest::prelude::*;

    proptest! {
        /// Same matches as the automaton the `tokenizers` crate uses.
        #[test]
        fn matches_like_daachorse_leftmost_longest(
            patterns in prop::collection::hash_set("[ab<|>]{1,4}", 1..12),
            text in "[ab<|> ]{0,60}",
        ) {
            let patterns: Vec<String> = patterns.into_iter().collect();
            let no_strip = Strip { lstrip: false, rstrip: false };
            let ours = Matcher::new(patterns.iter().enumerate().map(|(i, p)| (p.clone(), i as u32, no_strip)).collect())
                .expect("distinct patterns")
                .expect("some patterns");
            let automaton = DoubleArrayAhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build_with_values(patterns.iter().enumerate().map(|(i, p)| (p.as_str(), i as u32)))
                .expect("automaton");
            let want: Vec<(usize, usize, u32)> =
                automaton.leftmost_find_iter(&text).map(|m| (m.start(), m.end(), m.value())).collect();
            let got: Vec<(usize, usize, u32)> = ours.matches(text.as_bytes()).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn strips_whitespace_around_tokens() {
        let strip = Strip { lstrip: true, rstrip: true };
        let m = Matcher::new(vec![("<|end|>".into(), 7, strip)]).expect("ok").expect("some");
        let mut segs = Vec::new();
        m.split("a  <|end|> \n b", |s| segs.push(s));
        assert_eq!(segs, vec![Segment::Text(0, 1), Segment::Token(7, 1, 13), Segment::Text(13, 14)]);
    }
}
