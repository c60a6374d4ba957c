//! `tojson` as `transformers` defines it: Python's `json.dumps(x, ensure_ascii=False, indent=None,
//! separators=None, sort_keys=False)`. minijinja's built-in `tojson` writes compact separators and
//! HTML-escapes `<>&'`, which changes the rendered text (and so the token ids) of every template
//! that prints tool schemas or tool-call arguments.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

#[derive(Debug, Clone)]
pub struct PyJsonOptions {
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub ensure_ascii: bool,
    pub sort_keys: bool,
}

impl Default for PyJsonOptions {
    fn default() -> Self {
        PyJsonOptions { indent: None, item_separator: ", ".into(), key_separator: ": ".into(), ensure_ascii: false, sort_keys: false }
    }
}

impl PyJsonOptions {
    /// Python's defaults: `(', ', ': ')` without indent, `(',', ': ')` with one.
    pub fn with_indent(indent: Option<String>) -> Self {
        let item_separator = if indent.is_some() { "," } else { ", " };
        PyJsonOptions { indent, item_separator: item_separator.into(), ..Default::default() }
    }
}

struct PyFormatter<'a> {
    options: &'a PyJsonOptions,
    depth: usize,
    has_value: bool,
}

impl PyFormatter<'_> {
    fn newline_indent<W: ?Sized + Write>(&self, writer: &mut W) -> io::Result<()> {
        if let Some(indent) = &self.options.indent {
            writer.write_all(b"\n")?;
            for _ in 0..self.depth {
                writer.write_all(indent.as_bytes())?;
            }
        }
        Ok(())
    }
}

impl Formatter for PyFormatter<'_> {
    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline_indent(writer)?;
        }
        self.has_value = true;
        writer.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if !first {
            writer.write_all(self.options.item_separator.as_bytes())?;
        }
        self.newline_indent(writer)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline_indent(writer)?;
        }
        self.has_value = true;
        writer.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if !first {
            writer.write_all(self.options.item_separator.as_bytes())?;
        }
        self.newline_indent(writer)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(self.options.key_separator.as_bytes())
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, value as f64)
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        if !self.options.ensure_ascii || fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        // Python writes other control characters as lowercase \u00XX, as serde_json does.
        serde_json::ser::CompactFormatter.write_char_escape(writer, escape)
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents in
/// [-4, 16), scientific (`1e-05`, `1.5e+16`) otherwise; `NaN`/`Infinity` as `json.dumps` writes them.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let sci = format!("{value:e}"); // e.g. "-1.5e-7", shortest round-trip digits
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{text}")
    } else {
        let mantissa = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

pub fn to_python_json<T: Serialize + ?Sized>(value: &T, options: &PyJsonOptions) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    let formatter = PyFormatter { options, depth: 0, has_value: false };
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if options.sort_keys {
        // Round-trip through serde_json's sorted map to sort keys at every level.
        let sorted: serde_json::Value = serde_json::to_value(value)?;
        let sorted = sort_value(sorted);
        sorted.serialize(&mut serializer)?;
    } else {
        value.serialize(&mut serializer)?;
    }
    Ok(String::from_utf8(out).unwrap_or_default())
}

fn sort_value(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort_value(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sort_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_json_dumps() {
        let value: serde_json::Value = serde_json::from_str(r#"{"b": [1, 2.5, "x<y>&'"], "a": {}, "c": [], "d": null, "中": true}"#).unwrap();
        // json.dumps(v, ensure_ascii=False)
        assert_eq!(to_python_json(&value, &PyJsonOptions::default()).unwrap(), r#"{"b": [1, 2.5, "x<y>&'"], "a": {}, "c": [], "d": null, "中": true}"#);
        // json.dumps(v, ensure_ascii=False, indent=2)
        let indented = to_python_json(&value, &PyJsonOptions::with_indent(Some("  ".into()))).unwrap();
        assert_eq!(indented, "{\n  \"b\": [\n    1,\n    2.5,\n    \"x<y>&'\"\n  ],\n  \"a\": {},\n  \"c\": [],\n  \"d\": null,\n  \"中\": true\n}");
        let ascii = PyJsonOptions { ensure_ascii: true, ..Default::default() };
        assert_eq!(to_python_json(&serde_json::json!("中😀\n"), &ascii).unwrap(), r#""\u4e2d\ud83d\ude00\n""#);
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [(1.0, "1.0"), (0.1, "0.1"), (1e-5, "1e-05"), (1e16, "1e+16"), (123.456, "123.456"), (-0.0001, "-0.0001"), (1.5e300, "1.5e+300"), (1234567890123456.0, "1234567890123456.0")];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected);
        }
    }
}
