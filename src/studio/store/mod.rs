//! Persistence of jobs and the event history: SQLite (WAL, the default) or PostgreSQL (`--database
//! postgresql://…`). What both share lives here: writes leave the broadcast path at once — they go down a channel
//! to one writer thread that batches them into transactions; a job's rows in one batch are coalesced (last wins)
//! and so are its progress events, while lifecycle events are always written. When the database cannot be written
//! the batch is kept and retried (reconnecting where that applies), and the error shows in `/api/health` and
//! `/metrics`. Each database is a [`Backend`]: a handful of reads at start, one batch write, the clean-stop mark.
mod postgres;
mod sqlite;

use super::relay::{Frame, FrameClass, JobView, Sink, Text};
use crate::error::{Error, ErrorCode, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
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

/// Where the studio keeps its jobs.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgresql://user:password@host:port/db` URL (the password never leaves the backend).
    Postgres(String),
}

impl Database {
    /// The name shown in `/api/health` and messages: never a password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => format!("sqlite:{}", p.display()),
            Database::Postgres(url) => super::config::redact(url),
        }
    }
}

/// A database error as a message without secrets.
type DbResult<T> = std::result::Result<T, String>;

/// (offset, job, class, body) of one stored event.
type StoredEvent = (u64, Option<String>, String, String);

/// One database: the reads a start needs, the batch write and the clean-stop mark.
trait Backend: Send + 'static {
    fn meta(&mut self, key: &str) -> DbResult<Option<String>>;
    fn max_offset(&mut self) -> DbResult<u64>;
    /// The `metadata` JSON of every unfinished job and of the newest `finished` finished ones.
    fn jobs(&mut self, finished: usize) -> DbResult<Vec<String>>;
    /// Events after `offset`, in order.
    fn events_after(&mut self, offset: u64) -> DbResult<Vec<StoredEvent>>;
    /// Records this run's epoch and marks it unfinished until `end_run`.
    fn begin_run(&mut self, epoch: &str) -> DbResult<()>;
    /// Writes one batch in one transaction; on error nothing of it is kept (it is retried whole).
    fn write(&mut self, batch: &Batch) -> DbResult<()>;
    /// Says the run ended cleanly: its history is complete and its epoch continues.
    fn end_run(&mut self) -> DbResult<()>;
}

enum Op {
    Job(Box<JobView>),
    Event {
        offset: u64,
        job: Option<String>,
        class: FrameClass,
        text: Text,
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

/// Reads what the last run left and marks this run as begun: the part of a start every database shares.
fn load(db: &mut dyn Backend, finished_jobs: usize, history_events: usize) -> DbResult<Loaded> {
    let clean = db.meta("clean_shutdown")?.as_deref() == Some("1");
    let old_epoch = db.meta("epoch")?;
    let continued = clean && old_epoch.is_some();
    let epoch = match old_epoch {
        Some(e) if clean => e,
        _ => uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
    };
    let max_offset = db.max_offset()?;
    let stored_next: u64 = db.meta("next_offset")?.and_then(|v| v.parse().ok()).unwrap_or(1);
    let next_offset = (max_offset + 1).max(stored_next);
    let mut jobs = Vec::new();
    for row in db.jobs(finished_jobs)? {
        match serde_json::from_str::<JobView>(&row) {
            Ok(v) => jobs.push(v),
            Err(e) => log::warn!("studio database: a job row could not be read and is skipped: {e}"),
        }
    }
    let mut history = Vec::new();
    if continued {
        for (offset, job, class, body) in db.events_after(max_offset.saturating_sub(history_events as u64))? {
            history.push(Frame {
                offset,
                job: job.map(|j| Arc::from(j.as_str())),
                class: class_of(&class),
                text: Text::from(body),
            });
        }
    }
    // From now on the run is "unclean" until close() says otherwise.
    db.begin_run(&epoch)?;
    Ok(Loaded {
        epoch,
        continued,
        next_offset,
        jobs,
        history,
    })
}

impl Store {
    /// Opens (or creates) the database, loads what the last run left, and starts the writer.
    pub fn open(database: &Database, finished_jobs: usize, history_events: usize) -> Result<(Store, Loaded)> {
        let name = database.display();
        let fail =
            |what: &str, e: String| Error::new(ErrorCode::Io, format!("the studio database {name}: {what}: {e}"));
        let mut backend: Box<dyn Backend> = match database {
            Database::Sqlite(path) => Box::new(sqlite::Sqlite::open(path).map_err(|e| fail("cannot open it", e))?),
            Database::Postgres(url) => {
                Box::new(postgres::Postgres::open(url).map_err(|e| fail("cannot connect to it", e))?)
            }
        };
        let loaded = load(&mut *backend, finished_jobs, history_events).map_err(|e| fail("cannot load it", e))?;
        let (tx, rx) = channel();
        let health = Arc::new(StoreHealth::default());
        let h = health.clone();
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name("director-link-studio-db".into())
            .spawn(move || writer(backend, rx, h, thread_name))
            .map_err(|e| fail("cannot start its writer", e.to_string()))?;
        Ok((
            Store {
                tx,
                thread: Mutex::new(Some(thread)),
                health,
            },
            loaded,
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
pub(super) struct Batch {
    jobs: HashMap<String, JobView>,
    /// offset → (job, class, body); a job's older progress in the same batch is left out.
    events: Vec<(u64, Option<String>, FrameClass, Text)>,
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

    /// Events older than this offset are deleted with the batch (the database keeps `KEEP_EVENTS`).
    fn keep_from(&self) -> Option<u64> {
        (self.next_offset > 0).then(|| self.next_offset.saturating_sub(KEEP_EVENTS))
    }
}

fn writer(mut db: Box<dyn Backend>, rx: Receiver<Op>, health: Arc<StoreHealth>, name: String) {
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
            match db.write(&batch) {
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
                    let msg = format!("cannot write {name}: {e}");
                    log::warn!("studio database: {msg}; keeping the batch and retrying");
                    *health.last_error.lock() = Some(msg);
                    if stop {
                        break; // closing: what cannot be written now is lost with the process anyway
                    }
                    // Wait before retrying, but hear a Stop (or more work) meanwhile: a full batch no longer reads
                    // the channel, and close() must not wait for a database that stays away.
                    match rx.recv_timeout(retry_delay) {
                        Ok(op) => take(op, &mut batch, &mut waiters, &mut stop),
                        Err(RecvTimeoutError::Disconnected) => stop = true,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
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
        if let Err(e) = db.end_run() {
            log::warn!("studio database: cannot mark {name} as stopped cleanly: {e}");
        }
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
            text: Text::from(format!("{{\"offset\":{offset}}}")),
        }
    }

    /// One run, a clean restart, a crash: what every database must do the same.
    fn clean_and_unclean_runs(db: &Database) {
        let (store, loaded) = Store::open(db, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
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
        let running = JobView::new("b", "sim", None, false);
        store.job_changed(&running);
        assert!(store.flush(Duration::from_secs(30)));
        store.close();
        drop(store);

        let (store, loaded) = Store::open(db, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.continued);
        assert_eq!(loaded.epoch, epoch);
        assert_eq!(loaded.next_offset, 5);
        let offsets: Vec<u64> = loaded.history.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, vec![1, 3, 4], "the older progress of the batch was coalesced");
        let text: Vec<&str> = loaded.history.iter().map(|f| &*f.text).collect();
        assert_eq!(text[1], "{\"offset\":3}");
        let mut jobs = loaded.jobs.clone();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0], v, "the job comes back as it was written");
        assert_eq!(
            jobs[1].state,
            JobState::Pending,
            "an unfinished job comes back to be picked up"
        );
        // Not closed: a crash. The next run gets a new epoch and no history to replay.
        std::mem::forget(store);
        let (_store, loaded) = Store::open(db, 100, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.continued);
        assert_ne!(loaded.epoch, epoch);
        assert!(loaded.history.is_empty());
        assert_eq!(loaded.next_offset, 5, "offsets never repeat, even after a crash");
    }

    #[test]
    fn a_clean_run_continues_its_epoch_and_history_an_unclean_one_does_not() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { panic!("no temp dir") };
        clean_and_unclean_runs(&Database::Sqlite(dir.path().join("studio.sqlite3")));
    }

    /// The test PostgreSQL server (`.ci/datastores.sh` starts one and exports its URL).
    fn postgres_url() -> String {
        std::env::var("DIRECTOR_LINK_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "DIRECTOR_LINK_TEST_POSTGRES is not set: this test needs a real PostgreSQL server \
                 (`. .ci/datastores.sh` starts one and sets it)"
            )
        })
    }

    /// A new, empty database on the test server; its URL.
    fn fresh_postgres_database() -> String {
        let url = postgres_url();
        let name = format!("dl_test_{}", uuid::Uuid::new_v4().simple());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(rt) = rt else { panic!("no runtime") };
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        });
        let mut u = url::Url::parse(&url).unwrap_or_else(|e| panic!("{e}"));
        u.set_path(&name);
        u.to_string()
    }

    #[test]
    fn postgres_keeps_and_reloads_like_sqlite() {
        clean_and_unclean_runs(&Database::Postgres(fresh_postgres_database()));
    }

    #[test]
    fn a_postgres_password_never_shows_in_errors() {
        let url = fresh_postgres_database();
        let mut u = url::Url::parse(&url).unwrap_or_else(|e| panic!("{e}"));
        let _ = u.set_password(Some("Wr0ngSecretPassw0rd"));
        let err = match Store::open(&Database::Postgres(u.to_string()), 10, 10) {
            Ok(_) => panic!("a wrong password was accepted"),
            Err(e) => e,
        };
        let text = format!("{err} {err:?}");
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(!text.contains("Wr0ngSecretPassw0rd"), "{text}");
        let real = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.password().map(str::to_string));
        assert!(real.is_some_and(|p| !text.contains(&p)));
        // Nothing listens there: a clear error, no hang.
        let err = Store::open(
            &Database::Postgres("postgresql://u:Sekr1t@127.0.0.1:9/x".into()),
            10,
            10,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("postgresql://u:***@127.0.0.1:9/x") && !err.contains("Sekr1t"),
            "{err}"
        );
    }
}
