//! A scripted HTTP/1.1 server on 127.0.0.1 for the tests of what real servers rarely do on purpose: wrong
//! answers, hostile bodies, broken streams. One thread per connection, one request per connection (answers say
//! `Connection: close`); every request is recorded; the server stops (and joins its threads) on drop.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub type Handler = Arc<dyn Fn(&Request, TcpStream) + Send + Sync>;

pub struct Server {
    pub url: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stopping, log) = (stop.clone(), seen.clone());
        let accept = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let (handler, log) = (handler.clone(), log.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    if let Some(request) = read_request(&stream) {
                        log.lock().unwrap().push(request.clone());
                        handler(&request, stream);
                    }
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Server {
            url: format!("http://{addr}/"),
            port: addr.port(),
            stop,
            accept: Some(accept),
            seen,
        }
    }

    /// The requests so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://").trim_end_matches('/'));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(16 << 20)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A whole answer with a body and `Connection: close`.
pub fn answer(mut stream: TcpStream, status: &str, content_type: &str, extra: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

pub fn json(stream: TcpStream, status: &str, body: &serde_json::Value) {
    answer(stream, status, "application/json", &[], body.to_string().as_bytes());
}

/// The head of a streamed answer without a length (the body ends when the connection closes).
pub fn stream_head(stream: &mut TcpStream, content_type: &str) {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.flush();
}

/// Writes `pieces` one after another, flushing each; stops quietly when the client has gone.
pub fn send_pieces(stream: &mut TcpStream, pieces: &[&[u8]]) {
    for p in pieces {
        if stream.write_all(p).and_then(|_| stream.flush()).is_err() {
            return;
        }
    }
}

/// Holds the connection open without writing until the client goes away or `limit` passes (bounded).
pub fn hold(stream: &mut TcpStream, limit: Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let end = std::time::Instant::now() + limit;
    let mut buf = [0u8; 64];
    while std::time::Instant::now() < end {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A one-thread runtime for a test that drives the client by hand.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
