"""Runs the shared WanGP look-alike Gradio app (``fixtures/gradio/tools/gradio_app.py``) on a chosen loopback
address: the app itself always binds 127.0.0.1, so ``launch`` is wrapped to bind ``GRADIO_APP_HOST`` instead.

    GRADIO_APP_HOST=127.0.0.2 GRADIO_APP_PORT=7860 python gradio_host.py /path/to/gradio_app.py
"""

from __future__ import annotations

import ipaddress
import os
import runpy
import sys

import gradio as gr


def main() -> None:
    script = sys.argv[1]
    host = os.environ.get("GRADIO_APP_HOST", "127.0.0.1")
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to bind {host}: tests stay on loopback")
    launch = gr.Blocks.launch

    def launch_on_host(self, *args, **kwargs):
        kwargs["server_name"] = host
        return launch(self, *args, **kwargs)

    gr.Blocks.launch = launch_on_host
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
