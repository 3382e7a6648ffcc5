//! Every message recorded from a real ComfyUI 0.3.64 parses into its typed variant, and hostile input never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use director_link::comfy::protocol::{BinaryFrame, ServerMessage};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;

/// The ComfyUI 0.3.64 recordings copied into the project (`tests/fixtures/comfyui`, see its README).
fn fixture_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfyui");
    assert!(dir.is_dir(), "the recorded fixtures are missing: {}", dir.display());
    dir
}

fn recorded_lines() -> Vec<(String, Value)> {
    let dir = fixture_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            out.push((name.clone(), serde_json::from_str(line).unwrap()));
        }
    }
    out
}

#[test]
fn every_recorded_text_message_parses_into_its_typed_variant() {
    let lines = recorded_lines();
    let mut seen = 0;
    for (file, line) in &lines {
        if line["kind"] != "ws_recv" || line.get("raw").is_none() {
            continue;
        }
        let raw = line["raw"].as_str().unwrap();
        let kind = line["data"]["type"].as_str().unwrap_or("");
        let msg = ServerMessage::parse(raw).unwrap_or_else(|e| panic!("{file}: {raw}: {e:?}"));
        let known = [
            "status",
            "execution_start",
            "execution_cached",
            "executing",
            "progress",
            "progress_state",
            "executed",
            "execution_success",
            "execution_error",
            "execution_interrupted",
            "feature_flags",
        ];
        let is_unknown = matches!(msg, ServerMessage::Unknown { .. });
        assert_eq!(is_unknown, !known.contains(&kind), "{file}: {kind} parsed as {msg:?}");
        if let Some(pid) = line["data"]["data"]["prompt_id"].as_str() {
            assert_eq!(msg.prompt_id(), Some(pid), "{file}: prompt id of {kind}");
        }
        seen += 1;
    }
    assert!(seen > 200, "only {seen} recorded messages found");
}

#[test]
fn every_recorded_binary_head_decodes_as_recorded() {
    let mut seen = 0;
    for (file, line) in recorded_lines() {
        if line["kind"] != "ws_recv" || line["binary"] != true {
            continue;
        }
        seen += 1;
        let head = hex(line["head_hex"].as_str().unwrap());
        let decoded = &line["decoded"];
        let event = decoded["event_type"].as_u64().unwrap();
        // Only the first 16 bytes were recorded: rebuild a frame of the recorded length with that head.
        let mut frame = head.clone();
        frame.resize(line["len"].as_u64().unwrap() as usize, 0);
        match (event, BinaryFrame::parse(frame.into())) {
            (1, Ok(BinaryFrame::Preview { mime, .. })) => {
                let png = decoded["image_type"] == 2;
                assert_eq!(mime, if png { "image/png" } else { "image/jpeg" }, "{file}");
            }
            (3, Ok(BinaryFrame::Text { node_id, .. })) => assert_eq!(node_id, decoded["node_id"].as_str().unwrap()),
            // The metadata JSON runs past the recorded head, so only its length prefix can be checked here.
            (4, _) => assert_eq!(
                u32::from_be_bytes(head[4..8].try_into().unwrap()) as u64,
                decoded["metadata_len"]
            ),
            (e, other) => panic!("{file}: event {e} decoded as {other:?}"),
        }
    }
    assert!(seen > 20, "only {seen} recorded binary frames found");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn random_and_hostile_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if len >= 4 && rng.random_bool(0.7) {
            bytes[..4].copy_from_slice(&[0, 0, 0, rng.random_range(0..6)]);
        }
        let _ = BinaryFrame::parse(bytes.clone().into());
        let _ = ServerMessage::parse(&String::from_utf8_lossy(&bytes));
    }
    let hostile = [
        r#"{"type":"progress","data":{"value":"abc","max":null,"prompt_id":5}}"#,
        r#"{"type":"executing","data":{"node":5,"prompt_id":["x"]}}"#,
        r#"{"type":"execution_error","data":{"current_inputs":[],"traceback":"not a list"}}"#,
        r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":-3}}}}"#,
        r#"{"type":"executed","data":{"node":"1","output":null}}"#,
        r#"{"type":7,"data":{}}"#,
        r#"{"data":{}}"#,
        r#"{"type":"progress","data":{"value":NaN,"max":Infinity}}"#,
        r#"[1,2,3]"#,
        "",
    ];
    for text in hostile {
        let _ = ServerMessage::parse(text);
    }
    let truncated_meta = [0u8, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, b'{'];
    assert!(BinaryFrame::parse(truncated_meta.to_vec().into()).is_err());
    let huge = vec![0u8; 20 << 20];
    let mut frame = vec![0, 0, 0, 1, 0, 0, 0, 2];
    frame.extend_from_slice(&huge);
    assert!(matches!(
        BinaryFrame::parse(frame.into()),
        Ok(BinaryFrame::Preview { mime: "image/png", .. })
    ));
}
