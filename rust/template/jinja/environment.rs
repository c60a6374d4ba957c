//! The Python behaviours transformers' Jinja environment has and minijinja lacks: `str()` of
//! floats, `raise_exception`, Python's `json.dumps` as `tojson`, and template errors as rejects.

use minijinja::value::{Kwargs, Value};
use minijinja::ErrorKind;

use crate::schema::{Reject, RejectReason};
use crate::template::pyjson::{python_float_repr, to_python_json, PyJsonOptions};

/// Python's `str()` for floats (`1e+16`, `1.0`); minijinja's own `string` otherwise.
pub(super) fn python_string(state: &minijinja::State, value: &Value) -> std::result::Result<Value, minijinja::Error> {
    if value.kind() == minijinja::value::ValueKind::Number && !value.is_integer() {
        if let Ok(float) = f64::try_from(value.clone()) {
            return Ok(Value::from(python_float_repr(float)));
        }
    }
    minijinja::filters::string(state, value)
}

pub(super) fn template_reject(error: minijinja::Error) -> Reject {
    let detail = match error.kind() {
        ErrorKind::InvalidOperation if error.detail().is_some() => error.detail().unwrap_or_default().to_string(),
        _ => format!("{error:#}"),
    };
    Reject::new(RejectReason::TemplateError, detail)
}

pub(super) fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_usize() {
            Some(n) => " ".repeat(n),
            None => v.as_str().unwrap_or_default().to_string(),
        }),
    };
    let mut options = PyJsonOptions::with_indent(indent);
    options.ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    options.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    if let Some(separators) = kwargs.get::<Option<Vec<String>>>("separators")? {
        if let [item, key] = separators.as_slice() {
            options.item_separator = item.clone();
            options.key_separator = key.clone();
        }
    }
    kwargs.assert_all_used()?;
    to_python_json(value, &options)
        .map(Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}
