//! The monitor page (`web/`, built by Vite into `web/dist`), embedded so that installing and running the studio
//! server needs no Node. The files are served as built; `web/scripts/check-dist.mjs` (run in CI) rebuilds them
//! from source and fails when the committed build differs, and `tests/test_web.py` checks that what the server
//! serves is byte for byte what is committed.
//!
//! The page itself is public (it holds no data); everything it shows comes through the guarded API and sockets,
//! with the token the user gives it.
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &[u8] = include_bytes!("../../web/dist/index.html");
const MONITOR_JS: &[u8] = include_bytes!("../../web/dist/assets/monitor.js");
const MONITOR_CSS: &[u8] = include_bytes!("../../web/dist/assets/monitor.css");

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file(INDEX_HTML, "text/html; charset=utf-8") }))
        .route(
            "/assets/monitor.js",
            get(|| async { file(MONITOR_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/monitor.css",
            get(|| async { file(MONITOR_CSS, "text/css; charset=utf-8") }),
        )
}

fn file(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The names are not content-hashed: revalidate, so an upgraded server serves its own page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}
