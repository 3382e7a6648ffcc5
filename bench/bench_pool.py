#!/usr/bin/env python3
"""Pools: a batch of jobs of mixed lengths over 4 ComfyUI simulators of different speeds.

    python3 bench/bench_pool.py [--quick|--smoke] [--json] [--jobs N]

* pool: every job submitted at once to one pool (``hub.add_pool``, capacity 2): makespan (first submit to last
  end) against the ideal, total work / total speed (work in node-seconds of ``AcceptanceSlow``; a server of
  ``time_scale`` s runs 1/s node-seconds per second). Efficiency = ideal / makespan (target ≥ 0.9);
* round-robin, same run, same servers: the same jobs added as 4 plain services, job i to server i mod 4 (what a
  script without a pool does);
* failover: a fresh pool of 4 (``resubmit_running=True``); one server is closed (killed) at 40 % of the expected
  makespan. Jobs lost (not completed) must be 0; its cost is the makespan against the ideal of the servers left
  after the kill (ideal up to the kill, then the rest of the work / the remaining speed).

Every prompt id is checked to reach at most one server once. A benchmark: the numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import director_link
from director_link.testing import ComfySimulator

# Seconds of simulator time per node-second: nominal speeds 1/scale = 20, 13, 10, 7 node-seconds per second
# (jobs of 1–8 node-seconds take 50 ms – 1.2 s). Each server's real speed is measured (`calibrate`).
SCALES = (0.05, 0.075, 0.1, 0.15)
LENGTHS = (1.0, 2.0, 4.0, 8.0)
LIMIT = 900.0


def jobs_of(n: int, seed: int = 17) -> list[float]:
    rng = random.Random(seed)
    return [rng.choice(LENGTHS) for _ in range(n)]


def workflow(seconds: float, i: int) -> dict:
    return {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": i}}}


def wait_pool(hub, name: str, n: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pool = next(p for p in hub.snapshot()["pools"] if p["name"] == name)
        if sum(s["usable"] for s in pool["servers"]) == n:
            return
        time.sleep(0.02)
    raise SystemExit(f"pool {name} never had {n} usable servers")


def wait_connected(hub, names: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {s["name"]: s["state"] for s in hub.snapshot()["services"]}
        if all(states.get(n) == "connected" for n in names):
            return
        time.sleep(0.02)
    raise SystemExit(f"services never connected: {names}")


def drive(hub, ids: list[str], started: float, on_tick=None) -> dict:
    """Polls until every job ended; returns counts and the makespan (seconds from `started` to the last end)."""
    pending = set(ids)
    ends: dict[str, str] = {}
    codes: dict[str, int] = {}
    last = started
    deadline = time.monotonic() + LIMIT
    while pending and time.monotonic() < deadline:
        hub.wait_for_events(0.05)
        for ev in hub.poll(10_000):
            if ev.is_terminal and ev.job in pending:
                pending.discard(ev.job)
                ends[ev.job] = ev.type
                last = time.monotonic()
                if ev.type == "job_failed":
                    codes[ev.error["code"]] = codes.get(ev.error["code"], 0) + 1
        if on_tick is not None:
            on_tick(time.monotonic() - started)
    return {
        "makespan_s": last - started,
        "completed": sum(1 for t in ends.values() if t == "job_completed"),
        "failed": codes,
        "unfinished": len(pending),
    }


def posted_twice(sims: list[ComfySimulator]) -> int:
    seen: dict[str, int] = {}
    for s in sims:
        for r in s.requests():
            if r["method"] == "POST" and r["path"] in ("/prompt", "/api/prompt"):
                pid = (r.get("json") or {}).get("prompt_id")
                seen[pid] = seen.get(pid, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def calibrate(sims: list[ComfySimulator], out: str, k: int) -> list[float]:
    """Each server's real speed (node-seconds per second, its own per-job overhead included): `k` jobs of 4
    node-seconds queued on each server at once, all servers in parallel, timed from the submit to its last end."""
    with director_link.Hub(output_dir=out) as hub:
        names = [hub.add_service("comfyui", s.url, name=f"c{i}") for i, s in enumerate(sims)]
        wait_connected(hub, names)
        started = time.monotonic()
        ids = {n: [hub.submit(n, workflow(4.0, 90_000 + j)).id for j in range(k)] for n in names}
        done: dict[str, float] = {}
        left = {n: set(v) for n, v in ids.items()}
        deadline = time.monotonic() + LIMIT
        while len(done) < len(names) and time.monotonic() < deadline:
            hub.wait_for_events(0.05)
            for ev in hub.poll(10_000):
                for n in names:
                    if ev.is_terminal and ev.job in left[n]:
                        left[n].discard(ev.job)
                        if not left[n]:
                            done[n] = time.monotonic() - started
    return [4.0 * k / done.get(n, LIMIT) for n in names]


def run_pool(lengths: list[float], speed: float, out: str) -> tuple[dict, dict]:
    work = sum(lengths)
    sims = [ComfySimulator(time_scale=s) for s in SCALES]
    try:
        measured = calibrate(sims, out, 6)
        speed = sum(measured)
        ideal = work / speed
        with director_link.Hub(output_dir=out) as hub:
            hub.add_pool("pool", [s.url for s in sims], capacity=2)
            wait_pool(hub, "pool", len(sims))
            started = time.monotonic()
            ids = [hub.submit("pool", workflow(x, i)).id for i, x in enumerate(lengths)]
            r = drive(hub, ids, started)
            per = {p["url"]: p["completed"] for p in hub.snapshot()["pools"][0]["servers"]}
        pool = {
            **r,
            "ideal_s": ideal,
            "efficiency": ideal / r["makespan_s"],
            "jobs_per_server": sorted(per.values(), reverse=True),
            "measured_speeds": [round(v, 2) for v in measured],
        }
        # Round-robin over the same servers, as plain services.
        with director_link.Hub(output_dir=out) as hub:
            names = [hub.add_service("comfyui", s.url, name=f"s{i}") for i, s in enumerate(sims)]
            wait_connected(hub, names)
            started = time.monotonic()
            ids = [hub.submit(names[i % len(names)], workflow(x, 10_000 + i)).id for i, x in enumerate(lengths)]
            r = drive(hub, ids, started)
        rr = {**r, "ideal_s": ideal, "efficiency": ideal / r["makespan_s"]}
        pool["posted_twice"] = posted_twice(sims)
        return pool, rr
    finally:
        for s in sims:
            s.close()


def run_failover(lengths: list[float], measured: list[float], out: str) -> dict:
    work = sum(lengths)
    speed = sum(measured)
    ideal = work / speed
    sims = [ComfySimulator(time_scale=s) for s in SCALES]
    victim = 1  # the second fastest
    killed_at: list[float] = []

    def kill(elapsed: float) -> None:
        if not killed_at and elapsed >= 0.4 * ideal:
            sims[victim].close()
            killed_at.append(elapsed)

    try:
        with director_link.Hub(output_dir=out) as hub:
            hub.add_pool("pool", [s.url for s in sims], capacity=2, resubmit_running=True)
            wait_pool(hub, "pool", len(sims))
            started = time.monotonic()
            ids = [hub.submit("pool", workflow(x, 20_000 + i)).id for i, x in enumerate(lengths)]
            r = drive(hub, ids, started, on_tick=kill)
            dead = hub.snapshot()["pools"][0]["servers"][victim]
        t_kill = killed_at[0] if killed_at else r["makespan_s"]
        left = speed - measured[victim]
        ideal_f = t_kill + max(0.0, work - t_kill * speed) / left
        return {
            **r,
            "killed_at_s": t_kill,
            "ideal_s": ideal_f,
            "ideal_no_failure_s": ideal,
            "efficiency": ideal_f / r["makespan_s"],
            "moved": dead["moved_away"],
            "resubmitted_running": dead["lost"],
            "lost": len(lengths) - r["completed"],
            "posted_twice": posted_twice([s for i, s in enumerate(sims) if i != victim]),
        }
    finally:
        for i, s in enumerate(sims):
            if i != victim:
                s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--jobs", type=int, default=None)
    args = p.parse_args(argv)
    n = args.jobs or (80 if args.smoke else 400 if args.quick else 1000)
    lengths = jobs_of(n)
    speed = sum(1.0 / s for s in SCALES)
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        pool, rr = run_pool(lengths, speed, out)
        failover = run_failover(lengths, pool["measured_speeds"], out)
    result = {
        "jobs": n,
        "servers": len(SCALES),
        "speeds": [round(1.0 / s, 2) for s in SCALES],
        "work_node_seconds": sum(lengths),
        "pool": pool,
        "round_robin": rr,
        "pool_vs_round_robin": rr["makespan_s"] / pool["makespan_s"],
        "failover": failover,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
