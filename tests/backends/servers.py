"""Real servers for the backend tests, started as subprocesses on loopback aliases (127.0.0.2, 127.0.0.3 stand in
for other hosts). Each is found through an environment variable naming the Python of the venv it is installed in
(``.ci/backends.sh`` makes them); a test that needs a missing one is skipped and says which variable to set.

A server is bound on its real default port when that port is free on the alias (so a bare-host scan finds it),
else on a free port (then tests probe ``host:port``). Startup waits are bounded; every process is stopped at the
end of the session.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The recordings and the apps they were recorded from, copied into the project (tests/fixtures/README.md).
FIXTURES = HERE.parent / "fixtures"
LITELLM_KEY = "sk-director-test"
STARTUP_LIMIT = 180.0  # bounds a hang only: a loaded 2-core machine can take minutes to start Gradio


@dataclass
class Running:
    """A server process and where it listens."""

    name: str
    host: str
    port: int
    proc: subprocess.Popen
    log: Path
    startup_seconds: float
    on_known_port: bool

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}/"

    @property
    def address(self) -> str:
        """What to pass to ``hub.discover``: the bare host when on its known port, else ``host:port``."""
        return self.host if self.on_known_port else f"{url_host(self.host)}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def url_host(host: str) -> str:
    """An IPv6 address in brackets, as URLs want it."""
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pick_port(host: str, preferred: int) -> tuple[int, bool]:
    return (preferred, True) if port_free(host, preferred) else (free_port(host), False)


def venv_python(var: str) -> str:
    path = os.environ.get(var, "").strip()
    if not path:
        pytest.skip(f"{var} is not set (run `source .ci/backends.sh` to install the server and set it)")
    if not Path(path).exists():
        pytest.skip(f"{var}={path} does not exist (run .ci/backends.sh again)")
    return path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def start(
    name: str,
    cmd: list[str],
    host: str,
    port: int,
    known: bool,
    ready_path: str,
    env: dict | None = None,
    log_dir: Path | None = None,
) -> Running:
    assert ipaddress.ip_address(host).is_loopback, "test servers stay on loopback"
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log = log_dir / f"director-link-{name}-{host}-{port}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=log_dir,
        )
    server = Running(name, host, port, proc, log, 0.0, known)
    url = f"http://{url_host(host)}:{port}/{ready_path}"
    while time.monotonic() - started < STARTUP_LIMIT:
        if proc.poll() is not None:
            break
        if _ready(url):
            server.startup_seconds = time.monotonic() - started
            print(f"\n[{name}] ready on {host}:{port} after {server.startup_seconds:.1f} s")
            return server
        time.sleep(0.25)
    server.stop()
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"{name} did not start on {host}:{port} within {STARTUP_LIMIT:.0f} s:\n{tail}")


def start_gradio(python: str, host: str, preferred: int, tmp: Path, app: Path | None = None, **app_env: str) -> Running:
    port, known = pick_port(host, preferred)
    env = {
        "GRADIO_APP_HOST": host,
        "GRADIO_APP_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_APP_STEP_S": "0.05",
        **app_env,
    }
    app = app or FIXTURES / "gradio" / "tools" / "gradio_app.py"
    cmd = [python, str(HERE / "gradio_host.py"), str(app)]
    return start(
        f"gradio-{app_env.get('GRADIO_APP_TITLE', 'wangp').lower()}", cmd, host, port, known, "config", env, tmp
    )


def start_litellm(python: str, host: str, preferred: int, tmp: Path) -> Running:
    port, known = pick_port(host, preferred)
    litellm = Path(python).parent / "litellm"
    cmd = [str(litellm), "--config", str(FIXTURES / "litellm" / "config.yaml"), "--host", host, "--port", str(port)]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return start("litellm", cmd, host, port, known, "health/liveliness", env, tmp)


def start_wangp_mcp(python: str, host: str, port: int, tmp: Path, out: Path, known: bool = False) -> Running:
    """The WanGP look-alike MCP server (``wangp_mcp_app.py``, official ``mcp`` SDK) writing its videos to ``out``."""
    env = {"WANGP_MCP_HOST": host, "WANGP_MCP_PORT": str(port), "WANGP_MCP_OUT": str(out)}
    cmd = [python, str(HERE / "wangp_mcp_app.py")]
    # GET /mcp/ answers 406 (it wants POSTs): a sign of life.
    return start("wangp-mcp", cmd, host, port, known, "mcp/", env, tmp)


def start_http_server(host: str, preferred: int, tmp: Path) -> Running:
    port, known = pick_port(host, preferred)
    cmd = [sys.executable, "-m", "http.server", "--bind", host, str(port)]
    return start("http.server", cmd, host, port, known, "", None, tmp)


@pytest.fixture(scope="session")
def backend_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backends")


@pytest.fixture(scope="session")
def litellm_server(backend_tmp):
    server = start_litellm(venv_python("DIRECTOR_LINK_LITELLM_PYTHON"), "127.0.0.3", 4000, backend_tmp)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def wangp_server(backend_tmp):
    server = start_gradio(venv_python("DIRECTOR_LINK_GRADIO5_PYTHON"), "127.0.0.2", 7860, backend_tmp)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def unrelated_server(backend_tmp):
    """A plain HTTP server on a Gradio port: must be reported as unknown, not guessed."""
    server = start_http_server("127.0.0.3", 7861, backend_tmp)
    yield server
    server.stop()
