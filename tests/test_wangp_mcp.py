"""WanGP through its MCP server mode, against a look-alike built on the official ``mcp`` SDK (1.10.1, the version
WanGP pins) with WanGP's tool names and answer shapes: generate with progress, files brought home, failures,
cancel, a server that stops and comes back, and a port where something else answers."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import director_link
import pytest

from .backends.servers import free_port, start_http_server, start_wangp_mcp, venv_python
from .conftest import collect

HEARTBEAT = 0.5


@pytest.fixture
def mcp_python() -> str:
    return venv_python("DIRECTOR_LINK_MCP_PYTHON")


@pytest.fixture
def wangp(mcp_python, tmp_path):
    out = tmp_path / "server-out"
    out.mkdir()
    server = start_wangp_mcp(mcp_python, "127.0.0.1", free_port("127.0.0.1"), tmp_path, out)
    yield server
    server.stop()


@pytest.fixture
def linked(wangp, tmp_path):
    with director_link.Hub(output_dir=str(tmp_path / "ours"), heartbeat=HEARTBEAT) as hub:
        name = hub.add_service("wangp_mcp", wangp.url, name="wangp")
        wait_state(hub, name, "connected")
        yield hub, name


def wait_state(hub, name: str, state: str, timeout: float = 15.0) -> float:
    """Seconds until the service reports ``state`` (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        if svc["state"] == state:
            return time.monotonic() - started
        hub.wait_for_events(0.05)
    raise AssertionError(f"{name} never became {state}: {svc}")


def video(prompt: str, steps: int = 4, step_seconds: float = 0.05) -> dict:
    return {"model_type": "t2v_1.3B", "prompt": prompt, "num_inference_steps": steps, "step_seconds": step_seconds}


def test_generation_reports_progress_and_brings_the_video_home(linked, wangp):
    hub, name = linked
    job = hub.submit(name, video("a red fox at dawn", steps=6)).id
    got = collect(hub, [job], timeout=30)
    types = got.types(job)
    assert types[0] == "job_queued" and "job_started" in types and types[-1] == "job_completed", types
    steps = [(e.value, e.max) for e in got.of(job) if e.type == "progress"]
    assert steps and all(m == 6 for _, m in steps), steps
    assert [v for v, _ in steps] == sorted(v for v, _ in steps) and steps[-1][0] == 6, steps
    texts = [e.text for e in got.of(job) if e.type == "progress"]
    assert any(t.startswith("Denoising |") for t in texts), texts
    done = got.terminal(job)
    assert len(done.outputs) == 1, done.outputs
    ours = Path(done.outputs[0]["path"])
    (theirs,) = [Path(p) for p in done.ui["generated_files"]]
    assert ours.read_bytes() == theirs.read_bytes()
    assert done.outputs[0]["sha256"] == hashlib.sha256(theirs.read_bytes()).hexdigest()
    assert done.outputs[0]["kind"] == "video" and ours.parent.parent.name == name
    # The job's folder records what was asked and what came back, like a ComfyUI job's.
    manifest = json.loads((ours.parent / "manifest.json").read_text())
    assert manifest["job_id"] == job and manifest["backend"] == "wangp_mcp" and manifest["service"] == name
    assert manifest["source"] == video("a red fox at dawn", steps=6)
    assert manifest["server_job_id"] == done.ui["server_job_id"] and manifest["tag"] == name
    (entry,) = manifest["files"]
    assert entry["path"] == ours.name and entry["size"] == ours.stat().st_size
    assert entry["sha256"] == hashlib.sha256(ours.read_bytes()).hexdigest() == done.outputs[0]["sha256"]
    assert manifest["finished_at"] >= manifest["submitted_at"] and manifest["elapsed_seconds"] >= 0
    assert "WanGP" in (next(s for s in hub.snapshot()["services"] if s["name"] == name)["version"] or "")


def test_a_failed_generation_says_why(linked):
    hub, name = linked
    job = hub.submit(name, video("please fail")).id
    failed = collect(hub, [job], timeout=30).terminal(job)
    assert failed.type == "job_failed"
    assert failed.error["code"] == "execution_failed"
    assert "Out of VRAM" in failed.error["message"] and "generation" in failed.error["message"]


def test_cancel_stops_the_job_on_the_server_and_the_next_one_runs(linked):
    hub, name = linked
    job = hub.submit(name, video("long shot", steps=200, step_seconds=0.05)).id
    collect(hub, [job], timeout=30, until=lambda evs: any(e.type == "progress" and e.job == job for e in evs))
    hub.cancel(job)
    got = collect(hub, [job], timeout=30)
    assert got.terminal(job).type == "job_cancelled"
    assert max(e.value for e in got.of(job) if e.type == "progress") < 200
    nxt = hub.submit(name, video("after the cancel")).id
    assert collect(hub, [nxt], timeout=30).terminal(nxt).type == "job_completed"


def test_a_task_list_runs_and_what_is_not_settings_is_refused_at_once(linked):
    hub, name = linked
    with pytest.raises(TypeError):
        hub.submit(name, 42)
    assert hub.snapshot()["jobs"] == [], "nothing was registered"
    job = hub.submit(name, [video("first task of a list")]).id
    assert collect(hub, [job], timeout=30).terminal(job).type == "job_completed"


def test_a_stopped_server_flips_health_and_a_restarted_one_comes_back(mcp_python, tmp_path):
    port = free_port("127.0.0.1")
    out = tmp_path / "server-out"
    out.mkdir()
    server = start_wangp_mcp(mcp_python, "127.0.0.1", port, tmp_path, out)
    try:
        with director_link.Hub(output_dir=str(tmp_path / "ours"), heartbeat=HEARTBEAT, reconnect_max=1.0) as hub:
            name = hub.add_service("wangp_mcp", server.url, name="wangp")
            wait_state(hub, name, "connected")
            job = hub.submit(name, video("interrupted", steps=400, step_seconds=0.05)).id
            collect(hub, [job], timeout=30, until=lambda evs: any(e.type == "progress" and e.job == job for e in evs))
            server.stop()
            wait_state(hub, name, "reconnecting", timeout=30)
            events = hub.poll()
            said = [e for e in events if e.type == "service_state_changed" and e.service == name]
            assert any(e.state == "reconnecting" and e.previous == "connected" and e.reason for e in said), said
            # Health flipped on the failed checks alone: the job is still open (only the restart below ends it).
            assert not [e for e in events if e.job == job and e.is_terminal], [e.type for e in events]
            studio = hub.snapshot()["studio"]
            assert studio["state"] == "down" and [u["name"] for u in studio["unhealthy"]] == [name], studio
            svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
            assert svc["last_error"] and svc["consecutive_failures"] >= 1, svc
            server = start_wangp_mcp(mcp_python, "127.0.0.1", port, tmp_path, out)
            wait_state(hub, name, "connected", timeout=20)
            # The restarted server does not know the job any more: it fails with a reason, not a hang.
            failed = collect(hub, [job], timeout=30).terminal(job)
            assert failed.type == "job_failed" and failed.error["code"] == "server_restarted", failed.error
            svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
            assert svc["reconnects"] >= 1 and svc["consecutive_failures"] == 0, svc
            assert hub.snapshot()["studio"]["state"] == "healthy"
    finally:
        server.stop()


def test_something_else_on_the_port_is_named_not_guessed(tmp_path):
    other = start_http_server("127.0.0.1", free_port("127.0.0.1"), tmp_path)
    try:
        with director_link.Hub(output_dir=str(tmp_path / "ours"), heartbeat=HEARTBEAT) as hub:
            name = hub.add_service("wangp_mcp", other.url, name="wangp")
            job = hub.submit(name, video("nowhere")).id
            failed = collect(hub, [job], timeout=30).terminal(job)
            assert failed.type == "job_failed" and failed.error["code"] == "wrong_service", failed.error
            assert "JSON-RPC" in failed.error["message"] and "wgp.py --mcp" in failed.error["message"]
            svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
            assert svc["state"] != "connected" and "JSON-RPC" in (svc["reason"] or ""), svc
    finally:
        other.stop()
