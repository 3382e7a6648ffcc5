"""Operators: each one either changes the model's inputs (submit, cancel, reconnect, discover) and returns at
once, or works on files already on disk (import, open folder). ``poll()`` says why an operator is disabled."""

from __future__ import annotations

import os
import secrets
import time

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy.types import Operator

from . import bridge, importer, preferences, props, redact, shotlist, takes, writer
from . import params as prm
from . import shots as sh
from . import state as st


def _running(cls) -> bool:
    if bridge.current_hub() is None:
        cls.poll_message_set("The Movie Director add-on is not running")
        return False
    return True


def _versions() -> dict[str, str]:
    import director_link

    return {"director_link": director_link.__version__, "blender": bpy.app.version_string}


class MOVIE_DIRECTOR_OT_refresh(Operator):
    """Apply the server settings from the preferences and refresh the status now"""

    bl_idname = "movie_director.refresh"
    bl_label = "Refresh"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return _running(cls)

    def execute(self, context):
        rt = bridge.runtime()
        prefs = preferences.get(context)
        if prefs is not None:
            bridge.sync_services(rt, prefs)
        rt.pacing.last_snapshot = float("-inf")
        bridge.request_sync()
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_discover(Operator):
    """Look for ComfyUI servers on this machine (in the background; results appear below)"""

    bl_idname = "movie_director.discover"
    bl_label = "Discover"

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        if bridge.runtime().owner.discovery.running:
            cls.poll_message_set("Already looking for servers")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        prefs = preferences.get(context)
        if prefs is None or not bridge.start_discovery(rt, prefs):
            self.report({"WARNING"}, "Discovery is already running")
            return {"CANCELLED"}
        rt.model.discovering = True
        rt.pacing.interval = rt.pacing.active
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_add_service(Operator):
    """Add a server to the preferences"""

    bl_idname = "movie_director.add_service"
    bl_label = "Add Server"
    bl_options = {"INTERNAL"}

    url: StringProperty(name="Address", default="127.0.0.1:8188")

    @classmethod
    def poll(cls, context):
        if preferences.get(context) is None:
            cls.poll_message_set("The Movie Director add-on is not enabled")
            return False
        return True

    def execute(self, context):
        prefs = preferences.get(context)
        url = self.url.strip() or "127.0.0.1:8188"
        for svc in prefs.services:
            if svc.url.strip().rstrip("/") == url.rstrip("/"):
                svc.enabled = True
                self.report({"INFO"}, f"{url} is already set up as '{svc.name}'")
                return {"FINISHED"}
        names = {s.name for s in prefs.services}
        name = (
            "local" if "local" not in names else next(f"server{i}" for i in range(2, 1000) if f"server{i}" not in names)
        )
        svc = prefs.services.add()
        svc.name = name
        svc.url = url
        scene_settings = props.settings(context.scene)
        if not scene_settings.service:
            scene_settings.service = name
        bridge.request_sync()
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_remove_service(Operator):
    """Remove this server from the preferences"""

    bl_idname = "movie_director.remove_service"
    bl_label = "Remove Server"
    bl_options = {"INTERNAL"}

    index: IntProperty(default=-1)

    @classmethod
    def poll(cls, context):
        prefs = preferences.get(context)
        if prefs is None or len(prefs.services) == 0:
            cls.poll_message_set("No server is set up")
            return False
        return True

    def execute(self, context):
        prefs = preferences.get(context)
        if not 0 <= self.index < len(prefs.services):
            return {"CANCELLED"}
        prefs.services.remove(self.index)
        bridge.request_sync()
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_reconnect(Operator):
    """Drop the connection to this server and open it again now"""

    bl_idname = "movie_director.reconnect"
    bl_label = "Reconnect"

    service: StringProperty(name="Service")

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        if not bridge.runtime().owner.services():
            cls.poll_message_set("No server is connected; set one up in the preferences")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        names = [self.service] if self.service else list(rt.owner.services())
        for name in names:
            if name not in rt.owner.services():
                self.report({"WARNING"}, f"'{name}' is not connected (see the preferences)")
                return {"CANCELLED"}
            rt.owner.hub.reconnect(name)
        rt.pacing.interval = rt.pacing.active
        return {"FINISHED"}


def _shot_tag(context) -> str:
    scene = context.scene
    s = props.settings(scene)
    if s.shot_source == "MARKER":
        markers = [m for m in scene.timeline_markers if m.frame <= scene.frame_current]
        if markers:
            return max(markers, key=lambda m: m.frame).name
    elif s.shot_source == "STRIP" and scene.sequence_editor is not None:
        strip = scene.sequence_editor.active_strip
        if strip is not None:
            return strip.name
    return scene.name


class MOVIE_DIRECTOR_OT_generate(Operator):
    """Send the workflow with this scene's settings to the server (returns at once; progress shows below)"""

    bl_idname = "movie_director.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        s = props.settings(context.scene)
        rt = bridge.runtime()
        if not rt.owner.services():
            view = next((v for v in rt.model.services.values() if v.blocked), None)
            cls.poll_message_set(
                f"'{view.name}' cannot be used: {view.blocked}" if view else "Set up a server in the preferences first"
            )
            return False
        if s.service and s.service not in rt.owner.services():
            view = rt.model.services.get(s.service)
            why = view.blocked if view is not None and view.blocked else "it is not set up or not enabled"
            cls.poll_message_set(f"Server '{s.service}' cannot be used: {why}")
            return False
        if not s.workflow:
            cls.poll_message_set("Choose a workflow file (ComfyUI API format)")
            return False
        if not os.path.isfile(bpy.path.abspath(s.workflow)):
            cls.poll_message_set("The workflow file does not exist")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        scene = context.scene
        s = props.settings(scene)
        service = s.service or shotlist.default_service(rt)
        try:
            wf, resolved = shotlist.prepared(rt).get(bpy.path.abspath(s.workflow), service)
            seed = secrets.randbits(64) if s.randomize_seed else sh.parse_seed(s.seed) or 0
        except (shotlist.SubmitProblem, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        width, height = props.size_for(scene)
        frames = props.frames_for(scene)
        settings = sh.Settings(
            prompt=s.prompt or None,
            negative=s.negative or None,
            seed=seed,
            steps=s.steps or None,
            cfg=s.cfg or None,
            width=width,
            height=height,
            frames=frames,
            fps=props.fps_for(scene),
            random_seed=s.randomize_seed,
        )
        try:
            params, _unused = prm.build(resolved, settings)
        except prm.WorkflowProblem as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        seed = next((params[t.selector] for t in resolved.targets.get("seed") or [] if t.selector in params), seed)
        tag = bpy.path.clean_name(_shot_tag(context)) or "shot"
        try:
            job = rt.owner.hub.submit(service, wf, params=params, tag=tag)
        except Exception as exc:
            rt.model.add_error(service, getattr(exc, "code", "submit_failed"), str(exc))
            self.report({"ERROR"}, f"Could not submit: {exc}")
            return {"CANCELLED"}
        # Lock where the result lands now, so editing the timeline meanwhile does not move it; the channel (when
        # automatic) is chosen on arrival, over the result's own range only.
        record = s.jobs.add()
        record.name = job.id
        record.service = service
        record.tag = tag
        # "pending", not job.state: a fast job may be done already; its end (with its files) comes as an event.
        record.state = "pending"
        record.frame = scene.frame_current
        record.frames = frames if resolved.is_video else 1
        record.channel = s.channel
        record.target = s.target
        record.submitted_at = time.time()
        s.last_seed = str(seed)
        s.active_job = len(s.jobs) - 1
        bridge.tag_redraw(rt, rt.model.track(job.id, service, tag, state="pending"))
        rt.pacing.interval = rt.pacing.active
        self.report({"INFO"}, f"Submitted {tag} to {service}")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_cancel(Operator):
    """Cancel this job on the server (only this one)"""

    bl_idname = "movie_director.cancel"
    bl_label = "Cancel Job"

    job_id: StringProperty(name="Job")

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        if not bridge.current_model().active_jobs():
            cls.poll_message_set("No job is running")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        view = rt.model.jobs.get(self.job_id)
        if view is None or view.state not in st.ACTIVE_STATES:
            self.report({"WARNING"}, "That job is not running")
            return {"CANCELLED"}
        try:
            rt.owner.hub.cancel(self.job_id)
        except Exception as exc:
            self.report({"ERROR"}, f"Could not cancel: {exc}")
            return {"CANCELLED"}
        view.cancel_requested = True
        bridge.tag_redraw(rt, {st.JOBS})
        return {"FINISHED"}


def _finished_record(job_id: str):
    scene, record = props.find_job(job_id)
    return (scene, record) if record is not None and record.state == "completed" and record.paths else (None, None)


class MOVIE_DIRECTOR_OT_import_result(Operator):
    """Import this job's result: images as images, image sequences and videos as strips, audio as sound strips"""

    bl_idname = "movie_director.import_result"
    bl_label = "Import Result"

    job_id: StringProperty(name="Job")

    @classmethod
    def poll(cls, context):
        if not any(r.state == "completed" and r.paths for r in props.settings(context.scene).jobs):
            cls.poll_message_set("No finished job with results in this scene")
            return False
        return True

    def execute(self, context):
        scene, record = _finished_record(self.job_id)
        if record is None:
            self.report({"WARNING"}, "That job has no results (yet)")
            return {"CANCELLED"}
        view = bridge.current_model().jobs.get(self.job_id) if bridge.current_model() else None
        missing = [p for p in record.paths.splitlines() if p and not os.path.isfile(p)]
        if missing:
            self.report({"ERROR"}, f"Result file missing: {missing[0]}")
            return {"CANCELLED"}
        created = importer.import_job(scene, record, view.outputs if view is not None else [])
        self.report({"INFO"}, f"Imported {len(created)} item(s)")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_open_output(Operator):
    """Open the folder with this job's results (or the output folder) in the file browser"""

    bl_idname = "movie_director.open_output"
    bl_label = "Open Output Folder"

    job_id: StringProperty(name="Job")

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        hub = bridge.current_hub()
        if not os.path.isdir(hub.output_dir):
            cls.poll_message_set("Nothing has been written yet")
            return False
        return True

    def execute(self, context):
        folder = bridge.current_hub().output_dir
        _scene, record = props.find_job(self.job_id) if self.job_id else (None, None)
        if record is not None and record.paths:
            folder = os.path.dirname(record.paths.splitlines()[0])
        if not os.path.isdir(folder):
            self.report({"WARNING"}, f"{folder} does not exist")
            return {"CANCELLED"}
        if bpy.app.background:
            self.report({"INFO"}, folder)
            return {"FINISHED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_copy_error(Operator):
    """Copy the full error details to the clipboard (tokens and secrets removed)"""

    bl_idname = "movie_director.copy_error"
    bl_label = "Copy Error Details"

    source: StringProperty(name="Job or service", description="Empty: the latest error")

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        if not bridge.current_model().errors:
            cls.poll_message_set("Nothing has gone wrong")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        entries = rt.model.errors_for(self.source) if self.source else list(rt.model.errors)
        if not entries:
            self.report({"WARNING"}, "No error recorded for that")
            return {"CANCELLED"}
        entry = entries[-1]
        job = rt.model.jobs.get(entry.source)
        service = rt.model.services.get(job.service if job else entry.source)
        prefs = preferences.get(context)
        secrets = rt.owner.secrets() + ([s.resolved_token() for s in prefs.services] if prefs else [])
        text = redact.error_report(entry, job=job, service=service, versions=_versions(), secrets=secrets)
        context.window_manager.clipboard = text
        self.report({"INFO"}, "Error details copied")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_forget_job(Operator):
    """Remove this job from the list (its files stay on disk)"""

    bl_idname = "movie_director.forget_job"
    bl_label = "Remove From List"
    bl_options = {"INTERNAL"}

    job_id: StringProperty(name="Job")

    @classmethod
    def poll(cls, context):
        if len(props.settings(context.scene).jobs) == 0:
            cls.poll_message_set("No job in this scene")
            return False
        return True

    def execute(self, context):
        s = props.settings(context.scene)
        index = s.jobs.find(self.job_id)
        view = bridge.current_model().jobs.get(self.job_id) if bridge.current_model() else None
        if view is not None and view.active:
            self.report({"WARNING"}, "Cancel the job first")
            return {"CANCELLED"}
        if index >= 0:
            s.jobs.remove(index)
        if bridge.current_model() is not None:
            bridge.current_model().forget(self.job_id)
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_show_preferences(Operator):
    """Open the add-on's preferences (servers, tokens, output folder)"""

    bl_idname = "movie_director.show_preferences"
    bl_label = "Server Settings"

    def execute(self, context):
        if bpy.app.background:
            return {"CANCELLED"}
        bpy.ops.screen.userpref_show("INVOKE_DEFAULT")
        context.preferences.active_section = "ADDONS"
        try:
            bpy.ops.preferences.addon_show(module=preferences.ADDON_ID)
        except Exception:
            pass  # older Blender: the add-ons section is open, the user finds it by name
        return {"FINISHED"}


# ---- shots -----------------------------------------------------------------------------------------------------------

WHICH = [
    ("ALL", "All", "Every shot"),
    ("SELECTED", "Selected", "The shots ticked in the list"),
    ("STALE", "Stale", "Shots whose prompt, settings or workflow changed since their active take"),
    ("NEW", "Not generated", "Shots without any take"),
    ("ONE", "One", "The shot named by shot_id"),
]


class MOVIE_DIRECTOR_OT_shots_from_markers(Operator):
    """Make (or update) the shot list from the timeline markers: each shot runs from its marker to the frame before
    the next; cameras bound to markers come along. Existing shots keep their takes"""

    bl_idname = "movie_director.shots_from_markers"
    bl_label = "Shots from Markers"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not len(importer.sequencer_scene(context).timeline_markers):
            cls.poll_message_set("The scene has no timeline markers (M in the timeline adds one)")
            return False
        return True

    def execute(self, context):
        plan = shotlist.from_markers(importer.sequencer_scene(context))
        self.report({"INFO"}, _sync_text(plan))
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_shots_from_strips(Operator):
    """Make (or update) the shot list from Sequencer strips: the selected ones, or every strip on the source channel.
    Existing shots keep their takes"""

    bl_idname = "movie_director.shots_from_strips"
    bl_label = "Shots from Strips"
    bl_options = {"REGISTER", "UNDO"}

    channel: IntProperty(name="Channel", description="Read this channel (0: the selected strips)", min=0, default=-1)

    def execute(self, context):
        scene = importer.sequencer_scene(context)
        channel = self.channel if self.channel >= 0 else props.settings(scene).strip_channel
        plan = shotlist.from_strips(scene, channel)
        if not plan.matched and not plan.new:
            where = f"on channel {channel}" if channel else "selected"
            self.report({"WARNING"}, f"No strip {where}")
            return {"CANCELLED"}
        self.report({"INFO"}, _sync_text(plan))
        return {"FINISHED"}


def _sync_text(plan: sh.SyncPlan) -> str:
    parts = [f"{len(plan.new)} new shot(s)", f"{len(plan.matched)} updated"]
    if plan.missing:
        parts.append(f"{len(plan.missing)} no longer found (kept with their takes)")
    return ", ".join(parts)


class MOVIE_DIRECTOR_OT_generate_shots(Operator):
    """Send a take of each chosen shot (returns at once; each take lands at its shot's start frame for the shot's
    length when it is done)"""

    bl_idname = "movie_director.generate_shots"
    bl_label = "Generate Shots"

    which: EnumProperty(name="Shots", items=WHICH, default="ALL")
    shot_id: StringProperty(name="Shot")

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        rt = bridge.runtime()
        if not rt.owner.services():
            cls.poll_message_set("Set up a server in the preferences first")
            return False
        if not len(props.settings(importer.sequencer_scene(context)).shots):
            cls.poll_message_set("No shots yet: make them from markers or strips")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        scene = importer.sequencer_scene(context)
        chosen = [s for s in shotlist.choose(scene, self.which, self.shot_id) if not shotlist.active(rt.model, s)]
        if not chosen:
            self.report({"WARNING"}, "No shot to generate (running shots are skipped)")
            return {"CANCELLED"}
        # Checked now, before anything is sent: a workflow that cannot be used fails the whole batch with its reason.
        service = props.settings(scene).service or shotlist.default_service(rt)
        workflow = props.settings(scene).workflow
        if workflow and not any(shot.workflow for shot in chosen):
            try:
                shotlist.prepared(rt).get(bpy.path.abspath(workflow), service)
            except shotlist.SubmitProblem as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        count = shotlist.enqueue(rt, chosen)
        # The timer sends them, a few per tick: this returns at once even for hundreds of shots.
        rt.pacing.interval = 0.0
        bridge.tag_redraw(rt, {st.JOBS})
        self.report({"INFO"}, f"{count} shot(s) to send")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_continue_batch(Operator):
    """Send the shots of a batch that were not sent yet (e.g. when Blender closed in the middle of a batch)"""

    bl_idname = "movie_director.continue_batch"
    bl_label = "Continue Batch"

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        if not shotlist.waiting_shots(importer.sequencer_scene(context)):
            cls.poll_message_set("No shot is waiting to be sent")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        rt.batch_paused = False
        rt.batch_pending = True
        rt.pacing.interval = 0.0
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_cancel_shots(Operator):
    """Cancel the running takes of the chosen shots (their earlier takes stay)"""

    bl_idname = "movie_director.cancel_shots"
    bl_label = "Cancel Shots"

    which: EnumProperty(name="Shots", items=WHICH, default="ALL")
    shot_id: StringProperty(name="Shot")

    @classmethod
    def poll(cls, context):
        return _running(cls)

    def execute(self, context):
        rt = bridge.runtime()
        scene = importer.sequencer_scene(context)
        cancelled = 0
        for shot in shotlist.choose(scene, self.which, self.shot_id):
            if shot.waiting:  # not sent yet: it simply is not sent
                shot.waiting = False
                shot.job_state = "cancelled"
                cancelled += 1
                continue
            if not shotlist.active(rt.model, shot):
                continue
            try:
                rt.owner.hub.cancel(shot.job_id)
            except Exception as exc:
                self.report({"WARNING"}, f"Could not cancel {shot.name}: {exc}")
                continue
            view = rt.model.jobs.get(shot.job_id)
            if view is not None:
                view.cancel_requested = True
            cancelled += 1
        if not cancelled:
            self.report({"WARNING"}, "No running shot to cancel")
            return {"CANCELLED"}
        bridge.tag_redraw(rt, {st.JOBS})
        self.report({"INFO"}, f"Cancelling {cancelled} shot(s)")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_review_take(Operator):
    """Mark this take approved or rejected (kept in the .blend and in its take.json; shown on the contact sheet and
    in the exported cut)"""

    bl_idname = "movie_director.review_take"
    bl_label = "Review Take"
    bl_options = {"REGISTER", "UNDO"}

    shot_id: StringProperty(name="Shot")
    index: IntProperty(name="Take", default=0)
    verdict: EnumProperty(
        name="Verdict",
        items=[("approved", "Approve", ""), ("rejected", "Reject", "")],
        default="approved",
    )

    def execute(self, context):
        scene = importer.sequencer_scene(context)
        shot = props.find_shot(scene, self.shot_id)
        if shot is None or not 0 <= self.index < len(shot.takes):
            self.report({"WARNING"}, "No such take")
            return {"CANCELLED"}
        take = shot.takes[self.index]
        # Pressing the mark a take has clears it.
        take.review = "none" if take.review == self.verdict else self.verdict
        if take.folder and os.path.isdir(take.folder):
            try:
                takes.update_take(take.folder, review=None if take.review == "none" else take.review)
            except OSError as exc:
                self.report({"WARNING"}, f"The mark is in the .blend; take.json could not be written: {exc}")
        return {"FINISHED"}


def _handoff_folder(context) -> str:
    rt = bridge.runtime()
    if rt is not None and rt.owner.is_open:
        return rt.owner.hub.output_dir
    return bridge.resolve_output_dir(preferences.get(context))


class MOVIE_DIRECTOR_OT_export_cut(Operator):
    """Write the cut (each shot's active take at its frames) as an OpenTimelineIO file for editors"""

    bl_idname = "movie_director.export_cut"
    bl_label = "Export Cut (OTIO)"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def execute(self, context):
        from . import review

        scene = importer.sequencer_scene(context)
        path = bpy.path.abspath(self.filepath) if self.filepath else os.path.join(_handoff_folder(context), "cut.otio")
        entries = shotlist.review_entries(scene)
        data = review.timeline(scene.name, props.fps_for(scene), entries, scene.frame_start)
        in_cut = data["metadata"]["director_link"]["in_cut"]
        if not in_cut:
            self.report({"WARNING"}, "No shot has a finished take yet: nothing to export")
            return {"CANCELLED"}
        try:
            review.write_json(path, data)
        except OSError as exc:
            self.report({"ERROR"}, f"Could not write {path}: {exc}")
            return {"CANCELLED"}
        props.settings(scene).last_export = path
        self.report({"INFO"}, f"Cut with {in_cut} of {len(entries)} shots: {path}")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_contact_sheet(Operator):
    """Write a contact sheet of every shot and take (HTML, next to the takes) and open it"""

    bl_idname = "movie_director.contact_sheet"
    bl_label = "Contact Sheet"

    open_it: BoolProperty(name="Open", default=True)

    def execute(self, context):
        from . import review

        scene = importer.sequencer_scene(context)
        folder = _handoff_folder(context)
        path = os.path.join(folder, "contact_sheet.html")
        entries = shotlist.review_entries(scene)
        try:
            review.write_text(path, review.contact_sheet(f"{scene.name}: shots and takes", entries, folder))
        except OSError as exc:
            self.report({"ERROR"}, f"Could not write {path}: {exc}")
            return {"CANCELLED"}
        props.settings(scene).last_export = path
        if self.open_it and not bpy.app.background:
            bpy.ops.wm.url_open(url=review.file_url(path))
        self.report({"INFO"}, f"Contact sheet: {path}")
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_use_take(Operator):
    """Show this take in the Sequencer: it replaces the shot's strip, keeping its channel and trims"""

    bl_idname = "movie_director.use_take"
    bl_label = "Use Take"
    bl_options = {"REGISTER", "UNDO"}

    shot_id: StringProperty(name="Shot")
    index: IntProperty(name="Take", default=0)

    def execute(self, context):
        scene = importer.sequencer_scene(context)
        shot = props.find_shot(scene, self.shot_id)
        if shot is None or not 0 <= self.index < len(shot.takes):
            self.report({"WARNING"}, "No such take")
            return {"CANCELLED"}
        take = shot.takes[self.index]
        missing = [p for p in take.paths.splitlines() if p and not os.path.isfile(p)]
        if take.state != "completed" or not take.paths or missing:
            self.report(
                {"WARNING"}, f"Take {take.number} has no files" + (f" ({missing[0]} is gone)" if missing else "")
            )
            return {"CANCELLED"}
        created, problems = importer.activate_take(scene, shot, self.index)
        if not created:
            self.report({"ERROR"}, problems[0] if problems else "Nothing to show")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{shot.name}: take {take.number}")
        return {"FINISHED"}


def chat_services(rt) -> list[str]:
    """The enabled OpenAI-compatible services, in the preferences' order."""
    return [name for name, spec in rt.owner.services().items() if spec.kind in ("openai", "litellm")]


class MOVIE_DIRECTOR_OT_write_shots(Operator):
    """Ask an OpenAI-compatible service (LiteLLM, Ollama …) to turn the logline into a shot list (returns at once;
    the answer streams into the panel)"""

    bl_idname = "movie_director.write_shots"
    bl_label = "Write Shots"

    @classmethod
    def poll(cls, context):
        if not _running(cls):
            return False
        s = props.settings(importer.sequencer_scene(context))
        if not s.logline.strip():
            cls.poll_message_set("Type a logline or script first")
            return False
        if s.writer_job and shotlist.writing(bridge.runtime().model, s):
            cls.poll_message_set("Already writing")
            return False
        if bridge.runtime().owner.studio:
            cls.poll_message_set("The studio server does not relay chats: Write Shots works in direct mode")
            return False
        if not chat_services(bridge.runtime()):
            cls.poll_message_set("Set up an OpenAI-compatible (LiteLLM) service in the preferences first")
            return False
        return True

    def execute(self, context):
        rt = bridge.runtime()
        s = props.settings(importer.sequencer_scene(context))
        available = chat_services(rt)
        service = s.writer_service or available[0]
        if service not in available:
            self.report({"ERROR"}, f"{service!r} is not an enabled OpenAI-compatible service")
            return {"CANCELLED"}
        try:
            job = rt.owner.hub.chat(
                service, writer.messages(s.logline), model=s.writer_model or None, tag="write_shots"
            )
        except Exception as exc:
            self.report({"ERROR"}, f"Write Shots: {exc}")
            return {"CANCELLED"}
        rt.model.track(job.id, service, "write_shots", state="running")
        rt.model.texts[job.id] = ""
        s.writer_job = job.id
        rt.pacing.interval = 0.0
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_cancel_writing(Operator):
    """Stop writing shots (what has arrived so far stays in the panel)"""

    bl_idname = "movie_director.cancel_writing"
    bl_label = "Stop Writing"

    def execute(self, context):
        rt = bridge.runtime()
        s = props.settings(importer.sequencer_scene(context))
        if rt is None or not s.writer_job:
            return {"CANCELLED"}
        try:
            rt.owner.hub.cancel(s.writer_job)
        except Exception as exc:
            self.report({"WARNING"}, f"Stop Writing: {exc}")
        s.written = rt.model.texts.get(s.writer_job, s.written)
        return {"FINISHED"}


class MOVIE_DIRECTOR_OT_shots_from_text(Operator):
    """Timeline markers from the written shot list, spread over the scene's frame range, each shot with its prompt"""

    bl_idname = "movie_director.shots_from_text"
    bl_label = "Make Shots from Text"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not writer.parse_shots(props.settings(importer.sequencer_scene(context)).written):
            cls.poll_message_set("No shots in the text yet ('Shot 1: …' per line)")
            return False
        return True

    def execute(self, context):
        scene = importer.sequencer_scene(context)
        count = shotlist.shots_from_text(scene, props.settings(scene).written)
        self.report({"INFO"}, f"{count} shot(s) written")
        return {"FINISHED"}


classes = (
    MOVIE_DIRECTOR_OT_write_shots,
    MOVIE_DIRECTOR_OT_cancel_writing,
    MOVIE_DIRECTOR_OT_shots_from_text,
    MOVIE_DIRECTOR_OT_shots_from_markers,
    MOVIE_DIRECTOR_OT_shots_from_strips,
    MOVIE_DIRECTOR_OT_generate_shots,
    MOVIE_DIRECTOR_OT_cancel_shots,
    MOVIE_DIRECTOR_OT_continue_batch,
    MOVIE_DIRECTOR_OT_use_take,
    MOVIE_DIRECTOR_OT_refresh,
    MOVIE_DIRECTOR_OT_discover,
    MOVIE_DIRECTOR_OT_add_service,
    MOVIE_DIRECTOR_OT_remove_service,
    MOVIE_DIRECTOR_OT_reconnect,
    MOVIE_DIRECTOR_OT_generate,
    MOVIE_DIRECTOR_OT_cancel,
    MOVIE_DIRECTOR_OT_import_result,
    MOVIE_DIRECTOR_OT_review_take,
    MOVIE_DIRECTOR_OT_export_cut,
    MOVIE_DIRECTOR_OT_contact_sheet,
    MOVIE_DIRECTOR_OT_open_output,
    MOVIE_DIRECTOR_OT_copy_error,
    MOVIE_DIRECTOR_OT_forget_job,
    MOVIE_DIRECTOR_OT_show_preferences,
)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
