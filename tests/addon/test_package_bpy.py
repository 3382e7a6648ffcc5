"""The extension zip: built by blender_addon/build.py, validated by Blender's ``blender_ext.py``, installed and
enabled by headless Blender from the wheel it bundles (with the developer's own ``director_link`` hidden).

The wheel is made from the installed ``director_link`` package (the same files ``pip wheel`` packs), so the test
does not need the slow release build.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("bpy")

import director_link  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def wheel_from_installed(folder: Path) -> Path:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the synthesized wheel is tagged linux_x86_64")
    package = Path(director_link.__file__).parent
    version = director_link.__version__
    wheel = folder / f"director_link-{version}-cp310-abi3-linux_x86_64.whl"
    dist_info = f"director_link-{version}.dist-info"
    files = {}
    for path in sorted(package.iterdir()):
        if path.is_file() and (path.suffix in (".py", ".pyi", ".so") or path.name == "py.typed"):
            files[f"director_link/{path.name}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: director-link\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: false\nTag: cp310-abi3-linux_x86_64\n"
    )
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def test_build_validate_install_enable_disable(tmp_path):
    wheel = wheel_from_installed(tmp_path)
    out = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, str(ROOT / "blender_addon" / "build.py"), "--wheel", str(wheel), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = built.stdout + built.stderr
    assert built.returncode == 0, log
    assert "validation: passed" in log, log
    extension = out / f"movie_director-{director_link.__version__}.zip"
    legacy = out / f"movie_director-{director_link.__version__}-legacy.zip"
    with zipfile.ZipFile(extension) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
    assert f"wheels/{wheel.name}" in names and "__init__.py" in names and "workflows/invert.json" in names
    assert f'wheels = ["./wheels/{wheel.name}"]' in manifest and 'platforms = ["linux-x64"]' in manifest
    assert not any("__pycache__" in n for n in names)
    with zipfile.ZipFile(legacy) as zf:
        assert "movie_director/vendor/director_link/_native.abi3.so" in zf.namelist()

    home = tmp_path / "blender-home"
    env = dict(os.environ)
    for var in ("CONFIG", "SCRIPTS", "DATAFILES", "EXTENSIONS"):
        env[f"BLENDER_USER_{var}"] = str(home / var.lower())
    checked = subprocess.run(
        [sys.executable, str(ROOT / "blender_addon" / "tools" / "check_extension_install.py"), str(extension)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    log = checked.stdout + checked.stderr
    assert checked.returncode == 0, log
    assert "ok: disabled, hub closed" in log, log
