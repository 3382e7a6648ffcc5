"""A WanGP look-alike MCP server, built on the official ``mcp`` SDK the way WanGP's ``shared/mcp_server.py`` builds
its own (``FastMCP("WanGP")``, streamable HTTP with ``json_response`` and ``stateless_http``; the tools, the job
snapshot and the gallery download route have WanGP's names and shapes). Generation is faked: a job walks through
its steps in a thread and writes a small file.

    WANGP_MCP_HOST=127.0.0.1 WANGP_MCP_PORT=8000 python wangp_mcp_app.py

Settings the fake understands: ``prompt`` (containing "fail" makes the task fail), ``num_inference_steps``
(default 4), ``step_seconds`` (default 0.05), ``model_type``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP

HOST = os.environ.get("WANGP_MCP_HOST", "127.0.0.1")
PORT = int(os.environ.get("WANGP_MCP_PORT", "8000"))
OUT = Path(os.environ.get("WANGP_MCP_OUT") or tempfile.mkdtemp(prefix="wangp-mcp-"))
MODELS = [
    {"model_type": "t2v_1.3B", "name": "Wan2.1 Text2video 1.3B", "family": "wan", "main_output": "video"},
    {"model_type": "i2v_14B", "name": "Wan2.1 Image2video 14B", "family": "wan", "main_output": "video"},
]

if not ipaddress.ip_address(HOST).is_loopback:
    raise SystemExit(f"refusing to bind {HOST}: tests stay on loopback")

mcp = FastMCP("WanGP", host=HOST, port=PORT, json_response=True, stateless_http=True)
_lock = threading.Lock()
_jobs: dict[str, dict[str, Any]] = {}
_gallery: dict[str, dict[str, Any]] = {}
_downloads: dict[str, str] = {}


def _event(job: dict[str, Any], kind: str, data: Any) -> None:
    with _lock:
        job["events"].append({"kind": kind, "timestamp": time.time(), "data": data})
        job["updated_at"] = time.time()


def _run(job: dict[str, Any], settings: dict[str, Any]) -> None:
    steps = int(settings.get("num_inference_steps", 4))
    delay = float(settings.get("step_seconds", 0.05))
    _event(job, "started", {"tasks": 1})
    for step in range(1, steps + 1):
        if job["cancel_requested"]:
            _finish(
                job,
                [],
                [
                    {
                        "message": "Generation aborted",
                        "task_index": 0,
                        "task_id": None,
                        "stage": "denoising",
                        "cancelled": True,
                    }
                ],
            )
            return
        time.sleep(delay)
        phase = "Denoising"
        _event(
            job,
            "progress",
            {
                "phase": phase,
                "status": f"{phase} | 0:0{step} / 0:0{steps}",
                "progress": int(step * 100 / steps),
                "current_step": step,
                "total_steps": steps,
                "raw_phase": phase,
                "unit": None,
            },
        )
    if "fail" in str(settings.get("prompt", "")):
        _finish(
            job,
            [],
            [
                {
                    "message": "Out of VRAM: try a smaller resolution",
                    "task_index": 0,
                    "task_id": None,
                    "stage": "generation",
                    "cancelled": False,
                }
            ],
        )
        return
    path = OUT / f"{job['job_id'][:8]}_{settings.get('model_type', 'video')}.mp4"
    path.write_bytes(hashlib.sha256(str(settings.get("prompt", "")).encode()).digest() * 512)
    gallery_id = "visual:" + hashlib.sha1(str(path).casefold().encode()).hexdigest()[:12]
    with _lock:
        _gallery[gallery_id] = {
            "gallery_id": gallery_id,
            "gallery": "visual",
            "index": len(_gallery),
            "path": str(path),
            "media_type": "video",
            "selected": True,
            "in_gallery": True,
            "settings": settings,
        }
    _finish(job, [str(path)], [])


def _finish(job: dict[str, Any], files: list[str], errors: list[dict[str, Any]]) -> None:
    result = {
        "success": not errors,
        "cancelled": bool(errors) and all(e["cancelled"] for e in errors),
        "generated_files": files,
        "errors": errors,
        "total_tasks": 1,
        "successful_tasks": 0 if errors else 1,
        "failed_tasks": 1 if errors else 0,
        "artifacts": [],
    }
    _event(job, "completed", result)
    with _lock:
        job["result"] = result
        job["done"] = True


def _snapshot(job: dict[str, Any], event_limit: int | None) -> dict[str, Any]:
    limit = 20 if event_limit is None else max(0, min(int(event_limit), 200))
    with _lock:
        result = dict(job["result"]) if job["result"] else None
        if result is not None:
            paths = {p.casefold() for p in result["generated_files"]}
            result["gallery_items"] = [g for g in _gallery.values() if g["path"].casefold() in paths]
        return {
            "job_id": job["job_id"],
            "done": job["done"],
            "cancel_requested": job["cancel_requested"],
            "webui_submission_ready": False,
            "webui_load_queue_token": "",
            "created_at": job["created_at"],
            "updated_at": job["updated_at"],
            "events": list(job["events"][-limit:]) if limit else [],
            "result": result,
        }


def _job(job_id: str) -> dict[str, Any]:
    with _lock:
        job = _jobs.get(str(job_id or "").strip())
    if job is None:
        raise KeyError(f"Unknown WanGP job_id: {job_id}")
    return job


@mcp.tool()
def wangp_list_models(family: str | None = None, limit: int = 10, offset: int = 0) -> list[dict[str, Any]]:
    """List WanGP models."""
    found = [m for m in MODELS if family is None or m["family"] == family]
    return found[offset : offset + limit]


@mcp.tool()
def wangp_generate(
    source: dict[str, Any] | list[dict[str, Any]],
    wait: bool = False,
    timeout_s: float | None = None,
    event_limit: int | None = None,
) -> dict[str, Any]:
    """Start a WanGP generation from a settings dict, task dict, or task list."""
    if not isinstance(source, (dict, list)):
        raise TypeError("source must be a settings dict, task dict, manifest dict, or task list")
    settings = source if isinstance(source, dict) else (source[0] if source else {})
    now = time.time()
    job = {
        "job_id": uuid.uuid4().hex,
        "done": False,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
        "events": [],
        "result": None,
    }
    with _lock:
        _jobs[job["job_id"]] = job
    worker = threading.Thread(target=_run, args=(job, settings.get("settings", settings)), daemon=True)
    worker.start()
    if wait:
        worker.join(timeout_s)
    return _snapshot(job, event_limit)


@mcp.tool()
def wangp_get_job(job_id: str, event_limit: int | None = None) -> dict[str, Any]:
    """Poll a WanGP generation job."""
    return _snapshot(_job(job_id), event_limit)


@mcp.tool()
def wangp_cancel_job(job_id: str, event_limit: int | None = None) -> dict[str, Any]:
    """Request cancellation of a WanGP generation job."""
    job = _job(job_id)
    with _lock:
        job["cancel_requested"] = True
    return _snapshot(job, event_limit)


@mcp.tool()
def wangp_create_gallery_download(gallery_id: str) -> dict[str, Any]:
    """Create a short-lived HTTP GET URL for downloading one Gallery item."""
    with _lock:
        record = _gallery.get(gallery_id.strip().lower())
    if record is None:
        raise KeyError(f"Unknown WanGP gallery_id: {gallery_id}")
    token = uuid.uuid4().hex
    with _lock:
        _downloads[token] = record["path"]
    path = Path(record["path"])
    return {
        "gallery_id": gallery_id,
        "download_url": f"/wangp_api/gallery/download/{token}",
        "filename": path.name,
        "media_type": record["media_type"],
        "size": path.stat().st_size,
        "expires_in_seconds": 300,
    }


@mcp.custom_route("/wangp_api/gallery/download/{token}", methods=["GET"], include_in_schema=False)
async def download(request):
    from starlette.responses import FileResponse, JSONResponse

    with _lock:
        path = _downloads.pop(request.path_params["token"], None)
    if path is None:
        return JSONResponse({"error": "Download expired or not found."}, status_code=404)
    return FileResponse(path, filename=Path(path).name, media_type="video/mp4")


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
