//! Several studio instances over Redis Streams (`--redis redis://host:port`). Every instance appends the events of
//! the jobs it runs to one stream (XADD, MAXLEN ~ bounded) and reads everyone's (XREAD), relaying other instances'
//! events to its own subscribers with its own offsets. Nothing else is shared: no election, no ownership moves.
//!
//! - Each entry carries its instance's id (new per process) and a sequence number that increases by one per event
//!   it shares, the event's JSON and the job as the running instance shows it after the event — so a reader
//!   recognises a replayed entry (`seq <= last`) and shows it once, notices entries it can never get (a jump in
//!   `seq`: counted in `/api/health` and `/metrics`, never silent), and a job's view is whole again at its next
//!   event whatever was missed.
//! - Redis away: the instance serves its own jobs from memory as always; what it has to share waits in a bounded
//!   queue (progress coalesced per job, lifecycle kept) and goes out, in order, when Redis answers again. The
//!   reader resumes after the last entry it read.
//! - Redis restarted without its data (a new `run_id`): every instance sends its recent entries again (a window of
//!   them is kept) and readers read the new stream from its start; sequence numbers drop what was seen already.
//! - Previews go on the bus with their image (field `p`), so every instance's subscribers see them; like progress
//!   they are coalesced per job while Redis is away, and they are not kept for sending again (latest wins: the
//!   next one replaces them).
mod resp;

use super::relay::{FrameClass, JobView, Relay, Relayed, Tap};
use crate::error::{Error, ErrorCode, Result};
use crate::event::EventKind;
use bytes::Bytes;
use parking_lot::Mutex;
use resp::{Conn, Reply, Target};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The stream every instance shares.
pub const STREAM_KEY: &str = "director-link:studio:events";
/// Entries Redis keeps (approximately: `MAXLEN ~`).
const STREAM_MAXLEN: &str = "100000";
/// Events waiting while Redis is away, at most (beyond: dropped and counted).
const MAX_WAITING: usize = 200_000;
const MAX_WAITING_BYTES: usize = 256 << 20;
/// Entries kept after sending, to send again when Redis comes back without its data.
const RESEND_WINDOW: usize = 10_000;
/// Entries per pipeline / per read.
const BATCH: usize = 512;
const READ_BLOCK_MS: u64 = 1000;
/// Any reply may take this long (beyond a blocking read's own wait) before the connection counts as dead.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Counters and state for `/api/health` and `/metrics`.
#[derive(Default)]
pub struct BusHealth {
    pub publisher_up: AtomicBool,
    pub reader_up: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub published: AtomicU64,
    pub relayed: AtomicU64,
    /// Entries seen before (replays after a reconnect) and not shown again.
    pub duplicates: AtomicU64,
    /// Entries of other instances that never arrived (trimmed or lost before this instance read them).
    pub gaps: AtomicU64,
    /// Events not shared because the waiting queue was full.
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub resent: AtomicU64,
    pub waiting: AtomicU64,
}

impl BusHealth {
    pub fn ok(&self) -> bool {
        self.publisher_up.load(Ordering::Relaxed) && self.reader_up.load(Ordering::Relaxed)
    }
}

/// An event waiting to be shared.
struct Out {
    job: String,
    class: FrameClass,
    time: f64,
    event: String,
    view: String,
    /// A preview's image.
    preview: Option<Bytes>,
    /// Given when first sent, kept when sent again (so a reader can drop the copy).
    seq: Option<u64>,
}

impl Out {
    fn bytes(&self) -> usize {
        self.event.len() + self.view.len() + self.preview.as_ref().map_or(0, Bytes::len)
    }
}

/// One entry as sent: (seq, time, event, view, preview).
type Sent = (u64, f64, String, String, Option<Bytes>);

#[derive(Default)]
struct Waiting {
    entries: VecDeque<Out>,
    /// The index (counted from the first entry ever queued) of a job's newest waiting progress or preview.
    newest: HashMap<(String, FrameClass), u64>,
    /// How many entries left the front so far.
    popped: u64,
    bytes: usize,
}

struct Shared {
    instance: String,
    target: Target,
    relay: Arc<Relay>,
    waiting: Mutex<Waiting>,
    wake: Notify,
    health: Arc<BusHealth>,
}

pub struct Bus {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    pub url: String,
}

impl Tap for Shared {
    fn local_event(&self, kind: &EventKind, time: f64, view: &JobView, preview: Option<&Bytes>) {
        let Some(job) = kind.job_id() else { return };
        let class = match kind {
            EventKind::Progress { .. } | EventKind::QueueChanged { .. } => FrameClass::Progress,
            EventKind::Preview { .. } => FrameClass::Preview,
            _ => FrameClass::Lifecycle,
        };
        let out = Out {
            job: job.to_string(),
            class,
            time,
            event: serde_json::to_string(kind).unwrap_or_default(),
            view: serde_json::to_string(view).unwrap_or_default(),
            preview: preview.filter(|_| class == FrameClass::Preview).cloned(),
            seq: None,
        };
        let mut w = self.waiting.lock();
        if class.coalescable() {
            // A newer progress (preview) of the job replaces one still waiting (not yet sent: it has no number).
            if let Some(&at) = w.newest.get(&(out.job.clone(), class)) {
                let popped = w.popped;
                if let Some(slot) = at.checked_sub(popped).and_then(|i| w.entries.get_mut(i as usize)) {
                    if slot.seq.is_none() && slot.job == out.job && slot.class == class {
                        let (old, new) = (slot.bytes(), out.bytes());
                        *slot = out;
                        w.bytes = w.bytes + new - old;
                        return;
                    }
                }
            }
        } else {
            // Nothing waiting before a lifecycle event may be replaced by what follows it.
            w.newest.remove(&(out.job.clone(), FrameClass::Progress));
            w.newest.remove(&(out.job.clone(), FrameClass::Preview));
        }
        if w.entries.len() >= MAX_WAITING || w.bytes + out.bytes() > MAX_WAITING_BYTES {
            drop(w);
            let n = self.health.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                log::warn!("studio bus: Redis has been away too long; {n} events were not shared");
            }
            return;
        }
        if class.coalescable() {
            let index = w.popped + w.entries.len() as u64;
            w.newest.insert((out.job.clone(), class), index);
        }
        w.bytes += out.bytes();
        w.entries.push_back(out);
        self.health.waiting.store(w.entries.len() as u64, Ordering::Relaxed);
        drop(w);
        self.wake.notify_one();
    }
}

impl Bus {
    /// Starts sharing this instance's events and relaying the others'. Redis need not answer yet: the bus
    /// connects (and reconnects) on its own, and `/api/health` says how it goes.
    pub fn start(url: &str, relay: Arc<Relay>, handle: &tokio::runtime::Handle) -> Result<Bus> {
        let shown = super::config::redact(url);
        let target =
            Target::parse(url).map_err(|e| Error::new(ErrorCode::InvalidUrl, format!("--redis {shown}: {e}")))?;
        let shared = Arc::new(Shared {
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            target,
            relay: relay.clone(),
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            health: Arc::new(BusHealth::default()),
        });
        relay.set_tap(shared.clone());
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for role in [Role::Publisher, Role::Reader] {
            let (shared, stopped, done) = (shared.clone(), stopped.clone(), done_tx.clone());
            handle.spawn(async move {
                match role {
                    Role::Publisher => publisher(&shared, stopped).await,
                    Role::Reader => reader(&shared, stopped).await,
                }
                let _ = done.send(());
            });
        }
        log::info!(
            "studio: sharing events over Redis {shown} as instance {}",
            shared.instance
        );
        Ok(Bus {
            shared,
            stop,
            done: Mutex::new(Some(done_rx)),
            url: shown,
        })
    }

    pub fn health(&self) -> &Arc<BusHealth> {
        &self.shared.health
    }

    /// Sends what waits (for a moment, if Redis answers) and stops both tasks. Idempotent.
    pub fn close(&self) {
        let _ = self.stop.send(true);
        if let Some(done) = self.done.lock().take() {
            for _ in 0..2 {
                if done.recv_timeout(Duration::from_secs(5)).is_err() {
                    break;
                }
            }
        }
    }

    /// For `/api/health`.
    pub fn status(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Status<'a> {
            url: &'a str,
            ok: bool,
            instance: &'a str,
            stream: &'a str,
            publisher_connected: bool,
            reader_connected: bool,
            last_error: Option<String>,
            waiting: u64,
            published: u64,
            relayed: u64,
            duplicates_skipped: u64,
            gaps: u64,
            dropped: u64,
            errors: u64,
            resent: u64,
        }
        let h = &self.shared.health;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::to_value(Status {
            url: &self.url,
            ok: h.ok(),
            instance: &self.shared.instance,
            stream: STREAM_KEY,
            publisher_connected: h.publisher_up.load(Ordering::Relaxed),
            reader_connected: h.reader_up.load(Ordering::Relaxed),
            last_error: h.last_error.lock().clone(),
            waiting: get(&h.waiting),
            published: get(&h.published),
            relayed: get(&h.relayed),
            duplicates_skipped: get(&h.duplicates),
            gaps: get(&h.gaps),
            dropped: get(&h.dropped),
            errors: get(&h.errors),
            resent: get(&h.resent),
        })
        .unwrap_or_default()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.close();
    }
}

#[derive(Clone, Copy)]
enum Role {
    Publisher,
    Reader,
}

impl Shared {
    fn failed(&self, role: &str, e: &str) {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        let msg = format!("{role}: {e}");
        let msg = match self.target.secret() {
            Some(s) => msg.replace(s, "***"),
            None => msg,
        };
        let mut last = self.health.last_error.lock();
        if last.as_deref() != Some(msg.as_str()) {
            log::warn!("studio bus: Redis {msg}; serving this instance's jobs meanwhile, retrying");
            *last = Some(msg);
        }
    }

    fn recovered(&self) {
        if self.health.ok() {
            *self.health.last_error.lock() = None;
        }
    }

    /// Connects and reads the server's `run_id` (a restart without data shows as a new one).
    async fn connect(&self) -> std::result::Result<(Conn, String), String> {
        let mut c = Conn::open(&self.target).await?;
        let info = within(c.call(&[b"INFO", b"server"])).await?;
        let run_id = info
            .text()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok((c, run_id))
    }
}

async fn within<T>(
    f: impl std::future::Future<Output = std::result::Result<T, String>>,
) -> std::result::Result<T, String> {
    tokio::time::timeout(REPLY_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {} s", REPLY_TIMEOUT.as_secs())))
}

/// Waits `delay` unless told to stop; true when stopping.
async fn pause(delay: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = until_stopped(stopped) => {}
    }
    *stopped.borrow()
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across an await.
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

/// One entry as XADD fields.
fn xadd(conn: &mut Conn, instance: &str, (seq, time, event, view, preview): &Sent) {
    let (seq, time) = (seq.to_string(), time.to_string());
    let mut args: Vec<&[u8]> = vec![
        b"XADD",
        STREAM_KEY.as_bytes(),
        b"MAXLEN",
        b"~",
        STREAM_MAXLEN.as_bytes(),
        b"*",
        b"o",
        instance.as_bytes(),
        b"s",
        seq.as_bytes(),
        b"t",
        time.as_bytes(),
        b"e",
        event.as_bytes(),
        b"v",
        view.as_bytes(),
    ];
    if let Some(p) = preview {
        args.extend([b"p".as_slice(), p.as_ref()]);
    }
    conn.queue(&args);
}

/// Sends `n` pipelined commands and checks every reply.
async fn pipeline(conn: &mut Conn, n: usize) -> std::result::Result<(), String> {
    within(conn.flush()).await?;
    for _ in 0..n {
        if let Reply::Error(e) = within(conn.read()).await? {
            return Err(e);
        }
    }
    Ok(())
}

async fn publisher(shared: &Shared, mut stopped: watch::Receiver<bool>) {
    let health = &shared.health;
    let mut next_seq = 1u64;
    let mut sent: VecDeque<Sent> = VecDeque::new();
    let mut known_run: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        let stopping = *stopped.borrow();
        let (mut conn, run_id) = match shared.connect().await {
            Ok(c) => c,
            Err(e) => {
                health.publisher_up.store(false, Ordering::Relaxed);
                shared.failed("publishing", &e);
                if stopping || pause(backoff, &mut stopped).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if known_run.as_ref().is_some_and(|r| *r != run_id) && !sent.is_empty() {
            // Redis came back without its data: what readers may not have read is sent again (they drop copies).
            for chunk in sent.make_contiguous().chunks(BATCH) {
                for entry in chunk {
                    xadd(&mut conn, &shared.instance, entry);
                }
                if let Err(e) = pipeline(&mut conn, chunk.len()).await {
                    shared.failed("publishing", &e);
                    continue 'connect;
                }
                health.resent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            log::info!(
                "studio bus: Redis restarted without its data; sent the last {} events again",
                sent.len()
            );
        }
        known_run = Some(run_id);
        health.publisher_up.store(true, Ordering::Relaxed);
        shared.recovered();
        backoff = Duration::from_millis(100);
        loop {
            // Number and send what waits (numbers stay with their entries until Redis has them).
            let batch: Vec<Sent> = {
                let mut w = shared.waiting.lock();
                w.entries
                    .iter_mut()
                    .take(BATCH)
                    .map(|o| {
                        let seq = *o.seq.get_or_insert_with(|| {
                            next_seq += 1;
                            next_seq - 1
                        });
                        (seq, o.time, o.event.clone(), o.view.clone(), o.preview.clone())
                    })
                    .collect()
            };
            if batch.is_empty() {
                if *stopped.borrow() {
                    return;
                }
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = until_stopped(&mut stopped) => {}
                    // Idle: make sure the connection still works, so health tells the truth.
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {
                        if let Err(e) = within(conn.call(&[b"PING"])).await {
                            health.publisher_up.store(false, Ordering::Relaxed);
                            shared.failed("publishing", &e);
                            continue 'connect;
                        }
                    }
                }
                continue;
            }
            for entry in &batch {
                xadd(&mut conn, &shared.instance, entry);
            }
            if let Err(e) = pipeline(&mut conn, batch.len()).await {
                health.publisher_up.store(false, Ordering::Relaxed);
                shared.failed("publishing", &e);
                if *stopped.borrow() {
                    return; // closing: what Redis did not take stays unshared
                }
                continue 'connect;
            }
            let mut w = shared.waiting.lock();
            for _ in 0..batch.len() {
                if let Some(o) = w.entries.pop_front() {
                    w.bytes -= o.bytes();
                    let index = w.popped;
                    w.popped += 1;
                    let key = (o.job, o.class);
                    if w.newest.get(&key) == Some(&index) {
                        w.newest.remove(&key);
                    }
                }
            }
            health.waiting.store(w.entries.len() as u64, Ordering::Relaxed);
            drop(w);
            health.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for mut b in batch {
                // Kept to send again without its image: a window of previews would be too big to keep, and a
                // reader that missed one gets the job's next preview.
                b.4 = None;
                sent.push_back(b);
            }
            while sent.len() > RESEND_WINDOW {
                sent.pop_front();
            }
        }
    }
}

async fn reader(shared: &Shared, mut stopped: watch::Receiver<bool>) {
    let health = &shared.health;
    // From the stream's start: a new instance learns the jobs the others run now (entries it has shown before, in
    // a run before a restart, are recognised by the jobs' own sequence numbers).
    let mut last_id = "0-0".to_string();
    let mut known_run: Option<String> = None;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        if *stopped.borrow() {
            return;
        }
        let (mut conn, run_id) = match shared.connect().await {
            Ok(c) => c,
            Err(e) => {
                health.reader_up.store(false, Ordering::Relaxed);
                shared.failed("reading", &e);
                if pause(backoff, &mut stopped).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if known_run.as_ref().is_some_and(|r| *r != run_id) {
            last_id = "0-0".to_string(); // a new stream: its ids start over
        }
        known_run = Some(run_id);
        health.reader_up.store(true, Ordering::Relaxed);
        shared.recovered();
        backoff = Duration::from_millis(100);
        loop {
            let block = READ_BLOCK_MS.to_string();
            let count = BATCH.to_string();
            conn.queue(&[
                b"XREAD",
                b"COUNT",
                count.as_bytes(),
                b"BLOCK",
                block.as_bytes(),
                b"STREAMS",
                STREAM_KEY.as_bytes(),
                last_id.as_bytes(),
            ]);
            let reply = tokio::select! {
                r = within(async { conn.flush().await?; conn.read().await }) => r,
                _ = until_stopped(&mut stopped) => return,
            };
            let reply = match reply {
                Ok(Reply::Error(e)) | Err(e) => {
                    health.reader_up.store(false, Ordering::Relaxed);
                    shared.failed("reading", &e);
                    continue 'connect;
                }
                Ok(r) => r,
            };
            // [[key, [[id, [field, value, …]], …]]]
            for stream in reply.items() {
                let Some(entries) = stream.items().get(1) else { continue };
                for entry in entries.items() {
                    let [id, fields] = entry.items() else { continue };
                    if let Some(id) = id.text() {
                        last_id = id;
                    }
                    relay_entry(shared, fields.items(), &mut seen);
                }
            }
            if *stopped.borrow() {
                return;
            }
        }
    }
}

fn relay_entry(shared: &Shared, fields: &[Reply], seen: &mut HashMap<String, u64>) {
    let health = &shared.health;
    let mut f: HashMap<&str, String> = HashMap::new();
    let mut preview = None;
    for pair in fields.chunks(2) {
        if let [Reply::Bulk(Some(k)), Reply::Bulk(Some(p))] = pair {
            if k.as_slice() == b"p" {
                preview = Some(Bytes::copy_from_slice(p));
                continue;
            }
        }
        if let [Reply::Bulk(Some(k)), v] = pair {
            if let (Ok(k), Some(v)) = (std::str::from_utf8(k), v.text()) {
                let k: &str = match k {
                    "o" => "o",
                    "s" => "s",
                    "t" => "t",
                    "e" => "e",
                    "v" => "v",
                    _ => continue,
                };
                f.insert(k, v);
            }
        }
    }
    let (Some(origin), Some(seq), Some(event), Some(view)) = (
        f.remove("o"),
        f.get("s").and_then(|s| s.parse::<u64>().ok()),
        f.remove("e"),
        f.remove("v"),
    ) else {
        log::debug!("studio bus: an entry that is not ours is skipped");
        return;
    };
    if origin == shared.instance {
        return;
    }
    match seen.get(&origin) {
        Some(&last) if seq <= last => {
            health.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Some(&last) if seq > last + 1 => {
            let missed = seq - last - 1;
            health.gaps.fetch_add(missed, Ordering::Relaxed);
            log::warn!(
                "studio bus: {missed} events of instance {origin} never arrived (trimmed from the stream or lost \
                 with Redis); its jobs are whole again at their next event"
            );
        }
        _ => {}
    }
    seen.insert(origin.clone(), seq);
    let Ok(view) = serde_json::from_str::<JobView>(&view) else {
        log::debug!("studio bus: an entry whose job cannot be read is skipped");
        return;
    };
    if preview.is_none() && event.starts_with("{\"type\":\"preview\"") {
        // Sent again after Redis lost its data, without its image: the job's next preview replaces it anyway.
        return;
    }
    let time = f
        .get("t")
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(view.updated_at);
    let shown = shared.relay.publish_relayed(Relayed {
        instance: origin,
        seq,
        time,
        event,
        view,
        preview,
    });
    if shown {
        health.relayed.fetch_add(1, Ordering::Relaxed);
    } else {
        health.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}
