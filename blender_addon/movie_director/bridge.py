"""The one timer between Blender and the Hub.

``start()`` (from ``register()``) opens the hub, applies the preferences and arms one persistent
``bpy.app.timers`` callback, :func:`timer_callback`, re-armed by a ``load_post`` handler. Each tick drains
``Hub.poll()`` into the view-model (``hub_owner.tick``), tags for redraw only the regions showing what changed,
refreshes the preview image, and records finished jobs in their scenes (importing results when asked).
``stop()`` (from ``unregister()``) removes the timer and the handler and closes the hub: nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback

import bpy
from bpy.app.handlers import persistent

from . import hub_owner, preferences, takes
from . import runtime as runtime_mod
from . import state as st

PREVIEW_IMAGE = "Director Link Preview"
PREVIEW_MIN_INTERVAL = 0.2  # seconds between preview image reloads

# Which editors show which part of the model (their sidebar, or the whole editor for previews).
_AREA_TYPES = {
    st.SERVICES: ("VIEW_3D", "SEQUENCE_EDITOR", "PREFERENCES"),
    st.JOBS: ("VIEW_3D", "SEQUENCE_EDITOR"),
    st.HEALTH: ("VIEW_3D", "SEQUENCE_EDITOR"),
    st.ERRORS: ("VIEW_3D", "SEQUENCE_EDITOR"),
    st.PREVIEW: ("VIEW_3D", "SEQUENCE_EDITOR", "IMAGE_EDITOR"),
}


# The runtime and its slot live in ``runtime`` (shared with ``preferences`` without an import cycle); these names
# stay here for the panels and operators that ask the bridge.
Runtime = runtime_mod.Runtime
current_hub = runtime_mod.current_hub
current_model = runtime_mod.current_model
request_sync = runtime_mod.request_sync


def runtime() -> Runtime | None:
    return runtime_mod.get()


def resolve_output_dir(prefs) -> str:
    raw = prefs.output_dir if prefs is not None else "//director_link/"
    # While Blender starts, add-ons register with a restricted ``bpy.data`` (no filepath): use the temp folder
    # until the .blend is loaded (``load_post`` then moves the hub next to it when nothing is running).
    blend = getattr(bpy.data, "filepath", "")
    if raw.startswith("//"):
        if blend:
            # Resolved by hand: bpy.path.abspath reads bpy.data.filepath, which register() may not be allowed to.
            return os.path.normpath(os.path.join(os.path.dirname(blend), raw[2:]))
        # Unsaved: a session folder in the temp directory (moved next to the .blend on the first save).
        return takes.unsaved_output_dir()
    # Not relative to the .blend: no need to ask bpy.data (which may be restricted right now).
    return os.path.normpath(os.path.expanduser(raw))


def hub_options(prefs) -> dict:
    """The hub's options from the preferences: the heartbeat, and in studio mode the studio server's address."""
    if prefs is None:
        return {}
    return {"heartbeat": float(prefs.heartbeat), **prefs.studio_options()}


def start() -> None:
    """Opens the hub and arms the timer (called by ``register()``)."""
    if runtime_mod.get() is not None:
        stop()
    rt = Runtime()
    prefs = preferences.get()
    try:
        rt.owner.open(resolve_output_dir(prefs), **hub_options(prefs))
    except Exception as exc:  # e.g. a studio address that is not one: said in the panel, direct mode meanwhile
        rt.model.add_error("addon", getattr(exc, "code", "open_failed"), str(exc))
        rt.owner.open(resolve_output_dir(prefs), **hub_options(None))
    runtime_mod.replace(rt)
    _arm_timer()
    if _on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_on_load_post)
    if _on_save_pre not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(_on_save_pre)
    if _on_save_post not in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.append(_on_save_post)


def stop() -> None:
    """Removes the timer and the handler and closes the hub (called by ``unregister()``); idempotent."""
    rt = runtime_mod.replace(None)
    if bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.unregister(timer_callback)
    while _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    while _on_save_pre in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_on_save_pre)
    while _on_save_post in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.remove(_on_save_post)
    if rt is not None:
        rt.owner.close()
        rt.converter.join()
    # The preview's scratch file is this session's only: it does not outlive the add-on (one folder per process
    # was left in the temp directory before).
    shutil.rmtree(preview_folder(), ignore_errors=True)


def _arm_timer() -> None:
    if not bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.register(timer_callback, first_interval=0.0, persistent=True)


@persistent
def _on_load_post(*_args) -> None:
    """A .blend was opened: keep ticking, and find the jobs its scenes remember."""
    if runtime_mod.get() is None:
        return
    _arm_timer()
    adopt_scene_jobs()
    from . import shotlist

    rt = runtime_mod.get()
    rt.workflows = None
    if shotlist.has_waiting():
        # A batch the last session did not finish sending: offered to continue (Continue Batch), not sent by itself.
        rt.batch_pending = rt.batch_paused = True
    request_sync()


@persistent
def _on_save_pre(*args) -> None:
    """Before a .blend is written: results made while it had no path move next to it, so it saves references into
    its own folder (never into the temp directory)."""
    rt = runtime_mod.get()
    path = args[0] if args and isinstance(args[0], str) else bpy.data.filepath
    if rt is None or not path:
        return
    try:
        from . import shotlist

        for scene in bpy.data.scenes:  # the saved file shows each shot's state as of now after a restart
            shotlist.refresh_states(scene, rt.model)
        relocate_unsaved(rt, path)
    except Exception as exc:  # a save must never fail because of the add-on
        rt.model.add_error("addon", "relocate_failed", f"results could not be moved next to the .blend: {exc}")


@persistent
def _on_save_post(*_args) -> None:
    """After a save the output folder is next to the .blend: the hub follows when nothing is running."""
    if runtime_mod.get() is not None:
        request_sync()


def relocate_unsaved(rt: Runtime, blend_path: str) -> list[str]:
    """Moves the finished takes in the unsaved session folder to ``<.blend folder>/<output folder>`` and repoints
    every reference (job records, takes, strips, images). Running jobs stay until they finish (then moved too).
    Returns the problems (a file that cannot be moved stays where it is: nothing is lost)."""
    old_root = takes.unsaved_output_dir()
    prefs = preferences.get()
    raw = prefs.output_dir if prefs is not None else "//director_link/"
    if not raw.startswith("//") or not os.path.isdir(old_root):
        return []
    new_root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(blend_path)), raw[2:]))
    active = {j.id for j in rt.model.active_jobs()}
    problems: list[str] = []
    moved: list[str] = []
    for group in sorted(os.listdir(old_root)):
        group_dir = os.path.join(old_root, group)
        if not os.path.isdir(group_dir):
            continue
        for job_id in sorted(os.listdir(group_dir)):
            if job_id in active:
                continue
            src = os.path.join(group_dir, job_id)
            problems += takes.move_tree(src, takes.rebase(src, old_root, new_root))
            moved.append(src)
    if moved:
        repoint(old_root, new_root)
    for problem in problems:
        rt.model.add_error("addon", "relocate_failed", problem)
    return problems


def repoint(old_root: str, new_root: str) -> None:
    """Every path under ``old_root`` the .blend refers to, moved under ``new_root``."""
    from . import importer

    def move(path: str) -> str:
        return takes.rebase(path, old_root, new_root)

    def lines(text: str) -> str:
        return "\n".join(move(p) for p in text.splitlines())

    for scene in bpy.data.scenes:
        s = scene.movie_director
        for record in s.jobs:
            record.paths = lines(record.paths)
        for shot in s.shots:
            for take in shot.takes:
                take.folder = move(take.folder)
                take.paths = lines(take.paths)
        for strip in importer.all_strips(scene):
            if strip.type == "IMAGE":
                strip.directory = move(bpy.path.abspath(strip.directory).rstrip("/\\")) + os.sep
            elif strip.type == "MOVIE":
                strip.filepath = move(bpy.path.abspath(strip.filepath))
            elif strip.type == "SOUND" and strip.sound is not None:
                strip.sound.filepath = move(bpy.path.abspath(strip.sound.filepath))
    for image in bpy.data.images:
        if image.filepath and not image.packed_file:
            image.filepath = move(bpy.path.abspath(image.filepath))
    rt = runtime_mod.get()
    if rt is not None:
        for view in rt.model.jobs.values():
            for out in view.outputs:
                if out.get("path"):
                    out["path"] = move(str(out["path"]))


def adopt_scene_jobs() -> set[str]:
    """Follows the jobs stored in the open .blend's scenes: known to this hub, or tracked on their server by id."""
    rt = runtime_mod.get()
    if rt is None or not rt.owner.is_open:
        return set()
    changed: set[str] = set()
    hub = rt.owner.hub
    prefs = preferences.get()
    configured = {svc.name for svc in prefs.services} if prefs is not None else set()
    for scene in bpy.data.scenes:
        for record in scene.movie_director.jobs:
            if record.name in rt.model.jobs:
                continue
            job = hub.job(record.name)
            if job is not None:
                changed |= rt.model.track(record.name, record.service, record.tag or None, state=job.state)
                info = job.info() or {}
                view = rt.model.jobs[record.name]
                view.queue_position = info.get("queue_position")
                view.node_id = info.get("current_node")
                view.node_type = info.get("current_node_type")
                view.percentage = float(info.get("progress") or 0.0)
                view.eta_seconds = info.get("eta_seconds")
                if job.state in st.TERMINAL_STATES and not record.imported:
                    # Its end was taken by a model that is gone: finish it from the hub's record (outputs are
                    # dicts with "path", as in JobCompleted).
                    view.outputs = [o if isinstance(o, dict) else {"path": str(o)} for o in info.get("outputs") or ()]
                    rt.model._finished.append(record.name)
            elif record.state in st.ACTIVE_STATES and (rt.owner.studio or record.service in hub.services()):
                # A new Blender session: ask the server where the job is; its result arrives like any other. A record
                # still "pending" was never confirmed on the server: if the server does not know it, it was never
                # sent (it fails "not_posted"), not lost by a restart.
                posted = record.state != "pending"
                if rt.owner.studio:  # the server's id for the job travels with the .blend
                    hub.track(
                        record.service,
                        record.name,
                        tag=record.shot_id or record.tag or None,
                        posted=posted,
                        remote=record.remote_id or None,
                    )
                else:
                    hub.track(record.service, record.name, tag=record.tag or None, posted=posted)
                changed |= rt.model.track(record.name, record.service, record.tag or None, state="pending")
            elif record.state in st.ACTIVE_STATES and record.service not in configured:
                record.state = "unknown"
                record.message = f"its server {record.service!r} is not configured in the preferences"
            # Configured but not added to the hub yet: the next service sync adopts it.
    return changed


def timer_callback() -> float | None:
    """The one timer: drains events, redraws what changed, handles finished jobs; returns the next interval."""
    rt = runtime_mod.get()
    if rt is None:
        return None  # disabled: the timer removes itself
    try:
        rt.ticks += 1
        prefs = preferences.get()
        if prefs is not None:
            rt.pacing.active = prefs.active_interval
            rt.pacing.idle_max = prefs.idle_interval
        if rt.needs_sync and prefs is not None:
            rt.needs_sync = False
            sync_services(rt, prefs)
            adopt_scene_jobs()
        interval = hub_owner.tick(
            rt.owner.hub, rt.model, rt.pacing, redraw=lambda areas: tag_redraw(rt, areas), discovery=rt.owner.discovery
        )
        _fetch_schemas(rt)
        if rt.batch_pending and not rt.batch_paused:
            from . import shotlist

            sent, more = shotlist.send_waiting(rt)
            if sent:
                tag_redraw(rt, {st.JOBS})
            if more:
                interval = 0.0  # the rest of the batch on the next tick, at once
        posted = rt.model.take_posted()
        finished = rt.model.take_finished()
        if posted or finished:
            from . import importer, shotlist

            importer.record_posted(posted, rt.owner.hub)
            if finished and bpy.data.filepath and rt.owner.hub.output_dir == takes.unsaved_output_dir():
                relocate_unsaved(rt, bpy.data.filepath)  # finished after the first save: join the others
            importer.record_finished(rt.model, finished)
            for scene in bpy.data.scenes:
                shotlist.refresh_states(scene, rt.model)
            if rt.model.texts and shotlist.finish_writing(rt.model, finished):
                tag_redraw(rt, {st.JOBS})
            show_final(rt, finished)
        converted = rt.converter.collect()
        if converted:
            from . import importer

            # Their animated files are split now: the takes land (finish_take finds the frames ready).
            for job_id in converted:
                scene, record = props_find_job(job_id)
                view = rt.model.jobs.get(job_id)
                if record is not None and record.shot_id:
                    importer.finish_take(scene, record, view.outputs if view is not None else [], rt.model)
            tag_redraw(rt, {st.JOBS})
        if rt.model.preview is not None and rt.model.preview.seq != rt.preview_seq:
            if time.monotonic() - rt.preview_loaded_at >= PREVIEW_MIN_INTERVAL:
                update_preview_image(rt)
            else:
                interval = min(interval, PREVIEW_MIN_INTERVAL)
        return interval
    except Exception:  # never let an exception kill the one timer
        text = traceback.format_exc()
        if text != rt.last_tick_error:
            rt.last_tick_error = text
            print("movie_director: timer tick failed\n" + text, file=sys.stderr)
            rt.model.add_error("addon", "tick_failed", text.strip().splitlines()[-1], traceback=text)
        return 1.0


def _fetch_schemas(rt: Runtime) -> None:
    """Each connected ComfyUI's node list is fetched once in the background (ranges of the workflow's inputs, UI
    format conversion), so Generate finds it ready."""
    schemas = rt.owner.schemas
    for name in rt.owner.services():
        view = rt.model.services.get(name)
        if view is None or view.state != "connected" or view.kind != "comfyui":
            continue
        if schemas.error(name) is None:
            schemas.get(rt.owner.hub, name)


def props_find_job(job_id: str):
    from . import props

    return props.find_job(job_id)


def sync_services(rt: Runtime, prefs) -> set[str]:
    if not rt.owner.is_open:
        return set()
    preferences.ensure_default_service(prefs)
    # The hub writes into one folder for its lifetime: when the folder changes (another .blend, another
    # preference) and nothing is running, the hub is re-created there.
    # Switching between direct and studio mode re-creates the hub the same way (the shots live in the scene and
    # are kept; running jobs finish where they were sent first).
    wanted = {"output_dir": resolve_output_dir(prefs), **hub_options(prefs)}
    if rt.owner.options != wanted and not rt.model.busy:
        rt.owner.close()
        try:
            rt.owner.open(**wanted)
        except Exception as exc:
            rt.model.add_error("addon", getattr(exc, "code", "open_failed"), str(exc))
            rt.owner.open(**{"output_dir": wanted["output_dir"], **hub_options(None), "heartbeat": prefs.heartbeat})
        rt.workflows = None  # resolved against the other mode's node lists
        rt.owner.schemas.forget()
        if not rt.owner.studio:
            for name in [n for n, v in rt.model.services.items() if v.kind == "studio"]:
                rt.model.drop_service(name)
        else:  # the studio's list replaces the preferences' in the panel
            for name in list(rt.model.services):
                rt.model.drop_service(name)
        tag_redraw(rt, {st.SERVICES})
    changed = rt.owner.sync_services(preferences.service_specs(prefs), rt.model, preferences.online_access())
    if (
        prefs.auto_discover
        and not rt.started_discovery
        and not any(v.state == "connected" for v in rt.model.services.values())
    ):
        rt.started_discovery = True
        start_discovery(rt, prefs)
    if changed:
        tag_redraw(rt, changed)
    return changed


def start_discovery(rt: Runtime, prefs) -> bool:
    addresses = [a.strip() for a in prefs.discovery_addresses.split(",") if a.strip()]
    return rt.owner.discovery.start(rt.owner.hub, addresses[:16], 1.0)


def tag_redraw(rt: Runtime, areas: set[str]) -> None:
    """Tags for redraw only the editors that show ``areas`` (the sidebar region where that is all they show)."""
    types: set[str] = set()
    for area_name in areas:
        rt.redraws[area_name] = rt.redraws.get(area_name, 0) + 1
        types.update(_AREA_TYPES.get(area_name, ()))
    whole_area = st.PREVIEW in areas
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type not in types:
                continue
            if whole_area or area.type == "PREFERENCES":
                area.tag_redraw()
                continue
            for region in area.regions:
                if region.type == "UI":
                    region.tag_redraw()


def show_final(rt: Runtime, job_ids: list[str]) -> None:
    """The Preview shows a finished job's image, not the last noisy step: the newest completed job's first still
    becomes the preview (through the same image datablock)."""
    from . import media

    for job_id in reversed(job_ids):
        view = rt.model.jobs.get(job_id)
        if view is None or view.state != "completed":
            continue
        still = next(
            (p for p in view.paths if media.media_kind(p) == "image" and media.animated_frames_hint(p) == 1), None
        )
        if still is None:
            continue
        try:
            with open(still, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        seq = (rt.model.preview.seq if rt.model.preview is not None else 0) + 1
        fmt = "png" if data.startswith(b"\x89PNG") else "jpeg"
        rt.model.preview = st.PreviewView(job_id, None, data, fmt, seq)
        rt.preview_loaded_at = 0.0  # shown at once, not rate-limited like the steps
        return


def preview_folder() -> str:
    return os.path.join(tempfile.gettempdir(), f"movie_director_preview_{os.getpid()}")


def update_preview_image(rt: Runtime) -> None:
    """Shows the latest preview as the image datablock ``Director Link Preview``."""
    preview = rt.model.preview
    if preview is None:
        return
    rt.preview_seq = preview.seq
    rt.preview_loaded_at = time.monotonic()
    folder = preview_folder()
    os.makedirs(folder, exist_ok=True)
    ext = "png" if preview.format == "png" else "jpg"
    path = os.path.join(folder, f"preview.{ext}")
    with open(path, "wb") as fh:
        fh.write(preview.data)
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(path)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = path
        image.reload()
    try:
        image.preview_ensure()
        image.preview.reload()
        rt.preview_icon = image.preview.icon_id
    except Exception:
        rt.preview_icon = 0  # no icon previews here (e.g. headless); the image datablock is still updated
