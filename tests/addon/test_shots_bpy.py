"""Shots in real Blender (``bpy`` 5.0.1, headless) against the ComfyUI simulator: the shot list from markers and from
strips, a batch of shots generated at once landing at each shot's start frame for its length, takes, a UI-format
workflow with its parameters from the core, and a Blender restart in the middle of a batch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import addon_utils  # noqa: E402

from .blender_support import ADDON, draw_all_panels  # noqa: E402
from .test_addon_bpy import _prefs, add_server, progress_workflow, wait_connected  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def write_workflow(tmp: Path, name: str, prompt: dict) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(prompt))
    return str(path)


def scene_settings():
    return bpy.context.scene.movie_director


def shots_by_name():
    return {shot.name: shot for shot in scene_settings().shots}


def strips_of_shot(shot_id: str):
    from movie_director import importer

    return importer.take_strips(bpy.context.scene, shot_id)


def wait_schema(addon, name: str = "sim"):
    rt = addon.bridge.runtime()
    addon.timers.run_until(lambda: rt.owner.schemas.get(rt.owner.hub, name, fetch=False), 15, "the node list")


def wait_shots_done(addon, shots, timeout=60.0):
    model = addon.bridge.current_model()

    def state(shot):
        if shot.waiting:
            return "waiting"
        view = model.jobs.get(shot.job_id)
        return view.state if view is not None else shot.job_state  # finished before a restart: as saved

    def done():
        return all(state(shot) in ("completed", "failed", "cancelled") for shot in shots)

    addon.timers.run_until(done, timeout, "every shot to finish")
    addon.timers.step()


# ---- the list ---------------------------------------------------------------------------------------------------


def test_shots_from_markers_sorted_with_cameras_and_stable_ids(addon):
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 100
    cam = bpy.data.objects.new("CamB", bpy.data.cameras.new("CamB"))
    scene.collection.objects.link(cam)
    # Added out of order: the list follows the timeline.
    scene.timeline_markers.new("B", frame=40).camera = cam
    scene.timeline_markers.new("A", frame=1)
    scene.timeline_markers.new("C", frame=71)
    assert bpy.ops.movie_director.shots_from_markers() == {"FINISHED"}
    shots = scene_settings().shots
    assert [(s.name, s.frame_start, s.frame_end) for s in shots] == [("A", 1, 39), ("B", 40, 70), ("C", 71, 100)]
    assert shots[1].camera == cam and shots[0].camera is None
    ids = {s.name: s.shot_id for s in shots}
    assert len(set(ids.values())) == 3
    shots_by_name()["B"].prompt = "override for B"

    # Move B, rename C: same shots (ids, overrides), new ranges, still in timeline order.
    marker_b = next(m for m in scene.timeline_markers if m.name == "B")
    marker_b.frame = 20
    next(m for m in scene.timeline_markers if m.name == "C").name = "C renamed"
    assert bpy.ops.movie_director.shots_from_markers() == {"FINISHED"}
    shots = scene_settings().shots
    assert [(s.name, s.frame_start, s.frame_end) for s in shots] == [
        ("A", 1, 19),
        ("B", 20, 70),
        ("C renamed", 71, 100),
    ]
    assert {s.name: s.shot_id for s in shots} == {"A": ids["A"], "B": ids["B"], "C renamed": ids["C"]}
    assert shots_by_name()["B"].prompt == "override for B"

    # A deleted marker keeps its shot (marked missing), never silently drops takes.
    scene.timeline_markers.remove(next(m for m in scene.timeline_markers if m.name == "A"))
    bpy.ops.movie_director.shots_from_markers()
    assert shots_by_name()["A"].missing and not shots_by_name()["B"].missing


def test_shots_from_strips_on_a_channel_keep_their_id_when_renamed_and_moved(addon):
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    first = editor.strips.new_effect(name="wide", type="COLOR", channel=2, frame_start=10, length=20)
    editor.strips.new_effect(name="close", type="COLOR", channel=2, frame_start=30, length=15)
    editor.strips.new_effect(name="other channel", type="COLOR", channel=5, frame_start=1, length=5)
    assert bpy.ops.movie_director.shots_from_strips(channel=2) == {"FINISHED"}
    shots = scene_settings().shots
    assert [(s.name, s.frame_start, s.frame_end, s.source) for s in shots] == [
        ("wide", 10, 29, "STRIP"),
        ("close", 30, 44, "STRIP"),
    ]
    wide_id = shots[0].shot_id
    assert first["movie_director_shot"] == wide_id
    first.name = "establishing"
    first.frame_start = 50
    bpy.ops.movie_director.shots_from_strips(channel=2)
    shots = scene_settings().shots
    assert [(s.name, s.shot_id == wide_id, s.frame_start) for s in shots] == [
        ("close", False, 30),
        ("establishing", True, 50),
    ]
    # Selected strips instead of a channel.
    for strip in editor.strips:
        strip.select = strip.name == "other channel"
    assert bpy.ops.movie_director.shots_from_strips(channel=0) == {"FINISHED"}
    assert "other channel" in shots_by_name()


# ---- generating ----------------------------------------------------------------------------------------------------


def _markers(scene, count: int, length: int) -> None:
    for i in range(count):
        scene.timeline_markers.new(f"S{i:02d}", frame=1 + i * length)
    scene.frame_start, scene.frame_end = 1, count * length


def test_generate_all_24_shots_land_at_each_start_frame_for_its_length(addon, server):
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = write_workflow(addon.tmp, "fast", progress_workflow(steps=1, step_seconds=0.0))
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    _markers(scene, 24, 7)
    # Something already on channel 1 over shot 3: that shot goes to channel 2, the others stay on 1.
    editor = scene.sequence_editor_create()
    editor.strips.new_effect(name="blocker", type="COLOR", channel=1, frame_start=15, length=3)
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    shots = list(s.shots)
    assert len(shots) == 24 and all(shot.waiting for shot in shots)  # marked; the timer sends them
    wait_shots_done(addon, shots)
    assert all(shot.job_id and not shot.waiting for shot in shots)
    model = addon.bridge.current_model()
    for shot in shots:
        assert model.jobs[shot.job_id].state == "completed", model.jobs[shot.job_id].error
        strips = strips_of_shot(shot.shot_id)
        if len(strips) != 1:
            with open("/tmp/dbg_fail.txt", "w") as fh:
                fh.write(
                    repr(
                        (
                            addon.module.hub().job(shot.job_id).info(),
                            server.get("/history/" + shot.job_id),
                            model.jobs[shot.job_id],
                        )
                    )
                )
        assert len(strips) == 1, (shot.name, [(e.code, e.message) for e in model.errors], model.jobs[shot.job_id])
        strip = strips[0]
        assert (strip.frame_final_start, strip.frame_final_duration) == (shot.frame_start, shot.frames)
        assert strip.channel == (2 if shot.name == "S02" else 1), (shot.name, strip.channel)
        assert len(shot.takes) == 1 and shot.active_take == 0
        take = shot.takes[0]
        assert take.state == "completed" and os.path.isfile(os.path.join(take.folder, "take.json"))
        assert os.path.isfile(os.path.join(take.folder, "manifest.json"))
    # Distinct seeds per shot (seed policy "per shot"), each sent to the workflow.
    seeds = {shot.takes[0].seed for shot in shots}
    assert len(seeds) == 24
    # Nothing overlaps on any channel.
    spans = sorted((st.channel, st.frame_final_start, st.frame_final_end) for st in scene.sequence_editor.strips_all)
    for a, b in zip(spans, spans[1:], strict=False):
        assert a[0] != b[0] or a[2] <= b[1], (a, b)
    panel = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"]
    assert any("Done · 1 take" in t for t in panel.texts())


@pytest.mark.parametrize("threaded", [False, True], ids=["split-in-place", "split-on-a-thread"])
def test_video_shot_gets_its_frame_count_and_fps_and_lands_as_a_sequence(addon, server, monkeypatch, threaded):
    """The LTX template on the simulator: the shot's 31 frames ask for 33 (8·k + 1), the strip is 31 frames long at
    the shot's start, made of the animated file's frames. ``threaded``: the file is treated like a real animated
    WebP (split off Blender's thread, the take lands when that is done)."""
    from movie_director import media

    if threaded:
        monkeypatch.setattr(
            media, "needs_decoder", lambda p: p.endswith(".webp") and not os.path.isdir(media.frames_dir(p))
        )
    add_server(addon, server.url)
    scene = bpy.context.scene
    scene.render.fps = 12
    s = scene_settings()
    s.workflow = str(ROOT / "workflows" / "ltx_video.json")
    s.steps = 2
    scene.render.resolution_x, scene.render.resolution_y = 64, 64
    scene.timeline_markers.new("intro", frame=10)
    scene.timeline_markers.new("end", frame=41)
    scene.frame_end = 60
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=shots_by_name()["intro"].shot_id) == {"FINISHED"}
    shot = shots_by_name()["intro"]
    wait_shots_done(addon, [shot])
    addon.timers.run_until(lambda: strips_of_shot(shot.shot_id), 15, "the take's strip")
    sent = [r for r in server.sim.requests() if r["path"] == "/prompt" and r["method"] == "POST"][-1]["json"]["prompt"]
    assert sent["70"]["inputs"]["length"] == 33  # 31 frames → the next 8·k + 1
    assert sent["69"]["inputs"]["frame_rate"] == 12 and sent["41"]["inputs"]["fps"] == 12
    (strip,) = strips_of_shot(shot.shot_id)
    assert strip.type == "IMAGE" and len(strip.elements) > 1  # the animated file became a frame sequence
    assert (strip.frame_final_start, strip.frame_final_duration) == (10, 31)


def test_takes_switch_keeps_channel_and_trims(addon, server):
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = write_workflow(addon.tmp, "fast", progress_workflow(steps=1, step_seconds=0.0))
    scene.render.resolution_x, scene.render.resolution_y = 64, 64
    scene.timeline_markers.new("one", frame=40)
    scene.frame_end = 70
    bpy.ops.movie_director.shots_from_markers()
    shot = s.shots[0]
    shot.channel = 3
    wait_connected(addon)
    bpy.ops.movie_director.generate_shots(which="ALL")
    wait_shots_done(addon, [shot])
    (strip,) = strips_of_shot(shot.shot_id)
    assert (strip.channel, strip.frame_final_start, strip.frame_final_duration) == (3, 40, 31)
    strip.frame_final_start = 45  # the editor trims the head
    shot.prompt = "changed"  # makes it stale …
    from movie_director import shotlist

    assert shotlist.is_stale(scene, shot)
    scene.frame_current = 60  # … and the playhead is elsewhere: the new take still lands at the shot
    assert bpy.ops.movie_director.generate_shots(which="STALE") == {"FINISHED"}
    wait_shots_done(addon, [shot])
    errors = [(e.code, e.message) for e in addon.bridge.current_model().errors]
    assert len(shot.takes) == 2 and shot.active_take == 1, (errors, [(t.name, t.state) for t in shot.takes])
    assert not shotlist.is_stale(scene, shot)
    (strip,) = strips_of_shot(shot.shot_id)
    assert (strip.channel, strip.frame_final_start, strip.frame_final_end) == (3, 45, 71)
    assert strip["movie_director_take"].endswith(shot.takes[1].name)
    first_folder = shot.takes[0].folder
    assert os.path.isdir(first_folder)  # the previous take stays on disk
    assert bpy.ops.movie_director.use_take(shot_id=shot.shot_id, index=0) == {"FINISHED"}
    (strip,) = strips_of_shot(shot.shot_id)
    assert strip["movie_director_take"].endswith(shot.takes[0].name) and shot.active_take == 0
    assert (strip.channel, strip.frame_final_start, strip.frame_final_end) == (3, 45, 71)


def test_ui_format_workflow_with_parameters_from_the_core(addon, server):
    """A UI-format file (what ComfyUI's Save writes) is converted with the server's node list; the prompt, seed,
    steps and size reach the nodes the core's roles name."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = str(FIXTURES / "comfyui" / "ui_conversion" / "default_graph.workflow.json")
    s.prompt = "a lighthouse"
    s.steps = 3
    s.seed_policy = "FIXED"
    s.seed = str(2**64 - 1)
    scene.render.resolution_x, scene.render.resolution_y = 128, 96
    scene.timeline_markers.new("only", frame=1)
    scene.frame_end = 5
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    shot = s.shots[0]
    wait_shots_done(addon, [shot])
    view = addon.bridge.current_model().jobs[shot.job_id]
    assert view.state == "completed", view.error
    sent = [r for r in server.sim.requests() if r["path"] == "/prompt" and r["method"] == "POST"][-1]["json"]["prompt"]
    sampler = next(n for n in sent.values() if n["class_type"] == "KSampler")["inputs"]
    latent = next(n for n in sent.values() if n["class_type"] == "EmptyLatentImage")["inputs"]
    texts = [n["inputs"]["text"] for n in sent.values() if n["class_type"] == "CLIPTextEncode"]
    assert sampler["seed"] == 2**64 - 1 and sampler["steps"] == 3  # the full seed range
    assert (latent["width"], latent["height"]) == (128, 96)
    assert "a lighthouse" in texts
    assert shot.takes[0].seed == str(2**64 - 1)


def test_restart_mid_batch_reattaches_running_shots_keeps_finished_takes_and_offers_the_rest(
    addon, server, monkeypatch
):
    """Blender closes in the middle of a batch: some shots done, some on the server, some never sent. After the
    restart the finished takes are kept, the ones on the server are followed to the end, the unsent ones are offered
    (Continue Batch) — nothing is run twice."""
    from movie_director import shotlist

    monkeypatch.setattr(shotlist, "BATCH_MAX_PER_TICK", 1)  # one shot sent per tick: the batch is caught mid-way
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = write_workflow(addon.tmp, "slowish", progress_workflow(steps=4, step_seconds=0.1))
    scene.render.resolution_x, scene.render.resolution_y = 64, 64
    _markers(scene, 8, 10)
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    assert all(shot.waiting and not shot.job_id for shot in s.shots)  # nothing sent by the operator itself
    model = addon.bridge.current_model()
    ids = {shot.name: shot.shot_id for shot in s.shots}
    addon.timers.run_until(lambda: sum(1 for sh in s.shots if sh.job_id) >= 3, 30, "three shots sent")
    monkeypatch.setattr(shotlist, "BATCH_MAX_PER_TICK", 0)  # Blender "hangs" here: nothing more is sent
    addon.timers.run_until(
        lambda: any(sh.job_id and model.jobs[sh.job_id].state == "completed" for sh in s.shots),
        30,
        "a first shot to finish",
    )
    addon.timers.step()
    sent_before = {sh.name: sh.job_id for sh in s.shots if sh.job_id}
    assert 3 <= len(sent_before) < 8, sent_before
    assert any(model.jobs[j].state in ("queued", "running") for j in sent_before.values())
    blend = addon.tmp / "batch.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=False)
    saved_states = {sh.name: sh.job_state for sh in s.shots}
    assert {st for name, st in saved_states.items() if name in sent_before} <= {"completed", "queued", "running"}
    assert "queued" in saved_states.values() or "running" in saved_states.values(), saved_states
    addon_utils.disable(ADDON, default_set=True)  # Blender quits mid-batch
    addon_utils.enable(ADDON, default_set=True)
    prefs = _prefs()
    prefs.auto_discover = False
    prefs.output_dir = str(addon.tmp / "out2") + os.sep
    svc = prefs.services.add()
    svc.name, svc.url = "sim", server.url
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    s = scene_settings()
    # The panel shows every shot's last state at once, before anything is heard from the server.
    texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"].texts()
    assert any("Done · 1 take" in t for t in texts)
    assert any("not sent" in t for t in texts), texts
    wait_connected(addon)
    monkeypatch.setattr(shotlist, "BATCH_MAX_PER_TICK", 64)
    for _ in range(20):
        addon.timers.step()
    # Not sent by themselves after a restart: offered.
    assert {sh.name for sh in s.shots if sh.job_id} == set(sent_before)
    assert bpy.ops.movie_director.continue_batch() == {"FINISHED"}
    shots = list(s.shots)
    addon.timers.run_until(lambda: not any(sh.waiting for sh in shots), 30, "the rest of the batch to be sent")
    wait_shots_done(addon, shots)
    for shot in shots:
        assert shot.shot_id == ids[shot.name]
        if shot.name in sent_before:
            assert shot.job_id == sent_before[shot.name]  # followed, not sent again
        assert len(shot.takes) == 1, (shot.name, [t.name for t in shot.takes])  # nothing run twice
        assert shot.takes[0].state == "completed" and shot.job_state == "completed", (shot.name, shot.message)
        (strip,) = strips_of_shot(shot.shot_id)
        assert strip.frame_final_start == shot.frame_start and strip.frame_final_duration == shot.frames


def test_cancel_one_and_all(addon, server):
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = write_workflow(
        addon.tmp, "slow", {"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 60.0, "nonce": 0}}}
    )
    _markers(scene, 4, 5)
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    bpy.ops.movie_director.generate_shots(which="ALL")
    model = addon.bridge.current_model()
    addon.timers.run_until(
        lambda: all(sh.job_id and model.jobs[sh.job_id].state in ("queued", "running") for sh in s.shots),
        15,
        "the batch on the server",
    )
    first = s.shots[0]
    assert bpy.ops.movie_director.cancel_shots(which="ONE", shot_id=first.shot_id) == {"FINISHED"}
    addon.timers.run_until(lambda: model.jobs[first.job_id].state == "cancelled", 15, "one shot cancelled")
    assert all(model.jobs[sh.job_id].state in ("queued", "running") for sh in s.shots[1:])
    assert bpy.ops.movie_director.cancel_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, list(s.shots))
    assert all(model.jobs[sh.job_id].state == "cancelled" for sh in s.shots)
    assert all(len(sh.takes) == 1 and sh.takes[0].state == "cancelled" for sh in s.shots)
    assert not strips_of_shot(first.shot_id)
    texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"].texts()
    assert "Cancelled" in texts


def test_unsaved_results_move_next_to_the_blend_on_first_save(addon, server, tmp_path):
    add_server(addon, server.url)
    addon.prefs.property_unset("output_dir")  # the default: "//director_link/", next to the .blend
    addon.timers.step()
    from movie_director import takes

    rt = addon.bridge.runtime()
    assert rt.owner.hub.output_dir == takes.unsaved_output_dir()
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = write_workflow(addon.tmp, "fast", progress_workflow(steps=1, step_seconds=0.0))
    scene.render.resolution_x, scene.render.resolution_y = 64, 64
    scene.timeline_markers.new("one", frame=1)
    scene.frame_end = 4
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    bpy.ops.movie_director.generate_shots(which="ALL")
    shot = s.shots[0]
    wait_shots_done(addon, [shot])
    errors = [(e.code, e.message) for e in addon.bridge.current_model().errors]
    view = addon.bridge.current_model().jobs.get(shot.job_id)
    assert shot.job_state == "completed" and len(strips_of_shot(shot.shot_id)) == 1, (
        shot.message,
        errors,
        [(t.state, t.paths, t.folder) for t in shot.takes],
        view and view.outputs,
        bpy.data.filepath,
    )
    try:
        project = tmp_path / "project"
        project.mkdir()
        blend = project / "film.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=False)
        folder = shot.takes[0].folder
        assert folder.startswith(str(project / "director_link" / shot.shot_id)), folder
        assert os.path.isfile(os.path.join(folder, "take.json"))
        (strip,) = strips_of_shot(shot.shot_id)
        assert bpy.path.abspath(strip.directory).startswith(str(project / "director_link"))
        assert "director_link/director_link" not in strip.directory.replace("\\", "/")
        assert b"movie_director_unsaved" not in blend.read_bytes()
    finally:
        shutil.rmtree(takes.unsaved_output_dir(), ignore_errors=True)


def test_strip_helpers_use_strips_and_fall_back_to_sequences_and_the_sequencer_scene():
    """Blender 4.4 renamed ``sequences``/``sequences_all`` to ``strips``/``strips_all`` (5.0 removed the old names);
    5.0 added ``context.sequencer_scene``. The helpers take whichever exists (stand-ins for 4.2/4.3 and 5.0)."""
    from types import SimpleNamespace as NS

    from movie_director import importer

    def strip(ch, start, end, ident):
        return NS(channel=ch, frame_final_start=start, frame_final_end=end, as_pointer=lambda: ident)

    old_strips = [strip(1, 1, 10, 1)]
    old_editor = NS(sequences="top-level (4.3)", sequences_all=old_strips)
    old_scene = NS(sequence_editor=old_editor, sequence_editor_create=lambda: old_editor)
    assert importer.strips_of(old_scene) == "top-level (4.3)"
    assert importer.all_strips(old_scene) == old_strips
    assert importer.free_channel(old_scene, 5, 8) == 2 and importer.free_channel(old_scene, 10, 20) == 1
    new_editor = NS(strips="top-level (5.0)", strips_all=[strip(1, 1, 10, 2), strip(2, 1, 10, 3)])
    new_scene = NS(sequence_editor=new_editor, sequence_editor_create=lambda: new_editor)
    assert importer.strips_of(new_scene) == "top-level (5.0)"
    assert importer.free_channel(new_scene, 5, 8) == 3
    assert importer.all_strips(NS(sequence_editor=None)) == []
    edited, active = NS(name="edit"), NS(name="active")
    assert importer.sequencer_scene(NS(sequencer_scene=edited, scene=active)) is edited
    assert importer.sequencer_scene(NS(sequencer_scene=None, scene=active)) is active
    assert importer.sequencer_scene(NS(scene=active)) is active  # before 5.0


def test_a_shot_the_server_would_reject_fails_before_anything_is_sent(addon, server):
    """Checked against the server's node list first: the shot says which node and input, and what to use; the other
    shots of the batch go on."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = str(ROOT / "workflows" / "sd_basic.json")
    scene.render.resolution_x, scene.render.resolution_y = 64, 64
    _markers(scene, 3, 5)
    bpy.ops.movie_director.shots_from_markers()
    bad, typo, good = s.shots
    bad.extra = "3.cfg = 500"
    typo.extra = "99.nothing = 1"
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [bad, typo, good])
    assert bad.job_state == "failed" and not bad.job_id
    assert "node 3 (KSampler): cfg = 500 is bigger than the maximum 100" in bad.message
    assert "use a value from" in bad.message
    assert typo.job_state == "failed" and "99" in typo.message
    model = addon.bridge.current_model()
    assert any("cfg = 500" in e.message for e in model.errors_for(bad.shot_id))  # what Copy Error Details copies
    assert bpy.ops.movie_director.copy_error(source=bad.shot_id) == {"FINISHED"}
    assert good.job_state == "completed"
    posted = [r for r in server.sim.requests() if r["path"] == "/prompt" and r["method"] == "POST"]
    assert len(posted) == 1  # only the good shot reached the server
    texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"].texts()
    assert "1 shots" not in texts and any("2 failed" in t for t in texts), texts
