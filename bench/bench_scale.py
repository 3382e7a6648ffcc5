#!/usr/bin/env python3
"""Scale curves and memory: concurrent jobs 1 -> 1 000, services 1 -> 8, memory per idle service / tracked job,
finished jobs beyond the cap, and RSS over a mixed run.

    python3 bench/bench_scale.py PART [--quick|--smoke] [--soak SECONDS] [--json]

PART is one of ``jobs``, ``services``, ``memory``, ``finished``, ``soak``; each runs in its own process (run_all.py
starts one per part) so that RSS figures are this client's alone. The server is bench/blast_server.py in a child
process. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time

import director_link
from _common import BlastServer, drain_all, rss_mib, wait_connected
from bench_stream import blast_prompt

TIMEOUT = 120.0


def stream(hub, names: list[str], jobs_per_service: int, steps: int, preview: int = 0) -> dict:
    """Submits `jobs_per_service` jobs to each service (one batch each) and drains until all end."""
    ids = set()
    c0 = time.process_time()
    for name in names:
        for _ in range(jobs_per_service):
            ids.add(hub.submit(name, blast_prompt(steps, preview, batch=jobs_per_service)).id)
    # Wall from the events' own timestamps (set in Rust), CPU from the first submit(): see bench_stream.run_ours.
    t0 = t1 = t_last_step = None
    peak = rss_mib()
    events = 0
    ended: dict[str, int] = {}  # job id -> 1 once terminal
    deadline = time.monotonic() + TIMEOUT
    last_rss = time.monotonic()
    while len(ended) < len(ids) and time.monotonic() < deadline:
        hub.wait_for_events(0.05)
        for _ in range(10_000):
            got = hub.poll(10_000)
            if not got:
                break
            for ev in got:
                kind = ev.type
                if kind in ("job_queued", "queue_changed", "service_state_changed"):
                    continue
                if t0 is None:
                    t0 = ev.time
                if kind in ("progress", "preview"):
                    t_last_step = ev.time
                events += 1
                if ev.is_terminal:
                    ended[ev.job] = 1
                    t1 = ev.time
        if time.monotonic() - last_rss > 0.05:
            peak, last_rss = max(peak, rss_mib()), time.monotonic()
    c1 = time.process_time()
    if len(ended) < len(ids):
        raise SystemExit(f"only {len(ended)} of {len(ids)} jobs ended in time")
    frames = len(ids) * (steps * (3 if preview else 2) + 5)
    wall = (t1 or 0.0) - (t0 or 0.0)
    stream_wall = (t_last_step or 0.0) - (t0 or 0.0)
    steps_msgs = len(ids) * steps * (3 if preview else 2)
    return {
        # The streaming part: first event -> the last step's event (every job's progress, interleaved).
        "stream_msgs_per_s": steps_msgs / stream_wall if stream_wall > 0 else None,
        "jobs": len(ids),
        "messages": frames,
        # After the last step: every job's end (execution_success -> GET /history -> manifest -> JobCompleted).
        "finish_tail_s": (t1 or 0.0) - (t_last_step or 0.0),
        "typed_events": events,
        "wall_s": wall,
        "msgs_per_s": frames / wall if wall else None,
        "cpu_us_per_msg": 1e6 * (c1 - c0) / frames,
        "peak_rss_mib": max(peak, rss_mib()),
        "coalesced": hub.snapshot()["events"]["coalesced"],
    }


def part_jobs(srv: BlastServer, total_steps: int, counts: list[int], out_dir: str) -> dict:
    out = {}
    for k in counts:
        with director_link.Hub(output_dir=out_dir, event_capacity=100_000, finished_jobs=max(1000, k)) as hub:
            name = hub.add_service("comfyui", srv.url, name="scale")
            wait_connected(hub, name)
            stream(hub, [name], 1, 200)  # warm-up
            drain_all(hub)
            out[str(k)] = stream(hub, [name], k, max(1, total_steps // k))
    return out


def part_services(srv: BlastServer, total_steps: int, counts: list[int], out_dir: str) -> dict:
    out = {}
    for s in counts:
        with director_link.Hub(output_dir=out_dir, event_capacity=100_000) as hub:
            names = [hub.add_service("comfyui", srv.url, name=f"svc{i}") for i in range(s)]
            for n in names:
                wait_connected(hub, n)
            stream(hub, names, 1, 200)
            drain_all(hub)
            out[str(s)] = stream(hub, names, 1, max(1, total_steps // s))
    return out


def part_memory(srv: BlastServer, services: int, jobs: int, out_dir: str) -> dict:
    """RSS growth per idle connected service, and per live (not yet answered) tracked job."""
    with director_link.Hub(output_dir=out_dir) as hub:
        base = hub.add_service("comfyui", srv.url, name="base")
        wait_connected(hub, base)
        time.sleep(0.2)
        r0 = rss_mib()
        names = [hub.add_service("comfyui", srv.url, name=f"idle{i}") for i in range(services)]
        for n in names:
            wait_connected(hub, n)
        time.sleep(0.5)
        drain_all(hub)
        r1 = rss_mib()
        # Live jobs: the server answers no HTTP, so every job stays pending in the hub (and its POST in flight).
        srv.call("stall 60")
        prompt = blast_prompt(1, 0)
        r2 = rss_mib()
        for _ in range(jobs):
            hub.submit(base, prompt)
        drain_all(hub)
        time.sleep(0.2)
        r3 = rss_mib()
        live = sum(1 for j in hub.snapshot()["jobs"] if j["state"] not in ("completed", "failed", "cancelled"))
    srv.call("stall 0")
    return {
        "idle_services": services,
        "rss_before_mib": r0,
        "rss_services_mib": r1,
        "kib_per_idle_service": (r1 - r0) * 1024 / services,
        "live_jobs": live,
        "kib_per_live_job": (r3 - r2) * 1024 / jobs,
    }


def part_finished(srv: BlastServer, total: int, batch: int, out_dir: str) -> dict:
    """`total` jobs finish (batches of `batch`); RSS and the number of jobs the hub still knows, every batch."""
    samples = []
    with director_link.Hub(output_dir=out_dir, event_capacity=100_000) as hub:
        name = hub.add_service("comfyui", srv.url, name="fin")
        wait_connected(hub, name)
        first = None
        done = 0
        while done < total:
            n = min(batch, total - done)
            ids = [hub.submit(name, blast_prompt(1, 0, batch=n)).id for _ in range(n)]
            first = first or ids[0]
            left = set(ids)
            deadline = time.monotonic() + TIMEOUT
            while left and time.monotonic() < deadline:
                hub.wait_for_events(0.05)
                for _ in range(1000):
                    got = hub.poll(10_000)
                    if not got:
                        break
                    for ev in got:
                        if ev.is_terminal:
                            left.discard(ev.job)
            if left:
                raise SystemExit(f"{len(left)} jobs did not finish")
            done += n
            samples.append({"finished": done, "rss_mib": rss_mib(), "jobs_known": len(hub.snapshot()["jobs"])})
        first_known = hub.job(first) is not None
    half = [s["rss_mib"] for s in samples if s["finished"] >= total // 2]
    # The first sample with twice the cap finished (or the last one in a short run): the reference RSS.
    at_cap = next((s for s in samples if s["finished"] >= 2000), samples[-1])
    return {
        "finished": total,
        "samples": samples,
        "jobs_known_end": samples[-1]["jobs_known"],
        "first_job_known": first_known,
        "rss_at_cap_mib": at_cap["rss_mib"],
        "rss_at_cap_finished": at_cap["finished"],
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_second_half_spread_mib": max(half) - min(half) if half else None,
    }


def part_soak(srv: BlastServer, seconds: float, out_dir: str) -> dict:
    """A mixed run: previews, text streams, several jobs at a time, cancels; RSS sampled ~20 times."""
    rng = random.Random(11)
    samples = []
    with director_link.Hub(output_dir=out_dir, event_capacity=20_000) as hub:
        names = [hub.add_service("comfyui", srv.url, name=f"mix{i}") for i in range(2)]
        for n in names:
            wait_connected(hub, n)
        started = time.monotonic()
        every = max(0.5, seconds / 20)
        next_sample = started
        jobs = events = 0
        live: set[str] = set()
        while time.monotonic() - started < seconds:
            if len(live) < 4:
                k = rng.choice([1, 1, 2, 4])
                steps, preview = rng.choice([(200, 30_000), (2_000, 0), (20, 60_000), (50, 0)])
                name = rng.choice(names)
                for _ in range(k):
                    live.add(hub.submit(name, blast_prompt(steps, preview, batch=k)).id)
                    jobs += 1
            hub.wait_for_events(0.02)
            for ev in hub.poll(10_000):
                events += 1
                if ev.is_terminal:
                    live.discard(ev.job)
            if time.monotonic() >= next_sample:
                samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mib": rss_mib()})
                next_sample += every
        deadline = time.monotonic() + 30
        while live and time.monotonic() < deadline:
            hub.wait_for_events(0.05)
            for ev in hub.poll(10_000):
                if ev.is_terminal:
                    live.discard(ev.job)
        samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mib": rss_mib()})
    warm = [s for s in samples if s["t_s"] >= seconds * 0.25] or samples
    rss = [s["rss_mib"] for s in warm]
    # Least-squares slope over the run after the first quarter (warm-up), in MiB per minute.
    ts = [s["t_s"] for s in warm]
    slope = None
    if len(ts) > 2 and max(ts) > min(ts):
        mt, mr = sum(ts) / len(ts), sum(rss) / len(rss)
        slope = 60 * sum((t - mt) * (r - mr) for t, r in zip(ts, rss, strict=True)) / sum((t - mt) ** 2 for t in ts)

    # Growth: the median RSS of the last quarter minus that of the second quarter (after the warm-up quarter).
    def quarter_median(lo: float, hi: float) -> float | None:
        vals = sorted(s["rss_mib"] for s in samples if lo * seconds <= s["t_s"] <= hi * seconds)
        return vals[len(vals) // 2] if vals else None

    q2, q4 = quarter_median(0.25, 0.5), quarter_median(0.75, 1.01)
    return {
        "seconds": seconds,
        "rss_q2_median_mib": q2,
        "rss_q4_median_mib": q4,
        "growth_q2_to_q4_mib": q4 - q2 if q2 is not None and q4 is not None else None,
        "jobs": jobs,
        "events": events,
        "samples": samples,
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_warm_min_mib": min(rss),
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "rss_end_mib": samples[-1]["rss_mib"],
        "slope_mib_per_min": slope,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["jobs", "services", "memory", "finished", "soak"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--soak", type=float, default=None, help="seconds of the mixed run (default 600, quick 60)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    size = "smoke" if args.smoke else ("quick" if args.quick else "full")
    with BlastServer() as srv, tempfile.TemporaryDirectory(prefix="dl_scale_") as out_dir:
        if args.part == "jobs":
            steps = {"smoke": 2_000, "quick": 20_000, "full": 40_000}[size]
            counts = [1, 10, 100] if args.smoke else [1, 10, 100, 1000]
            res = part_jobs(srv, steps, counts, out_dir)
        elif args.part == "services":
            steps = {"smoke": 2_000, "quick": 20_000, "full": 40_000}[size]
            res = part_services(srv, steps, [1, 2, 8] if args.smoke else [1, 2, 4, 8], out_dir)
        elif args.part == "memory":
            res = part_memory(srv, 8 if args.smoke else 50, 1000 if args.smoke else 10_000, out_dir)
        elif args.part == "finished":
            total = {"smoke": 1_500, "quick": 5_000, "full": 20_000}[size]
            res = part_finished(srv, total, 500, out_dir)
        else:
            secs = args.soak if args.soak is not None else {"smoke": 5.0, "quick": 60.0, "full": 600.0}[size]
            res = part_soak(srv, secs, out_dir)
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
