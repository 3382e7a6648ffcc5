"""The shot list in the scene (bpy glue around the pure ``shots``, ``params``, ``takes`` and ``placement`` modules):
reading markers and strips into shots, working out what each shot asks for, submitting a shot's take, and whether
a shot is stale."""

from __future__ import annotations

import os
import time

import bpy

from . import importer, props, review, scene_inputs, takes, writer
from . import params as prm
from . import shots as sh
from . import state as st
from .preferences import CHAT_KINDS, COMFY_KINDS, GRADIO_KINDS

_digests: dict[str, tuple[float, int, str]] = {}


def workflow_digest(path: str) -> str:
    """sha256 of the workflow file, cached by modification time and size (panels ask on every redraw)."""
    try:
        stat = os.stat(path)
    except OSError:
        return ""
    cached = _digests.get(path)
    if cached is not None and cached[:2] == (stat.st_mtime, stat.st_size):
        return cached[2]
    digest = sh.file_digest(path)
    _digests[path] = (stat.st_mtime, stat.st_size, digest)
    return digest


# ---- building the list ------------------------------------------------------------------------------------------


def _known(scene) -> list[sh.Known]:
    return [sh.Known(s.shot_id, s.source, s.key, s.frame_start) for s in props.settings(scene).shots]


def _apply(scene, plan: sh.SyncPlan, source: str, cameras: dict[str, object] | None = None) -> dict[str, str]:
    """Writes a sync plan into the scene's shot list; returns {marker/strip name: shot id}."""
    s = props.settings(scene)
    by_id = {shot.shot_id: shot for shot in s.shots}
    out: dict[str, str] = {}

    def fill(shot, found: sh.Found) -> None:
        if shot.name in ("", shot.key):
            shot.name = found.key  # follows a rename unless the shot was given its own name
        shot.key = found.key
        shot.frame_start, shot.frame_end = found.frame_start, found.frame_end
        shot.missing = False
        if cameras is not None:
            shot.camera = cameras.get(found.key)
        out[found.key] = shot.shot_id

    for shot_id, found in plan.matched:
        fill(by_id[shot_id], found)
    taken = set(by_id)
    for found in plan.new:
        shot = s.shots.add()
        shot.shot_id = found.ident if found.ident and found.ident not in taken else sh.new_shot_id(taken)
        taken.add(shot.shot_id)
        shot.source = source
        fill(shot, found)
    for shot_id in plan.missing:
        by_id[shot_id].missing = True
    _sort(s)
    return out


def _sort(s) -> None:
    """Keeps the list in timeline order (a moved marker moves its shot in the list, with its takes)."""
    order = sorted(range(len(s.shots)), key=lambda i: (s.shots[i].missing, s.shots[i].frame_start, s.shots[i].name))
    ids = [s.shots[i].shot_id for i in order]
    # Moving one entry shifts the others: look the wanted shot up again each time.
    for target, shot_id in enumerate(ids):
        index = next(i for i, shot in enumerate(s.shots) if shot.shot_id == shot_id)
        if index != target:
            s.shots.move(index, target)


def from_markers(scene) -> sh.SyncPlan:
    """Shots from the scene's timeline markers (cameras bound with ``marker.camera`` come along)."""
    markers = list(scene.timeline_markers)
    cameras = {m.name: m.camera for m in markers}
    found = sh.from_markers([(m.name, m.frame, m.camera.name if m.camera else "") for m in markers], scene.frame_end)
    plan = sh.plan_sync(_known(scene), found, "MARKER")
    _apply(scene, plan, "MARKER", cameras)
    return plan


def from_strips(scene, channel: int = 0) -> sh.SyncPlan:
    """Shots from the Sequencer's strips on ``channel`` (0: the selected ones); results of takes never count. Each
    strip is tagged with its shot id, so renaming or moving it keeps the shot."""
    chosen = [
        strip
        for strip in importer.all_strips(scene)
        if sh.TAKE_PROP not in strip
        and (strip.channel == channel if channel else strip.select)
        and strip.type not in ("SOUND",)
    ]
    found = sh.from_strips(
        (strip.name, strip.channel, strip.frame_final_start, strip.frame_final_end, strip.get(sh.STRIP_ID_PROP))
        for strip in chosen
    )
    plan = sh.plan_sync(_known(scene), found, "STRIP")
    ids = _apply(scene, plan, "STRIP")
    for strip in chosen:
        if strip.name in ids:
            strip[sh.STRIP_ID_PROP] = ids[strip.name]
    return plan


# ---- what a shot asks for -------------------------------------------------------------------------------------------


def defaults(scene) -> dict:
    s = props.settings(scene)
    width, height = props.size_for(scene)
    return {
        "prompt": s.prompt or None,
        "negative": s.negative or None,
        "workflow": s.workflow,
        "service": s.service,
        "steps": s.steps or None,
        "cfg": s.cfg or None,
        "width": width,
        "height": height,
        "fps": props.fps_for(scene),
        "extra": {},
    }


def settings_for(scene, shot, seed_value: int | None = None) -> tuple[sh.Settings, bool]:
    """The shot's settings (the sequence's defaults under its overrides) and whether its seed counts towards
    staleness (not when every take gets a random one). Raises ``ValueError`` for a bad seed or extra parameter."""
    s = props.settings(scene)
    overrides = {
        "prompt": shot.prompt,
        "negative": shot.negative,
        "workflow": shot.workflow,
        "service": shot.service,
        "extra": sh.parse_extra(shot.extra) if shot.extra.strip() else {},
    }
    merged = sh.merge(defaults(scene), overrides)
    own_seed = sh.parse_seed(shot.seed)
    if own_seed is not None:
        seed, counts = own_seed, True
    else:
        base = sh.parse_seed(s.seed) or 0
        counts = s.seed_policy != "RANDOM"
        seed = (
            seed_value if (seed_value is not None and not counts) else sh.shot_seed(base, s.seed_policy, shot.shot_id)
        )
    settings = sh.Settings(
        prompt=merged["prompt"],
        negative=merged["negative"],
        seed=seed,
        workflow=merged["workflow"],
        service=merged["service"],
        steps=merged["steps"],
        cfg=merged["cfg"],
        width=merged["width"],
        height=merged["height"],
        frames=shot.frames,
        fps=merged["fps"],
        extra=merged["extra"],
        # A seed the add-on made (per shot or random) may be folded into the input's range; a typed one may not.
        random_seed=own_seed is None and s.seed_policy != "FIXED",
    )
    return settings, counts


def gradio_basis(scene, shot) -> str:
    """What a Gradio take's fingerprint is made from besides the settings: its endpoint and inputs template (the
    shot's, else the sequence's), as ``submit_gradio`` records it."""
    s = props.settings(scene)
    api = (shot.gradio_api or s.gradio_api).strip()
    template = shot.gradio_inputs if shot.gradio_inputs.strip() else s.gradio_inputs
    return sh.inputs_hash(sh.Settings(), f"{api}|{template}")


def current_hash(scene, shot, with_input: bool = False, gradio: bool = False) -> str:
    """The shot's fingerprint now; ``with_input``: including what its picture is made from (when its take sent
    one; the picture itself is not rendered for this); ``gradio``: as a take on a Gradio app (endpoint and inputs
    instead of the workflow file)."""
    settings, counts = settings_for(scene, shot)
    if with_input:
        settings.image_key = scene_inputs.key_of(scene, props.settings(scene), shot, workflow_digest)
    if gradio:
        return sh.inputs_hash(settings, gradio_basis(scene, shot), seed_counts=counts)
    path = bpy.path.abspath(settings.workflow) if settings.workflow else ""
    basis = (workflow_digest(path) if path else "") + reference_digest(scene)
    return sh.inputs_hash(settings, basis, seed_counts=counts)


def is_stale(scene, shot) -> bool:
    """The shot's inputs (prompt, settings, seed, workflow file or Gradio endpoint and inputs, range, input
    picture) changed since its active take."""
    if not 0 <= shot.active_take < len(shot.takes):
        return False
    take = shot.takes[shot.active_take]
    try:
        with_input = bool(take.input_key)
        # The take does not say whether it ran on ComfyUI or a Gradio app (the service's kind may have changed
        # since): it is current if it matches either way (the service itself is part of both fingerprints).
        return take.inputs_hash not in (
            current_hash(scene, shot, with_input),
            current_hash(scene, shot, with_input, gradio=True),
        )
    except ValueError:
        return True


# ---- submitting -----------------------------------------------------------------------------------------------------


def default_service(rt) -> str:
    """Where a job goes when none is chosen: the first enabled server that runs workflows (not a chat service)."""
    services = rt.owner.services()
    return next((name for name, spec in services.items() if spec.kind not in CHAT_KINDS), "")


class NotYet(Exception):
    """The shot cannot be sent yet (its service's setup call is still running): it stays in the batch."""


class SubmitProblem(Exception):
    """A shot could not be sent; the message says what to change."""


class Prepared:
    """Workflows loaded and resolved once per (file, content, server) for a whole batch."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.cache: dict[tuple[str, str, str, bool], tuple[object, prm.Resolved]] = {}
        self.failed: dict[tuple[str, str, str, bool], str] = {}  # why a file could not be read (drawn often)

    def peek(self, path: str) -> prm.Resolved | None:
        """The newest resolution of ``path`` already made (for drawing: never loads anything)."""
        digest = workflow_digest(path)
        for (p, d, _service, _info), (_wf, resolved) in reversed(list(self.cache.items())):
            if p == path and d == digest:
                return resolved
        return None

    def check(self, wf, built: dict, service: str, uploaded: list[str] | None = None) -> str | None:
        """What the server would reject, said before anything is sent: the workflow with this shot's inputs checked
        against the server's node list (when known), e.g. "node 3 (KSampler): cfg = 500 is bigger than the maximum
        100; use a value from 0.0 to 100.0". None when it passes (or the node list is not known yet)."""
        info = self.rt.owner.schemas.get(self.rt.owner.hub, service, fetch=False)
        if info is None:
            return None
        try:
            scratch = prm._workflow_class().load(wf.to_dict())
            for selector, value in built.items():
                scratch.set(selector, value)
            problems = [p for p in scratch.validate(info) if p.get("severity") == "error"]
            # The node list was read before the uploads: the new files are not in its choices yet.
            skip = {tuple(selector.rsplit(".", 1)) for selector in uploaded or []}
            problems = [p for p in problems if (p.get("node_id"), p.get("input")) not in skip]
        except Exception as exc:  # a selector the workflow does not have (an extra parameter)
            return str(exc)
        if not problems:
            return None
        first = problems[0]
        text = str(first.get("message") or first.get("code"))
        if first.get("suggestion"):
            text += f"; {first['suggestion']}"
        if len(problems) > 1:
            text += f" (and {len(problems) - 1} more)"
        return text

    def get(self, path: str, service: str, fetch: bool = True):
        """The workflow (API format) and where each setting goes; ``fetch=False`` (drawing): a node list not known
        yet is not asked for."""
        hub = self.rt.owner.hub
        spec = self.rt.owner.services().get(service)
        comfy = spec is not None and spec.kind in COMFY_KINDS
        info = self.rt.owner.schemas.get(hub, service, fetch=fetch) if comfy else None
        key = (path, workflow_digest(path), service, info is not None)
        hit = self.cache.get(key)
        if hit is None:
            problem = self.failed.get(key)
            if problem is not None:  # the same file, the same server, no node list yet: the same answer
                raise SubmitProblem(problem)
            try:
                wf = prm.load(path, info)
                hit = (wf, prm.resolve(wf, info, wf_path=path))
            except prm.WorkflowProblem as exc:
                self.failed[key] = str(exc)
                raise SubmitProblem(str(exc)) from exc
            except Exception as exc:
                self.failed[key] = f"{os.path.basename(path)}: {exc}"
                raise SubmitProblem(self.failed[key]) from exc
            self.cache[key] = hit
        return hit


def submit_shot(rt, scene, shot, prepared: Prepared) -> tuple[str, list[str]]:
    """Sends one take of ``shot``; returns (job id, settings the workflow has no input for). Never waits on the
    network (``Hub.submit`` returns at once)."""
    try:
        settings, counts = settings_for(scene, shot)
    except ValueError as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    services = rt.owner.services()
    service = settings.service or default_service(rt)
    if service not in services:
        raise SubmitProblem(f"{shot.name}: server {service!r} is not set up or not enabled")
    kind = services[service].kind
    if kind in GRADIO_KINDS:
        return submit_gradio(rt, scene, shot, settings, counts, service)
    if kind not in COMFY_KINDS:
        raise SubmitProblem(f"{shot.name}: {service!r} is a {kind} service; shots run on ComfyUI or a Gradio app")
    if not settings.workflow:
        raise SubmitProblem(f"{shot.name}: choose a workflow")
    path = bpy.path.abspath(settings.workflow)
    wf, resolved = prepared.get(path, service)
    hub = rt.owner.hub
    picture = None
    if resolved.wants_image:
        picture = scene_picture(rt, scene, shot, settings, service)
    inputs = sh.inputs_hash(settings, workflow_digest(path) + reference_digest(scene), seed_counts=counts)
    try:
        built, unused = prm.build(resolved, settings)
    except prm.WorkflowProblem as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    image_targets = resolved.targets.get("image") or []
    uploaded = [image_targets[0].selector] if (picture is not None and image_targets) else []
    uploaded += upload_references(rt, scene, shot, service, resolved, built)
    problem = prepared.check(wf, built, service, uploaded)
    if problem:
        raise SubmitProblem(f"{shot.name}: {problem}")
    sent_seed = next((built[t.selector] for t in resolved.targets.get("seed") or [] if t.selector in built), None)
    if sent_seed is not None:
        settings.seed = sent_seed
    try:
        job = hub.submit(service, wf, params=built, tag=shot.shot_id)
    except Exception as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    return _record(rt, scene, shot, job, service, settings, path, built, inputs, picture, unused)


def _record(rt, scene, shot, job, service, settings, path, built, inputs, picture, unused) -> tuple[str, list[str]]:
    """The take of a job just sent: its folder with the record, the scene's job record, the shot's take."""
    s = props.settings(scene)
    hub = rt.owner.hub
    # Not ``job.state``: a fast job may already be done, and the model must take its end from the JobCompleted
    # event (which carries the files); a view that starts "completed" would ignore that event.
    state = "pending"
    folder = takes.take_dir(hub.output_dir, shot.shot_id, job.id)
    number = max((t.number for t in shot.takes), default=0) + 1
    try:
        takes.write_take(
            folder,
            {
                "shot_id": shot.shot_id,
                "shot": shot.name,
                "take": number,
                "job_id": job.id,
                "service": service,
                "frame_start": shot.frame_start,
                "frame_end": shot.frame_end,
                "frames": shot.frames,
                "fps": settings.fps,
                "seed": str(settings.seed),
                "workflow_file": path,
                "workflow_sha256": workflow_digest(path),
                "params": built,
                "inputs_hash": inputs,
                "input": picture,
                "submitted_at": time.time(),
                "state": state,
            },
        )
    except OSError as exc:
        rt.model.add_error(job.id, "take_write_failed", f"could not write the take's record in {folder}: {exc}")
    record = s.jobs.add()
    record.name = job.id
    record.service = service
    record.tag = shot.name
    record.state = state
    record.frame = shot.frame_start
    record.frames = shot.frames
    record.channel = shot.channel
    record.target = "SEQUENCER"
    record.submitted_at = time.time()
    record.shot_id = shot.shot_id
    take = shot.takes.add()
    take.name = job.id
    take.number = number
    take.folder = folder
    take.seed = str(settings.seed)
    take.inputs_hash = inputs
    take.state = state
    take.submitted_at = time.time()
    take.frames = shot.frames
    if picture is not None:
        take.input_key = settings.image_key
        take.input_file = picture["file"]
    shot.job_id = job.id
    shot.job_state = state
    shot.message = ""
    s.last_seed = str(settings.seed)
    rt.model.track(job.id, service, shot.shot_id, state=state)
    wanted = [k for k in ("prompt", "negative", "steps", "cfg") if getattr(settings, k) is not None]
    return job.id, [prm.LABELS[k] for k in unused if k in wanted]


def submit_gradio(rt, scene, shot, settings: sh.Settings, counts: bool, service: str) -> tuple[str, list[str]]:
    """A take on a Gradio app (Wan2GP, RVC, AudioLDM …): the sequence's endpoint called with the shot's inputs
    (``{prompt}``, ``{seed}``, ``{image}`` … filled in); audio results land as sound strips, video as movie strips."""
    from director_link import GradioCall

    s = props.settings(scene)
    api = (shot.gradio_api or s.gradio_api).strip()
    template = shot.gradio_inputs if shot.gradio_inputs.strip() else s.gradio_inputs
    if not api:
        raise SubmitProblem(f"{shot.name}: {service!r} is a Gradio app: give its endpoint (e.g. /generate)")
    setup_ready(rt, shot, service, s.gradio_setup)
    audio = None
    if "{audio}" in template:
        try:
            audio = scene_inputs.sound_under(scene, shot)
        except scene_inputs.InputProblem as exc:
            raise SubmitProblem(f"{shot.name}: input sound: {exc}") from exc
    picture = None
    if "{image}" in template:
        hold_for_previous(rt, scene, shot)
        folder = os.path.join(rt.owner.hub.output_dir, "inputs")
        try:
            settings.image_key = scene_inputs.key_of(scene, s, shot, workflow_digest)
            path = scene_inputs.capture(scene, s, shot, folder, s.input_render)
        except (scene_inputs.InputProblem, OSError) as exc:
            raise SubmitProblem(f"{shot.name}: input picture: {exc}") from exc
        if path is not None:
            picture = {"file": path, "sha256": sh.file_digest(path), "uploaded_as": "", "source": "gradio"}
    try:
        values = sh.gradio_inputs(template, settings, picture["file"] if picture else None, audio)
        call = GradioCall(api_name=api, inputs=values)
    except ValueError as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    inputs = sh.inputs_hash(settings, gradio_basis(scene, shot), seed_counts=counts)
    try:
        job = rt.owner.hub.submit(service, call, tag=shot.shot_id)
    except Exception as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    built = {"api_name": api, "inputs": values}
    return _record(rt, scene, shot, job, service, settings, "", built, inputs, picture, [])


def setup_ready(rt, shot, service: str, text: str) -> None:
    """The sequence's Gradio setup call (RVC's voice load) is made once per Generate, service and call before that
    service's shots, in the session they share; until it has finished the shots wait (NotYet), and when it failed
    they fail with its reason."""
    from director_link import GradioCall

    try:
        setup = sh.gradio_setup(text)
    except ValueError as exc:
        raise SubmitProblem(f"{shot.name}: {exc}") from exc
    if setup is None:
        return
    key = (service, text.strip())
    job = rt.gradio_setups.get(key)
    if job is None:
        try:
            job = rt.owner.hub.submit(service, GradioCall(api_name=setup[0], inputs=setup[1]))
        except Exception as exc:
            raise SubmitProblem(f"{shot.name}: the Gradio setup call {setup[0]} could not be sent: {exc}") from exc
        rt.gradio_setups[key] = job
    state = str(job.state)
    if state == "completed":
        return
    if state in ("failed", "cancelled", "unknown"):
        info = job.info() or {}
        reason = info.get("error") or state
        raise SubmitProblem(f"{shot.name}: the Gradio setup call {setup[0]} {state}: {reason}")
    raise NotYet(setup[0])


def reference_files(scene) -> list[str]:
    """The sequence's reference images, as absolute paths in the given order."""
    text = props.settings(scene).reference_images
    return [bpy.path.abspath(p.strip()) for p in text.split(";") if p.strip()]


def reference_digest(scene) -> str:
    """The reference images' contents (a changed or swapped one makes every shot stale); "" when there are none."""
    files = reference_files(scene)
    return "|refs:" + ",".join(workflow_digest(p) for p in files) if files else ""


def upload_references(rt, scene, shot, service: str, resolved, built: dict) -> list[str]:
    """Uploads the sequence's reference images (the hub sends each distinct file once per server) and puts their
    names into the workflow's image inputs after the shot's picture; returns those selectors. More images than
    inputs, or a missing file, is an error that says so before anything is sent."""
    files = reference_files(scene)
    if not files:
        return []
    targets = resolved.targets.get("reference") or []
    if len(files) > len(targets):
        raise SubmitProblem(
            f"{shot.name}: {len(files)} reference image(s) but the workflow has {len(targets)} image input(s) for "
            "them (after the shot's picture); remove some or use a workflow with more Load Image nodes"
        )
    hub = rt.owner.hub
    for target, path in zip(targets, files, strict=False):
        if not os.path.isfile(path):
            raise SubmitProblem(f"{shot.name}: the reference image {path!r} does not exist")
        try:
            built[target.selector] = hub.upload_image(service, path)
        except Exception as exc:
            raise SubmitProblem(
                f"{shot.name}: uploading the reference image {os.path.basename(path)} failed: {exc}"
            ) from exc
    return [t.selector for t in targets[: len(files)]]


def hold_for_previous(rt, scene, shot) -> None:
    """A shot continuing from the previous shot's last frame waits (NotYet) while that shot is still on its way
    in the batch: generate all sends them in order, each once its predecessor has landed."""
    s = props.settings(scene)
    if scene_inputs.source_of(s, shot)[0] != "PREVIOUS":
        return
    prev = scene_inputs.previous_shot(s, shot)
    if prev is None:
        return
    if active(rt.model, prev):
        raise NotYet(prev.shot_id)
    # Finished on the server but not landed yet (downloaded, split, placed by a later tick): still wait.
    view = rt.model.jobs.get(prev.job_id) if prev.job_id else None
    take = prev.takes.get(prev.job_id) if prev.job_id else None
    if view is not None and view.state == "completed" and (take is None or take.state != "completed"):
        raise NotYet(prev.shot_id)


def scene_picture(rt, scene, shot, settings: sh.Settings, service: str) -> dict | None:
    """Makes the shot's picture (camera render, strip frame or file), uploads it to ``service`` (the hub sends each
    distinct file once per server) and puts its name into ``settings.image``; returns what the take's manifest
    records about it (None: the workflow keeps its own image)."""
    s = props.settings(scene)
    hold_for_previous(rt, scene, shot)
    folder = os.path.join(rt.owner.hub.output_dir, "inputs")
    try:
        key = scene_inputs.key_of(scene, s, shot, workflow_digest)
        path = scene_inputs.capture(scene, s, shot, folder, s.input_render)
    except scene_inputs.InputProblem as exc:
        raise SubmitProblem(f"{shot.name}: input picture: {exc}") from exc
    except OSError as exc:
        raise SubmitProblem(f"{shot.name}: input picture could not be written in {folder}: {exc}") from exc
    if path is None:
        return None
    try:
        name = rt.owner.hub.upload_image(service, path)
    except Exception as exc:
        raise SubmitProblem(f"{shot.name}: uploading the input picture {os.path.basename(path)} failed: {exc}") from exc
    hub = rt.owner.hub
    try:
        # The hub adds an uploaded file to the node list it holds (no request); the add-on's copy takes the hub's
        # when the file is new to it, so the parameter panel offers it too.
        if name not in prm.image_choices(rt.owner.schemas.get(hub, service, fetch=False)):
            rt.owner.schemas.put(service, hub.object_info(service))
    except Exception as exc:
        raise SubmitProblem(f"{shot.name}: reading the server's node list after the upload failed: {exc}") from exc
    settings.image = name
    settings.image_key = key
    return {"file": path, "sha256": sh.file_digest(path), "uploaded_as": name, "source": key.partition(":")[0]}


# ---- batches: Generate marks shots, the timer sends them ------------------------------------------------------------

BATCH_BUDGET = 0.004  # seconds of sending per timer tick (a batch of 100+ never stalls Blender's UI)
BATCH_MAX_PER_TICK = 64


def prepared(rt) -> Prepared:
    if rt.workflows is None:
        rt.workflows = Prepared(rt)
    return rt.workflows


def enqueue(rt, shots) -> int:
    """Marks shots to be sent (returns at once); the timer sends them in order."""
    count = 0
    for shot in shots:
        shot.waiting = True
        shot.job_state = "waiting"
        shot.message = ""
        count += 1
    # Each Generate makes the setup calls again (once for all its shots): the app may have restarted since and lost
    # its session (RVC's loaded voice), or a failed one may work now. One still running is kept.
    rt.gradio_setups = {k: j for k, j in rt.gradio_setups.items() if str(j.state) in st.ACTIVE_STATES}
    if count:
        rt.batch_pending = True
        rt.batch_paused = False
    return count


def waiting_shots(scene) -> list:
    return [shot for shot in props.settings(scene).shots if shot.waiting and not shot.missing]


def send_waiting(rt, budget: float | None = None, limit: int | None = None) -> tuple[int, bool]:
    """Sends waiting shots until ``budget`` seconds or ``limit`` shots (default: the module's settings, read now);
    returns (sent, more waiting). A shot that cannot be sent fails with the reason (the rest of the batch goes on)."""
    if not rt.batch_pending or rt.batch_paused or not rt.owner.is_open:
        return 0, False
    budget = BATCH_BUDGET if budget is None else budget
    limit = BATCH_MAX_PER_TICK if limit is None else limit
    deadline = time.perf_counter() + budget
    sent = 0
    held = False
    cache = prepared(rt)
    for scene in bpy.data.scenes:
        for shot in waiting_shots(scene):
            if sent >= limit or (sent and time.perf_counter() > deadline):
                return sent, True
            shot.waiting = False
            try:
                submit_shot(rt, scene, shot, cache)
            except NotYet:
                shot.waiting = True  # its service's setup call is still running: sent on a later tick
                held = True
                continue
            except SubmitProblem as exc:
                shot.job_state = "failed"
                shot.message = str(exc)
                rt.model.add_error(shot.shot_id, "submit_failed", str(exc))
            sent += 1
    if held:
        return sent, True
    rt.batch_pending = False
    return sent, False


def has_waiting() -> bool:
    return any(waiting_shots(scene) for scene in bpy.data.scenes)


def choose(scene, which: str, shot_id: str = "") -> list:
    """The shots a Generate/Cancel applies to: ALL, SELECTED (checked), STALE, NEW (never generated) or ONE."""
    out = []
    for shot in props.settings(scene).shots:
        if shot.missing:
            continue
        if which == "ONE" and shot.shot_id != shot_id:
            continue
        if which == "SELECTED" and not shot.selected:
            continue
        if which == "STALE" and not is_stale(scene, shot):
            continue
        if which == "NEW" and len(shot.takes):
            continue
        out.append(shot)
    return out


def active(model: st.ViewModel | None, shot) -> bool:
    """The shot's newest job is still on its way (or the shot waits in a batch)."""
    if shot.waiting:
        return True
    if not shot.job_id:
        return False
    view = model.jobs.get(shot.job_id) if model is not None else None
    state = view.state if view is not None else shot.job_state
    return state in st.ACTIVE_STATES


def refresh_states(scene, model: st.ViewModel) -> bool:
    """Copies the newest job's state into each shot (saved with the .blend: a restart shows the last state)."""
    changed = False
    for shot in props.settings(scene).shots:
        if shot.waiting:
            continue  # its last job is an older take; the shot shows "in the batch"
        view = model.jobs.get(shot.job_id) if shot.job_id else None
        if view is not None and view.state != shot.job_state:
            shot.job_state = view.state
            changed = True
    return changed


# ---- "Write shots": an LLM's shot list → markers with prompts ------------------------------------------------------


def writing(model: st.ViewModel | None, s) -> bool:
    view = model.jobs.get(s.writer_job) if (model is not None and s.writer_job) else None
    return view is not None and view.state not in st.TERMINAL_STATES


def finish_writing(model: st.ViewModel, finished: list[str]) -> bool:
    """A finished "Write shots" chat: its whole answer goes into the editable shot list (also when cancelled or
    failed: what arrived is kept)."""
    changed = False
    for scene in bpy.data.scenes:
        s = props.settings(scene)
        if s.writer_job and s.writer_job in finished:
            text = model.texts.pop(s.writer_job, None)
            if text:
                s.written = text
            changed = True
    return changed


def shots_from_text(scene, text: str) -> int:
    """One timeline marker per written shot (spread over the scene's range) and its shot with the prompt."""
    prompts = writer.parse_shots(text)
    placed = writer.place(prompts, scene.frame_start, scene.frame_end, {m.name for m in scene.timeline_markers})
    for item in placed:
        scene.timeline_markers.new(item.name, frame=item.frame)
    from_markers(scene)
    by_key = {shot.key: shot for shot in props.settings(scene).shots}
    for item in placed:
        shot = by_key.get(item.name)
        if shot is not None:
            shot.prompt = item.prompt
    return len(placed)


# ---- review and hand-off ---------------------------------------------------------------------------------------


def review_entries(scene) -> list[review.ShotEntry]:
    """The scene's shots and their takes as the cut and the contact sheet read them (missing shots left out)."""
    out = []
    for shot in props.settings(scene).shots:
        if shot.missing:
            continue
        entry = review.ShotEntry(shot.shot_id, shot.name, shot.frame_start, shot.frames, prompt=shot.prompt)
        for index, take in enumerate(shot.takes):
            entry.takes.append(
                review.TakeEntry(
                    number=take.number,
                    job_id=take.name,
                    state=take.state,
                    seed=take.seed,
                    files=[p for p in take.paths.splitlines() if p],
                    review="" if take.review == "none" else take.review,
                    active=index == shot.active_take,
                    message=take.message,
                )
            )
        out.append(entry)
    return out
