"""Result files → what Blender can put on the timeline (pure Python, no bpy).

Blender plays MP4, WebM, MOV, MKV, AVI and GIF as movie strips (through its FFmpeg) and shows PNG/JPEG/WebP/EXR stills
as image strips, but it shows only the first frame of an animated WebP or an animated PNG (what ComfyUI's
SaveAnimatedWEBP / SaveAnimatedPNG write). Those become a numbered PNG sequence next to the file (an image strip with
one element per frame): an APNG whose frames cover the whole canvas is split here without any library; anything else
animated is decoded with Pillow when Blender's Python has it, else with an ``ffmpeg`` on the PATH; when neither is
there the file stays a still and the reason is reported.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".exr", ".tif", ".tiff", ".bmp"})
MOVIE_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac"})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAMES_DIR_SUFFIX = "_frames"


def media_kind(path: str, kind: str | None = None) -> str:
    """``image``, ``video``, ``audio`` or ``other`` for a result file (by extension, then by the output key)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in MOVIE_EXTENSIONS:
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


# ---- animated images -----------------------------------------------------------------------------------------------


def _png_chunks(data: bytes):
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        yield ctype, body
        pos += 12 + length
        if ctype == b"IEND":
            return


def animated_frames_hint(path: str) -> int:
    """How many frames an image file holds by its header (1 for a still; 0 when unreadable). Reads APNG's acTL
    and WebP's ANIM/ANMF chunks; a ``.webp`` may really be an APNG (the simulator writes one)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return 0
    if data.startswith(PNG_SIGNATURE):
        try:
            for ctype, body in _png_chunks(data):
                if ctype == b"acTL" and len(body) >= 8:
                    return max(struct.unpack(">I", body[:4])[0], 1)
                if ctype == b"IDAT":
                    return 1
        except ValueError:
            return 0
        return 1
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        count, pos = 0, 12
        while pos + 8 <= len(data):
            ctype = data[pos : pos + 4]
            (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
            if ctype == b"ANMF":
                count += 1
            pos += 8 + size + (size & 1)
        return max(count, 1)
    return 1


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def split_apng(path: str, out_dir: str) -> list[str]:
    """Writes each frame of an APNG as its own PNG; returns their paths. Raises ``ValueError`` for frames that do not
    cover the whole canvas (those need compositing: left to Pillow/ffmpeg)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    ihdr = b""
    shared: list[tuple[bytes, bytes]] = []  # PLTE, tRNS, gAMA … (before the first frame)
    frames: list[list[bytes]] = []
    current: list[bytes] | None = None
    for ctype, body in _png_chunks(data):
        if ctype == b"IHDR":
            ihdr = body
        elif ctype == b"fcTL":
            width, height, x, y = struct.unpack(">IIII", body[4:20])
            if ihdr and (width, height, x, y) != (*struct.unpack(">II", ihdr[:8]), 0, 0):
                raise ValueError("APNG frames smaller than the canvas need compositing")
            current = []
            frames.append(current)
        elif ctype == b"IDAT":
            if current is not None:  # IDAT without fcTL before it is a default image, not a frame
                current.append(body)
        elif ctype == b"fdAT":
            if current is None:
                raise ValueError("fdAT before fcTL")
            current.append(body[4:])
        elif ctype not in (b"acTL", b"IEND") and not frames:
            shared.append((ctype, body))
    if not ihdr or not frames:
        raise ValueError("no animation frames")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index, parts in enumerate(frames):
        target = os.path.join(out_dir, f"frame_{index + 1:05d}.png")
        blob = PNG_SIGNATURE + _chunk(b"IHDR", ihdr)
        blob += b"".join(_chunk(t, b) for t, b in shared)
        blob += _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
        with open(target, "wb") as fh:
            fh.write(blob)
        paths.append(target)
    return paths


def _pillow_frames(path: str, out_dir: str) -> list[str]:
    from PIL import Image, ImageSequence  # not in every Blender: ImportError tells the caller to try ffmpeg

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    with Image.open(path) as img:
        for index, frame in enumerate(ImageSequence.Iterator(img)):
            target = os.path.join(out_dir, f"frame_{index + 1:05d}.png")
            frame.convert("RGBA").save(target)
            paths.append(target)
    return paths


def _ffmpeg_frames(path: str, out_dir: str, ffmpeg: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    pattern = os.path.join(out_dir, "frame_%05d.png")
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", path, pattern],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return sorted(os.path.join(out_dir, n) for n in os.listdir(out_dir) if n.endswith(".png"))


@dataclass
class Converted:
    frames: list[str] = field(default_factory=list)  # a PNG sequence (empty: use the file as it is)
    how: str = ""
    problem: str = ""


def frames_dir(path: str) -> str:
    stem, _ext = os.path.splitext(path)
    return stem + FRAMES_DIR_SUFFIX


def convert_animated(path: str) -> Converted:
    """An animated WebP/PNG as a PNG sequence in ``<file>_frames/`` (kept on disk next to the take); a still or an
    unreadable file gives an empty result."""
    if animated_frames_hint(path) <= 1:
        return Converted()
    out_dir = frames_dir(path)
    existing = sorted(os.path.join(out_dir, n) for n in os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if existing:
        return Converted(existing, "already converted")
    problems = []
    try:
        return Converted(split_apng(path, out_dir), "apng")
    except (ValueError, OSError) as exc:
        problems.append(f"APNG: {exc}")
    try:
        return Converted(_pillow_frames(path, out_dir), "pillow")
    except ImportError:
        problems.append("Pillow is not installed in Blender's Python")
    except Exception as exc:  # a decoder error: try the next way
        problems.append(f"Pillow: {exc}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        try:
            return Converted(_ffmpeg_frames(path, out_dir, ffmpeg), "ffmpeg")
        except (subprocess.SubprocessError, OSError) as exc:
            problems.append(f"ffmpeg: {exc}")
    else:
        problems.append("no ffmpeg on the PATH")
    return Converted(problem=f"{os.path.basename(path)} is animated but could not be split ({'; '.join(problems)})")


def needs_decoder(path: str) -> bool:
    """An animated file that only Pillow or ffmpeg can split (seconds for a long clip): converted off Blender's
    thread first. An APNG is split in place quickly; a still or a file already split needs nothing."""
    if media_kind(path) != "image" or os.path.isdir(frames_dir(path)):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return not head.startswith(PNG_SIGNATURE) and animated_frames_hint(path) > 1


class Converter:
    """Splits animated files on short-lived threads; ``collect()`` (from the timer) returns the keys whose files
    are ready. What a conversion could not do is found again by ``convert_animated`` when the take lands."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._done: list[str] = []
        self._lock = threading.Lock()

    def start(self, key: str, paths: list[str]) -> bool:
        """Starts converting ``paths`` for ``key`` (a job id); False when it is already under way."""
        with self._lock:
            if key in self._threads:
                return False

        def run() -> None:
            for path in paths:
                try:
                    convert_animated(path)
                except Exception:  # reported when the take lands (convert_animated is asked again there)
                    pass
            with self._lock:
                self._threads.pop(key, None)
                self._done.append(key)

        thread = threading.Thread(target=run, name=f"movie-director-convert-{key[:8]}", daemon=True)
        with self._lock:
            self._threads[key] = thread
        thread.start()
        return True

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._threads

    def collect(self) -> list[str]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def join(self, timeout: float = 10.0) -> None:
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)


# ---- a take's files → strips -------------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What a finished job puts on the timeline: per output node, one visual item (a still, a PNG sequence or a
    movie), plus audio files and whatever else it wrote."""

    visuals: list[tuple[str, list[str]]] = field(default_factory=list)  # ("image" | "movie", files)
    images: list[str] = field(default_factory=list)  # every still image (loaded as image datablocks too)
    audio: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan_import(outputs: list[dict[str, Any]], convert: bool = True) -> ImportPlan:
    """Groups a job's result files: the images of one output node become one image strip (a sequence if several),
    an animated image becomes a PNG sequence (see :func:`convert_animated`), a video a movie strip."""
    plan = ImportPlan()
    by_node: dict[str, list[str]] = {}
    for out in outputs:
        path = str(out.get("path") or "")
        if not path:
            continue
        kind = media_kind(path, out.get("kind"))
        if kind == "image":
            converted = convert_animated(path) if convert and out.get("animated", True) else Converted()
            if converted.frames:
                plan.visuals.append(("image", converted.frames))
                continue
            if converted.problem:
                plan.problems.append(converted.problem)
            plan.images.append(path)
            by_node.setdefault(str(out.get("node_id", "")), []).append(path)
        elif kind == "video":
            plan.visuals.append(("movie", [path]))
        elif kind == "audio":
            plan.audio.append(path)
        else:
            plan.other.append(path)
    for paths in by_node.values():
        plan.visuals.append(("image", sorted(paths)))
    return plan
