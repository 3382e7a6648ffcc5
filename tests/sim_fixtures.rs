//! Replays the recorded ComfyUI 0.3.64 traffic (`tests/fixtures/comfyui/*.jsonl`) against the simulator
//! and compares shapes: the sequence of WebSocket frames per socket (types, the values that must match, key
//! structure of `data`, binary layouts), HTTP status codes, content types and JSON key structure.
#![allow(clippy::unwrap_used)]

mod sim_support;

use serde_json::{json, Value};
use sim_support::*;
use std::time::Duration;

async fn replay(name: &str, opts: ReplayOptions) -> Replay {
    let lines = fixture(name);
    let mut r = Replay::new(sim());
    r.run(&lines, &opts).await;
    r
}

/// Byte-for-byte comparison of text frames on top of the shapes.
fn raw() -> ReplayOptions {
    ReplayOptions {
        compare_raw: true,
        ..ReplayOptions::default()
    }
}

/// The prompt of `success_save_image` (EmptyImage → ImageInvert → SaveImage).
fn success_prompt_body(client_id: &str) -> Value {
    json!({
        "prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}, "_meta": {"title": "Empty Image"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert Image"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dl_accept/success"}, "_meta": {"title": "Save Image"}},
        },
        "client_id": client_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_save_image() {
    let r = replay("success_save_image", raw()).await;
    r.assert_ok();
    // The file is really there and is the PNG /view served.
    let saved = r.sim.output_dir().join("dl_accept/success_00001_.png");
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(r.reply("/view", 0).body, bytes);
    let hist = r.reply("/history/", 0).json();
    let entry = hist.as_object().unwrap().values().next().unwrap();
    assert_eq!(entry["outputs"]["3"]["images"][0]["filename"], "success_00001_.png");
    assert_eq!(
        entry["prompt"][3]["extra_pnginfo"]["workflow"]["note"],
        "ui workflow would go here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_rerun() {
    let lines = fixture("cached_rerun");
    let mut r = Replay::new(sim());
    // The recording ran right after success_save_image: the same prompt is in the cache.
    r.setup_prompt("setup", &success_prompt_body("nobody")).await;
    r.wait_idle().await;
    r.run(&lines, &raw()).await;
    r.assert_ok();
    // The cached re-run reports the first file and writes nothing new; the changed prompt writes _00002_.
    let files: Vec<String> = std::fs::read_dir(r.sim.output_dir().join("dl_accept"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let first = r.reply("/history/", 0).json();
    assert_eq!(
        first.as_object().unwrap().values().next().unwrap()["outputs"]["3"]["images"][0]["filename"],
        "success_00001_.png"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_preview_metadata() {
    let r = replay("progress_preview_metadata", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_legacy_preview() {
    let r = replay("progress_legacy_preview", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_error() {
    let r = replay("execution_error", ReplayOptions::default()).await;
    r.assert_ok();
    let hist = r.reply("/history/", 0).json();
    let entry = hist.as_object().unwrap().values().next().unwrap();
    let err = &entry["status"]["messages"][2][1];
    assert_eq!(err["exception_message"], "acceptance failure: boom\n");
    assert_eq!(err["exception_type"], "RuntimeError");
    assert_eq!(err["current_inputs"]["steps_before_failing"], json!([2]));
    assert_eq!(err["current_inputs"]["message"], json!(["acceptance failure: boom"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_targeted() {
    let r = replay("interrupt_targeted", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_global() {
    let r = replay("interrupt_global", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors() {
    let r = replay("validation_errors", ReplayOptions::default()).await;
    r.assert_ok();
    // Beyond shapes: every error text matches the real server's (tracebacks aside).
    let mut compared = 0;
    for (req, rec, got) in &r.exchanges {
        let (Some(want), have) = (rec.get("json"), got.json()) else {
            continue;
        };
        let strip = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("prompt_id");
                m.remove("number");
            }
            for errs in v["node_errors"]
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                for e in errs["errors"].as_array_mut().into_iter().flatten() {
                    if let Some(x) = e["extra_info"].as_object_mut() {
                        x.remove("traceback");
                    }
                }
            }
            v
        };
        assert_eq!(strip(&have), strip(want), "{}", req["url"]);
        compared += 1;
    }
    assert_eq!(compared, 15, "15 JSON answers (the 16th is the 500 text)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ops() {
    let r = replay("queue_ops", raw()).await;
    r.assert_ok();
    // The pending list is the raw heap, in the same order as the real server's.
    let to_fixture: std::collections::HashMap<&String, &String> = r.ids.iter().map(|(f, o)| (o, f)).collect();
    let (_, rec, got) = r
        .exchanges
        .iter()
        .find(|(q, _, _)| q["url"].as_str().unwrap().ends_with("/queue") && q["method"] == "GET")
        .unwrap();
    let want: Vec<&str> = rec["json"]["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    let have: Vec<String> = got.json()["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| to_fixture[&i[1].as_str().unwrap().to_string()].to_string())
        .collect();
    assert_eq!(have, want);
    assert_eq!(got.json()["queue_pending"][0][0], json!(-100.5));
    // The deleted prompt never got a history entry.
    assert_eq!(r.exchanges.last().unwrap().2.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_ops() {
    let lines = fixture("history_ops");
    let mut r = Replay::new(sim());
    // Recreate the history the recording server had: the prompts of the entries its answers show, oldest first.
    let mut entries: Vec<(f64, String, Value)> = Vec::new();
    for l in &lines {
        if l["kind"] == "http_response" {
            for (id, e) in l["json"].as_object().into_iter().flatten() {
                if e.get("prompt").is_some() && !entries.iter().any(|(_, i, _)| i == id) {
                    entries.push((e["prompt"][0].as_f64().unwrap(), id.clone(), e["prompt"].clone()));
                }
            }
        }
    }
    entries.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, id, p) in &entries {
        if lines
            .iter()
            .any(|l| l["kind"] == "http_request" && l["json"]["prompt"] == p[2])
        {
            continue; // submitted by the recording itself
        }
        let ours = r.setup_prompt(id, &json!({"prompt": p[2], "extra_data": p[3]})).await;
        let entry = lines.iter().find_map(|l| l["json"].get(id)).unwrap();
        if entry.to_string().contains("execution_interrupted") {
            // It was interrupted in the recording: do the same once it runs.
            assert!(
                eventually(Duration::from_secs(30), || async {
                    r.sim.stats().running.as_deref() == Some(ours.as_str())
                })
                .await
            );
            post_json(
                &r.client,
                &format!("{}/interrupt", r.sim.url()),
                &json!({"prompt_id": ours}),
            )
            .await;
        }
        r.wait_idle().await;
    }
    assert!(entries.len() >= 3, "the recording shows at least three history entries");
    r.run(&lines, &raw()).await;
    r.assert_ok();
    let newest = r.reply("max_items=2", 0).json();
    assert_eq!(newest.as_object().unwrap().len(), 2);
    let oldest = r.reply("max_items=1&offset=0", 0).json();
    assert_eq!(oldest.as_object().unwrap().keys().next(), Some(&r.ids[&entries[0].1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_prompt_id() {
    let r = replay("client_prompt_id", raw()).await;
    r.assert_ok();
    assert_eq!(r.reply("/prompt", 2).json()["prompt_id"], "blender-job-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_same_client_id() {
    let r = replay("reconnect_same_client_id", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_client_id_race() {
    let r = replay("duplicate_client_id_race", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_id_broadcast() {
    let r = replay("no_client_id_broadcast", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_isolation() {
    let r = replay("two_clients_isolation", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_protocol() {
    let r = replay("ws_protocol", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases() {
    let r = replay("edge_cases", raw()).await;
    r.assert_ok();
    assert_eq!(r.reply("/prompt", 0).json()["prompt_id"], "None");
    assert_eq!(r.reply("/prompt", 1).json()["prompt_id"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_misc() {
    let opts = ReplayOptions {
        // Not simulated: frontend/internal listings.
        skip_compare: vec!["/experiment/models", "/internal/folder_paths"],
        ..ReplayOptions::default()
    };
    let r = replay("http_misc", opts).await;
    r.assert_ok();
    assert_eq!(
        r.reply("/system_stats", 0).json()["system"]["argv"],
        json!(["director-link-simulator"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_download() {
    let lines = fixture("view_download");
    let mut r = Replay::new(sim());
    r.setup_prompt("setup", &success_prompt_body("nobody")).await;
    r.wait_idle().await;
    // The simulator has no WebP encoder: `preview=webp` is answered with a JPEG.
    let opts = ReplayOptions {
        skip_compare: vec!["preview=webp"],
        ..ReplayOptions::default()
    };
    r.run(&lines, &opts).await;
    r.assert_ok();
    let rgb = r.reply("channel=rgb", 0);
    assert_eq!(rgb.header("Content-Type").as_deref(), Some("image/png"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_image() {
    let mut opts = raw();
    // The recorded files: two different 32x24 PNGs and an RGBA mask of the same size.
    opts.file_bytes.insert(95, png_bytes(32, 24, [200, 10, 10], None));
    opts.file_bytes.insert(94, png_bytes(32, 24, [10, 200, 10], None));
    opts.file_bytes.insert(99, png_bytes(32, 24, [0, 0, 0], Some(128)));
    let r = replay("upload_image", opts).await;
    r.assert_ok();
    assert_eq!(r.reply("/upload/image", 2).json()["name"], "dl_upload_c34153 (1).png");
    assert!(r.sim.input_dir().join("clipspace/clipspace-mask-c34153.png").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_animated_and_ws_image() {
    let r = replay("outputs_animated_and_ws_image", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subgraph_ids_and_partial() {
    let r = replay("subgraph_ids_and_partial", raw()).await;
    r.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart() {
    let opts = ReplayOptions {
        restart_down: 1.0,
        ..ReplayOptions::default()
    };
    let r = replay("server_restart", opts).await;
    r.assert_ok();
    assert_eq!(r.sim.stats().running, None);
}

/// Guards against a recording that nothing replays (or a folder that went missing): every `*.jsonl` in
/// `tests/fixtures/comfyui` is named by a test of this file, and every name used here has its file.
#[test]
fn every_recorded_case_is_replayed() {
    let source = include_str!("sim_fixtures.rs");
    let mut cases: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures_dir().display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".jsonl").map(str::to_string))
        .collect();
    cases.sort();
    assert!(cases.len() >= 23, "the 23 recorded ComfyUI cases, found {cases:?}");
    let unreplayed: Vec<&String> = cases
        .iter()
        .filter(|c| !source.contains(&format!("replay(\"{c}\"")) && !source.contains(&format!("fixture(\"{c}\")")))
        .collect();
    assert!(unreplayed.is_empty(), "recordings no test replays: {unreplayed:?}");
    for used in source.split("replay(\"").chain(source.split("fixture(\"")).skip(1) {
        let name = used.split('"').next().unwrap_or_default();
        if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !name.is_empty() {
            assert!(cases.iter().any(|c| c == name), "{name}.jsonl is replayed but missing");
        }
    }
}
