"""Studio-server mode without Blender: ``studio_link.StudioHub`` against a real ``director-link serve`` (in-process,
on loopback) whose ComfyUI is the simulator. Jobs are posted over HTTP, followed on the server's event stream,
their files downloaded into the take folder, and the view-model fed as from the add-on's own hub."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from contextlib import contextmanager

import pytest

director_link = pytest.importorskip("director_link")
from director_link.testing import api_workflow  # noqa: E402
from movie_director import state as st  # noqa: E402
from movie_director import studio_link  # noqa: E402
from movie_director.hub_owner import HubOwner  # noqa: E402

from ..test_studio import studio as studio_server  # noqa: E402

TIMEOUT = 30.0


@contextmanager
def studio(tmp_path, sim=None, **settings):
    settings.setdefault("database", "memory")
    if sim is not None:
        settings["services"] = [{"kind": "comfyui", "url": sim.url, "name": "gpu"}]
    with studio_server(tmp_path, **settings) as server:
        yield server


def run_until(hub, model: st.ViewModel, predicate, what: str, timeout: float = TIMEOUT):
    """Drains the hub into the model (as the add-on's timer does) until ``predicate()``; bounded."""
    deadline = time.monotonic() + timeout
    seen: list = []
    while time.monotonic() < deadline:
        events = hub.poll(256)
        seen += events
        model.apply(events)
        if predicate():
            return seen
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; events: {[e.type for e in seen][-20:]}")


def server_job(server, job_id: str) -> dict:
    with urllib.request.urlopen(f"{server.url}/api/jobs/{job_id}", timeout=10) as resp:
        return json.loads(resp.read())


def test_a_job_runs_on_the_studio_and_its_files_land_in_the_take_folder(tmp_path, sim):
    out = tmp_path / "blender-out"
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(out), server.url) as hub:
        model = st.ViewModel()
        wf = api_workflow("progress", steps=6, step_seconds=0.05)
        job = hub.submit("gpu", wf, params={"10.steps": 8}, tag="shot_a")
        model.track(job.id, "gpu", "shot_a")
        events = run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the job's end")
        view = model.jobs[job.id]
        assert view.state == "completed", view.error
        kinds = [e.type for e in events if e.job == job.id]
        assert kinds[0] == "job_queued" and kinds[-1] == "job_completed"
        assert "progress" in kinds and kinds.count("job_completed") == 1
        # The files are in this machine's take folder, byte for byte what the studio's hub wrote.
        remote = hub.remote_id(job.id)
        assert remote and remote != job.id
        on_server = server_job(server, remote)
        assert on_server["state"] == "completed" and on_server["tag"] == "shot_a"
        assert view.paths and all(p.startswith(str(out / "shot_a" / job.id)) for p in view.paths)
        theirs_paths = sorted(o["path"] for o in on_server["outputs"])
        assert len(theirs_paths) == len(view.paths)
        for local, theirs in zip(sorted(view.paths), theirs_paths, strict=True):
            with open(local, "rb") as a, open(theirs, "rb") as b:
                assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
        # The param went through the server's hub: the workflow it posted had 8 steps.
        record = json.loads((out / "shot_a" / job.id / "studio_job.json").read_text())
        assert record["remote_job_id"] == remote and record["studio"] == server.url
        # The link and the studio's services are in the snapshot, as the panel shows them.
        names = {s["name"]: s for s in hub.snapshot()["services"]}
        assert names[studio_link.LINK_NAME]["state"] == "connected"
        assert names["gpu"]["kind"] == "comfyui"
        assert hub.service_kinds() == {"gpu": "comfyui"}
        # Finished jobs leave the restart index.
        assert job.id not in json.loads((out / studio_link.INDEX_FILE).read_text())


def test_params_reach_the_workflow_the_studio_posts(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("invert"), params={"1.width": 40, "1.height": 24}, tag="p")
        model.track(job.id, "gpu", "p")
        run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the job's end")
        assert model.jobs[job.id].state == "completed", model.jobs[job.id].error
        posted = [r for r in sim.requests() if r.get("path") == "/prompt" and r.get("method") == "POST"]
        assert posted, sim.requests()[-5:]
        body = posted[-1].get("json") or {}
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if prompt is None:
            pytest.fail(f"the simulator did not record the posted prompt: {posted[-1]}")
        assert prompt["1"]["inputs"]["width"] == 40 and prompt["1"]["inputs"]["height"] == 24


def test_a_refused_job_fails_with_the_servers_reason(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        model = st.ViewModel()
        job = hub.submit("nope", api_workflow("invert"), tag="x")
        model.track(job.id, "nope", "x")
        run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the refusal")
        view = model.jobs[job.id]
        assert view.state == "failed"
        assert view.error["code"] == "unknown_service"
        assert "nope" in view.error["message"]


def test_a_failing_workflow_reports_the_node_and_message(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("fail", message="out of VRAM on purpose"), tag="f")
        model.track(job.id, "gpu", "f")
        run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the failure")
        view = model.jobs[job.id]
        assert view.state == "failed"
        assert "out of VRAM on purpose" in view.error["message"]


def test_cancel_a_running_job_and_one_never_sent(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("progress", steps=400, step_seconds=0.05), tag="c")
        model.track(job.id, "gpu", "c")
        run_until(hub, model, lambda: model.jobs[job.id].state == "running", "the job to start")
        hub.cancel(job.id)
        run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the cancel")
        assert model.jobs[job.id].state == "cancelled"
        assert server_job(server, hub.remote_id(job.id))["state"] == "cancelled"
    # A server that is not there: the job waits unsent, and a cancel ends it here at once.
    with socket_free_port() as port, studio_link.StudioHub(str(tmp_path / "o2"), f"127.0.0.1:{port}") as hub:
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("invert"), tag="c2")
        model.track(job.id, "gpu", "c2")
        run_until(hub, model, lambda: hub.snapshot()["services"][0]["state"] == "reconnecting", "the link to fail")
        assert model.jobs[job.id].state == "pending"
        hub.cancel(job.id)
        run_until(hub, model, lambda: model.jobs[job.id].state == "cancelled", "the local cancel")
        assert hub.remote_id(job.id) is None


def test_a_job_submitted_while_the_studio_is_away_is_sent_when_it_comes(tmp_path, sim):
    with socket_free_port() as port:
        pass
    with studio_link.StudioHub(str(tmp_path / "o"), f"127.0.0.1:{port}") as hub:
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("invert"), tag="late")
        model.track(job.id, "gpu", "late")
        run_until(hub, model, lambda: hub.snapshot()["services"][0]["state"] == "reconnecting", "the link to fail")
        with studio(tmp_path, sim, port=port):
            run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the late job", timeout=60)
        assert model.jobs[job.id].state == "completed", model.jobs[job.id].error
        assert model.jobs[job.id].paths


def test_a_restarted_blender_finds_its_running_job_on_the_studio(tmp_path, sim):
    out = str(tmp_path / "o")
    with studio(tmp_path, sim) as server:
        first = studio_link.StudioHub(out, server.url)
        model = st.ViewModel()
        job = first.submit("gpu", api_workflow("progress", steps=40, step_seconds=0.05), tag="r")
        model.track(job.id, "gpu", "r")
        run_until(first, model, lambda: model.jobs[job.id].state == "running", "the job to start")
        remote = first.remote_id(job.id)
        first.close()  # Blender quits; the job goes on on the server
        assert server_job(server, remote)["state"] in ("queued", "running")
        second = studio_link.StudioHub(out, server.url)
        try:
            model2 = st.ViewModel()
            second.track("gpu", job.id, tag="r")
            model2.track(job.id, "gpu", "r")
            run_until(second, model2, lambda: model2.jobs[job.id].state in st.TERMINAL_STATES, "the re-attached job")
            assert model2.jobs[job.id].state == "completed", model2.jobs[job.id].error
            assert second.remote_id(job.id) == remote
            assert all(os.path.isfile(p) for p in model2.jobs[job.id].paths) and model2.jobs[job.id].paths
            # A job the index never heard of: said so, not waited for.
            ghost = second.track("gpu", "never-sent", posted=False)
            model2.track(ghost.id, "gpu")
            run_until(second, model2, lambda: model2.jobs["never-sent"].state == "failed", "the unknown job")
            assert model2.jobs["never-sent"].error["code"] == "not_posted"
        finally:
            second.close()


def test_node_list_and_upload_through_the_studio(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        info = hub.object_info("gpu")
        assert "KSampler" in info and "LoadImage" in info
        png = bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
        )
        name = hub.upload_image("gpu", png, "shot_input.png")
        assert name.endswith(".png")
        assert name in (sim.input_dir and os.listdir(sim.input_dir))
        with pytest.raises(studio_link.StudioError) as err:
            hub.object_info("nope")
        assert err.value.code == "unknown_service"
        with pytest.raises(studio_link.StudioError) as err:
            hub.upload_image("gpu", b"", "empty.png")
        assert err.value.code == "invalid_request" and "empty" in str(err.value)


def test_a_token_is_required_and_used(tmp_path, sim):
    with studio(tmp_path, sim, token="s3cret-token") as server:
        with studio_link.StudioHub(str(tmp_path / "a"), server.url) as hub:
            deadline = time.monotonic() + TIMEOUT
            while hub.link_state not in ("circuit_open",) and time.monotonic() < deadline:
                time.sleep(0.05)
            link = hub.snapshot()["services"][0]
            assert link["state"] == "circuit_open" and "401" in link["reason"]
        with studio_link.StudioHub(str(tmp_path / "b"), server.url, studio_token="s3cret-token") as hub:
            model = st.ViewModel()
            job = hub.submit("gpu", api_workflow("invert"), tag="t")
            model.track(job.id, "gpu", "t")
            run_until(hub, model, lambda: model.jobs[job.id].state in st.TERMINAL_STATES, "the job with a token")
            assert model.jobs[job.id].state == "completed", model.jobs[job.id].error
            assert "s3cret-token" not in json.dumps(hub.snapshot())


def test_hub_owner_opens_a_studio_link_and_lists_the_studios_services(tmp_path, sim):
    with studio(tmp_path, sim) as server:
        owner = HubOwner()
        owner.open(str(tmp_path / "o"), heartbeat=5.0, studio_url=server.url, studio_token="tok")
        try:
            assert owner.studio and owner.hub.url == server.url
            deadline = time.monotonic() + TIMEOUT
            while "gpu" not in owner.services() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert owner.services()["gpu"].kind == "comfyui"
            assert owner.sync_services([], st.ViewModel()) == set()  # the preferences' list is not used
            assert "tok" in owner.secrets()
        finally:
            owner.close()
        assert not owner.is_open
        owner.open(str(tmp_path / "o"), heartbeat=5.0)
        try:
            assert not owner.studio and "studio_url" not in owner.options
        finally:
            owner.close()


def test_a_bad_studio_address_is_refused_with_a_reason(tmp_path):
    with pytest.raises(studio_link.StudioError) as err:
        studio_link.StudioHub(str(tmp_path), "ftp://somewhere")
    assert err.value.code == "invalid_url"


@contextmanager
def socket_free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


def test_queued_jobs_show_their_place_in_the_studios_queue(tmp_path, sim):
    with studio(tmp_path, sim) as server, studio_link.StudioHub(str(tmp_path / "o"), server.url) as hub:
        model = st.ViewModel()
        jobs = [
            hub.submit("gpu", api_workflow("progress", steps=1000, step_seconds=0.5), tag=f"q{i}") for i in range(3)
        ]
        for job in jobs:
            model.track(job.id, "gpu", job.tag)
        last = jobs[-1].id

        def placed():
            model.apply_snapshot(hub.snapshot())
            return model.jobs[last].state == "queued" and model.jobs[last].queue_position is not None

        run_until(hub, model, placed, "the last job's queue position")
        assert model.jobs[last].queue_position >= 1
        # The first one ends: the second runs and the last is next (0) — the place follows the queue, it is not
        # where the job started.
        run_until(hub, model, lambda: model.jobs[jobs[0].id].state == "running", "the first job to run")
        hub.cancel(jobs[0].id)

        def next_to_run():
            model.apply_snapshot(hub.snapshot())
            return model.jobs[last].queue_position == 0

        run_until(hub, model, next_to_run, "the last job to be next")
        for job in jobs[1:]:
            hub.cancel(job.id)
        run_until(hub, model, lambda: all(model.jobs[j.id].state == "cancelled" for j in jobs), "the cancels")
        assert model.jobs[jobs[0].id].state == "cancelled"


def test_close_leaves_no_thread_and_the_jobs_run_on(tmp_path, sim):
    import threading

    with studio(tmp_path, sim) as server:
        hub = studio_link.StudioHub(str(tmp_path / "o"), server.url)
        model = st.ViewModel()
        job = hub.submit("gpu", api_workflow("progress", steps=40, step_seconds=0.05), tag="c")
        model.track(job.id, "gpu", "c")
        run_until(hub, model, lambda: hub.remote_id(job.id) is not None, "the job to be posted")
        hub.close()
        assert not any(t.name == "movie-director-studio" for t in threading.enumerate())
        with pytest.raises(studio_link.StudioError) as err:
            hub.submit("gpu", api_workflow("invert"))
        assert err.value.code == "closed"
        # Closing the link is not cancelling: the studio still runs the job.
        assert server_job(server, hub.remote_id(job.id))["state"] in ("queued", "running", "completed")
