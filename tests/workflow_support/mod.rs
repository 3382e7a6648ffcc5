//! Shared helpers of the `workflow_*` tests: fixture paths, object_info, a readable structural diff.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
use director_link::workflow::ObjectInfo;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The ComfyUI 0.3.64 recordings copied into the project (`tests/fixtures/comfyui`, see its README); a missing
/// folder fails the test and names the path.
pub fn comfy_fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfyui");
    assert!(dir.is_dir(), "the recorded fixtures are missing: {}", dir.display());
    dir
}

pub fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The full recorded `/object_info` (500 classes), parsed once.
pub fn object_info() -> &'static ObjectInfo {
    static INFO: OnceLock<ObjectInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let path = comfy_fixtures().join("object_info.json.gz");
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ObjectInfo::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// JSON equality where `8` equals `8.0` (raw numbers are kept, so their spelling may differ).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.to_string() == y.to_string() || (x.as_f64().is_some() && x.as_f64() == y.as_f64() && x.as_u64().is_none())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Differences between two API prompts (ids, class_type, title, every input), one line each.
pub fn prompt_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(e), Some(a)) = (expected.as_object(), actual.as_object()) else {
        return vec!["not both objects".into()];
    };
    for id in e.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("node {id}: missing (expected {})", e[id]["class_type"]));
    }
    for id in a.keys().filter(|k| !e.contains_key(*k)) {
        out.push(format!("node {id}: unexpected ({})", a[id]["class_type"]));
    }
    for (id, en) in e {
        let Some(an) = a.get(id) else { continue };
        for key in ["class_type"] {
            if en[key] != an[key] {
                out.push(format!("node {id}: {key} expected {} got {}", en[key], an[key]));
            }
        }
        if en["_meta"]["title"] != an["_meta"]["title"] {
            out.push(format!(
                "node {id}: title expected {} got {}",
                en["_meta"]["title"], an["_meta"]["title"]
            ));
        }
        let empty = serde_json::Map::new();
        let ei = en["inputs"].as_object().unwrap_or(&empty);
        let ai = an["inputs"].as_object().unwrap_or(&empty);
        for (name, ev) in ei {
            match ai.get(name) {
                None => out.push(format!("node {id}.{name}: missing (expected {ev})")),
                Some(av) if !same_value(ev, av) => out.push(format!("node {id}.{name}: expected {ev} got {av}")),
                _ => {}
            }
        }
        for (name, av) in ai.iter().filter(|(k, _)| !ei.contains_key(*k)) {
            out.push(format!("node {id}.{name}: unexpected {av}"));
        }
    }
    out
}
