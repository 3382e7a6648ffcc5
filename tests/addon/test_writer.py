"""Turning an LLM's answer into shots (pure Python)."""

from __future__ import annotations

import pytest
from movie_director import writer
from movie_director.shots import Settings, gradio_inputs, gradio_setup


def test_shots_on_one_line_or_per_line_or_as_a_list():
    one_line = "Shot 1: wide harbour at dawn. Shot 2: close-up on the keeper."
    assert writer.parse_shots(one_line) == ["wide harbour at dawn.", "close-up on the keeper."]
    assert writer.parse_shots("shot 1) a\n\nSHOT 2 - b\nstill b") == ["a", "b still b"]
    assert writer.parse_shots("- first\n2. second\n\n") == ["first", "second"]
    assert writer.parse_shots("   ") == []


def test_markers_spread_over_the_range_with_unique_names():
    placed = writer.place(["a", "b", "c"], 1, 90, taken={"Shot 2"})
    assert [(p.name, p.frame, p.prompt) for p in placed] == [
        ("Shot 1", 1, "a"),
        ("Shot 2.2", 31, "b"),
        ("Shot 3", 61, "c"),
    ]
    # More shots than frames: one frame each, never two on the same frame.
    assert [p.frame for p in writer.place(["x"] * 4, 10, 11)] == [10, 11, 12, 13]
    assert writer.place([], 1, 10) == []


def test_messages_ask_for_a_count():
    msgs = writer.messages(" a logline ", 5)
    assert (
        msgs[0]["role"] == "system" and msgs[1]["content"].startswith("a logline") and "5 shots" in msgs[1]["content"]
    )


def test_gradio_inputs_fill_typed_placeholders():
    settings = Settings(prompt="surf", seed=2**63, frames=31, fps=24.0)
    values = gradio_inputs('["{prompt}", 1.5, "{seed}", "{frames} at {fps}", "{image}"]', settings, "/tmp/p.png")
    assert values == ["surf", 1.5, 2**63, "31 at 24.0", {"path": "/tmp/p.png"}]
    assert gradio_inputs("", settings) == ["surf"]
    with pytest.raises(ValueError, match="JSON list"):
        gradio_inputs('{"a": 1}', settings)
    with pytest.raises(ValueError, match="no input picture"):
        gradio_inputs('["{image}"]', settings)


def test_gradio_audio_placeholder_and_setup_call():
    settings = Settings(prompt="line")
    assert gradio_inputs('[0, "{audio}", 2]', settings, None, "/tmp/line.wav") == [0, {"path": "/tmp/line.wav"}, 2]
    with pytest.raises(ValueError, match="no sound strip"):
        gradio_inputs('["{audio}"]', settings)
    assert gradio_setup("") is None and gradio_setup("  ") is None
    assert gradio_setup(' ["/infer_change_voice", ["narrator.pth", 0.33, 0.33, null]] ') == (
        "/infer_change_voice",
        ["narrator.pth", 0.33, 0.33, None],
    )
    for bad in ('"/x"', '["/x"]', '["", []]', '["/x", 1]', "[/x]"):
        with pytest.raises(ValueError, match="setup call"):
            gradio_setup(bad)
