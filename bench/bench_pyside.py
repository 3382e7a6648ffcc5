#!/usr/bin/env python3
"""The Python side: poll() drains, submit() with the server stalled, snapshot() of 1 000 jobs, import time.

    python3 bench/bench_pyside.py [--quick|--smoke] [--json]

* poll: one ``hub.poll(N)`` call taking N waiting typed events (N = 1 000 and 10 000: a finished job's
  ``Progress`` events, nothing polled while it ran) into Python objects; reference: ``json.loads`` of N real
  ``progress`` frames, the least a Python client does per message;
* submit: ``hub.submit()`` p50/p99 over 1 000 calls while the server answers no HTTP at all (stalled; its
  WebSocket stays up, so the hub stays connected and really tries to POST);
* snapshot: ``hub.snapshot()`` with those 1 000 jobs tracked;
* import: ``import director_link`` in a fresh interpreter (wall, from ``-X importtime``'s cumulative figure), next
  to ``import websockets.asyncio.client``, ``import websocket``, ``import requests`` and ``import httpx``.

The Blender timer tick is bench/bench_addon.py (run_all.py runs it). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import director_link
from _common import BlastServer, child_env, drain_all, p50_p99, wait_connected
from bench_stream import blast_prompt


def bench_poll(srv: BlastServer, sizes: list[int], repeats: int, out_dir: str) -> dict:
    out: dict = {}
    with director_link.Hub(output_dir=out_dir, event_capacity=50_000) as hub:
        name = hub.add_service("comfyui", srv.url, name="poll")
        wait_connected(hub, name)
        for n in sizes:
            times, got_n = [], []
            for _ in range(repeats):
                drain_all(hub)
                job = hub.submit(name, blast_prompt(n, 0))
                job.wait(timeout=60)
                deadline = time.monotonic() + 5
                while hub.snapshot()["events"]["pending"] < n and time.monotonic() < deadline:
                    time.sleep(0.005)
                t0 = time.perf_counter_ns()
                got = hub.poll(n)
                t1 = time.perf_counter_ns()
                got_n.append(len(got))
                del got
                times.append((t1 - t0) / 1e6)
                drain_all(hub)
            out[str(n)] = {"ms": statistics.median(times), "all_ms": times, "events": min(got_n)}
    # The reference: json.loads of the same number of progress frames.
    frame = json.dumps({"type": "progress", "data": {"value": 5, "max": 20, "prompt_id": "x" * 36, "node": "3"}})
    for n in sizes:
        batch = [frame] * n
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            parsed = [json.loads(s) for s in batch]
            times.append((time.perf_counter_ns() - t0) / 1e6)
            del parsed
        out[f"json_loads_{n}"] = {"ms": statistics.median(times)}
    return out


def bench_submit_stalled(srv: BlastServer, calls: int, out_dir: str) -> dict:
    with director_link.Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", srv.url, name="stalled")
        wait_connected(hub, name)
        for _ in range(20):  # warm-up (not stalled yet): validation and conversion code paths
            hub.submit(name, blast_prompt(1, 0)).wait(timeout=10)
        drain_all(hub)
        srv.call("stall 60")
        samples = []
        prompt = blast_prompt(1, 0)
        for _ in range(calls):
            t0 = time.perf_counter()
            hub.submit(name, prompt)
            samples.append((time.perf_counter() - t0) * 1000)
        hub.poll(10_000)
        snaps = []
        jobs = 0
        for _ in range(50):
            t0 = time.perf_counter()
            snap = hub.snapshot()
            snaps.append((time.perf_counter() - t0) * 1000)
            jobs = len(snap["jobs"])
        state = hub.snapshot()["services"][0]["state"]
        t0 = time.perf_counter()
    close_s = time.perf_counter() - t0
    srv.call("stall 0")
    p50, p99 = p50_p99(samples)
    s50, s99 = p50_p99(snaps)
    return {
        "submit_p50_ms": p50,
        "submit_p99_ms": p99,
        "submit_max_ms": max(samples),
        "submits": calls,
        "service_state": state,
        "snapshot_jobs": jobs,
        "snapshot_p50_ms": s50,
        "snapshot_p99_ms": s99,
        "close_s": close_s,
    }


IMPORTS = {
    "director_link": "director_link",
    "websockets": "websockets.asyncio.client",
    "websocket-client": "websocket",
    "requests": "requests",
    "httpx": "httpx",
}


def import_ms(module: str) -> float | None:
    """Cumulative import time of `module` in a fresh interpreter (`-X importtime`, µs -> ms)."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    for line in r.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return None


def bench_imports(repeats: int) -> dict:
    out = {}
    for label, module in IMPORTS.items():
        import_ms(module)  # warm the file cache
        vals = [v for v in (import_ms(module) for _ in range(repeats)) if v is not None]
        out[label] = {"ms": statistics.median(vals) if vals else None, "all_ms": vals}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    repeats = 2 if args.smoke else (3 if args.quick else 5)
    result: dict = {}
    with BlastServer() as srv, tempfile.TemporaryDirectory(prefix="dl_pyside_") as out_dir:
        result["poll"] = bench_poll(srv, [1000] if args.smoke else [1000, 10_000], repeats, out_dir)
        result["stalled"] = bench_submit_stalled(srv, 200 if args.smoke else 1000, out_dir)
    result["import"] = bench_imports(repeats)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
