"""Sidebar panels (3D View and Sequencer, tab "Director"): they draw from the view-model only, never the network.

The same panel bodies are registered for both editors; ``draw_*`` functions take a layout, so tests can run them
against a recording stand-in.
"""

from __future__ import annotations

import time

import bpy
from bpy.types import Panel

from . import bridge, preferences, props
from . import format as fmt

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


def draw_generate(layout, context) -> None:
    scene = context.scene
    s = props.settings(scene)
    prefs = preferences.get(context)
    layout.use_property_split = True
    layout.use_property_decorate = False
    if prefs is not None:
        layout.prop_search(s, "service", prefs, "services", icon="LINKED")
    else:
        layout.prop(s, "service")
    layout.prop(s, "workflow")
    layout.prop(s, "prompt")
    layout.prop(s, "negative")
    row = layout.row(align=True)
    row.prop(s, "seed")
    row.prop(s, "randomize_seed", text="", icon="FILE_REFRESH")
    if s.randomize_seed and s.last_seed:
        layout.label(text=f"Last seed: {s.last_seed}")
    layout.prop(s, "steps")
    layout.prop(s, "cfg")
    layout.prop(s, "use_scene_resolution")
    width, height = props.size_for(scene)
    if s.use_scene_resolution:
        layout.label(text=f"Size: {width} × {height} (render settings)")
    else:
        col = layout.column(align=True)
        col.prop(s, "width")
        col.prop(s, "height")
    layout.prop(s, "use_scene_frames")
    if s.use_scene_frames:
        layout.label(text=f"Frames: {props.frames_for(scene)} at {props.fps_for(scene):g} fps")
    else:
        layout.prop(s, "frames")
    layout.prop(s, "shot_source")
    layout.prop(s, "target")
    if s.target == "SEQUENCER":
        layout.prop(s, "channel")
    layout.prop(s, "auto_import")
    row = layout.row()
    row.scale_y = 1.4
    row.operator("movie_director.generate", icon="RENDER_STILL")


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
            err = box.row()
            err.alert = True
            err.label(text=fmt.clip(message or "failed", 60))
            op = box.operator("movie_director.copy_error", icon="COPYDOWN")
            op.source = record.name
        if state == "completed" and record.paths:
            row = box.row(align=True)
            op = row.operator(
                "movie_director.import_result", text="Import again" if record.imported else "Import", icon="IMPORT"
            )
            op.job_id = record.name
            op = row.operator("movie_director.open_output", text="", icon="FILE_FOLDER")
            op.job_id = record.name
        if state == "unknown" and record.message:
            box.label(text=fmt.clip(record.message, 60), icon="INFO")


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
        panel("generate", "Generate", draw_generate, main_id),
        panel("jobs", "Jobs", draw_jobs, main_id),
        panel("preview", "Preview", draw_preview, main_id),
        panel("health", "Health", draw_health, main_id, closed=True),
    ]


classes = tuple(_make_panels("VIEW_3D", "view3d") + _make_panels("SEQUENCE_EDITOR", "sequencer"))


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
