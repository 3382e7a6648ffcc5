"""Sidebar panels (3D View and Sequencer, tab "Director"): they draw from the view-model only, never the network.

The same panel bodies are registered for both editors; ``draw_*`` functions take a layout, so tests can run them
against a recording stand-in.
"""

from __future__ import annotations

import textwrap
import time

import bpy
from bpy.types import Panel, UIList

from . import bridge, importer, preferences, props, shotlist
from . import format as fmt
from . import params as prm
from . import shots as sh

CATEGORY = "Director"
MAX_JOBS_SHOWN = 12


def _progress(layout, factor: float, text: str) -> None:
    """A progress bar (Blender 4.0+), or its text where the widget does not exist."""
    if hasattr(layout, "progress"):
        layout.progress(factor=max(0.0, min(1.0, factor)), type="BAR", text=text)
    else:
        layout.label(text=text, icon="TIME")


def draw_status(layout, context) -> None:
    model = bridge.current_model()
    if model is None:
        layout.label(text="The add-on is not running", icon="ERROR")
        return
    draw_mode(layout, preferences.get(context))
    if not model.services:
        layout.label(text="No server set up", icon="UNLINKED")
        row = layout.row(align=True)
        row.operator("movie_director.show_preferences", icon="PREFERENCES")
        row.operator("movie_director.discover", icon="VIEWZOOM")
        preferences.draw_discovered(layout, model)
        return
    now = time.time()
    for view in model.services.values():
        style = fmt.service_style(view.state, view.blocked)
        box = layout.box()
        row = box.row()
        row.alert = style.alert
        row.label(text=f"{view.name}: {style.label}", icon=style.icon)
        if view.state in ("reconnecting", "circuit_open", "disconnected", "polling") and not view.blocked:
            op = row.operator("movie_director.reconnect", text="", icon="FILE_REFRESH")
            op.service = view.name
        why = view.blocked or view.reason
        if why:
            line = box.row()
            line.alert = style.alert
            line.label(text=fmt.clip(why, 60))
        if style.hint and view.state != "connected":
            box.label(text=style.hint, icon="INFO")
        if view.next_attempt_at and view.state in ("reconnecting", "circuit_open"):
            wait = view.next_attempt_at - now
            if wait > 0:
                box.label(text=f"Next attempt in {fmt.duration(wait)}")
        details = []
        if view.version:
            details.append(f"ComfyUI {view.version}")
        if view.queue_remaining is not None:
            details.append(f"queue {view.queue_remaining}")
        if details:
            box.label(text=" · ".join(details))
    row = layout.row(align=True)
    row.operator("movie_director.refresh", icon="FILE_REFRESH")
    row.operator("movie_director.discover", icon="VIEWZOOM")
    row.operator("movie_director.show_preferences", text="", icon="PREFERENCES")
    if model.discovering or model.discovered:
        preferences.draw_discovered(layout, model)


def studio_mode(prefs) -> bool:
    return prefs is not None and prefs.mode == "STUDIO"


def service_field(layout, owner, prefs) -> None:
    """The server a job goes to: one of the preferences' servers, or (studio mode) one of the studio's, typed."""
    if prefs is None or studio_mode(prefs):
        layout.prop(owner, "service", icon="LINKED")
    else:
        layout.prop_search(owner, "service", prefs, "services", icon="LINKED")


def draw_mode(layout, prefs) -> None:
    """Where jobs go: said above the servers (and when a switch waits for running jobs to end)."""
    rt = bridge.runtime()
    if prefs is None or rt is None:
        return
    studio = rt.owner.studio
    if studio_mode(prefs) != studio:
        wanted = "the studio server" if studio_mode(prefs) else "the servers directly"
        layout.label(text=f"Switching to {wanted} when the running jobs end", icon="SORTTIME")
    if studio:
        where = str(rt.owner.options.get("studio_url") or "").split("://")[-1]
        layout.label(text=f"Via the studio server {where}", icon="WORLD")


def _resolved(context, s):
    """The sequence workflow's resolution: made on first draw from the local file (an API-format file needs no
    server; a UI-format one waits for the node list, fetched on a thread), then cached by file content. So an image
    workflow never shows a frame count, from the moment it is chosen (drawing never waits on the network)."""
    rt = bridge.runtime()
    if rt is None or not s.workflow:
        return None
    path = bpy.path.abspath(s.workflow)
    known = rt.workflows.peek(path) if rt.workflows is not None else None
    if known is not None:
        return known
    try:
        return shotlist.prepared(rt).get(path, s.service or shotlist.default_service(rt), fetch=False)[1]
    except shotlist.SubmitProblem:
        return None  # not readable yet (missing file, UI format before the node list): said when generating


def draw_generate(layout, context) -> None:
    scene = importer.sequencer_scene(context)
    s = props.settings(scene)
    prefs = preferences.get(context)
    layout.use_property_split = True
    layout.use_property_decorate = False
    service_field(layout, s, prefs)
    rt = bridge.runtime()
    first = shotlist.default_service(rt) if rt is not None else ""
    if not s.service and first:
        # An empty field means "the first server": say which one, instead of looking unset.
        layout.label(text=f"Empty: the first server ({first})", icon="INFO")
    layout.prop(s, "workflow")
    if prefs is not None and any(svc.kind in preferences.GRADIO_KINDS for svc in prefs.services):
        col = layout.column(align=True)
        col.prop(s, "gradio_api")
        col.prop(s, "gradio_inputs")
        col.prop(s, "gradio_setup")
    resolved = _resolved(context, s)
    layout.prop(s, "prompt")
    layout.prop(s, "negative")
    row = layout.row(align=True)
    row.prop(s, "seed")
    row.prop(s, "randomize_seed", text="", icon="FILE_REFRESH")
    if s.seed_problem:
        wrapped(layout, s.seed_problem, alert=True)
    if s.randomize_seed and s.last_seed:
        layout.label(text=f"Last seed: {s.last_seed}")
    layout.prop(s, "steps", text="Steps (0: the workflow's)")
    layout.prop(s, "cfg", text="CFG (0: the workflow's)")
    if resolved is not None:
        missing = [prm.LABELS[k] for k in ("prompt", "negative", "seed", "steps", "cfg") if not resolved.supports(k)]
        if s.reference_images.strip() and not resolved.supports("reference"):
            missing.append("Reference images")  # said, never silently dropped
        if missing:
            layout.label(text=f"Not in this workflow: {', '.join(missing)}", icon="INFO")
    layout.prop(s, "use_scene_resolution")
    width, height = props.size_for(scene)
    if s.use_scene_resolution:
        layout.label(text=f"Size: {width} × {height} (render settings)")
    else:
        col = layout.column(align=True)
        col.prop(s, "width")
        col.prop(s, "height")
    # Frames only mean something to a video workflow (unknown until the workflow has been read once).
    if resolved is None or resolved.is_video:
        layout.prop(s, "use_scene_frames")
        if s.use_scene_frames:
            layout.label(text=f"Frames: {props.frames_for(scene)} at {props.fps_for(scene):g} fps (shots: their own)")
        else:
            layout.prop(s, "frames")
    # The picture only means something to a workflow with an image input (shown until the workflow is read once).
    if resolved is None or resolved.wants_image:
        draw_input(layout, s)
    layout.prop(s, "shot_source")
    layout.prop(s, "target")
    if s.target == "SEQUENCER":
        layout.prop(s, "channel", text="Channel (0: first free)")
    layout.prop(s, "auto_import")
    row = layout.row()
    row.scale_y = 1.4
    row.operator("movie_director.generate", text="Generate at Playhead", icon="RENDER_STILL")


def draw_jobs(layout, context) -> None:
    s = props.settings(context.scene)
    model = bridge.current_model()
    records = list(s.jobs)[-MAX_JOBS_SHOWN:]
    if not records:
        layout.label(text="No job yet: press Generate")
        return
    for record in reversed(records):
        view = model.jobs.get(record.name) if model is not None else None
        state = view.state if view is not None else record.state
        style = fmt.job_style(state)
        box = layout.box()
        row = box.row(align=True)
        row.alert = style.alert
        row.label(text=f"{record.tag or 'shot'} · {fmt.short_id(record.name)}", icon=style.icon)
        if view is not None and view.active:
            sub = row.row(align=True)
            sub.enabled = not view.cancel_requested
            op = sub.operator("movie_director.cancel", text="", icon="X")
            op.job_id = record.name
        else:
            op = row.operator("movie_director.forget_job", text="", icon="TRASH")
            op.job_id = record.name
        if view is not None and view.active:
            line = fmt.progress_line(
                state,
                view.percentage,
                view.node_id,
                view.node_type,
                view.eta_seconds,
                view.queue_position,
                view.pending_connection,
            )
            if state == "running":
                _progress(box, view.percentage / 100.0, fmt.clip(line, 60))
            else:
                box.label(text=line)
            if view.cancel_requested:
                box.label(text="Cancelling…", icon="SORTTIME")
            if view.node_text:
                box.label(text=fmt.clip(view.node_text, 60))
        else:
            box.label(text=style.label + (f" · frame {record.frame}, channel {record.channel}" if record.paths else ""))
        if state == "failed":
            message = (view.error or {}).get("message") if view is not None and view.error else record.message
            wrapped(box, message or "failed", alert=True)  # in full: the end of it says what to change
            op = box.operator("movie_director.copy_error", icon="COPYDOWN")
            op.source = record.name
        if state == "completed" and record.paths:
            row = box.row(align=True)
            if not record.imported:  # imported already (automatically): nothing to offer but the folder
                op = row.operator("movie_director.import_result", text="Import", icon="IMPORT")
                op.job_id = record.name
            op = row.operator("movie_director.open_output", text="", icon="FILE_FOLDER")
            op.job_id = record.name
        if state == "unknown" and record.message:
            box.label(text=fmt.clip(record.message, 60), icon="INFO")


# Average width of a character of Blender's UI font, in pixels at UI scale 1 (for wrapping to the sidebar's width).
CHAR_PIXELS = 6.5
WRAP_MARGIN = 48  # panel and box margins, the icon column


def line_width(region=None, scale: float | None = None, default: int = 60) -> int:
    """How many characters fit on one line of the region being drawn (the sidebar is narrow by default: a fixed
    60 clipped the end of a failure reason, which says what to change)."""
    region = region if region is not None else getattr(bpy.context, "region", None)
    if region is None or not getattr(region, "width", 0):
        return default
    if scale is None:
        scale = bpy.context.preferences.system.ui_scale if bpy.context.preferences else 1.0
    return max(20, int((region.width - WRAP_MARGIN * scale) / (CHAR_PIXELS * scale)))


def wrapped(layout, text: str, width: int | None = None, alert: bool = False, icon: str = "NONE") -> None:
    """A long message in full, over as many lines as it needs (a label clips; a failure reason must not be),
    wrapped to the width of the sidebar it is drawn in."""
    col = layout.column(align=True)
    col.alert = alert
    for index, line in enumerate(textwrap.wrap(text, width or line_width()) or [""]):
        col.label(text=line, icon=icon if index == 0 else "NONE")


def shot_status(shot, model, scene=None) -> sh.ShotStatus:
    """The shot's line: its newest job as the hub sees it now, else its last state saved in the .blend."""
    view = model.jobs.get(shot.job_id) if (model is not None and shot.job_id and not shot.waiting) else None
    state = "waiting" if shot.waiting else (view.state if view is not None else (shot.job_state or None))
    message = shot.message
    if view is not None and view.error:
        message = str(view.error.get("message") or message)
    completed = sum(1 for t in shot.takes if t.state == "completed")
    server_down = None
    if view is not None and model is not None:
        svc = model.services.get(view.service)
        if view.pending_connection or (svc is not None and svc.state in SERVER_DOWN):
            name = view.service or "?"
            server_down = f"{name} {fmt.service_style(svc.state, svc.blocked).label.lower()}" if svc else name
    stale = False
    if scene is not None and completed:
        stale = shotlist.is_stale(scene, shot)
    return sh.status_line(
        state,
        completed,
        queue_position=view.queue_position if view is not None else None,
        percentage=view.percentage if view is not None else 0.0,
        node=view.node_type if view is not None else None,
        message=message,
        stale=stale,
        missing=shot.missing,
        server_down=server_down,
    )


SERVER_DOWN = ("disconnected", "connecting", "reconnecting", "circuit_open")

SHOT_ICONS = {
    "waiting_server": "UNLINKED",
    "not_generated": "DOT",
    "waiting": "TIME",
    "pending": "SORTTIME",
    "queued": "SORTTIME",
    "running": "PLAY",
    "completed": "CHECKMARK",
    "failed": "ERROR",
    "cancelled": "X",
    "missing": "QUESTION",
}


class MOVIE_DIRECTOR_UL_shots(UIList):
    """The shot list: tick, name, frames, state."""

    bl_idname = "MOVIE_DIRECTOR_UL_shots"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        status = shot_status(item, bridge.current_model(), importer.sequencer_scene(context))
        row = layout.row(align=True)
        row.prop(item, "selected", text="")
        row.label(text=f"{item.name}  {item.frame_start}–{item.frame_end}", icon=SHOT_ICONS.get(status.state, "DOT"))
        sub = row.row()
        sub.alert = status.alert
        sub.label(text=fmt.clip(status.text, 40))


def draw_shots(layout, context) -> None:
    scene = importer.sequencer_scene(context)
    s = props.settings(scene)
    model = bridge.current_model()
    row = layout.row(align=True)
    row.operator("movie_director.shots_from_markers", icon="MARKER_HLT")
    row.operator("movie_director.shots_from_strips", icon="SEQ_STRIP_DUPLICATE")
    draw_writer(layout.box(), context, s, model)
    if not len(s.shots):
        layout.label(text="No shots yet: add timeline markers (M) or pick strips, then make shots from them")
        return
    # Every shot in view up to a dozen (the list scrolls beyond): a batch is followed at a glance.
    rows = min(max(len(s.shots), 3), 12)
    layout.template_list("MOVIE_DIRECTOR_UL_shots", "", s, "shots", s, "active_shot", rows=rows)
    counts: dict[str, int] = {}
    for shot in s.shots:
        state = shot_status(shot, model).state
        counts[state] = counts.get(state, 0) + 1
    summary = [f"{len(s.shots)} shots"] + [
        f"{counts[k]} {label}"
        for k, label in (("completed", "done"), ("queued", "queued"), ("running", "running"), ("failed", "failed"))
        if counts.get(k)
    ]
    layout.label(text=" · ".join(summary))
    waiting = counts.get("waiting", 0)
    rt = bridge.runtime()
    if waiting:
        row = layout.row(align=True)
        if rt is not None and rt.batch_paused:
            row.label(text=f"{waiting} shot(s) of an unfinished batch not sent", icon="INFO")
            row.operator("movie_director.continue_batch", icon="PLAY")
        else:
            row.label(text=f"Sending: {waiting} shot(s) to go", icon="EXPORT")
    not_generated = counts.get("not_generated", 0)
    row = layout.row(align=True)
    row.scale_y = 1.3
    for which, text, icon in (
        ("ALL", "Generate All", "RENDER_ANIMATION"),
        ("SELECTED", "Selected", "CHECKBOX_HLT"),
        ("STALE", "Stale", "FILE_REFRESH"),
    ):
        op = row.operator("movie_director.generate_shots", text=text, icon=icon)
        op.which = which
    op = row.operator("movie_director.cancel_shots", text="", icon="CANCEL")
    op.which = "ALL"
    if not_generated and not_generated < len(s.shots):
        op = layout.operator(
            "movie_director.generate_shots", text=f"Generate the {not_generated} not generated", icon="ADD"
        )
        op.which = "NEW"
    layout.prop(s, "seed_policy")
    row = layout.row(align=True)
    row.operator("movie_director.contact_sheet", icon="IMAGE_REFERENCE")
    row.operator("movie_director.export_cut", icon="EXPORT")
    if s.last_export:
        layout.label(text=fmt.clip(f"Written: {s.last_export}", 60), icon="FILE_TICK")
    if not 0 <= s.active_shot < len(s.shots):
        return
    shot = s.shots[s.active_shot]
    draw_shot(layout.box(), context, scene, shot, model)


def draw_writer(box, context, s, model) -> None:
    """ "Write shots": logline in, the answer streaming in, then an editable shot list that becomes markers."""
    box.prop(s, "logline", text="", icon="TEXT")
    prefs = preferences.get(context)
    row = box.row(align=True)
    if prefs is not None:
        row.prop_search(s, "writer_service", prefs, "services", text="", icon="LINKED")
    row.prop(s, "writer_model", text="")
    if shotlist.writing(model, s):
        text = model.texts.get(s.writer_job, "")
        row = box.row(align=True)
        row.label(text=f"Writing… {len(text)} characters", icon="SORTTIME")
        row.operator("movie_director.cancel_writing", text="", icon="CANCEL")
        if text:
            wrapped(box, text)
        return
    box.operator("movie_director.write_shots", icon="GREASEPENCIL")
    view = model.jobs.get(s.writer_job) if (model is not None and s.writer_job) else None
    if view is not None and view.state == "failed" and view.error:
        wrapped(box, f"Writing failed: {view.error.get('message') or view.error.get('code')}", alert=True)
    if s.written:
        box.prop(s, "written", text="")
        box.operator("movie_director.shots_from_text", icon="MARKER_HLT")


def draw_input(layout, owner) -> None:
    """Where a workflow's image input comes from (the sequence's choice, or a shot's own)."""
    row = layout.row(align=True)
    row.prop(owner, "input_source")
    if owner.input_source == "CAMERA" and hasattr(owner, "input_render"):
        row.prop(owner, "input_render", text="")
    if owner.input_source == "PREVIOUS":
        layout.label(text="Waits for the previous shot; uses its last frame", icon="LINKED")
    if owner.input_source in ("FILE", "STRIP"):
        layout.prop(owner, "input_path", text="Image/movie file" if owner.input_source == "FILE" else "Strip")
    if hasattr(owner, "reference_images"):  # the sequence's: reused by every shot
        layout.prop(owner, "reference_images")


def draw_shot(box, context, scene, shot, model) -> None:
    status = shot_status(shot, model, scene)
    row = box.row(align=True)
    row.label(text=f"{shot.name} · frames {shot.frame_start}–{shot.frame_end} ({shot.frames})", icon="SEQUENCE")
    op = row.operator("movie_director.generate_shots", text="", icon="RENDER_STILL")
    op.which, op.shot_id = "ONE", shot.shot_id
    if shotlist.active(model, shot):
        op = row.operator("movie_director.cancel_shots", text="", icon="X")
        op.which, op.shot_id = "ONE", shot.shot_id
    if status.progress is not None:
        _progress(box, status.progress, status.text)
    elif status.state == "failed":
        wrapped(box, status.text, alert=True, icon="ERROR")
        op = box.operator("movie_director.copy_error", icon="COPYDOWN")
        view = model.jobs.get(shot.job_id) if (model is not None and shot.job_id) else None
        # A shot refused before sending has no job of its own: its error is filed under the shot id.
        op.source = shot.job_id if view is not None and view.state == "failed" else shot.shot_id
    else:
        box.label(text=status.text, icon=SHOT_ICONS.get(status.state, "DOT"))
    col = box.column()
    col.use_property_split = True
    col.use_property_decorate = False
    col.prop(shot, "prompt")
    col.prop(shot, "negative")
    col.prop(shot, "seed", text="Seed (empty: sequence's)")
    if shot.seed_problem:
        wrapped(col, shot.seed_problem, alert=True)
    col.prop(shot, "workflow")
    prefs = preferences.get(context)
    service_field(col, shot, prefs)
    col.prop(shot, "channel", text="Channel (0: first free)")
    col.prop(shot, "camera")
    draw_input(col, shot)
    col.prop(shot, "extra")
    if prefs is not None and any(svc.kind in preferences.GRADIO_KINDS for svc in prefs.services):
        col.prop(shot, "gradio_api", text="Gradio endpoint")
        col.prop(shot, "gradio_inputs")
    if len(shot.takes):
        box.label(text="Takes")
        for index, take in enumerate(shot.takes):
            line = box.row(align=True)
            active = index == shot.active_take
            style = fmt.job_style(take.state)
            line.label(
                text=f"Take {take.number} · seed {take.seed} · {style.label}",
                icon="RADIOBUT_ON" if active else "RADIOBUT_OFF",
            )
            if take.state == "completed" and not active:
                op = line.operator("movie_director.use_take", text="Use", icon="FILE_REFRESH")
                op.shot_id, op.index = shot.shot_id, index
            if take.state == "completed":
                for verdict, icon in (("approved", "CHECKMARK"), ("rejected", "X")):
                    op = line.operator("movie_director.review_take", text="", icon=icon, depress=take.review == verdict)
                    op.shot_id, op.index, op.verdict = shot.shot_id, index, verdict


def draw_preview(layout, context) -> None:
    rt = bridge.runtime()
    model = bridge.current_model()
    image = bpy.data.images.get(bridge.PREVIEW_IMAGE)
    if model is None or model.preview is None or image is None:
        layout.label(text="Previews appear here while a job runs")
        return
    if rt is not None and rt.preview_icon:
        layout.template_icon(icon_value=rt.preview_icon, scale=8.0)
    layout.label(text=f"{image.size[0]} × {image.size[1]} · job {fmt.short_id(model.preview.job_id or '')}")


def draw_health(layout, context) -> None:
    model = bridge.current_model()
    if model is None or not model.services:
        layout.label(text="No server")
        return
    now = time.time()
    for view in model.services.values():
        col = layout.column(align=True)
        col.label(text=view.name, icon=fmt.service_style(view.state, view.blocked).icon)
        col.label(text=f"Ping p50 {fmt.latency(view.latency_p50_ms)} · p99 {fmt.latency(view.latency_p99_ms)}")
        col.label(text=f"HTTP p50 {fmt.latency(view.http_p50_ms)} · uptime {fmt.percent(view.uptime_percent)}")
        col.label(text=f"Drops {view.drops} · reconnects {view.reconnects}")
        if view.last_error:
            row = col.row()
            row.alert = True
            row.label(text=fmt.clip(view.last_error, 60))
        for err in view.recent_errors[-3:]:
            col.label(text=fmt.clip(err, 60), icon="DOT")
    errors = list(model.errors)[-3:]
    if errors:
        layout.label(text="Recent problems")
        for entry in reversed(errors):
            row = layout.row()
            row.label(text=f"{fmt.ago(entry.time, now)}: {fmt.clip(entry.message, 50)}", icon="ERROR")
        layout.operator("movie_director.copy_error", icon="COPYDOWN")


class _Sidebar:
    bl_region_type = "UI"
    bl_category = CATEGORY


def _make_panels(space: str, prefix: str) -> list[type]:
    main_id = f"MOVIE_DIRECTOR_PT_{prefix}_status"

    def panel(suffix: str, label: str, draw_fn, parent: str | None = None, closed: bool = False) -> type:
        attrs = {
            "bl_idname": f"MOVIE_DIRECTOR_PT_{prefix}_{suffix}",
            "bl_label": label,
            "bl_space_type": space,
            "draw": lambda self, context: draw_fn(self.layout, context),
        }
        if parent:
            attrs["bl_parent_id"] = parent
        if closed:
            attrs["bl_options"] = {"DEFAULT_CLOSED"}
        return type(attrs["bl_idname"], (_Sidebar, Panel), attrs)

    return [
        panel("status", "Movie Director", draw_status),
        panel("shots", "Shots", draw_shots, main_id),
        panel("generate", "Sequence Defaults", draw_generate, main_id),
        panel("jobs", "Jobs", draw_jobs, main_id),
        panel("preview", "Preview", draw_preview, main_id),
        panel("health", "Health", draw_health, main_id, closed=True),
    ]


classes = (MOVIE_DIRECTOR_UL_shots,) + tuple(
    _make_panels("VIEW_3D", "view3d") + _make_panels("SEQUENCE_EDITOR", "sequencer")
)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
