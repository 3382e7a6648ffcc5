"""The runtime never waits for the GIL: a Python thread that holds it (Blender busy in a script) delays nothing on
the network side. Log records are handed to Python later, in order, with the time they were logged."""

from __future__ import annotations

import logging
import socket
import threading
import time

import director_link

from .conftest import collect, connect, progress_prompt

HOLD = 2.0  # seconds the GIL is held


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hold_the_gil(seconds: float) -> tuple[float, float]:
    """Runs a C-level loop that never releases the GIL (builtin ``sum`` over a ``range`` runs no bytecode, so
    the interpreter never offers the GIL to another thread) for about ``seconds``; returns its wall window."""
    t = time.perf_counter()
    sum(range(1_000_000))
    per_million = max(time.perf_counter() - t, 1e-4)
    n = int(seconds / per_million * 1_000_000)
    h0 = time.time()
    sum(range(n))
    return h0, time.time()


def test_a_python_thread_holding_the_gil_stalls_neither_pings_nor_events(server, tmp_path):
    log = logging.getLogger("director_link")
    handler = Records()
    old_level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:  # only runs when it gets the GIL: its gaps show when the GIL was held
        while not stop.is_set():
            ticks.append(time.time())
            time.sleep(0.005)

    try:
        with director_link.Hub(
            output_dir=str(tmp_path / "out"),
            heartbeat=0.5,
            reconnect_initial=0.02,
            reconnect_max=0.02,
            breaker_threshold=1_000_000,
        ) as hub:
            name = connect(hub, server)
            # Services that keep failing to connect log on every attempt, from the runtime's threads: with a
            # logger that takes the GIL there, they would block every worker while the GIL is held.
            port = closed_port()
            for i in range(3):
                hub.add_service("comfyui", f"http://127.0.0.1:{port}", name=f"dead{i}")
            t_submit = time.time()
            job = hub.submit(name, progress_prompt(steps=60, step_seconds=0.4, preview=False))
            before = collect(hub, [job.id], until=lambda evs: any(e.type == "progress" for e in evs))
            samples0 = next(s for s in hub.snapshot()["services"] if s["name"] == name)["latency"]["samples"]

            th = threading.Thread(target=ticker, daemon=True)
            th.start()
            time.sleep(0.05)
            h0, h1 = hold_the_gil(HOLD)
            stop.set()
            th.join(5)

            after = collect(hub, [job.id], timeout=60)
            snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        director_link._native._flush_logs(5.0)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)

    # The GIL really was held: the ticker thread got no turn for (almost) the whole window.
    inside = [t for t in ticks if h0 - 0.05 <= t <= h1 + 0.05]
    edges = [h0, *inside, h1]
    longest = max(b - a for a, b in zip(edges, edges[1:], strict=False))
    assert longest >= 0.8 * (h1 - h0), f"the GIL was not held: longest ticker gap {longest:.3f} s of {h1 - h0:.3f} s"

    # The runtime kept logging while it was held (so the test exercised the log path) ...
    logged_inside = [r for r in handler.records if h0 < r.created < h1]
    assert any("cannot connect" in r.getMessage() for r in logged_inside), [r.getMessage() for r in handler.records][
        -5:
    ]
    # ... and kept working: the job's events were made while the GIL was held, pings were answered and the
    # service never went to `reconnecting`.
    events = before.events + after.events
    mine = [e for e in events if e.job == job.id]
    made_inside = [e for e in mine if h0 < e.time < h1]
    assert any(e.type == "progress" for e in made_inside), "no event of the job was made while the GIL was held"
    assert snap["state"] == "connected"
    assert snap["latency"]["samples"] > samples0
    changes = [e for e in events if e.type == "service_state_changed" and e.service == name and e.time > t_submit]
    assert not changes, [(e.previous, e.state, e.reason) for e in changes]

    # Events arrived in order, the terminal one last, exactly once.
    seqs = [e.seq for e in mine]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [e.type for e in mine if e.is_terminal] == ["job_completed"]
    assert mine[-1].type == "job_completed"
    values = [e.value for e in mine if e.type == "progress" and e.node_id == "1"]
    assert values == sorted(values) and values, values
