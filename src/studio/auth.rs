//! Who may talk to the studio: the token (header, WebSocket sub-protocol or `?token=`), allowed origins, valid
//! job ids and the per-address connection rate.
use axum::http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// The sub-protocol the server selects (echoes back) when a browser offers its token as `bearer.<token>`.
pub const PROTOCOL: &str = "director-link";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Where a request carried its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// No token is configured.
    Open,
    Valid,
    Missing,
    Wrong,
}

/// The token a request presents: `Authorization: Bearer`, a `bearer.<token>` WebSocket sub-protocol, or
/// `?token=` (for clients that cannot set headers).
pub fn presented_token(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    for v in headers.get_all("sec-websocket-protocol") {
        for p in v.to_str().unwrap_or("").split(',') {
            if let Some(t) = p.trim().strip_prefix(BEARER_PROTOCOL_PREFIX) {
                return Some(t.to_string());
            }
        }
    }
    query_token.map(str::to_string)
}

pub fn check_token(expected: Option<&str>, presented: Option<&str>) -> TokenCheck {
    match (expected.filter(|t| !t.is_empty()), presented) {
        (None, _) => TokenCheck::Open,
        (Some(_), None) => TokenCheck::Missing,
        (Some(e), Some(p)) if same(e, p) => TokenCheck::Valid,
        (Some(_), Some(_)) => TokenCheck::Wrong,
    }
}

/// The sub-protocol to echo back: ours when offered, else the bearer one the browser offered (a browser fails
/// the handshake when it offered protocols and none comes back).
pub fn selected_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    let pick = offered
        .iter()
        .find(|p| p.as_str() == PROTOCOL)
        .or_else(|| offered.iter().find(|p| p.starts_with(BEARER_PROTOCOL_PREFIX)))
        .or_else(|| offered.first())?;
    HeaderValue::from_str(pick).ok()
}

/// True for a loopback host name or address (with or without port).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(
            host,
            |(h, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    host
                }
            },
        )
    };
    bare == "localhost" || bare.ends_with(".localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser page from `origin` may use this server: its own origin, loopback origins, and the listed
/// ones. Requests without an `Origin` (tools, scripts) are not browsers' and pass.
pub fn origin_allowed(origin: Option<&str>, host_header: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim().trim_end_matches('/');
    if allowed.iter().any(|a| a == "*" || a.trim_end_matches('/') == origin) {
        return true;
    }
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let with_port = match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if host_header.is_some_and(|h| h.eq_ignore_ascii_case(&with_port) || h.eq_ignore_ascii_case(host)) {
        return true;
    }
    is_loopback_host(host)
}

/// Job ids: a UUID or `[A-Za-z0-9_-]{1,64}`.
pub fn valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A token bucket per client address for new WebSocket connections.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(0.001),
            burst: (per_second * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock();
        let (tokens, last) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets addresses whose bucket is full again (periodic cleanup).
    pub fn cleanup(&self) {
        let now = Instant::now();
        let (rate, burst) = (self.per_second, self.burst);
        self.buckets
            .lock()
            .retain(|_, (t, last)| *t + now.duration_since(*last).as_secs_f64() * rate < burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_every_place_and_compared_fully() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h, Some("q")), Some("q".into()));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("director-link, bearer.abc"),
        );
        assert_eq!(presented_token(&h, None), Some("abc".into()));
        assert_eq!(selected_protocol(&h), Some(HeaderValue::from_static("director-link")));
        h.insert("authorization", HeaderValue::from_static("Bearer xyz"));
        assert_eq!(presented_token(&h, None), Some("xyz".into()));
        assert_eq!(check_token(Some("xyz"), Some("xyz")), TokenCheck::Valid);
        assert_eq!(check_token(Some("xyz"), Some("xy")), TokenCheck::Wrong);
        assert_eq!(check_token(Some("xyz"), None), TokenCheck::Missing);
        assert_eq!(check_token(None, None), TokenCheck::Open);
    }

    #[test]
    fn origins() {
        let own = Some("studio.lan:8328");
        assert!(origin_allowed(None, own, &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:5173"), own, &[]));
        assert!(origin_allowed(Some("http://localhost:3000"), own, &[]));
        assert!(origin_allowed(Some("http://[::1]:3000"), own, &[]));
        assert!(origin_allowed(Some("http://studio.lan:8328"), own, &[]));
        assert!(!origin_allowed(Some("https://evil.example"), own, &[]));
        assert!(!origin_allowed(Some("null"), own, &[]));
        assert!(origin_allowed(
            Some("https://tools.example"),
            own,
            &["https://tools.example".into()]
        ));
    }

    #[test]
    fn job_ids_and_rates() {
        assert!(valid_job_id("test-job-1"));
        assert!(valid_job_id("3f1c2a54-0000-4000-8000-000000000000"));
        assert!(!valid_job_id(""));
        assert!(!valid_job_id("../etc/passwd"));
        assert!(!valid_job_id(&"a".repeat(65)));
        let r = RateLimiter::new(1.0);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(r.allow(ip) && r.allow(ip));
        assert!(!r.allow(ip), "the burst is twice the rate");
    }
}
