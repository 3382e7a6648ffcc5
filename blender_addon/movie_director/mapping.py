"""Blender-ish values → workflow parameters (pure Python; takes plain numbers and strings, never bpy objects).

The scene's render resolution becomes ``width``/``height``, its frame range the frame count, and the shot settings
(prompt, seed, steps, cfg) are written into the inputs that mean them. Which input means what is read from the
API-format graph itself: the sampler (a node with ``seed``/``noise_seed`` + ``steps`` + ``cfg``), the text encoders
linked into its ``positive``/``negative`` inputs, nodes with literal ``width``+``height``, and video length inputs
(``length``, ``frames``, …). The result is the ``params={"NODE_ID.input": value}`` dict ``Hub.submit`` takes.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

SEED_MAX = 2**31 - 1  # Blender's IntProperty is a signed 32-bit int; ComfyUI accepts any unsigned 64-bit seed.

SEED_INPUTS = ("seed", "noise_seed", "nonce")  # ``nonce`` is how the acceptance nodes defeat the server's cache
TEXT_INPUTS = ("text", "prompt", "positive_prompt")
LENGTH_INPUTS = ("length", "frames", "num_frames", "frame_count", "video_length")
FPS_INPUTS = ("frame_rate", "fps")
# How far ``positive``/``negative`` are followed through conditioning nodes (ControlNet apply, guiders, …).
MAX_LINK_DEPTH = 8

# Video latents whose length must have a particular shape (LTX-Video: 8·k + 1; Hunyuan/Wan: 4·k + 1).
LENGTH_RULES = {
    "EmptyLTXVLatentVideo": (8, 1),
    "LTXVImgToVideo": (8, 1),
    "EmptyHunyuanLatentVideo": (4, 1),
    "WanImageToVideo": (4, 1),
    "EmptyMochiLatentVideo": (6, 1),
}


@dataclass
class ShotSettings:
    """What the filmmaker set for a shot; None means "leave the workflow's value"."""

    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    denoise: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # raw "NODE.input" overrides, applied last


@dataclass
class Targets:
    """The workflow inputs each shot setting is written into, as ``NODE_ID.input`` selectors."""

    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    seed: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    cfg: list[str] = field(default_factory=list)
    denoise: list[str] = field(default_factory=list)
    width: list[str] = field(default_factory=list)
    height: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    fps: list[str] = field(default_factory=list)
    length_rules: dict[str, tuple[int, int]] = field(default_factory=dict)

    def supports(self, role: str) -> bool:
        return bool(getattr(self, role, None))


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


def frame_count(frame_start: int, frame_end: int, frame_step: int = 1) -> int:
    """Frames rendered for ``frame_start..frame_end`` (inclusive) every ``frame_step`` frames; at least one."""
    if frame_end < frame_start:
        return 1
    return (frame_end - frame_start) // max(int(frame_step), 1) + 1


def scene_fps(fps: int, fps_base: float = 1.0) -> float:
    """Blender's frame rate is ``fps / fps_base`` (29.97 is 30 / 1.001)."""
    return round(fps / (fps_base or 1.0), 3)


def shape_length(frames: int, rule: tuple[int, int] | None) -> int:
    """The nearest valid length at or above ``frames`` for a ``(step, offset)`` rule (LTX: 8·k + 1)."""
    if not rule:
        return max(int(frames), 1)
    step, offset = rule
    k = max(-(-(int(frames) - offset) // step), 0)
    return k * step + offset


def resolve_seed(seed: int, randomize: bool, rng: random.Random | None = None) -> int:
    """The seed to send: a fresh random one when ``randomize`` (so each Generate makes a new take)."""
    if randomize:
        return (rng or random.SystemRandom()).randint(0, SEED_MAX)
    return int(seed) & 0xFFFFFFFFFFFFFFFF


# ---- workflow ---------------------------------------------------------------------------------------------------


class WorkflowFormatError(ValueError):
    """The file is not an API-format ComfyUI workflow."""


def load_workflow(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads an API-format workflow (``{"id": {"class_type", "inputs"}}``). Raises ``WorkflowFormatError``."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError(f"{os.fspath(path)} is not JSON: {exc}") from exc
    check_api_format(data, os.fspath(path))
    return data


def check_api_format(data: Any, name: str = "workflow") -> None:
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise WorkflowFormatError(
            f"{name} is a UI-format workflow; export it with ComfyUI's 'Export (API)' or convert it with "
            "'director-link convert'"
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowFormatError(f"{name} is not an API-format workflow (expected an object of nodes)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowFormatError(f"{name}: node {node_id!r} has no class_type")


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _literal_inputs(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (node.get("inputs") or {}).items() if not _is_link(v)}


def _text_selectors(workflow: dict[str, Any], link: Any, depth: int = 0) -> list[str]:
    """The literal text inputs feeding a conditioning link, followed through pass-through nodes."""
    if not _is_link(link) or depth > MAX_LINK_DEPTH:
        return []
    node_id = link[0]
    node = workflow.get(node_id)
    if not isinstance(node, dict):
        return []
    inputs = node.get("inputs") or {}
    for name in TEXT_INPUTS:
        if isinstance(inputs.get(name), str):
            return [f"{node_id}.{name}"]
    out: list[str] = []
    for name in ("conditioning", "positive", "conditioning_to", "conditioning_1", "text"):
        if _is_link(inputs.get(name)):
            out += _text_selectors(workflow, inputs[name], depth + 1)
            if out:
                break
    return out


def find_targets(workflow: dict[str, Any]) -> Targets:
    """Which ``NODE_ID.input`` each shot setting goes into (every match, in node-id order)."""
    t = Targets()
    ordered = sorted(workflow.items(), key=lambda kv: (len(kv[0]), kv[0]))
    for node_id, node in ordered:
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs") or {}
        literal = _literal_inputs(node)
        cls = str(node.get("class_type", ""))
        for name in SEED_INPUTS:
            if isinstance(literal.get(name), int) and not isinstance(literal.get(name), bool):
                t.seed.append(f"{node_id}.{name}")
        if "steps" in literal and (
            "cfg" in inputs or "seed" in inputs or "noise_seed" in inputs or "scheduler" in inputs
        ):
            t.steps.append(f"{node_id}.steps")
        if "cfg" in literal:
            t.cfg.append(f"{node_id}.cfg")
        if "denoise" in literal and "steps" in inputs:
            t.denoise.append(f"{node_id}.denoise")
        if isinstance(literal.get("width"), int) and isinstance(literal.get("height"), int):
            t.width.append(f"{node_id}.width")
            t.height.append(f"{node_id}.height")
        for name in LENGTH_INPUTS:
            if isinstance(literal.get(name), int):
                t.frames.append(f"{node_id}.{name}")
                if cls in LENGTH_RULES:
                    t.length_rules[f"{node_id}.{name}"] = LENGTH_RULES[cls]
        for name in FPS_INPUTS:
            if isinstance(literal.get(name), (int, float)) and not isinstance(literal.get(name), bool):
                t.fps.append(f"{node_id}.{name}")
        for role in ("positive", "negative"):
            if _is_link(inputs.get(role)):
                for selector in _text_selectors(workflow, inputs[role]):
                    target = getattr(t, role)
                    if selector not in target:
                        target.append(selector)
    if not t.positive:
        # No sampler to follow (e.g. a text-to-audio graph): one lone text encoder is the prompt.
        texts = [
            f"{nid}.{name}"
            for nid, node in ordered
            if isinstance(node, dict)
            for name in TEXT_INPUTS
            if isinstance((node.get("inputs") or {}).get(name), str)
        ]
        if len(texts) == 1:
            t.positive = texts
    t.negative = [s for s in t.negative if s not in t.positive]
    return t


def build_params(workflow: dict[str, Any], shot: ShotSettings, targets: Targets | None = None) -> dict[str, Any]:
    """The ``params`` dict for ``Hub.submit``: each set shot value written into every input that means it."""
    t = targets or find_targets(workflow)
    params: dict[str, Any] = {}

    def put(selectors: list[str], value: Any) -> None:
        if value is None:
            return
        for selector in selectors:
            params[selector] = value

    put(t.positive, shot.prompt)
    put(t.negative, shot.negative)
    put(t.seed, None if shot.seed is None else int(shot.seed))
    put(t.steps, None if shot.steps is None else int(shot.steps))
    put(t.cfg, None if shot.cfg is None else float(shot.cfg))
    put(t.denoise, None if shot.denoise is None else float(shot.denoise))
    put(t.width, None if shot.width is None else int(shot.width))
    put(t.height, None if shot.height is None else int(shot.height))
    if shot.frames is not None:
        for selector in t.frames:
            params[selector] = shape_length(shot.frames, t.length_rules.get(selector))
    if shot.fps is not None:
        for selector in t.fps:
            current = _current(workflow, selector)
            params[selector] = int(round(shot.fps)) if isinstance(current, int) else float(shot.fps)
    params.update(shot.extra)
    return params


def _current(workflow: dict[str, Any], selector: str) -> Any:
    node_id, _, name = selector.rpartition(".")
    return ((workflow.get(node_id) or {}).get("inputs") or {}).get(name)


# ---- results -----------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".exr", ".tif", ".tiff", ".bmp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac"})


def media_kind(path: str, kind: str | None = None) -> str:
    """``image``, ``video``, ``audio`` or ``other`` for a result file (by extension, then by the UI output key)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if kind in ("images",):
        return "image"
    if kind in ("gifs", "videos", "video"):
        return "video"
    if kind in ("audio", "audios"):
        return "audio"
    return "other"


@dataclass
class ImportPlan:
    """What "Import result" puts where: strips to add, in order, and images to load."""

    images: list[str] = field(default_factory=list)  # every image file (loaded as image datablocks)
    image_sequences: list[list[str]] = field(default_factory=list)  # per output node, ≥1 frames → one image strip
    videos: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def plan_import(outputs: list[dict[str, Any]]) -> ImportPlan:
    """Groups a job's result files: images per output node become one image strip (a sequence if several)."""
    plan = ImportPlan()
    by_node: dict[str, list[str]] = {}
    for out in outputs:
        path = str(out.get("path") or "")
        if not path:
            continue
        kind = media_kind(path, out.get("kind"))
        if kind == "image":
            plan.images.append(path)
            by_node.setdefault(str(out.get("node_id", "")), []).append(path)
        elif kind == "video":
            plan.videos.append(path)
        elif kind == "audio":
            plan.audio.append(path)
        else:
            plan.other.append(path)
    for paths in by_node.values():
        plan.image_sequences.append(sorted(paths))
    return plan
