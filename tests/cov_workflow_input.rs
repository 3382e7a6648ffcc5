//! Malformed workflows, as a user may hand them over (a hand-edited UI file, a truncated export, a wrong file):
//! each is refused with `invalid_workflow` and a message that names where in the file the problem is, what was
//! expected there and what was found (long values shortened); files that are not text or not a ComfyUI PNG say so.
#![allow(clippy::unwrap_used)]
use director_link::workflow::load::{load_file, load_value, Workflow};
use director_link::ErrorCode;
use serde_json::{json, Value};

/// A one-node UI workflow with `extra` set on the node.
fn ui_node(extra: Value) -> Value {
    let mut n = json!({"id": 1, "type": "KSampler", "mode": 0});
    for (k, v) in extra.as_object().unwrap() {
        n[k] = v.clone();
    }
    json!({"nodes": [n], "links": [], "version": 0.4})
}

fn subgraph(sub: Value) -> Value {
    json!({"nodes": [], "links": [], "definitions": {"subgraphs": [sub]}})
}

#[test]
fn malformed_workflows_name_the_place_the_expectation_and_the_finding() {
    let long = "x".repeat(100);
    let cases = [
        (ui_node(json!({"inputs": 5})), "at $.nodes[0].inputs: expected an array of input slots, found a number 5"),
        (ui_node(json!({"outputs": "x"})), "at $.nodes[0].outputs: expected an array of output slots, found a string \"x\""),
        (ui_node(json!({"outputs": [5]})), "at $.nodes[0].outputs[0]: expected an output slot object, found a number 5"),
        (ui_node(json!({"inputs": [true]})), "at $.nodes[0].inputs[0]: expected an input slot object {name, type, link}, found a boolean true"),
        (ui_node(json!({"widgets_values": true})), "at $.nodes[0].widgets_values: expected an array (or an object) of widget values"),
        (json!({"nodes": [], "links": {"a": 1}}), "at $.links: expected an array of links, found an object {\"a\":1}"),
        (json!({"nodes": [], "links": [[1, 2]]}), "at $.links[0]: expected a link [id, origin_id, origin_slot, target_id, target_slot, type]"),
        (json!({"nodes": [], "links": [], "definitions": {"subgraphs": "x"}}), "at $.definitions.subgraphs: expected an array, found a string"),
        (subgraph(json!({"nodes": [], "links": []})), "at $.definitions.subgraphs[0].id: expected the subgraph's uuid string, found null"),
        (subgraph(json!({"id": "u-1", "nodes": [], "links": [], "inputs": [5]})), "at $.definitions.subgraphs[0].inputs[0]: expected a slot object {name, type, linkIds}"),
        (json!([1, 2]), "at $: expected a ComfyUI workflow: a UI workflow (an object with `nodes` and `links`) or an API prompt (an object of nodes with `class_type` and `inputs`), found an array of 2 items"),
        (json!(5), "found 5"),
        (json!({"1": 5, "2": {"class_type": "X", "inputs": {}}}), "found an object with keys [\"1\", \"2\"]"),
        (json!({"1": {"class_type": "X", "inputs": 5}}), "at $[\"1\"].inputs: expected an object of input values, found 5"),
    ];
    for (value, words) in cases {
        let err = load_value(value.clone(), "wf.json").map(|_| ()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidWorkflow, "{value}");
        assert!(
            err.message.starts_with("wf.json: "),
            "the origin comes first: {}",
            err.message
        );
        assert!(
            err.message.contains(words),
            "{value}:\n  {}\n  wanted {words:?}",
            err.message
        );
    }
    // A long finding is cut at 60 characters, with an ellipsis.
    let err = load_value(ui_node(json!({"inputs": long})), "wf.json")
        .map(|_| ())
        .unwrap_err();
    let found = err.message.split("found a string ").nth(1).unwrap();
    assert!(found.ends_with('…') && found.chars().count() == 61, "{found}");
}

#[test]
fn an_api_prompt_as_posted_is_unwrapped() {
    let posted = json!({"prompt": {"1": {"class_type": "X", "inputs": {"seed": 1}}}, "client_id": "c"});
    let Workflow::Api(p) = load_value(posted, "body").unwrap() else {
        panic!("not read as an API prompt")
    };
    assert_eq!(p.nodes.len(), 1);
}

#[test]
fn files_that_are_not_workflows_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let err = load_file(write("bin.json", &[0xff, 0xfe, 0x00, 0x7b]))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.message
            .ends_with("not UTF-8 text (expected a workflow .json or a ComfyUI .png)"),
        "{}",
        err.message
    );
    let err = load_file(write("broken.png", b"\x89PNG\r\n\x1a\nxxxx"))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.message.contains("the PNG has no `prompt` or `workflow` text chunk"),
        "{}",
        err.message
    );
    let err = load_file(dir.path().join("missing.json")).map(|_| ()).unwrap_err();
    assert!(
        err.message.contains("missing.json: cannot read the file"),
        "{}",
        err.message
    );
    // A byte-order mark (Windows editors) is not a problem.
    let bom = write(
        "bom.json",
        b"\xef\xbb\xbf{\"1\": {\"class_type\": \"X\", \"inputs\": {}}}",
    );
    assert!(matches!(load_file(bom).unwrap(), Workflow::Api(_)));
}
