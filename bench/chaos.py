"""Chaos and soak runs of the ComfyUI link against two simulators on loopback.

    python3 bench/chaos.py --jobs 10000            # the chaos test at scale: drops every 1–5 s, a stall, a restart
    python3 bench/chaos.py --soak 3600             # one hour of steady load with drops; RSS sampled every minute
    python3 bench/chaos.py --soak 3600 --rate 20   # the same at a farm's pace (20 jobs / s), leaving CPU to others

Prints what the test suite asserts (one terminal event per job, one POST per prompt id, files on disk) plus
throughput and the client process's resident memory at the start, every minute and at the end (the simulators run
in a child process, so their history and request logs do not count).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import director_link

# The simulators run in a child process, so this process's RSS is the client's alone. It obeys one command per
# line on stdin and answers one JSON line: "drop I", "stall I S", "restart I S", "posts" (prompt ids POSTed).
SIM_SERVER = r"""
import json, sys
from director_link.testing import ComfySimulator
sims = [ComfySimulator(time_scale=0.0), ComfySimulator(time_scale=0.0)]
print(json.dumps([s.url for s in sims]), flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "drop":
        sims[int(args[0])].drop_sockets()
    elif cmd == "stall":
        sims[int(args[0])].stall(float(args[1]))
    elif cmd == "restart":
        sims[int(args[0])].restart(down_seconds=float(args[1]))
    elif cmd == "posts":
        ids = [(r["json"] or {}).get("prompt_id") for s in sims for r in s.requests()
               if r["method"] == "POST" and r["path"].removeprefix("/api") == "/prompt"]
        print(json.dumps(ids), flush=True)
        continue
    print("{}", flush=True)
for s in sims:
    s.close()
"""


class Sims:
    """Two simulators in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIM_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.urls = json.loads(self.proc.stdout.readline())
        self.lock = threading.Lock()

    def call(self, line: str):
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def prompt(prefix: str, rng: random.Random) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": rng.randrange(1 << 24)},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def chaos_monkey(sims: Sims, stop: threading.Event, rng: random.Random, faults: Counter, stall_restart: bool) -> None:
    started = time.monotonic()
    stalled = restarted = not stall_restart
    while not stop.wait(rng.uniform(1.0, 5.0)):
        sims.call(f"drop {rng.randrange(2)}")
        faults["drops"] += 1
        elapsed = time.monotonic() - started
        if not stalled and elapsed > 5:
            sims.call("stall 0 2.0")
            faults["stalls"] += 1
            stalled = True
        if not restarted and elapsed > 12:
            sims.call("restart 1 2.0")
            faults["restarts"] += 1
            restarted = True


def run(jobs: int, soak: float | None, out: Path, seed: int, rate: float | None = None) -> dict:
    rng = random.Random(seed)
    sims = Sims()
    hub = director_link.Hub(output_dir=str(out), reconnect_initial=0.2, reconnect_max=2.0, heartbeat=1.0)
    stop = threading.Event()
    faults: Counter = Counter()
    rss = [("start", rss_mib())]
    outcomes: Counter = Counter()
    lifecycle: Counter = Counter()
    # Only the jobs in flight are remembered, so this script's own memory stays flat during a soak.
    open_jobs: set[str] = set()
    extra_terminals = 0
    submitted = 0

    def drain() -> None:
        nonlocal extra_terminals
        for ev in hub.poll(10_000):
            lifecycle[ev.type] += 1
            if ev.is_terminal:
                if ev.job in open_jobs:
                    open_jobs.discard(ev.job)
                else:
                    extra_terminals += 1
                outcomes[ev.type if ev.type != "job_failed" else f"failed:{ev.code}"] += 1

    try:
        names = [hub.add_service("comfyui", url, name=f"sim{i}") for i, url in enumerate(sims.urls)]
        monkey = threading.Thread(target=chaos_monkey, args=(sims, stop, rng, faults, soak is None), daemon=True)
        started = time.monotonic()
        monkey.start()
        last_rss = started
        deadline = started + (soak if soak else 24 * 3600)
        limit = jobs if not soak else 10**9
        while time.monotonic() < deadline and (submitted < limit or open_jobs):
            # Keep a bounded number of jobs in flight, like a render farm feeding shots.
            # With a rate, submissions are paced (never more than `rate` per second on average).
            allowed = limit if rate is None else min(limit, int((time.monotonic() - started) * rate) + 1)
            while len(open_jobs) < 200 and submitted < allowed and time.monotonic() < deadline:
                name = names[submitted % 2]
                open_jobs.add(hub.submit(name, prompt(f"chaos/{name}", rng)).id)
                submitted += 1
            hub.wait_for_events(0.05)
            drain()
            if time.monotonic() - last_rss > 60:
                rss.append((f"{time.monotonic() - started:.0f}s", rss_mib()))
                last_rss = time.monotonic()
            if soak and time.monotonic() >= deadline:
                break
        # Let the last jobs end (bounded).
        settle = time.monotonic() + 120
        while open_jobs and time.monotonic() < settle:
            hub.wait_for_events(0.1)
            drain()
        elapsed = time.monotonic() - started
        stop.set()
        monkey.join(10)
        rss.append(("end", rss_mib()))
        posts = Counter(sims.call("posts"))
        files = sum(1 for _ in out.rglob("*.png"))
        return {
            "jobs_submitted": submitted,
            "seconds": round(elapsed, 1),
            "jobs_per_second": round(submitted / elapsed, 1) if elapsed else None,
            "outcomes": dict(outcomes),
            "jobs_without_terminal": len(open_jobs),
            "extra_terminal_events": extra_terminals,
            "prompts_posted_twice": sum(1 for n in posts.values() if n > 1),
            "files_on_disk": files,
            "faults": dict(faults),
            "events": dict(lifecycle),
            "rss_mib": rss,
            "services": [
                {k: s[k] for k in ("name", "state", "reconnects", "drops", "connect_attempts", "uptime_percent")}
                for s in hub.snapshot()["services"]
            ],
        }
    finally:
        stop.set()
        hub.close()
        sims.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--soak", type=float, default=None, help="run for this many seconds instead of a job count")
    p.add_argument("--json-out", default=None, help="also write the report here (bench/run_all.py reads it)")
    p.add_argument("--rate", type=float, default=None, help="submit at most this many jobs per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dl-chaos-") as tmp:
        out = Path(args.out or tmp)
        report = run(args.jobs, args.soak, out, args.seed, args.rate)
    report["recorded"] = time.strftime("%Y-%m-%d", time.gmtime())
    report["command"] = "python3 bench/chaos.py " + " ".join(sys.argv[1:])
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    ok = report["jobs_without_terminal"] == 0 and report["extra_terminal_events"] == 0
    ok = ok and report["prompts_posted_twice"] == 0
    print("PASS" if ok else "FAIL", f"({os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
