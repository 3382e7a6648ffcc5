"""The link survives what servers do: stalls, hostile frames, drops; poll() never blocks."""

from __future__ import annotations

import time

import pytest

from .conftest import collect, connect, invert_prompt, progress_prompt

pytestmark = pytest.mark.sim_only

GARBAGE = [
    "invalid_json",
    "nan_json",
    "unknown_type",
    "wrong_types",
    "truncated_binary",
    "unknown_binary",
    "huge_text",
    "huge_binary",
]


def test_poll_never_blocks_while_the_server_stalls(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, progress_prompt(steps=8, step_seconds=0.2, preview=False))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "job_started" for e in evs))
    # The stall lasts until this test ends it: every poll()/snapshot() below returns while the server is silent,
    # so none of them can be waiting for it (one that did would never return, and the test would time out).
    server.sim.stall(600.0)
    seen = []
    try:
        for _ in range(100):
            seen.extend(hub.poll())
            snap = hub.snapshot()
            assert any(j["id"] == job.id for j in snap["jobs"])
            time.sleep(0.01)
    finally:
        server.sim.stall(0)
    if not any(e.is_terminal and e.job == job.id for e in seen):
        seen.extend(collect(hub, [job.id], timeout=30).events)
    ends = [e for e in seen if e.is_terminal and e.job == job.id]
    assert [e.type for e in ends] == ["job_completed"], "the job finishes once the stall ends"


@pytest.mark.parametrize("kind", GARBAGE)
def test_hostile_messages_do_not_kill_the_link(hub, server, kind):
    name = connect(hub, server)
    server.sim.send_garbage(kind)
    time.sleep(0.3)
    job = hub.submit(name, invert_prompt())
    got = collect(hub, [job.id], timeout=30)
    assert got.terminal(job.id).type == "job_completed", f"after {kind}: {[e.type for e in got.events]}"
    svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
    assert svc["state"] == "connected"


def test_garbage_during_a_job_is_skipped(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, progress_prompt(steps=6, step_seconds=0.1, preview=True))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "progress" for e in evs))
    for kind in GARBAGE:
        server.sim.send_garbage(kind)
    got = collect(hub, [job.id], timeout=30)
    assert got.terminal(job.id).type == "job_completed"
    assert all(e.job in (None, job.id) for e in got.events), "nothing was routed to a phantom job"


def test_a_dropped_socket_reconnects_and_the_job_still_completes(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, progress_prompt(steps=8, step_seconds=0.1, preview=False))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "progress" for e in evs))
    server.sim.drop_sockets()
    got = collect(hub, [job.id], timeout=60)
    done = got.terminal(job.id)
    assert done.type == "job_completed" and len(done.paths) == 1
    states = [e.state for e in got.events if e.type == "service_state_changed"]
    assert "reconnecting" in states and states[-1] == "connected"
