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

from . import params as prm
from . import scene_inputs
from . import shots as sh

TARGETS = [
    ("SEQUENCER", "Timeline", "Add the result as a strip in the Video Sequencer (and load images)"),
    ("IMAGE", "Image only", "Load images as image datablocks, add no strip"),
]
SHOT_SOURCES = [
    ("SCENE", "Scene", "The shot is the scene (tag = scene name)"),
    ("MARKER", "Marker", "The shot is the timeline marker at or before the current frame"),
    ("STRIP", "Active strip", "The shot is the active strip in the Sequencer"),
]
SHOT_KINDS = [
    ("MARKER", "Marker", "From a timeline marker: from its frame to the frame before the next marker"),
    ("STRIP", "Strip", "From a Sequencer strip: its frame range"),
]
SEED_POLICIES = [
    ("FIXED", "Fixed", "Every shot uses the sequence's seed"),
    ("PER_SHOT", "Per shot", "Each shot gets its own seed, derived from the sequence's seed and the shot (repeatable)"),
    ("RANDOM", "Random", "A new seed for every take"),
]


def _check_seed(self, _context) -> None:
    """Seeds are text (Blender's int properties stop at 2³¹−1; ComfyUI takes 0 … 2⁶⁴−1): a bad one is flagged."""
    try:
        sh.parse_seed(self.seed)
        problem = ""
    except ValueError as exc:
        problem = str(exc)
    if self.seed_problem != problem:
        self.seed_problem = problem


class MOVIE_DIRECTOR_PG_job(PropertyGroup):
    """A job submitted from this scene (``name`` is the job id)."""

    service: StringProperty(name="Service")
    tag: StringProperty(name="Shot")
    state: StringProperty(name="State", default="pending")
    frame: IntProperty(name="Frame", description="Where the result lands (locked at submit)")
    channel: IntProperty(
        name="Channel", description="The Sequencer channel it lands on (0: the first free one on arrival)", min=0
    )
    target: EnumProperty(name="Target", items=TARGETS, default="SEQUENCER")
    imported: BoolProperty(name="Imported", default=False)
    paths: StringProperty(name="Result files", description="One path per line")
    message: StringProperty(name="Message")
    submitted_at: FloatProperty(name="Submitted at")
    shot_id: StringProperty(name="Shot id", description="The shot this job makes a take of (empty: a scene job)")
    frames: IntProperty(name="Frames", description="How many frames the result fills", min=1, default=1)
    remote_id: StringProperty(
        name="Studio job",
        description="The job's id on the studio server (studio mode): a reopened .blend follows it there",
    )

    @property
    def job_id(self) -> str:
        return self.name


class MOVIE_DIRECTOR_PG_take(PropertyGroup):
    """One take of a shot (``name`` is its job id); the files stay on disk in ``folder``."""

    number: IntProperty(name="Take", min=1, default=1)
    folder: StringProperty(name="Folder", subtype="DIR_PATH")
    paths: StringProperty(name="Files", description="One path per line")
    seed: StringProperty(name="Seed")
    inputs_hash: StringProperty(name="Inputs", description="Fingerprint of what the take was made from")
    state: StringProperty(name="State", default="pending")
    message: StringProperty(name="Message")
    submitted_at: FloatProperty(name="Submitted at")
    frames: IntProperty(name="Frames", description="The shot's length when the take was made", min=1, default=1)
    input_key: StringProperty(name="Input", description="What the take's picture was made from (empty: none sent)")
    input_file: StringProperty(name="Input file", description="The picture sent as the workflow's image input")
    review: EnumProperty(
        name="Review",
        items=[
            ("none", "Not reviewed", "Not reviewed yet"),
            ("approved", "Approved", "Good for the cut"),
            ("rejected", "Rejected", "Not for the cut"),
        ],
        default="none",
    )


class MOVIE_DIRECTOR_PG_shot(PropertyGroup):
    """A shot: a frame range from a marker or a strip, its overrides of the sequence's defaults, and its takes.
    ``name`` is what the panel shows (the marker's/strip's name); ``shot_id`` never changes."""

    shot_id: StringProperty(name="Shot id")
    source: EnumProperty(name="From", items=SHOT_KINDS, default="MARKER")
    key: StringProperty(name="Marker/strip", description="The marker's or strip's name when last seen")
    frame_start: IntProperty(name="Start")
    frame_end: IntProperty(name="End", description="Last frame of the shot (inclusive)")
    camera: PointerProperty(name="Camera", type=bpy.types.Object)
    channel: IntProperty(
        name="Channel", description="Channel for this shot's takes; Auto: the first channel free over the shot", min=0
    )
    missing: BoolProperty(name="Missing", description="Its marker/strip is gone")
    selected: BoolProperty(name="Selected", description="Include in 'Generate Selected'")
    prompt: StringProperty(name="Prompt", description="This shot's prompt (empty: the sequence's)")
    negative: StringProperty(name="Negative", description="This shot's negative prompt (empty: the sequence's)")
    seed: StringProperty(
        name="Seed",
        description="This shot's seed, 0 … 18446744073709551615 (empty: the sequence's)",
        update=_check_seed,
    )
    seed_problem: StringProperty(name="Seed problem")
    workflow: StringProperty(
        name="Workflow", description="This shot's workflow (empty: the sequence's)", subtype="FILE_PATH"
    )
    service: StringProperty(name="Service", description="The server for this shot (empty: the sequence's)")
    extra: StringProperty(
        name="Extra", description="More inputs, 'selector = value' separated by ';' (e.g. 3.denoise = 0.6)"
    )
    input_source: EnumProperty(
        name="Input",
        description="The picture for a workflow that takes an image",
        items=scene_inputs.SHOT_SOURCES,
        default="DEFAULT",
    )
    input_path: StringProperty(
        name="Input file/strip", description="The image file, or the image strip's name, for this shot's input"
    )
    gradio_api: StringProperty(name="Endpoint", description="This shot's Gradio endpoint (empty: the sequence's)")
    gradio_inputs: StringProperty(
        name="Gradio inputs", description="This shot's Gradio inputs as a JSON list (empty: the sequence's)"
    )
    takes: CollectionProperty(type=MOVIE_DIRECTOR_PG_take)
    active_take: IntProperty(name="Active take", default=-1)
    waiting: BoolProperty(name="Waiting", description="In a batch, not sent yet (sent a few per timer tick)")
    job_id: StringProperty(name="Job", description="The shot's newest job")
    job_state: StringProperty(name="State", description="The newest job's state when last seen")
    message: StringProperty(name="Message", description="Why the newest job failed (in full)")

    @property
    def frames(self) -> int:
        return max(self.frame_end - self.frame_start + 1, 1)


def _workflow_changed(self, _context) -> None:
    """Reads a newly chosen workflow once (a local file: no network), so the panel can say which settings it has
    and whether it makes video; a file that cannot be used is reported when generating."""
    from . import runtime, shotlist

    rt = runtime.get()
    if rt is None or not rt.owner.is_open or not self.workflow:
        return
    service = self.service or shotlist.default_service(rt)
    try:
        shotlist.prepared(rt).get(bpy.path.abspath(self.workflow), service)
    except shotlist.SubmitProblem:
        pass


class MOVIE_DIRECTOR_PG_scene(PropertyGroup):
    service: StringProperty(name="Service", description="The server to send jobs to (set up in the preferences)")
    workflow: StringProperty(
        name="Workflow",
        description="A ComfyUI workflow: API or UI format (.json) or a ComfyUI .png",
        subtype="FILE_PATH",
        default="",
        update=_workflow_changed,
    )
    prompt: StringProperty(name="Prompt", description="The positive prompt", default="")
    negative: StringProperty(name="Negative", description="The negative prompt (empty: the workflow's)", default="")
    seed: StringProperty(
        name="Seed",
        description="0 … 18446744073709551615 (the full range ComfyUI accepts)",
        default="0",
        update=_check_seed,
    )
    seed_problem: StringProperty(name="Seed problem")
    randomize_seed: BoolProperty(name="Randomise", description="A new seed for every Generate", default=True)
    seed_policy: EnumProperty(name="Seeds", items=SEED_POLICIES, default="PER_SHOT")
    last_seed: StringProperty(name="Last seed", description="The seed sent with the last job")
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
    shots: CollectionProperty(type=MOVIE_DIRECTOR_PG_shot)
    active_shot: IntProperty(name="Shot", default=0)
    strip_channel: IntProperty(
        name="Source channel", description="'Shots from Strips' reads this channel (0: the selected strips)", min=0
    )
    input_source: EnumProperty(
        name="Input",
        description="The picture sent to a workflow that takes an image (img2img, image to video, upscale)",
        items=scene_inputs.SOURCES,
        default="CAMERA",
    )
    input_path: StringProperty(name="Input file/strip", description="The image file, or the image strip's name")
    input_render: EnumProperty(name="Camera picture", items=scene_inputs.RENDERS, default="VIEWPORT")
    gradio_api: StringProperty(
        name="Gradio endpoint", description="For shots on a Gradio app (Wan2GP, RVC, AudioLDM): e.g. /generate"
    )
    gradio_inputs: StringProperty(
        name="Gradio inputs",
        description='One value per input, as JSON; "{prompt}", "{seed}", "{frames}", "{fps}", "{image}", "{audio}" '
        "(the sound strip under the shot): the shot's",
        default='["{prompt}"]',
    )
    reference_images: StringProperty(
        name="Reference images",
        description="Image files reused by every shot, separated by ';': they go into the workflow's second, third "
        "… image inputs (the first takes the shot's picture), uploaded once per server",
    )
    gradio_setup: StringProperty(
        name="Gradio setup call",
        description='Made once per Generate and service before its shots, e.g. RVC\'s voice: ["/infer_change_voice", '
        '["narrator.pth", 0.33, 0.33, null]] (empty: none)',
    )
    logline: StringProperty(name="Logline", description="A logline or script text for 'Write Shots'")
    writer_service: StringProperty(
        name="Writer", description="The OpenAI-compatible service that writes shots (empty: the first one)"
    )
    writer_model: StringProperty(name="Model", description="The model to ask (empty: the server's first)")
    writer_job: StringProperty(name="Writing job", description="The chat job writing shots now")
    last_export: StringProperty(
        name="Last export", description="The cut or contact sheet written last", subtype="FILE_PATH"
    )
    written: StringProperty(name="Shot list", description="The written shots, one 'Shot N: prompt' per line (editable)")


def settings(scene) -> MOVIE_DIRECTOR_PG_scene:
    return scene.movie_director


def size_for(scene) -> tuple[int, int]:
    s = scene.movie_director
    if s.use_scene_resolution:
        r = scene.render
        return prm.render_size(r.resolution_x, r.resolution_y, r.resolution_percentage)
    return s.width, s.height


def frames_for(scene) -> int:
    s = scene.movie_director
    if s.use_scene_frames:
        return max((scene.frame_end - scene.frame_start) // max(scene.frame_step, 1) + 1, 1)
    return s.frames


def fps_for(scene) -> float:
    return prm.scene_fps(scene.render.fps, scene.render.fps_base)


def find_job(job_id: str):
    """(scene, record) for a job id stored in any scene, or (None, None)."""
    for scene in bpy.data.scenes:
        record = scene.movie_director.jobs.get(job_id)
        if record is not None:
            return scene, record
    return None, None


def find_shot(scene, shot_id: str):
    """The shot with this id in ``scene`` (None when gone)."""
    for shot in scene.movie_director.shots:
        if shot.shot_id == shot_id:
            return shot
    return None


classes = (MOVIE_DIRECTOR_PG_job, MOVIE_DIRECTOR_PG_take, MOVIE_DIRECTOR_PG_shot, MOVIE_DIRECTOR_PG_scene)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.movie_director = PointerProperty(type=MOVIE_DIRECTOR_PG_scene)


def unregister() -> None:
    del bpy.types.Scene.movie_director
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
