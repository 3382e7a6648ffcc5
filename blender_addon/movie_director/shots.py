"""Shots: where they come from (timeline markers, Sequencer strips), how they keep their identity, and what each one
asks for (sequence-wide defaults merged with its own overrides). Pure Python: the bpy glue (``props``/``operators``)
reads markers and strips into the plain tuples below and writes the results back.

A shot's id is made once and never changes: a marker or a strip that is renamed or moved keeps its shot (and the
shot's takes). Markers cannot hold custom properties, so a marker is matched by its name first, then (renamed) by the
frame it was last seen at; a strip carries its shot id as a custom property (``STRIP_ID_PROP``), so a strip is
matched by that id first, then by name.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STRIP_ID_PROP = "movie_director_shot"  # on a source strip: the id of the shot it defines
TAKE_PROP = "movie_director_take"  # on a result strip: "<shot id>/<take id>" (never a shot source itself)

SEED_MAX = 2**64 - 1  # ComfyUI's seed inputs accept 0 … 0xffffffffffffffff


def new_shot_id(taken: Iterable[str] = ()) -> str:
    """A short random id (``sh-`` + 8 hex digits), unique among ``taken``."""
    used = set(taken)
    while True:
        candidate = "sh-" + secrets.token_hex(4)
        if candidate not in used:
            return candidate


@dataclass(frozen=True)
class Found:
    """A marker or strip that defines a shot, as read from the scene.

    ``frame_end`` is inclusive. ``ident`` is the shot id a strip carries (None for markers and fresh strips).
    """

    key: str  # the marker's or strip's name
    frame_start: int
    frame_end: int
    camera: str = ""
    channel: int = 0
    ident: str | None = None

    @property
    def frames(self) -> int:
        return self.frame_end - self.frame_start + 1


@dataclass(frozen=True)
class Known:
    """A shot already in the scene, as far as matching needs it."""

    shot_id: str
    source: str  # "MARKER" or "STRIP"
    key: str
    frame_start: int


@dataclass
class SyncPlan:
    """What to change in the scene's shot list: matched shots get their new range, new ones are added, the rest are
    marked missing (kept, with their takes: the marker may come back, and nothing on disk is lost)."""

    matched: list[tuple[str, Found]] = field(default_factory=list)
    new: list[Found] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def from_markers(markers: Iterable[tuple[str, int, str]], scene_end: int) -> list[Found]:
    """Shots from timeline markers ``(name, frame, camera name)``: sorted by frame, each running to the frame before
    the next marker; the last one runs to the scene's end (at least one frame). Markers on the same frame give one
    shot (the first by name)."""
    ordered = sorted(markers, key=lambda m: (m[1], m[0]))
    unique: list[tuple[str, int, str]] = []
    for marker in ordered:
        if unique and unique[-1][1] == marker[1]:
            continue
        unique.append(marker)
    found = []
    for index, (name, frame, camera) in enumerate(unique):
        if index + 1 < len(unique):
            end = unique[index + 1][1] - 1
        else:
            end = max(int(scene_end), int(frame))
        found.append(Found(key=name, frame_start=int(frame), frame_end=int(end), camera=camera or ""))
    return found


def from_strips(strips: Iterable[tuple[str, int, int, int, str | None]]) -> list[Found]:
    """Shots from strips ``(name, channel, frame_final_start, frame_final_end (exclusive), shot id or None)``, in
    timeline order."""
    ordered = sorted(strips, key=lambda s: (s[2], s[1], s[0]))
    return [
        Found(key=name, frame_start=int(start), frame_end=max(int(end) - 1, int(start)), channel=int(ch), ident=ident)
        for name, ch, start, end, ident in ordered
    ]


def plan_sync(known: Iterable[Known], found: Iterable[Found], source: str) -> SyncPlan:
    """Matches what the scene has now (``found``) to the shots of ``source`` already listed (``known``)."""
    plan = SyncPlan()
    pool = {k.shot_id: k for k in known if k.source == source}
    rest: list[Found] = []
    # 1. A strip that carries its shot id is that shot, whatever its name or place.
    for item in found:
        if item.ident and item.ident in pool:
            plan.matched.append((item.ident, item))
            del pool[item.ident]
        else:
            rest.append(item)
    # 2. Same name (moved). 3. Same frame as last seen (renamed).
    for attr_found, attr_known in (("key", "key"), ("frame_start", "frame_start")):
        unmatched: list[Found] = []
        for item in rest:
            value = getattr(item, attr_found)
            hit = next((k for k in pool.values() if getattr(k, attr_known) == value), None)
            if hit is None:
                unmatched.append(item)
            else:
                plan.matched.append((hit.shot_id, item))
                del pool[hit.shot_id]
        rest = unmatched
    plan.new = rest
    plan.missing = list(pool)
    return plan


# ---- settings: defaults and overrides ----------------------------------------------------------------------------

SEED_POLICIES = ("FIXED", "PER_SHOT", "RANDOM")


def parse_seed(text: str | int | None) -> int | None:
    """A seed typed as text (Blender's int properties stop at 2³¹−1): None for empty; ValueError when out of range."""
    if text is None:
        return None
    if isinstance(text, int):
        value = text
    else:
        stripped = str(text).strip()
        if not stripped:
            return None
        try:
            value = int(stripped, 0)
        except ValueError as exc:
            raise ValueError(f"seed {stripped!r} is not a whole number") from exc
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"seed {value} is outside 0 … {SEED_MAX}")
    return value


def shot_seed(base: int, policy: str, shot_id: str, rng_value: int | None = None) -> int:
    """The seed a shot's take is sent with: ``FIXED`` the same for every shot, ``PER_SHOT`` derived from the shot id
    (the same shot gets the same seed again), ``RANDOM`` ``rng_value`` (a fresh number per take)."""
    if policy == "RANDOM":
        if rng_value is None:
            rng_value = secrets.randbits(64)
        return int(rng_value) & SEED_MAX
    if policy == "PER_SHOT":
        digest = hashlib.sha256(f"{base}:{shot_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big")
    return int(base) & SEED_MAX


def parse_extra(text: str) -> dict[str, Any]:
    """Extra parameters, one ``selector = value`` per line or ``;``-separated (value as JSON when it parses)."""
    out: dict[str, Any] = {}
    for raw in text.replace(";", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        selector, sep, value = line.partition("=")
        selector, value = selector.strip(), value.strip()
        if not sep or not selector:
            raise ValueError(f"extra parameter {line!r}: expected selector = value")
        try:
            out[selector] = json.loads(value)
        except json.JSONDecodeError:
            out[selector] = value
    return out


@dataclass
class Settings:
    """What one shot's take asks for, defaults and overrides merged (None: the workflow's own value)."""

    prompt: str | None = None
    negative: str | None = None
    seed: int | None = None
    workflow: str = ""
    service: str = ""
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 1
    fps: float = 24.0
    extra: dict[str, Any] = field(default_factory=dict)
    random_seed: bool = False  # ``seed`` is a fresh random number: it may be folded into the input's range
    image: str | None = None  # the uploaded scene picture's name on the server (the workflow's image input)
    image_key: str = ""  # what that picture was made from (a changed camera, frame or file makes the shot stale)


def merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The shot's overrides over the sequence's defaults: an empty override ("" / None) means "the default";
    ``extra`` parameters are merged key by key (the shot's win)."""
    out = dict(defaults)
    for key, value in overrides.items():
        if key == "extra":
            out["extra"] = {**(defaults.get("extra") or {}), **(value or {})}
        elif value not in (None, ""):
            out[key] = value
    return out


def inputs_hash(settings: Settings, workflow_digest: str, seed_counts: bool = True) -> str:
    """A fingerprint of everything a take was made from; a shot whose fingerprint differs from its active take's is
    stale. A seed that is random per take does not count (every take has a new one by design)."""
    data = {
        "prompt": settings.prompt,
        "negative": settings.negative,
        "seed": settings.seed if seed_counts else None,
        "workflow": workflow_digest,
        "service": settings.service,
        "steps": settings.steps,
        "cfg": settings.cfg,
        "size": [settings.width, settings.height],
        "frames": settings.frames,
        "fps": settings.fps,
        "extra": settings.extra,
    }
    if settings.image_key:  # only then: a take that sent no picture keeps its fingerprint
        data["image"] = settings.image_key
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (the workflow file: editing it makes every shot using it stale); "" if unreadable."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return ""


# ---- what the panel shows for a shot -------------------------------------------------------------------------------

NOT_GENERATED = "not_generated"


@dataclass(frozen=True)
class ShotStatus:
    state: (
        str  # not_generated, waiting, pending, queued, running, waiting_server, completed, failed, cancelled, missing
    )
    text: str
    progress: float | None = None  # 0..1 while running
    alert: bool = False


def status_line(
    job_state: str | None,
    takes: int,
    queue_position: int | None = None,
    percentage: float = 0.0,
    node: str | None = None,
    message: str = "",
    stale: bool = False,
    missing: bool = False,
    server_down: str | None = None,
) -> ShotStatus:
    """The one line the shot list shows for a shot (its newest job's state, else its takes). ``server_down``: why
    the shot's server cannot be reached now (its queued/unsent shot waits for it and resumes by itself)."""
    suffix = " · stale" if stale else ""
    if missing:
        return ShotStatus("missing", "Its marker/strip is gone (takes kept)", alert=True)
    if server_down and job_state in ("pending", "submitting", "queued", "running"):
        return ShotStatus("waiting_server", f"Waiting for the server: {server_down}")
    if job_state == "waiting":
        return ShotStatus("waiting", "In the batch, not sent yet")
    if job_state in ("pending", "submitting"):
        return ShotStatus("pending", "Sent, waiting for the server")
    if job_state == "queued":
        where = f" (position {queue_position + 1})" if queue_position is not None and queue_position >= 0 else ""
        return ShotStatus("queued", f"Queued{where}")
    if job_state == "running":
        pct = max(0.0, min(100.0, float(percentage or 0.0)))
        return ShotStatus("running", f"Running {pct:.0f}%" + (f" · {node}" if node else ""), progress=pct / 100.0)
    if job_state == "failed":
        return ShotStatus("failed", f"Failed: {message}" if message else "Failed", alert=True)
    if job_state == "cancelled" and not takes:
        return ShotStatus("cancelled", "Cancelled")
    if takes:
        return ShotStatus("completed", f"Done · {takes} take{'s' if takes != 1 else ''}{suffix}")
    return ShotStatus(NOT_GENERATED, "Not generated")


# ---- a shot on a Gradio app (Wan2GP, RVC, AudioLDM …) ------------------------------------------------------------

PLACEHOLDERS = ("prompt", "negative", "seed", "frames", "fps", "width", "height", "image", "audio")


def gradio_inputs(
    template: str, settings: Settings, image_path: str | None = None, audio_path: str | None = None
) -> list[Any]:
    """A Gradio endpoint's inputs from ``template`` (a JSON list, one value per input component): a string that is
    exactly ``"{prompt}"`` (or ``{seed}``, ``{frames}``, ``{fps}``, ``{width}``, ``{height}``, ``{negative}``) becomes
    the shot's value with its type; ``"{image}"`` becomes the shot's picture and ``"{audio}"`` the sound under the
    shot (RVC's recorded line), each as a file to upload; placeholders inside longer strings are replaced as text.
    ValueError names what is wrong."""
    try:
        values = json.loads(template) if template.strip() else ["{prompt}"]
    except json.JSONDecodeError as exc:
        raise ValueError(f"Gradio inputs are not a JSON list: {exc.msg} at character {exc.pos}") from exc
    if not isinstance(values, list):
        raise ValueError("Gradio inputs must be a JSON list (one value per input of the endpoint)")
    known = {
        "prompt": settings.prompt or "",
        "negative": settings.negative or "",
        "seed": settings.seed,
        "frames": settings.frames,
        "fps": settings.fps,
        "width": settings.width,
        "height": settings.height,
    }
    out: list[Any] = []
    for value in values:
        if isinstance(value, str) and value == "{image}":
            if not image_path:
                raise ValueError("the Gradio inputs ask for {image}, but the shot has no input picture")
            out.append({"path": image_path})  # ``director_link.gradio_file``: uploaded before the call
        elif isinstance(value, str) and value == "{audio}":
            if not audio_path:
                raise ValueError("the Gradio inputs ask for {audio}, but no sound strip lies under the shot")
            out.append({"path": audio_path})
        elif isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in known:
            out.append(known[value[1:-1]])
        elif isinstance(value, str) and "{" in value:
            text = value
            for key, given in known.items():
                text = text.replace("{" + key + "}", "" if given is None else str(given))
            out.append(text)
        else:
            out.append(value)
    return out


def gradio_setup(text: str) -> tuple[str, list[Any]] | None:
    """The sequence's setup call, made once per service before its shots (RVC loads the voice with
    ``/infer_change_voice``, kept by the app in the session the shots share): ``["/endpoint", [inputs…]]`` as JSON;
    None when empty. ValueError names what is wrong."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the Gradio setup call is not JSON: {exc.msg} at character {exc.pos}") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not value[0].strip()
        or not isinstance(value[1], list)
    ):
        raise ValueError('the Gradio setup call must be ["/endpoint", [inputs…]], e.g. ["/infer_change_voice", …]')
    return value[0].strip(), value[1]
