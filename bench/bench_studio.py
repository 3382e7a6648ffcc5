#!/usr/bin/env python3
"""The studio server under many subscribers (a first cut; the Rust load generator and the FastAPI baseline of
issue 3/5 are still to come).

A `director-link serve --database memory` child process; this process opens N WebSocket connections to the brief's
`/ws/{job_id}` (all on one job, or spread over jobs), then an external producer posts progress updates and every
delivery's latency (POST sent → message received) is measured. Reports: server RSS per idle connection, handshake
p50/p99, delivery p50/p99, deliveries/s.

    python3 bench/bench_studio.py [--connections 1000] [--jobs 1] [--updates 50] [--json]

Everything talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
import urllib.request

from _common import child_env, p50_p99, rss_mib

LIMIT = 120.0


def post(url: str, body: dict) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


async def run(args) -> dict:
    import websockets

    proc = subprocess.Popen(
        [sys.executable, "-m", "director_link.cli", "serve", "--port", "0", "--json", "--database", "memory"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=child_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        ws_base = url.replace("http://", "ws://")
        await asyncio.sleep(0.5)
        rss0 = rss_mib(proc.pid)
        handshakes: list[float] = []
        conns = []
        jobs = [f"bench-{j}" for j in range(args.jobs)]
        for i in range(args.connections):
            t0 = time.perf_counter()
            ws = await asyncio.wait_for(
                websockets.connect(f"{ws_base}/ws/{jobs[i % len(jobs)]}", ping_interval=None, max_queue=None),
                LIMIT,
            )
            json.loads(await asyncio.wait_for(ws.recv(), LIMIT))  # the connection message
            handshakes.append((time.perf_counter() - t0) * 1000)
            conns.append(ws)
        await asyncio.sleep(1.0)
        rss1 = rss_mib(proc.pid)
        latencies: list[float] = []
        received = 0

        async def reader(ws):
            nonlocal received
            while True:
                m = json.loads(await ws.recv())
                if m.get("type") == "progress":
                    sent = float(m["message"])
                    latencies.append((time.time() - sent) * 1000)
                    received += 1
                    if m["status"] == "completed":
                        return

        readers = [asyncio.create_task(reader(ws)) for ws in conns]
        loop = asyncio.get_running_loop()
        t_start = time.perf_counter()
        for u in range(args.updates):
            for job in jobs:
                status = "completed" if u == args.updates - 1 else "processing"
                body = {"status": status, "progress": min(100, u), "message": repr(time.time())}
                await loop.run_in_executor(None, post, f"{url}/api/jobs/{job}/progress", body)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*readers), LIMIT)
        wall = time.perf_counter() - t_start
        for ws in conns:
            await ws.close()
        h50, h99 = p50_p99(handshakes)
        d50, d99 = p50_p99(latencies)
        return {
            "connections": args.connections,
            "jobs": args.jobs,
            "server_rss_mib_idle_before": round(rss0, 1),
            "server_rss_mib_with_connections": round(rss1, 1),
            "server_rss_kib_per_connection": round((rss1 - rss0) * 1024 / max(1, args.connections), 2),
            "handshake_ms_p50": h50,
            "handshake_ms_p99": h99,
            "delivery_ms_p50": d50,
            "delivery_ms_p99": d99,
            "deliveries": received,
            "deliveries_per_s": round(received / wall, 1),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 200)), hard))
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:36} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
