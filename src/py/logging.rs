//! Core `log` records → Python's `logging`, and closing every hub before the interpreter goes away.
//!
//! Background threads must never touch a finalizing interpreter: the logger checks that Python is still alive,
//! and `close_all` (registered with `atexit` by the package) stops every hub's threads before finalization.
use crate::hub::Hub as CoreHub;
use log::{Log, Metadata, Record};
use parking_lot::Mutex;
use pyo3::prelude::*;
use std::sync::{Arc, Weak};

static LIVE_HUBS: Mutex<Vec<Weak<CoreHub>>> = Mutex::new(Vec::new());

struct GuardedLogger(pyo3_log::Logger);

fn python_alive() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, from any thread, with or without the GIL.
    unsafe { pyo3::ffi::Py_IsInitialized() != 0 }
}

impl Log for GuardedLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        python_alive() && self.0.enabled(metadata)
    }
    fn log(&self, record: &Record) {
        if python_alive() {
            self.0.log(record);
        }
    }
    fn flush(&self) {}
}

pub fn install(py: Python<'_>) {
    if let Ok(logger) = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels) {
        if log::set_boxed_logger(Box::new(GuardedLogger(logger))).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    }
}

pub fn track(hub: &Arc<CoreHub>) {
    let mut hubs = LIVE_HUBS.lock();
    hubs.retain(|w| w.strong_count() > 0);
    hubs.push(Arc::downgrade(hub));
}

/// Closes every hub still open (called at interpreter exit).
#[pyfunction]
pub fn _close_all(py: Python<'_>) {
    let hubs: Vec<Arc<CoreHub>> = LIVE_HUBS.lock().drain(..).filter_map(|w| w.upgrade()).collect();
    py.detach(move || hubs.iter().for_each(|h| h.close()));
}
