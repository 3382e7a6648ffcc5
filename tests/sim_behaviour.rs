//! Simulator behaviour beyond the recorded cases: HTTP details (keep-alive, 413, Range, HEAD, 404/405),
//! execution details (heap order, cache, interrupts between nodes, SaveImageWebsocket, LoadImage of an
//! upload), time scaling and the WebSocket limits.
#![allow(clippy::unwrap_used)]

mod sim_support;

use director_link::sim::{SimConfig, Simulator};
use serde_json::{json, Value};
use sim_support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn raw_http(port: u16, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    // Two pipelined requests on one connection, the second asking to close: both answered, then EOF.
    let text = raw_http(
        sim.port(),
        b"GET /prompt HTTP/1.1\r\nHost: x\r\n\r\nGET /api/features HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("{\"exec_info\": {\"queue_remaining\": 0}}"));
    assert!(text.contains("\"max_upload_size\": 104857600"));
    assert!(text.contains("Connection: close"));
    assert!(text.contains("Content-Type: application/json; charset=utf-8"));
    // Bodyless 200: no Content-Type.
    let text = raw_http(
        sim.port(),
        b"POST /interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Content-Length: 0\r\n"),
        "{text}"
    );
    assert!(!text.contains("Content-Type"), "{text}");
    // HEAD: headers of the GET, no body.
    let text = raw_http(
        sim.port(),
        b"HEAD /system_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
}

#[test]
fn body_limit_answers_413_and_bad_json_500() {
    let sim = Simulator::start(SimConfig {
        max_upload_size: 1000,
        ..SimConfig::default()
    })
    .unwrap();
    let body = vec![b'a'; 1001];
    let mut req = format!(
        "POST /prompt HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend(&body);
    let text = raw_http(sim.port(), &req);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.contains("Maximum request body size 1000 exceeded"));
    let text = raw_http(
        sim.port(),
        b"POST /prompt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(text.starts_with("HTTP/1.1 500 Internal Server Error"), "{text}");
    assert!(text.ends_with("500 Internal Server Error\n\nServer got itself in trouble"));
    assert!(text.contains("Connection: close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_404_405_and_api_prefix() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let r = get(&c, &format!("{u}/api/nonexistent")).await;
    assert_eq!(
        (r.status, r.header("content-type").as_deref()),
        (404, Some("application/octet-stream"))
    );
    assert_eq!(get(&c, &format!("{u}/interrupt")).await.status, 405);
    assert_eq!(
        get(&c, &format!("{u}/api/object_info/EmptyImage")).await.json()["EmptyImage"]["output"],
        json!(["IMAGE"])
    );
    assert_eq!(get(&c, &format!("{u}/object_info/NoSuchNode")).await.json(), json!({}));
    let stats = get(&c, &format!("{u}/api/system_stats")).await.json();
    assert_eq!(stats["system"]["comfyui_version"], "0.3.64");
    assert_eq!(stats["system"]["argv"], json!(["director-link-simulator"]));
    let r = send(
        c.post(format!("{u}/prompt"))
            .header("Origin", "http://evil.example")
            .json(&json!({"prompt": {}})),
    )
    .await;
    assert_eq!(r.status, 403);
    // A missing prompt is 400 but still advances the counter.
    let r = post_json(&c, &format!("{u}/prompt"), &json!({"client_id": "x"})).await;
    assert_eq!(r.json()["error"]["type"], "no_prompt");
    let r = post_json(
        &c,
        &format!("{u}/prompt"),
        &json!({"prompt": {"1": {"class_type": "AcceptanceText", "inputs": {"text": "t"}}}}),
    )
    .await;
    assert_eq!(r.json()["number"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_range_and_history_paging() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let ws = Ws::connect(&ws_url(&sim, "v")).await;
    let body = json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 255}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sub/dir/x"}},
    }, "client_id": "v", "prompt_id": "a b/c"});
    post_json(&c, &format!("{u}/prompt"), &body).await;
    let done = ws
        .wait_type("executed", Some("a b/c"), Duration::from_secs(30))
        .await
        .unwrap();
    let images = done["data"]["output"]["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[1],
        json!({"filename": "x_00002_.png", "subfolder": "sub/dir", "type": "output"})
    );
    let file = std::fs::read(sim.output_dir().join("sub/dir/x_00001_.png")).unwrap();
    let view = format!("{u}/view?filename=x_00001_.png&subfolder=sub/dir&type=output");
    let r = send(c.get(&view).header("Range", "bytes=0-7")).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &file[..8]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 0-7/{}", file.len())));
    let r = send(c.get(&view).header("Range", "bytes=8-")).await;
    assert_eq!(r.body, &file[8..]);
    assert_eq!(send(c.get(&view).header("Range", "bytes=99999-")).await.status, 416);
    assert_eq!(
        get(
            &c,
            &format!("{u}/view?filename=x_00001_.png&subfolder=../..&type=output")
        )
        .await
        .status,
        403
    );
    assert_eq!(get(&c, &format!("{u}/view?filename=..%2Fx.png")).await.status, 400);
    // The PNG carries the prompt like ComfyUI's (tEXt "prompt").
    assert!(file.windows(6).any(|w| w == b"prompt"));
    // History: percent-encoded id, paging.
    ws.wait_type("execution_success", Some("a b/c"), Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let h = get(&c, &format!("{u}/history/a%20b%2Fc")).await.json();
    assert_eq!(h["a b/c"]["status"]["status_str"], "success");
    for n in 0..3 {
        let p = json!({"prompt": {"1": {"class_type": "AcceptanceText", "inputs": {"text": format!("t{n}")}}}, "prompt_id": format!("p{n}")});
        post_json(&c, &format!("{u}/prompt"), &p).await;
    }
    assert!(eventually(Duration::from_secs(30), || async { sim.stats().prompts_executed == 4 }).await);
    let keys = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(get(&c, &format!("{u}/history?max_items=2")).await.json()),
        ["p1", "p2"]
    );
    assert_eq!(
        keys(get(&c, &format!("{u}/history?max_items=2&offset=1")).await.json()),
        ["p0", "p1"]
    );
    assert_eq!(get(&c, &format!("{u}/history?max_items=x")).await.status, 500);
    post_json(&c, &format!("{u}/history"), &json!({"delete": ["p0"]})).await;
    assert_eq!(
        keys(get(&c, &format!("{u}/history")).await.json()),
        ["a b/c", "p1", "p2"]
    );
    post_json(&c, &format!("{u}/history"), &json!({"clear": true})).await;
    assert_eq!(get(&c, &format!("{u}/history")).await.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_order_front_and_number() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let ws = Ws::connect(&ws_url(&sim, "h")).await;
    let slow = |id: &str, extra: Value| {
        let mut b = json!({"prompt": {"20": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 0.5, "nonce": 1}}}, "client_id": "h", "prompt_id": id});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    post_json(&c, &format!("{u}/prompt"), &slow("A", json!({}))).await;
    ws.wait_type("execution_start", Some("A"), Duration::from_secs(30))
        .await
        .unwrap();
    post_json(&c, &format!("{u}/prompt"), &slow("B", json!({}))).await;
    let r = post_json(&c, &format!("{u}/prompt"), &slow("C", json!({"front": true}))).await;
    assert_eq!(r.json()["number"], -2);
    let r = post_json(&c, &format!("{u}/prompt"), &slow("D", json!({"number": 5}))).await;
    assert_eq!(r.json()["number"], json!(5.0));
    for id in ["C", "B", "D"] {
        assert!(
            ws.wait_type("execution_start", Some(id), Duration::from_secs(10))
                .await
                .is_some(),
            "{id} ran"
        );
    }
    ws.wait_type("execution_success", Some("D"), Duration::from_secs(10))
        .await
        .unwrap();
    let starts: Vec<String> = ws
        .texts()
        .await
        .into_iter()
        .filter(|v| v["type"] == "execution_start")
        .map(|v| v["data"]["prompt_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(starts, ["A", "C", "B", "D"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_between_nodes_and_idle_interrupt_is_reset() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let ws = Ws::connect(&ws_url(&sim, "i")).await;
    // An idle global interrupt must not kill the next prompt (the flag resets when a prompt starts).
    send(c.post(format!("{u}/interrupt"))).await;
    let p = json!({"prompt": {
        "10": {"class_type": "AcceptanceProgress", "inputs": {"steps": 3, "step_seconds": 0.3, "width": 8, "height": 8, "send_preview": false, "nonce": 1}},
        "11": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 0.5, "nonce": 1, "image": ["10", 0]}},
    }, "client_id": "i", "prompt_id": "P"});
    post_json(&c, &format!("{u}/prompt"), &p).await;
    // Interrupt during the first node (after its first progress): honoured at the next check.
    ws.wait_type("progress", Some("P"), Duration::from_secs(30))
        .await
        .unwrap();
    post_json(&c, &format!("{u}/interrupt"), &json!({"prompt_id": "P"})).await;
    let m = ws
        .wait_type("execution_interrupted", Some("P"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(m["data"]["node_id"], "10");
    assert_eq!(m["data"]["executed"], json!([]));
    assert!(
        eventually(Duration::from_secs(30), || async {
            get(&c, &format!("{u}/history/P")).await.json().get("P").is_some()
        })
        .await
    );
    let h = get(&c, &format!("{u}/history/P")).await.json();
    assert_eq!(h["P"]["status"]["status_str"], "error");
    assert_eq!(h["P"]["status"]["completed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_reuses_upstream_and_save_websocket_uses_metadata_previews() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let mut ws = Ws::connect(&ws_url(&sim, "m")).await;
    ws.send_text(r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#)
        .await;
    ws.wait_type("feature_flags", None, Duration::from_secs(30))
        .await
        .unwrap();
    let prompt = |w: u32| {
        json!({"prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 2, "color": 0}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": w, "height": 0, "crop": "disabled"}},
            "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
        }, "client_id": "m"})
    };
    let first = post_json(&c, &format!("{u}/prompt"), &prompt(12)).await.json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = ws
        .wait_type("execution_success", Some(&first), Duration::from_secs(30))
        .await;
    assert!(ok.is_some(), "{:?}", ws.texts().await);
    let r = post_json(&c, &format!("{u}/prompt"), &prompt(18)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json()["prompt_id"].as_str().unwrap().to_string();
    let ok = ws
        .wait_type("execution_success", Some(&second), Duration::from_secs(30))
        .await;
    assert!(ok.is_some(), "{:#?}", ws.texts().await);
    let cached = ws
        .texts()
        .await
        .into_iter()
        .filter(|v| v["type"] == "execution_cached")
        .collect::<Vec<_>>();
    assert_eq!(cached[0]["data"]["nodes"], json!([]));
    assert_eq!(
        cached[1]["data"]["nodes"],
        json!(["1"]),
        "EmptyImage unchanged → cached"
    );
    // Full-size PNGs, with metadata since the client negotiated it; no `executed` (no UI).
    let pngs: Vec<Vec<u8>> = ws
        .frames()
        .await
        .into_iter()
        .filter_map(|f| if let Recv::Binary(b) = f { Some(b) } else { None })
        .collect();
    assert_eq!(pngs.len(), 4);
    for b in &pngs {
        assert_eq!(&b[..4], &[0, 0, 0, 4]);
        let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let meta: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
        assert_eq!(meta["image_type"], "image/png");
        assert_eq!(&b[8 + n..12 + n], b"\x89PNG");
    }
    let ihdr_w = |b: &Vec<u8>| {
        let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let png = &b[8 + n..];
        u32::from_be_bytes([png[16], png[17], png[18], png[19]])
    };
    assert_eq!((ihdr_w(&pngs[0]), ihdr_w(&pngs[3])), (12, 18));
    assert!(!ws.texts().await.iter().any(|v| v["type"] == "executed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_load_image_roundtrip() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    let png = png_bytes(10, 7, [10, 20, 30], Some(200));
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png.clone())
                .file_name("in.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("subfolder", "up");
    let r = send(c.post(format!("{u}/upload/image")).multipart(form)).await.json();
    assert_eq!(r, json!({"name": "in.png", "subfolder": "up", "type": "input"}));
    assert_eq!(std::fs::read(sim.input_dir().join("up/in.png")).unwrap(), png);
    // Top-level uploads show up in LoadImage's list.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png.clone()).file_name("top.png"),
    );
    send(c.post(format!("{u}/upload/image")).multipart(form)).await;
    let info = get(&c, &format!("{u}/object_info/LoadImage")).await.json();
    assert_eq!(info["LoadImage"]["input"]["required"]["image"][0], json!(["top.png"]));
    let ws = Ws::connect(&ws_url(&sim, "l")).await;
    let p = json!({"prompt": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "up/in.png"}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }, "client_id": "l"});
    let r = post_json(&c, &format!("{u}/prompt"), &p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let done = ws.wait_type("executed", None, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done["data"]["output"], json!({"text": ["7"]}));
    let bad = json!({"prompt": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }});
    let r = post_json(&c, &format!("{u}/prompt"), &bad).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["node_errors"]["1"]["errors"][0]["type"],
        "custom_validation_failed"
    );
}

/// Two simulators run the same 2 s node side by side, one at scale 0.01 and one at 1.0: the scaled one must be
/// done while the other is still sleeping (order, not elapsed time), and neither may finish before its scaled
/// sleep (a lower bound: a sleep never ends early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_scale_is_applied() {
    let start = |scale: f64| {
        Simulator::start(SimConfig {
            time_scale: scale,
            ..SimConfig::default()
        })
        .unwrap()
    };
    let (fast, slow) = (start(0.01), start(1.0));
    let c = http_client();
    let (ws_fast, ws_slow) = (
        Ws::connect(&ws_url(&fast, "t")).await,
        Ws::connect(&ws_url(&slow, "t")).await,
    );
    let p = json!({"prompt": {"20": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 2.0, "nonce": 1}}}, "client_id": "t"});
    let t = Instant::now();
    let id_slow = post_json(&c, &format!("{}/prompt", slow.url()), &p).await.json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws_slow
        .wait_type("execution_start", Some(&id_slow), Duration::from_secs(10))
        .await
        .unwrap();
    let id_fast = post_json(&c, &format!("{}/prompt", fast.url()), &p).await.json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws_fast
        .wait_type("execution_success", Some(&id_fast), Duration::from_secs(10))
        .await
        .unwrap();
    let fast_took = t.elapsed();
    let slow_so_far: Vec<Value> = ws_slow.texts().await;
    assert!(
        !slow_so_far.iter().any(|v| v["type"] == "execution_success"),
        "the unscaled 2 s node finished before the one scaled to 20 ms"
    );
    ws_slow
        .wait_type("execution_success", Some(&id_slow), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(fast_took >= Duration::from_millis(19), "{fast_took:?}");
    assert!(t.elapsed() >= Duration::from_millis(1990), "{:?}", t.elapsed());
    // Progress once per (node) second, then the final update: 1/2, 2/2 — whatever the scale.
    for ws in [&ws_fast, &ws_slow] {
        let progress = ws.texts().await.into_iter().filter(|v| v["type"] == "progress").count();
        assert_eq!(progress, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_limits_ping_and_generated_sid() {
    let sim = sim();
    let mut ws = Ws::connect(&format!("ws://127.0.0.1:{}/api/ws", sim.port())).await;
    let first = ws.wait_type("status", None, Duration::from_secs(30)).await.unwrap();
    let sid = first["data"]["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 32);
    assert!(sid.chars().all(|ch| ch.is_ascii_hexdigit()));
    use futures_util::SinkExt;
    ws.sink
        .send(tokio_tungstenite::tungstenite::Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    // Exactly 4 MiB is allowed; one byte more closes with 1009.
    ws.send_text(&"y".repeat(4 * 1024 * 1024)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ws.snapshot().await.iter().all(|r| !matches!(r, Recv::Closed(_))));
    // The server may stop reading mid-frame, so the send itself can fail.
    let _ = ws
        .sink
        .send(tokio_tungstenite::tungstenite::Message::text(
            "y".repeat(4 * 1024 * 1024 + 1),
        ))
        .await;
    assert_eq!(ws.closed(Duration::from_secs(30)).await, Some(Some(1009)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_exceptions_and_deep_chains() {
    let sim = sim();
    let c = http_client();
    let u = sim.url();
    // The output node itself links to a missing node: exception_during_validation under that node.
    let p = json!({"prompt": {"3": {"class_type": "PreviewImage", "inputs": {"images": ["99", 0]}}}});
    let r = post_json(&c, &format!("{u}/prompt"), &p).await.json();
    assert_eq!(r["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(r["error"]["details"], "Exception when validating node: '99'");
    let e = &r["node_errors"]["3"]["errors"][0];
    assert_eq!(
        (e["type"].as_str(), e["extra_info"]["exception_type"].as_str()),
        (Some("exception_during_validation"), Some("KeyError"))
    );
    // A link slot past the node's outputs: IndexError, filed under the consumer's upstream like ComfyUI.
    let p = json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 3]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }});
    let r = post_json(&c, &format!("{u}/prompt"), &p).await.json();
    assert_eq!(
        r["node_errors"]["2"]["errors"][0]["details"],
        "tuple index out of range"
    );
    // A very long chain fails like Python's recursion limit instead of overflowing a stack.
    let chain = |n: usize| {
        let mut prompt = serde_json::Map::new();
        prompt.insert(
            "0".into(),
            json!({"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}}),
        );
        for i in 1..n {
            prompt.insert(
                i.to_string(),
                json!({"class_type": "ImageInvert", "inputs": {"image": [(i - 1).to_string(), 0]}}),
            );
        }
        prompt.insert(
            "out".into(),
            json!({"class_type": "PreviewImage", "inputs": {"images": [(n - 1).to_string(), 0]}}),
        );
        json!({"prompt": prompt, "client_id": "deep"})
    };
    let r = post_json(&c, &format!("{u}/prompt"), &chain(1500)).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("RecursionError"),
        "{}",
        &r.text()[..300.min(r.text().len())]
    );
    let ws = Ws::connect(&ws_url(&sim, "deep")).await;
    let r = post_json(&c, &format!("{u}/prompt"), &chain(100)).await;
    assert_eq!(r.status, 200);
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    assert!(ws
        .wait_type("execution_success", Some(&id), Duration::from_secs(20))
        .await
        .is_some());
}
