"""Review and hand-off in real Blender (``bpy`` 5.0.1, headless) against the simulator: approve/reject per take, the
cut exported as OpenTimelineIO with each shot's active take at its frames, and the contact sheet."""

from __future__ import annotations

import json
import os

import pytest

bpy = pytest.importorskip("bpy")

from .blender_support import draw_all_panels  # noqa: E402
from .test_addon_bpy import add_server, progress_workflow, wait_connected  # noqa: E402
from .test_shots_bpy import shots_by_name, wait_shots_done, write_workflow  # noqa: E402


def test_review_marks_the_cut_and_the_contact_sheet(addon, server):
    otio = pytest.importorskip("opentimelineio", reason="the test extra installs opentimelineio (PyPI)")
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene.movie_director
    s.workflow = write_workflow(addon.tmp, "fast", progress_workflow(steps=1, step_seconds=0.0))
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    scene.render.fps = 24
    for name, frame in (("A", 1), ("B", 13), ("C", 30)):
        scene.timeline_markers.new(name, frame=frame)
    scene.frame_start, scene.frame_end = 1, 40
    bpy.ops.movie_director.shots_from_markers()
    wait_connected(addon)
    # The export says when there is nothing to hand off yet.
    assert bpy.ops.movie_director.export_cut() == {"CANCELLED"}
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, list(s.shots))
    a = shots_by_name()["A"]
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=a.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [a])
    assert len(a.takes) == 2 and a.active_take == 1

    # Approve A's second take, reject its first; pressing a mark again clears it.
    assert bpy.ops.movie_director.review_take(shot_id=a.shot_id, index=1, verdict="approved") == {"FINISHED"}
    assert bpy.ops.movie_director.review_take(shot_id=a.shot_id, index=0, verdict="rejected") == {"FINISHED"}
    b = shots_by_name()["B"]
    bpy.ops.movie_director.review_take(shot_id=b.shot_id, index=0, verdict="approved")
    bpy.ops.movie_director.review_take(shot_id=b.shot_id, index=0, verdict="approved")
    assert [t.review for t in a.takes] == ["rejected", "approved"] and b.takes[0].review == "none"
    with open(os.path.join(a.takes[1].folder, "take.json")) as fh:
        assert json.load(fh)["review"] == "approved"  # also on disk, next to the take

    path = str(addon.tmp / "hand-off" / "cut.otio")
    assert bpy.ops.movie_director.export_cut(filepath=path) == {"FINISHED"}
    timeline = otio.adapters.read_from_file(path)
    (video,) = timeline.tracks
    clips = [c for c in video if isinstance(c, otio.schema.Clip)]
    assert [c.metadata["director_link"]["shot"] for c in clips] == ["A", "B", "C"]
    for i, clip in enumerate(video):
        shot = shots_by_name()[clip.metadata["director_link"]["shot"]]
        span = video.range_of_child_at_index(i)
        assert (span.start_time.value + scene.frame_start, span.duration.value) == (shot.frame_start, shot.frames)
        take = shot.takes[shot.active_take]
        assert clip.metadata["director_link"]["job_id"] == take.name
        assert clip.media_reference.target_url == otio.url_utils.url_from_filepath(take.paths.splitlines()[0])
    assert clips[0].metadata["director_link"]["review"] == "approved"

    assert bpy.ops.movie_director.contact_sheet(open_it=False) == {"FINISHED"}
    sheet = s.last_export
    assert sheet.endswith("contact_sheet.html") and os.path.isfile(sheet)
    with open(sheet, encoding="utf-8") as fh:
        text = fh.read()
    assert text.count("<tr>") == 4 and "Take 2 (in the cut)" in text and '<span class="rejected">' in text
    for shot in s.shots:
        for take in shot.takes:
            rel = os.path.relpath(take.paths.splitlines()[0], os.path.dirname(sheet))
            assert f'src="{rel}"' in text
    # The take rows offer the marks, the Shots panel the hand-off.
    s.active_shot = list(s.shots).index(a)
    ops = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"].operators()
    assert ops.count("movie_director.review_take") == 4  # two takes × approve/reject
    assert "movie_director.export_cut" in ops and "movie_director.contact_sheet" in ops
