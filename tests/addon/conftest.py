"""Addon tests: the pure-Python modules import without Blender; the ``bpy`` tests skip where bpy is missing.

``blender_addon/`` is put on ``sys.path`` so ``import movie_director.state`` works, and Blender's user folders are
pointed at a temporary directory before ``bpy`` could be imported, so no test reads or writes ``~/.config/blender``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ADDON_ROOT = Path(__file__).resolve().parents[2] / "blender_addon"
if str(ADDON_ROOT) not in sys.path:
    sys.path.insert(0, str(ADDON_ROOT))

_blender_home = tempfile.mkdtemp(prefix="movie-director-blender-home-")
for var in ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES", "BLENDER_USER_EXTENSIONS"):
    os.environ.setdefault(var, os.path.join(_blender_home, var.rsplit("_", 1)[-1].lower()))
