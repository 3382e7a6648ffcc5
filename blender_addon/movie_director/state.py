"""The addon's view-model: what the panels draw, fed only by Hub events and snapshots (pure Python, no bpy).

``ViewModel.apply(events)`` folds a batch of ``Hub.poll()`` events into plain dataclasses and returns the set of
*areas* that changed (``SERVICES``, ``JOBS``, ``PREVIEW``, ``HEALTH``, ``ERRORS``), so the timer tags for redraw only
the parts of the UI that show them. Events are read by attribute (``event.type``, ``event.job`` …), so tests can
feed ``types.SimpleNamespace`` stand-ins as well as the native event objects.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SERVICES = "services"
JOBS = "jobs"
PREVIEW = "preview"
HEALTH = "health"
ERRORS = "errors"
ALL_AREAS = frozenset({SERVICES, JOBS, PREVIEW, HEALTH, ERRORS})

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
ACTIVE_STATES = frozenset({"pending", "submitting", "queued", "running"})


@dataclass
class PoolJobLine:
    """One of our jobs on a pool's server."""

    job_id: str
    tag: str | None
    state: str
    progress: float = 0.0


@dataclass
class PoolServerView:
    """One server of a pool: its own connection, queue and which of our jobs it has."""

    name: str  # as its state events name it: ``<pool>/<host:port>``
    url: str = ""
    state: str = "connecting"
    usable: bool = False
    reason: str | None = None
    queue_remaining: int | None = None
    in_flight: int = 0
    jobs: list[PoolJobLine] = field(default_factory=list)


@dataclass
class ServiceView:
    """One server (or pool of servers) as the panel shows it."""

    name: str
    kind: str = "comfyui"
    url: str = ""
    state: str = "disconnected"
    previous: str | None = None
    reason: str | None = None
    version: str | None = None
    queue_remaining: int | None = None
    last_error: str | None = None
    recent_errors: list[str] = field(default_factory=list)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    http_p50_ms: float | None = None
    uptime_percent: float | None = None
    drops: int = 0
    reconnects: int = 0
    next_attempt_at: float | None = None
    # Set by the addon when it did not hand the service to the hub (offline mode, invalid address, …).
    blocked: str | None = None
    changed_at: float = 0.0
    # A pool: several servers behind this name ("ready", "busy", "waiting for a server", "starting"), and them.
    pool_state: str | None = None
    pool_servers: dict[str, PoolServerView] = field(default_factory=dict)
    pool_waiting: int = 0
    pool_problems: list[str] = field(default_factory=list)

    @property
    def is_pool(self) -> bool:
        return self.pool_state is not None


@dataclass
class JobView:
    """One submitted job as the panel shows it."""

    id: str
    service: str = ""
    tag: str | None = None
    state: str = "pending"
    queue_position: int | None = None
    pending_connection: bool = False
    node_id: str | None = None
    node_type: str | None = None
    progress_value: float = 0.0
    progress_max: float = 0.0
    percentage: float = 0.0
    eta_seconds: float | None = None
    node_text: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    node_errors: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    # The server confirmed it has the job (queued or started there): after a reopen it is asked about, and a server
    # that does not know it was restarted; a job never confirmed was never sent (see ``take_posted``).
    posted: bool = False
    submitted_at: float = 0.0
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def paths(self) -> list[str]:
        return [str(o["path"]) for o in self.outputs if o.get("path")]


@dataclass
class PreviewView:
    """The latest preview image of any job (only the newest is kept)."""

    job_id: str | None
    node_id: str | None
    data: bytes
    format: str
    seq: int


@dataclass
class ErrorEntry:
    """Something that went wrong, kept for the panel and for "Copy error details"."""

    time: float
    source: str  # a service name or a job id
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ViewModel:
    """Services, jobs, the latest preview and recent errors, updated from events; never touches the network."""

    def __init__(self, max_jobs: int = 200, max_errors: int = 50) -> None:
        self.services: dict[str, ServiceView] = {}
        self.jobs: dict[str, JobView] = {}
        self.preview: PreviewView | None = None
        self.errors: deque[ErrorEntry] = deque(maxlen=max_errors)
        self.discovered: list[dict[str, Any]] = []
        self.discovering = False
        self.events_applied = 0
        self.max_jobs = max_jobs
        self.texts: dict[str, str] = {}  # a chat job's answer so far (streamed ``TextDelta`` pieces, in order)
        self._finished: list[str] = []
        self._posted: list[str] = []
        self._handlers = {
            "service_state_changed": self._on_service_state,
            "queue_changed": self._on_queue,
            "job_queued": self._on_job_queued,
            "job_started": self._on_job_started,
            "node_started": self._on_node_started,
            "progress": self._on_progress,
            "preview": self._on_preview,
            "node_text": self._on_node_text,
            "text_delta": self._on_text_delta,
            "node_output": self._on_node_output,
            "job_completed": self._on_completed,
            "job_failed": self._on_failed,
            "job_cancelled": self._on_cancelled,
        }

    # ---- feeding -------------------------------------------------------------------------------------------------

    def apply(self, events: Iterable[Any]) -> set[str]:
        """Folds events (oldest first) into the model; returns the areas that changed."""
        changed: set[str] = set()
        handlers = self._handlers
        batch = events if isinstance(events, list) else list(events)
        types = [event.type for event in batch]
        # Only the newest progress (and preview) of a job is visible, so older ones in the same batch are skipped
        # without reading their fields (each field read crosses into the native module).
        newest: dict[tuple[str, str | None], int] = {}
        for index, kind in enumerate(types):
            if kind == "progress" or kind == "preview":
                newest[(kind, batch[index].job)] = index
        for index, event in enumerate(batch):
            kind = types[index]
            if (kind == "progress" or kind == "preview") and newest.get((kind, event.job)) != index:
                continue
            handler = handlers.get(kind)
            if handler is not None:
                handler(event, changed)
        self.events_applied += len(batch)
        return changed

    def _on_text_delta(self, event: Any, changed: set[str]) -> None:
        job_id = event.job
        if job_id in self.jobs:  # only jobs the add-on started (e.g. "Write shots")
            self.texts[job_id] = self.texts.get(job_id, "") + str(event.text)
            changed.add(JOBS)

    def apply_snapshot(self, snapshot: dict[str, Any]) -> set[str]:
        """Refreshes health figures and fills gaps from ``Hub.snapshot()``; returns the areas that changed."""
        changed: set[str] = set()
        for pool in snapshot.get("pools") or ():
            changed |= self._apply_pool(pool)
        for info in snapshot.get("services") or ():
            if self._member(str(info.get("name", ""))) is not None:
                continue  # a pool's server: its line comes from the pool's part of the snapshot
            svc = self.service(str(info.get("name", "")), info.get("kind") or "comfyui")
            before = (svc.state, svc.reason, svc.url, svc.version, svc.queue_remaining)
            health_before = _health_tuple(svc)
            svc.url = info.get("url") or svc.url
            svc.kind = info.get("kind") or svc.kind
            svc.version = info.get("version") or svc.version
            if info.get("state"):
                svc.state = info["state"]
            svc.reason = info.get("reason", svc.reason)
            if info.get("queue_remaining") is not None:
                svc.queue_remaining = int(info["queue_remaining"])
            svc.last_error = info.get("last_error")
            svc.recent_errors = [_error_text(e) for e in (info.get("recent_errors") or ())][-10:]
            latency = info.get("latency") or {}
            http = info.get("http_latency") or {}
            svc.latency_p50_ms = latency.get("p50_ms")
            svc.latency_p99_ms = latency.get("p99_ms")
            svc.http_p50_ms = http.get("p50_ms") if isinstance(http, dict) else None
            svc.uptime_percent = info.get("uptime_percent")
            svc.drops = int(info.get("drops") or 0)
            svc.reconnects = int(info.get("reconnects") or 0)
            svc.next_attempt_at = info.get("next_attempt_at")
            if before != (svc.state, svc.reason, svc.url, svc.version, svc.queue_remaining):
                changed.add(SERVICES)
            if health_before != _health_tuple(svc):
                changed.add(HEALTH)
        # Job states come from events only (lifecycle events are never dropped); the snapshot refreshes positions.
        for info in snapshot.get("jobs") or ():
            job = self.jobs.get(info.get("id") or "")
            if job is None or job.state != "queued":
                continue  # the model lists only the jobs this addon submitted (see ``track``)
            if info.get("queue_position") != job.queue_position:
                job.queue_position = info.get("queue_position")
                changed.add(JOBS)
        return changed

    def set_pool(self, name: str, urls: Iterable[str]) -> set[str]:
        """Marks ``name`` as a pool of ``urls`` (before its first snapshot says more)."""
        svc = self.service(name)
        if svc.pool_state is None:
            svc.pool_state = "starting"
        for url in urls:
            member = f"{name}/{_host_port(url)}"
            svc.pool_servers.setdefault(member, PoolServerView(name=member, url=url))
        return {SERVICES}

    def _member(self, name: str) -> tuple[ServiceView, PoolServerView] | None:
        """A pool's server by the name its events carry (``<pool>/<host:port>``), or None."""
        pool_name, sep, _ = name.partition("/")
        pool = self.services.get(pool_name) if sep else None
        if pool is None or not pool.is_pool:
            return None
        member = pool.pool_servers.get(name)
        if member is None:
            member = pool.pool_servers[name] = PoolServerView(name=name)
        return pool, member

    def _apply_pool(self, info: dict[str, Any]) -> set[str]:
        svc = self.service(str(info.get("name", "")), "comfyui")
        before = _pool_tuple(svc)
        svc.pool_state = str(info.get("state") or "starting")
        svc.pool_waiting = len(info.get("waiting") or ())
        svc.pool_problems = [str(p) for p in info.get("problems") or ()]
        servers: dict[str, PoolServerView] = {}
        for m in info.get("servers") or ():
            name = str(m.get("name") or m.get("url") or "")
            queue = m.get("queue_remaining")
            servers[name] = PoolServerView(
                name=name,
                url=str(m.get("url") or ""),
                state=str(m.get("state") or "disconnected"),
                usable=bool(m.get("usable")),
                reason=m.get("reason") or (f"answers as {m['wrong_kind']}" if m.get("wrong_kind") else None),
                queue_remaining=int(queue) if queue is not None else None,
                in_flight=int(m.get("in_flight") or 0),
                jobs=[
                    PoolJobLine(
                        str(j.get("job_id") or ""),
                        j.get("tag"),
                        str(j.get("state") or "queued"),
                        float(j.get("progress") or 0.0),
                    )
                    for j in m.get("jobs") or ()
                ],
            )
        svc.pool_servers = servers
        return {SERVICES} if before != _pool_tuple(svc) else set()

    def track(self, job_id: str, service: str, tag: str | None = None, state: str = "pending") -> set[str]:
        """Starts listing a job this addon submitted (or found again in a reopened .blend)."""
        job = self.jobs.get(job_id)
        if job is None:
            job = JobView(id=job_id, service=service, tag=tag, state=state, submitted_at=time.time())
            self.jobs[job_id] = job
            self._trim_jobs()
        return {JOBS}

    def forget(self, job_id: str) -> set[str]:
        return {JOBS} if self.jobs.pop(job_id, None) is not None else set()

    def add_error(self, source: str, code: str, message: str, **details: Any) -> set[str]:
        self.errors.append(ErrorEntry(time.time(), source, code, message, details))
        return {ERRORS}

    def set_blocked(self, name: str, kind: str, url: str, reason: str | None) -> set[str]:
        """Marks a configured service the addon did not connect (``reason``), or clears the mark (None)."""
        svc = self.service(name, kind)
        if svc.blocked == reason and svc.url == url:
            return set()
        svc.blocked = reason
        svc.url = url
        if reason:
            svc.state = "disconnected"
            svc.reason = reason
        return {SERVICES}

    def drop_service(self, name: str) -> set[str]:
        return {SERVICES} if self.services.pop(name, None) is not None else set()

    def take_posted(self) -> list[str]:
        """Ids of the jobs the server confirmed having since the last call (for the .blend's records)."""
        out, self._posted = self._posted, []
        return out

    def _mark_posted(self, job: JobView) -> None:
        if not job.posted:
            job.posted = True
            self._posted.append(job.id)

    def take_finished(self) -> list[str]:
        """Ids of the jobs that ended since the last call (for importing their results)."""
        out, self._finished = self._finished, []
        return out

    # ---- reading ---------------------------------------------------------------------------------------------------

    def service(self, name: str, kind: str = "comfyui") -> ServiceView:
        svc = self.services.get(name)
        if svc is None:
            svc = self.services[name] = ServiceView(name=name, kind=kind, changed_at=time.time())
        return svc

    @property
    def busy(self) -> bool:
        """True while any job is still on its way (the timer then ticks faster)."""
        return any(j.state in ACTIVE_STATES for j in self.jobs.values())

    def active_jobs(self) -> list[JobView]:
        return [j for j in self.jobs.values() if j.state in ACTIVE_STATES]

    def last_error(self) -> ErrorEntry | None:
        return self.errors[-1] if self.errors else None

    def errors_for(self, source: str) -> list[ErrorEntry]:
        return [e for e in self.errors if e.source == source]

    # ---- event handlers --------------------------------------------------------------------------------------------

    def _job(self, event: Any) -> JobView:
        job_id = event.job
        job = self.jobs.get(job_id)
        if job is None:
            service = getattr(event, "service", "") or ""
            job = self.jobs[job_id] = JobView(id=job_id, service=service, submitted_at=time.time())
            self._trim_jobs()
        return job

    def _on_service_state(self, event: Any, changed: set[str]) -> None:
        pooled = self._member(event.service)
        if pooled is not None:
            pool, member = pooled
            member.state = event.state
            member.reason = event.reason
            changed.add(SERVICES)
            if event.state in ("reconnecting", "circuit_open") and event.reason:
                self.errors.append(ErrorEntry(time.time(), member.name, event.state, event.reason))
                changed.add(ERRORS)
            return
        svc = self.service(event.service)
        svc.previous = event.previous
        svc.state = event.state
        svc.reason = event.reason
        svc.changed_at = getattr(event, "time", None) or time.time()
        changed.add(SERVICES)
        if event.state in ("reconnecting", "circuit_open") and event.reason:
            self.errors.append(ErrorEntry(svc.changed_at, svc.name, event.state, event.reason))
            changed.add(ERRORS)

    def _on_queue(self, event: Any, changed: set[str]) -> None:
        pooled = self._member(event.service)
        svc = pooled[1] if pooled is not None else self.service(event.service)
        if svc.queue_remaining != event.queue_remaining:
            svc.queue_remaining = event.queue_remaining
            changed.add(SERVICES)

    def _on_job_queued(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if job.state in TERMINAL_STATES:
            return
        job.state = "queued"
        job.service = event.service or job.service
        job.queue_position = event.position
        job.pending_connection = bool(event.pending_connection)
        if not job.pending_connection:
            self._mark_posted(job)
        problems = list(event.node_errors or ())
        if problems:
            job.node_errors = problems
            self.errors.append(
                ErrorEntry(
                    time.time(),
                    job.id,
                    "node_errors",
                    f"the server skipped {len(problems)} output(s)",
                    {"node_errors": problems},
                )
            )
            changed.add(ERRORS)
        changed.add(JOBS)

    def _on_job_started(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if job.state in TERMINAL_STATES:
            return
        job.state = "running"
        job.queue_position = None
        job.pending_connection = False
        self._mark_posted(job)
        changed.add(JOBS)

    def _on_node_started(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if job.state in TERMINAL_STATES:
            return
        job.state = "running"
        job.node_id = event.node_id
        job.node_type = event.node_type
        job.progress_value = job.progress_max = job.percentage = 0.0
        job.eta_seconds = None
        changed.add(JOBS)

    def _on_progress(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if job.state in TERMINAL_STATES:
            return
        job.state = "running"
        if event.node_id and event.node_id != job.node_id:
            job.node_id = event.node_id
        job.progress_value = float(event.value)
        job.progress_max = float(event.max)
        job.percentage = float(event.percentage)
        job.eta_seconds = event.eta_seconds
        changed.add(JOBS)

    def _on_preview(self, event: Any, changed: set[str]) -> None:
        self.preview = PreviewView(event.job, event.node_id, event.data, event.format, getattr(event, "seq", 0))
        changed.add(PREVIEW)

    def _on_node_text(self, event: Any, changed: set[str]) -> None:
        if event.job is None:
            return
        job = self._job(event)
        job.node_text = event.text
        changed.add(JOBS)

    def _on_node_output(self, event: Any, changed: set[str]) -> None:
        return  # the files arrive with JobCompleted; nothing to show before

    def _finish(self, job: JobView, state: str, changed: set[str]) -> bool:
        if job.state in TERMINAL_STATES:
            return False  # exactly one terminal event per job; ignore a late duplicate
        job.state = state
        job.finished_at = time.time()
        job.queue_position = None
        job.eta_seconds = None
        self._finished.append(job.id)
        changed.add(JOBS)
        return True

    def _on_completed(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if self._finish(job, "completed", changed):
            job.outputs = [dict(o) for o in (event.outputs or ())]
            job.percentage = 100.0
            if job.id in self.texts:  # a chat: the whole answer as the server sent it
                ui = getattr(event, "ui", None)
                if isinstance(ui, dict) and isinstance(ui.get("text"), str):
                    self.texts[job.id] = ui["text"]

    def _on_failed(self, event: Any, changed: set[str]) -> None:
        job = self._job(event)
        if self._finish(job, "failed", changed):
            error = dict(event.error or {})
            error.setdefault("code", event.code)
            error.setdefault("message", event.message)
            error.setdefault("node_id", event.node_id)
            error.setdefault("node_type", event.node_type)
            job.error = error
            self.errors.append(ErrorEntry(time.time(), job.id, event.code, event.message, error))
            changed.add(ERRORS)

    def _on_cancelled(self, event: Any, changed: set[str]) -> None:
        self._finish(self._job(event), "cancelled", changed)

    def _trim_jobs(self) -> None:
        if len(self.jobs) <= self.max_jobs:
            return
        for job_id in [j.id for j in self.jobs.values() if j.state in TERMINAL_STATES]:
            if len(self.jobs) <= self.max_jobs:
                break
            del self.jobs[job_id]


def _pool_tuple(svc: ServiceView) -> tuple:
    return (svc.pool_state, svc.pool_waiting, svc.pool_problems, list(svc.pool_servers.values()))


def _host_port(url: str) -> str:
    """``http://127.0.0.1:8188/`` → ``127.0.0.1:8188`` (how the hub names a pool's server)."""
    text = url.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    return text.rstrip("/")


def _health_tuple(svc: ServiceView) -> tuple:
    return (
        svc.latency_p50_ms,
        svc.latency_p99_ms,
        svc.http_p50_ms,
        svc.uptime_percent,
        svc.drops,
        svc.reconnects,
        svc.last_error,
        tuple(svc.recent_errors),
        svc.next_attempt_at,
    )


def _error_text(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("message") or entry.get("error") or entry)
    return str(entry)
