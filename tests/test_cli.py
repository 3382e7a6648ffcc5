"""The director-link command, run as a real subprocess against a real server socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, fail_prompt, progress_prompt, slow_prompt


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director_link.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path: Path, prompt: dict) -> str:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(prompt))
    return str(path)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_run_with_json_events_and_set(server, tmp_path):
    out = tmp_path / "renders"
    res = cli(
        "run", str(ROOT / "workflows" / "invert.json"), "--server", server.url,
        "--set", "1.width=40", "--set", "1.height=24", "--out", str(out), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    events = json_lines(res.stdout)
    types = [e["type"] for e in events]
    assert "job_queued" in types and types[-1] == "job_completed"
    paths = events[-1]["outputs"]
    assert len(paths) == 1 and Path(paths[0]["path"]).is_file()
    assert out in Path(paths[0]["path"]).parents


def test_run_prints_progress_for_people(server, tmp_path):
    res = cli("run", write(tmp_path, progress_prompt(steps=4, step_seconds=0.05)), "--server", server.url,
              "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "100%" in res.stdout and "completed" in res.stdout


@pytest.mark.parametrize(
    "args, code",
    [
        (["run", "no/such/workflow.json"], 2),
        (["run", "{workflow}", "--set", "oops"], 2),
        (["run", "{workflow}", "--server", "http://[::1"], 2),
    ],
)
def test_bad_input_exits_2(tmp_path, args, code):
    wf = write(tmp_path, progress_prompt())
    res = cli(*[a.replace("{workflow}", wf) for a in args], "--out", str(tmp_path / "o"))
    assert res.returncode == code, res.stdout + res.stderr
    assert "error" in (res.stdout + res.stderr).lower()


def test_cannot_connect_exits_3(tmp_path):
    res = cli("run", write(tmp_path, progress_prompt()), "--server", f"127.0.0.1:{closed_port()}",
              "--connect-timeout", "1.5", "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot connect" in res.stdout


def test_failed_job_exits_4(server, tmp_path):
    res = cli("run", write(tmp_path, fail_prompt("boom")), "--server", server.url, "--out", str(tmp_path / "o"))
    assert res.returncode == 4, res.stdout + res.stderr
    assert "boom" in res.stdout


def test_timeout_exits_5(server, tmp_path):
    res = cli("run", write(tmp_path, slow_prompt(seconds=60)), "--server", server.url, "--timeout", "1",
              "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 5, res.stdout + res.stderr
    assert "timed out" in res.stdout
    # The job goes on on the server, and the message says how to stop it: do that, so it frees the server.
    job_id = res.stdout.split("director-link cancel ")[1].split()[0]
    stop = cli("cancel", job_id, "--server", server.url)
    assert stop.returncode == 0 and "interrupting" in stop.stdout, stop.stdout


def test_doctor_with_nothing_running_says_so_and_exits_0():
    res = cli("doctor", "--server", f"127.0.0.1:{closed_port()}")
    assert res.returncode == 0
    assert "nothing there" in res.stdout and "No ComfyUI answered" in res.stdout


@pytest.mark.sim_only
def test_doctor_finds_the_simulator(server):
    res = cli("doctor", "--server", server.url, "--json")
    assert res.returncode == 0
    (result,) = json.loads(res.stdout)["results"]
    assert result["kind"] == "comfyui" and result["simulator"] is True and result["version"] == "0.3.64"


def test_demo_on_the_simulator_writes_an_image(tmp_path):
    res = cli("demo", "--simulator", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    images = list(tmp_path.rglob("*.png"))
    assert len(images) == 1 and images[0].read_bytes()[:4] == b"\x89PNG"
    assert "simulator" in res.stdout and "100%" in res.stdout


def test_cancel_command_removes_a_queued_job(server, tmp_path):
    import uuid

    blocker = server.post("/prompt", {"prompt": slow_prompt(seconds=8), "client_id": "blocker"})["prompt_id"]
    queued = server.post(
        "/prompt", {"prompt": slow_prompt(seconds=8), "client_id": "victim", "prompt_id": str(uuid.uuid4())}
    )
    res = cli("cancel", queued["prompt_id"], "--server", server.url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "removed" in res.stdout
    pending = [item[1] for item in server.get("/queue")["queue_pending"]]
    assert queued["prompt_id"] not in pending
    running = [item[1] for item in server.get("/queue")["queue_running"]]
    assert running == [blocker], "the running job was not touched"
    server.post("/interrupt", {"prompt_id": blocker})


def test_watch_shows_the_servers_events(server):
    import threading
    import time

    def other_client():
        time.sleep(1.0)
        server.post("/prompt", {"prompt": slow_prompt(seconds=0.5), "client_id": "someone-else"})

    t = threading.Thread(target=other_client)
    t.start()
    res = cli("watch", "--server", server.url, "--duration", "4", "--json")
    t.join()
    assert res.returncode == 0, res.stdout + res.stderr
    events = json_lines(res.stdout)
    states = [e["state"] for e in events if e["type"] == "service_state_changed"]
    assert "connected" in states
    queue = [e["queue_remaining"] for e in events if e["type"] == "queue_changed"]
    assert 1 in queue, f"the other client's prompt showed in the queue: {queue}"


def test_run_uploads_at_file_values(server, tmp_path):
    first = cli("run", str(ROOT / "workflows" / "invert.json"), "--server", server.url, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stdout + first.stderr
    image = next((tmp_path / "a").rglob("*.png"))
    wf = write(tmp_path, {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl_test/loaded"}},
    })  # fmt: skip
    res = cli("run", wf, "--server", server.url, "--set", f"LoadImage.image=@{image}", "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "uploaded" in res.stdout and list((tmp_path / "b").rglob("*.png"))
    missing = cli("run", wf, "--server", server.url, "--set", "LoadImage.image=@/no/such.png", "--out", str(tmp_path))
    assert missing.returncode == 2 and "no such file" in missing.stdout
