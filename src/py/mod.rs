//! The pyo3 binding: glue only (conversion, exception mapping, releasing the GIL around waits).
mod convert;
mod errors;
mod events;
mod gradio;
mod hub;
mod logging;
mod sim;
mod studio;
mod workflow;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Route the core's `log` records into Python's `logging` (logger names start with "director_link").
    logging::install(m.py());
    m.add_function(wrap_pyfunction!(logging::_close_all, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_flush_logs, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_dropped_log_records, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_SCAN_HOSTS", crate::discovery::default_hosts())?;
    m.add_class::<hub::Hub>()?;
    m.add_class::<hub::Job>()?;
    m.add_class::<gradio::GradioCall>()?;
    m.add_class::<sim::ComfySimulator>()?;
    m.add_class::<studio::StudioServer>()?;
    m.add_class::<workflow::PyWorkflow>()?;
    events::register(m)?;
    Ok(())
}
