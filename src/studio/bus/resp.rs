//! A minimal Redis client: RESP2 over one TCP connection, commands pipelined, replies read in order. The bus needs
//! five commands (AUTH, SELECT, INFO, XADD, XREAD) and a blocking read on a connection of its own; a client crate
//! would bring a multiplexer, its own reconnect policy and a dependency tree for that.
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A reply line (status, error, length) longer than this is not Redis talking.
const MAX_LINE: usize = 64 * 1024;
const MAX_BULK: i64 = 64 * 1024 * 1024;
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// Where the server is, from `redis://[user][:password]@host[:port][/db]`.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    user: Option<String>,
    password: Option<String>,
    db: u32,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|_| "not a valid redis:// URL".to_string())?;
        if u.scheme() != "redis" {
            return Err("expected redis://[:password@]host:port[/db] (TLS is not supported)".into());
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let db = match u.path().trim_matches('/') {
            "" => 0,
            n => n.parse().map_err(|_| format!("database {n:?} is not a number"))?,
        };
        Ok(Target {
            host,
            port: u.port().unwrap_or(6379),
            user: Some(decode(u.username())).filter(|s| !s.is_empty()),
            password: u.password().map(decode),
            db,
        })
    }

    /// The password, so that no message can carry it.
    pub fn secret(&self) -> Option<&str> {
        self.password.as_deref().filter(|p| !p.is_empty())
    }
}

pub struct Conn {
    io: BufStream<TcpStream>,
    out: Vec<u8>,
}

impl Conn {
    /// Connects, authenticates and selects the database.
    pub async fn open(t: &Target) -> Result<Conn, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| {
                format!(
                    "no answer from {}:{} within {} s",
                    t.host,
                    t.port,
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            io: BufStream::new(stream),
            out: Vec::new(),
        };
        if let Some(p) = &t.password {
            let r = match &t.user {
                Some(u) => c.call(&[b"AUTH", u.as_bytes(), p.as_bytes()]).await,
                None => c.call(&[b"AUTH", p.as_bytes()]).await,
            };
            // The server's answer never quotes the password; say which step failed.
            r.map_err(|e| format!("AUTH refused: {e}"))?;
        }
        if t.db != 0 {
            c.call(&[b"SELECT", t.db.to_string().as_bytes()]).await?;
        }
        Ok(c)
    }

    /// Adds a command to the pipeline (sent by `flush`).
    pub fn queue(&mut self, args: &[&[u8]]) {
        self.out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        let out = std::mem::take(&mut self.out);
        self.io.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("write: {e}"))
    }

    /// One command and its reply; a Redis error is an `Err`.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.queue(args);
        self.flush().await?;
        match self.read().await? {
            Reply::Error(e) => Err(e),
            r => Ok(r),
        }
    }

    pub async fn read(&mut self) -> Result<Reply, String> {
        self.read_at(0).await
    }

    fn read_at(&mut self, depth: usize) -> futures_util::future::BoxFuture<'_, Result<Reply, String>> {
        Box::pin(async move {
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            let num = || rest.parse::<i64>().map_err(|_| format!("bad reply line {line:?}"));
            match kind {
                "+" => Ok(Reply::Status(rest.to_string())),
                "-" => Ok(Reply::Error(rest.to_string())),
                ":" => Ok(Reply::Int(num()?)),
                "$" => {
                    let n = num()?;
                    if n < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    if n > MAX_BULK {
                        return Err(format!("a reply of {n} bytes is more than this client takes"));
                    }
                    let mut buf = vec![0u8; n as usize + 2];
                    self.io.read_exact(&mut buf).await.map_err(|e| format!("read: {e}"))?;
                    buf.truncate(n as usize);
                    Ok(Reply::Bulk(Some(buf)))
                }
                "*" => {
                    let n = num()?;
                    if n < 0 {
                        return Ok(Reply::Array(None));
                    }
                    if depth >= MAX_DEPTH {
                        return Err("a reply nested too deep".into());
                    }
                    let mut items = Vec::with_capacity((n as usize).min(4096));
                    for _ in 0..n {
                        items.push(self.read_at(depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                _ => Err(format!("not a RESP reply: {line:?}")),
            }
        })
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        if !buf.ends_with(b"\r\n") {
            return Err("a reply line without its end".into());
        }
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).map_err(|_| "a reply line that is not text".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_password_and_database() {
        let t = Target::parse("redis://:s%40cret@127.0.0.1:6380/2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.host.as_str(), t.port, t.db), ("127.0.0.1", 6380, 2));
        assert_eq!(t.secret(), Some("s@cret"));
        assert!(t.user.is_none());
        let t = Target::parse("redis://[::1]").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6379, 0));
        assert!(Target::parse("rediss://h:1").is_err());
        assert!(Target::parse("redis://h:1/x").is_err());
    }
}
