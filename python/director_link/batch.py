"""``director-link batch SHOTS.csv --workflow W --server A [--server B …]``: one job per row of a shot list, over one
server or a pool of them, with a live progress display, ``--resume`` and ``--json`` events.

A row gives the job's parameters by selector (the ``--set`` syntax of ``director-link run``: ``3.seed``,
``positive.text``, ``"Load Image".image`` with ``@FILE`` to upload), its ``tag`` (the shot's name; a re-take goes
where the shot last ran) and its ``output`` (the row's folder under ``--out``, default: the tag). A CSV names the
selectors in its header; a JSON-lines file has one object per line (``{"tag": …, "output": …, "params": {…}}``,
other keys are selectors too). A finished row's files and ``manifest.json`` (written by the core, as for every job)
end up in ``<out>/<output>/``; ``--resume`` skips the rows whose manifest is already there.

Bad rows are reported with their line numbers and the good rows still run. Exit codes are those of the other
commands: 0 every row done, 2 bad input (some rows, or the file, or the workflow), 3 no server could be reached,
4 a job failed or the batch was cancelled (Ctrl-C), 5 ``--timeout`` ran out. Ctrl-C cancels every job the batch
queued and waits for the servers to confirm, so nothing is left running; a second Ctrl-C stops waiting.

``--json`` prints the hub's events (as ``run --json`` does, previews left out) and the batch's own, each with its
``type``: ``batch_started``, ``row_invalid`` (``line``, ``message``), ``row_skipped``, ``row_submitted``
(``line``, ``output``, ``job_id``), ``row_completed`` (``folder``, ``manifest``, ``files``, ``server``),
``row_failed`` (``code``, ``message``), ``row_cancelled``, ``batch_cancelling``, ``row_unconfirmed``, ``error``,
``note`` and last ``batch_finished`` (the counts and ``exit_code``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from . import workflows as templates
from ._console import (
    CONNECT_WAIT,
    EXIT_BAD_INPUT,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    parse_value,
)
from ._native import Hub, Workflow

RESERVED = ("tag", "output")
# Where the hub writes a job's folder before the batch moves it to ``<out>/<output>/`` (a tag may equal an output).
STAGING = ".director-link-batch"
# Seconds the servers get to confirm the cancellations after Ctrl-C or --timeout.
CANCEL_WAIT = 30.0
# The progress display is redrawn at most this often (seconds).
REDRAW_EVERY = 0.25
POOL_NAME = "pool"
SINGLE_NAME = "server"
TERMINAL = ("job_completed", "job_failed", "job_cancelled")
# States a server is in after an attempt that failed (with a reason); "disconnected" without one: not tried yet.
SETTLED = ("disconnected", "reconnecting", "circuit_open", "closed")


class BatchInputError(errors.DirectorLinkError, ValueError):
    """A shot list or a workflow the batch cannot use at all (code ``invalid_batch``)."""

    code = "invalid_batch"


@dataclass
class Row:
    """One job of the batch: where it came from, its parameters, its tag and its output folder's name."""

    line: int
    output: str
    tag: str | None
    params: dict[str, Any]


@dataclass
class BadRow:
    line: int
    message: str


# ---- reading the shot list ------------------------------------------------------------------------------------------


def read_rows(path: str | os.PathLike[str]) -> tuple[list[Row], list[BadRow]]:
    """The rows of a ``.csv`` or ``.jsonl`` file and the bad ones (by line); raises `BatchInputError` for a file that
    cannot be read at all."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise BatchInputError(f"{path}: a shot list is a .csv or a .jsonl file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise BatchInputError(f"no shot list at {path}") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise BatchInputError(f"{path}: line {line} is not UTF-8 text") from None
    except OSError as e:
        raise BatchInputError(f"cannot read {path}: {e.strerror or e}") from None
    raw = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(text)
    rows: list[Row] = []
    bad: list[BadRow] = []
    first_line: dict[str, int] = {}
    for item in raw:
        if isinstance(item, BadRow):
            bad.append(item)
            continue
        line, tag, output, params = item
        problem = _name_problem("tag", tag) if tag is not None else None
        if output is None:
            output = tag if tag is not None else f"line_{line}"
        problem = problem or _name_problem("output", output)
        if problem is None and output in first_line:
            problem = f"output {output!r} is already line {first_line[output]}'s (each row needs its own folder)"
        if problem is not None:
            bad.append(BadRow(line, problem))
            continue
        first_line[output] = line
        rows.append(Row(line, output, tag, params))
    return rows, sorted(bad, key=lambda b: b.line)


def _name_problem(what: str, value: str) -> str | None:
    """Why a tag or output cannot name a folder (None when it can): one plain path component."""
    if not value.strip():
        return f"{what} is empty"
    if value != value.strip() or value.startswith(".") or any(c in value for c in '/\\<>:"|?*'):
        return f'{what} {value!r}: use a plain folder name (no slashes, no leading dot or spaces, none of <>:"|?*)'
    if any(ord(c) < 32 for c in value) or len(value.encode()) > 120:
        return f"{what} {value!r}: use a plain folder name (no control characters, at most 120 bytes)"
    return None


def _csv_rows(path: Path, text: str) -> Iterable[tuple | BadRow]:
    reader = csv.reader(io.StringIO(text), strict=True)
    header: list[str] | None = None
    ended = 0  # the line the previous record ended on
    while True:
        start = ended + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if reader.line_num <= ended:  # nothing consumed: stop rather than loop
                yield BadRow(start, f"unreadable CSV: {e}")
                break
            ended = reader.line_num
            yield BadRow(start, f"unreadable CSV: {e}")
            continue
        ended = reader.line_num
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue  # blank lines and comments
        if header is None:
            header = [c.strip() for c in cells]
            if any(not h for h in header):
                raise BatchInputError(f"{path}: line {start}: the header has an empty column name")
            seen = [h for i, h in enumerate(header) if h.lower() in (x.lower() for x in header[:i])]
            if seen:
                raise BatchInputError(f"{path}: line {start}: the header names {seen[0]!r} twice")
            continue
        if len(cells) != len(header):
            yield BadRow(start, f"{len(cells)} cells, the header has {len(header)}")
            continue
        tag = output = None
        params: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            key = name.lower()
            if key == "tag":
                tag = cell.strip() or None
            elif key == "output":
                output = cell.strip() or None
            elif cell.strip():
                params[name] = parse_value(cell.strip())
        yield (start, tag, output, params)
    if header is None:
        raise BatchInputError(f"{path}: no header line (the first line names the columns: tag, output, selectors)")


def _jsonl_rows(text: str) -> Iterable[tuple | BadRow]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            yield BadRow(number, f"not JSON: {e}")
            continue
        if not isinstance(item, dict):
            yield BadRow(number, 'a line is one JSON object: {"tag": ..., "output": ..., "params": {...}}')
            continue
        params = item.pop("params", {})
        if not isinstance(params, dict):
            yield BadRow(number, "params must be an object of selector: value")
            continue
        tag, output = item.pop("tag", None), item.pop("output", None)
        wrong = [k for k, v in (("tag", tag), ("output", output)) if v is not None and not isinstance(v, str)]
        if wrong:
            yield BadRow(number, f"{wrong[0]} must be a string")
            continue
        yield (number, tag or None, output or None, {**params, **item})


def load_workflow(name: str) -> Workflow:
    """``--workflow``: a file (API or UI format, or a ComfyUI .png), else the name of a shipped template."""
    path = Path(name).expanduser()
    if not path.exists():
        try:
            path = templates.path(name)
        except FileNotFoundError:
            known = ", ".join(templates.names()) or "none"
            raise BatchInputError(
                f"no workflow file at {name} and no template of that name (templates: {known})"
            ) from None
    return Workflow.load(str(path))


def resolve_files(rows: list[Row], base: Path) -> None:
    """``@FILE`` values are relative to the shot list, so a batch runs the same from any folder."""
    for row in rows:
        for selector, value in row.params.items():
            if isinstance(value, str) and value.startswith("@") and len(value) > 1:
                row.params[selector] = "@" + str((base / Path(value[1:]).expanduser()).resolve())


def check_rows(
    workflow: Workflow, rows: list[Row], object_info: dict[str, Any] | None = None
) -> tuple[list[Row], list[BadRow]]:
    """Rows whose selectors all name an input of the workflow (and, given the server's node list, whose values fit
    it), and the others. A UI-format workflow is checked when submitted, after its conversion."""
    if workflow.format != "api":
        return rows, []
    prompt = workflow.to_dict()
    good: list[Row] = []
    bad: list[BadRow] = []
    for row in rows:
        wf = Workflow.load(prompt)
        problem = None
        for selector, value in row.params.items():
            if object_info is not None and isinstance(value, str) and value.startswith("@"):
                continue  # the name the upload gets is only known then
            try:
                wf.set(selector, value, object_info)
            except errors.WorkflowError as e:
                problem = f"{selector}: {e}"
                break
        if problem is None:
            good.append(row)
        else:
            bad.append(BadRow(row.line, problem))
    return good, bad


def manifest_of(out: Path, row: Row) -> Path:
    return out / row.output / "manifest.json"


# ---- the display ----------------------------------------------------------------------------------------------------


@dataclass
class ServerLine:
    """One server of the batch as the display shows it."""

    name: str
    state: str
    queue: int | None = None
    running: list[str] = field(default_factory=list)  # "shot_07 45%"
    note: str | None = None
    # Past its first attempt: taking jobs (a pool's server: connected and its node list read), or failed with a
    # reason. A batch starts queueing once every server has settled, so the first rows spread over all of them.
    settled: bool = field(default=True, compare=False)


class Display:
    """JSON lines with ``--json``; else a redrawn block (overall bar + a line per server) on a terminal, plain lines
    otherwise. Row events are lines in every mode."""

    def __init__(self, as_json: bool, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.tty = not as_json and self.stream.isatty()
        self._block = 0  # lines of the redrawn block under the cursor
        self._states: dict[str, str] = {}

    def emit(self, kind: str, text: str | None = None, **fields: Any) -> None:
        """A batch event: a JSON line (``{"type": kind, ...}``) or, when ``text``, a line for people."""
        if self.as_json:
            self._write(json.dumps({"type": kind, **fields}, default=str) + "\n")
        elif text is not None:
            self._clear()
            self._write(text + "\n")

    def hub_event(self, ev) -> None:
        """The hub's own events are passed on with --json (previews left out: they are images)."""
        if self.as_json and ev.type != "preview":
            self._write(json.dumps(ev.to_dict(), default=str) + "\n")

    def status(self, counts: dict[str, int], total: int, eta: float | None, servers: list[ServerLine]) -> None:
        if self.as_json:
            return
        if not self.tty:
            # Plain output says when a server's state changes, not every redraw.
            for s in servers:
                if self._states.get(s.name) != s.state:
                    self._states[s.name] = s.state
                    note = f" — {s.note}" if s.note else ""
                    self._write(f"[{s.name}] {s.state}{note}\n")
            return
        width = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
        finished = counts["completed"] + counts["failed"]
        bar_width = 24
        filled = int(bar_width * finished / total) if total else bar_width
        eta_text = f"  ETA {_duration(eta)}" if eta is not None else ""
        lines = [
            f"[{'#' * filled}{'.' * (bar_width - filled)}] {finished}/{total}  done {counts['completed']}  "
            f"failed {counts['failed']}  running {counts['running']}  waiting {counts['waiting']}{eta_text}"
        ]
        for s in servers:
            queue = f"  queue {s.queue}" if s.queue is not None else ""
            running = f"  running {', '.join(s.running)}" if s.running else ""
            note = f"  ({s.note})" if s.note else ""
            lines.append(f"  {s.name}  {s.state}{queue}{running}{note}")
        self._clear()
        self._write("".join(line[:width] + "\n" for line in lines))
        self._block = len(lines)

    def _clear(self) -> None:
        if self._block:
            self._write(f"\x1b[{self._block}F\x1b[J")
            self._block = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        self._block = 0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def server_lines(snapshot: dict[str, Any], service: str, running: dict[str, tuple[str, float]]) -> list[ServerLine]:
    """The servers behind ``service`` (a pool's servers, or the one server) with the batch's jobs running there.

    ``running``: job id → (row's output name, progress %) for the batch's running jobs.
    """
    pool = next((p for p in snapshot.get("pools") or () if p.get("name") == service), None)
    if pool is not None:
        lines = []
        for member in pool.get("servers") or ():
            here = [_job_label(running[j]) for j in _member_jobs(member) if j in running]
            queue = member.get("queue_remaining")
            wrong = member.get("wrong_kind")
            lines.append(
                ServerLine(
                    name=_host_port(str(member.get("url") or member.get("name") or "?")),
                    state=str(member.get("state") or "unknown"),
                    queue=queue if isinstance(queue, int) else None,
                    running=here,
                    note=f"answers as {wrong}" if wrong else member.get("reason"),
                    settled=bool(
                        member.get("usable") or wrong or (member.get("state") in SETTLED and member.get("reason"))
                    ),
                )
            )
        return lines
    svc = next((s for s in snapshot.get("services") or () if s.get("name") == service), None)
    if svc is None:
        return []
    return [
        ServerLine(
            name=_host_port(str(svc.get("url") or service)),
            state=str(svc.get("state") or "unknown"),
            queue=svc.get("queue_remaining"),
            running=[_job_label(v) for v in running.values()],
            note=svc.get("reason") if svc.get("state") != "connected" else None,
            settled=svc.get("state") == "connected" or (svc.get("state") in SETTLED and bool(svc.get("reason"))),
        )
    ]


def _host_port(url: str) -> str:
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


def _member_jobs(member: dict[str, Any]) -> list[str]:
    return [str(j.get("job_id")) for j in member.get("jobs") or () if isinstance(j, dict)]


def _job_label(item: tuple[str, float]) -> str:
    name, percent = item
    return f"{name} {percent:.0f}%"


# ---- running the batch ----------------------------------------------------------------------------------------------


class Batch:
    """Submits the rows, follows their jobs to the end, moves each finished job's folder to ``<out>/<output>/``."""

    def __init__(self, hub: Hub, service: str, workflow: Workflow, out: Path, display: Display) -> None:
        self.hub = hub
        self.service = service
        self.workflow = workflow
        self.out = out
        self.display = display
        self.rows: dict[str, Row] = {}  # job id → row, for the jobs still running
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "invalid": 0}
        self.total = 0
        self.started = time.monotonic()
        self.interrupted = False
        self._last_draw = 0.0
        self._said: set[str] = set()  # a pool's problems, said once

    # -- submitting --

    def submit(self, rows: list[Row]) -> None:
        self.total += len(rows)
        for row in rows:
            if self.interrupted:  # Ctrl-C while queueing: the rest is never sent
                self.counts["cancelled"] += 1
                self.display.emit(
                    "row_cancelled", f"cancelled {row.output} (line {row.line}) before it was queued",
                    line=row.line, output=row.output, job_id=None,
                )  # fmt: skip
                continue
            try:
                params = self._uploads(row)
                job = self.hub.submit(self.service, self.workflow, params=params, tag=row.tag)
            except (errors.WorkflowError, BatchInputError) as e:
                self.counts["invalid"] += 1
                self.total -= 1
                self.display.emit(
                    "row_invalid", f"line {row.line}: {e}", line=row.line, output=row.output, message=str(e)
                )
                continue
            except errors.DirectorLinkError as e:
                self._failed(row, None, e.code, str(e))
                continue
            self.rows[job.id] = row
            self.display.emit("row_submitted", None, line=row.line, output=row.output, tag=row.tag, job_id=job.id)

    def _uploads(self, row: Row) -> dict[str, Any]:
        params = {}
        for selector, value in row.params.items():
            if isinstance(value, str) and value.startswith("@") and len(value) > 1:
                path = Path(value[1:])
                if not path.is_file():
                    raise BatchInputError(f"{selector}=@{path}: no such file")
                value = self.hub.upload_image(self.service, str(path))
            params[selector] = value
        return params

    # -- following --

    def follow(self, deadline: float | None) -> bool:
        """Drains events until every job ended; False when interrupted or out of time (jobs still running)."""
        while self.rows:
            if self.interrupted or (deadline is not None and time.monotonic() >= deadline):
                return False
            self.hub.wait_for_events(0.2)
            self._take(self.hub.poll())
            self.draw()
        self.draw(force=True)
        return True

    def cancel_all(self) -> list[str]:
        """Cancels every unfinished job and waits (bounded) until the servers confirm; returns the ids of jobs whose
        end was not confirmed."""
        for job_id in list(self.rows):
            with contextlib.suppress(errors.DirectorLinkError):
                self.hub.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT
        self.interrupted = False  # a second Ctrl-C from here on stops waiting
        while self.rows and time.monotonic() < deadline and not self.interrupted:
            self.hub.wait_for_events(0.2)
            self._take(self.hub.poll())
            self.draw()
        return list(self.rows)

    def _take(self, events) -> None:
        for ev in events:
            self.display.hub_event(ev)
            if ev.type == "job_assigned" and ev.job in self.rows:
                self._assigned(self.rows[ev.job], ev)
            if ev.type in TERMINAL and ev.job in self.rows:
                row = self.rows.pop(ev.job)
                if ev.type == "job_completed":
                    self._completed(row, ev)
                elif ev.type == "job_failed":
                    self._failed(row, ev.job, ev.code, ev.message)
                else:
                    self.counts["cancelled"] += 1
                    self.display.emit(
                        "row_cancelled",
                        f"cancelled {row.output} (line {row.line})",
                        line=row.line,
                        output=row.output,
                        job_id=ev.job,
                    )

    def _assigned(self, row: Row, ev) -> None:
        """Which server of the pool a row went to (a line when not on a terminal: there the server lines say it)."""
        if self.display.tty:
            return
        if ev.server is None:
            text = f"  {row.output} (line {row.line}) waits for a server (its server went down)"
        else:
            moved = "moved to" if ev.attempt > 1 else "→"
            text = f"  {row.output} (line {row.line}) {moved} {_host_port(ev.server)}"
        self.display.emit(
            "row_assigned", text, line=row.line, output=row.output, job_id=ev.job, server=ev.server, attempt=ev.attempt
        )

    def _completed(self, row: Row, ev) -> None:
        try:
            folder, replaced = self._move(ev.job, row)
        except OSError as e:
            self._failed(row, ev.job, "output_error", f"the results could not be moved to {row.output}: {e}")
            return
        self.counts["completed"] += 1
        server = _manifest_server(folder)
        files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
        where = f" on {_host_port(server)}" if server else ""
        aside = f" (the earlier folder is now {replaced.name})" if replaced else ""
        self.display.emit(
            "row_completed",
            f"done   {row.output} (line {row.line}) in {ev.elapsed_seconds:.1f} s{where} → {folder}{aside}",
            line=row.line,
            output=row.output,
            tag=row.tag,
            job_id=ev.job,
            folder=str(folder),
            manifest=str(folder / "manifest.json"),
            files=files,
            server=server,
            elapsed_seconds=ev.elapsed_seconds,
            replaced=str(replaced) if replaced else None,
        )

    def _failed(self, row: Row, job_id: str | None, code: str, message: str) -> None:
        self.counts["failed"] += 1
        self.display.emit(
            "row_failed",
            f"FAILED {row.output} (line {row.line}) [{code}] {message}",
            line=row.line,
            output=row.output,
            job_id=job_id,
            code=code,
            message=message,
        )

    def _move(self, job_id: str, row: Row) -> tuple[Path, Path | None]:
        """The job's folder (written by the core, manifest included) becomes ``<out>/<output>/``; a folder already
        there is kept under another name, never overwritten."""
        found = [m.parent for m in (self.out / STAGING).glob(f"*/{job_id}/manifest.json")]
        if not found:
            raise OSError(f"no manifest was written for job {job_id}")
        target = self.out / row.output
        replaced = None
        if target.exists():
            n = 1
            while (self.out / f"{row.output}~{n}").exists():
                n += 1
            replaced = self.out / f"{row.output}~{n}"
            target.rename(replaced)
        found[0].rename(target)
        with contextlib.suppress(OSError):
            found[0].parent.rmdir()  # the tag's staging folder, once empty
        return target, replaced

    # -- display --

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_EVERY:
            return
        self._last_draw = now
        snapshot = self.hub.snapshot()
        running: dict[str, tuple[str, float]] = {}
        waiting = 0
        for info in snapshot.get("jobs") or ():
            row = self.rows.get(info.get("id"))
            if row is None:
                continue
            if info.get("state") == "running":
                running[info["id"]] = (row.output, float(info.get("progress") or 0.0))
            else:
                waiting += 1
        finished = self.counts["completed"] + self.counts["failed"]
        elapsed = now - self.started
        left = len(self.rows)
        eta = elapsed / finished * left if finished and left else None
        for pool in snapshot.get("pools") or ():
            for problem in pool.get("problems") or () if pool.get("name") == self.service else ():
                if problem not in self._said:
                    self._said.add(problem)
                    self.display.emit("pool_problem", f"pool: {problem}", message=problem)
        counts = {**self.counts, "running": len(running), "waiting": waiting}
        self.display.status(counts, self.total, eta, server_lines(snapshot, self.service, running))


def _without_uploads(rows: list[Row]) -> tuple[list[Row], list[BadRow]]:
    """A pool cannot take an upload (which of its servers would run the row is decided later, in the hub): rows
    with ``@FILE`` are bad rows there."""
    good, bad = [], []
    for row in rows:
        files = [k for k, v in row.params.items() if isinstance(v, str) and v.startswith("@") and len(v) > 1]
        if files:
            bad.append(BadRow(row.line, f"{files[0]}: an @FILE upload needs one server, not a pool (put the file in "
                                        "every server's input folder and give its name instead)"))  # fmt: skip
        else:
            good.append(row)
    return good, bad


def _manifest_server(folder: Path) -> str | None:
    """The server that ran the job, as its manifest records it (in a pool, the one the job went to)."""
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("server")
    except (OSError, ValueError):
        return None


def _connect(hub: Hub, servers: list[str], args) -> str:
    """One server is a plain service; several are a pool (jobs go where they can run with the least work)."""
    token = os.environ.get("DIRECTOR_LINK_TOKEN")
    if len(servers) == 1:
        return hub.add_service("comfyui", servers[0], name=SINGLE_NAME, token=token)
    return hub.add_pool(POOL_NAME, servers, capacity=args.capacity, resubmit_running=True)


def _connected(hub: Hub, service: str, timeout: float, display: Display) -> bool:
    """Waits until the servers behind ``service`` have settled: every one connected, or at least one connected and
    the others past their first attempt (so the first rows spread over every server that is up). False when none
    connects within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = server_lines(hub.snapshot(), service, {})
        up = any(s.state == "connected" for s in lines)
        if up and all(s.settled for s in lines):
            return True
        if time.monotonic() >= deadline:
            return up
        hub.wait_for_events(min(0.2, max(0.0, deadline - time.monotonic())))
        for ev in hub.poll():
            display.hub_event(ev)


def _object_info(hub: Hub, service: str) -> dict[str, Any] | None:
    """The node list to check the rows' values against before anything is queued (None if it cannot be read: the
    server checks them then)."""
    try:
        return hub.object_info(service)
    except errors.DirectorLinkError:
        return None


@contextlib.contextmanager
def _simulators(count: int):
    from .testing import ComfySimulator

    sims = []
    try:
        for _ in range(count):
            sims.append(ComfySimulator())
        yield [s.url for s in sims]
    finally:
        for sim in sims:
            sim.close()


@contextlib.contextmanager
def _ctrl_c(batch_ref: list):
    """The first Ctrl-C asks the batch to cancel (its loop notices within a fraction of a second) instead of
    unwinding through the hub; a Ctrl-C while waiting for the cancellations stops the wait. Before the batch
    exists, Ctrl-C is the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(_sig, _frame) -> None:
        if not batch_ref:
            raise KeyboardInterrupt
        batch_ref[0].interrupted = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Plan:
    """What a batch will do: the workflow, the rows to run, the bad rows and the rows already done."""

    workflow: Workflow
    todo: list[Row]
    bad: list[BadRow]
    skipped: list[Row]


def plan(args, out: Path, display: Display) -> Plan:
    """Reads and checks the shot list and the workflow, before any server is contacted; raises
    `errors.DirectorLinkError` for input that cannot be used at all."""
    rows, bad = read_rows(args.shots)
    workflow = load_workflow(args.workflow)
    resolve_files(rows, Path(args.shots).resolve().parent)
    rows, unknown = check_rows(workflow, rows)
    bad = sorted(bad + unknown, key=lambda b: b.line)
    for b in bad:
        display.emit("row_invalid", f"line {b.line}: {b.message}", line=b.line, message=b.message)
    done = {r.line for r in rows if args.resume and manifest_of(out, r).is_file()}
    skipped = [r for r in rows if r.line in done]
    for r in skipped:
        display.emit("row_skipped", None, line=r.line, output=r.output, manifest=str(manifest_of(out, r)))
    if skipped:
        display.emit("note", f"resume: {len(skipped)} row(s) already have a manifest in {out}, skipped")
    return Plan(workflow, [r for r in rows if r.line not in done], bad, skipped)


def run(args) -> int:
    display = Display(args.json)
    if args.simulator and args.server:
        display.emit("error", "error: give --server or --simulator, not both", code="invalid_batch")
        return EXIT_BAD_INPUT
    out = Path(args.out)
    try:
        p = plan(args, out, display)
    except errors.DirectorLinkError as e:
        display.emit("error", f"error [{e.code}]: {e}", code=e.code, message=str(e))
        return EXIT_BAD_INPUT
    workflow, todo, bad, skipped = p.workflow, p.todo, p.bad, p.skipped
    display.emit(
        "batch_started",
        f"batch: {len(todo)} row(s) to run" + (f", {len(bad)} bad row(s) left out" if bad else ""),
        rows=len(todo),
        skipped=len(skipped),
        invalid=len(bad),
    )
    if not todo:
        code = EXIT_BAD_INPUT if bad else EXIT_OK
        display.emit("batch_finished", None, completed=0, failed=0, cancelled=0, invalid=len(bad),
                     skipped=len(skipped), exit_code=code)  # fmt: skip
        return code
    batch_ref: list[Batch] = []
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_ctrl_c(batch_ref))
            servers = stack.enter_context(_simulators(args.simulator)) if args.simulator else list(args.server or [])
            servers = servers or ["127.0.0.1:8188"]
            if args.simulator:
                display.emit("note", f"built-in simulator(s) at {', '.join(servers)}", servers=servers)
            hub = stack.enter_context(Hub(output_dir=str(out / STAGING)))
            service = _connect(hub, servers, args)
            if not _connected(hub, service, args.connect_timeout, display):
                lines = server_lines(hub.snapshot(), service, {})
                for s in lines or [ServerLine(", ".join(servers), "unreachable")]:
                    why = s.note or "no answer"
                    display.emit("error", f"cannot connect to {s.name}: {why}", code="connection_failed",
                                 server=s.name, message=why)  # fmt: skip
                return EXIT_CONNECT
        except errors.DirectorLinkError as e:  # a bad address, a duplicate server in the pool, ...
            display.emit("error", f"error [{e.code}]: {e}", code=e.code, message=str(e))
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            display.emit("batch_cancelled", "cancelled before any job was queued")
            return EXIT_FAILED
        todo, misfits = check_rows(workflow, todo, _object_info(hub, service))
        if len(servers) > 1:
            todo, uploads = _without_uploads(todo)
            misfits += uploads
        for b in misfits:
            display.emit("row_invalid", f"line {b.line}: {b.message}", line=b.line, message=b.message)
        bad = sorted(bad + misfits, key=lambda b: b.line)
        batch = Batch(hub, service, workflow, out, display)
        batch_ref.append(batch)
        batch.submit(todo)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        finished = batch.follow(deadline)
        timed_out = not finished and not batch.interrupted
        if not finished:
            why = "Ctrl-C" if batch.interrupted else f"--timeout {args.timeout:g} s"
            display.emit("batch_cancelling", f"{why}: cancelling {len(batch.rows)} unfinished job(s)…",
                         jobs=list(batch.rows))  # fmt: skip
            left = batch.cancel_all()
            for job_id in left:
                row = batch.rows[job_id]
                display.emit(
                    "row_unconfirmed",
                    f"line {row.line} ({row.output}): the server did not confirm cancelling job {job_id}; stop it "
                    f"with `director-link cancel {job_id} --server <its server>`",
                    line=row.line,
                    output=row.output,
                    job_id=job_id,
                )
        display.close()
    counts = batch.counts
    invalid = len(bad) + counts["invalid"]
    if timed_out:
        code = EXIT_TIMEOUT
    elif counts["failed"] or counts["cancelled"] or not finished:
        code = EXIT_FAILED  # a failed job, or Ctrl-C (a cancelled job is EXIT_FAILED for `run` too)
    elif invalid:
        code = EXIT_BAD_INPUT
    else:
        code = EXIT_OK
    _tidy(out / STAGING)
    took = time.monotonic() - batch.started
    display.emit(
        "batch_finished",
        f"batch: {counts['completed']} done, {counts['failed']} failed, {counts['cancelled']} cancelled, "
        f"{invalid} bad row(s), {len(skipped)} skipped, in {_duration(took)}; results in {out}",
        completed=counts["completed"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        invalid=invalid,
        skipped=len(skipped),
        seconds=took,
        exit_code=code,
    )
    return code


def _tidy(staging: Path) -> None:
    """Removes the staging folder's empty folders (a failed job's partial files stay, to look at)."""
    if not staging.is_dir():
        return
    for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        staging.rmdir()


def add_parser(sub) -> None:
    b = sub.add_parser(
        "batch",
        help="run one job per row of a shot list (.csv or .jsonl) over one server or a pool",
        description=__doc__.split("\n\n")[0],
    )
    b.add_argument("shots", help="the shot list: a .csv (header: tag, output, selectors) or a .jsonl file")
    b.add_argument("--workflow", required=True, help="a workflow file (API or UI format), or a template's name")
    b.add_argument(
        "--server",
        action="append",
        help="a ComfyUI (repeatable: several servers are one pool; default 127.0.0.1:8188)",
    )
    b.add_argument(
        "--simulator",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="run on N built-in simulators instead of servers (default 1)",
    )
    b.add_argument("--out", default="director-link-output", help="output directory (a folder per row)")
    b.add_argument("--resume", action="store_true", help="skip the rows whose manifest is already in --out")
    b.add_argument("--capacity", type=int, default=2, help="jobs in flight per server of a pool")
    b.add_argument("--json", action="store_true", help="one JSON line per event")
    b.add_argument("--timeout", type=float, default=None, help="seconds for the whole batch (then it is cancelled)")
    b.add_argument("--connect-timeout", type=float, default=CONNECT_WAIT)
    b.set_defaults(func=run)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="director-link")
    add_parser(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args()
    sys.exit(_args.func(_args))
