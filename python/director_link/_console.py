"""Running one job from a terminal, shared by ``director-link run`` (``cli``) and ``director-link demo`` (``demo``):
the exit codes, the event printer, waiting for the connection and driving a job to its end. Its own module so that
``cli`` and ``demo`` both import it rather than each other."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import errors
from ._native import Hub

EXIT_OK, EXIT_BAD_INPUT, EXIT_CONNECT, EXIT_FAILED, EXIT_TIMEOUT = 0, 2, 3, 4, 5
CONNECT_WAIT = 15.0


def parse_value(text: str) -> Any:
    """A `--set` value (and a cell of a batch file): JSON when it parses (7, 1.5, true, "x", [..]), else the raw
    string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class Printer:
    """Human progress on a TTY, one JSON line per event with --json."""

    def __init__(self, as_json: bool, stream=sys.stdout) -> None:
        self.as_json = as_json
        self.stream = stream
        self.tty = stream.isatty() and not as_json
        self._bar_shown = False
        self._last_quarter: dict[tuple, int] = {}

    def event(self, ev) -> None:
        if self.as_json:
            self.stream.write(json.dumps(ev.to_dict(), default=str) + "\n")
            self.stream.flush()
            return
        kind = ev.type
        if kind == "progress":
            self._bar(ev)
            return
        if kind == "preview":
            return
        self._end_bar()
        if kind == "service_state_changed":
            reason = f" — {ev.reason}" if ev.reason else ""
            self.line(f"[{ev.service}] {ev.state}{reason}")
        elif kind == "job_queued":
            if ev.pending_connection:
                where = "waiting for the server"
            elif ev.position is None:
                where = "on the server"
            else:
                where = "next to run" if ev.position == 0 else f"{ev.position} ahead of it"
            self.line(f"queued {ev.job_id} ({where})")
            for problem in ev.node_errors:
                self.line(f"  skipped output: node {problem['node_id']}: {problem['message']}")
        elif kind == "job_started":
            cached = f" ({len(ev.cached_nodes)} cached nodes)" if ev.cached_nodes else ""
            self.line(f"started{cached}")
        elif kind == "node_started":
            self.line(f"  node {ev.node_id} {ev.node_type or ''}".rstrip())
        elif kind == "node_text":
            self.line(f"  {ev.node_id}: {ev.text}")
        elif kind == "job_completed":
            self.line(f"completed in {ev.elapsed_seconds:.1f} s")
            for path in ev.paths:
                self.line(f"  {path}")
        elif kind == "job_failed":
            self.line(f"FAILED [{ev.code}] {ev.message}")
        elif kind == "job_cancelled":
            self.line("cancelled")

    def _bar(self, ev) -> None:
        if not self.tty:
            # Logs and pipes get a line per quarter of each node's progress instead of a redrawn bar.
            quarter = int(ev.percentage // 25)
            key = (ev.job_id, ev.node_id)
            if self._last_quarter.get(key, -1) < quarter:
                self._last_quarter[key] = quarter
                said = f" {ev.text}" if getattr(ev, "text", None) else ""
                self.line(f"  node {ev.node_id}: {ev.percentage:.0f}% ({ev.value:g}/{ev.max:g}){said}")
            return
        width = 30
        filled = int(width * ev.percentage / 100)
        eta = f" ETA {ev.eta_seconds:.0f}s" if ev.eta_seconds is not None else ""
        node = f" node {ev.node_id}" if ev.node_id else ""
        said = f" {ev.text}" if getattr(ev, "text", None) else ""
        text = f"\r  [{'#' * filled}{'.' * (width - filled)}] {ev.percentage:5.1f}%{node}{said}{eta}   "
        self.stream.write(text)
        self.stream.flush()
        self._bar_shown = True

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.stream.write("\n")
            self._bar_shown = False

    def line(self, text: str) -> None:
        if not self.as_json:
            self._end_bar()
            self.stream.write(text + "\n")
            self.stream.flush()


def wait_connected(hub: Hub, name: str, printer: Printer, timeout: float) -> bool:
    """Drains events until the service connects; False if it cannot within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.wait_for_events(min(0.2, max(0.0, deadline - time.monotonic())))
        for ev in hub.poll():
            printer.event(ev)
        state = next((s for s in hub.snapshot()["services"] if s["name"] == name), None)
        if state and state["state"] == "connected":
            return True
    return False


def drive(hub: Hub, job, printer: Printer, timeout: float | None, url: str) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            printer.line(
                f"timed out after {timeout:.0f} s; the job goes on on the server (cancel it with "
                f"director-link cancel {job.id} --server {url})"
            )
            return EXIT_TIMEOUT
        hub.wait_for_events(0.2 if remaining is None else min(0.2, remaining))
        for ev in hub.poll():
            printer.event(ev)
            if ev.is_terminal and ev.job == job.id:
                return {"job_completed": EXIT_OK, "job_cancelled": EXIT_FAILED}.get(ev.type, EXIT_FAILED)


def run_on(hub: Hub, url: str, workflow, params: dict, args, printer: Printer) -> int:
    name = hub.add_service("comfyui", url, name="server", token=os.environ.get("DIRECTOR_LINK_TOKEN"))
    if not wait_connected(hub, name, printer, args.connect_timeout):
        snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
        printer.line(f"cannot connect to {url}: {snap.get('last_error') or 'no answer'}")
        return EXIT_CONNECT
    params = upload_files(hub, name, params, printer)
    job = hub.submit(name, workflow, params=params, tag=args.tag)
    return drive(hub, job, printer, args.timeout, url)


def upload_files(hub: Hub, service: str, params: dict, printer: Printer) -> dict:
    """`--set "Load Image".image=@shot.png`: uploads the file (once per content) and sets the name the server gave."""
    out = {}
    for selector, value in params.items():
        if isinstance(value, str) and value.startswith("@"):
            path = Path(value[1:]).expanduser()
            if not path.is_file():
                raise errors.WorkflowError(f"--set {selector}=@{path}: no such file", "invalid_parameter")
            value = hub.upload_image(service, str(path))
            printer.line(f"uploaded {path} as {value}")
        out[selector] = value
    return out
