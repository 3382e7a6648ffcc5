"""Results into Blender: images as image datablocks, image sequences and videos as Sequencer strips, audio as
sound strips — at the frame and channel locked when the job was submitted."""

from __future__ import annotations

import os
import time

import bpy

from . import media, placement, runtime, shots
from . import state as st
from . import takes as takes_mod


def strips_of(scene):
    """The Sequencer's top-level strip collection (``strips`` since 4.4, ``sequences`` before)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    collection = getattr(editor, "strips", None)
    return collection if collection is not None else editor.sequences


def all_strips(scene):
    editor = scene.sequence_editor
    if editor is None:
        return []
    collection = getattr(editor, "strips_all", None)
    return list(collection if collection is not None else editor.sequences_all)


def sequencer_scene(context=None):
    """The scene the Sequencer edits: ``context.sequencer_scene`` (Blender 5.0, may differ from the active scene),
    else ``context.scene``."""
    context = context or bpy.context
    return getattr(context, "sequencer_scene", None) or context.scene


def occupied(scene, exclude=()) -> list[tuple[int, int, int]]:
    """``(channel, start, end)`` of every strip (inside meta strips too), except the strips in ``exclude``."""
    skip = {s.as_pointer() for s in exclude}
    return [
        (s.channel, s.frame_final_start, s.frame_final_end) for s in all_strips(scene) if s.as_pointer() not in skip
    ]


def free_channel(scene, frame_start: int, frame_end: int, lowest: int = 1, exclude=()) -> int:
    """The lowest channel (≥ ``lowest``) with no strip over ``frame_start..frame_end`` (inclusive)."""
    return placement.free_channel(occupied(scene, exclude), frame_start, frame_end + 1, lowest=lowest)


def record_posted(job_ids: list[str], hub=None) -> None:
    """Marks the scene records of jobs the server confirmed having, so a reopened .blend can tell a job that
    reached its server from one that never did (still ``pending``). Through a studio server the record also keeps
    the server's id for the job (the .blend goes where its folder goes; the output folder may not)."""
    from . import props

    remote_of = getattr(hub, "remote_id", None)
    for job_id in job_ids:
        _scene, record = props.find_job(job_id)
        if record is None:
            continue
        if record.state == "pending":
            record.state = "queued"
        if remote_of is not None and not record.remote_id:
            record.remote_id = remote_of(job_id) or ""


def record_finished(model: st.ViewModel, job_ids: list[str]) -> None:
    """Writes finished jobs into the scene records that submitted them; a shot's job becomes a take (and its strip),
    a scene job is imported when the scene asks."""
    from . import props

    for job_id in job_ids:
        view = model.jobs.get(job_id)
        scene, record = props.find_job(job_id)
        if view is None or record is None:
            continue
        record.state = view.state
        record.paths = "\n".join(view.paths)
        if view.error:
            record.message = _error_text(view.error)
        try:
            if record.shot_id:
                finish_take(scene, record, view.outputs, model)
            elif view.state == "completed" and scene.movie_director.auto_import and not record.imported:
                import_job(scene, record, view.outputs)
        except Exception as exc:
            model.add_error(job_id, "import_failed", f"could not import the result: {exc}")


def _error_text(error: dict) -> str:
    """The whole reason a job failed, node and input included (the panel wraps it; nothing is clipped)."""
    message = str(error.get("message") or error.get("code") or "failed")
    where = error.get("node_type") or error.get("node_id")
    if where and str(where) not in message:
        message = f"{message} (node {where})"
    return message[:4000]


def _add_visual(strips, name: str, kind: str, files: list[str], channel: int, frame_start: int, frames: int):
    if kind == "movie":
        strip = strips.new_movie(name=name, filepath=files[0], channel=channel, frame_start=frame_start)
    else:
        strip = strips.new_image(name=name, filepath=files[0], channel=channel, frame_start=frame_start)
        for extra in files[1:]:
            strip.elements.append(os.path.basename(extra))
    if frames > 0:
        # A still fills the shot; a longer video is trimmed to it (the file keeps every frame).
        strip.frame_final_duration = frames
    return strip


def _place(scene, name: str, plan: media.ImportPlan, frame: int, frames: int, preferred: int, exclude=()) -> list:
    """Adds the plan's visuals (and sounds) at ``frame`` for ``frames`` frames on free channels (``preferred`` when
    it is free over that range); never over another strip."""
    strips = strips_of(scene)
    created: list = []
    for kind, files in plan.visuals:
        files = [p for p in files if os.path.isfile(p)]
        if not files:
            continue
        channel = placement.free_channel(occupied(scene, exclude), frame, frame + max(frames, 1), preferred=preferred)
        created.append(_add_visual(strips, name, kind, files, channel, frame, frames))
    for path in plan.audio:
        if os.path.isfile(path):
            channel = placement.free_channel(
                occupied(scene, exclude), frame, frame + max(frames, 1), preferred=preferred
            )
            created.append(strips.new_sound(name=name, filepath=path, channel=channel, frame_start=frame))
    return created


def import_job(scene, record, outputs: list[dict]) -> list:
    """Imports a scene job's files at its locked frame (channel: the one chosen, or the first free one over the
    result's own range); returns what was created (strips and images)."""
    plan = media.plan_import(outputs or [{"path": p} for p in record.paths.splitlines() if p])
    created: list = []
    for path in plan.images:
        if os.path.isfile(path):
            created.append(bpy.data.images.load(path, check_existing=True))
    if record.target == "SEQUENCER":
        name = record.tag or f"job_{record.name[:8]}"
        created += _place(scene, name, plan, record.frame, max(record.frames, 1), record.channel)
    record.imported = True
    return created


# ---- shots and takes --------------------------------------------------------------------------------------------


def take_strips(scene, shot_id: str) -> list:
    """The strips showing a take of this shot (tagged with ``shots.TAKE_PROP``)."""
    prefix = shot_id + "/"
    return [s for s in all_strips(scene) if str(s.get(shots.TAKE_PROP, "")).startswith(prefix)]


def finish_take(scene, record, outputs: list[dict], model: st.ViewModel | None = None) -> None:
    """A shot's job ended: its take gets the state and files; a completed take becomes the shot's active take and
    its strip replaces the previous take's (same channel and trims)."""
    from . import props

    shot = props.find_shot(scene, record.shot_id)
    if shot is None:
        return  # the shot was deleted: the files stay on disk with their take.json
    take = shot.takes.get(record.name)
    if take is None:
        take = shot.takes.add()
        take.name = record.name
        take.number = len(shot.takes)
    take.state = record.state
    take.paths = record.paths
    take.message = record.message
    if shot.job_id == record.name:
        shot.job_state = record.state
        shot.message = record.message
    if take.folder and os.path.isdir(take.folder):
        try:
            takes_mod.update_take(
                take.folder,
                state=record.state,
                files=record.paths.splitlines(),
                message=record.message,
                finished_at=time.time(),
            )
        except OSError as exc:
            if model is not None:
                model.add_error(record.name, "take_write_failed", f"could not update the take's record: {exc}")
    if record.state != "completed" or record.imported:
        return
    rt = runtime.get()
    slow = [p for p in record.paths.splitlines() if p and media.needs_decoder(p)]
    if slow and rt is not None:
        # Pillow/ffmpeg take seconds on a long clip: split on a thread; the timer lands the take when it is done.
        rt.converter.start(record.name, slow)
        return
    index = shot.takes.find(record.name)
    created, problems = activate_take(scene, shot, index, outputs)
    record.imported = bool(created) or not record.paths
    if model is not None:
        for problem in problems:
            model.add_error(record.name, "convert_failed", problem)


def activate_take(scene, shot, index: int, outputs: list[dict] | None = None) -> tuple[list, list[str]]:
    """Makes take ``index`` the shot's active take: its strip replaces the current one (same channel, same trims),
    or lands at the shot's start frame for the shot's length on the shot's channel / the first free one.
    Returns (strips created, problems such as an animated file that could not be split)."""
    if not 0 <= index < len(shot.takes):
        return [], [f"no take {index + 1}"]
    take = shot.takes[index]
    files = [p for p in take.paths.splitlines() if p]
    plan = media.plan_import(outputs or [{"path": p} for p in files])
    old = take_strips(scene, shot.shot_id)
    keep = None
    if old:
        first = min(old, key=lambda s: s.channel)
        keep = (first.channel, first.frame_final_start, first.frame_final_end)
    preferred = keep[0] if keep else shot.channel
    shown = [p for _kind, files in plan.visuals for p in files] + list(plan.audio)  # a sound-only take is a take
    if not any(os.path.isfile(p) for p in shown):
        return [], plan.problems or [f"take {take.number} has no file Blender can show or play"]
    # The old take's strip goes first: Blender moves a new strip that overlaps another to a different channel.
    strips = strips_of(scene)
    for strip in old:
        try:
            strips.remove(strip)
        except Exception:
            pass  # inside a meta strip: left for the editor to remove
    created = _place(scene, shot.name or shot.shot_id, plan, shot.frame_start, shot.frames, preferred)
    for strip in created:
        strip[shots.TAKE_PROP] = f"{shot.shot_id}/{take.name}"
    if keep is not None:
        # The editor's trims stay: the new take shows the same part of the shot.
        main = created[0]
        main.frame_final_start = max(keep[1], main.frame_start)
        main.frame_final_end = keep[2]
    shot.active_take = index
    return created, plan.problems
