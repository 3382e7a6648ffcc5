"""Where a take lands: the first channel free over the shot's own range, and video lengths in the input's steps."""

from __future__ import annotations

import pytest
from movie_director import placement


def test_free_channel_looks_at_the_shot_range_only():
    occupied = [(1, 0, 40), (2, 100, 200)]
    # Channel 1 is busy over 0–39 only: a shot at 40–70 gets it (the old add-on checked the whole scene).
    assert placement.free_channel(occupied, 40, 71) == 1
    assert placement.free_channel(occupied, 30, 50) == 2
    assert placement.free_channel(occupied, 30, 150) == 3


def test_preferred_channel_when_free_else_the_next_free_above_it():
    occupied = [(3, 0, 10), (4, 0, 10)]
    assert placement.free_channel(occupied, 20, 30, preferred=3) == 3
    assert placement.free_channel(occupied, 5, 30, preferred=3) == 5
    assert placement.free_channel([], 0, 10, preferred=7) == 7


def test_no_free_channel_is_an_error_not_an_overlap():
    occupied = [(ch, 0, 10) for ch in range(1, 129)]
    with pytest.raises(ValueError, match="no free channel"):
        placement.free_channel(occupied, 0, 5)
    assert placement.free_channel(occupied, 10, 20) == 1  # touching is not overlapping


def test_valid_length_rounds_up_to_the_inputs_steps():
    assert placement.valid_length(31, 1, 8) == 33
    assert placement.valid_length(97, 1, 8) == 97
    assert placement.valid_length(1, 1, 8) == 1
    assert placement.valid_length(50, 1, 4) == 53
    assert placement.valid_length(50) == 50
    assert placement.valid_length(0, 5, None) == 5
