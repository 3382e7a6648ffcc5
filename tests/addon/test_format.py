"""Human strings the panels show."""

from __future__ import annotations

from movie_director import format as fmt


def test_eta():
    assert fmt.eta(None) == "" and fmt.eta(float("nan")) == "" and fmt.eta(-1) == ""
    assert fmt.eta(0.2) == "~1 s"
    assert fmt.eta(8.4) == "~8 s"
    assert fmt.eta(65) == "~1 min 05 s"
    assert fmt.eta(3 * 3600 + 120) == "~3 h 02 min"


def test_size_and_duration():
    assert fmt.size(512) == "512 B"
    assert fmt.size(1536) == "1.5 KB"
    assert fmt.size(12.3 * 1024**2) == "12.3 MB"
    assert fmt.size(5 * 1024**4) == "5120.0 GB"
    assert fmt.size(None) == ""
    assert fmt.duration(0.42) == "0.4 s" and fmt.duration(42) == "42 s" and fmt.duration(184) == "3 min 04 s"


def test_service_styles_cover_every_native_state():
    for state in ("disconnected", "connecting", "connected", "reconnecting", "circuit_open", "polling", "closed"):
        style = fmt.service_style(state)
        assert style is not fmt.UNKNOWN_STYLE and style.label and style.icon
    assert fmt.service_style("circuit_open").alert
    assert "keeps dropping" in fmt.service_style("circuit_open").label
    assert fmt.service_style("connected", blocked="offline").alert
    assert fmt.service_style("wat") is fmt.UNKNOWN_STYLE


def test_job_styles_cover_every_native_state():
    for state in ("pending", "submitting", "queued", "running", "completed", "failed", "cancelled", "unknown"):
        assert fmt.job_style(state) is not fmt.UNKNOWN_STYLE or state == "unknown"


def test_progress_and_service_lines():
    line = fmt.progress_line("running", 45.2, "3", "KSampler", 12)
    assert line == "Running · KSampler (#3) · 45% · ~12 s"
    assert fmt.progress_line("queued", 0, queue_position=2) == "Queued · 2 ahead"
    assert fmt.progress_line("queued", 0, queue_position=0) == "Queued · next"
    assert fmt.progress_line("pending", 0, pending_connection=True) == "Waiting · waiting for the server"
    assert fmt.progress_line("completed", 100) == "Done"
    assert (
        fmt.service_line("local", "reconnecting", "connection refused") == "local: Reconnecting… (connection refused)"
    )
    assert fmt.service_line("farm", "disconnected", blocked="online access is off") == (
        "farm: Not allowed (online access is off)"
    )


def test_small_helpers():
    assert fmt.latency(None) == "–" and fmt.latency(1.234) == "1.2 ms" and fmt.latency(42.4) == "42 ms"
    assert fmt.percent(100.0) == "100%" and fmt.percent(99.5) == "99.5%"
    assert fmt.ago(100, 102) == "just now" and fmt.ago(100, 400) == "5 min ago" and fmt.ago(0, 5) == ""
    assert fmt.clip("a\n  b", 10) == "a b" and fmt.clip("x" * 20, 10) == "x" * 9 + "…"
    assert fmt.node_label(None, None) == "" and fmt.node_label("3", None) == "node #3"
