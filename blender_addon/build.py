"""Builds the Movie Director add-on packages and validates them with Blender's own extension tool.

    python3 blender_addon/build.py                 # reuse the newest dist/director_link-*.whl, or build it
    python3 blender_addon/build.py --wheel PATH    # bundle this wheel
    python3 blender_addon/build.py --build-wheel   # always run `pip wheel . --no-deps -w dist/` first (slow)

Writes into ``dist/``:

- ``movie_director-<version>.zip`` — the Blender 4.2+ extension: the add-on, ``blender_manifest.toml`` listing the
  bundled wheel under ``./wheels/``, and the example workflows. Packed by ``blender_ext.py build`` when the tool is
  found (it ships inside the ``bpy`` wheel and with Blender), then checked with ``blender_ext.py validate``.
- ``movie_director-<version>-legacy.zip`` — for Blender 3.6–4.1 (Preferences › Add-ons › Install): the same add-on
  with the wheel unpacked into ``movie_director/vendor/``, which ``__init__.py`` puts on ``sys.path``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE = HERE / "movie_director"
SKIP = {"__pycache__", "vendor", "wheels"}

# Wheel platform tag → Blender extension platform.
PLATFORMS = {
    "linux_x86_64": "linux-x64",
    "manylinux": "linux-x64",
    "linux_aarch64": "linux-arm64",
    "win_amd64": "windows-x64",
    "win_arm64": "windows-arm64",
    "macosx_arm64": "macos-arm64",
    "macosx_x86_64": "macos-x64",
}


def find_blender_ext() -> Path | None:
    """``blender_ext.py`` from the installed ``bpy`` module, or from a Blender found on PATH's neighbourhood."""
    candidates: list[str] = []
    try:
        import importlib.util

        spec = importlib.util.find_spec("bpy")
        if spec and spec.origin:
            base = Path(spec.origin).parent
            candidates += glob.glob(str(base / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"))
    except (ImportError, ValueError):
        pass
    candidates += glob.glob("/usr/share/blender/*/scripts/addons*/bl_pkg/cli/blender_ext.py")
    return Path(sorted(candidates)[-1]) if candidates else None


def platform_of(wheel: Path) -> str:
    tag = wheel.stem.rsplit("-", 1)[-1]
    for key, platform in PLATFORMS.items():
        if key in tag:
            return platform
    raise SystemExit(f"{wheel.name}: unknown platform tag {tag!r}")


def newest_wheel() -> Path | None:
    wheels = sorted((ROOT / "dist").glob("director_link-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1] if wheels else None


def build_wheel() -> Path:
    print("building the director_link wheel (release build; takes a few minutes)…", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", "dist/"], cwd=ROOT, check=True)
    wheel = newest_wheel()
    if wheel is None:
        raise SystemExit("pip wheel produced no director_link wheel in dist/")
    return wheel


def manifest_version() -> str:
    text = (PACKAGE / "blender_manifest.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def copy_package(dest: Path) -> None:
    def ignore(_dir, names):
        return [n for n in names if n in SKIP or n.endswith(".pyc")]

    shutil.copytree(PACKAGE, dest, ignore=ignore)
    examples = dest / "workflows"
    examples.mkdir(exist_ok=True)
    for workflow in sorted((ROOT / "workflows").glob("*.json")):
        shutil.copy2(workflow, examples / workflow.name)


def write_manifest(stage: Path, wheel: Path) -> None:
    path = stage / "blender_manifest.toml"
    text = path.read_text()
    text = re.sub(r"^platforms = .*$", f'platforms = ["{platform_of(wheel)}"]', text, flags=re.M)
    text = re.sub(r"^wheels = .*$", f'wheels = ["./wheels/{wheel.name}"]', text, flags=re.M)
    path.write_text(text)


def zip_dir(source: Path, target: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(source).as_posix())


def build_extension(wheel: Path, out: Path, blender_ext: Path | None) -> Path:
    target = out / f"movie_director-{manifest_version()}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "movie_director"
        copy_package(stage)
        (stage / "wheels").mkdir()
        shutil.copy2(wheel, stage / "wheels" / wheel.name)
        write_manifest(stage, wheel)
        if target.exists():
            target.unlink()
        if blender_ext is not None:
            subprocess.run(
                [
                    sys.executable,
                    str(blender_ext),
                    "build",
                    "--source-dir",
                    str(stage),
                    "--output-filepath",
                    str(target),
                ],
                check=True,
            )
        else:
            print("blender_ext.py not found: packing the zip directly (install bpy to validate)")
            zip_dir(stage, target)
    return target


def build_legacy(wheel: Path, out: Path) -> Path:
    target = out / f"movie_director-{manifest_version()}-legacy.zip"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "movie_director"
        copy_package(stage)
        vendor = stage / "vendor"
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith("director_link/"):
                    zf.extract(name, vendor)
        zip_dir(stage, target, prefix="movie_director/")
    return target


def validate(zip_path: Path, blender_ext: Path | None) -> bool:
    if blender_ext is None:
        print("not validated: blender_ext.py not found (pip install bpy, or pass a Blender)")
        return False
    result = subprocess.run(
        [sys.executable, str(blender_ext), "validate", str(zip_path)], capture_output=True, text=True
    )
    print((result.stdout + result.stderr).strip())
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the director_link wheel to bundle")
    parser.add_argument("--build-wheel", action="store_true", help="build the wheel first (pip wheel, release)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--blender-ext", type=Path, help="path to Blender's blender_ext.py")
    args = parser.parse_args(argv)

    wheel = args.wheel or (None if args.build_wheel else newest_wheel()) or build_wheel()
    if not wheel.is_file():
        raise SystemExit(f"{wheel} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    blender_ext = args.blender_ext or find_blender_ext()
    print(f"wheel: {wheel}\nblender_ext: {blender_ext or 'not found'}")
    extension = build_extension(wheel, args.out, blender_ext)
    legacy = build_legacy(wheel, args.out)
    print(f"extension: {extension} ({os.path.getsize(extension) // 1024} KB)")
    print(f"legacy add-on: {legacy} ({os.path.getsize(legacy) // 1024} KB)")
    ok = validate(extension, blender_ext)
    print("validation: " + ("passed" if ok else "FAILED or skipped"))
    return 0 if ok or blender_ext is None else 1


if __name__ == "__main__":
    sys.exit(main())
