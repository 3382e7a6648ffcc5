"""Scene settings saved in the .blend: the chosen service and workflow, the shot's parameters, and the jobs.

The ids of submitted jobs are stored with the scene, so a reopened .blend finds its jobs again and imports their
results at the frame and channel that were locked when they were submitted. No secret is ever stored here.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from . import mapping

TARGETS = [
    ("SEQUENCER", "Timeline", "Add the result as a strip in the Video Sequencer (and load images)"),
    ("IMAGE", "Image only", "Load images as image datablocks, add no strip"),
]
SHOT_SOURCES = [
    ("SCENE", "Scene", "The shot is the scene (tag = scene name)"),
    ("MARKER", "Marker", "The shot is the timeline marker at or before the current frame"),
    ("STRIP", "Active strip", "The shot is the active strip in the Sequencer"),
]


class MOVIE_DIRECTOR_PG_job(PropertyGroup):
    """A job submitted from this scene (``name`` is the job id)."""

    service: StringProperty(name="Service")
    tag: StringProperty(name="Shot")
    state: StringProperty(name="State", default="pending")
    frame: IntProperty(name="Frame", description="Where the result lands (locked at submit)")
    channel: IntProperty(name="Channel", description="The Sequencer channel it lands on (locked at submit)", min=1)
    target: EnumProperty(name="Target", items=TARGETS, default="SEQUENCER")
    imported: BoolProperty(name="Imported", default=False)
    paths: StringProperty(name="Result files", description="One path per line")
    message: StringProperty(name="Message")
    submitted_at: FloatProperty(name="Submitted at")

    @property
    def job_id(self) -> str:
        return self.name


class MOVIE_DIRECTOR_PG_scene(PropertyGroup):
    service: StringProperty(name="Service", description="The server to send jobs to (set up in the preferences)")
    workflow: StringProperty(
        name="Workflow", description="A ComfyUI workflow in API format (.json)", subtype="FILE_PATH", default=""
    )
    prompt: StringProperty(name="Prompt", description="The positive prompt", default="")
    negative: StringProperty(name="Negative", description="The negative prompt (empty: the workflow's)", default="")
    seed: IntProperty(name="Seed", min=0, max=mapping.SEED_MAX, default=0)
    randomize_seed: BoolProperty(name="Randomise", description="A new seed for every Generate", default=True)
    last_seed: IntProperty(name="Last seed", description="The seed sent with the last job", min=0)
    steps: IntProperty(name="Steps", description="Sampler steps (0: the workflow's)", min=0, max=1000, default=0)
    cfg: FloatProperty(name="CFG", description="Guidance scale (0: the workflow's)", min=0.0, max=100.0, default=0.0)
    use_scene_resolution: BoolProperty(
        name="Scene resolution", description="Width and height from the scene's render settings", default=True
    )
    width: IntProperty(name="Width", min=8, max=16384, default=1920, subtype="PIXEL")
    height: IntProperty(name="Height", min=8, max=16384, default=1080, subtype="PIXEL")
    use_scene_frames: BoolProperty(
        name="Scene frame range", description="Frame count from the scene's frame range", default=True
    )
    frames: IntProperty(name="Frames", min=1, max=100000, default=24)
    shot_source: EnumProperty(name="Shot", items=SHOT_SOURCES, default="SCENE")
    target: EnumProperty(name="Result", items=TARGETS, default="SEQUENCER")
    channel: IntProperty(name="Channel", description="Sequencer channel for results (0: the first free one)", min=0)
    auto_import: BoolProperty(name="Import when done", default=True)
    jobs: CollectionProperty(type=MOVIE_DIRECTOR_PG_job)
    active_job: IntProperty(default=0)


def settings(scene) -> MOVIE_DIRECTOR_PG_scene:
    return scene.movie_director


def size_for(scene) -> tuple[int, int]:
    s = scene.movie_director
    if s.use_scene_resolution:
        r = scene.render
        return mapping.render_size(r.resolution_x, r.resolution_y, r.resolution_percentage)
    return s.width, s.height


def frames_for(scene) -> int:
    s = scene.movie_director
    if s.use_scene_frames:
        return mapping.frame_count(scene.frame_start, scene.frame_end, scene.frame_step)
    return s.frames


def fps_for(scene) -> float:
    return mapping.scene_fps(scene.render.fps, scene.render.fps_base)


def find_job(job_id: str):
    """(scene, record) for a job id stored in any scene, or (None, None)."""
    for scene in bpy.data.scenes:
        record = scene.movie_director.jobs.get(job_id)
        if record is not None:
            return scene, record
    return None, None


classes = (MOVIE_DIRECTOR_PG_job, MOVIE_DIRECTOR_PG_scene)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.movie_director = PointerProperty(type=MOVIE_DIRECTOR_PG_scene)


def unregister() -> None:
    del bpy.types.Scene.movie_director
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
