"""Scene values → workflow parameters, read from the graph itself."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from movie_director import mapping as mp

ROOT = Path(__file__).resolve().parents[2]


def sd15():
    return json.loads((ROOT / "workflows" / "sd15_txt2img.json").read_text())


def test_render_size_percentage_and_multiple():
    assert mp.render_size(1920, 1080, 100) == (1920, 1080)
    assert mp.render_size(1920, 1080, 50) == (960, 544)  # 540 → nearest multiple of 8
    assert mp.render_size(1001, 3, 100, multiple=1) == (1001, 3)
    assert mp.render_size(4, 4, 1) == (8, 8)


def test_frame_count_inclusive_with_step():
    assert mp.frame_count(1, 250) == 250
    assert mp.frame_count(1, 10, 3) == 4  # 1, 4, 7, 10
    assert mp.frame_count(5, 5) == 1
    assert mp.frame_count(10, 1) == 1


def test_fps_and_length_rules():
    assert mp.scene_fps(30, 1.001) == 29.97
    assert mp.shape_length(97, (8, 1)) == 97
    assert mp.shape_length(90, (8, 1)) == 97
    assert mp.shape_length(1, (8, 1)) == 1
    assert mp.shape_length(24, None) == 24


def test_seed_randomise():
    assert mp.resolve_seed(42, False) == 42
    a = mp.resolve_seed(42, True, random.Random(1))
    b = mp.resolve_seed(42, True, random.Random(2))
    assert a != b and 0 <= a <= mp.SEED_MAX


def test_sd15_targets_follow_the_sampler_links():
    wf = sd15()
    t = mp.find_targets(wf)
    sampler = next(k for k, v in wf.items() if v["class_type"] == "KSampler")
    pos = wf[sampler]["inputs"]["positive"][0]
    neg = wf[sampler]["inputs"]["negative"][0]
    assert t.positive == [f"{pos}.text"] and t.negative == [f"{neg}.text"]
    assert t.seed == [f"{sampler}.seed"] and t.steps == [f"{sampler}.steps"] and t.cfg == [f"{sampler}.cfg"]
    latent = next(k for k, v in wf.items() if v["class_type"] == "EmptyLatentImage")
    assert t.width == [f"{latent}.width"] and t.height == [f"{latent}.height"]


def test_build_params_writes_only_what_was_set():
    wf = sd15()
    shot = mp.ShotSettings(prompt="a red fox", seed=7, width=768, height=432)
    params = mp.build_params(wf, shot)
    t = mp.find_targets(wf)
    assert params[t.positive[0]] == "a red fox"
    assert params[t.seed[0]] == 7
    assert params[t.width[0]] == 768 and params[t.height[0]] == 432
    assert t.negative[0] not in params and t.steps[0] not in params


def test_conditioning_passthrough_and_video_length():
    wf = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["9", 0]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["9", 0]}},
        "3": {
            "class_type": "LTXVConditioning",
            "inputs": {"positive": ["1", 0], "negative": ["2", 0], "frame_rate": 25},
        },
        "4": {
            "class_type": "EmptyLTXVLatentVideo",
            "inputs": {"width": 768, "height": 512, "length": 97, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 30,
                "cfg": 3.0,
                "positive": ["3", 0],
                "negative": ["3", 1],
                "model": ["8", 0],
            },
        },
    }
    t = mp.find_targets(wf)
    assert t.positive == ["1.text"]
    assert "2.text" in t.negative
    assert t.frames == ["4.length"] and t.fps == ["3.frame_rate"]
    params = mp.build_params(wf, mp.ShotSettings(frames=48, fps=24.0))
    assert params["4.length"] == 49  # 8·6 + 1
    assert params["3.frame_rate"] == 24 and isinstance(params["3.frame_rate"], int)


def test_acceptance_workflow_gets_size_and_nonce():
    wf = json.loads((ROOT / "workflows" / "acceptance_progress.json").read_text())
    t = mp.find_targets(wf)
    assert t.width == ["1.width"] and t.seed == ["1.nonce"]
    params = mp.build_params(wf, mp.ShotSettings(seed=5, width=64, height=32, extra={"1.steps": 3}))
    assert params == {"1.nonce": 5, "1.width": 64, "1.height": 32, "1.steps": 3}


def test_lone_text_encoder_is_the_prompt():
    wf = {"1": {"class_type": "TextToAudio", "inputs": {"prompt": "rain on a tin roof", "seconds": 5}}}
    assert mp.find_targets(wf).positive == ["1.prompt"]


def test_load_workflow_rejects_ui_format(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(mp.WorkflowFormatError, match="UI-format"):
        mp.load_workflow(ui)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(mp.WorkflowFormatError, match="not JSON"):
        mp.load_workflow(bad)
    assert mp.load_workflow(ROOT / "workflows" / "invert.json")["3"]["class_type"] == "SaveImage"


def test_media_kinds_and_import_plan():
    outputs = [
        {"node_id": "9", "kind": "images", "path": "/o/b_00002_.png"},
        {"node_id": "9", "kind": "images", "path": "/o/b_00001_.png"},
        {"node_id": "10", "kind": "gifs", "path": "/o/clip.mp4"},
        {"node_id": "11", "kind": "audio", "path": "/o/voice.flac"},
        {"node_id": "12", "kind": "latents", "path": "/o/x.latent"},
        {"node_id": "13", "kind": "images"},
    ]
    plan = mp.plan_import(outputs)
    assert plan.image_sequences == [["/o/b_00001_.png", "/o/b_00002_.png"]]
    assert plan.videos == ["/o/clip.mp4"] and plan.audio == ["/o/voice.flac"] and plan.other == ["/o/x.latent"]
    assert mp.media_kind("/o/noext", "gifs") == "video"
