"""Review and hand-off without Blender: the cut written as OpenTimelineIO (read back with the ``opentimelineio``
library from PyPI) and the contact sheet of shots × takes."""

from __future__ import annotations

import os

import pytest
from movie_director import review

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def _file(path, data=PNG) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


@pytest.fixture
def shots(tmp_path):
    out = tmp_path / "director_link"
    a1 = _file(out / "A" / "j1" / "a1.png")
    a2 = _file(out / "A" / "j2" / "a2.png")
    webp = _file(out / "B" / "j3" / "clip.webp", b"RIFF....WEBP")
    frames = [_file(out / "B" / "j3" / "clip_frames" / f"frame_{i:05d}.png") for i in range(1, 25)]
    movie = _file(out / "C" / "j4" / "shot c.mp4", b"\x00\x00\x00\x18ftypmp42")
    sound = _file(out / "C" / "j4" / "voice.wav", b"RIFF....WAVE")
    return (
        out,
        [
            review.ShotEntry(
                "A",
                "Opening <wide>",
                1,
                24,
                prompt="a lighthouse",
                takes=[
                    review.TakeEntry(1, "j1", "completed", "11", [a1], review="rejected"),
                    review.TakeEntry(2, "j2", "completed", "12", [a2], review="approved", active=True),
                ],
            ),
            review.ShotEntry(
                "B", "Harbour", 25, 24, takes=[review.TakeEntry(1, "j3", "completed", "3", [webp], active=True)]
            ),
            review.ShotEntry(
                "C", "Storm", 60, 20, takes=[review.TakeEntry(1, "j4", "completed", "4", [movie, sound], active=True)]
            ),
            review.ShotEntry(
                "D", "Dawn", 80, 10, takes=[review.TakeEntry(1, "j5", "failed", "5", [], message="refused")]
            ),
            review.ShotEntry("E", "Never", 90, 10),
        ],
        frames,
    )


def test_the_cut_reads_back_in_opentimelineio_with_each_take_at_its_shot(tmp_path, shots):
    otio = pytest.importorskip("opentimelineio", reason="the test extra installs opentimelineio (PyPI)")
    _out, entries, frames = shots
    path = review.write_json(str(tmp_path / "cut.otio"), review.timeline("Lighthouse", 24, entries, start_frame=1))
    timeline = otio.adapters.read_from_file(path)
    assert timeline.name == "Lighthouse"
    assert timeline.global_start_time == otio.opentime.RationalTime(1, 24)
    video, audio = timeline.tracks
    assert video.kind == otio.schema.TrackKind.Video and audio.kind == otio.schema.TrackKind.Audio
    kinds = [type(item).__name__ for item in video]
    assert kinds == ["Clip", "Clip", "Gap", "Clip"]  # A, B, nothing over frames 49–59, C; D failed, E never made
    placed = {
        item.name: (video.range_of_child_at_index(i).start_time.value, video.range_of_child_at_index(i).duration.value)
        for i, item in enumerate(video)
        if isinstance(item, otio.schema.Clip)
    }
    # Offsets from the timeline's start (frame 1): A at 0 for 24, B at 24 for 24, C at 59 for 20.
    assert placed == {"Opening <wide> · take 2": (0, 24), "Harbour · take 1": (24, 24), "Storm · take 1": (59, 20)}
    a, b, _gap, c = list(video)
    assert a.media_reference.target_url.endswith("/A/j2/a2.png")  # the active take, not the rejected first one
    assert a.metadata["director_link"]["review"] == "approved" and a.metadata["director_link"]["take"] == 2
    seq = b.media_reference
    assert isinstance(seq, otio.schema.ImageSequenceReference)
    assert (seq.name_prefix, seq.name_suffix, seq.start_frame, seq.frame_zero_padding) == ("frame_", ".png", 1, 5)
    assert seq.number_of_images_in_sequence() == len(frames) == 24
    assert seq.target_url_for_image_number(0) == review.file_url(frames[0])
    assert c.media_reference.target_url.endswith("/C/j4/shot%20c.mp4")
    silence, voice = list(audio)
    assert isinstance(silence, otio.schema.Gap) and silence.duration().value == 59
    assert voice.media_reference.target_url.endswith("/voice.wav")
    assert audio.range_of_child_at_index(1).start_time.value == 59 and voice.duration().value == 20


def test_the_contact_sheet_lists_every_shot_and_take_with_marks(tmp_path, shots):
    out, entries, frames = shots
    text = review.contact_sheet("Lighthouse: shots and takes", entries, str(out))
    assert text.count("<tr>") == 1 + len(entries)  # the header and one row per shot
    assert "Opening &lt;wide&gt;" in text and "<wide>" not in text  # names are escaped
    assert 'src="A/j2/a2.png"' in text and 'src="A/j1/a1.png"' in text  # relative: the folder can be sent
    assert 'src="B/j3/clip_frames/frame_00001.png"' in text  # an animated take shows its first frame
    assert '<a href="C/j4/shot%20c.mp4">' in text  # a movie is a link
    assert '<span class="rejected">rejected</span>' in text and '<span class="approved">approved</span>' in text
    assert "Take 2 (in the cut)" in text and "refused" in text
    assert "2 approved" not in text and "1 approved · 1 rejected" in text


def test_nothing_finished_makes_an_empty_cut():
    entries = [review.ShotEntry("E", "Never", 1, 10)]
    data = review.timeline("Empty", 25, entries)
    assert data["metadata"]["director_link"]["in_cut"] == 0
    assert data["tracks"]["children"][0]["children"] == []
