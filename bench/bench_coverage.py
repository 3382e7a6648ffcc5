#!/usr/bin/env python3
"""Line coverage of the Rust core and of the Python package.

Rust: ``cargo test`` built with ``-C instrument-coverage``, plus the pytest suite run against an instrumented build
of the extension (most of the hub is exercised from Python), the profiles merged. Python: coverage.py over that
same pytest run.

    . .ci/backends.sh            # the real Gradio / LiteLLM / MCP servers the pytest suite runs against
    . .ci/datastores.sh          # PostgreSQL and Redis for the studio's datastore tests (`bash .ci/datastores.sh stop`)
    pip install -e '.[test]' coverage   # pytest, coverage.py, the package (its .so is swapped for an instrumented one)
    python3 bench/bench_coverage.py [--json] [--skip-rust] [--skip-python] [--pytest-args "..."] [--keep DIR]

(``python3 bench/run_all.py --coverage`` runs exactly this, with ``--json``, as section 6.) The answer holds the
totals, the totals per folder of ``src/`` and the least covered files (``lowest``: most uncovered lines first),
for Rust and for Python. ``--keep DIR`` keeps the merged profile and the list of instrumented binaries in DIR, to
look at the uncovered lines of one file afterwards::

    llvm-cov-22 show --instr-profile=DIR/merged.profdata $(cat DIR/objects) --show-line-counts-or-regions \
        --sources src/openai/service.rs

Rust needs ``llvm-profdata`` / ``llvm-cov`` of the same LLVM major version as rustc (``rustc -vV``); rustup's
``llvm-tools`` component cannot be downloaded here, so Debian's ``llvm-N`` package is used (``apt-get install
llvm-N``; looked up as ``/usr/lib/llvm-N/bin``). The instrumented build goes to ``$CARGO_TARGET_DIR-cov`` (or
``target/coverage``) so it never disturbs the normal build. Every step has a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, child_env

RUST_LIMIT = 3600
PYTEST_LIMIT = 3600


def llvm_tools() -> tuple[str | None, str | None, str]:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"LLVM version: (\d+)", out)
    major = m.group(1) if m else "?"
    for d in (f"/usr/lib/llvm-{major}/bin", "/usr/bin"):
        prof, cov = Path(d, "llvm-profdata"), Path(d, "llvm-cov")
        if prof.exists() and cov.exists():
            v = subprocess.run([str(cov), "--version"], capture_output=True, text=True, timeout=30).stdout
            if f"version {major}." in v:
                return str(prof), str(cov), major
    return None, None, major


def python_coverage(pytest_args: list[str], pkg: Path, rust_env: dict | None) -> dict:
    """coverage.py over pytest, importing the package copy at `pkg` (with the instrumented extension if any)."""
    work = Path(tempfile.mkdtemp(prefix="dl_pycov_"))
    data = work / ".coverage"
    # Subprocesses too (the CLI tests run `director-link` in a child): coverage's `patch = subprocess`.
    rc = work / "coveragerc"
    rc.write_text(f"[run]\nsource = {pkg}\nparallel = true\npatch = subprocess\ndata_file = {data}\n")
    env = child_env()
    env["COVERAGE_RCFILE"] = str(rc)
    env["PYTHONPATH"] = os.pathsep.join([str(pkg.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["COVERAGE_FILE"] = str(data)
    if rust_env:
        env["LLVM_PROFILE_FILE"] = rust_env["LLVM_PROFILE_FILE"]
    run = subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + pytest_args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=PYTEST_LIMIT,
    )
    tail = [ln for ln in run.stdout.strip().splitlines() if " passed" in ln or " failed" in ln][-1:] or [""]
    failures = [ln.split(" - ")[0] for ln in run.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    subprocess.run([sys.executable, "-m", "coverage", "combine", "-q", f"--rcfile={rc}"], env=env, timeout=300)
    rep = subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-o", "-", "-q", f"--rcfile={rc}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(rep.stdout)
        totals = report["totals"]
    except (ValueError, KeyError):
        return {"error": f"coverage json failed: {rep.stderr[-1000:]} / pytest: {tail[0]}"}
    return {
        "pytest": tail[0],
        "pytest_exit": run.returncode,
        "failures": failures,
        "covered": totals["covered_lines"],
        "lines": totals["num_statements"],
        "percent": totals["percent_covered"],
        "instrumented_extension": rust_env is not None,
        "lowest": lowest(
            [
                (
                    "python/director_link/" + os.path.relpath(Path(name).resolve(), pkg.resolve()),
                    f["summary"]["covered_lines"],
                    f["summary"]["num_statements"],
                )
                for name, f in report.get("files", {}).items()
            ]
        ),
    }


def lowest(rows: list[tuple[str, int, int]], n: int = 15) -> list[dict]:
    """The `n` files with the most uncovered lines: (name, covered, lines) rows."""
    rows = sorted(rows, key=lambda r: (r[1] - r[2], r[0]))[:n]
    return [{"file": f, "covered": c, "lines": n_, "percent": 100 * c / n_ if n_ else None} for f, c, n_ in rows]


def summarize(files: list[dict]) -> dict:
    src = str(REPO / "src") + "/"

    def total(pred) -> dict:
        covered = sum(f["summary"]["lines"]["covered"] for f in files if pred(f["filename"]))
        count = sum(f["summary"]["lines"]["count"] for f in files if pred(f["filename"]))
        return {"covered": covered, "lines": count, "percent": 100 * covered / count if count else None}

    per_dir: dict[str, dict] = {}
    for f in files:
        if not f["filename"].startswith(src):
            continue
        rel = f["filename"].removeprefix(src)
        top = rel.split("/", 1)[0] if "/" in rel else "(top level)"
        d = per_dir.setdefault(top, {"covered": 0, "lines": 0})
        d["covered"] += f["summary"]["lines"]["covered"]
        d["lines"] += f["summary"]["lines"]["count"]
    for d in per_dir.values():
        d["percent"] = 100 * d["covered"] / d["lines"] if d["lines"] else None
    return {
        "all": total(lambda n: n.startswith(src)),
        # The core: everything but the simulator (src/sim, a test server shipped for tests and demos).
        "core": total(lambda n: n.startswith(src) and not n.startswith(src + "sim/")),
        "per_dir": per_dir,
        "lowest": lowest(
            [
                (
                    f["filename"].removeprefix(str(REPO) + "/"),
                    f["summary"]["lines"]["covered"],
                    f["summary"]["lines"]["count"],
                )
                for f in files
                if f["filename"].startswith(src) and not f["filename"].startswith(src + "sim/")
            ]
        ),
    }


def coverage(pytest_args: list[str], rust: bool, python: bool, keep: Path | None = None) -> dict:
    """Rust: `cargo test` plus (with `python`) the pytest suite on an instrumented extension, merged.
    Python: coverage.py over that same pytest run."""
    out: dict = {}
    prof = cov = None
    major = "?"
    if rust:
        prof, cov, major = llvm_tools()
        if not prof:
            out["rust"] = {
                "error": f"no llvm-profdata/llvm-cov for LLVM {major} (rustc's); `apt-get install llvm-{major}` "
                "provides them (rustup's llvm-tools component cannot be downloaded here)"
            }
            rust = False
    target = os.environ.get("CARGO_TARGET_DIR")
    target = f"{target}-cov" if target else str(REPO / "target" / "coverage")
    profiles = Path(tempfile.mkdtemp(prefix="dl_profraw_"))
    env = dict(os.environ)
    env.update(
        {
            "CARGO_TARGET_DIR": target,
            "RUSTFLAGS": "-C instrument-coverage",
            "LLVM_PROFILE_FILE": str(profiles / "%p-%m.profraw"),
        }
    )
    objects: list[str] = []
    so = None
    passed = failed = 0
    if rust:
        build = subprocess.run(
            ["cargo", "test", "--no-run", "--message-format=json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUST_LIMIT,
        )
        for line in build.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"].get("test"):
                objects.append(msg["executable"])
        if build.returncode != 0 or not objects:
            return out | {"rust": {"error": f"the instrumented build failed: {build.stderr[-2000:]}"}}
        test = subprocess.run(["cargo", "test"], cwd=REPO, env=env, capture_output=True, text=True, timeout=RUST_LIMIT)
        summary = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", test.stdout)
        passed = sum(int(a) for a, _ in summary)
        failed = sum(int(b) for _, b in summary)
        if python:
            ext = subprocess.run(
                ["cargo", "build", "--features", "python", "--lib"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUST_LIMIT,
            )
            built = Path(target, "debug", "libdirector_link.so")
            if ext.returncode == 0 and built.exists():
                so = built
    if python:
        pkg_src = Path(__import__("director_link").__file__).resolve().parent
        # A copy laid out like the checkout (python/director_link next to workflows/, which the package finds
        # its templates by), so the instrumented extension never replaces the work tree's own.
        pkg_root = Path(tempfile.mkdtemp(prefix="dl_covpkg_"))
        pkg = pkg_root / "python" / "director_link"
        shutil.copytree(pkg_src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
        (pkg_root / "workflows").symlink_to(REPO / "workflows")
        if so is not None:
            shutil.copy(so, pkg / "_native.abi3.so")
        out["python"] = python_coverage(pytest_args, pkg, env if so is not None else None)
        shutil.rmtree(pkg_root, ignore_errors=True)
    if rust:
        if so is not None:
            objects.append(str(so))
        merged = profiles / "merged.profdata"
        subprocess.run(
            [prof, "merge", "-sparse", "-o", str(merged), *map(str, profiles.glob("*.profraw"))],
            check=True,
            timeout=900,
        )
        args = [cov, "export", "--summary-only", "--format=text", f"--instr-profile={merged}"]
        args += ["--ignore-filename-regex", r"(\.cargo/registry|/rustc/|/tests/)"]
        args += [objects[0], *[a for o in objects[1:] for a in ("--object", o)]]
        data = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=900).stdout)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(merged, keep / "merged.profdata")
            (keep / "objects").write_text(" ".join([objects[0], *[f"--object {o}" for o in objects[1:]]]) + "\n")
        out["rust"] = summarize(data["data"][0]["files"]) | {
            "llvm": major,
            "tests_passed": passed,
            "tests_failed": failed,
            "with_pytest": so is not None,
        }
    shutil.rmtree(profiles, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-rust", action="store_true")
    p.add_argument("--skip-python", action="store_true")
    p.add_argument("--pytest-args", default="tests", help="arguments for pytest (default: the whole suite)")
    p.add_argument("--keep", type=Path, help="keep the merged Rust profile and the object list in this folder")
    args = p.parse_args(argv)
    res = coverage(shlex.split(args.pytest_args), not args.skip_rust, not args.skip_python, args.keep)
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
