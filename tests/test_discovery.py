"""Discovery against real servers on loopback: our ComfyUI simulator, the WanGP look-alike on real Gradio 5.29.0,
a real LiteLLM proxy and an unrelated HTTP server. 127.0.0.2 and 127.0.0.3 stand in for other hosts. Scan times
are printed (run with -s to see them), never asserted."""

from __future__ import annotations

import socket
import time

import director_link
import pytest
from director_link.testing import ComfySimulator

from .backends.servers import HERE, free_port, pick_port, start_gradio, start_wangp_mcp, venv_python

KNOWN_PORT_COUNT = 17


def by_url(results: list[dict]) -> dict[str, dict]:
    return {r["url"]: r for r in results}


def answering(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def scan(hub, hosts, timeout=2.0):
    started = time.monotonic()
    results = hub.discover(hosts, timeout)
    return results, time.monotonic() - started


def test_nothing_listening_is_reported_as_nothing_there_quickly():
    """Quickly = on the refusal, not by waiting out the scan's timeout: with a long timeout, a closed port must be
    "nothing there" (what a refused connection gives), never "gave no answer within 30.0 s" (what waiting gives)."""
    hosts = ["127.0.0.4", "127.0.0.5"]
    with director_link.Hub() as hub:
        results, took = scan(hub, hosts, timeout=30.0)
    print(f"\nscan with nothing listening: {len(results)} addresses in {took * 1000:.0f} ms")
    assert len(results) == KNOWN_PORT_COUNT * len(hosts)
    # A wildcard (0.0.0.0) listener on this machine would answer on every alias: leave those ports out.
    quiet = [r for r in results if not answering(r["host"], r["port"])]
    assert quiet and all(r["kind"] == "none" and r["summary"] == "nothing there" for r in quiet), quiet
    assert not [r for r in quiet if r["latency_ms"] is not None], "no answer was waited for"
    assert {r["port"] for r in results} >= {8188, 8189, 8190, 4000, 4001, 7860, 7865, 7870}


def test_simulator_and_an_unrelated_server(unrelated_server):
    with ComfySimulator() as sim, director_link.Hub() as hub:
        results, took = scan(hub, [f"127.0.0.1:{sim.port}", unrelated_server.address])
    print(f"\nscan (simulator + http.server): {took * 1000:.0f} ms")
    found = by_url(results)
    comfy = found[f"http://127.0.0.1:{sim.port}/"]
    assert comfy["kind"] == "comfyui" and comfy["simulator"] is True and comfy["version"] == "0.3.64"
    assert comfy["service_kind"] == "comfyui" and comfy["latency_ms"] > 0
    assert "simulator" in comfy["summary"]
    other = found[unrelated_server.url]
    assert other["kind"] == "unknown" and other["service_kind"] is None
    assert other["summary"].startswith("something else answers here")
    assert "SimpleHTTP" in (other["server_header"] or "")


def test_wangp_lookalike_on_gradio_5(wangp_server):
    with director_link.Hub() as hub:
        results, took = scan(hub, [wangp_server.address])
    print(f"\nscan of {wangp_server.address}: {took * 1000:.0f} ms")
    r = by_url(results)[wangp_server.url]
    assert r["kind"] == "wan2gp" and r["name"] == "WanGP"
    assert r["version"] == "5.29.0" and r["app_version"] == "0.0"
    assert r["protocol"] == "sse_v3" and r["api_prefix"] == "/gradio_api"
    assert r["summary"] == "WanGP v0.0 (Gradio 5.29.0)"


def test_litellm_proxy(litellm_server):
    with director_link.Hub() as hub:
        results, _ = scan(hub, [litellm_server.address])
    r = by_url(results)[litellm_server.url]
    assert r["kind"] == "litellm" and r["service_kind"] == "openai"
    assert r["summary"].startswith("LiteLLM proxy")


def test_generic_and_login_protected_gradio_apps(backend_tmp):
    python = venv_python("DIRECTOR_LINK_GRADIO5_PYTHON")
    plain = start_gradio(
        python,
        "127.0.0.2",
        free_port("127.0.0.2"),
        backend_tmp,
        HERE / "plain_gradio_app.py",
        GRADIO_APP_TITLE="Storyboard",
    )
    locked = start_gradio(
        python,
        "127.0.0.2",
        free_port("127.0.0.2"),
        backend_tmp,
        GRADIO_APP_TITLE="Locked",
        GRADIO_APP_AUTH="director:secret",
    )
    try:
        with director_link.Hub() as hub:
            results, _ = scan(hub, [f"127.0.0.2:{plain.port}", f"127.0.0.2:{locked.port}"])
    finally:
        plain.stop()
        locked.stop()
    found = by_url(results)
    generic = found[plain.url]
    assert generic["kind"] == "gradio" and generic["name"] == "Gradio app Storyboard"
    assert generic["summary"] == "Gradio app 'Storyboard' (Gradio 5.29.0)" and not generic["login_required"]
    login = found[locked.url]
    # The login hides the title (and so the WanGP headline): all discovery can say is "a Gradio app".
    assert login["kind"] == "gradio" and login["login_required"] is True
    assert "login" in login["summary"]


def test_one_scan_finds_all_four(wangp_server, litellm_server, unrelated_server):
    with ComfySimulator() as sim, director_link.Hub() as hub:
        hosts = ["127.0.0.1", f"127.0.0.1:{sim.port}", "127.0.0.2", "127.0.0.3"]
        for extra in (wangp_server, litellm_server, unrelated_server):
            if not extra.on_known_port:
                hosts.append(extra.address)
        results, took = scan(hub, hosts)
        kinds = {r["url"]: r["kind"] for r in results}
    print(f"\nscan with all four running: {len(results)} addresses in {took * 1000:.0f} ms")
    assert kinds[f"http://127.0.0.1:{sim.port}/"] == "comfyui"
    assert kinds[wangp_server.url] == "wan2gp"
    assert kinds[litellm_server.url] == "litellm"
    assert kinds[unrelated_server.url] == "unknown"


def test_bad_hosts_are_refused_before_any_probe():
    with director_link.Hub() as hub:
        with pytest.raises(director_link.InvalidUrlError) as e:
            hub.discover(["bad host"])
        assert e.value.code == "invalid_url"
        with pytest.raises(director_link.InvalidUrlError):
            hub.discover(["ftp://127.0.0.1"])


def test_gradio_3_apps_rvc_and_wangp(backend_tmp):
    """The 3.x family (RVC WebUI, AudioLDM): no `protocol` in /config, so the WebSocket queue."""
    python = venv_python("DIRECTOR_LINK_GRADIO3_PYTHON")
    rvc = start_gradio(
        python, "127.0.0.3", 7865, backend_tmp, HERE / "plain_gradio_app.py", GRADIO_APP_TITLE="RVC WebUI"
    )
    wangp = start_gradio(python, "127.0.0.2", free_port("127.0.0.2"), backend_tmp)
    try:
        with director_link.Hub() as hub:
            results, took = scan(hub, [rvc.address, f"127.0.0.2:{wangp.port}"])
    finally:
        rvc.stop()
        wangp.stop()
    print(f"\nscan of two Gradio 3.50.2 apps: {took * 1000:.0f} ms")
    found = by_url(results)
    voice = found[rvc.url]
    assert voice["kind"] == "rvc" and voice["name"] == "RVC WebUI" and voice["version"] == "3.50.2"
    assert voice["protocol"] == "ws" and voice["api_prefix"] is None
    video = found[wangp.url]
    assert video["kind"] == "wan2gp" and video["summary"] == "WanGP v0.0 (Gradio 3.50.2)"


def test_wangp_mcp_mode_on_ipv6_loopback_is_found_and_announced(backend_tmp):
    """WanGP's MCP mode (FastMCP, port 8000) answers the `initialize` POST with serverInfo "WanGP". WanGP binds
    `localhost`, so the default scan also looks on [::1]."""
    python = venv_python("DIRECTOR_LINK_MCP_PYTHON")
    port, on_default = pick_port("::1", 8000)
    mcp = start_wangp_mcp(python, "::1", port, backend_tmp, backend_tmp, known=on_default)
    try:
        with director_link.Hub() as hub:
            results, took = scan(hub, None if on_default else [mcp.address])
            announced = [e for e in hub.poll() if e.type == "service_discovered"]
    finally:
        mcp.stop()
    print(f"\nscan finding WanGP MCP on [::1] ({'default hosts' if on_default else 'explicit'}): {took * 1000:.0f} ms")
    found = by_url(results)[mcp.url]
    assert found["kind"] == "wangp_mcp" and found["service_kind"] == "wangp_mcp", found
    assert found["version"] == "1.10.1" and "MCP server mode" in found["summary"]
    assert [e.url for e in announced if e.kind == "wangp_mcp"] == [mcp.url]
    assert all(e.kind != "none" for e in announced)
    assert next(e for e in announced if e.url == mcp.url).service_kind == "wangp_mcp"
