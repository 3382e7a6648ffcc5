//! What a submission goes through before it is posted: load (API or UI format), convert, set parameters,
//! validate against the server's node list when it is known.
use super::convert::{to_api, ConvertOptions};
use super::load::{load_value, Workflow};
use super::schema::ObjectInfo;
use super::validate::validate;
use crate::error::{Error, ErrorCode, Result};
use serde_json::{json, Value};

/// The prompt to post, and what the conversion noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub prompt: Value,
    pub warnings: Vec<String>,
}

/// Reads a submitted workflow; API format is ready to post, UI format needs the server's `/object_info`.
pub fn load(value: Value) -> Result<Workflow> {
    let workflow = load_value(value, "workflow")?;
    let empty = match &workflow {
        Workflow::Api(p) => p.nodes.is_empty(),
        Workflow::Ui(ui) => ui.graph.nodes.is_empty(),
    };
    if empty {
        return Err(Error::new(ErrorCode::InvalidWorkflow, "the workflow has no nodes"));
    }
    Ok(workflow)
}

pub fn needs_object_info(workflow: &Workflow) -> bool {
    matches!(workflow, Workflow::Ui(_))
}

/// Converts (UI format), applies `params` (selectors such as `3.seed`, `KSampler.steps`, `positive.text`) and,
/// when `info` is known, validates like the server would. Without `info` an API prompt is only checked for shape
/// and its parameters for existence; the server then validates it.
pub fn prepare(workflow: &Workflow, params: &[(String, Value)], info: Option<&ObjectInfo>) -> Result<Prepared> {
    let (mut prompt, warnings) = match (workflow, info) {
        (Workflow::Api(p), None) => (p.clone(), Vec::new()),
        (Workflow::Ui(_), None) => {
            return Err(Error::new(
                ErrorCode::InvalidWorkflow,
                "a UI-format workflow can only be converted with the server's node list (/object_info)",
            ))
        }
        (_, Some(info)) => {
            let conversion = to_api(workflow, info, &ConvertOptions::default());
            if !conversion.unknown_classes.is_empty() {
                let list = conversion.unknown_classes.join(", ");
                return Err(Error::new(
                    ErrorCode::InvalidWorkflow,
                    format!(
                        "the server does not know these node types: {list}; install the custom nodes that provide \
                         them (e.g. with ComfyUI-Manager) and restart the server"
                    ),
                )
                .with_details(json!({ "unknown_classes": conversion.unknown_classes })));
            }
            let warnings = conversion.warnings.iter().map(|w| w.message.clone()).collect();
            (conversion.prompt, warnings)
        }
    };
    for (selector, value) in params {
        super::params::set(&mut prompt, info, selector, value.clone())?;
    }
    if let Some(info) = info {
        let report = validate(&prompt, info);
        if report.rejected || !report.is_usable() {
            let problems: Vec<_> = report.errors().map(|p| p.to_node_problem()).collect();
            let summary: Vec<String> = report
                .errors()
                .take(3)
                .map(|p| match (&p.node_id, &p.input) {
                    (Some(n), Some(i)) => format!("node {n} input {i}: {}", p.message),
                    (Some(n), None) => format!("node {n}: {}", p.message),
                    _ => p.message.clone(),
                })
                .collect();
            let more = problems.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return Err(Error::new(
                ErrorCode::ValidationFailed,
                format!(
                    "the workflow would be rejected: {}{more}. Fix it or its parameters.",
                    summary.join("; ")
                ),
            )
            .with_details(json!({ "node_errors": problems })));
        }
    }
    Ok(Prepared {
        prompt: prompt.to_value(),
        warnings,
    })
}
