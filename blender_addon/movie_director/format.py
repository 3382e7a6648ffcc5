"""Human-readable strings for the panels: state labels, colours and icons, ETA, sizes, latencies (pure Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StateStyle:
    """How a state is shown: a short label, a Blender icon name, an RGB colour and whether to draw it as an alert."""

    label: str
    icon: str
    color: tuple[float, float, float]
    alert: bool = False
    hint: str = ""


GREEN = (0.35, 0.8, 0.35)
AMBER = (0.95, 0.7, 0.2)
RED = (0.9, 0.3, 0.3)
GREY = (0.6, 0.6, 0.6)
BLUE = (0.4, 0.6, 0.95)

SERVICE_STYLES: dict[str, StateStyle] = {
    "disconnected": StateStyle("Not connected", "UNLINKED", GREY, hint="Check the address in the preferences"),
    "connecting": StateStyle("Connecting…", "SORTTIME", AMBER),
    "connected": StateStyle("Connected", "CHECKMARK", GREEN),
    "reconnecting": StateStyle("Reconnecting…", "FILE_REFRESH", AMBER, hint="The connection dropped; retrying"),
    "circuit_open": StateStyle(
        "Paused: server keeps dropping us", "ERROR", RED, alert=True, hint="Press Reconnect to try again now"
    ),
    "polling": StateStyle("Connected (no live updates)", "INFO", AMBER, hint="WebSocket refused; checking over HTTP"),
    "closed": StateStyle("Closed", "CANCEL", GREY),
    "blocked": StateStyle("Not allowed", "CANCEL", RED, alert=True),
}

JOB_STYLES: dict[str, StateStyle] = {
    "pending": StateStyle("Waiting", "SORTTIME", GREY),
    "submitting": StateStyle("Sending", "EXPORT", BLUE),
    "queued": StateStyle("Queued", "SORTTIME", BLUE),
    "running": StateStyle("Running", "PLAY", BLUE),
    "completed": StateStyle("Done", "CHECKMARK", GREEN),
    "failed": StateStyle("Failed", "ERROR", RED, alert=True),
    "cancelled": StateStyle("Cancelled", "X", GREY),
    "unknown": StateStyle("Unknown", "QUESTION", GREY),
}

UNKNOWN_STYLE = StateStyle("Unknown", "QUESTION", GREY)


def service_style(state: str, blocked: str | None = None) -> StateStyle:
    if blocked:
        return SERVICE_STYLES["blocked"]
    return SERVICE_STYLES.get(state, UNKNOWN_STYLE)


def job_style(state: str) -> StateStyle:
    return JOB_STYLES.get(state, UNKNOWN_STYLE)


def eta(seconds: float | None) -> str:
    """``~8 s``, ``~1 min 05 s``, ``~2 h 03 min``; empty when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    total = int(round(seconds))
    if total < 60:
        return f"~{max(total, 1)} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"~{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"~{hours} h {minutes:02d} min"


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 04 s``; empty when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    return f"{minutes} min {secs:02d} s"


def size(num_bytes: int | float | None) -> str:
    """``512 B``, ``1.5 KB``, ``12.3 MB``, ``2.0 GB`` (1024-based)."""
    if num_bytes is None or num_bytes < 0:
        return ""
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - unreachable


def latency(ms: float | None) -> str:
    if ms is None or not math.isfinite(ms):
        return "–"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.0f}%" if value >= 99.95 or value < 10 else f"{value:.1f}%"


def queue(position: int | None, pending_connection: bool = False) -> str:
    if pending_connection:
        return "waiting for the server"
    if position is None:
        return ""
    return "next" if position == 0 else f"{position} ahead"


def node_label(node_id: str | None, node_type: str | None) -> str:
    if not node_id and not node_type:
        return ""
    if node_type and node_id:
        return f"{node_type} (#{node_id})"
    return node_type or f"node #{node_id}"


def short_id(job_id: str) -> str:
    return job_id[:8]


def progress_line(
    state: str,
    percentage: float,
    node_id: str | None = None,
    node_type: str | None = None,
    eta_seconds: float | None = None,
    queue_position: int | None = None,
    pending_connection: bool = False,
) -> str:
    """One line for a job: ``Running · KSampler (#3) · 45% · ~12 s`` or ``Queued · 2 ahead``."""
    parts = [job_style(state).label]
    if state == "queued" or state == "pending":
        where = queue(queue_position, pending_connection)
        if where:
            parts.append(where)
    elif state == "running":
        node = node_label(node_id, node_type)
        if node:
            parts.append(node)
        parts.append(f"{percentage:.0f}%")
        left = eta(eta_seconds)
        if left:
            parts.append(left)
    return " · ".join(parts)


def service_line(name: str, state: str, reason: str | None = None, blocked: str | None = None) -> str:
    """``local: Reconnecting… (connection refused)``."""
    style = service_style(state, blocked)
    why = blocked or reason
    return f"{name}: {style.label}" + (f" ({why})" if why and why != style.label else "")


POOL_STATES = {
    "ready": "ready",
    "busy": "every server busy",
    "waiting for a server": "waiting for a server",
    "starting": "starting",
}


def pool_line(state: str | None, waiting: int, servers: int) -> str:
    """``Pool of 3 · every server busy · 4 waiting``."""
    parts = [f"Pool of {servers}", POOL_STATES.get(state or "", state or "starting")]
    if waiting:
        parts.append(f"{waiting} waiting")
    return " · ".join(parts)


def pool_server_line(server: Any) -> str:
    """One server of a pool (a ``state.PoolServerView``): ``127.0.0.1:8188 · Connected · queue 2 · shot_010 45%``;
    its jobs are named by their tag (the shot), else a short id."""
    where = server.name.partition("/")[2] or server.url or server.name
    parts = [where, service_style(server.state).label]
    if server.queue_remaining is not None:
        parts.append(f"queue {server.queue_remaining}")
    jobs = []
    for job in server.jobs:
        name = job.tag or short_id(job.job_id)
        jobs.append(
            f"{name} {job.progress:.0f}%" if job.state == "running" else f"{name} {job_style(job.state).label.lower()}"
        )
    if jobs:
        parts.append(", ".join(jobs))
    if server.reason and server.state != "connected":
        parts.append(server.reason)
    return " · ".join(parts)


def ago(timestamp: float | None, now: float) -> str:
    if not timestamp:
        return ""
    delta = max(0.0, now - timestamp)
    if delta < 5:
        return "just now"
    if delta < 60:
        return f"{int(delta)} s ago"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    return f"{int(delta // 3600)} h ago"


def clip(text: str, limit: int = 80) -> str:
    """One line, at most ``limit`` characters (panels do not wrap)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: max(limit - 1, 1)] + "…"
