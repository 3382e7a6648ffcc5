"""The workflow templates that ship with Director Link, inside the package (``director_link/templates/``; the
repository's ``workflows/`` points there).

    >>> from director_link import workflows
    >>> workflows.names()                      # doctest: +SKIP
    ['acceptance_progress', 'controlnet_pose', 'invert', 'ltx_video', 'sd_basic', 'upscale_4x']
    >>> wf = workflows.load("sd_basic")        # a director_link.Workflow
    >>> workflows.bindings("sd_basic")["parameters"]   # doctest: +SKIP

Templates are looked up in ``$DIRECTOR_LINK_WORKFLOWS``, then in the package's ``templates/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._native import Workflow


def search_path() -> list[Path]:
    here = Path(__file__).resolve().parent
    paths = [Path(p) for p in os.environ.get("DIRECTOR_LINK_WORKFLOWS", "").split(os.pathsep) if p]
    return [*paths, here / "templates"]


def _find(name: str, suffix: str) -> Path:
    for folder in search_path():
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    known = ", ".join(names()) or "none found"
    raise FileNotFoundError(f"no workflow template named {name!r} (known: {known}; searched {search_path()})")


def names() -> list[str]:
    found: set[str] = set()
    for folder in search_path():
        if folder.is_dir():
            found |= {p.stem for p in folder.glob("*.json") if not p.name.endswith(".bindings.json")}
    return sorted(found)


def path(name: str) -> Path:
    return _find(name, ".json")


def load(name: str) -> Workflow:
    """The template as a ``Workflow``."""
    return Workflow.load(str(path(name)))


def bindings(name: str) -> dict:
    """The template's named parameters and outputs (``<name>.bindings.json``), or an empty description."""
    try:
        return json.loads(_find(name, ".bindings.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"name": name, "parameters": [], "outputs": []}
