//! `Hub` and `Job` for Python: thin wrappers over the core hub; waits release the GIL.
use super::convert::{from_py, ser_to_py};
use super::errors::{job_error, IntoPyResult};
use super::events::to_python;
use crate::event::JobState;
use crate::hub::{Hub as CoreHub, HubConfig};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Below this a single preview would not fit: such a budget is a mistake, not a wish.
const MIN_EVENT_BUDGET: usize = 64 << 10;

fn duration(secs: f64, what: &str) -> PyResult<Duration> {
    if (0.0..1e9).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a number of seconds ≥ 0, not {secs}"
        )))
    }
}

/// The link to your AI servers. Owns background threads; `close()` (or `with Hub() as hub:`) stops them.
#[pyclass(module = "director_link._native", frozen, subclass)]
pub struct Hub {
    inner: Arc<CoreHub>,
    /// `poll()`'s batch buffer, kept between calls (a consumer polls in a loop).
    batch: parking_lot::Mutex<Vec<crate::event::Event>>,
}

/// Largest batch buffer kept between `poll()` calls.
const KEEP_BATCH: usize = 4096;

#[pymethods]
impl Hub {
    #[new]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, one per setting.
    #[pyo3(signature = (output_dir=None, *, heartbeat=10.0, connect_timeout=10.0, event_capacity=10_000, event_budget_bytes=67_108_864, reconnect_initial=1.0, reconnect_max=30.0, poll_interval=1.0, breaker_threshold=5, breaker_window=60.0, breaker_open_for=30.0, finished_jobs=1000))]
    fn new(
        py: Python<'_>,
        output_dir: Option<PathBuf>,
        heartbeat: f64,
        connect_timeout: f64,
        event_capacity: usize,
        event_budget_bytes: usize,
        reconnect_initial: f64,
        reconnect_max: f64,
        poll_interval: f64,
        breaker_threshold: usize,
        breaker_window: f64,
        breaker_open_for: f64,
        finished_jobs: usize,
    ) -> PyResult<Hub> {
        let mut config = HubConfig::default();
        if let Some(dir) = output_dir {
            config.output_dir = dir;
        }
        config.heartbeat = duration(heartbeat, "heartbeat")?.max(Duration::from_millis(5));
        config.connect_timeout = duration(connect_timeout, "connect_timeout")?.max(Duration::from_millis(50));
        config.event_capacity = event_capacity;
        if event_budget_bytes < MIN_EVENT_BUDGET {
            return Err(PyValueError::new_err(format!(
                "event_budget_bytes must be at least {MIN_EVENT_BUDGET} (64 KiB), not {event_budget_bytes}"
            )));
        }
        // The signature's default is the literal 64 MiB (so Python sees it); keep it equal to the core's default.
        debug_assert_eq!(crate::event::DEFAULT_EVENT_BUDGET, 64 << 20);
        // The signature's default is the literal 67_108_864 (so Python sees it); keep it equal to the core's.
        debug_assert_eq!(crate::event::DEFAULT_EVENT_BUDGET, 67_108_864);
        config.event_budget_bytes = event_budget_bytes;
        config.backoff.initial = duration(reconnect_initial, "reconnect_initial")?;
        config.backoff.max = duration(reconnect_max, "reconnect_max")?.max(config.backoff.initial);
        config.poll_interval = duration(poll_interval, "poll_interval")?.max(Duration::from_millis(50));
        config.breaker.threshold = breaker_threshold;
        config.breaker.window = duration(breaker_window, "breaker_window")?;
        config.breaker.open_for = duration(breaker_open_for, "breaker_open_for")?;
        // The signature's default is the literal 1000 (so Python sees it); keep it equal to the core's default.
        debug_assert_eq!(crate::tracker::DEFAULT_FINISHED_CAP, 1000);
        config.finished_jobs = finished_jobs.max(1);
        let hub = Arc::new(py.detach(|| CoreHub::new(config)).py(py)?);
        super::logging::track(&hub);
        // Read the Python logger's level now, so records of this hub's first moments are not filtered by a stale one.
        super::logging::refresh_level(py);
        Ok(Hub {
            inner: hub,
            batch: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Where results are written.
    #[getter]
    fn output_dir(&self) -> String {
        self.inner.config().output_dir.to_string_lossy().into_owned()
    }

    /// Adds a server and starts connecting in the background; returns its name at once.
    ///
    /// `url` may be `host`, `host:port` or `http(s)://host:port/base/`. Raises `InvalidUrlError` for an address
    /// that cannot be used. `token` is sent as a bearer token (never logged). With `resubmit_on_restart`, a job
    /// that a server restart lost is sent again automatically instead of failing with `server_restarted`.
    ///
    /// Kinds: "comfyui" (default port 8188), "openai" (alias "litellm"; default port 4000; the URL may also
    /// end in `/v1` for Ollama, LM Studio or vLLM) and "gradio" (aliases "wan2gp", "wangp", "rvc", "audioldm";
    /// default port 7860, RVC 7865). For "openai" without `token`, the key is read from the environment variable
    /// `DIRECTOR_LINK_OPENAI_KEY`. For "gradio", `token="user:password"` logs in to an app launched with `auth=`.
    #[pyo3(signature = (kind, url, name=None, token=None, *, resubmit_on_restart=false))]
    fn add_service(
        &self,
        py: Python<'_>,
        kind: &str,
        url: &str,
        name: Option<&str>,
        token: Option<String>,
        resubmit_on_restart: bool,
    ) -> PyResult<String> {
        let options = crate::hub::ServiceOptions { resubmit_on_restart };
        let added = self.inner.add_service_with(kind, url, name, token, options).py(py)?;
        log::info!("service {} at {}", added.name, added.understood);
        Ok(added.name)
    }

    /// Adds a pool of ComfyUI servers behind one service name; returns the name at once. See the stub for the
    /// rules (capability, least work, affinity, failover, back-pressure).
    #[pyo3(signature = (name, servers, *, capacity=2, resubmit_running=false, wait_deadline=None))]
    fn add_pool(
        &self,
        py: Python<'_>,
        name: &str,
        servers: Vec<String>,
        capacity: usize,
        resubmit_running: bool,
        wait_deadline: Option<f64>,
    ) -> PyResult<String> {
        let wait_deadline = match wait_deadline {
            None => Some(crate::pool::DEFAULT_WAIT_DEADLINE),
            Some(s) if s == f64::INFINITY => None,
            Some(s) => Some(duration(s, "wait_deadline")?),
        };
        let options = crate::pool::PoolOptions {
            capacity,
            resubmit_running,
            wait_deadline,
        };
        let added = self.inner.add_pool(name, &servers, options).py(py)?;
        log::info!("pool {}: {}", added.name, added.understood);
        Ok(added.name)
    }

    /// Stops a service's connection. Its unfinished jobs end at once with `JobFailed` code `service_removed`.
    fn remove_service(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.inner.remove_service(name).py(py)
    }

    /// Points a service at a new address (same name, kind, token and options) and returns its name. Jobs that
    /// were never sent (e.g. waiting for a server that could not be reached) are sent to the new address, in
    /// order; jobs already sent to the old address end `service_removed`. The same address changes nothing.
    fn set_service_url(&self, py: Python<'_>, name: &str, url: &str) -> PyResult<String> {
        let changed = self.inner.set_service_url(name, url).py(py)?;
        log::info!("service {} now at {}", changed.name, changed.understood);
        Ok(changed.name)
    }

    /// Names of the services added so far.
    fn services(&self) -> Vec<String> {
        self.inner.service_names()
    }

    /// Queues a workflow and returns its `Job` at once (nothing waits on the network).
    ///
    /// `workflow`: an API-format dict, a JSON string or a path. `params`: `{"NODE_ID.input": value, ...}`.
    /// For a Gradio app (`add_service("gradio", ...)`), pass a `GradioCall` instead: the job's files are downloaded
    /// into the output folder and its plain values are in `ui["data"]`.
    /// `tag`: a label (e.g. the shot name) that also names the output sub-folder.
    #[pyo3(signature = (service, workflow, params=None, tag=None))]
    fn submit(
        &self,
        py: Python<'_>,
        service: &str,
        workflow: &Bound<'_, PyAny>,
        params: Option<&Bound<'_, PyDict>>,
        tag: Option<String>,
    ) -> PyResult<Job> {
        if let Ok(call) = workflow.cast::<super::gradio::GradioCall>() {
            if params.is_some_and(|p| !p.is_empty()) {
                return Err(PyTypeError::new_err(
                    "params are for workflows; put a GradioCall's values in its inputs",
                ));
            }
            let call = call.get().to_core(py)?;
            let id = self.inner.call(service, call, tag.clone()).py(py)?;
            return Ok(Job {
                hub: self.inner.clone(),
                id,
                service: service.to_string(),
                tag,
            });
        }
        let prompt = super::workflow::workflow_json(py, workflow)?;
        let mut pairs = Vec::new();
        if let Some(p) = params {
            for (k, v) in p.iter() {
                let key: String = k
                    .extract()
                    .map_err(|_| PyTypeError::new_err("parameter names must be strings"))?;
                pairs.push((key, from_py(&v)?));
            }
        }
        let id = self.inner.submit(service, prompt, pairs, tag.clone()).py(py)?;
        Ok(Job {
            hub: self.inner.clone(),
            id,
            service: service.to_string(),
            tag,
        })
    }

    /// Follows a job submitted earlier by another hub (e.g. before Blender restarted) by its id: returns its `Job`
    /// at once; the server is asked where it is and its events and results arrive as usual. `posted=False`: the
    /// job was never confirmed to have reached the server (it was still waiting for it); if the server does not
    /// know it, it fails `not_posted` rather than `server_restarted`.
    #[pyo3(signature = (service, job_id, tag=None, *, posted=true))]
    fn track(&self, py: Python<'_>, service: &str, job_id: &str, tag: Option<String>, posted: bool) -> PyResult<Job> {
        let id = self.inner.track_with(service, job_id, tag.clone(), posted).py(py)?;
        Ok(Job {
            hub: self.inner.clone(),
            id,
            service: service.to_string(),
            tag,
        })
    }

    /// Submits a job's workflow again as a new `Job` (same service, parameters and tag), e.g. after
    /// `server_restarted`.
    fn resubmit(&self, py: Python<'_>, job_id: &str) -> PyResult<Job> {
        let id = self.inner.resubmit(job_id).py(py)?;
        let j = self.inner.job(&id);
        let (service, tag) = j.map(|j| (j.service, j.tag)).unwrap_or_default();
        Ok(Job {
            hub: self.inner.clone(),
            id,
            service,
            tag,
        })
    }

    /// The `Job` for an id (from `snapshot()` or an event), or None.
    fn job(&self, job_id: &str) -> Option<Job> {
        self.inner.job(job_id).map(|j| Job {
            hub: self.inner.clone(),
            id: j.id,
            service: j.service,
            tag: j.tag,
        })
    }

    /// Asks the server to cancel only this job (`JobCancelled` follows when confirmed).
    fn cancel(&self, py: Python<'_>, job_id: &str) -> PyResult<()> {
        self.inner.cancel(job_id).py(py)
    }

    /// Drops and re-opens a service's connection now.
    fn reconnect(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.inner.reconnect(name).py(py)
    }

    /// Takes up to `max_events` waiting events, oldest first. Never blocks; returns [] when nothing waits.
    #[pyo3(signature = (max_events=256))]
    fn poll<'py>(&self, py: Python<'py>, max_events: usize) -> PyResult<Bound<'py, PyList>> {
        // try_lock: making Python objects can run Python code (a finalizer) that polls from another thread while
        // this one holds the buffer; that caller gets a fresh vector instead of waiting with the GIL held.
        let mut fresh = Vec::new();
        let mut kept = self.batch.try_lock();
        let buf = kept.as_deref_mut().unwrap_or(&mut fresh);
        self.inner.poll_into(buf, max_events);
        let mut objs = Vec::with_capacity(buf.len());
        let mut failed = None;
        for ev in buf.drain(..) {
            match to_python(py, ev) {
                Ok(o) => objs.push(o),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        buf.shrink_to(KEEP_BATCH);
        drop(kept);
        if let Some(e) = failed {
            return Err(e);
        }
        PyList::new(py, objs)
    }

    /// Blocks (without the GIL) up to `timeout` seconds until an event waits. For scripts, not for Blender's UI.
    fn wait_for_events(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = duration(timeout, "timeout")?;
        let hub = self.inner.clone();
        Ok(py.detach(move || hub.wait_for_events(t)))
    }

    /// Services (state, url, version, queue, errors) and jobs (state, position, progress, node, outputs, error).
    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let snap = self.inner.snapshot();
        ser_to_py(py, &snap)
    }

    /// Checks addresses for a ComfyUI in parallel (blocks up to about `timeout`, without the GIL).
    /// Returns one dict per address: url, kind ("comfyui", "unknown", "none"), version, devices, latency_ms, summary.
    #[pyo3(signature = (urls, timeout=2.0))]
    fn probe(&self, py: Python<'_>, urls: Vec<String>, timeout: f64) -> PyResult<Py<PyAny>> {
        let t = duration(timeout, "timeout")?;
        let hub = self.inner.clone();
        let results = py.detach(move || hub.probe(&urls, t)).py(py)?;
        ser_to_py(py, &results)
    }

    /// Starts a chat on an OpenAI-compatible service (`add_service("openai", ...)`) and returns its `Job` at once.
    ///
    /// `messages`: a list of `{"role", "content"}` dicts, or a plain string (one user message). `model`: None
    /// uses the server's first listed model. The answer arrives as `TextDelta` events (in order), then
    /// `JobCompleted` whose `ui` is `{"text", "usage", "model", "finish_reason", "id"}`; `job.wait()` returns the
    /// same. Failures end the job `JobFailed` with code `rate_limited`, `server_error`, `auth_failed`,
    /// `bad_request`, `connection_failed`, `timeout` or `protocol_error`. 429/5xx/connection failures before the
    /// first token are retried up to `max_retries` times, honouring `Retry-After`. Other keyword arguments
    /// (`temperature=`, `max_tokens=`, ...) are sent in the request as they are.
    #[pyo3(signature = (service, messages, model=None, stream=true, *, max_retries=2, tag=None, **options))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments.
    fn chat(
        &self,
        py: Python<'_>,
        service: &str,
        messages: &Bound<'_, PyAny>,
        model: Option<String>,
        stream: bool,
        max_retries: u32,
        tag: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Job> {
        let messages = if let Ok(text) = messages.extract::<String>() {
            serde_json::json!([{ "role": "user", "content": text }])
        } else {
            from_py(messages)?
        };
        let mut extra = serde_json::Map::new();
        if let Some(o) = options {
            for (k, v) in o.iter() {
                let key: String = k
                    .extract()
                    .map_err(|_| PyTypeError::new_err("option names must be strings"))?;
                extra.insert(key, from_py(&v)?);
            }
        }
        let request = crate::openai::service::ChatRequest {
            messages,
            model,
            stream,
            options: extra,
            max_retries,
        };
        let id = self.inner.chat(service, request, tag.clone()).py(py)?;
        Ok(Job {
            hub: self.inner.clone(),
            id,
            service: service.to_string(),
            tag,
        })
    }

    /// The models an OpenAI-compatible service offers (`GET /v1/models`): a list of dicts with `id`, `object`,
    /// `created`, `owned_by`. Blocks without the GIL. Raises `ServiceError` (`auth_failed` for a bad key).
    fn models(&self, py: Python<'_>, service: &str) -> PyResult<Py<PyAny>> {
        let hub = self.inner.clone();
        let service = service.to_string();
        let models = py.detach(move || hub.models(&service)).py(py)?;
        ser_to_py(py, &models)
    }

    /// Finds the servers running on `hosts` (default `["127.0.0.1"]`): every known port of a bare host (ComfyUI
    /// 8188–8190, LiteLLM 4000–4001, Gradio 7860–7870), or just the port of a `host:port` / URL entry. Probes run
    /// in parallel (at most `concurrency` at once, `connect_timeout` per connection); the call blocks, without
    /// the GIL, up to about `timeout` seconds.
    ///
    /// Returns one dict per address: url, host, port, kind ("comfyui", "litellm", "wan2gp", "rvc", "audioldm",
    /// "gradio", "unknown", "none"), name, version, app_version, latency_ms, simulator, devices, login_required,
    /// protocol, api_prefix, server_header, service_kind (the `add_service` kind, if any) and summary.
    #[pyo3(signature = (hosts=None, timeout=1.5, *, concurrency=32, connect_timeout=0.3, mdns=0.0))]
    fn discover(
        &self,
        py: Python<'_>,
        hosts: Option<Vec<String>>,
        timeout: f64,
        concurrency: usize,
        connect_timeout: f64,
        mdns: f64,
    ) -> PyResult<Py<PyAny>> {
        let mdns = duration(mdns, "mdns")?;
        let options = crate::discovery::DiscoveryOptions {
            timeout: duration(timeout, "timeout")?.max(Duration::from_millis(10)),
            connect_timeout: duration(connect_timeout, "connect_timeout")?.max(Duration::from_millis(10)),
            concurrency: concurrency.max(1),
            mdns: (!mdns.is_zero()).then_some(mdns),
            ..Default::default()
        };
        let hosts = hosts.unwrap_or_else(crate::discovery::default_hosts);
        let hub = self.inner.clone();
        let found = py.detach(move || hub.discover(&hosts, &options)).py(py)?;
        ser_to_py(py, &found)
    }

    /// Cancels a job by id on a service even if another client submitted it. Returns "removed" (was queued),
    /// "interrupting" (was running) or "not_on_server" (already finished or unknown).
    fn cancel_remote(&self, py: Python<'_>, service: &str, job_id: &str) -> PyResult<&'static str> {
        let hub = self.inner.clone();
        let (service, job_id) = (service.to_string(), job_id.to_string());
        let outcome = py.detach(move || hub.cancel_remote(&service, &job_id)).py(py)?;
        Ok(match outcome {
            crate::comfy::http::CancelOutcome::Removed => "removed",
            crate::comfy::http::CancelOutcome::Interrupting => "interrupting",
            crate::comfy::http::CancelOutcome::NotOnServer => "not_on_server",
        })
    }

    /// The server's node schemas (`GET /object_info`) as a dict, cached per service; `refresh=True` re-reads them.
    /// Blocks (without the GIL) on the first call.
    #[pyo3(signature = (service, refresh=false))]
    fn object_info(&self, py: Python<'_>, service: &str, refresh: bool) -> PyResult<Py<PyAny>> {
        let hub = self.inner.clone();
        let service = service.to_string();
        let info = py.detach(move || hub.object_info(&service, refresh)).py(py)?;
        ser_to_py(py, &*info)
    }

    /// Uploads an image (a path, or bytes with `name`) into the server's input folder and returns the name to
    /// put in a `LoadImage` node. Blocks without the GIL.
    #[pyo3(signature = (service, image, name=None))]
    fn upload_image(
        &self,
        py: Python<'_>,
        service: &str,
        image: &Bound<'_, PyAny>,
        name: Option<String>,
    ) -> PyResult<String> {
        let (bytes, name) = if let Ok(b) = image.cast::<pyo3::types::PyBytes>() {
            (b.as_bytes().to_vec(), name.unwrap_or_else(|| "upload.png".into()))
        } else {
            let path: PathBuf = image
                .extract()
                .map_err(|_| PyTypeError::new_err("image must be a path or bytes"))?;
            let bytes = std::fs::read(&path).map_err(|e| {
                super::errors::to_pyerr(
                    py,
                    crate::Error::new(crate::ErrorCode::Io, format!("cannot read {}: {e}", path.display())),
                )
            })?;
            let fallback = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (bytes, name.unwrap_or(fallback))
        };
        let hub = self.inner.clone();
        let service = service.to_string();
        py.detach(move || hub.upload_image(&service, &name, bytes)).py(py)
    }

    /// Ends every unfinished job (`JobFailed` code `hub_closed`), stops every background task and thread, then
    /// hands the log records still on their way to Python's `logging`. Idempotent.
    fn close(&self, py: Python<'_>) {
        let hub = self.inner.clone();
        py.detach(move || hub.close());
        super::logging::flush(py, Duration::from_millis(500));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<Hub services={:?} closed={}>",
            self.inner.service_names(),
            self.inner.is_closed()
        )
    }
}

impl Drop for Hub {
    /// Garbage collection closes the hub too. The GIL is released while the threads stop, since a thread that is
    /// logging needs it to finish.
    fn drop(&mut self) {
        if !self.inner.is_closed() {
            let hub = self.inner.clone();
            Python::attach(|py| py.detach(move || hub.close()));
        }
    }
}

/// A submitted job. `wait()` blocks without the GIL; `await job` works in asyncio.
#[pyclass(module = "director_link._native", frozen)]
pub struct Job {
    hub: Arc<CoreHub>,
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    service: String,
    #[pyo3(get)]
    tag: Option<String>,
}

#[pymethods]
impl Job {
    /// pending, submitting, queued, running, completed, failed or cancelled.
    #[getter]
    fn state(&self) -> &'static str {
        self.hub.job_state(&self.id).map(JobState::as_str).unwrap_or("unknown")
    }

    /// Everything known about the job as a dict.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.hub.job(&self.id) {
            Some(j) => ser_to_py(py, &j),
            None => Ok(py.None()),
        }
    }

    /// Paths of the result files (empty until completed).
    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.hub
            .job(&self.id)
            .map(|j| {
                j.outputs
                    .iter()
                    .map(|o| o.path.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the job ends; returns its info dict. Raises `JobFailed`, `JobCancelled` or `Timeout`.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = timeout.map(|s| duration(s, "timeout")).transpose()?;
        let hub = self.hub.clone();
        let id = self.id.clone();
        let snap = py.detach(move || hub.wait(&id, t)).py(py)?;
        match snap.state {
            JobState::Completed => ser_to_py(py, &snap),
            JobState::Cancelled => Err(job_error(py, &self.id, None, true)),
            _ => Err(job_error(py, &self.id, snap.error.as_ref(), false)),
        }
    }

    /// Asks the server to cancel this job.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.hub.cancel(&self.id).py(py)
    }

    /// `await job.wait_async(timeout)` in asyncio code: runs `wait` in the loop's executor.
    #[pyo3(signature = (timeout=None))]
    fn wait_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let functools = py.import("functools")?;
        let call = functools.call_method1("partial", (slf.getattr("wait")?, timeout))?;
        event_loop.call_method1("run_in_executor", (py.None(), call))
    }

    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::wait_async(slf, None)?.call_method0("__await__")
    }

    fn __repr__(&self) -> String {
        format!("<Job {} on {} {}>", self.id, self.service, self.state())
    }
}
