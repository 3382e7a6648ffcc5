//! `Workflow` for Python: load, convert, validate and set parameters. Glue over `crate::workflow`.
use super::convert::{from_py, ser_to_py, to_py};
use super::errors::IntoPyResult;
use crate::error::{Error, ErrorCode};
use crate::workflow::{self, load::Workflow as Core, params, ObjectInfo, Prompt};
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;

fn invalid(message: String) -> Error {
    Error::new(ErrorCode::InvalidWorkflow, message)
}

/// A workflow's JSON from a `Workflow`, a dict, a JSON string, or a path to a `.json` file or a ComfyUI `.png`.
pub fn workflow_json(py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(wf) = source.cast::<PyWorkflow>() {
        return Ok(wf.get().json());
    }
    // A list is a WanGP task list; a ComfyUI service refuses it with a clear message.
    if source.is_instance_of::<PyDict>() || source.is_instance_of::<pyo3::types::PyList>() {
        return from_py(source);
    }
    if let Ok(s) = source.cast::<PyString>() {
        let text = s.to_str()?;
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text)
                .map_err(|e| invalid(format!("the workflow is not valid JSON: {e}")))
                .py(py);
        }
    }
    let path: PathBuf = source.extract().map_err(|_| {
        PyTypeError::new_err("a workflow is a Workflow, a dict, a JSON string or a path to a .json or .png file")
    })?;
    let loaded = py.detach(|| workflow::load_file(&path)).py(py)?;
    Ok(core_json(&loaded))
}

fn core_json(wf: &Core) -> Value {
    match wf {
        Core::Api(p) => p.to_value(),
        Core::Ui(ui) => ui.raw.clone(),
    }
}

/// `/object_info` from a dict (e.g. `hub.object_info(name)`) or a `.json` / `.json.gz` file.
fn object_info(py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<ObjectInfo> {
    let value = if source.is_instance_of::<PyDict>() {
        from_py(source)?
    } else {
        let path: PathBuf = source
            .extract()
            .map_err(|_| PyTypeError::new_err("object_info is a dict or a path to a .json(.gz) file"))?;
        py.detach(|| read_json(&path)).py(py)?
    };
    ObjectInfo::from_value(&value).py(py)
}

fn read_json(path: &std::path::Path) -> Result<Value, Error> {
    let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .map_err(|e| invalid(format!("{} is not gzip JSON: {e}", path.display())))?;
        out
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    serde_json::from_str(&text).map_err(|e| invalid(format!("{} is not JSON: {e}", path.display())))
}

/// A ComfyUI workflow in API or UI format.
///
/// `Workflow.load(source)` detects the format. A UI-format workflow is turned into the API format with
/// `convert(object_info)` (the server's node list: `hub.object_info(name)` or a saved file); `hub.submit` also
/// converts by itself. `set()` and `parameters()` use selectors: `3.seed`, `KSampler.steps`,
/// `"Positive Prompt".text` or roles such as `positive.text`, `sampler.seed`, `latent.width`, `frames.length`.
#[pyclass(module = "director_link._native", name = "Workflow", frozen)]
pub struct PyWorkflow {
    inner: Mutex<Core>,
    warnings: Vec<String>,
}

impl PyWorkflow {
    fn json(&self) -> Value {
        core_json(&self.inner.lock())
    }

    fn with_api<T>(&self, f: impl FnOnce(&mut Prompt) -> Result<T, Error>) -> Result<T, Error> {
        match &mut *self.inner.lock() {
            Core::Api(p) => f(p),
            Core::Ui(_) => Err(invalid(
                "this is a UI-format workflow: convert it first (workflow.convert(hub.object_info(name)))".into(),
            )),
        }
    }
}

#[pymethods]
impl PyWorkflow {
    /// Loads a workflow from a dict, a JSON string, or a path to a `.json` file or a ComfyUI `.png`.
    #[staticmethod]
    fn load(py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<PyWorkflow> {
        let json = workflow_json(py, source)?;
        let core = workflow::prepare::load(json).py(py)?;
        Ok(PyWorkflow {
            inner: Mutex::new(core),
            warnings: Vec::new(),
        })
    }

    /// `"api"` or `"ui"`.
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.lock().format()
    }

    /// What the conversion could not reproduce exactly (empty for a workflow that was not converted).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// The API-format version (UI format converted like ComfyUI's frontend does), as a new `Workflow`.
    fn convert(&self, py: Python<'_>, object_info: &Bound<'_, PyAny>) -> PyResult<PyWorkflow> {
        let info = self::object_info(py, object_info)?;
        let conversion = workflow::to_api(&self.inner.lock(), &info, &workflow::ConvertOptions::default());
        let mut warnings: Vec<String> = conversion.warnings.iter().map(|w| w.message.clone()).collect();
        if !conversion.unknown_classes.is_empty() {
            warnings.push(format!("unknown node types: {}", conversion.unknown_classes.join(", ")));
        }
        Ok(PyWorkflow {
            inner: Mutex::new(Core::Api(conversion.prompt)),
            warnings,
        })
    }

    /// Checks the workflow against a node list like the server would; returns the problems (empty when valid),
    /// each a dict with severity, code, node_id, class_type, input, message, suggestion.
    fn validate(&self, py: Python<'_>, object_info: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let info = self::object_info(py, object_info)?;
        let report = self.with_api(|p| Ok(workflow::validate(p, &info))).py(py)?;
        ser_to_py(py, &report.problems)
    }

    /// Sets an input by selector (type- and range-checked when `object_info` is given); returns `"<id>.<input>"`.
    #[pyo3(signature = (selector, value, object_info=None))]
    fn set(
        &self,
        py: Python<'_>,
        selector: &str,
        value: &Bound<'_, PyAny>,
        object_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let info = object_info.map(|o| self::object_info(py, o)).transpose()?;
        let value = from_py(value)?;
        let target = self
            .with_api(|p| params::set(p, info.as_ref(), selector, value))
            .py(py)?;
        Ok(format!("{}.{}", target.node_id, target.input))
    }

    /// The value an input selector points at (None for a linked input).
    fn get(&self, py: Python<'_>, selector: &str) -> PyResult<Py<PyAny>> {
        let (_, value) = self.with_api(|p| params::get(p, selector)).py(py)?;
        to_py(py, &value.unwrap_or(Value::Null))
    }

    /// Every settable input: node_id, class_type, title, input, input_type, min/max/step, options, default, value,
    /// selector. What a UI builds its parameter panel from.
    #[pyo3(signature = (object_info=None))]
    fn parameters(&self, py: Python<'_>, object_info: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let info = object_info.map(|o| self::object_info(py, o)).transpose()?;
        let list = self.with_api(|p| Ok(params::parameters(p, info.as_ref()))).py(py)?;
        ser_to_py(py, &list)
    }

    /// The workflow as JSON-ready dict (API prompt, or the UI file as loaded).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.json())
    }

    fn __repr__(&self) -> String {
        let core = self.inner.lock();
        let nodes = match &*core {
            Core::Api(p) => p.nodes.len(),
            Core::Ui(ui) => ui.graph.nodes.len(),
        };
        format!("<Workflow {} format, {nodes} nodes>", core.format())
    }
}
