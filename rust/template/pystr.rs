//! Python's whitespace, where minijinja uses Rust's. Jinja2 runs `str.strip()`/`str.split()`,
//! whose `isspace()` also counts U+001C..U+001F (the ASCII information separators) as whitespace;
//! Rust's `char::is_whitespace` does not. A reply ending in U+001F would otherwise render (and
//! tokenize) differently from `transformers` under templates that `trim` (Llama 3, Gemma).

use minijinja::value::{from_args, Value};
use minijinja::{Error, State};

pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The `trim` filter: `str.strip(chars)`.
pub fn trim(value: String, chars: Option<String>) -> String {
    match chars {
        Some(chars) => value.trim_matches(|c| chars.contains(c)).to_string(),
        None => value.trim_matches(is_python_space).to_string(),
    }
}

/// `strip`/`lstrip`/`rstrip`/`split` without arguments with Python's whitespace; everything else
/// goes to minijinja-contrib's Python compatibility layer.
pub fn unknown_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let (Some(s), true) = (value.as_str(), args.is_empty()) {
        match method {
            "strip" => return Ok(Value::from(s.trim_matches(is_python_space))),
            "lstrip" => return Ok(Value::from(s.trim_start_matches(is_python_space))),
            "rstrip" => return Ok(Value::from(s.trim_end_matches(is_python_space))),
            "split" => {
                let parts: Vec<Value> = s.split(is_python_space).filter(|p| !p.is_empty()).map(Value::from).collect();
                return Ok(Value::from(parts));
            }
            _ => {}
        }
    }
    if method == "strip" || method == "lstrip" || method == "rstrip" {
        if let Some(s) = value.as_str() {
            let (chars,): (Option<&str>,) = from_args(args)?;
            let set = |c: char| chars.map_or_else(|| is_python_space(c), |chars| chars.contains(c));
            return Ok(Value::from(match method {
                "strip" => s.trim_matches(set),
                "lstrip" => s.trim_start_matches(set),
                _ => s.trim_end_matches(set),
            }));
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_like_python() {
        // "\x1f a \x1c".strip() == "a" in Python; Rust's trim keeps the separators.
        assert_eq!(trim("\u{1f} a \u{1c}".into(), None), "a");
        assert_eq!(trim("xxaxx".into(), Some("x".into())), "a");
    }
}
