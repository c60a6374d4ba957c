//! `assemble_units`: the units of a Ray run → one dataset (rust/assemble.rs), for
//! `fastsft/ray_assemble.py`. A child module of `py.rs`.

use pyo3::prelude::*;

use crate::assemble::{assemble, Assembly};
use crate::error::Error;

/// `assembly`: the JSON of [`Assembly`]. Writes the dataset at its `output` (atomically) and
/// returns its counts as JSON, by the names of the manifest's `counts`.
#[pyfunction]
pub fn assemble_units(py: Python<'_>, assembly: &str) -> PyResult<String> {
    let assembly: Assembly = serde_json::from_str(assembly).map_err(|e| Error::config(format!("assemble_units: {e}")))?;
    let counts = py.detach(|| assemble(&assembly))?;
    Ok(serde_json::to_string(&counts).unwrap_or_default())
}
