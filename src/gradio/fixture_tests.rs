//! Every recorded Gradio message (`fixtures/gradio/<version>/*.jsonl`, real 3.50.2, 4.44.1, 5.29.0 and 6.31.0
//! servers) parsed into its typed variant; configs resolved; generator diffs replayed to the final value.
use super::protocol::{apply_diff, error_text, files_in, progress_of, Config, Message, Protocol};
use crate::net::sse::SseDecoder;
use serde_json::{json, Value};
use std::path::PathBuf;

const VERSIONS: [&str; 4] = ["3.50.2", "4.44.1", "5.29.0", "6.31.0"];

/// The recordings copied into the project (`tests/fixtures/gradio`, see its README); missing ones fail the test.
fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gradio");
    assert!(
        dir.is_dir(),
        "the recorded Gradio fixtures are missing: {}",
        dir.display()
    );
    dir
}

fn lines(dir: &std::path::Path, version: &str, file: &str) -> Vec<Value> {
    let path = dir.join(version).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn jsonl_files(dir: &std::path::Path, version: &str) -> Vec<String> {
    let folder = dir.join(version);
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert!(
        names.len() >= 7,
        "{}: recordings missing, found {names:?}",
        folder.display()
    );
    names.sort();
    names
}

/// (file, parsed data) of every queue message: SSE events and 3.x WebSocket frames received.
fn messages(dir: &std::path::Path, version: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in jsonl_files(dir, version) {
        for l in lines(dir, version, &file) {
            let kind = l["kind"].as_str().unwrap_or("");
            let data = &l["data"];
            if matches!(kind, "sse_event" | "ws_recv") && data.get("msg").is_some() {
                // `/call/…` streams carry bare output lists, not queue messages.
                out.push((file.clone(), data.clone()));
            }
        }
    }
    out
}

#[test]
fn every_recorded_queue_message_parses_into_a_known_variant() {
    let dir = fixtures();
    let mut seen = std::collections::BTreeMap::<&'static str, usize>::new();
    let mut total = 0;
    for version in VERSIONS {
        for (file, data) in messages(&dir, version) {
            let msg = Message::from_value(&data).unwrap_or_else(|e| panic!("{version}/{file}: {e}: {data}"));
            let name = match &msg {
                Message::SendHash => "send_hash",
                Message::SendData => "send_data",
                Message::QueueFull => "queue_full",
                Message::Estimation { .. } => "estimation",
                Message::ProcessStarts { .. } => "process_starts",
                Message::Progress { units, .. } => {
                    assert!(!units.is_empty(), "{version}/{file}: progress without units: {data}");
                    assert!(progress_of(units).is_some());
                    "progress"
                }
                Message::Log { log, level, .. } => {
                    assert!(!log.is_empty() && !level.is_empty());
                    "log"
                }
                Message::Generating { output, .. } => {
                    assert!(output.get("data").is_some_and(Value::is_array));
                    "generating"
                }
                Message::Completed { .. } => "completed",
                Message::Heartbeat => "heartbeat",
                Message::CloseStream => "close_stream",
                Message::UnexpectedError { .. } => "unexpected_error",
                Message::Other(m) => panic!("{version}/{file}: unknown msg {m:?}"),
            };
            // Every message of the 4.x+ queue stream but heartbeat/close_stream names its event.
            if version != "3.50.2" && !matches!(name, "heartbeat" | "close_stream" | "unexpected_error") {
                assert!(msg.event_id().is_some(), "{version}/{file}: {name} without event_id");
            }
            *seen.entry(name).or_default() += 1;
            total += 1;
        }
    }
    for needed in [
        "send_hash",
        "send_data",
        "estimation",
        "process_starts",
        "progress",
        "log",
        "generating",
        "completed",
        "heartbeat",
        "close_stream",
    ] {
        assert!(
            seen.get(needed).copied().unwrap_or(0) > 0,
            "no {needed} in the fixtures: {seen:?}"
        );
    }
    assert!(total > 250, "only {total} messages found");
}

#[test]
fn raw_sse_frames_decode_to_the_recorded_data() {
    let dir = fixtures();
    let mut n = 0;
    for version in ["4.44.1", "5.29.0", "6.31.0"] {
        for file in jsonl_files(&dir, version) {
            let mut decoder = SseDecoder::new();
            for l in lines(&dir, version, &file) {
                if l["kind"] != "sse_event" || l["event"].is_string() {
                    continue;
                }
                let Some(raw) = l["raw"].as_str() else { continue };
                let datas = decoder.push(format!("{raw}\n\n").as_bytes()).unwrap_or_default();
                for d in datas {
                    match serde_json::from_str::<Value>(&d) {
                        Ok(v) => assert_eq!(v, l["data"], "{version}/{file}"),
                        Err(_) => assert_eq!(d, "ALIVE", "{version}/{file}: {d}"),
                    }
                    n += 1;
                }
            }
        }
    }
    assert!(n > 200, "{n}");
}

#[test]
fn errors_are_unquoted_and_hidden_ones_explained() {
    let dir = fixtures();
    for version in VERSIONS {
        let file = if version == "3.50.2" {
            "ws_error_call.jsonl"
        } else {
            "error_call.jsonl"
        };
        let failed: Vec<String> = messages(&dir, version)
            .into_iter()
            .filter(|(f, _)| f == file)
            .filter_map(|(_, d)| match Message::from_value(&d) {
                Ok(Message::Completed {
                    output,
                    success: false,
                    title,
                    ..
                }) => Some(error_text(&output, title.as_deref())),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 2, "{version}: {failed:?}");
        assert!(
            failed[0].ends_with("Out of VRAM while rendering 'a red fox'"),
            "{version}: {}",
            failed[0]
        );
        assert!(!failed[0].contains('"'), "{version}: still quoted: {}", failed[0]);
        if matches!(version, "5.29.0" | "6.31.0") {
            assert_eq!(failed[0], "Generation failed: Out of VRAM while rendering 'a red fox'");
        }
        assert!(
            failed[1].contains("hides its message (show_error=False)"),
            "{version}: {}",
            failed[1]
        );
    }
}

#[test]
fn cancelled_events_complete_without_data() {
    let dir = fixtures();
    for version in ["4.44.1", "5.29.0", "6.31.0"] {
        let last = messages(&dir, version)
            .into_iter()
            .filter(|(f, _)| f == "cancel_call.jsonl")
            .filter_map(|(_, d)| Message::from_value(&d).ok())
            .find(|m| matches!(m, Message::Completed { .. }));
        match last {
            Some(Message::Completed { output, success, .. }) => {
                assert!(success && output.get("data").is_none(), "{version}: {output}")
            }
            other => panic!("{version}: {other:?}"),
        }
    }
}

#[test]
fn configs_resolve_endpoints_and_protocols() {
    let dir = fixtures();
    for version in VERSIONS {
        let path = dir.join(version).join("config.json");
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config = Config::parse(&body).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(config.version, version);
        assert!(config.app_id().is_some(), "{version}: app_id is a u64");
        let expected = if version == "3.50.2" {
            Protocol::Ws
        } else {
            Protocol::Sse { diffs: true }
        };
        assert_eq!(config.protocol(), expected, "{version}");
        let prefix = if version.starts_with('5') || version.starts_with('6') {
            Some("/gradio_api")
        } else {
            None
        };
        assert_eq!(config.api_prefix.as_deref(), prefix, "{version}");
        let gen = config
            .resolve(Some("/generate_video"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (gen.fn_index, gen.trigger_id, gen.generator, gen.inputs),
            (0, Some(5), false, 2)
        );
        let kinds: Vec<&str> = gen.outputs.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(kinds, ["file", "textbox"], "{version}");
        let by_index = config.resolve(None, Some(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_index.api_name.as_deref(), Some("inspect_file"));
        assert!(config.resolve(Some("stream_status"), None).is_ok_and(|e| e.generator));
        let missing = config.resolve(Some("nope"), None).err().unwrap_or_default();
        assert!(missing.contains("generate_video"), "{missing}");
        assert!(config.resolve(None, Some(999)).is_err());
    }
}

#[test]
fn generator_diffs_replay_to_the_final_value() {
    let dir = fixtures();
    for version in VERSIONS {
        let file = if version == "3.50.2" {
            "ws_generator_call.jsonl"
        } else {
            "generator_call.jsonl"
        };
        let diffs = version != "3.50.2";
        let mut current: Option<Vec<Value>> = None;
        let mut final_value = None;
        let mut updates = 0;
        for (_, d) in messages(&dir, version).into_iter().filter(|(f, _)| f == file) {
            match Message::from_value(&d) {
                Ok(Message::Generating { output, .. }) => {
                    let data = output["data"].as_array().cloned().unwrap_or_default();
                    current = Some(match (&current, diffs) {
                        (Some(prev), true) => prev
                            .iter()
                            .zip(&data)
                            .map(|(p, diff)| apply_diff(p, diff).unwrap_or_else(|e| panic!("{version}: {e}")))
                            .collect(),
                        _ => data,
                    });
                    updates += 1;
                }
                Ok(Message::Completed { output, .. }) => final_value = output["data"].as_array().cloned(),
                _ => {}
            }
        }
        assert!(updates >= 3, "{version}: {updates}");
        assert_eq!(current, final_value, "{version}");
        assert_eq!(final_value, Some(vec![json!("queued rendering done")]), "{version}");
    }
}

#[test]
fn output_files_are_found_by_path_not_url() {
    let dir = fixtures();
    for version in VERSIONS {
        let file = if version == "3.50.2" {
            "ws_progress_call.jsonl"
        } else {
            "progress_call.jsonl"
        };
        let output = messages(&dir, version)
            .into_iter()
            .filter(|(f, _)| f == file)
            .find_map(|(_, d)| match Message::from_value(&d) {
                Ok(Message::Completed { output, .. }) => Some(output),
                _ => None,
            })
            .unwrap_or(Value::Null);
        let mut refs = Vec::new();
        files_in(&output["data"], &mut refs);
        assert_eq!(refs.len(), 1, "{version}: {output}");
        assert!(
            refs[0].path.starts_with("/tmp/gradio/") && refs[0].path.ends_with(".gif"),
            "{:?}",
            refs[0]
        );
        assert!(refs[0].orig_name.as_deref().is_some_and(|n| n.starts_with("wangp_")));
    }
    // 4.44.1's /call route gives a wrong `url`; the path is still right.
    let wrong: Vec<Value> = lines(&dir, "4.44.1", "simple_call.jsonl")
        .into_iter()
        .filter(|l| l["kind"] == "sse_event" && l["event"] == "complete")
        .map(|l| l["data"].clone())
        .collect();
    let mut refs = Vec::new();
    for w in &wrong {
        files_in(w, &mut refs);
    }
    for r in refs {
        assert!(r.path.starts_with("/tmp/gradio/"), "{r:?}");
    }
}

#[test]
fn progress_maps_index_length_and_fraction() {
    use super::protocol::ProgressUnit;
    let u = |index: Option<f64>, length: Option<f64>, progress: Option<f64>, desc: &str| ProgressUnit {
        index,
        length,
        unit: Some("steps".into()),
        progress,
        desc: Some(desc.into()),
    };
    assert_eq!(
        progress_of(&[u(Some(3.0), Some(10.0), None, "Denoising | 0:12 / 1:40")]),
        Some((3.0, 10.0, Some("Denoising | 0:12 / 1:40".into())))
    );
    assert_eq!(
        progress_of(&[u(None, None, Some(0.25), "Loading")]),
        Some((0.25, 1.0, Some("Loading".into())))
    );
    let nested = [
        u(Some(1.0), Some(2.0), None, "Shot"),
        u(Some(5.0), Some(20.0), None, "Denoising"),
    ];
    assert_eq!(progress_of(&nested), Some((5.0, 20.0, Some("Shot / Denoising".into()))));
    assert_eq!(
        progress_of(&[u(None, None, None, "VAE Decoding")]),
        Some((0.0, 0.0, Some("VAE Decoding".into())))
    );
    assert_eq!(progress_of(&[]), None);
}

#[test]
fn diff_edits() {
    let v = json!({"a": [1, 2, 3], "t": "x"});
    let d = json!([
        ["append", ["t"], "yz"],
        ["replace", ["a", 0], 9],
        ["add", ["a", 3], 4],
        ["delete", ["a", 1]],
        ["add", ["new"], {"k": true}]
    ]);
    assert_eq!(
        apply_diff(&v, &d).map_err(|e| eprintln!("{e}")).ok(),
        Some(json!({"a": [9, 3, 4], "t": "xyz", "new": {"k": true}}))
    );
    assert_eq!(
        apply_diff(&json!("ab"), &json!([["append", [], "c"]])).ok(),
        Some(json!("abc"))
    );
    assert_eq!(
        apply_diff(&json!([1]), &json!([["append", [], [2]]])).ok(),
        Some(json!([1, 2]))
    );
    assert_eq!(
        apply_diff(&json!(1), &json!([["replace", [], "z"]])).ok(),
        Some(json!("z"))
    );
    assert!(apply_diff(&json!([1]), &json!([["delete", [5]]])).is_err());
    assert!(apply_diff(&json!({}), &json!([["explode", ["a"], 1]])).is_err());
    assert!(apply_diff(&json!({}), &json!("not a list")).is_err());
}

#[test]
fn state_inputs_left_out_by_the_caller_are_filled() {
    use super::protocol::Endpoint;
    let e = Endpoint {
        fn_index: 0,
        trigger_id: None,
        api_name: Some("infer".into()),
        generator: false,
        queued: true,
        outputs: Vec::new(),
        inputs: 5,
        state_inputs: vec![2, 4],
    };
    // As the app's API page shows it (state hidden): nulls where the states go.
    assert_eq!(
        e.with_state_inputs(vec![json!("a"), json!(1), json!("c")]),
        vec![json!("a"), json!(1), Value::Null, json!("c"), Value::Null]
    );
    // Everything given (states included) or a wrong count: sent as given, the app names what is wrong.
    let all = vec![json!(1); 5];
    assert_eq!(e.with_state_inputs(all.clone()), all);
    assert_eq!(e.with_state_inputs(vec![json!(1); 2]), vec![json!(1); 2]);
    let config = Config::parse(
        br#"{"version": "3.50.2", "components": [{"id": 1, "type": "dropdown", "props": {}}, {"id": 2, "type": "state", "props": {}}],
            "dependencies": [{"targets": [1], "inputs": [1, 2], "outputs": [], "api_name": "load", "queue": null}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let load = config.resolve(Some("load"), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((load.inputs, load.state_inputs.clone()), (2, vec![1]));
}
