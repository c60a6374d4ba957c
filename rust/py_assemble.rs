//! The assembly of a Ray run's units into one dataset (rust/assemble.rs), for
//! `fastsft/ray_assemble.py`: at once (`assemble_units`), or unit by unit as they finish
//! (`UnitAssembler`). A child module of `py.rs`.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::assemble::{assemble, Assembler, Assembly};
use crate::error::Error;

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::config(format!("{what}: {e}")))
}

/// `assembly`: the JSON of [`Assembly`]. Writes the dataset at its `output` (atomically) and
/// returns its counts as JSON, by the names of the manifest's `counts`.
#[pyfunction]
pub fn assemble_units(py: Python<'_>, assembly: &str) -> PyResult<String> {
    let assembly: Assembly = from_json("assemble_units", assembly)?;
    let counts = py.detach(|| assemble(assembly))?;
    Ok(serde_json::to_string(&counts).unwrap_or_default())
}

/// [`Assembler`]: created with the run's plan (the JSON of [`Assembly`]; its `report` is
/// ignored), given each unit as it finishes (`add`), then `finish(report)`. Dropped or
/// `abandon`ed before `finish`, it leaves nothing at the output.
#[pyclass(module = "fastsft._core")]
pub struct UnitAssembler {
    assembler: Mutex<Option<Assembler>>,
}

impl UnitAssembler {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Option<Assembler>) -> Result<T, Error> + Send) -> PyResult<T>
    where
        T: Send,
    {
        let mut guard = self.assembler.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut *guard;
        Ok(py.detach(|| f(slot))?)
    }
}

fn finished() -> Error {
    Error::config("this assembly is already finished or abandoned")
}

#[pymethods]
impl UnitAssembler {
    #[new]
    fn new(py: Python<'_>, assembly: &str) -> PyResult<Self> {
        let assembly: Assembly = from_json("UnitAssembler", assembly)?;
        let assembler = py.detach(|| Assembler::new(assembly))?;
        Ok(UnitAssembler { assembler: Mutex::new(Some(assembler)) })
    }

    /// Unit `index` (of the plan's `units`) is finished; `rejected_only`: the JSON of its
    /// counts when every record of it was rejected.
    #[pyo3(signature = (index, rejected_only=None))]
    fn add(&self, py: Python<'_>, index: usize, rejected_only: Option<&str>) -> PyResult<()> {
        let rejected_only: Option<serde_json::Value> = rejected_only.map(|t| from_json("rejected_only", t)).transpose()?;
        self.with(py, |slot| slot.as_mut().ok_or_else(finished)?.add(index, rejected_only))
    }

    /// Writes the manifest and `report` (JSON) and puts the dataset in place; its counts as JSON.
    fn finish(&self, py: Python<'_>, report: &str) -> PyResult<String> {
        let report: serde_json::Map<String, serde_json::Value> = from_json("report", report)?;
        let counts = self.with(py, |slot| slot.take().ok_or_else(finished)?.finish(report))?;
        Ok(serde_json::to_string(&counts).unwrap_or_default())
    }

    /// Removes what was written (also done when the object is dropped unfinished).
    fn abandon(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |slot| {
            drop(slot.take());
            Ok(())
        })
    }
}
