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

fn check_case(case: &str, ui_suffix: &str) -> Vec<String> {
    let dir = comfy_fixtures().join("ui_conversion");
    let info = object_info();
    let ui_path = dir.join(format!("{case}.{ui_suffix}"));
    assert!(ui_path.is_file(), "recorded case missing: {}", ui_path.display());
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
    prompt_diff(&expected, &conv.prompt.to_value())
}

#[test]
fn every_ui_conversion_fixture_converts_to_the_recorded_prompt() {
    let dir = comfy_fixtures().join("ui_conversion");
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
        let diff = check_case(case, "workflow.json");
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
        let diff = check_case(case, "original.json");
        assert!(diff.is_empty(), "{case}.original.json:\n  {}", diff.join("\n  "));
    }
}

#[test]
fn api_files_load_as_api_and_round_trip_exactly() {
    let dir = comfy_fixtures().join("ui_conversion");
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

mod synthetic {
    //! Small hand-written UI graphs for the rules the recorded fixtures do not cover.
    use super::workflow_support::object_info;
    use director_link::workflow::{convert, CivilTime, Conversion, ConvertOptions, UiWorkflow};
    use serde_json::{json, Value};

    fn run(v: Value) -> (Conversion, Value) {
        let info = object_info();
        let ui = UiWorkflow::from_value(v, "synthetic").unwrap();
        let conv = convert(
            &ui,
            info,
            &ConvertOptions {
                now: Some(CivilTime::from_unix(0)),
            },
        );
        let value = conv.prompt.to_value();
        (conv, value)
    }

    fn node(id: i64, ty: &str, mode: i64, inputs: Value, outputs: Value, widgets: Value) -> Value {
        json!({"id": id, "type": ty, "mode": mode, "inputs": inputs, "outputs": outputs, "widgets_values": widgets,
               "properties": {"Node name for S&R": ty}})
    }

    fn image_out(links: Value) -> Value {
        json!([{"name": "IMAGE", "type": "IMAGE", "links": links}])
    }

    fn image_in(name: &str, link: Value) -> Value {
        json!({"name": name, "type": "IMAGE", "link": link})
    }

    #[test]
    fn unknown_classes_are_emitted_reported_and_warned() {
        let (conv, p) = run(json!({"nodes": [
            node(1, "EmptyImage", 0, json!([]), image_out(json!([1])), json!([8, 8, 1, 0])),
            node(2, "FancyCustomFilter", 0, json!([image_in("image", json!(1))]), image_out(json!([2])), json!([0.5, "x"])),
            node(3, "PreviewImage", 0, json!([image_in("images", json!(2))]), json!([]), json!([])),
        ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}));
        assert_eq!(conv.unknown_classes, ["FancyCustomFilter"]);
        assert_eq!(p["2"]["class_type"], "FancyCustomFilter");
        assert_eq!(p["2"]["inputs"]["image"], json!(["1", 0]));
        assert_eq!(p["3"]["inputs"]["images"], json!(["2", 0]));
        assert!(conv
            .warnings
            .iter()
            .any(|w| w.code == "unknown_class" && w.node_id.as_deref() == Some("2")));
    }

    #[test]
    fn muted_nodes_vanish_with_the_links_into_them_and_bypass_picks_by_type() {
        // 2 = bypassed ImageCompositeMasked whose first input is the MASK: its IMAGE output must come from its
        // first IMAGE input (`destination`), not from input 0.
        let (conv, p) = run(json!({"nodes": [
            node(1, "LoadImage", 0, json!([]), json!([{"name": "IMAGE", "type": "IMAGE", "links": [1, 7]},
                {"name": "MASK", "type": "MASK", "links": [2]}]), json!(["example.png", "image"])),
            node(2, "ImageCompositeMasked", 4, json!([{"name": "mask", "type": "MASK", "link": 2},
                image_in("destination", json!(7))]), image_out(json!([3])), json!([0, 0, false])),
            node(3, "ImageInvert", 0, json!([image_in("image", json!(3))]), image_out(json!([4])), json!([])),
            node(4, "ImageInvert", 2, json!([image_in("image", json!(1))]), image_out(json!([5])), json!([])),
            node(5, "ImageBlend", 0, json!([image_in("image1", json!(4)), image_in("image2", json!(5))]),
                image_out(json!([6])), json!([0.5, "normal"])),
            node(6, "SaveImage", 0, json!([image_in("images", json!(6))]), json!([]), json!(["x/%date:yyyy%"])),
        ], "links": [[1, 1, 0, 4, 0, "IMAGE"], [2, 1, 1, 2, 0, "MASK"], [3, 2, 0, 3, 0, "IMAGE"],
                     [4, 3, 0, 5, 0, "IMAGE"], [5, 4, 0, 5, 1, "IMAGE"], [6, 5, 0, 6, 0, "IMAGE"],
                     [7, 1, 0, 2, 1, "IMAGE"]]}));
        assert_eq!(
            p["3"]["inputs"]["image"],
            json!(["1", 0]),
            "bypass passes the IMAGE input through"
        );
        assert!(p.get("2").is_none() && p.get("4").is_none());
        assert_eq!(p["5"]["inputs"]["image1"], json!(["3", 0]));
        assert!(
            p["5"]["inputs"].get("image2").is_none(),
            "link from the muted node is removed"
        );
        assert!(conv.warnings.iter().any(|w| w.code == "input_from_dropped_node"));
        assert_eq!(p["6"]["inputs"]["filename_prefix"], "x/1970");
    }

    #[test]
    fn nested_subgraphs_flatten_to_colon_ids_and_promoted_values_apply() {
        let inner_def = json!({"id": "inner", "name": "Inner", "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [1]}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [2]}],
            "nodes": [node(7, "ImageInvert", 0, json!([image_in("image", json!(1))]), image_out(json!([2])), json!([]))],
            "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "IMAGE"},
                      {"id": 2, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}]});
        let outer_def = json!({"id": "outer", "name": "Outer",
            "inputs": [{"name": "width", "type": "INT", "linkIds": [3]}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [5]}],
            "nodes": [
                node(3, "EmptyImage", 0, json!([{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 3}]),
                    image_out(json!([4])), json!([16, 16, 1, 0])),
                node(4, "inner", 0, json!([image_in("image", json!(4))]), image_out(json!([5])), json!([])),
            ],
            "links": [{"id": 3, "origin_id": -10, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "INT"},
                      {"id": 4, "origin_id": 3, "origin_slot": 0, "target_id": 4, "target_slot": 0, "type": "IMAGE"},
                      {"id": 5, "origin_id": 4, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}]});
        let (conv, p) = run(json!({"nodes": [
            node(9, "outer", 0, json!([]), image_out(json!([9])), json!([96])),
            node(10, "PreviewImage", 0, json!([image_in("images", json!(9))]), json!([]), json!([])),
        ], "links": [[9, 9, 0, 10, 0, "IMAGE"]], "definitions": {"subgraphs": [outer_def, inner_def]}}));
        let mut ids: Vec<&String> = p.as_object().unwrap().keys().collect();
        ids.sort();
        assert_eq!(ids, ["10", "9:3", "9:4:7"], "{p:#}");
        assert_eq!(p["10"]["inputs"]["images"], json!(["9:4:7", 0]));
        assert_eq!(p["9:4:7"]["inputs"]["image"], json!(["9:3", 0]));
        assert_eq!(
            p["9:3"]["inputs"]["width"], 96,
            "the instance's promoted widget value wins"
        );
        assert!(conv.unknown_classes.is_empty());
    }

    #[test]
    fn legacy_force_input_placeholders_and_dict_widgets() {
        // StabilityUpscaleConservativeNode: prompt, creativity, seed (+control), then forceInput negative_prompt:
        // files from before frontend 1.16 carry a value for it too.
        let (conv, p) = run(json!({"nodes": [
            node(1, "StabilityUpscaleConservativeNode", 0, json!([]), image_out(json!([])),
                json!(["a castle", 0.35, 7, "fixed", "legacy placeholder"])),
            node(2, "EmptyImage", 0, json!([]), image_out(json!([])), json!({"height": 24, "width": 40, "junk": 1})),
        ], "links": []}));
        assert_eq!(p["1"]["inputs"]["prompt"], "a castle");
        assert_eq!(p["1"]["inputs"]["seed"], 7);
        assert!(p["1"]["inputs"].get("negative_prompt").is_none(), "{p:#}");
        assert_eq!(
            p["2"]["inputs"],
            json!({"width": 40, "height": 24, "batch_size": 1, "color": 0})
        );
        assert!(
            conv.warnings.iter().all(|w| w.code != "widget_count_mismatch"),
            "{:?}",
            conv.warnings
        );
    }

    #[test]
    fn node_widget_references_in_filename_prefix() {
        let (_, p) = run(json!({"nodes": [
            json!({"id": 1, "type": "EmptyImage", "mode": 0, "title": "Canvas", "outputs": image_out(json!([1])),
                   "widgets_values": [640, 360, 1, 0], "properties": {}}),
            node(2, "SaveImage", 0, json!([image_in("images", json!(1))]), json!([]),
                json!(["out/%Canvas.width%x%EmptyImage.height%_%width%_%date:yy-M-d%"])),
        ], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}));
        // Title lookup works; an unknown S&R name stays as written; %width% is left for the server.
        assert_eq!(
            p["2"]["inputs"]["filename_prefix"],
            "out/640x%EmptyImage.height%_%width%_70-1-1"
        );
    }
}
