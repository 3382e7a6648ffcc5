"""The Hub's Python surface: construction, addresses, submit without network, errors, close and threads."""

from __future__ import annotations

import gc
import json
import socket

import director_link
import pytest
from director_link import errors

from .conftest import collect, connect, invert_prompt, thread_count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "url, expected_name",
    [
        ("127.0.0.1", "comfyui"),
        ("127.0.0.1:8188", "comfyui"),
        ("http://127.0.0.1:8188/", "comfyui"),
        ("localhost:8190", "comfyui@localhost:8190"),
        # TLS and a base path behind a reverse proxy (loopback only: tests never leave this machine).
        ("https://127.0.0.2/base/path/", "comfyui@127.0.0.2:443"),
    ],
)
def test_add_service_understands_address_forms(hub, url, expected_name):
    assert hub.add_service("comfyui", url) == expected_name
    svc = next(s for s in hub.snapshot()["services"] if s["name"] == expected_name)
    assert svc["url"].startswith(("http://", "https://"))
    if "/base/path" in url:
        assert svc["url"].rstrip("/").endswith("/base/path")


@pytest.mark.parametrize(
    "kind, url, expected_name",
    [
        # The name is what the reader typed, so the README's `add_service("rvc", ...)` then `submit("rvc", ...)` works.
        ("rvc", "127.0.0.1:7865", "rvc"),
        ("rvc", "127.0.0.1", "rvc"),
        ("wan2gp", "127.0.0.1:7860", "wan2gp"),
        ("gradio", "127.0.0.1:7860", "gradio"),
        ("litellm", "127.0.0.1:4000", "litellm"),
        ("litellm", "127.0.0.1", "litellm"),
        ("openai", "127.0.0.1:4000", "openai"),
        ("wangp_mcp", "127.0.0.1:8000", "wangp_mcp"),
        ("rvc", "127.0.0.1:7860", "rvc@127.0.0.1:7860"),
        ("litellm", "127.0.0.2:4001", "litellm@127.0.0.2:4001"),
    ],
)
def test_the_default_name_is_the_kind_or_alias_as_typed(hub, kind, url, expected_name):
    assert hub.add_service(kind, url) == expected_name
    svc = next(s for s in hub.snapshot()["services"] if s["name"] == expected_name)
    if url.count(":") == 0:
        assert svc["url"].rstrip("/").endswith({"rvc": ":7865", "litellm": ":4000"}[kind]), svc["url"]


@pytest.mark.parametrize("url", ["", "http://", "ftp://127.0.0.1:8188", "127.0.0.1:99999", "http://[::1", "a b c"])
def test_bad_urls_raise_a_value_error_with_a_code(hub, url):
    with pytest.raises(errors.InvalidUrlError) as info:
        hub.add_service("comfyui", url)
    assert isinstance(info.value, ValueError)
    assert info.value.code == "invalid_url"
    assert str(info.value), "the message says what was wrong"
    assert hub.services() == [], "a rejected address adds nothing"


def test_duplicate_names_and_unknown_kinds_are_rejected(hub):
    hub.add_service("comfyui", "127.0.0.1:8188", name="a")
    with pytest.raises(errors.DuplicateServiceError) as dup:
        hub.add_service("comfyui", "127.0.0.1:8189", name="a")
    assert dup.value.code == "duplicate_service"
    with pytest.raises(errors.UnknownServiceError) as kind:
        hub.add_service("midjourney", "127.0.0.1:8188")
    assert kind.value.code == "unknown_service"


def test_submit_returns_at_once_and_waits_for_a_connection(hub):
    # A server that accepts connections (the kernel's backlog) but never answers: a submit that waited on the
    # network could only return after the hub's first connection attempt had failed (timed out), which would leave
    # its error behind. Returning with no error recorded and the job pending shows it did not wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        name = hub.add_service("comfyui", f"127.0.0.1:{silent.getsockname()[1]}", name="offline")
        job = hub.submit(name, invert_prompt())
        snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        assert snap["last_error"] is None and snap["consecutive_failures"] == 0, snap
        assert job.state == "pending"
    name = hub.add_service("comfyui", f"127.0.0.1:{free_port()}", name="refused")
    job = hub.submit(name, invert_prompt())
    assert len(job.id) == 36 and job.id == job.id.lower() and job.id[14] == "4", "a lowercase UUIDv4"
    got = collect(hub, [], timeout=5, until=lambda evs: any(e.type == "job_queued" and e.job == job.id for e in evs))
    queued = next(e for e in got.events if e.type == "job_queued" and e.job == job.id)
    assert queued.job_id == job.id and queued.pending_connection is True and queued.position is None
    assert job.state == "pending"
    snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
    assert snap["state"] in ("disconnected", "connecting")
    assert "connect" in (snap["last_error"] or ""), snap


def test_invalid_workflows_and_parameters_raise_workflow_errors(hub, tmp_path):
    name = hub.add_service("comfyui", "127.0.0.1:8188")
    empty_ui = {"nodes": [], "links": [], "version": 0.4}
    with pytest.raises(errors.WorkflowError) as ui:
        hub.submit(name, empty_ui)
    assert ui.value.code == "invalid_workflow" and "no nodes" in str(ui.value)
    with pytest.raises(errors.WorkflowError) as neither:
        hub.submit(name, {"hello": "world"})
    assert neither.value.code == "invalid_workflow"
    with pytest.raises(errors.WorkflowError) as not_json:
        hub.submit(name, "{not json")
    assert not_json.value.code == "invalid_workflow"
    with pytest.raises(errors.WorkflowError) as missing:
        hub.submit(name, str(tmp_path / "missing.json"))
    assert "missing.json" in str(missing.value)
    with pytest.raises(errors.WorkflowError) as bad_param:
        hub.submit(name, invert_prompt(), params={"99.width": 5})
    assert bad_param.value.code == "invalid_parameter" and "99" in str(bad_param.value)
    with pytest.raises(errors.WorkflowError):
        hub.submit(name, invert_prompt(), params={"no_dot": 5})
    with pytest.raises(errors.UnknownServiceError):
        hub.submit("nope", invert_prompt())
    assert hub.snapshot()["jobs"] == [], "nothing was queued by the failed calls"


def test_workflow_from_a_file_with_params(hub, server, tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(invert_prompt()))
    name = connect(hub, server)
    job = hub.submit(name, str(path), params={"1.width": 32}, tag="shot_010")
    assert job.tag == "shot_010" and job.service == name
    assert hub.job(job.id).id == job.id
    assert hub.job("not-a-job") is None
    assert collect(hub, [job.id]).terminal(job.id).type == "job_completed"
    # The parameter reached the server (what it ran) and the manifest (what was posted), the file left alone.
    ran = server.get(f"/history/{job.id}")[job.id]["prompt"][2]
    assert ran["1"]["inputs"]["width"] == 32 and ran["1"]["inputs"]["height"] == 48
    (manifest,) = (tmp_path / "out" / "shot_010").glob("*/manifest.json")
    posted = json.loads(manifest.read_text())["workflow"]
    assert posted["1"]["inputs"]["width"] == 32, posted
    assert json.loads(path.read_text())["1"]["inputs"]["width"] == 64


def test_close_stops_every_thread_and_is_idempotent():
    before = thread_count()
    hub = director_link.Hub()
    hub.add_service("comfyui", f"127.0.0.1:{free_port()}")
    assert thread_count() > before, "the hub runs its own threads"
    hub.close()
    hub.close()
    assert hub.closed
    assert thread_count() == before
    with pytest.raises(errors.HubClosed) as closed:
        hub.add_service("comfyui", "127.0.0.1:8188")
    assert closed.value.code == "hub_closed"
    leftover = hub.poll()  # events queued before close() are still handed over, once
    assert all(e.type == "service_state_changed" for e in leftover)
    assert hub.poll() == []


def test_context_manager_and_garbage_collection_close_the_hub():
    before = thread_count()
    with director_link.Hub() as hub:
        hub.add_service("comfyui", f"127.0.0.1:{free_port()}")
    assert hub.closed and thread_count() == before
    hub = director_link.Hub()
    hub.add_service("comfyui", f"127.0.0.1:{free_port()}")
    del hub
    gc.collect()
    assert thread_count() == before


def test_wait_times_out_with_a_typed_error(hub):
    name = hub.add_service("comfyui", f"127.0.0.1:{free_port()}")
    job = hub.submit(name, invert_prompt())
    with pytest.raises(errors.Timeout) as info:
        job.wait(timeout=0.3)
    assert isinstance(info.value, TimeoutError) and info.value.code == "timeout"
    assert job.state == "pending", "a timed-out wait leaves the job alone"


def test_error_hierarchy_has_stable_codes():
    for cls in (
        errors.InvalidUrlError,
        errors.WorkflowError,
        errors.ServiceError,
        errors.JobFailed,
        errors.JobCancelled,
        errors.Timeout,
        errors.HubClosed,
    ):
        assert issubclass(cls, errors.DirectorLinkError)
        assert cls.code.islower() and " " not in cls.code
    assert issubclass(errors.ServiceError, ConnectionError)
    assert issubclass(errors.JobCancelled, errors.JobFailed)


def test_every_job_ends_when_its_service_is_removed_or_the_hub_closes(tmp_path, server):
    hub = director_link.Hub(output_dir=str(tmp_path / "out"))
    try:
        waiting = hub.submit(hub.add_service("comfyui", f"127.0.0.1:{free_port()}", name="typo"), invert_prompt())
        hub.remove_service("typo")
        with pytest.raises(errors.JobFailed) as removed:
            waiting.wait(timeout=5)
        assert removed.value.code == "service_removed" and waiting.state == "failed"
        pending = hub.submit(hub.add_service("comfyui", f"127.0.0.1:{free_port()}", name="other"), invert_prompt())
    finally:
        hub.close()
    assert pending.state == "failed" and pending.info()["error"]["code"] == "hub_closed"
    ends = [e for e in hub.poll() if e.is_terminal]
    assert [(e.job, e.code) for e in ends] == [(waiting.id, "service_removed"), (pending.id, "hub_closed")]


def test_set_service_url_sends_the_jobs_that_waited_for_a_wrong_address(hub, server):
    name = hub.add_service("comfyui", f"127.0.0.1:{free_port()}", name="gpu")
    jobs = [hub.submit(name, invert_prompt()) for _ in range(2)]
    assert hub.set_service_url(name, server.url) == name
    assert next(s for s in hub.snapshot()["services"] if s["name"] == name)["url"].rstrip("/") == server.url
    got = collect(hub, [j.id for j in jobs])
    assert [got.terminal(j.id).type for j in jobs] == ["job_completed", "job_completed"]
    with pytest.raises(errors.InvalidUrlError):
        hub.set_service_url(name, "http://[bad")
    with pytest.raises(errors.UnknownServiceError):
        hub.set_service_url("nope", server.url)


def test_a_tracked_job_never_sent_fails_not_posted(hub, server):
    name = hub.add_service("comfyui", server.url, name="sim")
    job = hub.track(name, "00000000-0000-4000-8000-00000000abcd", posted=False)
    with pytest.raises(errors.JobFailed) as info:
        job.wait(timeout=15)
    assert info.value.code == "not_posted" and "never" in str(info.value)
