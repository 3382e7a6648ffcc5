//! ComfyUI's REST calls against scripted servers on 127.0.0.1 that answer what a healthy ComfyUI never does: a
//! refused submission for each reason a proxy or server gives (401, 403, 404, 413, 500, 502), an accepted one whose
//! answer is not JSON, a web page where JSON belongs, a result that is not there, uploads that fail, and the
//! cancel paths that must never stop another client's prompt (a server that keeps the prompt queued, a prompt
//! that starts between two looks, an old server running several prompts, an old server on which ours ended just
//! before the interrupt). Each asserts the code and the words the user reads.
#![allow(clippy::unwrap_used)]

mod scripted;

use director_link::comfy::http::{CancelOutcome, ComfyHttp, SubmitOutcome};
use director_link::endpoint::Endpoint;
use director_link::ErrorCode;
use scripted::{answer, json, runtime, Request, Server};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn http(server: &Server, token: Option<&str>) -> ComfyHttp {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    ComfyHttp::new(
        client,
        Endpoint::parse(&server.url, 8188).unwrap(),
        token.map(String::from),
    )
}

fn prompt() -> Value {
    json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}})
}

#[test]
fn refused_submissions_say_why_in_the_users_words() {
    let status = Arc::new(Mutex::new(String::new()));
    let current = status.clone();
    let srv = Server::start(Arc::new(move |_: &Request, s: TcpStream| {
        let st = current.lock().unwrap().clone();
        answer(s, &st, "text/html", &[], b"<html>no</html>");
    }));
    let comfy = http(&srv, Some("tok-1"));
    let rt = runtime();
    let cases = [
        ("401 Unauthorized", "auth_failed", "set a token for this service"),
        ("403 Forbidden", "auth_failed", "origin check or a proxy's auth"),
        ("404 Not Found", "bad_request", "no ComfyUI prompt endpoint at"),
        (
            "413 Payload Too Large",
            "bad_request",
            "larger than the server's max upload size",
        ),
        ("500 Internal Server Error", "server_error", "is it API format JSON?"),
        ("502 Bad Gateway", "server_error", "HTTP 502"),
    ];
    for (st, code, words) in cases {
        *status.lock().unwrap() = st.to_string();
        let outcome = rt.block_on(comfy.submit(&prompt(), "p-1", "c-1")).unwrap();
        let SubmitOutcome::Rejected(err) = outcome else {
            panic!("{st}: not rejected: {outcome:?}")
        };
        assert_eq!(err.code, code, "{st}: {}", err.message);
        assert!(err.message.contains(words), "{st}: {}", err.message);
        assert!(!err.message.contains("tok-1"), "the token never shows: {}", err.message);
    }
    let sent = srv.requests();
    assert_eq!(sent.len(), cases.len());
    assert!(sent.iter().all(|r| r.header("authorization") == Some("Bearer tok-1")));
    assert_eq!(sent[0].json()["prompt_id"], "p-1");
    assert_eq!(sent[0].json()["client_id"], "c-1");
}

#[test]
fn a_rejection_lists_each_node_problem() {
    let srv = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        json(
            s,
            "400 Bad Request",
            &json!({
                "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
                "node_errors": {"7": {"class_type": "KSampler", "errors": [
                    {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                     "details": "steps: 0 < 1", "extra_info": {"input_name": "steps"}}
                ]}},
            }),
        )
    }));
    let outcome = runtime()
        .block_on(http(&srv, None).submit(&prompt(), "p", "c"))
        .unwrap();
    let SubmitOutcome::Rejected(err) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(err.code, "validation_failed");
    assert_eq!(err.exception_type.as_deref(), Some("prompt_outputs_failed_validation"));
    assert!(
        err.message
            .contains("node 7 (KSampler) steps: Value 0 smaller than min of 1 steps: 0 < 1"),
        "{}",
        err.message
    );
    assert_eq!(err.node_errors.len(), 1);
    assert_eq!(err.node_errors[0].input.as_deref(), Some("steps"));
}

#[test]
fn answers_that_are_not_comfyuis_are_named_as_such() {
    // A web server where ComfyUI should be: 200 with a page for every path.
    let page = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(s, "200 OK", "text/html", &[], b"<html>welcome</html>")
    }));
    // JSON, but not ComfyUI's: a system_stats without `system`, an accepted prompt that is a list.
    let other = Server::start(Arc::new(|req: &Request, s: TcpStream| match req.path.as_str() {
        "/system_stats" => json(s, "200 OK", &json!({"status": "ok"})),
        "/prompt" => json(s, "200 OK", &json!(["queued"])),
        p if p.starts_with("/history/") => json(s, "200 OK", &json!({"p-1": {"outputs": "none", "status": 3}})),
        _ => json(s, "503 Service Unavailable", &json!({"error": "starting"})),
    }));
    let rt = runtime();
    let comfy = http(&page, None);
    let err = rt.block_on(comfy.system_stats()).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService);
    assert!(
        err.message.contains("is this really a ComfyUI server at"),
        "{}",
        err.message
    );
    let err = rt.block_on(comfy.object_info()).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService, "{}", err.message);
    let err = rt.block_on(comfy.submit(&prompt(), "p", "c")).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert!(err
        .message
        .contains("accepted the workflow but its answer is not the expected JSON"));

    let comfy = http(&other, None);
    let err = rt.block_on(comfy.system_stats()).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService);
    assert!(
        err.message.contains("it is not ComfyUI (no system stats)"),
        "{}",
        err.message
    );
    let err = rt.block_on(comfy.submit(&prompt(), "p", "c")).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol, "{}", err.message);
    let err = rt.block_on(comfy.history("p-1")).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert!(err.message.starts_with("unexpected history entry"), "{}", err.message);
    assert_eq!(
        rt.block_on(comfy.history("other")).unwrap(),
        None,
        "an id the history lacks"
    );
    let err = rt.block_on(comfy.queue()).unwrap_err();
    assert_eq!(err.status(), Some(503));
    // A cancel on a server whose queue cannot be read fails and names the read.
    let err = rt.block_on(comfy.delete_pending("p-1")).unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(
        err.message.contains("removing the job from the queue"),
        "{}",
        err.message
    );
}

#[test]
fn missing_results_and_failed_uploads_are_errors_not_files() {
    let srv = Server::start(Arc::new(|req: &Request, s: TcpStream| match req.path.as_str() {
        p if p.starts_with("/view") => json(s, "404 Not Found", &json!({"error": "file not found"})),
        "/upload/image" if req.body.windows(4).any(|w| w == b"FAIL") => {
            answer(s, "500 Internal Server Error", "text/plain", &[], b"disk full")
        }
        "/upload/image" if req.body.windows(4).any(|w| w == b"HTML") => {
            answer(s, "200 OK", "text/html", &[], b"<html>ok</html>")
        }
        "/upload/image" => json(
            s,
            "200 OK",
            &json!({"name": "shot_1.png", "subfolder": "director", "type": "input"}),
        ),
        _ => json(s, "404 Not Found", &json!({})),
    }));
    let comfy = http(&srv, None);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let err = rt
        .block_on(comfy.download("gone.png", "", "output", dir.path(), "gone.png"))
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{}", err.message);
    assert!(err.message.contains("downloading gone.png"), "{}", err.message);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is left behind"
    );

    let err = rt.block_on(comfy.upload_image("a.png", b"FAIL".to_vec())).unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.message.contains("uploading an image"), "{}", err.message);
    let err = rt.block_on(comfy.upload_image("a.png", b"HTML".to_vec())).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    let name = rt.block_on(comfy.upload_image("a.png", b"PNG".to_vec())).unwrap();
    assert_eq!(name, "director/shot_1.png", "the server's name, in its subfolder");
}

/// A ComfyUI whose queue is scripted: `queues` are the successive `/queue` answers (the last one repeats),
/// `version` its `comfyui_version`, `history` its `/history/{id}` answer. Records interrupts and deletes.
struct QueueScript {
    server: Server,
    interrupts: Arc<AtomicUsize>,
    deletes: Arc<AtomicUsize>,
}

fn queue_item(n: u64, id: &str) -> Value {
    json!([n, id, {}, {"client_id": "someone"}, []])
}

fn queue_script(version: &'static str, queues: Vec<Value>, history: Value) -> QueueScript {
    let (interrupts, deletes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (i, d) = (interrupts.clone(), deletes.clone());
    let looks = Arc::new(AtomicUsize::new(0));
    let server = Server::start(Arc::new(move |req: &Request, s: TcpStream| {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/system_stats") => json(
                s,
                "200 OK",
                &json!({"system": {"comfyui_version": version, "argv": []}, "devices": []}),
            ),
            ("GET", "/queue") => {
                let n = looks.fetch_add(1, Ordering::SeqCst).min(queues.len() - 1);
                json(s, "200 OK", &queues[n]);
            }
            ("POST", "/queue") => {
                d.fetch_add(1, Ordering::SeqCst);
                json(s, "200 OK", &json!({}));
            }
            ("POST", "/interrupt") => {
                i.fetch_add(1, Ordering::SeqCst);
                json(s, "200 OK", &json!({}));
            }
            ("GET", p) if p.starts_with("/history/") => json(s, "200 OK", &history),
            _ => json(s, "404 Not Found", &json!({})),
        }
    }));
    QueueScript {
        server,
        interrupts,
        deletes,
    }
}

#[test]
fn a_server_that_keeps_the_prompt_queued_is_an_error() {
    let q = json!({"queue_running": [], "queue_pending": [queue_item(1, "ours")]});
    let s = queue_script("0.3.64", vec![q], json!({}));
    let err = runtime()
        .block_on(http(&s.server, None).cancel_prompt("ours"))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HttpStatus);
    assert_eq!(err.message, "the server kept the job in its queue");
    assert_eq!(s.deletes.load(Ordering::SeqCst), 1);
    assert_eq!(s.interrupts.load(Ordering::SeqCst), 0);
}

#[test]
fn a_prompt_that_starts_between_two_looks_is_interrupted_by_id() {
    let before = json!({"queue_running": [queue_item(0, "other")], "queue_pending": [queue_item(1, "ours")]});
    let after = json!({"queue_running": [queue_item(1, "ours")], "queue_pending": []});
    let s = queue_script("0.3.64", vec![before, after], json!({}));
    let outcome = runtime().block_on(http(&s.server, None).cancel_prompt("ours")).unwrap();
    assert_eq!(outcome, CancelOutcome::Interrupting);
    assert_eq!(s.interrupts.load(Ordering::SeqCst), 1);
    let interrupt = s
        .server
        .requests()
        .into_iter()
        .find(|r| r.path == "/interrupt")
        .unwrap();
    assert_eq!(
        interrupt.json()["prompt_id"],
        "ours",
        "a targeted interrupt names our prompt"
    );
}

#[test]
fn an_old_server_running_several_prompts_is_never_interrupted() {
    let q = json!({"queue_running": [queue_item(0, "other"), queue_item(1, "ours")], "queue_pending": []});
    let s = queue_script("0.3.40", vec![q], json!({}));
    let err = runtime()
        .block_on(http(&s.server, None).cancel_prompt("ours"))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HttpStatus);
    assert!(
        err.message.contains("so that no one else's job is stopped"),
        "{}",
        err.message
    );
    assert_eq!(
        s.interrupts.load(Ordering::SeqCst),
        0,
        "a global interrupt would stop the other prompt"
    );
}

#[test]
fn on_an_old_server_a_prompt_that_ended_first_is_reported_not_on_server() {
    let running = json!({"queue_running": [queue_item(1, "ours")], "queue_pending": []});
    let idle = json!({"queue_running": [], "queue_pending": []});
    let history =
        json!({"ours": {"outputs": {}, "status": {"status_str": "success", "completed": true, "messages": []}}});
    let s = queue_script("0.3.40", vec![running.clone(), idle.clone()], history);
    let outcome = runtime().block_on(http(&s.server, None).cancel_prompt("ours")).unwrap();
    assert_eq!(outcome, CancelOutcome::NotOnServer);
    assert_eq!(s.interrupts.load(Ordering::SeqCst), 1);

    // Without a history entry, the interrupt is what stopped it.
    let s = queue_script("0.3.40", vec![running, idle], json!({}));
    let outcome = runtime().block_on(http(&s.server, None).cancel_prompt("ours")).unwrap();
    assert_eq!(outcome, CancelOutcome::Interrupting);
}
