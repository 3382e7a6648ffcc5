//! Typed Python event classes. All share the base `Event` (seq, time, type, to_dict()).
use super::convert::{ser_to_py, to_py};
use crate::event::{Event as CoreEvent, EventKind};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Base class of every event: `seq` (increasing), `time` (Unix seconds), `type` (snake_case name).
#[pyclass(module = "director_link._native", subclass, frozen)]
pub struct Event {
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    time: f64,
    /// Held inline (not behind an `Arc`): one allocation and one copy less per event handed to Python.
    inner: CoreEvent,
}

#[pymethods]
impl Event {
    /// The event's snake_case type name, e.g. "progress".
    #[getter(r#type)]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }

    /// The job this event belongs to, or None for service-level events.
    #[getter]
    fn job(&self) -> Option<&str> {
        self.inner.kind.job_id()
    }

    /// True for JobCompleted, JobFailed and JobCancelled.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.kind.is_terminal()
    }

    /// A plain dict of the event (JSON-compatible; preview bytes are left out).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        ser_to_py(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        let body = serde_json::to_string(&self.inner.kind).unwrap_or_default();
        let short: String = body.chars().take(300).collect();
        format!("<{} {short}>", class_name(&self.inner.kind))
    }
}

fn class_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::ServiceStateChanged { .. } => "ServiceStateChanged",
        EventKind::QueueChanged { .. } => "QueueChanged",
        EventKind::ServiceDiscovered { .. } => "ServiceDiscovered",
        EventKind::JobAssigned { .. } => "JobAssigned",
        EventKind::JobQueued { .. } => "JobQueued",
        EventKind::JobStarted { .. } => "JobStarted",
        EventKind::NodeStarted { .. } => "NodeStarted",
        EventKind::Progress { .. } => "Progress",
        EventKind::Preview { .. } => "Preview",
        EventKind::NodeText { .. } => "NodeText",
        EventKind::NodeOutput { .. } => "NodeOutput",
        EventKind::TextDelta { .. } => "TextDelta",
        EventKind::JobCompleted { .. } => "JobCompleted",
        EventKind::JobFailed { .. } => "JobFailed",
        EventKind::JobCancelled { .. } => "JobCancelled",
    }
}

macro_rules! event_class {
    ($name:ident, $doc:literal { $($field:ident : $ty:ty),* $(,)? }) => {
        #[doc = $doc]
        #[pyclass(module = "director_link._native", extends = Event, frozen)]
        pub struct $name {
            $(#[pyo3(get)] pub $field: $ty,)*
        }
    };
}

event_class!(ServiceStateChanged, "A service changed connection state." {
    service: String, state: String, previous: String, reason: Option<String>
});
event_class!(QueueChanged, "The server's queue length changed." { service: String, queue_remaining: u64 });
event_class!(ServiceDiscovered, "A scan (Hub.discover) found something answering at an address." {
    url: String, kind: String, name: Option<String>, summary: String, service_kind: Option<String>
});
event_class!(JobAssigned, "A pool job was handed to one of the pool's servers (`server`, its URL), or went back to \
    waiting in the hub for one (`server` None: \"waiting for a server\", after its server went down)." {
    job_id: String, service: String, server: Option<String>, attempt: u32
});
event_class!(JobQueued, "The job is queued: on the server, or locally until the service connects (pending_connection; then \
    a second JobQueued follows with the position once the server has it)." {
    job_id: String, service: String, position: Option<u32>, pending_connection: bool, node_errors: Py<PyAny>
});
event_class!(JobStarted, "The server started the job." { job_id: String, service: String, cached_nodes: Vec<String> });
event_class!(NodeStarted, "A node began to execute." { job_id: String, node_id: String, node_type: Option<String> });
/// Progress of the running node, with percentage, an ETA from the observed step rate, and the server's own words
/// when it sends some (`text`: Gradio's progress `desc`).
///
/// The one event of every step: its fields are read from the event itself when asked for, so a consumer that
/// only looks at a few of them pays for no copies.
#[pyclass(module = "director_link._native", extends = Event, frozen)]
pub struct Progress {}

/// The fields of the `Progress` event a `Progress` object holds.
struct ProgressFields<'a> {
    job_id: &'a str,
    node_id: Option<&'a str>,
    value: f64,
    max: f64,
    percentage: f64,
    eta_seconds: Option<f64>,
    text: Option<&'a str>,
}

impl Progress {
    fn fields<'a>(slf: &'a Bound<'_, Self>) -> ProgressFields<'a> {
        match &slf.as_super().get().inner.kind {
            EventKind::Progress {
                job_id,
                node_id,
                value,
                max,
                percentage,
                eta_seconds,
                text,
            } => ProgressFields {
                job_id,
                node_id: node_id.as_deref(),
                value: *value,
                max: *max,
                percentage: *percentage,
                eta_seconds: *eta_seconds,
                text: text.as_deref(),
            },
            // Never: `to_python` makes a Progress only of a progress event.
            _ => ProgressFields {
                job_id: "",
                node_id: None,
                value: 0.0,
                max: 0.0,
                percentage: 0.0,
                eta_seconds: None,
                text: None,
            },
        }
    }
}

#[pymethods]
impl Progress {
    #[getter]
    fn job_id(slf: &Bound<'_, Self>) -> String {
        Self::fields(slf).job_id.to_string()
    }
    #[getter]
    fn node_id(slf: &Bound<'_, Self>) -> Option<String> {
        Self::fields(slf).node_id.map(str::to_string)
    }
    #[getter]
    fn value(slf: &Bound<'_, Self>) -> f64 {
        Self::fields(slf).value
    }
    #[getter]
    fn max(slf: &Bound<'_, Self>) -> f64 {
        Self::fields(slf).max
    }
    #[getter]
    fn percentage(slf: &Bound<'_, Self>) -> f64 {
        Self::fields(slf).percentage
    }
    #[getter]
    fn eta_seconds(slf: &Bound<'_, Self>) -> Option<f64> {
        Self::fields(slf).eta_seconds
    }
    #[getter]
    fn text(slf: &Bound<'_, Self>) -> Option<String> {
        Self::fields(slf).text.map(str::to_string)
    }
}
event_class!(Preview, "A preview image (JPEG or PNG bytes)." {
    job_id: String, node_id: Option<String>, mime: String, data: Py<PyBytes>
});
event_class!(NodeText, "Progress text a node sent." { job_id: Option<String>, node_id: String, text: String });
event_class!(NodeOutput, "A node's UI output (the `executed` message)." { job_id: String, node_id: String, output: Py<PyAny> });
event_class!(TextDelta, "A piece of a chat answer, in order: `index` counts the pieces of the job, `choice` says which choice." {
    job_id: String, text: String, index: u64, choice: u32
});
event_class!(JobCompleted, "The job finished; its files are on disk (`outputs`, `paths`)." {
    job_id: String, outputs: Py<PyAny>, paths: Vec<String>, ui: Py<PyAny>, elapsed_seconds: f64
});
event_class!(JobFailed, "The job failed: `code`, `message`, and the failing node's details in `error`." {
    job_id: String, code: String, message: String, node_id: Option<String>, node_type: Option<String>, error: Py<PyAny>,
    causes: Vec<String>
});
event_class!(JobCancelled, "The job was cancelled and the server confirmed it." { job_id: String });

#[pymethods]
impl Preview {
    /// "jpeg" or "png".
    #[getter]
    fn format(&self) -> &'static str {
        if self.mime.contains("png") {
            "png"
        } else {
            "jpeg"
        }
    }
}

pub fn to_python(py: Python<'_>, ev: CoreEvent) -> PyResult<Py<PyAny>> {
    // Each arm copies what its class shows, then moves the event itself into the base class.
    macro_rules! new {
        ($sub:expr) => {{
            let sub = $sub;
            let base = PyClassInitializer::from(Event {
                seq: ev.seq,
                time: ev.time,
                inner: ev,
            });
            Py::new(py, base.add_subclass(sub))?.into_any()
        }};
    }
    let obj: Py<PyAny> = match &ev.kind {
        EventKind::ServiceStateChanged {
            service,
            state,
            previous,
            reason,
        } => new!(ServiceStateChanged {
            service: service.clone(),
            state: state.as_str().to_string(),
            previous: previous.as_str().to_string(),
            reason: reason.clone(),
        }),
        EventKind::QueueChanged {
            service,
            queue_remaining,
        } => new!(QueueChanged {
            service: service.clone(),
            queue_remaining: *queue_remaining,
        }),
        EventKind::ServiceDiscovered {
            url,
            kind,
            name,
            summary,
            service_kind,
        } => new!(ServiceDiscovered {
            url: url.clone(),
            kind: kind.clone(),
            name: name.clone(),
            summary: summary.clone(),
            service_kind: service_kind.clone(),
        }),
        EventKind::JobAssigned {
            job_id,
            service,
            server,
            attempt,
        } => new!(JobAssigned {
            job_id: job_id.clone(),
            service: service.clone(),
            server: server.clone(),
            attempt: *attempt,
        }),
        EventKind::JobQueued {
            job_id,
            service,
            position,
            pending_connection,
            node_errors,
        } => new!(JobQueued {
            job_id: job_id.clone(),
            service: service.clone(),
            position: *position,
            pending_connection: *pending_connection,
            node_errors: ser_to_py(py, node_errors)?,
        }),
        EventKind::JobStarted {
            job_id,
            service,
            cached_nodes,
        } => new!(JobStarted {
            job_id: job_id.clone(),
            service: service.clone(),
            cached_nodes: cached_nodes.clone(),
        }),
        EventKind::NodeStarted {
            job_id,
            node_id,
            node_type,
        } => new!(NodeStarted {
            job_id: job_id.clone(),
            node_id: node_id.clone(),
            node_type: node_type.clone(),
        }),
        EventKind::Progress { .. } => new!(Progress {}),
        EventKind::Preview {
            job_id,
            node_id,
            mime,
            data,
        } => new!(Preview {
            job_id: job_id.clone(),
            node_id: node_id.clone(),
            mime: mime.clone(),
            data: PyBytes::new(py, data).unbind(),
        }),
        EventKind::NodeText { job_id, node_id, text } => new!(NodeText {
            job_id: job_id.clone(),
            node_id: node_id.clone(),
            text: text.clone(),
        }),
        EventKind::NodeOutput {
            job_id,
            node_id,
            output,
        } => new!(NodeOutput {
            job_id: job_id.clone(),
            node_id: node_id.clone(),
            output: to_py(py, output)?,
        }),
        EventKind::TextDelta {
            job_id,
            text,
            index,
            choice,
        } => new!(TextDelta {
            job_id: job_id.clone(),
            text: text.clone(),
            index: *index,
            choice: *choice,
        }),
        EventKind::JobCompleted {
            job_id,
            outputs,
            ui,
            elapsed_seconds,
        } => new!(JobCompleted {
            job_id: job_id.clone(),
            outputs: ser_to_py(py, outputs)?,
            paths: outputs.iter().map(|o| o.path.to_string_lossy().into_owned()).collect(),
            ui: to_py(py, ui)?,
            elapsed_seconds: *elapsed_seconds,
        }),
        EventKind::JobFailed { job_id, error } => new!(JobFailed {
            job_id: job_id.clone(),
            code: error.code.clone(),
            message: error.message.clone(),
            node_id: error.node_id.clone(),
            node_type: error.node_type.clone(),
            error: ser_to_py(py, error)?,
            causes: error.causes.clone(),
        }),
        EventKind::JobCancelled { job_id } => {
            new!(JobCancelled { job_id: job_id.clone() })
        }
    };
    Ok(obj)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Event>()?;
    m.add_class::<ServiceStateChanged>()?;
    m.add_class::<QueueChanged>()?;
    m.add_class::<ServiceDiscovered>()?;
    m.add_class::<JobAssigned>()?;
    m.add_class::<JobQueued>()?;
    m.add_class::<JobStarted>()?;
    m.add_class::<NodeStarted>()?;
    m.add_class::<Progress>()?;
    m.add_class::<Preview>()?;
    m.add_class::<NodeText>()?;
    m.add_class::<NodeOutput>()?;
    m.add_class::<TextDelta>()?;
    m.add_class::<JobCompleted>()?;
    m.add_class::<JobFailed>()?;
    m.add_class::<JobCancelled>()?;
    Ok(())
}
