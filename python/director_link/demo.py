"""``director-link demo``: one workflow with live progress, on the local ComfyUI if one answers, else on the
built-in simulator, so a new user sees the whole loop (connect, queue, progress, previews, result on disk)."""

from __future__ import annotations

import argparse
import random
import sys

from . import _console as console
from . import errors
from ._native import Hub
from .testing import ComfySimulator, api_workflow

LOCAL = "127.0.0.1:8188"


def _find_local(hub: Hub) -> str | None:
    """The local ComfyUI's address, or None (a simulator left running elsewhere does not count)."""
    (result,) = hub.probe([LOCAL], 1.5)
    if result["kind"] == "comfyui" and not result["simulator"]:
        return LOCAL
    return None


def run(args) -> int:
    printer = console.Printer(args.json)
    if not args.server and not args.simulator:
        with Hub() as probe:
            args.server = _find_local(probe)
    if args.server:
        printer.line(f"Director Link demo on the ComfyUI at {args.server}")
        # Core nodes only, so it runs on any ComfyUI without models; a random colour defeats the cache.
        workflow = api_workflow("invert", color=random.randrange(1 << 24))
        with Hub(output_dir=args.out) as hub:
            return _run(hub, args.server, workflow, args, printer)
    printer.line("No ComfyUI answers on 127.0.0.1:8188: running the demo on the built-in simulator.")
    # The simulator outlives the hub, so the link is closed by us, not cut by the server going away.
    with ComfySimulator() as sim:
        printer.line(f"simulator listening on {sim.url}")
        workflow = api_workflow("progress", steps=12, step_seconds=0.15, nonce=random.randrange(1 << 31))
        with Hub(output_dir=args.out) as hub:
            return _run(hub, sim.url, workflow, args, printer)


def _run(hub: Hub, url: str, workflow: dict, args, printer) -> int:
    args.connect_timeout = console.CONNECT_WAIT
    args.tag = "demo"
    code = console.run_on(hub, url, workflow, {}, args, printer)
    if code == console.EXIT_OK:
        printer.line(f"results are in {hub.output_dir}")
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``director-link demo`` (also ``python -m director_link.demo``)."""
    parser.add_argument("--server", default=None, help="use this ComfyUI instead of looking on 127.0.0.1:8188")
    parser.add_argument("--simulator", action="store_true", help="always use the built-in simulator")
    parser.add_argument("--out", default="director-link-output")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="director-link demo")
    add_arguments(_parser)
    try:
        sys.exit(run(_parser.parse_args()))
    except errors.DirectorLinkError as _e:
        print(f"error [{_e.code}]: {_e}", file=sys.stderr)
        sys.exit(console.EXIT_BAD_INPUT)
