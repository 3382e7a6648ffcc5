"""Result files → timeline items: animated PNGs (what the simulator writes for SaveAnimatedWEBP too) split into a
frame sequence without any library, animated WebP reported when nothing can decode it, videos as movies."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import pytest
from movie_director import media


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def raw_frame(value: int, width: int = 2, height: int = 2) -> bytes:
    return b"".join(b"\x00" + bytes([value, value, value]) * width for _ in range(height))


def apng(frames: list[int], width: int = 2, height: int = 2, sub_frame: bool = False) -> bytes:
    out = media.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    out += chunk(b"acTL", struct.pack(">II", len(frames), 0))
    seq = 0
    for index, value in enumerate(frames):
        w, h = (1, 1) if (sub_frame and index) else (width, height)
        out += chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0, 0, 1, 24, 0, 0))
        seq += 1
        data = zlib.compress(raw_frame(value, w, h))
        if index == 0:
            out += chunk(b"IDAT", data)
        else:
            out += chunk(b"fdAT", struct.pack(">I", seq) + data)
            seq += 1
    return out + chunk(b"IEND", b"")


def decoded(path: str) -> bytes:
    data = open(path, "rb").read()
    assert data.startswith(media.PNG_SIGNATURE)
    types = [t for t, _ in media._png_chunks(data)]
    assert types[0] == b"IHDR" and types[-1] == b"IEND" and b"fdAT" not in types and b"acTL" not in types
    return zlib.decompress(b"".join(body for t, body in media._png_chunks(data) if t == b"IDAT"))


def test_apng_named_webp_is_split_into_whole_png_frames(tmp_path):
    path = tmp_path / "ltx_00001_.webp"  # the simulator's SaveAnimatedWEBP writes APNG bytes
    path.write_bytes(apng([10, 20, 30]))
    assert media.animated_frames_hint(str(path)) == 3
    result = media.convert_animated(str(path))
    assert result.how == "apng" and len(result.frames) == 3
    assert [decoded(p) for p in result.frames] == [raw_frame(10), raw_frame(20), raw_frame(30)]
    assert all(os.path.dirname(p) == str(tmp_path / "ltx_00001__frames") for p in result.frames)
    assert media.convert_animated(str(path)).how == "already converted"


def test_a_still_is_left_alone(tmp_path):
    path = tmp_path / "still.png"
    path.write_bytes(media.PNG_SIGNATURE + chunk(b"IHDR", b"\x00" * 13) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    assert media.animated_frames_hint(str(path)) == 1
    assert media.convert_animated(str(path)) == media.Converted()


def test_sub_frames_need_compositing_and_are_not_split(tmp_path):
    path = tmp_path / "delta.png"
    path.write_bytes(apng([1, 2], sub_frame=True))
    with pytest.raises(ValueError, match="compositing"):
        media.split_apng(str(path), str(tmp_path / "frames"))


def test_animated_webp_without_a_decoder_is_reported(tmp_path, monkeypatch):
    def anmf() -> bytes:
        return b"ANMF" + struct.pack("<I", 2) + b"\x00\x00"

    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x02" + b"\x00" * 9 + anmf() + anmf()
    path = tmp_path / "real.webp"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert media.animated_frames_hint(str(path)) == 2
    monkeypatch.setitem(sys.modules, "PIL", None)  # no Pillow …
    monkeypatch.setattr(media.shutil, "which", lambda _name: None)  # … and no ffmpeg
    result = media.convert_animated(str(path))
    assert result.frames == [] and "could not be split" in result.problem and "Pillow" in result.problem
    plan = media.plan_import([{"path": str(path), "node_id": "41"}])
    assert plan.visuals == [("image", [str(path)])] and plan.problems == [result.problem]


def test_plan_import_groups_outputs(tmp_path):
    anim = tmp_path / "anim.png"
    anim.write_bytes(apng([1, 2]))
    still_a, still_b = tmp_path / "a_00001_.png", tmp_path / "a_00002_.png"
    for p in (still_a, still_b):
        p.write_bytes(media.PNG_SIGNATURE + chunk(b"IHDR", b"\x00" * 13) + chunk(b"IEND", b""))
    plan = media.plan_import(
        [
            {"path": str(still_b), "node_id": "9"},
            {"path": str(still_a), "node_id": "9"},
            {"path": str(anim), "node_id": "12"},
            {"path": str(tmp_path / "clip.mp4"), "node_id": "20"},
            {"path": str(tmp_path / "voice.wav"), "node_id": "30"},
            {"path": str(tmp_path / "latent.bin"), "node_id": "40"},
        ]
    )
    kinds = [(kind, [os.path.basename(f) for f in files]) for kind, files in plan.visuals]
    assert kinds == [
        ("image", ["frame_00001.png", "frame_00002.png"]),
        ("movie", ["clip.mp4"]),
        ("image", ["a_00001_.png", "a_00002_.png"]),
    ]
    assert [os.path.basename(p) for p in plan.audio] == ["voice.wav"]
    assert [os.path.basename(p) for p in plan.other] == ["latent.bin"]
    assert media.media_kind("x.gif") == "video" and media.media_kind("x.webm") == "video"


def animated_webp(path, frames: int = 2) -> None:
    anmf = b"ANMF" + struct.pack("<I", 2) + b"\x00\x00"
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x02" + b"\x00" * 9 + anmf * frames
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_slow_decoders_run_on_a_thread_and_report_when_done(tmp_path, monkeypatch):
    import threading
    import time

    path = tmp_path / "clip.webp"
    animated_webp(path, 3)
    release = threading.Event()

    def decoder(src, out_dir):  # stands in for Pillow: slow, and proves it is not on the caller's thread
        assert threading.current_thread() is not threading.main_thread()
        release.wait(10)
        os.makedirs(out_dir, exist_ok=True)
        frames = []
        for i in range(3):
            frames.append(os.path.join(out_dir, f"frame_{i + 1:05d}.png"))
            open(frames[-1], "wb").write(b"png")
        return frames

    monkeypatch.setattr(media, "_pillow_frames", decoder)
    assert media.needs_decoder(str(path))
    converter = media.Converter()
    assert converter.start("job-1", [str(path)])
    assert not converter.start("job-1", [str(path)])  # once per job
    assert converter.busy("job-1") and converter.collect() == []
    release.set()
    deadline = time.monotonic() + 10
    done: list[str] = []
    while not done and time.monotonic() < deadline:
        done = converter.collect()
        time.sleep(0.01)
    assert done == ["job-1"] and not converter.busy("job-1")
    converter.join()
    assert not media.needs_decoder(str(path))  # split: the take can land at once
    assert len(media.convert_animated(str(path)).frames) == 3
    apng_path = tmp_path / "sim.webp"
    apng_path.write_bytes(apng([1, 2]))
    assert not media.needs_decoder(str(apng_path))  # an APNG is split quickly in place
