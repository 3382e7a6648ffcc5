#!/usr/bin/env python3
"""Benchmark: Director Link (``director_link.Hub``) against a plain python-websockets client, same run, same server.

    python3 bench/bench_link.py [--quick] [--json]

The ComfyUI simulator runs in a child process (``time_scale=0``, loopback only) so its CPU is not billed to either
client. Three measurements, each done for both clients:

* throughput: K prompts of AcceptanceProgress(steps=1000, no previews) -> SaveImage, submit -> terminal message;
* RTT: WebSocket ping -> pong round trips (ours: the hub's heartbeat samples; baseline: ``await ws.ping()``);
* poll() drain: one ``hub.poll(5000)`` call taking a finished job's queued events, against ``json.loads`` of the
  same number of real ComfyUI text frames in pure Python.

See bench/README.md for what every number means. This is a benchmark, not a test: it never fails on a slow result.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import director_link
from _common import Simulator, drain_all, percentile, wait_connected
from director_link import Hub

try:
    import websockets
    from websockets.asyncio.client import connect as ws_connect
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("python-websockets is needed for the baseline: pip install 'websockets>=13'")

REPO = Path(__file__).resolve().parent.parent
STEPS = 1000
CONNECT_TIMEOUT = 15.0
PROMPT_TIMEOUT = 30.0  # per prompt, both clients
RTT_PINGS = 200
OUR_HEARTBEAT = 0.01  # seconds between our hub's pings during the RTT part
RTT_TIMEOUT = 15.0  # ours: 200 heartbeats at 10 ms need ~2 s
DRAIN_REPEATS = 5
DRAIN_MAX = 5000
FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})

_nonce_counter = 0


def nonce() -> int:
    """Unique per prompt so that no run is served from the server's cache."""
    global _nonce_counter
    _nonce_counter += 1
    return (time.time_ns() // 1000 + _nonce_counter) % 4_000_000_000


def progress_prompt() -> dict:
    return {
        "1": {
            "class_type": "AcceptanceProgress",
            "inputs": {
                "steps": STEPS,
                "step_seconds": 0.0,
                "width": 64,
                "height": 64,
                "send_preview": False,
                "nonce": nonce(),
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl_bench/progress"}},
    }


# ------------------------------------------------------------------------------------------------------ our client


def ours_throughput(url: str, prompts: int, out_dir: str) -> tuple[list[dict], int]:
    """Runs `prompts` prompts one after another on a fresh hub; returns per-prompt records and coalesced events."""
    runs = []
    with Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", url, name="sim")
        wait_connected(hub, name, CONNECT_TIMEOUT)
        drain_all(hub)
        coalesced_before = hub.snapshot()["events"]["coalesced"]
        for _ in range(prompts):
            prompt = progress_prompt()
            kinds: dict[str, int] = {}
            terminal = None
            c0, t0 = time.process_time(), time.perf_counter()
            job = hub.submit(name, prompt)
            deadline = t0 + PROMPT_TIMEOUT
            while terminal is None and time.perf_counter() < deadline:
                hub.wait_for_events(0.05)
                for _ in range(1000):  # bounded: each call takes up to DRAIN_MAX
                    got = hub.poll(DRAIN_MAX)
                    if not got:
                        break
                    for ev in got:
                        kinds[ev.type] = kinds.get(ev.type, 0) + 1
                        if ev.is_terminal and ev.job == job.id:
                            terminal = ev.type
            t1, c1 = time.perf_counter(), time.process_time()
            if terminal != "job_completed":
                raise SystemExit(f"our client: prompt ended with {terminal or 'a timeout'}; events {kinds}")
            runs.append({"wall_s": t1 - t0, "cpu_s": c1 - c0, "events": sum(kinds.values()), "kinds": kinds})
        coalesced = hub.snapshot()["events"]["coalesced"] - coalesced_before
    return runs, coalesced


def ours_rtt(url: str, out_dir: str) -> dict:
    with Hub(output_dir=out_dir, heartbeat=OUR_HEARTBEAT) as hub:
        name = hub.add_service("comfyui", url, name="sim")
        wait_connected(hub, name, CONNECT_TIMEOUT)
        deadline = time.monotonic() + RTT_TIMEOUT
        lat: dict[str, Any] = {}
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            hub.wait_for_events(0.05)
            hub.poll(DRAIN_MAX)
            lat = next(s for s in hub.snapshot()["services"] if s["name"] == name)["latency"]
            if lat["samples"] >= RTT_PINGS:
                break
        took = time.monotonic() - t0
    return {
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "last_ms": lat.get("last_ms"),
        "samples": lat.get("samples", 0),
        "seconds": took,
    }


def ours_drain(url: str, out_dir: str, repeats: int) -> dict:
    runs = []
    with Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", url, name="sim")
        wait_connected(hub, name, CONNECT_TIMEOUT)
        for _ in range(repeats):
            drain_all(hub)
            job = hub.submit(name, progress_prompt())
            job.wait(timeout=PROMPT_TIMEOUT)
            time.sleep(0.05)  # lets anything the service task emits after the terminal event land in the queue
            pending = hub.snapshot()["events"]["pending"]
            t0 = time.perf_counter_ns()
            got = hub.poll(DRAIN_MAX)
            t1 = time.perf_counter_ns()
            n = len(got)
            del got
            left = drain_all(hub)
            runs.append({"ns": t1 - t0, "events": n, "pending_before": pending, "left_after": left})
    runs.sort(key=lambda r: r["ns"])
    med = runs[len(runs) // 2]
    return {
        "median_us": med["ns"] / 1000,
        "median_events": med["events"],
        "ns_per_event": med["ns"] / max(1, med["events"]),
        "all_us": [r["ns"] / 1000 for r in runs],
        "events": [r["events"] for r in runs],
        "left_after": [r["left_after"] for r in runs],
    }


# ---------------------------------------------------------------------------------------- python-websockets baseline


def post_prompt(host: str, port: int, prompt: dict, client_id: str) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        body = json.dumps({"prompt": prompt, "client_id": client_id})
        conn.request("POST", "/prompt", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"baseline: POST /prompt answered {resp.status}: {data[:300]!r}")
        return json.loads(data)["prompt_id"]
    finally:
        conn.close()


async def _baseline_connect(sim: Simulator, client_id: str):
    # No permessage-deflate: our client does not negotiate it either, and the simulator would not need it.
    ws = await asyncio.wait_for(
        ws_connect(f"ws://{sim.host}:{sim.port}/ws?clientId={client_id}", compression=None, max_size=None),
        CONNECT_TIMEOUT,
    )
    await ws.send(FEATURE_FLAGS)
    # The first frame is always `status`; the feature_flags reply (if any) is read by the prompt loops.
    first = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
    if first.get("type") != "status":
        raise SystemExit(f"baseline: first message was {first.get('type')!r}, not status")
    return ws


async def _baseline_throughput(sim: Simulator, prompts: int) -> tuple[list[dict], list[str]]:
    client_id = uuid.uuid4().hex
    runs = []
    frames: list[str] = []
    ws = await _baseline_connect(sim, client_id)
    try:
        for i in range(prompts):
            prompt = progress_prompt()
            kinds: dict[str, int] = {}
            texts: list[str] = []
            done = None
            c0, t0 = time.process_time(), time.perf_counter()
            prompt_id = post_prompt(sim.host, sim.port, prompt, client_id)
            deadline = t0 + PROMPT_TIMEOUT
            while done is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                except asyncio.TimeoutError:
                    break
                if isinstance(raw, bytes):
                    kinds["<binary>"] = kinds.get("<binary>", 0) + 1
                    continue
                msg = json.loads(raw)
                kind = msg.get("type")
                kinds[kind] = kinds.get(kind, 0) + 1
                if i == prompts - 1:
                    texts.append(raw)
                data = msg.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if kind in ("execution_error", "execution_interrupted"):
                    done = kind
                elif kind == "executing" and data.get("node") is None:
                    done = "done"
            t1, c1 = time.perf_counter(), time.process_time()
            if done != "done":
                raise SystemExit(f"baseline: prompt ended with {done or 'a timeout'}; messages {kinds}")
            runs.append({"wall_s": t1 - t0, "cpu_s": c1 - c0, "events": sum(kinds.values()), "kinds": kinds})
            frames = texts or frames
    finally:
        await ws.close()
    return runs, frames


async def _baseline_rtt(sim: Simulator, spacing: float = 0.0) -> dict:
    """`RTT_PINGS` pings, one in flight; `spacing` seconds of idle between them (0 = back to back)."""
    ws = await _baseline_connect(sim, uuid.uuid4().hex)
    samples = []
    t_start = time.monotonic()
    try:
        for _ in range(RTT_PINGS):
            if time.monotonic() - t_start > RTT_TIMEOUT:
                break
            t0 = time.perf_counter()
            pong_waiter = await ws.ping()
            await asyncio.wait_for(pong_waiter, 5.0)
            samples.append((time.perf_counter() - t0) * 1000)
            if spacing:
                await asyncio.sleep(spacing)
    finally:
        await ws.close()
    return {
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "last_ms": samples[-1] if samples else None,
        "samples": len(samples),
        "seconds": time.monotonic() - t_start,
    }


def baseline_throughput(sim: Simulator, prompts: int) -> tuple[list[dict], list[str]]:
    return asyncio.run(_baseline_throughput(sim, prompts))


def baseline_rtt(sim: Simulator, spacing: float = 0.0) -> dict:
    return asyncio.run(_baseline_rtt(sim, spacing))


def baseline_json_loads(frames: list[str], count: int, repeats: int) -> dict:
    """Time `count` json.loads calls over real frames of a 1000-step prompt (cycled if fewer), median of repeats."""
    if not frames:
        frames = synthetic_frames()
    batch = [frames[i % len(frames)] for i in range(count)]
    loads = json.loads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        out = [loads(s) for s in batch]
        t1 = time.perf_counter_ns()
        del out
        times.append(t1 - t0)
    times.sort()
    med = times[len(times) // 2]
    sizes = [len(s) for s in batch]
    return {
        "median_us": med / 1000,
        "ns_per_event": med / max(1, count),
        "calls": count,
        "all_us": [t / 1000 for t in times],
        "mean_frame_bytes": statistics.fmean(sizes) if sizes else 0,
    }


def synthetic_frames() -> list[str]:
    """Representative progress frames (only used if the baseline run captured none)."""
    pid = str(uuid.uuid4())
    frames = []
    for v in range(1, STEPS + 1):
        node = {
            "value": v,
            "max": STEPS,
            "state": "running",
            "node_id": "1",
            "prompt_id": pid,
            "display_node_id": "1",
            "parent_node_id": None,
            "real_node_id": "1",
        }
        frames.append(json.dumps({"type": "progress_state", "data": {"prompt_id": pid, "nodes": {"1": node}}}))
        frames.append(
            json.dumps({"type": "progress", "data": {"value": v, "max": STEPS, "prompt_id": pid, "node": "1"}})
        )
    return frames


# ------------------------------------------------------------------------------------------------------- reporting


def summarize_runs(runs: list[dict]) -> dict:
    wall = sum(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    events = sum(r["events"] for r in runs)
    kinds: dict[str, int] = {}
    for r in runs:
        for k, v in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "prompts": len(runs),
        "wall_ms_per_prompt": 1000 * wall / len(runs),
        "wall_ms_median": 1000 * statistics.median(r["wall_s"] for r in runs),
        "events_per_prompt": events / len(runs),
        "events_per_s": events / wall if wall > 0 else None,
        "wall_ms_each": [round(1000 * r["wall_s"], 2) for r in runs],
        "cpu_ms_per_prompt": 1000 * cpu / len(runs),
        "cpu_us_per_event": 1e6 * cpu / events if events else None,
        "event_kinds": kinds,
    }


def build_info() -> dict:
    so = Path(director_link._native.__file__).resolve()
    data = so.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    matches = None
    for profile in ("release", "debug"):
        candidate = REPO / "target" / profile / "libdirector_link.so"
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == sha:
            matches = profile
            break
    # The release profile strips debug info; a debug build carries .debug_info sections.
    has_debug_info = b".debug_info" in data
    if matches:
        build = f"{matches} (identical to target/{matches}/libdirector_link.so)"
    else:
        build = "debug (has .debug_info)" if has_debug_info else "release (no .debug_info)"
    return {
        "extension": str(so),
        "build": build,
        "release": (matches or ("debug" if has_debug_info else "release")) == "release",
    }


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "director_link": director_link.__file__,
        "director_link_version": director_link.__version__,
        "websockets_version": websockets.__version__,
    } | build_info()


def ratio(ours: float | None, base: float | None, lower_is_better: bool) -> float | None:
    """Always oriented so that > 1 means our client is better."""
    if not ours or not base:
        return None
    return base / ours if lower_is_better else ours / base


Row = tuple[str, str, Any, Any, "float | None", str]


def rows(result: dict) -> list[Row]:
    """(key, label, ours, baseline, ratio, how the ratio is formed); ratio > 1 always means ours is better."""
    o, b = result["throughput"]["ours"], result["throughput"]["websockets"]
    ro, rb, rs = result["rtt"]["ours"], result["rtt"]["websockets"], result["rtt"]["websockets_spaced"]
    do, db = result["drain"]["ours"], result["drain"]["json_loads"]

    def lower(key: str, label: str, ours: Any, base: Any) -> Row:
        return key, label, ours, base, ratio(ours, base, True), "base/ours"

    def higher(key: str, label: str, ours: Any, base: Any) -> Row:
        return key, label, ours, base, ratio(ours, base, False), "ours/base"

    def count(key: str, label: str, ours: Any, base: Any) -> Row:
        return key, label, ours, base, None, "(count)"

    return [
        lower("wall_ms_median", "throughput: wall ms / prompt (median)", o["wall_ms_median"], b["wall_ms_median"]),
        lower("wall_ms_mean", "throughput: wall ms / prompt (mean)", o["wall_ms_per_prompt"], b["wall_ms_per_prompt"]),
        count("events_per_prompt", "throughput: events / prompt", o["events_per_prompt"], b["events_per_prompt"]),
        higher("events_per_s", "throughput: events / s", o["events_per_s"], b["events_per_s"]),
        lower(
            "cpu_ms_per_prompt", "throughput: client CPU ms / prompt", o["cpu_ms_per_prompt"], b["cpu_ms_per_prompt"]
        ),
        lower("cpu_us_per_event", "throughput: client CPU us / event", o["cpu_us_per_event"], b["cpu_us_per_event"]),
        lower("rtt_p50_ms", "RTT p50 ms (baseline back to back)", ro["p50_ms"], rb["p50_ms"]),
        lower("rtt_p99_ms", "RTT p99 ms (baseline back to back)", ro["p99_ms"], rb["p99_ms"]),
        lower("rtt_p50_ms_spaced", "RTT p50 ms (baseline 10 ms apart)", ro["p50_ms"], rs["p50_ms"]),
        lower("rtt_p99_ms_spaced", "RTT p99 ms (baseline 10 ms apart)", ro["p99_ms"], rs["p99_ms"]),
        count("rtt_samples", "RTT samples", ro["samples"], rb["samples"]),
        lower("drain_us", "drain: us for the batch (median)", do["median_us"], db["median_us"]),
        lower("drain_ns_per_event", "drain: ns / event", do["ns_per_event"], db["ns_per_event"]),
        count("drain_events", "drain: events in the batch", do["median_events"], db["calls"]),
    ]


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 100:
        return f"{int(v)}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"Director Link benchmark ({'quick' if result['quick'] else 'full'}) — {result['seconds']:.1f} s")
    print(
        f"  machine : {m['cpu_count']} CPUs ({m['cpu_model'] or 'unknown model'}), {m['platform']}, "
        f"load average {m['load_average_1m']:.2f} at the start"
    )
    print(f"  python  : {m['python']}, websockets {m['websockets_version']}")
    print(f"  ours    : director_link {m['director_link_version']} from {m['director_link']}")
    print(f"  build   : {m['build']}")
    print(
        f"  server  : simulator in a separate process at {result['server']} (time_scale=0), "
        f"AcceptanceProgress steps={STEPS} -> SaveImage, {result['throughput']['ours']['prompts']} prompts each "
        f"in {result['rounds']} alternating rounds"
    )
    print()
    header = f"{'metric':<38} {'ours':>12} {'websockets':>12} {'ratio':>8}  {'ratio is':<10}"
    print(header)
    print("-" * len(header))
    for _key, name, ours, base, r, how in rows(result):
        rtxt = f"{r:.2f}x" if r is not None else ""
        print(f"{name:<38} {fmt(ours):>12} {fmt(base):>12} {rtxt:>8}  {how:<10}")
    print("-" * len(header))
    print("ratio > 1 means our client is better (faster / less CPU / more events per second).")
    t = result["throughput"]
    print(f"events coalesced by our queue during throughput: {t['ours']['coalesced']} (0 = every message delivered)")
    print(f"wall ms each prompt, ours        : {t['ours']['wall_ms_each']}")
    print(f"wall ms each prompt, websockets  : {t['websockets']['wall_ms_each']}")
    print(f"our event kinds (all prompts)    : {t['ours']['event_kinds']}")
    print(f"baseline message kinds (all)     : {t['websockets']['event_kinds']}")
    d = result["drain"]
    print(
        f"drain runs, ours us              : {[round(x, 1) for x in d['ours']['all_us']]} "
        f"(events {d['ours']['events']}, left after: {d['ours']['left_after']})"
    )
    print(
        f"drain baseline                   : {d['json_loads']['calls']} x json.loads of real text frames from "
        f"the baseline run (mean {d['json_loads']['mean_frame_bytes']:.0f} B), median of "
        f"{len(d['json_loads']['all_us'])}"
    )
    print(
        f"RTT: ours = hub heartbeat every {OUR_HEARTBEAT * 1000:.0f} ms, timed in Rust "
        f"({result['rtt']['ours']['seconds']:.1f} s); baseline = await ws.ping() in asyncio, back to back, "
        f"and again with {OUR_HEARTBEAT * 1000:.0f} ms asyncio.sleep between pings"
    )
    sim_cpu = result.get("simulator_cpu_s")
    if sim_cpu is not None:
        print(f"simulator process CPU for the whole run: {sim_cpu:.2f} s (not counted for either client)")
    print("CPU for our client is time.process_time() of this process, so it includes the hub's Rust threads.")


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Director Link vs python-websockets against the ComfyUI simulator")
    p.add_argument("--quick", action="store_true", help="2 prompts per client, 3 drain repeats (≤ 30 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--prompts", type=int, default=None, help="prompts per client (default 10, --quick 2; max 40)")
    args = p.parse_args(argv)
    prompts = max(1, min(40, args.prompts or (2 if args.quick else 10)))
    rounds = min(prompts, 2 if args.quick else 5)
    repeats = 3 if args.quick else DRAIN_REPEATS

    started = time.monotonic()
    machine = machine_info()  # before the run, so the load average is not ours
    sim = Simulator()
    try:
        with tempfile.TemporaryDirectory(prefix="dl_bench_") as out_dir:
            # Warm-up (connections, caches, page faults) for both, not measured.
            ours_throughput(sim.url, 1, out_dir)
            baseline_throughput(sim, 1)

            # Rounds alternate between the clients so that drift in machine load hits both alike.
            ours_runs: list[dict] = []
            base_runs: list[dict] = []
            coalesced = 0
            frames: list[str] = []
            for r in range(rounds):
                per_round = prompts // rounds + (1 if r < prompts % rounds else 0)
                runs, c = ours_throughput(sim.url, per_round, out_dir)
                ours_runs += runs
                coalesced += c
                runs, frames = baseline_throughput(sim, per_round)
                base_runs += runs
            ours_t = summarize_runs(ours_runs) | {"coalesced": coalesced}
            base_t = summarize_runs(base_runs)
            ours_r = ours_rtt(sim.url, out_dir)
            base_r = baseline_rtt(sim)
            base_r_spaced = baseline_rtt(sim, OUR_HEARTBEAT)
            ours_d = ours_drain(sim.url, out_dir, repeats)
            base_d = baseline_json_loads(frames, ours_d["median_events"], repeats)
        sim_cpu = sim.cpu_seconds()
    finally:
        sim.stop()

    result = {
        "quick": args.quick,
        "seconds": time.monotonic() - started,
        "server": sim.url,
        "steps": STEPS,
        "rounds": rounds,
        "machine": machine,
        "throughput": {"ours": ours_t, "websockets": base_t},
        "rtt": {"ours": ours_r, "websockets": base_r, "websockets_spaced": base_r_spaced},
        "drain": {"ours": ours_d, "json_loads": base_d},
        "simulator_cpu_s": sim_cpu,
    }
    result["ratios_ours_better_if_gt_1"] = {key: r for key, _n, _o, _b, r, _h in rows(result) if r is not None}
    if args.json:
        print(json.dumps(result, indent=None, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
