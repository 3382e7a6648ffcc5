"""The add-on in real Blender (the ``bpy`` 5.0.1 module, headless) against the ComfyUI simulator.

Timers never fire in module mode, so ``bpy.app.timers`` is replaced by ``ManualTimers`` and the add-on's one
timer callback is stepped by hand. Skipped where ``bpy`` is not installed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import addon_utils  # noqa: E402  (comes with bpy)

from .blender_support import ADDON, draw_all_panels, settled_thread_count, thread_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sk-test-SECRET-123"


def workflow_file(tmp_path: Path, name: str, prompt: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(prompt))
    return str(path)


def progress_workflow(steps: int = 6, step_seconds: float = 0.1) -> dict:
    return {
        "1": {
            "class_type": "AcceptanceProgress",
            "inputs": {
                "steps": steps,
                "step_seconds": step_seconds,
                "width": 64,
                "height": 64,
                "send_preview": True,
                "nonce": 0,
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "md_test/progress"}},
    }


def slow_workflow(seconds: float = 30.0) -> dict:
    return {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": 0}}}


def fail_workflow(message: str) -> dict:
    return {"1": {"class_type": "AcceptanceFail", "inputs": {"message": message, "steps_before_failing": 1}}}


def _prefs():
    return bpy.context.preferences.addons[ADDON].preferences


def add_server(addon, url: str, name: str = "sim", token: str = "") -> None:
    svc = addon.prefs.services.add()
    svc.name = name
    svc.url = url
    svc.token = token
    bpy.context.scene.movie_director.service = name


def wait_connected(addon, name: str = "sim"):
    model = addon.bridge.current_model()
    addon.timers.run_until(
        lambda: model.services.get(name) and model.services[name].state == "connected", 15, f"{name} to connect"
    )


def job_view(addon, job_id):
    return addon.bridge.current_model().jobs.get(job_id)


def generate(addon) -> str:
    assert bpy.ops.movie_director.generate() == {"FINISHED"}
    return bpy.context.scene.movie_director.jobs[-1].name


# ---- registration ------------------------------------------------------------------------------------------------


def test_enable_registers_one_persistent_timer_a_handler_and_a_hub(addon):
    bridge = addon.bridge
    assert list(addon.timers.callbacks) == [bridge.timer_callback]
    assert addon.timers.persistent[bridge.timer_callback] is True
    assert bridge._on_load_post in bpy.app.handlers.load_post
    hub = addon.module.hub()
    assert hub is not None and not hub.closed
    assert hasattr(bpy.types.Scene, "movie_director")
    for op in ("generate", "cancel", "import_result", "discover", "reconnect", "copy_error", "open_output"):
        assert hasattr(bpy.ops.movie_director, op)


def test_disable_removes_timer_handler_hub_and_types(timers):
    bpy.ops.wm.read_homefile(use_empty=True)
    addon_utils.enable(ADDON, default_set=True)
    import movie_director
    from movie_director import bridge

    _prefs().initialized = False
    _prefs().services.clear()
    timers.step()  # a fresh install invents no server (discovery offers the running ones)
    assert len(_prefs().services) == 0 and _prefs().initialized

    hub = movie_director.hub()
    os.makedirs(bridge.preview_folder(), exist_ok=True)
    addon_utils.disable(ADDON, default_set=True)
    assert hub.closed and movie_director.hub() is None
    assert not os.path.exists(bridge.preview_folder())  # no scratch folder left in the temp directory
    assert timers.callbacks == {}
    assert bridge._on_load_post not in bpy.app.handlers.load_post
    assert bridge._on_save_pre not in bpy.app.handlers.save_pre
    assert bridge._on_save_post not in bpy.app.handlers.save_post
    assert not hasattr(bpy.types.Scene, "movie_director")
    assert not hasattr(bpy.types, "MOVIE_DIRECTOR_PT_view3d_status")


def test_enable_disable_20_times_leaves_no_thread_timer_or_handler(timers):
    bpy.ops.wm.read_homefile(use_empty=True)
    addon_utils.enable(ADDON, default_set=True)
    timers.step()
    addon_utils.disable(ADDON, default_set=True)
    handlers_before = len(bpy.app.handlers.load_post)
    before = settled_thread_count()
    for _ in range(20):
        addon_utils.enable(ADDON, default_set=True)
        timers.step()  # connect attempts start threads/tasks inside the hub's runtime
        addon_utils.disable(ADDON, default_set=True)
    deadline = time.monotonic() + 5
    while thread_count() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread_count() == before
    assert timers.callbacks == {}
    assert len(bpy.app.handlers.load_post) == handlers_before


def test_offline_mode_blocks_remote_servers_and_says_why(addon):
    assert bpy.app.online_access is False  # module mode runs offline, like a studio machine with it off
    add_server(addon, "http://10.255.0.1:8188", name="farm")
    bpy.context.scene.movie_director.workflow = str(ROOT / "workflows" / "invert.json")
    addon.timers.step()
    view = addon.bridge.current_model().services["farm"]
    assert "online access" in view.blocked
    with pytest.raises(RuntimeError, match="online access"):
        bpy.ops.movie_director.generate()
    texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_view3d_status"].texts()
    assert "farm: Not allowed" in texts


def test_poll_messages_say_why(addon):
    with pytest.raises(RuntimeError, match="Set up a server"):
        bpy.ops.movie_director.generate()
    with pytest.raises(RuntimeError, match="No job is running"):
        bpy.ops.movie_director.cancel(job_id="x")
    with pytest.raises(RuntimeError, match="Nothing has gone wrong"):
        bpy.ops.movie_director.copy_error()
    with pytest.raises(RuntimeError, match="No finished job"):
        bpy.ops.movie_director.import_result(job_id="x")


# ---- against the simulator -----------------------------------------------------------------------------------------


def test_generate_progress_complete_and_import_at_the_locked_frame_and_channel(addon, server):
    add_server(addon, server.url, token=TOKEN)
    scene = bpy.context.scene
    s = scene.movie_director
    s.workflow = workflow_file(addon.tmp, "progress", progress_workflow())
    s.prompt = "a lighthouse at dusk"
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 256, 144, 50
    scene.frame_current = 17
    s.channel = 3
    wait_connected(addon)
    job_id = generate(addon)
    record = s.jobs[job_id]
    assert (record.frame, record.channel, record.service) == (17, 3, "sim")
    scene.frame_current = 40  # moving the playhead after submitting does not move the result
    seen = {"progress": 0.0, "nodes": set()}

    def finished():
        view = job_view(addon, job_id)
        if view.state == "running":
            seen["progress"] = max(seen["progress"], view.percentage)
            seen["nodes"].add(view.node_type)
        return view.state in ("completed", "failed", "cancelled")

    addon.timers.run_until(finished, 30, "the job to finish")
    view = job_view(addon, job_id)
    assert view.state == "completed", view.error
    assert seen["progress"] > 0 and "AcceptanceProgress" in seen["nodes"]
    assert record.state == "completed" and record.imported
    strips = [st for st in scene.sequence_editor.strips_all if st.type == "IMAGE"]
    assert len(strips) == 1
    strip = strips[0]
    assert (int(strip.frame_start), strip.channel) == (17, 3)
    path = bpy.path.abspath(os.path.join(strip.directory, strip.elements[0].filename))
    assert os.path.isfile(path) and path.startswith(str(addon.tmp / "out"))
    assert any(img.filepath == path for img in bpy.data.images)
    # The shot settings reached the workflow: the render size at 50 %.
    sent = [r for r in server.sim.requests() if r["path"] == "/prompt" and r["method"] == "POST"][-1]["json"]
    assert sent["prompt"]["1"]["inputs"]["width"] == 128 and sent["prompt"]["1"]["inputs"]["height"] == 72
    preview = bpy.data.images.get(addon.bridge.PREVIEW_IMAGE)
    assert preview is not None
    # The Preview ends on the result (128 × 72), not on the last noisy step (the simulator's 64 px previews).
    addon.timers.step()
    assert tuple(preview.size) == (128, 72), tuple(preview.size)
    assert os.path.isdir(addon.bridge.preview_folder())  # removed when the add-on is disabled (test below)
    # Imported automatically: the job offers its folder, not an "Import again" that would duplicate it.
    ops = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_jobs"].operators()
    assert "movie_director.import_result" not in ops and "movie_director.open_output" in ops
    # Importing again by hand puts a second copy on the next free channel at the same frame.
    assert bpy.ops.movie_director.import_result(job_id=job_id) == {"FINISHED"}
    assert len([st for st in scene.sequence_editor.strips_all if st.type == "IMAGE"]) == 2


@pytest.mark.sim_only
def test_generate_returns_while_the_server_is_silent(addon, server):
    """Generate must return at once: against a server that answers nothing until the test says so, it returns
    with the job recorded and nothing accepted by the server yet (an operator that waited would never return)."""
    add_server(addon, server.url)
    s = bpy.context.scene.movie_director
    s.workflow = workflow_file(addon.tmp, "progress", progress_workflow(steps=2, step_seconds=0.05))
    render = bpy.context.scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 256, 144, 50
    wait_connected(addon)
    server.sim.stall(600.0)
    try:
        job_id = generate(addon)
        assert s.jobs[job_id].service == "sim"
        assert server.sim.stats()["prompts_received"] == 0, "the operator returned before the server took the job"
    finally:
        server.sim.stall(0)
    addon.timers.run_until(
        lambda: job_view(addon, job_id).state in ("completed", "failed", "cancelled"), 30, "the job to end"
    )
    assert job_view(addon, job_id).state == "completed", job_view(addon, job_id).error


def test_cancel_a_running_job(addon, server):
    add_server(addon, server.url)
    s = bpy.context.scene.movie_director
    s.workflow = workflow_file(addon.tmp, "slow", slow_workflow(60))
    wait_connected(addon)
    job_id = generate(addon)
    addon.timers.run_until(lambda: job_view(addon, job_id).state == "running", 15, "the job to start")
    assert bpy.ops.movie_director.cancel(job_id=job_id) == {"FINISHED"}
    assert job_view(addon, job_id).cancel_requested
    addon.timers.run_until(lambda: job_view(addon, job_id).state == "cancelled", 15, "the job to be cancelled")
    assert s.jobs[job_id].state == "cancelled" and not s.jobs[job_id].imported


@pytest.mark.sim_only
def test_a_server_drop_shows_reconnecting_then_recovers(addon, server, monkeypatch):
    add_server(addon, server.url)
    wait_connected(addon)
    model = addon.bridge.current_model()
    # One event per tick, so the panel can be drawn in every state the link goes through.
    monkeypatch.setattr(addon.module.hub_owner, "POLL_BATCH", 1)
    monkeypatch.setattr(addon.module.hub_owner, "MAX_BATCHES_PER_TICK", 1)
    states, shown = [], []
    on_state = model._handlers["service_state_changed"]

    def record(event, changed):
        on_state(event, changed)
        states.append(event.state)

    model._handlers["service_state_changed"] = record
    server.sim.drop_sockets()

    def down():
        if model.services["sim"].state in ("reconnecting", "connecting"):
            texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_status"].texts()
            shown.extend(t for t in texts if t.startswith("sim: "))
        return bool(shown)

    addon.timers.run_until(down, 10, f"the panel to show the drop (states {states})")
    assert any(t.startswith(("sim: Reconnecting", "sim: Connecting")) for t in shown), shown
    addon.timers.run_until(lambda: model.services["sim"].state == "connected", 20, f"recovery (states {states})")
    assert "reconnecting" in states, states
    assert any(e.code == "reconnecting" for e in model.errors)
    assert addon.bridge.runtime().redraws.get("services", 0) >= 3


def test_failed_job_copy_error_details_redacted(addon, server):
    add_server(addon, server.url, token=TOKEN)
    s = bpy.context.scene.movie_director
    s.workflow = workflow_file(addon.tmp, "fail", fail_workflow(f"boom with {TOKEN}"))
    wait_connected(addon)
    job_id = generate(addon)
    addon.timers.run_until(lambda: job_view(addon, job_id).state == "failed", 15, "the job to fail")
    assert s.jobs[job_id].state == "failed"
    assert bpy.ops.movie_director.copy_error(source=job_id) == {"FINISHED"}
    text = bpy.context.window_manager.clipboard
    if text:  # the clipboard needs a window system; headless Blender may keep nothing
        assert TOKEN not in text and "boom with" in text
    from movie_director import redact

    model = addon.bridge.current_model()
    report = redact.error_report(model.errors_for(job_id)[-1], job=model.jobs[job_id], secrets=[TOKEN])
    assert TOKEN not in report and "execution_failed" in report and "boom with" in report


def test_save_reopen_restores_settings_finds_the_running_job_and_never_stores_the_token(addon, server):
    add_server(addon, server.url, token=TOKEN)
    scene = bpy.context.scene
    s = scene.movie_director
    s.workflow = workflow_file(addon.tmp, "progress", progress_workflow(steps=10, step_seconds=0.4))
    s.prompt = "unique-prompt-marker-7781"
    s.seed, s.randomize_seed, s.steps, s.cfg = "1234", False, 28, 6.5
    scene.render.resolution_x, scene.render.resolution_y = 128, 72
    scene.frame_current = 5
    s.channel = 2
    wait_connected(addon)
    job_id = generate(addon)
    addon.timers.run_until(lambda: job_view(addon, job_id).state not in ("pending", "submitting"), 10, "the job")
    view = job_view(addon, job_id)
    assert view.state in ("queued", "running"), (view.state, view.error)
    blend = addon.tmp / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=False)
    data = blend.read_bytes()
    assert b"unique-prompt-marker-7781" in data  # the grep works on this file…
    assert TOKEN.encode() not in data  # …and the token is not in it

    s.prompt = "changed after saving"
    bpy.ops.wm.read_homefile(use_empty=True)
    assert len(bpy.context.scene.movie_director.jobs) == 0
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    s = scene.movie_director
    assert (s.prompt, s.seed, s.randomize_seed, s.steps, s.service) == (
        "unique-prompt-marker-7781",
        "1234",
        False,
        28,
        "sim",
    )
    assert abs(s.cfg - 6.5) < 1e-6
    assert job_id in s.jobs and s.jobs[job_id].frame == 5
    assert addon.bridge.timer_callback in addon.timers.callbacks
    addon.timers.run_until(lambda: job_view(addon, job_id).state == "completed", 30, "the reopened job to finish")
    record = s.jobs[job_id]
    addon.timers.step()
    assert record.state == "completed" and record.imported
    strip = next(st for st in scene.sequence_editor.strips_all if st.type == "IMAGE")
    assert (int(strip.frame_start), strip.channel) == (5, 2)
    bpy.ops.wm.save_mainfile(compress=False)
    assert TOKEN.encode() not in blend.read_bytes()


def test_a_job_survives_a_blender_restart(addon, server):
    """The .blend remembers the job id; a new hub (the add-on disabled and enabled = a new session) finds it."""
    add_server(addon, server.url)
    s = bpy.context.scene.movie_director
    s.workflow = workflow_file(addon.tmp, "progress", progress_workflow(steps=12, step_seconds=0.4))
    bpy.context.scene.frame_current = 9
    bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = 128, 72
    s.channel = 4
    wait_connected(addon)
    job_id = generate(addon)
    addon.timers.run_until(lambda: job_view(addon, job_id).state in ("queued", "running"), 10, "the job to start")
    blend = addon.tmp / "restart.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=False)
    addon_utils.disable(ADDON, default_set=True)  # the hub that submitted the job is gone
    addon_utils.enable(ADDON, default_set=True)
    # Blender restores the preferences from userpref.blend at start; module mode does not, so set them again.
    prefs = _prefs()
    prefs.auto_discover = False
    prefs.output_dir = str(addon.tmp / "out2")
    svc = prefs.services.add()
    svc.name, svc.url = "sim", server.url
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    wait_connected(addon)
    addon.timers.run_until(lambda: job_view(addon, job_id).state == "completed", 30, "the tracked job to finish")
    addon.timers.step()
    record = bpy.context.scene.movie_director.jobs[job_id]
    assert record.state == "completed" and record.imported
    strip = next(st for st in bpy.context.scene.sequence_editor.strips_all if st.type == "IMAGE")
    assert (int(strip.frame_start), strip.channel) == (9, 4)
