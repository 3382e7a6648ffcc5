"""Jobs end to end over real loopback sockets: success, cache, failures, validation, previews, text, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from director_link import errors

from .conftest import (
    TERMINAL,
    collect,
    connect,
    fail_prompt,
    invert_prompt,
    nonce,
    progress_prompt,
)


def assert_lifecycle_order(types: list[str]) -> None:
    """JobQueued first, JobStarted before any node work, exactly one terminal event and it comes last."""
    assert types[0] == "job_queued", types
    assert sum(t in TERMINAL for t in types) == 1, types
    assert types[-1] in TERMINAL, types
    if "job_started" in types:
        start = types.index("job_started")
        for work in ("node_started", "progress", "preview", "node_output"):
            if work in types:
                assert types.index(work) > start, types


def server_bytes(server, out: dict) -> bytes:
    query = urllib.parse.urlencode(
        {"filename": out["filename"], "subfolder": out["subfolder"], "type": out["file_type"]}
    )
    with urllib.request.urlopen(f"{server.url.rstrip('/')}/view?{query}", timeout=10) as resp:
        return resp.read()


def test_a_successful_run_yields_ordered_events_and_the_file(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, invert_prompt(), tag="shot_010")
    got = collect(hub, [job.id])
    types = got.types(job.id)
    assert_lifecycle_order(types)
    assert types[-1] == "job_completed", [(e.type, getattr(e, "message", "")) for e in got.of(job.id)]
    started = [e.node_id for e in got.of(job.id) if e.type == "node_started"]
    assert started == ["1", "2", "3"], "every node runs, in order"
    node_types = {e.node_id: e.node_type for e in got.of(job.id) if e.type == "node_started"}
    assert node_types == {"1": "EmptyImage", "2": "ImageInvert", "3": "SaveImage"}
    output = next(e for e in got.of(job.id) if e.type == "node_output")
    assert output.node_id == "3" and output.output["images"][0]["type"] == "output"
    done = got.terminal(job.id)
    assert len(done.outputs) == 1 and done.paths == [done.outputs[0]["path"]]
    path = Path(done.paths[0])
    assert path.is_file() and path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(hub.output_dir) in path.parents and "shot_010" in path.parts
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(server_bytes(server, done.outputs[0])).digest()
    assert done.outputs[0]["size"] == path.stat().st_size
    assert not list(path.parent.glob("*.part")) and not list(path.parent.glob(".*part")), "no temp files left"
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["job_id"] == job.id and manifest["server"].rstrip("/") == server.url.rstrip("/")
    assert manifest["workflow"]["2"]["class_type"] == "ImageInvert" and manifest["tag"] == "shot_010"
    (entry,) = manifest["files"]
    assert entry["path"] == path.name and entry["size"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == done.outputs[0]["sha256"]
    assert manifest["finished_at"] >= manifest["submitted_at"]
    info = job.wait(timeout=5)
    assert info["state"] == "completed" and info["outputs"][0]["path"] == str(path)
    assert job.outputs == [str(path)]


def test_a_cached_rerun_completes_with_every_node_cached(hub, server):
    name = connect(hub, server)
    prompt = invert_prompt(color=nonce() % (1 << 24))
    first = hub.submit(name, prompt)
    collect(hub, [first.id])
    again = hub.submit(name, prompt)
    got = collect(hub, [again.id])
    started = next(e for e in got.of(again.id) if e.type == "job_started")
    assert sorted(started.cached_nodes) == ["1", "2", "3"]
    assert not [e for e in got.of(again.id) if e.type == "node_started"], "cached nodes do not execute"
    done = got.terminal(again.id)
    assert done.type == "job_completed" and len(done.paths) == 1 and Path(done.paths[0]).is_file()


def test_an_execution_error_reports_the_node_and_traceback(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, fail_prompt("the fox ran away"))
    got = collect(hub, [job.id])
    assert_lifecycle_order(got.types(job.id))
    failed = got.terminal(job.id)
    assert failed.type == "job_failed" and failed.code == "execution_failed"
    assert failed.node_id == "1" and failed.node_type == "AcceptanceFail"
    assert failed.error["exception_type"] == "RuntimeError"
    assert "the fox ran away" in failed.message
    assert failed.error["traceback"], "the server's traceback is kept"
    with pytest.raises(errors.JobFailed) as info:
        job.wait(timeout=5)
    assert info.value.code == "execution_failed"


def test_a_validation_error_is_reported_per_node(hub, server):
    name = connect(hub, server)
    prompt = invert_prompt()
    prompt["1"]["inputs"]["width"] = 999_999  # above EmptyImage's max
    job = hub.submit(name, prompt)
    got = collect(hub, [job.id])
    failed = got.terminal(job.id)
    assert failed.type == "job_failed" and failed.code == "validation_failed"
    problems = failed.error["node_errors"]
    assert {p["node_id"] for p in problems} == {"1"}
    width = next(p for p in problems if p["node_id"] == "1")
    assert width["code"] == "value_bigger_than_max" and width["input"] == "width"
    assert width["class_type"] == "EmptyImage"
    assert not [e for e in got.of(job.id) if e.type == "job_started"]


def test_a_partially_valid_prompt_runs_and_lists_the_skipped_output(hub, server):
    name = connect(hub, server)
    prompt = invert_prompt()
    prompt["4"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}
    prompt["5"] = {"class_type": "ImageInvert", "inputs": {}}  # required input missing
    prompt["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    job = hub.submit(name, prompt)
    got = collect(hub, [job.id])
    queued = next(e for e in got.of(job.id) if e.type == "job_queued")
    assert {p["node_id"] for p in queued.node_errors} == {"5"}
    assert queued.node_errors[0]["code"] == "required_input_missing"
    done = got.terminal(job.id)
    assert done.type == "job_completed" and len(done.paths) == 2


def test_progress_previews_and_progress_text(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, progress_prompt(steps=4, step_seconds=0.05, preview=True))
    got = collect(hub, [job.id])
    assert_lifecycle_order(got.types(job.id))
    progress = [e for e in got.of(job.id) if e.type == "progress"]
    assert [(p.value, p.max) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress[-1].percentage == pytest.approx(100.0)
    assert all(p.node_id == "1" for p in progress)
    assert any(p.eta_seconds is not None for p in progress[1:]), "an ETA once a step rate is known"
    previews = [e for e in got.of(job.id) if e.type == "preview"]
    assert len(previews) == 4, "one preview with metadata (binary event 4) per step"
    assert all(p.format == "jpeg" and p.data[:2] == b"\xff\xd8" and p.node_id == "1" for p in previews)
    texts = [e for e in got.events if e.type == "node_text"]
    assert any(t.text == "starting 4 steps" and t.node_id == "1" for t in texts)
    assert got.terminal(job.id).type == "job_completed"


def test_legacy_previews_from_save_image_websocket(hub, server):
    """SaveImageWebsocket always sends the legacy binary event 1 (PNG, no prompt id)."""
    name = connect(hub, server)
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": nonce() % 999},
        },
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    job = hub.submit(name, prompt)
    got = collect(hub, [job.id])
    previews = [e for e in got.of(job.id) if e.type == "preview"]
    assert len(previews) == 1 and previews[0].format == "png"
    assert previews[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    assert got.terminal(job.id).type == "job_completed"


def test_two_concurrent_jobs_on_one_service(hub, server):
    name = connect(hub, server)
    a = hub.submit(name, progress_prompt(steps=3, preview=False))
    b = hub.submit(name, progress_prompt(steps=3, preview=False))
    got = collect(hub, [a.id, b.id])
    for job in (a, b):
        assert_lifecycle_order(got.types(job.id))
        assert got.terminal(job.id).type == "job_completed"
    queued_b = next(e for e in got.of(b.id) if e.type == "job_queued")
    assert queued_b.position in (0, 1)
    # One prompt runs at a time, in submission order: b starts after a's last node ran (a's JobCompleted may come
    # later, once its file is downloaded).
    order = [(e.job, e.type) for e in got.events if e.job in (a.id, b.id)]
    assert order.index((a.id, "node_output")) < order.index((b.id, "job_started"))


def test_two_jobs_on_two_services(hub, server, second_server):
    one = connect(hub, server, "one")
    two = connect(hub, second_server, "two")
    a = hub.submit(one, progress_prompt(steps=3, preview=False))
    b = hub.submit(two, progress_prompt(steps=3, preview=False))
    got = collect(hub, [a.id, b.id])
    assert got.terminal(a.id).type == got.terminal(b.id).type == "job_completed"
    assert next(e for e in got.of(a.id) if e.type == "job_started").service == "one"
    assert next(e for e in got.of(b.id) if e.type == "job_started").service == "two"
    # Different servers run in parallel: b started before a finished.
    order = [(e.job, e.type) for e in got.events]
    assert order.index((b.id, "job_started")) < order.index((a.id, "job_completed"))


def test_snapshot_shows_services_and_jobs(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, progress_prompt(steps=2, preview=False))
    collect(hub, [job.id])
    snap = hub.snapshot()
    svc = next(s for s in snap["services"] if s["name"] == name)
    assert svc["state"] == "connected" and svc["version"]
    assert svc["queue_remaining"] == 0 and svc["messages_received"] > 0
    assert svc["last_error"] is None
    rec = next(j for j in snap["jobs"] if j["id"] == job.id)
    assert rec["state"] == "completed" and rec["progress"] == pytest.approx(100.0)
    assert rec["outputs"] and rec["error"] is None


def test_await_a_job_in_asyncio(hub, server):
    name = connect(hub, server)

    async def main():
        job = hub.submit(name, invert_prompt())
        info = await job
        other = hub.submit(name, fail_prompt())
        with pytest.raises(errors.JobFailed):
            await other.wait_async(timeout=30)
        return info

    info = asyncio.run(main())
    assert info["state"] == "completed" and Path(info["outputs"][0]["path"]).is_file()


def test_the_client_chosen_id_is_the_servers_prompt_id(hub, server):
    name = connect(hub, server)
    job = hub.submit(name, invert_prompt())
    collect(hub, [job.id])
    history = server.get(f"/history/{job.id}")
    assert job.id in history, "the job id was sent as ComfyUI's prompt_id"
    assert history[job.id]["status"]["status_str"] == "success"


def test_upload_an_image_and_load_it(hub, server, tmp_path):
    name = connect(hub, server)
    first = hub.submit(name, invert_prompt())
    png = Path(collect(hub, [first.id]).terminal(first.id).paths[0])
    hub.object_info(name)  # the node list is cached before the upload ...
    uploaded = hub.upload_image(name, str(png))
    assert uploaded.endswith(".png")
    # ... and names the new file at once, so validating a prompt that loads it does not refuse it.
    assert uploaded in hub.object_info(name)["LoadImage"]["input"]["required"]["image"][0]
    again = hub.upload_image(name, png.read_bytes(), name="other-name.png")
    assert again == uploaded, "the same bytes are not uploaded twice"
    if server.sim is not None:
        uploads = [r for r in server.sim.requests() if r["path"].removeprefix("/api") == "/upload/image"]
        assert len(uploads) == 1
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dl_test/roundtrip"}},
    }
    job = hub.submit(name, prompt)
    done = collect(hub, [job.id]).terminal(job.id)
    assert done.type == "job_completed" and Path(done.paths[0]).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(errors.DirectorLinkError):
        hub.upload_image(name, str(tmp_path / "missing.png"))


def test_object_info_is_fetched_once_and_cached(hub, server):
    name = connect(hub, server)
    info = hub.object_info(name)
    assert info["EmptyImage"]["input"]["required"]["width"][0] == "INT"
    assert "AcceptanceProgress" in info
    assert hub.object_info(name) == info
    if server.sim is not None:
        fetches = [r for r in server.sim.requests() if r["path"].removeprefix("/api") == "/object_info"]
        assert len(fetches) == 1, "the second call was served from the cache"
        hub.object_info(name, refresh=True)
        fetches = [r for r in server.sim.requests() if r["path"].removeprefix("/api") == "/object_info"]
        assert len(fetches) == 2


def ui_invert_workflow() -> dict:
    """EmptyImage → ImageInvert → SaveImage as ComfyUI's editor saves it (UI format, widgets by position)."""
    return {
        "last_node_id": 3,
        "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [40, 24, 1, nonce() % (1 << 24)], "properties": {}},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": [], "properties": {}},
            {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "widgets_values": ["dl_test/ui"], "properties": {}},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }  # fmt: skip


def test_a_ui_format_workflow_is_converted_and_runs(hub, server):
    # Conversion needs the server's node list, fetched in the background: a submit to a server that cannot be
    # reached yet still returns a pending job instead of failing or waiting for it.
    with socket.socket() as unreachable:
        unreachable.bind(("127.0.0.1", 0))
        waiting = hub.add_service("comfyui", f"127.0.0.1:{unreachable.getsockname()[1]}", name="not_yet")
        early = hub.submit(waiting, ui_invert_workflow(), params={"EmptyImage.width": 48})
        assert early.state == "pending"
        # Refused connections do not fail it: it waits for the server (a wrong address being corrected) ...
        refusals, seen = 0, []
        for _ in range(600):  # bounded: two refused connection attempts of the service come within seconds
            hub.wait_for_events(0.05)
            for e in hub.poll(100):
                seen.append(e)
                refusals += e.type == "service_state_changed" and e.state == "disconnected"
            if refusals >= 2:
                break
        assert refusals >= 2, seen
        assert hub.job(early.id).state == "pending", seen
    # ... and runs once the address is right.
    hub.set_service_url(waiting, server.url)
    moved = collect(hub, [early.id]).terminal(early.id)
    assert moved.type == "job_completed", getattr(moved, "message", "")
    name = connect(hub, server)
    job = hub.submit(name, ui_invert_workflow(), params={"EmptyImage.width": 48})
    done = collect(hub, [job.id]).terminal(job.id)
    assert done.type == "job_completed", getattr(done, "message", "")
    history = server.get(f"/history/{job.id}")[job.id]
    inputs = history["prompt"][2]["1"]["inputs"]
    assert inputs["width"] == 48 and inputs["height"] == 24, "widgets mapped by name, the parameter applied"
    # Now the node list is cached: a bad parameter is caught at once, before anything is sent.
    with pytest.raises(errors.WorkflowError) as bad:
        hub.submit(name, ui_invert_workflow(), params={"EmptyImage.width": 10**9})
    assert bad.value.code == "invalid_parameter" and "width" in str(bad.value)


def test_validation_against_the_cached_node_list_raises_before_posting(hub, server):
    name = connect(hub, server)
    hub.object_info(name)
    prompt = invert_prompt()
    prompt["2"]["inputs"] = {}
    with pytest.raises(errors.WorkflowError) as info:
        hub.submit(name, prompt)
    assert info.value.code == "validation_failed"
    problem = info.value.node_errors[0]
    assert (problem["node_id"], problem["input"], problem["code"]) == ("2", "image", "required_input_missing")
    assert hub.snapshot()["jobs"] == []


def test_a_job_submitted_by_an_earlier_hub_is_tracked_to_its_end(server, tmp_path):
    import uuid

    import director_link

    with director_link.Hub(output_dir=str(tmp_path / "first")) as first:
        name = connect(first, server)
        job = first.submit(name, progress_prompt(steps=8, step_seconds=0.1, preview=False))
        collect(first, [], timeout=10, until=lambda evs: any(e.type == "job_started" for e in evs))
    # Blender restarted: a new hub only knows the id saved in the .blend.
    with director_link.Hub(output_dir=str(tmp_path / "second")) as second:
        name = connect(second, server)
        tracked = second.track(name, job.id, tag="shot_020")
        assert tracked.id == job.id
        lost = second.track(name, str(uuid.uuid4()))
        got = collect(second, [job.id, lost.id], timeout=30)
        done = got.terminal(job.id)
        assert done.type == "job_completed" and len(done.paths) == 1
        path = Path(done.paths[0])
        assert path.is_file() and (tmp_path / "second") in path.parents and "shot_020" in path.parts
        failed = got.terminal(lost.id)
        assert failed.type == "job_failed" and failed.code == "server_restarted"
        with pytest.raises(errors.UnknownJobError):
            second.resubmit(job.id)  # its workflow never passed through this hub
        if server.sim is not None:
            posts = [r for r in server.sim.requests() if r["path"].removeprefix("/api") == "/prompt"]
            assert [(r["json"] or {}).get("prompt_id") for r in posts].count(job.id) == 1, "never posted twice"
