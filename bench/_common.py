"""Helpers shared by the benchmarks: child-process servers, percentiles, RSS, machine and version info.

Every server runs in a child process (its CPU is not billed to the client being measured), listens on 127.0.0.1
only and stops when its stdin closes. Every wait here is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START_TIMEOUT = 30.0

SIM_CODE = r"""
import sys
from director_link.testing import ComfySimulator
with ComfySimulator(time_scale=0) as sim:
    print(sim.url, flush=True)
    sys.stdin.read()
"""


def child_env() -> dict:
    """The environment for a child that must import the same director_link as this process."""
    import director_link

    env = dict(os.environ)
    pkg_root = str(Path(director_link.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
    return env


class ChildServer:
    """A server in a child process that prints its URL on its first ``http`` line; ``stop()`` closes its stdin."""

    def __init__(self, argv: list[str], what: str = "server") -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=child_env(), text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=read, daemon=True, name=f"{what}-stdout").start()
        deadline = time.monotonic() + START_TIMEOUT
        self.url = ""
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.strip().startswith("http"):
                self.url = line.strip().rstrip("/")
                break
        if not self.url:
            self.stop()
            raise SystemExit(f"the {what} did not start:\n{self.stderr_text()}")
        host = self.url.split("://", 1)[1].split("/", 1)[0]
        self.host, _, port = host.rpartition(":")
        self.port = int(port)
        if not (self.host.startswith("127.") or self.host in ("localhost", "[::1]")):
            self.stop()
            raise SystemExit(f"the {what} listens on {self.url}, not on loopback; refusing to benchmark")

    def call(self, line: str, timeout: float = 10.0) -> str | None:
        """Sends one command line; returns the next line the child prints (None on timeout or exit)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def cpu_seconds(self) -> float | None:
        """User+system CPU of the child so far (Linux /proc)."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


class Simulator(ChildServer):
    """The ComfyUI simulator (``time_scale=0``) in a child process."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-c", SIM_CODE], "simulator")


class BlastServer(ChildServer):
    """bench/blast_server.py: pre-encoded ComfyUI frames as fast as the socket takes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__([sys.executable, str(BENCH / "blast_server.py"), host, str(port)], "blast server")

    def stats(self) -> dict:
        line = self.call("stats")
        return json.loads(line) if line else {}


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank, the same definition the hub uses for its latency window."""
    if not values:
        return None
    s = sorted(values)
    rank = min(len(s), max(1, -int(-q * len(s) // 1)))
    return s[rank - 1]


def p50_p99(values: list[float]) -> tuple[float | None, float | None]:
    return percentile(values, 0.50), percentile(values, 0.99)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def wait_connected(hub, name: str, timeout: float = 15.0) -> None:
    """Polls (bounded) until the service is connected; drains the events meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.wait_for_events(0.02)
        hub.poll(10_000)
        svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        if svc["state"] == "connected":
            return
    raise SystemExit(f"service {name} did not connect within {timeout:.0f} s")


def drain_all(hub, limit: int = 100) -> int:
    n = 0
    for _ in range(limit):
        got = hub.poll(10_000)
        if not got:
            break
        n += len(got)
    return n


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - not installed is an answer
        return None


def _cmd(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def build_kind(so: Path) -> str:
    data = so.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    for profile in ("release", "debug"):
        candidate = target / profile / "libdirector_link.so"
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == sha:
            return profile
    return "debug" if b".debug_info" in data else "release"


def machine_info() -> dict:
    import director_link

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    except OSError:
        pass
    so = Path(director_link._native.__file__).resolve()
    return {
        "cpu_model": model or "unknown",
        "cpu_count": os.cpu_count(),
        "ram_gib": round(mem, 1),
        "os": os_name,
        "python": sys.version.split()[0],
        "rustc": _cmd(["rustc", "--version"]),
        "director_link": director_link.__version__,
        "extension": str(so),
        "build": build_kind(so),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "libraries": {
            name: _version(name) for name in ("websockets", "websocket-client", "requests", "httpx", "coverage")
        },
    }
