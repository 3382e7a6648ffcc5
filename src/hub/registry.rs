//! The service registry: adding, re-addressing and removing services, and starting each one's backend actor.
//! The hub holds every service as an `ActorHandle` behind the `Backend` trait; the typed handle (found with
//! `ServiceHandle::typed`) adds the kind's own HTTP API for the few calls that need it (node schemas, uploads,
//! models).
use super::config::{canonical_kind, default_name, default_port, ServiceAdded, ServiceOptions, KINDS};
use super::config::{GRADIO_CONNECT_WAIT, STREAM_IDLE};
use super::schema::SchemaSlot;
use super::Hub;
use crate::comfy::http::ComfyHttp;
use crate::comfy::service::{ComfyConfig, ComfyService, Command as ComfyCommand};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::gradio::http::GradioHttp;
use crate::gradio::service::{Command as GradioCommand, GradioOptions, GradioService};
use crate::mcp::client::McpClient;
use crate::mcp::service::{Command as WanGpCommand, WanGpConfig, WanGpService};
use crate::openai::http::OpenAiHttp;
use crate::openai::service::{Command as OpenAiCommand, OpenAiConfig, OpenAiService};
use crate::service::actor::next_actor_id;
use crate::service::{ActorCommand, ActorHandle, Backend, ServiceSnapshot, ServiceStatus};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A ComfyUI actor and its HTTP API.
pub(super) type ComfyLink = ActorHandle<ComfyCommand, ComfyApi>;
pub(super) type OpenAiLink = ActorHandle<OpenAiCommand, OpenAiHttp>;
pub(super) type GradioLink = ActorHandle<GradioCommand>;
pub(super) type WanGpLink = ActorHandle<WanGpCommand>;

pub(super) struct ComfyApi {
    pub http: ComfyHttp,
    /// `/object_info` is ~0.5 MB and changes only when nodes are installed: fetched once, refreshed on request.
    pub schema: SchemaSlot,
    /// SHA-256 of uploaded bytes → the name the server gave them: the same file is never uploaded twice.
    pub uploads: Arc<Mutex<HashMap<String, String>>>,
}

pub(super) struct ServiceHandle {
    pub kind: String,
    /// The kind as the caller spelled it (`rvc`), for its default port when the address changes.
    requested_kind: String,
    pub endpoint: Endpoint,
    pub status: Arc<ServiceStatus>,
    pub actor: Box<dyn Backend>,
    token: Option<String>,
    options: ServiceOptions,
}

impl ServiceHandle {
    /// A pool's handle: its scheduler as the actor, its first server's address as its address.
    pub fn pool(endpoint: Endpoint, status: Arc<ServiceStatus>, actor: Box<dyn Backend>) -> ServiceHandle {
        ServiceHandle {
            kind: "comfyui".to_string(),
            requested_kind: "comfyui".to_string(),
            endpoint,
            status,
            actor,
            token: None,
            options: ServiceOptions::default(),
        }
    }

    /// The service's actor as the backend `L` (e.g. `ComfyLink`), or a `wrong_service` error that says what it is.
    pub fn typed<L: 'static>(&self, name: &str, needs: &str) -> Result<&L> {
        self.actor.as_any().downcast_ref::<L>().ok_or_else(|| {
            Error::new(
                ErrorCode::WrongService,
                format!(
                    "service {name:?} is a {} service; this needs {needs} ({})",
                    self.kind,
                    self.actor.usage()
                ),
            )
        })
    }
}

/// The services by name. Shared with the runtime's tasks (a converted workflow is handed over by name, so it
/// reaches whichever actor holds the name then). Lock order: registry, then the job table.
#[derive(Default)]
pub(super) struct Registry {
    pub services: Mutex<BTreeMap<String, ServiceHandle>>,
}

impl Registry {
    pub fn unknown_in(services: &BTreeMap<String, ServiceHandle>, name: &str) -> Error {
        let known: Vec<String> = services.keys().cloned().collect();
        let hint = if known.is_empty() {
            "no services are added yet; call add_service first".to_string()
        } else {
            format!("known services: {}", known.join(", "))
        };
        Error::new(ErrorCode::UnknownService, format!("no service named {name:?}; {hint}"))
    }
}

impl Hub {
    /// Adds a service and starts connecting in the background. Returns at once.
    pub fn add_service(
        &self,
        kind: &str,
        url: &str,
        name: Option<&str>,
        token: Option<String>,
    ) -> Result<ServiceAdded> {
        self.add_service_with(kind, url, name, token, ServiceOptions::default())
    }

    /// `add_service` with per-service options.
    pub fn add_service_with(
        &self,
        kind: &str,
        url: &str,
        name: Option<&str>,
        token: Option<String>,
        options: ServiceOptions,
    ) -> Result<ServiceAdded> {
        self.ensure_open()?;
        let requested = kind.trim().to_ascii_lowercase();
        let kind = canonical_kind(&requested).to_string();
        if !KINDS.contains(&kind.as_str()) {
            return Err(Error::new(
                ErrorCode::UnknownService,
                format!(
                    "unknown service kind {kind:?}; this build supports: {}",
                    KINDS.join(", ")
                ),
            ));
        }
        let endpoint = Endpoint::parse(url, default_port(&requested))?;
        let name = match name.map(str::trim) {
            Some("") => return Err(Error::new(ErrorCode::InvalidUrl, "a service name cannot be empty")),
            Some(n) => n.to_string(),
            None => default_name(&requested, &endpoint),
        };
        let token = token.filter(|t| !t.is_empty());
        let mut services = self.registry.services.lock();
        if services.contains_key(&name) {
            return Err(Error::new(
                ErrorCode::DuplicateService,
                format!("a service named {name:?} exists already; pass another name= or remove it first"),
            ));
        }
        let handle = self.start_service(&name, &kind, &requested, endpoint, token, options)?;
        let added = ServiceAdded {
            name: name.clone(),
            url: handle.endpoint.base().to_string(),
            understood: handle.endpoint.describe(),
        };
        services.insert(name, handle);
        Ok(added)
    }

    /// Points a service at a new address, keeping its name, kind, token and options. Jobs that were never posted
    /// (e.g. waiting for a server that was never reached) are posted to the new address, in submission order;
    /// jobs that may have reached the old address end `service_removed` (the new one cannot know them). The old
    /// connection is closed. The same address again changes nothing. Returns at once.
    pub fn set_service_url(&self, name: &str, url: &str) -> Result<ServiceAdded> {
        self.ensure_open()?;
        let mut services = self.registry.services.lock();
        let old = services
            .get(name)
            .ok_or_else(|| Registry::unknown_in(&services, name))?;
        if Hub::is_pool(&services, name) {
            return Err(Error::new(
                ErrorCode::WrongService,
                format!("{name:?} is a pool; remove it and add it again with the new servers"),
            ));
        }
        let endpoint = Endpoint::parse(url, default_port(&old.requested_kind))?;
        if endpoint.base() == old.endpoint.base() {
            return Ok(ServiceAdded {
                name: name.to_string(),
                url: endpoint.base().to_string(),
                understood: endpoint.describe(),
            });
        }
        let (kind, requested) = (old.kind.clone(), old.requested_kind.clone());
        let (token, options) = (old.token.clone(), old.options.clone());
        let new = self.start_service(name, &kind, &requested, endpoint, token, options)?;
        let old_url = old.endpoint.base().to_string();
        let moved = self.shared.rehome(name, new.actor.actor_id(), &old_url);
        for id in old.actor.forward(&moved, &*new.actor) {
            self.shared.fail_job(
                name,
                &id,
                crate::event::JobError::simple(
                    ErrorCode::ServiceRemoved.as_str(),
                    "the job could not be moved to the service's new address; resubmit it",
                ),
            );
        }
        if !moved.is_empty() {
            log::info!(
                "{name}: address changed; {} unposted job(s) go to {}",
                moved.len(),
                new.endpoint.base()
            );
        }
        let added = ServiceAdded {
            name: name.to_string(),
            url: new.endpoint.base().to_string(),
            understood: new.endpoint.describe(),
        };
        // Dropping the old handle closes its actor's channel: it stops.
        services.insert(name.to_string(), new);
        Ok(added)
    }

    /// Stops a service's connection; its unfinished jobs end `service_removed` (exactly once, here).
    pub fn remove_service(&self, name: &str) -> Result<()> {
        let mut services = self.registry.services.lock();
        let Some(handle) = services.remove(name) else {
            return Err(Registry::unknown_in(&services, name));
        };
        // Under the registry lock: a conversion finishing now finds the service gone and its job already ended.
        let ended = self.shared.fail_unfinished(
            Some(name),
            ErrorCode::ServiceRemoved,
            &format!("its service {name:?} was removed before the job ended"),
        );
        if ended > 0 {
            log::info!("{name}: removed; {ended} unfinished job(s) ended service_removed");
        }
        drop(handle);
        Ok(())
    }

    pub fn service_names(&self) -> Vec<String> {
        self.registry.services.lock().keys().cloned().collect()
    }

    pub fn service(&self, name: &str) -> Option<ServiceSnapshot> {
        self.registry.services.lock().get(name).map(|h| h.status.snapshot())
    }

    pub fn service_kind(&self, name: &str) -> Option<(String, Endpoint)> {
        self.registry
            .services
            .lock()
            .get(name)
            .map(|h| (h.kind.clone(), h.endpoint.clone()))
    }

    /// Builds a service's status and starts its actor (the one place that knows which actor serves which kind).
    fn start_service(
        &self,
        name: &str,
        kind: &str,
        requested: &str,
        endpoint: Endpoint,
        token: Option<String>,
        options: ServiceOptions,
    ) -> Result<ServiceHandle> {
        let client_id = format!("director-link-{}", uuid::Uuid::new_v4().simple());
        let status = Arc::new(ServiceStatus::new(name, kind, endpoint.base(), &client_id));
        let actor: Box<dyn Backend> = match kind {
            "openai" => Box::new(self.spawn_openai(name, &endpoint, token.clone(), &status)?),
            "wangp_mcp" => Box::new(self.spawn_wangp(name, &endpoint, &status)?),
            "gradio" => Box::new(self.spawn_gradio(name, &endpoint, token.clone(), &status)?),
            _ => Box::new(self.spawn_comfy(name, &endpoint, token.clone(), &status, client_id, &options, None)?),
        };
        Ok(ServiceHandle {
            kind: kind.to_string(),
            requested_kind: requested.to_string(),
            endpoint,
            status,
            actor,
            token,
            options,
        })
    }

    pub(super) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        let rt = self.runtime.lock();
        let rt = rt
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?;
        rt.spawn(fut);
        Ok(())
    }

    fn channel<C: ActorCommand>() -> (mpsc::UnboundedSender<C>, mpsc::UnboundedReceiver<C>, u64) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, rx, next_actor_id())
    }

    fn spawn_openai(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
    ) -> Result<OpenAiLink> {
        let key = crate::openai::http::ApiKey::given_or_env(token);
        let http =
            OpenAiHttp::new(self.http.clone(), endpoint.clone(), key)?.with_latency(status.http_latency_window());
        let (tx, rx, id) = Self::channel();
        let actor = OpenAiService::new(
            name,
            http.clone(),
            self.shared.clone(),
            status.clone(),
            OpenAiConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                stream_idle: STREAM_IDLE,
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(ActorHandle::with_api(id, tx, http))
    }

    fn spawn_wangp(&self, name: &str, endpoint: &Endpoint, status: &Arc<ServiceStatus>) -> Result<WanGpLink> {
        let bad = |e: url::ParseError| Error::new(ErrorCode::InvalidUrl, format!("{}: {e}", endpoint.base()));
        let mut url = url::Url::parse(endpoint.base()).map_err(bad)?;
        // A bare server address means FastMCP's default path; a pasted ".../mcp" is kept as given.
        if url.path() == "/" {
            url = url.join(crate::mcp::DEFAULT_PATH).map_err(bad)?;
        }
        let (tx, rx, id) = Self::channel();
        let actor = WanGpService::new(
            name,
            McpClient::new(self.http.clone(), url),
            self.shared.clone(),
            status.clone(),
            WanGpConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                poll_interval: self.config.poll_interval.min(Duration::from_millis(500)),
                output_dir: self.config.output_dir.clone(),
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(ActorHandle::new(id, tx))
    }

    fn spawn_gradio(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
    ) -> Result<GradioLink> {
        let http =
            GradioHttp::new(self.http.clone(), endpoint.clone(), token)?.with_latency(status.http_latency_window());
        let (tx, rx, id) = Self::channel();
        let actor = GradioService::new(
            name,
            http,
            self.shared.clone(),
            status.clone(),
            GradioOptions {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                idle: crate::gradio::service::IDLE,
                output_dir: self.config.output_dir.clone(),
                connect_wait: GRADIO_CONNECT_WAIT,
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(ActorHandle::new(id, tx))
    }

    /// `pool`: the pool this server serves (its jobs' events then name the pool).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_comfy(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
        client_id: String,
        options: &ServiceOptions,
        pool: Option<&str>,
    ) -> Result<ComfyLink> {
        let (tx, rx, id) = Self::channel();
        let http = ComfyHttp::new(self.http.clone(), endpoint.clone(), token.clone())
            .with_latency(status.http_latency_window());
        let actor = ComfyService::new(
            name,
            http.clone(),
            token,
            self.shared.clone(),
            status.clone(),
            ComfyConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                breaker: self.config.breaker.clone(),
                poll_interval: self.config.poll_interval,
                resubmit_on_restart: options.resubmit_on_restart,
                output_dir: self.config.output_dir.clone(),
                connect_timeout: self.config.connect_timeout,
                actor_id: id,
                pool: pool.map(str::to_string),
            },
            client_id,
            rx,
        );
        self.spawn(actor.run())?;
        Ok(ActorHandle::with_api(
            id,
            tx,
            ComfyApi {
                http,
                schema: Arc::new(Mutex::new(None)),
                uploads: Arc::default(),
            },
        ))
    }
}
