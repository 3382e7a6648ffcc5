#!/usr/bin/env python3
"""Line coverage of the Rust core (``cargo test`` built with ``-C instrument-coverage``) and of the Python package
(coverage.py over the pytest suite).

    python3 bench/coverage.py [--json] [--skip-rust] [--skip-python] [--pytest-args "..."]

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


def rust_coverage() -> dict:
    prof, cov, major = llvm_tools()
    if not prof:
        return {
            "error": f"no llvm-profdata/llvm-cov for LLVM {major} (rustc's); `apt-get install llvm-{major}` "
            "provides them (rustup's llvm-tools component cannot be downloaded here)"
        }
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
    build = subprocess.run(
        ["cargo", "test", "--no-run", "--message-format=json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUST_LIMIT,
    )
    objects = []
    for line in build.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg.get("profile", {}).get("test"):
            objects.append(msg["executable"])
    if build.returncode != 0 or not objects:
        return {"error": f"the instrumented build failed: {build.stderr[-2000:]}"}
    test = subprocess.run(["cargo", "test"], cwd=REPO, env=env, capture_output=True, text=True, timeout=RUST_LIMIT)
    summary = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", test.stdout)
    passed = sum(int(a) for a, _ in summary)
    failed = sum(int(b) for _, b in summary)
    merged = profiles / "merged.profdata"
    subprocess.run(
        [prof, "merge", "-sparse", "-o", str(merged), *map(str, profiles.glob("*.profraw"))],
        check=True,
        timeout=600,
    )
    args = [cov, "export", "--summary-only", "--format=text", f"--instr-profile={merged}"]
    args += ["--ignore-filename-regex", r"(\.cargo/registry|/rustc/|/tests/)"]
    args += [objects[0], *[a for o in objects[1:] for a in ("--object", o)]]
    data = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout)
    files = data["data"][0]["files"]
    shutil.rmtree(profiles, ignore_errors=True)

    def total(pred) -> dict:
        covered = sum(f["summary"]["lines"]["covered"] for f in files if pred(f["filename"]))
        count = sum(f["summary"]["lines"]["count"] for f in files if pred(f["filename"]))
        return {"covered": covered, "lines": count, "percent": 100 * covered / count if count else None}

    src = str(REPO / "src") + "/"
    per_dir: dict[str, dict] = {}
    for f in files:
        rel = f["filename"].removeprefix(src)
        top = rel.split("/", 1)[0] if "/" in rel else "(top level)"
        d = per_dir.setdefault(top, {"covered": 0, "lines": 0})
        d["covered"] += f["summary"]["lines"]["covered"]
        d["lines"] += f["summary"]["lines"]["count"]
    for d in per_dir.values():
        d["percent"] = 100 * d["covered"] / d["lines"] if d["lines"] else None
    return {
        "llvm": major,
        "tests_passed": passed,
        "tests_failed": failed,
        "all": total(lambda n: n.startswith(src)),
        # The core: everything but the simulator (src/sim, a test server) and the pyo3 bindings (src/py, not
        # compiled by a plain `cargo test`; the Python suite exercises them).
        "core": total(lambda n: n.startswith(src) and not n.startswith(src + "sim/") and not n.startswith(src + "py/")),
        "per_dir": per_dir,
    }


def python_coverage(pytest_args: list[str]) -> dict:
    pkg = Path(__import__("director_link").__file__).resolve().parent
    data = Path(tempfile.mkdtemp(prefix="dl_pycov_")) / ".coverage"
    env = child_env() | {"COVERAGE_FILE": str(data)}
    run = subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--source={pkg}", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + pytest_args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=PYTEST_LIMIT,
    )
    tail = run.stdout.strip().splitlines()[-1:] or [""]
    rep = subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-o", "-", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        totals = json.loads(rep.stdout)["totals"]
    except (ValueError, KeyError):
        return {"error": f"coverage json failed: {rep.stderr[-1000:]} / pytest: {tail[0]}"}
    return {
        "pytest": tail[0],
        "pytest_exit": run.returncode,
        "covered": totals["covered_lines"],
        "lines": totals["num_statements"],
        "percent": totals["percent_covered"],
        "package": str(pkg),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-rust", action="store_true")
    p.add_argument("--skip-python", action="store_true")
    p.add_argument("--pytest-args", default="tests", help="arguments for pytest (default: the whole suite)")
    args = p.parse_args(argv)
    res = {}
    if not args.skip_python:
        res["python"] = python_coverage(shlex.split(args.pytest_args))
    if not args.skip_rust:
        res["rust"] = rust_coverage()
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
