"""Where a take lands in the Sequencer (pure Python): the shot's start frame, the shot's length, and a channel where
nothing else is over the shot's range. Blender has no free-channel API, so the strips' ranges are scanned.

Ranges here are half-open: ``start`` inclusive, ``end`` exclusive (Blender's ``frame_final_start`` /
``frame_final_end``).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_CHANNEL = 128  # Blender's Sequencer has channels 1..128


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def free_channel(
    occupied: Iterable[tuple[int, int, int]], start: int, end: int, preferred: int = 0, lowest: int = 1
) -> int:
    """The channel for a strip over ``start..end``: ``preferred`` when nothing is there over that range, else the
    first channel at or above it (``lowest`` when ``preferred`` is 0, "auto") with nothing over that range.

    ``occupied``: ``(channel, start, end)`` of the strips already there (only the shot's range counts, never the whole
    scene). Raises ``ValueError`` when every channel is taken over that range.
    """
    busy = {ch for ch, s, e in occupied if overlaps(start, end, s, e)}
    channel = max(int(preferred) if preferred else int(lowest), 1)
    while channel in busy:
        channel += 1
    if channel > MAX_CHANNEL:
        raise ValueError(f"no free channel over frames {start}–{end - 1} (every channel from {lowest} is taken)")
    return channel


def valid_length(frames: int, minimum: int | None = None, step: int | None = None) -> int:
    """The nearest length at or above ``frames`` a video input accepts: ``minimum + k·step`` (LTX-Video's
    ``length`` is min 1, step 8: 1, 9, …, 97, 121). The strip is then trimmed to the shot's own length."""
    frames = max(int(frames), 1)
    low = int(minimum) if minimum is not None else 1
    if not step or step <= 1:
        return max(frames, low)
    if frames <= low:
        return low
    k = -(-(frames - low) // int(step))
    return low + k * int(step)
