//! The templates shipped in `workflows/`: every API workflow validates against the recorded `/object_info`
//! (ComfyUI 0.3.64 without model weights, so only model-file and input-file names may be missing), and every
//! selector of its `<name>.bindings.json` resolves to an input the node has, with the declared default.
//! Fixtures: `tests/fixtures/comfyui` (see its README).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod workflow_support;

use director_link::workflow::params::resolve;
use director_link::workflow::{load_file, validate, InputType, ObjectInfo, Problem, Prompt, Workflow};
use serde_json::Value;
use std::path::{Path, PathBuf};
use workflow_support::{object_info, read_json};

/// The four templates the issue asks for (others in the folder are checked too).
const REQUIRED: &[&str] = &["sd_basic", "ltx_video", "upscale_4x", "controlnet_pose"];

fn workflows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// Every `workflows/*.json` that is not a bindings file, sorted.
fn workflow_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".bindings.json")
        })
        .collect();
    files.sort();
    files
}

fn load_api(path: &Path) -> Prompt {
    match load_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        Workflow::Api(p) => p,
        Workflow::Ui(_) => panic!("{}: a template must be in API format", path.display()),
    }
}

/// A problem the recorded server answers only because it has no models installed and nothing uploaded.
fn missing_file(p: &Problem, prompt: &Prompt, info: &ObjectInfo) -> bool {
    match p.code.as_str() {
        // LoadImage & co. check their file in VALIDATE_INPUTS.
        "custom_validation_failed" => true,
        "value_not_in_list" => {
            let (Some(id), Some(input)) = (p.node_id.as_deref(), p.input.as_deref()) else {
                return false;
            };
            let Some(node) = prompt.get(id) else { return false };
            info.get(node.class())
                .and_then(|s| s.input(input))
                .is_some_and(|s| matches!(&s.input_type, InputType::Combo { options, .. } if options.is_empty()))
        }
        _ => false,
    }
}

/// A default as written in the bindings equals the workflow's literal (`1` and `1.0` are the same number).
fn same_default(literal: &Value, default: &Value) -> bool {
    match (literal, default) {
        (Value::Number(a), Value::Number(b)) => a == b || (a.as_f64() == b.as_f64() && (a.is_f64() || b.is_f64())),
        _ => literal == default,
    }
}

#[test]
fn the_four_templates_and_their_bindings_are_shipped() {
    for name in REQUIRED {
        for file in [format!("{name}.json"), format!("{name}.bindings.json")] {
            assert!(workflows_dir().join(&file).is_file(), "workflows/{file} is missing");
        }
    }
}

#[test]
fn every_shipped_workflow_validates_against_the_recorded_object_info() {
    let info = object_info();
    let mut failures = Vec::new();
    for path in workflow_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let prompt = load_api(&path);
        let report = validate(&prompt, info);
        assert!(!report.rejected, "{name}: rejected as a whole: {:#?}", report.problems);
        for p in report.problems.iter() {
            if !missing_file(p, &prompt, info) {
                failures.push(format!(
                    "{name}: node {:?} ({:?}) input {:?}: {} [{}]",
                    p.node_id, p.class_type, p.input, p.message, p.code
                ));
            }
        }
        let excused = report
            .problems
            .iter()
            .filter(|p| missing_file(p, &prompt, info))
            .count();
        eprintln!(
            "{name}: {} nodes, {} outputs, {excused} missing model/input file(s)",
            prompt.nodes.len(),
            report.outputs.len()
        );
        assert!(!report.outputs.is_empty(), "{name}: no output node");
    }
    assert!(
        failures.is_empty(),
        "problems beyond missing files:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_bindings_selector_resolves_with_its_default() {
    let info = object_info();
    let mut checked = 0;
    for path in workflow_files() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bindings_path = workflows_dir().join(format!("{stem}.bindings.json"));
        if !bindings_path.is_file() {
            assert!(!REQUIRED.contains(&stem.as_str()), "{stem}: no bindings file");
            continue;
        }
        let prompt = load_api(&path);
        let b = read_json(&bindings_path);
        assert_eq!(b["name"], Value::String(stem.clone()), "{stem}: bindings name");
        assert!(
            b["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{stem}: description"
        );
        let params = b["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{stem}: parameters"));
        assert!(!params.is_empty(), "{stem}: no parameters");
        let mut targets = Vec::new();
        for p in params {
            let sel = p["selector"]
                .as_str()
                .unwrap_or_else(|| panic!("{stem}: selector in {p}"));
            assert!(
                p["label"].as_str().is_some_and(|l| !l.is_empty()),
                "{stem}: {sel}: label"
            );
            let kind = p["type"].as_str().unwrap_or_else(|| panic!("{stem}: {sel}: type"));
            let t = resolve(&prompt, sel).unwrap_or_else(|e| panic!("{stem}: {sel}: {e}"));
            let node = prompt.get(&t.node_id).unwrap();
            let value = node
                .inputs
                .get(&t.input)
                .unwrap_or_else(|| panic!("{stem}: {sel} → {t:?}, which the node does not have"));
            let literal = value
                .literal()
                .unwrap_or_else(|| panic!("{stem}: {sel} → {t:?} is a link, not a settable input"));
            assert!(
                same_default(&literal, &p["default"]),
                "{stem}: {sel}: default {} but the workflow has {literal}",
                p["default"]
            );
            let spec = info
                .get(node.class())
                .and_then(|s| s.input(&t.input))
                .unwrap_or_else(|| panic!("{stem}: {sel}: {} has no input {}", node.class(), t.input));
            let schema_kind = spec.input_type.name();
            let expected = if kind == "IMAGE" { "COMBO" } else { kind };
            assert_eq!(
                expected, schema_kind,
                "{stem}: {sel}: type {kind} but the input is {schema_kind}"
            );
            assert!(!targets.contains(&t), "{stem}: {sel} reaches {t:?} twice");
            targets.push(t);
            checked += 1;
        }
        let ids: Vec<&str> = prompt.nodes.keys().map(String::as_str).collect();
        let outputs = b["outputs"].as_array().unwrap_or_else(|| panic!("{stem}: outputs"));
        assert!(!outputs.is_empty(), "{stem}: no outputs");
        for o in outputs {
            let node = o["node"]
                .as_str()
                .unwrap_or_else(|| panic!("{stem}: output node in {o}"));
            assert!(ids.contains(&node), "{stem}: output node {node} is not in the workflow");
            let class = prompt.get(node).unwrap().class();
            let is_output = info.get(class).is_some_and(|s| s.output_node);
            assert!(is_output, "{stem}: output node {node} ({class}) is not an output node");
            assert!(
                matches!(o["kind"].as_str(), Some("image" | "video")),
                "{stem}: output kind {}",
                o["kind"]
            );
        }
    }
    assert!(checked >= 20, "only {checked} selectors checked");
}
