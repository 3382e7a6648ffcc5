"""The studio server: ``director-link serve`` and ``director_link.serve(...)``.

    >>> import director_link
    >>> with director_link.serve(simulator=True, port=0) as server:      # doctest: +SKIP
    ...     print(server.url)                                          # http://127.0.0.1:<port>
    ...     server.wait()                                              # until Ctrl-C (or server.close())

Every job submitted over ``POST /api/jobs`` runs through the server's own hub; its progress is served on the
brief's ``/ws/{job_id}`` and ``/ws/monitor`` and on the typed stream ``/ws/events?since=OFFSET&epoch=E`` that resumes
without gaps. Settings come from a JSON config file, then the brief's environment variables
(``WEBSOCKET_PING_INTERVAL``, ``WEBSOCKET_CONNECTION_TIMEOUT``, ``WEBSOCKET_CLEANUP_INTERVAL``, ``REDIS_HOST``/
``REDIS_PORT``, ``DB_HOST``/``DB_NAME``/``DB_USER``/``DB_PASSWORD``), then the arguments.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._native import StudioServer

DEFAULT_PORT = 8328
TOKEN_ENV = "DIRECTOR_LINK_STUDIO_TOKEN"


def _service(spec: str | dict) -> dict:
    if isinstance(spec, dict):
        return spec
    left, sep, url = spec.partition("=")
    if not sep or not left.strip() or not url.strip():
        raise ValueError(f"service {spec!r}: expected KIND=URL (or NAME:KIND=URL), e.g. comfyui=127.0.0.1:8188")
    name, _, kind = left.rpartition(":")
    out: dict[str, Any] = {"kind": kind.strip().lower(), "url": url.strip()}
    if name.strip():
        out["name"] = name.strip()
    return out


def _pool(spec: str | dict) -> dict:
    if isinstance(spec, dict):
        return spec
    name, sep, urls = spec.partition("=")
    servers = [u.strip() for u in urls.split(",") if u.strip()]
    if not sep or not name.strip() or not servers:
        raise ValueError(f"pool {spec!r}: expected NAME=URL1,URL2,..., e.g. studio=127.0.0.1:8188,gpu2:8188")
    return {"name": name.strip(), "servers": servers}


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    services: Iterable[str | dict] = (),
    pools: Iterable[str | dict] = (),
    simulator: bool | None = None,
    discover: bool | None = None,
    database: str | None = None,
    redis: str | None = None,
    token: str | None = None,
    producer_token: str | None = None,
    allow_origins: Iterable[str] = (),
    output_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    **settings: Any,
) -> StudioServer:
    """Starts a studio server and returns it at once (``server.url``, ``server.wait()``, ``server.close()``).

    ``pools`` are ``NAME=URL1,URL2,...`` strings (or dicts: ``name``, ``servers``, ``capacity``,
    ``resubmit_running``, ``wait_deadline_seconds``): several ComfyUI servers behind one service name.
    ``config`` names a JSON file with the same keys; arguments given here win over it. ``token`` (or
    ``$DIRECTOR_LINK_STUDIO_TOKEN``) is required on every call when set; binding beyond loopback without one is
    refused. ``database`` is ``sqlite:PATH`` (default: ``studio.sqlite3`` in the output folder),
    ``postgresql://user:password@host:port/db`` or ``memory``; ``redis`` (``redis://host:port``) shares jobs' events
    with the other instances on the same Redis. Other keys (``ping_interval_seconds``,
    ``connection_timeout_seconds``, ``max_connections``, ``history_events``, ...) pass through ``settings``.
    """
    merged: dict[str, Any] = {}
    if config is not None:
        merged.update(json.loads(Path(config).read_text(encoding="utf-8")))
    given = {
        "host": host,
        "port": port,
        "simulator": simulator,
        "discover": discover,
        "database": database,
        "redis": redis,
        "token": token or os.environ.get(TOKEN_ENV) or None,
        "producer_token": producer_token,
        "output_dir": None if output_dir is None else str(output_dir),
    }
    merged.update({k: v for k, v in given.items() if v is not None})
    svc = [_service(s) for s in services]
    if svc:
        merged["services"] = [*merged.get("services", []), *svc]
    pool_specs = [_pool(p) for p in pools]
    if pool_specs:
        merged["pools"] = [*merged.get("pools", []), *pool_specs]
    origins = list(allow_origins)
    if origins:
        merged["allow_origins"] = [*merged.get("allow_origins", []), *origins]
    merged.update(settings)
    return StudioServer(merged)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_cli(args) -> int:
    """``director-link serve``: start, say where, serve until Ctrl-C or SIGTERM, then stop cleanly."""
    server = serve(
        host=args.host,
        port=args.port,
        services=args.service or (),
        pools=args.pool or (),
        simulator=args.simulator or None,
        discover=args.discover or None,
        database=args.database,
        redis=args.redis,
        token=args.token,
        allow_origins=args.allow_origin or (),
        output_dir=args.out,
        config=args.config,
    )
    # SIGTERM ends the wait like Ctrl-C, so the database is closed cleanly and clients can resume.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        line = {"event": "listening", "url": server.url, "port": server.port, "simulator": server.simulator_url}
        print(json.dumps(line) if args.json else f"Director Link studio server on {server.url}", flush=True)
        if not args.json and server.simulator_url:
            print(f"  with the built-in ComfyUI simulator at {server.simulator_url} (service 'simulator')", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    if not args.json:
        print("studio server stopped", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="the studio server: live progress of every job for browsers and tools")
    s.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; others need --token)")
    s.add_argument("--port", type=int, default=None, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    s.add_argument("--service", action="append", metavar="KIND=URL", help="e.g. comfyui=127.0.0.1:8188 (repeatable)")
    s.add_argument(
        "--pool",
        action="append",
        metavar="NAME=URL1,URL2",
        help="a pool of ComfyUI servers behind one service name, e.g. studio=gpu1:8188,gpu2:8188 (repeatable)",
    )
    s.add_argument("--discover", action="store_true", help="add the servers found on this machine's usual ports")
    s.add_argument("--simulator", action="store_true", help="also run the built-in ComfyUI simulator")
    s.add_argument(
        "--database",
        default=None,
        help="sqlite:PATH (default: studio.sqlite3 in --out), postgresql://user:password@host:port/db, or memory",
    )
    s.add_argument("--redis", default=None, help="redis://host:port to share events between instances")
    s.add_argument("--token", default=None, help=f"required on every request (or ${TOKEN_ENV})")
    s.add_argument("--allow-origin", action="append", metavar="ORIGIN", help="a browser origin to allow")
    s.add_argument("--config", default=None, help="a JSON file with these settings")
    s.add_argument("--out", default=None, help="output directory (default ./director-link-output)")
    s.add_argument("--json", action="store_true", help="print the listening line as JSON")
    s.set_defaults(func=run_cli)
