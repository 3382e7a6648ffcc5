//! The studio server's settings: flags, a JSON config file and the brief's environment variables.
use crate::error::{Error, ErrorCode, Result};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 8328;

/// A service the studio's hub talks to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceSpec {
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl ServiceSpec {
    /// `KIND=URL` (or `NAME:KIND=URL`), as given to `--service`.
    pub fn parse(text: &str) -> Result<ServiceSpec> {
        let (left, url) = text.split_once('=').ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidParameter,
                format!("--service {text:?}: expected KIND=URL, e.g. comfyui=127.0.0.1:8188"),
            )
        })?;
        let (name, kind) = match left.split_once(':') {
            Some((n, k)) => (Some(n.trim().to_string()), k),
            None => (None, left),
        };
        let kind = kind.trim().to_ascii_lowercase();
        if kind.is_empty() || url.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!("--service {text:?}: both KIND and URL are needed, e.g. comfyui=127.0.0.1:8188"),
            ));
        }
        Ok(ServiceSpec {
            kind,
            url: url.trim().to_string(),
            name,
            token: None,
        })
    }
}

/// A pool of ComfyUI servers behind one service name (`hub.add_pool`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub servers: Vec<String>,
    /// Jobs in flight per server (default 2).
    #[serde(default)]
    pub capacity: Option<usize>,
    #[serde(default)]
    pub resubmit_running: bool,
    /// While every server is down, waiting jobs fail after this long (default 600 s).
    #[serde(default)]
    pub wait_deadline_seconds: Option<f64>,
}

impl PoolSpec {
    /// `NAME=URL1,URL2,…`, as given to `--pool`.
    pub fn parse(text: &str) -> Result<PoolSpec> {
        let bad = |why: &str| {
            Error::new(
                ErrorCode::InvalidParameter,
                format!("--pool {text:?}: {why}, e.g. studio=127.0.0.1:8188,gpu2:8188"),
            )
        };
        let (name, list) = text.split_once('=').ok_or_else(|| bad("expected NAME=URL1,URL2"))?;
        let servers: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if name.trim().is_empty() || servers.is_empty() {
            return Err(bad("both a NAME and at least one server are needed"));
        }
        Ok(PoolSpec {
            name: name.trim().to_string(),
            servers,
            capacity: None,
            resubmit_running: false,
            wait_deadline_seconds: None,
        })
    }

    pub fn options(&self) -> Result<crate::pool::PoolOptions> {
        let mut options = crate::pool::PoolOptions::default();
        if let Some(c) = self.capacity {
            options.capacity = c;
        }
        options.resubmit_running = self.resubmit_running;
        if let Some(s) = self.wait_deadline_seconds {
            if !(s.is_finite() && s >= 0.0) {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "pool {:?}: wait_deadline_seconds must be a number ≥ 0, not {s}",
                        self.name
                    ),
                ));
            }
            options.wait_deadline = Some(Duration::from_secs_f64(s));
        }
        Ok(options)
    }
}

/// Everything `director-link serve` can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudioConfig {
    pub host: String,
    pub port: u16,
    pub services: Vec<ServiceSpec>,
    /// Pools of ComfyUI servers, each behind one service name.
    pub pools: Vec<PoolSpec>,
    /// Scan this machine's usual ports and add what answers.
    pub discover: bool,
    /// Start the built-in ComfyUI simulator and add it as service `simulator`.
    pub simulator: bool,
    /// `sqlite:PATH` / a plain path (default: `studio.sqlite3` in the output folder), or `memory` for none.
    pub database: Option<String>,
    pub redis: Option<String>,
    /// Needed on every HTTP call and WebSocket when set (never logged).
    pub token: Option<String>,
    /// Needed by `POST /api/jobs/{id}/progress` (external producers); defaults to `token`.
    pub producer_token: Option<String>,
    /// Origins allowed besides the server's own and loopback ones.
    pub allow_origins: Vec<String>,
    pub output_dir: Option<PathBuf>,
    /// The brief's `WEBSOCKET_PING_INTERVAL`, `WEBSOCKET_CONNECTION_TIMEOUT`, `WEBSOCKET_CLEANUP_INTERVAL`.
    pub ping_interval_seconds: f64,
    pub connection_timeout_seconds: f64,
    pub cleanup_interval_seconds: f64,
    /// The most WebSocket connections at once; more are refused with 503.
    pub max_connections: usize,
    /// New WebSocket connections per second per client address (burst: twice that).
    pub connect_rate_per_address: f64,
    /// Loopback clients (this machine: tools, load tests, a local reverse proxy) are not rate limited unless set.
    pub rate_limit_loopback: bool,
    /// Resume history: events kept.
    pub history_events: usize,
    /// The monitor's periodic `system_status`, at most this often on change.
    pub monitor_interval_seconds: f64,
    /// Frames (and bytes) one subscriber may have waiting before it is closed as a slow consumer (4008).
    pub outbox_max_frames: usize,
    pub outbox_max_bytes: usize,
}

impl Default for StudioConfig {
    fn default() -> Self {
        StudioConfig {
            host: "127.0.0.1".to_string(),
            port: DEFAULT_PORT,
            services: Vec::new(),
            pools: Vec::new(),
            discover: false,
            simulator: false,
            database: None,
            redis: None,
            token: None,
            producer_token: None,
            allow_origins: Vec::new(),
            output_dir: None,
            ping_interval_seconds: 30.0,
            connection_timeout_seconds: 300.0,
            cleanup_interval_seconds: 60.0,
            max_connections: 20_000,
            connect_rate_per_address: 200.0,
            rate_limit_loopback: false,
            history_events: 100_000,
            monitor_interval_seconds: 5.0,
            outbox_max_frames: 4096,
            outbox_max_bytes: 8 * 1024 * 1024,
        }
    }
}

fn env_seconds(name: &str, target: &mut f64) -> Result<()> {
    if let Ok(v) = std::env::var(name) {
        *target = v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidParameter,
                    format!("{name}={v:?}: expected a number of seconds > 0"),
                )
            })?;
    }
    Ok(())
}

impl StudioConfig {
    /// Reads a JSON config file (the same keys as this struct).
    pub fn from_file(path: &std::path::Path) -> Result<StudioConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorCode::InvalidParameter,
                format!("cannot read the config file {}: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorCode::InvalidParameter,
                format!("the config file {} is not valid: {e}", path.display()),
            )
        })
    }

    /// Applies the brief's environment variables (`WEBSOCKET_*`, `REDIS_HOST`/`REDIS_PORT`, `DB_*`).
    pub fn apply_env(&mut self) -> Result<()> {
        env_seconds("WEBSOCKET_PING_INTERVAL", &mut self.ping_interval_seconds)?;
        env_seconds("WEBSOCKET_CONNECTION_TIMEOUT", &mut self.connection_timeout_seconds)?;
        env_seconds("WEBSOCKET_CLEANUP_INTERVAL", &mut self.cleanup_interval_seconds)?;
        if self.redis.is_none() {
            if let Ok(host) = std::env::var("REDIS_HOST") {
                let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".to_string());
                self.redis = Some(format!("redis://{host}:{port}"));
            }
        }
        if self.database.is_none() {
            if let (Ok(host), Ok(name)) = (std::env::var("DB_HOST"), std::env::var("DB_NAME")) {
                // Encoded: a password may hold any character (`@`, `/`, `:`) and must not break the URL.
                let enc =
                    |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
                let user = enc(&std::env::var("DB_USER").unwrap_or_else(|_| "postgres".to_string()));
                let password = std::env::var("DB_PASSWORD")
                    .map(|p| format!(":{}", enc(&p)))
                    .unwrap_or_default();
                self.database = Some(format!("postgresql://{user}{password}@{host}/{name}"));
            }
        }
        Ok(())
    }

    /// Refuses settings that cannot work or are unsafe.
    pub fn check(&self) -> Result<()> {
        let ip: IpAddr = self
            .host
            .trim_matches(['[', ']'])
            .parse()
            .or_else(|_| {
                if self.host == "localhost" {
                    Ok("127.0.0.1".parse().map_err(|_| ())?)
                } else {
                    Err(())
                }
            })
            .map_err(|_| {
                Error::new(
                    ErrorCode::InvalidUrl,
                    format!(
                        "--host {:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)",
                        self.host
                    ),
                )
            })?;
        if !ip.is_loopback() && self.token.as_deref().is_none_or(str::is_empty) {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!(
                    "refusing to listen on {} without a token: anyone on the network could run jobs. Pass \
                     --token (or keep the default --host 127.0.0.1)",
                    self.host
                ),
            ));
        }
        if let Some(redis) = &self.redis {
            if !redis.starts_with("redis://") {
                return Err(Error::new(
                    ErrorCode::InvalidUrl,
                    format!(
                        "--redis {}: expected redis://[:password@]host:port[/db] (TLS is not supported)",
                        redact(redis)
                    ),
                ));
            }
        }
        for (what, v) in [
            ("ping interval", self.ping_interval_seconds),
            ("connection timeout", self.connection_timeout_seconds),
            ("cleanup interval", self.cleanup_interval_seconds),
            ("monitor interval", self.monitor_interval_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    format!("the {what} must be between 0 and 86400 seconds, not {v}"),
                ));
            }
        }
        Ok(())
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval_seconds)
    }

    pub fn connection_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connection_timeout_seconds)
    }

    pub fn cleanup_interval(&self) -> Duration {
        Duration::from_secs_f64(self.cleanup_interval_seconds)
    }
}

/// A URL with its password (and any query) replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some() {
                u.set_query(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_specs_parse_with_clear_errors() {
        let p = PoolSpec::parse("studio=127.0.0.1:8188, gpu2:8188").ok();
        assert_eq!(
            p.map(|p| (p.name, p.servers)),
            Some(("studio".into(), vec!["127.0.0.1:8188".into(), "gpu2:8188".into()]))
        );
        assert!(
            PoolSpec::parse("studio=").is_err() && PoolSpec::parse("=a:1").is_err() && PoolSpec::parse("x").is_err()
        );
        let s = ServiceSpec::parse("comfyui=127.0.0.1:8188").ok();
        assert_eq!(
            s.map(|s| (s.kind, s.url)),
            Some(("comfyui".into(), "127.0.0.1:8188".into()))
        );
        let s = ServiceSpec::parse("gpu1:ComfyUI=10.0.0.5:8188").ok();
        assert_eq!(s.and_then(|s| s.name), Some("gpu1".into()));
        assert!(ServiceSpec::parse("comfyui").is_err());
        assert!(ServiceSpec::parse("=x").is_err());
    }

    #[test]
    fn binding_beyond_loopback_needs_a_token() {
        let mut c = StudioConfig {
            host: "0.0.0.0".into(),
            ..StudioConfig::default()
        };
        assert_eq!(c.check().map_err(|e| e.code), Err(ErrorCode::InvalidParameter));
        c.token = Some("t".into());
        assert!(c.check().is_ok());
        c.host = "not an ip".into();
        assert_eq!(c.check().map_err(|e| e.code), Err(ErrorCode::InvalidUrl));
        assert!(StudioConfig::default().check().is_ok());
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact("postgresql://u:secret@db/x"),
            "postgresql://u:***@db/x".to_string()
        );
        assert!(!redact("redis://h:6379/?password=secret").contains("secret"));
    }
}
