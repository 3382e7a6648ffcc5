"""Takes on disk (pure Python): one folder per take, ``<output>/<shot id>/<job id>/``, holding the result files, the
hub's ``manifest.json`` (the workflow as posted, the server, timings, every file with its sha256) and the add-on's
``take.json`` (the shot, its frame range, the settings and seed it was made with, the fingerprint of its inputs).
The .blend keeps references only (folder and file paths), never the images.

Results of a file that was never saved are written to a session folder in the temp directory; on the first save
they move next to the .blend (:func:`move_tree`), and every reference is repointed (:func:`rebase`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

TAKE_FILE = "take.json"
CORE_MANIFEST = "manifest.json"
PROJECT_FOLDER = "director_link"


def take_dir(output_dir: str, shot_id: str, job_id: str) -> str:
    """Where the hub writes a job submitted with ``tag=shot_id`` (its ``<output>/<tag>/<job id>/``)."""
    return os.path.join(output_dir, shot_id, job_id)


def unsaved_output_dir(pid: int | None = None) -> str:
    """The session folder for a .blend that has no path yet (one level: never ``director_link/director_link``)."""
    return os.path.join(tempfile.gettempdir(), f"movie_director_unsaved_{os.getpid() if pid is None else pid}")


def project_output_dir(blend_path: str, folder: str = PROJECT_FOLDER) -> str:
    """``<folder of the .blend>/<folder>``."""
    return os.path.join(os.path.dirname(os.path.abspath(blend_path)), folder)


def write_take(folder: str, data: dict[str, Any]) -> str:
    """Writes ``take.json`` (temp file + rename, so a crash never leaves half a file); returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, TAKE_FILE)
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"written_at": time.time(), **data}, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def update_take(folder: str, **fields: Any) -> None:
    """Adds fields (state, files, timings) to an existing ``take.json``; a missing one is started."""
    data = read_take(folder) or {}
    data.update(fields)
    write_take(folder, data)


def read_take(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, TAKE_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)
    except ValueError:  # different drives
        return False


def rebase(path: str, old_root: str, new_root: str) -> str:
    """``path`` moved from under ``old_root`` to the same place under ``new_root`` (unchanged when not under it)."""
    if not path or not is_under(path, old_root):
        return path
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(old_root))
    return os.path.join(new_root, rel)


def move_tree(src: str, dst: str) -> list[str]:
    """Moves every file under ``src`` to the same place under ``dst`` (merging into existing folders, never
    overwriting a file already there); returns the problems (empty when all moved). A file that cannot be moved stays
    where it is, so nothing is lost."""
    problems: list[str] = []
    if not os.path.isdir(src):
        return problems
    for folder, _dirs, files in os.walk(src):
        target_folder = os.path.join(dst, os.path.relpath(folder, src))
        for name in files:
            source = os.path.join(folder, name)
            target = os.path.join(target_folder, name)
            try:
                os.makedirs(target_folder, exist_ok=True)
                if os.path.exists(target):
                    problems.append(f"{target} exists already; {source} left where it is")
                    continue
                shutil.move(source, target)
            except OSError as exc:
                problems.append(f"could not move {source}: {exc}")
    # Remove the folders left empty.
    for folder, _dirs, _files in sorted(os.walk(src), key=lambda w: -len(w[0])):
        try:
            os.rmdir(folder)
        except OSError:
            pass
    return problems
