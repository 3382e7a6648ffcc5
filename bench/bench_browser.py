#!/usr/bin/env python3
"""The browser side under a burst: our React hooks vs react-use-websocket's `lastMessage` pattern, same run.

In real headless Chromium (Debian's, driven by the web package's playwright-core) against a real
`director-link serve --database memory` (a fresh one per page): two pages with the same table of J jobs, one built
on our hooks (`WebSocketProvider`, `useJobIndex`, `useJob`, `useProgressTracking`: what the monitor uses), one on
react-use-websocket (`useWebSocket(url).lastMessage` folded into state by an effect, rows memoized: its README's
pattern), and a floor page with a bare WebSocket that only counts messages. External producers
`POST /api/jobs/{id}/progress` R progress updates / s round robin over the jobs still running for S seconds, the jobs
ending one after another throughout. Per page: React commits / s (through the devtools hook), component renders / s,
main-thread time (CDP `Performance.getMetrics` `TaskDuration` in thread time, over the burst's wall time), renderer
CPU, the JS heap after GC, messages the page's logic saw per message received, and the jobs it shows completed at the
end (a missed terminal event leaves a job "running" forever). Then the stalled scenario: the same burst with the
page's main thread blocked 200 ms every 2 s (a heavy render elsewhere, a GC, a laptop waking), which queues messages
up — where a `lastMessage` page skips them. bench/browser/run.mjs does the work; this runs it, with the package this
Python imports, and aggregates.

    python3 bench/bench_browser.py [--smoke|--quick] [--runs N] [--json]

Needs Node 20+ with the web package's node_modules (`cd web && npm ci`) and Chromium (`$CHROMIUM`, default
/usr/bin/chromium); installs bench/browser's own (react-use-websocket) with `npm ci` when missing. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

from _common import BENCH, REPO, child_env

HERE = BENCH / "browser"
WEB = REPO / "web"
# (runs, jobs, progress updates / s, seconds of flood)
SIZES = {"full": (3, 100, 1000, 30), "quick": (2, 100, 1000, 15), "smoke": (1, 20, 200, 2)}
# The stalled scenario's burst, s (the page blocked 200 ms every 2 s meanwhile)
STALL_SECONDS = {"full": 15, "quick": 10, "smoke": 3}


def log(msg: str) -> None:
    print(f"[bench_browser] {msg}", file=sys.stderr, flush=True)


def npm_ci(folder) -> None:
    """`npm ci` when node_modules is missing or older than the lockfile."""
    stamp = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("bench_browser needs Node 20+ and npm (apt-get install nodejs npm)")
    log(f"npm ci in {folder.relative_to(REPO)}")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, timeout=900, capture_output=True)


def summarize(results: list[dict], variant: str, scenario: str = "steady") -> dict:
    rows = [r for r in results if r["variant"] == variant and r.get("scenario", "steady") == scenario]
    keys = (
        "commits_per_second",
        "component_renders_per_second",
        "commits_per_frame",
        "handled_per_frame",
        "main_thread_busy",
        "script_busy",
        "layout_busy",
        "other_busy",
        "renderer_cpu",
        "heap_after_mib",
        "heap_before_mib",
        "frames",
        "producer_rate",
        "terminals_missed",
        "settle_seconds",
        "stalls",
    )
    out: dict = {"runs": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
            out[f"{k}_min"] = min(vals)
            out[f"{k}_max"] = max(vals)
    if variant in ("ours", "baseline"):
        out["terminals_missed_total"] = sum(r["terminals_missed"] for r in rows)
        out["terminals_sent_total"] = sum(r["terminals_sent"] for r in rows)
    out["page_errors"] = sum(len(r["page_errors"]) for r in rows)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=None, help="pairs of page runs (default: 3, --quick 2, --smoke 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    runs, jobs, rate, seconds = SIZES[size]
    runs = args.runs or runs
    if not (WEB / "node_modules" / "playwright-core").exists():
        npm_ci(WEB)
    npm_ci(HERE)
    node = shutil.which("node")
    if not node:
        raise SystemExit("bench_browser needs Node 20+ (apt-get install nodejs)")
    env = child_env()
    env["BENCH_PYTHON"] = sys.executable
    t0 = time.monotonic()
    argv = [node, str(HERE / "run.mjs"), "--runs", str(runs), "--jobs", str(jobs), "--rate", str(rate)]
    argv += ["--seconds", str(seconds), "--stall-seconds", str(STALL_SECONDS[size])]
    limit = 600 + runs * 8 * (seconds + STALL_SECONDS[size])
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"bench/browser/run.mjs failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    raw = json.loads(r.stdout.strip().splitlines()[-1])
    result = {
        "size": size,
        "config": raw["config"],
        "bundle": raw["bundle"],
        "ours": summarize(raw["results"], "ours"),
        "baseline": summarize(raw["results"], "baseline"),
        "floor": summarize(raw["results"], "floor"),
        "ours_frame": summarize(raw["results"], "ours_frame"),
        "stalled_ours": summarize(raw["results"], "ours", "stalled"),
        "stalled_baseline": summarize(raw["results"], "baseline", "stalled"),
        "runs": raw["results"],
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
