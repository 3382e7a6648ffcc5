"""Errors keep their cause: the Python exception has the stable code, the message, the details, the texts of the
underlying errors (`causes`) and that chain as `__cause__`; nothing in it carries a secret."""

from __future__ import annotations

import errno
import socket

import director_link
import pytest
from director_link.errors import ErrorCause


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cause_chain(exc: BaseException) -> list[BaseException]:
    chain, cur = [], exc.__cause__
    while cur is not None and len(chain) < 20:
        chain.append(cur)
        cur = cur.__cause__
    return chain


def test_a_refused_connection_is_connection_failed_caused_by_the_os_error(monkeypatch):
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    with director_link.Hub() as hub:
        name = hub.add_service("openai", f"http://127.0.0.1:{closed_port()}")
        with pytest.raises(director_link.ServiceError) as e:
            hub.models(name)
    err = e.value
    assert err.code == "connection_failed"
    assert "Connection refused" in err.causes[-1] and "os error" in err.causes[-1], err.causes
    chain = cause_chain(err)
    assert [str(c) for c in chain[:-1]] == err.causes[:-1], "one exception per cause, outermost first"
    assert all(isinstance(c, ErrorCause) for c in chain[:-1])
    assert isinstance(chain[-1], ConnectionRefusedError), chain
    assert chain[-1].errno == errno.ECONNREFUSED
    assert err.__suppress_context__, "the traceback shows the cause, not a context"


def test_a_failed_job_keeps_its_causes_in_the_event_and_the_exception(monkeypatch):
    """A job that fails on a refused connection: its JobFailed event and the exception `wait()` raises carry the
    same `causes` as an exception of a direct call, ending with the OS error."""
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    with director_link.Hub() as hub:
        name = hub.add_service("openai", f"http://127.0.0.1:{closed_port()}")
        job = hub.chat(name, "hello", model="m", max_retries=0)
        with pytest.raises(director_link.JobFailed) as e:
            job.wait(timeout=30)
        events = [ev for ev in hub.poll() if ev.job == job.id and ev.type == "job_failed"]
    assert e.value.code == "connection_failed"
    assert e.value.causes and "Connection refused" in e.value.causes[-1], e.value.causes
    (failed,) = events
    assert failed.code == "connection_failed"
    assert failed.causes == e.value.causes
    assert failed.error["causes"] == failed.causes


def test_an_error_without_a_cause_has_none():
    with director_link.Hub() as hub:
        with pytest.raises(director_link.UnknownServiceError) as e:
            hub.models("nobody")
    assert e.value.code == "unknown_service"
    assert e.value.causes == [] and e.value.__cause__ is None


def test_a_refused_key_says_the_status_and_the_servers_error_type_and_no_secret(litellm_server, monkeypatch):
    secret = "sk-errors-test-secret-987"
    monkeypatch.delenv("DIRECTOR_LINK_OPENAI_KEY", raising=False)
    with director_link.Hub() as hub:
        name = hub.add_service("openai", litellm_server.url, token=secret)
        with pytest.raises(director_link.ServiceError) as e:
            hub.models(name)
    err = e.value
    assert err.code == "auth_failed"
    assert err.status in (400, 401), err.details
    assert err.details["status"] == err.status
    everything = " ".join([str(err), repr(err.details), *err.causes, *(str(c) for c in cause_chain(err))])
    assert secret not in everything


def test_a_workflow_error_keeps_its_reason_and_candidates():
    prompt = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 1}},
        "4": {"class_type": "KSampler", "inputs": {"seed": 2}},
    }
    wf = director_link.Workflow.load(prompt)
    with pytest.raises(director_link.WorkflowError) as e:
        wf.set("KSampler.seed", 5)
    assert e.value.code == "invalid_parameter"
    assert e.value.reason == "ambiguous_selector"
    assert sorted(e.value.candidates) == ["3.seed", "4.seed"]
