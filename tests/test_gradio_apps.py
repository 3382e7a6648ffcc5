"""The studio's Gradio 3.x apps, as look-alikes on real Gradio 3.50.2 (``tests/backends/rvc_app.py``,
``audioldm_app.py``): RVC's two-step flow (load a voice, then convert an uploaded take) in one session, and
AudioLDM's ``text2audio`` by name and its unnamed v1 event by fn_index."""

from __future__ import annotations

import json
import urllib.request
import wave
from pathlib import Path

import director_link
import pytest
from director_link import GradioCall, gradio_file

from .backends.servers import HERE, start_gradio, venv_python

WAIT = 60.0


@pytest.fixture
def hub(tmp_path):
    with director_link.Hub(output_dir=str(tmp_path / "out")) as h:
        yield h


@pytest.fixture(scope="module")
def rvc(backend_tmp):
    python = venv_python("DIRECTOR_LINK_GRADIO3_PYTHON")
    server = start_gradio(python, "127.0.0.1", 7866, backend_tmp, HERE / "rvc_app.py")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def audioldm(backend_tmp):
    python = venv_python("DIRECTOR_LINK_GRADIO3_PYTHON")
    server = start_gradio(python, "127.0.0.1", 7867, backend_tmp, HERE / "audioldm_app.py")
    yield server
    server.stop()


def _take(path: Path) -> bytes:
    frames = b"".join(i.to_bytes(2, "little", signed=True) for i in range(-400, 400, 3))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames)
    return frames


def _frames(path: str) -> bytes:
    with wave.open(path, "rb") as w:
        return w.readframes(w.getnframes())


def test_rvc_two_step_flow_in_one_session(rvc, hub, tmp_path):
    name = hub.add_service("rvc", rvc.url)
    take = tmp_path / "take_03.wav"
    frames = _take(take)
    # The gr.State input is kept by the server per session: its value here is ignored (None).
    loaded = hub.submit(name, GradioCall("infer_change_voice", inputs=["villain.pth", 0.33, 0.33, None]))
    assert loaded.wait(timeout=WAIT)["ui"]["data"][0].startswith("loaded voice villain.pth")
    job = hub.submit(name, GradioCall("/infer_convert", inputs=[0, gradio_file(take), 2, "rmvpe", None]))
    info = job.wait(timeout=WAIT)
    assert info["ui"]["data"][0] == "Success. voice=villain.pth speaker=0 transpose=2 f0=rmvpe"
    (out,) = info["outputs"]
    assert out["kind"] == "audio" and out["path"].endswith(".wav")
    samples = [frames[i : i + 2] for i in range(0, len(frames), 2)]
    assert _frames(out["path"]) == b"".join(reversed(samples))
    # Another session has no voice loaded: the app's own error comes through.
    other = hub.submit(
        name, GradioCall("/infer_convert", inputs=[0, gradio_file(take), 0, "pm", None], session_hash="elsewhere01")
    )
    with pytest.raises(director_link.JobFailed) as e:
        other.wait(timeout=WAIT)
    assert "no voice loaded: call infer_change_voice first" in str(e.value)


def test_audioldm_text2audio_by_name_and_by_fn_index(audioldm, hub):
    name = hub.add_service("audioldm", audioldm.url)
    job = hub.submit(name, GradioCall("text2audio", inputs=["rain on a tin roof", 1, 3.5, 45, 1]))
    info = job.wait(timeout=WAIT)
    (out,) = info["outputs"]
    with wave.open(out["path"], "rb") as w:
        assert (w.getframerate(), w.getnframes()) == (8000, 8000)
    with urllib.request.urlopen(f"{audioldm.url}config", timeout=10) as resp:
        deps = json.load(resp)["dependencies"]
    assert deps[1]["api_name"] in (None, False)
    v1 = hub.submit(name, GradioCall(fn_index=1, inputs=["thunder", 2, 3.5, 7, 1])).wait(timeout=WAIT)
    with wave.open(v1["outputs"][0]["path"], "rb") as w:
        assert w.getnframes() == 16000
    with pytest.raises(director_link.JobFailed) as e:
        hub.submit(name, GradioCall("text2audio", inputs=["", 1, 3.5, 45, 1])).wait(timeout=WAIT)
    assert "describe the sound" in str(e.value)
