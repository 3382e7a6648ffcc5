"""The studio benchmark's baseline: the product brief's FastAPI ``ConnectionManager`` relay, as the brief designs it.

A dict ``job_id → list of WebSockets``; a progress update is broadcast by iterating the job's list and awaiting each
``send_text`` (a socket that fails is dropped). The same JSON shapes as ``director-link serve``: ``WS /ws/{job_id}``
(a ``connection`` message, then ``progress`` messages), ``POST /api/jobs/{job_id}/progress`` (the brief's
``send_progress_update`` fields, from an external producer) and ``GET /api/anime/websocket/status``.

Run by bench/bench_studio.py in a venv of its own (FastAPI + uvicorn[standard]: uvloop, httptools, websockets):

    python studio_baseline.py --port 8328
"""

from __future__ import annotations

import argparse
import datetime
import json

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = {}

    async def connect(self, websocket: WebSocket, job_id: str) -> None:
        await websocket.accept()
        self.active_connections.setdefault(job_id, []).append(websocket)

    def disconnect(self, websocket: WebSocket, job_id: str) -> None:
        conns = self.active_connections.get(job_id)
        if conns and websocket in conns:
            conns.remove(websocket)
            if not conns:
                del self.active_connections[job_id]

    async def send_personal_message(self, message: dict, websocket: WebSocket) -> None:
        await websocket.send_text(json.dumps(message))

    async def broadcast_to_job(self, message: dict, job_id: str) -> None:
        text = json.dumps(message)
        dead = []
        for ws in list(self.active_connections.get(job_id, [])):
            try:
                await ws.send_text(text)
            except Exception:  # noqa: BLE001 - the brief's design: a failed socket is dropped
                dead.append(ws)
        for ws in dead:
            self.disconnect(ws, job_id)

    async def send_progress_update(
        self,
        job_id: str,
        status: str,
        progress: float,
        estimated_remaining: float | None = None,
        message: str | None = None,
        output_path: str | None = None,
    ) -> None:
        await self.broadcast_to_job(
            {
                "type": "progress",
                "job_id": job_id,
                "status": status,
                "progress": progress,
                "estimated_remaining": estimated_remaining,
                "message": message,
                "output_path": output_path,
                "timestamp": now_iso(),
            },
            job_id,
        )

    def get_connection_stats(self) -> dict:
        return {
            "total_connections": sum(len(c) for c in self.active_connections.values()),
            "jobs_with_connections": len(self.active_connections),
            "connection_details": {j: len(c) for j, c in self.active_connections.items()},
        }


manager = ConnectionManager()
app = FastAPI()


class Progress(BaseModel):
    status: str
    progress: float = 0
    estimated_remaining: float | None = None
    message: str | None = None
    output_path: str | None = None


@app.websocket("/ws/{job_id}")
async def job_progress(websocket: WebSocket, job_id: str) -> None:
    await manager.connect(websocket, job_id)
    try:
        await manager.send_personal_message(
            {
                "type": "connection",
                "job_id": job_id,
                "status": "connected",
                "message": "Connected to job progress",
                "timestamp": now_iso(),
            },
            websocket,
        )
        while True:
            data = await websocket.receive_text()
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if msg.get("type") == "ping":
                await manager.send_personal_message({"type": "pong", "timestamp": now_iso()}, websocket)
    except WebSocketDisconnect:
        pass
    finally:
        manager.disconnect(websocket, job_id)


@app.post("/api/jobs/{job_id}/progress")
async def post_progress(job_id: str, body: Progress) -> dict:
    await manager.send_progress_update(
        job_id, body.status, body.progress, body.estimated_remaining, body.message, body.output_path
    )
    return {"job_id": job_id, "status": body.status, "progress": body.progress}


@app.get("/api/anime/websocket/status")
async def websocket_status() -> dict:
    return {
        "status": "healthy",
        "websocket_manager": "active",
        "connections": manager.get_connection_stats(),
        "endpoints": ["/ws/{job_id}", "/api/jobs/{job_id}/progress"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description="the brief's FastAPI ConnectionManager relay (benchmark baseline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8328)
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("the baseline listens on loopback only")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, backlog=16384)


if __name__ == "__main__":
    main()
