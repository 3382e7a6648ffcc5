"""Copy error details never carries a secret."""

from __future__ import annotations

import json

from movie_director import redact as rd
from movie_director import state as st

SECRET = "sk-test-SECRET-123"


def test_known_secret_replaced_everywhere():
    out = rd.redact(f"token {SECRET} and again {SECRET}!", [SECRET])
    assert SECRET not in out and out.count(rd.REDACTED) == 2


def test_credential_shapes():
    cases = [
        "Authorization: Bearer abcdef123456",
        "authorization=Basic dXNlcjpwYXNz",
        '{"token": "abc123xyz"}',
        "http://127.0.0.1:8188/prompt?token=abc123xyz&x=1",
        "api_key=abc123xyz",
        "https://user:hunter22@example.com/x",
        "key sk-abcdefgh12345678 here",
        "hf_abcdefghijklmnop",
        "ghp_abcdefghijklmnop1234",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijk",
    ]
    for text in cases:
        out = rd.redact(text)
        assert rd.REDACTED in out, text
        for secret in ("abcdef123456", "dXNlcjpwYXNz", "abc123xyz", "hunter22", "abcdefgh12345678", "abcdefghijk"):
            assert secret not in out, (text, out)
    assert rd.redact("https://user:hunter22@example.com/x") == f"https://user:{rd.REDACTED}@example.com/x"
    assert "x=1" in rd.redact("http://h/p?token=abc&x=1")


def test_ordinary_text_is_untouched():
    text = "KSampler #3 failed: CUDA out of memory (tried to allocate 2.0 GiB); tokenizer ok"
    assert rd.redact(text) == text


def test_redact_value_by_key_and_inside_strings():
    value = {"headers": {"Authorization": "xyz"}, "token": "abc", "items": [f"url?token={SECRET}"], "n": 3}
    out = rd.redact_value(value, [SECRET])
    assert out["headers"]["Authorization"] == rd.REDACTED and out["token"] == rd.REDACTED and out["n"] == 3
    assert SECRET not in json.dumps(out)


def test_error_report_has_everything_but_the_secret():
    job = st.JobView(id="job-1", service="farm", tag="shot_010", state="failed", node_id="3", node_type="KSampler")
    svc = st.ServiceView(
        name="farm",
        url=f"http://me:{SECRET}@127.0.0.1:8188/",
        state="connected",
        version="0.3.64",
        recent_errors=[f"401 for Bearer {SECRET}"],
    )
    entry = st.ErrorEntry(
        1.0,
        "job-1",
        "execution_failed",
        f"boom while using {SECRET}",
        {"traceback": ["Traceback:\n", '  File "x.py"\n', "RuntimeError: boom\n"], "request": {"token": SECRET}},
    )
    text = rd.error_report(entry, job=job, service=svc, versions={"director_link": "0.1.0"}, secrets=[SECRET])
    assert SECRET not in text
    for needle in ("execution_failed", "job-1", "KSampler #3", "RuntimeError: boom", "0.3.64", "director_link 0.1.0"):
        assert needle in text, needle
