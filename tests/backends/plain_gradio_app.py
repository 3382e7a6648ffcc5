"""A minimal Gradio app that is none of the studio's apps (no WanGP headline, no RVC/AudioLDM endpoints):
discovery must call it "Gradio app <title>". Env: GRADIO_APP_TITLE, GRADIO_APP_PORT (host via gradio_host.py)."""

import os

import gradio as gr

with gr.Blocks(title=os.environ.get("GRADIO_APP_TITLE", "Storyboard")) as demo:
    gr.Markdown("# Storyboard helper")
    text = gr.Textbox(label="Shot")
    out = gr.Textbox(label="Echo")
    gr.Button("Echo").click(lambda s: s, inputs=[text], outputs=[out], api_name="echo")

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_APP_PORT", "7860")))
