"""A tiny AudioLDM look-alike (Gradio 3.x, default title "Gradio", the AudioLDM headline in an HTML component):
``text2audio`` (AudioLDM 2 names it; inputs text, duration, guidance_scale, seed, n_candidates) returns a WAV
file, and a second, unnamed event (``api_name=False``, like AudioLDM v1's button) does the same and is reachable only
by fn_index. The WAV is a sine whose pitch comes from the seed. Env: GRADIO_APP_PORT (host via gradio_host.py)."""

import math
import os
import struct
import tempfile
import time
import wave

import gradio as gr

OUT_DIR = os.path.join(tempfile.gettempdir(), "fake_audioldm_outputs")
os.makedirs(OUT_DIR, exist_ok=True)
RATE = 8000


def text2audio(text, duration, guidance_scale, seed, n_candidates, progress=gr.Progress()):  # noqa: B008 (how Gradio injects progress)
    if not text:
        raise gr.Error("describe the sound")
    n = int(RATE * float(duration))
    freq = 220 + int(seed) % 440
    chunks = 4
    frames = bytearray()
    for c in range(chunks):
        progress((c, chunks), desc="Sampling")
        time.sleep(0.05)
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            frames += struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / RATE)))
    path = os.path.join(OUT_DIR, f"audioldm_{int(seed)}_{int(time.time() * 1000)}.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return path


with gr.Blocks() as demo:
    gr.HTML("<h1>AudioLDM 2: A General Framework for Audio, Music, and Speech Generation</h1>")
    text = gr.Textbox(label="Input text", value="rain on a tin roof")
    duration = gr.Slider(1, 10, value=1, step=0.5, label="Duration (seconds)")
    guidance = gr.Slider(1, 10, value=3.5, label="Guidance scale")
    seed = gr.Number(value=45, label="Seed")
    n_candidates = gr.Slider(1, 3, value=1, step=1, label="Candidates")
    out = gr.Audio(label="Generated audio")
    gr.Button("Submit").click(text2audio, [text, duration, guidance, seed, n_candidates], [out], api_name="text2audio")
    gr.Button("Submit (v1)").click(text2audio, [text, duration, guidance, seed, n_candidates], [out], api_name=False)

demo.queue(concurrency_count=3)

if __name__ == "__main__":
    demo.launch(
        server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_APP_PORT", "7860")), allowed_paths=[OUT_DIR]
    )
