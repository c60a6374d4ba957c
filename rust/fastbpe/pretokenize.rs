//! Hand-written equivalents of the byte-level split regexes, emitting the same words as
//! Oniguruma's leftmost-first backtracking search (`find_iter` + `Isolated`: every match is a
//! word, and these patterns match every character, so there are no gaps).
//!
//! Supported patterns (recognised by their exact source text in `tokenizer.json`):
//! - [`Pattern::Qwen`] / [`Pattern::Llama3`]:
//!   `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,K}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//!   with K = 1 (Qwen2.5/Qwen3) or 3 (Llama 3);
//! - [`Pattern::Gpt2`]: the GPT-2 regex built into the `ByteLevel` pre-tokenizer,
//!   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
//!
//! Not handled here: normalization, added tokens (done before), the byte-to-unicode mapping (the
//! BPE works on raw bytes).

use super::classes::{class, LETTER_CLASS, NUMBER_CLASS, SPACE_CLASS};

/// The Llama 3 split regex (digits in runs of up to three).
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2.5/Qwen3 split regex (one digit per word).
pub const QWEN_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The regex of `ByteLevel { use_regex: true }`.
pub const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Qwen,
    Llama3,
    Gpt2,
}

impl Pattern {
    pub fn from_regex(regex: &str) -> Option<Pattern> {
        match regex {
            QWEN_REGEX => Some(Pattern::Qwen),
            LLAMA3_REGEX => Some(Pattern::Llama3),
            GPT2_REGEX => Some(Pattern::Gpt2),
            _ => None,
        }
    }

    /// Calls `word(start, end)` for each word of `s`, in order; the words tile `s`.
    #[inline]
    pub fn split(self, s: &str, word: impl FnMut(usize, usize)) {
        match self {
            Pattern::Qwen => split_llama_like(s, 1, word),
            Pattern::Llama3 => split_llama_like(s, 3, word),
            Pattern::Gpt2 => split_gpt2(s, word),
        }
    }
}

/// The char starting at byte `i` of `s` (which must be < `s.len()`), and its class.
#[inline(always)]
fn at(s: &str, i: usize) -> (char, u8, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        let c = b as char;
        return (c, class(c), 1);
    }
    // `i` is always a char boundary here.
    let c = s[i..].chars().next().unwrap_or('\u{FFFD}');
    (c, class(c), c.len_utf8())
}

/// Class of the char at `i`, or `None` at the end.
#[inline(always)]
fn class_at(s: &str, i: usize) -> Option<u8> {
    if i < s.len() {
        Some(at(s, i).1)
    } else {
        None
    }
}

/// End of the run of chars starting at `i` whose class satisfies `keep`.
#[inline(always)]
fn run(s: &str, mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if !keep(class(b as char)) {
                break;
            }
            i += 1;
        } else {
            let (_, cl, len) = at(s, i);
            if !keep(cl) {
                break;
            }
            i += len;
        }
    }
    i
}

#[inline(always)]
fn is_letter(cl: u8) -> bool {
    cl & LETTER_CLASS != 0
}

#[inline(always)]
fn is_number(cl: u8) -> bool {
    cl & NUMBER_CLASS != 0
}

#[inline(always)]
fn is_space(cl: u8) -> bool {
    cl & SPACE_CLASS != 0
}

/// `[^\s\p{L}\p{N}]`
#[inline(always)]
fn is_other(cl: u8) -> bool {
    cl == 0
}

/// Case-insensitive (Oniguruma case folding) match of one ASCII letter: `s` also matches
/// U+017F LATIN SMALL LETTER LONG S; `k` (unused here) would match the Kelvin sign.
#[inline(always)]
fn folds_to(c: char, lower: u8) -> bool {
    (c.is_ascii() && (c as u8).to_ascii_lowercase() == lower) || (lower == b's' && c == '\u{17F}')
}

/// Length of `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i` (where `s[i] == '\''`), or 0.
fn contraction_ci(s: &str, i: usize) -> usize {
    let j = i + 1;
    if j >= s.len() {
        return 0;
    }
    let (c1, _, l1) = at(s, j);
    if folds_to(c1, b's') || folds_to(c1, b't') || folds_to(c1, b'm') || folds_to(c1, b'd') {
        return 1 + l1;
    }
    let k = j + l1;
    if k >= s.len() {
        return 0;
    }
    let (c2, _, l2) = at(s, k);
    let two = (folds_to(c1, b'r') && folds_to(c2, b'e'))
        || (folds_to(c1, b'v') && folds_to(c2, b'e'))
        || (folds_to(c1, b'l') && folds_to(c2, b'l'));
    if two {
        1 + l1 + l2
    } else {
        0
    }
}

/// Length of `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive) at `i`, or 0.
fn contraction_cs(s: &str, i: usize) -> usize {
    let rest = &s.as_bytes()[i + 1..];
    match rest {
        [b's' | b't' | b'm' | b'd', ..] => 2,
        [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => 3,
        _ => 0,
    }
}

/// Whitespace run starting at `i` for the `\s+(?!\S)|\s+` tail shared by both patterns
/// (after `\s*[\r\n]+` when `newlines`): returns the end of the word.
#[inline(always)]
fn whitespace_word(s: &str, i: usize, newlines: bool) -> usize {
    let end = run(s, i, is_space);
    if newlines {
        // `\s*[\r\n]+`: backtrack `\s*` to the last CR/LF of the run.
        if let Some(k) = s.as_bytes()[i..end].iter().rposition(|&b| b == b'\r' || b == b'\n') {
            return i + k + 1;
        }
    }
    if end == s.len() {
        return end;
    }
    // `\s+(?!\S)`: give back the last whitespace char if that leaves at least one.
    let last = s[i..end].char_indices().next_back().map_or(i, |(k, _)| i + k);
    if last > i {
        last
    } else {
        end
    }
}

fn split_llama_like(s: &str, max_digits: usize, mut word: impl FnMut(usize, usize)) {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let (c, cl, len) = at(s, i);
        let end = if c == '\'' && contraction_ci(s, i) > 0 {
            i + contraction_ci(s, i)
        } else if is_letter(cl) || (c != '\r' && c != '\n' && !is_number(cl) && class_at(s, i + len).is_some_and(is_letter)) {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`: letters, or one other character that letters follow.
            run(s, i + len, is_letter)
        } else if is_number(cl) {
            let mut j = i + len;
            let mut digits = 1;
            while digits < max_digits && j < n {
                let (_, cl2, len2) = at(s, j);
                if !is_number(cl2) {
                    break;
                }
                j += len2;
                digits += 1;
            }
            j
        } else if is_other(cl) || (c == ' ' && class_at(s, i + 1).is_some_and(is_other)) {
            let j = run(s, i + len, is_other);
            j + s.as_bytes()[j..].iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
        } else {
            whitespace_word(s, i, true)
        };
        word(i, end);
        i = end;
    }
}

fn split_gpt2(s: &str, mut word: impl FnMut(usize, usize)) {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let (c, cl, _) = at(s, i);
        // ` ?X+` for X in L, N, other: the optional space takes the class of what follows.
        let (start_class, body) = if c == ' ' {
            match class_at(s, i + 1) {
                Some(next) if !is_space(next) => (next, i + 1),
                _ => (cl, i),
            }
        } else {
            (cl, i)
        };
        let end = if c == '\'' && contraction_cs(s, i) > 0 {
            i + contraction_cs(s, i)
        } else if is_letter(start_class) {
            run(s, body, is_letter)
        } else if is_number(start_class) {
            run(s, body, is_number)
        } else if is_other(start_class) {
            run(s, body, is_other)
        } else {
            whitespace_word(s, i, false)
        };
        word(i, end);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::utils::SysRegex;

    fn ours(p: Pattern, s: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        p.split(s, |a, b| v.push((a, b)));
        v
    }

    fn onig(re: &SysRegex, s: &str) -> Vec<(usize, usize)> {
        re.find_iter(s).collect()
    }

    const PATTERNS: [(Pattern, &str); 3] =
        [(Pattern::Qwen, QWEN_REGEX), (Pattern::Llama3, LLAMA3_REGEX), (Pattern::Gpt2, GPT2_REGEX)];

    #[test]
    fn words_match_oniguruma_on_tricky_strings() {
        let cases = [
            "Hello world",
            "  leading and trailing  ",
            "a\n\nb\r\n\r\n  c \n d",
            "it's IT'S it'S 'll 'LL 'Re 've 'ſ 'x '",
            "123456789 1234 12 x1y22z333",
            "\t\tx  \t\n y",
            "中文English混合123，标点！\n",
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}",
            "a  ",
            " ",
            "  \u{3000}x\u{3000}\u{3000}",
            "e\u{301}\u{301}x 😀👍🏽 👨‍👩‍👧 #$%^&*()\r\r\n",
            "..\n\n\n...\r\nfoo",
            "   ...",
            "x ... ",
            "٣٤٥ ⅷ ½",
        ];
        for (p, src) in PATTERNS {
            let re = SysRegex::new(src).expect("regex");
            for s in cases {
                assert_eq!(ours(p, s), onig(&re, s), "{p:?} on {s:?}");
            }
        }
    }

    /// Every code point in contexts that exercise each alternative.
    #[test]
    fn words_match_oniguruma_for_every_code_point() {
        let res: Vec<(Pattern, SysRegex)> =
            PATTERNS.iter().map(|(p, src)| (*p, SysRegex::new(src).expect("regex"))).collect();
        for cp in 0..0x110000u32 {
            let Some(c) = char::from_u32(cp) else { continue };
            let s = format!("'{c}e{c} {c}a{c}1{c}{c}\n{c}  {c} '{c}l");
            for (p, re) in &res {
                assert_eq!(ours(*p, &s), onig(re, &s), "{p:?} on U+{cp:04X} in {s:?}");
            }
        }
    }
}
