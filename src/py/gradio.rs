//! `GradioCall` for Python: what to call on a Gradio app. Converted to the core's call in `Hub.submit`.
use super::convert::{from_py, to_py};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A call of a Gradio app's endpoint: `api_name` ("/generate_video" or "generate_video") or `fn_index` (for events
/// without a name, e.g. AudioLDM v1), and one input value per input component. A `{"path": "/local/file"}` input
/// (see `director_link.gradio_file`) is uploaded first. `session_hash=None` shares the service's session, so
/// `gr.State` carries over between calls (RVC's load-voice-then-convert).
#[pyclass(module = "director_link._native", frozen)]
pub struct GradioCall {
    #[pyo3(get)]
    pub api_name: Option<String>,
    #[pyo3(get)]
    pub fn_index: Option<u64>,
    #[pyo3(get)]
    pub inputs: Py<PyAny>,
    #[pyo3(get)]
    pub session_hash: Option<String>,
}

#[pymethods]
impl GradioCall {
    #[new]
    #[pyo3(signature = (api_name=None, fn_index=None, inputs=None, *, session_hash=None))]
    fn new(
        py: Python<'_>,
        api_name: Option<String>,
        fn_index: Option<u64>,
        inputs: Option<&Bound<'_, PyAny>>,
        session_hash: Option<String>,
    ) -> PyResult<GradioCall> {
        if api_name.as_deref().is_none_or(|n| n.trim().is_empty()) && fn_index.is_none() {
            return Err(PyValueError::new_err("GradioCall needs api_name or fn_index"));
        }
        let value = match inputs {
            Some(i) => from_py(i)?,
            None => serde_json::Value::Array(Vec::new()),
        };
        if !value.is_array() {
            return Err(PyValueError::new_err(
                "inputs must be a list (one value per input component)",
            ));
        }
        Ok(GradioCall {
            api_name,
            fn_index,
            inputs: to_py(py, &value)?,
            session_hash,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let inputs = self.inputs.bind(py).repr().map(|r| r.to_string()).unwrap_or_default();
        format!(
            "GradioCall(api_name={:?}, fn_index={:?}, inputs={inputs})",
            self.api_name, self.fn_index
        )
    }
}

impl GradioCall {
    pub fn to_core(&self, py: Python<'_>) -> PyResult<crate::gradio::GradioCall> {
        let inputs = match from_py(self.inputs.bind(py))? {
            serde_json::Value::Array(a) => a,
            _ => return Err(PyValueError::new_err("inputs must be a list")),
        };
        Ok(crate::gradio::GradioCall {
            api_name: self.api_name.clone(),
            fn_index: self.fn_index,
            inputs,
            session_hash: self.session_hash.clone(),
        })
    }
}
