"""A shot's settings → workflow inputs through the core's roles (``director_link.Workflow``), with ranges and steps
from the server's node list (the recorded ComfyUI 0.3.64 ``object_info``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("director_link")

from movie_director import params as prm  # noqa: E402
from movie_director.shots import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OBJECT_INFO = json.loads(gzip.decompress((ROOT / "tests/fixtures/comfyui/object_info.json.gz").read_bytes()))
UI_FILE = ROOT / "tests/fixtures/comfyui/ui_conversion/default_graph.workflow.json"


def resolved(name: str, info=OBJECT_INFO) -> prm.Resolved:
    return prm.resolve(prm.load(str(ROOT / "workflows" / f"{name}.json"), info), info)


def test_video_template_roles_ranges_and_fps():
    r = resolved("ltx_video")
    sel = {k: [t.selector for t in v] for k, v in r.targets.items()}
    assert sel["prompt"] == ["6.text"] and sel["negative"] == ["7.text"]
    assert sel["seed"] == ["72.noise_seed"] and sel["steps"] == ["71.steps"] and sel["cfg"] == ["72.cfg"]
    assert sel["width"] == ["70.width"] and sel["frames"] == ["70.length"]
    assert sorted(sel["fps"]) == ["41.fps", "69.frame_rate"]
    assert r.is_video and r.targets["frames"][0].step == 8
    params, unused = prm.build(r, Settings(prompt="fox", seed=2**64 - 1, frames=31, fps=12.0, width=64, height=64))
    assert params["70.length"] == 33 and params["72.noise_seed"] == 2**64 - 1
    assert params["69.frame_rate"] == 12.0 and params["41.fps"] == 12.0
    assert unused == []


def test_image_template_has_no_frames_and_says_so_for_unused_settings():
    r = resolved("sd_basic")
    assert not r.is_video
    assert r.missing(["prompt", "frames"]) == ["frames"]
    params, unused = prm.build(r, Settings(prompt="a", negative="b", steps=3, cfg=4.5, frames=50))
    assert params == {"6.text": "a", "7.text": "b", "3.steps": 3, "3.cfg": 4.5}
    assert unused == []


def test_graph_without_sampler_uses_the_one_parameter_by_name_and_reports_the_rest():
    r = resolved("acceptance_progress", info=None)
    assert [t.selector for t in r.targets["width"]] == ["1.width"] and r.targets["width"][0].how == "name"
    params, unused = prm.build(r, Settings(prompt="never dropped silently", steps=2, width=64, height=32))
    assert params["1.width"] == 64 and params["1.steps"] == 2
    assert unused == ["prompt"]


def test_seeds_fold_into_the_inputs_range_only_when_made_up():
    r = resolved("acceptance_progress", info=None)
    target = r.targets["seed"][0]
    assert target.selector == "1.nonce"
    capped = prm.Target("1.nonce", "INT", 0, 2**32 - 1)
    assert prm.fit_seed(2**40 + 7, capped, random=True) == 7
    with pytest.raises(prm.WorkflowProblem, match="above the maximum of 1.nonce"):
        prm.fit_seed(2**40, capped, random=False)
    # Range unknown: a random seed stays within what every seed input accepts.
    assert prm.fit_seed(2**40 + 7, prm.Target("x.seed"), random=True) == 7
    assert prm.fit_seed(2**64 - 1, prm.Target("x.seed"), random=False) == 2**64 - 1


def test_ui_format_needs_the_node_list_then_converts():
    with pytest.raises(prm.WorkflowProblem, match="UI-format"):
        prm.load(str(UI_FILE), None)
    wf = prm.load(str(UI_FILE), OBJECT_INFO)
    assert wf.format == "api"
    r = prm.resolve(wf, OBJECT_INFO)
    assert r.supports("prompt") and r.supports("seed") and r.supports("width")
    assert r.targets["seed"][0].maximum == 2**64 - 1


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(prm.WorkflowProblem, match="does not exist"):
        prm.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(prm.WorkflowProblem, match="bad.json"):
        prm.load(str(bad))


def test_scene_values():
    assert prm.render_size(1920, 1080, 50) == (960, 544)
    assert prm.scene_fps(30, 1.001) == 29.97


def test_a_comfyui_png_carries_its_workflow(tmp_path):
    """A PNG ComfyUI saved (the graph in its ``prompt`` text chunk) is a workflow file like any other."""
    import struct
    import zlib

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)

    api = json.loads((ROOT / "workflows" / "sd_basic.json").read_text())
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    png += chunk(b"tEXt", b"prompt\x00" + json.dumps(api).encode())
    png += chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b"")
    path = tmp_path / "ComfyUI_00042_.png"
    path.write_bytes(png)
    r = prm.resolve(prm.load(str(path), OBJECT_INFO), OBJECT_INFO)
    assert [t.selector for t in r.targets["prompt"]] == ["6.text"] and r.supports("seed")


@pytest.mark.parametrize(
    ("name", "selector", "how"),
    [
        ("ltx_img2video", "78.image", "binding"),
        ("upscale_4x", "1.image", "binding"),
        ("controlnet_pose", "11.image", "binding"),
    ],
)
def test_image_input_of_the_templates_comes_from_their_bindings(name, selector, how):
    path = str(ROOT / "workflows" / f"{name}.json")
    r = prm.resolve(prm.load(path, OBJECT_INFO), OBJECT_INFO, wf_path=path)
    assert r.wants_image and [(t.selector, t.how) for t in r.targets["image"]] == [(selector, how)]
    built, unused = prm.build(r, Settings(image="shot.png"))
    assert built[selector] == "shot.png" and not unused


def test_image_input_without_bindings_is_the_first_load_image_and_a_text_graph_has_none(tmp_path):
    graph = {
        "9": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }
    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph))
    r = prm.resolve(prm.load(str(path)), wf_path=str(path))
    assert [(t.selector, t.how) for t in r.targets["image"]] == [("3.image", "name")]
    # The other Load Image takes the sequence's reference images; a template's lone pose input leaves none.
    assert [t.selector for t in r.targets["reference"]] == ["9.image"]
    pose = str(ROOT / "workflows" / "controlnet_pose.json")
    assert "reference" not in prm.resolve(prm.load(pose, OBJECT_INFO), OBJECT_INFO, wf_path=pose).targets
    text = prm.resolve(prm.load(str(ROOT / "workflows" / "sd_basic.json")))
    assert not text.wants_image
    _built, unused = prm.build(text, Settings(image="shot.png"))
    assert unused == ["image"]  # said, never silently dropped
