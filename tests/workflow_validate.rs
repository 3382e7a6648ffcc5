//! Local validation answers like the real server did for the 16 recorded `POST /prompt` variants
//! (`fixtures/comfyui/validation_errors.jsonl`): same node ids, same inputs, same codes; accepted prompts are
//! accepted (with our extra warnings at most).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod workflow_support;

use director_link::workflow::{load_str, load_value, validate, Prompt, Severity, Workflow};
use serde_json::Value;
use workflow_support::{comfy_fixtures, object_info};

/// (request body as JSON or raw text, response status, response JSON).
fn recorded_cases() -> Vec<(Value, u64, Value)> {
    let path = comfy_fixtures().join("validation_errors.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut out = Vec::new();
    let mut pending: Option<Value> = None;
    for line in lines {
        match line["kind"].as_str() {
            Some("http_request") => {
                pending = Some(line.get("json").cloned().unwrap_or_else(|| line["body_text"].clone()));
            }
            Some("http_response") => {
                if let Some(req) = pending.take() {
                    let body = line.get("json").cloned().unwrap_or(Value::Null);
                    out.push((req, line["status"].as_u64().unwrap(), body));
                }
            }
            _ => {}
        }
    }
    out
}

fn prompt_of(body: &Value) -> Prompt {
    match load_value(body["prompt"].clone(), "recorded").unwrap() {
        Workflow::Api(p) => p,
        Workflow::Ui(_) => panic!("recorded prompts are API format"),
    }
}

#[test]
fn every_recorded_validation_answer_is_reproduced() {
    let info = object_info();
    let cases = recorded_cases();
    assert_eq!(cases.len(), 16, "the recording has 16 POST /prompt variants");
    let mut checked = 0;
    for (i, (req, status, resp)) in cases.iter().enumerate() {
        let case = i + 1;
        // Bodies that are not prompts: our loader refuses them with its own codes.
        if let Value::String(raw) = req {
            assert_eq!(status, &500);
            assert_eq!(
                load_str(raw, "body").unwrap_err().reason().unwrap_or_default(),
                "invalid_json",
                "case {case}"
            );
            checked += 1;
            continue;
        }
        if req.get("prompt").is_none() {
            assert_eq!(resp["error"]["type"], "no_prompt");
            assert_eq!(
                load_value(req.clone(), "body")
                    .unwrap_err()
                    .reason()
                    .unwrap_or_default(),
                "not_a_workflow",
                "case {case}"
            );
            checked += 1;
            continue;
        }
        let prompt = prompt_of(req);
        let report = validate(&prompt, info);
        let node_errors = resp["node_errors"].as_object().cloned().unwrap_or_default();
        if *status == 400 && node_errors.is_empty() {
            // A prompt-level rejection: `invalid_prompt` (details "Node ID '#1'") or `prompt_no_outputs`.
            let code = resp["error"]["type"].as_str().unwrap();
            let node = resp["error"]["details"]
                .as_str()
                .and_then(|d| d.strip_prefix("Node ID '#"))
                .map(|d| d.trim_end_matches('\'').to_string());
            assert!(
                report.rejected && !report.is_usable(),
                "case {case}: should be rejected: {report:?}"
            );
            assert!(
                report.errors().any(|p| p.code == code && p.node_id == node),
                "case {case}: expected {code} on {node:?}, got {:#?}",
                report.problems
            );
            checked += 1;
            continue;
        }
        // Per-node problems: each server error has our error with the same node, input and code.
        for (node_id, entry) in &node_errors {
            for err in entry["errors"].as_array().unwrap() {
                let code = err["type"].as_str().unwrap();
                let mut input = err["extra_info"]["input_name"].as_str().map(str::to_string);
                if code == "exception_during_inner_validation" {
                    // The server files a link to a missing node under the node holding that link, but names the
                    // *consumer's* input (`images` of the SaveImage that reads it); we name the input that holds
                    // the bad link (`image`), which exists on that node and is what the user must fix.
                    assert_eq!(input.as_deref(), Some("images"), "case {case}: recording changed");
                    input = Some("image".into());
                }
                let ours: Vec<_> = report
                    .errors()
                    .filter(|p| p.node_id.as_deref() == Some(node_id))
                    .collect();
                assert!(
                    ours.iter().any(|p| p.code == code && p.input == input),
                    "case {case}: server says {code} on {node_id}.{input:?}; we found {ours:#?}"
                );
                assert_eq!(
                    ours.iter().find(|p| p.code == code).unwrap().class_type.as_deref(),
                    entry["class_type"].as_str(),
                    "case {case}"
                );
                let deps: Vec<String> = entry["dependent_outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().into())
                    .collect();
                assert_eq!(ours[0].dependent_outputs, deps, "case {case}: dependent outputs");
            }
            assert_eq!(
                report.errors().count(),
                node_errors
                    .values()
                    .map(|e| e["errors"].as_array().unwrap().len())
                    .sum::<usize>(),
                "case {case}: no extra errors: {:#?}",
                report.problems
            );
        }
        if *status == 200 {
            assert!(
                report.is_usable(),
                "case {case}: the server queued it: {:#?}",
                report.problems
            );
            assert_eq!(
                report.is_valid(),
                node_errors.is_empty(),
                "case {case}: {:#?}",
                report.problems
            );
        } else {
            assert!(!report.is_usable(), "case {case}: the server rejected it: {report:#?}");
        }
        checked += 1;
    }
    assert_eq!(checked, 16);
}

#[test]
fn v3_combo_values_are_accepted_with_a_warning() {
    let info = object_info();
    let case = recorded_cases()
        .into_iter()
        .find(|(req, _, _)| req.to_string().contains("sideways"));
    let Some((req, status, _)) = case else {
        panic!("case 15 missing")
    };
    assert_eq!(status, 200);
    let report = validate(&prompt_of(&req), info);
    let warning = report
        .warnings()
        .find(|p| p.code == "value_not_in_list")
        .expect("a warning");
    assert_eq!(
        (warning.node_id.as_deref(), warning.input.as_deref()),
        (Some("9"), Some("operation"))
    );
    assert_eq!(warning.severity, Severity::Warning);
    assert!(warning.suggestion.as_deref().unwrap().contains("erode"), "{warning:?}");
}

#[test]
fn unknown_classes_suggest_the_nearest_known_names() {
    let info = object_info();
    let text = r#"{"1": {"class_type": "KSamplr", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}"#;
    let Workflow::Api(prompt) = load_str(text, "t").unwrap() else {
        panic!()
    };
    let report = validate(&prompt, info);
    let p = report.errors().find(|p| p.code == "invalid_prompt").unwrap();
    assert_eq!(p.node_id.as_deref(), Some("1"));
    assert!(p.suggestion.as_deref().unwrap().contains("KSampler"), "{p:?}");
    // Only reachable nodes are validated, but class existence is checked for every node, like the server.
    assert!(report.rejected);
}

#[test]
fn seeds_up_to_u64_max_pass_and_beyond_fail() {
    let info = object_info();
    let seed_problems = |seed: &str| {
        let text = format!(
            r#"{{"1": {{"class_type": "KSampler", "inputs": {{"seed": {seed}, "steps": 20, "cfg": 8,
            "sampler_name": "euler", "scheduler": "normal", "denoise": 1}}}},
            "2": {{"class_type": "VAEDecode", "inputs": {{"samples": ["1", 0]}}}},
            "3": {{"class_type": "PreviewImage", "inputs": {{"images": ["2", 0]}}}}}}"#
        );
        let Workflow::Api(prompt) = load_str(&text, "t").unwrap() else {
            panic!()
        };
        let report = validate(&prompt, info);
        // The missing model/positive/negative/latent/vae links are errors either way.
        assert!(report
            .errors()
            .any(|p| p.code == "required_input_missing" && p.input.as_deref() == Some("model")));
        report
            .problems
            .into_iter()
            .filter(|p| p.input.as_deref() == Some("seed"))
            .map(|p| p.code)
            .collect::<Vec<_>>()
    };
    assert!(seed_problems("18446744073709551615").is_empty());
    assert_eq!(seed_problems("18446744073709551616"), ["value_bigger_than_max"]);
    assert_eq!(seed_problems("-1"), ["value_smaller_than_min"]);
}
