//! The pyo3 binding: glue only (conversion, exception mapping, releasing the GIL around waits).
mod convert;
mod errors;
mod events;
mod hub;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Route the core's `log` records into Python's `logging` (logger names start with "director_link").
    let _ = pyo3_log::try_init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<hub::Hub>()?;
    m.add_class::<hub::Job>()?;
    events::register(m)?;
    Ok(())
}
