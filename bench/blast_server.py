#!/usr/bin/env python3
"""A ComfyUI-shaped blast server for the event-stream benchmark: pre-encoded frames written as fast as the socket takes.

    python3 bench/blast_server.py          # prints http://127.0.0.1:PORT, serves until stdin closes

It speaks just enough of ComfyUI for any client's real path (ours: ``Hub`` + the ComfyUI service):

* ``GET /system_stats``, ``GET /queue`` (empty), ``GET /history/{id}`` (success, no outputs, once streamed),
  ``GET /object_info`` (``{}``), ``POST /prompt`` (accepts; the prompt's node ``"1"`` says what to stream);
* ``GET /ws?clientId=...``: a WebSocket (RFC 6455, no extensions); the first frame is ``status``; client pings
  are answered with pongs at once (the reader thread), client text frames are ignored.

A prompt's node ``"1"`` inputs say what to stream once ``batch`` prompts of that client have arrived (and the
``GET /queue`` that follows a POST was answered, or 30 ms passed): ``steps`` steps per prompt, each step a
``progress_state`` and a ``progress`` text frame (only the ``progress`` frame with ``progress_only``: the
small-message flood of the issue's CPU target) and, with ``preview_bytes`` > 0, a binary
``PREVIEW_IMAGE_WITH_METADATA`` frame carrying a JPEG-sized payload (sizes vary ±50 % around ``preview_bytes``).
The prompts of a batch are interleaved step by step, as if they ran side by side. The whole stream is encoded
into ~1 MiB slices (ending on frame boundaries) *before* the first byte is sent, then written with ``sendall``, so
the server's per-message cost while streaming is nil (the benchmark checks this with a null client and the
server's CPU time).

Commands on stdin: ``stats`` (send statistics as one JSON line), ``stall S`` (HTTP gets no answer for S seconds,
at most 120; the WebSocket stays up). Loopback only; every wait is bounded; stops when stdin closes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import uuid

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SLICE = 1 << 20
START_WAIT = 0.03  # after a batch's last POST: wait this long for its GET /queue
NODES = ["4", "6", "7", "5", "3", "8", "9"]  # a txt2img graph: loaders, encoders, latent, KSampler, decode, save
SAMPLER = "3"


def frame_header(opcode: int, n: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def text_frame(obj: dict) -> bytes:
    data = json.dumps(obj, separators=(", ", ": ")).encode()  # ComfyUI uses json.dumps defaults
    return frame_header(0x1, len(data)) + data


def binary_frame(data: bytes) -> bytes:
    return frame_header(0x2, len(data)) + data


def fake_jpeg(size: int, rng: random.Random) -> bytes:
    body = rng.randbytes(max(16, size - 24))
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + body + b"\xff\xd9"


class Stream:
    """One prompt's frames: head, steps (a list of per-step bytes) and tail."""

    def __init__(
        self, pid: str, steps: int, preview_bytes: int, rng: random.Random, progress_only: bool = False
    ) -> None:
        ts = int(time.time() * 1000)
        self.head = b"".join(
            [
                text_frame({"type": "execution_start", "data": {"prompt_id": pid, "timestamp": ts}}),
                text_frame({"type": "execution_cached", "data": {"nodes": [], "prompt_id": pid, "timestamp": ts}}),
                text_frame({"type": "executing", "data": {"node": SAMPLER, "display_node": SAMPLER, "prompt_id": pid}}),
            ]
        )
        self.frames = 3
        meta = json.dumps(
            {
                "node_id": SAMPLER,
                "prompt_id": pid,
                "display_node_id": SAMPLER,
                "parent_node_id": None,
                "real_node_id": SAMPLER,
                "image_type": "image/jpeg",
            }
        ).encode()
        # A few distinct JPEG-sized payloads, reused: the bytes on the wire are what counts, not their entropy.
        jpegs = (
            [fake_jpeg(rng.randint(preview_bytes // 2, preview_bytes * 3 // 2), rng) for _ in range(8)]
            if preview_bytes > 0
            else []
        )
        self.steps: list[bytes] = []
        for v in range(1, steps + 1):
            nodes: dict = {}
            for i, n in enumerate([] if progress_only else NODES):
                state = "finished" if i < NODES.index(SAMPLER) else ("running" if n == SAMPLER else "pending")
                value = v if n == SAMPLER else (1 if state == "finished" else 0)
                nodes[n] = {
                    "value": value,
                    "max": steps if n == SAMPLER else 1,
                    "state": state,
                    "node_id": n,
                    "prompt_id": pid,
                    "display_node_id": n,
                    "parent_node_id": None,
                    "real_node_id": n,
                }
            progress = text_frame(
                {"type": "progress", "data": {"value": v, "max": steps, "prompt_id": pid, "node": SAMPLER}}
            )
            parts = (
                [progress]
                if progress_only
                else [text_frame({"type": "progress_state", "data": {"prompt_id": pid, "nodes": nodes}}), progress]
            )
            if jpegs:
                img = jpegs[v % len(jpegs)]
                parts.append(binary_frame(struct.pack(">II", 4, len(meta)) + meta + img))
            self.steps.append(b"".join(parts))
            self.frames += len(parts)
        self.tail = b"".join(
            [
                text_frame({"type": "execution_success", "data": {"prompt_id": pid, "timestamp": ts}}),
                text_frame({"type": "executing", "data": {"node": None, "display_node": None, "prompt_id": pid}}),
            ]
        )
        self.frames += 2


class Server:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: dict[str, WsConn] = {}
        self.pending: dict[str, list[tuple[str, dict]]] = {}  # client id -> [(prompt id, inputs)]
        self.history: set[str] = set()
        self.queue_served = threading.Event()
        self.stall_until = 0.0  # HTTP requests get no answer until then (the WebSocket stays up)
        self.stats = {"blasts": 0, "frames": 0, "bytes": 0, "send_s": 0.0, "send_cpu_s": 0.0}

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    # ---------------------------------------------------------------------------------------------------- HTTP

    def handle(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline(65536)
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = f.readline(65536)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = f.read(int(headers.get("content-length", "0") or 0)) if "content-length" in headers else b""
                path, _, query = target.partition("?")
                while time.monotonic() < self.stall_until:
                    time.sleep(0.05)
                path = path.removeprefix("/api")
                if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                    cid = dict(p.partition("=")[::2] for p in query.split("&") if p).get("clientId") or uuid.uuid4().hex
                    WsConn(self, conn, f, headers["sec-websocket-key"], cid).run()
                    return
                status, payload = self.route(method, path, body)
                data = json.dumps(payload).encode()
                conn.sendall(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    f"Connection: keep-alive\r\n\r\n".encode()
                    + data
                )
                if path == "/queue":
                    self.queue_served.set()
        except (OSError, ValueError, KeyError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def route(self, method: str, path: str, body: bytes) -> tuple[str, object]:
        if path == "/system_stats":
            return "200 OK", {
                "system": {
                    "os": "posix",
                    "comfyui_version": "0.3.64",
                    "python_version": sys.version.split()[0],
                    "argv": ["main.py", "--blast-bench"],
                    "ram_total": 0,
                    "ram_free": 0,
                },
                "devices": [{"name": "blast", "type": "cpu", "index": 0}],
            }
        if path == "/queue":
            return "200 OK", {"queue_running": [], "queue_pending": []}
        if path.startswith("/history/"):
            pid = path.split("/", 2)[2]
            with self.lock:
                done = pid in self.history
            if not done:
                return "200 OK", {}
            return "200 OK", {
                pid: {
                    "prompt": [0, pid, {}, {}, []],
                    "outputs": {},
                    "meta": {},
                    "status": {"status_str": "success", "completed": True, "messages": []},
                }
            }
        if path == "/object_info":
            return "200 OK", {}
        if path == "/prompt" and method == "POST":
            req = json.loads(body or b"{}")
            pid = req.get("prompt_id") or str(uuid.uuid4())
            inputs = ((req.get("prompt") or {}).get("1") or {}).get("inputs") or {}
            cid = req.get("client_id") or ""
            with self.lock:
                batch = self.pending.setdefault(cid, [])
                batch.append((pid, inputs))
                ready = len(batch) >= int(inputs.get("batch", 1))
                if ready:
                    del self.pending[cid]
                ws = self.sockets.get(cid)
            if ready and ws is not None:
                self.queue_served.clear()
                ws.schedule(batch)
            return "200 OK", {"prompt_id": pid, "number": 0, "node_errors": {}}
        return "404 Not Found", {"error": "not found"}


class WsConn:
    def __init__(self, server: Server, conn: socket.socket, f, key: str, cid: str) -> None:
        self.server, self.conn, self.f, self.cid = server, conn, f, cid
        self.wlock = threading.Lock()
        self.blast_lock = threading.Lock()
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        conn.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.send(text_frame({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": cid}}))
        with server.lock:
            server.sockets[cid] = self

    def send(self, data: bytes) -> None:
        with self.wlock:
            self.conn.sendall(data)

    def schedule(self, batch: list[tuple[str, dict]]) -> None:
        threading.Thread(target=self.blast, args=(batch,), daemon=True).start()

    def blast(self, batch: list[tuple[str, dict]]) -> None:
        self.server.queue_served.wait(START_WAIT)
        rng = random.Random(len(batch))
        streams = []
        for pid, inputs in batch:
            steps = max(1, min(int(inputs.get("steps", 100)), 200_000))
            preview = max(0, min(int(inputs.get("preview_bytes", 0)), 4 << 20))
            streams.append(Stream(pid, steps, preview, rng, bool(inputs.get("progress_only"))))
        parts = [s.head for s in streams]
        for i in range(max(len(s.steps) for s in streams)):
            parts.extend(s.steps[i] for s in streams if i < len(s.steps))
        parts.extend(s.tail for s in streams)
        parts.append(text_frame({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}))
        # Slices end on frame boundaries, so a pong written between two slices never splits a frame.
        chunks, cur, size = [], [], 0
        for part in parts:
            cur.append(part)
            size += len(part)
            if size >= SLICE:
                chunks.append(b"".join(cur))
                cur, size = [], 0
        if cur:
            chunks.append(b"".join(cur))
        del parts, cur
        with self.server.lock:
            self.server.history.update(pid for pid, _ in batch)
        total = sum(len(c) for c in chunks)
        with self.blast_lock:  # one stream at a time per socket
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                for chunk in chunks:
                    self.send(chunk)
            except OSError:
                return
            send_s, send_cpu = time.perf_counter() - t0, time.thread_time() - c0
        with self.server.lock:
            st = self.server.stats
            st["blasts"] += 1
            st["frames"] += sum(s.frames for s in streams) + 1
            st["bytes"] += total
            st["send_s"] += send_s
            st["send_cpu_s"] += send_cpu

    def run(self) -> None:
        """Reads client frames: pings get pongs, close gets close, the rest is ignored."""
        f = self.f
        try:
            while True:
                h = f.read(2)
                if len(h) < 2:
                    return
                opcode, n = h[0] & 0x0F, h[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", f.read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", f.read(8))[0]
                mask = f.read(4) if h[1] & 0x80 else b"\0\0\0\0"
                raw = f.read(n)
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(raw)) if n <= 256 else raw
                if opcode == 0x9:
                    self.send(frame_header(0xA, len(payload)) + payload)
                elif opcode == 0x8:
                    self.send(frame_header(0x8, len(payload[:2])) + payload[:2])
                    return
        except OSError:
            return
        finally:
            with self.server.lock:
                if self.server.sockets.get(self.cid) is self:
                    del self.server.sockets[self.cid]


def main() -> None:
    # Optional: HOST [PORT] (loopback only), for the discovery benchmark's servers on known ports.
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    if not host.startswith("127."):
        sys.exit("loopback addresses only")
    server = Server(host, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    threading.Thread(target=server.serve, daemon=True).start()
    print(f"http://{host}:{server.port}", flush=True)
    # One command a line on stdin: "stats" prints the send statistics, "stall S" stops answering HTTP for S
    # seconds (at most 120); EOF stops the server.
    for line in sys.stdin:
        cmd, *rest = line.split() or [""]
        if cmd == "stats":
            with server.lock:
                print(json.dumps(server.stats | {"cpu_s": sum(os.times()[:2])}), flush=True)
        elif cmd == "stall":
            server.stall_until = time.monotonic() + min(120.0, float(rest[0]))
            print("{}", flush=True)
    server.sock.close()


if __name__ == "__main__":
    main()
