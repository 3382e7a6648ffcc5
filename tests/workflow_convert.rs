//! UI → API conversion reproduces, input for input, the prompts the real frontend 1.27.10 produced
//! (`fixtures/comfyui/ui_conversion/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod workflow_support;

use director_link::workflow::{convert, load_file, CivilTime, ConvertOptions, Workflow};
use workflow_support::{comfy_fixtures, object_info, prompt_diff, read_json};

/// The day the fixtures were recorded (`%date:yyyy-MM-dd%` → `2026-11-22`).
fn recording_day() -> ConvertOptions {
    ConvertOptions {
        now: Some(CivilTime::from_unix(1_795_305_600 + 12 * 3600)),
    }
}

fn check_case(case: &str, ui_suffix: &str) -> Option<Vec<String>> {
    let dir = comfy_fixtures()?.join("ui_conversion");
    let info = object_info()?;
    let ui_path = dir.join(format!("{case}.{ui_suffix}"));
    if !ui_path.exists() {
        return None;
    }
    let Workflow::Ui(ui) = load_file(&ui_path).unwrap() else {
        panic!("{case}: not detected as UI")
    };
    let conv = convert(&ui, info, &recording_day());
    assert!(
        conv.unknown_classes.is_empty(),
        "{case}: unknown classes {:?}",
        conv.unknown_classes
    );
    let expected = read_json(&dir.join(format!("{case}.api.json")));
    Some(prompt_diff(&expected, &conv.prompt.to_value()))
}

#[test]
fn every_ui_conversion_fixture_converts_to_the_recorded_prompt() {
    let Some(dir) = comfy_fixtures().map(|d| d.join("ui_conversion")) else {
        return;
    };
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".workflow.json").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "expected the five recorded cases, found {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let diff = check_case(case, "workflow.json").unwrap();
        if !diff.is_empty() {
            failures.push(format!("{case}:\n  {}", diff.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "conversions differ from the frontend's:\n{}",
        failures.join("\n")
    );
}

/// The templates as shipped (before the frontend re-saved them: no S&R names, `true` in the seed's control slot,
/// `null` widgets_values) give the same prompt.
#[test]
fn shipped_template_files_convert_like_their_resaved_versions() {
    for case in ["template_default", "template_sdxl_simple_example"] {
        let Some(diff) = check_case(case, "original.json") else {
            return;
        };
        assert!(diff.is_empty(), "{case}.original.json:\n  {}", diff.join("\n  "));
    }
}

#[test]
fn api_files_load_as_api_and_round_trip_exactly() {
    let Some(dir) = comfy_fixtures().map(|d| d.join("ui_conversion")) else {
        return;
    };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".api.json") {
            continue;
        }
        let Workflow::Api(prompt) = load_file(&path).unwrap() else {
            panic!("{}: not API", path.display())
        };
        let raw = read_json(&path);
        assert_eq!(prompt.to_value(), raw, "{}", path.display());
    }
}
