#!/usr/bin/env python3
"""Discovery: a full local scan (``hub.discover()``, every known port) with nothing listening and with servers up.

    python3 bench/bench_discovery.py [--quick|--smoke] [--json]

* nothing: a bare-host scan of 127.0.0.9 (a loopback address nobody else here binds, so every known port
  refuses) and of 127.0.0.1 as it is (other programs on this machine may listen there; what was found is listed);
* up: on 127.0.0.9, a ComfyUI-speaking server on 8188 (bench/blast_server.py), another on 8189, a plain HTTP
  server on 7860 (found as "unknown"), plus the ComfyUI simulator at its own port (a ``host:port`` entry), all
  scanned in one call. Each scan is timed from Python around the blocking call; median, min, max of the runs.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time

import director_link
from _common import BlastServer, ChildServer, Simulator

HOST = "127.0.0.9"
PLAIN_HTTP = r"""
import http.server, sys, threading
srv = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print(f"http://{sys.argv[1]}:{sys.argv[2]}", flush=True)
sys.stdin.read()
"""


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def scan(hosts: list[str], runs: int) -> dict:
    times, found = [], []
    with director_link.Hub(output_dir=tempfile.mkdtemp(prefix="dl_disc_")) as hub:
        for _ in range(runs):
            t0 = time.perf_counter()
            res = hub.discover(hosts)
            times.append(time.perf_counter() - t0)
            found = sorted(f"{r['kind']}@{r['port']}" for r in res if r["kind"] != "none")
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "mean_s": statistics.fmean(times),
        "runs": runs,
        "found": found,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    runs = 2 if args.smoke else (3 if args.quick else 7)
    result = {
        "nothing_127.0.0.9": scan([HOST], runs),
        "as_is_127.0.0.1": scan(["127.0.0.1"], runs),
    }
    servers: list[ChildServer] = []
    try:
        for port in (8188, 8189):
            if port_free(HOST, port):
                servers.append(BlastServer(HOST, port))
        if port_free(HOST, 7860):
            servers.append(ChildServer([sys.executable, "-c", PLAIN_HTTP, HOST, "7860"], "plain HTTP server"))
        sim = Simulator()
        servers.append(sim)
        result["up"] = scan([HOST, f"{sim.host}:{sim.port}"], runs)
        result["up"]["servers"] = [s.url for s in servers]
    finally:
        for s in servers:
            s.stop()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
