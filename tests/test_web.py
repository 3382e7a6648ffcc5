"""The browser side (`web/`): the studio server serves the committed monitor page byte for byte, and the web
package's own checks run from here, so the README's one test command runs them too: lint, types, the Vitest suite
(client and hooks against a real `ws` server), a fresh build equal to the committed one, and the end-to-end run in
headless Chromium against `director-link serve --simulator` (a job's life, restarts, reload, polling; and the fault
screens: a 401, the circuit breaker and recovery by offset).

They need Node 20+ with npm, and Chromium at /usr/bin/chromium (or `$CHROMIUM`); `.ci/run` installs both. Without
them these tests fail and say what is missing: a browser suite that silently does not run proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import director_link
import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
DIST = WEB / "dist"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Bounds on a hang, not timing claims: `npm ci` downloads on a cold cache; the e2e run starts servers and a browser.
NPM_CI_TIMEOUT = 900
STEP_TIMEOUT = 900


def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/assets/monitor.js", "assets/monitor.js", "text/javascript; charset=utf-8"),
        ("/assets/monitor.css", "assets/monitor.css", "text/css; charset=utf-8"),
    ],
)
def test_the_studio_server_serves_the_committed_monitor(tmp_path, path, file, content_type):
    server = director_link.serve(port=0, token="s3cret", output_dir=str(tmp_path), database="memory")
    try:
        status, headers, body = get(server.url.rstrip("/") + path)
        assert status == 200
        assert headers["content-type"] == content_type
        assert body == (DIST / file).read_bytes(), f"the embedded {file} differs from web/dist: rebuild the extension"
        # The page is public; the data behind it is not.
        assert get(server.url.rstrip("/") + "/api/jobs")[0] == 401
        assert get(server.url.rstrip("/") + "/api/jobs", token="s3cret")[0] == 200
    finally:
        server.close()


def test_the_monitor_references_only_embedded_files():
    html = (DIST / "index.html").read_text()
    assert 'src="/assets/monitor.js"' in html
    assert 'href="/assets/monitor.css"' in html
    assert sorted(p.relative_to(DIST).as_posix() for p in DIST.rglob("*") if p.is_file()) == [
        "assets/monitor.css",
        "assets/monitor.js",
        "index.html",
    ]


def _need_node() -> str:
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not (npm and node):
        pytest.fail("the web tests need Node 20+ and npm on PATH (`.ci/run` installs them: apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"the web tests need Node 20+, this is {version}")
    return npm


def _run(args: list[str], env: dict | None = None, timeout: float = STEP_TIMEOUT) -> None:
    r = subprocess.run(args, cwd=WEB, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}")


@pytest.fixture(scope="module")
def npm():
    """`npm ci` from the committed lockfile, once per run (skipped when node_modules already matches it)."""
    npm = _need_node()
    stamp = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        _run([npm, "ci", "--no-audit", "--no-fund"], timeout=NPM_CI_TIMEOUT)
    return npm


def test_web_lint_and_types(npm):
    _run([npm, "run", "lint"])
    _run([npm, "run", "typecheck"])


def test_web_unit_suite(npm):
    """The client and the hooks against a real `ws` server (Vitest; see web/test/)."""
    _run([npm, "test"])


def test_web_dist_is_a_fresh_build(npm):
    """What is committed (and embedded in the extension) is what the source builds."""
    _run([npm, "run", "check-dist"])


def _cli() -> str:
    here = Path(sys.executable).parent / "director-link"
    found = str(here) if here.exists() else shutil.which("director-link")
    if not found:
        pytest.fail("the e2e run needs the `director-link` command of this install")
    return found


def test_web_end_to_end_in_chromium(npm):
    """A job's life on the monitor, a studio-server restart mid-job, a reload mid-job, polling and back."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the e2e run needs Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)")
    env = {**os.environ, "DIRECTOR_LINK_CLI": _cli(), "CHROMIUM": CHROMIUM}
    _run([npm, "run", "e2e"], env=env)


def test_web_fault_screens_in_chromium(npm):
    """A 401 (no token, a wrong one, the right one: said so, no retry storm), and the studio server gone until the
    circuit breaker opens (backoff with jitter, its reason and next try shown), then back: the page resumes by
    offset and has every event the server's log holds (web/e2e/faults.mjs)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the e2e run needs Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)")
    env = {**os.environ, "DIRECTOR_LINK_CLI": _cli(), "CHROMIUM": CHROMIUM}
    _run([npm, "run", "e2e:faults"], env=env)
