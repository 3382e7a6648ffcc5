//! `sse_v1`…`sse_v3`: one `GET queue/data?session_hash=` reader per session carries every event of that session;
//! jobs register their `event_id` and get their messages through a channel. Messages for an event_id nobody has
//! registered yet (the join answer and the first messages race) wait in a bounded buffer. The reader ends on
//! `close_stream` when no job waits, reopens the stream when one still does (the server buffers per session), also
//! after a few `unexpected_error`s in a row, and fails every waiting job when they go on, on a lost session, a
//! broken stream or ~45 s of silence (heartbeats come every 15 s).
use super::http::GradioHttp;
use super::protocol::Message;
use crate::error::Error;
use crate::error::ErrorCode;
use crate::net::sse::SseDecoder;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// What a job hears from its session's stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Msg(Message),
    /// The stream failed; the job cannot learn how it ends.
    Lost(Error),
}

/// Unclaimed messages kept at most (per session).
const UNCLAIMED_CAP: usize = 2_000;
/// Reopens of the stream in a row that brought nothing, before the waiting jobs are failed.
const MAX_EMPTY_REOPENS: u32 = 20;
/// Queue failures in a row the reader reopens the stream after, before it fails the waiting jobs. Gradio 5 ends a
/// session's stream with `unexpected_error` (`KeyError: '<event id>'`) when a cancelled event's second
/// `process_completed` comes by (e.g. a job of ours joined while the cancel was on its way); the session's other
/// messages stay queued on the server, so a reopened stream carries on with them.
const MAX_FAILED_REOPENS: u32 = 3;

pub struct Session {
    pub hash: String,
    http: GradioHttp,
    idle: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<String, mpsc::UnboundedSender<StreamItem>>,
    /// Calls joining the queue (their event id not known yet).
    joining: usize,
    unclaimed: VecDeque<(String, Message)>,
    reader: Option<AbortHandle>,
}

/// A random session hash like the browser's (11 characters).
pub fn new_session_hash() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..11].to_string()
}

impl Session {
    pub fn new(hash: String, http: GradioHttp, idle: Duration) -> Arc<Session> {
        Arc::new(Session {
            hash,
            http,
            idle,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Starts listening for `event_id` (starting the reader when none runs). Call right after the join.
    pub fn register(self: &Arc<Self>, event_id: &str) -> mpsc::UnboundedReceiver<StreamItem> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock();
        let mut keep = VecDeque::with_capacity(inner.unclaimed.len());
        for (id, msg) in inner.unclaimed.drain(..) {
            if id == event_id {
                let _ = tx.send(StreamItem::Msg(msg));
            } else {
                keep.push_back((id, msg));
            }
        }
        inner.unclaimed = keep;
        inner.waiters.insert(event_id.to_string(), tx);
        if inner.reader.is_none() {
            let me = self.clone();
            let task = tokio::spawn(async move { me.read().await });
            inner.reader = Some(task.abort_handle());
        }
        rx
    }

    /// A call starts or stops joining the queue.
    fn joining(&self, delta: isize) {
        let mut inner = self.inner.lock();
        inner.joining = inner.joining.saturating_add_signed(delta);
    }

    /// Another call of ours is in this session (waiting on the stream, or joining the queue).
    pub fn shared_with_others(&self, event_id: &str) -> bool {
        let inner = self.inner.lock();
        inner.joining > 0 || inner.waiters.keys().any(|id| id != event_id)
    }

    pub fn unregister(&self, event_id: &str) {
        self.inner.lock().waiters.remove(event_id);
    }

    /// Stops the reader (service removed).
    pub fn shutdown(&self) {
        let mut inner = self.inner.lock();
        if let Some(r) = inner.reader.take() {
            r.abort();
        }
        inner.waiters.clear();
    }

    async fn read(self: Arc<Self>) {
        let mut empty_reopens = 0u32;
        let mut failed_reopens = 0u32;
        loop {
            let (delivered, result) = self.read_once().await;
            if delivered {
                empty_reopens = 0;
                failed_reopens = 0;
            }
            let stop = {
                let mut inner = self.inner.lock();
                match result {
                    Ok(()) if inner.waiters.is_empty() => {
                        inner.reader = None;
                        true
                    }
                    Ok(()) => {
                        if !delivered {
                            empty_reopens += 1;
                        }
                        if empty_reopens > MAX_EMPTY_REOPENS {
                            let e = Error::new(
                                ErrorCode::Protocol,
                                "the queue stream keeps closing without news of the job; the server may have lost it",
                            );
                            Self::fail_all(&mut inner, e);
                            true
                        } else {
                            false
                        }
                    }
                    Err(e)
                        if e.code == ErrorCode::ServerError
                            && !inner.waiters.is_empty()
                            && failed_reopens < MAX_FAILED_REOPENS =>
                    {
                        failed_reopens += 1;
                        log::debug!(
                            "queue stream {}: {}; reopening it for the jobs still waiting",
                            self.hash,
                            e.message
                        );
                        false
                    }
                    Err(e) => {
                        Self::fail_all(&mut inner, e);
                        true
                    }
                }
            };
            if stop {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fail_all(inner: &mut Inner, e: Error) {
        for (_, tx) in inner.waiters.drain() {
            let _ = tx.send(StreamItem::Lost(e.clone()));
        }
        inner.reader = None;
    }

    /// Reads one stream to its end; says whether it delivered something to a waiting job, and how it ended.
    async fn read_once(&self) -> (bool, Result<(), Error>) {
        let mut delivered = false;
        let result = self.read_stream(&mut delivered).await;
        (delivered, result)
    }

    async fn read_stream(&self, delivered: &mut bool) -> Result<(), Error> {
        let mut resp = self.http.queue_data(&self.hash).await?;
        let mut decoder = SseDecoder::new();
        loop {
            let chunk = match tokio::time::timeout(self.idle, resp.chunk()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorCode::Timeout,
                        format!(
                            "the queue stream was silent for {:.0} s (heartbeats should come every 15 s); the app \
                             seems gone",
                            self.idle.as_secs_f64()
                        ),
                    ))
                }
                Ok(Err(e)) => {
                    let e = e.without_url();
                    return Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "the queue stream broke off mid-job (the app stopped?): {}",
                            crate::error::root_cause(&e)
                        ),
                    )
                    .with_source(e));
                }
                Ok(Ok(c)) => c,
            };
            let datas = match &chunk {
                Some(bytes) => decoder.push(bytes)?,
                None => decoder.finish(),
            };
            for data in datas {
                let msg = match Message::parse(&data) {
                    Ok(m) => m,
                    Err(why) => {
                        log::debug!("queue stream {}: skipped {why}", self.hash);
                        continue;
                    }
                };
                match msg {
                    Message::Heartbeat => {}
                    Message::CloseStream => return Ok(()),
                    Message::UnexpectedError {
                        message,
                        session_not_found,
                    } => {
                        let (code, text) = if session_not_found {
                            (
                                ErrorCode::ServerRestarted,
                                "the app no longer knows this session (it was restarted?)".to_string(),
                            )
                        } else {
                            (ErrorCode::ServerError, format!("the app's queue failed: {message}"))
                        };
                        return Err(Error::new(code, text));
                    }
                    other => {
                        let Some(id) = other.event_id().map(str::to_string) else {
                            log::debug!("queue stream {}: {other:?} without event_id", self.hash);
                            continue;
                        };
                        *delivered |= self.dispatch(id, other);
                    }
                }
            }
            if chunk.is_none() {
                return Ok(());
            }
        }
    }

    fn dispatch(&self, id: String, msg: Message) -> bool {
        let terminal = matches!(msg, Message::Completed { .. });
        let mut inner = self.inner.lock();
        if let Some(tx) = inner.waiters.get(&id) {
            let sent = tx.send(StreamItem::Msg(msg)).is_ok();
            if terminal || !sent {
                inner.waiters.remove(&id);
            }
            return sent;
        }
        if inner.unclaimed.len() >= UNCLAIMED_CAP {
            inner.unclaimed.pop_front();
        }
        inner.unclaimed.push_back((id, msg));
        false
    }
}

/// How long a cancelled job waits for the server's confirmation before it is reported cancelled anyway.
pub const CANCEL_CONFIRM: Duration = Duration::from_secs(10);

/// Runs a call over the session's queue stream: join, then listen for its event_id.
pub async fn run(
    ctx: &mut super::job::JobCtx,
    control: &mut mpsc::UnboundedReceiver<super::job::Control>,
    session: &Arc<Session>,
    data: Vec<serde_json::Value>,
) -> super::job::Outcome {
    use super::job::{Control, Outcome};
    let body = serde_json::json!({
        "data": data,
        "event_data": null,
        "fn_index": ctx.endpoint.fn_index,
        "trigger_id": ctx.endpoint.trigger_id,
        "session_hash": session.hash,
    });
    session.joining(1);
    let joined = tokio::select! {
        joined = ctx.http.join(body) => joined.map_err(Outcome::Failed),
        Some(c) = control.recv() => Err(match c {
            Control::Cancel => Outcome::Cancelled,
            Control::Restarted(why) => Outcome::Failed(Error::new(ErrorCode::ServerRestarted, why)),
        }),
    };
    let event_id = match joined {
        Ok(id) => id,
        Err(outcome) => {
            session.joining(-1);
            return outcome;
        }
    };
    log::debug!("job {}: event_id {event_id} in session {}", ctx.job_id, session.hash);
    let mut rx = session.register(&event_id);
    session.joining(-1);
    let mut deadline: Option<tokio::time::Instant> = None;
    let outcome = loop {
        let wait_confirm = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            item = rx.recv() => match item {
                Some(StreamItem::Msg(m)) => {
                    if let Some(o) = ctx.on_message(m) {
                        break o;
                    }
                }
                Some(StreamItem::Lost(e)) => break if ctx.cancel_requested { Outcome::Cancelled } else { Outcome::Failed(e) },
                None => break Outcome::Failed(Error::new(
                    ErrorCode::ConnectionFailed,
                    "the queue stream was closed (the app restarted or the service was removed)",
                )),
            },
            c = control.recv() => match c {
                Some(Control::Cancel) if !ctx.cancel_requested => {
                    ctx.cancel_requested = true;
                    // Gradio (5.x) answers /cancel with a second `process_completed` for the event; while other events
                    // of the session are pending, its queue stream then fails (`KeyError: '<event id>'`) and every
                    // other job of ours in the session with it. So with others in the session, drop this one here.
                    if session.shared_with_others(&event_id) {
                        ctx.note("cancel", "other jobs of this service share its Gradio session, and cancelling in the \
                            app would break their queue stream: this job was dropped here but keeps running in the \
                            app until it finishes".into());
                        break Outcome::Cancelled;
                    }
                    match ctx.http.cancel(&session.hash, ctx.endpoint.fn_index, &event_id).await {
                        Ok(true) => deadline = Some(tokio::time::Instant::now() + CANCEL_CONFIRM),
                        Ok(false) => {
                            ctx.note("cancel", "this Gradio version has no /cancel (< 4.29): the job was dropped here but \
                                keeps running in the app until it finishes".into());
                            break Outcome::Cancelled;
                        }
                        Err(e) => {
                            ctx.note("cancel", format!("the app did not take the cancel ({}); the job may keep \
                                running there", e.message));
                            break Outcome::Cancelled;
                        }
                    }
                }
                Some(Control::Cancel) => {}
                Some(Control::Restarted(why)) => break Outcome::Failed(Error::new(ErrorCode::ServerRestarted, why)),
                None => break Outcome::Cancelled,
            },
            _ = wait_confirm => {
                ctx.note("cancel", "the app did not confirm the cancel within 10 s; reported cancelled anyway".into());
                break Outcome::Cancelled;
            }
        }
    };
    session.unregister(&event_id);
    match outcome {
        // A job we cancelled that finished anyway before the cancel took effect counts as completed.
        Outcome::Failed(_) if ctx.cancel_requested => Outcome::Cancelled,
        o => o,
    }
}
