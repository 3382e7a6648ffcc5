#!/usr/bin/env python3
"""Benchmark: one tick of the Blender add-on's timer, with 1 000 pending events and idle.

    python3 bench/bench_addon.py [--runs 20] [--idle 20000] [--json] [--no-blender]

What is timed is the add-on's own code path on real events from a real Hub:

* ``busy``: ``hub_owner.tick()`` (drain ``poll()`` into the ``state.ViewModel``) when ≥ 1 000 events are waiting —
  the events of an ``AcceptanceProgress(steps=1000)`` job run on the simulator (``time_scale=0``, loopback);
* ``idle``: the same call when nothing waits (what Blender pays every interval while nothing happens);
* ``idle+snapshot``: an idle tick that also refreshes health figures from ``hub.snapshot()`` (every 2 s);
* with ``bpy`` installed, the same three for the registered timer callback (``bridge.timer_callback``: preferences,
  drain, redraw tagging, finished-job bookkeeping) in headless Blender.

A benchmark, not a test: it prints numbers and never fails on a slow one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "blender_addon"))

import director_link  # noqa: E402
from director_link.testing import ComfySimulator  # noqa: E402
from movie_director import hub_owner, state  # noqa: E402

EVENTS = 1000


def flood_prompt(nonce: int) -> dict:
    return {
        "1": {
            "class_type": "AcceptanceProgress",
            "inputs": {
                "steps": EVENTS,
                "step_seconds": 0.0,
                "width": 8,
                "height": 8,
                "send_preview": False,
                "nonce": nonce,
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench/addon"}},
    }


def fill(hub, service: str, nonce: int) -> int:
    """Runs one job without polling, so its events wait in the queue; returns how many wait."""
    job = hub.submit(service, flood_prompt(nonce))
    job.wait(timeout=60)
    deadline = time.monotonic() + 5
    while hub.snapshot()["events"]["pending"] < EVENTS and time.monotonic() < deadline:
        time.sleep(0.01)
    return hub.snapshot()["events"]["pending"]


def stats(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {
        "n": len(samples),
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6, 1),
        "max_us": round(samples[-1] * 1e6, 1),
    }


def connect(hub, url: str) -> str:
    name = hub.add_service("comfyui", url, name="bench")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if hub.snapshot()["services"][0]["state"] == "connected":
            hub.poll(10000)
            return name
        time.sleep(0.02)
    raise SystemExit("the simulator did not connect")


def bench_pure(url: str, runs: int, idle: int) -> dict:
    out: dict = {}
    with director_link.Hub(output_dir=tempfile.mkdtemp(prefix="bench-addon-")) as hub:
        service = connect(hub, url)
        busy, pending, drained = [], [], []
        for run in range(runs):
            pending.append(fill(hub, service, 10_000 + run))
            model = state.ViewModel()
            model.track("x", service)
            pacing = hub_owner.Pacing(snapshot_every=1e9)
            pacing.last_snapshot = 0.0
            start = time.perf_counter()
            hub_owner.tick(hub, model, pacing, now=1.0)
            busy.append(time.perf_counter() - start)
            drained.append(model.events_applied)
            hub.poll(10000)
        out["busy"] = {**stats(busy), "events_pending": min(pending), "events_per_tick": min(drained)}
        model = state.ViewModel()
        pacing = hub_owner.Pacing(snapshot_every=1e9)
        pacing.last_snapshot = 0.0
        samples = []
        for _ in range(idle):
            start = time.perf_counter()
            hub_owner.tick(hub, model, pacing, now=1.0)
            samples.append(time.perf_counter() - start)
        out["idle"] = stats(samples)
        samples = []
        for i in range(min(idle, 2000)):
            pacing = hub_owner.Pacing()
            start = time.perf_counter()
            hub_owner.tick(hub, model, pacing, now=float(i))
            samples.append(time.perf_counter() - start)
        out["idle+snapshot"] = stats(samples)
    return out


def bench_blender(url: str, runs: int, idle: int) -> dict | None:
    try:
        import bpy
    except ImportError:
        return None
    import addon_utils

    home = tempfile.mkdtemp(prefix="bench-addon-blender-")
    for var in ("CONFIG", "SCRIPTS", "EXTENSIONS"):
        os.environ.setdefault(f"BLENDER_USER_{var}", os.path.join(home, var.lower()))
    registered = {}
    bpy.app.timers.register = lambda fn, first_interval=0.0, persistent=False: registered.setdefault("fn", fn)
    bpy.app.timers.is_registered = lambda fn: fn in registered.values()
    bpy.app.timers.unregister = lambda fn: registered.clear()
    addon_utils.enable("movie_director", default_set=True)
    from movie_director import bridge

    try:
        prefs = bpy.context.preferences.addons["movie_director"].preferences
        prefs.initialized, prefs.auto_discover = True, False
        prefs.output_dir = home + "/out/"
        prefs.services.clear()
        svc = prefs.services.add()
        svc.name, svc.url = "bench", url
        callback = bridge.timer_callback
        rt = bridge.runtime()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            callback()
            if rt.model.services.get("bench") and rt.model.services["bench"].state == "connected":
                break
            time.sleep(0.02)
        hub = bridge.current_hub()
        rt.pacing.snapshot_every = 1e9
        busy, drained = [], []
        for run in range(runs):
            fill(hub, "bench", 20_000 + run)
            before = rt.model.events_applied
            start = time.perf_counter()
            callback()
            busy.append(time.perf_counter() - start)
            drained.append(rt.model.events_applied - before)
            hub.poll(10000)
        samples = []
        for _ in range(idle):
            start = time.perf_counter()
            callback()
            samples.append(time.perf_counter() - start)
        snap = []
        for _ in range(min(idle, 2000)):
            rt.pacing.last_snapshot = float("-inf")
            start = time.perf_counter()
            callback()
            snap.append(time.perf_counter() - start)
        return {
            "busy": {**stats(busy), "events_per_tick": min(drained)},
            "idle": stats(samples),
            "idle+snapshot": stats(snap),
        }
    finally:
        addon_utils.disable("movie_director", default_set=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="one add-on timer tick: 1 000 pending events, and idle")
    parser.add_argument("--runs", type=int, default=20, help="busy ticks to time (each after a fresh 1 000 events)")
    parser.add_argument("--idle", type=int, default=20000, help="idle ticks to time")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-blender", action="store_true", help="skip the headless-Blender measurement")
    args = parser.parse_args()
    runs, idle = max(1, min(args.runs, 200)), max(100, min(args.idle, 200_000))
    with ComfySimulator(time_scale=0.0) as sim:
        result = {"director_link": director_link.__version__, "native": director_link._native.__file__}
        result["hub_owner.tick"] = bench_pure(sim.url, runs, idle)
        if not args.no_blender:
            result["bridge.timer_callback"] = bench_blender(sim.url, runs, idle)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"director_link {result['director_link']} ({result['native']})")
    for name in ("hub_owner.tick", "bridge.timer_callback"):
        block = result.get(name)
        if not block:
            print(f"{name}: skipped (no bpy)" if name.startswith("bridge") else f"{name}: skipped")
            continue
        print(f"{name}:")
        for case, s in block.items():
            extra = f", {s['events_per_tick']} events drained per tick" if "events_per_tick" in s else ""
            print(
                f"  {case:<14} median {s['median_us']:>8.1f} µs  p99 {s['p99_us']:>8.1f} µs  "
                f"max {s['max_us']:>8.1f} µs  (n={s['n']}{extra})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
