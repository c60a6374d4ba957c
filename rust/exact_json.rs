//! JSON as Python's `json.loads` reads it, for everything that reaches a chat template.
//!
//! `serde_json` (without `arbitrary_precision`, which cannot be switched on for one crate only
//! and breaks the `tokenizers` crate's untagged enums) reads an integer beyond 64 bits as a
//! float: `123456789012345678901234567890` would be trained as `1.2345678901234568e+29`. Python
//! keeps it exact. Here such integers are found in the raw text first (a lexer that skips
//! strings), rewritten as strings carrying a reserved prefix, and turned back into exact 128-bit
//! integers when the value is handed to the template ([`to_template`]); beyond 128 bits the record
//! is rejected, never rounded. Floats need no such care: `float_roundtrip` parses them exactly
//! as Python does, and the template side prints them with Python's `repr`.
//!
//! The fast path (no integer over 19 digits in the text, the overwhelming case) is one extra
//! scan over bytes that are already in cache.

use serde_json::Value;

use crate::schema::{Reject, RejectReason};

/// Marks a string that stands for a big integer. A noncharacter, reserved like the markers in
/// `template` (records that contain it are rejected).
pub const BIG_INT_MARK: char = '\u{FDD2}';

/// Parses `bytes` as JSON; integers too large for `u64`/`i64` come back as marked strings.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    match big_integers(bytes) {
        None => serde_json::from_slice(bytes),
        Some(spans) => {
            let mut rewritten = Vec::with_capacity(bytes.len() + spans.len() * 8);
            let mut at = 0;
            for (start, end) in spans {
                rewritten.extend_from_slice(&bytes[at..start]);
                rewritten.push(b'"');
                let mut mark = [0u8; 4];
                rewritten.extend_from_slice(BIG_INT_MARK.encode_utf8(&mut mark).as_bytes());
                rewritten.extend_from_slice(&bytes[start..end]);
                rewritten.push(b'"');
                at = end;
            }
            rewritten.extend_from_slice(&bytes[at..]);
            serde_json::from_slice(&rewritten)
        }
    }
}

/// Parses a JSON text held in a string (tool-call `arguments` given as a string).
pub fn parse_str(text: &str) -> Result<Value, serde_json::Error> {
    parse(text.as_bytes())
}

/// True when the raw text holds the reserved mark, literally or as a `\ufdd2` escape: such a
/// record cannot be told apart from one whose big integers were marked, so it is rejected.
pub fn holds_mark(bytes: &[u8]) -> bool {
    let mut mark = [0u8; 4];
    let literal = BIG_INT_MARK.encode_utf8(&mut mark).as_bytes();
    memchr::memmem::find(bytes, literal).is_some() || contains_escape(bytes)
}

fn contains_escape(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"\\u").any(|at| bytes.get(at + 2..at + 6).is_some_and(|hex| hex.eq_ignore_ascii_case(b"fdd2")))
}

/// True when the text holds 19 or more digits in a row anywhere: the only texts that can hold an
/// integer beyond 64 bits. A tight loop that keeps the common case to one cheap pass (the full
/// lexer below cost ~5% of a whole `prep` run when it ran on every record).
fn has_long_digit_run(bytes: &[u8]) -> bool {
    let mut run = 0u32;
    for &b in bytes {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 19 {
            return true;
        }
    }
    false
}

/// Byte ranges of integer literals (outside strings) whose value does not fit 64 bits.
fn big_integers(bytes: &[u8]) -> Option<Vec<(usize, usize)>> {
    if !has_long_digit_run(bytes) {
        return None;
    }
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let literal = &bytes[start..i];
                let digits = literal.iter().filter(|b| b.is_ascii_digit()).count();
                let integer = literal.iter().all(|b| *b == b'-' || b.is_ascii_digit());
                // u64::MAX has 20 digits: anything with 20 or more may overflow; check exactly.
                if integer && digits >= 19 {
                    let text = std::str::from_utf8(literal).unwrap_or("");
                    if text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                        spans.push((start, i));
                    }
                }
            }
            _ => i += 1,
        }
    }
    (!spans.is_empty()).then_some(spans)
}

/// A JSON value as the template sees it: objects keep their key order, marked big integers
/// become exact integers. Fails on an integer beyond 128 bits.
pub fn to_template(value: &Value) -> Result<minijinja::Value, Reject> {
    Ok(match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => match s.strip_prefix(BIG_INT_MARK) {
            Some(digits) => big_integer(digits)?,
            None => minijinja::Value::from(s.as_str()),
        },
        Value::Array(items) => minijinja::Value::from(items.iter().map(to_template).collect::<Result<Vec<_>, _>>()?),
        Value::Object(map) => {
            let entries = map.iter().map(|(k, v)| Ok((k.clone(), to_template(v)?))).collect::<Result<Vec<_>, Reject>>()?;
            minijinja::Value::from_iter(entries)
        }
    })
}

fn big_integer(digits: &str) -> Result<minijinja::Value, Reject> {
    if let Ok(i) = digits.parse::<i128>() {
        return Ok(minijinja::Value::from(i));
    }
    if let Ok(u) = digits.parse::<u128>() {
        return Ok(minijinja::Value::from(u));
    }
    Err(Reject::new(
        RejectReason::WrongType,
        format!("the integer {digits} does not fit 128 bits; fastsft passes numbers to the template exactly or not at all"),
    ))
}

/// The number a marked string stands for, as text (for tests' checks).
#[cfg(test)]
pub fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.strip_prefix(BIG_INT_MARK).unwrap_or(s).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_integers_stay_exact_and_small_numbers_untouched() {
        let value = parse(br#"{"a": 123456789012345678901234567890, "b": -99999999999999999999, "c": 1.0, "d": 1e16, "e": "9999999999999999999999", "f": 18446744073709551615}"#).unwrap();
        let t = to_template(&value).unwrap();
        assert_eq!(t.get_attr("a").unwrap().to_string(), "123456789012345678901234567890");
        assert_eq!(t.get_attr("b").unwrap().to_string(), "-99999999999999999999");
        assert_eq!(t.get_attr("e").unwrap().to_string(), "9999999999999999999999");
        assert_eq!(t.get_attr("f").unwrap().to_string(), "18446744073709551615");
        assert!(value["c"].is_f64() && value["d"].is_f64());
    }

    #[test]
    fn integers_beyond_128_bits_are_refused() {
        let value = parse(br#"[1234567890123456789012345678901234567890123]"#).unwrap();
        assert_eq!(to_template(&value).unwrap_err().reason, RejectReason::WrongType);
    }

    #[test]
    fn strings_with_digits_and_escapes_are_skipped() {
        assert_eq!(big_integers(br#"{"x\"123456789012345678901234": "99999999999999999999999"}"#), None);
        assert!(holds_mark("\"\u{FDD2}\"".as_bytes()));
        assert!(holds_mark(br#""\uFDD2""#));
        assert!(!holds_mark(br#""\uFDD1""#));
    }
}
