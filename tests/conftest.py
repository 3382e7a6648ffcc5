"""Shared fixtures: a ComfyUI to talk to (our simulator over real loopback sockets, or a real ComfyUI when
``DIRECTOR_LINK_COMFYUI_URL`` is set), hubs that are always closed, and bounded event collection."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import director_link
import pytest

from .backends.servers import backend_tmp, litellm_server, unrelated_server, wangp_server  # noqa: F401

REAL_URL = os.environ.get("DIRECTOR_LINK_COMFYUI_URL", "").strip()
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"job_completed", "job_failed", "job_cancelled"}

# Node timings are scaled so the suite stays short; a real ComfyUI runs them at full length.
TIME_SCALE = 0.25


def pytest_configure(config):
    config.addinivalue_line("markers", "sim_only: needs the simulator's scripted faults or request log")


def pytest_collection_modifyitems(config, items):
    if not REAL_URL:
        return
    skip = pytest.mark.skip(reason="needs the simulator (DIRECTOR_LINK_COMFYUI_URL points at a real ComfyUI)")
    for item in items:
        if "sim_only" in item.keywords:
            item.add_marker(skip)


@dataclass
class Server:
    """The ComfyUI a test talks to; ``sim`` is None for a real server."""

    url: str
    sim: object | None = None  # director_link.testing.ComfySimulator
    scale: float = 1.0

    def get(self, path: str):
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def post(self, path: str, body: dict):
        req = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            return json.loads(data) if data else None


def _start_sim() -> Server:
    from director_link.testing import ComfySimulator

    sim = ComfySimulator(time_scale=TIME_SCALE)
    return Server(sim.url, sim, TIME_SCALE)


def _simulated():
    srv = _start_sim()
    try:
        yield srv
    finally:
        srv.sim.close()


@pytest.fixture
def server():
    if REAL_URL:
        yield Server(REAL_URL)
        return
    yield from _simulated()


@pytest.fixture
def second_server():
    """Another, independent ComfyUI (a second simulator)."""
    if REAL_URL:
        pytest.skip("needs two servers")
    yield from _simulated()


@pytest.fixture
def sim():
    """A simulator of our own (time scaled to a quarter), for tests that hand it to a studio server."""
    from director_link.testing import ComfySimulator

    with ComfySimulator(time_scale=0.25) as s:
        yield s


@pytest.fixture
def hub(tmp_path):
    h = director_link.Hub(output_dir=str(tmp_path / "out"))
    try:
        yield h
    finally:
        h.close()


@dataclass
class Collected:
    events: list = field(default_factory=list)

    def of(self, job_id: str) -> list:
        return [e for e in self.events if e.job == job_id]

    def types(self, job_id: str) -> list[str]:
        return [e.type for e in self.of(job_id)]

    def terminal(self, job_id: str):
        ends = [e for e in self.of(job_id) if e.is_terminal]
        assert len(ends) == 1, f"job {job_id} has {len(ends)} terminal events: {[e.type for e in ends]}"
        return ends[0]


def collect(hub, job_ids, timeout: float = 30.0, until=None) -> Collected:
    """Drains events until every job in ``job_ids`` ended (or ``until(events)`` is true); bounded by ``timeout``.
    Keeps draining briefly after the last end, so a second terminal event would be seen."""
    pending = set(job_ids)
    out = Collected()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.wait_for_events(0.1)
        for ev in hub.poll():
            out.events.append(ev)
            if ev.is_terminal:
                pending.discard(ev.job)
        if until is not None and until(out.events):
            return out
        if not pending and until is None:
            settle = time.monotonic() + 0.3
            while time.monotonic() < settle:
                hub.wait_for_events(0.05)
                out.events.extend(hub.poll())
            return out
    stuck = [j for j in hub.snapshot()["jobs"] if j["id"] in pending]
    types = [e.type for e in out.events if e.job in pending or e.job is None][-40:]
    raise AssertionError(f"timed out after {timeout} s; unfinished jobs {stuck}; their last events {types}")


def connect(hub, server: Server, name: str = "comfy", timeout: float = 15.0) -> str:
    """Adds the server and waits (bounded) until the link is connected."""
    name = hub.add_service("comfyui", server.url, name=name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        if svc["state"] == "connected":
            return name
        hub.wait_for_events(0.05)
        hub.poll()
    raise AssertionError(f"{name} did not connect: {svc}")


def nonce() -> int:
    return time.time_ns() % 4_000_000_000


def invert_prompt(prefix: str = "dl_test/invert", color: int | None = None) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": 64,
                "height": 48,
                "batch_size": 1,
                "color": nonce() % (1 << 24) if color is None else color,
            },
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def progress_prompt(steps: int = 4, step_seconds: float = 0.05, preview: bool = True) -> dict:
    return {
        "1": {
            "class_type": "AcceptanceProgress",
            "inputs": {
                "steps": steps,
                "step_seconds": step_seconds,
                "width": 64,
                "height": 64,
                "send_preview": preview,
                "nonce": nonce(),
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl_test/progress"}},
    }


def slow_prompt(seconds: float = 20.0) -> dict:
    return {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": nonce()}}}


def fail_prompt(message: str = "planned failure") -> dict:
    return {"1": {"class_type": "AcceptanceFail", "inputs": {"message": message, "steps_before_failing": 1}}}


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))
