"""Addon tests: the pure-Python modules import without Blender; the ``bpy`` tests skip where bpy is missing.

``blender_addon/`` is put on ``sys.path`` so ``import movie_director.state`` works, and Blender's user folders are
pointed at a temporary directory before ``bpy`` could be imported, so no test reads or writes ``~/.config/blender``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ADDON_ROOT = Path(__file__).resolve().parents[2] / "blender_addon"
if str(ADDON_ROOT) not in sys.path:
    sys.path.insert(0, str(ADDON_ROOT))

_blender_home = tempfile.mkdtemp(prefix="movie-director-blender-home-")
for var in ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES", "BLENDER_USER_EXTENSIONS"):
    os.environ.setdefault(var, os.path.join(_blender_home, var.rsplit("_", 1)[-1].lower()))


# ---- fixtures of the ``bpy`` tests (bpy is imported only when one of them is used) --------------------------------


@pytest.fixture
def timers(monkeypatch):
    """``bpy.app.timers`` replaced by hand-stepped ones (timers never fire in module mode)."""
    bpy = pytest.importorskip("bpy")
    from .blender_support import ManualTimers

    manual = ManualTimers()
    monkeypatch.setattr(bpy.app.timers, "register", manual.register)
    monkeypatch.setattr(bpy.app.timers, "unregister", manual.unregister)
    monkeypatch.setattr(bpy.app.timers, "is_registered", manual.is_registered)
    return manual


@pytest.fixture
def addon(timers, tmp_path):
    """The add-on enabled on an empty scene, no servers, results under ``tmp_path/out``."""
    bpy = pytest.importorskip("bpy")
    import addon_utils

    from .blender_support import ADDON

    bpy.ops.wm.read_homefile(use_empty=True)
    addon_utils.enable(ADDON, default_set=True)
    import movie_director
    from movie_director import bridge

    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.auto_discover = False
    prefs.initialized = True  # no default "local" service
    prefs.services.clear()
    prefs.output_dir = str(tmp_path / "out") + os.sep
    timers.step()
    try:
        yield SimpleNamespace(module=movie_director, bridge=bridge, prefs=prefs, timers=timers, tmp=tmp_path)
    finally:
        addon_utils.disable(ADDON, default_set=True)
