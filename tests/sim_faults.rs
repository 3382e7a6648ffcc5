//! The simulator's scripted faults, request log and stats.
#![allow(clippy::unwrap_used)]

mod sim_support;

use serde_json::{json, Value};
use sim_support::*;
use std::time::{Duration, Instant};

fn slow_prompt(client: &str, seconds: f64, nonce: u64) -> Value {
    json!({"prompt": {"20": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": nonce}}}, "client_id": client})
}

fn progress_prompt(client: &str, steps: u32, nonce: u64) -> Value {
    json!({
        "prompt": {
            "10": {"class_type": "AcceptanceProgress", "inputs": {"steps": steps, "step_seconds": 0.2, "width": 16, "height": 16, "send_preview": false, "nonce": nonce}},
            "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
        },
        "client_id": client,
    })
}

/// How long a wait for something that must happen may take: waits return as soon as it happens, so this only
/// bounds a hang (a loaded machine must not turn a slow event into a failure).
const WAIT: Duration = Duration::from_secs(30);

async fn connect_refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_sockets_after_cuts_without_close_frame() {
    let sim = sim();
    let c = http_client();
    let ws = Ws::connect(&ws_url(&sim, "cut")).await;
    assert!(ws.wait_for(WAIT, |r| r.len() == 1).await, "status first");
    sim.drop_sockets_after(3);
    post_json(&c, &format!("{}/prompt", sim.url()), &progress_prompt("cut", 5, 1)).await;
    // Exactly three more frames (status, status, execution_start), then the TCP connection ends (1006).
    assert_eq!(ws.closed(WAIT).await, Some(None));
    let frames = ws.frames().await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(sim.stats().sockets, 0);
    // The prompt itself keeps running and finishes.
    assert!(eventually(WAIT, || async { sim.stats().prompts_executed == 1 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_sockets_now_and_reconnect_works() {
    let sim = sim();
    let a = Ws::connect(&ws_url(&sim, "a")).await;
    let b = Ws::connect(&ws_url(&sim, "b")).await;
    // Each socket is registered once its first frame (status) has been sent to it.
    assert!(a.wait_for(WAIT, |r| !r.is_empty()).await);
    assert!(b.wait_for(WAIT, |r| !r.is_empty()).await);
    assert_eq!(sim.stats().sockets, 2);
    sim.drop_sockets();
    assert_eq!(a.closed(WAIT).await, Some(None));
    assert_eq!(b.closed(WAIT).await, Some(None));
    let again = Ws::connect(&ws_url(&sim, "a")).await;
    assert!(again.wait_type("status", None, WAIT).await.is_some());
    assert_eq!(sim.stats().connections_total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_connections_then_same_port_again() {
    let sim = sim();
    let c = http_client();
    let open = Ws::connect(&ws_url(&sim, "keep")).await;
    assert!(open.wait_for(WAIT, |r| !r.is_empty()).await);
    sim.refuse_connections(0.4).unwrap();
    let t = Instant::now();
    assert!(connect_refused(sim.port()).await);
    // Existing connections are untouched.
    assert_eq!(sim.stats().sockets, 1);
    assert!(
        eventually(WAIT, || async { !connect_refused(sim.port()).await }).await,
        "listening again"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "refused for the whole period: {:?}",
        t.elapsed()
    );
    assert_eq!(get(&c, &format!("{}/system_stats", sim.url())).await.status, 200);
    assert!(sim.refuse_connections(-1.0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_everything_and_comes_back() {
    let sim = sim();
    let c = http_client();
    let ws = Ws::connect(&ws_url(&sim, "r")).await;
    let url = sim.url();
    let running = post_json(&c, &format!("{url}/prompt"), &slow_prompt("r", 30.0, 1))
        .await
        .json()["prompt_id"]
        .clone();
    let pending = post_json(&c, &format!("{url}/prompt"), &slow_prompt("r", 30.0, 2))
        .await
        .json()["prompt_id"]
        .clone();
    assert!(ws.wait_type("executing", running.as_str(), WAIT).await.is_some());
    sim.restart(0.3).unwrap();
    assert!(connect_refused(sim.port()).await, "down right after restart() returns");
    assert_eq!(ws.closed(WAIT).await, Some(None), "1006: no close frame");
    assert!(eventually(WAIT, || async { !connect_refused(sim.port()).await }).await);
    let c2 = http_client();
    assert_eq!(
        get(&c2, &format!("{url}/queue")).await.json(),
        json!({"queue_running": [], "queue_pending": []})
    );
    assert_eq!(get(&c2, &format!("{url}/history")).await.json(), json!({}));
    for id in [&running, &pending] {
        assert_eq!(
            get(&c2, &format!("{url}/history/{}", id.as_str().unwrap()))
                .await
                .json(),
            json!({})
        );
    }
    // A fresh process numbers from 0 again.
    assert_eq!(
        post_json(&c2, &format!("{url}/prompt"), &slow_prompt("r", 0.0, 3))
            .await
            .json()["number"],
        0
    );
    // The vanished prompt never reports anything later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hist = get(&c2, &format!("{url}/history")).await.json();
    assert_eq!(hist.as_object().unwrap().len(), 1);
    assert!(hist.get(running.as_str().unwrap()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_holds_messages_and_answers() {
    let sim = sim();
    let c = http_client();
    let ws = Ws::connect(&ws_url(&sim, "st")).await;
    assert!(ws.wait_for(WAIT, |r| r.len() == 1).await);
    sim.stall(0.6).unwrap();
    let t = Instant::now();
    // The request is read but only answered when the stall ends.
    let r = post_json(&c, &format!("{}/prompt", sim.url()), &progress_prompt("st", 1, 9)).await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(550),
        "answered after {:?}",
        t.elapsed()
    );
    // Nothing was sent during the stall; afterwards the whole run arrives.
    assert!(ws.wait_type("execution_success", None, WAIT).await.is_some());
    let texts = ws.texts().await;
    assert_eq!(texts[0]["type"], "status");
    assert_eq!(texts.last().unwrap()["type"], "executing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_leaves_pings_unanswered() {
    let sim = sim();
    let mut ws = Ws::connect(&ws_url(&sim, "ping")).await;
    assert!(ws.wait_for(WAIT, |r| !r.is_empty()).await);
    // A raw socket would be needed to see the pong itself; a stalled peer must at least not close or answer.
    sim.stall(0.3).unwrap();
    use futures_util::SinkExt;
    ws.sink
        .send(tokio_tungstenite::tungstenite::Message::Ping(b"x".to_vec().into()))
        .await
        .unwrap();
    ws.send_text(r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(ws.frames().await.len(), 1, "no reply while stalled");
    assert!(
        ws.wait_type("feature_flags", None, WAIT).await.is_some(),
        "answered after the stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_of_every_kind_reaches_every_socket() {
    let sim = sim();
    let a = Ws::connect(&ws_url(&sim, "g1")).await;
    let b = Ws::connect(&ws_url(&sim, "g2")).await;
    assert!(b.wait_for(WAIT, |r| !r.is_empty()).await);
    let kinds = [
        "invalid_json",
        "nan_json",
        "unknown_type",
        "wrong_types",
        "truncated_binary",
        "unknown_binary",
        "huge_text",
        "huge_binary",
    ];
    for k in kinds {
        sim.send_garbage(k).unwrap();
    }
    assert!(sim.send_garbage("bogus").is_err());
    for ws in [&a, &b] {
        // 25 garbage frames after the first status.
        assert!(
            ws.wait_for(Duration::from_secs(30), |r| r.len() >= 26).await,
            "{}",
            ws.frames().await.len()
        );
        let frames = ws.frames().await;
        let texts: Vec<String> = frames
            .iter()
            .filter_map(|f| match f {
                Recv::Text(v) => Some(v.to_string()),
                _ => None,
            })
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("not json")),
            "invalid JSON delivered as text"
        );
        assert!(texts.iter().any(|t| t.contains("NaN")), "NaN JSON");
        assert!(texts.iter().any(|t| t.contains("\"abc\"")), "wrong types");
        let bins: Vec<&Vec<u8>> = frames
            .iter()
            .filter_map(|f| if let Recv::Binary(b) = f { Some(b) } else { None })
            .collect();
        assert!(
            bins.iter().any(|b| b.is_empty()) && bins.iter().any(|b| b.len() == 3),
            "truncated frames"
        );
        assert!(bins.iter().any(|b| b.starts_with(&[0, 0, 0, 99])), "unknown event");
        let huge = bins.iter().find(|b| b.len() > 20 << 20).unwrap();
        assert_eq!(&huge[..12], &[0, 0, 0, 1, 0, 0, 0, 2, 0x89, b'P', b'N', b'G']);
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Recv::Text(v) if v["type"] == "dl_sim_huge")),
            "20 MiB text"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_and_stats() {
    let sim = sim();
    let c = http_client();
    let url = sim.url();
    let ws = Ws::connect(&ws_url(&sim, "log")).await;
    let id = post_json(&c, &format!("{url}/prompt"), &slow_prompt("log", 30.0, 5))
        .await
        .json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ws.wait_type("executing", Some(&id), WAIT).await.is_some());
    let st = sim.stats();
    assert_eq!((st.sockets, st.connections_total, st.prompts_received), (1, 1, 1));
    assert_eq!(st.running.as_deref(), Some(id.as_str()));
    send(c.post(format!("{url}/interrupt")).json(&json!({"prompt_id": id}))).await;
    get(&c, &format!("{url}/history?max_items=1")).await;
    let reqs = sim.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ws", "/prompt", "/interrupt", "/history"]);
    assert_eq!(reqs[0].query["clientId"], "log");
    assert_eq!(reqs[2].json, json!({"prompt_id": id}));
    assert_eq!(reqs[3].query["max_items"], "1");
    assert_eq!(reqs[3].json, Value::Null);
    assert!(ws.wait_type("execution_interrupted", Some(&id), WAIT).await.is_some());
    assert!(eventually(WAIT, || async { sim.stats().prompts_executed == 1 }).await);
    let st = sim.stats();
    assert_eq!((st.prompts_executed, st.queue_pending, st.running), (1, 0, None));
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}
