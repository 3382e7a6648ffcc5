//! `StudioServer` for Python: a thin wrapper over `crate::studio::StudioServer`; blocking calls release the GIL.
use super::convert::from_py;
use super::errors::IntoPyResult;
use crate::studio::{StudioConfig, StudioServer as CoreServer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// The studio server (`director-link serve`): HTTP + WebSocket on its own hub's runtime. Use
/// `director_link.serve(...)`, which builds the settings; `close()` (or `with`) stops it.
#[pyclass(module = "director_link._native", frozen)]
pub struct StudioServer {
    inner: Arc<CoreServer>,
}

#[pymethods]
impl StudioServer {
    /// Starts a server from a settings dict (the keys of `StudioConfig`: host, port, services, simulator, ...).
    #[new]
    fn new(py: Python<'_>, settings: &Bound<'_, PyAny>) -> PyResult<StudioServer> {
        let value = from_py(settings)?;
        let mut config: StudioConfig =
            serde_json::from_value(value).map_err(|e| PyValueError::new_err(format!("studio server settings: {e}")))?;
        config.apply_env().py(py)?;
        let server = py.detach(|| CoreServer::start(config)).py(py)?;
        Ok(StudioServer {
            inner: Arc::new(server),
        })
    }

    /// `http://127.0.0.1:8328`
    #[getter]
    fn url(&self) -> String {
        self.inner.url()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.inner.port()
    }

    /// The built-in simulator's address when the server started one.
    #[getter]
    fn simulator_url(&self) -> Option<String> {
        self.inner.simulator_url()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Blocks until the server is closed (or `timeout` seconds pass; returns whether it closed). Ctrl-C and other
    /// signals reach Python while it waits.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| std::time::Instant::now() + Duration::from_secs_f64(t));
        loop {
            let slice = Duration::from_millis(100);
            let inner = self.inner.clone();
            if py.detach(move || inner.wait_closed(slice)) {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Stops accepting, closes every connection, writes what is pending and stops the hub. Idempotent.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || inner.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        format!("StudioServer({})", self.inner.url())
    }
}
