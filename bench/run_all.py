#!/usr/bin/env python3
"""Runs every benchmark and writes BENCHMARKS.md: ours vs the Python clients, ratios, targets met or missed.

    python3 bench/run_all.py                      # full: 5 runs, 10-minute mixed soak, writes BENCHMARKS.md
    python3 bench/run_all.py --quick              # ~2 minutes: 3 runs, smaller streams, 30 s soak
    python3 bench/run_all.py --smoke --out /tmp/b.md   # ~20 s: every section once, tiny (CI)
    python3 bench/run_all.py --coverage           # also line coverage (slow: an instrumented cargo test + pytest)

Each benchmark runs in its own subprocess (bench_stream.py, bench_pyside.py, bench_addon.py, bench_scale.py PART,
bench_discovery.py, bench_pool.py, bench_coverage.py), ``--runs`` times where it is cheap enough (bench_pool.py
once); every figure is the median of the runs with min–max. A benchmark, not a test: the exit code is 0 whatever
the numbers (non-zero only when a benchmark could not run). Measure a release build of the extension (see
bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH, REPO, child_env, machine_info

LIMIT = 1800  # seconds, any one benchmark process


def run_json(argv: list[str], limit: float = LIMIT) -> dict:
    """Runs a bench script; returns the JSON object on its last JSON line."""
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=limit
    )
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            what = " ".join(Path(a).name if a.endswith(".py") else a for a in argv)
            print(f"  {what}: {time.monotonic() - t0:.1f} s")
            return out
    raise SystemExit(f"{' '.join(argv)} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def flatten(d: dict, prefix: str = "", out: dict | None = None) -> dict:
    out = {} if out is None else out
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flatten(v, key + ".", out)
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)):
            out[key] = float(v)
    return out


class Results:
    """Every run's flattened numbers per key; `get` gives (median, min, max)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.raw: dict[str, list[dict]] = {}

    def add(self, section: str, result: dict) -> None:
        self.raw.setdefault(section, []).append(result)
        for k, v in flatten(result, section + ".").items():
            self.values.setdefault(k, []).append(v)

    def get(self, key: str) -> tuple[float, float, float] | None:
        vals = self.values.get(key)
        if not vals:
            return None
        return statistics.median(vals), min(vals), max(vals)

    def med(self, key: str) -> float | None:
        g = self.get(key)
        return g[0] if g else None


# ---------------------------------------------------------------------------------------------------- formatting


def num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10_000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return s + unit


def cell(res: Results, key: str | None, scale: float = 1.0, unit: str = "") -> str:
    if key is None:
        return "–"
    g = res.get(key)
    if g is None:
        return "–"
    m, lo, hi = (x * scale for x in g)
    if len(res.values[key]) == 1 or lo == hi:
        return num(m, unit)
    return f"{num(m, unit)} ({num(lo)}–{num(hi)})"


def ratio(ours: float | None, base: float | None, lower_is_better: bool) -> float | None:
    if not ours or not base:
        return None
    return base / ours if lower_is_better else ours / base


def rtxt(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


class Table:
    def __init__(self, header: list[str]) -> None:
        self.header = header
        self.rows: list[list[str]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def md(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the report


def section_stream(res: Results, targets: list) -> str:
    t = Table(
        [
            "workload",
            "metric",
            "ours",
            "python-websockets",
            "websocket-client",
            "null client (bytes only)",
            "ratio vs websockets",
            "ratio vs websocket-client",
            "target",
            "status",
        ]
    )
    parts = []
    for wl, label in (("text", "progress only"), ("previews", "progress + JPEG-sized previews")):
        p = f"stream.stream.{wl}"
        steps = res.med(f"{p}.steps")
        if steps is None:
            continue
        pv = res.med(f"{p}.preview_bytes") or 0
        name = f"{label} ({num(steps)} steps" + (f", previews {pv / 1000:.0f} KB ±50 %)" if pv else ")")
        for metric, lower, tgt in (("msgs_per_s", False, 3.0), ("cpu_us_per_msg", True, 3.0)):
            o = res.med(f"{p}.ours.{metric}")
            rw = ratio(o, res.med(f"{p}.websockets.{metric}"), lower)
            rc = ratio(o, res.med(f"{p}.websocket-client.{metric}"), lower)
            ok = None if rw is None else rw >= tgt
            targets.append((f"stream {wl}: {metric}", rw, ok))
            t.add(
                name,
                "messages / s" if metric == "msgs_per_s" else "client CPU µs / message",
                cell(res, f"{p}.ours.{metric}"),
                cell(res, f"{p}.websockets.{metric}"),
                cell(res, f"{p}.websocket-client.{metric}"),
                cell(res, f"{p}.null.{metric}") if metric == "msgs_per_s" else "–",
                rtxt(rw),
                rtxt(rc),
                "≥ 3× websockets" if metric == "msgs_per_s" else "≤ ⅓ of websockets (ratio ≥ 3×)",
                verdict(ok),
            )
        t.add(
            name,
            "typed events / s delivered by `poll()`",
            cell(res, f"{p}.ours.typed_events_per_s"),
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
        )
        parts.append(
            f"{label}: server sending thread CPU/wall while streaming to ours "
            f"{num(res.med(f'{p}.ours.server_send_cpu_per_wall'))}, to websockets "
            f"{num(res.med(f'{p}.websockets.server_send_cpu_per_wall'))}, to the null client "
            f"{num(res.med(f'{p}.null.server_send_cpu_per_wall'))}; null client "
            f"{num(res.med(f'{p}.null.msgs_per_s'))} messages/s = "
            f"{num(ratio(res.med(f'{p}.null.msgs_per_s'), res.med(f'{p}.ours.msgs_per_s'), False))}× ours"
        )
    f = "stream.flood"
    steps = res.med(f"{f}.steps")
    if steps is not None:
        name = f"issue #13 flood: {num(steps)} small `progress` messages only"
        # The ratio of each run (ours and the baseline ran back to back on the same server), then the median.
        rw = res.med(f"{f}.cpu_ratio")
        ok = None if rw is None else rw >= 5.0
        targets.append(("stream flood: cpu (issue #13: ≥ 5×)", rw, ok))
        t.add(
            name,
            "client CPU µs / message (consumer: `poll()` loop, `wait_for_events()` when empty, reads `is_terminal`)",
            cell(res, f"{f}.ours.cpu_us_per_msg"),
            cell(res, f"{f}.websockets.cpu_us_per_msg"),
            "–",
            "–",
            rtxt(rw),
            "–",
            "≤ ⅕ of websockets + `json.loads` (ratio ≥ 5×)",
            verdict(ok),
        )
        t.add(
            name,
            "messages / s",
            cell(res, f"{f}.ours.msgs_per_s"),
            cell(res, f"{f}.websockets.msgs_per_s"),
            "–",
            "–",
            rtxt(ratio(res.med(f"{f}.ours.msgs_per_s"), res.med(f"{f}.websockets.msgs_per_s"), False)),
            "–",
            "–",
            "–",
        )
        parts.append(
            f"flood: events per `poll()` {num(res.med(f'{f}.ours.events_per_poll'))} (the consumer is woken once per "
            f"batch), coalesced {num(res.med(f'{f}.ours.coalesced'))}"
        )
    check = "\n".join(f"- {x}" for x in parts)
    return t.md() + "\n\nServer check (is the server the bottleneck?):\n\n" + check


def section_rtt(res: Results, targets: list) -> str:
    t = Table(
        [
            "round trip",
            "ours",
            "python-websockets",
            "websocket-client",
            "requests",
            "httpx",
            "ratio vs best Python",
            "target",
            "status",
        ]
    )
    w = "stream.ws_rtt"
    for q in ("p50", "p99"):
        o = res.med(f"{w}.ours.{q}_ms")
        rw = ratio(o, res.med(f"{w}.websockets.{q}_ms"), True)
        ok = None
        tgt = "–"
        if q == "p50":
            ok = None if rw is None else rw >= 1.0
            tgt = "≤ websockets (10 ms apart)"
            targets.append(("WebSocket RTT p50", rw, ok))
        best = min(
            filter(None, [res.med(f"{w}.websockets.{q}_ms"), res.med(f"{w}.websocket-client.{q}_ms")]), default=None
        )
        t.add(
            f"WebSocket ping→pong {q} ms (10 ms apart)",
            cell(res, f"{w}.ours.{q}_ms"),
            cell(res, f"{w}.websockets.{q}_ms"),
            cell(res, f"{w}.websocket-client.{q}_ms"),
            "–",
            "–",
            rtxt(ratio(o, best, True)),
            tgt,
            verdict(ok),
        )
    for q in ("p50", "p99"):
        t.add(
            f"WebSocket ping→pong {q} ms, websockets back to back",
            "–",
            cell(res, f"{w}.websockets_b2b.{q}_ms"),
            "–",
            "–",
            "–",
            rtxt(ratio(res.med(f"{w}.ours.{q}_ms"), res.med(f"{w}.websockets_b2b.{q}_ms"), True)),
            "–",
            "–",
        )
    h = "stream.http_rtt"
    for q in ("p50", "p99"):
        o = res.med(f"{h}.ours.{q}_ms")
        best = min(filter(None, [res.med(f"{h}.requests.{q}_ms"), res.med(f"{h}.httpx.{q}_ms")]), default=None)
        t.add(
            f"HTTP `GET /queue` {q} ms",
            cell(res, f"{h}.ours.{q}_ms"),
            "–",
            "–",
            cell(res, f"{h}.requests.{q}_ms"),
            cell(res, f"{h}.httpx.{q}_ms"),
            rtxt(ratio(o, best, True)),
            "–",
            "–",
        )
    t.add(
        "HTTP `GET /queue` p50 ms inside the hub (Rust, `snapshot()` http_latency)",
        cell(res, f"{h}.ours.inner_p50_ms"),
        "–",
        "–",
        "–",
        "–",
        "–",
        "–",
        "–",
    )
    return t.md()


def section_python(res: Results, targets: list) -> str:
    t = Table(["what", "ours", "Python reference", "ratio", "target", "status"])
    for n in ("1000", "10000"):
        o = res.med(f"pyside.poll.{n}.ms")
        if o is None:
            continue
        ok = None
        tgt = "–"
        if n == "1000":
            ok, tgt = o < 1.0, "< 1 ms"
            targets.append(("poll() of 1 000 events", o, ok))
        t.add(
            f"`poll()` taking {int(n):,} waiting events → Python objects, ms",
            cell(res, f"pyside.poll.{n}.ms"),
            f"{cell(res, f'pyside.poll.json_loads_{n}.ms')} (`json.loads` × {int(n):,})",
            rtxt(ratio(o, res.med(f"pyside.poll.json_loads_{n}.ms"), True)),
            tgt,
            verdict(ok),
        )
    p99 = res.med("pyside.stalled.submit_p99_ms")
    ok = None if p99 is None else p99 < 1.0
    targets.append(("submit() p99, server stalled", p99, ok))
    t.add("`submit()` p50 ms, server stalled", cell(res, "pyside.stalled.submit_p50_ms"), "–", "–", "–", "–")
    t.add(
        "`submit()` p99 ms, server stalled", cell(res, "pyside.stalled.submit_p99_ms"), "–", "–", "< 1 ms", verdict(ok)
    )
    t.add("`submit()` max ms, server stalled", cell(res, "pyside.stalled.submit_max_ms"), "–", "–", "–", "–")
    t.add(
        f"`snapshot()` p50 ms with {num(res.med('pyside.stalled.snapshot_jobs'))} tracked jobs",
        cell(res, "pyside.stalled.snapshot_p50_ms"),
        "–",
        "–",
        "–",
        "–",
    )
    t.add("`snapshot()` p99 ms, same", cell(res, "pyside.stalled.snapshot_p99_ms"), "–", "–", "–", "–")
    imp = res.med("pyside.import.director_link.ms")
    ok = None if imp is None else imp < 50
    targets.append(("import director_link", imp, ok))
    for lib, mod in (
        ("websockets", "websockets.asyncio.client"),
        ("websocket-client", "websocket"),
        ("requests", "requests"),
        ("httpx", "httpx"),
    ):
        t.add(
            f"`import director_link` ms vs `import {mod}`",
            cell(res, "pyside.import.director_link.ms"),
            cell(res, f"pyside.import.{lib}.ms"),
            rtxt(ratio(imp, res.med(f"pyside.import.{lib}.ms"), True)),
            "< 50 ms",
            verdict(ok),
        )
    for who, label in (
        ("hub_owner.tick", "`hub_owner.tick()`"),
        ("bridge.timer_callback", "`bridge.timer_callback()` (headless Blender)"),
    ):
        if res.get(f"addon.{who}.idle.median_us") is None:
            continue
        idle = res.med(f"addon.{who}.idle.median_us")
        ok = None if idle is None else idle < 200
        targets.append((f"idle timer tick {who}", idle, ok))
        t.add(f"{label} idle, µs (median)", cell(res, f"addon.{who}.idle.median_us"), "–", "–", "< 200 µs", verdict(ok))
        t.add(f"{label} idle, µs (p99)", cell(res, f"addon.{who}.idle.p99_us"), "–", "–", "–", "–")
        t.add(
            f"{label} idle + `snapshot()` refresh (every 2 s), µs",
            cell(res, f"addon.{who}.idle+snapshot.median_us"),
            "–",
            "–",
            "–",
            "–",
        )
        t.add(
            f"{label} with {num(res.med(f'addon.{who}.busy.events_per_tick'))} events pending, µs",
            cell(res, f"addon.{who}.busy.median_us"),
            "–",
            "–",
            "–",
            "–",
        )
    shots = "addon.bridge.timer_callback.100 shots in flight.median_us"
    if res.get(shots) is not None:
        tick = res.med(shots)
        ok = None if tick is None else tick < 1000
        targets.append(("timer tick with 100 shots in flight (issue #14: < 1 ms)", tick, ok))
        t.add(
            "`bridge.timer_callback()` with 100 shots in flight, µs (median)",
            cell(res, shots),
            "–",
            "–",
            "< 1 ms",
            verdict(ok),
        )
        t.add(
            "Generate All of 100 shots returns after, ms",
            cell(res, "addon.bridge.timer_callback.generate_all_100_ms"),
            "–",
            "–",
            "–",
            "–",
        )
    return t.md()


def section_scale(res: Results, targets: list, cap: int) -> str:
    out = []
    t = Table(
        [
            "concurrent jobs",
            "messages / s while streaming",
            "vs 1 job",
            "messages / s end to end",
            "finish tail s",
            "client CPU µs / message",
            "typed events",
            "peak RSS MiB",
        ]
    )
    base = res.med("scale_jobs.1.stream_msgs_per_s")
    worst = None
    for k in ("1", "10", "100", "1000"):
        m = res.med(f"scale_jobs.{k}.stream_msgs_per_s")
        if m is None:
            continue
        r = ratio(m, base, False)
        if k in ("10", "100") and r is not None:
            worst = r if worst is None else min(worst, r)
        t.add(
            k,
            cell(res, f"scale_jobs.{k}.stream_msgs_per_s"),
            rtxt(r),
            cell(res, f"scale_jobs.{k}.msgs_per_s"),
            cell(res, f"scale_jobs.{k}.finish_tail_s"),
            cell(res, f"scale_jobs.{k}.cpu_us_per_msg"),
            num(res.med(f"scale_jobs.{k}.typed_events")),
            cell(res, f"scale_jobs.{k}.peak_rss_mib"),
        )
    ok = None if worst is None else worst >= 0.8
    targets.append(("throughput flat 1→100 jobs (worst of 10/100 vs 1)", worst, ok))
    out.append(t.md())
    out.append(
        f"\nTarget: throughput flat within 20 % from 1 to 100 concurrent jobs — while streaming, the worst of "
        f"10 and 100 jobs is {rtxt(worst)} of 1 job: {verdict(ok)}. 'While streaming' is first event → the "
        "last step's event; 'end to end' adds the finish tail (each job's `execution_success` → "
        "`GET /history` → manifest → `JobCompleted`, many at once at the end of an interleaved batch).\n"
    )
    t = Table(
        [
            "services",
            "messages / s while streaming (all services)",
            "vs 1 service",
            "messages / s end to end",
            "client CPU µs / message",
            "peak RSS MiB",
        ]
    )
    base = res.med("scale_services.1.stream_msgs_per_s")
    for s in ("1", "2", "4", "8"):
        m = res.med(f"scale_services.{s}.stream_msgs_per_s")
        if m is None:
            continue
        t.add(
            s,
            cell(res, f"scale_services.{s}.stream_msgs_per_s"),
            rtxt(ratio(m, base, False)),
            cell(res, f"scale_services.{s}.msgs_per_s"),
            cell(res, f"scale_services.{s}.cpu_us_per_msg"),
            cell(res, f"scale_services.{s}.peak_rss_mib"),
        )
    out.append(t.md())
    t = Table(["memory", "ours", "target", "status"])
    svc = res.med("scale_memory.kib_per_idle_service")
    ok = None if svc is None else svc < 1024
    targets.append(("memory per idle service", svc, ok))
    t.add(
        f"RSS per idle connected service, KiB ({num(res.med('scale_memory.idle_services'))} services)",
        cell(res, "scale_memory.kib_per_idle_service"),
        "< 1 MB",
        verdict(ok),
    )
    t.add(
        f"RSS per live tracked job, KiB ({num(res.med('scale_memory.live_jobs'))} jobs, server stalled)",
        cell(res, "scale_memory.kib_per_live_job"),
        "linear in live jobs",
        "–",
    )
    fin = res.raw.get("scale_finished", [{}])[0]
    if fin:
        known = fin.get("jobs_known_end")
        grow = fin["rss_end_mib"] - fin["rss_at_cap_mib"]
        ok = known is not None and known <= cap and not fin.get("first_job_known")
        ok = ok and grow < 0.25 * fin["rss_at_cap_mib"]
        targets.append(("finished jobs bounded", grow, ok))
        t.add(
            f"{fin['finished']:,} jobs finished: jobs the hub still knows at the end",
            num(known),
            f"≤ cap ({cap})",
            verdict(known is not None and known <= cap),
        )
        t.add("the first job: `hub.job(id)` is None", str(not fin.get("first_job_known")), "dropped", "–")
        t.add(
            f"RSS MiB after {fin['rss_at_cap_finished']:,} finished → after {fin['finished']:,}",
            f"{num(fin['rss_at_cap_mib'])} → {num(fin['rss_end_mib'])} ({grow:+.1f})",
            "bounded",
            verdict(ok),
        )
    soak = res.raw.get("scale_soak", [{}])[0]
    if soak:
        slope = soak.get("slope_mib_per_min")
        grow = soak.get("growth_q2_to_q4_mib")
        q2 = soak.get("rss_q2_median_mib") or 0.0
        ok = grow is not None and grow < max(2.0, 0.05 * q2)
        targets.append(("RSS flat over the mixed run (growth 2nd → 4th quarter, MiB)", grow, ok))
        t.add(
            f"mixed run {soak['seconds']:.0f} s ({soak['jobs']:,} jobs, {soak['events']:,} events): RSS MiB "
            "start / min after warm-up / max / end",
            f"{num(soak['rss_start_mib'])} / {num(soak['rss_warm_min_mib'])} / {num(soak['rss_max_mib'])} / "
            f"{num(soak['rss_end_mib'])}",
            "flat",
            "–",
        )
        t.add(
            "mixed run: median RSS of the 2nd quarter → of the last quarter, MiB",
            f"{num(q2)} → {num(soak.get('rss_q4_median_mib'))} ({grow:+.2f})" if grow is not None else "–",
            "growth < 5 % (or < 2 MiB)",
            verdict(ok),
        )
        t.add("mixed run: least-squares RSS slope after the first quarter, MiB / min", num(slope), "–", "–")
    out.append("\n" + t.md())
    if fin:
        out.append(
            "\nRSS while finished jobs pile up (finished: MiB): "
            + ", ".join(
                f"{s['finished']:,}: {s['rss_mib']:.0f}" for s in fin["samples"][:: max(1, len(fin["samples"]) // 10)]
            )
        )
    if soak:
        out.append(
            "\nMixed-run RSS samples (s: MiB): "
            + ", ".join(f"{s['t_s']:.0f}: {s['rss_mib']:.0f}" for s in soak["samples"])
        )
    return "\n".join(out)


def section_discovery(res: Results, targets: list) -> str:
    t = Table(["scan", "median s", "min s", "max s", "mean s", "found", "target", "status"])
    for key, label in (
        ("nothing_127.0.0.9", "nothing listening (127.0.0.9, all 16 known ports)"),
        ("as_is_127.0.0.1", "127.0.0.1 as this machine has it"),
        ("up", "servers up (127.0.0.9 bare + the simulator's host:port)"),
    ):
        r = res.raw.get("discovery", [{}])[0].get(key)
        if not r:
            continue
        ok = r["max_s"] < 5 and r["mean_s"] < 3
        targets.append((f"discovery {key}", r["max_s"], ok))
        t.add(
            label,
            num(r["median_s"]),
            num(r["min_s"]),
            num(r["max_s"]),
            num(r["mean_s"]),
            ", ".join(r["found"]) or "nothing",
            "< 5 s, mean < 3 s",
            verdict(ok),
        )
    return t.md()


def pool_intro(res: Results) -> str:
    return (
        f"bench/bench_pool.py: {res.raw.get('pool', [{}])[0].get('jobs', '–')} jobs of 1, 2, 4 or 8 node-seconds "
        "(`AcceptanceSlow`) over 4 ComfyUI simulators of nominal speeds 20, 13, 10 and 7 node-seconds per second, "
        "all submitted at once. Each server's real speed (its own per-job overhead included) is measured first "
        "(6 jobs queued on each alone); ideal = total work / the sum of those speeds, efficiency = ideal / "
        "makespan. Round-robin: the same jobs to the same servers as 4 plain services, job i to server i mod 4. "
        "Failover: a fresh pool with `resubmit_running=True`; the second-fastest server is closed at 40 % of the "
        "ideal; its ideal is the ideal up to the kill, then the rest of the work over the servers left. One run."
    )


def section_pool(res: Results, targets: list) -> str:
    r = res.raw.get("pool", [{}])[0]
    if not r.get("pool"):
        return "(not run)"
    pool, rr, fo = r["pool"], r["round_robin"], r["failover"]
    n = r["jobs"]
    # The targets are about 1 000 jobs: smaller runs (--smoke) show the numbers without a verdict.
    full = n >= 1000
    t = Table(["run", "makespan s", "ideal s", "efficiency", "completed", "target", "status"])
    ok = pool["efficiency"] >= 0.9 if full else None
    targets.append((f"pool: makespan efficiency, {n} jobs over {r['servers']} servers", pool["efficiency"], ok))
    t.add(
        f"pool (capacity 2), jobs per server {pool['jobs_per_server']}",
        num(pool["makespan_s"]),
        num(pool["ideal_s"]),
        num(pool["efficiency"]),
        f"{pool['completed']} / {n}",
        "≥ 0.9",
        verdict(ok),
    )
    t.add(
        "round-robin over the same servers",
        num(rr["makespan_s"]),
        num(rr["ideal_s"]),
        num(rr["efficiency"]),
        f"{rr['completed']} / {n}",
        "–",
        f"pool {num(r['pool_vs_round_robin'])}× faster",
    )
    lost_ok = fo["lost"] == 0 and fo["posted_twice"] == 0 and pool["posted_twice"] == 0
    targets.append(("pool: jobs lost when a server is killed mid-batch", fo["lost"], lost_ok))
    t.add(
        f"failover: server 2 killed at {num(fo['killed_at_s'])} s; {fo['moved']} queued moved, "
        f"{fo['resubmitted_running']} running resubmitted",
        num(fo["makespan_s"]),
        num(fo["ideal_s"]),
        num(fo["efficiency"]),
        f"{fo['completed']} / {n}",
        "lost 0, no prompt id posted twice",
        verdict(lost_ok),
    )
    return t.md()


def section_coverage(res: Results, targets: list) -> str:
    cov = res.raw.get("coverage", [None])[0]
    if not cov:
        return (
            "Not measured in this run (it is slow): `python3 bench/run_all.py --coverage`, or "
            "`python3 bench/bench_coverage.py` alone."
        )
    t = Table(["code", "lines", "covered", "line coverage", "target", "status"])
    rust = cov.get("rust", {})
    if "error" in rust:
        t.add("Rust", "–", "–", f"not measured: {rust['error']}", "> 90 % of the core", "–")
    elif rust:
        for key, label in (("core", "Rust core (src/ without the simulator src/sim)"), ("all", "Rust, all of src/")):
            r = rust[key]
            ok = r["percent"] > 90 if key == "core" else None
            if key == "core":
                targets.append(("Rust core line coverage", r["percent"], ok))
            t.add(
                label,
                f"{r['lines']:,}",
                f"{r['covered']:,}",
                f"{r['percent']:.1f} %",
                "> 90 %" if key == "core" else "–",
                verdict(ok),
            )
    py = cov.get("python", {})
    if "error" in py:
        t.add("Python package", "–", "–", f"not measured: {py['error']}", "–", "–")
    elif py:
        ok = py["percent"] >= 85
        targets.append(("Python package line coverage", py["percent"], ok))
        t.add(
            "Python package (director_link)",
            f"{py['lines']:,}",
            f"{py['covered']:,}",
            f"{py['percent']:.1f} %",
            "≥ 85 %",
            verdict(ok),
        )
    notes = []
    if rust and "per_dir" in rust:
        notes.append(
            "Rust by folder: "
            + ", ".join(f"{d} {v['percent']:.0f} % of {v['lines']:,}" for d, v in sorted(rust["per_dir"].items()))
        )
        notes.append(
            f"Rust profiles: `cargo test` ({rust['tests_passed']} passed, {rust['tests_failed']} failed)"
            + (
                " merged with the pytest suite run on an instrumented build of the extension"
                if rust.get("with_pytest")
                else ""
            )
            + f"; tools: Debian llvm-{rust['llvm']} (rustc's LLVM major version), `llvm-cov export`."
        )
    for label, part in (("Rust", rust), ("Python", py)):
        if part and part.get("lowest"):
            notes.append(
                f"{label}, the files with the most uncovered lines: "
                + ", ".join(
                    f"`{f['file']}` {f['percent']:.0f} % ({f['lines'] - f['covered']} of {f['lines']})"
                    for f in [f for f in part["lowest"] if f["covered"] < f["lines"]][:8]
                )
            )
    if py and "pytest" in py:
        notes.append(f"pytest under coverage.py: {py['pytest']}")
    if cov.get("recorded"):
        notes.append(f"Recorded separately (`--coverage-json`): {cov['recorded']}.")
    return t.md() + ("\n\n" + "\n\n".join(notes) if notes else "")


def section_studio(res: Results, targets: list) -> str:
    r = res.raw.get("studio", [{}])[0]
    ours, base = r.get("ours", {}), r.get("baseline", {})
    if not ours:
        return "(not run)"
    cores = r.get("cpu_count")

    def g(side: dict, *path):
        v = side
        for k in path:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return v

    def cnt(v) -> str:
        return "–" if v is None else f"{int(v):,}"

    t = Table(["measure", "ours", "baseline", "ratio", "target", "status"])
    big = ours.get("fanout_10k", {})
    n_big, jobs_big = big.get("connections"), big.get("jobs")
    held, bheld = g(ours, "fanout_10k", "held"), g(base, "fanout_10k", "held")
    # The targets are about 10 000 connections: smaller runs (--smoke) show the numbers without a verdict.
    ok = None if held is None or n_big < 10_000 else held == n_big
    targets.append((f"studio: {num(n_big)} connections held on {cores} cores", held, ok))
    t.add(
        f"connections held ({cnt(n_big)} over {cnt(jobs_big)} jobs, one load-generator process)",
        cnt(held),
        cnt(bheld),
        rtxt(ratio(held, bheld, False)),
        f"10,000 on {cores} cores",
        verdict(ok),
    )
    kib, bkib = (
        g(ours, "fanout_10k", "server_rss_kib_per_idle_connection"),
        g(base, "fanout_10k", "server_rss_kib_per_idle_connection"),
    )
    ok = None if kib is None or (held or 0) < 1000 else kib <= 16
    targets.append(("studio: server RSS per idle connection, KiB", kib, ok))
    t.add(
        f"server RSS per idle connection, KiB (at {cnt(held)})",
        num(kib),
        num(bkib),
        rtxt(ratio(kib, bkib, True)),
        "≤ 16 KiB",
        verdict(ok),
    )
    own = g(ours, "own_state_bytes", "job")
    ok = None if own is None else own <= 1024
    targets.append(("studio: own state per connection, bytes", own, ok))
    t.add("our own state per `/ws/{job_id}` connection, bytes (`/metrics`)", num(own), "–", "–", "≤ 1 KiB", verdict(ok))
    for q in ("p50", "p99"):
        t.add(
            f"handshake {q}, ms (TCP connect → `connection` message, 64 at once, {cnt(n_big)} connections)",
            num(g(ours, "fanout_10k", f"handshake_ms_{q}")),
            num(g(base, "fanout_10k", f"handshake_ms_{q}")),
            rtxt(ratio(g(ours, "fanout_10k", f"handshake_ms_{q}"), g(base, "fanout_10k", f"handshake_ms_{q}"), True)),
            "< 50 ms (the brief's claim)" if q == "p50" else "–",
            verdict(
                None
                if g(ours, "fanout_10k", f"handshake_ms_{q}") is None
                else g(ours, "fanout_10k", f"handshake_ms_{q}") < 50
            )
            if q == "p50"
            else "–",
        )
    worst_ratio = None
    for key in ("fanout_1k", "fanout_10k", "fanout_one_job"):
        o, b = ours.get(key, {}), base.get(key, {})
        if not o:
            continue
        label = f"{cnt(o.get('held'))} subscribers over {cnt(o.get('jobs'))} job" + ("s" if o.get("jobs") != 1 else "")
        for q in ("p50", "p99"):
            v, bv = o.get(f"delivery_ms_{q}"), b.get(f"delivery_ms_{q}")
            target, st = "–", "–"
            if key == "fanout_1k" and q == "p99":
                ok = None if v is None else v <= 5
                targets.append(("studio: publish → delivery p99 at 1 000 subscribers, ms", v, ok))
                target, st = "≤ 5 ms", verdict(ok)
            t.add(f"publish → delivery {q}, ms ({label}, paced)", num(v), num(bv), rtxt(ratio(v, bv, True)), target, st)
        v, bv = o.get("deliveries_per_s"), b.get("deliveries_per_s")
        rr = ratio(v, bv, False)
        ok = None if rr is None else rr >= 10
        if rr is not None:
            worst_ratio = rr if worst_ratio is None else min(worst_ratio, rr)
        t.add(
            f"deliveries / s ({label}, flood: 4 producers; delivered / expected ours "
            f"{cnt(o.get('flood_deliveries'))} / {cnt(o.get('flood_deliveries_expected'))}, baseline "
            f"{cnt(b.get('flood_deliveries'))} / {cnt(b.get('flood_deliveries_expected'))})",
            num(v),
            num(bv),
            rtxt(rr),
            "≥ 10× baseline",
            verdict(ok),
        )
        u, bu = o.get("updates_per_s"), b.get("updates_per_s")
        if u is not None:
            # Not the target's measure: it counts a progress that a newer one replaced (latest wins) as brought
            # through, so it shows how fast every subscriber reaches the newest state when ours coalesces.
            t.add(
                f"subscriber updates / s ({label}, flood: expected deliveries / the same time; a coalesced progress "
                f"counts as brought through by the newer one that replaced it; finals ours {cnt(o.get('finals'))}, "
                f"baseline {cnt(b.get('finals'))})",
                num(u),
                num(bu),
                rtxt(ratio(u, bu, False)),
                "–",
                "–",
            )
    targets.append(
        (
            "studio: deliveries / s vs baseline (worst of the three fan-outs)",
            worst_ratio,
            None if worst_ratio is None else worst_ratio >= 10,
        )
    )
    so, sb = ours.get("storm", {}), base.get("storm", {})
    if so:
        ok = so.get("gaps") == 0 and so.get("out_of_order") == 0 and so.get("reconnect_errors") == 0
        targets.append(("studio: gaps after the reconnect storm", so.get("gaps"), ok))
        t.add(
            f"reconnect storm: {cnt(so.get('clients'))} clients drop at once, their jobs move on and finish, all "
            "reconnect at once — clients with a gap (missed the latest progress or the final state, or "
            "not `recovered`)",
            cnt(so.get("gaps")),
            cnt(sb.get("gaps")) + " (no resume)",
            "–",
            "0",
            verdict(ok),
        )
        t.add(
            "reconnect storm: s until every client is back / has recovered everything it missed",
            f"{num(so.get('reconnected_s'))} / {num(so.get('recovery_s'))}",
            f"{num(sb.get('reconnected_s'))} / never",
            rtxt(ratio(so.get("reconnected_s"), sb.get("reconnected_s"), True)),
            "–",
            "–",
        )
    t.add(
        "server CPU over the whole run, s",
        num(ours.get("server_cpu_s")),
        num(base.get("server_cpu_s")),
        "–",
        "–",
        "–",
    )
    out = [t.md()]

    def soak_stats(soak: dict) -> dict:
        smp = soak["samples"]
        q = max(1, len(smp) // 4)
        rss = [x["rss_kib"] / 1024 for x in smp]
        second = statistics.median(rss[q : 2 * q]) if len(rss) >= 4 else rss[0]
        last = statistics.median(rss[3 * q :]) if len(rss) >= 4 else rss[-1]
        fds = [x["fds"] for x in smp]
        return {
            "second": second,
            "last": last,
            "grow": last - second,
            "fds": fds,
            "thr": [x["threads"] for x in smp],
            "conns": [x["connections"] for x in smp if x.get("connections") is not None],
            "after": soak.get("after_close", {}),
        }

    soak, bsoak = ours.get("soak"), base.get("soak")
    if soak and soak.get("samples"):
        st = soak_stats(soak)
        bst = soak_stats(bsoak) if bsoak and bsoak.get("samples") else None
        grow, fds = st["grow"], st["fds"]
        flat = grow < max(2.0, 0.05 * st["second"]) and max(fds) - min(fds) <= 5
        ok = flat and soak.get("finals") == soak.get("held")
        targets.append(("studio: soak flat (RSS growth 2nd → 4th quarter, MiB)", grow, ok))

        def side(x: dict | None, f) -> str:
            return "–" if x is None else f(x)

        s = Table(["soak", "ours", "baseline", "target", "status"])
        s.add(
            f"{soak['seconds']:.0f} s, {cnt(soak['held'])} connections on {cnt(soak['jobs'])} jobs, "
            f"{cnt(soak['posts'])} posts, {cnt(soak['delivered'])} deliveries (baseline "
            f"{side(bsoak, lambda b: cnt(b.get('posts')))} posts, {side(bsoak, lambda b: cnt(b.get('delivered')))}): "
            "RSS MiB 2nd quarter → last",
            f"{num(st['second'])} → {num(st['last'])} ({grow:+.2f})",
            side(bst, lambda b: f"{num(b['second'])} → {num(b['last'])} ({b['grow']:+.2f})"),
            "flat (< 5 % or 2 MiB)",
            verdict(ok),
        )
        s.add(
            "open files min / max during the soak",
            f"{num(min(fds))} / {num(max(fds))}",
            side(bst, lambda b: f"{num(min(b['fds']))} / {num(max(b['fds']))}"),
            "flat",
            "–",
        )
        s.add(
            "threads min / max",
            f"{num(min(st['thr']))} / {num(max(st['thr']))}",
            side(bst, lambda b: f"{num(min(b['thr']))} / {num(max(b['thr']))}"),
            "flat",
            "–",
        )
        if st["conns"]:
            s.add(
                "connections (tasks) the server counts, min / max",
                f"{num(min(st['conns']))} / {num(max(st['conns']))}",
                side(bst, lambda b: f"{num(min(b['conns']))} / {num(max(b['conns']))}" if b["conns"] else "–"),
                "flat",
                "–",
            )

        def after_txt(a: dict) -> str:
            return f"{num(a.get('rss_kib', 0) / 1024)} / {num(a.get('fds'))} / {num(a.get('connections'))}"

        after = st["after"]
        s.add(
            "after every client closed: RSS MiB / open files / connections",
            after_txt(after),
            side(bst, lambda b: after_txt(b["after"])),
            "connections 0",
            verdict(after.get("connections") == 0) if after.get("connections") is not None else "–",
        )
        out.append("\n" + s.md())
        for name, x in (("ours", soak), ("baseline", bsoak)):
            if x and x.get("samples"):
                out.append(
                    f"\nSoak samples, {name} (s: RSS MiB / open files): "
                    + ", ".join(f"{y['t_s']:.0f}: {y['rss_kib'] / 1024:.0f} / {y['fds']:.0f}" for y in x["samples"])
                )
    return "\n".join(out)


STUDIO_INTRO = (
    "`director-link serve --database memory` (ours) and the product brief's FastAPI `ConnectionManager` "
    "(bench/studio_baseline.py: a dict job id → list of WebSockets, a progress update broadcast by awaiting "
    "each `send_text` in turn; uvicorn with uvloop, httptools and websockets, in a venv of its own), each in a "
    "process of its own, driven by the same load generator (bench/studio_load, Rust, tokio-tungstenite, "
    "another process) with the same jobs and events: subscribers on the brief's `WS /ws/{job_id}`, an external "
    "producer `POST /api/jobs/{id}/progress` carrying a sequence number whose send instant the load generator "
    "keeps (publish → delivery on one clock). Paced: one POST at a time, each round's deliveries waited for. "
    "Flood: 4 producers at once as fast as the server answers, then `completed` for every job; deliveries / s "
    "= messages the subscribers received / (first flood POST → the last subscriber's `completed`); ours "
    "may coalesce a slow subscriber's waiting progress (latest wins), so its delivered count is shown. RSS "
    "is the server process's (`/proc`), idle connections after 2 s of quiet. The storm reconnects ours through "
    "`/ws/events?jobs=J&since=OFFSET&epoch=E`; the baseline has no resume, so its clients miss whatever "
    "happened while they were away. One run (no median)."
)


BROWSER_INTRO = (
    "bench/bench_browser.py (bench/browser/): in headless Chromium (Debian's, driven by playwright-core) against a "
    "real `director-link serve --database memory` (a fresh one per page), the same table of jobs built two ways: on "
    "our hooks as the monitor uses them (`WebSocketProvider`, `useJobIndex`, `useJob`, `useProgressTracking`, rows "
    "memoized) and on react-use-websocket 4.13 the way its README shows (`useWebSocket(url).lastMessage` folded "
    "into state by an effect, rows memoized). External producers `POST /api/jobs/{id}/progress` round robin over "
    "the jobs still running, in 10 ms ticks; the jobs end one after another through the burst (job j gets a share "
    "of the updates growing with j), each with `completed` right after its last progress. React commits are "
    "counted through the devtools hook React calls in production builds, component renders in the components; "
    "main-thread time is CDP `Performance.getMetrics` `TaskDuration` in thread time over the burst's wall time; the "
    "heap is `JSHeapUsedSize` after a forced GC. A job the page still shows 'running' after the burst is a terminal "
    "event it missed. The floor is a page with a bare WebSocket that only counts messages: what receiving the "
    "burst costs any page."
)


def section_browser(res: Results, targets: list) -> str:
    r = res.raw.get("browser", [{}])[0]
    ours, base, floor = r.get("ours", {}), r.get("baseline", {}), r.get("floor", {})
    if not ours:
        return "(not run)"
    cfg = r.get("config", {})
    runs = ours.get("runs")

    def v(side: dict, key: str, scale: float = 1.0) -> str:
        m = side.get(key)
        if m is None:
            return "–"
        lo, hi = side.get(f"{key}_min", m), side.get(f"{key}_max", m)
        if lo == hi:
            return num(m * scale)
        return f"{num(m * scale)} ({num(lo * scale)}–{num(hi * scale)})"

    t = Table(["measure", "ours", "react-use-websocket", "ratio", "floor (bare socket)", "target", "status"])
    commits = ours.get("commits_per_second")
    ok = None if commits is None else commits <= 60
    targets.append(("browser: React commits / s under the burst", commits, ok))
    t.add(
        "React commits / s during the burst",
        v(ours, "commits_per_second"),
        v(base, "commits_per_second"),
        rtxt(ratio(commits, base.get("commits_per_second"), True)),
        "–",
        "≤ 60 / s",
        verdict(ok),
    )
    t.add(
        "component renders / s (the table and its rows)",
        v(ours, "component_renders_per_second"),
        v(base, "component_renders_per_second"),
        rtxt(ratio(ours.get("component_renders_per_second"), base.get("component_renders_per_second"), True)),
        "–",
        "–",
        "–",
    )
    t.add(
        "React commits per message received",
        v(ours, "commits_per_frame"),
        v(base, "commits_per_frame"),
        rtxt(ratio(ours.get("commits_per_frame"), base.get("commits_per_frame"), True)),
        "–",
        "–",
        "–",
    )
    busy = ours.get("main_thread_busy")
    ok = None if busy is None else busy <= 0.10
    targets.append(("browser: main thread busy under the burst, %", None if busy is None else busy * 100, ok))
    t.add(
        "main thread busy, % of the burst's wall time (CDP `TaskDuration`, thread time)",
        v(ours, "main_thread_busy", 100),
        v(base, "main_thread_busy", 100),
        rtxt(ratio(busy, base.get("main_thread_busy"), True)),
        v(floor, "main_thread_busy", 100),
        "≤ 10 %",
        verdict(ok),
    )
    t.add(
        "… of which script, %",
        v(ours, "script_busy", 100),
        v(base, "script_busy", 100),
        rtxt(ratio(ours.get("script_busy"), base.get("script_busy"), True)),
        v(floor, "script_busy", 100),
        "–",
        "–",
    )
    t.add(
        "… of which style and layout, %",
        v(ours, "layout_busy", 100),
        v(base, "layout_busy", 100),
        rtxt(ratio(ours.get("layout_busy"), base.get("layout_busy"), True)),
        v(floor, "layout_busy", 100),
        "–",
        "–",
    )
    t.add(
        "… the rest (event dispatch, paint, frame commits), %",
        v(ours, "other_busy", 100),
        v(base, "other_busy", 100),
        rtxt(ratio(ours.get("other_busy"), base.get("other_busy"), True)),
        v(floor, "other_busy", 100),
        "–",
        "–",
    )
    t.add(
        "renderer process CPU (all its threads), % of one core",
        v(ours, "renderer_cpu", 100),
        v(base, "renderer_cpu", 100),
        rtxt(ratio(ours.get("renderer_cpu"), base.get("renderer_cpu"), True)),
        v(floor, "renderer_cpu", 100),
        "–",
        "–",
    )
    t.add(
        "messages the page's logic saw per message received (ours: every stream message, a job's progress "
        "superseded by its end in the same frame aside; baseline: each `lastMessage` its effect saw)",
        v(ours, "handled_per_frame"),
        v(base, "handled_per_frame"),
        "–",
        "–",
        "–",
        "–",
    )
    s_ours, s_base = r.get("stalled_ours", {}), r.get("stalled_baseline", {})

    def missed_in(steady: dict, stalled: dict) -> float | None:
        m = steady.get("terminals_missed_total")
        return None if m is None else m + (stalled.get("terminals_missed_total") or 0)

    missed, bmissed = missed_in(ours, s_ours), missed_in(base, s_base)
    sent = (ours.get("terminals_sent_total") or 0) + (s_ours.get("terminals_sent_total") or 0)
    ok = None if missed is None else missed == 0
    targets.append(("browser: terminal events missed (steady and stalled)", missed, ok))
    t.add(
        f"terminal events missed (jobs left 'running' on the page), of {sent} sent to each page, steady + stalled",
        "–" if missed is None else str(int(missed)),
        "–" if bmissed is None else str(int(bmissed)),
        "–",
        "–",
        "0",
        verdict(ok),
    )
    if s_ours:
        stall = f"{cfg.get('stall_ms')} ms every {num((cfg.get('stall_every_ms') or 0) / 1000)} s"
        t.add(
            f"stalled (main thread blocked {stall}, {cfg.get('stall_seconds')} s burst): messages the page's "
            "logic saw per message received",
            v(s_ours, "handled_per_frame"),
            v(s_base, "handled_per_frame"),
            "–",
            "–",
            "–",
            "–",
        )
        t.add(
            "stalled: React commits / s",
            v(s_ours, "commits_per_second"),
            v(s_base, "commits_per_second"),
            rtxt(ratio(s_ours.get("commits_per_second"), s_base.get("commits_per_second"), True)),
            "–",
            "–",
            "–",
        )
        t.add(
            "stalled: main thread busy, % (the stalls included)",
            v(s_ours, "main_thread_busy", 100),
            v(s_base, "main_thread_busy", 100),
            rtxt(ratio(s_ours.get("main_thread_busy"), s_base.get("main_thread_busy"), True)),
            "–",
            "–",
            "–",
        )

    def heap(side: dict) -> str:
        return f"{num(side.get('heap_before_mib'))} → {num(side.get('heap_after_mib'))}"

    t.add(
        "JS heap after a GC, MiB: before the burst → after it (median)",
        heap(ours),
        heap(base),
        rtxt(ratio(ours.get("heap_after_mib"), base.get("heap_after_mib"), True)),
        heap(floor),
        "flat (not a 10-minute run here)",
        "–",
    )
    t.add(
        "messages received by the page / progress updates / s the producers reached",
        f"{v(ours, 'frames')} / {v(ours, 'producer_rate')}",
        f"{v(base, 'frames')} / {v(base, 'producer_rate')}",
        "–",
        f"{v(floor, 'frames')} / {v(floor, 'producer_rate')}",
        f"{num(cfg.get('rate'))} / s",
        "–",
    )
    bundle = r.get("bundle", {})
    t.add(
        "the monitor page's bundle, gzip KiB (JS; JS + CSS + HTML)",
        f"{num(bundle.get('monitor_js_gzip_kib'))}; {num(bundle.get('monitor_total_gzip_kib'))}",
        "–",
        "–",
        "–",
        "–",
        "–",
    )
    notes = []
    fb, bb = floor.get("main_thread_busy"), base.get("main_thread_busy")
    if busy is not None and fb is not None and bb is not None:
        notes.append(
            f"Main thread: merely receiving the burst (the floor) keeps it {num(fb * 100)} % busy in this Chromium on "
            f"this machine; above that floor ours adds {num((busy - fb) * 100)} points, react-use-websocket "
            f"{num((bb - fb) * 100)}. Ours paints a job's progress ten times a second (`progressInterval`, 100 ms; "
            "its lifecycle on the next frame)."
        )
    frame = r.get("ours_frame", {})
    if frame.get("main_thread_busy") is not None and busy is not None:
        notes.append(
            f"The same page of ours with progress on every animation frame (`progressInterval: 0`, same runs): "
            f"{v(frame, 'commits_per_second')} commits / s, main thread {v(frame, 'main_thread_busy', 100)} % busy "
            f"(script {v(frame, 'script_busy', 100)} %, style and layout {v(frame, 'layout_busy', 100)} %, the rest "
            f"{v(frame, 'other_busy', 100)} %): the frames, more than the hooks' script, are what a burst costs."
        )
    if bmissed == 0 and base.get("handled_per_frame") == 1 and s_base.get("handled_per_frame", 1) == 1:
        notes.append(
            "react-use-websocket's `lastMessage` pattern did not skip here: its effect saw every message (1.00 per "
            "message received), steady and with the main thread blocked, so it missed no terminal event either "
            "(React rendered after each message instead of folding several into one render); its cost shows instead "
            "as one React commit or more per message."
        )
    return (
        f"{cfg.get('jobs')} jobs, {num(cfg.get('rate'))} progress updates / s over them for {cfg.get('seconds')} s, "
        f"{runs} runs per page (median (min–max)); Chromium {cfg.get('chromium')}.\n\n"
        + t.md()
        + "".join(f"\n\n{n}" for n in notes)
    )


def section_chaos_soak(path: str | None, targets: list) -> str:
    """The one-hour chaos soak is recorded separately (it takes an hour): its report is read from a file."""
    cmd = "python3 bench/chaos.py --soak 3600 --rate 20 --json-out bench/results/chaos-soak.json"
    if not path or not Path(path).exists():
        return f"Not recorded. Run `{cmd}` and pass `--chaos-soak bench/results/chaos-soak.json`."
    rep = json.loads(Path(path).read_text())
    rss = rep["rss_mib"]
    start, end = rss[0][1], rss[-1][1]
    # The first minutes are allocator and connection warm-up; flat means the second half grows < 5 %.
    half = [v for _k, v in rss[len(rss) // 2 : -1]] or [end]
    growth = (end - half[0]) / half[0] * 100 if half[0] else 0.0
    targets.append(
        (
            "one-hour soak: every job ends once, none posted twice",
            rep["jobs_without_terminal"],
            (
                rep["jobs_without_terminal"] == 0
                and rep["extra_terminal_events"] == 0
                and rep["prompts_posted_twice"] == 0
            ),
        )
    )
    targets.append(("one-hour soak: RSS growth over its second half, %", growth, growth < 5.0))
    t = Table(["what", "value"])
    t.add("recorded", f"{rep.get('recorded', '–')} by `{rep.get('command', cmd)}`")
    t.add("duration, s", num(rep["seconds"]))
    t.add("jobs submitted (jobs / s)", f"{rep['jobs_submitted']:,} ({rep['jobs_per_second']})")
    t.add("outcomes", ", ".join(f"{k} {v:,}" for k, v in sorted(rep["outcomes"].items())))
    t.add(
        "jobs without a terminal event / extra terminal events / prompts posted twice",
        f"{rep['jobs_without_terminal']} / {rep['extra_terminal_events']} / {rep['prompts_posted_twice']}",
    )
    t.add("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(rep["faults"].items())))
    t.add(
        "client RSS MiB at start / after 1 min / at half time / at the end",
        f"{start:.1f} / {rss[1][1]:.1f} / {half[0]:.1f} / {end:.1f}",
    )
    t.add("RSS growth over the second half", f"{growth:+.1f} %")
    return (
        "`bench/chaos.py` against two ComfyUI simulators in a child process (so the client's RSS is its own): "
        "jobs submitted at a steady pace, at most 200 in flight, a socket of one server dropped every 1–5 s. "
        "RSS is sampled every minute.\n\n" + t.md()
    )


def write_report(res: Results, machine: dict, args, seconds: float, cap: int) -> str:
    targets: list = []
    libs = machine["libraries"]
    body = [
        "# Benchmarks",
        "",
        f"Generated by `{' '.join(['python3', 'bench/run_all.py', *sys.argv[1:]])}` in {seconds / 60:.1f} min "
        f"({args.runs} runs per figure where it says median (min–max); one run for the finished-jobs and "
        "mixed-run rows). Every comparison is ours vs the alternative **in the same run, on the same machine, against "
        "the same server**; ratios are oriented so that **> 1× means ours is better**. Regenerate with "
        "`python3 bench/run_all.py` (add `--coverage` for section 6); see bench/README.md for how each number "
        "is taken.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cpu_count']} cores; RAM {machine['ram_gib']} GiB; "
        f"load average {machine['load_average_1m']} at the start (the machine is shared; numbers wander)",
        f"- OS: {machine['os']}; Python {machine['python']}; {machine['rustc']}",
        f"- director_link {machine['director_link']} ({machine['build']} build of the extension)",
        "- baselines: "
        + ", ".join(f"{k} {v}" for k, v in libs.items() if k != "coverage")
        + (f"; coverage.py {libs['coverage']}" if libs.get("coverage") else ""),
        "",
        "## 1. Event stream",
        "",
        "One prompt's ComfyUI-shaped stream from `bench/blast_server.py` (a separate process; each step a "
        "`progress_state` with the graph's 7 nodes, a `progress` and, in the preview workload, a binary "
        "`PREVIEW_IMAGE_WITH_METADATA` frame of 20–60 KB), timed from the first message to the prompt's end. "
        "**Ours** is the real path: `Hub` + the ComfyUI service (`GET /system_stats`, `/ws?clientId=`, "
        "`POST /prompt`, `GET /queue`, `GET /history/{id}`, manifest on disk) with `poll()` draining typed events "
        "into Python; CPU is `time.process_time()` of the whole process (the hub's Rust threads included). "
        "**Baselines** read the same stream and decode every message: `json.loads` of each text frame, header + "
        "metadata `json.loads` + image slice of each binary frame (python-websockets 'asyncio' client without "
        "compression; websocket-client with its defaults). Messages / s counts the server's frames; ours turns "
        "them into fewer typed events (`progress_state` only starts the job; `progress` → `Progress`, preview → "
        "`Preview`), shown in its own row. The issue #13 rows are the CPU target's own scenario: a stream of "
        "nothing but small `progress` messages, CPU from `submit()` to the terminal event for ours, from the POST to "
        "the prompt's end for python-websockets (`async for` + `json.loads` of each message, no per-message timeout).",
        "",
        section_stream(res, targets),
        "",
        "## 2. Round trip",
        "",
        "Same server. WebSocket: ours is the hub's heartbeat (`Hub(heartbeat=0.01)`, ping → pong timed in Rust, "
        "read from `snapshot()`), so the like-for-like baselines ping every 10 ms too (timed in Python around "
        "`await ws.ping()` / `ws.ping()` + `recv_data_frame`); the back-to-back websockets row keeps both "
        "processes hot and flatters it. HTTP: ours is what a user calls — `hub.cancel_remote(service, id)` "
        "of an id not on the server is exactly one `GET /queue`, timed in Python around the call; baselines are "
        "a keep-alive `requests.Session` / `httpx.Client` `get(...).json()`.",
        "",
        section_rtt(res, targets),
        "",
        "## 3. Python side",
        "",
        section_python(res, targets),
        "",
        "## 4. Scale curves and memory",
        "",
        "Concurrent jobs: K prompts submitted at once, streamed interleaved step by step (the same total number "
        "of steps split over K); services: S services (each its own WebSocket) streaming at once. Throughput "
        "is messages / s over the whole window (first event to the last job's end, including every job's "
        "history fetch and manifest). RSS is this client process's alone (servers run in child processes). "
        f"Finished jobs: the hub keeps the newest `Hub(finished_jobs={cap})` finished jobs for `snapshot()`, "
        "`job()` and `wait()` and forgets older ones (their files and manifests stay on disk).",
        "",
        section_scale(res, targets, cap),
        "",
        "## 5. Discovery",
        "",
        "`hub.discover(hosts)` (default options: 16 known ports per bare host, 32 probes at once, 0.3 s connect "
        "timeout), timed from Python; ComfyUI-speaking servers are `bench/blast_server.py` bound to 8188 / 8189, "
        "a plain `http.server` on 7860, and the ComfyUI simulator at its own port.",
        "",
        section_discovery(res, targets),
        "",
        "## 6. Coverage",
        "",
        section_coverage(res, targets),
        "",
        "## 7. Studio server",
        "",
        STUDIO_INTRO,
        "",
        section_studio(res, targets),
        "",
        "## 8. Browser",
        "",
        BROWSER_INTRO,
        "",
        section_browser(res, targets),
        "",
        "## 9. Pools",
        "",
        pool_intro(res),
        "",
        section_pool(res, targets),
        "",
        "## Long soak",
        "",
        section_chaos_soak(args.chaos_soak, targets),
        "",
        "## Targets",
        "",
    ]
    t = Table(["target", "value", "status"])
    for name, value, ok in targets:
        t.add(name, num(value) if isinstance(value, (int, float)) else "–", verdict(ok))
    body.append(t.md())
    missed = [n for n, _v, ok in targets if ok is False]
    limits = {
        "stream previews: cpu": "preview CPU per message: `perf` shows most of our per-preview CPU on the Python "
        "thread, copying each 20–60 KB image into a new `bytes` object for the `Preview` event (and the page "
        "faults of those fresh allocations); the Rust side (frame read, header + metadata parse) is the smaller "
        "part. A Python client pays the same copy (the baseline slices the image out of the frame), so the "
        "ratio is bounded by memcpy, not by parsing. Handing out a zero-copy buffer instead of `bytes` would "
        "change the event's type, so it is not done here.",
        "stream previews: msgs": "preview messages / s: bounded by the same per-preview copy into Python `bytes` "
        "(see the CPU row).",
        "throughput flat": "throughput vs concurrent jobs: one run of this row moves by ±30 % on this shared "
        "2-core machine (the median of the runs is shown); per job, the hub adds a `JobStarted` / `NodeStarted` "
        "and, at the end, a `GET /history` and a manifest write, which the 'end to end' column shows growing "
        "with 1 000 jobs.",
        "RSS flat": "RSS over the mixed run: see the samples above; allocator growth in the first minutes settles.",
        "Rust core line coverage": "Rust coverage: measured over `cargo test` plus the whole pytest suite on an "
        "instrumented extension; section 6 lists the files with the most uncovered lines.",
        "studio: own state": "studio own state per connection: the connection's loop is a hand-written future "
        "(src/studio/ws.rs `Pump`: the socket, its outbox, a few flags), woken through its outbox; the server's "
        "one ping timer and shutdown reach it there, and the greeting and close run boxed. What remains is "
        "axum's socket struct (counted apart) and the fields listed in `/metrics`' help.",
        "studio: deliveries": "studio deliveries / s: over 1 000 jobs (one or ten subscribers per job) the flood "
        "is bounded by the producers' HTTP POSTs (one keep-alive request per update, four producers), so the "
        "ratio is the two servers' POST rates, which swing with the machine's load. With 5 000 subscribers on "
        "one job every delivery is one `send` system call to a socket of its own (`perf`: the kernel's TCP path "
        "is most of the server's time; the frame is serialized once and shared), on 2 cores shared with the "
        "load generator: ours falls behind the 4 producers and coalesces each subscriber's waiting progress "
        "(latest wins; every `completed` arrives), so it delivers fewer messages, while the baseline's producer "
        "waits for each broadcast to finish. The 'subscriber updates / s' row shows how much sooner every "
        "subscriber has the newest state.",
        "WebSocket RTT": "RTT: the hub's ping is timed inside its Rust task; a Python client's includes its event "
        "loop wake-up.",
        "one-hour soak: RSS": "one-hour soak RSS: see the Long soak section's samples. Two 40,000-job runs of "
        "`bench/chaos.py --jobs 40000` without a rate (~42 jobs / s, drops, a stall and a restart; one with "
        "`MALLOC_ARENA_MAX=2`) rose to 60–61 MiB within ten minutes and stayed there for the last third (~15,000 "
        "jobs): a high-water mark reached sooner at a higher rate, not a per-job leak; the allocator was not "
        "profiled.",
        "stream flood": "progress flood CPU: the ratio moves with the machine's load (both clients are measured in "
        "the same run, but ours is two threads and the baseline one). See the profile below for where our time "
        "goes.",
    }
    notes = [text for key, text in limits.items() if any(m.startswith(key) for m in missed)]
    body += [
        "",
        "What changed to get here: the first `perf` profile of the text stream showed most of the hub's CPU in "
        "building a `serde_json::Value` tree (an `IndexMap` per object) for every message's `data`, mostly "
        "`progress_state`'s map of every node, which the hub never reads. `src/comfy/protocol.rs` now keeps "
        "`data` as raw text until the `type` is known, parses the typed struct straight from it and skips "
        "`progress_state`'s `nodes`: ~4× more messages / s and ~4× less CPU per message on the text stream "
        "(25 → 6 µs, measured with this suite before and after). For the issue #13 progress flood, a profile "
        "showed a third of the process in the kernel waking threads: the event queue now wakes a waiting consumer "
        "only on empty → non-empty and `wait_for_events()` lingers up to 1 ms for the rest of a burst (~300 events "
        "per `poll()` instead of ~3), log calls no longer reach a logger that takes the GIL (and are filtered at the "
        "call site), `progress` is read in one pass from the frame's text, the queue's maps use a fast hash and "
        "`poll()` reuses its batch buffer. That gave 1.6–2.8 µs / message depending on the machine's load; a "
        "second profile showed the hub's runtime thread at ~1.5 µs / message, through the `select!` of the "
        "ComfyUI session for every frame, two locks and a wake check per event, and five heap strings per step. "
        "Since then a session reads a burst of frames in one turn of its loop (up to 256, those already on the "
        "socket) and hands its events to the table and the queue under one lock each (one wake-up per burst); "
        "ComfyUI's plain `progress` frame is read by a one-pass scanner (anything else goes through serde, and a "
        "test checks that both read every variant alike); a running job's step does one look-up and no string "
        "copies; `JobFailed`'s error is boxed (an event was 216 bytes, now 128); a `Progress` object reads "
        "its fields from the event when asked instead of copying them. Per thread (`/proc/self/task`), the flood "
        "now costs ~0.8 µs / message on the runtime thread and ~0.3 µs on the Python thread. `perf record -e "
        "cpu-clock` of the runtime thread: parsing the frame 24 %, the queue and job tables (hash look-ups of "
        "the job id, the per-job bookkeeping) 18 %, reading WebSocket frames (tungstenite) 17 %, the ComfyUI "
        "router 12 %, the kernel 10 % (socket reads; wake-ups are rare now), malloc/free 7 %, copies 4 %, "
        "clock reads 3 %. On the Python thread: moving events out of the queue and making one object each.",
    ]
    if notes:
        body += ["", "What limits the missed targets:", ""] + [f"- {n}" for n in notes]
    body += [
        "",
        f"{len(targets) - len(missed)} of {len(targets)} met" + (f"; missed: {', '.join(missed)}." if missed else "."),
        "",
    ]
    return "\n".join(body)


def splice_section(path: Path, heading: str, intro: str, section: str, targets: list, seconds: float) -> None:
    """Puts a fresh section (`## heading`) and its target rows into an existing report, leaving every other section
    as it is. The rows replaced are those whose name starts like the new ones (`studio:`, `browser:`)."""
    text = path.read_text()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = " ".join(["python3", "bench/run_all.py", *sys.argv[1:]])
    block = (
        f"## {heading}\n\n{intro} This section alone: `{cmd}` ({when}, {seconds / 60:.1f} min; the "
        f"other sections are from the run named at the top).\n\n{section}\n\n"
    )
    marker = f"\n## {heading}\n"
    if marker in text:
        start = text.index(marker) + 1
        end = text.index("\n## ", start) + 1
        text = text[:start] + block + text[end:]
    else:
        at = text.index("\n## Long soak\n") + 1 if "\n## Long soak\n" in text else text.index("\n## Targets\n") + 1
        text = text[:at] + block + text[at:]
    prefixes = tuple({n.split(":")[0] + ":" for n, _, _ in targets})
    lines = [line for line in text.split("\n") if not (prefixes and line.startswith(tuple("| " + p for p in prefixes)))]
    head = lines.index("| target | value | status |")
    end = head + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    rows = [f"| {n} | {num(v) if isinstance(v, (int, float)) else '–'} | {verdict(ok)} |" for n, v, ok in targets]
    lines[end:end] = rows
    table = lines[head + 2 : end + len(rows)]
    missed = [line.split(" | ")[0].lstrip("| ") for line in table if line.endswith("**missed** |")]
    for i, line in enumerate(lines):
        if line and line[0].isdigit() and " of " in line and " met" in line:
            lines[i] = f"{len(table) - len(missed)} of {len(table)} met" + (
                f"; missed: {', '.join(missed)}." if missed else "."
            )
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller workloads, 3 runs, 30 s soak (~2 min)")
    mode.add_argument("--smoke", action="store_true", help="every section once, tiny (~20 s), for CI")
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 5, --quick 3, --smoke 1)")
    p.add_argument("--soak", type=float, default=None, help="mixed-run seconds (default 600, --quick 30)")
    p.add_argument("--coverage", action="store_true", help="also line coverage (slow)")
    p.add_argument("--coverage-json", default=None, help="show a recorded `bench_coverage.py --json` result instead")
    p.add_argument("--studio-json", default=None, help="show a recorded `bench_studio.py --json` result instead")
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="where to write the Markdown")
    p.add_argument("--json-out", default=None, help="also write every raw result as JSON here")
    p.add_argument(
        "--chaos-soak",
        default=str(BENCH / "results" / "chaos-soak.json"),
        help="the one-hour soak's report (bench/chaos.py --json-out), shown in its own section",
    )
    p.add_argument(
        "--browser-only",
        action="store_true",
        help="run only section 8 (the browser) and rewrite it, and its target rows, in the existing --out file",
    )
    p.add_argument(
        "--pool-only",
        action="store_true",
        help="only section 9 (pools; from --pool-json when given) rewritten in the existing --out file",
    )
    p.add_argument("--pool-json", default=None, help="with --pool-only: a recorded `bench_pool.py --json` result")
    p.add_argument(
        "--long-soak-only",
        action="store_true",
        help="only the Long soak section (from --chaos-soak) rewritten in the existing --out file",
    )
    p.add_argument(
        "--studio-only",
        action="store_true",
        help="only section 7 (the studio server; from --studio-json when given) rewritten in the existing --out file",
    )
    args = p.parse_args(argv)
    flag = ["--quick"] if args.quick else (["--smoke"] if args.smoke else [])
    if args.browser_only or args.studio_only or args.pool_only or args.long_soak_only:
        started, res, targets = time.monotonic(), Results(), []
        if args.long_soak_only:
            heading, intro = "Long soak", "Recorded separately (it takes an hour)."
            section = section_chaos_soak(args.chaos_soak, targets)
        elif args.browser_only:
            res.add("browser", run_json([str(BENCH / "bench_browser.py"), "--json", *flag]))
            heading, intro, section = "8. Browser", BROWSER_INTRO, section_browser(res, targets)
        elif args.pool_only:
            if args.pool_json:
                res.add("pool", json.loads(Path(args.pool_json).read_text()))
            else:
                res.add("pool", run_json([str(BENCH / "bench_pool.py"), "--json", *flag]))
            heading, intro, section = "9. Pools", pool_intro(res), section_pool(res, targets)
        else:
            if args.studio_json:
                res.add("studio", json.loads(Path(args.studio_json).read_text()))
            else:
                soak = args.soak if args.soak is not None else (3.0 if args.smoke else 30.0 if args.quick else 600.0)
                studio = [str(BENCH / "bench_studio.py"), "--json", "--soak", str(soak), *flag]
                res.add("studio", run_json(studio, limit=soak + 3600))
            heading, intro, section = "7. Studio server", STUDIO_INTRO, section_studio(res, targets)
        splice_section(Path(args.out), heading, intro, section, targets, time.monotonic() - started)
        print(f"section {heading} of {args.out} rewritten in {time.monotonic() - started:.0f} s")
        return 0
    args.runs = max(1, min(args.runs or (1 if args.smoke else 3 if args.quick else 5), 20))
    flag = ["--smoke"] if args.smoke else (["--quick"] if args.quick else [])
    soak = args.soak if args.soak is not None else (3.0 if args.smoke else 30.0 if args.quick else 600.0)
    started = time.monotonic()
    machine = machine_info()
    print(f"director_link {machine['director_link']} ({machine['build']}), {args.runs} runs, soak {soak:.0f} s")
    res = Results()
    b = str(BENCH)
    addon = [
        f"{b}/bench_addon.py",
        "--json",
        "--runs",
        "3" if args.smoke else "10",
        "--idle",
        "2000" if args.smoke else "10000",
    ] + (["--no-blender"] if args.smoke else [])
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}")
        res.add("stream", run_json([f"{b}/bench_stream.py", "--json", "--flood-rounds", "1", *flag]))
        res.add("pyside", run_json([f"{b}/bench_pyside.py", "--json", *flag]))
        res.add("addon", run_json(addon))
        if i < (1 if args.quick or args.smoke else args.runs):
            res.add("scale_jobs", run_json([f"{b}/bench_scale.py", "jobs", "--json", *flag]))
            res.add("scale_services", run_json([f"{b}/bench_scale.py", "services", "--json", *flag]))
        if i < (1 if args.quick or args.smoke else 3):
            res.add("scale_memory", run_json([f"{b}/bench_scale.py", "memory", "--json", *flag]))
    res.add("scale_finished", run_json([f"{b}/bench_scale.py", "finished", "--json", *flag]))
    res.add(
        "scale_soak", run_json([f"{b}/bench_scale.py", "soak", "--json", "--soak", str(soak), *flag], limit=soak + 600)
    )
    res.add("discovery", run_json([f"{b}/bench_discovery.py", "--json", *flag]))
    res.add("pool", run_json([f"{b}/bench_pool.py", "--json", *flag]))
    if args.studio_json:
        # A recorded `bench_studio.py --json` run (e.g. one taken on a quieter machine) instead of a new one.
        res.add("studio", json.loads(Path(args.studio_json).read_text()))
    else:
        studio = [f"{b}/bench_studio.py", "--json", "--soak", str(soak), *flag]
        res.add("studio", run_json(studio, limit=soak + 3600))
    res.add("browser", run_json([f"{b}/bench_browser.py", "--json", *flag]))
    if args.coverage:
        res.add("coverage", run_json([f"{b}/bench_coverage.py", "--json"], limit=7200))
    elif args.coverage_json:
        # A coverage run takes ~40 minutes here: a recorded one (bench_coverage.py --json) can be shown instead.
        res.add("coverage", json.loads(Path(args.coverage_json).read_text()))
    cap = 1000
    report = write_report(res, machine, args, time.monotonic() - started, cap)
    Path(args.out).write_text(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine, "results": res.raw}, indent=1))
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
