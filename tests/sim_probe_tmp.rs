#![allow(clippy::unwrap_used)]
mod sim_support;
use sim_support::*;
use std::time::Duration;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let sim = sim();
    let c = http_client();
    let ws = Ws::connect(&ws_url(&sim, "x")).await;
    let r = post_json(&c, &format!("{}/prompt", sim.url()), &serde_json::json!({"prompt": {"20": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 30.0, "nonce": 1}}}, "client_id": "x"})).await;
    println!("{}", r.status);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    sim.restart(1.0).unwrap();
    println!("restart took {:?}", t.elapsed());
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", sim.port())).await.is_ok();
        println!("{i} {ok} {:?}", sim.stats());
    }
    drop(ws);
}
