//! Every template of `comfyui-workflow-templates-json==0.1.123` converts without a panic, and every validation
//! error on what it converts to is explained by data the recorded server does not have. The templates come from
//! `DIRECTOR_LINK_TEMPLATES` or the Python package the README's test command installs; without either the test
//! fails and says how to get them.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod workflow_support;

use director_link::workflow::params::resolve;
use director_link::workflow::{
    convert, load_file, validate, Conversion, ConvertOptions, ObjectInfo, Problem, Prompt, Severity, Workflow,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use workflow_support::object_info;

/// `DIRECTOR_LINK_TEMPLATES`, else the `templates/` folder of the Python package, which the README's test
/// command installs (`pip install -e '.[test]'` pins `comfyui-workflow-templates-json`).
fn templates_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DIRECTOR_LINK_TEMPLATES") {
        return Some(PathBuf::from(dir));
    }
    let probe = "import os, comfyui_workflow_templates_json as t; print(os.path.join(os.path.dirname(t.__file__), 'templates'))";
    let out = std::process::Command::new("python3")
        .args(["-c", probe])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && dir.is_dir()).then_some(dir)
}

fn template_files() -> Vec<PathBuf> {
    let Some(dir) = templates_dir() else {
        panic!(
            "no workflow templates: `python3 -m pip install -e '.[test]'` (it pins comfyui-workflow-templates-json) \
             or set DIRECTOR_LINK_TEMPLATES to their folder"
        );
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() > 100,
        "{}: expected the package's templates, found {}",
        dir.display(),
        files.len()
    );
    files
}

/// Why an error is acceptable, or `None` when it points at a conversion bug.
///
/// The fair line: the recorded server (ComfyUI 0.3.64, no model weights, nothing uploaded) is older than the
/// templates (written for newer servers), so these errors are what the real server would answer too, and they say
/// nothing about our conversion:
/// - `invalid_prompt`: a class the server does not list (it is in `unknown_classes`);
/// - `prompt_no_outputs`: the template's output nodes are such unknown classes;
/// - `value_not_in_list` on an old-style COMBO: model files (none installed), or a word no widget of the class
///   offers (an option added in a later version; a shifted mapping would bring another widget's value instead);
/// - `custom_validation_failed`: the template's example input files were never uploaded;
/// - `exception_during_*validation`: a link to an output index the server's (older) class does not have;
/// - anything on a node the conversion warned about (a value that came from a class the server does not list).
///
/// What stays forbidden is what a wrong conversion produces: missing required inputs, type mismatches, values of
/// the wrong type or out of range, malformed links — on nodes we mapped without a warning.
fn excuse(p: &Problem, conv: &Conversion, info: &ObjectInfo) -> Option<&'static str> {
    let warned = |id: &Option<String>| conv.warnings.iter().any(|w| w.node_id == *id);
    match p.code.as_str() {
        "invalid_prompt" => p
            .class_type
            .as_ref()
            .filter(|c| conv.unknown_classes.contains(c))
            .map(|_| "class not on the server"),
        "prompt_no_outputs" => (!conv.unknown_classes.is_empty()).then_some("outputs are unknown classes"),
        "value_not_in_list" => {
            let node = conv.prompt.get(p.node_id.as_deref()?)?;
            let value = node.inputs.get(p.input.as_deref()?)?.literal()?;
            let options_empty = info
                .get(node.class())
                .and_then(|s| s.input(p.input.as_deref()?))
                .is_some_and(|s| matches!(&s.input_type, director_link::workflow::InputType::Combo { options, .. } if options.is_empty()));
            let file_like = value.as_str().is_some_and(|v| {
                v.contains('/') || v.rsplit_once('.').is_some_and(|(_, ext)| (2..=12).contains(&ext.len()))
            });
            // A shifted widget mapping would put a value of another widget here (a number, or another COMBO's
            // option); a plain word no widget of the class offers is an option added after 0.3.64.
            let schema = info.get(node.class())?;
            let belongs_elsewhere = !value.is_string()
                || schema.inputs.iter().filter(|s| Some(s.name.as_str()) != p.input.as_deref()).any(|s| {
                    matches!(&s.input_type, director_link::workflow::InputType::Combo { options, .. } if options.contains(&value))
                });
            if options_empty || file_like {
                Some("model or input file not on the server")
            } else if !belongs_elsewhere {
                Some("option added after the server's version")
            } else if warned(&p.node_id) {
                Some("value from data we do not have (warned)")
            } else {
                None
            }
        }
        "custom_validation_failed" => Some("example input not uploaded"),
        "exception_during_validation" | "exception_during_inner_validation" => {
            let node = conv.prompt.get(p.node_id.as_deref()?)?;
            let skew = node.inputs.values().filter_map(|v| v.as_link()).any(|l| {
                conv.prompt
                    .get(&l.node)
                    .and_then(|o| info.get(o.class()))
                    .is_some_and(|s| l.slot as usize >= s.outputs.len())
            });
            skew.then_some("output index the older class lacks")
        }
        _ if warned(&p.node_id) => Some("value from data we do not have (warned)"),
        _ => None,
    }
}

const ROLE_SELECTORS: &[&str] = &[
    "positive.text",
    "negative.text",
    "sampler.seed",
    "latent.width",
    "frames.length",
];

/// Tries the role selectors: any answer must name an input the node has; with one KSampler whose positive input
/// comes straight from a CLIPTextEncode, `positive.text` must be that node's text (or the literal feeding it).
fn check_roles<'a>(
    name: &str,
    prompt: &Prompt,
    counts: &mut BTreeMap<(&'a str, &'a str), usize>,
    wrong: &mut Vec<String>,
) {
    for sel in ROLE_SELECTORS {
        let outcome = match resolve(prompt, sel) {
            Ok(t) => {
                if !prompt.get(&t.node_id).is_some_and(|n| n.inputs.contains_key(&t.input)) {
                    wrong.push(format!("{name}: {sel} → {t:?}, which the node does not have"));
                }
                "resolved"
            }
            Err(e) if e.reason().unwrap_or_default() == "ambiguous_selector" => "ambiguous",
            Err(e) if e.reason().unwrap_or_default() == "selector_not_found" => "not_found",
            Err(e) => {
                wrong.push(format!("{name}: {sel}: unexpected {e:?}"));
                "error"
            }
        };
        *counts.entry((sel, outcome)).or_default() += 1;
    }
    let samplers = director_link::workflow::params::samplers(prompt);
    if let [only] = samplers.as_slice() {
        let node = prompt.get(only).unwrap();
        let direct = node
            .inputs
            .get("positive")
            .and_then(|v| v.as_link())
            .filter(|l| prompt.get(&l.node).is_some_and(|n| n.class() == "CLIPTextEncode"));
        let encoder = direct.and_then(|l| prompt.get(&l.node).map(|n| (l.node.clone(), n)));
        if let (Some((enc_id, enc)), "KSampler") = (encoder, node.class()) {
            if !enc.inputs.contains_key("text") {
                return; // fed by something we could not resolve (warned during conversion)
            }
            // The text may come through string nodes feeding the encoder: the target must be upstream of it.
            let mut upstream = vec![enc_id.clone()];
            let mut i = 0;
            while i < upstream.len() {
                let links: Vec<String> = prompt.get(&upstream[i]).map_or(Vec::new(), |n| {
                    n.inputs
                        .values()
                        .filter_map(|v| v.as_link())
                        .map(|l| l.node.clone())
                        .collect()
                });
                upstream.extend(links.into_iter().filter(|l| !upstream.contains(l)).collect::<Vec<_>>());
                i += 1;
            }
            match resolve(prompt, "positive.text") {
                Ok(t) if upstream.contains(&t.node_id) => {}
                other => wrong.push(format!(
                    "{name}: positive.text should be node {enc_id} or feed it: {other:?}"
                )),
            }
        }
    }
}

#[test]
fn every_template_converts_and_known_nodes_validate() {
    let files = template_files();
    let info = object_info();
    let (mut clean, mut with_unknown, mut not_workflows, mut load_errors) = (0, 0, 0, Vec::new());
    let (mut panics, mut unexplained) = (Vec::new(), Vec::new());
    let mut excused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut valid = 0;
    let mut roles: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut wrong_roles = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let wf = match load_file(path) {
            Ok(Workflow::Ui(ui)) => ui,
            Ok(Workflow::Api(_)) => continue,
            Err(e) if e.reason().unwrap_or_default() == "not_a_workflow" => {
                not_workflows += 1;
                continue;
            }
            Err(e) => {
                load_errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Ok(conv) = std::panic::catch_unwind(|| convert(&wf, info, &ConvertOptions::default())) else {
            panics.push(name);
            continue;
        };
        if conv.unknown_classes.is_empty() {
            clean += 1;
        } else {
            with_unknown += 1;
        }
        let report = validate(&conv.prompt, info);
        check_roles(&name, &conv.prompt, &mut roles, &mut wrong_roles);
        if report.is_valid() {
            valid += 1;
        }
        for p in report.problems.iter().filter(|p| p.severity == Severity::Error) {
            match excuse(p, &conv, info) {
                Some(why) => *excused.entry(why).or_default() += 1,
                None => unexplained.push(format!("{name}: [{}] {}", p.code, p.message)),
            }
        }
    }
    eprintln!(
        "templates: {} files: {clean} converted cleanly, {with_unknown} need classes not in object_info, \
         {} errors (load {}, panics {}); {not_workflows} index files skipped; {valid} validate with no error",
        files.len(),
        load_errors.len() + panics.len(),
        load_errors.len(),
        panics.len()
    );
    eprintln!("validation errors explained by missing server data: {excused:?}");
    eprintln!("role selectors (selector, outcome) → templates: {roles:?}");
    assert!(wrong_roles.is_empty(), "{wrong_roles:#?}");
    assert!(panics.is_empty(), "conversion panicked on {panics:?}");
    assert!(load_errors.is_empty(), "{load_errors:#?}");
    assert!(
        unexplained.is_empty(),
        "{} unexplained validation errors:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}
