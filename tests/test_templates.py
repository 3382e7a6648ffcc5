"""The shipped templates (``workflows/``) load, their bindings' selectors resolve, and each runs end to end on the
simulator's model stand-ins: progress and previews from the sampler, output files landed, and different seeds or
prompts giving different pixels."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest
from director_link import workflows

from .conftest import ROOT, collect, connect

pytestmark = pytest.mark.sim_only

TEMPLATES = ["sd_basic", "ltx_video", "ltx_img2video", "upscale_4x", "controlnet_pose"]

# Small sizes and few steps keep each run well under a second of node time at the suite's time scale.
FAST = {
    "sd_basic": {"latent.width": 256, "latent.height": 192, "sampler.steps": 6},
    "ltx_video": {"latent.width": 128, "latent.height": 96, "frames.length": 17, "sampler.steps": 4},
    "ltx_img2video": {"latent.width": 128, "latent.height": 96, "frames.length": 9, "sampler.steps": 3},
    "upscale_4x": {},
    "controlnet_pose": {"latent.width": 192, "latent.height": 256, "sampler.steps": 5},
}


def png_bytes(w: int, h: int, seed: int = 0) -> bytes:
    """A small RGB PNG with a seed-dependent gradient."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(w) for v in ((x * 7 + seed) % 256, (y * 11 + seed) % 256, (x + y) % 256))
        for y in range(h)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def png_size(data: bytes) -> tuple[int, int]:
    ihdr = dict(png_chunks(data))[b"IHDR"]
    return struct.unpack(">II", ihdr[:8])


def pixels(path: Path) -> bytes:
    """The image data of a PNG/APNG without its text chunks (the prompt, with the seed, is stored in them)."""
    return b"".join(body for kind, body in png_chunks(path.read_bytes()) if kind in (b"IDAT", b"fdAT"))


def frame_count(data: bytes) -> int:
    chunks = dict(png_chunks(data))
    return struct.unpack(">I", chunks[b"acTL"][:4])[0] if b"acTL" in chunks else 1


def bindings(name: str) -> dict:
    return json.loads((ROOT / "workflows" / f"{name}.bindings.json").read_text())


def run(hub, svc: str, name: str, params: dict, tag: str, timeout: float = 60.0):
    """Submits the template file with role/title/class selectors as ``params`` and waits for it to complete."""
    params = {**FAST[name], **params}
    job = hub.submit(svc, str(ROOT / "workflows" / f"{name}.json"), params=params, tag=tag)
    got = collect(hub, [job.id], timeout=timeout)
    done = got.terminal(job.id)
    assert done.type == "job_completed", [(e.type, getattr(e, "message", "")) for e in got.of(job.id)]
    return job, got, done


def upload(hub, svc: str, name: str, w: int, h: int, seed: int = 0) -> str:
    return hub.upload_image(svc, png_bytes(w, h, seed), name=name)


def approx_equal(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_loads_and_its_bindings_resolve(name):
    assert name in workflows.names()
    wf = workflows.load(name)
    assert wf.format == "api"
    b = bindings(name)
    assert b["name"] == name and b["description"]
    assert workflows.bindings(name) == b
    nodes = wf.to_dict()
    targets = set()
    for p in b["parameters"]:
        assert {"label", "selector", "type", "default"} <= p.keys(), p
        value = wf.get(p["selector"])
        assert approx_equal(value, p["default"]), (p["selector"], value, p["default"])
        target = workflows.load(name).set(p["selector"], p["default"])
        node_id, _, input_name = target.partition(".")
        assert input_name in nodes[node_id]["inputs"], target
        targets.add(target)
    assert len(targets) == len(b["parameters"]), "every parameter reaches its own input"
    for o in b["outputs"]:
        assert o["node"] in nodes and o["kind"] in ("image", "video")


def sampler_events(got, job, node_id: str, steps: int) -> None:
    progress = [e for e in got.of(job.id) if e.type == "progress" and e.node_id == node_id]
    assert progress and (progress[-1].value, progress[-1].max) == (steps, steps), [(p.value, p.max) for p in progress]
    previews = [e for e in got.of(job.id) if e.type == "preview" and e.node_id == node_id]
    assert previews and all(p.format == "jpeg" and p.data[:2] == b"\xff\xd8" for p in previews)


def test_sd_basic_runs_and_seeds_and_prompts_change_the_pixels(hub, server):
    svc = connect(hub, server)
    job, got, done = run(hub, svc, "sd_basic", {"positive.text": "a red fox", "sampler.seed": 7}, "fox_7")
    sampler_events(got, job, "3", 6)
    started = [e.node_type for e in got.of(job.id) if e.type == "node_started"]
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage"} <= set(started)
    [path] = [Path(p) for p in done.paths]
    assert path.suffix == ".png" and png_size(path.read_bytes()) == (256, 192)
    first = pixels(path)

    _, _, other_seed = run(hub, svc, "sd_basic", {"positive.text": "a red fox", "sampler.seed": 8}, "fox_8")
    _, _, other_text = run(hub, svc, "sd_basic", {"positive.text": "a grey wolf", "sampler.seed": 7}, "wolf_7")
    seed_px, text_px = pixels(Path(other_seed.paths[0])), pixels(Path(other_text.paths[0]))
    assert first != seed_px, "another seed, other pixels"
    assert first != text_px, "another prompt, other pixels"
    assert seed_px != text_px

    # The same inputs again (under another file name): the same pixels; the checkpoint stays cached.
    same = {"positive.text": "a red fox", "sampler.seed": 7, "SaveImage.filename_prefix": "dl_test/again"}
    job, got, again = run(hub, svc, "sd_basic", same, "fox_7b")
    assert "CheckpointLoaderSimple" not in [e.node_type for e in got.of(job.id) if e.type == "node_started"]
    assert pixels(Path(again.paths[0])) == first


def test_ltx_video_runs_and_saves_every_frame(hub, server):
    svc = connect(hub, server)
    job, got, done = run(hub, svc, "ltx_video", {"positive.text": "a fox in the snow", "sampler.seed": 3}, "ltx")
    sampler_events(got, job, "72", 4)
    out = next(e for e in got.of(job.id) if e.type == "node_output" and e.node_id == "41")
    assert out.output["animated"] == [True] and out.output["images"][0]["filename"].endswith(".webp")
    [path] = [Path(p) for p in done.paths]
    data = path.read_bytes()
    assert path.suffix == ".webp"
    assert frame_count(data) == 17, "LTX-Video decodes 8*n + 1 frames"
    assert png_size(data) == (128, 96)
    # (length - 1) // 8 * 8 + 1 frames: 20 → 17.
    _, _, other = run(hub, svc, "ltx_video", {"frames.length": 20, "sampler.seed": 4}, "ltx2")
    other_data = Path(other.paths[0]).read_bytes()
    assert frame_count(other_data) == 17 and pixels(Path(other.paths[0])) != pixels(path)


def test_ltx_img2video_animates_the_uploaded_frame(hub, server):
    svc = connect(hub, server)
    start = upload(hub, svc, "dl_test_start.png", 64, 48, seed=2)
    job, got, done = run(hub, svc, "ltx_img2video", {'"Start Frame".image': start}, "i2v")
    sampler_events(got, job, "72", 3)
    started = {e.node_type for e in got.of(job.id) if e.type == "node_started"}
    assert {"LoadImage", "LTXVPreprocess", "LTXVImgToVideo", "SamplerCustom"} <= started
    [path] = [Path(p) for p in done.paths]
    data = path.read_bytes()
    assert path.suffix == ".webp" and frame_count(data) == 9 and png_size(data) == (128, 96)
    other = upload(hub, svc, "dl_test_start2.png", 64, 48, seed=77)
    _, _, again = run(hub, svc, "ltx_img2video", {'"Start Frame".image': other}, "i2v2")
    assert pixels(Path(again.paths[0])) != pixels(path), "another start frame, other frames"


def test_ltx_checkpoint_has_no_text_encoder(hub, server):
    """Like the real server: an LTX-Video checkpoint's CLIP output is None, so the T5 loader is needed."""
    svc = connect(hub, server)
    prompt = workflows.load("ltx_video").to_dict()
    prompt["6"]["inputs"]["clip"] = ["44", 1]
    job = hub.submit(svc, prompt)
    failed = collect(hub, [job.id], timeout=30).terminal(job.id)
    assert failed.type == "job_failed" and failed.node_id == "6"
    assert "clip input is invalid: None" in failed.message


def test_upscale_4x_multiplies_the_size(hub, server):
    svc = connect(hub, server)
    name = upload(hub, svc, "dl_test_upscale.png", 40, 30)
    job, got, done = run(hub, svc, "upscale_4x", {'"Load Image".image': name}, "upscale")
    [path] = [Path(p) for p in done.paths]
    assert png_size(path.read_bytes()) == (160, 120)
    # Large inputs are clamped by the simulator (1 Mpx per frame), aspect kept.
    big = upload(hub, svc, "dl_test_big.png", 400, 300)
    _, _, clamped = run(hub, svc, "upscale_4x", {'"Load Image".image': big}, "upscale_big")
    w, h = png_size(Path(clamped.paths[0]).read_bytes())
    assert w * h <= 1024 * 1024 and abs(w / h - 4 / 3) < 0.01


def test_unknown_upscale_model_fails_at_run_time(hub, server):
    """The loader's list is a new-style COMBO the server does not validate: a wrong name fails when it runs."""
    svc = connect(hub, server)
    name = upload(hub, svc, "dl_test_upscale.png", 16, 16)
    prompt = workflows.load("upscale_4x").to_dict()
    prompt["1"]["inputs"]["image"] = name
    prompt["2"]["inputs"]["model_name"] = "nope_x4.pth"
    job = hub.submit(svc, prompt)
    failed = collect(hub, [job.id], timeout=30).terminal(job.id)
    assert failed.type == "job_failed" and failed.node_id == "2"
    assert "nope_x4.pth" in failed.message


def test_controlnet_pose_runs_and_the_pose_matters(hub, server):
    svc = connect(hub, server)
    pose = upload(hub, svc, "dl_test_pose.png", 48, 64, seed=1)
    job, got, done = run(hub, svc, "controlnet_pose", {'"Pose Image".image': pose, "sampler.seed": 5}, "pose")
    sampler_events(got, job, "3", 5)
    started = {e.node_type for e in got.of(job.id) if e.type == "node_started"}
    assert {"LoadImage", "ControlNetLoader", "ControlNetApplyAdvanced", "KSampler"} <= started
    [path] = [Path(p) for p in done.paths]
    assert png_size(path.read_bytes()) == (192, 256)
    other_pose = upload(hub, svc, "dl_test_pose2.png", 48, 64, seed=99)
    _, _, other = run(hub, svc, "controlnet_pose", {'"Pose Image".image': other_pose, "sampler.seed": 5}, "pose2")
    assert pixels(Path(other.paths[0])) != pixels(path), "another pose, other pixels"
    no_pose = {'"Pose Image".image': pose, "sampler.seed": 5, '"Apply ControlNet".strength': 0.0}
    _, _, off = run(hub, svc, "controlnet_pose", no_pose, "off")
    assert pixels(Path(off.paths[0])) != pixels(path), "strength 0 ignores the pose"
