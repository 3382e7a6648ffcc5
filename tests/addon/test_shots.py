"""The shot list's pure logic: shots from markers and strips, stable ids through renames and moves, seeds over the
full 64-bit range, defaults and overrides, the staleness fingerprint and the line each shot shows."""

from __future__ import annotations

import pytest
from movie_director import shots as sh


def test_markers_sorted_ranges_to_the_next_marker_last_to_scene_end():
    found = sh.from_markers([("C", 71, ""), ("A", 1, "CamA"), ("B", 40, "")], scene_end=100)
    assert [(f.key, f.frame_start, f.frame_end, f.camera) for f in found] == [
        ("A", 1, 39, "CamA"),
        ("B", 40, 70, ""),
        ("C", 71, 100, ""),
    ]
    assert [f.frames for f in found] == [39, 31, 30]


def test_markers_on_one_frame_make_one_shot_and_a_marker_past_the_end_has_one_frame():
    found = sh.from_markers([("b", 10, ""), ("a", 10, ""), ("late", 200, "")], scene_end=100)
    assert [(f.key, f.frame_start, f.frame_end) for f in found] == [("a", 10, 199), ("late", 200, 200)]


def test_strips_in_timeline_order_with_exclusive_end():
    found = sh.from_strips([("b", 2, 30, 45, None), ("a", 2, 10, 30, "sh-1")])
    assert [(f.key, f.frame_start, f.frame_end, f.ident) for f in found] == [("a", 10, 29, "sh-1"), ("b", 30, 44, None)]


def test_sync_matches_by_id_then_name_then_frame_and_keeps_missing():
    known = [
        sh.Known("sh-a", "MARKER", "A", 1),
        sh.Known("sh-b", "MARKER", "B", 40),
        sh.Known("sh-c", "MARKER", "C", 71),
        sh.Known("sh-s", "STRIP", "strip", 5),
    ]
    found = sh.from_markers([("A", 1, ""), ("B", 20, ""), ("C renamed", 71, ""), ("D", 90, "")], 100)
    plan = sh.plan_sync(known, found, "MARKER")
    assert {shot_id: f.key for shot_id, f in plan.matched} == {"sh-a": "A", "sh-b": "B", "sh-c": "C renamed"}
    assert [f.key for f in plan.new] == ["D"]
    assert plan.missing == []  # the strip shot is not a marker's business
    gone = sh.plan_sync(known, found[:1], "MARKER")
    assert sorted(gone.missing) == ["sh-b", "sh-c"]
    # A strip carrying its id wins over a name that now belongs to another strip.
    strips = sh.from_strips([("strip", 1, 50, 60, None), ("renamed", 1, 5, 9, "sh-s")])
    plan = sh.plan_sync(known, strips, "STRIP")
    assert plan.matched == [("sh-s", strips[0])] and [f.key for f in plan.new] == ["strip"]


def test_new_ids_are_unique():
    ids: set[str] = set()
    for _ in range(500):
        ids.add(sh.new_shot_id(ids))
    assert len(ids) == 500 and all(i.startswith("sh-") for i in ids)


def test_seeds_take_the_full_64_bit_range_and_reject_the_rest():
    assert sh.parse_seed("18446744073709551615") == 2**64 - 1
    assert sh.parse_seed(" 0x10 ") == 16
    assert sh.parse_seed("") is None
    with pytest.raises(ValueError, match="outside"):
        sh.parse_seed(str(2**64))
    with pytest.raises(ValueError, match="outside"):
        sh.parse_seed("-1")
    with pytest.raises(ValueError, match="whole number"):
        sh.parse_seed("12a")


def test_seed_policies():
    assert sh.shot_seed(7, "FIXED", "sh-1") == sh.shot_seed(7, "FIXED", "sh-2") == 7
    per_shot = sh.shot_seed(7, "PER_SHOT", "sh-1")
    assert per_shot == sh.shot_seed(7, "PER_SHOT", "sh-1") != sh.shot_seed(7, "PER_SHOT", "sh-2")
    assert 0 <= per_shot <= sh.SEED_MAX
    assert sh.shot_seed(7, "RANDOM", "sh-1", rng_value=2**70 + 5) == 5


def test_extra_parameters_and_merge():
    assert sh.parse_extra("3.denoise = 0.6; KSampler.sampler_name = euler\n# note\n") == {
        "3.denoise": 0.6,
        "KSampler.sampler_name": "euler",
    }
    with pytest.raises(ValueError, match="selector = value"):
        sh.parse_extra("3.denoise")
    merged = sh.merge(
        {"prompt": "default", "negative": "blurry", "extra": {"a": 1, "b": 2}},
        {"prompt": "", "negative": "shot's", "extra": {"b": 3}},
    )
    assert merged == {"prompt": "default", "negative": "shot's", "extra": {"a": 1, "b": 3}}


def test_inputs_hash_changes_with_what_the_take_was_made_from():
    base = sh.Settings(prompt="a fox", seed=1, workflow="w.json", frames=24, fps=24.0)
    first = sh.inputs_hash(base, "digest1")
    assert first == sh.inputs_hash(sh.Settings(prompt="a fox", seed=1, workflow="w.json", frames=24), "digest1")
    assert first != sh.inputs_hash(sh.Settings(prompt="a cat", seed=1, workflow="w.json", frames=24), "digest1")
    assert first != sh.inputs_hash(base, "digest2")  # the workflow file changed
    assert first != sh.inputs_hash(sh.Settings(prompt="a fox", seed=1, workflow="w.json", frames=25), "digest1")
    # A random seed per take does not make a shot stale.
    assert sh.inputs_hash(base, "d", seed_counts=False) == sh.inputs_hash(
        sh.Settings(prompt="a fox", seed=99, workflow="w.json", frames=24), "d", seed_counts=False
    )


def test_status_lines():
    assert sh.status_line(None, 0).text == "Not generated"
    assert sh.status_line("waiting", 1).state == "waiting"
    assert sh.status_line("queued", 0, queue_position=2).text == "Queued (position 3)"
    running = sh.status_line("running", 1, percentage=42.4, node="KSampler")
    assert running.text == "Running 42% · KSampler" and running.progress == pytest.approx(0.424)
    failed = sh.status_line("failed", 1, message="the server rejected the workflow: node 3 cfg too high")
    assert failed.alert and failed.text.endswith("node 3 cfg too high")  # in full
    assert sh.status_line("completed", 2, stale=True).text == "Done · 2 takes · stale"
    assert sh.status_line("completed", 1, missing=True).state == "missing"
    down = sh.status_line("queued", 0, queue_position=3, server_down="local reconnecting…")
    assert down.state == "waiting_server" and down.text == "Waiting for the server: local reconnecting…"
    assert sh.status_line("completed", 1, server_down="local reconnecting…").state == "completed"
