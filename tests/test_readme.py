"""The README's examples run, so the README cannot drift from the code: every ```python and ```sh block of
README.md is a test of its own, executed against the ComfyUI simulator and the real Gradio, LiteLLM and MCP test
servers (``tests/backends/servers.py``).

The servers listen on one loopback alias (``127.0.0.N``) on the ports the README names (8188, 4000, 7860, 7861,
7865, 8000), so an example keeps its meaning — including the service names derived from the address — and only
``127.0.0.1`` is rewritten to that alias. What cannot run here is rewritten to loopback or listed in ``NOT_RUN``
with the reason, and is still compiled (Python) or parsed (``bash -n`` and the CLI's own argument parser), so it
cannot rot either. Files the examples name (``shot.json``, ``frame.png``, ``take_03.wav``, ``shots.csv``,
``workflows/``) are real files in the example's working folder.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import director_link
import pytest
from director_link.cli import build_parser
from director_link.testing import ComfySimulator

from .backends.servers import HERE, port_free, start, start_gradio, start_wangp_mcp, venv_python
from .faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LITELLM_KEY = "sk-director-test"
WAIT = 120.0

# The two set-up commands a new user types; kept exactly (and `.ci/run` runs the second one verbatim).
SET_UP = "python3 -m pip install . && director-link demo"
TEST_COMMAND = (
    ". .ci/backends.sh && . .ci/datastores.sh && python3 -m pip install -e '.[test]' && cargo test && python3 -m pytest"
)

# Port the README names → the server fixture that answers there.
PORTS = {8188: "comfy", 4000: "litellm", 7860: "wan2gp", 7861: "locked", 7865: "rvc", 8000: "mcp", 8328: "studio"}

# Commands not run here, each with the reason; they are still parsed.
NOT_RUN = {
    "python3 -m pip install .": "installs the package under test; this suite runs inside that install",
    ". .ci/backends.sh": "installs the test servers' venvs; they are what this suite runs against",
    ". .ci/datastores.sh": "starts the PostgreSQL and Redis this suite runs against",
    "python3 -m pip install -e '.[test]'": "installs the package under test; this suite runs inside that install",
    "cargo test": "the README's test command is the command that runs this test (.ci/run runs it verbatim)",
    "python3 -m pytest": "the README's test command is the command that runs this test (.ci/run runs it verbatim)",
    "director-link call rvc 127.0.0.1:7865 infer_convert 0 @take_03.wav 0 rmvpe": (
        "the real RVC WebUI keeps the loaded voice for every caller, the look-alike per session (gr.State), so a "
        "fresh CLI session has none; the same call runs in the Python example after infer_change_voice"
    ),
}


# ---- the README's blocks ------------------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    code: str
    line: int
    section: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{self.lang}-line{self.line}-{slug}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1) not in ("python", "sh"):
            continue
        headings = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(m.group(1), m.group(2), line, headings[-1] if headings else "top"))
    return out


BLOCKS = readme_blocks()


def test_every_example_block_is_collected():
    fences = re.findall(r"^```(\w*)$", README.read_text(), re.M)
    opening = fences[::2]
    assert len(BLOCKS) == sum(1 for f in opening if f in ("python", "sh")) >= 7
    assert set(opening) <= {"python", "sh", ""}, f"a block in another language would go unchecked: {opening}"


def test_the_set_up_commands_are_unchanged():
    text = README.read_text()
    assert f"```sh\n{SET_UP}\n```" in text
    assert f"```sh\n{TEST_COMMAND}\n```" in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(), ".ci/run runs the README's test command verbatim"


# ---- rewriting to loopback ----------------------------------------------------------------------------------------


def rewrite(code: str, host: str) -> str:
    """The example as it runs here: 127.0.0.1 → the alias, the LAN host → the alias, no multicast."""
    for port in PORTS:
        code = code.replace(f"127.0.0.1:{port}", f"{host}:{port}")
    code = code.replace("10.0.0.5", host)  # a studio box on the LAN: the alias stands in for it
    code = code.replace('"box:9000"', f'"{host}:9000"')  # a named host: nothing listens there, reported as such
    code = re.sub(r"mdns=1(\.0)?", "mdns=0.0", code)  # DNS-SD is multicast: off here
    code = code.replace("--mdns 1", "--mdns 0")
    for literal in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", code):
        assert ipaddress.ip_address(literal).is_loopback, f"{literal} would leave this machine"
    assert not re.search(r"mdns[= ]+[1-9]", code), "multicast would leave this machine"
    return code


def needs(code: str) -> list[str]:
    wanted = [name for port, name in PORTS.items() if f":{port}" in code]
    if '"comfyui"' in code and "comfy" not in wanted:
        wanted.append("comfy")
    return wanted


# ---- the servers --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alias() -> str:
    """A loopback alias where every port the README names is free (so the servers can sit on them)."""
    for n in range(50, 90):
        host = f"127.0.0.{n}"
        if all(port_free(host, port) for port in PORTS):
            return host
    pytest.fail(f"no loopback alias 127.0.0.50-89 has all of {sorted(PORTS)} free (a wildcard listener?)")


def _on(server, port: int):
    assert server.port == port, f"{server.name} is on {server.port}, not {port}"
    return server


@pytest.fixture(scope="module")
def comfy(alias):
    sim = ComfySimulator(time_scale=0.05)
    proxy = FaultProxy(sim.port, alias, 8188)  # the simulator listens on 127.0.0.1: a relay puts it on the alias
    try:
        yield sim
    finally:
        proxy.close()
        sim.close()


@pytest.fixture(scope="module")
def litellm(alias, backend_tmp):
    python = venv_python("DIRECTOR_LINK_LITELLM_PYTHON")
    config = backend_tmp / "readme-litellm.yaml"
    # The recorded mock models plus the one the README names (a studio proxy would route it to a real model).
    extra = (
        "  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        '      api_key: sk-upstream-not-used\n      mock_response: "Shot 1: a chase at dawn."\n\n'
    )
    recorded = (FIXTURES / "litellm" / "config.yaml").read_text()
    assert "\ngeneral_settings:" in recorded
    config.write_text(recorded.replace("\ngeneral_settings:", extra + "general_settings:", 1))
    cmd = [str(Path(python).parent / "litellm"), "--config", str(config), "--host", alias, "--port", "4000"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    server = start("litellm-readme", cmd, alias, 4000, True, "health/liveliness", env, backend_tmp)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wan2gp(alias, backend_tmp):
    server = start_gradio(venv_python("DIRECTOR_LINK_GRADIO5_PYTHON"), alias, 7860, backend_tmp)
    yield _on(server, 7860)
    server.stop()


@pytest.fixture(scope="module")
def locked(alias, backend_tmp):
    server = start_gradio(
        venv_python("DIRECTOR_LINK_GRADIO5_PYTHON"), alias, 7861, backend_tmp, GRADIO_APP_AUTH="user:password"
    )
    yield _on(server, 7861)
    server.stop()


@pytest.fixture(scope="module")
def rvc(alias, backend_tmp):
    server = start_gradio(venv_python("DIRECTOR_LINK_GRADIO3_PYTHON"), alias, 7865, backend_tmp, HERE / "rvc_app.py")
    yield _on(server, 7865)
    server.stop()


@pytest.fixture(scope="module")
def mcp(alias, backend_tmp):
    out = backend_tmp / "readme-mcp-out"
    out.mkdir(exist_ok=True)
    server = start_wangp_mcp(venv_python("DIRECTOR_LINK_MCP_PYTHON"), alias, 8000, backend_tmp, out, known=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio(alias, backend_tmp):
    """`director-link serve --simulator` on the alias's port 8328, as the README starts it."""
    out = backend_tmp / "readme-studio-out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "director_link.cli",
            "serve",
            "--simulator",
            "--host",
            alias,
            "--port",
            "8328",
            "--database",
            "memory",
            "--out",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        assert json.loads(line)["port"] == 8328
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the files the examples name ----------------------------------------------------------------------------------


def _png(path: Path, width: int = 8, height: int = 8) -> None:
    rows = b"".join(b"\x00" + bytes([40, 120, 200]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(i.to_bytes(2, "little", signed=True) for i in range(-400, 400, 3)))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The example's working folder, with the files it names."""
    shutil.copytree(ROOT / "workflows", tmp_path / "workflows")
    # shot.json: a UI-format workflow as ComfyUI's editor saves it (the recorded default graph).
    shutil.copy(FIXTURES / "comfyui" / "ui_conversion" / "default_graph.workflow.json", tmp_path / "shot.json")
    _png(tmp_path / "frame.png")
    _wav(tmp_path / "take_03.wav")
    shutil.copy(FIXTURES / "batch" / "shots.csv", tmp_path / "shots.csv")  # the shot list the batch example names
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIRECTOR_LINK_OPENAI_KEY", LITELLM_KEY)
    return tmp_path


def wait_jobs(hub, timeout: float = WAIT) -> list[dict]:
    """Every job the hub knows, once all have ended (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = hub.snapshot()["jobs"]
        if all(j["state"] in ("completed", "failed", "cancelled") for j in jobs):
            return jobs
        hub.wait_for_events(0.1)
        hub.poll()
    raise AssertionError(f"jobs still running after {timeout} s: {hub.snapshot()['jobs']}")


def wait_connected(hub, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        if svc["state"] == "connected":
            return
        hub.wait_for_events(0.1)
        hub.poll()
    raise AssertionError(f"{name} did not connect: {svc}")


# ---- Python blocks ------------------------------------------------------------------------------------------------


def run_python(block: Block, host: str, workdir: Path) -> None:
    compile(block.code, f"README.md:{block.line}", "exec")  # the text as printed compiles
    code = rewrite(block.code, host)
    own_hub = "Hub(" in code
    ns: dict = {"__name__": "readme_example"}
    hub = None
    if not own_hub:
        # A block that continues the first one: the hub it talks to, and the key it names.
        hub = director_link.Hub(output_dir=str(workdir / "renders"))
        ns.update(hub=hub, key=LITELLM_KEY)
        if '"comfyui"' in code and 'add_service("comfyui"' not in code:
            hub.add_service("comfyui", f"{host}:8188")
    try:
        exec(compile(code, f"README.md:{block.line}", "exec"), ns)
        if "add_pool(" in code:
            # The pool example: every shot completed, on one of the pool's servers, into renders/<shot>/<job id>/.
            jobs = ns["jobs"]
            assert len(jobs) == 6 and all(j.state == "completed" and j.outputs for j in jobs)
            assert all(j.info()["server"] in [p["url"] for p in ns["pool"]["servers"]] for j in jobs)
            assert all(Path(o).parent == Path("renders", j.info()["tag"], j.id) for j in jobs for o in j.outputs)
        elif own_hub:
            job = ns["job"]
            assert job.state == "completed" and job.outputs, job.info()
            # "files under renders/shot_010/<job id>/", as the example's last comment says
            assert all(Path(o).is_file() and Path(o).parent == Path("renders", "shot_010", job.id) for o in job.outputs)
        else:
            jobs = wait_jobs(hub)
            failed = [j for j in jobs if j["state"] != "completed"]
            assert not failed, f"examples that did not complete: {failed}"
            names = {s["name"] for s in hub.snapshot()["services"]}
            if "locked" in names:
                wait_connected(hub, "locked")  # the login with token="user:password" worked
            if "api" in ns:
                assert ns["api"].format == "api"
    finally:
        if hub is not None:
            hub.close()


# ---- sh blocks ----------------------------------------------------------------------------------------------------


def commands(code: str) -> list[tuple[str, list[str]]]:
    """(the command as printed, its argv) for every command of a block; `&&` chains split."""
    out = []
    for line in code.splitlines():
        argv = shlex.split(line, comments=True)
        current: list[str] = []
        for token in [*argv, "&&"]:
            if token == "&&":
                if current:
                    out.append((shlex.join(current), current))
                current = []
            else:
                current.append(token)
    return out


def cli(argv: list[str], cwd: Path, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director_link.cli", *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def slow_job_on(host: str) -> tuple[director_link.Hub, str]:
    """A job someone else queued (for `director-link cancel JOB_ID`)."""
    hub = director_link.Hub()
    name = hub.add_service("comfyui", f"{host}:8188", name="someone")
    prompt = {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 600.0, "nonce": time.time_ns() % 10**9}}}
    job = hub.submit(name, prompt)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and job.state not in ("queued", "running"):
        hub.wait_for_events(0.1)
        hub.poll()
    assert job.state in ("queued", "running"), job.info()
    return hub, job.id


def run_watch(argv: list[str], cwd: Path) -> None:
    """`watch` runs until Ctrl-C, as a user would stop it: once it has said something, SIGINT; it exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "director_link.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd
    )
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    said = b"".join(first) + (rest or b"")
    assert first and first[0], "watch printed nothing"
    assert proc.returncode == 0, said.decode(errors="replace")


def run_sh(block: Block, host: str, workdir: Path) -> None:
    check = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr
    for printed, argv in commands(block.code):
        if printed in NOT_RUN:
            if argv[0] == "director-link":
                build_parser().parse_args(argv[1:])  # still a valid command line (exits with 2 if not)
            elif argv[0] == ".":
                assert (ROOT / argv[1]).is_file(), printed
            continue
        if argv[0] == "curl":
            res = subprocess.run(
                shlex.split(rewrite(shlex.join(argv), host)), capture_output=True, text=True, timeout=60, cwd=workdir
            )
            assert res.returncode == 0, f"{printed}\n{res.stderr}"
            answer = json.loads(res.stdout)
            assert "error" not in answer, answer
            continue
        assert argv[0] == "director-link", f"{printed!r}: not a director-link command and not in NOT_RUN"
        argv = shlex.split(rewrite(shlex.join(argv), host))[1:]
        build_parser().parse_args(argv)
        if argv[0] == "run" and "--server" not in argv:
            argv += ["--server", f"{host}:8188"]  # its default, 127.0.0.1:8188, is the alias here
        if argv[0] == "watch":
            run_watch(argv, workdir)
            continue
        if argv[0] == "serve":
            # Serves until Ctrl-C, like watch; on the alias, with a port of its own (8328 may be the fixture's).
            port = argv.index("--port") + 1 if "--port" in argv else None
            if port is not None:
                argv[port] = "0"
            run_watch([*argv, "--host", host, "--database", "memory", "--out", str(workdir / "studio")], workdir)
            continue
        other = None
        if "JOB_ID" in argv:
            other, job_id = slow_job_on(host)
            argv = [job_id if a == "JOB_ID" else a for a in argv]
        try:
            res = cli(argv, workdir)
            assert res.returncode == 0, (
                f"{printed}\n(ran: director-link {shlex.join(argv)})\n{res.stdout}\n{res.stderr}"
            )
            if other is not None:
                ended = wait_jobs(other, 30)
                # Interrupted by another client (this CLI): its owner reports it failed, saying by whom.
                assert [(j["state"], (j.get("error") or {}).get("code")) for j in ended] == [
                    ("failed", "interrupted")
                ], ended
        finally:
            if other is not None:
                other.close()
        if argv[0] == "demo":
            assert list((workdir / "director-link-output").rglob("*.png")), "the demo wrote no image"
        if argv[0] == "batch":
            out = workdir / argv[argv.index("--out") + 1]
            for name in ("shot_010", "shot_020", "shot_020_wide"):
                manifest = json.loads((out / name / "manifest.json").read_text())
                assert manifest["files"] and (out / name / manifest["files"][0]["path"]).is_file(), manifest
        if argv[0] == "convert" and "-o" in argv:
            assert json.loads((workdir / argv[argv.index("-o") + 1]).read_text())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_example(block, alias, workdir, request):
    for name in needs(rewrite(block.code, alias)):
        request.getfixturevalue(name)
    if block.lang == "python":
        run_python(block, alias, workdir)
    else:
        run_sh(block, alias, workdir)


def test_the_batch_example_runs_the_shot_list_the_readme_shows():
    assert "```\n" + (FIXTURES / "batch" / "shots.csv").read_text() + "```" in README.read_text()


def test_not_run_commands_are_still_in_the_readme():
    """A NOT_RUN entry whose command left the README would excuse nothing: keep the list honest."""
    printed = {p for b in BLOCKS if b.lang == "sh" for p, _ in commands(b.code)}
    assert set(NOT_RUN) <= printed, set(NOT_RUN) - printed
