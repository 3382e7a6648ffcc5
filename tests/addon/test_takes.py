"""Takes on disk: take.json written atomically and updated, paths rebased, folders moved without overwriting."""

from __future__ import annotations

import os

from movie_director import takes


def test_take_json_write_update_read(tmp_path):
    folder = tmp_path / "out" / "sh-1" / "job-1"
    takes.write_take(str(folder), {"shot_id": "sh-1", "seed": str(2**64 - 1)})
    takes.update_take(str(folder), state="completed", files=["a.png"])
    data = takes.read_take(str(folder))
    assert data["shot_id"] == "sh-1" and data["seed"] == str(2**64 - 1) and data["state"] == "completed"
    assert not (folder / "take.json.part").exists()
    assert takes.read_take(str(tmp_path / "nothing")) is None
    (folder / "take.json").write_text("{broken")
    assert takes.read_take(str(folder)) is None


def test_unsaved_folder_is_one_level_and_project_folder_next_to_the_blend(tmp_path):
    unsaved = takes.unsaved_output_dir(pid=42)
    assert os.path.basename(unsaved) == "movie_director_unsaved_42"
    assert "director_link" + os.sep + "director_link" not in unsaved
    assert takes.project_output_dir(str(tmp_path / "film.blend")) == str(tmp_path / "director_link")
    assert takes.take_dir("/o", "sh-1", "j") == os.path.join("/o", "sh-1", "j")


def test_rebase_only_paths_under_the_root(tmp_path):
    old, new = str(tmp_path / "tmp"), str(tmp_path / "project")
    assert takes.rebase(os.path.join(old, "sh", "j", "a.png"), old, new) == os.path.join(new, "sh", "j", "a.png")
    assert takes.rebase(str(tmp_path / "elsewhere.png"), old, new) == str(tmp_path / "elsewhere.png")
    assert takes.rebase("", old, new) == ""


def test_move_tree_merges_and_never_overwrites(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sh-1" / "j1").mkdir(parents=True)
    (src / "sh-1" / "j1" / "a.png").write_bytes(b"new")
    (src / "sh-1" / "j1" / "b.png").write_bytes(b"b")
    (dst / "sh-1" / "j1").mkdir(parents=True)
    (dst / "sh-1" / "j1" / "a.png").write_bytes(b"old")
    problems = takes.move_tree(str(src / "sh-1"), str(dst / "sh-1"))
    assert len(problems) == 1 and "exists already" in problems[0]
    assert (dst / "sh-1" / "j1" / "a.png").read_bytes() == b"old"  # not overwritten …
    assert (src / "sh-1" / "j1" / "a.png").read_bytes() == b"new"  # … and not lost
    assert (dst / "sh-1" / "j1" / "b.png").read_bytes() == b"b" and not (src / "sh-1" / "j1" / "b.png").exists()
