//! The HTTP API: jobs, files, services, health, metrics and the brief's status endpoint; the guard every request
//! passes (origin, token, CORS).
use super::auth::{self, TokenCheck};
use super::clock;
use super::relay::{ConnKind, JobView};
use super::server::{register, AppState};
use crate::event::{EventKind, JobError, JobState};
use crate::gradio::GradioCall;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Request bodies (a workflow with an embedded image can be large).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The workflow templates that ship with the package, by name.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "sd_basic",
        include_str!("../../python/director_link/templates/sd_basic.json"),
    ),
    (
        "sd15_txt2img",
        include_str!("../../python/director_link/templates/sd15_txt2img.json"),
    ),
    (
        "ltx_video",
        include_str!("../../python/director_link/templates/ltx_video.json"),
    ),
    (
        "ltx_img2video",
        include_str!("../../python/director_link/templates/ltx_img2video.json"),
    ),
    (
        "upscale_4x",
        include_str!("../../python/director_link/templates/upscale_4x.json"),
    ),
    (
        "controlnet_pose",
        include_str!("../../python/director_link/templates/controlnet_pose.json"),
    ),
    (
        "invert",
        include_str!("../../python/director_link/templates/invert.json"),
    ),
    (
        "acceptance_progress",
        include_str!("../../python/director_link/templates/acceptance_progress.json"),
    ),
];

/// An error answer: `{"error": {"code", "message"}}` with a status.
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}});
        (self.0, Json(body)).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        use crate::ErrorCode as C;
        let status = match e.code {
            C::UnknownService | C::UnknownJob => StatusCode::NOT_FOUND,
            C::InvalidUrl | C::InvalidWorkflow | C::InvalidParameter | C::ValidationFailed | C::WrongService => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            C::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, e.code(), e.message)
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/jobs", post(submit_job).get(list_jobs))
        .route("/api/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/jobs/{id}/files/{name}", get(job_file))
        .route("/api/jobs/{id}/preview", get(job_preview))
        .route("/api/jobs/{id}/progress", post(external_progress))
        .route("/api/services", get(services))
        .route("/api/services/{name}/object_info", get(service_object_info))
        .route("/api/services/{name}/upload", post(service_upload))
        .route("/api/health", get(health))
        .route("/api/anime/websocket/status", get(brief_status))
        .route("/metrics", get(metrics))
        .merge(super::ws::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        // After the guard: the page is public; what it shows comes through the guarded API with the user's token.
        .merge(super::monitor::routes())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see GET /api/health for the list".into(),
    )
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
}

/// Every request: browsers only from allowed origins; the token when one is set (the producer token on the
/// producer endpoint); CORS headers for allowed origins.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !auth::origin_allowed(origin.as_deref(), host, &state.config.allow_origins) {
        return ApiError(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not use the studio server; add it with --allow-origin".into(),
        )
        .into_response();
    }
    if req.method() == Method::OPTIONS {
        return with_cors(StatusCode::NO_CONTENT.into_response(), origin.as_deref(), true);
    }
    let producer = req.method() == Method::POST && req.uri().path().ends_with("/progress");
    let expected = if producer {
        state.config.producer_token.as_deref().or(state.config.token.as_deref())
    } else {
        state.config.token.as_deref()
    };
    let presented = auth::presented_token(headers, query_param(req.uri().query(), "token").as_deref());
    match auth::check_token(expected, presented.as_deref()) {
        TokenCheck::Open | TokenCheck::Valid => {}
        TokenCheck::Missing => {
            return with_cors(
                ApiError(
                    StatusCode::UNAUTHORIZED,
                    "auth_failed",
                    "this studio server needs a token: send Authorization: Bearer <token> (browsers: the \
                     WebSocket sub-protocol bearer.<token>, or ?token=)"
                        .into(),
                )
                .into_response(),
                origin.as_deref(),
                false,
            )
        }
        TokenCheck::Wrong => {
            return with_cors(
                ApiError(StatusCode::UNAUTHORIZED, "auth_failed", "the token is not right".into()).into_response(),
                origin.as_deref(),
                false,
            )
        }
    }
    let resp = next.run(req).await;
    with_cors(resp, origin.as_deref(), false)
}

fn with_cors(mut resp: Response, origin: Option<&str>, preflight: bool) -> Response {
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    resp
}

pub(super) fn check_id(id: &str) -> ApiResult<()> {
    if auth::valid_job_id(id) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_job_id",
            "a job id is a UUID or 1–64 letters, digits, '-' or '_'".into(),
        ))
    }
}

fn unknown_job(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "unknown_job", format!("no job with id {id:?}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    service: Option<String>,
    workflow: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
    tag: Option<String>,
    /// A Gradio call: `{"api_name": "/generate", "inputs": [...]}` or `{"fn_index": 0, ...}`.
    call: Option<Value>,
}

fn params_of(v: Option<Value>) -> ApiResult<Vec<(String, Value)>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m.into_iter().collect()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let v = pair.pop().unwrap_or(Value::Null);
                    match pair.pop() {
                        Some(Value::String(k)) => Ok((k, v)),
                        _ => Err(()),
                    }
                }
                _ => Err(()),
            })
            .collect::<Result<_, ()>>()
            .map_err(|_| bad_request("params must be an object {selector: value} or a list of [selector, value]")),
        Some(_) => Err(bad_request("params must be an object {selector: value}")),
    }
}

fn bad_request(msg: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "invalid_request", msg.to_string())
}

fn workflow_of(v: Value) -> ApiResult<Value> {
    match v {
        Value::String(name) => TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, text)| serde_json::from_str(text).ok())
            .ok_or_else(|| {
                let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
                ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_workflow",
                    format!("no workflow template named {name:?}; known: {}", known.join(", ")),
                )
            }),
        Value::Object(_) => Ok(v),
        _ => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workflow",
            "workflow must be a workflow object (API or UI format) or a template name".into(),
        )),
    }
}

async fn submit_job(
    State(state): State<Arc<AppState>>,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    let hub = state.hub.clone();
    let service = match body.service {
        Some(s) => s,
        None => {
            let names = hub.service_names();
            match names.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        "unknown_service",
                        "this studio server has no services; start it with --service or --simulator".into(),
                    ))
                }
                _ => {
                    return Err(bad_request(&format!(
                        "say which service runs the job: one of {}",
                        names.join(", ")
                    )))
                }
            }
        }
    };
    let tag = body.tag.filter(|t| !t.trim().is_empty());
    let job_id = match (body.workflow, body.call) {
        (Some(w), None) => {
            let workflow = workflow_of(w)?;
            let params = params_of(body.params)?;
            let (svc, t) = (service.clone(), tag.clone());
            tokio::task::spawn_blocking(move || hub.submit(&svc, workflow, params, t))
                .await
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
        }
        (None, Some(call)) => {
            let call = GradioCall {
                api_name: call.get("api_name").and_then(Value::as_str).map(str::to_string),
                fn_index: call.get("fn_index").and_then(Value::as_u64),
                inputs: call
                    .get("inputs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                session_hash: None,
            };
            hub.call(&service, call, tag.clone())?
        }
        _ => {
            return Err(bad_request(
                "give either workflow (ComfyUI / WanGP) or call (a Gradio app)",
            ))
        }
    };
    let st = state.clone();
    let (id, svc) = (job_id.clone(), service.clone());
    tokio::task::spawn_blocking(move || register(&st, &id, &svc, tag))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let view = state.relay.job(&job_id);
    Ok((StatusCode::CREATED, Json(json!({"job_id": job_id, "job": view}))).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    status: Option<String>,
    tag: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_jobs(State(state): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Json<Value> {
    let filter = q.state.or(q.status);
    let all = state.relay.jobs(filter.as_deref(), q.tag.as_deref());
    let total = all.len();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let offset = q.offset.unwrap_or(0);
    let page: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|v| job_json(&live(&state, v)))
        .collect();
    Json(json!({"jobs": page, "total": total, "limit": limit, "offset": offset}))
}

/// A job as the API shows it: the view plus the brief's `status` and `progress` names.
fn job_json(v: &JobView) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut j {
        m.insert("status".into(), Value::from(v.brief_status()));
        m.insert(
            "output_path".into(),
            v.first_output().map(Value::from).unwrap_or(Value::Null),
        );
        let files: Vec<Value> = v
            .outputs
            .iter()
            .filter_map(|o| o.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| {
                let enc = percent_encoding::utf8_percent_encode(&n, percent_encoding::NON_ALPHANUMERIC);
                json!({"name": n, "url": format!("/api/jobs/{}/files/{enc}", v.job_id)})
            })
            .collect();
        m.insert("files".into(), Value::from(files));
        if v.preview_offset.is_some() {
            m.insert(
                "preview_url".into(),
                Value::from(format!("/api/jobs/{}/preview", v.job_id)),
            );
        }
    }
    j
}

/// A queued job's place in its server's queue moves without an event of its own (the jobs ahead end): the view
/// takes it from the hub, which follows the queue, so a client shows "queued, 2nd" and not where it started.
fn live(state: &AppState, mut view: JobView) -> JobView {
    if view.state == JobState::Queued && !view.external {
        if let Some(snap) = state.hub.job(&view.job_id) {
            view.queue_position = snap.queue_position;
        }
    }
    view
}

async fn get_job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let v = state.relay.job(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(job_json(&live(&state, v))))
}

async fn cancel_job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    check_id(&id)?;
    let v = state.relay.job(&id).ok_or_else(|| unknown_job(&id))?;
    if v.state.is_terminal() {
        return Ok((StatusCode::OK, Json(json!({"job_id": id, "state": v.state.as_str()}))).into_response());
    }
    if v.external {
        state
            .relay
            .publish(&EventKind::JobCancelled { job_id: id.clone() }, clock::now(), None);
    } else {
        state.hub.cancel(&id)?;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": id, "state": "cancelling"}))).into_response())
}

async fn job_file(State(state): State<Arc<AppState>>, Path((id, name)): Path<(String, String)>) -> ApiResult<Response> {
    check_id(&id)?;
    let v = state.relay.job(&id).ok_or_else(|| unknown_job(&id))?;
    let not_found = || {
        ApiError(
            StatusCode::NOT_FOUND,
            "unknown_file",
            format!("job {id} has no output named {name:?}"),
        )
    };
    // Only a file the job wrote, and only inside the hub's output folder (no path from the request is used).
    let file = v
        .outputs
        .iter()
        .find(|o| o.path.file_name().is_some_and(|n| n.to_string_lossy() == name))
        .ok_or_else(not_found)?;
    let root = std::fs::canonicalize(&state.hub.config().output_dir).map_err(|_| not_found())?;
    let path = std::fs::canonicalize(&file.path).map_err(|_| not_found())?;
    if !path.starts_with(&root) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "outside_output",
            "that file is outside the output folder".into(),
        ));
    }
    let f = tokio::fs::File::open(&path).await.map_err(|_| not_found())?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(file_stream(f));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::net::files::content_type(&name)),
    );
    if let Ok(l) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, l);
    }
    Ok(resp)
}

/// A file as a stream of chunks (no whole-file buffering).
fn file_stream(f: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(f), |state| async move {
        let mut f = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn job_preview(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    check_id(&id)?;
    let (mime, data) = state.relay.preview(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "no_preview",
            format!("job {id} has no preview now"),
        )
    })?;
    let ct = HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        data,
    )
        .into_response())
}

/// The brief's `send_progress_update` fields.
#[derive(Deserialize)]
struct ProgressBody {
    status: String,
    #[serde(default)]
    progress: Option<f64>,
    #[serde(default)]
    estimated_remaining: Option<f64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    output_path: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

async fn external_progress(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<ProgressBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let Json(b) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    if let Some(p) = b.progress {
        if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
            return Err(bad_request("progress must be a number from 0 to 100"));
        }
    }
    let existing = state.relay.job(&id);
    if let Some(v) = &existing {
        if let Some(instance) = &v.instance {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "other_instance",
                format!("job {id} is reported by studio instance {instance}; send its progress there"),
            ));
        }
        if !v.external {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "not_external",
                format!("job {id} is run by this server's hub; its progress comes from its service"),
            ));
        }
    } else {
        let service = b.service.clone().unwrap_or_else(|| "external".into());
        state
            .relay
            .register_job(JobView::new(&id, &service, b.tag.clone(), true));
    }
    let now = clock::now();
    // The state before this update, from the same look-up (a job that ends meanwhile is refused by `publish`).
    let before = existing.as_ref().map(|v| v.state);
    let service = existing
        .map(|v| v.service)
        .unwrap_or_else(|| b.service.clone().unwrap_or_else(|| "external".into()));
    let kind = match b.status.as_str() {
        "queued" => EventKind::JobQueued {
            job_id: id.clone(),
            service,
            position: None,
            pending_connection: false,
            node_errors: Vec::new(),
        },
        "processing" | "running" => EventKind::Progress {
            job_id: id.clone(),
            node_id: None,
            value: b.progress.unwrap_or(0.0),
            max: 100.0,
            percentage: b.progress.unwrap_or(0.0),
            eta_seconds: b.estimated_remaining.filter(|e| e.is_finite() && *e >= 0.0),
            text: b.message.clone(),
        },
        "completed" => EventKind::JobCompleted {
            job_id: id.clone(),
            outputs: Vec::new(),
            ui: json!({"output_path": b.output_path, "message": b.message}),
            elapsed_seconds: 0.0,
        },
        "failed" => EventKind::JobFailed {
            job_id: id.clone(),
            error: Box::new(JobError::simple(
                "execution_failed",
                b.message
                    .clone()
                    .unwrap_or_else(|| "the producer reported a failure".into()),
            )),
        },
        "cancelled" => EventKind::JobCancelled { job_id: id.clone() },
        other => {
            return Err(bad_request(&format!(
                "status {other:?} is not one of queued, processing, completed, failed, cancelled"
            )))
        }
    };
    if before.is_some_and(JobState::is_terminal) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "job_finished",
            format!("job {id} has ended already; its final state is kept"),
        ));
    }
    state.relay.publish(&kind, now, None);
    let v = state.relay.job(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(job_json(&live(&state, v))))
}

async fn services(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snap = state.hub.snapshot();
    Json(json!({"studio": snap.studio, "services": snap.services, "pools": snap.pools}))
}

/// A ComfyUI service's node list (its `/object_info`, cached by the hub): clients convert UI-format workflows,
/// check a prompt's values and offer an input's choices before they submit (the add-on in studio mode).
async fn service_object_info(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<Response> {
    let hub = state.hub.clone();
    let info = tokio::task::spawn_blocking(move || hub.object_info(&name, false))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(&*info).into_response())
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// An image into a ComfyUI service's input folder (the request body is the file; `?name=` its name): answers the
/// name to put into a `LoadImage` node. The hub sends each distinct file once per service.
async fn service_upload(
    State(state): State<Arc<AppState>>,
    Path(service): Path<String>,
    Query(q): Query<UploadQuery>,
    body: bytes::Bytes,
) -> ApiResult<Json<Value>> {
    if body.is_empty() {
        return Err(bad_request("the request body is the image file; it was empty"));
    }
    let name = q
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "upload.png".into());
    let hub = state.hub.clone();
    let stored = tokio::task::spawn_blocking(move || hub.upload_image(&service, &name, body.to_vec()))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(json!({"name": stored})))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snap = state.hub.snapshot();
    let db = state.store.as_ref().map(|h| {
        let err = h.last_error.lock().clone();
        json!({"url": state.database, "ok": err.is_none(), "last_error": err,
               "pending_writes": h.pending.load(Ordering::Relaxed), "write_errors": h.write_errors.load(Ordering::Relaxed)})
    });
    let redis = state.bus.as_ref().map(|b| b.status());
    let db_ok = db.as_ref().is_none_or(|d| d["ok"] == Value::Bool(true))
        && redis.as_ref().is_none_or(|r| r["ok"] == Value::Bool(true));
    let (history_from, history_events) = state.relay.history_span();
    Json(json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "database": db.unwrap_or(json!({"url": state.database, "ok": true})),
        "redis": redis.unwrap_or(Value::Null),
        "studio": snap.studio,
        "connections": state.connections.load(Ordering::Relaxed),
        "stream": {"epoch": state.relay.epoch(), "offset": state.relay.newest_offset(),
                   "history_from": history_from, "history_events": history_events},
        "jobs": state.relay.job_counts(),
        "endpoints": endpoints(),
    }))
}

fn endpoints() -> Value {
    json!([
        "WS /ws/{job_id}",
        "WS /ws/monitor",
        "WS /ws/events?jobs=all&since=OFFSET&epoch=E",
        "POST /api/jobs",
        "GET /api/jobs",
        "GET /api/jobs/{id}",
        "DELETE /api/jobs/{id}",
        "GET /api/jobs/{id}/files/{name}",
        "GET /api/jobs/{id}/preview",
        "POST /api/jobs/{id}/progress",
        "GET /api/services",
        "GET /api/services/{name}/object_info",
        "POST /api/services/{name}/upload?name=FILE",
        "GET /api/health",
        "GET /metrics",
        "GET /api/anime/websocket/status"
    ])
}

/// The brief's connection counts.
pub fn brief_connections(state: &AppState) -> Value {
    let per_job = state.relay.brief_connections();
    let details: HashMap<&String, Value> = per_job.iter().map(|(j, n)| (j, json!({"connections": n}))).collect();
    json!({
        "total_connections": state.connections.load(Ordering::Relaxed),
        "jobs_with_connections": per_job.len(),
        "connection_details": details,
    })
}

async fn brief_status(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "websocket_manager": "active",
        "connections": brief_connections(&state),
        "endpoints": endpoints(),
        "timestamp": clock::rfc3339(clock::now()),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(
            out,
            "# HELP director_link_{name} {help}\n# TYPE director_link_{name} {kind}"
        );
        for (labels, v) in samples {
            let _ = writeln!(out, "director_link_{name}{labels} {v}");
        }
    };
    let conns = state.relay.connection_counts();
    let by_kind: Vec<(String, f64)> = [ConnKind::Job, ConnKind::Monitor, ConnKind::Events]
        .iter()
        .map(|k| {
            let name = match k {
                ConnKind::Job => "job",
                ConnKind::Monitor => "monitor",
                ConnKind::Events => "events",
            };
            (format!("{{endpoint=\"{name}\"}}"), *conns.get(k).unwrap_or(&0) as f64)
        })
        .collect();
    metric(
        "websocket_connections",
        "WebSocket connections open now.",
        "gauge",
        &by_kind,
    );
    let own: Vec<(String, f64)> = super::ws::connection_state_bytes()
        .into_iter()
        .map(|(k, b)| (format!("{{kind=\"{k}\"}}"), b as f64))
        .collect();
    metric(
        "studio_connection_state_bytes",
        "This server's own state per idle WebSocket connection (task, outbox, table entry, timer; not the socket).",
        "gauge",
        &own,
    );
    metric(
        "studio_socket_bytes",
        "The struct of one WebSocket (axum + tungstenite state, without its buffers).",
        "gauge",
        &[(String::new(), super::ws::socket_bytes() as f64)],
    );
    metric(
        "websocket_refused_total",
        "WebSocket connections refused (limits, rate).",
        "counter",
        &[(String::new(), state.refused_connections.load(Ordering::Relaxed) as f64)],
    );
    let c = &state.relay.counters;
    metric(
        "events_total",
        "Events published to the stream.",
        "counter",
        &[(String::new(), c.events.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "deliveries_total",
        "Frames queued to subscribers.",
        "counter",
        &[(String::new(), c.deliveries.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "coalesced_total",
        "Progress/preview frames replaced by newer ones.",
        "counter",
        &[(String::new(), c.coalesced.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "slow_consumer_closes_total",
        "Subscribers closed because they could not keep up.",
        "counter",
        &[(String::new(), c.overflow_closes.load(Ordering::Relaxed) as f64)],
    );
    let j = state.relay.job_counts();
    metric(
        "jobs",
        "Jobs known, by state.",
        "gauge",
        &[
            ("{state=\"active\"}".into(), j.active as f64),
            ("{state=\"completed\"}".into(), j.completed as f64),
            ("{state=\"failed\"}".into(), j.failed as f64),
            ("{state=\"cancelled\"}".into(), j.cancelled as f64),
        ],
    );
    if let Some(h) = &state.store {
        metric(
            "db_write_errors_total",
            "Database batches that failed (retried).",
            "counter",
            &[(String::new(), h.write_errors.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "db_batches_total",
            "Database batches committed.",
            "counter",
            &[(String::new(), h.batches.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "db_last_batch_seconds",
            "Time the last database batch took to commit.",
            "gauge",
            &[(String::new(), h.last_batch_us.load(Ordering::Relaxed) as f64 / 1e6)],
        );
        metric(
            "db_up",
            "1 when the last database write worked.",
            "gauge",
            &[(String::new(), if h.last_error.lock().is_none() { 1.0 } else { 0.0 })],
        );
    }
    if let Some(bus) = &state.bus {
        let h = bus.health();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        metric(
            "redis_up",
            "1 when both the publishing and the reading connection to Redis work.",
            "gauge",
            &[(String::new(), if h.ok() { 1.0 } else { 0.0 })],
        );
        metric(
            "redis_waiting",
            "This instance's events waiting to be shared over Redis.",
            "gauge",
            &[(String::new(), n(&h.waiting))],
        );
        for (name, help, v) in [
            (
                "redis_published_total",
                "Events this instance shared over Redis.",
                &h.published,
            ),
            (
                "redis_relayed_total",
                "Other instances' events relayed to this instance's subscribers.",
                &h.relayed,
            ),
            (
                "redis_duplicates_total",
                "Entries read again after a reconnect and not shown twice.",
                &h.duplicates,
            ),
            (
                "redis_gaps_total",
                "Other instances' events that never arrived (trimmed or lost).",
                &h.gaps,
            ),
            (
                "redis_dropped_total",
                "Events not shared because Redis was away too long.",
                &h.dropped,
            ),
            (
                "redis_errors_total",
                "Failed Redis connections or commands (retried).",
                &h.errors,
            ),
        ] {
            metric(name, help, "counter", &[(String::new(), n(v))]);
        }
    }
    let snap = state.hub.snapshot();
    let mut up = Vec::new();
    let mut p99 = Vec::new();
    for s in &snap.services {
        let v = serde_json::to_value(s).unwrap_or(Value::Null);
        let name = v["name"].as_str().unwrap_or("").replace('"', "");
        up.push((
            format!("{{service=\"{name}\"}}"),
            if v["state"] == "connected" { 1.0 } else { 0.0 },
        ));
        if let Some(ms) = v["ping_latency_ms"]["p99"].as_f64() {
            p99.push((format!("{{service=\"{name}\"}}"), ms / 1000.0));
        }
    }
    metric("service_up", "1 when the service is connected.", "gauge", &up);
    metric(
        "service_ping_p99_seconds",
        "The service's ping latency, 99th percentile.",
        "gauge",
        &p99,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
