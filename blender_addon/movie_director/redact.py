""" "Copy error details": the full text of an error with tokens and secrets taken out (pure Python).

Known secrets (the tokens configured in the preferences) are replaced wherever they appear; on top of that,
anything that looks like a credential is replaced: ``Authorization`` headers, bearer tokens, ``token=``/``api_key=``
style pairs (also in JSON and query strings), passwords in URLs, and well-known key shapes (``sk-…``, ``hf_…``,
``ghp_…``, JWTs).
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_NAMES = (
    r"(?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd"
    r"|client[_-]?secret)"
)

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer abc / Authorization: Basic abc
    (
        re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+"),
        r"\1\2 " + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + REDACTED),
    # "token": "abc", token=abc, api_key: abc (also ?token=abc&…)
    (re.compile(r"(?i)([\"']?\b" + _SECRET_NAMES + r"\b[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)"), r"\1" + REDACTED),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@"), r"\1\2:" + REDACTED + "@"),
    # key shapes
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\b(?:hf|ghp|gho|ghs|ghu|glpat|xox[abprs])[_-][A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), REDACTED),
]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret and everything that looks like a credential replaced by ``[REDACTED]``."""
    out = str(text)
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def redact_value(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A JSON-like value with secrets redacted in every string (and under secret-looking keys)."""
    secrets = list(secrets)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and re.fullmatch(r"(?i)" + _SECRET_NAMES + r"|authorization", key):
                out[key] = REDACTED
            else:
                out[key] = redact_value(item, secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secrets) for v in value]
    if isinstance(value, str):
        return redact(value, secrets)
    return value


def error_report(
    entry: Any,
    *,
    job: Any | None = None,
    service: Any | None = None,
    versions: dict[str, str] | None = None,
    secrets: Iterable[str | None] = (),
) -> str:
    """The full text to paste into a bug report or a chat: what failed, where, the server's details, versions.

    ``entry`` is a ``state.ErrorEntry`` (or anything with ``code``, ``message``, ``source``, ``details``);
    ``job`` / ``service`` are the matching ``JobView`` / ``ServiceView`` when known.
    """
    secrets = list(secrets)
    lines = ["Director Link error report", ""]
    lines.append(f"error: {getattr(entry, 'code', '') or 'unknown'}")
    lines.append(f"message: {getattr(entry, 'message', '')}")
    source = getattr(entry, "source", "")
    if source:
        lines.append(f"source: {source}")
    if job is not None:
        lines.append(f"job: {job.id} on {job.service} (state {job.state}, tag {job.tag or '-'})")
        if job.node_id or job.node_type:
            lines.append(f"node: {job.node_type or '?'} #{job.node_id or '?'}")
    if service is not None:
        lines.append(f"service: {service.name} ({service.kind}) at {service.url}, state {service.state}")
        if service.reason:
            lines.append(f"service reason: {service.reason}")
        if service.version:
            lines.append(f"server version: {service.version}")
        for err in service.recent_errors[-5:]:
            lines.append(f"recent: {err}")
    details = getattr(entry, "details", None) or {}
    traceback = details.get("traceback") if isinstance(details, dict) else None
    rest = {k: v for k, v in details.items() if k != "traceback"} if isinstance(details, dict) else details
    if rest:
        lines += ["", "details:", json.dumps(redact_value(rest, secrets), indent=2, sort_keys=True, default=str)]
    if traceback:
        tb = "".join(traceback) if isinstance(traceback, list) else str(traceback)
        lines += ["", "server traceback:", tb.rstrip()]
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    info.update(versions or {})
    lines += ["", "versions: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    return redact("\n".join(lines), secrets) + "\n"
