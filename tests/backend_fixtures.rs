//! Discovery fingerprints and the OpenAI wire types against traffic recorded from real Gradio 3.50.2/4.44.1/
//! 5.29.0/6.31.0 and LiteLLM 1.106.2 (`tests/fixtures/`, see its README).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use director_link::discovery::fingerprint::{self, GradioConfig, ServerKind};
use director_link::net::sse::SseDecoder;
use director_link::openai::protocol::{ErrorBody, Frame, ModelList};
use serde_json::Value;
use std::path::PathBuf;

/// The recordings copied into the project (`tests/fixtures/{gradio,litellm}`, see its README).
fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for sub in ["gradio", "litellm"] {
        assert!(
            dir.join(sub).is_dir(),
            "the recorded fixtures are missing: {}",
            dir.join(sub).display()
        );
    }
    dir
}

fn lines(path: PathBuf) -> Vec<Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(request, response)` pairs of a recording.
fn exchanges(path: PathBuf) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    let mut pending = None;
    for l in lines(path) {
        match l["kind"].as_str() {
            Some("http_request") => pending = Some(l),
            Some("http_response" | "sse_open") => {
                if let Some(req) = pending.take() {
                    out.push((req, l));
                }
            }
            _ => {}
        }
    }
    out
}

fn body_bytes(resp: &Value) -> Vec<u8> {
    match (&resp["json"], &resp["text"]) {
        (Value::Null, Value::String(t)) => t.as_bytes().to_vec(),
        (Value::Null, _) => Vec::new(),
        (json, _) => serde_json::to_vec(json).unwrap(),
    }
}

const GRADIO_VERSIONS: &[(&str, Option<&str>, &str)] = &[
    ("3.50.2", None, "ws"),
    ("4.44.1", None, "sse_v3"),
    ("5.29.0", Some("/gradio_api"), "sse_v3"),
    ("6.31.0", Some("/gradio_api"), "sse_v3"),
];

#[test]
fn every_recorded_gradio_config_is_the_wangp_lookalike() {
    let root = fixtures();
    for (version, prefix, protocol) in GRADIO_VERSIONS {
        let body = std::fs::read(root.join(format!("gradio/{version}/config.json"))).unwrap();
        let config = GradioConfig::parse(&body).unwrap_or_else(|| panic!("{version}: config did not parse"));
        assert_eq!(config.version, *version);
        assert_eq!(config.api_prefix.as_deref(), *prefix, "{version}");
        assert_eq!(config.protocol_name(), *protocol, "{version}");
        assert!(config.api_names().any(|n| n == "generate_video"), "{version}");
        let app = fingerprint::classify_gradio(&config);
        assert_eq!(app.kind, ServerKind::Wan2gp, "{version}");
        assert_eq!(
            app.app_version.as_deref(),
            Some("0.0"),
            "{version}: version from the headline"
        );
        // Other servers' answers are not mistaken for Gradio or ComfyUI.
        assert!(fingerprint::comfyui(&body).is_none());
        assert!(!fingerprint::litellm_liveliness(&body));
    }
}

#[test]
fn a_renamed_app_without_the_headline_is_a_generic_gradio_app() {
    let root = fixtures();
    let body = std::fs::read(root.join("gradio/5.29.0/config.json")).unwrap();
    let mut value: Value = serde_json::from_slice(&body).unwrap();
    value["title"] = "Storyboard".into();
    for c in value["components"].as_array_mut().unwrap() {
        if c["type"] == "markdown" {
            c["props"]["value"] = "# Storyboard".into();
        }
    }
    let config = GradioConfig::parse(&serde_json::to_vec(&value).unwrap()).unwrap();
    let app = fingerprint::classify_gradio(&config);
    assert_eq!((app.kind, app.name.as_str()), (ServerKind::Gradio, "Storyboard"));
}

#[test]
fn recorded_401s_mean_a_login_and_other_answers_do_not() {
    let root = fixtures();
    for version in ["4.44.1", "5.29.0", "6.31.0"] {
        let mut seen = 0;
        for (_, resp) in exchanges(root.join(format!("gradio/{version}/auth_login.jsonl"))) {
            let body = body_bytes(&resp);
            if resp["status"] == 401 {
                assert!(fingerprint::gradio_login_required(&body), "{version}: {resp}");
                seen += 1;
            }
        }
        assert!(seen > 0, "{version} has 401s");
    }
}

#[test]
fn litellm_health_answers() {
    let root = fixtures();
    let mut alive = 0;
    for (req, resp) in exchanges(root.join("litellm/health_and_models.jsonl")) {
        let url = req["url"].as_str().unwrap_or_default();
        let body = body_bytes(&resp);
        if url.ends_with("/health/liveliness") || url.ends_with("/health/liveness") {
            assert!(fingerprint::litellm_liveliness(&body));
            alive += 1;
        } else {
            assert!(!fingerprint::litellm_liveliness(&body), "{url}");
        }
        if url.ends_with("/health/readiness") {
            assert_eq!(
                fingerprint::litellm_readiness_version(&body),
                None,
                "1.106.2 does not tell"
            );
        }
        if url.ends_with("/models") && resp["status"] == 200 {
            let list: ModelList = serde_json::from_slice(&body).unwrap();
            let ids: Vec<_> = list.data.iter().map(|m| m.id.as_str()).collect();
            assert!(
                ids.contains(&"mock-gpt") && ids.contains(&"mock-midstream-error"),
                "{ids:?}"
            );
        }
        if url.ends_with("/models") && resp["status"] != 200 {
            assert!(ErrorBody::parse(&body).is_some(), "an error body: {resp}");
            let e = director_link::openai::error::failure(resp["status"].as_u64().unwrap() as u16, &body, None, None);
            assert!(e.is_auth(), "a missing or wrong key is an auth failure: {}", e.message);
        }
    }
    assert_eq!(alive, 2);
}

#[test]
fn recorded_streams_decode_to_the_mock_text_in_any_chunking() {
    let root = fixtures();
    let recording = lines(root.join("litellm/chat_stream.jsonl"));
    let mut streams: Vec<Vec<String>> = Vec::new();
    for l in &recording {
        match l["kind"].as_str() {
            Some("sse_open") => streams.push(Vec::new()),
            Some("sse_event") => streams.last_mut().unwrap().push(l["raw"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    assert_eq!(streams.len(), 2);
    let expected = [
        "Shot 1: wide establishing shot of a foggy harbour at dawn. Shot 2: close-up on the lighthouse keeper.",
        "INT. LIGHTHOUSE - NIGHT. The lamp turns slowly.",
    ];
    for (raws, expected) in streams.iter().zip(expected) {
        let wire: String = raws.iter().map(|r| format!("{r}\n\n")).collect();
        for size in [1, 7, 64, wire.len()] {
            let mut decoder = SseDecoder::new();
            let mut datas = Vec::new();
            for piece in wire.as_bytes().chunks(size) {
                datas.extend(decoder.push(piece).unwrap());
            }
            datas.extend(decoder.finish());
            let (mut text, mut done, mut finish, mut usage) = (String::new(), false, None, None);
            for d in datas {
                match Frame::parse(&d) {
                    Frame::Chunk(c) => {
                        usage = c.usage.or(usage);
                        for ch in c.choices {
                            text.push_str(ch.delta.content.as_deref().unwrap_or_default());
                            finish = ch.finish_reason.or(finish);
                        }
                    }
                    Frame::Done => done = true,
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            assert_eq!(text, expected, "chunk size {size}");
            assert!(done && finish.as_deref() == Some("stop"));
            if expected.starts_with("INT.") {
                assert!(
                    usage.unwrap()["completion_tokens"].as_u64().unwrap() > 0,
                    "include_usage chunk"
                );
            }
        }
    }
}

#[test]
fn recorded_error_bodies_become_typed_errors() {
    let root = fixtures();
    let mut codes = Vec::new();
    for (_, resp) in exchanges(root.join("litellm/errors.jsonl")) {
        let status = resp["status"].as_u64().unwrap() as u16;
        let body = body_bytes(&resp);
        let err = ErrorBody::parse(&body).unwrap_or_else(|| panic!("no error body: {resp}"));
        assert_eq!(
            err.code.as_deref(),
            Some(status.to_string().as_str()),
            "code is the status as a string"
        );
        assert!(!err.message.is_empty());
        let e = director_link::openai::error::failure(status, &body, None, None);
        assert!(e.message.starts_with(&format!("HTTP {status}: ")));
        codes.push((status, e.code.as_str(), e.is_retryable()));
    }
    codes.sort();
    codes.dedup();
    assert_eq!(
        codes,
        vec![
            (400, "bad_request", false),
            (401, "auth_failed", false),
            (429, "rate_limited", true),
            (500, "server_error", true),
            (529, "server_error", true),
        ]
    );
}
