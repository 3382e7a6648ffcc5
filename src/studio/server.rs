//! Starting and stopping the studio server: its hub and services, persistence, the event pump, the listener.
use super::auth::RateLimiter;
use super::bus::Bus;
use super::config::StudioConfig;
use super::relay::{JobView, Relay, RelayConfig, Sink};
use super::store::{Database, Store, StoreHealth};
use crate::error::{Error, ErrorCode, Result};
use crate::event::{EventKind, JobError, JobState};
use crate::hub::{Hub, HubConfig};
use crate::sim::{SimConfig, Simulator};
use axum::serve::ListenerExt;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub relay: Arc<Relay>,
    pub config: StudioConfig,
    pub store: Option<Arc<StoreHealth>>,
    /// The writer, for making a new job durable before its id is handed out.
    pub store_writer: Option<Arc<Store>>,
    pub database: String,
    /// Redis Streams, with `--redis`.
    pub bus: Option<Arc<Bus>>,
    pub limiter: RateLimiter,
    /// WebSocket connections open now.
    pub connections: AtomicUsize,
    pub refused_connections: AtomicUsize,
    pub started: Instant,
    pub shutdown: watch::Receiver<bool>,
    pub url: String,
}

/// A running studio server. `close()` (or dropping it) stops everything it started.
pub struct StudioServer {
    state: Arc<AppState>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    pump_stop: Arc<AtomicBool>,
    pump: Mutex<Option<JoinHandle<()>>>,
    store: Option<Arc<Store>>,
    bus: Option<Arc<Bus>>,
    simulator: Mutex<Option<Simulator>>,
    closed: AtomicBool,
}

fn bad(msg: String) -> Error {
    Error::new(ErrorCode::InvalidParameter, msg)
}

impl StudioServer {
    /// Starts the server and returns once it accepts connections.
    pub fn start(config: StudioConfig) -> Result<StudioServer> {
        config.check()?;
        let mut hub_config = HubConfig::default();
        if let Some(dir) = &config.output_dir {
            hub_config.output_dir = dir.clone();
        }
        let output_dir = hub_config.output_dir.clone();
        let hub = Arc::new(Hub::new(hub_config)?);

        // Persistence first: the relay continues the stream the last run left.
        let (store, loaded, database) = match config.database.as_deref() {
            Some("memory") | Some(":memory:") => (None, None, "memory".to_string()),
            other => {
                let database = match other {
                    Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                        Database::Postgres(url.to_string())
                    }
                    Some(p) => Database::Sqlite(std::path::PathBuf::from(
                        p.strip_prefix("sqlite://").or(p.strip_prefix("sqlite:")).unwrap_or(p),
                    )),
                    None => Database::Sqlite(output_dir.join("studio.sqlite3")),
                };
                let (store, loaded) = Store::open(&database, 10_000, config.history_events)?;
                if loaded.continued {
                    log::info!(
                        "studio: continuing stream {} from offset {}",
                        loaded.epoch,
                        loaded.next_offset
                    );
                } else {
                    log::info!(
                        "studio: new stream {} (clients resuming an older one get a snapshot)",
                        loaded.epoch
                    );
                }
                (Some(Arc::new(store)), Some(loaded), database.display())
            }
        };
        let relay_config = RelayConfig {
            history_events: config.history_events.max(1),
            outbox: super::relay::OutboxLimits {
                max_frames: config.outbox_max_frames.max(1),
                max_bytes: config.outbox_max_bytes.max(1024),
            },
            ..RelayConfig::default()
        };
        let sink = store.clone().map(|s| s as Arc<dyn Sink>);
        let relay = Arc::new(match loaded {
            Some(l) => Relay::new(relay_config, l.epoch, l.next_offset, l.jobs, l.history, sink),
            None => Relay::new(
                relay_config,
                uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
                1,
                Vec::new(),
                Vec::new(),
                None,
            ),
        });

        // Other instances over Redis, before any event: every one of this instance's events is shared, in order.
        let handle = hub.block_on(async { tokio::runtime::Handle::current() })?;
        let bus = match config.redis.as_deref() {
            Some(url) => Some(Arc::new(Bus::start(url, relay.clone(), &handle)?)),
            None => None,
        };

        // Services.
        let simulator = if config.simulator {
            let sim = Simulator::start(SimConfig {
                time_scale: 0.2,
                ..SimConfig::default()
            })?;
            hub.add_service("comfyui", &sim.url(), Some("simulator"), None)?;
            Some(sim)
        } else {
            None
        };
        for s in &config.services {
            hub.add_service(&s.kind, &s.url, s.name.as_deref(), s.token.clone())
                .map_err(|e| bad(format!("--service {}={}: {}", s.kind, s.url, e.message)))?;
        }
        for p in &config.pools {
            hub.add_pool(&p.name, &p.servers, p.options()?)
                .map_err(|e| bad(format!("--pool {}={}: {}", p.name, p.servers.join(","), e.message)))?;
        }
        if config.discover {
            let options = crate::discovery::DiscoveryOptions::default();
            for f in hub.discover(&crate::discovery::default_hosts(), &options)? {
                if let Some(kind) = f.service_kind {
                    if let Err(e) = hub.add_service(kind, &f.url, None, None) {
                        log::info!(
                            "studio: found {} at {} but did not add it: {}",
                            f.kind.as_str(),
                            f.url,
                            e.message
                        );
                    }
                }
            }
        }

        // The listener, on the hub's runtime.
        let host = config.host.trim_matches(['[', ']']).to_string();
        let host = if host == "localhost" {
            "127.0.0.1".to_string()
        } else {
            host
        };
        let listener = std::net::TcpListener::bind((host.as_str(), config.port)).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!(
                    "cannot listen on {}:{}: {e} (is another studio server running? pass --port)",
                    config.host, config.port
                ),
            )
        })?;
        raise_backlog(&listener);
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot read the listening address: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot configure the listener: {e}")))?;
        let url = match addr {
            SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        };
        let (stop, shutdown) = watch::channel(false);
        let state = Arc::new(AppState {
            hub: hub.clone(),
            relay: relay.clone(),
            limiter: RateLimiter::new(config.connect_rate_per_address),
            config,
            store: store.as_ref().map(|s| s.health.clone()),
            store_writer: store.clone(),
            database,
            bus: bus.clone(),
            connections: AtomicUsize::new(0),
            refused_connections: AtomicUsize::new(0),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            url,
        });
        let app = super::routes::router(state.clone());
        let mut graceful = shutdown.clone();
        handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("studio: cannot use the listener: {e}");
                    return;
                }
            };
            // No Nagle: a small progress frame must not wait for the ACK of the previous one (up to the peer's
            // delayed-ACK time, 40 ms) — what made one job's 5 000 subscribers slow in the benchmark.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = graceful.wait_for(|stop| *stop).await.map(|_| ());
                });
            if let Err(e) = serve.await {
                log::error!("studio: the server stopped: {e}");
            }
        });
        // Periodic cleanup (the brief's WEBSOCKET_CLEANUP_INTERVAL): idle rate-limit buckets.
        let (cleanup_state, mut cleanup_stop) = (state.clone(), shutdown.clone());
        handle.spawn(async move {
            let mut tick = tokio::time::interval(cleanup_state.config.cleanup_interval());
            loop {
                tokio::select! {
                    _ = tick.tick() => cleanup_state.limiter.cleanup(),
                    _ = async { let _ = cleanup_stop.wait_for(|s| *s).await.map(|_| ()); } => break,
                }
            }
        });

        // One ping timer for every connection (WEBSOCKET_PING_INTERVAL): each pings its peer and closes it when
        // it stayed silent past WEBSOCKET_CONNECTION_TIMEOUT — no timer per connection.
        let (ping_state, mut ping_stop) = (state.clone(), shutdown.clone());
        handle.spawn(async move {
            let period = ping_state.config.ping_interval();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    _ = tick.tick() => ping_state.relay.ping_all(),
                    _ = async { let _ = ping_stop.wait_for(|s| *s).await.map(|_| ()); } => break,
                }
            }
        });

        let pump_stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let (hub, relay, stop) = (hub.clone(), relay.clone(), pump_stop.clone());
            std::thread::Builder::new()
                .name("director-link-studio-pump".into())
                .spawn(move || pump_events(&hub, &relay, &stop))
                .map_err(|e| Error::new(ErrorCode::Io, format!("cannot start the event pump: {e}")))?
        };
        let server = StudioServer {
            state,
            addr,
            stop,
            pump_stop,
            pump: Mutex::new(Some(pump)),
            store,
            bus,
            simulator: Mutex::new(simulator),
            closed: AtomicBool::new(false),
        };
        server.pick_up_unfinished();
        log::info!("studio: listening on {}", server.url());
        Ok(server)
    }

    /// Jobs a previous run left unfinished: followed again where the hub can (ComfyUI), else ended with the
    /// reason, so every job still reaches exactly one final state.
    fn pick_up_unfinished(&self) {
        let hub = &self.state.hub;
        for view in self.state.relay.jobs(None, None) {
            // Another instance's jobs are that instance's to follow.
            if view.state.is_terminal() || view.external || view.instance.is_some() {
                continue;
            }
            let kind = hub.service_kind(&view.service).map(|(k, _)| k);
            let tracked = match kind.as_deref() {
                Some("comfyui") => {
                    // A job the server never confirmed may not be there: then it fails `not_posted`, truthfully.
                    let posted = !matches!(view.state, JobState::Pending | JobState::Submitting);
                    hub.track_with(&view.service, &view.job_id, view.tag.clone(), posted)
                        .is_ok()
                }
                _ => false,
            };
            if !tracked {
                let why = match kind {
                    None => format!(
                        "the studio server restarted and its service {:?} is no longer configured; run the job again",
                        view.service
                    ),
                    Some(k) => format!(
                        "the studio server restarted while this job ran on {:?} ({k}), whose jobs cannot be followed \
                         across a restart; run it again",
                        view.service
                    ),
                };
                self.state.relay.publish(
                    &EventKind::JobFailed {
                        job_id: view.job_id.clone(),
                        error: Box::new(JobError::simple("studio_restarted", why)),
                    },
                    crate::event::now_epoch(),
                    None,
                );
            }
        }
    }

    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.state.hub
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.state.relay
    }

    /// The simulator's URL when `--simulator` started one.
    pub fn simulator_url(&self) -> Option<String> {
        self.simulator.lock().as_ref().map(Simulator::url)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops accepting, closes every connection, writes what is pending and stops the hub. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.stop.send(true);
        self.state.relay.close_all();
        self.pump_stop.store(true, Ordering::Release);
        if let Some(p) = self.pump.lock().take() {
            let _ = p.join();
        }
        // What waits for Redis goes out (if it answers) before the hub stops.
        if let Some(bus) = &self.bus {
            bus.close();
        }
        // Jobs still running stay unfinished in the database (not failed `hub_closed`): the next run follows them.
        self.state.hub.close();
        if let Some(store) = &self.store {
            store.close();
        }
        if let Some(mut sim) = self.simulator.lock().take() {
            sim.stop();
        }
    }

    /// Waits until every change so far is in the database (tests, and before a planned stop).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.store.as_ref().is_none_or(|s| s.flush(timeout))
    }

    /// Blocks until `close()` is called elsewhere or `timeout` passes; true when closed.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_closed() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

impl Drop for StudioServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves the hub's events into the relay until told to stop.
fn pump_events(hub: &Hub, relay: &Relay, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        if !hub.wait_for_events(Duration::from_millis(100)) {
            continue;
        }
        for ev in hub.poll(4096) {
            let preview = match &ev.kind {
                EventKind::Preview { data, .. } => Some(data.clone()),
                _ => None,
            };
            relay.publish(&ev.kind, ev.time, preview);
        }
    }
}

/// Registers a job the hub accepted and waits until it is in the database, so a server killed right after
/// answering still knows (and follows) the job when it starts again.
pub fn register(state: &AppState, job_id: &str, service: &str, tag: Option<String>) {
    state.relay.register_job(JobView::new(job_id, service, tag, false));
    if let Some(store) = &state.store_writer {
        // Not while the database is failing: the job is served from memory, its row follows when it is back.
        if store.health.last_error.lock().is_none() {
            store.flush(Duration::from_secs(5));
        }
    }
}

/// std listens with a backlog of 128: a reconnect storm of thousands of clients overflows it and their connects
/// stall on SYN retries. Listening again on the bound socket raises it (the kernel caps it at somaxconn).
fn raise_backlog(listener: &std::net::TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: listen() on a socket this function borrows; it only changes the queue length.
        unsafe {
            libc::listen(listener.as_raw_fd(), 8192);
        }
    }
    #[cfg(not(unix))]
    let _ = listener;
}
