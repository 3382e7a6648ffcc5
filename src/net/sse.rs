//! `text/event-stream` decoding for every backend that streams (Gradio's queue, OpenAI chat streams, MCP answers).
//! Comment lines (`: ping`) and `event:`/`id:`/`retry:` fields are skipped; CRLF and LF both end lines. An event
//! may not grow beyond a limit, neither as one endless line nor as endless `data:` lines without the blank line
//! that ends it: a broken or hostile server gets a clear error, never our memory.
use crate::error::{Error, ErrorCode};

/// The most one event (its pending line plus the `data` lines gathered so far) may hold by default. Gradio and
/// OpenAI events carry text and file references, not file contents; 16 MiB is far beyond any real one.
pub const MAX_EVENT: usize = 16 << 20;

/// Splits a `text/event-stream` body into the `data` of each event, across arbitrary chunk boundaries.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end (so a long line is scanned once, not once per chunk).
    scanned: usize,
    /// The event's `data` lines so far, joined with `\n` (one string, so its length is the memory it takes).
    data: String,
    has_data: bool,
    limit: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::with_limit(MAX_EVENT)
    }
}

impl SseDecoder {
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    /// A decoder whose events may hold at most `limit` bytes.
    pub fn with_limit(limit: usize) -> SseDecoder {
        SseDecoder {
            buf: Vec::new(),
            scanned: 0,
            data: String::new(),
            has_data: false,
            limit,
        }
    }

    fn too_large(&self) -> Error {
        Error::new(
            ErrorCode::Protocol,
            format!(
                "an event-stream event is larger than the limit of {} bytes (a line or data that never ends); the \
                 stream was dropped",
                self.limit
            ),
        )
    }

    /// Feeds bytes; returns the data of every event completed by them. `Err` when an event grows over the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start + self.scanned..].iter().position(|&b| b == b'\n') {
            let end = start + self.scanned + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.scanned = 0;
            start = end + 1;
            self.line(&line, &mut out);
            if self.data.len() > self.limit {
                return Err(self.too_large());
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() + self.data.len() > self.limit {
            return Err(self.too_large());
        }
        Ok(out)
    }

    /// The stream ended: a last event without its blank line still counts.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            self.scanned = 0;
            self.line(rest.trim_end_matches('\r'), &mut out);
        }
        self.flush(&mut out);
        out
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.data));
            self.has_data = false;
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            self.flush(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_handles_split_chunks_comments_and_crlf() {
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        for part in [": ping\r\n\r\nda", "ta: {\"a\":1}\r", "\n\r\ndata: [DONE]\n", "\n"] {
            got.extend(d.push(part.as_bytes()).unwrap_or_default());
        }
        assert_eq!(got, vec!["{\"a\":1}".to_string(), "[DONE]".to_string()]);
        assert!(d.finish().is_empty());
    }

    #[test]
    fn decoder_flushes_an_unterminated_last_event() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: x").unwrap_or_default().is_empty());
        assert_eq!(d.finish(), vec!["x".to_string()]);
    }

    #[test]
    fn multi_line_data_is_joined_and_lines_split_anywhere() {
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        let text = "event: message\ndata: a\ndata:b\nid: 3\n\ndata: c\n\n";
        for byte in text.as_bytes() {
            got.extend(d.push(std::slice::from_ref(byte)).unwrap_or_default());
        }
        assert_eq!(got, vec!["a\nb".to_string(), "c".to_string()]);
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_naming_it() {
        let mut d = SseDecoder::with_limit(100);
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = d.push(b"data: 0123456789\n") {
                failed = Some(e);
                break;
            }
        }
        let e = failed.unwrap_or_else(|| panic!("endless data lines were accepted"));
        assert_eq!(e.code, ErrorCode::Protocol);
        assert!(e.message.contains("limit of 100 bytes"), "{}", e.message);
        let mut d = SseDecoder::with_limit(100);
        assert!(d.push(&[b'x'; 60]).is_ok());
        let e = d
            .push(&[b'x'; 60])
            .err()
            .unwrap_or_else(|| panic!("an endless line was accepted"));
        assert!(e.message.contains("limit of 100 bytes"), "{}", e.message);
        // Events under the limit keep flowing, however many.
        let mut d = SseDecoder::with_limit(100);
        for _ in 0..1000 {
            assert_eq!(d.push(b"data: 0123456789\n\n").unwrap_or_default().len(), 1);
        }
    }
}
