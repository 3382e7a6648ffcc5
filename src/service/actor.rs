//! The backend actor skeleton: how the hub reaches every backend (ComfyUI, Gradio, OpenAI, MCP) the same way.
//!
//! Each backend runs one actor task that reads a command channel (its own `Command` enum, which implements
//! [`ActorCommand`]). The hub keeps an [`ActorHandle`] per service and dispatches through the object-safe
//! [`Backend`] trait — cancel, reconnect, moving unposted jobs to a new address — without a match per kind. The
//! job invariant lives in the hub's table (`Shared`), not in each actor: the hub hands jobs over with
//! `Shared::hand_over` and ends them on removal and close; an actor only calls `Shared::claim_post` before it
//! posts, so a job the hub took back (moved or ended) is never posted by a stale actor. The actor's own "drain on
//! close" is then just stopping: its channel closes when the hub drops the handle.
use crate::tracker::{HandOver, Shared};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// What every backend actor's command enum offers the hub.
pub trait ActorCommand: Clone + Send + 'static {
    /// The kind of service, for messages.
    const KIND: &'static str;
    /// How a service of this kind is used, for errors that name the wrong one.
    const USAGE: &'static str;
    fn cancel(job_id: String) -> Self;
    fn reconnect() -> Self;
}

/// How the hub reaches one backend actor; `api` is what else the kind offers the hub (its HTTP client, caches).
pub struct ActorHandle<C, X = ()> {
    id: u64,
    commands: mpsc::UnboundedSender<C>,
    /// Start orders of jobs not yet posted, so a changed address can post them to the new actor. Pruned as jobs
    /// are posted or end.
    orders: Mutex<HashMap<String, C>>,
    pub api: X,
}

static NEXT_ACTOR: AtomicU64 = AtomicU64::new(1);

/// A fresh actor id (never 0, which the job table uses for "not handed to any actor").
pub fn next_actor_id() -> u64 {
    NEXT_ACTOR.fetch_add(1, Ordering::Relaxed)
}

/// Kept orders above this are checked against the job table and the posted/ended ones dropped.
const PRUNE_AT: usize = 32;

impl<C: ActorCommand> ActorHandle<C> {
    /// A handle for an actor that reads `commands`; `id` is what the actor passes to `Shared::claim_post`.
    pub fn new(id: u64, commands: mpsc::UnboundedSender<C>) -> ActorHandle<C> {
        ActorHandle::with_api(id, commands, ())
    }
}

impl<C: ActorCommand, X> ActorHandle<C, X> {
    pub fn with_api(id: u64, commands: mpsc::UnboundedSender<C>, api: X) -> ActorHandle<C, X> {
        ActorHandle {
            id,
            commands,
            orders: Mutex::new(HashMap::new()),
            api,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands a registered job to the actor. `posted`: the actor starts it at once (or it was posted before, as a
    /// tracked job), so it is never moved; otherwise the order is kept until the actor claims it.
    pub fn start(&self, shared: &Shared, job_id: &str, order: C, posted: bool) -> HandOver {
        if !posted {
            self.prune(shared);
        }
        shared.hand_over(job_id, self.id, posted, || {
            if !posted {
                self.orders.lock().insert(job_id.to_string(), order.clone());
            }
            let sent = self.commands.send(order).is_ok();
            if !sent {
                self.orders.lock().remove(job_id);
            }
            sent
        })
    }

    fn prune(&self, shared: &Shared) {
        let ids: Vec<String> = {
            let orders = self.orders.lock();
            if orders.len() < PRUNE_AT {
                return;
            }
            orders.keys().cloned().collect()
        };
        let keep: std::collections::HashSet<String> = shared.unposted_of(self.id, &ids).into_iter().collect();
        self.orders.lock().retain(|id, _| keep.contains(id));
    }

    /// Sends a command that is not a job's start (cancel, reconnect); false if the actor is gone.
    pub fn send(&self, command: C) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// The hub's one view of any backend actor.
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn usage(&self) -> &'static str;
    /// The id the actor claims posts with.
    fn actor_id(&self) -> u64;
    /// Asks the actor to cancel a job; false if the actor is gone.
    fn cancel(&self, job_id: &str) -> bool;
    /// Drop the connection and connect again at once; false if the actor is gone.
    fn reconnect(&self) -> bool;
    /// Sends the kept orders of `jobs` (re-owned to `to` in the job table) to `to`, an actor of the same kind.
    /// Returns the jobs that could not be delivered.
    fn forward(&self, jobs: &[String], to: &dyn Backend) -> Vec<String>;
    fn as_any(&self) -> &dyn Any;
}

impl<C: ActorCommand, X: Send + Sync + 'static> Backend for ActorHandle<C, X> {
    fn kind(&self) -> &'static str {
        C::KIND
    }

    fn usage(&self) -> &'static str {
        C::USAGE
    }

    fn actor_id(&self) -> u64 {
        self.id
    }

    fn cancel(&self, job_id: &str) -> bool {
        self.send(C::cancel(job_id.to_string()))
    }

    fn reconnect(&self) -> bool {
        self.send(C::reconnect())
    }

    fn forward(&self, jobs: &[String], to: &dyn Backend) -> Vec<String> {
        let Some(to) = to.as_any().downcast_ref::<ActorHandle<C, X>>() else {
            return jobs.to_vec();
        };
        let mut orders = self.orders.lock();
        let mut lost = Vec::new();
        for id in jobs {
            match orders.remove(id) {
                Some(order) => {
                    to.orders.lock().insert(id.clone(), order.clone());
                    if to.commands.send(order).is_err() {
                        to.orders.lock().remove(id);
                        lost.push(id.clone());
                    }
                }
                None => lost.push(id.clone()),
            }
        }
        lost
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::JobState;
    use crate::tracker::Submission;

    #[derive(Debug, Clone, PartialEq)]
    enum Cmd {
        Start(String),
        Cancel(String),
        Reconnect,
    }

    impl ActorCommand for Cmd {
        const KIND: &'static str = "test";
        const USAGE: &'static str = "test it";
        fn cancel(job_id: String) -> Self {
            Cmd::Cancel(job_id)
        }
        fn reconnect() -> Self {
            Cmd::Reconnect
        }
    }

    #[test]
    fn an_order_that_cannot_reach_its_actor_fails_the_job_at_once() {
        let shared = Shared::new(100, 10);
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let handle = ActorHandle::new(next_actor_id(), tx);
        shared.register("a", "svc", None, Submission::default());
        assert_eq!(
            handle.start(&shared, "a", Cmd::Start("a".into()), false),
            HandOver::Failed
        );
        let job = shared.job("a").map(|j| (j.state, j.error.map(|e| e.code)));
        assert_eq!(job, Some((JobState::Failed, Some("service_removed".to_string()))));
    }

    #[test]
    fn a_cancelled_job_is_never_handed_over_and_a_moved_job_is_not_claimed_by_its_old_actor() {
        let shared = Shared::new(100, 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let old = ActorHandle::new(next_actor_id(), tx);
        shared.register("a", "svc", None, Submission::default());
        assert!(shared.cancel_unsent("a"));
        assert_eq!(old.start(&shared, "a", Cmd::Start("a".into()), false), HandOver::Ended);
        assert!(rx.try_recv().is_err(), "nothing was sent");

        shared.register("b", "svc", None, Submission::default());
        assert_eq!(old.start(&shared, "b", Cmd::Start("b".into()), false), HandOver::Sent);
        assert_eq!(rx.try_recv().ok(), Some(Cmd::Start("b".into())));
        assert!(!shared.cancel_unsent("b"), "an actor holds it: the cancel goes there");
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let new = ActorHandle::new(next_actor_id(), tx2);
        let moved = shared.rehome("svc", new.actor_id(), "http://old");
        assert_eq!(moved, vec!["b".to_string()]);
        assert!(old.forward(&moved, &new).is_empty());
        assert_eq!(rx2.try_recv().ok(), Some(Cmd::Start("b".into())));
        assert!(
            !shared.claim_post("b", old.actor_id()),
            "the old actor may not post it any more"
        );
        assert!(shared.claim_post("b", new.actor_id()));
        // Posted now: a second address change cannot move it; it ends with a true reason.
        let (tx3, _rx3) = mpsc::unbounded_channel::<Cmd>();
        let third = ActorHandle::new(next_actor_id(), tx3);
        assert!(shared.rehome("svc", third.actor_id(), "http://new").is_empty());
        assert_eq!(
            shared.job("b").and_then(|j| j.error).map(|e| e.code),
            Some("service_removed".to_string())
        );
        let events: Vec<_> = shared.events.drain(10).into_iter().map(|e| e.kind.name()).collect();
        assert_eq!(events, vec!["job_cancelled", "job_failed"]);
    }
}
