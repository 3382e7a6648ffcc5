"""The studio server's HTTP API given bad or unusual input, over real sockets on 127.0.0.1 with jobs on the ComfyUI
simulator: which service runs a job when none or several exist, params as pairs, a Gradio call aimed at a ComfyUI,
unknown endpoints and ids, a preview that does not exist, a producer posting progress for a job the hub runs, a
CORS preflight, and cancelling a job that already ended. Every refusal is a JSON error with a stable code."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import director_link
import pytest
from director_link.testing import ComfySimulator, api_workflow

TIMEOUT = 60  # a bound on a hang, not a timing claim


def http(method: str, url: str, body=None, headers: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            raw, status, h = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, h = e.read(), e.code, e.headers
    ctype = h.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in ctype and raw else raw), h


@pytest.fixture
def sim():
    with ComfySimulator(time_scale=0) as s:
        yield s


def serve(tmp_path, **settings):
    settings.setdefault("port", 0)
    settings.setdefault("output_dir", str(tmp_path / "out"))
    return director_link.serve(**settings)


def test_a_server_without_services_says_how_to_add_one(tmp_path):
    with serve(tmp_path) as server:
        status, answer, _ = http("POST", server.url + "/api/jobs", {"workflow": "invert"})
        assert status == 409 and answer["error"]["code"] == "unknown_service", answer
        assert "--service or --simulator" in answer["error"]["message"]


def test_with_several_services_the_job_must_name_one(tmp_path, sim):
    with serve(tmp_path, services=[f"comfyui={sim.url}", "openai=127.0.0.1:9"]) as server:
        status, answer, _ = http("POST", server.url + "/api/jobs", {"workflow": "invert"})
        assert status == 400 and answer["error"]["code"] == "invalid_request", answer
        assert "say which service runs the job: one of" in answer["error"]["message"]


def test_params_as_pairs_are_applied_and_malformed_params_are_refused(tmp_path, sim):
    with serve(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        url = server.url + "/api/jobs"
        workflow = api_workflow("invert")
        status, answer, _ = http("POST", url, {"workflow": workflow, "params": [["1.width", 24]]})
        assert status == 201, answer
        for params in ([["1.width"]], [[5, 24]], 7, "1.width=24"):
            status, answer, _ = http("POST", url, {"workflow": workflow, "params": params})
            assert (status, answer["error"]["code"]) == (400, "invalid_request"), (params, answer)
            assert "params must be an object" in answer["error"]["message"]
        status, answer, _ = http("POST", url, {"workflow": workflow, "call": {"api_name": "/x"}})
        assert status == 400 and "either workflow" in answer["error"]["message"], answer


def test_a_gradio_call_to_a_comfyui_is_the_wrong_service(tmp_path, sim):
    with serve(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        body = {"call": {"api_name": "/generate", "inputs": ["a lighthouse"]}}
        status, answer, _ = http("POST", server.url + "/api/jobs", body)
        assert (status, answer["error"]["code"]) == (422, "wrong_service"), answer


def test_unknown_endpoints_ids_and_previews_get_json_errors(tmp_path, sim):
    with serve(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        base = server.url
        status, answer, _ = http("GET", base + "/api/nothing-here")
        assert (status, answer["error"]["code"]) == (404, "not_found"), answer
        assert "GET /api/health" in answer["error"]["message"]
        status, answer, _ = http("GET", base + "/api/jobs/not%20an%20id!")
        assert (status, answer["error"]["code"]) == (400, "invalid_job_id"), answer
        status, answer, _ = http("GET", base + "/api/jobs/no-such-job/preview")
        assert (status, answer["error"]["code"]) == (404, "no_preview"), answer
        status, answer, _ = http("DELETE", base + "/api/jobs/no-such-job")
        assert (status, answer["error"]["code"]) == (404, "unknown_job"), answer


def test_a_finished_job_is_not_cancelled_again_and_the_hubs_jobs_take_no_outside_progress(tmp_path, sim):
    with serve(tmp_path, services=[f"comfyui={sim.url}"]) as server:
        status, answer, _ = http("POST", server.url + "/api/jobs", {"workflow": "invert", "tag": "  "})
        assert status == 201, answer
        job = answer["job_id"]
        status, answer, _ = http(
            "POST", server.url + f"/api/jobs/{job}/progress", {"status": "processing", "progress": 50}
        )
        assert (status, answer["error"]["code"]) == (409, "not_external"), answer
        for _ in range(1200):  # bounded; the simulator runs with time_scale=0
            status, view, _ = http("GET", server.url + f"/api/jobs/{job}")
            if view["state"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert view["state"] == "completed", view
        status, answer, _ = http("DELETE", server.url + f"/api/jobs/{job}")
        assert (status, answer) == (200, {"job_id": job, "state": "completed"}), answer


def test_a_cors_preflight_from_an_allowed_origin_is_answered(tmp_path):
    origin = "http://127.0.0.1:5173"
    with serve(tmp_path, allow_origins=[origin]) as server:
        status, _, headers = http(
            "OPTIONS",
            server.url + "/api/jobs",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "authorization" in headers["Access-Control-Allow-Headers"]
        status, answer, _ = http("OPTIONS", server.url + "/api/jobs", headers={"Origin": "http://evil.example"})
        assert (status, answer["error"]["code"]) == (403, "origin_not_allowed"), answer
