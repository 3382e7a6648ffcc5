"""A tiny RVC WebUI look-alike (Gradio 3.x, ``title="RVC WebUI"``) with the two-step inference flow of the real
one: ``infer_change_voice`` loads a voice, then ``infer_convert`` converts an uploaded ``gr.Audio`` (filepath) with
it. The loaded voice is kept in ``gr.State``, i.e. per session_hash: a convert from another session fails like the
real app does without a loaded model. "Conversion" reverses the 16-bit samples, so a test can check the bytes.
Env: GRADIO_APP_PORT (host via gradio_host.py)."""

import os
import tempfile
import wave

import gradio as gr

OUT_DIR = os.path.join(tempfile.gettempdir(), "fake_rvc_outputs")
os.makedirs(OUT_DIR, exist_ok=True)


def infer_change_voice(sid0, protect0, protect1, state):
    if not sid0:
        raise gr.Error("choose a voice model")
    return f"loaded voice {sid0} (protect {protect0}/{protect1})", {"voice": sid0}


def infer_convert(spk_id, input_audio, transpose, f0method, state):
    if not state or not state.get("voice"):
        raise gr.Error("no voice loaded: call infer_change_voice first")
    path = getattr(input_audio, "name", input_audio)
    with wave.open(path, "rb") as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    width = params.sampwidth
    samples = [frames[i : i + width] for i in range(0, len(frames), width)]
    out = os.path.join(OUT_DIR, f"converted_{state['voice']}_{os.path.basename(path)}")
    with wave.open(out, "wb") as dst:
        dst.setparams(params)
        dst.writeframes(b"".join(reversed(samples)))
    return f"Success. voice={state['voice']} speaker={int(spk_id)} transpose={int(transpose)} f0={f0method}", out


with gr.Blocks(title="RVC WebUI") as demo:
    gr.Markdown("## RVC WebUI")
    voice = gr.State(None)
    sid0 = gr.Dropdown(label="Inferencing voice", choices=["narrator.pth", "villain.pth"], value="narrator.pth")
    protect0 = gr.Slider(0, 0.5, value=0.33, label="protect")
    protect1 = gr.Slider(0, 0.5, value=0.33, label="protect (batch)")
    loaded = gr.Textbox(label="Voice status")
    sid0.change(infer_change_voice, [sid0, protect0, protect1, voice], [loaded, voice], api_name="infer_change_voice")
    spk = gr.Slider(0, 4, value=0, step=1, label="Speaker id")
    audio_in = gr.Audio(label="Input audio", type="filepath")
    transpose = gr.Number(value=0, label="Transpose")
    f0 = gr.Radio(["pm", "rmvpe", "fcpe"], value="rmvpe", label="f0 method")
    info = gr.Textbox(label="Output information")
    audio_out = gr.Audio(label="Output audio")
    gr.Button("Convert").click(
        infer_convert, [spk, audio_in, transpose, f0, voice], [info, audio_out], api_name="infer_convert"
    )

demo.queue(concurrency_count=4)

if __name__ == "__main__":
    demo.launch(
        server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_APP_PORT", "7865")), allowed_paths=[OUT_DIR]
    )
