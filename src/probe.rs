//! One-shot checks of an address: is a ComfyUI there, which version, how fast does it answer.
use crate::comfy::http::ComfyHttp;
use crate::endpoint::Endpoint;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub url: String,
    /// `comfyui`, `unknown` (something else answers) or `none` (nothing listens).
    pub kind: String,
    pub version: Option<String>,
    pub devices: Vec<String>,
    pub latency_ms: Option<f64>,
    /// True for Director Link's own simulator.
    pub simulator: bool,
    /// What a person should read: "ComfyUI 0.3.64, 1 device (cpu)", "nothing there", ...
    pub summary: String,
}

impl ProbeResult {
    fn not_comfyui(url: String, kind: &str, latency_ms: Option<f64>, summary: String) -> ProbeResult {
        ProbeResult {
            url,
            kind: kind.into(),
            version: None,
            devices: Vec::new(),
            latency_ms,
            simulator: false,
            summary,
        }
    }
}

pub async fn probe_comfyui(client: reqwest::Client, url: &str, timeout: Duration) -> ProbeResult {
    let endpoint = match Endpoint::parse(url, 8188) {
        Ok(e) => e,
        Err(e) => return ProbeResult::not_comfyui(url.to_string(), "none", None, e.message),
    };
    let http = ComfyHttp::new(client, endpoint.clone(), None);
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, http.system_stats()).await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let base = endpoint.base().to_string();
    match result {
        Ok(Ok(stats)) => {
            let devices = match stats.devices.len() {
                0 => "no devices listed".to_string(),
                1 => format!("1 device ({})", stats.devices[0]),
                n => format!("{n} devices"),
            };
            let summary = if stats.simulator {
                format!(
                    "Director Link simulator (speaks ComfyUI {}), answered in {latency:.0} ms",
                    stats.version
                )
            } else {
                format!("ComfyUI {}, {devices}, answered in {latency:.0} ms", stats.version)
            };
            ProbeResult {
                url: base,
                kind: "comfyui".into(),
                summary,
                simulator: stats.simulator,
                version: Some(stats.version),
                devices: stats.devices,
                latency_ms: Some(latency),
            }
        }
        Ok(Err(e)) if e.code == crate::ErrorCode::ConnectionFailed => {
            ProbeResult::not_comfyui(base, "none", None, "nothing there".into())
        }
        Ok(Err(e)) => ProbeResult::not_comfyui(
            base,
            "unknown",
            Some(latency),
            format!("something else answers here ({})", e.message),
        ),
        Err(_) => ProbeResult::not_comfyui(
            base,
            "unknown",
            None,
            format!(
                "no answer within {:.1} s (busy, stalled or filtered)",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// Probes several addresses at once.
pub async fn probe_all(client: reqwest::Client, urls: &[String], timeout: Duration) -> Vec<ProbeResult> {
    let tasks: Vec<_> = urls
        .iter()
        .map(|u| {
            let (client, u) = (client.clone(), u.clone());
            tokio::spawn(async move { probe_comfyui(client, &u, timeout).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (t, url) in tasks.into_iter().zip(urls) {
        out.push(
            t.await
                .unwrap_or_else(|_| ProbeResult::not_comfyui(url.clone(), "none", None, "probe did not finish".into())),
        );
    }
    out
}
