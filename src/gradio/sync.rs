//! The synchronous route for apps (or events) without a queue: `POST {api_root}/run/predict
//! {data, fn_index, session_hash}` runs the function inside the request (no progress; one HTTP request for the
//! whole job). Cancelling drops the request; the app finishes the call anyway, and the cancel says so.
use super::job::{Control, JobCtx, Outcome};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// The longest a synchronous call may take.
const CALL_LIMIT: Duration = Duration::from_secs(6 * 3600);

pub async fn run(ctx: &mut JobCtx, control: &mut mpsc::UnboundedReceiver<Control>, data: Vec<Value>) -> Outcome {
    ctx.emit_started();
    let body = json!({
        "data": data,
        "event_data": null,
        "fn_index": ctx.endpoint.fn_index,
        "session_hash": ctx.session_hash,
    });
    let http = ctx.http.clone();
    tokio::select! {
        answer = http.predict(body, CALL_LIMIT) => match answer {
            Ok(v) => Outcome::Completed(v),
            Err(e) => Outcome::Failed(e),
        },
        c = control.recv() => match c {
            Some(Control::Restarted(why)) => Outcome::Failed(crate::Error::new(crate::ErrorCode::ServerRestarted, why)),
            _ => {
                ctx.note("cancel", "a synchronous Gradio call cannot be stopped: the request was dropped, but the app \
                    finishes the call".into());
                Outcome::Cancelled
            }
        },
    }
}
