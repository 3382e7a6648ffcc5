//! `ComfySimulator` for Python: a thin wrapper over `crate::sim::Simulator`; blocking calls release the GIL.
use super::convert::ser_to_py;
use super::errors::IntoPyResult;
use crate::sim::{SimConfig, Simulator};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// A local ComfyUI 0.3.64 simulator on 127.0.0.1 (an ephemeral port) for tests and demos.
#[pyclass(module = "director_link._native", frozen)]
pub struct ComfySimulator {
    inner: Mutex<Option<Simulator>>,
    url: String,
    port: u16,
    output_dir: String,
    input_dir: String,
}

impl ComfySimulator {
    fn with<T>(&self, f: impl FnOnce(&Simulator) -> T) -> PyResult<T> {
        match self.inner.lock().as_ref() {
            Some(sim) => Ok(f(sim)),
            None => Err(PyRuntimeError::new_err("the simulator has been closed")),
        }
    }
}

#[pymethods]
impl ComfySimulator {
    #[new]
    /// `without_nodes` / `without_models`: node classes and model files this server lacks (to make the
    /// servers of a pool differ).
    #[pyo3(signature = (time_scale=1.0, preview_size=64, *, without_nodes=None, without_models=None))]
    fn new(
        py: Python<'_>,
        time_scale: f64,
        preview_size: u32,
        without_nodes: Option<Vec<String>>,
        without_models: Option<Vec<String>>,
    ) -> PyResult<ComfySimulator> {
        if !time_scale.is_finite() || time_scale < 0.0 {
            return Err(PyValueError::new_err(format!(
                "time_scale must be a number ≥ 0, not {time_scale}"
            )));
        }
        if preview_size == 0 || preview_size > 4096 {
            return Err(PyValueError::new_err(format!(
                "preview_size must be 1..4096, not {preview_size}"
            )));
        }
        let cfg = SimConfig {
            time_scale,
            preview_size,
            without_nodes: without_nodes.unwrap_or_default(),
            without_models: without_models.unwrap_or_default(),
            ..SimConfig::default()
        };
        let sim = py.detach(|| Simulator::start(cfg)).py(py)?;
        Ok(ComfySimulator {
            url: sim.url(),
            port: sim.port(),
            output_dir: sim.output_dir().to_string_lossy().into_owned(),
            input_dir: sim.input_dir().to_string_lossy().into_owned(),
            inner: Mutex::new(Some(sim)),
        })
    }

    /// `http://127.0.0.1:PORT`.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Where SaveImage writes (a temporary folder, removed by `close()`).
    #[getter]
    fn output_dir(&self) -> String {
        self.output_dir.clone()
    }

    /// Where uploads land and LoadImage reads.
    #[getter]
    fn input_dir(&self) -> String {
        self.input_dir.clone()
    }

    /// Stops the server, joins its threads and removes its folder. Safe to call twice.
    fn close(&self, py: Python<'_>) {
        let sim = self.inner.lock().take();
        if let Some(mut sim) = sim {
            py.detach(move || sim.stop());
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// Cuts every open WebSocket (no close frame) after `n` more messages to it.
    fn drop_sockets_after(&self, n: u64) -> PyResult<()> {
        self.with(|s| s.drop_sockets_after(n))
    }

    /// Cuts every open WebSocket now (the client sees 1006).
    fn drop_sockets(&self) -> PyResult<()> {
        self.with(|s| s.drop_sockets())
    }

    /// Refuses connections for `seconds`, then listens again on the same port.
    fn refuse_connections(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let r = {
            let guard = self.inner.lock();
            let sim = guard
                .as_ref()
                .ok_or_else(|| PyRuntimeError::new_err("the simulator has been closed"))?;
            py.detach(|| sim.refuse_connections(seconds))
        };
        r.py(py)
    }

    /// Like a process restart: sockets cut, queue/history/cache lost, down for `down_seconds`.
    #[pyo3(signature = (down_seconds=0.5))]
    fn restart(&self, py: Python<'_>, down_seconds: f64) -> PyResult<()> {
        let r = {
            let guard = self.inner.lock();
            let sim = guard
                .as_ref()
                .ok_or_else(|| PyRuntimeError::new_err("the simulator has been closed"))?;
            py.detach(|| sim.restart(down_seconds))
        };
        r.py(py)
    }

    /// For `seconds`, nothing is sent, HTTP gets no answer and execution pauses.
    fn stall(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        self.with(|s| s.stall(seconds))?.py(py)
    }

    /// Sends malformed frames to every socket (`invalid_json`, `nan_json`, `unknown_type`, `wrong_types`,
    /// `truncated_binary`, `unknown_binary`, `huge_text`, `huge_binary`).
    fn send_garbage(&self, py: Python<'_>, kind: &str) -> PyResult<()> {
        let r = {
            let guard = self.inner.lock();
            let sim = guard
                .as_ref()
                .ok_or_else(|| PyRuntimeError::new_err("the simulator has been closed"))?;
            py.detach(|| sim.send_garbage(kind))
        };
        r.py(py)
    }

    /// Every HTTP request so far: `[{"method", "path", "query", "json"}, ...]`.
    fn requests<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let records = self.with(|s| s.requests())?;
        let list = PyList::empty(py);
        for r in &records {
            list.append(ser_to_py(py, r)?)?;
        }
        Ok(list)
    }

    /// Forgets the request log.
    fn clear_requests(&self) -> PyResult<()> {
        self.with(|s| s.clear_requests())
    }

    /// `{"sockets", "connections_total", "http_connections_total", "prompts_received", "prompts_executed",
    /// "queue_pending", "running"}`.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let stats = self.with(|s| s.stats())?;
        ser_to_py(py, &stats)
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.lock().is_some() {
            "running"
        } else {
            "closed"
        };
        format!("<ComfySimulator {} ({state})>", self.url)
    }
}

impl Drop for ComfySimulator {
    fn drop(&mut self) {
        // Without the GIL here; Simulator::stop only joins our own threads.
        if let Some(mut sim) = self.inner.get_mut().take() {
            sim.stop();
        }
    }
}
