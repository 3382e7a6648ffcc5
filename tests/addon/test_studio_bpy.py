"""Studio-server mode in real Blender (``bpy`` 5.0.1, headless): the add-on sends its shots through a real
``director-link serve`` (in-process, loopback) whose ComfyUI is the simulator; the jobs are the studio's (its API lists
them by shot), the results land at each shot's start frame, and switching modes keeps the shots and their takes."""

from __future__ import annotations

import json
import os
import urllib.request
from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy")
director_link = pytest.importorskip("director_link")

from director_link.testing import ComfySimulator  # noqa: E402

from .blender_support import draw_all_panels  # noqa: E402
from .test_addon_bpy import progress_workflow, wait_connected  # noqa: E402
from .test_shots_bpy import shots_by_name, strips_of_shot, wait_shots_done, write_workflow  # noqa: E402


@pytest.fixture
def studio(tmp_path):
    with ComfySimulator(time_scale=0.25) as sim:
        server = director_link.serve(
            port=0,
            database="memory",
            output_dir=str(tmp_path / "studio-out"),
            services=[{"kind": "comfyui", "url": sim.url, "name": "sim"}],
        )
        try:
            yield SimpleNamespace(url=server.url, sim=sim)
        finally:
            server.close()


def studio_jobs(server, tag: str) -> list[dict]:
    with urllib.request.urlopen(f"{server.url}/api/jobs?tag={tag}", timeout=10) as resp:
        return json.loads(resp.read())["jobs"]


def use_studio(addon, url: str) -> None:
    addon.prefs.mode = "STUDIO"
    addon.prefs.studio_url = url
    rt = addon.bridge.runtime()
    addon.timers.run_until(
        lambda: rt.owner.studio and "sim" in rt.owner.services(), 15, "the studio link and its services"
    )
    wait_connected(addon, "studio server")
    wait_connected(addon, "sim")  # the studio's own service, from its list (read every 2 s)


def test_shots_go_through_the_studio_server_and_land_at_their_frames(addon, studio):
    scene = bpy.context.scene
    s = scene.movie_director
    s.workflow = write_workflow(addon.tmp, "fast", progress_workflow(steps=2, step_seconds=0.01))
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    for i in range(6):
        scene.timeline_markers.new(f"S{i}", frame=1 + i * 9)
    scene.frame_start, scene.frame_end = 1, 54
    bpy.ops.movie_director.shots_from_markers()
    use_studio(addon, studio.url)
    rt = addon.bridge.runtime()
    assert rt.owner.hub.url == studio.url
    # The panel says where jobs go and lists the studio's services (from its API), the link first.
    panels = draw_all_panels(bpy.context)
    status = panels["MOVIE_DIRECTOR_PT_sequencer_status"].texts()
    assert any(t == f"Via the studio server {studio.url.split('://')[1]}" for t in status), status
    assert any(t.startswith("sim:") for t in status), status

    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    shots = list(s.shots)
    wait_shots_done(addon, shots)
    model = addon.bridge.current_model()
    for shot in shots:
        view = model.jobs[shot.job_id]
        assert view.state == "completed", view.error
        # The job is the studio's: its API lists it under the shot's id (what its monitor page shows).
        listed = studio_jobs(studio, shot.shot_id)
        assert [j["state"] for j in listed] == ["completed"]
        assert listed[0]["job_id"] == rt.owner.hub.remote_id(shot.job_id)
        (strip,) = strips_of_shot(shot.shot_id)
        assert (strip.frame_final_start, strip.frame_final_duration) == (shot.frame_start, shot.frames)
        take = shot.takes[0]
        assert take.state == "completed"
        assert os.path.isfile(os.path.join(take.folder, "studio_job.json"))
        assert os.path.isfile(os.path.join(take.folder, "take.json"))
        # The result was downloaded next to the .blend's output, not referenced on the studio's disk.
        assert all(p.startswith(take.folder) for p in view.paths)

    # Back to direct mode (the same ComfyUI, straight): the shots and takes stay; a new take goes direct.
    svc = addon.prefs.services.add()
    svc.name, svc.url = "sim", studio.sim.url
    addon.prefs.mode = "DIRECT"
    addon.timers.run_until(lambda: not rt.owner.studio, 15, "direct mode")
    wait_connected(addon, "sim")
    assert [len(shot.takes) for shot in s.shots] == [1] * 6
    assert "studio server" not in model.services
    first = shots_by_name()["S0"]
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=first.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [first])
    assert len(first.takes) == 2 and first.takes[1].state == "completed"
    assert os.path.isfile(os.path.join(first.takes[1].folder, "manifest.json"))  # the own hub's manifest
    assert len(studio_jobs(studio, first.shot_id)) == 1  # not through the studio this time
    (strip,) = strips_of_shot(first.shot_id)
    assert strip.frame_final_start == first.frame_start


def test_a_studio_address_that_is_not_one_is_reported_and_direct_mode_goes_on(addon):
    addon.prefs.studio_url = "ftp://nowhere"
    addon.prefs.mode = "STUDIO"
    rt = addon.bridge.runtime()
    addon.timers.run_until(lambda: any(e.code == "invalid_url" for e in rt.model.errors), 15, "the refusal")
    assert rt.owner.is_open and not rt.owner.studio


def test_a_restarted_blender_follows_its_shots_on_the_studio_server(addon, studio):
    """Blender quits while shots run on the studio server; the reopened .blend (with another output folder, as after
    a first save) follows them there by the ids it saved, and their takes land."""
    import addon_utils

    from .blender_support import ADDON

    scene = bpy.context.scene
    s = scene.movie_director
    s.workflow = write_workflow(addon.tmp, "slow", progress_workflow(steps=20, step_seconds=0.2))
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    scene.timeline_markers.new("A", frame=1)
    scene.timeline_markers.new("B", frame=11)
    scene.frame_start, scene.frame_end = 1, 20
    bpy.ops.movie_director.shots_from_markers()
    use_studio(addon, studio.url)
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    model = addon.bridge.current_model()
    addon.timers.run_until(
        lambda: all(sh.job_id and model.jobs[sh.job_id].posted for sh in s.shots), 30, "both shots on the server"
    )
    addon.timers.step()
    records = {r.shot_id: r.remote_id for r in s.jobs}
    assert all(records.values()) and len(set(records.values())) == 2, records
    blend = addon.tmp / "studio.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=False)
    del scene, s  # freed by the reload below (a failure's report must not read them)
    addon_utils.disable(ADDON, default_set=True)  # Blender quits; the jobs go on on the server
    addon_utils.enable(ADDON, default_set=True)
    prefs = addon.prefs = bpy.context.preferences.addons[ADDON].preferences  # the old ones are freed
    prefs.auto_discover = False
    prefs.output_dir = str(addon.tmp / "elsewhere") + os.sep  # the index of the first session is not here
    prefs.mode, prefs.studio_url = "STUDIO", studio.url
    # As when Blender starts with these preferences: the add-on is in studio mode before the file is opened.
    rt = addon.bridge.runtime()
    addon.timers.run_until(lambda: rt.owner.studio, 15, "studio mode")
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    s = bpy.context.scene.movie_director
    shots = list(s.shots)
    wait_shots_done(addon, shots)
    model = addon.bridge.current_model()
    for shot in shots:
        assert model.jobs[shot.job_id].state == "completed", model.jobs[shot.job_id].error
        assert len(studio_jobs(studio, shot.shot_id)) == 1  # followed, not sent again
        (strip,) = strips_of_shot(shot.shot_id)
        assert (strip.frame_final_start, strip.frame_final_duration) == (shot.frame_start, shot.frames)
        assert shot.takes[0].state == "completed"
