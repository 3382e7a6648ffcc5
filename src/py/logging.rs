//! Core `log` records → Python's `logging`, without a runtime thread ever waiting for the GIL; and closing every
//! hub before the interpreter goes away.
//!
//! A thread that logs (a tokio worker, usually) only formats the record and offers it to a bounded channel
//! (`try_send`: when the channel is full the record is dropped and counted, see `dropped_records`). One
//! dedicated thread, not a runtime worker, takes the GIL and hands the records to Python's `logging`, in order.
//! So a busy Python (Blender running a long script) delays log records, never the network actors.
//!
//! Which levels are worth formatting is decided in Rust from the effective level of the `director_link` logger,
//! read under the GIL by the log thread (after each batch and every `REFRESH`) and when a `Hub` is created.
//!
//! Background threads must never touch a finalizing interpreter: the log thread checks that Python is still
//! alive and stops taking the GIL once `_close_all` (registered with `atexit` by the package) has run.
use crate::hub::Hub as CoreHub;
use log::{Level, Log, Metadata, Record};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

static LIVE_HUBS: Mutex<Vec<Weak<CoreHub>>> = Mutex::new(Vec::new());

/// Records waiting for the log thread; beyond this a busy Python loses records (counted), never time.
const CHANNEL: usize = 4096;
/// How often an idle log thread re-reads the Python logger's level.
const REFRESH: Duration = Duration::from_secs(2);
/// Records handed to Python per GIL acquisition.
const BATCH: usize = 256;

/// Python's numeric level below which records are not even formatted (30 = WARNING, Python's default).
static THRESHOLD: AtomicUsize = AtomicUsize::new(30);
/// Set at interpreter exit: from then on nothing takes the GIL.
static STOPPING: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
/// Records the log thread has finished with (delivered or skipped), and a signal for `flush`.
static DONE: Mutex<u64> = Mutex::new(0);
static DONE_CHANGED: Condvar = Condvar::new();
static SENDER: OnceLock<SyncSender<Line>> = OnceLock::new();

struct Line {
    level: Level,
    target: String,
    message: String,
    /// Unix seconds when it was logged (the Python record gets this time, not the time it was delivered).
    time: f64,
    file: Option<&'static str>,
    line: Option<u32>,
}

fn python_alive() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, from any thread, with or without the GIL.
    unsafe { pyo3::ffi::Py_IsInitialized() != 0 }
}

fn py_level(level: Level) -> usize {
    match level {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
        Level::Trace => 5,
    }
}

struct ChannelLogger;

impl Log for ChannelLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        py_level(metadata.level()) >= THRESHOLD.load(Ordering::Relaxed) && !STOPPING.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(tx) = SENDER.get() else { return };
        let line = Line {
            level: record.level(),
            target: record.target().replace("::", "."),
            message: redact(&record.args().to_string()),
            time: crate::event::now_epoch(),
            file: record.file_static(),
            line: record.line(),
        };
        match tx.try_send(line) {
            Ok(()) => {
                SENT.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&self) {}
}

/// Hides credentials that a message could carry by mistake (a header or a URL query echoed in an error).
fn redact(message: &str) -> String {
    const MARKERS: [&str; 5] = ["Bearer ", "api_key=", "apikey=", "token=", "key="];
    let lower = message.to_ascii_lowercase();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        let hit = MARKERS
            .iter()
            .find(|m| lower[i..].starts_with(&m.to_ascii_lowercase()))
            .map(|m| m.len());
        match hit {
            Some(n) => {
                out.push_str(&message[i..i + n]);
                out.push_str("***");
                i += n;
                while let Some(c) = message[i..].chars().next() {
                    if c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ',' | ')' | ';') {
                        break;
                    }
                    i += c.len_utf8();
                }
            }
            None => {
                let c = message[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    out
}

/// Re-reads the effective level of the `director_link` logger (the GIL is held).
pub fn refresh_level(py: Python<'_>) {
    let level = py
        .import("logging")
        .and_then(|m| m.call_method1("getLogger", ("director_link",)))
        .and_then(|l| l.call_method0("getEffectiveLevel"))
        .and_then(|v| v.extract::<usize>());
    if let Ok(level) = level {
        THRESHOLD.store(level, Ordering::Relaxed);
        // Also the `log` crate's own filter, so a disabled record (tungstenite traces every frame) costs one
        // comparison at the call site instead of a call into the logger.
        log::set_max_level(match level {
            0..=5 => log::LevelFilter::Trace,
            6..=10 => log::LevelFilter::Debug,
            11..=20 => log::LevelFilter::Info,
            21..=30 => log::LevelFilter::Warn,
            _ => log::LevelFilter::Error,
        });
    }
}

/// Hands one record to Python's `logging`, with the time and place it was logged in Rust.
fn deliver(py: Python<'_>, loggers: &mut HashMap<String, Py<PyAny>>, line: &Line) -> PyResult<()> {
    let logger = match loggers.get(&line.target) {
        Some(l) => l.bind(py).clone(),
        None => {
            let l = py
                .import("logging")?
                .call_method1("getLogger", (line.target.as_str(),))?;
            loggers.insert(line.target.clone(), l.clone().unbind());
            l
        }
    };
    let level = py_level(line.level);
    if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
        return Ok(());
    }
    let record = logger.call_method1(
        "makeRecord",
        (
            logger.getattr("name")?,
            level,
            line.file.unwrap_or("<rust>"),
            line.line.unwrap_or(0),
            line.message.as_str(),
            (),
            py.None(),
        ),
    )?;
    record.setattr("created", line.time)?;
    record.setattr("msecs", (line.time.fract() * 1000.0).floor())?;
    logger.call_method1("handle", (record,))?;
    Ok(())
}

fn mark_done(n: u64) {
    let mut done = DONE.lock();
    *done += n;
    drop(done);
    DONE_CHANGED.notify_all();
}

/// The log thread: waits for records without the GIL, then takes it once per batch.
fn run(rx: Receiver<Line>) {
    let mut loggers: HashMap<String, Py<PyAny>> = HashMap::new();
    let mut last_refresh = Instant::now();
    loop {
        let first = match rx.recv_timeout(REFRESH) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Line> = first.into_iter().collect();
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if STOPPING.load(Ordering::Acquire) || !python_alive() {
            mark_done(n);
            if STOPPING.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        if n == 0 && last_refresh.elapsed() < REFRESH {
            continue;
        }
        Python::attach(|py| {
            for line in &batch {
                // A failing handler must not stop the others; Python's logging reports its own errors.
                if let Err(e) = deliver(py, &mut loggers, line) {
                    e.print(py);
                }
            }
            refresh_level(py);
        });
        last_refresh = Instant::now();
        mark_done(n);
    }
}

pub fn install(py: Python<'_>) {
    let (tx, rx) = sync_channel(CHANNEL);
    if SENDER.set(tx).is_err() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("director-link-log".into())
        .spawn(move || run(rx));
    if started.is_ok() && log::set_logger(&ChannelLogger).is_ok() {
        refresh_level(py);
    }
}

/// Waits (without the GIL, at most `timeout`) until every record logged before the call reached Python.
pub fn flush(py: Python<'_>, timeout: Duration) {
    let target = SENT.load(Ordering::Acquire);
    py.detach(|| {
        let deadline = Instant::now() + timeout;
        let mut done = DONE.lock();
        while *done < target {
            if DONE_CHANGED.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
    });
}

/// Records lost because Python did not take them fast enough (the channel was full).
#[pyfunction]
pub fn _dropped_log_records() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Delivers waiting log records now (waits at most `timeout` seconds, without the GIL).
#[pyfunction]
#[pyo3(signature = (timeout=1.0))]
pub fn _flush_logs(py: Python<'_>, timeout: f64) {
    refresh_level(py);
    flush(py, Duration::from_secs_f64(timeout.clamp(0.0, 60.0)));
}

pub fn track(hub: &Arc<CoreHub>) {
    let mut hubs = LIVE_HUBS.lock();
    hubs.retain(|w| w.strong_count() > 0);
    hubs.push(Arc::downgrade(hub));
}

/// Closes every hub still open (called at interpreter exit), then stops handing log records to Python.
#[pyfunction]
pub fn _close_all(py: Python<'_>) {
    let hubs: Vec<Arc<CoreHub>> = LIVE_HUBS.lock().drain(..).filter_map(|w| w.upgrade()).collect();
    py.detach(move || hubs.iter().for_each(|h| h.close()));
    flush(py, Duration::from_millis(500));
    STOPPING.store(true, Ordering::Release);
}
