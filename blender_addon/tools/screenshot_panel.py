"""Screenshot of the add-on's sidebar in a real Blender window (used for docs/addon-panel.png).

    python3 blender_addon/build.py --wheel dist/director_link-*.whl           # makes dist/*-legacy.zip
    mkdir -p /tmp/shot/scripts/addons && unzip -o dist/movie_director-0.1.0-legacy.zip -d /tmp/shot/scripts/addons
    blender -b --factory-startup --python-expr "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/shot/s.blend')"
    BLENDER_USER_SCRIPTS=/tmp/shot/scripts BLENDER_USER_CONFIG=/tmp/shot/config \
      xvfb-run -a -s "-screen 0 1600x900x24" blender --factory-startup -noaudio /tmp/shot/s.blend \
      --python blender_addon/tools/screenshot_panel.py -- docs/addon-panel.png

Enables the add-on, starts the ComfyUI simulator, submits the example progress workflow and, once the job is
running, saves a screenshot of the Sequencer with the Director sidebar. Blender 3.4 has no API to pick a sidebar
tab, so the Sequencer's other (Python) sidebar panels are unregistered for the picture.
"""

import os
import sys
import time

import addon_utils
import bpy

OUT = sys.argv[sys.argv.index("--") + 1]
addon_utils.enable("movie_director", default_set=True)
from director_link.testing import ComfySimulator  # noqa: E402

sim = ComfySimulator(time_scale=1.0)
prefs = bpy.context.preferences.addons["movie_director"].preferences
prefs.initialized, prefs.auto_discover = True, False
prefs.services.clear()
svc = prefs.services.add()
svc.name, svc.url = "studio-gpu", sim.url
scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y = 512, 288
s = scene.movie_director
s.service = "studio-gpu"
import movie_director  # noqa: E402

s.workflow = os.path.join(os.path.dirname(movie_director.__file__), "workflows", "acceptance_progress.json")
s.prompt = "a lighthouse at dusk, film still"
ours = {c.bl_idname for c in movie_director.panels.classes}
for cls in list(bpy.types.Panel.__subclasses__()):
    if getattr(cls, "bl_space_type", "") == "SEQUENCE_EDITOR" and getattr(cls, "bl_region_type", "") == "UI":
        if getattr(cls, "bl_idname", cls.__name__) not in ours:
            try:
                bpy.utils.unregister_class(cls)
            except RuntimeError:
                pass
state = {"t0": time.monotonic(), "submitted": False, "shot": False}


def step():
    win = bpy.context.window_manager.windows[0]
    for area in win.screen.areas:
        if area.type == "VIEW_3D":
            area.type = "SEQUENCE_EDITOR"
        if area.type == "SEQUENCE_EDITOR" and area.height > 300:
            area.spaces[0].show_region_ui = True
            for region in area.regions:
                if region.type == "UI":
                    region.tag_redraw()
    model = movie_director.view_model()
    connected = model.services.get("studio-gpu") and model.services["studio-gpu"].state == "connected"
    if connected and not state["submitted"]:
        with bpy.context.temp_override(window=win) if hasattr(bpy.context, "temp_override") else _null():
            bpy.ops.movie_director.generate()
        state["submitted"] = True
        state["t1"] = time.monotonic()
    if state["submitted"]:
        jobs = list(model.jobs.values())
        if jobs and jobs[-1].state == "running" and jobs[-1].percentage >= 40 and time.monotonic() - state["t1"] > 1:
            for area in win.screen.areas:
                if area.type == "SEQUENCE_EDITOR" and area.height > 300:
                    with bpy.context.temp_override(window=win, area=area):
                        bpy.ops.screen.screenshot_area(filepath=OUT)
                    break
            print("SCREENSHOT", OUT, flush=True)
            bpy.ops.wm.quit_blender()
            return None
    if time.monotonic() - state["t0"] > 60:
        print("TIMEOUT", flush=True)
        bpy.ops.wm.quit_blender()
        return None
    return 0.1


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


bpy.app.timers.register(step, first_interval=1.0)
