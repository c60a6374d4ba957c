//! fastsft's Rust core: chat corpora → assistant-masked token arrays (DESIGN §1).
//!
//! `source` → `schema` → `template` → `encode` → `writer`, driven by `pipeline`; `pack` packs
//! sample lengths for training. Pure Rust: only the `py*.rs` modules (behind the `python` feature) know pyo3,
//! so `cargo test` needs no Python.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The API other Rust code (tests/, examples/, other engines) builds on.
pub mod assemble;
pub mod conversation;
pub mod decode;
pub mod encode;
pub mod encoder_reuse;
pub mod error;
pub mod fastbpe;
pub mod hashing;
pub mod options;
pub mod pack;
pub mod pipeline;
pub mod reject;
pub mod schema;
pub mod source;
pub mod template;
pub mod tokenizer;
pub mod tokenizer_cache;
mod tokenizer_cache_prune;
mod tokenizer_probe;

// Internal to the pipeline and the bindings.
mod columnar;
mod exact_json;
mod manifest;
mod npy_reader;
mod progress;
mod reject_policy;
mod writer;

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_errors;
#[cfg(feature = "python")]
mod py_reader;

pub use encode::{EncodeOptions, Encoded, Encoder, TrainOn, Truncation};
pub use error::{Error, Result};
pub use pipeline::{run, PrepConfig, Summary};
pub use schema::{Format, SchemaOptions};
