"""Pools from Python: ``Hub.add_pool``, ``snapshot()["pools"]``, ``remove_service``, the studio server's ``--pool``
and ``doctor --pool`` — against several simulators on 127.0.0.1 with different node sets."""

from __future__ import annotations

import json
import math
import time
import urllib.request

import director_link
import pytest
from director_link import errors
from director_link.testing import ComfySimulator

from .conftest import collect, nonce
from .test_cli import cli, closed_port


def slow(seconds: float = 0.5) -> dict:
    return {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": nonce()}}}


def text(t: str) -> dict:
    return {"1": {"class_type": "AcceptanceText", "inputs": {"text": t}}}


@pytest.fixture
def sims():
    started = [
        ComfySimulator(time_scale=0.05),
        ComfySimulator(time_scale=0.05, without_nodes=["AcceptanceText"]),
        ComfySimulator(time_scale=0.05),
    ]
    try:
        yield started
    finally:
        for s in started:
            s.close()


def pool_of(hub, name: str) -> dict:
    return next(p for p in hub.snapshot()["pools"] if p["name"] == name)


def wait_usable(hub, name: str, n: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = pool_of(hub, name)
        if sum(s["usable"] for s in pool["servers"]) == n:
            return pool
        hub.wait_for_events(0.05)
        hub.poll()
    raise AssertionError(f"pool {name}: {n} server(s) never usable: {pool}")


def test_a_pool_runs_jobs_on_servers_that_can_and_says_where(hub, sims):
    assert hub.add_pool("studio", [s.url for s in sims], capacity=1) == "studio"
    pool = wait_usable(hub, "studio", 3)
    assert pool["state"] == "ready" and pool["capacity"] == 1 and pool["wait_deadline_seconds"] == 600.0
    no_text = pool["servers"][1]["url"]
    assert pool["inventory_differences"] == [{"server": no_text, "lacks_nodes": ["AcceptanceText"], "lacks_count": 1}]
    jobs = [hub.submit("studio", text(f"t{i}"), tag=f"shot-{i}") for i in range(6)]
    jobs += [hub.submit("studio", slow()) for _ in range(6)]
    got = collect(hub, [j.id for j in jobs])
    for j in jobs:
        assert got.terminal(j.id).type == "job_completed"
        assigned = [e for e in got.of(j.id) if e.type == "job_assigned"]
        assert len(assigned) == 1 and assigned[0].service == "studio" and assigned[0].attempt == 1
        assert isinstance(assigned[0], director_link.events.JobAssigned)
        info = j.info()
        assert info["service"] == "studio" and info["server"] == assigned[0].server
    for j in jobs[:6]:
        assert j.info()["server"] != no_text, "a text job went to the server without AcceptanceText"
    # Every job event names the pool; the servers' own events name pool/host:port.
    assert {e.service for e in got.events if e.type in ("job_queued", "job_started")} == {"studio"}
    snap = hub.snapshot()
    assert sum(s["completed"] for s in pool_of(hub, "studio")["servers"]) == 12
    assert next(s for s in snap["services"] if s["name"] == "studio")["state"] == "connected"


def test_a_job_no_server_can_run_fails_at_once_naming_what_lacks_where(hub, sims):
    hub.add_pool("studio", [sims[1].url])
    wait_usable(hub, "studio", 1)
    with pytest.raises(errors.WorkflowError) as e:
        hub.submit("studio", text("x"))
    assert "node AcceptanceText" in str(e.value) and sims[1].url.rstrip("/") in str(e.value)


def test_bad_pools_raise_clear_errors(hub, sims):
    with pytest.raises(errors.InvalidUrlError, match="has no servers"):
        hub.add_pool("studio", [])
    with pytest.raises(errors.DuplicateServiceError, match="twice"):
        hub.add_pool("studio", [sims[0].url, sims[0].url.replace("http://", "")])
    with pytest.raises(ValueError, match="wait_deadline"):
        hub.add_pool("studio", [sims[0].url], wait_deadline=-1)
    hub.add_pool("studio", [sims[0].url], wait_deadline=math.inf)
    assert pool_of(hub, "studio")["wait_deadline_seconds"] is None
    with pytest.raises(errors.DuplicateServiceError):
        hub.add_pool("studio", [sims[1].url])


def test_every_server_down_jobs_wait_then_fail_after_the_deadline(hub):
    hub.add_pool("studio", [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"], wait_deadline=0.5)
    job = hub.submit("studio", slow())
    got = collect(hub, [job.id])
    end = got.terminal(job.id)
    assert end.type == "job_failed" and end.error["code"] == "timeout", end
    assert "every server stayed down" in end.error["message"]
    assert pool_of(hub, "studio")["state"] == "waiting for a server"


def test_removing_a_pool_ends_its_jobs_once(hub, sims):
    hub.add_pool("studio", [s.url for s in sims], capacity=1)
    wait_usable(hub, "studio", 3)
    jobs = [hub.submit("studio", slow(20.0)) for _ in range(5)]
    hub.remove_service("studio")
    got = collect(hub, [j.id for j in jobs])
    assert {got.terminal(j.id).error["code"] for j in jobs} == {"service_removed"}
    assert hub.snapshot()["pools"] == [] and "studio" not in hub.services()


def test_the_studio_server_runs_a_pool_and_shows_it(sims, tmp_path):
    with director_link.serve(
        port=0, pools=[f"studio={sims[0].url},{sims[2].url}"], database="memory", output_dir=str(tmp_path)
    ) as server:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(server.url + "/api/services", timeout=10) as r:
                body = json.loads(r.read())
            (pool,) = body["pools"]
            if all(s["usable"] for s in pool["servers"]):
                break
            time.sleep(0.05)
        assert pool["name"] == "studio" and len(pool["servers"]) == 2 and pool["state"] == "ready", pool
        assert any(s["name"] == "studio" for s in body["services"])
        # A job submitted to the pool over the API: its view names the server that ran it.
        req = urllib.request.Request(
            server.url + "/api/jobs",
            data=json.dumps({"workflow": slow(), "service": "studio"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            job_id = json.loads(r.read())["job_id"]
        while time.monotonic() < deadline + 20:
            with urllib.request.urlopen(f"{server.url}/api/jobs/{job_id}", timeout=10) as r:
                view = json.loads(r.read())
            if view["state"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert view["state"] == "completed", view
        assert view["server"] in [s["url"] for s in pool["servers"]], view


def test_doctor_shows_a_pool_and_its_servers(sims):
    dead = f"127.0.0.1:{closed_port()}"
    res = cli("doctor", "--pool", f"studio={sims[0].url},{sims[1].url},{dead}", "--timeout", "10", "--json")
    assert res.returncode == 0, res.stderr
    (pool,) = json.loads(res.stdout)["pools"]
    states = [s["usable"] for s in pool["servers"]]
    assert states == [True, True, False], pool
    assert pool["inventory_differences"][0]["lacks_nodes"] == ["AcceptanceText"]
    res = cli("doctor", "--pool", f"studio={sims[0].url},{dead}", "--timeout", "10")
    assert res.returncode == 0 and "Pool studio: ready" in res.stdout and "OK " in res.stdout, res.stdout
    res = cli("doctor", "--pool", "studio=")
    assert res.returncode == 2 and "NAME=URL1,URL2" in res.stderr
