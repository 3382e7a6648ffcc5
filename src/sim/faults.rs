//! Malformed traffic for resilience tests (`send_garbage`). Deliberately *not* built with serde: these
//! frames must be wrong in ways serde would not produce.
use super::image::zero_png;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const GARBAGE_KINDS: [&str; 8] = [
    "invalid_json",
    "nan_json",
    "unknown_type",
    "wrong_types",
    "truncated_binary",
    "unknown_binary",
    "huge_text",
    "huge_binary",
];

const HUGE: usize = 20 * 1024 * 1024;

fn text(s: &str) -> Message {
    Message::text(s.to_string())
}

fn be(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// The frames for one garbage kind, or `None` for an unknown kind.
pub(crate) fn garbage(kind: &str) -> Option<Vec<Message>> {
    Some(match kind {
        "invalid_json" => vec![
            text("this is not json"),
            text("{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\":"),
            text(""),
        ],
        // What Python's json.dumps writes for float('nan') / inf.
        "nan_json" => vec![
            text("{\"type\": \"progress\", \"data\": {\"value\": NaN, \"max\": 10, \"prompt_id\": null, \"node\": null}}"),
            text("{\"type\": \"progress\", \"data\": {\"value\": 1, \"max\": Infinity, \"prompt_id\": null, \"node\": null}}"),
        ],
        "unknown_type" => vec![
            text("{\"type\": \"dl_sim_unknown\", \"data\": {\"hello\": \"world\", \"n\": [1, 2, 3]}}"),
            text("{\"type\": \"crystools.monitor\", \"data\": {\"cpu_utilization\": 12.5}}"),
        ],
        "wrong_types" => vec![
            text("{\"type\": \"progress\", \"data\": {\"value\": \"abc\", \"max\": \"xyz\", \"prompt_id\": 5, \"node\": []}}"),
            text("{\"type\": \"executing\", \"data\": {\"node\": 5, \"prompt_id\": {\"a\": 1}}}"),
            text("{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": {\"queue_remaining\": \"many\"}}}}"),
            text("{\"type\": \"executed\", \"data\": {\"node\": \"1\", \"output\": \"not an object\", \"prompt_id\": null}}"),
            text("{\"type\": \"execution_error\", \"data\": [1, 2, 3]}"),
            text("{\"type\": 7, \"data\": null}"),
            text("{\"data\": {\"no\": \"type\"}}"),
            text("[\"not\", \"an\", \"object\"]"),
        ],
        "truncated_binary" => {
            let mut meta_past_end = be(4).to_vec();
            meta_past_end.extend(be(0x0010_0000));
            meta_past_end.extend(b"{\"node_id\": \"1\"");
            let mut text_past_end = be(3).to_vec();
            text_past_end.extend(be(1000));
            text_past_end.extend(b"10");
            vec![
                Message::binary(Vec::new()),
                Message::binary(vec![0]),
                Message::binary(vec![0, 0]),
                Message::binary(vec![0, 0, 0]),
                Message::binary(be(1).to_vec()),
                Message::binary(meta_past_end),
                Message::binary(text_past_end),
            ]
        }
        "unknown_binary" => {
            let mut f = be(99).to_vec();
            f.extend(b"\x00\x01\x02\x03 unknown event payload");
            vec![Message::binary(f)]
        }
        "huge_text" => {
            let head = "{\"type\": \"dl_sim_huge\", \"data\": {\"blob\": \"";
            let tail = "\"}}";
            let s = format!("{head}{}{tail}", "x".repeat(HUGE - head.len() - tail.len()));
            vec![Message::text(s)]
        }
        "huge_binary" => {
            // A real (black) PNG of about 20 MiB, sent like SaveImageWebsocket does.
            let w = 2048u32;
            let h = (HUGE / (w as usize * 3 + 1)) as u32 + 1;
            let mut f = be(1).to_vec();
            f.extend(be(2));
            f.extend(zero_png(w, h));
            vec![Message::binary(f)]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_frames() {
        for k in GARBAGE_KINDS {
            assert!(garbage(k).is_some_and(|v| !v.is_empty()), "{k}");
        }
        assert!(garbage("nope").is_none());
        let huge = garbage("huge_binary").unwrap_or_default();
        assert!(huge[0].len() >= HUGE);
    }
}
