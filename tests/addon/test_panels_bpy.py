"""Every panel's ``draw`` in every state the link can be in, against a recording layout that checks each
property, operator and icon name exists. No server is needed: states are fed to the view-model as events."""

from __future__ import annotations

from types import SimpleNamespace as E

import pytest

bpy = pytest.importorskip("bpy")

import addon_utils  # noqa: E402

from .blender_support import ADDON, ManualTimers, RecordingLayout, draw_all_panels  # noqa: E402


@pytest.fixture
def addon(monkeypatch):
    manual = ManualTimers()
    monkeypatch.setattr(bpy.app.timers, "register", manual.register)
    monkeypatch.setattr(bpy.app.timers, "unregister", manual.unregister)
    monkeypatch.setattr(bpy.app.timers, "is_registered", manual.is_registered)
    bpy.ops.wm.read_homefile(use_empty=True)
    addon_utils.enable(ADDON, default_set=True)
    from movie_director import bridge

    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.initialized = True
    prefs.auto_discover = False
    prefs.services.clear()
    manual.step()
    try:
        yield bridge
    finally:
        addon_utils.disable(ADDON, default_set=True)


def ev(type_, job=None, **kw):
    return E(type=type_, job=job, seq=kw.pop("seq", 1), time=1000.0, **kw)


def svc(state, previous="connecting", reason=None):
    return ev("service_state_changed", service="local", state=state, previous=previous, reason=reason)


def add_job_record(job_id, state="pending", paths=""):
    s = bpy.context.scene.movie_director
    record = s.jobs.add()
    record.name = job_id
    record.service = "local"
    record.tag = "shot_010"
    record.state = state
    record.frame, record.channel = 12, 2
    record.paths = paths
    return record


def feed(bridge, *events):
    model = bridge.current_model()
    model.apply(list(events))
    return model


def _state_no_server(bridge):
    pass


def _state_connecting(bridge):
    feed(bridge, svc("connecting", "disconnected"))


def _state_connected(bridge):
    feed(bridge, svc("connected"), ev("queue_changed", service="local", queue_remaining=2))
    bridge.current_model().apply_snapshot(
        {
            "services": [
                {
                    "name": "local",
                    "state": "connected",
                    "url": "http://127.0.0.1:8188/",
                    "version": "0.3.64",
                    "latency": {"p50_ms": 1.2, "p99_ms": 3.4},
                    "http_latency": {"p50_ms": 2.0},
                    "uptime_percent": 99.5,
                    "recent_errors": ["timeout once"],
                }
            ]
        }
    )


def _state_running(bridge):
    _state_connected(bridge)
    add_job_record("job-queued")
    add_job_record("job-running")
    bridge.current_model().track("job-queued", "local", "shot_010")
    bridge.current_model().track("job-running", "local", "shot_010")
    feed(
        bridge,
        ev("job_queued", "job-queued", service="local", position=1, pending_connection=False, node_errors=[]),
        ev("job_started", "job-running", service="local", cached_nodes=[]),
        ev("node_started", "job-running", node_id="3", node_type="KSampler"),
        ev("progress", "job-running", node_id="3", value=7, max=20, percentage=35.0, eta_seconds=14.0),
        ev("node_text", "job-running", node_id="3", text="sampling"),
        ev("preview", "job-running", node_id="3", data=b"\xff\xd8", format="jpeg", seq=3),
    )


def _state_failed(bridge):
    _state_connected(bridge)
    add_job_record("job-failed", state="failed")
    add_job_record("job-done", state="completed", paths="/nonexistent/a.png")
    feed(
        bridge,
        ev(
            "job_failed",
            "job-failed",
            code="execution_failed",
            message="CUDA out of memory",
            node_id="3",
            node_type="KSampler",
            error={"traceback": ["x"]},
        ),
        ev("job_completed", "job-done", outputs=[{"path": "/nonexistent/a.png"}], paths=[], ui={}, elapsed_seconds=1),
    )


def _state_circuit_open(bridge):
    feed(
        bridge,
        svc("reconnecting", "connected", "connection reset"),
        svc("circuit_open", "reconnecting", "dropped 5 times in 60 s"),
    )


LONG_REASON = (
    "the server rejected the workflow: Prompt outputs failed validation — node 3 (KSampler) cfg: Value 200.0 bigger "
    "than max of 100.0. Fix the workflow or its parameters and submit again."
)


def _state_shots(bridge):
    """A batch: one shot queued, one running, one failed with a long reason, one never generated."""
    _state_connected(bridge)
    s = bpy.context.scene.movie_director
    for index, (name, job) in enumerate((("A", "job-a"), ("B", "job-b"), ("C", "job-c"), ("D", ""))):
        shot = s.shots.add()
        shot.name, shot.shot_id, shot.job_id = name, f"sh-{index}", job
        shot.frame_start, shot.frame_end = index * 10 + 1, index * 10 + 10
        if job:
            bridge.current_model().track(job, "local", shot.shot_id)
    feed(
        bridge,
        ev("job_queued", "job-a", service="local", position=1, pending_connection=False, node_errors=[]),
        ev("job_started", "job-b", service="local", cached_nodes=[]),
        ev("progress", "job-b", node_id="3", value=7, max=20, percentage=35.0, eta_seconds=14.0),
        ev(
            "job_failed", "job-c", code="validation_failed", message=LONG_REASON, node_id=None, node_type=None, error={}
        ),
    )
    s.active_shot = 2  # the failed one: its whole reason shows


STATES = {
    "no server": _state_no_server,
    "connecting": _state_connecting,
    "connected": _state_connected,
    "running": _state_running,
    "failed": _state_failed,
    "circuit open": _state_circuit_open,
    "shots": _state_shots,
}

EXPECTED = {
    "no server": "No server set up",
    "connecting": "local: Connecting…",
    "connected": "local: Connected",
    "running": "Running · KSampler (#3) · 35% · ~14 s",
    "failed": "CUDA out of memory",
    "circuit open": "local: Paused: server keeps dropping us",
    "shots": "Queued (position 2)",
}


@pytest.mark.parametrize("state", list(STATES))
def test_every_panel_draws_in_every_state(addon, state):
    STATES[state](addon)
    layouts = draw_all_panels(bpy.context)
    assert len(layouts) == 12  # 6 panels × (3D View, Sequencer)
    texts = [t for layout in layouts.values() for t in layout.texts()]
    assert EXPECTED[state] in texts, texts
    ops = {op for layout in layouts.values() for op in layout.operators()}
    if state == "running":
        assert "movie_director.cancel" in ops
    if state == "failed":
        assert {"movie_director.copy_error", "movie_director.import_result"} <= ops
    if state == "circuit open":
        assert "movie_director.reconnect" in ops
    if state == "shots":
        assert "Running 35%" in texts and "Not generated" in texts
        assert {"movie_director.generate_shots", "movie_director.cancel_shots"} <= ops
        # The failure reason is shown in full (over several lines), never clipped.
        assert "Failed: " + LONG_REASON in " ".join(texts)
    # The preferences draw too, with the same names checked.
    prefs = bpy.context.preferences.addons[ADDON].preferences
    item = prefs.services.add()
    item.name, item.url = "farm", "http://10.0.0.9:8188"
    proxy = _WithLayout(prefs)
    type(prefs).draw(proxy, bpy.context)
    assert any("Online access is off" in t for t in proxy.layout.texts())


class _WithLayout:
    """``self`` for AddonPreferences.draw: the real preferences, with a recording layout."""

    def __init__(self, target):
        self.layout = RecordingLayout()
        self._target = target

    def __getattr__(self, name):
        return getattr(self._target, name)


def test_panels_poll_free_and_draw_without_the_addon_model(addon):
    """Drawing never touches the network: 100 draws make no call on the hub, and they still draw once it is closed."""
    rt = addon.runtime()
    real = rt.owner.hub
    calls = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    rt.owner.hub = Spy()
    try:
        for _ in range(100):
            layouts = draw_all_panels(bpy.context)
    finally:
        rt.owner.hub = real
    assert calls == [], f"drawing called the hub: {sorted(set(calls))}"
    drawn = [t for layout in layouts.values() for t in layout.texts()]
    assert drawn, "the panels drew nothing"
    real.close()
    for _ in range(100):
        closed = draw_all_panels(bpy.context)
    assert [t for layout in closed.values() for t in layout.texts()], "a closed hub leaves the panels empty"


def test_discovery_lists_what_answered_and_one_line_for_the_rest(addon):
    model = addon.current_model()
    model.discovered = [
        {"url": "http://127.0.0.1:8000", "kind": "none", "summary": "nothing there"},
        {"url": "http://127.0.0.1:8188", "kind": "comfyui", "summary": "ComfyUI 0.3.64 at 127.0.0.1:8188"},
        {"url": "http://127.0.0.1:8189", "kind": "none", "summary": "nothing there"},
    ]
    layout = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_status"]
    texts = layout.texts()
    assert not any("nothing there" in t for t in texts), texts
    assert sum(1 for t in texts if t.startswith("Nothing found at")) == 1
    assert "ComfyUI 0.3.64 at 127.0.0.1:8188" in texts
    assert layout.operators().count("movie_director.add_service") == 1


def test_shots_of_a_server_that_went_away_say_they_wait_for_it(addon):
    _state_shots(addon)
    feed(addon, svc("reconnecting", "connected", "connection reset"))
    texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"].texts()
    waiting = [t for t in texts if t.startswith("Waiting for the server: local")]
    assert len(waiting) >= 2, texts  # the queued and the running shot; the failed one still says why it failed
    assert any(t.startswith("Failed: ") for t in texts)


def test_an_image_workflow_shows_no_frame_count_from_the_moment_it_is_chosen(addon):
    """Found as a filmmaker: "Frames: 250" showed for an image workflow until a first Generate had read the file.
    The panel reads an API-format file on its first draw (no server needed) and asks frames of video graphs only."""
    from pathlib import Path

    workflows = Path(__file__).resolve().parents[2] / "workflows"
    s = bpy.context.scene.movie_director

    def defaults_panel():
        layout = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_generate"]
        return layout, [args[1] for kind, args, _ in layout.log if kind == "prop"]

    s.workflow = str(workflows / "sd_basic.json")
    layout, props_drawn = defaults_panel()
    assert "use_scene_frames" not in props_drawn and not any(t.startswith("Frames:") for t in layout.texts())
    # A reopened .blend forgets what was read (load_post): the first draw reads the file again.
    from movie_director import bridge

    bridge.runtime().workflows = None
    layout, props_drawn = defaults_panel()
    assert "use_scene_frames" not in props_drawn
    s.workflow = str(workflows / "ltx_video.json")
    s.use_scene_frames = True
    layout, props_drawn = defaults_panel()
    assert "use_scene_frames" in props_drawn and any(t.startswith("Frames:") for t in layout.texts())
    # A file that is not there: nothing is known, so the row stays (and Generate says why).
    s.workflow = str(workflows / "not_there.json")
    layout, props_drawn = defaults_panel()
    assert "use_scene_frames" in props_drawn


def test_a_failure_reason_wraps_to_the_sidebars_width():
    """Found in Blender 3.4's default sidebar: lines of 60 characters were clipped in the middle ("node…ss): steps =
    100000"); the reason's end says what to change. Lines now fit the region being drawn."""
    from movie_director import panels

    narrow, wide = E(width=300), E(width=900)
    assert panels.line_width(narrow, scale=1.0) == int((300 - panels.WRAP_MARGIN) / panels.CHAR_PIXELS)
    assert panels.line_width(narrow, scale=1.0) < 60 < panels.line_width(wide, scale=1.0)
    assert panels.line_width(narrow, scale=2.0) < panels.line_width(narrow, scale=1.0)  # HiDPI: bigger letters
    assert panels.line_width(None) == 60  # not drawing (tests, scripts): the old width
    layout = RecordingLayout()
    text = "node 1 (AcceptanceProgress): steps = 100000 is bigger than the maximum 1000; use a value from 1 to 1000"
    panels.wrapped(layout, text, width=panels.line_width(narrow, scale=1.0))
    lines = layout.texts()
    assert " ".join(lines) == text and all(len(line) <= panels.line_width(narrow, scale=1.0) for line in lines)
