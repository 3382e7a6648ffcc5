"""Results into Blender: images as image datablocks, image sequences and videos as Sequencer strips, audio as
sound strips — at the frame and channel locked when the job was submitted."""

from __future__ import annotations

import os

import bpy

from . import mapping
from . import state as st


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


def free_channel(scene, frame_start: int, frame_end: int, lowest: int = 1) -> int:
    """The lowest channel (≥ ``lowest``) with no strip overlapping ``frame_start..frame_end``."""
    busy = {
        s.channel for s in all_strips(scene) if s.frame_final_start < frame_end + 1 and s.frame_final_end > frame_start
    }
    channel = max(lowest, 1)
    while channel in busy and channel < 128:
        channel += 1
    return channel


def record_posted(job_ids: list[str]) -> None:
    """Marks the scene records of jobs the server confirmed having, so a reopened .blend can tell a job that
    reached its server from one that never did (still ``pending``)."""
    from . import props

    for job_id in job_ids:
        _scene, record = props.find_job(job_id)
        if record is not None and record.state == "pending":
            record.state = "queued"


def record_finished(model: st.ViewModel, job_ids: list[str]) -> None:
    """Writes finished jobs into the scene records that submitted them; imports results when the scene asks."""
    from . import props

    for job_id in job_ids:
        view = model.jobs.get(job_id)
        scene, record = props.find_job(job_id)
        if view is None or record is None:
            continue
        record.state = view.state
        record.paths = "\n".join(view.paths)
        if view.error:
            record.message = str(view.error.get("message") or view.error.get("code") or "")[:1000]
        if view.state == "completed" and scene.movie_director.auto_import and not record.imported:
            try:
                import_job(scene, record, view.outputs)
            except Exception as exc:
                model.add_error(job_id, "import_failed", f"could not import the result: {exc}")


def import_job(scene, record, outputs: list[dict]) -> list:
    """Imports a finished job's files; returns what was created (strips and images)."""
    plan = mapping.plan_import(outputs or [{"path": p} for p in record.paths.splitlines() if p])
    created: list = []
    for path in plan.images:
        if os.path.isfile(path):
            created.append(bpy.data.images.load(path, check_existing=True))
    if record.target == "SEQUENCER":
        strips = strips_of(scene)
        channel = max(record.channel, 1)
        name = record.tag or f"job_{record.name[:8]}"
        for frames in plan.image_sequences:
            frames = [p for p in frames if os.path.isfile(p)]
            if not frames:
                continue
            strip = strips.new_image(name=name, filepath=frames[0], channel=channel, frame_start=record.frame)
            for extra in frames[1:]:
                strip.elements.append(os.path.basename(extra))
            created.append(strip)
            channel += 1
        for path in plan.videos:
            if os.path.isfile(path):
                created.append(strips.new_movie(name=name, filepath=path, channel=channel, frame_start=record.frame))
                channel += 1
        for path in plan.audio:
            if os.path.isfile(path):
                created.append(strips.new_sound(name=name, filepath=path, channel=channel, frame_start=record.frame))
                channel += 1
    record.imported = True
    return created
