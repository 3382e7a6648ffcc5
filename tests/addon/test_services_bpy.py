"""Every studio service in the add-on, in real Blender (``bpy`` 5.0.1, headless): "Write shots" against the real
LiteLLM proxy (its answer streamed into the panel, then markers with prompts), and a shot on an AudioLDM-shaped
Gradio app landing as a sound strip at the shot."""

from __future__ import annotations

import os
import wave

import pytest

bpy = pytest.importorskip("bpy")

from ..backends.openai_mock import MockOpenAI  # noqa: E402
from ..backends.servers import FIXTURES, LITELLM_KEY, start_gradio, venv_python  # noqa: E402

BACKENDS = FIXTURES.parent / "backends"
from .blender_support import draw_all_panels  # noqa: E402
from .test_shots_bpy import scene_settings, strips_of_shot, wait_shots_done  # noqa: E402

MOCK_GPT = "Shot 1: wide establishing shot of a foggy harbour at dawn. Shot 2: close-up on the lighthouse keeper."


def add(addon, name: str, kind: str, url: str, token: str = "") -> None:
    svc = addon.prefs.services.add()
    svc.name, svc.kind, svc.url, svc.token = name, kind, url, token
    addon.timers.step()


def wait_service(addon, name: str) -> None:
    model = addon.bridge.current_model()
    addon.timers.run_until(
        lambda: model.services.get(name) is not None and model.services[name].state == "connected",
        30,
        f"{name} to connect",
    )


@pytest.fixture
def audio_app(backend_tmp):
    server = start_gradio(
        venv_python("DIRECTOR_LINK_GRADIO5_PYTHON"),
        "127.0.0.4",
        7870,
        backend_tmp,
        app=FIXTURES / "gradio" / "tools" / "audio_app.py",
        GRADIO_APP_TITLE="AudioLDM",
    )
    yield server
    server.stop()


@pytest.fixture
def rvc_app(backend_tmp):
    """The RVC WebUI look-alike on real Gradio 3.50.2: load a voice (kept per session), then convert a line."""
    server = start_gradio(
        venv_python("DIRECTOR_LINK_GRADIO3_PYTHON"),
        "127.0.0.5",
        7865,
        backend_tmp,
        BACKENDS / "rvc_app.py",
        GRADIO_APP_TITLE="RVC",
    )
    yield server
    server.stop()


def write_line(path) -> bytes:
    """A recorded "line": 16-bit mono samples a test can recognise reversed."""
    frames = b"".join(i.to_bytes(2, "little", signed=True) for i in range(-600, 600, 7))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames)
    return frames


def test_write_shots_streams_the_answer_then_makes_markers_with_prompts(addon, litellm_server, monkeypatch):
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    add(addon, "llm", "litellm", litellm_server.url, LITELLM_KEY)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 100
    s = scene_settings()
    s.logline = "A lighthouse keeper sees a ship in the fog."
    s.writer_model = "mock-gpt"
    assert bpy.ops.movie_director.write_shots() == {"FINISHED"}
    job_id = s.writer_job
    model = addon.bridge.current_model()

    def done():
        view = model.jobs.get(job_id)
        return view is not None and view.state in ("completed", "failed", "cancelled") and not model.texts.get(job_id)

    addon.timers.run_until(done, 30, "the shots to be written")
    view = model.jobs[job_id]
    assert view.state == "completed", view.error
    assert s.written == MOCK_GPT
    # (The text growing piece by piece in the panel is checked on a slow stream below: LiteLLM's mock answer may
    # arrive whole within one timer tick.)
    panel = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"]
    assert "movie_director.shots_from_text" in panel.operators()

    assert bpy.ops.movie_director.shots_from_text() == {"FINISHED"}
    markers = sorted((m.frame, m.name) for m in scene.timeline_markers)
    assert markers == [(1, "Shot 1"), (51, "Shot 2")]
    shots = [(shot.name, shot.frame_start, shot.frame_end, shot.prompt) for shot in s.shots]
    assert shots == [
        ("Shot 1", 1, 50, "wide establishing shot of a foggy harbour at dawn."),
        ("Shot 2", 51, 100, "close-up on the lighthouse keeper."),
    ]


def test_write_shots_failure_is_shown_and_nothing_is_made(addon, litellm_server, monkeypatch):
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    add(addon, "llm", "litellm", litellm_server.url, LITELLM_KEY)
    s = scene_settings()
    s.logline = "anything"
    s.writer_model = "mock-broken"
    assert bpy.ops.movie_director.write_shots() == {"FINISHED"}
    model = addon.bridge.current_model()
    addon.timers.run_until(lambda: model.jobs[s.writer_job].state == "failed", 30, "the chat to fail")
    addon.timers.step()
    assert not s.written and not len(scene_settings().shots)
    panel = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"]
    assert any(t.startswith("Writing failed:") for t in panel.texts()), panel.texts()


def test_writing_shows_the_stream_and_stop_keeps_what_arrived(addon, monkeypatch):
    """A slow stream (the scripted OpenAI server on 127.0.0.1: 50 pieces, 0.2 s apart): the panel shows the text as
    it grows; Stop Writing cancels the chat and keeps what arrived as the editable shot list."""
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    mock = MockOpenAI()
    try:
        add(addon, "llm", "litellm", mock.url)
        s = scene_settings()
        s.logline = "a slow answer"
        s.writer_model = "slow"
        assert bpy.ops.movie_director.write_shots() == {"FINISHED"}
        model = addon.bridge.current_model()
        addon.timers.run_until(lambda: "piece 1 " in model.texts.get(s.writer_job, ""), 15, "two pieces")
        panel = draw_all_panels(bpy.context)["MOVIE_DIRECTOR_PT_sequencer_shots"]
        assert any(t.startswith("Writing…") for t in panel.texts()), panel.texts()
        assert "movie_director.cancel_writing" in panel.operators()
        assert bpy.ops.movie_director.write_shots.poll() is False  # one at a time
        assert bpy.ops.movie_director.cancel_writing() == {"FINISHED"}
        addon.timers.run_until(lambda: model.jobs[s.writer_job].state == "cancelled", 15, "the chat to stop")
        addon.timers.step()
        assert s.written.startswith("piece 0 piece 1 ") and "piece 49" not in s.written
    finally:
        mock.close()


def test_audioldm_shot_lands_as_a_sound_strip_at_the_shot(addon, audio_app):
    add(addon, "sound", "audioldm", audio_app.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.service = "sound"
    s.prompt = "waves on rocks"
    s.gradio_api = "/text2audio"
    s.gradio_inputs = '["{prompt}", 1.5, "{seed}"]'
    s.seed_policy = "FIXED"
    s.seed = "7"
    scene.timeline_markers.new("surf", frame=12)
    scene.frame_end = 60
    bpy.ops.movie_director.shots_from_markers()
    (shot,) = s.shots
    wait_service(addon, "sound")
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [shot])
    view = addon.bridge.current_model().jobs[shot.job_id]
    assert view.state == "completed", (view.error, shot.message)
    strips = strips_of_shot(shot.shot_id)
    errors = [(e.code, e.message) for e in addon.bridge.current_model().errors]
    assert len(strips) == 1, (view.outputs, shot.takes[0].paths, errors)
    (strip,) = strips
    assert strip.type == "SOUND" and strip.frame_final_start == 12
    assert os.path.basename(bpy.path.abspath(strip.sound.filepath)).startswith("sound-7-")
    assert shot.takes[0].state == "completed" and shot.takes[0].seed == "7"
    # Nothing changed since the take: not stale; a new prompt makes it so.
    from movie_director import shotlist

    assert not shotlist.is_stale(scene, shot)
    shot.prompt = "waves on sand"
    assert shotlist.is_stale(scene, shot)


def test_wan2gp_shot_lands_as_a_movie_strip_at_the_shot(addon, wangp_server):
    """The WanGP-shaped Gradio app (fixtures/gradio/tools/gradio_app.py): text to video as a GIF, which Blender
    plays as a movie strip at the shot's start, trimmed to the shot."""
    add(addon, "wan", "wan2gp", wangp_server.url)
    scene = bpy.context.scene
    s = scene_settings()
    s.service = "wan"
    s.prompt = "a fox in the snow"
    s.gradio_api = "/generate_video"
    s.gradio_inputs = '["{prompt}", 2]'
    scene.timeline_markers.new("fox", frame=5)
    scene.frame_end = 9
    bpy.ops.movie_director.shots_from_markers()
    (shot,) = s.shots
    wait_service(addon, "wan")
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [shot])
    view = addon.bridge.current_model().jobs[shot.job_id]
    assert view.state == "completed", (view.error, shot.message)
    strips = strips_of_shot(shot.shot_id)
    errors = [(e.code, e.message) for e in addon.bridge.current_model().errors]
    assert len(strips) == 1, (view.outputs, errors)
    (strip,) = strips
    assert strip.type == "MOVIE" and bpy.path.abspath(strip.filepath).endswith(".gif")
    assert (strip.frame_final_start, strip.frame_final_duration) == (5, 5)


def test_rvc_shot_converts_the_line_under_it_and_lands_as_a_sound_strip_at_the_shot(addon, rvc_app, tmp_path):
    """RVC's two steps from the panel: the sequence's setup call loads the voice once (the app keeps it in the
    session the shots share), then each shot converts the sound strip under its start ("{audio}", uploaded) and the
    converted line lands as a sound strip at the shot. A shot with no line under it fails before anything is sent."""
    add(addon, "voice", "rvc", rvc_app.url)
    scene = bpy.context.scene
    scene.frame_end = 80
    frames = write_line(tmp_path / "line_01.wav")
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # Blender 4.4+ / older
    strips.new_sound("line_01", str(tmp_path / "line_01.wav"), 1, 20)
    s = scene_settings()
    s.service = "voice"
    s.gradio_setup = '["/infer_change_voice", ["villain.pth", 0.33, 0.33, null]]'
    s.gradio_api = "/infer_convert"
    s.gradio_inputs = '[0, "{audio}", 2, "rmvpe", null]'
    scene.timeline_markers.new("line", frame=20)
    scene.timeline_markers.new("silence", frame=60)
    bpy.ops.movie_director.shots_from_markers()
    line, silence = s.shots
    wait_service(addon, "voice")
    assert bpy.ops.movie_director.generate_shots(which="ALL") == {"FINISHED"}
    wait_shots_done(addon, [line, silence])
    assert silence.job_state == "failed" and "no sound strip under frame 60" in silence.message, silence.message
    assert not strips_of_shot(silence.shot_id)
    view = addon.bridge.current_model().jobs[line.job_id]
    assert view.state == "completed", (view.error, line.message)
    (strip,) = strips_of_shot(line.shot_id)
    assert strip.type == "SOUND" and strip.frame_final_start == 20 and strip.channel != 1
    path = bpy.path.abspath(strip.sound.filepath)
    with wave.open(path, "rb") as w:
        converted = w.readframes(w.getnframes())
    samples = [frames[i : i + 2] for i in range(0, len(frames), 2)]
    assert converted == b"".join(reversed(samples))  # converted with the voice the setup call loaded
    assert line.takes[0].state == "completed"
    # Another Generate makes the setup call again first (the app may have lost its session meanwhile): a new take.
    assert bpy.ops.movie_director.generate_shots(which="ONE", shot_id=line.shot_id) == {"FINISHED"}
    wait_shots_done(addon, [line])
    assert len(line.takes) == 2 and line.takes[1].state == "completed", line.message
