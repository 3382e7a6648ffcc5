"""Helpers for calling Gradio apps (Wan2GP, RVC WebUI, AudioLDM, any Gradio app) through ``Hub.submit``.

>>> from director_link import GradioCall, gradio_file
>>> call = GradioCall("/infer_convert", inputs=[0, gradio_file("take_03.wav"), 0, "rmvpe"])  # doctest: +SKIP
"""

from __future__ import annotations

import os


def gradio_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """A local file as a ``GradioCall`` input: it is uploaded to the app before the call and replaced by the
    app's own file value (4.x+ FileData, 3.x file dict). Raises ``FileNotFoundError`` when it does not exist."""
    full = os.path.abspath(os.fspath(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such file: {full}")
    return {"path": full}
