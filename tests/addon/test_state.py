"""The view-model: every event type lands where the panel reads it, and only the right areas are reported."""

from __future__ import annotations

from types import SimpleNamespace as E

from movie_director import state as st


def ev(type_, job=None, **kw):
    kw.setdefault("time", 1000.0)
    kw.setdefault("seq", 1)
    return E(type=type_, job=job, is_terminal=type_ in ("job_completed", "job_failed", "job_cancelled"), **kw)


def svc_ev(state, previous="disconnected", reason=None, service="local"):
    return ev("service_state_changed", service=service, state=state, previous=previous, reason=reason)


def test_empty_batch_changes_nothing():
    m = st.ViewModel()
    assert m.apply([]) == set()
    assert not m.busy


def test_service_states_and_reason():
    m = st.ViewModel()
    assert m.apply([svc_ev("connecting")]) == {st.SERVICES}
    assert m.services["local"].state == "connecting"
    changed = m.apply([svc_ev("reconnecting", "connected", "connection reset")])
    assert changed == {st.SERVICES, st.ERRORS}
    svc = m.services["local"]
    assert (svc.state, svc.previous, svc.reason) == ("reconnecting", "connected", "connection reset")
    assert m.last_error().code == "reconnecting"
    m.apply([svc_ev("circuit_open", "reconnecting", "dropped 5 times in 60 s")])
    assert m.services["local"].state == "circuit_open"
    assert m.last_error().message == "dropped 5 times in 60 s"


def test_queue_change_only_reported_when_different():
    m = st.ViewModel()
    assert m.apply([ev("queue_changed", service="local", queue_remaining=3)]) == {st.SERVICES}
    assert m.apply([ev("queue_changed", service="local", queue_remaining=3)]) == set()
    assert m.services["local"].queue_remaining == 3


def test_job_lifecycle_to_completed():
    m = st.ViewModel()
    m.track("j1", "local", tag="shot_010")
    assert m.busy
    m.apply([ev("job_queued", "j1", service="local", position=2, pending_connection=False, node_errors=[])])
    assert m.jobs["j1"].state == "queued" and m.jobs["j1"].queue_position == 2
    m.apply([ev("job_started", "j1", service="local", cached_nodes=[])])
    m.apply([ev("node_started", "j1", node_id="3", node_type="KSampler")])
    changed = m.apply([ev("progress", "j1", node_id="3", value=5, max=20, percentage=25.0, eta_seconds=12.5)])
    assert changed == {st.JOBS}
    job = m.jobs["j1"]
    assert (job.state, job.node_id, job.node_type, job.percentage, job.eta_seconds) == (
        "running",
        "3",
        "KSampler",
        25.0,
        12.5,
    )
    outputs = [{"node_id": "9", "kind": "images", "path": "/o/a.png", "filename": "a.png", "size": 10}]
    m.apply([ev("job_completed", "j1", outputs=outputs, paths=["/o/a.png"], ui={}, elapsed_seconds=3.0)])
    assert job.state == "completed" and job.paths == ["/o/a.png"] and job.percentage == 100.0
    assert not m.busy
    assert m.take_finished() == ["j1"]
    assert m.take_finished() == []


def test_second_terminal_event_is_ignored():
    m = st.ViewModel()
    m.track("j1", "local")
    m.apply([ev("job_cancelled", "j1")])
    m.apply([ev("job_completed", "j1", outputs=[{"path": "/x.png"}], paths=["/x.png"], ui={}, elapsed_seconds=1)])
    assert m.jobs["j1"].state == "cancelled"
    assert m.jobs["j1"].outputs == []
    assert m.take_finished() == ["j1"]


def test_progress_after_the_end_does_not_revive_the_job():
    m = st.ViewModel()
    m.track("j1", "local")
    m.apply([ev("job_cancelled", "j1")])
    m.apply([ev("progress", "j1", node_id="1", value=1, max=2, percentage=50.0, eta_seconds=1.0)])
    assert m.jobs["j1"].state == "cancelled"


def test_failure_is_kept_with_details():
    m = st.ViewModel()
    m.track("j1", "local")
    error = {"exception_type": "RuntimeError", "traceback": ["line 1\n"], "node_errors": []}
    changed = m.apply(
        [ev("job_failed", "j1", code="execution_failed", message="boom", node_id="1", node_type="X", error=error)]
    )
    assert changed == {st.JOBS, st.ERRORS}
    job = m.jobs["j1"]
    assert job.state == "failed"
    assert job.error["code"] == "execution_failed" and job.error["node_type"] == "X"
    entry = m.last_error()
    assert (entry.source, entry.code, entry.message) == ("j1", "execution_failed", "boom")
    assert m.errors_for("j1") == [entry]


def test_partial_validation_is_an_error_entry():
    m = st.ViewModel()
    problems = [{"node_id": "4", "class_type": "SaveImage", "code": "x", "message": "bad"}]
    changed = m.apply([ev("job_queued", "j1", service="s", position=0, pending_connection=False, node_errors=problems)])
    assert changed == {st.JOBS, st.ERRORS}
    assert m.jobs["j1"].node_errors == problems


def test_pending_connection():
    m = st.ViewModel()
    m.apply([ev("job_queued", "j1", service="s", position=None, pending_connection=True, node_errors=[])])
    assert m.jobs["j1"].pending_connection


def test_preview_keeps_only_the_latest():
    m = st.ViewModel()
    m.apply([ev("preview", "j1", node_id="1", data=b"a", format="jpeg", seq=1)])
    changed = m.apply([ev("preview", "j1", node_id="1", data=b"bb", format="png", seq=2)])
    assert changed == {st.PREVIEW}
    assert (m.preview.data, m.preview.format, m.preview.seq) == (b"bb", "png", 2)


def test_node_text_and_unknown_types():
    m = st.ViewModel()
    assert m.apply([ev("node_text", None, node_id="1", text="x")]) == set()
    assert m.apply([ev("node_text", "j1", node_id="1", text="loading")]) == {st.JOBS}
    assert m.jobs["j1"].node_text == "loading"
    assert m.apply([ev("something_new", "j1")]) == set()
    assert m.events_applied == 3


def test_snapshot_health_only_reports_real_changes():
    m = st.ViewModel()
    snap = {
        "services": [
            {
                "name": "local",
                "kind": "comfyui",
                "url": "http://127.0.0.1:8188/",
                "state": "connected",
                "reason": None,
                "version": "0.3.64",
                "queue_remaining": 0,
                "last_error": None,
                "recent_errors": [],
                "latency": {"p50_ms": 1.5, "p99_ms": 4.0},
                "http_latency": {"p50_ms": 2.0},
                "uptime_percent": 100.0,
                "drops": 0,
                "reconnects": 0,
                "next_attempt_at": None,
            }
        ],
        "jobs": [],
    }
    assert m.apply_snapshot(snap) == {st.SERVICES, st.HEALTH}
    assert m.apply_snapshot(snap) == set()
    snap["services"][0]["latency"] = {"p50_ms": 2.5, "p99_ms": 4.0}
    assert m.apply_snapshot(snap) == {st.HEALTH}
    assert m.services["local"].latency_p50_ms == 2.5


def test_snapshot_updates_queue_position_of_tracked_jobs_only():
    m = st.ViewModel()
    m.track("j1", "s")
    m.apply([ev("job_queued", "j1", service="s", position=3, pending_connection=False, node_errors=[])])
    snap = {"services": [], "jobs": [{"id": "j1", "state": "queued", "queue_position": 1}, {"id": "zz"}]}
    assert m.apply_snapshot(snap) == {st.JOBS}
    assert m.jobs["j1"].queue_position == 1
    assert "zz" not in m.jobs


def test_old_finished_jobs_are_trimmed_running_ones_kept():
    m = st.ViewModel(max_jobs=3)
    m.track("run", "s")
    for i in range(5):
        m.track(f"done{i}", "s")
        m.apply([ev("job_cancelled", f"done{i}")])
    assert "run" in m.jobs and len(m.jobs) <= 4


def test_blocked_service_and_drop():
    m = st.ViewModel()
    assert m.set_blocked("farm", "comfyui", "http://10.0.0.5:8188", "online access is off") == {st.SERVICES}
    assert m.set_blocked("farm", "comfyui", "http://10.0.0.5:8188", "online access is off") == set()
    assert m.services["farm"].blocked
    assert m.drop_service("farm") == {st.SERVICES}
    assert m.drop_service("farm") == set()
