"""Type stubs for ``director_link._native``, the pyo3 extension module (written by hand from ``src/py/``).

Import from ``director_link`` (``Hub``, ``Job``) and ``director_link.events`` (the event classes) rather than from
here. Errors raised by these functions are the classes in ``director_link.errors``.
"""

import asyncio
import os
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Literal, TypeAlias, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "ComfySimulator",
    "Event",
    "GradioCall",
    "Hub",
    "Job",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobQueued",
    "JobStarted",
    "NodeOutput",
    "NodeStarted",
    "NodeText",
    "Preview",
    "Progress",
    "QueueChanged",
    "ServiceDiscovered",
    "ServiceStateChanged",
    "StudioServer",
    "TextDelta",
    "Workflow",
    "DEFAULT_SCAN_HOSTS",
    "__version__",
    "_close_all",
    "_dropped_log_records",
    "_flush_logs",
]

_StrPath: TypeAlias = str | os.PathLike[str]

# The states a job goes through; "unknown" is what `Job.state` says for an id the hub has forgotten.
_JobState: TypeAlias = Literal[
    "pending", "submitting", "queued", "running", "completed", "failed", "cancelled", "unknown"
]
_ServiceState: TypeAlias = Literal[
    "disconnected", "connecting", "connected", "reconnecting", "circuit_open", "polling", "closed"
]
_EventType: TypeAlias = Literal[
    "service_state_changed",
    "queue_changed",
    "job_queued",
    "job_started",
    "node_started",
    "progress",
    "preview",
    "node_text",
    "node_output",
    "text_delta",
    "job_completed",
    "job_failed",
    "job_cancelled",
]

__version__: str
DEFAULT_SCAN_HOSTS: list[str]
"""What `Hub.discover()` probes without hosts: 127.0.0.1, and WanGP's ports on [::1]."""
"""The version of the native module (the crate's version)."""

def _close_all() -> None:
    """Closes every hub still open (called at interpreter exit)."""

def _flush_logs(timeout: float = 1.0) -> None:
    """Waits (without the GIL, at most `timeout` seconds) until the core's log records logged so far reached
    Python's `logging`. They are handed over by a thread of their own, so the runtime never waits for the GIL."""

def _dropped_log_records() -> int:
    """Log records lost because Python did not take them in time (a bounded channel was full)."""

@final
class Workflow:
    """A ComfyUI workflow in API or UI format.

    `Workflow.load(source)` detects the format. A UI-format workflow is turned into the API format with
    `convert(object_info)` (the server's node list: `hub.object_info(name)` or a saved file); `hub.submit` also
    converts by itself. `set()` and `parameters()` use selectors: `3.seed`, `KSampler.steps`,
    `"Positive Prompt".text` or roles such as `positive.text`, `sampler.seed`, `latent.width`, `frames.length`.
    """

    @staticmethod
    def load(source: Workflow | dict[str, Any] | str | os.PathLike[str]) -> Workflow:
        """Loads a workflow from a dict, a JSON string, or a path to a `.json` file or a ComfyUI `.png`."""

    @property
    def format(self) -> Literal["api", "ui"]:
        """`"api"` or `"ui"`."""

    @property
    def warnings(self) -> list[str]:
        """What the conversion could not reproduce exactly (empty for a workflow that was not converted)."""

    def convert(self, object_info: dict[str, Any] | _StrPath) -> Workflow:
        """The API-format version (UI format converted like ComfyUI's frontend does), as a new `Workflow`."""

    def validate(self, object_info: dict[str, Any] | _StrPath) -> list[dict[str, Any]]:
        """Checks the workflow against a node list like the server would; returns the problems (empty when valid)."""

    def set(self, selector: str, value: Any, object_info: dict[str, Any] | _StrPath | None = None) -> str:
        """Sets an input by selector (checked when `object_info` is given); returns `"<id>.<input>"`."""

    def get(self, selector: str) -> Any:
        """The value an input selector points at (None for a linked input)."""

    def parameters(self, object_info: dict[str, Any] | _StrPath | None = None) -> list[dict[str, Any]]:
        """Every settable input with its type, range/options, default, value and selector."""

    def to_dict(self) -> dict[str, Any]:
        """The workflow as a JSON-ready dict (API prompt, or the UI file as loaded)."""

@final
class StudioServer:
    """The studio server (`director-link serve`): HTTP + WebSocket on its own hub's runtime. Use
    `director_link.serve(...)`, which builds the settings; `close()` (or `with`) stops it."""

    def __new__(cls, settings: Mapping[str, Any]) -> Self: ...
    @property
    def url(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def simulator_url(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, t: object | None, v: object | None, tb: object | None) -> None: ...

@final
class ComfySimulator:
    """A local ComfyUI 0.3.64 simulator on 127.0.0.1 (an ephemeral port) for tests and demos."""

    def __new__(cls, time_scale: float = 1.0, preview_size: int = 64) -> Self: ...
    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""

    @property
    def port(self) -> int: ...
    @property
    def output_dir(self) -> str:
        """Where SaveImage writes (a temporary folder, removed by `close()`)."""

    @property
    def input_dir(self) -> str:
        """Where uploads land and LoadImage reads."""

    def close(self) -> None:
        """Stops the server, joins its threads and removes its folder. Safe to call twice."""

    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> bool: ...
    def drop_sockets_after(self, n: int) -> None:
        """Cuts every open WebSocket (no close frame) after `n` more messages to it."""

    def drop_sockets(self) -> None:
        """Cuts every open WebSocket now (the client sees 1006)."""

    def refuse_connections(self, seconds: float) -> None:
        """Refuses connections for `seconds`, then listens again on the same port."""

    def restart(self, down_seconds: float = 0.5) -> None:
        """Like a process restart: sockets cut, queue/history/cache lost, down for `down_seconds`."""

    def stall(self, seconds: float) -> None:
        """For `seconds`, nothing is sent, HTTP gets no answer and execution pauses."""

    def send_garbage(self, kind: str) -> None:
        """Sends malformed frames to every socket (`invalid_json`, `nan_json`, `unknown_type`, `wrong_types`,
        `truncated_binary`, `unknown_binary`, `huge_text`, `huge_binary`)."""

    def requests(self) -> list[dict[str, Any]]:
        """Every HTTP request so far: `[{"method", "path", "query", "json"}, ...]`."""

    def clear_requests(self) -> None:
        """Forgets the request log."""

    def stats(self) -> dict[str, Any]:
        """Sockets, connections, prompts received/executed, queue and the running prompt."""

@disjoint_base
class Hub:
    """The link to your AI servers. Owns background threads; `close()` (or `with Hub() as hub:`) stops them."""

    def __new__(
        cls,
        output_dir: _StrPath | None = None,
        *,
        heartbeat: float = 10.0,
        connect_timeout: float = 10.0,
        event_capacity: int = 10000,
        event_budget_bytes: int = 67108864,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 30.0,
        poll_interval: float = 1.0,
        breaker_threshold: int = 5,
        breaker_window: float = 60.0,
        breaker_open_for: float = 30.0,
        finished_jobs: int = 1000,
    ) -> Self:
        """Starts the hub's background runtime.

        `output_dir`: where results are written (`<output_dir>/<tag or service>/<job id>/`). `heartbeat` and
        `connect_timeout` are seconds (tiny values are raised to a few milliseconds). `event_capacity`: events
        that may wait for `poll()` before progress and previews are coalesced. `event_budget_bytes` (64 MiB, at
        least 64 KiB): the approximate bytes waiting events may hold; beyond it older previews of a job, then
        older progress, are coalesced into the newest, then the oldest previews dropped (lifecycle events are
        always kept). `reconnect_initial` /
        `reconnect_max`: the reconnect back-off, in seconds. `poll_interval`: how often jobs are checked over
        HTTP while a WebSocket cannot be opened. More than `breaker_threshold` failed connects (or sessions that
        end at once) within `breaker_window` seconds open the circuit for `breaker_open_for` seconds (state
        `circuit_open`; `reconnect()` tries at once). `finished_jobs`: how many finished jobs `snapshot()`,
        `job()` and `wait()` still know (the newest; older ones are forgotten, their files and manifests stay on
        disk). Raises `ValueError` for a negative or absurd number of seconds.
        """

    @property
    def output_dir(self) -> str:
        """Where results are written."""

    @property
    def closed(self) -> bool:
        """True once `close()` has run."""

    def add_service(
        self,
        kind: str,
        url: str,
        name: str | None = None,
        token: str | None = None,
        *,
        resubmit_on_restart: bool = False,
    ) -> str:
        """Adds a server and starts connecting in the background; returns its name at once.

        `url` may be `host`, `host:port` or `http(s)://host:port/base/`. Raises `InvalidUrlError` for an address
        that cannot be used. `token` is sent as a bearer token (never logged). With `resubmit_on_restart`, a job
        that a server restart lost is sent again automatically instead of failing with `server_restarted`.

        Kinds: ``"comfyui"`` (default port 8188) and ``"openai"`` (alias ``"litellm"``; default port 4000; the
        URL may also end in ``/v1`` for Ollama, LM Studio or vLLM). For ``"openai"`` without `token`, the key is
        read from the environment variable ``DIRECTOR_LINK_OPENAI_KEY``. ``"gradio"`` (aliases ``"wan2gp"``,
        ``"wangp"``, ``"rvc"``, ``"audioldm"``; default port 7860, RVC 7865) is any Gradio 3.x–6.x app, called with
        ``submit(name, GradioCall(...))``; its `token` ``"user:password"`` logs in to an app launched with ``auth=``.
        ``"wangp_mcp"`` (alias
        ``"wan2gp_mcp"``; default port 8000, path ``/mcp``): WanGP run as an MCP server (``wgp.py --mcp
        --mcp-transport streamable-http``); submit a WanGP settings dict (or task list) to it.
        """

    def track(self, service: str, job_id: str, tag: str | None = None, *, posted: bool = True) -> Job:
        """Follows a job submitted earlier by another hub (e.g. before Blender restarted) by its id.

        Returns its `Job` at once; the server is asked where it is and its events and results arrive as usual.
        ``posted=False``: the job was never confirmed to have reached the server (it was still waiting for it when
        the earlier session ended); if the server does not know it, it fails ``not_posted`` instead of
        ``server_restarted``.
        """

    def resubmit(self, job_id: str) -> Job:
        """Submits a job's workflow again as a new `Job` (same service, parameters and tag).

        E.g. after `server_restarted`.
        """

    def remove_service(self, name: str) -> None:
        """Stops a service's connection. Its unfinished jobs end at once with ``JobFailed`` code
        ``service_removed``."""

    def set_service_url(self, name: str, url: str) -> str:
        """Points a service at a new address (same name, kind, token and options); returns its name.

        Jobs that were never sent (e.g. waiting for a server that could not be reached) are sent to the new
        address, in order; jobs already sent to the old address end ``service_removed``. The same address again
        changes nothing.
        """

    def services(self) -> list[str]:
        """Names of the services added so far."""

    def submit(
        self,
        service: str,
        workflow: Workflow | GradioCall | dict[str, Any] | list[Any] | str | os.PathLike[str],
        params: dict[str, Any] | None = None,
        tag: str | None = None,
    ) -> Job:
        """Queues a workflow and returns its `Job` at once (nothing waits on the network).

        For a Gradio app (`add_service("gradio", ...)`), pass a `GradioCall` instead (and no `params`): its files
        are downloaded into the output folder, its plain values are in the result's `ui["data"]`.
        On a ``"wangp_mcp"`` service `workflow` is what WanGP's ``wangp_generate`` takes: a settings dict
        (``{"model_type": ..., "prompt": ...}``) or a list of tasks; progress arrives as `Progress` events with
        WanGP's status line in `text`, and the videos are downloaded into the job's output folder.

        `workflow`: a `Workflow`, an API- or UI-format dict, a JSON string, or a path to a `.json` / ComfyUI `.png`
        (UI format is converted with the server's node list, fetched in the background the first time).
        `params`: `{selector: value}` with selectors like `3.seed`, `KSampler.steps`, `positive.text`. Raises
        `WorkflowError` for a workflow or parameter that is invalid (checked against the node list once known).
        `tag`: a label (e.g. the shot name) that also names the output sub-folder.
        """

    def job(self, job_id: str) -> Job | None:
        """The `Job` for an id (from `snapshot()` or an event), or None."""

    def cancel(self, job_id: str) -> None:
        """Asks the server to cancel only this job (`JobCancelled` follows when confirmed)."""

    def reconnect(self, name: str) -> None:
        """Drops and re-opens a service's connection now."""

    def poll(self, max_events: int = 256) -> list[Event]:
        """Takes up to `max_events` waiting events, oldest first. Never blocks; returns [] when nothing waits."""

    def wait_for_events(self, timeout: float) -> bool:
        """Blocks (without the GIL) up to `timeout` seconds until an event waits. For scripts, not for Blender's UI.

        After waiting for the first event of a burst it lingers up to 1 ms for the rest, so a flood is taken in
        batches (one wake-up per batch instead of per event).

        Returns True when an event waits, False when the timeout passed first.
        """

    def snapshot(self) -> dict[str, Any]:
        """Services (state, url, version, queue, errors) and jobs (state, position, progress, node, outputs, error).

        A dict with `studio` (the whole studio in one word: `state` "empty" / "healthy" / "degraded" / "down",
        `services`, `connected`, `unhealthy` [{name, state, reason}], `queued_on_servers`), `services` (a list
        of dicts: state, reason, version, queue_remaining, latency and http_latency p50/p99, uptime_percent,
        consecutive_failures, recent_errors, ...), `jobs` (a list of job info dicts, as `Job.info()` returns)
        and `events` (queue statistics: `pending`, `pending_bytes`, `budget_bytes`, `pushed`, `coalesced`,
        `dropped`, `coalesced_bytes`, `dropped_bytes`, `previews_coalesced`, `previews_dropped`,
        `progress_coalesced`, `progress_dropped`; "coalesced" events live on in a newer one of the same job,
        "dropped" ones are gone).
        """

    def probe(self, urls: Sequence[str], timeout: float = 2.0) -> list[dict[str, Any]]:
        """Checks addresses for a ComfyUI in parallel (blocks up to about `timeout`, without the GIL).

        Returns one dict per address: url, kind ("comfyui", "unknown", "none"), version, devices, latency_ms, summary.
        """

    def chat(
        self,
        service: str,
        messages: str | Sequence[dict[str, Any]],
        model: str | None = None,
        stream: bool = True,
        *,
        max_retries: int = 2,
        tag: str | None = None,
        **options: Any,
    ) -> Job:
        """Starts a chat on an OpenAI-compatible service and returns its `Job` at once.

        `messages`: a list of ``{"role", "content"}`` dicts, or a plain string (one user message). `model`: None
        uses the server's first listed model. The answer arrives as `TextDelta` events (in order), then
        `JobCompleted` whose `ui` is ``{"text", "usage", "model", "finish_reason", "id"}``; `job.wait()` returns
        the same. Failures end the job `JobFailed` with code ``rate_limited``, ``server_error``, ``auth_failed``,
        ``bad_request``, ``connection_failed``, ``timeout`` or ``protocol_error``. 429/5xx/connection failures
        before the first token are retried up to `max_retries` times, honouring ``Retry-After``. Other keyword
        arguments (``temperature=``, ``max_tokens=``, ...) are sent in the request as they are.
        """

    def models(self, service: str) -> list[dict[str, Any]]:
        """The models an OpenAI-compatible service offers (``GET /v1/models``), blocking without the GIL.

        A list of dicts with ``id``, ``object``, ``created``, ``owned_by``. Raises `ServiceError`
        (``auth_failed`` for a bad or missing key).
        """

    def discover(
        self,
        hosts: Sequence[str] | None = None,
        timeout: float = 1.5,
        *,
        concurrency: int = 32,
        connect_timeout: float = 0.3,
        mdns: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Finds the servers running on `hosts`, blocking without the GIL.

        Default: every known port of ``127.0.0.1`` plus ``[::1]:7860`` and ``[::1]:8000`` (WanGP binds
        ``localhost``). A bare host is probed at every known port (ComfyUI 8188–8190, LiteLLM 4000–4001, Gradio
        7860–7870, WanGP's MCP mode 8000), a ``host:port`` or URL entry at that port only. Returns one dict per
        address: url, host, port, kind ("comfyui", "litellm", "wan2gp", "wangp_mcp", "rvc", "audioldm", "gradio",
        "unknown", "none"), name, version, app_version, latency_ms, simulator, devices, login_required, protocol,
        api_prefix, server_header, service_kind and summary. Each address where something answers is also
        reported as a `ServiceDiscovered` event. `mdns` > 0 (opt-in; off by default because the query is
        multicast and leaves the machine): first listen that many seconds for DNS-SD announcements
        (``_comfyui._tcp``, ``_gradio._tcp``, ``_litellm._tcp``, ``_wangp._tcp``, ``_director-link._tcp``,
        ``_http._tcp``) and probe the addresses they name too.
        """

    def cancel_remote(self, service: str, job_id: str) -> Literal["removed", "interrupting", "not_on_server"]:
        """Cancels a job by id on a service even if another client submitted it.

        Returns "removed" (was queued), "interrupting" (was running) or "not_on_server" (already finished or
        unknown).
        """

    def object_info(self, service: str, refresh: bool = False) -> dict[str, Any]:
        """The server's node schemas (``GET /object_info``) as a dict, cached per service.

        ``refresh=True`` re-reads them. Blocks (without the GIL) on the first call.
        """

    def upload_image(self, service: str, image: _StrPath | bytes, name: str | None = None) -> str:
        """Uploads an image into the server's input folder; returns the name for a ``LoadImage`` node.

        ``image`` is a path, or bytes together with ``name``. Blocks without the GIL.
        """

    def close(self) -> None:
        """Ends every unfinished job (``JobFailed`` code ``hub_closed``), then stops every background task and
        thread. Idempotent."""

    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> Literal[False]:
        """Closes the hub; exceptions are never suppressed."""

@final
class GradioCall:
    """A call of a Gradio app's endpoint, for `Hub.submit()`.

    `api_name` ("/generate_video" or "generate_video") or `fn_index` (events without a name, e.g. AudioLDM v1);
    `inputs`: one value per input component; `{"path": "/local/file"}` (see `director_link.gradio_file`) is
    uploaded first. `session_hash=None` shares the service's session, so `gr.State` carries over between calls.
    """

    def __new__(
        cls,
        api_name: str | None = None,
        fn_index: int | None = None,
        inputs: Sequence[Any] | None = None,
        *,
        session_hash: str | None = None,
    ) -> Self: ...
    @property
    def api_name(self) -> str | None: ...
    @property
    def fn_index(self) -> int | None: ...
    @property
    def inputs(self) -> list[Any]: ...
    @property
    def session_hash(self) -> str | None: ...

@final
class Job:
    """A submitted job. `wait()` blocks without the GIL; `await job` works in asyncio.

    Made by `Hub.submit()` and `Hub.job()`; not constructible from Python.
    """

    @property
    def id(self) -> str:
        """The job's id (the server's prompt id)."""

    @property
    def service(self) -> str:
        """The name of the service the job was submitted to."""

    @property
    def tag(self) -> str | None:
        """The label given to `Hub.submit()`, if any."""

    @property
    def state(self) -> _JobState:
        """pending, submitting, queued, running, completed, failed or cancelled ("unknown" once forgotten)."""

    @property
    def outputs(self) -> list[str]:
        """Paths of the result files (empty until completed)."""

    def info(self) -> dict[str, Any] | None:
        """Everything known about the job as a dict (None once the hub has forgotten the job).

        Keys: id, service, tag, state, queue_position, current_node, current_node_type, progress (0–100),
        eta_seconds, outputs, ui, error, submitted_at, elapsed_seconds.
        """

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Waits until the job ends; returns its info dict. Raises `JobFailed`, `JobCancelled` or `Timeout`."""

    def cancel(self) -> None:
        """Asks the server to cancel this job."""

    def wait_async(self, timeout: float | None = None) -> asyncio.Future[dict[str, Any]]:
        """`await job.wait_async(timeout)` in asyncio code: runs `wait` in the loop's executor.

        Must be called while an event loop runs.
        """

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        """`await job` is `await job.wait_async()`."""

@disjoint_base
class Event:
    """Base class of every event: `seq` (increasing), `time` (Unix seconds), `type` (snake_case name).

    Events come from `Hub.poll()`; they cannot be created from Python.
    """

    @property
    def seq(self) -> int:
        """The event's sequence number (increasing)."""

    @property
    def time(self) -> float:
        """When the event happened, in seconds since the Unix epoch."""

    @property
    def type(self) -> _EventType:
        """The event's snake_case type name, e.g. "progress"."""

    @property
    def job(self) -> str | None:
        """The job this event belongs to, or None for service-level events."""

    @property
    def is_terminal(self) -> bool:
        """True for JobCompleted, JobFailed and JobCancelled."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the event (JSON-compatible; preview bytes are left out)."""

@final
class ServiceStateChanged(Event):
    """A service changed connection state."""

    @property
    def service(self) -> str:
        """The service's name."""

    @property
    def state(self) -> _ServiceState:
        """The new state."""

    @property
    def previous(self) -> _ServiceState:
        """The state before."""

    @property
    def reason(self) -> str | None:
        """Why the state changed, if known."""

@final
class QueueChanged(Event):
    """The server's queue length changed."""

    @property
    def service(self) -> str:
        """The service's name."""

    @property
    def queue_remaining(self) -> int:
        """Jobs left in the server's queue."""

@final
class ServiceDiscovered(Event):
    """A scan (`Hub.discover`) found something answering at an address."""

    @property
    def url(self) -> str:
        """`http://host:port/`."""

    @property
    def kind(self) -> str:
        """`comfyui`, `litellm`, `wan2gp`, `wangp_mcp`, `rvc`, `audioldm`, `gradio` or `unknown`."""

    @property
    def name(self) -> str | None:
        """ "ComfyUI", "WanGP", "Gradio app <title>", ..."""

    @property
    def summary(self) -> str:
        """What a person should read: "ComfyUI 0.3.64, 1 device (cpu)", ..."""

    @property
    def service_kind(self) -> str | None:
        """The `Hub.add_service` kind that talks to it, when this build has one."""

@final
class JobQueued(Event):
    """The job is queued: on the server, or locally until the service connects (pending_connection).

    A job submitted while disconnected gets one with `pending_connection=True` at once and another with its queue
    `position` when the server has it.
    """

    @property
    def job_id(self) -> str: ...
    @property
    def service(self) -> str:
        """The service's name."""

    @property
    def position(self) -> int | None:
        """0 = next to run; None when unknown (pending connection)."""

    @property
    def pending_connection(self) -> bool:
        """True while the job waits locally for the service to connect."""

    @property
    def node_errors(self) -> list[dict[str, Any]]:
        """Outputs the server skipped because they failed validation (a partial 200).

        Each dict has node_id, class_type, input, code, message, details.
        """

@final
class JobStarted(Event):
    """The server started the job."""

    @property
    def job_id(self) -> str: ...
    @property
    def service(self) -> str:
        """The service's name."""

    @property
    def cached_nodes(self) -> list[str]:
        """Ids of the nodes the server will not run again (cached results)."""

@final
class NodeStarted(Event):
    """A node began to execute."""

    @property
    def job_id(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def node_type(self) -> str | None:
        """The node's class type, if known."""

@final
class Progress(Event):
    """Progress of the running node, with percentage, an ETA from the observed step rate, and the server's own
    words when it sends some (`text`: Gradio's progress `desc`)."""

    @property
    def job_id(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def value(self) -> float:
        """Steps done."""

    @property
    def max(self) -> float:
        """Steps in all."""

    @property
    def percentage(self) -> float:
        """Percentage of the node's work, 0–100."""

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left for this node, from the observed step rate."""

    @property
    def text(self) -> str | None:
        """What the server says it is doing (Gradio's `desc`, e.g. "Denoising | 0:12 / 1:40"), if anything."""

@final
class Preview(Event):
    """A preview image (JPEG or PNG bytes)."""

    @property
    def job_id(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def mime(self) -> str:
        """`image/jpeg` or `image/png`."""

    @property
    def data(self) -> bytes:
        """The encoded image."""

    @property
    def format(self) -> Literal["jpeg", "png"]:
        """Either "jpeg" or "png"."""

@final
class NodeText(Event):
    """Progress text a node sent."""

    @property
    def job_id(self) -> str | None: ...
    @property
    def node_id(self) -> str: ...
    @property
    def text(self) -> str: ...

@final
class NodeOutput(Event):
    """A node's UI output (the `executed` message)."""

    @property
    def job_id(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def output(self) -> Any:
        """The node's output as the server sent it (usually a dict)."""

@final
class TextDelta(Event):
    """A piece of a chat answer, in order: `index` counts the pieces of the job, `choice` says which choice."""

    @property
    def job_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def choice(self) -> int: ...

@final
class JobCompleted(Event):
    """The job finished; its files are on disk (`outputs`, `paths`)."""

    @property
    def job_id(self) -> str: ...
    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The result files: dicts with node_id, kind, path, filename, subfolder, file_type, size."""

    @property
    def paths(self) -> list[str]:
        """The result files' paths."""

    @property
    def ui(self) -> Any:
        """The node's UI outputs that are not files (text etc.), by node id."""

    @property
    def elapsed_seconds(self) -> float: ...

@final
class JobFailed(Event):
    """The job failed: `code`, `message`, and the failing node's details in `error`."""

    @property
    def job_id(self) -> str: ...
    @property
    def code(self) -> str:
        """The error's snake_case code, e.g. "execution_failed"."""

    @property
    def message(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def node_type(self) -> str | None: ...
    @property
    def error(self) -> dict[str, Any]:
        """All details: code, message, node_id, node_type, exception_type, traceback, node_errors, causes."""

    @property
    def causes(self) -> list[str]:
        """The texts of the underlying errors, outermost first (like an exception's `causes`); empty when the
        server itself said why."""

@final
class JobCancelled(Event):
    """The job was cancelled and the server confirmed it."""

    @property
    def job_id(self) -> str: ...
