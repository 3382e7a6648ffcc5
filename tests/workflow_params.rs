//! Parameter selectors (ids, classes, titles, graph roles) and type/range-checked `set`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod workflow_support;

use director_link::workflow::params::{get, resolve, set, Target};
use director_link::workflow::{convert, load_file, load_str, parameters, ConvertOptions, Prompt, Workflow};
use serde_json::json;
use workflow_support::{comfy_fixtures, object_info};

fn fixture_prompt(case: &str) -> Prompt {
    let path = comfy_fixtures()
        .join("ui_conversion")
        .join(format!("{case}.workflow.json"));
    let Workflow::Ui(ui) = load_file(&path).unwrap() else {
        panic!("{}: not a UI workflow", path.display())
    };
    convert(&ui, object_info(), &ConvertOptions::default()).prompt
}

fn target(node: &str, input: &str) -> Target {
    Target {
        node_id: node.into(),
        input: input.into(),
    }
}

fn api(text: &str) -> Prompt {
    match load_str(text, "test").unwrap() {
        Workflow::Api(p) => p,
        Workflow::Ui(_) => panic!(),
    }
}

/// Two KSamplers on their own prompts, latents and seeds: a hires-fix style graph.
fn two_samplers() -> Prompt {
    api(r#"{
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}, "_meta": {"title": "Pos"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}, "_meta": {"title": "Neg"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 8, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
              "latent_image": ["5", 0]}, "_meta": {"title": "First pass"}},
        "10": {"class_type": "LatentUpscale", "inputs": {"upscale_method": "nearest-exact", "width": 1024,
               "height": 1024, "crop": "disabled", "samples": ["3", 0]}},
        "11": {"class_type": "KSampler", "inputs": {"seed": 2, "steps": 10, "cfg": 8, "sampler_name": "euler",
               "scheduler": "normal", "denoise": 0.5, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
               "latent_image": ["10", 0]}, "_meta": {"title": "Second pass"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}
    }"#)
}

#[test]
fn roles_resolve_on_the_default_graph() {
    let prompt = fixture_prompt("default_graph");
    assert_eq!(resolve(&prompt, "positive.text").unwrap(), target("6", "text"));
    assert_eq!(resolve(&prompt, "negative.text").unwrap(), target("7", "text"));
    assert_eq!(resolve(&prompt, "sampler.seed").unwrap(), target("3", "seed"));
    assert_eq!(resolve(&prompt, "sampler.cfg").unwrap(), target("3", "cfg"));
    assert_eq!(resolve(&prompt, "latent.width").unwrap(), target("5", "width"));
    assert_eq!(
        resolve(&prompt, "latent.batch_size").unwrap(),
        target("5", "batch_size")
    );
    assert_eq!(resolve(&prompt, "KSampler.steps").unwrap(), target("3", "steps"));
    assert_eq!(
        resolve(&prompt, "\"Load Checkpoint\".ckpt_name").unwrap(),
        target("4", "ckpt_name")
    );
    assert_eq!(resolve(&prompt, "5.height").unwrap(), target("5", "height"));
    let (_, value) = get(&prompt, "positive.text").unwrap();
    assert_eq!(
        value.unwrap(),
        json!("beautiful scenery nature glass bottle landscape, , purple galaxy bottle,")
    );
}

#[test]
fn two_samplers_make_roles_ambiguous_and_list_candidates() {
    let prompt = two_samplers();
    let err = resolve(&prompt, "sampler.seed").unwrap_err();
    assert_eq!(err.reason().unwrap_or_default(), "ambiguous_selector");
    assert_eq!(err.candidates(), ["3.seed", "11.seed"]);
    assert!(
        err.message.contains("First pass") && err.message.contains("Second pass"),
        "{}",
        err.message
    );
    // Both samplers share their prompts: not ambiguous.
    assert_eq!(resolve(&prompt, "positive.text").unwrap(), target("6", "text"));
    assert_eq!(resolve(&prompt, "negative.text").unwrap(), target("7", "text"));
    // Latents differ (the second pass reads LatentUpscale).
    assert_eq!(
        resolve(&prompt, "latent.width").unwrap_err().candidates(),
        ["5.width", "10.width"]
    );
    let err = resolve(&prompt, "KSampler.steps").unwrap_err();
    assert_eq!(
        (err.reason().unwrap_or_default(), err.candidates()),
        ("ambiguous_selector", vec!["3.steps".into(), "11.steps".into()])
    );
    assert_eq!(
        resolve(&prompt, "\"Second pass\".steps").unwrap(),
        target("11", "steps")
    );
    assert_eq!(resolve(&prompt, "Second pass.steps").unwrap(), target("11", "steps"));
}

#[test]
fn sdxl_template_roles_follow_primitive_values_and_report_both_samplers() {
    let prompt = fixture_prompt("template_sdxl_simple_example");
    let err = resolve(&prompt, "sampler.seed").unwrap_err();
    assert_eq!(err.candidates(), ["10.noise_seed", "11.noise_seed"]);
    let err = resolve(&prompt, "positive.text").unwrap_err();
    assert_eq!(err.candidates(), ["6.text", "15.text"]);
    assert_eq!(
        resolve(&prompt, "\"KSampler (Advanced) - BASE\".noise_seed").unwrap(),
        target("10", "noise_seed")
    );
}

#[test]
fn custom_samplers_reach_noise_scheduler_and_guider_nodes() {
    let prompt = api(r#"{
        "1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "2": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 8, "denoise": 1, "model": ["9", 0]}},
        "3": {"class_type": "CFGGuider", "inputs": {"cfg": 3.5, "model": ["9", 0], "positive": ["6", 0], "negative": ["7", 0]}},
        "4": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 848, "height": 480, "length": 73, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["12", 0], "clip": ["9", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad", "clip": ["9", 1]}},
        "12": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a fox"}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["1", 0], "guider": ["3", 0],
              "sampler": ["4", 0], "sigmas": ["2", 0], "latent_image": ["5", 0]}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}}
    }"#);
    assert_eq!(resolve(&prompt, "sampler.seed").unwrap(), target("1", "noise_seed"));
    assert_eq!(resolve(&prompt, "sampler.steps").unwrap(), target("2", "steps"));
    assert_eq!(resolve(&prompt, "sampler.cfg").unwrap(), target("3", "cfg"));
    assert_eq!(
        resolve(&prompt, "sampler.sampler_name").unwrap(),
        target("4", "sampler_name")
    );
    assert_eq!(resolve(&prompt, "sampler.denoise").unwrap(), target("2", "denoise"));
    // The text comes from a string primitive: the role lands on the literal.
    assert_eq!(resolve(&prompt, "positive.text").unwrap(), target("12", "value"));
    assert_eq!(resolve(&prompt, "negative.text").unwrap(), target("7", "text"));
    assert_eq!(resolve(&prompt, "frames.length").unwrap(), target("5", "length"));
    assert_eq!(resolve(&prompt, "latent.height").unwrap(), target("5", "height"));
}

#[test]
fn conditioning_chains_are_followed_on_the_matching_side() {
    let prompt = api(r#"{
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["4", 1]}},
        "20": {"class_type": "ControlNetApplyAdvanced", "inputs": {"strength": 1, "start_percent": 0, "end_percent": 1,
               "positive": ["6", 0], "negative": ["7", 0], "control_net": ["21", 0], "image": ["22", 0]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "positive": ["20", 0], "negative": ["20", 1],
              "latent_image": ["5", 0]}}
    }"#);
    assert_eq!(resolve(&prompt, "positive.text").unwrap(), target("6", "text"));
    assert_eq!(resolve(&prompt, "negative.text").unwrap(), target("7", "text"));
}

#[test]
fn selector_errors_have_codes_and_candidates() {
    let prompt = two_samplers();
    assert_eq!(
        resolve(&prompt, "nodot").unwrap_err().reason().unwrap_or_default(),
        "invalid_selector"
    );
    assert_eq!(
        resolve(&prompt, "\"Pos.text").unwrap_err().reason().unwrap_or_default(),
        "invalid_selector"
    );
    let err = resolve(&prompt, "\"First pas\".seed").unwrap_err();
    assert_eq!(err.reason().unwrap_or_default(), "selector_not_found");
    assert!(err.candidates().iter().any(|c| c.contains("First pass")), "{err:?}");
    let none = api(r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}"#);
    assert_eq!(
        resolve(&none, "sampler.seed").unwrap_err().reason().unwrap_or_default(),
        "selector_not_found"
    );
}

#[test]
fn set_checks_type_range_and_options() {
    let info = object_info();
    let mut prompt = two_samplers();
    let code =
        |r: Result<Target, director_link::workflow::Error>| r.unwrap_err().reason().unwrap_or_default().to_string();
    assert_eq!(
        set(&mut prompt, Some(info), "3.seed", json!(18446744073709551615u64)).unwrap(),
        target("3", "seed")
    );
    assert_eq!(
        prompt.to_value()["3"]["inputs"]["seed"].to_string(),
        "18446744073709551615"
    );
    let too_big: serde_json::Value = serde_json::from_str("18446744073709551616").unwrap();
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.seed", too_big)),
        "value_out_of_range"
    );
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.steps", json!(0))),
        "value_out_of_range"
    );
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.steps", json!(2.5))),
        "invalid_value"
    );
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.steps", json!("20"))),
        "invalid_value"
    );
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.model", json!("x"))),
        "input_linked"
    );
    assert_eq!(
        code(set(&mut prompt, Some(info), "3.colour", json!(1))),
        "selector_not_found"
    );
    let err = set(&mut prompt, Some(info), "3.sampler_name", json!("eulr")).unwrap_err();
    assert_eq!(err.reason().unwrap_or_default(), "value_not_in_list");
    assert!(err.candidates().contains(&"euler".to_string()));
    set(&mut prompt, Some(info), "\"Pos\".text", json!("a dog")).unwrap();
    set(&mut prompt, Some(info), "3.cfg", json!(6.5)).unwrap();
    assert_eq!(get(&prompt, "positive.text").unwrap().1.unwrap(), json!("a dog"));
    // Without a schema only links are protected.
    assert_eq!(
        set(&mut prompt, None, "3.steps", json!("any")).unwrap(),
        target("3", "steps")
    );
}

#[test]
fn parameters_list_every_literal_with_its_schema() {
    let info = object_info();
    let prompt = fixture_prompt("default_graph");
    let params = parameters(&prompt, Some(info));
    let seed = params.iter().find(|p| p.node_id == "3" && p.input == "seed").unwrap();
    assert_eq!(seed.input_type, "INT");
    assert_eq!(seed.max.as_ref().unwrap().to_string(), "18446744073709551615");
    assert_eq!(seed.value, json!(156680208700286u64));
    assert_eq!(seed.title.as_deref(), Some("KSampler"));
    let sampler = params.iter().find(|p| p.input == "sampler_name").unwrap();
    assert!(sampler.options.as_ref().unwrap().contains(&json!("euler")));
    assert!(params.iter().all(|p| p.input != "model"), "links are not parameters");
    assert_eq!(params.len(), 6 + 1 + 3 + 1 + 1 + 1, "{params:#?}");
}
