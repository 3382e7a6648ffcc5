//! The OpenAI-compatible client against scripted servers on 127.0.0.1 that answer what LiteLLM's mocks cannot: a
//! stream cut before the model finished, a stream that ends without `[DONE]`, a stream that stops talking, several
//! choices, a 200 answer that is an error or not a completion at all, a server that lists no models or answers
//! `/v1/models` with something else, a `Retry-After` beyond the limit, 5xx then success, and health checks of
//! servers that are not LiteLLM. Each asserts what the user gets: the job's end, its code and its message.
#![allow(clippy::unwrap_used)]

mod scripted;

use director_link::event::{EventKind, ServiceState};
use director_link::openai::http::{ApiKey, OpenAiHttp};
use director_link::openai::service::{ChatRequest, Command, OpenAiConfig, OpenAiService};
use director_link::service::{BackoffPolicy, ServiceStatus};
use director_link::tracker::{Shared, Submission};
use director_link::{ErrorCode, Hub, HubConfig};
use scripted::{answer, hold, json, send_pieces, stream_head, Request, Server};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn hub() -> (Hub, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        output_dir: out.path().to_path_buf(),
        heartbeat: Duration::from_millis(200),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            ..BackoffPolicy::default()
        },
        ..HubConfig::default()
    })
    .unwrap();
    (hub, out)
}

fn request(model: Option<&str>, stream: bool) -> ChatRequest {
    ChatRequest {
        messages: json!([{"role": "user", "content": "a shot list please"}]),
        model: model.map(String::from),
        stream,
        options: serde_json::Map::new(),
        max_retries: 0,
    }
}

fn chunk(content: &str, finish: Option<&str>) -> Vec<u8> {
    let mut choice = json!({"index": 0, "delta": {"content": content}});
    if let Some(f) = finish {
        choice["finish_reason"] = json!(f);
    }
    let body = json!({"id": "c-1", "object": "chat.completion.chunk", "model": "scripted", "choices": [choice]});
    format!("data: {body}\n\n").into_bytes()
}

/// A server whose health and model list are fine and whose chat answer is `chat(request, stream)`.
fn server(chat: impl Fn(&Request, TcpStream) + Send + Sync + 'static) -> Server {
    Server::start(Arc::new(move |req: &Request, stream: TcpStream| {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health/liveliness") => json(stream, "200 OK", &json!("I'm alive!")),
            ("GET", "/v1/models") => json(stream, "200 OK", &json!({"data": [{"id": "scripted"}]})),
            ("POST", "/v1/chat/completions") => chat(req, stream),
            _ => json(stream, "404 Not Found", &json!({"detail": "Not Found"})),
        }
    }))
}

/// Runs one chat to its end; returns the job's snapshot and the events of that job in order.
fn run_chat(hub: &Hub, service: &str, req: ChatRequest) -> (director_link::tracker::JobSnapshot, Vec<EventKind>) {
    let job = hub.chat(service, req, None).unwrap();
    let snap = hub.wait(&job, Some(Duration::from_secs(60))).unwrap();
    let events = hub
        .poll(10_000)
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.job_id() == Some(job.as_str()))
        .collect();
    (snap, events)
}

fn deltas(events: &[EventKind]) -> Vec<String> {
    events
        .iter()
        .filter_map(|k| match k {
            EventKind::TextDelta { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_cut_before_the_model_finished_fails_and_keeps_what_arrived() {
    let srv = server(|_, mut s| {
        stream_head(&mut s, "text/event-stream");
        send_pieces(&mut s, &[&chunk("INT. ", None), &chunk("LIGHTHOUSE", None)]);
        // The connection closes: no finish_reason, no [DONE].
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let (snap, events) = run_chat(&hub, &name, request(Some("scripted"), true));
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "connection_failed", "{}", err.message);
    assert!(
        err.message.contains("ended before the answer was complete"),
        "{}",
        err.message
    );
    assert_eq!(
        deltas(&events),
        ["INT. ", "LIGHTHOUSE"],
        "the pieces that arrived were delivered, in order"
    );
    assert!(matches!(events.last(), Some(EventKind::JobFailed { .. })), "{events:?}");
}

#[test]
fn a_stream_that_ends_after_finish_reason_without_done_completes() {
    let srv = server(|_, mut s| {
        stream_head(&mut s, "text/event-stream");
        let usage = b"data: {\"choices\": [], \"usage\": {\"total_tokens\": 7}}\n\n";
        send_pieces(
            &mut s,
            &[
                b": keep-alive comment\n\n",
                &chunk("EXT. ", None),
                b"data: {\"object\": \"something.else\", \"choices\": \"not a list\"}\n\n",
                &chunk("BEACH", Some("length")),
                usage,
            ],
        );
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let (snap, events) = run_chat(&hub, &name, request(Some("scripted"), true));
    assert!(snap.error.is_none(), "{:?}", snap.error);
    assert_eq!(snap.ui["text"], "EXT. BEACH");
    assert_eq!(snap.ui["finish_reason"], "length");
    assert_eq!(snap.ui["usage"]["total_tokens"], 7);
    assert_eq!(snap.ui["id"], "c-1");
    assert_eq!(deltas(&events), ["EXT. ", "BEACH"]);
    // The request asked for a stream and for usage in it.
    let sent = srv.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    assert_eq!(sent.json()["stream_options"]["include_usage"], true);
}

#[test]
fn several_choices_of_a_whole_answer_are_kept_apart() {
    let srv = server(|_, s| {
        json(
            s,
            "200 OK",
            &json!({
                "id": "cmpl-2", "model": "scripted-v2", "object": "chat.completion",
                "choices": [
                    {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"},
                    {"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "length"},
                ],
                "usage": {"total_tokens": 3},
            }),
        )
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let (snap, events) = run_chat(&hub, &name, request(Some("scripted"), false));
    assert!(snap.error.is_none(), "{:?}", snap.error);
    assert_eq!(snap.ui["text"], "first", "the text is choice 0's");
    assert_eq!(snap.ui["choices"], json!(["first", "second"]), "every choice, by index");
    assert_eq!(snap.ui["finish_reason"], "length", "choice 0's finish reason");
    assert_eq!(snap.ui["model"], "scripted-v2", "the model the server says answered");
    let choices: Vec<u32> = events
        .iter()
        .filter_map(|k| match k {
            EventKind::TextDelta { choice, .. } => Some(*choice),
            _ => None,
        })
        .collect();
    assert_eq!(choices, [1, 0], "a delta per choice, as the server listed them");
}

#[test]
fn a_200_answer_that_is_not_a_completion_fails_protocol() {
    let srv = server(|_, s| answer(s, "200 OK", "application/json", &[], b"<html>a login page</html>"));
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let (snap, _) = run_chat(&hub, &name, request(Some("scripted"), false));
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "protocol_error", "{}", err.message);
    assert!(err.message.contains("not a chat.completion"), "{}", err.message);
}

#[test]
fn an_error_object_in_a_200_answer_fails_with_the_servers_words_and_no_key() {
    let srv = server(|_, s| {
        json(
            s,
            "200 OK",
            &json!({"error": {"message": "quota of sk-scripted-secret used up", "type": "throttling_error", "code": 429}}),
        )
    });
    let (hub, _out) = hub();
    let name = hub
        .add_service("openai", &srv.url, None, Some("sk-scripted-secret".into()))
        .unwrap()
        .name;
    let (snap, _) = run_chat(&hub, &name, request(Some("scripted"), false));
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "rate_limited", "{}", err.message);
    assert!(err.message.contains("quota of *** used up"), "{}", err.message);
    assert!(!err.message.contains("sk-scripted-secret"));
    assert_eq!(err.exception_type.as_deref(), Some("throttling_error"));
    // The key went to the server in the header only.
    let sent = srv.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer sk-scripted-secret"));
}

#[test]
fn an_error_frame_without_a_status_is_a_server_error() {
    let srv = server(|_, mut s| {
        stream_head(&mut s, "text/event-stream");
        send_pieces(
            &mut s,
            &[&chunk("a", None), b"data: {\"error\": \"the GPU fell over\"}\n\n"],
        );
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let (snap, _) = run_chat(&hub, &name, request(Some("scripted"), true));
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "server_error", "{}", err.message);
    assert!(err.message.contains("mid-stream: the GPU fell over"), "{}", err.message);
}

#[test]
fn a_server_that_lists_no_models_asks_for_a_model_name() {
    let srv = Server::start(Arc::new(|req: &Request, s: TcpStream| match req.path.as_str() {
        "/v1/models" => json(s, "200 OK", &json!({"object": "list", "data": []})),
        _ => json(s, "404 Not Found", &json!({})),
    }));
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    assert_eq!(hub.models(&name).unwrap(), []);
    let (snap, _) = run_chat(&hub, &name, request(None, true));
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "bad_request", "{}", err.message);
    assert!(err.message.contains("lists no models; pass model="), "{}", err.message);
    assert!(
        !srv.paths().iter().any(|p| p.contains("chat")),
        "no chat was sent without a model"
    );
}

#[test]
fn a_model_list_that_is_something_else_is_the_wrong_service() {
    // A web server that answers every path with the same page (a router's admin UI, say).
    let srv = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(s, "200 OK", "application/json", &[], b"{\"data\": \"welcome\"}")
    }));
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let err = hub.models(&name).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService, "{}", err.message);
    assert!(err.message.contains("not a model list"), "{}", err.message);
    let (snap, _) = run_chat(&hub, &name, request(None, false));
    assert_eq!(snap.error.unwrap().code, "wrong_service");
}

#[test]
fn a_retry_after_beyond_the_limit_fails_at_once_with_the_servers_advice() {
    let srv = server(|_, s| {
        answer(
            s,
            "429 Too Many Requests",
            "application/json",
            &[("retry-after", "3600")],
            br#"{"error": {"message": "come back in an hour", "type": "throttling_error", "code": "429"}}"#,
        )
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let mut req = request(Some("scripted"), true);
    req.max_retries = 5;
    let (snap, _) = run_chat(&hub, &name, req);
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "rate_limited", "{}", err.message);
    assert!(
        err.message.contains("the server asks to wait 3600 s"),
        "{}",
        err.message
    );
    let posts = srv.requests().into_iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "no retry when the wait asked for is beyond the limit");
}

#[test]
fn a_5xx_without_retry_after_is_retried_then_the_answer_completes() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let srv = server(move |_, mut s| {
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            answer(s, "503 Service Unavailable", "text/plain", &[], b"warming up");
        } else {
            stream_head(&mut s, "text/event-stream");
            send_pieces(&mut s, &[&chunk("ok", Some("stop")), b"data: [DONE]\n\n"]);
        }
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let mut req = request(Some("scripted"), true);
    req.max_retries = 2;
    let (snap, events) = run_chat(&hub, &name, req);
    assert!(snap.error.is_none(), "{:?}", snap.error);
    assert_eq!(snap.ui["text"], "ok");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one failure, one retry"
    );
    let started = events
        .iter()
        .filter(|k| matches!(k, EventKind::JobStarted { .. }))
        .count();
    assert_eq!(started, 1, "the job starts once, when an answer came: {events:?}");
}

#[test]
fn exhausted_retries_say_how_many_attempts_were_made() {
    let srv = server(|_, s| {
        answer(
            s,
            "502 Bad Gateway",
            "text/plain",
            &[("retry-after", "0")],
            b"upstream down",
        )
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let mut req = request(Some("scripted"), false);
    req.max_retries = 2;
    let (snap, _) = run_chat(&hub, &name, req);
    let err = snap.error.expect("the job must fail");
    assert_eq!(err.code, "server_error", "{}", err.message);
    assert!(err.message.ends_with("(after 3 attempts)"), "{}", err.message);
    assert_eq!(srv.requests().iter().filter(|r| r.method == "POST").count(), 3);
}

#[test]
fn a_chat_to_a_port_where_nothing_listens_fails_connection_failed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (hub, _out) = hub();
    let name = hub
        .add_service("openai", &format!("http://127.0.0.1:{port}/v1"), None, None)
        .unwrap()
        .name;
    let (snap, _) = run_chat(&hub, &name, request(Some("m"), true));
    assert_eq!(snap.error.unwrap().code, "connection_failed");
    let (snap, _) = run_chat(&hub, &name, request(None, true));
    assert_eq!(
        snap.error.unwrap().code,
        "connection_failed",
        "listing models fails the same way"
    );
}

#[test]
fn chat_refuses_bad_input_and_other_kinds_of_service() {
    let srv = server(|_, s| json(s, "500 Internal Server Error", &json!({})));
    let (hub, _out) = hub();
    let name = hub.add_service("litellm", &srv.url, None, None).unwrap().name;
    let mut bad = request(Some("m"), true);
    bad.messages = json!({"role": "user"});
    assert_eq!(
        hub.chat(&name, bad, None).unwrap_err().code,
        ErrorCode::InvalidParameter
    );
    assert_eq!(
        hub.chat("nobody", request(None, true), None).unwrap_err().code,
        ErrorCode::UnknownService
    );
    let comfy = hub.add_service("comfyui", &srv.url, Some("comfy"), None).unwrap().name;
    let err = hub.chat(&comfy, request(None, true), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService);
    assert!(err.message.contains("comfyui service"), "{}", err.message);
    let err = hub.models(&comfy).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService, "{}", err.message);
}

/// A server that is not LiteLLM: `/health/liveliness` is a 404, `/v1/models` wants a key. It is up.
#[test]
fn a_plain_openai_server_that_wants_a_key_is_connected() {
    let srv = Server::start(Arc::new(|req: &Request, s: TcpStream| match req.path.as_str() {
        "/v1/models" => json(s, "401 Unauthorized", &json!({"error": {"message": "no key"}})),
        _ => json(s, "404 Not Found", &json!({"detail": "Not Found"})),
    }));
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let snap = wait_state(&hub, &name, |s| s.state == ServiceState::Connected);
    assert_eq!(snap.state, ServiceState::Connected, "{snap:?}");
    assert!(srv.paths().contains(&"/v1/models".to_string()));
}

/// A port where another kind of server answers (the health path and `/v1/models` are both 404s): never
/// connected, and the reason says what the server answered.
#[test]
fn a_wrong_server_on_the_port_is_never_connected_and_says_why() {
    let srv = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(s, "404 Not Found", "text/html", &[], b"<h1>Not here</h1>")
    }));
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let snap = wait_state(&hub, &name, |s| s.consecutive_failures >= 2);
    assert_ne!(snap.state, ServiceState::Connected, "{snap:?}");
    let last = snap.last_error.unwrap_or_default();
    assert!(last.contains("404"), "{last}");
    // A reconnect asks for a check at once: the count goes on rising.
    hub.reconnect(&name).unwrap();
    let again = wait_state(&hub, &name, |s| s.consecutive_failures > snap.consecutive_failures);
    assert!(again.consecutive_failures > snap.consecutive_failures);
}

fn wait_state(
    hub: &Hub,
    name: &str,
    done: impl Fn(&director_link::service::ServiceSnapshot) -> bool,
) -> director_link::service::ServiceSnapshot {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let snap = hub.service(name).unwrap();
        if done(&snap) || Instant::now() > end {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removing the service while an answer streams ends the job once (`service_removed`), however the actor stops.
#[test]
fn removing_the_service_mid_stream_ends_the_job_exactly_once() {
    let srv = server(|_, mut s| {
        stream_head(&mut s, "text/event-stream");
        send_pieces(&mut s, &[&chunk("first", None)]);
        hold(&mut s, Duration::from_secs(20));
    });
    let (hub, _out) = hub();
    let name = hub.add_service("openai", &srv.url, None, None).unwrap().name;
    let job = hub.chat(&name, request(Some("scripted"), true), None).unwrap();
    let mut events: Vec<EventKind> = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while !events.iter().any(|k| matches!(k, EventKind::TextDelta { .. })) && Instant::now() < end {
        hub.wait_for_events(Duration::from_millis(100));
        events.extend(hub.poll(100).into_iter().map(|e| e.kind));
    }
    hub.remove_service(&name).unwrap();
    let snap = hub.wait(&job, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(snap.error.as_ref().map(|e| e.code.as_str()), Some("service_removed"));
    // Whatever the actor does as it stops, no second end is delivered.
    std::thread::sleep(Duration::from_millis(300));
    events.extend(hub.poll(10_000).into_iter().map(|e| e.kind));
    let ends = events
        .iter()
        .filter(|k| k.job_id() == Some(job.as_str()) && k.is_terminal())
        .count();
    assert_eq!(ends, 1, "{events:?}");
}

/// The actor alone, with a short idle limit: a stream that stops talking fails `timeout` naming the silence.
#[test]
fn a_stream_that_goes_silent_fails_timeout() {
    let srv = server(|_, mut s| {
        stream_head(&mut s, "text/event-stream");
        send_pieces(&mut s, &[&chunk("then nothing", None)]);
        hold(&mut s, Duration::from_secs(20));
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shared = Arc::new(Shared::new(1000, 100));
    let status = Arc::new(ServiceStatus::new("silent", "openai", &srv.url, "c"));
    let endpoint = director_link::endpoint::Endpoint::parse(&srv.url, 4000).unwrap();
    let http = OpenAiHttp::new(reqwest::Client::new(), endpoint, ApiKey::new("  ".into())).unwrap();
    assert!(http.secret().is_none(), "a blank key is no key");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = OpenAiConfig {
        heartbeat: Duration::from_secs(5),
        backoff: BackoffPolicy::default(),
        stream_idle: Duration::from_millis(400),
    };
    let actor = OpenAiService::new("silent", http, shared.clone(), status.clone(), config, rx);
    let task = rt.spawn(actor.run());
    shared.register(
        "j1",
        "silent",
        None,
        Submission {
            workflow: Arc::new(Value::Null),
            params: Vec::new(),
        },
    );
    tx.send(Command::Chat {
        job_id: "j1".into(),
        request: request(Some("scripted"), true),
    })
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while !shared.job("j1").unwrap().state.is_terminal() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = shared.job("j1").unwrap().error.expect("the job must fail");
    assert_eq!(err.code, "timeout", "{}", err.message);
    assert!(
        err.message.contains("stopped for 0 s in the middle of the stream"),
        "{}",
        err.message
    );
    // Closing the command channel stops the actor; its state ends `closed`.
    drop(tx);
    rt.block_on(task).unwrap();
    assert_eq!(status.state(), ServiceState::Closed);
}
