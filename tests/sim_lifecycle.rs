//! Start/stop: loopback only, named threads that are gone after `stop()`, the temporary folder removed,
//! dropping inside an async context. One test in its own binary, so other simulators do not interfere.
#![allow(clippy::unwrap_used)]

use director_link::sim::{SimConfig, Simulator};
use std::time::Duration;

fn sim_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|rd| {
            rd.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .filter(|n| n.starts_with("dl-sim"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn start_stop_cleanly() {
    let mut sim = Simulator::start(SimConfig {
        time_scale: 0.1,
        ..SimConfig::default()
    })
    .unwrap();
    let port = sim.port();
    assert_eq!(sim.url(), format!("http://127.0.0.1:{port}"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // Bound to 127.0.0.1 only: another local address of this machine is not served.
    if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if s.connect("192.0.2.1:9").is_ok() {
            if let Ok(addr) = s.local_addr() {
                if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
                    let other = std::net::SocketAddr::new(addr.ip(), port);
                    assert!(std::net::TcpStream::connect_timeout(&other, Duration::from_millis(500)).is_err());
                }
            }
        }
    }
    if std::path::Path::new("/proc/self/task").exists() {
        let names = sim_threads();
        assert!(names.iter().any(|n| n == "dl-sim-main"), "{names:?}");
        assert!(names.iter().any(|n| n == "dl-sim-worker"), "{names:?}");
    }
    let root = sim.output_dir().parent().unwrap().to_path_buf();
    assert!(root.is_dir());
    sim.stop();
    sim.stop(); // idempotent
    assert!(!sim.is_running());
    assert!(!root.exists(), "temporary folder removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens any more"
    );
    assert!(sim_threads().is_empty(), "threads left: {:?}", sim_threads());
    assert!(
        sim.restart(0.1).is_err(),
        "faults on a stopped simulator are errors, not panics"
    );

    // Dropping inside an async context (a test runtime) must neither panic nor hang.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::start(SimConfig::default()).unwrap();
        let url = format!("{}/system_stats", sim.url());
        let body = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        assert_eq!(body.status().as_u16(), 200);
        drop(sim);
    });
    assert!(sim_threads().is_empty(), "threads left: {:?}", sim_threads());

    // A port that is taken gives a clear error.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let err = Simulator::start(SimConfig {
        port: taken,
        ..SimConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.code(), "connection_failed");
    assert!(err.message.contains(&taken.to_string()), "{}", err.message);
    assert!(Simulator::start(SimConfig {
        time_scale: -1.0,
        ..SimConfig::default()
    })
    .is_err());
}
