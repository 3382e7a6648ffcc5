//! Each path that used to leave a job unfinished, or ended it for a false reason, against the ComfyUI simulator:
//! a removed service, a closed hub, a cancel while a UI workflow is converted, an address corrected after jobs
//! were submitted, and a job tracked after a reopen that was never sent.
#![allow(clippy::unwrap_used)]

use director_link::event::{EventKind, JobState};
use director_link::hub::{Hub, HubConfig};
use director_link::service::BackoffPolicy;
use director_link::sim::{SimConfig, Simulator};
use serde_json::{json, Value};
use std::time::Duration;

fn hub(out: &std::path::Path) -> Hub {
    Hub::new(HubConfig {
        output_dir: out.to_path_buf(),
        heartbeat: Duration::from_millis(500),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..BackoffPolicy::default()
        },
        poll_interval: Duration::from_millis(100),
        ..HubConfig::default()
    })
    .unwrap()
}

fn sim() -> Simulator {
    Simulator::start(SimConfig {
        time_scale: 1.0,
        ..SimConfig::default()
    })
    .unwrap()
}

fn slow(nonce: u64) -> Value {
    json!({"1": {"class_type": "AcceptanceSlow", "inputs": {"seconds": 30.0, "nonce": nonce}}})
}

fn quick(nonce: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": nonce}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl_test/end"}}
    })
}

fn ui_invert() -> Value {
    json!({
        "last_node_id": 3, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [16, 16, 1, 77], "properties": {}},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": [], "properties": {}},
            {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "widgets_values": ["dl_test/ui"], "properties": {}}
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4
    })
}

/// Polls until `done` holds for the events so far (bounded; fails with what arrived).
fn collect(hub: &Hub, what: &str, done: impl Fn(&[EventKind]) -> bool) -> Vec<EventKind> {
    let mut got = Vec::new();
    for _ in 0..600 {
        got.extend(hub.poll(1000).into_iter().map(|e| e.kind));
        if done(&got) {
            return got;
        }
        hub.wait_for_events(Duration::from_millis(50));
    }
    panic!(
        "{what}: not seen; got {:?}",
        got.iter().map(EventKind::name).collect::<Vec<_>>()
    );
}

fn terminal_of<'a>(events: &'a [EventKind], id: &str) -> Vec<&'a EventKind> {
    events
        .iter()
        .filter(|k| k.is_terminal() && k.job_id() == Some(id))
        .collect()
}

fn failed_code(events: &[EventKind], id: &str) -> Option<String> {
    terminal_of(events, id).first().and_then(|k| match k {
        EventKind::JobFailed { error, .. } => Some(error.code.clone()),
        _ => None,
    })
}

fn posts_of(sim: &Simulator, id: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/prompt")
        .filter(|r| r.json.get("prompt_id").and_then(Value::as_str) == Some(id))
        .count()
}

fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn started(id: &str) -> impl Fn(&[EventKind]) -> bool + '_ {
    move |evs| {
        evs.iter()
            .any(|k| matches!(k, EventKind::NodeStarted { job_id, .. } if job_id == id))
    }
}

#[test]
fn removing_a_service_ends_its_running_and_waiting_jobs_service_removed() {
    let out = tempfile::tempdir().unwrap();
    let sim = sim();
    let other_sim = self::sim();
    let hub = hub(out.path());
    hub.add_service("comfyui", &sim.url(), Some("a"), None).unwrap();
    hub.add_service("comfyui", &other_sim.url(), Some("b"), None).unwrap();
    let running = hub.submit("a", slow(1), Vec::new(), None).unwrap();
    collect(&hub, "the slow job running", started(&running));
    let waiting = hub.submit("a", slow(2), Vec::new(), None).unwrap();
    let other = hub.submit("b", quick(3), Vec::new(), None).unwrap();
    hub.remove_service("a").unwrap();
    // Ended at once, in the call: no need to wait for the actor.
    assert_eq!(hub.job_state(&running), Some(JobState::Failed));
    assert_eq!(hub.job_state(&waiting), Some(JobState::Failed));
    let evs = collect(&hub, "the other service's job", |e| !terminal_of(e, &other).is_empty());
    assert_eq!(failed_code(&evs, &running).as_deref(), Some("service_removed"));
    assert_eq!(failed_code(&evs, &waiting).as_deref(), Some("service_removed"));
    assert!(matches!(
        terminal_of(&evs, &other)[..],
        [EventKind::JobCompleted { .. }]
    ));
    assert_eq!(terminal_of(&evs, &running).len(), 1);
    // A cancel of an ended job is a no-op; a submit to the removed name is refused, nothing registered.
    hub.cancel(&running).unwrap();
    assert!(hub.submit("a", quick(4), Vec::new(), None).is_err());
    hub.close();
    let after: Vec<_> = hub.poll(1000).into_iter().map(|e| e.kind).collect();
    assert!(terminal_of(&after, &running).is_empty(), "no second terminal event");
}

#[test]
fn closing_the_hub_ends_every_unfinished_job_hub_closed() {
    let out = tempfile::tempdir().unwrap();
    let sim = sim();
    let hub = hub(out.path());
    hub.add_service("comfyui", &sim.url(), Some("a"), None).unwrap();
    hub.add_service("comfyui", &dead_url(), Some("nowhere"), None).unwrap();
    let running = hub.submit("a", slow(5), Vec::new(), None).unwrap();
    collect(&hub, "the slow job running", started(&running));
    let unsent = hub.submit("nowhere", quick(6), Vec::new(), None).unwrap();
    hub.close();
    let evs: Vec<_> = hub.poll(1000).into_iter().map(|e| e.kind).collect();
    assert_eq!(failed_code(&evs, &running).as_deref(), Some("hub_closed"));
    assert_eq!(failed_code(&evs, &unsent).as_deref(), Some("hub_closed"));
    assert_eq!(hub.job_state(&unsent), Some(JobState::Failed));
    assert!(hub
        .wait(&running, Some(Duration::from_secs(1)))
        .is_ok_and(|j| j.state == JobState::Failed));
}

#[test]
fn a_cancel_while_the_workflow_is_converted_ends_it_and_it_is_never_posted() {
    let out = tempfile::tempdir().unwrap();
    let sim = sim();
    let hub = hub(out.path());
    hub.add_service("comfyui", &sim.url(), Some("a"), None).unwrap();
    collect(&hub, "connected", |e| {
        e.iter()
            .any(|k| matches!(k, EventKind::ServiceStateChanged { state, .. } if state.as_str() == "connected"))
    });
    // The node list cannot arrive while the server stalls: the job waits in conversion.
    sim.stall(1.0).unwrap();
    let id = hub.submit("a", ui_invert(), Vec::new(), None).unwrap();
    hub.cancel(&id).unwrap();
    assert_eq!(
        hub.job_state(&id),
        Some(JobState::Cancelled),
        "cancelled at once, not sent to the server"
    );
    // After the stall the node list arrives; a later job is posted and runs — the cancelled one never was.
    let after = hub.submit("a", ui_invert(), Vec::new(), None).unwrap();
    let evs = collect(&hub, "the later job", |e| !terminal_of(e, &after).is_empty());
    assert!(matches!(
        terminal_of(&evs, &after)[..],
        [EventKind::JobCompleted { .. }]
    ));
    assert!(matches!(terminal_of(&evs, &id)[..], [EventKind::JobCancelled { .. }]));
    assert_eq!(posts_of(&sim, &id), 0);
    assert_eq!(posts_of(&sim, &after), 1);
}

#[test]
fn a_corrected_address_sends_the_waiting_jobs_once_in_order() {
    let out = tempfile::tempdir().unwrap();
    let sim = sim();
    let hub = hub(out.path());
    // The Blender case: a typo in the address, jobs submitted, then the address corrected.
    hub.add_service("comfyui", &dead_url(), Some("gpu"), None).unwrap();
    let ids: Vec<String> = (0..3)
        .map(|n| hub.submit("gpu", quick(10 + n), Vec::new(), None).unwrap())
        .collect();
    collect(&hub, "the jobs waiting for the server", |e| {
        ids.iter().all(|id| {
            e.iter()
                .any(|k| matches!(k, EventKind::JobQueued { job_id, pending_connection: true, .. } if job_id == id))
        })
    });
    let changed = hub.set_service_url("gpu", &sim.url()).unwrap();
    assert_eq!(changed.url.trim_end_matches('/'), sim.url());
    assert_eq!(hub.service("gpu").map(|s| s.url), Some(changed.url));
    let evs = collect(&hub, "the jobs finished", |e| {
        ids.iter().all(|id| !terminal_of(e, id).is_empty())
    });
    for id in &ids {
        assert!(
            matches!(terminal_of(&evs, id)[..], [EventKind::JobCompleted { .. }]),
            "{id}"
        );
        assert_eq!(posts_of(&sim, id), 1, "{id} posted once");
    }
    let order: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/prompt")
        .filter_map(|r| r.json.get("prompt_id").and_then(Value::as_str).map(str::to_string))
        .collect();
    assert_eq!(order, ids, "posted in submission order");
    // Moving a service whose job is already on the server ends that job with the true reason.
    let running = hub.submit("gpu", slow(20), Vec::new(), None).unwrap();
    collect(&hub, "the slow job running", started(&running));
    hub.set_service_url("gpu", &dead_url()).unwrap();
    let evs = collect(&hub, "the moved-away job", |e| !terminal_of(e, &running).is_empty());
    assert_eq!(failed_code(&evs, &running).as_deref(), Some("service_removed"));
    assert!(
        hub.set_service_url("gpu", "http://[bad").is_err(),
        "a bad address is refused"
    );
    assert!(
        hub.set_service_url("nope", &sim.url()).is_err(),
        "an unknown service is refused"
    );
}

#[test]
fn a_tracked_job_the_server_does_not_know_fails_for_the_true_reason() {
    let out = tempfile::tempdir().unwrap();
    let sim = sim();
    let hub = hub(out.path());
    hub.add_service("comfyui", &sim.url(), Some("a"), None).unwrap();
    let never_sent = uuid_like(1);
    let lost = uuid_like(2);
    hub.track_with("a", &never_sent, None, false).unwrap();
    hub.track_with("a", &lost, None, true).unwrap();
    let evs = collect(&hub, "both tracked jobs", |e| {
        !terminal_of(e, &never_sent).is_empty() && !terminal_of(e, &lost).is_empty()
    });
    assert_eq!(failed_code(&evs, &never_sent).as_deref(), Some("not_posted"));
    assert_eq!(failed_code(&evs, &lost).as_deref(), Some("server_restarted"));
    assert_eq!(
        posts_of(&sim, &never_sent) + posts_of(&sim, &lost),
        0,
        "tracking never posts"
    );
}

fn uuid_like(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}
