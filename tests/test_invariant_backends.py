"""Every registered job ends exactly once — the hub's invariant, checked against REAL servers: the WanGP look-alike
Gradio app under Gradio 5.29.0 (sse_v3) and 3.50.2 (the 3.x WebSocket queue), and the WanGP look-alike MCP server
(official ``mcp`` SDK). The ComfyUI and OpenAI sides are covered by ``tests/hub_invariant.rs``.

Each case is a seeded random sequence (reproducible: the seed picks every step) of submit (a progress job, a job
the app fails, a generator), cancel, remove_service (+ add it again under a new name), poll, pause, and at most
one server kill + restart on the same port (one case in three); then either close at once, or wait for every job
to end and close.
Afterwards, from the events ``poll()`` returned:
- every registered job has exactly one terminal event (completed / failed with a code / cancelled), and it is the
  job's last event; no event names a job we did not register; sequence numbers increase;
- per job, ``job_queued`` comes before ``job_started``, progress never goes back, a generator's outputs arrive
  in order; a job of the app's ``fail`` endpoint never completes;
- without a close, no job is left hanging (none fails ``hub_closed``), and a job that met neither a kill nor a
  removal of its service nor a cancel completes (or, for ``fail``, fails ``execution_failed``).

A missing server (its ``DIRECTOR_LINK_*_PYTHON`` unset) FAILS here, with the reason: this is the test that proves
the invariant on the non-ComfyUI backends, so it must not pass by skipping. Reproduce one case with
``DL_INVARIANT_SEED=<seed> pytest tests/test_invariant_backends.py -k <backend>``; ``DL_INVARIANT_CASES`` sets
how many seeds run per backend (default 3, fixed, so CI time is bounded).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import director_link
import pytest
from director_link import GradioCall

from .backends.servers import FIXTURES, HERE, Running, free_port, start

TERMINAL = {"job_completed", "job_failed", "job_cancelled"}
STEPS = 24
CASES = int(os.environ.get("DL_INVARIANT_CASES", "3"))
SEEDS = [int(os.environ["DL_INVARIANT_SEED"])] if os.environ.get("DL_INVARIANT_SEED") else list(range(1, CASES + 1))
SETTLE = 120.0

BACKENDS = {
    "gradio5": ("DIRECTOR_LINK_GRADIO5_PYTHON", "gradio"),
    "gradio3": ("DIRECTOR_LINK_GRADIO3_PYTHON", "gradio"),
    "mcp": ("DIRECTOR_LINK_MCP_PYTHON", "wangp_mcp"),
}


def required_python(var: str) -> str:
    path = os.environ.get(var, "").strip()
    if not path or not Path(path).exists():
        pytest.fail(f"{var} is not set or does not exist ({path!r}): run `source .ci/backends.sh` first")
    return path


class Backend:
    """One real server on a fixed loopback port that a case can kill and start again."""

    def __init__(self, key: str, python: str, tmp: Path) -> None:
        self.key, self.python, self.tmp = key, python, tmp
        self.kind = BACKENDS[key][1]
        self.port = free_port("127.0.0.1")
        self.server: Running | None = None
        self.out = tmp / f"{key}-server-out"
        self.out.mkdir(exist_ok=True)

    def start(self) -> None:
        if self.kind == "gradio":
            env = {
                "GRADIO_APP_HOST": "127.0.0.1",
                "GRADIO_APP_PORT": str(self.port),
                "GRADIO_ANALYTICS_ENABLED": "False",
                "GRADIO_APP_STEP_S": "0.05",
            }
            cmd = [self.python, str(HERE / "gradio_host.py"), str(FIXTURES / "gradio" / "tools" / "gradio_app.py")]
            self.server = start(f"inv-{self.key}", cmd, "127.0.0.1", self.port, False, "config", env, self.tmp)
        else:
            env = {"WANGP_MCP_HOST": "127.0.0.1", "WANGP_MCP_PORT": str(self.port), "WANGP_MCP_OUT": str(self.out)}
            cmd = [self.python, str(HERE / "wangp_mcp_app.py")]
            self.server = start(f"inv-{self.key}", cmd, "127.0.0.1", self.port, False, "mcp/", env, self.tmp)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def job(self, rng: random.Random, n: int) -> tuple[str, object]:
        """(what, payload): a progress job, a job the app fails, or a generator (Gradio)."""
        if self.kind == "wangp_mcp":
            steps = rng.randint(1, 4)
            return "video", {
                "model_type": "t2v_1.3B",
                "prompt": f"shot {n}",
                "num_inference_steps": steps,
                "step_seconds": 0.05,
            }
        roll = rng.random()
        if roll < 0.6:
            return "video", GradioCall("/generate_video", inputs=[f"shot {n}", rng.randint(1, 4)])
        if roll < 0.8:
            return "fail", GradioCall("fail", inputs=[f"shot {n}"])
        return "stream", GradioCall("stream_status", inputs=[f"shot {n}"])


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request, tmp_path_factory):
    var = BACKENDS[request.param][0]
    b = Backend(request.param, required_python(var), tmp_path_factory.mktemp(f"inv-{request.param}"))
    b.start()
    yield b
    b.stop()


class Case:
    def __init__(self, seed: int, backend: Backend, out: Path) -> None:
        self.seed, self.backend = seed, backend
        self.rng = random.Random(seed)
        self.hub = director_link.Hub(output_dir=str(out), heartbeat=0.5, reconnect_initial=0.1, reconnect_max=1.0)
        self.services: list[str] = []
        self.removed: set[str] = set()
        self.next_name = 0
        # job id -> (what, service, step it was submitted at)
        self.jobs: dict[str, tuple[str, str, int]] = {}
        self.cancelled: set[str] = set()
        self.events: list = []
        self.log: list[str] = []
        # The step at which the server was killed and started again.
        self.kill_step: int | None = None
        self.step_no = 0
        # One case in three kills the server once, at a random step (a restart costs a Gradio start-up).
        self.kill_at = self.rng.randint(4, STEPS - 4) if seed % 3 == 1 else None

    def add(self) -> None:
        self.next_name += 1
        name = self.hub.add_service(self.backend.kind, self.backend.url, name=f"{self.backend.key}{self.next_name}")
        self.services.append(name)
        self.log.append(f"add {name}")

    def drain(self) -> None:
        for _ in range(1000):
            got = self.hub.poll()
            if not got:
                return
            self.events.extend(got)

    def step(self) -> None:
        self.step_no += 1
        rng = self.rng
        roll = rng.random()
        if self.step_no == self.kill_at:
            # The server process is killed (SIGTERM) and started again on the same port.
            self.kill_step = self.step_no
            self.log.append("kill")
            self.backend.stop()
            self.drain()
            self.backend.start()
            self.log.append("started again")
        elif roll < 0.40 and self.services:
            service = rng.choice(self.services)
            what, payload = self.backend.job(rng, len(self.jobs))
            job = self.hub.submit(service, payload).id
            self.jobs[job] = (what, service, self.step_no)
            self.log.append(f"submit {what} {service} {job}")
        elif roll < 0.55 and self.jobs:
            job = rng.choice(sorted(self.jobs))
            self.hub.cancel(job)
            self.cancelled.add(job)
            self.log.append(f"cancel {job}")
        elif roll < 0.62 and self.services:
            service = rng.choice(self.services)
            self.hub.remove_service(service)
            self.services.remove(service)
            self.removed.add(service)
            self.log.append(f"remove {service}")
            self.add()
        elif roll < 0.82:
            self.drain()
        else:
            self.hub.wait_for_events(rng.uniform(0.01, 0.3))

    def fail(self, what: str) -> None:
        ops = "\n  ".join(self.log)
        pytest.fail(f"{self.backend.key} seed {self.seed}: {what}\noperations:\n  {ops}")

    def check(self, closed_early: bool) -> None:
        last_seq = 0
        per_job: dict[str, list] = {job: [] for job in self.jobs}
        for ev in self.events:
            if ev.seq <= last_seq:
                self.fail(f"event seq {ev.seq} after {last_seq}")
            last_seq = ev.seq
            if ev.job is None:
                continue
            if ev.job not in per_job:
                self.fail(f"{ev.type} for a job never registered: {ev.job}")
            per_job[ev.job].append(ev)
        for job, evs in per_job.items():
            what, service, submitted_at = self.jobs[job]
            types = [e.type for e in evs]
            ends = [t for t in types if t in TERMINAL]
            if len(ends) != 1:
                self.fail(f"job {job} ({what}) has {len(ends)} terminal events: {types}")
            if types[-1] not in TERMINAL:
                self.fail(f"job {job} ({what}): something after its terminal event: {types}")
            end = evs[-1]
            if end.type == "job_failed" and not end.code:
                self.fail(f"job {job} failed without a code: {end.message}")
            if (
                "job_started" in types
                and ("job_queued" in types)
                and types.index("job_queued") > types.index("job_started")
            ):
                self.fail(f"job {job}: started before queued: {types}")
            progress = [(e.value, e.max) for e in evs if e.type == "progress" and e.max]
            for (v0, m0), (v1, m1) in zip(progress, progress[1:], strict=False):
                if m0 == m1 and v1 < v0:
                    self.fail(f"job {job}: progress went back: {progress}")
            if what == "stream":
                outs = [e.output.get("data") for e in evs if e.type == "node_output"]
                words = ["queued", "queued rendering", "queued rendering done"]
                if [o[0] for o in outs if o] != words[: len(outs)]:
                    self.fail(f"job {job}: generator outputs out of order: {outs}")
            if what == "fail" and end.type == "job_completed":
                self.fail(f"job {job}: the app's fail endpoint completed: {end.ui}")
            if closed_early:
                continue
            if end.type == "job_failed" and end.code == "hub_closed":
                self.fail(f"job {job} ({what}) was left hanging until close: {types}")
            # Jobs submitted after the server came back (even while the hub was still reconnecting) are held
            # until the link is back, not failed.
            untouched = (
                job not in self.cancelled
                and service not in self.removed
                and (self.kill_step is None or self.kill_step < submitted_at)
            )
            if untouched:
                want = "job_completed" if what != "fail" else "job_failed"
                if end.type != want or (what == "fail" and end.code != "execution_failed"):
                    detail = f"{end.code}: {end.message}" if end.type == "job_failed" else end.type
                    self.fail(f"job {job} ({what}) met no fault, yet ended {detail}; events {types}")
        for job in self.jobs:
            state = self.hub.job(job)
            if state is not None and state.state not in ("completed", "failed", "cancelled"):
                self.fail(f"job {job} is still {state.state} after close")


def run_case(seed: int, backend: Backend, out: Path) -> str:
    case = Case(seed, backend, out)
    try:
        case.add()
        if case.rng.random() < 0.5:
            case.add()
        for _ in range(STEPS):
            case.step()
        closed_early = case.rng.random() < 0.3
        if not closed_early:
            deadline = time.monotonic() + SETTLE
            while time.monotonic() < deadline:
                case.drain()
                ended = {e.job for e in case.events if e.is_terminal}
                if all(job in ended for job in case.jobs):
                    break
                case.hub.wait_for_events(0.1)
        case.log.append("close")
        case.hub.close()
        case.drain()
        case.check(closed_early)
    finally:
        case.hub.close()
        if backend.server is None:
            backend.start()
    outcomes: dict[str, int] = {}
    for e in case.events:
        if e.is_terminal:
            key = f"{e.type}:{e.code}" if e.type == "job_failed" else e.type
            outcomes[key] = outcomes.get(key, 0) + 1
    return f"{backend.key} seed {seed}: {len(case.jobs)} jobs, kill={case.kill_step}, early={closed_early}, {outcomes}"


@pytest.mark.parametrize("seed", SEEDS)
def test_every_job_ends_exactly_once_on_real_servers(backend, seed, tmp_path):
    summary = run_case(seed, backend, tmp_path / "out")
    print(summary)
