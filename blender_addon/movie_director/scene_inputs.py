"""A shot's picture from the scene, for a workflow that takes an image (img2img, ``ltx_img2video``, ``upscale_4x``,
``controlnet_pose``): the shot's camera at its start frame, a Sequencer image strip's frame, or an image file.

The picture is written under the output folder (``inputs/``), then uploaded by the caller (``Hub.upload_image``
sends each distinct file once per server: a second take of an unchanged shot uploads nothing). A camera picture is a
viewport (OpenGL) render when a 3D view is open — fast, what the animator sees — or a final render with the scene's
engine when asked (or when Blender runs without a window, as in the tests).
"""

from __future__ import annotations

import hashlib
import os

import bpy

from . import importer, media

SOURCES = [
    ("CAMERA", "Camera", "The shot's camera (or the scene's) at the shot's start frame"),
    ("DEPTH", "Depth pass", "The shot's camera as a depth map (near white, far black) for a depth ControlNet"),
    ("STRIP", "Strip", "The frame of a Sequencer image strip at the shot's start"),
    ("FILE", "Image or movie file", "An image file, or a movie file's first frame"),
    ("PREVIOUS", "Previous shot", "The last frame of the previous shot's active take (continuity between shots)"),
    ("NONE", "Workflow's own", "Keep the image the workflow names"),
]
SHOT_SOURCES = [("DEFAULT", "Sequence's", "The sequence's choice")] + SOURCES
RENDERS = [
    ("VIEWPORT", "Viewport", "An OpenGL render of the 3D view (fast; a final render where no 3D view is open)"),
    ("FINAL", "Final render", "A render with the scene's engine"),
]

VARYING_STAMPS = ("use_stamp_date", "use_stamp_time", "use_stamp_render_time", "use_stamp_memory", "use_stamp_hostname")


class InputProblem(Exception):
    """The shot's picture cannot be made; the message says what to change."""


def source_of(scene_settings, shot) -> tuple[str, str]:
    """(source, file path or strip name) the shot uses: its own choice, else the sequence's."""
    if shot.input_source != "DEFAULT":
        return shot.input_source, shot.input_path
    return scene_settings.input_source, scene_settings.input_path


def key_of(scene, scene_settings, shot, digest) -> str:
    """A cheap fingerprint of what the picture is made from (no rendering): a changed camera, frame, strip or file
    makes the shot stale. ``digest(path)``: a file's sha256 (cached by the caller)."""
    source, path = source_of(scene_settings, shot)
    if source in ("CAMERA", "DEPTH"):
        prefix = source.lower()
        camera = shot.camera or scene.camera
        if camera is None:
            return f"{prefix}:none"
        m = camera.matrix_world
        pose = ",".join(f"{v:.4f}" for row in m for v in row)
        return f"{prefix}:{camera.name}:{shot.frame_start}:{pose}"
    if source == "FILE":
        return f"file:{digest(bpy.path.abspath(path))}" if path else "file:none"
    if source == "STRIP":
        try:
            file, index = strip_frame_file(scene, path, shot.frame_start, with_index=True)
        except InputProblem:
            return f"strip:{path}:none"
        return f"strip:{digest(file)}" + (f":{index}" if index is not None else "")
    if source == "PREVIOUS":
        # Another active take of the previous shot makes this shot stale (its first picture would change).
        prev = previous_shot(scene_settings, shot)
        if prev is None or not 0 <= prev.active_take < len(prev.takes):
            return "previous:none"
        return f"previous:{prev.shot_id}:{prev.takes[prev.active_take].name}"
    return ""


def capture(scene, scene_settings, shot, folder: str, prefs_render: str = "VIEWPORT") -> str | None:
    """The picture's file for ``shot`` (None: the source is "the workflow's own")."""
    source, path = source_of(scene_settings, shot)
    if source == "NONE":
        return None
    if source == "FILE":
        full = bpy.path.abspath(path) if path else ""
        if not full or not os.path.isfile(full):
            raise InputProblem(f"the image file {path!r} does not exist; choose one under Input")
        if media.media_kind(full) == "video":
            return movie_frame_file(full, 0, folder)
        return full
    if source == "STRIP":
        file, index = strip_frame_file(scene, path, shot.frame_start, with_index=True)
        return file if index is None else movie_frame_file(file, index, folder)
    if source == "PREVIOUS":
        return previous_last_frame(scene, scene_settings, shot)
    camera = shot.camera or scene.camera
    if camera is None or camera.type != "CAMERA":
        raise InputProblem("no camera: bind one to the shot's marker (Ctrl B), set the scene camera or pick a file")
    os.makedirs(folder, exist_ok=True)
    if source == "DEPTH":
        out = os.path.join(folder, f"{shot.shot_id}-{shot.frame_start}-depth.png")
        render_depth(scene, camera, shot.frame_start, out)
    else:
        out = os.path.join(folder, f"{shot.shot_id}-{shot.frame_start}.png")
        render_camera(scene, camera, shot.frame_start, out, viewport=prefs_render == "VIEWPORT")
    if not os.path.isfile(out):
        raise InputProblem(f"the camera render did not write {out}")
    return out


def _view3d():
    """A window, area and region of an open 3D view (None without a window, e.g. Blender as a module)."""
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []) or []:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                region = next((r for r in area.regions if r.type == "WINDOW"), None)
                if region is not None:
                    return window, area, region
    return None


def render_camera(scene, camera, frame: int, path: str, viewport: bool = True) -> None:
    """Renders ``camera`` at ``frame`` into the PNG ``path``; the scene's camera, frame and output settings are put
    back afterwards (the user's render settings are theirs)."""
    render = scene.render
    image = render.image_settings
    saved = (scene.camera, scene.frame_current, render.filepath, image.file_format, image.color_mode)
    # Metadata that changes from one render to the next (date, render time …) would make every picture new bytes:
    # the same shot rendered again must be the same file, so the server gets it once.
    stamps = {name: getattr(render, name) for name in VARYING_STAMPS if hasattr(render, name)}
    # What the camera sees, not the edit: with the Sequencer on, a scene whose strips cover the frame (a take of this
    # very shot, say) renders those strips instead.
    stamps["use_sequencer"] = render.use_sequencer
    try:
        for name in stamps:
            setattr(render, name, False)
        scene.frame_set(frame)
        scene.camera = camera
        render.filepath = path
        image.file_format = "PNG"
        image.color_mode = "RGB"
        # Blender without a window (``--background``, the ``bpy`` module) has no OpenGL context to render a view.
        view = _view3d() if (viewport and not bpy.app.background) else None
        try:
            if view is not None:
                window, area, region = view
                with bpy.context.temp_override(window=window, area=area, region=region, scene=scene):
                    bpy.ops.render.opengl(write_still=True, view_context=False)
            else:
                bpy.ops.render.render(write_still=True, scene=scene.name)
        except RuntimeError as exc:
            raise InputProblem(f"the camera render failed: {exc}") from exc
    finally:
        # Frame first: changing frames switches to the camera bound to the marker there; then the camera as it was.
        scene.frame_set(saved[1])
        scene.camera, render.filepath, image.file_format, image.color_mode = saved[0], *saved[2:]
        for name, value in stamps.items():
            setattr(render, name, value)


DEPTH_MATERIAL = "movie_director_depth"


def depth_range(scene, camera) -> tuple[float, float]:
    """Nearest and farthest distance (along the camera's view) of the visible meshes' bounding boxes: the depth
    map spans them, so near is white and far is black whatever the scene's scale."""
    from mathutils import Vector

    to_camera = camera.matrix_world.inverted()
    depths = []
    for obj in scene.objects:
        if obj.type != "MESH" or obj.hide_render:
            continue
        for corner in obj.bound_box:
            z = -(to_camera @ (obj.matrix_world @ Vector(corner))).z
            if z > 0:
                depths.append(z)
    clip = camera.data.clip_start, camera.data.clip_end
    if not depths:
        return clip
    near, far = max(min(depths), clip[0]), min(max(depths), clip[1])
    return near, max(far, near + 1e-3)


def _depth_material(near: float, far: float):
    """An emission material whose brightness is the view depth mapped near → 1, far → 0."""
    mat = bpy.data.materials.get(DEPTH_MATERIAL) or bpy.data.materials.new(DEPTH_MATERIAL)
    if mat.node_tree is None:  # Blender < 5.0 makes materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    view = nodes.new("ShaderNodeCameraData")
    span = nodes.new("ShaderNodeMapRange")
    span.inputs["From Min"].default_value, span.inputs["From Max"].default_value = near, far
    span.inputs["To Min"].default_value, span.inputs["To Max"].default_value = 1.0, 0.0
    glow = nodes.new("ShaderNodeEmission")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(view.outputs["View Z Depth"], span.inputs["Value"])
    links.new(span.outputs["Result"], glow.inputs["Color"])
    links.new(glow.outputs["Emission"], out.inputs["Surface"])
    return mat


def render_depth(scene, camera, frame: int, path: str) -> None:
    """A depth map of what ``camera`` sees at ``frame``: one Cycles sample on the CPU with every surface replaced
    by the depth material and the background transparent (black); the scene's engine and look are put back."""
    render = scene.render
    # Every view layer of the scene (not the context's: the Sequencer's scene may be another one).
    overrides = {layer.name: layer.material_override for layer in scene.view_layers}
    saved = {
        "engine": render.engine,
        "film_transparent": render.film_transparent,
        "view_transform": scene.view_settings.view_transform,
        "look": scene.view_settings.look,
        "frame": scene.frame_current,
    }
    cycles = getattr(scene, "cycles", None)
    saved_cycles = {k: getattr(cycles, k) for k in ("samples", "device", "use_denoising")} if cycles else {}
    mat = None
    try:
        scene.frame_set(frame)
        mat = _depth_material(*depth_range(scene, camera))
        try:
            render.engine = "CYCLES"
        except TypeError as exc:
            raise InputProblem("the depth pass renders with Cycles: enable the Cycles add-on") from exc
        if cycles is not None:
            cycles.samples, cycles.device, cycles.use_denoising = 1, "CPU", False
        render.film_transparent = True
        scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
        for layer in scene.view_layers:
            layer.material_override = mat
        render_camera(scene, camera, frame, path, viewport=False)
    finally:
        render.engine, render.film_transparent = saved["engine"], saved["film_transparent"]
        scene.view_settings.view_transform, scene.view_settings.look = saved["view_transform"], saved["look"]
        for layer in scene.view_layers:
            layer.material_override = overrides.get(layer.name)
        for key, value in saved_cycles.items():
            setattr(cycles, key, value)
        if mat is not None:
            bpy.data.materials.remove(mat)
        scene.frame_set(saved["frame"])


def strip_frame_file(scene, name: str, frame: int, with_index: bool = False):
    """The file an image strip shows at ``frame`` (its first frame before it starts, its last after it ends);
    ``with_index``: (file, None) for an image strip, (movie file, frame index in it) for a movie strip."""
    strip = next((s for s in importer.all_strips(scene) if s.name == name), None)
    if strip is None:
        raise InputProblem(f"there is no strip {name!r}; pick an image or movie strip under Input")
    if strip.type == "MOVIE" and with_index:
        path = bpy.path.abspath(strip.filepath)
        if not os.path.isfile(path):
            raise InputProblem(f"movie strip {name!r} plays {path}, which does not exist")
        length = max(int(strip.frame_duration), 1)
        return path, min(max(int(frame) - int(strip.frame_start), 0), length - 1)
    if strip.type != "IMAGE":
        raise InputProblem(f"strip {name!r} is a {strip.type.lower()} strip; pick an image strip or the camera")
    elements = list(strip.elements)
    if not elements:
        raise InputProblem(f"strip {name!r} has no images")
    index = min(max(int(frame) - int(strip.frame_start), 0), len(elements) - 1)
    path = os.path.join(bpy.path.abspath(strip.directory), elements[index].filename)
    if not os.path.isfile(path):
        raise InputProblem(f"strip {name!r} shows {path}, which does not exist")
    return (path, None) if with_index else path


def movie_frame_file(path: str, index: int, folder: str) -> str:
    """Frame ``index`` (0: the first) of a movie file as a PNG under ``folder``, made once per file version and
    frame. Blender decodes it: a throwaway scene plays the movie in its Sequencer and renders that one frame (no
    ffmpeg or Pillow needed; a single small frame, so the short block of the UI is like a camera picture's)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputProblem(f"the movie file {path!r} cannot be read: {exc}") from exc
    tag = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{index}".encode()).hexdigest()[:16]
    out = os.path.join(folder, f"movie-{tag}.png")
    if os.path.isfile(out):
        return out
    os.makedirs(folder, exist_ok=True)
    host = bpy.context.scene
    # The render operator takes the frame from the context's scene: the movie is placed so that frame shows
    # ``index`` whichever of the two scenes' frames it reads.
    frame = host.frame_current
    grab = bpy.data.scenes.new("movie_director_frame_grab")
    try:
        grab.view_settings.view_transform = "Standard"  # the movie's colours as they are
        for name in VARYING_STAMPS:
            if hasattr(grab.render, name):
                setattr(grab.render, name, False)
        editor = grab.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # Blender 4.4+ / 4.2
        strip = strips.new_movie("movie", path, 1, frame - index)
        if not len(strip.elements) or not strip.elements[0].orig_width:
            raise InputProblem(f"Blender cannot read the movie {os.path.basename(path)}")
        grab.render.resolution_x = strip.elements[0].orig_width
        grab.render.resolution_y = strip.elements[0].orig_height
        grab.render.resolution_percentage = 100
        grab.frame_start, grab.frame_end, grab.frame_current = frame, frame, frame
        grab.render.filepath = out
        grab.render.image_settings.file_format = "PNG"
        grab.render.image_settings.color_mode = "RGB"
        try:
            bpy.ops.render.render(write_still=True, scene=grab.name)
        except RuntimeError as exc:
            raise InputProblem(f"reading frame {index} of {os.path.basename(path)} failed: {exc}") from exc
    finally:
        bpy.data.scenes.remove(grab)
    if not os.path.isfile(out):
        raise InputProblem(f"frame {index} of {os.path.basename(path)} was not written to {out}")
    return out


def sound_under(scene, shot) -> str:
    """The file of the sound strip under the shot's start frame (the recorded line an RVC shot converts): the lowest
    channel wins; the add-on's own results (take strips) and muted strips are passed over. InputProblem says what
    to add when there is none."""
    from . import shots

    found = []
    for strip in importer.all_strips(scene):
        if strip.type != "SOUND" or strip.mute or strip.get(shots.TAKE_PROP):
            continue
        if strip.frame_final_start <= shot.frame_start < strip.frame_final_end and strip.sound is not None:
            found.append((strip.channel, strip.name, bpy.path.abspath(strip.sound.filepath)))
    if not found:
        raise InputProblem(f"no sound strip under frame {shot.frame_start}: put the line to convert there")
    path = min(found)[2]
    if not os.path.isfile(path):
        raise InputProblem(f"the sound strip's file {path!r} does not exist")
    return path


def previous_shot(scene_settings, shot):
    """The shot that ends before ``shot`` starts, nearest to it (None for the first shot)."""
    before = [o for o in scene_settings.shots if not o.missing and o.frame_start < shot.frame_start]
    return max(before, key=lambda o: o.frame_start, default=None)


def previous_last_frame(scene, scene_settings, shot) -> str:
    """The file of the last frame the previous shot's active take shows: the last image its strip shows (a still
    or a frame sequence), else the last still image among the take's files. InputProblem says why there is none."""
    prev = previous_shot(scene_settings, shot)
    if prev is None:
        raise InputProblem("it is the first shot: there is no previous shot to continue from")
    if not 0 <= prev.active_take < len(prev.takes) or prev.takes[prev.active_take].state != "completed":
        raise InputProblem(f"the previous shot {prev.name!r} has no finished take to continue from; generate it")
    take = prev.takes[prev.active_take]
    strip = next((s for s in importer.take_strips(scene, prev.shot_id) if not s.mute), None)
    if strip is not None and strip.type == "IMAGE" and len(strip.elements):
        index = min(max(int(strip.frame_final_end) - 1 - int(strip.frame_start), 0), len(strip.elements) - 1)
        path = os.path.join(bpy.path.abspath(strip.directory), strip.elements[index].filename)
        if os.path.isfile(path):
            return path
    stills = [
        p
        for p in take.paths.splitlines()
        if p and os.path.isfile(p) and media.media_kind(p) == "image" and media.animated_frames_hint(p) <= 1
    ]
    if not stills:
        raise InputProblem(f"the previous shot {prev.name!r} has no still frame to continue from (a movie take)")
    return stills[-1]
