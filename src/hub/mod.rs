//! The public Rust API. The hub owns a tokio runtime on named background threads, the service registry, the job
//! table and the event queue. Nothing here waits on the network: commands go down channels to service actors.
//!
//! One file per concern: `registry` (services and their actors), `submit` (ComfyUI and WanGP jobs, tracking,
//! resubmitting), `calls` (chats and Gradio calls), `cancel`, `schema` (node schemas), `uploads`, `discovery`.
//! The invariant "every registered job ends exactly once" is kept here and in the job table (`Shared`): the hub
//! ends the jobs of a removed service (`service_removed`) and of a closed hub (`hub_closed`), fails a job whose
//! order cannot reach its actor, and cancels a job whose workflow is still being converted before it is sent.
mod calls;
mod cancel;
mod config;
mod discovery;
mod pool;
mod registry;
mod schema;
mod submit;
mod uploads;

pub use crate::pool::PoolOptions;
pub use config::{default_output_dir, HubConfig, ServiceAdded, ServiceOptions, Snapshot, KINDS};
pub use pool::{PoolJobView, PoolServerSnapshot, PoolSnapshot};
pub use schema::Schema;

use crate::error::{Error, ErrorCode, Result};
use crate::event::{Event, JobState};
use crate::service::ServiceSnapshot;
use crate::tracker::{JobSnapshot, Shared};
use parking_lot::Mutex;
use registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Hub {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    registry: Arc<Registry>,
    http: reqwest::Client,
    config: HubConfig,
    closed: Arc<AtomicBool>,
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Hub> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .max_blocking_threads(8)
            .thread_name("director-link")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot start the background runtime: {e}")))?;
        // One pooled client for every service; a native client sends no Origin header (ComfyUI would 403 it).
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("director-link/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot create the HTTP client: {e}")))?;
        let shared = Arc::new(Shared::new(config.event_capacity, config.finished_jobs));
        shared.events.set_budget_bytes(config.event_budget_bytes);
        Ok(Hub {
            shared,
            runtime: Mutex::new(Some(runtime)),
            registry: Arc::new(Registry::default()),
            http,
            config,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::new(ErrorCode::Closed, "this hub is closed; create a new Hub"))
        } else {
            Ok(())
        }
    }

    /// Takes up to `max` waiting events. Never blocks.
    pub fn poll(&self, max: usize) -> Vec<Event> {
        self.shared.events.drain(max)
    }

    /// `poll` into a buffer the caller reuses (appends up to `max` events).
    pub fn poll_into(&self, out: &mut Vec<Event>, max: usize) {
        self.shared.events.drain_into(out, max)
    }

    /// Blocks up to `timeout` until an event waits (for scripts; the addon uses `poll`).
    pub fn wait_for_events(&self, timeout: Duration) -> bool {
        self.shared.events.wait_nonempty(timeout)
    }

    pub fn job(&self, job_id: &str) -> Option<JobSnapshot> {
        self.shared.job(job_id)
    }

    pub fn job_state(&self, job_id: &str) -> Option<JobState> {
        self.shared.job_state(job_id)
    }

    /// Blocks until the job ends or `timeout` passes.
    pub fn wait(&self, job_id: &str, timeout: Option<Duration>) -> Result<JobSnapshot> {
        let closed = self.closed.clone();
        let snap = self
            .shared
            .wait_terminal(job_id, timeout, &|| closed.load(Ordering::Acquire))
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if snap.state.is_terminal() {
            return Ok(snap);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::Closed, "the hub was closed while waiting"));
        }
        let secs = timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0);
        Err(Error::new(
            ErrorCode::Timeout,
            format!(
                "job {job_id} did not finish within {secs:.1} s (it is {}); wait longer or cancel it",
                snap.state.as_str()
            ),
        ))
    }

    pub fn snapshot(&self) -> Snapshot {
        let services: Vec<ServiceSnapshot> = self
            .registry
            .services
            .lock()
            .values()
            .map(|h| h.status.snapshot())
            .collect();
        Snapshot {
            studio: crate::service::StudioHealth::of(&services),
            services,
            pools: self.pools(),
            jobs: self.shared.jobs(),
            events: self.shared.events.stats(),
        }
    }

    /// Runs a future on the hub's runtime and blocks for its result (CLI helpers; never called from the UI).
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        let handle = {
            let rt = self.runtime.lock();
            rt.as_ref()
                .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?
                .handle()
                .clone()
        };
        Ok(handle.block_on(fut))
    }

    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends every unfinished job (`hub_closed`), stops every task and joins every thread. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let services = {
            let mut services = self.registry.services.lock();
            let taken = std::mem::take(&mut *services);
            // Under the registry lock, like `remove_service`: nothing can be handed over after this.
            let ended = self.shared.fail_unfinished(
                None,
                ErrorCode::Closed,
                "the hub was closed before the job ended; submit it again with a new hub",
            );
            if ended > 0 {
                log::info!("hub closed; {ended} unfinished job(s) ended hub_closed");
            }
            taken
        };
        drop(services);
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.shared.wake_all();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.close();
    }
}
