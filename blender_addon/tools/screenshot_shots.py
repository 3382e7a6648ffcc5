"""Screenshots of the shot list mid-batch and of the preferences, in a real Blender window (docs/screenshots/).

    mkdir -p /tmp/shots/scripts/addons && ln -sfn "$PWD/blender_addon/movie_director" /tmp/shots/scripts/addons/
    blender -b --factory-startup --python-expr "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/shots/s.blend')"
    PYTHONPATH="$PWD/python" BLENDER_USER_SCRIPTS=/tmp/shots/scripts BLENDER_USER_CONFIG=/tmp/shots/config \
      xvfb-run -a -s "-screen 0 1600x1000x24" blender --factory-startup -noaudio /tmp/shots/s.blend \
      --python blender_addon/tools/screenshot_shots.py -- docs/screenshots [direct|studio]

(Opening a saved file keeps the splash screen away. ``PYTHONPATH`` gives Blender the native module of a ``pip
install -e .`` checkout; an installed legacy zip carries its own.) The add-on is enabled; ``studio`` (the default)
starts ``director-link serve`` with the ComfyUI simulator as its service ``gpu-1`` and sends the jobs through it,
``direct`` sends them straight to the simulator. Nine shots are made from timeline markers; shot 1 gets a second
take, one shot asks for a value its workflow refuses (it fails before anything is sent, with the reason), one is
left out, the rest are generated as one batch. When the batch is mid-way (done, running, queued and waiting shots at
once) the Sequencer with the Director sidebar is saved as ``shots-<mode>.png``; then the add-on's preferences as
``preferences-<mode>.png``. Blender 3.4 has no API to pick a sidebar tab, so the Sequencer's other sidebar panels
are unregistered for the picture, and the Sequence Defaults, Preview and Health panels are left out to give the shot
list the room.
"""

import faulthandler
import json
import os
import sys
import tempfile
import time

import addon_utils
import bpy

faulthandler.enable()  # a crash inside Blender prints where Python was
args = sys.argv[sys.argv.index("--") + 1 :]
OUT = args[0]
MODE = args[1] if len(args) > 1 else "studio"
os.makedirs(OUT, exist_ok=True)
addon_utils.enable("movie_director", default_set=True)
import director_link  # noqa: E402
import movie_director  # noqa: E402
from director_link.testing import ComfySimulator  # noqa: E402

sim = ComfySimulator(time_scale=1.0)
server = None
prefs = bpy.context.preferences.addons["movie_director"].preferences
prefs.initialized, prefs.auto_discover = True, False
prefs.services.clear()
if MODE == "studio":
    server = director_link.serve(
        port=0,
        database="memory",
        output_dir=tempfile.mkdtemp(prefix="studio-out-"),
        services=[{"kind": "comfyui", "url": sim.url, "name": "gpu-1"}],
    )
    svc = prefs.services.add()  # kept for direct mode: the preferences show both
    svc.name, svc.url = "gpu-1", sim.url
    prefs.studio_url = server.url
    prefs.mode = "STUDIO"
else:
    svc = prefs.services.add()
    svc.name, svc.url = "gpu-1", sim.url
llm = prefs.services.add()
llm.name, llm.url, llm.kind, llm.enabled = "writer", "127.0.0.1:4000", "litellm", False

scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 256, 144, 100
scene.render.fps = 24
s = scene.movie_director
folder = tempfile.mkdtemp(prefix="shots-")
workflow = os.path.join(folder, "storyboard.json")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(movie_director.__file__))))
with open(os.path.join(ROOT, "workflows", "acceptance_progress.json")) as fh:
    graph = json.load(fh)
graph["1"]["inputs"]["steps"], graph["1"]["inputs"]["step_seconds"] = 16, 0.3
with open(workflow, "w") as fh:
    json.dump(graph, fh)
s.workflow = workflow
s.prompt = "a lighthouse keeper's island, 35mm film still"
names = ["Opening", "Harbour", "Lighthouse", "Stairs", "Lamp room", "Storm", "Bottle", "Letter", "Dawn"]
for i, name in enumerate(names):
    scene.timeline_markers.new(name, frame=1 + i * 24)
scene.frame_start, scene.frame_end = 1, len(names) * 24
bpy.ops.movie_director.shots_from_markers()
shots = {shot.name: shot for shot in s.shots}
shots["Harbour"].prompt = "fishing boats at dawn, fog"
shots["Storm"].extra = "1.steps = 100000"  # more than the node takes: refused before sending, with the reason
for shot in s.shots:
    shot.selected = shot.name != "Dawn"  # left out of the batch: "not generated"

ours = {c.bl_idname for c in movie_director.panels.classes}
keep = ("_status", "_shots", "_jobs")
hidden = []
for cls in list(bpy.types.Panel.__subclasses__()):
    if getattr(cls, "bl_space_type", "") == "SEQUENCE_EDITOR" and getattr(cls, "bl_region_type", "") == "UI":
        idname = getattr(cls, "bl_idname", cls.__name__)
        if idname not in ours or not idname.endswith(keep):
            try:
                bpy.utils.unregister_class(cls)
                if idname in ours:
                    hidden.append(cls)
            except RuntimeError:
                pass
state = {"t0": time.monotonic(), "phase": "connect"}


def sequencer(win):
    for area in win.screen.areas:
        if area.type == "SEQUENCE_EDITOR" and area.height > 300:
            return area
    return None


def shot_states():
    model = movie_director.view_model()
    out = []
    for shot in s.shots:
        if shot.waiting:
            out.append("waiting")
            continue
        view = model.jobs.get(shot.job_id) if shot.job_id else None
        out.append(view.state if view is not None else (shot.job_state or "not_generated"))
    return out


def screenshot(win, area, name):
    path = os.path.join(OUT, name)
    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.screen.screenshot_area(filepath=path)
    print("SCREENSHOT", path, flush=True)


def step():
    win = bpy.context.window_manager.windows[0]
    for area in win.screen.areas:
        if area.type == "VIEW_3D":
            area.type = "SEQUENCE_EDITOR"
            area.spaces[0].view_type = "SEQUENCER"
        if area.type == "SEQUENCE_EDITOR" and area.height > 300:
            area.spaces[0].show_region_ui = True
            for region in area.regions:
                region.tag_redraw()
    model = movie_director.view_model()
    area = sequencer(win)
    phase = state["phase"]
    if phase == "connect":
        link = model.services.get("studio server" if MODE == "studio" else "gpu-1")
        gpu = model.services.get("gpu-1")
        if link and link.state == "connected" and gpu and gpu.state == "connected":
            with bpy.context.temp_override(window=win, area=area):
                bpy.ops.movie_director.generate_shots(which="ONE", shot_id=shots["Opening"].shot_id)
            state["phase"] = "first_take"
    elif phase == "first_take":
        if shot_states()[0] == "completed":
            with bpy.context.temp_override(window=win, area=area):
                bpy.ops.movie_director.generate_shots(which="SELECTED")
            state["phase"] = "batch"
            state["t1"] = time.monotonic()
    elif phase == "batch":
        states = shot_states()
        done = sum(1 for x in states if x == "completed")
        running = [
            v
            for v in model.jobs.values()
            if v.state == "running" and v.percentage >= 40 and v.tag != shots["Opening"].shot_id
        ]
        queued = sum(1 for x in states if x in ("queued", "pending", "waiting"))
        if done >= 3 and running and queued >= 2:
            region = next(r for r in area.regions if r.type == "WINDOW")
            with bpy.context.temp_override(window=win, area=area, region=region):
                bpy.ops.sequencer.view_all()
            state["phase"] = "shoot"
            state["t2"] = time.monotonic()
    elif phase == "shoot":
        if time.monotonic() - state["t2"] > 0.2:  # one redraw with the whole timeline in view
            s.active_shot = [shot.name for shot in s.shots].index("Storm")
            area.regions[-1].tag_redraw()
            screenshot(win, area, f"shots-{MODE}.png")
            state["phase"] = "prefs"
            state["t3"] = time.monotonic()
    elif phase == "prefs":
        if time.monotonic() - state["t3"] > 0.5:
            area.type = "PREFERENCES"
            bpy.context.preferences.active_section = "ADDONS"
            bpy.context.window_manager.addon_search = "Movie Director"
            for mod in addon_utils.modules(refresh=False):  # the list draws from these (not sys.modules)
                if mod.__name__ == "movie_director":
                    addon_utils.module_bl_info(mod)["show_expanded"] = True
            state["phase"] = "prefs_shot"
            state["t4"] = time.monotonic()
    elif phase == "prefs_shot":
        if time.monotonic() - state["t4"] > 1.0:
            prefs_area = next(a for a in win.screen.areas if a.type == "PREFERENCES")
            screenshot(win, prefs_area, f"preferences-{MODE}.png")
            finish()
            return None
    if time.monotonic() - state["t0"] > 120:
        print("TIMEOUT", state["phase"], shot_states(), flush=True)
        finish()
        return None
    return 0.1


def finish():
    for cls in hidden:
        bpy.utils.register_class(cls)
    addon_utils.disable("movie_director", default_set=True)
    if server is not None:
        server.close()
    sim.close()
    bpy.ops.wm.quit_blender()


bpy.app.timers.register(step, first_interval=1.0)
