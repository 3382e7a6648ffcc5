"""The studio server (`director-link serve`) over real sockets: the brief's endpoints and clients, our typed stream
with resume, the HTTP API, persistence across restarts, and hostile or unauthorised clients.

Every server runs on 127.0.0.1 with a port the OS picks; jobs run on the ComfyUI simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import director_link
import pytest
import websockets
import websockets.exceptions
from director_link.testing import api_workflow

TIMEOUT = 60  # seconds any single wait may take before the test fails (a bound on a hang, not a timing claim)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ---- helpers ---------------------------------------------------------------------------------------------------


def http(method: str, url: str, body=None, token: str | None = None, headers: dict | None = None):
    """(status, parsed JSON or bytes) — HTTP errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            raw, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in ctype and raw else raw)


@contextmanager
def studio(tmp_path, **settings):
    settings.setdefault("port", 0)
    settings.setdefault("output_dir", str(tmp_path / "out"))
    server = director_link.serve(**settings)
    try:
        yield server
    finally:
        server.close()


def ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def submit(server, workflow=None, token=None, **extra) -> str:
    body = {"workflow": workflow or api_workflow("progress", steps=6, step_seconds=0.05), **extra}
    status, answer = http("POST", server.url + "/api/jobs", body, token=token)
    assert status == 201, answer
    return answer["job_id"]


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def brief_until_final(url: str, on_first_progress=None, **connect) -> list[dict]:
    messages = []
    async with websockets.connect(url, **connect) as ws:
        while True:
            m = await recv_json(ws)
            messages.append(m)
            if on_first_progress and m["type"] == "progress":
                on_first_progress()
                on_first_progress = None
            if m["type"] == "progress" and m["status"] in ("completed", "failed", "cancelled"):
                return messages


def run(coro):
    return asyncio.run(coro)


# ---- the brief's contract --------------------------------------------------------------------------------------


def test_a_job_streams_queued_processing_completed_in_the_briefs_shape(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        # A long job ahead keeps ours queued until we are watching: cancelling it is what lets ours run, so the
        # socket sees every state whatever the machine's load (no race between the run and the connect).
        ahead = submit(server, workflow=api_workflow("progress", steps=1000, step_seconds=1.0))
        job = submit(server, tag="shot_010")

        def let_it_run():
            answer = http("DELETE", server.url + f"/api/jobs/{ahead}")
            assert answer[0] == 202, answer

        messages = run(brief_until_final(ws_url(server, f"/ws/{job}"), on_first_progress=let_it_run))
    assert messages[0]["type"] == "connection" and messages[0]["job_id"] == job
    assert messages[1]["type"] == "progress" and messages[1]["status"] == "queued", messages[1]
    progress = [m for m in messages if m["type"] == "progress"]
    statuses = [m["status"] for m in progress]
    assert statuses[-1] == "completed"
    # Never back: queued → processing → completed, and the bar only grows.
    order = {"queued": 0, "processing": 1, "completed": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    values = [m["progress"] for m in progress]
    assert values == sorted(values) and values[-1] == 100
    assert "processing" in statuses, statuses
    last = progress[-1]
    assert set(last) >= {
        "type",
        "job_id",
        "status",
        "progress",
        "estimated_remaining",
        "message",
        "output_path",
        "timestamp",
    }
    assert RFC3339.match(last["timestamp"])
    assert last["job_id"] == job and Path(last["output_path"]).is_file()
    assert Path(last["output_path"]).resolve().is_relative_to((tmp_path / "out").resolve())
    assert "shot_010" in last["output_path"]


def test_the_briefs_python_client_works_unchanged(tmp_path, sim):
    """The brief's client: a websockets loop printing type and status until completed."""
    client = (
        "import asyncio, json, sys, websockets\n"
        "async def main(url):\n"
        "    async with websockets.connect(url) as ws:\n"
        "        while True:\n"
        "            data = json.loads(await ws.recv())\n"
        "            print(data['type'], data.get('status'))\n"
        "            if data.get('status') in ('completed', 'failed'):\n"
        "                break\n"
        "asyncio.run(main(sys.argv[1]))\n"
    )
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        job = submit(server)
        out = subprocess.run(
            [sys.executable, "-c", client, ws_url(server, f"/ws/{job}")],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    lines = out.stdout.split("\n")
    assert out.returncode == 0, out.stderr
    assert lines[0] == "connection connected"
    assert "progress completed" in lines


def test_a_finished_job_sends_its_final_state_at_once_to_many_connections(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        job = submit(server, workflow=api_workflow("invert"))
        run(brief_until_final(ws_url(server, f"/ws/{job}")))

        async def many():
            return await asyncio.gather(*(brief_until_final(ws_url(server, f"/ws/{job}")) for _ in range(20)))

        for messages in run(many()):
            assert [m["type"] for m in messages] == ["connection", "progress"]
            assert messages[1]["status"] == "completed"


def test_an_unknown_job_gets_a_connection_then_its_state_when_a_producer_publishes(tmp_path):
    with studio(tmp_path, database="memory") as server:

        async def scenario():
            async with websockets.connect(ws_url(server, "/ws/test-job-1")) as ws:
                hello = await recv_json(ws)
                assert hello["type"] == "connection" and hello["job_id"] == "test-job-1"
                for status, pct in [("queued", 0), ("processing", 45), ("processing", 80)]:
                    code, _ = http(
                        "POST",
                        server.url + "/api/jobs/test-job-1/progress",
                        {
                            "status": status,
                            "progress": pct,
                            "estimated_remaining": 30,
                            "message": "Generation in progress",
                        },
                    )
                    assert code == 200
                    m = await recv_json(ws)
                    assert (m["status"], m["progress"]) == ("queued" if status == "queued" else "processing", pct)
                code, _ = http(
                    "POST",
                    server.url + "/api/jobs/test-job-1/progress",
                    {"status": "completed", "progress": 100, "output_path": "/path/to/output.png"},
                )
                assert code == 200
                final = await recv_json(ws)
                assert final["status"] == "completed" and final["output_path"] == "/path/to/output.png"
                assert final["estimated_remaining"] is None

        run(scenario())
        # The final state is kept: a late update is refused, not applied.
        code, answer = http("POST", server.url + "/api/jobs/test-job-1/progress", {"status": "failed"})
        assert code == 409 and answer["error"]["code"] == "job_finished"
        code, answer = http("POST", server.url + "/api/jobs/test-job-1/progress", {"status": "exploded"})
        assert code == 400 and "exploded" in answer["error"]["message"]
        code, answer = http("POST", server.url + "/api/jobs/other/progress", {"status": "processing", "progress": 101})
        assert code == 400


def test_monitor_and_status_endpoint_have_the_briefs_shapes(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:

        async def scenario():
            async with websockets.connect(ws_url(server, "/ws/monitor")) as mon:
                assert (await recv_json(mon))["type"] == "connection"
                first = await recv_json(mon)
                assert first["type"] == "system_status"
                assert isinstance(first["timestamp"], float)
                assert set(first["jobs"]) >= {"total", "active", "completed", "failed"}
                assert set(first["websockets"]) == {"total_connections", "jobs_with_connections"}
                async with websockets.connect(ws_url(server, "/ws/anything-1")) as _job_ws:
                    job = submit(server, workflow=api_workflow("invert"))
                    while True:
                        m = await recv_json(mon)
                        if m["type"] != "system_status":
                            continue
                        done = [j for j in m["recent_jobs"] if j["job_id"] == job and j["status"] == "completed"]
                        if done:
                            assert m["jobs"]["completed"] >= 1
                            assert m["websockets"]["jobs_with_connections"] == 1
                            assert m["websockets"]["total_connections"] == 2
                            break
                    code, status = http("GET", server.url + "/api/anime/websocket/status")
                    assert code == 200
                    assert status["status"] == "healthy" and status["websocket_manager"] == "active"
                    assert status["connections"]["total_connections"] == 2
                    assert status["connections"]["jobs_with_connections"] == 1
                    assert status["connections"]["connection_details"] == {"anything-1": {"connections": 1}}
                    assert "WS /ws/monitor" in status["endpoints"]

        run(scenario())


# ---- our typed stream ------------------------------------------------------------------------------------------


async def read_events(ws, until_job_end: str | None = None, count: int | None = None) -> list[dict]:
    out = []
    while True:
        m = await recv_json(ws)
        out.append(m)
        if count is not None and len(out) >= count:
            return out
        if (
            until_job_end
            and m.get("job_id") == until_job_end
            and m.get("type") in ("job_completed", "job_failed", "job_cancelled")
        ):
            return out


def lifecycle(events: list[dict]) -> list[tuple]:
    return [(e["offset"], e["type"]) for e in events if e["type"] not in ("progress", "preview", "queue_changed")]


def test_a_client_that_reconnects_gets_exactly_what_it_missed(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:

        async def scenario():
            async with websockets.connect(ws_url(server, "/ws/events?jobs=all")) as steady:
                hello = await recv_json(steady)
                assert hello["type"] == "subscribed" and hello["recovered"] is False
                epoch = hello["epoch"]
                job = submit(server, workflow=api_workflow("progress", steps=20, step_seconds=0.05))
                async with websockets.connect(ws_url(server, f"/ws/events?jobs={job}&since=0")) as flaky:
                    await recv_json(flaky)
                    first = await read_events(flaky, count=3)
                last = first[-1]["offset"]
                # Away while the job runs on; then back with the last offset seen.
                everything = await read_events(steady, until_job_end=job)
                async with websockets.connect(
                    ws_url(server, f"/ws/events?jobs={job}&since={last}&epoch={epoch}")
                ) as back:
                    hello = await recv_json(back)
                    assert hello["recovered"] is True and "snapshot" not in hello
                    rest = await read_events(back, until_job_end=job)
            got = first + rest
            offsets = [e["offset"] for e in got]
            assert offsets == sorted(set(offsets)), "no duplicate, never out of order"
            mine = [e for e in everything if e.get("job_id") == job]
            # Every lifecycle event arrives exactly once; progress may be coalesced but its last value is there.
            assert lifecycle(got) == lifecycle(mine)
            assert got[-1]["type"] == "job_completed"
            prog = [e for e in got if e["type"] == "progress"]
            assert prog and prog[-1]["value"] == prog[-1]["max"]

        run(scenario())


def test_an_unknown_epoch_or_offset_gets_a_snapshot_instead_of_a_silent_gap(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        job = submit(server, workflow=api_workflow("invert"))
        run(brief_until_final(ws_url(server, f"/ws/{job}")))

        async def scenario():
            for query in ["since=3&epoch=not-ours", "since=999999"]:
                async with websockets.connect(ws_url(server, "/ws/events?" + query)) as ws:
                    hello = await recv_json(ws)
                    assert hello["recovered"] is False
                    snap = {j["job_id"]: j for j in hello["snapshot"]}
                    assert snap[job]["state"] == "completed"

        run(scenario())


def split_binary_preview(frame: bytes) -> tuple[dict, bytes]:
    """`?previews=binary`: a 4-byte big-endian header length, the event's JSON, then the image."""
    n = int.from_bytes(frame[:4], "big")
    return json.loads(frame[4 : 4 + n]), frame[4 + n :]


def test_previews_come_by_reference_unless_binary_frames_are_asked_for(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:

        async def read_all(ws, job):
            out = []  # ("text" | "binary", event, image)
            while True:
                m = await asyncio.wait_for(ws.recv(), TIMEOUT)
                if isinstance(m, bytes):
                    header, image = split_binary_preview(m)
                    out.append(("binary", header, image))
                else:
                    e = json.loads(m)
                    out.append(("text", e, b""))
                    if e.get("job_id") == job and e["type"] in ("job_completed", "job_failed", "job_cancelled"):
                        return out

        async def scenario():
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with websockets.connect(ws_url(server, "/ws/events?previews=jpeg")):
                    pass
            assert refused.value.response.status_code == 400
            async with (
                websockets.connect(ws_url(server, "/ws/events?jobs=all")) as by_url,
                websockets.connect(ws_url(server, "/ws/events?jobs=all&previews=binary")) as binary,
            ):
                assert (await recv_json(by_url))["type"] == "subscribed"
                assert (await recv_json(binary))["type"] == "subscribed"
                job = submit(server, workflow=api_workflow("progress", steps=6, step_seconds=0.1, send_preview=True))
                return job, await read_all(by_url, job), await read_all(binary, job)

        job, url_stream, bin_stream = run(scenario())
    # By reference (the default): previews are JSON events with a URL, and no binary frame at all.
    assert all(kind == "text" for kind, _, _ in url_stream)
    url_previews = [e for _, e, _ in url_stream if e["type"] == "preview"]
    assert url_previews and all(e["url"].startswith(f"/api/jobs/{job}/preview") for e in url_previews)
    # Opted in: every preview is a binary frame (header = the same event, then a real image); no JSON preview.
    binaries = [(e, img) for kind, e, img in bin_stream if kind == "binary"]
    assert binaries, "at least one preview as a binary frame"
    assert not [e for kind, e, _ in bin_stream if kind == "text" and e["type"] == "preview"]
    for header, image in binaries:
        assert header["type"] == "preview" and header["job_id"] == job
        assert header["mime"] in ("image/png", "image/jpeg")
        magic = b"\x89PNG" if header["mime"] == "image/png" else b"\xff\xd8"
        assert image.startswith(magic) and len(image) > 100
    # Text and binary frames share one order: offsets strictly increase, and the lifecycle is the same.
    offsets = [e["offset"] for _, e, _ in bin_stream if "offset" in e]
    assert offsets == sorted(set(offsets))
    # (Only this job's events: a service event may fall between the two subscriptions.)
    by_url_job = lifecycle([e for _, e, _ in url_stream if e.get("job_id") == job])
    binary_job = lifecycle([e for _, e, _ in bin_stream if e.get("job_id") == job])
    assert binary_job == by_url_job
    assert by_url_job[-1][1] == "job_completed"


def test_a_thousand_subscribers_on_one_job_each_get_every_lifecycle_event_in_order(tmp_path, sim):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2600:
        pytest.fail(f"the open-file limit ({hard}) is too low for 1000 connections in one process")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2600) if hard == resource.RLIM_INFINITY else hard, hard))
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:

        async def scenario():
            job_holder = {}
            ready = asyncio.Event()
            connected = 0

            async def subscriber():
                nonlocal connected
                # since=0: a subscriber that connects late still gets the job's events from its start.
                async with websockets.connect(
                    ws_url(server, "/ws/events?since=0&jobs=" + job_holder["id"]),
                    open_timeout=TIMEOUT,
                    ping_interval=None,
                ) as ws:
                    await recv_json(ws)
                    connected += 1
                    if connected == 1000:
                        ready.set()
                    return await read_events(ws, until_job_end=job_holder["id"])

            # The job waits behind a slow one, so every subscriber is in before it starts.
            blocker = submit(server, workflow=api_workflow("slow", seconds=4.0))
            job_holder["id"] = submit(server, workflow=api_workflow("progress", steps=5, step_seconds=0.05))
            tasks = [asyncio.create_task(subscriber()) for _ in range(1000)]
            await asyncio.wait_for(ready.wait(), TIMEOUT * 2)
            results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT * 2)
            return blocker, results

        _, results = run(scenario())
    assert len(results) == 1000
    reference = lifecycle(results[0])
    assert [t for _, t in reference][-1] == "job_completed"
    assert "job_started" in [t for _, t in reference]
    for events in results:
        offsets = [e["offset"] for e in events]
        assert offsets == sorted(set(offsets))
        assert lifecycle(events) == reference


# ---- the HTTP API ----------------------------------------------------------------------------------------------


def test_jobs_api_lists_filters_serves_files_and_cancels(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        done = submit(server, workflow=api_workflow("invert"), tag="shot_a")
        run(brief_until_final(ws_url(server, f"/ws/{done}")))
        slow = submit(server, workflow=api_workflow("slow", seconds=30.0), tag="shot_b")
        code, body = http("GET", server.url + "/api/jobs?tag=shot_a")
        assert code == 200 and [j["job_id"] for j in body["jobs"]] == [done]
        code, body = http("GET", server.url + "/api/jobs?state=completed")
        assert [j["job_id"] for j in body["jobs"]] == [done]
        code, job = http("GET", server.url + f"/api/jobs/{done}")
        assert code == 200 and job["status"] == "completed" and job["files"]
        f = job["files"][0]
        code, data = http("GET", server.url + f["url"])
        assert code == 200 and data == Path(job["outputs"][0]["path"]).read_bytes()
        for bad in ["nothere.png", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"]:
            code, _ = http("GET", server.url + f"/api/jobs/{done}/files/{bad}")
            assert code == 404, bad
        code, answer = http("DELETE", server.url + f"/api/jobs/{slow}")
        assert code == 202
        final = run(brief_until_final(ws_url(server, f"/ws/{slow}")))
        assert final[-1]["status"] == "cancelled"
        code, answer = http("GET", server.url + "/api/jobs/no-such-job")
        assert code == 404 and answer["error"]["code"] == "unknown_job"
        code, answer = http("GET", server.url + "/api/jobs/bad%20id!")
        assert code == 400 and answer["error"]["code"] == "invalid_job_id"


def test_bad_submissions_get_clear_errors(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        cases = [
            ({"workflow": "no_such_template"}, 422, "invalid_workflow"),
            ({"workflow": 42}, 422, "invalid_workflow"),
            ({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}, None, None),
            ({"service": "nope", "workflow": api_workflow("invert")}, 404, "unknown_service"),
            ({}, 400, "invalid_request"),
            ({"workflow": api_workflow("invert"), "surprise": 1}, 400, "invalid_request"),
        ]
        for body, want, code_name in cases:
            code, answer = http("POST", server.url + "/api/jobs", body)
            if want is None:
                # Accepted locally; the server's validation fails the job with the node named.
                assert code == 201, answer
                final = run(brief_until_final(ws_url(server, f"/ws/{answer['job_id']}")))
                assert final[-1]["status"] == "failed" and "NoSuchNode" in final[-1]["message"]
                continue
            assert (code, answer["error"]["code"]) == (want, code_name), (body, answer)
        req = urllib.request.Request(
            server.url + "/api/jobs", data=b"{not json", method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=TIMEOUT)
        assert e.value.code == 400


def test_health_services_and_metrics(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        job = submit(server, workflow=api_workflow("invert"))
        run(brief_until_final(ws_url(server, f"/ws/{job}")))
        code, health = http("GET", server.url + "/api/health")
        assert code == 200 and health["status"] == "ok" and health["database"]["ok"] is True
        assert health["stream"]["offset"] >= 3 and health["jobs"]["completed"] == 1
        code, services = http("GET", server.url + "/api/services")
        assert code == 200 and len(services["services"]) == 1
        assert services["services"][0]["state"] == "connected"
        code, text = http("GET", server.url + "/metrics")
        text = text.decode()
        assert 'director_link_jobs{state="completed"} 1' in text
        assert "director_link_events_total" in text and "director_link_service_up" in text


# ---- security --------------------------------------------------------------------------------------------------


def test_a_token_is_needed_everywhere_and_accepted_in_every_form(tmp_path, sim):
    token = "s3cret-token"
    with studio(tmp_path, services=[f"comfyui={sim.url}"], token=token) as server:
        code, answer = http("GET", server.url + "/api/jobs")
        assert code == 401 and answer["error"]["code"] == "auth_failed"
        code, _ = http("GET", server.url + "/api/jobs", token="wrong")
        assert code == 401
        assert http("GET", server.url + "/api/jobs", token=token)[0] == 200
        assert http("GET", server.url + f"/api/jobs?token={token}")[0] == 200

        async def scenario():
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                async with websockets.connect(ws_url(server, "/ws/monitor")):
                    pass
            assert e.value.response.status_code == 401
            async with websockets.connect(
                ws_url(server, "/ws/monitor"), additional_headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                assert (await recv_json(ws))["type"] == "connection"
            # Browsers: the token as a sub-protocol; the server echoes ours back.
            async with websockets.connect(
                ws_url(server, "/ws/monitor"), subprotocols=["director-link", f"bearer.{token}"]
            ) as ws:
                assert ws.subprotocol == "director-link"
                assert (await recv_json(ws))["type"] == "connection"
            async with websockets.connect(ws_url(server, f"/ws/monitor?token={token}")) as ws:
                assert (await recv_json(ws))["type"] == "connection"

        run(scenario())


def test_origins_are_checked_and_cors_answers_allowed_ones(tmp_path):
    with studio(tmp_path, database="memory") as server:
        code, _ = http("GET", server.url + "/api/health", headers={"Origin": "https://evil.example"})
        assert code == 403
        req = urllib.request.Request(server.url + "/api/health", headers={"Origin": "http://127.0.0.1:5173"})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"

        async def scenario():
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                async with websockets.connect(ws_url(server, "/ws/monitor"), origin="https://evil.example"):
                    pass
            assert e.value.response.status_code == 403
            async with websockets.connect(ws_url(server, "/ws/monitor"), origin="http://localhost:3000") as ws:
                assert (await recv_json(ws))["type"] == "connection"

        run(scenario())


def test_hostile_clients_get_errors_and_disturb_nothing(tmp_path, sim):
    with studio(tmp_path, services=[f"comfyui={sim.url}"], max_connections=3) as server:

        async def scenario():
            async with websockets.connect(ws_url(server, "/ws/job-a")) as ws:
                await recv_json(ws)
                await ws.send("{not json")
                assert (await recv_json(ws))["code"] == "invalid_message"
                await ws.send(json.dumps({"type": "ping"}))
                assert (await recv_json(ws))["type"] == "pong"
                # An oversized frame closes only this connection, with 1009.
                await ws.send("x" * 100_000)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await recv_json(ws)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                async with websockets.connect(ws_url(server, "/ws/bad%20id")):
                    pass
            assert e.value.response.status_code == 400
            # The connection cap refuses clearly, and frees up again.
            held = [await websockets.connect(ws_url(server, f"/ws/job-{i}")) for i in range(3)]
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                async with websockets.connect(ws_url(server, "/ws/job-x")):
                    pass
            assert e.value.response.status_code == 503
            for ws in held:
                await ws.close()
            for _ in range(100):
                code, health = http("GET", server.url + "/api/health")
                if health["connections"] == 0:
                    break
                await asyncio.sleep(0.05)
            async with websockets.connect(ws_url(server, "/ws/job-y")) as ws:
                assert (await recv_json(ws))["type"] == "connection"

        run(scenario())
        job = submit(server, workflow=api_workflow("invert"))
        assert run(brief_until_final(ws_url(server, f"/ws/{job}")))[-1]["status"] == "completed"


def test_a_slow_consumer_is_closed_with_4008_and_resumes_without_loss(tmp_path):
    with studio(tmp_path, database="memory", outbox_max_frames=50) as server:
        host, port = server.url.removeprefix("http://").split(":")

        async def scenario():
            # A reader with a tiny receive window, so the server's outbox (not the kernel) holds what waits.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect((host, int(port)))
            async with websockets.connect(
                ws_url(server, "/ws/events?jobs=all"), sock=sock, ping_interval=None, max_queue=1
            ) as ws:
                hello = await recv_json(ws)
                ws.transport.pause_reading()
                # 1500 × 10 KB: far more than the kernel's socket buffers hold for a reader that stopped.
                note = "x" * 10_000
                for i in range(1500):
                    code, _ = http(
                        "POST",
                        server.url + f"/api/jobs/ext-{i}/progress",
                        {"status": "processing", "progress": 1, "message": note},
                    )
                    assert code == 200
                ws.transport.resume_reading()
                got = []
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        got.append(await recv_json(ws))
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            last = got[-1]["offset"] if got else hello["offset"]
            async with websockets.connect(
                ws_url(server, f"/ws/events?jobs=all&since={last}&epoch={hello['epoch']}")
            ) as ws:
                back = await recv_json(ws)
                assert back["recovered"] is True
                rest = await read_events(ws, count=back["offset"] - last)
            seen = [e["job_id"] for e in got + rest if e["type"] == "progress"]
            assert seen == [f"ext-{i}" for i in range(1500)], "every job's event once, in order"

        run(scenario())
        code, text = http("GET", server.url + "/metrics")
        assert "director_link_slow_consumer_closes_total 1" in text.decode()


def test_connection_attempts_are_rate_limited_per_address(tmp_path):
    with studio(tmp_path, database="memory", connect_rate_per_address=2.0, rate_limit_loopback=True) as server:

        async def scenario():
            statuses = []
            for _ in range(30):
                try:
                    async with websockets.connect(ws_url(server, "/ws/job-a")) as ws:
                        await recv_json(ws)
                        statuses.append(101)
                except websockets.exceptions.InvalidStatus as e:
                    statuses.append(e.response.status_code)
            return statuses

        statuses = run(scenario())
    # The burst (twice the rate) gets in; the rest are told to back off, nothing else.
    assert statuses[:4] == [101] * 4 and 429 in statuses and set(statuses) <= {101, 429}


def test_the_brief_pings_and_a_silent_peer_is_closed(tmp_path):
    with studio(tmp_path, database="memory", ping_interval_seconds=0.2, connection_timeout_seconds=0.5) as server:

        async def scenario():
            # A client that answers nothing (no pongs: websockets' own keepalive is off and reading stops).
            async with websockets.connect(ws_url(server, "/ws/job-a"), ping_interval=None) as ws:
                assert (await recv_json(ws))["type"] == "connection"
                assert (await recv_json(ws))["type"] == "ping"
                ws.transport.pause_reading()
                await asyncio.sleep(1.5)
                ws.transport.resume_reading()
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await recv_json(ws)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000

        run(scenario())


def test_listening_beyond_loopback_without_a_token_is_refused(tmp_path):
    with pytest.raises(director_link.DirectorLinkError) as e:
        director_link.serve(host="0.0.0.0", port=0, output_dir=str(tmp_path))
    assert e.value.code == "invalid_parameter" and "token" in str(e.value)


# ---- restarts --------------------------------------------------------------------------------------------------


@contextmanager
def serve_process(tmp_path, sim_url: str, *extra: str):
    cmd = [
        sys.executable,
        "-m",
        "director_link.cli",
        "serve",
        "--port",
        str(extra_port(tmp_path)),
        "--json",
        "--service",
        f"comfyui={sim_url}",
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        yield proc, info["url"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)


def extra_port(tmp_path) -> int:
    """One port for the whole test, so a restarted server is found where the clients were."""
    f = tmp_path / "port"
    if not f.exists():
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            f.write_text(str(s.getsockname()[1]))
    return int(f.read_text())


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_the_studio_server_restarted_mid_job_delivers_the_final_state_without_gap(tmp_path, sim, how):
    async def follow_across_restart():
        with serve_process(tmp_path, sim.url) as (proc, url):
            status, answer = http(
                "POST", url + "/api/jobs", {"workflow": api_workflow("progress", steps=40, step_seconds=0.2)}
            )
            job = answer["job_id"]
            wsu = url.replace("http://", "ws://")
            # since=0: from the stream's start, so the first events are there however late we connect.
            async with websockets.connect(f"{wsu}/ws/events?jobs={job}&since=0") as ws:
                hello = await recv_json(ws)
                seen = await read_events(ws, count=3)
            proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            proc.wait(timeout=TIMEOUT)
        epoch, last = hello["epoch"], seen[-1]["offset"]
        with serve_process(tmp_path, sim.url) as (proc, url):
            wsu = url.replace("http://", "ws://")
            async with websockets.connect(f"{wsu}/ws/events?jobs={job}&since={last}&epoch={epoch}") as ws:
                back = await recv_json(ws)
                rest = await read_events(ws, until_job_end=job) if not _ended(back, job) else []
            code, final = http("GET", url + f"/api/jobs/{job}")
        return seen, back, rest, final

    seen, back, rest, final = run(follow_across_restart())
    assert final["status"] == "completed", final
    if how == "sigterm":
        # A clean stop keeps the stream: exactly the missed events, none twice.
        assert back["recovered"] is True
        offsets = [e["offset"] for e in seen + rest]
        assert offsets == sorted(set(offsets))
        assert rest[-1]["type"] == "job_completed"
    else:
        # A crash may lose the newest history: the client is told and gets a snapshot, then the rest.
        assert back["recovered"] is False
        assert any(j["job_id"] == seen[0]["job_id"] for j in back["snapshot"])
        assert _ended(back, seen[0]["job_id"]) or rest[-1]["type"] == "job_completed"


def _ended(hello: dict, job: str) -> bool:
    return any(j["job_id"] == job and j["state"] == "completed" for j in hello.get("snapshot") or [])


def test_jobs_and_history_survive_a_restart(tmp_path, sim):
    db = tmp_path / "studio.sqlite3"
    with studio(tmp_path, services=[f"comfyui={sim.url}"], database=f"sqlite:{db}") as server:
        done = submit(server, workflow=api_workflow("invert"), tag="kept")
        run(brief_until_final(ws_url(server, f"/ws/{done}")))
    with studio(tmp_path, services=[f"comfyui={sim.url}"], database=f"sqlite:{db}") as server:
        code, body = http("GET", server.url + "/api/jobs?tag=kept")
        assert [j["job_id"] for j in body["jobs"]] == [done]
        assert body["jobs"][0]["status"] == "completed" and body["jobs"][0]["files"]
        messages = run(brief_until_final(ws_url(server, f"/ws/{done}")))
        assert messages[-1]["status"] == "completed"


def test_the_cli_refuses_an_open_network_bind_with_a_clear_message(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "director_link.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "DIRECTOR_LINK_STUDIO_TOKEN": ""},
    )
    assert out.returncode == 2
    assert "without a token" in out.stderr


def test_serve_process_stops_cleanly_on_sigterm(tmp_path, sim):
    with serve_process(tmp_path, sim.url) as (proc, url):
        assert http("GET", url + "/api/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    # The database says so: the next run continues the same stream.
    with serve_process(tmp_path, sim.url) as (proc, url):
        _, h1 = http("GET", url + "/api/health")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=TIMEOUT)
    with serve_process(tmp_path, sim.url) as (proc, url):
        _, h2 = http("GET", url + "/api/health")
    assert h1["stream"]["epoch"] == h2["stream"]["epoch"]
    time.sleep(0)
