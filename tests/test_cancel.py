"""Cancelling touches only our job: queued → removed from the queue, running → targeted interrupt, confirmed."""

from __future__ import annotations

import time
import uuid

import pytest
from director_link import errors

from .conftest import collect, connect, slow_prompt


def other_client_submits(server, prompt: dict) -> str:
    """A second, independent client (plain HTTP, its own client id) queues a prompt."""
    answer = server.post("/prompt", {"prompt": prompt, "client_id": f"other-{uuid.uuid4().hex[:8]}"})
    return answer["prompt_id"]


def wait_history(server, prompt_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}")
        if prompt_id in entry:
            return entry[prompt_id]
        time.sleep(0.1)
    raise AssertionError(f"{prompt_id} never finished on the server")


def assert_only_targeted_requests(server, job_id: str) -> None:
    if server.sim is None:
        return
    for req in server.sim.requests():
        path = req["path"].removeprefix("/api")
        if req["method"] == "POST" and path == "/interrupt":
            assert (req["json"] or {}).get("prompt_id") == job_id, f"an untargeted interrupt was sent: {req}"
        if req["method"] == "POST" and path == "/queue":
            assert "clear" not in (req["json"] or {}), f"the queue was cleared: {req}"
            assert (req["json"] or {}).get("delete") == [job_id], req


def test_cancel_a_queued_job_leaves_the_other_clients_job_alone(hub, server):
    name = connect(hub, server)
    theirs = other_client_submits(server, slow_prompt(seconds=4))
    job = hub.submit(name, slow_prompt(seconds=40))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "job_queued" and e.job == job.id for e in evs))
    hub.cancel(job.id)
    got = collect(hub, [job.id], timeout=15)
    assert got.terminal(job.id).type == "job_cancelled"
    assert not [e for e in got.of(job.id) if e.type == "job_started"], "it never ran"
    with pytest.raises(errors.JobCancelled) as info:
        job.wait(timeout=1)
    assert info.value.code == "cancelled"
    assert job.state == "cancelled"
    assert wait_history(server, theirs)["status"]["status_str"] == "success", "the other client's job completed"
    assert server.get(f"/history/{job.id}") == {}, "a removed queue item never runs"
    assert_only_targeted_requests(server, job.id)


def test_cancel_a_running_job_interrupts_only_it(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, slow_prompt(seconds=40))
    collect(hub, [], timeout=10, until=lambda evs: any(e.type == "node_started" and e.job == job.id for e in evs))
    theirs = other_client_submits(server, slow_prompt(seconds=2))
    job.cancel()
    got = collect(hub, [job.id], timeout=15)
    assert got.terminal(job.id).type == "job_cancelled"
    # The node was stopped, not waited out: the server's record of our prompt ends in an interrupt, without the
    # output the node only writes once its 40 s have run.
    ours = wait_history(server, job.id)
    said = [m[0] for m in ours["status"]["messages"]]
    assert "execution_interrupted" in said and "execution_success" not in said, said
    assert ours["outputs"] == {}, ours["outputs"]
    assert not [e for e in got.of(job.id) if e.type == "node_output"], "the node never finished"
    assert wait_history(server, theirs)["status"]["status_str"] == "success", "the next client's job still ran"
    assert_only_targeted_requests(server, job.id)


def test_cancel_of_a_finished_or_unknown_job(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, slow_prompt(seconds=0))
    got = collect(hub, [job.id])
    assert got.terminal(job.id).type == "job_completed"
    hub.cancel(job.id)  # already over: nothing to do, no error
    time.sleep(0.3)
    assert [e.type for e in hub.poll() if e.job == job.id] == [], "no second terminal event"
    with pytest.raises(errors.UnknownJobError):
        hub.cancel("00000000-0000-4000-8000-000000000000")
