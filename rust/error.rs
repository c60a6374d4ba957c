//! The one error type of the Rust core: what failed, and where (file, line).
//!
//! Errors stop a run (an unreadable file, a bad tokenizer, an existing output). Problems with a
//! single record are not errors: they are [`crate::schema::Reject`]s, counted and written to
//! `rejects.jsonl`. No pyo3 here; `py.rs` maps each variant to a Python exception.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not found")]
    NotFound { path: PathBuf },

    #[error("{path}: cannot be read to the end ({detail}); the file is truncated or corrupt")]
    Corrupt { path: PathBuf, detail: String },

    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },

    #[error("{path}: {detail}")]
    Tokenizer { path: PathBuf, detail: String },

    /// `template`: the template's file (or the model directory's file it came from), when known.
    #[error("chat template: {detail}")]
    Template { detail: String, template: Option<String> },

    #[error("{path} already exists; pass --overwrite to replace it")]
    OutputExists { path: PathBuf },

    #[error("{detail}")]
    Config { detail: String },

    #[error("{file}:{line}: {reason}: {detail} (--strict stops at the first rejected record)")]
    Strict {
        file: String,
        line: u64,
        reason: &'static str,
        detail: String,
    },

    /// `counts`: rejects by reason; `read`: records read.
    #[error("{detail}")]
    TooManyRejects { detail: String, counts: std::collections::BTreeMap<String, u64>, read: u64 },

    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }

    pub fn config(detail: impl Into<String>) -> Self {
        Error::Config { detail: detail.into() }
    }

    pub fn template(detail: impl Into<String>) -> Self {
        Error::Template { detail: detail.into(), template: None }
    }
}
