#!/usr/bin/env python3
"""Event stream and round trips: our Hub vs python-websockets vs websocket-client (and requests / httpx for HTTP).

    python3 bench/bench_stream.py [--quick|--smoke] [--json]

One run, same machine, same server (bench/blast_server.py in a child process, pre-encoded frames):

* stream: a prompt's ComfyUI-shaped stream (``progress_state`` + ``progress`` per step, optionally a binary
  JPEG-sized preview per step), from the first message to the prompt's end, for each client in turn; a null
  client (raw socket, reads and discards bytes) shows what the server can send;
* ws_rtt: WebSocket ping -> pong; http_rtt: ``GET /queue``.

Prints one JSON object (``--json``) or a short table. A benchmark, not a test: nothing fails on a slow number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import socket
import struct
import sys
import tempfile
import time
import uuid

import director_link
from _common import BlastServer, drain_all, p50_p99, wait_connected

FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
TIMEOUT = 60.0  # any one stream
WORKLOADS = {
    # name: (steps full, steps quick, steps smoke, preview bytes)
    "text": (20_000, 5_000, 500, 0),
    "previews": (1_500, 400, 50, 40_000),
}


def blast_prompt(steps: int, preview_bytes: int, batch: int = 1, progress_only: bool = False) -> dict:
    inputs = {"steps": steps, "preview_bytes": preview_bytes, "batch": batch, "progress_only": progress_only}
    return {"1": {"class_type": "Blast", "inputs": inputs}}


# The CPU target: a flood of small ComfyUI `progress` messages (nothing else per step).
FLOOD_STEPS = (200_000, 200_000, 5_000)  # full, quick, smoke


def post_prompt(host: str, port: int, prompt: dict, client_id: str) -> str:
    """POST /prompt then GET /queue, as a client that wants its queue position does (ours does the same)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        pid = str(uuid.uuid4())
        body = json.dumps({"prompt": prompt, "client_id": client_id, "prompt_id": pid})
        conn.request("POST", "/prompt", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        pid = json.loads(resp.read())["prompt_id"]
        conn.request("GET", "/queue")
        conn.getresponse().read()
        return pid
    finally:
        conn.close()


class Decoder:
    """What a Python client must do with each message: JSON text, or a binary preview's header + metadata."""

    def __init__(self, pid: str) -> None:
        self.pid = pid
        self.kinds: dict[str, int] = {}
        self.done = False

    def text(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        kind = msg.get("type")
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        data = msg.get("data") or {}
        if kind == "executing" and data.get("node") is None and data.get("prompt_id") == self.pid:
            self.done = True

    def binary(self, raw: bytes) -> None:
        event, n = struct.unpack_from(">II", raw)
        if event == 4:
            meta = json.loads(raw[8 : 8 + n])
            image = raw[8 + n :]
            kind = f"preview:{meta.get('image_type')}:{len(image) > 0}"
        else:
            kind = f"binary:{event}"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def _window(t0: float | None, c0: float | None, t1: float, c1: float, frames: int) -> dict:
    wall = t1 - (t0 or t1)
    cpu = c1 - (c0 or c1)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "frames": frames,
        "msgs_per_s": frames / wall if wall > 0 else None,
        "cpu_us_per_msg": 1e6 * cpu / frames if frames else None,
    }


# -------------------------------------------------------------------------------------------------------- clients


def run_ours(srv: BlastServer, steps: int, preview: int, out_dir: str) -> dict:
    with director_link.Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", srv.url, name="blast")
        wait_connected(hub, name)
        drain_all(hub)
        before = srv.stats()
        coalesced0 = hub.snapshot()["events"]["coalesced"]
        c0 = time.process_time()
        job = hub.submit(name, blast_prompt(steps, preview))
        kinds: dict[str, int] = {}
        # The window is taken from the events' own timestamps (set in Rust when each event is made), so the poll
        # loop's wake-up latency does not shorten or stretch it; CPU counts from submit() (a little against us).
        t0 = t1 = None
        terminal = None
        deadline = time.monotonic() + TIMEOUT
        poll, wait = hub.poll, hub.wait_for_events
        while terminal is None and time.monotonic() < deadline:
            wait(0.05)
            for _ in range(10_000):
                got = poll(10_000)
                if not got:
                    break
                for ev in got:
                    kind = ev.type
                    kinds[kind] = kinds.get(kind, 0) + 1
                    if t0 is None and kind != "job_queued":
                        t0 = ev.time
                    if ev.is_terminal and ev.job == job.id:
                        terminal, t1 = kind, ev.time
        c1 = time.process_time()
        after = srv.stats()
        coalesced = hub.snapshot()["events"]["coalesced"] - coalesced0
    if terminal != "job_completed":
        raise SystemExit(f"ours: the stream ended with {terminal or 'a timeout'}: {kinds}")
    frames = after["frames"] - before["frames"]
    events = sum(v for k, v in kinds.items() if k not in ("job_queued", "queue_changed", "service_state_changed"))
    res = _window(t0, c0, t1 or 0.0, c1, frames)
    res.update(
        {
            "typed_events": events,
            "typed_events_per_s": events / res["wall_s"] if res["wall_s"] else None,
            "kinds": kinds,
            "coalesced": coalesced,
        }
    )
    return res


def run_websockets(srv: BlastServer, steps: int, preview: int) -> dict:
    from websockets.asyncio.client import connect

    async def go() -> dict:
        cid = uuid.uuid4().hex
        async with connect(f"ws://{srv.host}:{srv.port}/ws?clientId={cid}", compression=None, max_size=None) as ws:
            await ws.send(FEATURE_FLAGS)
            await asyncio.wait_for(ws.recv(), 10)  # status
            before = srv.stats()
            pid = post_prompt(srv.host, srv.port, blast_prompt(steps, preview), cid)
            dec = Decoder(pid)
            t0 = c0 = None
            deadline = time.monotonic() + TIMEOUT
            while not dec.done and time.monotonic() < deadline:
                raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
                if t0 is None:
                    t0, c0 = time.perf_counter(), time.process_time()
                if isinstance(raw, bytes):
                    dec.binary(raw)
                else:
                    dec.text(raw)
            t1, c1 = time.perf_counter(), time.process_time()
            after = srv.stats()
        if not dec.done:
            raise SystemExit("websockets: the stream did not end in time")
        # The server's last frame (a status) comes after executing{node: null}; not read, so not counted.
        return _window(t0, c0, t1, c1, after["frames"] - before["frames"] - 1) | {"kinds": dec.kinds}

    return asyncio.run(go())


def run_websocket_client(srv: BlastServer, steps: int, preview: int) -> dict:
    import websocket

    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://{srv.host}:{srv.port}/ws?clientId={cid}", timeout=TIMEOUT)
    try:
        ws.send(FEATURE_FLAGS)
        ws.recv()  # status
        before = srv.stats()
        pid = post_prompt(srv.host, srv.port, blast_prompt(steps, preview), cid)
        dec = Decoder(pid)
        t0 = c0 = None
        deadline = time.monotonic() + TIMEOUT
        while not dec.done and time.monotonic() < deadline:
            raw = ws.recv()
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            if isinstance(raw, bytes):
                dec.binary(raw)
            else:
                dec.text(raw)
        t1, c1 = time.perf_counter(), time.process_time()
        after = srv.stats()
    finally:
        ws.close()
    if not dec.done:
        raise SystemExit("websocket-client: the stream did not end in time")
    return _window(t0, c0, t1, c1, after["frames"] - before["frames"] - 1) | {"kinds": dec.kinds}


def run_null(srv: BlastServer, steps: int, preview: int) -> dict:
    """Raw socket: handshake, POST, then read and discard bytes until 0.3 s of silence. The server's ceiling."""
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    try:
        cid = uuid.uuid4().hex
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws?clientId={cid} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("null client: the server closed during the handshake")
            head += chunk
        sock.settimeout(0.05)  # the status frame that follows the handshake is not part of the stream
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            pass
        before = srv.stats()
        post_prompt(srv.host, srv.port, blast_prompt(steps, preview), cid)
        buf = bytearray(1 << 20)
        total, t0, t1 = 0, None, time.perf_counter()
        c0 = time.process_time()
        # The server encodes the whole stream before its first byte (seconds for a long one): wait for that
        # first byte up to TIMEOUT, then stop after 0.3 s of silence.
        sock.settimeout(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                break
            sock.settimeout(0.3)
            if not n:
                break
            if t0 is None:
                t0 = time.perf_counter()
            total += n
            t1 = time.perf_counter()
        c1 = time.process_time()
        after = srv.stats()
    finally:
        sock.close()
    res = _window(t0, c0, t1, c1, after["frames"] - before["frames"])
    wall = res["wall_s"]
    return res | {"bytes": total, "mib_per_s": total / wall / 2**20 if wall else None}


# ------------------------------------------------------------------------------------------------ progress flood


def flood_ours(srv: BlastServer, steps: int, out_dir: str) -> dict:
    """The issue's consumer: ``poll()`` in a loop, ``wait_for_events()`` when empty, looking only at
    ``is_terminal``. CPU is the whole process (the hub's runtime threads included), submit -> terminal event."""
    with director_link.Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", srv.url, name="flood")
        wait_connected(hub, name)
        drain_all(hub)
        before = srv.stats()
        stats0 = hub.snapshot()["events"]
        poll, wait = hub.poll, hub.wait_for_events
        events = polls = 0
        done = False
        t0, c0 = time.perf_counter(), time.process_time()
        job = hub.submit(name, blast_prompt(steps, 0, progress_only=True))
        deadline = time.monotonic() + TIMEOUT
        while not done and time.monotonic() < deadline:
            got = poll(10_000)
            polls += 1
            if not got:
                wait(0.05)
                continue
            events += len(got)
            for ev in got:
                if ev.is_terminal:
                    done = True
        t1, c1 = time.perf_counter(), time.process_time()
        after = srv.stats()
        stats1 = hub.snapshot()["events"]
        state = hub.job(job.id).state if hub.job(job.id) else None
    if state != "completed":
        raise SystemExit(f"ours (flood): the job ended {state or 'with a timeout'}")
    res = _window(t0, c0, t1, c1, after["frames"] - before["frames"])
    res.update(
        {
            "events": events,
            "polls": polls,
            "events_per_poll": events / polls if polls else None,
            "coalesced": stats1["coalesced"] - stats0["coalesced"],
        }
    )
    return res


def flood_websockets(srv: BlastServer, steps: int) -> dict:
    """python-websockets doing ``json.loads`` of each message (and the one check that finds the prompt's end)."""
    from websockets.asyncio.client import connect

    loads = json.loads

    async def go() -> dict:
        cid = uuid.uuid4().hex
        async with connect(f"ws://{srv.host}:{srv.port}/ws?clientId={cid}", compression=None, max_size=None) as ws:
            await ws.send(FEATURE_FLAGS)
            await asyncio.wait_for(ws.recv(), 10)  # status
            before = srv.stats()
            t0, c0 = time.perf_counter(), time.process_time()
            pid = post_prompt(srv.host, srv.port, blast_prompt(steps, 0, progress_only=True), cid)

            async def read() -> tuple[int, bool]:
                # The cheapest correct loop: no per-message timeout (one bounds the whole stream).
                frames = 0
                async for raw in ws:
                    msg = loads(raw)
                    frames += 1
                    if msg["type"] == "executing" and msg["data"]["node"] is None and msg["data"]["prompt_id"] == pid:
                        return frames, True
                return frames, False

            frames, done = await asyncio.wait_for(read(), TIMEOUT)
            t1, c1 = time.perf_counter(), time.process_time()
            after = srv.stats()
        if not done:
            raise SystemExit("websockets (flood): the stream did not end in time")
        return _window(t0, c0, t1, c1, after["frames"] - before["frames"] - 1) | {"read": frames}

    return asyncio.run(go())


def run_flood(srv: BlastServer, steps: int, out_dir: str, rounds: int) -> dict:
    """Alternating rounds (ours, websockets, ...) on the same server; the median of each client's CPU/message."""
    run_null(srv, steps // 4 or 1, 0)  # warm-up
    ours, base = [], []
    for _ in range(rounds):
        ours.append(flood_ours(srv, steps, out_dir))
        base.append(flood_websockets(srv, steps))

    def med(rs: list[dict], key: str) -> float | None:
        vals = sorted(r[key] for r in rs if r.get(key) is not None)
        return vals[len(vals) // 2] if vals else None

    o, b = med(ours, "cpu_us_per_msg"), med(base, "cpu_us_per_msg")
    return {
        "steps": steps,
        "rounds": rounds,
        "ours": {k: med(ours, k) for k in ("cpu_us_per_msg", "msgs_per_s", "wall_s", "events_per_poll", "coalesced")},
        "websockets": {k: med(base, k) for k in ("cpu_us_per_msg", "msgs_per_s", "wall_s")},
        "cpu_ratio": b / o if o and b else None,
        "runs": {"ours": ours, "websockets": base},
    }


# ------------------------------------------------------------------------------------------------------ round trips


def ours_ws_rtt(srv: BlastServer, pings: int, out_dir: str) -> dict:
    with director_link.Hub(output_dir=out_dir, heartbeat=0.01) as hub:
        name = hub.add_service("comfyui", srv.url, name="rtt")
        wait_connected(hub, name)
        lat: dict = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hub.wait_for_events(0.05)
            hub.poll(10_000)
            lat = hub.snapshot()["services"][0]["latency"]
            if lat["samples"] >= pings:
                break
    return {"p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"), "samples": lat.get("samples", 0)}


def ours_http_rtt(srv: BlastServer, calls: int, out_dir: str) -> dict:
    """`hub.cancel_remote(service, unknown id)` is one `GET /queue` (the id is not there): timed from Python."""
    with director_link.Hub(output_dir=out_dir) as hub:
        name = hub.add_service("comfyui", srv.url, name="http")
        wait_connected(hub, name)
        for _ in range(5):
            hub.cancel_remote(name, "no-such-prompt")
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            assert hub.cancel_remote(name, "no-such-prompt") == "not_on_server"
            samples.append((time.perf_counter() - t0) * 1000)
        inner = hub.snapshot()["services"][0]["http_latency"]
    p50, p99 = p50_p99(samples)
    return {"p50_ms": p50, "p99_ms": p99, "samples": len(samples), "inner_p50_ms": inner.get("p50_ms")}


def websockets_rtt(srv: BlastServer, pings: int, spacing: float) -> dict:
    from websockets.asyncio.client import connect

    async def go() -> list[float]:
        out = []
        async with connect(f"ws://{srv.host}:{srv.port}/ws?clientId={uuid.uuid4().hex}", compression=None) as ws:
            await ws.recv()
            for _ in range(pings):
                t0 = time.perf_counter()
                waiter = await ws.ping()
                await asyncio.wait_for(waiter, 5)
                out.append((time.perf_counter() - t0) * 1000)
                if spacing:
                    await asyncio.sleep(spacing)
        return out

    p50, p99 = p50_p99(asyncio.run(go()))
    return {"p50_ms": p50, "p99_ms": p99}


def websocket_client_rtt(srv: BlastServer, pings: int, spacing: float) -> dict:
    import websocket

    ws = websocket.create_connection(f"ws://{srv.host}:{srv.port}/ws?clientId={uuid.uuid4().hex}", timeout=5)
    out = []
    try:
        ws.recv()
        for i in range(pings):
            t0 = time.perf_counter()
            ws.ping(str(i))
            for _ in range(100):
                opcode, _frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_PONG:
                    break
            out.append((time.perf_counter() - t0) * 1000)
            if spacing:
                time.sleep(spacing)
    finally:
        ws.close()
    p50, p99 = p50_p99(out)
    return {"p50_ms": p50, "p99_ms": p99}


def http_rtt(srv: BlastServer, calls: int, lib: str) -> dict:
    """A keep-alive client of `lib`; {} when it is not installed (the smoke run in CI may lack it)."""
    url = f"{srv.url}/queue"
    try:
        if lib == "requests":
            import requests

            client = requests.Session()
        else:
            import httpx

            client = httpx.Client()
    except ImportError:
        return {}
    samples = []
    try:
        for i in range(calls + 5):
            t0 = time.perf_counter()
            r = client.get(url, timeout=5)
            r.json()
            if i >= 5:
                samples.append((time.perf_counter() - t0) * 1000)
    finally:
        client.close()
    p50, p99 = p50_p99(samples)
    return {"p50_ms": p50, "p99_ms": p99}


# ------------------------------------------------------------------------------------------------------------ main


def flood_text(f: dict) -> str:
    o, b = f["ours"], f["websockets"]
    return (
        f"progress flood: {f['steps']:,} messages, median of {f['rounds']} alternating rounds\n"
        f"  ours       {o['cpu_us_per_msg'] or 0:>6.2f} µs CPU/msg  {o['msgs_per_s'] or 0:>10,.0f} msg/s  "
        f"{o['events_per_poll'] or 0:.0f} events/poll  coalesced {o['coalesced']}\n"
        f"  websockets {b['cpu_us_per_msg'] or 0:>6.2f} µs CPU/msg  {b['msgs_per_s'] or 0:>10,.0f} msg/s\n"
        f"  CPU ratio (websockets / ours): {f['cpu_ratio'] or 0:.2f}x (target >= 5x)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--flood-only", action="store_true", help="only the progress flood (the issue's CPU target)")
    p.add_argument("--flood-steps", type=int, default=None, help="progress messages in the flood (max 200000)")
    p.add_argument("--flood-rounds", type=int, default=None, help="alternating rounds (default 3, smoke 1)")
    args = p.parse_args(argv)
    size = 2 if args.smoke else (1 if args.quick else 0)
    pings = 20 if args.smoke else 200
    result: dict = {"stream": {}, "ws_rtt": {}, "http_rtt": {}}
    flood_steps = max(1, min(args.flood_steps or FLOOD_STEPS[size], 200_000))
    flood_rounds = max(1, min(args.flood_rounds or (1 if args.smoke else 3), 20))
    with BlastServer() as srv, tempfile.TemporaryDirectory(prefix="dl_stream_") as out_dir:
        cpu_srv0 = srv.cpu_seconds() or 0.0
        result["flood"] = run_flood(srv, flood_steps, out_dir, flood_rounds)
        if args.flood_only:
            print(json.dumps(result["flood"], default=str) if args.json else flood_text(result["flood"]))
            return 0
        for wl, spec in WORKLOADS.items():
            steps, preview = spec[size], spec[3]
            run_null(srv, steps // 4 or 1, preview)  # warm-up: page faults, the server's code paths
            block = {}
            for name, fn, extra in (
                ("null", run_null, ()),
                ("ours", run_ours, (out_dir,)),
                ("websockets", run_websockets, ()),
                ("websocket-client", run_websocket_client, ()),
            ):
                s0 = srv.stats()
                r = fn(srv, steps, preview, *extra)
                # The server's sending thread: CPU / wall while it wrote this stream. Near 1 would mean the server
                # is the bottleneck; well below 1, it waits for the client to read.
                s1 = srv.stats()
                send_wall = s1["send_s"] - s0["send_s"]
                r["server_send_cpu_per_wall"] = (s1["send_cpu_s"] - s0["send_cpu_s"]) / send_wall if send_wall else None
                block[name] = r
            block["steps"], block["preview_bytes"] = steps, preview
            result["stream"][wl] = block
        result["ws_rtt"] = {
            "ours": ours_ws_rtt(srv, pings, out_dir),
            "websockets": websockets_rtt(srv, pings, 0.01),
            "websockets_b2b": websockets_rtt(srv, pings, 0.0),
            "websocket-client": websocket_client_rtt(srv, pings, 0.01),
        }
        result["http_rtt"] = {
            "ours": ours_http_rtt(srv, pings, out_dir),
            "requests": http_rtt(srv, pings, "requests"),
            "httpx": http_rtt(srv, pings, "httpx"),
        }
        result["server"] = srv.stats() | {"cpu_s_total": (srv.cpu_seconds() or 0.0) - cpu_srv0}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(flood_text(result["flood"]))
        for wl, block in result["stream"].items():
            print(f"stream {wl}: steps={block['steps']} preview={block['preview_bytes']} B")
            for name in ("null", "ours", "websockets", "websocket-client"):
                r = block[name]
                print(
                    f"  {name:<17} {r['msgs_per_s'] or 0:>12,.0f} msg/s  {r['cpu_us_per_msg'] or 0:>8.2f} µs/msg  "
                    f"wall {r['wall_s'] * 1000:>8.1f} ms  server send cpu/wall {r['server_send_cpu_per_wall'] or 0:.2f}"
                )
        for sec in ("ws_rtt", "http_rtt"):
            for name, r in result[sec].items():
                print(f"{sec} {name:<17} p50 {r.get('p50_ms') or 0:.3f} ms  p99 {r.get('p99_ms') or 0:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
