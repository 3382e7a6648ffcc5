"""The one Hub the addon owns, the services it is told about, and the timer step that drains it (pure Python).

Nothing here imports ``bpy``: ``bridge.py`` registers :func:`tick` as Blender's timer and passes a ``redraw``
callback; tests call :func:`tick` directly with a real Hub or a stand-in.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import state as st

# Events taken per poll() call, and at most this many calls per tick (so one tick stays short even under a flood;
# what is left is taken on the next tick, which then comes at once).
POLL_BATCH = 512
MAX_BATCHES_PER_TICK = 4
# Time budget for one tick's draining, in seconds.
TICK_BUDGET = 0.008


@dataclass(frozen=True)
class ServiceSpec:
    """A service as configured in the preferences."""

    name: str
    url: str
    kind: str = "comfyui"
    token: str | None = None
    enabled: bool = True


def is_loopback(url: str) -> bool:
    """True for addresses on this machine (127.0.0.0/8, ::1, localhost), which work with Blender's offline mode."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return False
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Pacing:
    """The timer's interval: fast while events flow, backing off when idle (seconds)."""

    active: float = 0.05  # events arrived: come back soon
    busy: float = 0.1  # a job is running but this tick was quiet
    idle_max: float = 1.0  # nothing running: back off up to this
    growth: float = 1.5
    snapshot_every: float = 2.0  # health figures (latency, uptime) are refreshed this often
    interval: float = 0.05
    last_snapshot: float = float("-inf")

    def next(self, had_events: bool, busy: bool, more_waiting: bool = False) -> float:
        if more_waiting:
            self.interval = 0.0
        elif had_events:
            self.interval = self.active
        else:
            ceiling = self.busy if busy else self.idle_max
            self.interval = min(max(self.interval, self.active) * self.growth, ceiling)
        return self.interval


def drain(hub: Any, model: st.ViewModel, budget: float = TICK_BUDGET) -> tuple[set[str], int, bool]:
    """Takes waiting events into the model (bounded by count and ``budget`` seconds).

    Returns (changed areas, events taken, whether more may be waiting).
    """
    changed: set[str] = set()
    taken = 0
    deadline = time.perf_counter() + budget
    for _ in range(MAX_BATCHES_PER_TICK):
        events = hub.poll(POLL_BATCH)
        if not events:
            return changed, taken, False
        taken += len(events)
        changed |= model.apply(events)
        if len(events) < POLL_BATCH:
            return changed, taken, False
        if time.perf_counter() > deadline:
            break
    return changed, taken, True


def tick(
    hub: Any,
    model: st.ViewModel,
    pacing: Pacing | None = None,
    redraw: Callable[[set[str]], None] | None = None,
    discovery: Discovery | None = None,
    now: float | None = None,
) -> float:
    """One timer step: drain events, refresh health now and then, report changed areas; returns the next interval.

    Never blocks: ``poll()`` and ``snapshot()`` read the hub's in-memory state only.
    """
    pacing = pacing or Pacing()
    if hub is None or getattr(hub, "closed", False):
        return pacing.idle_max
    changed, taken, more = drain(hub, model)
    now = time.monotonic() if now is None else now
    if now - pacing.last_snapshot >= pacing.snapshot_every:
        pacing.last_snapshot = now
        changed |= model.apply_snapshot(hub.snapshot())
    if discovery is not None:
        changed |= discovery.collect(model)
    if changed and redraw is not None:
        redraw(changed)
    return pacing.next(taken > 0, model.busy or (discovery is not None and discovery.running), more)


class Discovery:
    """Probes addresses on a short-lived thread (``Hub.probe`` waits on the network; Blender's UI must not)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._result: list[dict[str, Any]] | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, hub: Any, urls: Iterable[str], timeout: float = 1.0) -> bool:
        """Starts probing ``urls``; False if a probe is still running."""
        if self.running:
            return False
        urls = list(urls)

        def run() -> None:
            try:
                found = hub.probe(urls, timeout)
                with self._lock:
                    self._result = list(found)
            except Exception as exc:  # reported in the panel, never raised into Blender
                with self._lock:
                    self._error = str(exc)

        self._thread = threading.Thread(target=run, name="movie-director-discovery", daemon=True)
        self._thread.start()
        return True

    def collect(self, model: st.ViewModel) -> set[str]:
        """Moves a finished probe's results into the model (non-blocking)."""
        with self._lock:
            result, error = self._result, self._error
            self._result = self._error = None
        running = self.running
        changed: set[str] = set()
        if model.discovering != running:
            model.discovering = running
            changed.add(st.SERVICES)
        if result is not None:
            model.discovered = result
            changed.add(st.SERVICES)
        if error is not None:
            changed |= model.add_error("discovery", "discovery_failed", error)
        return changed

    def join(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None


class Schemas:
    """Each service's node list (``Hub.object_info``), fetched on a short-lived thread the first time it is asked for
    (the first fetch waits on the network; Blender's UI must not). Converting a UI-format workflow and the ranges of
    its inputs need it."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, str] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def get(self, hub: Any, service: str, fetch: bool = True) -> dict[str, Any] | None:
        """The node list when known; else None (and a fetch is started when ``fetch``)."""
        with self._lock:
            known = self._known.get(service)
            if known is not None or not fetch:
                return known
            thread = self._threads.get(service)
            if thread is not None and thread.is_alive():
                return None
            self._errors.pop(service, None)

        def run() -> None:
            try:
                info = hub.object_info(service)
                with self._lock:
                    self._known[service] = info
            except Exception as exc:  # shown where the node list was wanted; asked again next time
                with self._lock:
                    self._errors[service] = str(exc)

        thread = threading.Thread(target=run, name=f"movie-director-schema-{service}", daemon=True)
        with self._lock:
            self._threads[service] = thread
        thread.start()
        return None

    def put(self, service: str, info: dict[str, Any]) -> None:
        """A node list read by someone else (the hub's copy, with a file just uploaded)."""
        with self._lock:
            self._known[service] = info
            self._errors.pop(service, None)

    def error(self, service: str) -> str | None:
        with self._lock:
            return self._errors.get(service)

    def fetching(self, service: str) -> bool:
        with self._lock:
            thread = self._threads.get(service)
        return thread is not None and thread.is_alive()

    def forget(self, service: str | None = None) -> None:
        with self._lock:
            if service is None:
                self._known.clear()
                self._errors.clear()
            else:
                self._known.pop(service, None)
                self._errors.pop(service, None)

    def join(self, timeout: float = 5.0) -> None:
        with self._lock:
            threads = list(self._threads.values())
            self._threads.clear()
        for thread in threads:
            thread.join(timeout)


def _only_url_changed(old: ServiceSpec, new: ServiceSpec) -> bool:
    return (old.kind, old.token, old.enabled) == (new.kind, new.token, new.enabled) and old.url != new.url


class HubOwner:
    """Creates, configures and closes the addon's one ``director_link.Hub``.

    ``factory`` builds the hub (``director_link.Hub`` by default); ``sync_services`` adds, re-adds and removes
    services so the hub matches the preferences, leaving unchanged services (and their jobs) alone.
    """

    def __init__(self, factory: Callable[..., Any] | None = None) -> None:
        self._factory = factory
        self.hub: Any | None = None
        self.options: dict[str, Any] = {}
        # Studio-server mode: the services are the studio server's, not the preferences' list (set by open(),
        # read by the panels: drawing asks the owner, never the hub).
        self.studio = False
        self._services: dict[str, ServiceSpec] = {}
        self.discovery = Discovery()
        self.schemas = Schemas()

    @property
    def is_open(self) -> bool:
        return self.hub is not None and not getattr(self.hub, "closed", False)

    def open(self, output_dir: str, **options: Any) -> Any:
        """The hub, created on first use (``options`` go to ``Hub()``: heartbeat, reconnect_max, …)."""
        if self.is_open:
            return self.hub
        factory = self._factory
        if factory is None and options.get("studio_url"):
            from .studio_link import StudioHub  # studio-server mode: the jobs go through `director-link serve`

            factory = StudioHub
        elif factory is None:
            import director_link

            factory = director_link.Hub
            options = {k: v for k, v in options.items() if not k.startswith("studio_")}
        self.hub = factory(output_dir=output_dir, **options)
        self.options = {"output_dir": output_dir, **options}
        self.studio = getattr(self.hub, "kind", None) == "studio"
        self._services = {}
        return self.hub

    def close(self) -> None:
        """Stops the hub and every thread it owns; idempotent."""
        hub, self.hub = self.hub, None
        self._services = {}
        self.studio = False
        if hub is not None:
            hub.close()
        self.discovery.join()
        self.schemas.join()
        self.schemas.forget()

    def sync_services(self, specs: Iterable[ServiceSpec], model: st.ViewModel, online_access: bool = True) -> set[str]:
        """Makes the hub's services match ``specs``; marks in ``model`` the ones that cannot be used, and why."""
        if not self.is_open:
            return set()
        if self.studio:
            return set()  # the studio server runs its own services; the panel shows them from its list
        hub = self.hub
        changed: set[str] = set()
        wanted: dict[str, ServiceSpec] = {}
        configured: set[str] = set()
        for spec in specs:
            if not spec.enabled or not spec.name:
                continue
            configured.add(spec.name)
            if not online_access and not is_loopback(spec.url):
                changed |= model.set_blocked(
                    spec.name,
                    spec.kind,
                    spec.url,
                    "online access is off (Preferences › System › Network); only local servers are used",
                )
                continue
            wanted[spec.name] = spec
        for name, old in list(self._services.items()):
            new = wanted.get(name)
            if new == old:
                continue
            if new is not None and _only_url_changed(old, new):
                changed |= self._move(name, new, model)
                continue
            self._remove(name)
            if new is None:
                changed |= model.drop_service(name)
        for name, spec in wanted.items():
            if name in self._services:
                continue
            try:
                hub.add_service(spec.kind, spec.url, name=spec.name, token=spec.token or None)
            except Exception as exc:
                changed |= model.set_blocked(spec.name, spec.kind, spec.url, str(exc))
                changed |= model.add_error(spec.name, getattr(exc, "code", "add_service_failed"), str(exc))
                continue
            self._services[name] = spec
            changed |= model.set_blocked(spec.name, spec.kind, spec.url, None)
        # Configured but disabled (or removed) services leave the panel.
        for name in [n for n in model.services if n not in configured]:
            changed |= model.drop_service(name)
        return changed

    def _move(self, name: str, spec: ServiceSpec, model: st.ViewModel) -> set[str]:
        """A corrected address: the hub keeps the service's jobs and sends the ones that never reached the old
        address to the new one (removing and re-adding would end them)."""
        try:
            self.hub.set_service_url(name, spec.url)
        except Exception as exc:
            # A bad address loses nothing: the service stays where it was (and is tried again on the next sync).
            changed = model.set_blocked(spec.name, spec.kind, spec.url, str(exc))
            return changed | model.add_error(spec.name, getattr(exc, "code", "set_service_url_failed"), str(exc))
        self._services[name] = spec
        return model.set_blocked(spec.name, spec.kind, spec.url, None)

    def _remove(self, name: str) -> None:
        self._services.pop(name, None)
        try:
            self.hub.remove_service(name)
        except Exception:
            pass  # already gone

    def services(self) -> dict[str, ServiceSpec]:
        """The services jobs can go to: the preferences' (direct mode) or the studio server's (studio mode)."""
        if self.studio and self.is_open:
            return {
                name: ServiceSpec(name=name, url=self.hub.url, kind=kind)
                for name, kind in self.hub.service_kinds().items()
            }
        return dict(self._services)

    def secrets(self) -> list[str]:
        """The tokens in use (for redaction)."""
        found = [s.token for s in self._services.values() if s.token]
        token = self.options.get("studio_token")
        return found + ([token] if token else [])
