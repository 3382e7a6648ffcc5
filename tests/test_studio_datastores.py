"""The studio server with real PostgreSQL and Redis servers: persistence and reload in PostgreSQL (across a kill of
the studio mid-job, and with the database stopped mid-job), and several instances sharing their jobs over Redis
Streams (each other's jobs in order, and across a kill and restart of Redis).

`.ci/datastores.sh` (sourced by `.ci/run`) installs and starts PostgreSQL 15 and Redis and exports
DIRECTOR_LINK_TEST_POSTGRES; tests that stop a server start a private one of their own (`.ci/datastores.sh
start-postgres`, `redis-server` on a free port). A test that finds none fails and says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets
from director_link.testing import api_workflow

from .test_studio import TIMEOUT, brief_until_final, http, read_events, recv_json, run, studio, submit, ws_url

ROOT = Path(__file__).resolve().parent.parent
DATASTORES = ROOT / ".ci" / "datastores.sh"
TERMINAL = ("job_completed", "job_failed", "job_cancelled")
HOW = "run `. .ci/datastores.sh` (it installs and starts PostgreSQL and Redis and exports their URLs)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float = TIMEOUT):
    """Polls `check` until it returns something truthy; fails (with `what`) after `timeout` — a bound on a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---- PostgreSQL -------------------------------------------------------------------------------------------------


def postgres_url() -> str:
    url = os.environ.get("DIRECTOR_LINK_TEST_POSTGRES", "").strip()
    if not url:
        pytest.fail(f"DIRECTOR_LINK_TEST_POSTGRES is not set: these tests need a real PostgreSQL; {HOW}")
    return url


def psql(url: str, sql: str) -> list[list[str]]:
    exe = shutil.which("psql")
    if not exe:
        pytest.fail(f"psql is not installed (Debian: postgresql-client); {HOW}")
    out = subprocess.run(
        [exe, url, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def fresh_database(url: str) -> str:
    """A new empty database on the server at `url`; its URL (same user and password)."""
    name = f"dl_test_{uuid.uuid4().hex[:12]}"
    psql(url, f"CREATE DATABASE {name}")
    return urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()


def password_of(url: str) -> str:
    p = urllib.parse.urlsplit(url).password
    assert p, "the test server is set up with a password, so that its absence from every message can be checked"
    return p


@contextmanager
def serve_process(port: int, *args: str):
    cmd = [sys.executable, "-m", "director_link.cli", "serve", "--port", str(port), "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield proc, json.loads(line)["url"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)


def test_postgres_keeps_jobs_across_a_kill_mid_job_and_the_final_state_arrives_once(tmp_path, sim):
    db = fresh_database(postgres_url())
    secret = password_of(db)
    port = free_port()
    args = ["--service", f"comfyui={sim.url}", "--out", str(tmp_path / "out"), "--database", db]

    async def across_a_kill():
        with serve_process(port, *args) as (proc, url):
            _, health = http("GET", url + "/api/health")
            status, answer = http(
                "POST", url + "/api/jobs", {"workflow": api_workflow("progress", steps=40, step_seconds=0.2)}
            )
            assert status == 201, answer
            job = answer["job_id"]
            done = submit(type("S", (), {"url": url})(), workflow=api_workflow("invert"), tag="kept")
            wsu = url.replace("http://", "ws://")
            async with websockets.connect(f"{wsu}/ws/events?jobs={job}&since=0") as ws:
                hello = await recv_json(ws)
                seen = await read_events(ws, count=3)
            # The short job is finished (and so written) before the kill.
            async with websockets.connect(f"{wsu}/ws/{done}") as ws:
                while (await recv_json(ws)).get("status") != "completed":
                    pass
            wait_until(
                "the finished job in PostgreSQL",
                lambda: psql(db, f"SELECT 1 FROM jobs WHERE job_id = '{done}' AND status = 'completed'"),
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=TIMEOUT)
            first_stderr = proc.stderr.read()
        with serve_process(port, *args) as (proc, url):
            wsu = url.replace("http://", "ws://")
            async with websockets.connect(
                f"{wsu}/ws/events?jobs={job}&since={seen[-1]['offset']}&epoch={hello['epoch']}"
            ) as ws:
                back = await recv_json(ws)
                ended = any(j["job_id"] == job and j["state"] == "completed" for j in back.get("snapshot") or [])
                rest = [] if ended else await read_events(ws, until_job_end=job)
            _, final = http("GET", url + f"/api/jobs/{job}")
            _, kept = http("GET", url + "/api/jobs?tag=kept")
            _, health2 = http("GET", url + "/api/health")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=TIMEOUT) == 0
            second_stderr = proc.stderr.read()
        return job, done, health, health2, back, rest, final, kept, first_stderr + second_stderr

    job, done, health, health2, back, rest, final, kept, stderr = run(across_a_kill())
    # The database is named without its password, everywhere.
    for h in (health, health2):
        assert h["database"]["ok"] is True and h["database"]["url"].startswith("postgresql://")
        assert "***" in h["database"]["url"] and secret not in json.dumps(h)
    assert secret not in stderr
    # A crash: the client is told it cannot resume exactly and gets a snapshot, then the rest, ending once.
    assert back["recovered"] is False and any(j["job_id"] == job for j in back["snapshot"])
    assert final["status"] == "completed", final
    assert [e["type"] for e in rest].count("job_completed") == (0 if not rest else 1)
    offsets = [e["offset"] for e in rest]
    assert offsets == sorted(set(offsets))
    assert [j["job_id"] for j in kept["jobs"]] == [done] and kept["jobs"][0]["status"] == "completed"
    # In the brief's shape: one row per job, its state and progress in the `metadata` JSON, nothing doubled.
    rows = psql(
        db, "SELECT job_id, status, metadata->>'state', (metadata->>'progress')::float FROM jobs ORDER BY job_id"
    )
    assert sorted(r[0] for r in rows) == sorted([job, done])
    assert all(r[1] == "completed" and r[2] == "completed" and float(r[3]) == 100.0 for r in rows), rows
    terminal = psql(
        db, f"SELECT count(*) FROM studio_events WHERE job_id = '{job}' AND body LIKE '%\"job_completed\"%'"
    )
    assert terminal == [["1"]]


@contextmanager
def private_postgres(tmp_path):
    """A PostgreSQL cluster of this test's own (it stops and starts it)."""
    if not DATASTORES.exists():
        pytest.fail("no .ci/datastores.sh")
    folder = Path(f"/tmp/director-link-pg-test-{uuid.uuid4().hex[:8]}")
    port, password = free_port(), uuid.uuid4().hex
    ctl = ["bash", str(DATASTORES)]

    def start():
        out = subprocess.run(
            [*ctl, "start-postgres", str(folder), str(port), password], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            pytest.fail(f"could not start a private PostgreSQL ({HOW}): {out.stderr[-2000:]}")

    def stop():
        subprocess.run([*ctl, "stop-postgres", str(folder)], capture_output=True, timeout=120)

    start()
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", start, stop
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_down_mid_job_serving_goes_on_the_error_shows_and_writes_catch_up(tmp_path, sim):
    with private_postgres(tmp_path) as (url, start, stop):
        secret = password_of(url)
        with studio(tmp_path, services=[f"comfyui={sim.url}"], database=url) as server:
            job = submit(server, workflow=api_workflow("progress", steps=30, step_seconds=0.1))

            async def follow():
                async with websockets.connect(ws_url(server, f"/ws/{job}")) as ws:
                    await recv_json(ws)  # connection
                    m = await recv_json(ws)
                    stop()  # PostgreSQL goes away mid-job
                    messages = [m]
                    while messages[-1].get("status") not in ("completed", "failed", "cancelled"):
                        messages.append(await recv_json(ws))
                    return messages

            messages = run(follow())
            # Serving went on from memory: every subscriber saw the job to its end.
            assert messages[-1]["status"] == "completed"
            assert [m["progress"] for m in messages if m["type"] == "progress"] == sorted(
                m["progress"] for m in messages if m["type"] == "progress"
            )
            health = wait_until(
                "the database error in /api/health",
                lambda: (h := http("GET", server.url + "/api/health")[1])["database"]["ok"] is False and h,
            )
            assert health["status"] == "degraded" and health["database"]["last_error"]
            assert health["database"]["pending_writes"] > 0 and health["database"]["write_errors"] >= 1
            assert secret not in json.dumps(health)
            _, metrics = http("GET", server.url + "/metrics")
            assert "director_link_db_up 0" in metrics.decode()
            assert http("GET", server.url + f"/api/jobs/{job}")[1]["status"] == "completed"
            # New jobs are taken and run meanwhile.
            during = submit(server, workflow=api_workflow("invert"), tag="during")
            assert run(brief_until_final(ws_url(server, f"/ws/{during}")))[-1]["status"] == "completed"
            # Back: the kept batch is written, the error clears.
            start()
            wait_until(
                "the writes to catch up",
                lambda: (
                    (h := http("GET", server.url + "/api/health")[1])["database"]["ok"] is True
                    and h["database"]["pending_writes"] == 0
                ),
            )
            assert "director_link_db_up 1" in http("GET", server.url + "/metrics")[1].decode()
            rows = psql(url, "SELECT job_id, status, tag FROM jobs ORDER BY created_at")
            assert rows == [[job, "completed", ""], [during, "completed", "during"]]
            # Away again with writes waiting: closing does not wait for it (the context closes the server).
            stop()
            submit(server, workflow=api_workflow("invert"))


# ---- Redis Streams ----------------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a loopback port, nothing saved, that the test can kill and restart."""

    def __init__(self, folder: Path):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail(f"redis-server is not installed (Debian: redis-server); {HOW}")
        self.exe, self.folder, self.port, self.proc = exe, folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers():
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return True
            except OSError:
                return False

        wait_until("redis-server to answer", answers)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path / "redis")
    r.start()
    try:
        yield r
    finally:
        r.kill()


def by_job(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        if e.get("job_id"):
            out.setdefault(e["job_id"], []).append(e)
    return out


async def collect_until_ended(ws, jobs: set[str]) -> list[dict]:
    got, ended = [], set()
    while not jobs <= ended:
        m = await recv_json(ws)
        got.append(m)
        if m.get("type") in TERMINAL:
            ended.add(m["job_id"])
    return got


def assert_same_jobs(origin: list[dict], relayed: list[dict], jobs: set[str]):
    """Every job's lifecycle arrives on the other instance complete, once and in order; its progress in order."""
    a, b = by_job(origin), by_job(relayed)
    for job in jobs:
        kinds_a = [e["type"] for e in a[job] if e["type"] not in ("progress", "preview", "queue_changed")]
        kinds_b = [e["type"] for e in b.get(job, []) if e["type"] not in ("progress", "preview", "queue_changed")]
        assert kinds_b == kinds_a, job
        assert kinds_b.count("job_completed") == 1 and kinds_b[-1] == "job_completed"
        prog_a = [(e["node_id"], e["value"]) for e in a[job] if e["type"] == "progress"]
        prog_b = [(e["node_id"], e["value"]) for e in b.get(job, []) if e["type"] == "progress"]
        it = iter(prog_a)
        assert all(p in it for p in prog_b), "relayed progress is the origin's, in its order (some coalesced)"
        assert prog_b and prog_b[-1] == prog_a[-1], "the newest progress always arrives"
    offsets = [e["offset"] for e in relayed if "offset" in e]
    assert offsets == sorted(set(offsets)), "each instance's stream: no duplicate, never out of order"


def test_two_instances_over_redis_deliver_each_others_jobs_with_zero_loss(tmp_path, sim, redis_server):
    services = [f"comfyui={sim.url}"]
    with (
        studio(tmp_path / "a", services=services, redis=redis_server.url) as a,
        studio(tmp_path / "b", services=services, redis=redis_server.url) as b,
    ):
        wait_until(
            "both instances on Redis", lambda: all(http("GET", s.url + "/api/health")[1]["redis"]["ok"] for s in (a, b))
        )

        async def scenario():
            async with (
                websockets.connect(ws_url(a, "/ws/events?jobs=all")) as on_a,
                websockets.connect(ws_url(b, "/ws/events?jobs=all")) as on_b,
            ):
                await recv_json(on_a), await recv_json(on_b)

                # Different step counts: the server would serve an identical workflow from its cache, without progress.
                def wf(i):
                    return api_workflow("progress", steps=8 + i, step_seconds=0.05)

                jobs_a = {submit(a, workflow=wf(i), tag="from-a") for i in range(4)}
                jobs_b = {submit(b, workflow=wf(4 + i), tag="from-b") for i in range(4)}
                everything = jobs_a | jobs_b
                seen_a, seen_b = await asyncio.gather(
                    collect_until_ended(on_a, everything), collect_until_ended(on_b, everything)
                )
                # And a per-job subscriber of the brief's endpoint on the other instance gets the final state.
                one = next(iter(jobs_a))
                async with websockets.connect(ws_url(b, f"/ws/{one}")) as brief:
                    assert (await recv_json(brief))["type"] == "connection"
                    final = await recv_json(brief)
                # A client of A that moves to B (another stream) is told so and gets the job's state there.
                epoch_a = http("GET", a.url + "/api/health")[1]["stream"]["epoch"]
                async with websockets.connect(ws_url(b, f"/ws/events?jobs={one}&since=3&epoch={epoch_a}")) as moved:
                    hello = await recv_json(moved)
                assert hello["recovered"] is False
                assert [(j["job_id"], j["state"]) for j in hello["snapshot"]] == [(one, "completed")]
                return jobs_a, jobs_b, seen_a, seen_b, final

        jobs_a, jobs_b, seen_a, seen_b, final = run(scenario())
        assert_same_jobs(seen_a, seen_b, jobs_a)
        assert_same_jobs(seen_b, seen_a, jobs_b)
        assert final["status"] == "completed" and final["progress"] == 100
        # The other instance shows the job as the one that runs it does, tag included, and says who runs it.
        _, there = http("GET", b.url + "/api/jobs?tag=from-a")
        assert sorted(j["job_id"] for j in there["jobs"]) == sorted(jobs_a)
        assert all(j["status"] == "completed" and j["instance"] for j in there["jobs"])
        ha, hb = (http("GET", s.url + "/api/health")[1]["redis"] for s in (a, b))
        assert ha["instance"] != hb["instance"]
        for h in (ha, hb):
            assert h["gaps"] == 0 and h["dropped"] == 0 and h["published"] > 0 and h["relayed"] > 0
        # Producers report where the job is run, not to a relay of it.
        status, answer = http("POST", b.url + f"/api/jobs/{next(iter(jobs_a))}/progress", {"status": "processing"})
        assert status == 409 and answer["error"]["code"] == "other_instance"


def test_previews_of_a_job_on_one_instance_reach_the_other_instances_subscribers_over_redis(
    tmp_path, sim, redis_server
):
    services = [f"comfyui={sim.url}"]
    with (
        studio(tmp_path / "a", services=services, redis=redis_server.url) as a,
        studio(tmp_path / "b", services=services, redis=redis_server.url) as b,
    ):
        wait_until(
            "both instances on Redis", lambda: all(http("GET", s.url + "/api/health")[1]["redis"]["ok"] for s in (a, b))
        )

        async def read_until_ended(ws, job, fetch_on=None):
            out, fetched = [], None  # out: ("text" | "binary", event, image)
            while True:
                m = await asyncio.wait_for(ws.recv(), TIMEOUT)
                if isinstance(m, bytes):
                    n = int.from_bytes(m[:4], "big")
                    out.append(("binary", json.loads(m[4 : 4 + n]), m[4 + n :]))
                    continue
                e = json.loads(m)
                out.append(("text", e, b""))
                if fetch_on and fetched is None and e["type"] == "preview" and e.get("job_id") == job:
                    # While the job runs, the relayed preview is served by this instance at its URL.
                    fetched = http("GET", fetch_on.url + e["url"])
                if e.get("job_id") == job and e["type"] in ("job_completed", "job_failed", "job_cancelled"):
                    return out, fetched

        async def scenario():
            async with (
                websockets.connect(ws_url(b, "/ws/events?jobs=all")) as by_url,
                websockets.connect(ws_url(b, "/ws/events?jobs=all&previews=binary")) as binary,
            ):
                assert (await recv_json(by_url))["type"] == "subscribed"
                assert (await recv_json(binary))["type"] == "subscribed"
                job = submit(a, workflow=api_workflow("progress", steps=6, step_seconds=0.1, send_preview=True))
                (url_stream, fetched), (bin_stream, _) = await asyncio.gather(
                    read_until_ended(by_url, job, fetch_on=b), read_until_ended(binary, job)
                )
                return job, url_stream, fetched, bin_stream

        job, url_stream, fetched, bin_stream = run(scenario())
        # On B (the job runs on A): previews by reference, with B's own URL and offset...
        url_previews = [e for _, e, _ in url_stream if e["type"] == "preview" and e["job_id"] == job]
        assert url_previews, "previews of A's job reach B's subscribers"
        assert all(e["url"] == f"/api/jobs/{job}/preview?offset={e['offset']}" for e in url_previews)
        status, image = fetched
        assert status == 200 and isinstance(image, bytes) and image.startswith((b"\x89PNG", b"\xff\xd8"))
        # ... and as binary frames for those who ask: the same event as header, then the real image.
        binaries = [(e, img) for kind, e, img in bin_stream if kind == "binary"]
        assert binaries, "at least one relayed preview as a binary frame"
        for header, img in binaries:
            assert header["type"] == "preview" and header["job_id"] == job
            magic = b"\x89PNG" if header["mime"] == "image/png" else b"\xff\xd8"
            assert img.startswith(magic) and len(img) > 100
        # One order for text and binary frames: offsets strictly increase.
        offsets = [e["offset"] for _, e, _ in bin_stream if "offset" in e]
        assert offsets == sorted(set(offsets))
        for h in (http("GET", s.url + "/api/health")[1]["redis"] for s in (a, b)):
            assert h["gaps"] == 0 and h["dropped"] == 0


def test_redis_killed_and_restarted_mid_stream_each_instance_catches_up_without_gap_or_duplicate(
    tmp_path, sim, redis_server
):
    services = [f"comfyui={sim.url}"]
    with (
        studio(tmp_path / "a", services=services, redis=redis_server.url) as a,
        studio(tmp_path / "b", services=services, redis=redis_server.url) as b,
    ):
        wait_until(
            "both instances on Redis", lambda: all(http("GET", s.url + "/api/health")[1]["redis"]["ok"] for s in (a, b))
        )

        async def scenario():
            async with (
                websockets.connect(ws_url(a, "/ws/events?jobs=all")) as on_a,
                websockets.connect(ws_url(b, "/ws/events?jobs=all")) as on_b,
            ):
                await recv_json(on_a), await recv_json(on_b)
                jobs = {submit(a, workflow=api_workflow("progress", steps=60 + i, step_seconds=0.1)) for i in range(3)}
                # B has shown some of A's jobs' events: then Redis dies.
                seen_b = []
                while sum(e.get("job_id") in jobs for e in seen_b) < 3:
                    seen_b.append(await recv_json(on_b))
                redis_server.kill()
                # Both say Redis is away ...
                for s in (a, b):
                    h = wait_until(
                        "Redis to show as down",
                        lambda s=s: (h := http("GET", s.url + "/api/health")[1])["redis"]["ok"] is False and h,
                    )
                    assert h["status"] == "degraded" and h["redis"]["last_error"]
                    assert "director_link_redis_up 0" in http("GET", s.url + "/metrics")[1].decode()
                # ... and A goes on serving its own jobs meanwhile: events it published after the outage began.
                outage_from = http("GET", a.url + "/api/health")[1]["stream"]["offset"]
                seen_a = []
                while not any(e.get("job_id") in jobs and e["offset"] > outage_from for e in seen_a):
                    seen_a.append(await recv_json(on_a))
                assert http("GET", b.url + "/api/health")[1]["redis"]["ok"] is False, "Redis was away all along"
                redis_server.start()  # empty: nothing was saved
                seen_a += await collect_until_ended(on_a, jobs)
                seen_b += await collect_until_ended(on_b, jobs)
                return jobs, seen_a, seen_b

        jobs, seen_a, seen_b = run(scenario())
        assert_same_jobs(seen_a, seen_b, jobs)
        healths = []
        for s in (a, b):
            h = wait_until(
                "Redis to be back", lambda s=s: (h := http("GET", s.url + "/api/health")[1])["redis"]["ok"] and h
            )
            assert h["redis"]["gaps"] == 0 and h["redis"]["dropped"] == 0, h["redis"]
            assert h["redis"]["waiting"] == 0
            healths.append(h["redis"])
        # The new Redis had nothing: A sent its recent events again and B dropped the copies it had shown.
        assert healths[0]["resent"] > 0 and healths[1]["duplicates_skipped"] > 0, healths
