"""``director-link batch``: a shot list run as real subprocesses against simulators over loopback sockets."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from director_link import batch as b

from .conftest import ROOT
from .test_cli import closed_port

INVERT = str(ROOT / "workflows" / "invert.json")


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director_link.cli", "batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def of(evs: list[dict], kind: str) -> list[dict]:
    return [e for e in evs if e["type"] == kind]


def shots(tmp_path: Path, text: str, name: str = "shots.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def slow_workflow(tmp_path: Path) -> str:
    path = tmp_path / "slow.json"
    path.write_text(json.dumps({"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 60.0, "nonce": 0}}}))
    return str(path)


def assert_manifest(folder: Path, row_width: int) -> dict:
    """The folder holds the core's manifest, whose files exist with the recorded size and hash."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["workflow"]["1"]["inputs"]["width"] == row_width
    assert manifest["files"], manifest
    for f in manifest["files"]:
        data = (folder / f["path"]).read_bytes()
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    return manifest


def server_idle(server) -> bool:
    queue = server.get("/queue")
    return not queue["queue_running"] and not queue["queue_pending"]


def wait_idle(server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not server_idle(server):
        time.sleep(0.1)
    assert server_idle(server), server.get("/queue")


# ---- over one server ------------------------------------------------------------------------------------------------


def test_every_row_is_a_job_with_its_files_and_manifest(server, tmp_path):
    rows = [(f"shot_{i:02d}", 16 + i, 0x102030 * (i + 1) % 0xFFFFFF) for i in range(6)]
    text = "tag,1.width,1.height,1.color\n" + "".join(f"{t},{w},12,{c}\n" for t, w, c in rows)
    out = tmp_path / "renders"
    res = cli(shots(tmp_path, text), "--workflow", INVERT, "--server", server.url, "--out", str(out), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    evs = events(res.stdout)
    done = of(evs, "row_completed")
    assert sorted((e["line"], e["output"]) for e in done) == [(i + 2, t) for i, (t, _, _) in enumerate(rows)]
    for tag, width, _ in rows:
        manifest = assert_manifest(out / tag, width)
        assert manifest["tag"] == tag
    # The hub's own events come through too, one terminal event per job.
    job_ids = {e["job_id"] for e in of(evs, "row_submitted")}
    assert len(job_ids) == 6 and {e["job_id"] for e in of(evs, "job_completed")} == job_ids
    assert of(evs, "batch_finished")[-1] | {"seconds": 0} == {
        "type": "batch_finished", "completed": 6, "failed": 0, "cancelled": 0, "invalid": 0, "skipped": 0,
        "seconds": 0, "exit_code": 0,
    }  # fmt: skip
    assert not (out / b.STAGING).exists(), "the staging folder is removed once empty"


def test_jsonl_rows_with_output_names_and_a_template_by_name(server, tmp_path):
    lines = [
        {"tag": "fox", "output": "fox_take1", "params": {"1.width": 20}},
        {"output": "owl", "1.width": 24, "Empty Image.height": 10},
        {"tag": "fox", "output": "fox_take2", "params": {"1.width": 28}},
    ]
    path = shots(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n\n", "shots.jsonl")
    out = tmp_path / "o"
    res = cli(path, "--workflow", "invert", "--server", server.url, "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_manifest(out / "fox_take1", 20)
    owl = assert_manifest(out / "owl", 24)
    assert owl["workflow"]["1"]["inputs"]["height"] == 10
    assert_manifest(out / "fox_take2", 28)
    # Not a terminal: plain lines, no cursor movement.
    assert "\x1b[" not in res.stdout and "done   owl (line 2)" in res.stdout
    assert "batch: 3 done, 0 failed" in res.stdout


@pytest.mark.sim_only
def test_resume_skips_rows_whose_manifest_exists(server, tmp_path):
    text = "output,1.width\na,10\nb,11\nc,12\n"
    path, out = shots(tmp_path, text), tmp_path / "o"
    first = cli(path, "--workflow", INVERT, "--server", server.url, "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    (out / "b" / "manifest.json").unlink()  # as if b had been interrupted
    server.sim.clear_requests()
    again = cli(path, "--workflow", INVERT, "--server", server.url, "--out", str(out), "--resume", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    evs = events(again.stdout)
    assert sorted(e["output"] for e in of(evs, "row_skipped")) == ["a", "c"]
    assert [e["output"] for e in of(evs, "row_completed")] == ["b"]
    posts = [r for r in server.sim.requests() if r["method"] == "POST" and r["path"] == "/prompt"]
    assert len(posts) == 1 and posts[0]["json"]["prompt"]["1"]["inputs"]["width"] == 11
    # b's earlier folder (no manifest) is kept under another name, not overwritten.
    assert (out / "b" / "manifest.json").is_file() and (out / "b~1").is_dir()
    # Everything done: nothing to connect to, exit 0 even with the server gone.
    third = cli(path, "--workflow", INVERT, "--server", f"127.0.0.1:{closed_port()}", "--out", str(out), "--resume")
    assert third.returncode == 0, third.stdout + third.stderr


def test_bad_rows_are_reported_by_line_and_the_good_rows_still_run(server, tmp_path):
    text = (
        "tag,output,1.width,1.color\n"  # line 1
        "ok1,,16,1\n"  # 2
        "\n"  # 3: blank, skipped
        "toomany,,16,1,9\n"  # 4
        "# a comment,,,\n"  # 5
        "notanumber,,wide,1\n"  # 6: fails the node list's type check
        "ok2,,17,2\n"  # 7
        "dup,ok1,18,3\n"  # 8: ok1's folder again
        "../escape,,19,4\n"  # 9: a tag that is no folder name
        'quoted,"two\nlines",20,5\n'  # 10-11: a cell over two lines (an output with a newline)
        "ok3,,21,6\n"  # 12
    )
    out = tmp_path / "o"
    res = cli(shots(tmp_path, text), "--workflow", INVERT, "--server", server.url, "--out", str(out), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    evs = events(res.stdout)
    invalid = {e["line"]: e["message"] for e in of(evs, "row_invalid")}
    assert sorted(invalid) == [4, 6, 8, 9, 10], invalid
    assert "5 cells, the header has 4" in invalid[4]
    assert "1.width" in invalid[6] and "wide" in invalid[6]
    assert "already line 2's" in invalid[8]
    assert "plain folder name" in invalid[9] and "plain folder name" in invalid[10]
    assert sorted(e["output"] for e in of(evs, "row_completed")) == ["ok1", "ok2", "ok3"]
    assert_manifest(out / "ok3", 21)
    assert of(evs, "batch_finished")[-1]["invalid"] == 5


def test_a_selector_the_workflow_lacks_is_a_bad_row_before_connecting(tmp_path):
    path = shots(tmp_path, "tag,1.width,KSampler.seed\na,3,\nb,4,7\n")
    res = cli(path, "--workflow", INVERT, "--server", f"127.0.0.1:{closed_port()}", "--json", "--connect-timeout", "1")
    evs = events(res.stdout)
    (bad,) = of(evs, "row_invalid")
    assert bad["line"] == 3 and "KSampler.seed" in bad["message"]
    assert res.returncode == 3  # the good row still wanted a server, and none answered


def test_jsonl_bad_lines(server, tmp_path):
    text = '{"tag": "a", "1.width": 9}\n{"tag": "b",\n[1, 2]\n{"tag": 5}\n{"tag": "c", "params": 3}\n{"tag": "d"}\n'
    res = cli(shots(tmp_path, text, "s.jsonl"), "--workflow", INVERT, "--server", server.url,
              "--out", str(tmp_path / "o"), "--json")  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    evs = events(res.stdout)
    invalid = {e["line"]: e["message"] for e in of(evs, "row_invalid")}
    assert sorted(invalid) == [2, 3, 4, 5]
    assert "not JSON" in invalid[2] and "one JSON object" in invalid[3]
    assert "tag must be a string" in invalid[4] and "params" in invalid[5]
    assert sorted(e["output"] for e in of(evs, "row_completed")) == ["a", "d"]


# ---- exit codes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, workflow, message",
    [
        ("tag\na\n", "no/such/workflow.json", "no workflow file at no/such/workflow.json"),
        ("tag,,x\na,1,2\n", INVERT, "empty column name"),
        ("tag,Tag\na,b\n", INVERT, "names 'Tag' twice"),
        ("", INVERT, "no header line"),
    ],
)
def test_unusable_input_exits_2_without_connecting(tmp_path, text, workflow, message):
    port = closed_port()
    res = cli(shots(tmp_path, text), "--workflow", workflow, "--server", f"127.0.0.1:{port}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stdout


def test_a_missing_or_unknown_shot_list_exits_2(tmp_path):
    res = cli(str(tmp_path / "nothing.csv"), "--workflow", INVERT)
    assert res.returncode == 2 and "no shot list at" in res.stdout
    other = tmp_path / "shots.txt"
    other.write_text("tag\na\n")
    res = cli(str(other), "--workflow", INVERT)
    assert res.returncode == 2 and ".csv or a .jsonl" in res.stdout
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"tag\nok\ncaf\xe9\n")
    res = cli(str(latin), "--workflow", INVERT)
    assert res.returncode == 2 and "line 3 is not UTF-8" in res.stdout


def test_unreachable_server_exits_3(tmp_path):
    port = closed_port()
    res = cli(shots(tmp_path, "tag\na\n"), "--workflow", INVERT, "--server", f"127.0.0.1:{port}",
              "--connect-timeout", "1.5", "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"cannot connect to 127.0.0.1:{port}" in res.stdout


def test_failed_rows_exit_4_each_with_its_line_and_reason(server, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(
        json.dumps({"5": {"class_type": "AcceptanceFail", "inputs": {"message": "x", "steps_before_failing": 0}}})
    )
    res = cli(shots(tmp_path, "tag,5.message\na,boom one\nb,boom two\n"), "--workflow", str(wf),
              "--server", server.url, "--out", str(tmp_path / "o"), "--json")  # fmt: skip
    assert res.returncode == 4, res.stdout + res.stderr
    failed = sorted((e["line"], e["message"]) for e in of(events(res.stdout), "row_failed"))
    assert [line for line, _ in failed] == [2, 3]
    assert "boom one" in failed[0][1] and "boom two" in failed[1][1]
    assert not (tmp_path / "o" / "a").exists()


@pytest.mark.sim_only
def test_timeout_exits_5_and_cancels_every_job(server, tmp_path):
    text = "tag,1.nonce\n" + "".join(f"s{i},{time.time_ns() % 10**9 + i}\n" for i in range(3))
    res = cli(shots(tmp_path, text), "--workflow", slow_workflow(tmp_path), "--server", server.url,
              "--timeout", "2", "--out", str(tmp_path / "o"), "--json")  # fmt: skip
    assert res.returncode == 5, res.stdout + res.stderr
    evs = events(res.stdout)
    assert len(of(evs, "row_cancelled")) == 3 and not of(evs, "row_unconfirmed")
    assert server_idle(server), server.get("/queue")


@pytest.mark.sim_only
def test_ctrl_c_cancels_cleanly(server, tmp_path):
    text = "tag,1.nonce\n" + "".join(f"s{i},{time.time_ns() % 10**9 + i}\n" for i in range(4))
    proc = subprocess.Popen(
        [sys.executable, "-m", "director_link.cli", "batch", shots(tmp_path, text), "--workflow",
         slow_workflow(tmp_path), "--server", server.url, "--out", str(tmp_path / "o"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if seen[-1]["type"] == "job_started":
                break
        assert seen and seen[-1]["type"] == "job_started", seen
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 4, rest + err
    evs = seen + events(rest)
    assert "Traceback" not in err
    assert len(of(evs, "row_cancelled")) == 4 and not of(evs, "row_unconfirmed")
    assert of(evs, "batch_finished")[-1]["cancelled"] == 4
    # Confirmed by the server before the command ended: nothing queued, nothing running.
    assert server_idle(server), server.get("/queue")


def test_simulator_option_runs_without_a_server(tmp_path):
    res = cli(shots(tmp_path, "tag,1.steps,1.step_seconds,1.nonce\na,2,0.01,1\nb,2,0.01,2\n"), "--workflow",
              "acceptance_progress", "--simulator", "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "o" / "a" / "manifest.json").is_file() and (tmp_path / "o" / "b" / "manifest.json").is_file()
    res = cli(shots(tmp_path, "tag\na\n"), "--workflow", INVERT, "--simulator", "--server", "127.0.0.1:1")
    assert res.returncode == 2 and "not both" in res.stdout


# ---- the display, on its own ----------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_display_redraws_one_block_and_keeps_row_lines():
    stream = Tty()
    d = b.Display(False, stream)
    counts = {"completed": 1, "failed": 0, "running": 2, "waiting": 1, "cancelled": 0, "invalid": 0}
    lines = [b.ServerLine("gpu1", "connected", 1, ["shot_02 40%"]), b.ServerLine("gpu2", "reconnecting", None)]
    d.status(counts, 4, 12.0, lines)
    d.emit("row_completed", "done   shot_01")
    d.status(counts, 4, None, lines)
    text = stream.getvalue()
    # The 3-line block is wiped once, for the row line, which stays; the block is drawn again under it.
    assert text.count("\x1b[3F\x1b[J") == 1 and text.index("\x1b[3F") < text.index("done   shot_01")
    assert "[######..................] 1/4" in text and "ETA 12s" in text
    assert "  gpu1  connected  queue 1  running shot_02 40%" in text and "  gpu2  reconnecting" in text
    assert text.index("done   shot_01") < text.rindex("gpu1")


def test_plain_display_says_server_changes_once():
    stream = io.StringIO()
    d = b.Display(False, stream)
    counts = {"completed": 0, "failed": 0, "running": 0, "waiting": 0, "cancelled": 0, "invalid": 0}
    for state in ("connecting", "connected", "connected", "reconnecting"):
        d.status(counts, 1, None, [b.ServerLine("gpu1", state)])
    assert stream.getvalue() == "[gpu1] connecting\n[gpu1] connected\n[gpu1] reconnecting\n"


def test_server_lines_of_a_pool_name_which_row_runs_where():
    snapshot = json.loads((ROOT / "tests" / "fixtures" / "pool" / "snapshot.json").read_text())
    lines = b.server_lines(snapshot, "farm", {"j1": ("shot_010_take2", 45.0)})
    assert lines == [
        b.ServerLine("127.0.0.1:8188", "connected", 1, ["shot_010_take2 45%"], None),
        b.ServerLine("127.0.0.1:8189", "reconnecting", None, [], "connection refused"),
        b.ServerLine("127.0.0.1:7860", "connected", None, [], "answers as gradio"),
    ]


# ---- over a pool ----------------------------------------------------------------------------------------------------


@pytest.fixture
def three_sims():
    from director_link.testing import ComfySimulator

    from .conftest import REAL_URL, TIME_SCALE

    if REAL_URL:
        pytest.skip("needs three simulators (DIRECTOR_LINK_COMFYUI_URL points at one real ComfyUI)")
    sims = [ComfySimulator(time_scale=TIME_SCALE) for _ in range(3)]
    try:
        yield sims
    finally:
        for sim in sims:
            sim.close()


def progress_rows(n: int) -> str:
    base = time.time_ns() % 10**9
    return "tag,1.steps,1.step_seconds,1.nonce\n" + "".join(f"shot_{i:02d},6,0.2,{base + i}\n" for i in range(n))


def test_several_servers_are_one_pool_and_every_one_gets_work(three_sims, tmp_path):
    out = tmp_path / "o"
    servers = [a for sim in three_sims for a in ("--server", sim.url)]
    res = cli(shots(tmp_path, progress_rows(6)), "--workflow", "acceptance_progress", *servers, "--capacity", "1",
              "--out", str(out), "--json")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    done = of(events(res.stdout), "row_completed")
    assert len(done) == 6
    for e in done:
        manifest = json.loads((out / e["output"] / "manifest.json").read_text())
        host = e["server"].removeprefix("http://").rstrip("/")
        assert manifest["server"] == e["server"] and manifest["service"] == f"{b.POOL_NAME}/{host}"
    # One job in flight per server and six queued at once: every server ran some of them.
    used = {e["server"] for e in done}
    assert used == {sim.url.rstrip("/") + "/" for sim in three_sims}, used
    # Each prompt was posted once, on one server.
    posted = [r["json"]["prompt_id"] for sim in three_sims for r in sim.requests() if r["path"] == "/prompt"
              and r["method"] == "POST"]  # fmt: skip
    assert len(posted) == len(set(posted)) == 6


def test_a_server_that_dies_mid_batch_costs_no_shot(three_sims, tmp_path):
    out = tmp_path / "o"
    servers = [a for sim in three_sims for a in ("--server", sim.url)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "director_link.cli", "batch", shots(tmp_path, progress_rows(9)), "--workflow",
         "acceptance_progress", *servers, "--capacity", "1", "--out", str(out), "--json", "--timeout", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if len(of(seen, "job_started")) >= 3:
                break
        assert len(of(seen, "job_started")) >= 3, seen
        three_sims[0].close()  # gone for good, with a job running and none of its own queued any more
        rest, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    evs = seen + events(rest)
    assert proc.returncode == 0, rest + err
    done = of(evs, "row_completed")
    assert sorted(e["output"] for e in done) == [f"shot_{i:02d}" for i in range(9)]
    assert all((out / e["output"] / "manifest.json").is_file() for e in done)


def test_a_pool_listing_a_server_twice_is_bad_input(tmp_path):
    port = closed_port()
    res = cli(shots(tmp_path, "tag\na\n"), "--workflow", INVERT, "--server", f"127.0.0.1:{port}",
              "--server", f"http://127.0.0.1:{port}/", "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "twice" in res.stdout


def test_a_pool_with_every_server_down_exits_3_naming_each(tmp_path):
    ports = [closed_port()]
    while len(ports) < 2:  # two different ports (the same one twice would be a duplicate server)
        port = closed_port()
        ports += [port] if port != ports[0] else []
    res = cli(shots(tmp_path, "tag\na\n"), "--workflow", INVERT, "--server", f"127.0.0.1:{ports[0]}",
              "--server", f"127.0.0.1:{ports[1]}", "--connect-timeout", "2", "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 3, res.stdout + res.stderr
    for port in ports:
        assert f"cannot connect to 127.0.0.1:{port}" in res.stdout


def load_image_workflow(tmp_path: Path) -> str:
    path = tmp_path / "load.json"
    path.write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "loaded"}},
    }))  # fmt: skip
    return str(path)


def png(path: Path) -> None:
    from .test_readme import _png

    _png(path)


@pytest.mark.sim_only
def test_a_file_cell_is_uploaded_relative_to_the_shot_list(server, tmp_path):
    (tmp_path / "frames").mkdir()
    png(tmp_path / "frames" / "f1.png")
    path = shots(tmp_path, "tag,1.image\nwith_frame,@frames/f1.png\nno_file,@frames/none.png\n")
    res = cli(path, "--workflow", load_image_workflow(tmp_path), "--server", server.url, "--out",
              str(tmp_path / "o"), "--json")  # fmt: skip
    evs = events(res.stdout)
    assert res.returncode == 2, res.stdout + res.stderr  # the row naming a missing file
    (bad,) = of(evs, "row_invalid")
    assert bad["line"] == 3 and "no such file" in bad["message"]
    (done,) = of(evs, "row_completed")
    manifest = json.loads(Path(done["manifest"]).read_text())
    uploaded = manifest["workflow"]["1"]["inputs"]["image"]
    assert uploaded != "missing.png" and (Path(server.sim.input_dir) / uploaded).is_file()


def test_a_pool_refuses_file_cells_by_line_and_runs_the_rest(three_sims, tmp_path):
    png(tmp_path / "f1.png")
    path = shots(tmp_path, "tag,1.image\nupload,@f1.png\nnamed,example.png\n")
    servers = [a for sim in three_sims[:2] for a in ("--server", sim.url)]
    for sim in three_sims[:2]:
        png(Path(sim.input_dir) / "example.png")  # "in every server's input folder"
    res = cli(path, "--workflow", load_image_workflow(tmp_path), *servers, "--out", str(tmp_path / "o"), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    evs = events(res.stdout)
    (bad,) = of(evs, "row_invalid")
    assert bad["line"] == 2 and "needs one server, not a pool" in bad["message"]
    assert [e["output"] for e in of(evs, "row_completed")] == ["named"]
