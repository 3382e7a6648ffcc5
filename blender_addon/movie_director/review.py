"""Review and hand-off (pure Python, no ``bpy``): the cut — each shot's active take at the shot's place — as an
OpenTimelineIO file for editors, and a contact sheet of shots × takes with each take's approve/reject mark.

The ``.otio`` file is OpenTimelineIO's JSON (``Timeline.1`` with a video and an audio ``Track.1``; ``Gap.1`` where
no shot is; ``Clip.2`` with an ``ExternalReference.1`` for a still or a movie, an ``ImageSequenceReference.1`` for a
frame sequence), written here so Blender needs no extra package; the tests read it back with the
``opentimelineio`` library from PyPI. Each clip's metadata (``director_link``) names the shot, take, job, seed and
review mark. The contact sheet is one HTML file next to the takes (paths relative to it, so the folder can be sent).
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import media

REVIEW_MARKS = ("", "approved", "rejected")
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")


@dataclass
class TakeEntry:
    """One take as the contact sheet shows it."""

    number: int
    job_id: str
    state: str
    seed: str = ""
    files: list[str] = field(default_factory=list)
    review: str = ""
    active: bool = False
    message: str = ""


@dataclass
class ShotEntry:
    """One shot: its place on the timeline and its takes."""

    shot_id: str
    name: str
    frame_start: int
    frames: int
    prompt: str = ""
    takes: list[TakeEntry] = field(default_factory=list)

    @property
    def active_take(self) -> TakeEntry | None:
        return next((t for t in self.takes if t.active), None)


# ---- the cut as OpenTimelineIO ---------------------------------------------------------------------------------------


def _time(value: float, rate: float) -> dict[str, Any]:
    return {"OTIO_SCHEMA": "RationalTime.1", "rate": float(rate), "value": float(value)}


def _range(start: float, duration: float, rate: float) -> dict[str, Any]:
    return {"OTIO_SCHEMA": "TimeRange.1", "duration": _time(duration, rate), "start_time": _time(start, rate)}


def _item(schema: str, name: str, source_range: dict | None, metadata: dict | None = None) -> dict[str, Any]:
    return {
        "OTIO_SCHEMA": schema,
        "metadata": metadata or {},
        "name": name,
        "source_range": source_range,
        "effects": [],
        "markers": [],
        "enabled": True,
    }


def file_url(path: str) -> str:
    return Path(os.path.abspath(path)).as_uri()


def media_reference(files: list[str], frames: int, rate: float) -> tuple[dict[str, Any], int]:
    """The reference for a take's picture and how many frames it has: a frame sequence (numbered files in one
    folder) as an ``ImageSequenceReference``, a movie or a still as an ``ExternalReference``."""
    if len(files) > 1:
        first = _NUMBERED.match(os.path.basename(files[0]))
        folder = os.path.dirname(os.path.abspath(files[0]))
        if first and all(os.path.dirname(os.path.abspath(f)) == folder for f in files):
            digits = first.group("digits")
            ref = {
                "OTIO_SCHEMA": "ImageSequenceReference.1",
                "metadata": {},
                "name": "",
                "available_range": _range(0, len(files), rate),
                "available_image_bounds": None,
                "target_url_base": file_url(folder).rstrip("/") + "/",
                "name_prefix": first.group("prefix"),
                "name_suffix": first.group("suffix"),
                "start_frame": int(digits),
                "frame_step": 1,
                "rate": float(rate),
                "frame_zero_padding": len(digits) if digits.startswith("0") else 0,
                "missing_frame_policy": "error",
            }
            return ref, len(files)
    still = media.media_kind(files[0]) == "image"
    ref = {
        "OTIO_SCHEMA": "ExternalReference.1",
        "metadata": {},
        "name": "",
        # A still is held for the whole shot; a movie's own length is not read here (no decoder in Blender's Python).
        "available_range": _range(0, frames, rate) if still else None,
        "available_image_bounds": None,
        "target_url": file_url(files[0]),
    }
    return ref, frames


def _track(name: str, kind: str, children: list[dict]) -> dict[str, Any]:
    track = _item("Track.1", name, None)
    track["children"] = children
    track["kind"] = kind
    return track


def timeline(name: str, rate: float, shots: list[ShotEntry], start_frame: int = 1) -> dict[str, Any]:
    """The cut: each shot's active take (completed, with files) at the shot's frames on the video track (sounds on
    the audio track), gaps where no shot has one. Frames are counted from ``start_frame`` (the scene's start)."""
    video: list[dict] = []
    audio: list[dict] = []
    ends = {"video": start_frame, "audio": start_frame}
    for shot in sorted(shots, key=lambda s: s.frame_start):
        take = shot.active_take
        if take is None or take.state != "completed" or not take.files:
            continue
        files = [f for f in take.files if os.path.isfile(f)]
        sounds = [f for f in files if media.media_kind(f) == "audio"]
        pictures = [f for f in files if media.media_kind(f) in ("image", "video")]
        if len(pictures) == 1 and os.path.isdir(media.frames_dir(pictures[0])):
            # An animated file split into frames for Blender: the editor gets the same frames.
            folder = media.frames_dir(pictures[0])
            frames = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(".png"))
            pictures = frames or pictures
        meta = {
            "director_link": {
                "shot_id": shot.shot_id,
                "shot": shot.name,
                "take": take.number,
                "job_id": take.job_id,
                "seed": take.seed,
                "review": take.review or "unreviewed",
                "prompt": shot.prompt,
            }
        }
        for lane, wanted, track in (("video", pictures, video), ("audio", sounds[:1], audio)):
            if not wanted:
                continue
            start = max(shot.frame_start, ends[lane])  # never over the previous clip (shots do not overlap)
            if start > ends[lane]:
                track.append(_item("Gap.1", "", _range(0, start - ends[lane], rate)))
            if lane == "video":
                ref, _available = media_reference(wanted, shot.frames, rate)
            else:
                ref = {
                    "OTIO_SCHEMA": "ExternalReference.1",
                    "metadata": {},
                    "name": "",
                    "available_range": None,
                    "available_image_bounds": None,
                    "target_url": file_url(wanted[0]),
                }
            clip = _item("Clip.2", f"{shot.name} · take {take.number}", _range(0, shot.frames, rate), meta)
            clip["media_references"] = {"DEFAULT_MEDIA": ref}
            clip["active_media_reference_key"] = "DEFAULT_MEDIA"
            track.append(clip)
            ends[lane] = start + shot.frames
    stack = _item("Stack.1", "tracks", None)
    stack["children"] = [_track("Director Link", "Video", video)] + (
        [_track("Director Link audio", "Audio", audio)] if audio else []
    )
    return {
        "OTIO_SCHEMA": "Timeline.1",
        "metadata": {
            "director_link": {"shots": len(shots), "in_cut": sum(1 for c in video if "media_references" in c)}
        },
        "name": name,
        "global_start_time": _time(start_frame, rate),
        "tracks": stack,
    }


def write_json(path: str, data: dict[str, Any]) -> str:
    """Writes ``data`` (temp file + rename: an editor never opens half a file); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path


# ---- the contact sheet -----------------------------------------------------------------------------------------------


def thumbnail(files: list[str]) -> str | None:
    """The picture that stands for a take: its first still, or the first frame of its frame sequence."""
    for path in files:
        if media.media_kind(path) == "image" and os.path.isfile(path):
            frames = media.frames_dir(path)
            if os.path.isdir(frames):  # an animated file split into frames: the first frame
                names = sorted(n for n in os.listdir(frames) if n.lower().endswith(".png"))
                if names:
                    return os.path.join(frames, names[0])
            return path
    return None


_STYLE = """
body { background: #1d1d1d; color: #ddd; font: 14px system-ui, sans-serif; margin: 24px; }
table { border-collapse: collapse; } td, th { border: 1px solid #333; padding: 8px; vertical-align: top; }
th { text-align: left; } .take { width: 220px; } .take img { max-width: 208px; display: block; }
.active { outline: 2px solid #4a90e2; } .approved { color: #7c7; } .rejected { color: #e66; }
.failed { color: #e66; } small { color: #999; }
"""


def contact_sheet(title: str, shots: list[ShotEntry], folder: str) -> str:
    """The HTML of a contact sheet written in ``folder`` (image paths relative to it): one row per shot, one cell per
    take with its picture, number, seed, state and review mark; the active take outlined."""

    def rel(path: str) -> str:
        try:
            return quote(os.path.relpath(path, folder).replace(os.sep, "/"))
        except ValueError:  # another drive (Windows): an absolute URL
            return file_url(path)

    columns = max((len(s.takes) for s in shots), default=0)
    out = [
        "<!doctype html>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(shots)} shots · {sum(len(s.takes) for s in shots)} takes · "
        f"{sum(1 for s in shots for t in s.takes if t.review == 'approved')} approved · "
        f"{sum(1 for s in shots for t in s.takes if t.review == 'rejected')} rejected</p>",
        "<table>",
        "<tr><th>Shot</th>" + "".join(f"<th>Take {i + 1}</th>" for i in range(columns)) + "</tr>",
    ]
    for shot in sorted(shots, key=lambda s: s.frame_start):
        end = shot.frame_start + shot.frames - 1
        cells = [
            f"<td><b>{html.escape(shot.name)}</b><br><small>frames {shot.frame_start}–{end} ({shot.frames})"
            f"</small><br>{html.escape(shot.prompt)}</td>"
        ]
        for take in shot.takes:
            classes = ["take"] + (["active"] if take.active else [])
            picture = thumbnail(take.files)
            body = f'<img src="{rel(picture)}" alt="take {take.number}">' if picture else ""
            if not picture and take.files:
                body = f'<a href="{rel(take.files[0])}">{html.escape(os.path.basename(take.files[0]))}</a>'
            mark = f' · <span class="{take.review}">{take.review}</span>' if take.review else ""
            state = take.state if take.state != "completed" else "done"
            line = f'<span class="{html.escape(take.state)}">{html.escape(state)}</span>'
            text = f"<br><small>{html.escape(take.message)}</small>" if take.message else ""
            cells.append(
                f'<td class="{" ".join(classes)}">{body}Take {take.number}{" (in the cut)" if take.active else ""}'
                f"<br><small>seed {html.escape(take.seed)}</small> · {line}{mark}{text}</td>"
            )
        cells += ["<td></td>"] * (columns - len(shot.takes))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out) + "\n"


def write_text(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
