//! Finding the studio's servers: the known ports of each host are probed in parallel (bounded concurrency,
//! short connect timeouts) and classified by fingerprint, never by port (PROTOCOL-BACKENDS §7).
//!
//! None of these servers announces itself over mDNS today, so discovery is port probing plus fingerprints plus
//! the addresses a user lists; DNS-SD browsing (`mdns`) is there for studios that announce them, opt-in. A host with a port (`"10.0.0.5:7861"`, `"http://box:9000/"`) is probed at that
//! port only; a bare host at every known port.
pub mod fingerprint;
pub mod mdns;
pub mod probe;

pub use fingerprint::ServerKind;

use crate::error::{Error, ErrorCode, Result};
use serde::{Serialize, Serializer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which server a port is known for; only decides the order of the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    Comfyui,
    Litellm,
    Gradio,
    /// FastMCP's default port (WanGP's MCP mode).
    Mcp,
    /// A port the user gave.
    Any,
}

/// The ports probed on a bare host: ComfyUI 8188–8190, LiteLLM 4000–4001, Gradio 7860–7870 (Wan2GP 7860,
/// RVC 7865 and upward, AudioLDM the first free one from 7860), and 8000 for WanGP's MCP mode.
pub const KNOWN_PORTS: &[(u16, PortRole)] = &[
    (8188, PortRole::Comfyui),
    (8189, PortRole::Comfyui),
    (8190, PortRole::Comfyui),
    (4000, PortRole::Litellm),
    (4001, PortRole::Litellm),
    (7860, PortRole::Gradio),
    (7861, PortRole::Gradio),
    (7862, PortRole::Gradio),
    (7863, PortRole::Gradio),
    (7864, PortRole::Gradio),
    (7865, PortRole::Gradio),
    (7866, PortRole::Gradio),
    (7867, PortRole::Gradio),
    (7868, PortRole::Gradio),
    (7869, PortRole::Gradio),
    (7870, PortRole::Gradio),
    (8000, PortRole::Mcp),
];

/// What a scan without hosts probes: every known port of 127.0.0.1, plus WanGP's two ports on `[::1]`, because
/// WanGP binds `localhost`, which may be only the IPv6 loopback.
pub fn default_hosts() -> Vec<String> {
    ["127.0.0.1", "[::1]:7860", "[::1]:8000"].map(String::from).to_vec()
}

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The whole scan ends by then; a port that has not answered is reported as such.
    pub timeout: Duration,
    /// Per TCP connection attempt (loopback refusals are instant; a filtered LAN port is not).
    pub connect_timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Ports for bare hosts (defaults to `KNOWN_PORTS`).
    pub ports: Vec<(u16, PortRole)>,
    /// Opt-in: listen this long for mDNS/DNS-SD announcements first and probe what they name. Off by default
    /// (a multicast query leaves the machine).
    pub mdns: Option<Duration>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            timeout: Duration::from_millis(1500),
            connect_timeout: Duration::from_millis(300),
            concurrency: 32,
            ports: KNOWN_PORTS.to_vec(),
            mdns: None,
        }
    }
}

/// One address to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: url::Url,
    pub host: String,
    pub port: u16,
    pub role: PortRole,
}

fn serialize_kind<S: Serializer>(kind: &ServerKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// What answers at one address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `http://host:port/`
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `comfyui`, `litellm`, `wan2gp`, `rvc`, `audioldm`, `gradio`, `unknown` or `none`.
    #[serde(serialize_with = "serialize_kind")]
    pub kind: ServerKind,
    /// "ComfyUI", "LiteLLM", "WanGP", "Gradio app <title>", ...
    pub name: Option<String>,
    /// The server's version: ComfyUI's, the proxy's (when it tells), or Gradio's for Gradio apps.
    pub version: Option<String>,
    /// The app's own version for Gradio apps that show one (WanGP v12.60).
    pub app_version: Option<String>,
    /// Time to the answer that identified it.
    pub latency_ms: Option<f64>,
    /// Director Link's own ComfyUI simulator.
    pub simulator: bool,
    pub devices: Vec<String>,
    /// A Gradio app that answered 401 to `/config`.
    pub login_required: bool,
    /// Gradio: `ws` (3.x), `sse_v3`, ...
    pub protocol: Option<String>,
    /// Gradio 5+: `/gradio_api`.
    pub api_prefix: Option<String>,
    /// The `server` header of an unknown answer.
    pub server_header: Option<String>,
    /// The `Hub.add_service` kind that talks to it, when this build has one.
    pub service_kind: Option<&'static str>,
    /// What a person should read: "ComfyUI 0.3.64, 1 device (cpu)", "nothing there", ...
    pub summary: String,
}

impl Finding {
    fn new(target: &Target, kind: ServerKind, summary: String) -> Finding {
        Finding {
            url: target.base.to_string(),
            host: target.host.clone(),
            port: target.port,
            kind,
            name: None,
            version: None,
            app_version: None,
            latency_ms: None,
            simulator: false,
            devices: Vec::new(),
            login_required: false,
            protocol: None,
            api_prefix: None,
            server_header: None,
            service_kind: kind.service_kind(),
            summary,
        }
    }

    fn found(target: &Target, kind: ServerKind, name: &str, answer: &probe::AnswerMeta, summary: String) -> Finding {
        let mut f = Finding::new(target, kind, summary);
        f.name = Some(name.to_string());
        f.latency_ms = Some(answer.latency_ms);
        f.server_header = answer.server.clone();
        f
    }
}

fn bad_host(host: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::InvalidUrl,
        format!("cannot probe {host:?}: {why}. Write a host like 127.0.0.1, a host:port, or http://host:port/"),
    )
}

/// The addresses a scan of `hosts` probes, in order (host by host, ports in `ports` order).
pub fn targets(hosts: &[String], ports: &[(u16, PortRole)]) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for raw in hosts {
        let text = raw.trim();
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad_host(raw, "it is empty or contains spaces"));
        }
        // A bare IPv6 address ("::1") gets its brackets.
        let text = if text.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{text}]")
        } else {
            text.to_string()
        };
        let explicit_scheme = text.contains("://");
        let url = url::Url::parse(&if explicit_scheme {
            text.clone()
        } else {
            format!("http://{text}")
        })
        .map_err(|e| bad_host(raw, &e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_host(raw, "only http and https can be probed"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad_host(raw, "it has no host"))?
            .to_string();
        let given_port = url.port().or(if explicit_scheme {
            url.port_or_known_default()
        } else {
            None
        });
        let mut base = url.clone();
        let mut path = base.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        base.set_path(&path);
        base.set_query(None);
        base.set_fragment(None);
        match given_port {
            Some(port) => out.push(Target {
                base,
                host,
                port,
                role: PortRole::Any,
            }),
            None => {
                for &(port, role) in ports {
                    let mut b = base.clone();
                    b.set_port(Some(port))
                        .map_err(|_| bad_host(raw, "the port cannot be set"))?;
                    out.push(Target {
                        base: b,
                        host: host.clone(),
                        port,
                        role,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The HTTP client of a scan: short connect timeout, no proxy, no redirects, no idle connections kept.
pub fn client(options: &DiscoveryOptions) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .user_agent(concat!("director-link/", env!("CARGO_PKG_VERSION"), " (discovery)"))
        .build()
        .map_err(|e| Error::new(ErrorCode::Io, format!("cannot create the HTTP client: {e}")))
}

/// Probes every target of `hosts` concurrently (at most `options.concurrency` at once) and returns one finding
/// per address, in `targets` order, within about `options.timeout`.
pub async fn discover(hosts: &[String], options: &DiscoveryOptions) -> Result<Vec<Finding>> {
    let mut targets = targets(hosts, &options.ports)?;
    if let Some(wait) = options.mdns {
        match mdns::browse(wait).await {
            Ok(found) => {
                let announced: Vec<String> = found.iter().map(mdns::Announcement::address).collect();
                log::info!("mDNS: {} announcement(s): {announced:?}", announced.len());
                for t in self::targets(&announced, &options.ports)? {
                    if !targets.iter().any(|k| k.base == t.base) {
                        targets.push(t);
                    }
                }
            }
            Err(e) => log::warn!("mDNS browsing failed ({e}); probing the listed hosts only"),
        }
    }
    let client = client(options)?;
    let deadline = Instant::now() + options.timeout;
    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency.clamp(1, 256)));
    let tasks: Vec<_> = targets
        .iter()
        .cloned()
        .map(|target| {
            let (client, permits) = (client.clone(), permits.clone());
            tokio::spawn(async move {
                let waited = tokio::time::timeout_at(deadline.into(), permits.acquire_owned()).await;
                match waited {
                    Ok(Ok(_permit)) => {
                        let fallback = Finding::new(
                            &target,
                            ServerKind::Unknown,
                            "accepts connections but gave no answer in time (busy or stalled)".into(),
                        );
                        tokio::time::timeout_at(deadline.into(), probe::probe(client, target, deadline))
                            .await
                            .unwrap_or(fallback)
                    }
                    _ => Finding::new(&target, ServerKind::None, "not probed: the scan ran out of time".into()),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (task, target) in tasks.into_iter().zip(&targets) {
        out.push(
            task.await
                .unwrap_or_else(|_| Finding::new(target, ServerKind::None, "the probe did not finish".into())),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdns_is_off_unless_asked_for() {
        assert_eq!(DiscoveryOptions::default().mdns, None);
    }

    #[test]
    fn bare_hosts_get_every_known_port_and_explicit_ports_one() {
        let t = targets(
            &[
                "127.0.0.2".into(),
                "127.0.0.3:9000".into(),
                "::1".into(),
                "http://box/x".into(),
            ],
            KNOWN_PORTS,
        )
        .unwrap_or_default();
        assert_eq!(t.len(), KNOWN_PORTS.len() * 2 + 2);
        assert_eq!(t[0].base.as_str(), "http://127.0.0.2:8188/");
        let explicit = &t[KNOWN_PORTS.len()];
        assert_eq!((explicit.port, explicit.role), (9000, PortRole::Any));
        assert_eq!(t[KNOWN_PORTS.len() + 1].base.as_str(), "http://[::1]:8188/");
        let last = t.last().map(|t| (t.base.to_string(), t.port));
        assert_eq!(last, Some(("http://box/x/".to_string(), 80)));
        assert!(targets(&["".into()], KNOWN_PORTS).is_err());
        assert!(targets(&["ftp://x".into()], KNOWN_PORTS).is_err());
    }
}
