//! Each [`Error`] variant raised as its own class of `fastsft.errors`, with the attributes a caller
//! acts on (a strict reject's file, line and reason; a reject-fraction failure's counts).
//!
//! The classes are defined once, in Python (`python/fastsft/errors.py`), because they also derive
//! from built-in exceptions (`FileNotFoundError`, `ValueError`) that a pyo3 `create_exception!`
//! class cannot combine. [`VARIANT_CLASSES`] is the table `tests/test_errors.py` checks.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::Error;

/// Every variant → the `fastsft.errors` class it is raised as (`KeyboardInterrupt` for Ctrl-C).
pub const VARIANT_CLASSES: &[(&str, &str)] = &[
    ("Io", "FileAccessError"),
    ("NotFound", "InputNotFoundError"),
    ("Corrupt", "CorruptInputError"),
    ("BadFile", "InputError"),
    ("Tokenizer", "TokenizerError"),
    ("Template", "TemplateError"),
    ("OutputExists", "OutputExistsError"),
    ("Config", "UsageError"),
    ("Strict", "StrictRejectError"),
    ("TooManyRejects", "TooManyRejectsError"),
    ("Interrupted", "KeyboardInterrupt"),
];

/// The name of a variant, as [`VARIANT_CLASSES`] lists it.
fn variant_name(error: &Error) -> &'static str {
    match error {
        Error::Io { .. } => "Io",
        Error::NotFound { .. } => "NotFound",
        Error::Corrupt { .. } => "Corrupt",
        Error::BadFile { .. } => "BadFile",
        Error::Tokenizer { .. } => "Tokenizer",
        Error::Template { .. } => "Template",
        Error::OutputExists { .. } => "OutputExists",
        Error::Config { .. } => "Config",
        Error::Strict { .. } => "Strict",
        Error::TooManyRejects { .. } => "TooManyRejects",
        Error::Interrupted => "Interrupted",
    }
}

fn class_of(error: &Error) -> &'static str {
    let name = variant_name(error);
    VARIANT_CLASSES.iter().find(|(variant, _)| *variant == name).map_or("FastSFTError", |(_, class)| class)
}

/// The keyword arguments of the class's constructor beyond the message.
fn attributes<'py>(py: Python<'py>, error: &Error) -> PyResult<Option<Bound<'py, PyDict>>> {
    let kwargs = PyDict::new(py);
    match error {
        Error::Strict { file, line, reason, detail } => {
            kwargs.set_item("file", file)?;
            kwargs.set_item("line", line)?;
            kwargs.set_item("reason", reason)?;
            kwargs.set_item("detail", detail)?;
        }
        Error::TooManyRejects { counts, read, .. } => {
            kwargs.set_item("counts", counts.clone())?;
            kwargs.set_item("read", read)?;
        }
        Error::Template { template, .. } => kwargs.set_item("template", template)?,
        _ => return Ok(None),
    }
    Ok(Some(kwargs))
}

/// An instance of `fastsft.errors.<class>(message, **kwargs)`.
pub fn new_error(py: Python<'_>, class: &str, message: String, kwargs: Option<&Bound<'_, PyDict>>) -> PyErr {
    let made = py
        .import("fastsft.errors")
        .and_then(|module| module.getattr(class))
        .and_then(|cls| cls.call((message.clone(),), kwargs));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // Only when fastsft's Python package is broken: still one clear error, not a lost message.
        Err(import_error) => PyRuntimeError::new_err(format!("{message} (and fastsft.errors.{class} is unusable: {import_error})")),
    }
}

/// A usage error (bad option or argument) of the Python API.
pub fn usage_error(message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| new_error(py, "UsageError", message, None))
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        if matches!(error, Error::Interrupted) {
            return PyKeyboardInterrupt::new_err(message);
        }
        Python::attach(|py| match attributes(py, &error) {
            Ok(kwargs) => new_error(py, class_of(&error), message, kwargs.as_ref()),
            Err(e) => e,
        })
    }
}

/// `[(variant, class)]`, for the test that every variant maps to a class that exists.
#[pyfunction]
pub fn error_classes() -> Vec<(&'static str, &'static str)> {
    VARIANT_CLASSES.to_vec()
}

/// Raises the error a variant maps to, with a made-up message and attributes, so the test can
/// check each class and exit code end to end (no real failure is needed to reach every variant).
#[pyfunction]
pub fn raise_error_for_tests(variant: &str) -> PyResult<()> {
    let path = std::path::PathBuf::from("example.jsonl");
    let error = match variant {
        "Io" => Error::Io { path, source: std::io::Error::other("disk full") },
        "NotFound" => Error::NotFound { path },
        "Corrupt" => Error::Corrupt { path, detail: "unexpected end of gzip stream".into() },
        "BadFile" => Error::BadFile { path, detail: "not JSON".into() },
        "Tokenizer" => Error::Tokenizer { path, detail: "invalid JSON".into() },
        "Template" => Error::Template { detail: "cannot parse".into(), template: Some("chat_template.jinja".into()) },
        "OutputExists" => Error::OutputExists { path },
        "Config" => Error::config("--max-len must be positive"),
        "Strict" => Error::Strict { file: "example.jsonl".into(), line: 7, reason: "empty_conversation", detail: "no messages".into() },
        "TooManyRejects" => Error::TooManyRejects {
            detail: "3 of 4 records rejected".into(),
            counts: [("empty_conversation".to_string(), 3)].into_iter().collect(),
            read: 4,
        },
        "Interrupted" => Error::Interrupted,
        other => return Err(usage_error(format!("no variant {other:?}"))),
    };
    Err(error.into())
}
