"""Studio-server mode (pure Python, no ``bpy``): the add-on's jobs go through a ``director-link serve`` instance
instead of its own hub, so they show on the studio's monitor page and outlive this Blender.

:class:`StudioHub` stands where ``director_link.Hub`` stands (``submit``, ``cancel``, ``poll``, ``snapshot``,
``services``, ``job``, ``track``, ``object_info``, ``upload_image``, ``close``), so the view-model, the shot list and
the takes work unchanged whichever mode is chosen. One thread of its own talks to the server: it POSTs jobs
(``/api/jobs``), reads the server's typed event stream (``/ws/events?jobs=all&since=OFFSET&epoch=E``, resumed by
offset after a drop; when the server cannot replay what was missed it re-reads each of our jobs), downloads each
finished job's files into the take folder (``<output>/<tag>/<job id>/``, checked against the server's SHA-256) and
only then reports the job completed. Blender's UI thread only queues commands and drains events: it never waits on
the network (except ``upload_image`` and ``object_info``, which block like the hub's own and are called where the
hub's are).

Job ids: the add-on needs a job's id when it submits (the take folder is named after it) and the server makes its
own when the POST arrives; each job therefore has a local id (what the add-on records) and the server's id, kept in
``<output>/studio_jobs.json`` so a restarted Blender finds its jobs on the server (``track``).

Why not in the Rust core: the server's API is plain HTTP and one WebSocket, used only in this mode; keeping the
client next to the add-on's other pure modules let it be tested against the real server without a rebuild of the
native module. A ``studio`` backend kind in the hub would serve scripts too (noted in the README as a follow-up).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import queue
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib import error as urlerror
from urllib import parse, request

LINK_NAME = "studio server"  # the link itself in the panel's server list (its state, the reason)
INDEX_FILE = "studio_jobs.json"
TERMINAL = ("completed", "failed", "cancelled")
CONNECT_TIMEOUT = 5.0
HTTP_TIMEOUT = 30.0
READ_SLICE = 0.1  # seconds the thread waits on the socket before it looks at its commands again
SERVICES_EVERY = 2.0  # seconds between refreshes of the server's service list (health, queue)
RECONNECT_MIN, RECONNECT_MAX = 0.2, 5.0
MAX_EVENTS = 100_000  # events waiting for poll(); beyond it progress is dropped, lifecycle never
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEQ = itertools.count(1)


class StudioError(Exception):
    """A refusal or failure from the studio server, with its error code (``unknown_service``, ``auth_failed`` …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- the one WebSocket this client needs (RFC 6455, client side) ---------------------------------------------------


class WebSocketClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed ({code}): {reason}" if code else "connection closed")
        self.code = code
        self.reason = reason


class WebSocket:
    """A blocking client WebSocket with its own frame buffer, so a read that times out mid-frame loses nothing."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    MAX_MESSAGE = 64 * 1024 * 1024

    def __init__(self, url: str, headers: dict[str, str], timeout: float = CONNECT_TIMEOUT) -> None:
        parts = parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if secure else raw
            key = base64.b64encode(os.urandom(16)).decode()
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            netloc = host if ":" not in host else f"[{host}]"
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {netloc}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            self.buffer = bytearray()
            head = self._read_head()
            status_line, _, rest = head.partition("\r\n")
            fields = {}
            for line in rest.split("\r\n"):
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if " 101 " not in status_line + " ":
                raise StudioError(
                    _code_for_status(status_line), f"the studio server refused the event stream: {status_line}"
                )
            expected = base64.b64encode(hashlib.sha1(key.encode() + self.GUID).digest()).decode()
            if fields.get("sec-websocket-accept") != expected:
                raise StudioError("protocol_error", "the studio server's WebSocket handshake did not match")
        except BaseException:
            raw.close()
            raise
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    def _read_head(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed(None, "the server closed the connection during the handshake")
            self.buffer += chunk
            if len(self.buffer) > 65536:
                raise StudioError("protocol_error", "the handshake answer is too long")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return head.decode("latin-1")

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self, timeout: float) -> list[tuple[int, bytes]]:
        """The whole messages that arrived within ``timeout`` (text 0x1 / binary 0x2); answers pings; raises
        :class:`WebSocketClosed` when the server closes or the connection drops."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(256 * 1024)
        except TimeoutError:
            chunk = None
        except ssl.SSLWantReadError:
            chunk = None
        except OSError as exc:
            raise WebSocketClosed(None, str(exc)) from exc
        if chunk is not None:
            if not chunk:
                raise WebSocketClosed(None, "the server closed the connection")
            self.buffer += chunk
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._take_frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0xA:
                pass
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                reason = payload[2:].decode("utf-8", "replace")
                try:
                    self.send(payload[:2], 0x8)
                except OSError:
                    pass
                raise WebSocketClosed(code, reason)
            elif opcode == 0x0:
                self._fragments.append(payload)
                if fin:
                    out.append((self._fragment_op, b"".join(self._fragments)))
                    self._fragments = []
            elif fin:
                out.append((opcode, payload))
            else:
                self._fragment_op, self._fragments = opcode, [payload]

    def _take_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        length = second & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if length > self.MAX_MESSAGE:
            raise WebSocketClosed(1009, f"a message of {length} bytes is more than this client takes")
        masked = bool(second & 0x80)
        if masked:
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        if masked:
            mask = buf[pos - 4 : pos]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        del buf[: pos + length]
        return bool(first & 0x80), first & 0x0F, payload

    def close(self) -> None:
        try:
            self.send(struct.pack("!H", 1000), 0x8)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _code_for_status(status_line: str) -> str:
    if " 401 " in status_line + " ":
        return "auth_failed"
    if " 403 " in status_line + " ":
        return "forbidden"
    return "server_error"


# ---- events as the view-model reads them ---------------------------------------------------------------------------


class Event:
    """One event, read by attribute like the hub's native events (``type``, ``job``, ``job_id``, ``service`` …)."""

    def __init__(self, kind: str, job: str | None = None, **fields: Any) -> None:
        self.type = kind
        self.job = job
        self.job_id = job
        self.time = time.time()
        self.seq = next(_SEQ)  # increasing, as the hub's (the preview image is reloaded when it changes)
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:  # a field this event does not carry reads as None, as on the hub's
        return None

    @property
    def is_terminal(self) -> bool:
        return self.type in ("job_completed", "job_failed", "job_cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def failed(job: str, code: str, message: str, **more: Any) -> Event:
    error = {"code": code, "message": message, "node_id": None, "node_type": None, **more}
    return Event("job_failed", job, code=code, message=message, error=error, node_id=None, node_type=None)


def translate(data: dict[str, Any], local: str | None) -> Event | None:
    """A stream event (JSON) → the add-on's event; job events carry the local id. None for what the add-on does not
    show (node outputs, discovery) and for the terminal events (:class:`StudioHub` makes those after downloading)."""
    kind = str(data.get("type") or "")
    if kind in ("service_state_changed", "queue_changed"):
        return Event(kind, None, **{k: v for k, v in data.items() if k not in ("type", "offset", "time")})
    if local is None:
        return None
    if kind == "job_queued":
        return Event(
            kind,
            local,
            service=data.get("service") or "",
            position=data.get("position"),
            pending_connection=bool(data.get("pending_connection")),
            node_errors=list(data.get("node_errors") or ()),
        )
    if kind == "job_started":
        return Event(kind, local, service=data.get("service") or "", cached_nodes=data.get("cached_nodes") or [])
    if kind == "node_started":
        return Event(kind, local, node_id=data.get("node_id"), node_type=data.get("node_type"))
    if kind == "progress":
        return Event(
            kind,
            local,
            node_id=data.get("node_id"),
            value=float(data.get("value") or 0.0),
            max=float(data.get("max") or 0.0),
            percentage=float(data.get("percentage") or 0.0),
            eta_seconds=data.get("eta_seconds"),
            text=data.get("text"),
        )
    if kind == "node_text":
        return Event(kind, local, node_id=data.get("node_id"), text=data.get("text") or "")
    if kind == "text_delta":
        return Event(kind, local, text=data.get("text") or "", index=data.get("index"), choice=data.get("choice"))
    return None


# ---- jobs ----------------------------------------------------------------------------------------------------------


@dataclass
class StudioJob:
    """One of this add-on's jobs on the studio server."""

    id: str  # local: what the add-on records (and names the take folder after)
    service: str
    tag: str | None = None
    remote: str | None = None  # the server's id, once the POST was answered
    state: str = "pending"
    outputs: list[str] = field(default_factory=list)
    body: dict[str, Any] | None = None  # the POST still to send
    cancel_requested: bool = False
    ended: bool = False  # its one terminal event is out (or being made)
    sending: bool = False  # its POST is on its way (a cancel then waits for the server's id)
    queue_position: int | None = None  # as the server's job list said last (0: next to run)

    def info(self) -> dict[str, Any]:
        return {"job_id": self.id, "remote_job_id": self.remote, "state": self.state, "outputs": list(self.outputs)}

    def cancel(self) -> None:
        self.cancel_requested = True


@dataclass
class _Command:
    kind: str  # "submit", "cancel", "track"
    job: StudioJob
    posted: bool = True


def _safe(name: str) -> str:
    return _SAFE.sub("_", name).strip("._") or "job"


class StudioHub:
    """The add-on's jobs through a studio server (see the module's docstring). ``url`` is the server's address
    (``127.0.0.1:8328``, ``http(s)://host:port``); ``token`` its ``--token``."""

    kind = "studio"

    def __init__(self, output_dir: str, studio_url: str, studio_token: str | None = None, **_hub_options: Any) -> None:
        text = studio_url.strip().rstrip("/")
        if "://" not in text:
            text = "http://" + text
        parts = parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StudioError("invalid_url", f"{studio_url!r} is not a studio server address (host:port or http://…)")
        self.url = text
        self.output_dir = output_dir
        self._token = studio_token or None
        self._lock = threading.Lock()
        self._events: deque[Event] = deque()
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._jobs: dict[str, StudioJob] = {}
        self._by_remote: dict[str, str] = {}
        self._services: list[dict[str, Any]] = []
        self._link_state = "connecting"
        self._link_reason: str | None = None
        self._since: int | None = None
        self._epoch: str | None = None
        self._stop = threading.Event()
        self.closed = False
        self._index = self._read_index()
        self._thread = threading.Thread(target=self._run, name="movie-director-studio", daemon=True)
        self._thread.start()

    # ---- what the add-on calls (never waits on the network) ---------------------------------------------------------

    def submit(self, service: str, workflow: Any, params: dict | None = None, tag: str | None = None) -> StudioJob:
        """Queues a job (a ``director_link.Workflow``, a workflow dict, a template name, or a ``GradioCall``);
        returns at once with its local id."""
        self._ensure_open()
        body: dict[str, Any] = {"service": service}
        if hasattr(workflow, "api_name") and hasattr(workflow, "inputs"):
            call = {"inputs": list(workflow.inputs)}
            if workflow.api_name:
                call["api_name"] = workflow.api_name
            if getattr(workflow, "fn_index", None) is not None:
                call["fn_index"] = workflow.fn_index
            body["call"] = call
        else:
            body["workflow"] = workflow.to_dict() if hasattr(workflow, "to_dict") else workflow
            if params:
                body["params"] = dict(params)
        if tag:
            body["tag"] = tag
        job = StudioJob(id=str(uuid.uuid4()), service=service, tag=tag, body=body)
        with self._lock:
            self._jobs[job.id] = job
        self._commands.put(_Command("submit", job))
        return job

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise StudioError("unknown_job", f"no job {job_id!r} in this session")
        with self._lock:
            job.cancel_requested = True
            unsent = job.remote is None and not job.sending and not job.ended
            if unsent:  # never sent: it ends here, whether the server is reachable or not
                job.body = None
                job.ended = True
                job.state = "cancelled"
                self._events.append(Event("job_cancelled", job.id))
        if not unsent:
            self._commands.put(_Command("cancel", job))

    def track(
        self, service: str, job_id: str, tag: str | None = None, *, posted: bool = True, remote: str | None = None
    ) -> StudioJob:
        """Follows a job of an earlier session again: ``remote`` is its id on the server (the add-on keeps it in
        the .blend), else the output folder's index is asked."""
        self._ensure_open()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                known = self._index.get(job_id) or {}
                remote = remote or known.get("remote")
                job = StudioJob(id=job_id, service=service, tag=known.get("tag", tag), remote=remote)
                self._jobs[job_id] = job
                if job.remote:
                    self._by_remote[job.remote] = job_id
        self._commands.put(_Command("track", job, posted=posted))
        return job

    def job(self, job_id: str) -> StudioJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def poll(self, max_events: int = 256) -> list[Event]:
        with self._lock:
            n = min(max_events, len(self._events))
            return [self._events.popleft() for _ in range(n)]

    def services(self) -> list[str]:
        with self._lock:
            return [str(s.get("name")) for s in self._services if s.get("name")]

    def service_kinds(self) -> dict[str, str]:
        """The studio's services and their kinds (``comfyui``, ``gradio`` …), as its last service list said."""
        with self._lock:
            return {str(s.get("name")): str(s.get("kind") or "comfyui") for s in self._services if s.get("name")}

    def snapshot(self) -> dict[str, Any]:
        """The studio's services (health as the server measures it) and the link itself, as ``Hub.snapshot()``."""
        with self._lock:
            services = [dict(s) for s in self._services]
            link = {
                "name": LINK_NAME,
                "kind": "studio",
                "url": self.url,
                "state": self._link_state,
                "reason": self._link_reason,
            }
            active = [j for j in self._jobs.values() if j.state not in TERMINAL]
        jobs = [{"id": j.id, "state": j.state, "queue_position": j.queue_position} for j in active]
        return {"services": [link, *services], "jobs": jobs}

    @property
    def link_state(self) -> str:
        return self._link_state

    def reconnect(self, name: str) -> None:
        self._commands.put(None)  # wakes the thread; a broken stream is re-opened on its next turn

    def remote_id(self, job_id: str) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.remote if job is not None else None

    # ---- blocking helpers (called where the hub's blocking ones are: a schema thread, a submit) --------------------

    def object_info(self, service: str, refresh: bool = False) -> dict[str, Any]:
        return self._http("GET", f"/api/services/{parse.quote(service, safe='')}/object_info")

    def upload_image(self, service: str, image: str | bytes, name: str | None = None) -> str:
        if isinstance(image, (bytes, bytearray)):
            data, name = bytes(image), name or "upload.png"
        else:
            with open(image, "rb") as fh:
                data = fh.read()
            name = name or os.path.basename(str(image))
        query = parse.urlencode({"name": name})
        answer = self._http(
            "POST", f"/api/services/{parse.quote(service, safe='')}/upload?{query}", data, "application/octet-stream"
        )
        return str(answer["name"])

    def chat(self, *_args: Any, **_kwargs: Any) -> Any:
        raise StudioError(
            "wrong_service",
            "the studio server does not relay chats: Write Shots needs Direct mode (Preferences › Mode)",
        )

    def close(self) -> None:
        """Stops the thread and closes the stream; jobs keep running on the server (a restart finds them again)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._commands.put(None)
        self._thread.join(HTTP_TIMEOUT + 5.0)

    def __enter__(self) -> StudioHub:
        return self

    def __exit__(self, *_args: object) -> bool:
        self.close()
        return False

    def _ensure_open(self) -> None:
        if self.closed:
            raise StudioError("closed", "the studio link is closed")

    # ---- the thread ------------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _http(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None) -> Any:
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        req = request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                raw = resp.read()
        except urlerror.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}").get("error") or {}
            except ValueError:
                answer = {}
            code = answer.get("code") or ("auth_failed" if exc.code == 401 else "server_error")
            raise StudioError(code, answer.get("message") or f"the studio server answered {exc.code}") from None
        except (urlerror.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StudioError(
                "connection_failed", f"the studio server at {self.url} cannot be reached: {reason}"
            ) from exc
        return json.loads(raw) if raw else {}

    def _download(self, path: str, target: str, sha256: str | None) -> None:
        req = request.Request(self.url + path, headers=self._headers())
        os.makedirs(os.path.dirname(target), exist_ok=True)
        part = target + ".part"
        digest = hashlib.sha256()
        try:
            with request.urlopen(req, timeout=HTTP_TIMEOUT) as resp, open(part, "wb") as out:
                while True:
                    chunk = resp.read(256 * 1024)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
        except urlerror.HTTPError as exc:
            _remove(part)
            raise StudioError(
                "download_failed", f"{os.path.basename(target)}: the server answered {exc.code}"
            ) from None
        except (urlerror.URLError, OSError) as exc:
            _remove(part)
            raise StudioError("download_failed", f"{os.path.basename(target)}: {getattr(exc, 'reason', exc)}") from exc
        if sha256 and digest.hexdigest() != sha256:
            _remove(part)
            raise StudioError("download_failed", f"{os.path.basename(target)} arrived damaged (its SHA-256 differs)")
        os.replace(part, target)

    def _emit(self, *events: Event) -> None:
        with self._lock:
            for event in events:
                if len(self._events) >= MAX_EVENTS and event.type in ("progress", "preview"):
                    continue
                self._events.append(event)

    def _set_link(self, state: str, reason: str | None) -> None:
        with self._lock:
            previous, changed = self._link_state, (state, reason) != (self._link_state, self._link_reason)
            self._link_state, self._link_reason = state, reason
        if changed:
            self._emit(
                Event("service_state_changed", None, service=LINK_NAME, state=state, previous=previous, reason=reason)
            )

    def _run(self) -> None:
        ws: WebSocket | None = None
        delay = RECONNECT_MIN
        next_connect = 0.0
        next_services = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if ws is None and now >= next_connect:
                try:
                    ws = self._subscribe()
                    delay = RECONNECT_MIN
                    self._set_link("connected", None)
                except (StudioError, WebSocketClosed, OSError) as exc:
                    state = "circuit_open" if getattr(exc, "code", "") == "auth_failed" else "reconnecting"
                    self._set_link(state, str(exc))
                    next_connect = now + delay
                    delay = min(delay * 2, RECONNECT_MAX)
            if ws is None:
                # Commands wait while the server is away (a submit is sent when it is back; nothing is lost).
                self._stop.wait(min(READ_SLICE, max(0.0, next_connect - time.monotonic())))
                continue
            if now >= next_services:
                next_services = now + SERVICES_EVERY
                self._refresh_services()
            self._run_commands()
            try:
                for opcode, payload in ws.receive(READ_SLICE):
                    self._on_message(opcode, payload)
            except (WebSocketClosed, OSError) as exc:
                ws.close()
                ws = None
                next_connect = time.monotonic() + delay
                self._set_link("reconnecting", f"the event stream dropped: {exc}")
        if ws is not None:
            ws.close()

    def _subscribe(self) -> WebSocket:
        query = {"jobs": "all", "previews": "binary"}
        if self._since is not None and self._epoch:
            query.update(since=str(self._since), epoch=self._epoch)
        scheme = "wss" if self.url.startswith("https") else "ws"
        url = f"{scheme}{self.url[self.url.index(':') :]}/ws/events?{parse.urlencode(query)}"
        headers = self._headers()
        ws = WebSocket(url, headers)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:  # the first message says whether what we missed was replayed
            for opcode, payload in ws.receive(0.2):
                if opcode != 0x1:
                    continue
                data = json.loads(payload)
                if data.get("type") != "subscribed":
                    continue
                recovered = bool(data.get("recovered"))
                resumed = self._since is not None
                self._epoch = str(data.get("epoch") or "")
                if not recovered or self._since is None:
                    self._since = int(data.get("offset") or 0)
                if resumed and not recovered:
                    self._recheck_all()  # the history no longer holds what we missed: ask about each job
                return ws
        ws.close()
        raise StudioError("protocol_error", "the studio server did not confirm the event stream")

    def _refresh_services(self) -> None:
        try:
            answer = self._http("GET", "/api/services")
        except StudioError as exc:
            if exc.code == "auth_failed":
                self._set_link("circuit_open", str(exc))
            return
        services = [s for s in answer.get("services") or () if isinstance(s, dict) and s.get("name")]
        with self._lock:
            self._services = services
            waiting = any(j.state == "queued" for j in self._jobs.values())
        if not waiting:
            return
        # Queue positions move without events of their own: read them with the health (the panel's "queued 3rd").
        try:
            listed = self._http("GET", "/api/jobs?state=queued&limit=1000").get("jobs") or ()
        except StudioError:
            return
        with self._lock:
            for view in listed:
                local = self._by_remote.get(str(view.get("job_id") or ""))
                job = self._jobs.get(local) if local else None
                if job is not None and job.state == "queued":
                    job.queue_position = view.get("queue_position")

    def _run_commands(self) -> None:
        """The commands queued before this turn (one put back for later waits for the next turn, after a read of
        the stream that notices a server gone away)."""
        for _ in range(self._commands.qsize()):
            if self._stop.is_set():
                return
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is not None:
                self._handle(command)

    def _handle(self, command: _Command) -> None:
        job = command.job
        if command.kind == "submit":
            self._post(job)
        elif command.kind == "cancel":
            if job.ended:
                return
            if job.remote is None:
                job.body = None
                self._end(job, Event("job_cancelled", job.id), "cancelled")
                return
            try:
                self._http("DELETE", f"/api/jobs/{parse.quote(job.remote)}")
            except StudioError as exc:
                if exc.code == "unknown_job":
                    self._end(
                        job, failed(job.id, "unknown_job", "the studio server no longer knows this job"), "failed"
                    )
                else:
                    self._emit(Event("node_text", job.id, node_id="", text=f"cancel not delivered yet: {exc}"))
                    self._commands.put(command)
        elif command.kind == "track":
            if job.remote is None:
                code, text = (
                    ("not_posted", "it was never sent to the studio server")
                    if not command.posted
                    else ("unknown_job", "its id on the studio server was not recorded in the output folder")
                )
                self._end(job, failed(job.id, code, text), "failed")
                return
            self._recheck(job)

    def _post(self, job: StudioJob) -> None:
        with self._lock:
            body, job.body = job.body, None
            if body is None or job.ended:
                return
            job.sending = True
        try:
            answer = self._http("POST", "/api/jobs", json.dumps(body).encode(), "application/json")
        except StudioError as exc:
            job.sending = False
            if exc.code == "connection_failed":
                job.body = body  # the server went away between two reads: sent when the stream is back
                self._commands.put(_Command("submit", job))
                return
            self._end(job, failed(job.id, exc.code, f"the studio server refused the job: {exc}"), "failed")
            return
        remote = str(answer.get("job_id") or "")
        if not remote:
            self._end(job, failed(job.id, "protocol_error", "the studio server answered without a job id"), "failed")
            return
        with self._lock:
            job.remote = remote
            job.sending = False
            self._by_remote[remote] = job.id
            self._index[job.id] = {"remote": remote, "service": job.service, "tag": job.tag, "studio": self.url}
        self._write_index()
        if job.cancel_requested:
            self._commands.put(_Command("cancel", job))
        view = answer.get("job") or {}
        if view.get("state") in TERMINAL:  # it ended before the stream could tell (or the POST was slow)
            self._finish(job, view.get("state"), None)

    def _on_message(self, opcode: int, payload: bytes) -> None:
        image = None
        if opcode == 0x2:  # a preview: 4-byte header length, the event's JSON, the image
            if len(payload) < 4:
                return
            n = struct.unpack("!I", payload[:4])[0]
            text, image = payload[4 : 4 + n], payload[4 + n :]
        else:
            text = payload
        try:
            data = json.loads(text)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        offset = data.get("offset")
        if isinstance(offset, int):
            self._since = max(self._since or 0, offset)
        remote = data.get("job_id")
        with self._lock:
            local = self._by_remote.get(remote) if remote else None
            job = self._jobs.get(local) if local else None
        kind = data.get("type")
        if job is None:
            if remote is None:
                event = translate(data, None)
                if event is not None:
                    self._emit(event)
            return  # another client's job: the monitor page shows it, this panel does not
        if job.ended:
            return
        if kind == "preview":
            if image:
                fmt = "png" if str(data.get("mime")) == "image/png" else "jpeg"
                self._emit(Event("preview", job.id, node_id=data.get("node_id"), data=bytes(image), format=fmt))
            return
        if kind in ("job_completed", "job_failed", "job_cancelled"):
            self._finish(job, kind.removeprefix("job_"), data)
            return
        event = translate(data, job.id)
        if event is not None:
            if kind in ("job_queued", "job_started", "node_started", "progress"):
                job.state = "queued" if kind == "job_queued" else "running"
            self._emit(event)

    def _recheck_all(self) -> None:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.remote and not j.ended]
        for job in jobs:
            self._recheck(job)

    def _recheck(self, job: StudioJob) -> None:
        """Reads a job's state from the server (after a restart, or a stream gap) and reports what it is now."""
        try:
            view = self._http("GET", f"/api/jobs/{parse.quote(job.remote or '')}")
        except StudioError as exc:
            if exc.code == "unknown_job":
                self._end(job, failed(job.id, "unknown_job", "the studio server no longer knows this job"), "failed")
            return  # unreachable: asked again after the next (re)subscribe
        state = str(view.get("state") or "")
        if state in TERMINAL:
            self._finish(job, state, None, view)
        elif state:
            job.state = "running" if state == "running" else "queued"
            event = Event("job_queued", job.id, service=job.service, position=view.get("queue_position"))
            if state == "running":
                event = Event("job_started", job.id, service=job.service, cached_nodes=[])
            self._emit(event)

    def _finish(self, job: StudioJob, state: str, data: dict | None, view: dict | None = None) -> None:
        """A job's end: a completed job's files are downloaded into its take folder first."""
        if job.ended:
            return
        if state == "cancelled":
            self._end(job, Event("job_cancelled", job.id), "cancelled")
            return
        if view is None:
            try:
                view = self._http("GET", f"/api/jobs/{parse.quote(job.remote or '')}")
            except StudioError as exc:
                if state == "failed" and data is not None:
                    view = {}
                else:
                    self._end(job, failed(job.id, exc.code, f"the job ended but could not be read: {exc}"), "failed")
                    return
        if state == "failed":
            error = dict((data or {}).get("error") or view.get("error") or {})
            code = str(error.get("code") or "execution_failed")
            message = str(error.get("message") or "the job failed on the studio server")
            event = Event(
                "job_failed",
                job.id,
                code=code,
                message=message,
                error=error,
                node_id=error.get("node_id"),
                node_type=error.get("node_type"),
            )
            self._end(job, event, "failed")
            return
        folder = os.path.join(self.output_dir, _safe(job.tag or job.service), job.id)
        sums = {}
        for out in (data or {}).get("outputs") or view.get("outputs") or ():
            if isinstance(out, dict):
                name = os.path.basename(str(out.get("path") or out.get("filename") or ""))
                sums[name] = out
        outputs = []
        try:
            for entry in view.get("files") or ():
                name = str(entry.get("name") or "")
                safe = _safe(name)
                if not name or safe != name:
                    raise StudioError("download_failed", f"the server named an output {name!r}")
                meta = sums.get(name) or {}
                target = os.path.join(folder, name)
                self._download(str(entry["url"]), target, meta.get("sha256"))
                outputs.append(
                    {
                        "path": target,
                        "filename": name,
                        "kind": meta.get("kind") or "",
                        "node_id": meta.get("node_id") or "",
                        "sha256": meta.get("sha256") or "",
                        "size": os.path.getsize(target),
                    }
                )
            os.makedirs(folder, exist_ok=True)
            record = {"studio": self.url, "remote_job_id": job.remote, "service": job.service, "job": view}
            with open(os.path.join(folder, "studio_job.json"), "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=2, default=str)
        except (StudioError, OSError) as exc:
            code = getattr(exc, "code", "io_error")
            text = f"the job finished on the studio server but its results could not be saved in {folder}: {exc}"
            self._end(job, failed(job.id, code, text), "failed")
            return
        job.outputs = [o["path"] for o in outputs]
        event = Event(
            "job_completed",
            job.id,
            outputs=outputs,
            ui=(data or {}).get("ui") or {},
            elapsed_seconds=(data or {}).get("elapsed_seconds") or view.get("elapsed_seconds"),
        )
        self._end(job, event, "completed")

    def _end(self, job: StudioJob, event: Event, state: str) -> None:
        if job.ended:
            return
        job.ended = True
        job.state = state
        self._emit(event)
        with self._lock:
            if self._index.pop(job.id, None) is not None:
                changed = True
            else:
                changed = False
        if changed:
            self._write_index()

    # ---- the index: local id → server id, for a restarted Blender -------------------------------------------------

    def _index_path(self) -> str:
        return os.path.join(self.output_dir, INDEX_FILE)

    def _read_index(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self._index_path(), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _write_index(self) -> None:
        with self._lock:
            data = dict(self._index)
        path = self._index_path()
        try:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(path + ".part", "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
            os.replace(path + ".part", path)
        except OSError as exc:
            self._emit(
                Event(
                    "service_state_changed",
                    None,
                    service=LINK_NAME,
                    state=self._link_state,
                    previous=self._link_state,
                    reason=f"could not write {path}: {exc} (a restart would not find running jobs)",
                )
            )


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def specs(hub: StudioHub, spec_type: Any) -> dict[str, Any]:
    """The studio's services as the add-on's service specs (name → ``spec_type(name, url, kind)``)."""
    return {name: spec_type(name=name, url=hub.url, kind=kind) for name, kind in hub.service_kinds().items()}


def describe(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none yet"
