#!/usr/bin/env python3
"""The studio server under load: `director-link serve` vs the brief's FastAPI `ConnectionManager`, side by side.

Three processes per measurement: the server (ours: `director-link serve --database memory`; the baseline:
bench/studio_baseline.py under uvicorn in a venv this script creates), the load generator (bench/studio_load, a
Rust program this script builds with cargo) and this driver. Both servers get the same jobs and the same events:
subscribers on the brief's `WS /ws/{job_id}`, an external producer posting `POST /api/jobs/{id}/progress`.

Scenarios (full / --quick / --smoke sizes in SIZES below):
- fanout: N connections over J jobs; RSS per idle connection (the server's, from /proc), handshake p50/p99,
  paced publish → delivery p50/p99 (one POST at a time, each round waited for), then a flood (4 producers at once,
  then `completed` for every job): deliveries / s.
- storm: every client drops at once, the jobs move on and finish, every client reconnects at the same moment —
  ours through `/ws/events?jobs=J&since=OFFSET&epoch=E` (it must get exactly what it missed: `recovered`, the
  latest progress, the final state, in order), the baseline through `/ws/{job_id}` (it has no resume).
- soak (both): connections held for minutes under a steady publish rate; RSS, open files, threads, connections.

    python3 bench/bench_studio.py [--smoke|--quick] [--soak SECONDS] [--json]

Everything talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import BENCH, REPO, child_env, rss_mib

LOADGEN_DIR = BENCH / "studio_load"
LOADGEN_TARGET = REPO / "target" / "studio-load"
LOADGEN = LOADGEN_TARGET / "release" / "studio-load"
BASELINE_PINS = "fastapi>=0.115,<1 uvicorn[standard]>=0.34,<1"
START_TIMEOUT = 60.0

# name: (connections, jobs, paced rounds, flood updates per job)
SIZES = {
    "full": {
        "fanout_10k": (10_000, 1_000, 3, 5),
        "fanout_1k": (1_000, 1_000, 5, 5),
        "fanout_one_job": (5_000, 1, 20, 20),
        "storm": (10_000, 1_000),
        "soak": (1_000, 100, 200.0),
    },
    "quick": {
        "fanout_10k": (10_000, 1_000, 2, 3),
        "fanout_1k": (1_000, 1_000, 3, 3),
        "fanout_one_job": (5_000, 1, 10, 10),
        "storm": (10_000, 1_000),
        "soak": (1_000, 100, 200.0),
    },
    "smoke": {
        "fanout_10k": (300, 30, 2, 2),
        "fanout_1k": (100, 100, 2, 2),
        "fanout_one_job": (200, 1, 5, 5),
        "storm": (300, 30),
        "soak": (100, 10, 50.0),
    },
}


def log(msg: str) -> None:
    print(f"[bench_studio] {msg}", file=sys.stderr, flush=True)


def build_loadgen() -> Path:
    """A release build of bench/studio_load (its own small crate; cached under target/studio-load)."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(LOADGEN_TARGET), CARGO_TERM_COLOR="never")
    t0 = time.monotonic()
    cmd = ["cargo", "build", "--release", "--quiet", "--manifest-path", str(LOADGEN_DIR / "Cargo.toml")]
    r = subprocess.run(cmd + ["--offline"], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:  # a fresh machine: let cargo fetch the few crates
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0 or not LOADGEN.exists():
        raise SystemExit(f"building the load generator failed:\n{r.stderr[-3000:]}")
    log(f"load generator ready ({time.monotonic() - t0:.1f} s)")
    return LOADGEN


def baseline_python() -> Path:
    """The baseline's venv (FastAPI + uvicorn[standard]), created once and reused while its pins are unchanged."""
    root = Path(os.environ.get("DIRECTOR_LINK_VENVS") or Path.home() / ".cache" / "director-link" / "venvs")
    venv = root / "studio-baseline"
    py = venv / "bin" / "python"
    stamp = venv / ".director-link-pins"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == BASELINE_PINS:
        return py
    t0 = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    uv = root / "uv" / "bin" / "uv"
    if uv.exists():
        steps = [
            [str(uv), "venv", "-q", "--python", sys.executable, str(venv)],
            [str(uv), "pip", "install", "-q", "--python", str(py), *BASELINE_PINS.split()],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *BASELINE_PINS.split()],
        ]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise SystemExit(f"creating the baseline venv failed ({' '.join(cmd[:3])}):\n{r.stderr[-3000:]}")
    stamp.write_text(BASELINE_PINS)
    log(f"baseline venv ready ({time.monotonic() - t0:.1f} s)")
    return py


def raise_nofile() -> None:
    """Children inherit it: 10 000 connections need more open files than the usual soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    """One server child process on 127.0.0.1."""

    def __init__(self, kind: str, baseline_py: Path | None) -> None:
        self.kind = kind
        if kind == "ours":
            argv = [sys.executable, "-m", "director_link.cli", "serve", "--port", "0", "--json", "--database", "memory"]
            self.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                text=True,
                preexec_fn=raise_nofile,
            )
            assert self.proc.stdout is not None
            self.url = json.loads(self.proc.stdout.readline())["url"].rstrip("/")
        else:
            assert baseline_py is not None
            port = free_port()
            argv = [str(baseline_py), str(BENCH / "studio_baseline.py"), "--port", str(port)]
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=raise_nofile
            )
            self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                get_json(self.url + "/api/anime/websocket/status", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the {kind} server did not start") from None
                time.sleep(0.1)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def load(loadgen: Path, server: Server, mode: str, limit: float, **kw) -> dict:
    argv = [str(loadgen), mode, "--url", server.url, "--pid", str(server.proc.pid)]
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-"), str(v)]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=limit, preexec_fn=raise_nofile)
    if r.returncode != 0 or not r.stdout.strip():
        raise SystemExit(f"{' '.join(argv)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.monotonic() - t0, 2)
    log(f"{server.kind} {mode} {kw.get('prefix')}: {out['wall_s']} s")
    return out


def own_state(server: Server) -> dict:
    """Ours: the per-connection state the server reports about itself (see /metrics)."""
    out = {}
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("director_link_studio_connection_state_bytes"):
                kind = line.split('kind="')[1].split('"')[0] if 'kind="' in line else "all"
                out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def run_server(kind: str, loadgen: Path, baseline_py: Path | None, size: dict, soak_s: float) -> dict:
    res: dict = {}
    server = Server(kind, baseline_py)
    try:
        res["rss_mib_at_start"] = round(rss_mib(server.proc.pid), 1)
        for name in ("fanout_10k", "fanout_1k", "fanout_one_job"):
            n, jobs, rounds, flood = size[name]
            res[name] = load(
                loadgen,
                server,
                "fanout",
                900,
                connections=n,
                jobs=jobs,
                rounds=rounds,
                flood=flood,
                prefix=f"{name.replace('_', '-')}-{kind}",
            )
        n, jobs = size["storm"]
        res["storm"] = load(
            loadgen,
            server,
            "storm",
            900,
            connections=n,
            jobs=jobs,
            endpoint="events" if kind == "ours" else "brief",
            prefix=f"storm-{kind}",
        )
        if kind == "ours":
            try:
                res["own_state_bytes"] = own_state(server)
            except OSError:
                res["own_state_bytes"] = {}
        # Both servers soak (the same connections, jobs and publish rate), for flat RSS, files and connections.
        if soak_s > 0:
            n, jobs, rate = size["soak"]
            res["soak"] = load(
                loadgen,
                server,
                "soak",
                soak_s + 900,
                connections=n,
                jobs=jobs,
                rate=rate,
                seconds=soak_s,
                prefix="soak",
            )
        res["server_cpu_s"] = cpu_s(server.proc.pid)
    finally:
        server.stop()
    return res


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    p.add_argument("--soak", type=float, default=None, help="soak seconds (default 600, --quick 30, --smoke 3)")
    p.add_argument("--only", choices=["ours", "baseline"], default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    size_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    soak_s = args.soak if args.soak is not None else (3.0 if args.smoke else 30.0 if args.quick else 600.0)
    raise_nofile()
    loadgen = build_loadgen()
    baseline_py = None if args.only == "ours" else baseline_python()
    t0 = time.monotonic()
    result: dict = {
        "size": size_name,
        "soak_s": soak_s,
        "cpu_count": os.cpu_count(),
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }
    for kind in ("ours", "baseline"):
        if args.only in (None, kind):
            result[kind] = run_server(kind, loadgen, baseline_py, SIZES[size_name], soak_s)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
