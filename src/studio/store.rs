//! Persistence of jobs and the event history in SQLite (WAL). Writes leave the broadcast path at once: they go
//! down a channel to one writer thread that batches them into transactions; a job's rows in one batch are
//! coalesced (last wins) and so are its progress events, while lifecycle events are always written. When the
//! database cannot be written the batch is kept and retried, and the error shows in `/api/health`.
use super::relay::{Frame, FrameClass, JobView, Sink};
use crate::error::{Error, ErrorCode, Result};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events kept in the database for resuming after a restart.
const KEEP_EVENTS: u64 = 100_000;
/// How long the writer gathers a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
const BATCH_MAX: usize = 2_000;

enum Op {
    Job(Box<JobView>),
    Event {
        offset: u64,
        job: Option<String>,
        class: FrameClass,
        text: Arc<str>,
    },
    Flush(Sender<()>),
    Stop,
}

/// What was loaded at start.
pub struct Loaded {
    pub epoch: String,
    /// True when the previous run ended cleanly (its history is complete, so the epoch continues).
    pub continued: bool,
    pub next_offset: u64,
    pub jobs: Vec<JobView>,
    pub history: Vec<Frame>,
}

/// Health of the writer, for `/api/health` and `/metrics`.
#[derive(Default)]
pub struct StoreHealth {
    pub last_error: Mutex<Option<String>>,
    pub write_errors: AtomicU64,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub pending: AtomicU64,
    /// Microseconds the last batch took to commit.
    pub last_batch_us: AtomicU64,
}

pub struct Store {
    tx: Sender<Op>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub health: Arc<StoreHealth>,
}

fn db_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Io,
        format!("the studio database {}: {what}: {e}", path.display()),
    )
}

fn open(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| db_error("cannot create its folder", path, e))?;
    }
    let conn = Connection::open(path).map_err(|e| db_error("cannot open it", path, e))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA busy_timeout=5000;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS jobs (
             job_id TEXT PRIMARY KEY, service TEXT NOT NULL, tag TEXT, status TEXT NOT NULL,
             progress REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, metadata TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
         CREATE TABLE IF NOT EXISTS events (
             offset INTEGER PRIMARY KEY, job_id TEXT, class TEXT NOT NULL, body TEXT NOT NULL);",
    )
    .map_err(|e| db_error("cannot prepare its tables", path, e))?;
    Ok(conn)
}

fn class_name(c: FrameClass) -> &'static str {
    match c {
        FrameClass::Lifecycle => "lifecycle",
        FrameClass::Progress => "progress",
        FrameClass::Preview => "preview",
    }
}

fn class_of(name: &str) -> FrameClass {
    match name {
        "progress" => FrameClass::Progress,
        "preview" => FrameClass::Preview,
        _ => FrameClass::Lifecycle,
    }
}

impl Store {
    /// Opens (or creates) the database, loads what the last run left, and starts the writer.
    pub fn open(path: &Path, finished_jobs: usize, history_events: usize) -> Result<(Store, Loaded)> {
        let conn = open(path)?;
        let get = |k: &str| -> Result<Option<String>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(|e| db_error("cannot read it", path, e))
        };
        let clean = get("clean_shutdown")?.as_deref() == Some("1");
        let old_epoch = get("epoch")?;
        let continued = clean && old_epoch.is_some();
        let epoch = match old_epoch {
            Some(e) if clean => e,
            _ => uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        };
        let max_offset: u64 = conn
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| db_error("cannot read it", path, e))?
            .max(0) as u64;
        let stored_next: u64 = get("next_offset")?.and_then(|v| v.parse().ok()).unwrap_or(1);
        let next_offset = (max_offset + 1).max(stored_next);
        let mut jobs = Vec::new();
        {
            // Unfinished jobs always, and the newest finished ones.
            let mut stmt = conn
                .prepare(
                    "SELECT metadata FROM jobs WHERE status NOT IN ('completed','failed','cancelled')
                     UNION ALL
                     SELECT metadata FROM (SELECT metadata FROM jobs WHERE status IN ('completed','failed','cancelled')
                                           ORDER BY created_at DESC LIMIT ?1)",
                )
                .map_err(|e| db_error("cannot read its jobs", path, e))?;
            let rows = stmt
                .query_map([finished_jobs as i64], |r| r.get::<_, String>(0))
                .map_err(|e| db_error("cannot read its jobs", path, e))?;
            for row in rows.flatten() {
                match serde_json::from_str::<JobView>(&row) {
                    Ok(v) => jobs.push(v),
                    Err(e) => log::warn!("studio database: a job row could not be read and is skipped: {e}"),
                }
            }
        }
        let mut history = Vec::new();
        if continued {
            let mut stmt = conn
                .prepare("SELECT offset, job_id, class, body FROM events WHERE offset > ?1 ORDER BY offset")
                .map_err(|e| db_error("cannot read its events", path, e))?;
            let from = max_offset.saturating_sub(history_events as u64) as i64;
            let rows = stmt
                .query_map([from], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(|e| db_error("cannot read its events", path, e))?;
            for (offset, job, class, body) in rows.flatten() {
                history.push(Frame {
                    offset: offset.max(0) as u64,
                    job: job.map(|j| Arc::from(j.as_str())),
                    class: class_of(&class),
                    text: Arc::from(body.as_str()),
                });
            }
        }
        // From now on the run is "unclean" until close() says otherwise.
        conn.execute_batch("BEGIN")
            .and_then(|_| {
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('clean_shutdown', '0'), ('epoch', ?1)",
                    [&epoch],
                )
            })
            .and_then(|_| conn.execute_batch("COMMIT"))
            .map_err(|e| db_error("cannot write it", path, e))?;

        let (tx, rx) = channel();
        let health = Arc::new(StoreHealth::default());
        let h = health.clone();
        let p = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("director-link-studio-db".into())
            .spawn(move || writer(conn, rx, h, p))
            .map_err(|e| db_error("cannot start its writer", path, e))?;
        Ok((
            Store {
                tx,
                thread: Mutex::new(Some(thread)),
                health,
            },
            Loaded {
                epoch,
                continued,
                next_offset,
                jobs,
                history,
            },
        ))
    }

    fn send(&self, op: Op) {
        if self.tx.send(op).is_ok() {
            self.health.pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything sent so far is committed (or the writer is gone).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = channel();
        if self.tx.send(Op::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Writes what is pending, marks the run as ended cleanly (its epoch continues) and stops the writer.
    pub fn close(&self) {
        let _ = self.tx.send(Op::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Sink for Store {
    fn job_changed(&self, view: &JobView) {
        self.send(Op::Job(Box::new(view.clone())));
    }

    fn event(&self, frame: &Frame) {
        self.send(Op::Event {
            offset: frame.offset,
            job: frame.job.as_deref().map(str::to_string),
            class: frame.class,
            text: frame.text.clone(),
        });
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

#[derive(Default)]
struct Batch {
    jobs: HashMap<String, JobView>,
    /// offset → (job, class, body); a job's older progress in the same batch is left out.
    events: Vec<(u64, Option<String>, FrameClass, Arc<str>)>,
    newest_progress: HashMap<(String, u8), usize>,
    next_offset: u64,
    ops: u64,
}

impl Batch {
    fn add(&mut self, op: Op) {
        self.ops += 1;
        match op {
            Op::Job(v) => {
                self.jobs.insert(v.job_id.clone(), *v);
            }
            Op::Event {
                offset,
                job,
                class,
                text,
            } => {
                self.next_offset = self.next_offset.max(offset + 1);
                if let (Some(j), true) = (&job, class != FrameClass::Lifecycle) {
                    let key = (j.clone(), class as u8);
                    if let Some(&i) = self.newest_progress.get(&key) {
                        // Replaced within the batch: keep the slot (order), take the newer content.
                        self.events[i] = (offset, job, class, text);
                        return;
                    }
                    self.newest_progress.insert(key, self.events.len());
                } else if let Some(j) = &job {
                    // A lifecycle event ends the run of progress that may be coalesced.
                    self.newest_progress.retain(|(k, _), _| k != j);
                }
                self.events.push((offset, job, class, text));
            }
            Op::Flush(_) | Op::Stop => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.events.is_empty()
    }

    fn write(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        {
            let mut job = tx.prepare_cached(
                "INSERT INTO jobs(job_id, service, tag, status, progress, created_at, updated_at, metadata)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, progress = excluded.progress,
                   updated_at = excluded.updated_at, metadata = excluded.metadata, tag = excluded.tag",
            )?;
            for v in self.jobs.values() {
                let meta = serde_json::to_string(v).unwrap_or_default();
                job.execute(params![
                    v.job_id,
                    v.service,
                    v.tag,
                    v.state.as_str(),
                    v.progress,
                    v.created_at,
                    v.updated_at,
                    meta
                ])?;
            }
            let mut ev = tx
                .prepare_cached("INSERT OR REPLACE INTO events(offset, job_id, class, body) VALUES (?1, ?2, ?3, ?4)")?;
            for (offset, job, class, text) in &self.events {
                ev.execute(params![*offset as i64, job, class_name(*class), &**text])?;
            }
            if self.next_offset > 0 {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_offset', ?1)",
                    [self.next_offset.to_string()],
                )?;
                let keep_from = self.next_offset.saturating_sub(KEEP_EVENTS) as i64;
                tx.execute("DELETE FROM events WHERE offset < ?1", [keep_from])?;
            }
        }
        tx.commit()
    }
}

fn writer(mut conn: Connection, rx: Receiver<Op>, health: Arc<StoreHealth>, path: PathBuf) {
    let mut batch = Batch::default();
    let mut waiters: Vec<Sender<()>> = Vec::new();
    let mut stop = false;
    let mut retry_delay = Duration::from_millis(100);
    while !stop || !batch.is_empty() {
        // Gather: block for the first op, then take what arrives within the window.
        if batch.is_empty() && waiters.is_empty() && !stop {
            match rx.recv() {
                Ok(op) => take(op, &mut batch, &mut waiters, &mut stop),
                Err(_) => stop = true,
            }
        }
        let until = Instant::now() + BATCH_WINDOW;
        while !stop && batch.ops < BATCH_MAX as u64 {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(op) => take(op, &mut batch, &mut waiters, &mut stop),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    stop = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let t0 = Instant::now();
            match batch.write(&mut conn) {
                Ok(()) => {
                    health.batches.fetch_add(1, Ordering::Relaxed);
                    health
                        .rows
                        .fetch_add((batch.jobs.len() + batch.events.len()) as u64, Ordering::Relaxed);
                    health
                        .pending
                        .fetch_sub(batch.ops.min(health.pending.load(Ordering::Relaxed)), Ordering::Relaxed);
                    health
                        .last_batch_us
                        .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    *health.last_error.lock() = None;
                    batch = Batch::default();
                    retry_delay = Duration::from_millis(100);
                }
                Err(e) => {
                    health.write_errors.fetch_add(1, Ordering::Relaxed);
                    let msg = format!("cannot write {}: {e}", path.display());
                    log::warn!("studio database: {msg}; keeping the batch and retrying");
                    *health.last_error.lock() = Some(msg);
                    if stop {
                        break; // closing: what cannot be written now is lost with the process anyway
                    }
                    std::thread::sleep(retry_delay);
                    retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
    if health.last_error.lock().is_none() {
        let _ = conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('clean_shutdown', '1')",
            [],
        );
    }
    for w in waiters {
        let _ = w.send(());
    }
}

fn take(op: Op, batch: &mut Batch, waiters: &mut Vec<Sender<()>>, stop: &mut bool) {
    match op {
        Op::Flush(w) => waiters.push(w),
        Op::Stop => *stop = true,
        other => batch.add(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::JobState;

    fn frame(offset: u64, job: &str, class: FrameClass) -> Frame {
        Frame {
            offset,
            job: Some(Arc::from(job)),
            class,
            text: Arc::from(format!("{{\"offset\":{offset}}}").as_str()),
        }
    }

    #[test]
    fn a_clean_run_continues_its_epoch_and_history_an_unclean_one_does_not() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { panic!("no temp dir") };
        let path = dir.path().join("studio.sqlite3");
        let (store, loaded) = Store::open(&path, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.continued);
        let epoch = loaded.epoch.clone();
        let mut v = JobView::new("a", "sim", Some("shot_010".into()), false);
        store.job_changed(&v);
        store.event(&frame(1, "a", FrameClass::Lifecycle));
        store.event(&frame(2, "a", FrameClass::Progress));
        store.event(&frame(3, "a", FrameClass::Progress));
        v.state = JobState::Completed;
        store.job_changed(&v);
        store.event(&frame(4, "a", FrameClass::Lifecycle));
        assert!(store.flush(Duration::from_secs(10)));
        store.close();
        drop(store);

        let (store, loaded) = Store::open(&path, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.continued);
        assert_eq!(loaded.epoch, epoch);
        assert_eq!(loaded.next_offset, 5);
        let offsets: Vec<u64> = loaded.history.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, vec![1, 3, 4], "the older progress of the batch was coalesced");
        assert_eq!(loaded.jobs.len(), 1);
        assert_eq!(loaded.jobs[0].state, JobState::Completed);
        assert_eq!(loaded.jobs[0].tag.as_deref(), Some("shot_010"));
        // Not closed: a crash. The next run gets a new epoch and no history to replay.
        std::mem::forget(store);
        let (_store, loaded) = Store::open(&path, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.continued);
        assert_ne!(loaded.epoch, epoch);
        assert!(loaded.history.is_empty());
        assert_eq!(loaded.next_offset, 5, "offsets never repeat, even after a crash");
    }
}
