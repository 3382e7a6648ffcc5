//! Service addresses as users type them: `host`, `host:port`, `http(s)://host:port/base/`.
use crate::error::{Error, ErrorCode, Result};
use std::fmt;

/// A parsed service address. `base` always ends with `/`, so `base.join("prompt")` keeps a reverse-proxy prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: url::Url,
}

impl Endpoint {
    /// Parses what a user typed. Without a scheme `http` is assumed; without a port, `default_port` is used
    /// when there was no scheme either (a bare `localhost` means the local server, not port 80).
    pub fn parse(input: &str, default_port: u16) -> Result<Endpoint> {
        let text = input.trim();
        let bad = |why: &str| {
            Error::new(
                ErrorCode::InvalidUrl,
                format!(
                    "cannot use {input:?} as a server address: {why}. \
                     Write it like 127.0.0.1:8188 or http://host:8188/"
                ),
            )
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains spaces or control characters"));
        }
        let has_scheme = text.contains("://");
        let with_scheme = if has_scheme {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let mut url = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            "ws" => set_scheme(&mut url, "http").map_err(|_| bad("unsupported scheme"))?,
            "wss" => set_scheme(&mut url, "https").map_err(|_| bad("unsupported scheme"))?,
            other => {
                return Err(bad(&format!(
                    "the scheme {other:?} is not supported (use http or https)"
                )))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "it has a query or fragment; give only scheme, host, port and an optional base path",
            ));
        }
        if !has_scheme && url.port().is_none() {
            url.set_port(Some(default_port))
                .map_err(|_| bad("the port cannot be set"))?;
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported; pass token= instead"));
        }
        let mut path = url.path().to_string();
        // A pasted ".../ws" or UI page URL should still mean the server root.
        for suffix in ["/ws", "/api/ws", "/index.html"] {
            if path.ends_with(suffix) {
                path.truncate(path.len() - suffix.len());
            }
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        url.set_path(&path);
        Ok(Endpoint { base: url })
    }

    /// `http://host:port/base/`
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    pub fn host(&self) -> &str {
        self.base.host_str().unwrap_or("")
    }

    pub fn port(&self) -> u16 {
        self.base.port_or_known_default().unwrap_or(0)
    }

    pub fn is_tls(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// True for 127.0.0.0/8, ::1 and `localhost`.
    pub fn is_loopback(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }

    /// An HTTP URL below the base (`path` without a leading slash).
    pub fn http(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    /// The WebSocket URL for a client id.
    pub fn websocket(&self, client_id: &str) -> String {
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        let rest = &self.base.as_str()[self.base.scheme().len()..];
        format!(
            "{scheme}{rest}ws?clientId={}",
            percent_encoding::utf8_percent_encode(client_id, QUERY)
        )
    }

    /// What we understood, for the user: "http://127.0.0.1:8188/ (WebSocket ws://127.0.0.1:8188/ws)".
    pub fn describe(&self) -> String {
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        let rest = &self.base.as_str()[self.base.scheme().len()..];
        format!("{} (WebSocket {scheme}{rest}ws)", self.base)
    }
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn set_scheme(url: &mut url::Url, scheme: &str) -> std::result::Result<(), ()> {
    url.set_scheme(scheme)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        match Endpoint::parse(s, 8188) {
            Ok(e) => e.base().to_string(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn accepts_the_forms_users_type() {
        assert_eq!(ok("localhost"), "http://localhost:8188/");
        assert_eq!(ok("127.0.0.1:8190"), "http://127.0.0.1:8190/");
        assert_eq!(ok("http://127.0.0.1:8188"), "http://127.0.0.1:8188/");
        assert_eq!(ok("https://farm.example/comfy"), "https://farm.example/comfy/");
        assert_eq!(ok("http://h:1/comfy/ws"), "http://h:1/comfy/");
        assert_eq!(ok("ws://h:9/"), "http://h:9/");
        assert_eq!(ok("[::1]:8188"), "http://[::1]:8188/");
        assert_eq!(ok("  127.0.0.1:8188/ "), "http://127.0.0.1:8188/");
    }

    #[test]
    fn derives_websocket_and_http_urls() {
        let e = Endpoint::parse("https://h:443/base", 8188).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.websocket("a b"), "wss://h/base/ws?clientId=a%20b");
        assert_eq!(e.http("/prompt"), "https://h/base/prompt");
        assert!(!e.is_loopback());
        assert!(Endpoint::parse("127.0.0.5:1", 1)
            .map(|e| e.is_loopback())
            .unwrap_or(false));
    }

    #[test]
    fn rejects_bad_addresses_with_a_clear_code() {
        for bad in [
            "",
            "   ",
            "ftp://h",
            "http://",
            "h:99999",
            "http://h:1/?x=1",
            "a b",
            "http://u:p@h/",
        ] {
            match Endpoint::parse(bad, 8188) {
                Ok(e) => panic!("{bad:?} was accepted as {e}"),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::InvalidUrl, "{bad:?}");
                    assert!(
                        e.message.contains("127.0.0.1:8188"),
                        "message gives an example: {}",
                        e.message
                    );
                }
            }
        }
    }
}
