"""Pictures from the scene as a workflow's image input, in real Blender (``bpy`` 5.0.1, headless) against the
ComfyUI simulator: the shot's camera rendered at its start frame, an image strip's frame and an image file are
uploaded once (a second take of the same picture uploads nothing) and bound to the workflow's LoadImage, found
through the core's parameter list or the shipped template's bindings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from .test_addon_bpy import add_server, wait_connected  # noqa: E402
from .test_shots_bpy import ROOT, scene_settings, strips_of_shot, wait_schema, wait_shots_done  # noqa: E402

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load Image"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "md_test/invert"}},
}


def sha(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def uploads(server) -> list[dict]:
    return [r for r in server.sim.requests() if r["path"] == "/upload/image" and r["method"] == "POST"]


def prompts(server) -> list[dict]:
    return [r["json"]["prompt"] for r in server.sim.requests() if r["path"] == "/prompt" and r["method"] == "POST"]


def camera_scene(frame: int = 10):
    """A 32×32 Workbench scene: a camera looking at a cube, a marker at ``frame`` bound to the camera."""
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.resolution_percentage = 100
    cam = bpy.data.objects.new("ShotCam", bpy.data.cameras.new("ShotCam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -6.0, 0.0)
    cam.rotation_euler = (1.5708, 0.0, 0.0)
    mesh = bpy.data.meshes.new("Cube")
    verts = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    scene.collection.objects.link(bpy.data.objects.new("Cube", mesh))
    scene.timeline_markers.new("wide", frame=frame).camera = cam
    scene.frame_start, scene.frame_end = 1, frame + 19
    scene.frame_current = 1
    scene.render.image_settings.file_format = "JPEG"  # the user's choice, put back after the PNG render
    return scene, cam


def pixels(path: str) -> list[float]:
    image = bpy.data.images.load(path, check_existing=False)
    try:
        return list(image.pixels[:])
    finally:
        bpy.data.images.remove(image)


def write_png(path: Path, rgb: tuple[float, float, float]) -> str:
    image = bpy.data.images.new("md_test_input", 16, 16)
    image.pixels[:] = [*rgb, 1.0] * (16 * 16)
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return str(path)


def test_camera_render_is_uploaded_once_bound_to_load_image_and_the_result_lands_at_the_shot(addon, server):
    add_server(addon, server.url)
    scene, cam = camera_scene(frame=10)
    s = scene_settings()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    s.input_source, s.input_render = "CAMERA", "VIEWPORT"  # no 3D view without a window: a final render
    bpy.ops.movie_director.shots_from_markers()
    (shot,) = s.shots
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    before = (scene.frame_current, scene.camera, scene.render.filepath, scene.render.image_settings.file_format)

    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [shot])
    assert shot.job_id, shot.message
    view = addon.bridge.current_model().jobs[shot.job_id]
    assert view.state == "completed", (view.error, shot.message)
    # The scene was put back as it was (camera, frame, output path).
    after = (scene.frame_current, scene.camera, scene.render.filepath, scene.render.image_settings.file_format)
    assert after == before

    take = shot.takes[0]
    assert take.input_key.startswith("camera:ShotCam:10:") and os.path.isfile(take.input_file)
    (upload,) = uploads(server)
    sent = prompts(server)[-1]
    uploaded_name = sent["1"]["inputs"]["image"]
    assert uploaded_name != "example.png"
    on_server = os.path.join(server.sim.input_dir, uploaded_name)
    assert sha(on_server) == sha(take.input_file)  # the camera picture, byte for byte
    manifest = json.loads(Path(take.folder, "take.json").read_text())
    assert manifest["input"]["uploaded_as"] == uploaded_name and manifest["input"]["source"] == "camera"
    # The result is the inverted render (the simulator's LoadImage read the uploaded file) and lands at the shot.
    (strip,) = strips_of_shot(shot.shot_id)
    assert (strip.frame_final_start, strip.frame_final_duration) == (10, 20)
    result = bpy.path.abspath(os.path.join(strip.directory, strip.elements[0].filename))
    got, given = pixels(result), pixels(take.input_file)
    assert len(got) == len(given) == 32 * 32 * 4
    assert max(abs((1.0 - a) - b) for i, (a, b) in enumerate(zip(given, got, strict=True)) if i % 4 != 3) < 0.02
    assert len({round(v, 2) for i, v in enumerate(given) if i % 4 != 3}) > 1  # the cube is in the picture

    # A second take of the unchanged shot: rendered again — the camera's view, not the first take's strip now over
    # the frame in the Sequencer — the same bytes, so not uploaded again.
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=shot.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [shot])
    assert len(shot.takes) == 2 and shot.takes[1].state == "completed", shot.message
    assert len(uploads(server)) == 1, (prompts(server)[-1]["1"], sorted(os.listdir(server.sim.input_dir)))
    assert prompts(server)[-1]["1"]["inputs"]["image"] == uploaded_name

    # Moving the camera makes the shot stale (its picture would change).
    from movie_director import shotlist

    assert not shotlist.is_stale(scene, shot)
    cam.location.x += 0.5
    bpy.context.view_layer.update()
    assert shotlist.is_stale(scene, shot)


def test_no_camera_fails_the_shot_before_anything_is_sent(addon, server):
    add_server(addon, server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    scene.timeline_markers.new("nocam", frame=1)
    scene.frame_end = 10
    bpy.ops.movie_director.shots_from_markers()
    (shot,) = s.shots
    wait_connected(addon)
    server.sim.clear_requests()
    bpy.ops.movie_director.generate_shots(which="ALL")
    addon.timers.run_until(lambda: shot.job_state == "failed", 15, "the shot to fail")
    assert "no camera" in shot.message and "input picture" in shot.message
    assert not prompts(server) and not uploads(server)


def test_image_file_and_image_strip_feed_the_img2video_template_through_its_bindings(addon, server):
    """``ltx_img2video`` ships bindings naming its "Start Frame" LoadImage (node 78) as the upload: one shot takes an
    image file, the other an image strip's frame; both run on the simulator, each picture uploaded once."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 64
    red = write_png(addon.tmp / "red.png", (1.0, 0.0, 0.0))
    blue = write_png(addon.tmp / "blue.png", (0.0, 0.0, 1.0))
    editor = scene.sequence_editor_create()
    strip = editor.strips.new_image(name="plate", filepath=blue, channel=5, frame_start=30)
    strip.frame_final_duration = 5
    s = scene_settings()
    s.workflow = str(ROOT / "workflows" / "ltx_img2video.json")
    s.steps = 1
    scene.timeline_markers.new("from file", frame=1)
    scene.timeline_markers.new("from strip", frame=30)
    scene.frame_end = 45
    bpy.ops.movie_director.shots_from_markers()
    by_name = {shot.name: shot for shot in s.shots}
    by_name["from file"].input_source, by_name["from file"].input_path = "FILE", red
    by_name["from strip"].input_source, by_name["from strip"].input_path = "STRIP", "plate"
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, list(s.shots))
    model = addon.bridge.current_model()
    for shot in s.shots:
        assert model.jobs[shot.job_id].state == "completed", (model.jobs[shot.job_id].error, shot.message)
    assert len(uploads(server)) == 2
    sent = {p["78"]["inputs"]["image"] for p in prompts(server)}
    on_server = {sha(os.path.join(server.sim.input_dir, name)) for name in sent}
    assert on_server == {sha(red), sha(blue)}
    assert by_name["from file"].takes[0].input_file == red
    assert by_name["from strip"].takes[0].input_file == blue


def test_upscale_4x_from_the_camera_and_controlnet_pose_from_a_pose_image_run_from_the_shots(addon, server):
    """The other shipped templates that take a picture, each through its bindings from a shot: ``upscale_4x`` gets
    the shot camera's render (32×32 → 128×128 on the simulator), ``controlnet_pose`` gets its pose pass given as an
    image file (an OpenPose skeleton rendered elsewhere) in its "Pose Image" LoadImage (node 11)."""
    add_server(addon, server.url)
    scene, _cam = camera_scene(frame=10)
    pose = write_png(addon.tmp / "pose.png", (0.0, 1.0, 0.0))
    scene.timeline_markers.new("dance", frame=40)
    scene.frame_end = 49
    s = scene_settings()
    s.input_source, s.input_render = "CAMERA", "FINAL"
    s.steps = 1
    bpy.ops.movie_director.shots_from_markers()
    by_name = {shot.name: shot for shot in s.shots}
    wide, dance = by_name["wide"], by_name["dance"]
    wide.workflow = str(ROOT / "workflows" / "upscale_4x.json")
    dance.workflow = str(ROOT / "workflows" / "controlnet_pose.json")
    dance.input_source, dance.input_path = "FILE", pose
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [wide, dance])
    model = addon.bridge.current_model()
    for shot in (wide, dance):
        assert model.jobs[shot.job_id].state == "completed", (shot.name, model.jobs[shot.job_id].error, shot.message)
    assert len(uploads(server)) == 2
    by_workflow = {("11" in p): p for p in prompts(server)}
    upscaled, posed = by_workflow[False], by_workflow[True]
    assert sha(os.path.join(server.sim.input_dir, upscaled["1"]["inputs"]["image"])) == sha(wide.takes[0].input_file)
    assert wide.takes[0].input_key.startswith("camera:ShotCam:10:")
    assert sha(os.path.join(server.sim.input_dir, posed["11"]["inputs"]["image"])) == sha(pose)
    assert dance.takes[0].input_file == pose

    (strip,) = strips_of_shot(wide.shot_id)
    assert (strip.frame_final_start, strip.frame_final_duration) == (10, 30)  # up to the next marker
    image = bpy.data.images.load(bpy.path.abspath(os.path.join(strip.directory, strip.elements[0].filename)))
    try:
        assert tuple(image.size) == (128, 128)  # four times the 32×32 camera picture
    finally:
        bpy.data.images.remove(image)
    (strip,) = strips_of_shot(dance.shot_id)
    assert (strip.frame_final_start, strip.frame_final_duration) == (40, 10)


def test_continuity_each_shot_starts_from_the_previous_shots_last_frame(addon, server):
    """Continuity: with "Previous shot" as the input, generate all sends the shots in order, each once the one
    before has landed, with its last frame as the picture. Through an invert workflow a red first picture gives
    cyan, red, cyan; a new take of the first shot makes the next one stale; the first shot alone fails with why."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    red = write_png(addon.tmp / "red.png", (1.0, 0.0, 0.0))
    s = scene_settings()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    s.input_source = "PREVIOUS"
    for name, frame in (("one", 1), ("two", 11), ("three", 21)):
        scene.timeline_markers.new(name, frame=frame)
    scene.frame_end = 30
    bpy.ops.movie_director.shots_from_markers()
    one, two, three = s.shots
    wait_connected(addon)
    wait_schema(addon)

    # Alone, the first shot has nothing to continue from.
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=one.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [one])
    assert one.job_state == "failed" and "first shot" in one.message, one.message

    one.input_source, one.input_path = "FILE", red
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [one, two, three])
    model = addon.bridge.current_model()
    for shot in (one, two, three):
        assert model.jobs[shot.job_id].state == "completed", (shot.name, model.jobs[shot.job_id].error, shot.message)

    def result(shot) -> str:
        (strip,) = strips_of_shot(shot.shot_id)
        assert strip.frame_final_start == shot.frame_start
        return bpy.path.abspath(os.path.join(strip.directory, strip.elements[-1].filename))

    # Each picture sent is the previous shot's result, byte for byte.
    sent = [os.path.join(server.sim.input_dir, p["1"]["inputs"]["image"]) for p in prompts(server)]
    assert len(sent) == 3
    assert sha(sent[0]) == sha(red)
    assert sha(sent[1]) == sha(result(one)) and two.takes[0].input_file == result(one)
    assert sha(sent[2]) == sha(result(two))
    assert two.takes[0].input_key == f"previous:{one.shot_id}:{one.job_id}"
    for shot, rgb in ((one, (0, 1, 1)), (two, (1, 0, 0)), (three, (0, 1, 1))):
        px = pixels(result(shot))
        assert all(abs(px[i] - rgb[i]) < 0.02 for i in range(3)), (shot.name, px[:4])

    # Another take of the first shot: the second shot's picture would change, so it is stale; the third is not.
    from movie_director import shotlist

    assert not shotlist.is_stale(scene, two)
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=one.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [one])
    assert shotlist.is_stale(scene, two) and not shotlist.is_stale(scene, three)


def write_clip(path: Path) -> str:
    """A 3-frame 32×24 H.264 movie (red, green, blue frames), written by Blender itself from colour strips in a
    scene of its own."""
    maker = bpy.data.scenes.new("md_test_clip")
    try:
        maker.render.resolution_x, maker.render.resolution_y, maker.render.resolution_percentage = 32, 24, 100
        maker.view_settings.view_transform = "Standard"
        editor = maker.sequence_editor_create()
        for i, rgb in enumerate([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]):
            editor.strips.new_effect(name=f"c{i}", type="COLOR", channel=1, frame_start=i + 1, length=1).color = rgb
        maker.frame_start, maker.frame_end = 1, 3
        settings = maker.render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5.0: movies are a media type of their own
            settings.media_type = "VIDEO"
        settings.file_format = "FFMPEG"
        maker.render.ffmpeg.format, maker.render.ffmpeg.codec = "MPEG4", "H264"
        maker.render.ffmpeg.constant_rate_factor = "LOSSLESS"
        maker.render.filepath = str(path)
        maker.render.use_file_extension = False
        bpy.ops.render.render(animation=True, scene=maker.name)
    finally:
        bpy.data.scenes.remove(maker)
    assert path.is_file()
    return str(path)


def test_a_movie_file_and_a_movie_strip_give_their_frame_as_the_picture(addon, server):
    """A movie as the input: a movie file gives its first frame, a movie strip the frame it shows at the shot's
    start (decoded by Blender: no ffmpeg or Pillow needed); the frame is uploaded and inverted on the simulator."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    clip = write_clip(addon.tmp / "clip.mp4")
    scene.frame_current = 7  # the frame read does not depend on the playhead
    editor = scene.sequence_editor_create()
    editor.strips.new_movie("plate", clip, 4, 30)
    s = scene_settings()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    scene.timeline_markers.new("from file", frame=1)
    scene.timeline_markers.new("from strip", frame=32)
    scene.frame_end = 40
    bpy.ops.movie_director.shots_from_markers()
    by_name = {shot.name: shot for shot in s.shots}
    by_name["from file"].input_source, by_name["from file"].input_path = "FILE", clip
    by_name["from strip"].input_source, by_name["from strip"].input_path = "STRIP", "plate"
    wait_connected(addon)
    wait_schema(addon)
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, list(s.shots))
    model = addon.bridge.current_model()
    for shot, rgb in ((by_name["from file"], (1, 0, 0)), (by_name["from strip"], (0, 0, 1))):
        assert model.jobs[shot.job_id].state == "completed", (shot.name, model.jobs[shot.job_id].error, shot.message)
        picture = shot.takes[0].input_file
        assert picture.endswith(".png") and os.path.isfile(picture)
        px = pixels(picture)
        assert len(px) == 32 * 24 * 4
        assert all(abs(px[i] - rgb[i]) < 0.06 for i in range(3)), (shot.name, px[:4])
    assert scene.frame_current == 7 and scene.name in bpy.data.scenes and len(bpy.data.scenes) == 1
    assert by_name["from strip"].takes[0].input_key.endswith(":2")  # the strip's third frame


def test_depth_pass_of_the_shot_camera_feeds_the_workflow_and_the_scene_is_put_back(addon, server):
    """ "Depth pass" as the input: the shot's camera rendered as a depth map (the cube near, so bright; the empty
    background black), uploaded and inverted on the simulator; the scene's engine, look and frame are put back."""
    add_server(addon, server.url)
    scene, _cam = camera_scene(frame=10)
    s = scene_settings()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    s.input_source = "DEPTH"
    bpy.ops.movie_director.shots_from_markers()
    (shot,) = s.shots
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    view_layer = bpy.context.view_layer
    before = (
        scene.render.engine,
        scene.view_settings.view_transform,
        scene.frame_current,
        view_layer.material_override,
    )
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [shot])
    view = addon.bridge.current_model().jobs[shot.job_id]
    assert view.state == "completed", (view.error, shot.message)
    after = (scene.render.engine, scene.view_settings.view_transform, scene.frame_current, view_layer.material_override)
    assert after == before and "movie_director_depth" not in bpy.data.materials
    take = shot.takes[0]
    assert take.input_key.startswith("depth:ShotCam:10:") and take.input_file.endswith("-depth.png")
    sent = prompts(server)[-1]["1"]["inputs"]["image"]
    assert sha(os.path.join(server.sim.input_dir, sent)) == sha(take.input_file)
    px = pixels(take.input_file)
    grey = [px[i] for i in range(0, len(px), 4)]
    assert px[0:3] == [0.0, 0.0, 0.0]  # a corner: nothing there, far
    centre = grey[(16 * 32) + 16]
    assert centre > 0.5, centre  # the cube's face, the nearest thing: bright
    assert all(abs(px[i] - px[i + 1]) < 1e-6 for i in range(0, len(px), 4))  # grey


# INVERT with a second Load Image, the reference (a stand-in for an IP-Adapter's: the simulator implements no node
# that joins two images, and what is checked is what the shots send).
WITH_REFERENCE = {
    **INVERT,
    "4": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Reference"}},
}


def test_reference_images_are_uploaded_once_and_reused_by_every_shot(addon, server):
    """The sequence's reference image set: each shot's picture goes into the first Load Image, the reference into
    the second, uploaded once for all shots; changing the reference makes every shot stale; more references than
    inputs fail before anything is sent."""
    add_server(addon, server.url)
    scene = bpy.context.scene
    red = write_png(addon.tmp / "red.png", (1.0, 0.0, 0.0))
    blue = write_png(addon.tmp / "blue.png", (0.0, 0.0, 1.0))
    ref = write_png(addon.tmp / "ref.png", (0.0, 1.0, 0.0))
    s = scene_settings()
    s.workflow = str(addon.tmp / "with_reference.json")
    Path(s.workflow).write_text(json.dumps(WITH_REFERENCE))
    s.input_source = "FILE"
    s.reference_images = ref
    for name, frame in (("a", 1), ("b", 11)):
        scene.timeline_markers.new(name, frame=frame)
    scene.frame_end = 20
    bpy.ops.movie_director.shots_from_markers()
    a, b = s.shots
    a.input_source, a.input_path = "FILE", red
    b.input_source, b.input_path = "FILE", blue
    wait_connected(addon)
    wait_schema(addon)
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [a, b])
    model = addon.bridge.current_model()
    for shot in (a, b):
        assert shot.job_id, shot.message
        assert model.jobs[shot.job_id].state == "completed", (shot.name, model.jobs[shot.job_id].error, shot.message)
    sent = prompts(server)
    assert len(sent) == 2 and len(uploads(server)) == 3  # two pictures, one reference
    pictures = {sha(os.path.join(server.sim.input_dir, p["1"]["inputs"]["image"])) for p in sent}
    references = {sha(os.path.join(server.sim.input_dir, p["4"]["inputs"]["image"])) for p in sent}
    assert pictures == {sha(red), sha(blue)} and references == {sha(ref)}

    from movie_director import shotlist

    assert not shotlist.is_stale(scene, a) and not shotlist.is_stale(scene, b)
    write_png(addon.tmp / "ref.png", (1.0, 1.0, 0.0))
    assert shotlist.is_stale(scene, a) and shotlist.is_stale(scene, b)

    s.reference_images = f"{ref}; {red}"
    server.sim.clear_requests()
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=a.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [a])
    assert "2 reference image(s) but the workflow has 1" in a.message, a.message
    assert not prompts(server)

    # A workflow with no input for them says so in the panel (never silently dropped).
    from .blender_support import draw_all_panels

    def said() -> bool:
        texts = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_generate"].texts()
        return any(t.startswith("Not in this workflow") and "Reference images" in t for t in texts)

    assert not said()
    s.workflow = str(addon.tmp / "invert_input.json")
    Path(s.workflow).write_text(json.dumps(INVERT))
    assert said()
