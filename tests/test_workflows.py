"""Workflows from Python and the CLI: load either format, convert like the frontend, validate, parameters."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import director_link
import pytest
from director_link import Workflow, errors

from .conftest import ROOT, collect, connect, invert_prompt

# The recordings copied into the project (tests/fixtures/README.md); a missing file fails the test that opens it.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"
OBJECT_INFO = FIXTURES / "object_info.json.gz"
CASES = FIXTURES / "ui_conversion"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director_link.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.parametrize("case", ["widgets_reroute_primitive_bypass_mute", "subgraph", "default_graph"])
def test_ui_workflows_convert_to_what_the_frontend_posted(case):
    wf = Workflow.load(str(CASES / f"{case}.workflow.json"))
    assert wf.format == "ui"
    api = wf.convert(str(OBJECT_INFO))
    assert api.format == "api"
    expected = json.loads((CASES / f"{case}.api.json").read_text())
    got = api.to_dict()
    assert set(got) == set(expected)
    for node_id, node in expected.items():
        assert got[node_id]["class_type"] == node["class_type"], node_id
        # %date:…% in filename_prefix depends on the day; everything else must match exactly.
        inputs = {k: v for k, v in node["inputs"].items() if k != "filename_prefix"}
        assert {k: got[node_id]["inputs"][k] for k in inputs} == inputs, node_id


def test_parameters_roles_and_checked_set():
    wf = Workflow.load(str(CASES / "default_graph.workflow.json")).convert(str(OBJECT_INFO))
    assert wf.set("positive.text", "a red fox at dawn", str(OBJECT_INFO)).endswith(".text")
    assert wf.get("positive.text") == "a red fox at dawn"
    assert wf.get("negative.text") != "a red fox at dawn", "negative is another node"
    seed = wf.set("sampler.seed", 2**64 - 1, str(OBJECT_INFO))
    assert wf.get(seed) == 2**64 - 1, "seeds are unsigned 64-bit"
    with pytest.raises(errors.WorkflowError) as too_big:
        wf.set("sampler.seed", 2**64, str(OBJECT_INFO))
    assert too_big.value.code == "invalid_parameter" and too_big.value.reason == "value_out_of_range"
    with pytest.raises(errors.WorkflowError) as unknown:
        wf.set("NoSuchNode.steps", 3)
    assert unknown.value.reason == "selector_not_found"
    params = {p["selector"]: p for p in wf.parameters(str(OBJECT_INFO))}
    steps = next(p for p in params.values() if p["input"] == "steps")
    assert steps["input_type"] == "INT" and steps["min"] == 1


def test_validation_names_node_and_input():
    info = gzip.decompress(OBJECT_INFO.read_bytes())
    wf = Workflow.load(invert_prompt())
    assert [p for p in wf.validate(json.loads(info)) if p["severity"] == "error"] == []
    bad = invert_prompt()
    bad["1"]["inputs"]["width"] = 99999
    problems = Workflow.load(bad).validate(str(OBJECT_INFO))
    assert [(p["node_id"], p["input"], p["code"]) for p in problems] == [("1", "width", "value_bigger_than_max")]


def test_cli_convert_validate_params(tmp_path):
    out = tmp_path / "api.json"
    ui = CASES / "subgraph.workflow.json"
    res = cli("convert", str(ui), "-o", str(out), "--object-info", str(OBJECT_INFO))
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(json.loads(out.read_text())) == set(json.loads((CASES / "subgraph.api.json").read_text()))
    res = cli("convert", str(ui))
    assert res.returncode == 2 and "--object-info" in res.stdout
    good = tmp_path / "good.json"
    good.write_text(json.dumps(invert_prompt()))
    res = cli("validate", str(good), "--object-info", str(OBJECT_INFO))
    assert res.returncode == 0 and "valid" in res.stdout
    bad_prompt = invert_prompt()
    del bad_prompt["2"]["inputs"]["image"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_prompt))
    res = cli("validate", str(bad), "--object-info", str(OBJECT_INFO))
    assert res.returncode == 2 and "required_input_missing" in res.stdout and "node 2" in res.stdout
    res = cli("params", str(good), "--object-info", str(OBJECT_INFO), "--json")
    assert res.returncode == 0
    selectors = {p["selector"] for p in json.loads(res.stdout)}
    assert {"1.width", "1.height", "3.filename_prefix"} <= selectors


def test_cli_run_accepts_role_and_class_selectors(server, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(invert_prompt()))
    res = cli("run", str(wf), "--server", server.url, "--set", "EmptyImage.width=32", "--out", str(tmp_path), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("run", str(wf), "--server", server.url, "--set", "NoSuchClass.width=32", "--out", str(tmp_path))
    assert res.returncode == 2 and "NoSuchClass" in res.stdout


def test_submit_a_workflow_object(hub, server):
    name = connect(hub, server)
    wf = Workflow.load(invert_prompt())
    wf.set("EmptyImage.height", 20)
    job = hub.submit(name, wf)
    assert collect(hub, [job.id]).terminal(job.id).type == "job_completed"
    assert server.get(f"/history/{job.id}")[job.id]["prompt"][2]["1"]["inputs"]["height"] == 20


def test_templates_are_found():
    names = director_link.workflows.names()
    assert "invert" in names
    assert director_link.workflows.load("invert").format == "api"
    with pytest.raises(FileNotFoundError):
        director_link.workflows.load("no-such-template")
