"""A shot's settings → the workflow's inputs, through the core's own selectors (``director_link.Workflow``).

Which input means "the prompt", "the seed" or "the frame count" is decided by the core's roles (``positive.text``,
``sampler.seed``, ``latent.width``, ``frames.length`` …, see ``src/workflow/params.rs``), the same ones
``director-link run --set`` and the template bindings use; ranges and steps come from ``Workflow.parameters()`` with
the server's node list when the add-on has it. A graph without a sampler (an upscaler, a test graph) has no roles;
there a setting goes to the one parameter of the core's list with that input name, or is reported as not in the
workflow — never silently dropped.

No ``bpy`` here: the add-on's operators pass plain values; tests import this with the native module only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from . import placement
from .shots import Settings

# The core's role selector for each shot setting; the fallback input names (only used when the workflow has no role
# for it, and only when exactly one of the core's parameters has that name).
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "prompt": ("positive.text", ("text", "prompt")),
    "negative": ("negative.text", ()),
    "seed": ("sampler.seed", ("seed", "noise_seed", "nonce")),
    "steps": ("sampler.steps", ("steps",)),
    "cfg": ("sampler.cfg", ("cfg",)),
    "width": ("latent.width", ("width",)),
    "height": ("latent.height", ("height",)),
    "frames": ("frames.length", ("length", "frame_count", "video_frames", "num_frames")),
}
IMAGE_LOADERS = ("LoadImage",)  # nodes whose ``image`` input is a file in the server's input folder
FPS_INPUTS = ("frame_rate", "fps")  # every one is set: a video graph has the conditioning's and the file's rate
LABELS = {
    "prompt": "Prompt",
    "negative": "Negative",
    "seed": "Seed",
    "steps": "Steps",
    "cfg": "CFG",
    "width": "Width",
    "height": "Height",
    "frames": "Frames",
    "fps": "Frame rate",
    "image": "Image input",
}


RANDOM_SEED_SPAN = 2**32  # where an input's range is not known yet: every seed input accepts 0 … 2³²−1


class WorkflowProblem(ValueError):
    """The workflow file cannot be used (unreadable, or UI format while the server's node list is not known yet)."""


@dataclass
class Target:
    selector: str  # "<node id>.<input>"
    input_type: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    step: int | float | None = None
    how: str = "role"  # "role" (the core's role) or "name" (the one parameter with that input name)


@dataclass
class Resolved:
    """Where each setting goes in one workflow (computed once per workflow file and server)."""

    format: str
    targets: dict[str, list[Target]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def supports(self, setting: str) -> bool:
        return bool(self.targets.get(setting))

    def missing(self, wanted: list[str]) -> list[str]:
        return [w for w in wanted if not self.supports(w)]

    @property
    def is_video(self) -> bool:
        return self.supports("frames")

    @property
    def wants_image(self) -> bool:
        return self.supports("image")


def _workflow_class():
    from director_link import Workflow

    return Workflow


def load(path: str, object_info: dict[str, Any] | None = None):
    """The workflow at ``path`` (API or UI format ``.json``, or a ComfyUI ``.png``) in API format.

    A UI-format file is converted with the server's node list; without one it raises ``WorkflowProblem`` (the
    caller fetches the node list in the background and asks again)."""
    Workflow = _workflow_class()
    if not os.path.isfile(path):
        raise WorkflowProblem(f"the workflow file {path} does not exist")
    try:
        wf = Workflow.load(path)
    except Exception as exc:
        raise WorkflowProblem(f"{os.path.basename(path)}: {exc}") from exc
    if wf.format == "ui":
        if object_info is None:
            raise WorkflowProblem(
                f"{os.path.basename(path)} is a UI-format workflow: waiting for the server's node list to convert it"
            )
        try:
            wf = wf.convert(object_info)
        except Exception as exc:
            raise WorkflowProblem(f"{os.path.basename(path)} could not be converted: {exc}") from exc
    return wf


def _target(param: dict[str, Any], how: str) -> Target:
    def num(key: str) -> float | None:
        # Ints stay ints: a seed's maximum 2⁶⁴−1 as a float is 2⁶⁴, one past what the server accepts.
        value = param.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return Target(
        selector=str(param["selector"]),
        input_type=str(param.get("input_type") or ""),
        minimum=num("min"),
        maximum=num("max"),
        step=num("step"),
        how=how,
    )


def bindings_for(path: str) -> list[dict[str, Any]]:
    """The template's bindings (``<name>.bindings.json`` next to ``<name>.json``, as shipped in ``workflows/``):
    its parameters, or [] when there is no such file (a bad one is ignored: the workflow's own nodes still count)."""
    stem, _ext = os.path.splitext(path)
    try:
        with open(stem + ".bindings.json", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    params = data.get("parameters") if isinstance(data, dict) else None
    return [p for p in params if isinstance(p, dict)] if isinstance(params, list) else []


def image_targets(wf, params: list[dict[str, Any]], bindings: list[dict[str, Any]]) -> list[Target]:
    """The workflow's image input: the template's binding marked ``"upload": true`` of type IMAGE (resolved through
    the core's selectors), else the ``image`` input of its first image-loading node in the core's parameter list.
    The scene's picture goes into the first one only (a second LoadImage is usually a mask or a reference)."""
    for binding in bindings:
        if binding.get("upload") and str(binding.get("type", "")).upper() == "IMAGE" and binding.get("selector"):
            try:
                concrete = wf.set(str(binding["selector"]), wf.get(str(binding["selector"])))
            except Exception:
                continue  # a binding that does not fit this graph (edited by hand): try the nodes
            return [Target(selector=concrete, input_type="IMAGE", how="binding")]
    loaders = [
        p for p in params if p.get("class_type") in IMAGE_LOADERS and str(p["selector"]).rpartition(".")[2] == "image"
    ]
    loaders.sort(key=lambda p: _node_order(str(p["selector"]).rpartition(".")[0]))
    return [_target(loaders[0], "name")] if loaders else []


def reference_targets(params: list[dict[str, Any]], picture: str) -> list[Target]:
    """The image inputs after the one the shot's picture goes to (``picture``, its selector), in node order: where
    the sequence's reference images go (a style or character reference reused by every shot)."""
    loaders = [
        p
        for p in params
        if p.get("class_type") in IMAGE_LOADERS
        and str(p["selector"]).rpartition(".")[2] == "image"
        and str(p["selector"]) != picture
    ]
    loaders.sort(key=lambda p: _node_order(str(p["selector"]).rpartition(".")[0]))
    return [_target(p, "name") for p in loaders]


def image_choices(object_info: dict[str, Any] | None, class_type: str = "LoadImage") -> list[str]:
    """The files the server's node list offers for ``class_type``'s ``image`` input (its input folder when the list
    was read)."""
    try:
        spec = object_info[class_type]["input"]["required"]["image"]  # type: ignore[index]
    except (KeyError, TypeError):
        return []
    options = spec[0] if isinstance(spec, list) and spec else None
    if isinstance(options, list):
        return [str(o) for o in options]
    if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):  # COMBO v3: {"options": [...]}
        return [str(o) for o in spec[1].get("options") or []]
    return []


def _node_order(node_id: str) -> tuple[int, str]:
    head = node_id.split(":")[0]
    return (int(head), node_id) if head.isdigit() else (1 << 62, node_id)


def resolve(wf, object_info: dict[str, Any] | None = None, wf_path: str = "") -> Resolved:
    """Where each shot setting goes in ``wf`` (an API-format ``director_link.Workflow``); ``wf_path``: the file it
    came from (a shipped template's bindings next to it name its image input)."""
    Workflow = _workflow_class()
    params = wf.parameters(object_info) if object_info is not None else wf.parameters()
    by_selector = {str(p["selector"]): p for p in params}
    out = Resolved(format=wf.format)
    scratch = Workflow.load(wf.to_dict())
    for setting, (role, names) in ROLES.items():
        try:
            concrete = scratch.set(role, scratch.get(role))
        except Exception:
            concrete = None
        if concrete is not None:
            param = by_selector.get(concrete, {"selector": concrete})
            out.targets[setting] = [_target(param, "role")]
            continue
        candidates = [p for p in params if str(p["selector"]).rpartition(".")[2] in names]
        if setting == "prompt":
            candidates = [p for p in candidates if p.get("input_type") == "STRING"]
        if len(candidates) == 1:
            out.targets[setting] = [_target(candidates[0], "name")]
    image = image_targets(scratch, params, bindings_for(wf_path) if wf_path else [])
    if image:
        out.targets["image"] = image
    references = reference_targets(params, image[0].selector if image else "")
    if references:
        out.targets["reference"] = references
    fps = [_target(p, "name") for p in params if str(p["selector"]).rpartition(".")[2] in FPS_INPUTS]
    if fps:
        out.targets["fps"] = fps
    out.warnings = list(getattr(wf, "warnings", []) or [])
    return out


def fit_seed(seed: int, target: Target, random: bool) -> int:
    """A seed for this input: a random one is folded into the input's range (``nonce``-style inputs stop at
    2³²−1, KSampler's at 2⁶⁴−1); a chosen one above the range is an error naming the input."""
    top = int(target.maximum) if target.maximum is not None else None
    if random:
        return seed % ((top + 1) if top is not None else RANDOM_SEED_SPAN)
    if top is not None and seed > top:
        raise WorkflowProblem(f"seed {seed} is above the maximum of {target.selector} ({top}); choose a smaller seed")
    return seed


def _clamp(value: float, target: Target) -> float:
    if target.minimum is not None:
        value = max(value, target.minimum)
    if target.maximum is not None:
        value = min(value, target.maximum)
    return value


def build(resolved: Resolved, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """``params`` for ``Hub.submit`` and the settings that had nowhere to go (shown, never silently dropped)."""
    params: dict[str, Any] = {}
    unused: list[str] = []
    values: dict[str, Any] = {
        "prompt": settings.prompt,
        "negative": settings.negative,
        "seed": settings.seed,
        "steps": settings.steps,
        "cfg": settings.cfg,
        "width": settings.width,
        "height": settings.height,
    }
    for setting, value in values.items():
        if value is None:
            continue
        if setting == "seed":
            for t in resolved.targets.get("seed") or []:
                params[t.selector] = fit_seed(int(value), t, settings.random_seed)
            if not resolved.targets.get("seed"):
                unused.append(setting)
            continue
        targets = resolved.targets.get(setting)
        if not targets:
            unused.append(setting)
            continue
        for t in targets:
            params[t.selector] = value
    frames = resolved.targets.get("frames") or []
    for t in frames:
        step = int(t.step) if t.step else None
        minimum = int(t.minimum) if t.minimum is not None else None
        params[t.selector] = placement.valid_length(settings.frames, minimum, step)
    for t in resolved.targets.get("fps") or []:
        fps = _clamp(float(settings.fps), t)
        params[t.selector] = int(round(fps)) if t.input_type == "INT" else fps
    if settings.image:
        targets = resolved.targets.get("image")
        if targets:
            params[targets[0].selector] = settings.image
        else:
            unused.append("image")
    params.update(settings.extra)
    return params, unused


# ---- scene values ----------------------------------------------------------------------------------------------


def render_size(resolution_x: int, resolution_y: int, percentage: int = 100, multiple: int = 8) -> tuple[int, int]:
    """The scene's output size (resolution × percentage), rounded to a multiple of ``multiple`` (at least one)."""
    scale = max(int(percentage), 1) / 100.0
    width = max(int(round(resolution_x * scale)), 1)
    height = max(int(round(resolution_y * scale)), 1)
    return snap(width, multiple), snap(height, multiple)


def snap(value: int, multiple: int) -> int:
    """``value`` rounded to the nearest multiple of ``multiple`` (never below ``multiple``)."""
    if multiple <= 1:
        return max(int(value), 1)
    return max(int(round(value / multiple)) * multiple, multiple)


def scene_fps(fps: int, fps_base: float = 1.0) -> float:
    """Blender's frame rate is ``fps / fps_base`` (29.97 is 30 / 1.001)."""
    return round(fps / (fps_base or 1.0), 3)
