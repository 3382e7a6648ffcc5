"""Never lose a job: restarts, refused connections, stalls, a blocked WebSocket, and a chaos run."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import director_link
import pytest

from .conftest import collect, connect, invert_prompt, progress_prompt, slow_prompt
from .faultproxy import FaultProxy

pytestmark = pytest.mark.sim_only

# The default schedule (1 s ×1.5 to 30 s; breaker: more than 5 failures in 60 s opens it for 30 s), ten times faster.
FAST = dict(
    reconnect_initial=0.1,
    reconnect_max=3.0,
    breaker_window=6.0,
    breaker_open_for=3.0,
    heartbeat=0.5,
    connect_timeout=2.0,
)


@pytest.fixture
def fast_hub(tmp_path):
    h = director_link.Hub(output_dir=str(tmp_path / "out"), **FAST)
    try:
        yield h
    finally:
        h.close()


def service(hub, name: str) -> dict:
    return next(s for s in hub.snapshot()["services"] if s["name"] == name)


def wait_state(hub, name: str, states: set[str], timeout: float) -> float:
    """Seconds until the service is in one of ``states`` (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if service(hub, name)["state"] in states:
            return time.monotonic() - started
        hub.wait_for_events(0.02)
        hub.poll()
    raise AssertionError(f"{name} never reached {states}: {service(hub, name)}")


def test_a_restart_fails_lost_jobs_clearly_and_resubmit_runs_them(fast_hub, server):
    hub = fast_hub
    name = connect(hub, server)
    job = hub.submit(name, slow_prompt(seconds=30))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "node_started" for e in evs))
    server.sim.restart(down_seconds=1.0)
    got = collect(hub, [job.id], timeout=30)
    failed = got.terminal(job.id)
    assert failed.type == "job_failed" and failed.code == "server_restarted"
    assert "restart" in failed.message
    again = hub.resubmit(job.id)
    assert again.id != job.id and again.service == name
    hub.cancel(again.id)  # a 30 s node: cancelling proves it was really queued again
    assert collect(hub, [again.id], timeout=20).terminal(again.id).type == "job_cancelled"


def test_resubmit_on_restart_keeps_the_job_alive(fast_hub, server):
    hub = fast_hub
    name = hub.add_service("comfyui", server.url, name="auto", resubmit_on_restart=True)
    wait_state(hub, name, {"connected"}, 10)
    job = hub.submit(name, progress_prompt(steps=10, step_seconds=0.2, preview=False))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "progress" for e in evs))
    server.sim.restart(down_seconds=0.5)
    done = collect(hub, [job.id], timeout=40).terminal(job.id)
    assert done.type == "job_completed" and Path(done.paths[0]).is_file()


def test_connected_within_three_attempts_once_the_server_is_back(fast_hub, server):
    hub = fast_hub
    name = connect(hub, server)
    server.sim.refuse_connections(3.0)
    server.sim.drop_sockets()
    wait_state(hub, name, {"reconnecting", "disconnected", "circuit_open"}, 5)
    back_at = time.monotonic() + 3.0
    while time.monotonic() < back_at + 0.05:
        hub.wait_for_events(0.05)
        hub.poll()
    attempts_when_back = service(hub, name)["connect_attempts"]
    wait_state(hub, name, {"connected"}, 10)
    used = service(hub, name)["connect_attempts"] - attempts_when_back
    assert used <= 3, f"{used} attempts after the server came back"
    job = hub.submit(name, invert_prompt())
    assert collect(hub, [job.id]).terminal(job.id).type == "job_completed"


def test_a_stalled_server_is_detected_by_its_unanswered_pings(fast_hub, server):
    hub = fast_hub
    name = connect(hub, server)
    time.sleep(0.6)  # one ping answered, so the RTT is known
    assert service(hub, name)["latency"]["samples"] >= 1
    # The stall lasts until this test ends it, so the link can only have noticed it by the pings going
    # unanswered, never by the server coming back (how soon is measured in bench/, not here).
    server.sim.stall(600.0)
    try:
        wait_state(hub, name, {"reconnecting", "disconnected", "circuit_open", "polling"}, 30)
    finally:
        server.sim.stall(0)
    wait_state(hub, name, {"connected"}, 15)
    assert service(hub, name)["drops"] >= 1


def test_http_polling_fallback_when_the_websocket_is_blocked(fast_hub, server):
    hub = fast_hub
    proxy = FaultProxy(server.sim.port)
    try:
        proxy.block_websocket = True
        name = hub.add_service("comfyui", proxy.url, name="proxied")
        wait_state(hub, name, {"polling"}, 10)
        assert "WebSocket" in (service(hub, name)["reason"] or "") or service(hub, name)["reason"]
        job = hub.submit(name, progress_prompt(steps=3, step_seconds=0.1, preview=False))
        got = collect(hub, [job.id], timeout=30)
        done = got.terminal(job.id)
        assert done.type == "job_completed" and Path(done.paths[0]).is_file()
        assert "job_started" in got.types(job.id), "coarse progress: started, then done"
        proxy.block_websocket = False
        wait_state(hub, name, {"connected"}, 15)
        second = hub.submit(name, progress_prompt(steps=2, step_seconds=0.05))
        got = collect(hub, [second.id], timeout=30)
        assert "progress" in got.types(second.id), "back on the WebSocket: live progress again"
    finally:
        proxy.close()


def test_the_circuit_opens_for_a_server_that_keeps_dropping_us(tmp_path, server):
    hub = director_link.Hub(output_dir=str(tmp_path), **{**FAST, "reconnect_max": 0.2})
    try:
        proxy = FaultProxy(server.sim.port)
        try:
            name = hub.add_service("comfyui", proxy.url, name="flaky")
            wait_state(hub, name, {"connected"}, 10)
            deadline = time.monotonic() + 15
            while service(hub, name)["state"] != "circuit_open" and time.monotonic() < deadline:
                proxy.cut_all()
                hub.wait_for_events(0.1)
                hub.poll()
            snap = service(hub, name)
            assert snap["state"] == "circuit_open", snap
            assert "keeps failing or dropping" in snap["reason"] and snap["next_attempt_at"] > time.time()
            hub.reconnect(name)
            wait_state(hub, name, {"connected"}, 10)
        finally:
            proxy.close()
    finally:
        hub.close()


def view_bytes(url: str, out: dict) -> bytes:
    query = urllib.parse.urlencode(
        {"filename": out["filename"], "subfolder": out["subfolder"], "type": out["file_type"]}
    )
    with urllib.request.urlopen(f"{url}/view?{query}", timeout=10) as resp:
        return resp.read()


def test_chaos_every_job_ends_once_and_nothing_is_sent_twice(tmp_path, server, second_server):
    """≥ 300 jobs over two servers while sockets drop every 1–5 s, plus one stall and one restart."""
    jobs_per_server = 150
    hub = director_link.Hub(output_dir=str(tmp_path), **FAST)
    stop = threading.Event()
    rng = random.Random(1234)

    faults = Counter()

    def chaos():
        # Drops at random moments 1–5 s apart (halved, to fit CI), one stall, one restart.
        sims = [server.sim, second_server.sim]
        started = time.monotonic()
        while not stop.wait(rng.uniform(1.0, 5.0) / 2):
            rng.choice(sims).drop_sockets()
            faults["drops"] += 1
            elapsed = time.monotonic() - started
            if not faults["stalls"] and elapsed > 1.5:
                server.sim.stall(1.5)
                faults["stalls"] += 1
            if not faults["restarts"] and elapsed > 3:
                second_server.sim.restart(down_seconds=1.0)
                faults["restarts"] += 1

    try:
        names = [connect(hub, server, "a"), connect(hub, second_server, "b")]
        monkey = threading.Thread(target=chaos, daemon=True)
        monkey.start()
        submitted = {}
        early = []
        for i in range(jobs_per_server):
            for name in names:
                job = hub.submit(name, invert_prompt(prefix=f"chaos/{name}"))
                submitted[job.id] = name
            # Submissions spread over ~6 s, so that drops, the stall and the restart land among them.
            time.sleep(0.04)
            if i % 10 == 0:
                early.extend(hub.poll())  # keep draining like the Blender timer does
        ended_early = {e.job for e in early if e.is_terminal}
        got = collect(hub, [j for j in submitted if j not in ended_early], timeout=240)
        got.events[:0] = early
        stop.set()
        monkey.join(10)
        assert faults["stalls"] == 1 and faults["restarts"] == 1 and faults["drops"] >= 2, faults

        ends = Counter(e.job for e in got.events if e.is_terminal)
        assert set(ends) == set(submitted) and set(ends.values()) == {1}, "exactly one terminal event per job"
        outcomes = Counter(got.terminal(j).type for j in submitted)
        codes = Counter(got.terminal(j).code for j in submitted if got.terminal(j).type == "job_failed")
        assert set(codes) <= {"server_restarted"}, f"only the restart may fail jobs: {codes}"
        assert outcomes["job_completed"] >= len(submitted) * 0.5, outcomes
        for job_id, name in submitted.items():
            types = got.types(job_id)
            assert types[0] == "job_queued", (job_id, types)
            end = got.terminal(job_id)
            if end.type == "job_completed":
                assert "job_started" in types, (job_id, types)
                assert len(end.outputs) == 1, end.outputs
                path = Path(end.paths[0])
                url = (server if name == "a" else second_server).url
                assert (
                    hashlib.sha256(path.read_bytes()).digest()
                    == hashlib.sha256(view_bytes(url, end.outputs[0])).digest()
                )
        files = list(Path(tmp_path).rglob("*.png"))
        assert len(files) == outcomes["job_completed"], "every output exists once"
        for srv in (server, second_server):
            posts = Counter(
                (r["json"] or {}).get("prompt_id")
                for r in srv.sim.requests()
                if r["method"] == "POST" and r["path"].removeprefix("/api") == "/prompt"
            )
            assert posts and max(posts.values()) == 1, f"a prompt was POSTed twice: {posts.most_common(3)}"
        mine = {j for j, n in submitted.items()}
        all_posted = set()
        for srv in (server, second_server):
            all_posted |= {
                (r["json"] or {}).get("prompt_id")
                for r in srv.sim.requests()
                if r["method"] == "POST" and r["path"].removeprefix("/api") == "/prompt"
            }
        assert mine <= all_posted, "every job reached a server"
    finally:
        stop.set()
        hub.close()
