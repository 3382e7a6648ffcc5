"""The OpenAI-compatible client against a real LiteLLM 1.106.2 proxy (mock models from the shared fixtures'
config.yaml) and, for what its mocks cannot produce, a scripted server on 127.0.0.1."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import director_link
import pytest

from .backends.openai_mock import TEXT_PIECES, MockOpenAI
from .backends.servers import LITELLM_KEY
from .conftest import ROOT

MOCK_GPT = "Shot 1: wide establishing shot of a foggy harbour at dawn. Shot 2: close-up on the lighthouse keeper."
MESSAGES = [
    {"role": "system", "content": "You are a film storyboard assistant."},
    {"role": "user", "content": "write a shot list"},
]


def job_events(hub, job_id: str, timeout: float = 30.0) -> list:
    """Every event of one job up to its terminal event (bounded in time)."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.wait_for_events(0.2)
        for ev in hub.poll(1000):
            if ev.job == job_id:
                got.append(ev)
                if ev.is_terminal:
                    return got
    pytest.fail(f"job {job_id} did not end within {timeout} s: {[e.type for e in got]}")


@pytest.fixture
def llm(litellm_server, monkeypatch):
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    with director_link.Hub() as hub:
        name = hub.add_service("litellm", litellm_server.url, token=LITELLM_KEY)
        yield hub, name


@pytest.fixture
def mock():
    server = MockOpenAI()
    yield server
    server.close()


def test_models_are_listed(llm):
    hub, name = llm
    ids = [m["id"] for m in hub.models(name)]
    assert ids[:2] == ["mock-gpt", "mock-storyboard"] and "mock-broken" in ids


def test_streamed_chat_delivers_deltas_in_order_then_the_full_text(llm):
    hub, name = llm
    job = hub.chat(name, MESSAGES, model="mock-gpt")
    events = job_events(hub, job.id)
    deltas = [e for e in events if e.type == "text_delta"]
    assert len(deltas) > 5, "the answer came in pieces"
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert "".join(d.text for d in deltas) == MOCK_GPT
    assert [e.type for e in events][0] == "job_started" and events[-1].type == "job_completed"
    done = events[-1]
    assert done.ui["text"] == MOCK_GPT and done.ui["model"] == "mock-gpt" and done.ui["finish_reason"] == "stop"
    assert done.ui["usage"]["completion_tokens"] > 0
    assert job.wait(timeout=5)["ui"]["text"] == MOCK_GPT
    assert job.state == "completed"


def test_whole_answer_without_streaming_and_default_model(llm):
    hub, name = llm
    job = hub.chat(name, "write a shot list", stream=False)
    info = job.wait(timeout=30)
    assert info["ui"]["text"] == MOCK_GPT, "model=None takes the first listed model (mock-gpt)"
    assert info["ui"]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("model", "code", "words"),
    [
        ("mock-ratelimited", "rate_limited", "mock rate limit error"),
        ("mock-broken", "server_error", "mock internal server error"),
        ("mock-midstream-error", "server_error", "mock error raised mid-stream"),
        ("no-such-model", "bad_request", "Invalid model name"),
    ],
)
def test_failing_models_give_typed_errors(llm, model, code, words):
    hub, name = llm
    job = hub.chat(name, MESSAGES, model=model, max_retries=1)
    failed = job_events(hub, job.id)[-1]
    assert failed.type == "job_failed" and failed.code == code
    assert words in failed.message
    with pytest.raises(director_link.JobFailed) as e:
        job.wait(timeout=5)
    assert e.value.code == code
    if code in ("rate_limited", "server_error"):
        assert "after 2 attempts" in failed.message, "retryable failures were retried once"


def test_missing_and_wrong_keys_are_auth_failed(litellm_server, monkeypatch):
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    with director_link.Hub() as hub:
        none = hub.add_service("openai", litellm_server.url, name="no-key")
        wrong = hub.add_service("openai", litellm_server.url, name="wrong-key", token="sk-wrong-key-123")
        for name in (none, wrong):
            with pytest.raises(director_link.ServiceError) as e:
                hub.models(name)
            assert e.value.code == "auth_failed"
        job = hub.chat(none, MESSAGES, model="mock-gpt")
        failed = job_events(hub, job.id)[-1]
        assert failed.code == "auth_failed"


def test_key_from_the_environment(litellm_server, monkeypatch):
    monkeypatch.setenv("DIRECTOR_LINK_OPENAI_KEY", LITELLM_KEY)
    with director_link.Hub() as hub:
        name = hub.add_service("openai", litellm_server.url)
        assert "mock-gpt" in [m["id"] for m in hub.models(name)]


def test_the_key_never_appears_in_logs_errors_or_snapshots(litellm_server, mock, monkeypatch, caplog):
    secret = "sk-very-secret-0123456789"
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    texts = []
    with director_link.Hub() as hub:
        wrong = hub.add_service("openai", litellm_server.url, name="wrong", token=secret)
        echo = hub.add_service("openai", mock.url, name="echo", token=secret)
        with pytest.raises(director_link.ServiceError) as e:
            hub.models(wrong)
        texts.append(str(e.value))
        for name, model in ((wrong, "mock-gpt"), (echo, "echo-key"), (echo, "midstream")):
            job = hub.chat(name, MESSAGES, model=model, max_retries=0)
            for ev in job_events(hub, job.id):
                texts.append(repr(ev.to_dict()))
        texts.append(repr(hub.snapshot()))
    sent = {k.lower(): v for k, v in mock.chat_requests("echo-key")[0]["headers"].items()}
    assert sent["authorization"] == f"Bearer {secret}", "the key was sent"
    assert caplog.records, "logs were captured"
    assert secret not in caplog.text
    assert all(secret not in t for t in texts)
    assert any("***" in t for t in texts), "a server that echoes the key has it scrubbed"


def test_error_frame_in_the_middle_of_a_stream_fails_the_job_with_the_servers_message(mock):
    with director_link.Hub() as hub:
        name = hub.add_service("openai", mock.url)
        job = hub.chat(name, MESSAGES, model="midstream")
        events = job_events(hub, job.id)
    assert [e.text for e in events if e.type == "text_delta"] == ["Shot 1", ": wide"]
    failed = events[-1]
    assert failed.type == "job_failed" and failed.code == "server_error"
    assert "upstream went away mid-answer" in failed.message
    assert failed.error["exception_type"] == "internal_server_error"


def test_retry_after_is_honoured_and_retries_are_bounded(mock):
    with director_link.Hub() as hub:
        name = hub.add_service("openai", mock.url)
        job = hub.chat(name, MESSAGES, model="retry-once", max_retries=2)
        assert job.wait(timeout=30)["ui"]["text"] == "".join(TEXT_PIECES)
        first, second = mock.chat_requests("retry-once")
        assert second["time"] - first["time"] >= 0.9, "waited the server's Retry-After: 1"
        job = hub.chat(name, MESSAGES, model="always-429", max_retries=3)
        with pytest.raises(director_link.JobFailed) as e:
            job.wait(timeout=30)
        assert e.value.code == "rate_limited"
        assert len(mock.chat_requests("always-429")) == 4, "1 try + 3 retries, then it gives up"


def test_cancel_stops_a_streaming_answer(mock):
    with director_link.Hub() as hub:
        name = hub.add_service("openai", mock.url)
        job = hub.chat(name, MESSAGES, model="slow")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.type == "text_delta" for e in hub.poll(100) if e.job == job.id):
            hub.wait_for_events(0.1)
        job.cancel()
        with pytest.raises(director_link.JobCancelled):
            job.wait(timeout=10)
        assert job.state == "cancelled"


def test_service_health_uses_liveliness_only(mock):
    with director_link.Hub(heartbeat=0.2) as hub:
        name = hub.add_service("openai", mock.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and hub.snapshot()["services"][0]["state"] != "connected":
            time.sleep(0.05)
        assert hub.snapshot()["services"][0]["state"] == "connected"
        time.sleep(0.5)
        paths = {r["path"] for r in mock.requests}
        assert "/health/liveliness" in paths and "/health" not in paths
        with pytest.raises(director_link.ServiceError) as e:
            hub.submit(name, {"1": {"class_type": "EmptyImage", "inputs": {}}})
        assert e.value.code == "wrong_service"


def test_chat_command_streams_to_stdout(litellm_server):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "director_link.cli", "chat", "--server", litellm_server.url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    ok = run("--key", LITELLM_KEY, "--model", "mock-gpt", "write a shot list")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == MOCK_GPT
    broken = run("--key", LITELLM_KEY, "--model", "mock-broken", "hi")
    assert broken.returncode == 4 and "server_error" in broken.stderr
