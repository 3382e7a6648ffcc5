"""The Python API's edges: what a script may pass (tuples, paths, huge integers) and what it may not (sets, NaN,
runaway nesting, negative seconds, a GradioCall without a target), each answered with a clear exception before
anything is sent; and what events look like when printed (every class names itself). Against the simulator on
127.0.0.1 where a server is needed."""

from __future__ import annotations

import math
import pathlib

import pytest
from director_link import GradioCall, Hub, Workflow, errors, events
from director_link.testing import ComfySimulator, api_workflow


def test_tuples_paths_and_huge_integers_go_through_unchanged(tmp_path):
    big = 2**70 + 3  # beyond 64 bits: kept exact both ways
    wf = Workflow.load(
        {
            "1": {"class_type": "SaveImage", "inputs": {"filename_prefix": pathlib.PurePosixPath("shots/a")}},
            "2": {"class_type": "Seed", "inputs": {"seed": big, "size": (64, 32), "neg": -5, "ratio": 0.5}},
        }
    )
    assert wf.get("1.filename_prefix") == "shots/a", "a path-like is sent as its path"
    assert wf.get("2.seed") == big and isinstance(wf.get("2.seed"), int)
    assert wf.get("2.size") == [64, 32], "a tuple is a JSON list"
    assert wf.get("2.neg") == -5 and wf.get("2.ratio") == 0.5
    assert wf.to_dict()["2"]["inputs"]["seed"] == big
    assert repr(wf) == "<Workflow api format, 2 nodes>"
    # Keys that are not strings become their text, as json.dumps does.
    assert Workflow.load({"3": {"class_type": "X", "inputs": {1: True}}}).to_dict()["3"]["inputs"] == {"1": True}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({1, 2}, "a set cannot be turned into JSON"),
        (object(), "a object cannot be turned into JSON"),
        (math.nan, "NaN or infinity"),
        (math.inf, "NaN or infinity"),
    ],
)
def test_values_json_cannot_carry_are_refused_with_their_type(value, words):
    with pytest.raises(TypeError, match=words):
        Workflow.load({"1": {"class_type": "X", "inputs": {"v": value}}})


def test_runaway_nesting_is_refused_not_a_crash():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(TypeError, match="nested too deeply"):
        Workflow.load({"1": {"class_type": "X", "inputs": {"v": deep}}})


def test_a_ui_workflow_must_be_converted_before_it_is_edited_by_id():
    ui = {"nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [8, 8, 1, 0]}], "links": [], "version": 0.4}
    wf = Workflow.load(ui)
    assert wf.format == "ui"
    assert repr(wf) == "<Workflow ui format, 1 nodes>"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"heartbeat": -1.0}, "heartbeat must be a number of seconds"),
        ({"connect_timeout": 1e12}, "connect_timeout must be a number of seconds"),
        ({"poll_interval": math.nan}, "poll_interval must be a number of seconds"),
    ],
)
def test_a_hub_refuses_absurd_seconds(kwargs, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        Hub(tmp_path, **kwargs)


def test_gradio_calls_need_a_target_and_a_list_of_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs api_name or fn_index"):
        GradioCall()
    with pytest.raises(ValueError, match="needs api_name or fn_index"):
        GradioCall(api_name="  ")
    with pytest.raises(ValueError, match="inputs must be a list"):
        GradioCall("/generate", inputs={"prompt": "x"})
    call = GradioCall(fn_index=3, inputs=("a", 1))
    assert repr(call) == "GradioCall(api_name=None, fn_index=Some(3), inputs=['a', 1])"
    assert repr(GradioCall("/go")) == 'GradioCall(api_name=Some("/go"), fn_index=None, inputs=[])'
    with Hub(tmp_path) as hub:
        name = hub.add_service("gradio", "127.0.0.1:9")
        with pytest.raises(TypeError, match="params are for workflows"):
            hub.submit(name, call, params={"1.seed": 1})


def test_chat_options_need_string_names(tmp_path):
    with Hub(tmp_path) as hub:
        name = hub.add_service("openai", "127.0.0.1:9")
        with pytest.raises(TypeError, match="option names must be strings"):
            hub.chat(name, "hi", **{"temperature": 0.1}, **{1: 2})  # type: ignore[arg-type]


def test_a_simulator_refuses_bad_settings_and_says_where_its_files_are():
    with pytest.raises(ValueError, match="time_scale must be a number"):
        ComfySimulator(time_scale=-1)
    with pytest.raises(ValueError, match="preview_size must be 1..4096"):
        ComfySimulator(preview_size=0)
    sim = ComfySimulator(time_scale=0)
    try:
        assert pathlib.Path(sim.output_dir).is_dir() and pathlib.Path(sim.input_dir).is_dir()
        assert sim.output_dir != sim.input_dir
        sim.clear_requests()
        assert sim.requests() == []
        sim.drop_sockets_after(1000)
    finally:
        sim.close()
    with pytest.raises(RuntimeError, match="the simulator has been closed"):
        sim.clear_requests()


def test_every_event_class_names_itself_when_printed(tmp_path):
    with ComfySimulator(time_scale=0) as sim, Hub(tmp_path) as hub:
        name = hub.add_service("comfyui", sim.url)
        job = hub.submit(name, api_workflow("progress", steps=3, step_seconds=0.01, nonce=11))
        job.wait(60)
        hub.discover([f"127.0.0.1:{sim.port}"], timeout=2.0)
        seen = hub.poll(10_000)
    kinds = {type(e).__name__ for e in seen}
    assert {"ServiceStateChanged", "JobQueued", "JobStarted", "JobCompleted", "ServiceDiscovered"} <= kinds, kinds
    for e in seen:
        assert isinstance(e, events.Event)
        text = repr(e)
        assert text.startswith(f"<{type(e).__name__} {{") and text.endswith(">"), text
        assert len(text) < 400, "long events are shortened when printed"


def test_a_closed_hub_refuses_work_with_a_clear_error(tmp_path):
    hub = Hub(tmp_path)
    hub.close()
    assert hub.closed
    with pytest.raises(errors.DirectorLinkError, match="closed"):
        hub.add_service("comfyui", "127.0.0.1:8188")
