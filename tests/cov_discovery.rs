//! Probing and discovery against what can answer on a port: the simulator, ComfyUI-shaped servers with their
//! devices, a LiteLLM that tells its version only on readiness, an AudioLDM Gradio app, an MCP server that is not
//! WanGP (answering over SSE), and the hostile cases: a port that accepts and never answers, one that speaks
//! something other than HTTP, one that answers once and then goes away, and addresses that cannot be parsed. All
//! on 127.0.0.1; every server is scripted here or is our simulator.
#![allow(clippy::unwrap_used)]

mod scripted;

use director_link::discovery::{DiscoveryOptions, Finding, ServerKind};
use director_link::event::EventKind;
use director_link::sim::{SimConfig, Simulator};
use director_link::{ErrorCode, Hub, HubConfig};
use scripted::{answer, hold, json, Request, Server};
use serde_json::json;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn hub() -> (Hub, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        output_dir: out.path().to_path_buf(),
        ..HubConfig::default()
    })
    .unwrap();
    (hub, out)
}

fn system_stats(version: &str, devices: &[&str]) -> serde_json::Value {
    let devices: Vec<_> = devices.iter().map(|d| json!({"name": d, "type": "cuda"})).collect();
    json!({"system": {"os": "posix", "comfyui_version": version, "argv": ["main.py"]}, "devices": devices})
}

/// A ComfyUI-shaped server: `/system_stats` with these devices, 404 elsewhere.
fn comfy_like(devices: &'static [&'static str]) -> Server {
    Server::start(Arc::new(move |req: &Request, s: TcpStream| {
        if req.path == "/system_stats" {
            json(s, "200 OK", &system_stats("0.3.64", devices));
        } else {
            json(s, "404 Not Found", &json!({}));
        }
    }))
}

/// Accepts connections and never answers (each held until the client leaves, bounded).
fn silent() -> Server {
    Server::start(Arc::new(|_: &Request, mut s: TcpStream| {
        hold(&mut s, Duration::from_secs(20))
    }))
}

/// Answers the first connection with something that is not HTTP (an SSH banner), then closes; a probe that
/// meets it asks no more.
fn not_http() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut served = 0;
        while std::time::Instant::now() < end && served < 1 {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, t)
}

/// Answers the first request with a 404 and stops listening: the next probe of the port is refused.
fn answers_once() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            drop(listener);
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut &s, &mut buf);
            answer(s, "404 Not Found", "text/plain", &[("server", "once/1")], b"gone soon");
        }
    });
    (port, t)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn hub_probe_tells_comfyui_the_simulator_and_everything_else_apart() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let two = comfy_like(&["cuda:0 RTX 4090", "cuda:1 RTX 4090"]);
    let one = comfy_like(&["cpu"]);
    let none = comfy_like(&[]);
    let web = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(s, "200 OK", "text/html", &[], b"<html>a router</html>")
    }));
    let quiet = silent();
    let (garbled, garbled_thread) = not_http();
    let nothing = free_port();
    let urls: Vec<String> = vec![
        sim.url(),
        two.url.clone(),
        one.url.clone(),
        none.url.clone(),
        web.url.clone(),
        quiet.url.clone(),
        format!("127.0.0.1:{garbled}"),
        format!("127.0.0.1:{nothing}"),
        "http://127.0.0.1:8188/?q=1".into(),
    ];
    let (hub, _out) = hub();
    let found = hub.probe(&urls, Duration::from_millis(1500)).unwrap();
    assert_eq!(found.len(), urls.len(), "one result per address, in order");
    let summary = |i: usize| found[i].summary.clone();

    assert_eq!(
        (found[0].kind.as_str(), found[0].simulator),
        ("comfyui", true),
        "{:?}",
        found[0]
    );
    assert!(
        summary(0).starts_with("Director Link simulator (speaks ComfyUI "),
        "{}",
        summary(0)
    );
    assert_eq!(found[1].kind, "comfyui");
    assert_eq!(found[1].version.as_deref(), Some("0.3.64"));
    assert_eq!(found[1].devices.len(), 2);
    assert!(
        summary(1).starts_with("ComfyUI 0.3.64, 2 devices, answered in "),
        "{}",
        summary(1)
    );
    assert!(
        summary(2).starts_with("ComfyUI 0.3.64, 1 device (cpu)"),
        "{}",
        summary(2)
    );
    assert!(
        summary(3).starts_with("ComfyUI 0.3.64, no devices listed"),
        "{}",
        summary(3)
    );
    assert!(found[1].latency_ms.is_some());

    assert_eq!(found[4].kind, "unknown");
    assert!(
        summary(4).contains("HTTP 200 for /system_stats, not ComfyUI's"),
        "{}",
        summary(4)
    );
    assert_eq!(found[5].kind, "unknown");
    assert!(summary(5).starts_with("no answer within 1.5 s"), "{}", summary(5));
    assert_eq!(found[6].kind, "unknown");
    assert!(summary(6).contains("not HTTP as expected"), "{}", summary(6));
    assert_eq!((found[7].kind.as_str(), summary(7).as_str()), ("none", "nothing there"));
    assert_eq!(found[8].kind, "none");
    assert!(summary(8).contains("query or fragment"), "{}", summary(8));
    drop(quiet);
    garbled_thread.join().unwrap();
}

fn find(found: &[Finding], port: u16) -> &Finding {
    found
        .iter()
        .find(|f| f.port == port)
        .unwrap_or_else(|| panic!("no finding for port {port}: {found:?}"))
}

#[test]
fn discovery_names_each_server_and_says_why_for_the_rest() {
    // LiteLLM without the version header: the version comes from readiness.
    let litellm = Server::start(Arc::new(|req: &Request, s: TcpStream| match req.path.as_str() {
        "/health/liveliness" => json(s, "200 OK", &json!("I'm alive!")),
        "/health/readiness" => json(s, "200 OK", &json!({"status": "healthy", "litellm_version": "1.55.0"})),
        _ => json(s, "404 Not Found", &json!({"detail": "Not Found"})),
    }));
    let audioldm = Server::start(Arc::new(|req: &Request, s: TcpStream| {
        if req.path == "/config" {
            let config = json!({
                "version": "3.50.2", "title": "Gradio",
                "components": [{"id": 1, "type": "markdown", "props": {"value": "# AudioLDM: text to audio"}}],
                "dependencies": [{"api_name": "generate"}, {"api_name": false}],
            });
            json(s, "200 OK", &config);
        } else {
            json(s, "404 Not Found", &json!({"detail": "Not Found"}));
        }
    }));
    // An MCP server that is not WanGP, answering initialize over SSE (as FastMCP does by default).
    let mcp = Server::start(Arc::new(|req: &Request, s: TcpStream| {
        if req.method == "POST" && req.path == "/mcp/" {
            assert_eq!(req.json()["method"], "initialize");
            let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\
                        \"2025-03-26\",\"serverInfo\":{\"name\":\"notes-tools\",\"version\":\"0.9\"}}}\n\n";
            answer(s, "200 OK", "text/event-stream", &[], body.as_bytes());
        } else {
            answer(s, "404 Not Found", "text/plain", &[("server", "uvicorn")], b"Not Found");
        }
    }));
    let comfy = comfy_like(&["cuda:0 A6000", "cpu"]);
    let plain = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(s, "404 Not Found", "text/plain", &[("server", "scripted/1.0")], b"nope")
    }));
    let quiet = silent();
    let (garbled, garbled_thread) = not_http();
    let (once, once_thread) = answers_once();
    let nothing = free_port();

    let ports = [
        litellm.port,
        audioldm.port,
        mcp.port,
        comfy.port,
        plain.port,
        quiet.port,
        garbled,
        once,
        nothing,
    ];
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let (hub, _out) = hub();
    let options = DiscoveryOptions {
        timeout: Duration::from_secs(3),
        ..DiscoveryOptions::default()
    };
    let found = hub.discover(&hosts, &options).unwrap();
    assert_eq!(found.len(), hosts.len());

    let f = find(&found, litellm.port);
    assert_eq!(
        (f.kind, f.version.as_deref()),
        (ServerKind::Litellm, Some("1.55.0")),
        "{f:?}"
    );
    assert_eq!(f.summary, "LiteLLM proxy 1.55.0 (OpenAI-compatible)");
    assert_eq!(f.service_kind, Some("openai"));

    let f = find(&found, audioldm.port);
    assert_eq!(
        (f.kind, f.name.as_deref()),
        (ServerKind::Audioldm, Some("AudioLDM")),
        "{f:?}"
    );
    assert_eq!(f.summary, "AudioLDM (Gradio 3.50.2)");
    assert_eq!(f.protocol.as_deref(), Some("ws"));
    assert_eq!(f.service_kind, Some("gradio"), "added as a Gradio app");

    let f = find(&found, mcp.port);
    assert_eq!(f.kind, ServerKind::Unknown, "{f:?}");
    assert_eq!(f.name.as_deref(), Some("MCP server notes-tools"));
    assert_eq!(f.version.as_deref(), Some("0.9"));
    assert!(f.summary.contains("calling itself 'notes-tools'"), "{}", f.summary);

    let f = find(&found, comfy.port);
    assert_eq!(f.summary, "ComfyUI 0.3.64, 2 devices");
    assert_eq!(f.devices, ["cuda:0 A6000", "cpu"]);

    let f = find(&found, plain.port);
    assert_eq!(f.kind, ServerKind::Unknown);
    assert_eq!(
        f.summary,
        "something else answers here (HTTP 404 for /system_stats, server: scripted/1.0)"
    );
    assert_eq!(f.server_header.as_deref(), Some("scripted/1.0"));

    let f = find(&found, quiet.port);
    assert_eq!(f.kind, ServerKind::Unknown);
    assert!(
        f.summary.starts_with("accepts connections but gave no answer"),
        "{}",
        f.summary
    );

    let f = find(&found, garbled);
    assert_eq!(f.kind, ServerKind::Unknown);
    assert!(f.summary.contains("not HTTP as expected"), "{}", f.summary);

    let f = find(&found, once);
    assert_eq!(f.kind, ServerKind::Unknown, "{f:?}");
    assert!(
        f.summary.starts_with("stopped answering while probed ("),
        "{}",
        f.summary
    );

    let f = find(&found, nothing);
    assert_eq!((f.kind, f.summary.as_str()), (ServerKind::None, "nothing there"));

    // Everything but "nothing there" is announced as an event, with the kind to add it as.
    let announced: Vec<(String, String, Option<String>)> = hub
        .poll(1000)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ServiceDiscovered {
                url,
                kind,
                service_kind,
                ..
            } => Some((url, kind, service_kind)),
            _ => None,
        })
        .collect();
    assert_eq!(announced.len(), hosts.len() - 1, "{announced:?}");
    assert!(announced.contains(&(litellm.url.clone(), "litellm".into(), Some("openai".into()))));
    assert!(!announced.iter().any(|(u, _, _)| u.contains(&nothing.to_string())));
    drop(quiet);
    garbled_thread.join().unwrap();
    once_thread.join().unwrap();
}

#[test]
fn discovery_refuses_bad_hosts_and_a_closed_hub() {
    let (hub, _out) = hub();
    for bad in ["", "two words", "ftp://127.0.0.1", "http://"] {
        let err = hub
            .discover(&[bad.to_string()], &DiscoveryOptions::default())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidUrl, "{bad:?}: {}", err.message);
        assert!(err.message.contains("cannot probe"), "{}", err.message);
    }
    hub.close();
    let err = hub
        .discover(&["127.0.0.1".into()], &DiscoveryOptions::default())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    let err = hub
        .probe(&["127.0.0.1".into()], Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
}
