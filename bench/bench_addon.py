#!/usr/bin/env python3
"""Benchmark: one tick of the Blender add-on's timer, with 1 000 pending events and idle.

    python3 bench/bench_addon.py [--runs 20] [--idle 20000] [--json] [--no-blender]

What is timed is the add-on's own code path on real events from a real Hub:

* ``busy``: ``hub_owner.tick()`` (drain ``poll()`` into the ``state.ViewModel``) when ≥ 1 000 events are waiting —
  the events of an ``AcceptanceProgress(steps=1000)`` job run on the simulator (``time_scale=0``, loopback);
* ``idle``: the same call when nothing waits (what Blender pays every interval while nothing happens);
* ``idle+snapshot``: an idle tick that also refreshes health figures from ``hub.snapshot()`` (every 2 s);
* with ``bpy`` installed, the same three for the registered timer callback (``bridge.timer_callback``: preferences,
  drain, redraw tagging, finished-job bookkeeping) in headless Blender;
* ``100 shots in flight``: the timer callback while 100 shots of a batch are on a second simulator (one running, 99
  queued), and how long "Generate All" takes to send them (it returns before any of them runs).

A benchmark, not a test: it prints numbers and never fails on a slow one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


SHOTS = 100


def bench_shots(bpy, bridge, slow_url: str, ticks: int) -> dict:
    """Generate All on 100 marker shots against a server that runs one slow job at a time, then the timer tick
    while all 100 are in flight; cancels them at the end."""
    import json as _json

    prefs = bpy.context.preferences.addons["movie_director"].preferences
    svc = prefs.services.add()
    svc.name, svc.url = "slow", slow_url
    rt = bridge.runtime()
    callback = bridge.timer_callback
    rt.needs_sync = True
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        callback()
        if rt.model.services.get("slow") and rt.model.services["slow"].state == "connected":
            break
        time.sleep(0.02)
    scene = bpy.context.scene
    for i in range(SHOTS):
        scene.timeline_markers.new(f"S{i:03d}", frame=1 + i * 10)
    scene.frame_end = SHOTS * 10
    folder = tempfile.mkdtemp(prefix="bench-shots-")
    workflow = os.path.join(folder, "slow.json")
    with open(workflow, "w") as fh:
        _json.dump({"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 600.0, "nonce": 0}}}, fh)
    s = scene.movie_director
    s.workflow, s.service = workflow, "slow"
    bpy.ops.movie_director.shots_from_markers()
    start = time.perf_counter()
    bpy.ops.movie_director.generate_shots(which="ALL")
    submit = time.perf_counter() - start
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        callback()
        states = [rt.model.jobs[shot.job_id].state for shot in s.shots if shot.job_id in rt.model.jobs]
        if len(states) == SHOTS and all(state in ("queued", "running") for state in states):
            break
        time.sleep(0.02)
    in_flight = sum(1 for j in rt.model.jobs.values() if j.state in ("queued", "running"))
    samples = []
    for _ in range(ticks):
        start = time.perf_counter()
        callback()
        samples.append(time.perf_counter() - start)
    bpy.ops.movie_director.cancel_shots(which="ALL")
    deadline = time.monotonic() + 30
    while rt.model.active_jobs() and time.monotonic() < deadline:
        callback()
        time.sleep(0.02)
    shutil.rmtree(folder, ignore_errors=True)
    return {"tick": {**stats(samples), "in_flight": in_flight}, "generate_all_ms": round(submit * 1000, 1)}


def bench_blender(url: str, runs: int, idle: int, slow_url: str | None = None) -> dict | None:
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
        out = {
            "busy": {**stats(busy), "events_per_tick": min(drained)},
            "idle": stats(samples),
            "idle+snapshot": stats(snap),
        }
        if slow_url:
            shots = bench_shots(bpy, bridge, slow_url, min(idle, 2000))
            out["100 shots in flight"] = shots["tick"]
            out["generate_all_100_ms"] = shots["generate_all_ms"]
        return out
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
    with ComfySimulator(time_scale=0.0) as sim, ComfySimulator(time_scale=1.0) as slow:
        result = {"director_link": director_link.__version__, "native": director_link._native.__file__}
        result["hub_owner.tick"] = bench_pure(sim.url, runs, idle)
        if not args.no_blender:
            result["bridge.timer_callback"] = bench_blender(sim.url, runs, idle, slow.url)
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
            if not isinstance(s, dict):
                print(f"  {case:<14} {s} ms")
                continue
            extra = f", {s['events_per_tick']} events drained per tick" if "events_per_tick" in s else ""
            extra += f", {s['in_flight']} jobs in flight" if "in_flight" in s else ""
            print(
                f"  {case:<14} median {s['median_us']:>8.1f} µs  p99 {s['p99_us']:>8.1f} µs  "
                f"max {s['max_us']:>8.1f} µs  (n={s['n']}{extra})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
