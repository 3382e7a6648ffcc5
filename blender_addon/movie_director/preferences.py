"""Add-on preferences: the servers, their tokens, the timer's intervals, the output folder, discovery.

Preferences live in Blender's user preferences (``userpref.blend``), never in the .blend of a project: a token
typed here, or read from the environment variable named here, is never saved with a scene.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences, PropertyGroup

from . import format as fmt
from . import runtime
from .hub_owner import ServiceSpec, is_loopback

ADDON_ID = __package__
DEFAULT_DISCOVERY = "127.0.0.1:8188, 127.0.0.1:8000, 127.0.0.1:8189"
STUDIO_LINK = "studio server"  # studio_link.LINK_NAME (not imported: that module is only loaded in studio mode)
SERVICE_KINDS = [
    ("comfyui", "ComfyUI", "A ComfyUI server (HTTP + WebSocket)"),
    ("litellm", "OpenAI / LiteLLM", "An OpenAI-compatible server (LiteLLM, Ollama, LM Studio, vLLM): Write Shots"),
    ("gradio", "Gradio app", "Any Gradio 3.x–6.x app, called with the shot's Gradio call"),
    ("wan2gp", "Wan2GP", "Wan2GP's Gradio app (text/image to video)"),
    ("rvc", "RVC", "RVC voice conversion (Gradio; results land as sound strips)"),
    ("audioldm", "AudioLDM", "AudioLDM sound generation (Gradio; results land as sound strips)"),
    ("wangp_mcp", "WanGP MCP", "WanGP run as an MCP server (wgp.py --mcp)"),
]
COMFY_KINDS = frozenset({"comfyui"})
CHAT_KINDS = frozenset({"litellm", "openai"})
GRADIO_KINDS = frozenset({"gradio", "wan2gp", "wangp", "rvc", "audioldm"})


def _changed(_self, context) -> None:
    runtime.request_sync()


class MOVIE_DIRECTOR_PG_service(PropertyGroup):
    """One server: its kind, name, address, whether to use it, and how it authenticates."""

    # ``name`` is PropertyGroup's built-in key (prop_search looks services up by it).
    kind: EnumProperty(name="Kind", items=SERVICE_KINDS, default="comfyui", update=_changed)
    url: StringProperty(
        name="Address",
        description="host, host:port or http(s)://host:port/base/",
        default="127.0.0.1:8188",
        update=_changed,
    )
    enabled: BoolProperty(name="Enabled", default=True, update=_changed)
    token: StringProperty(
        name="Token",
        description="Bearer token sent to the server. Kept in the preferences only, never in a .blend",
        subtype="PASSWORD",
        default="",
        update=_changed,
    )
    token_env: StringProperty(
        name="Token variable",
        description="Or: the environment variable that holds the token (e.g. COMFY_TOKEN)",
        default="",
        update=_changed,
    )

    def resolved_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_env:
            return os.environ.get(self.token_env) or None
        return None


class MOVIE_DIRECTOR_AP_preferences(AddonPreferences):
    bl_idname = ADDON_ID

    services: CollectionProperty(type=MOVIE_DIRECTOR_PG_service)
    initialized: BoolProperty(default=False, options={"HIDDEN"})
    active_service: IntProperty(default=0)
    output_dir: StringProperty(
        name="Output folder",
        description="Where results are written ('//' is next to the .blend; an unsaved file uses the temp folder)",
        subtype="DIR_PATH",
        default="//director_link/",
    )
    heartbeat: FloatProperty(
        name="Heartbeat", description="Seconds between liveness checks", default=10.0, min=0.5, max=120.0
    )
    active_interval: FloatProperty(
        name="Update interval",
        description="Seconds between UI updates while events arrive",
        default=0.05,
        min=0.01,
        max=1.0,
    )
    idle_interval: FloatProperty(
        name="Idle interval",
        description="Longest wait between checks when nothing is happening",
        default=1.0,
        min=0.1,
        max=10.0,
    )
    auto_discover: BoolProperty(
        name="Discover local servers",
        description="Look for servers on this machine when the add-on starts and no server is set up",
        default=True,
    )
    discovery_addresses: StringProperty(
        name="Addresses", description="Where discovery looks (comma separated)", default=DEFAULT_DISCOVERY
    )
    mode: EnumProperty(
        name="Send jobs",
        items=[
            ("DIRECT", "Straight to the servers", "The add-on's own hub talks to the servers listed below"),
            (
                "STUDIO",
                "Through a studio server",
                "Jobs go to a `director-link serve` instance: they show on its monitor page, run on its services and "
                "outlive this Blender; results are downloaded next to the .blend",
            ),
        ],
        default="DIRECT",
        update=_changed,
    )
    studio_url: StringProperty(
        name="Studio server",
        description="Address of `director-link serve` (host:port or http(s)://host:port)",
        default="127.0.0.1:8328",
        update=_changed,
    )
    studio_token: StringProperty(
        name="Token",
        description="The studio server's --token. Kept in the preferences only, never in a .blend",
        subtype="PASSWORD",
        default="",
        update=_changed,
    )
    studio_token_env: StringProperty(
        name="Token variable",
        description="Or: the environment variable that holds it (e.g. DIRECTOR_LINK_STUDIO_TOKEN)",
        default="",
        update=_changed,
    )

    def studio_options(self) -> dict:
        """The hub's options for the chosen mode (empty in direct mode)."""
        if self.mode != "STUDIO":
            return {}
        token = self.studio_token or (os.environ.get(self.studio_token_env) if self.studio_token_env else None)
        return {"studio_url": self.studio_url.strip(), "studio_token": token or None}

    def draw(self, context) -> None:
        layout = self.layout
        online = online_access()
        if not online and any(not is_loopback(s.url) for s in self.services if s.enabled):
            box = layout.box()
            box.alert = True
            box.label(text="Online access is off: only servers on this machine are used.", icon="ERROR")
            box.label(text="Turn it on in Preferences › System › Network to reach remote servers.")
        model = runtime.current_model()
        box = layout.box()
        box.prop(self, "mode")
        if self.mode == "STUDIO":
            box.prop(self, "studio_url")
            row = box.row(align=True)
            row.prop(self, "studio_token")
            row.prop(self, "studio_token_env", text="or variable")
            link = model.services.get(STUDIO_LINK) if model is not None else None
            if link is not None:
                style = fmt.service_style(link.state, link.blocked)
                line = box.row()
                line.alert = style.alert
                line.label(text=fmt.service_line(link.name, link.state, link.reason, link.blocked), icon=style.icon)
            box.label(text="The servers below are used again in direct mode; shots and takes stay as they are.")
        layout.label(text="Servers")
        for index, svc in enumerate(self.services):
            box = layout.box()
            row = box.row(align=True)
            row.prop(svc, "enabled", text="")
            row.prop(svc, "name", text="")
            row.prop(svc, "kind", text="")
            op = row.operator("movie_director.remove_service", text="", icon="X")
            op.index = index
            box.prop(svc, "url")
            row = box.row(align=True)
            row.prop(svc, "token")
            row.prop(svc, "token_env", text="or variable")
            view = model.services.get(svc.name) if model is not None else None
            if view is not None:
                style = fmt.service_style(view.state, view.blocked)
                line = box.row()
                line.alert = style.alert
                line.label(text=fmt.service_line(view.name, view.state, view.reason, view.blocked), icon=style.icon)
        row = layout.row(align=True)
        row.operator("movie_director.add_service", icon="ADD")
        row.operator("movie_director.discover", icon="VIEWZOOM")
        draw_discovered(layout, model)
        layout.separator()
        layout.prop(self, "output_dir")
        row = layout.row()
        row.prop(self, "auto_discover")
        row.prop(self, "discovery_addresses", text="")
        row = layout.row()
        row.prop(self, "heartbeat")
        row.prop(self, "active_interval")
        row.prop(self, "idle_interval")


def draw_discovered(layout, model) -> None:
    """Discovery results with an Add button each (shared by the preferences and the sidebar)."""
    if model is None:
        return
    if model.discovering:
        layout.label(text="Looking for servers…", icon="SORTTIME")
    # Addresses where nothing answered are one line, not one "nothing there" line each.
    empty = [str(f.get("url") or "") for f in model.discovered if f.get("kind") == "none"]
    if empty and not model.discovering:
        layout.label(text=fmt.clip(f"Nothing found at {', '.join(empty)}", 70), icon="INFO")
    for found in model.discovered:
        if found.get("kind") == "none":
            continue
        row = layout.row()
        usable = found.get("kind") == "comfyui"
        row.label(
            text=fmt.clip(str(found.get("summary") or found.get("url")), 70), icon="CHECKMARK" if usable else "DOT"
        )
        if usable:
            op = row.operator("movie_director.add_service", text="Add", icon="ADD")
            op.url = str(found.get("url") or "")


def online_access() -> bool:
    """``bpy.app.online_access`` (Blender 4.2+); older Blender has no such switch."""
    return bool(getattr(bpy.app, "online_access", True))


def get(context=None):
    """The add-on's preferences, or None while it is not enabled."""
    prefs = (context or bpy.context).preferences
    addon = prefs.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def service_specs(prefs) -> list[ServiceSpec]:
    return [
        ServiceSpec(name=s.name, url=s.url, kind=s.kind, token=s.resolved_token(), enabled=s.enabled)
        for s in prefs.services
    ]


def ensure_default_service(prefs) -> None:
    """A fresh install starts with no server: discovery (on by default) offers the ones running here with an Add
    button. (A made-up "local 127.0.0.1:8188" read as an error on every machine where ComfyUI was not running.)"""
    if prefs.initialized:
        return
    prefs.initialized = True


classes = (MOVIE_DIRECTOR_PG_service, MOVIE_DIRECTOR_AP_preferences)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
