//! Pools of ComfyUI servers behind one service name: what a prompt needs of a server, which servers can run it
//! (their inventory: `/object_info`), and which one should (least work, then affinity). Plain functions over plain
//! data, so the rules are tested without sockets; the hub's `pool` room runs them against live servers.
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// How a pool behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolOptions {
    /// Jobs in flight per server (sent and not ended); the rest wait in the hub. At least 1.
    pub capacity: usize,
    /// A job running on a server that goes down is sent again elsewhere (a fresh prompt id) instead of failing
    /// `server_lost`.
    pub resubmit_running: bool,
    /// While every server is down, a waiting job fails `timeout` after this long; None waits for ever.
    pub wait_deadline: Option<Duration>,
}

pub const DEFAULT_CAPACITY: usize = 2;
pub const DEFAULT_WAIT_DEADLINE: Duration = Duration::from_secs(600);

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            capacity: DEFAULT_CAPACITY,
            resubmit_running: false,
            wait_deadline: Some(DEFAULT_WAIT_DEADLINE),
        }
    }
}

/// File name endings that make a combo value a model file the server must have (an image name is the job's
/// own input, uploaded per server, and is not checked).
const MODEL_EXTENSIONS: &[&str] = &[".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx"];

fn is_model_file(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    MODEL_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// What an API-format prompt needs of a server: its node classes, and the model files it names (class, input,
/// file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub classes: BTreeSet<String>,
    pub files: BTreeSet<(String, String, String)>,
}

impl Needs {
    pub fn of(prompt: &Value) -> Needs {
        let mut needs = Needs::default();
        let Some(nodes) = prompt.as_object() else {
            return needs;
        };
        for node in nodes.values() {
            let Some(class) = node.get("class_type").and_then(Value::as_str) else {
                continue;
            };
            needs.classes.insert(class.to_string());
            let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
                continue;
            };
            for (input, value) in inputs {
                if let Some(v) = value.as_str().filter(|v| is_model_file(v)) {
                    needs.files.insert((class.to_string(), input.clone(), v.to_string()));
                }
            }
        }
        needs
    }

    /// What of this a server with `inventory` (its `/object_info`) lacks, in words ("node FluxGuidance",
    /// "model flux1-dev.safetensors (UNETLoader.unet_name)"). Empty: the server can run the prompt.
    pub fn missing_in(&self, inventory: &Value) -> Vec<String> {
        let mut missing = Vec::new();
        for class in &self.classes {
            if inventory.get(class).is_none() {
                missing.push(format!("node {class}"));
            }
        }
        for (class, input, file) in &self.files {
            let Some(spec) = inventory.get(class).and_then(|c| input_spec(c, input)) else {
                continue;
            };
            // Only a list of choices is checked; a free text input takes any name.
            if let Some(choices) = combo_choices(spec) {
                if !choices.iter().any(|c| c.as_str() == Some(file)) {
                    missing.push(format!("model {file} ({class}.{input})"));
                }
            }
        }
        missing
    }
}

fn input_spec<'a>(class: &'a Value, input: &str) -> Option<&'a Value> {
    ["required", "optional"]
        .iter()
        .find_map(|section| class.pointer(&format!("/input/{section}/{input}")))
}

/// `[[choices…], {…}]`, or the v3 form `["COMBO", {"options": [choices…]}]`.
fn combo_choices(spec: &Value) -> Option<&Vec<Value>> {
    spec.get(0)
        .and_then(Value::as_array)
        .or_else(|| spec.pointer("/1/options").and_then(Value::as_array))
}

/// One server as the chooser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Jobs of ours it has (sent, not ended).
    pub in_flight: usize,
    /// Work ahead of a new job there, in jobs: its queue (from its status messages) with the running job
    /// counted by what is left of it.
    pub work: f64,
    /// Seconds one job takes there, as measured (None until a job finished there).
    pub seconds_per_job: Option<f64>,
    /// The job's tag last ran there.
    pub affine: bool,
}

/// Waits within this many seconds count as a tie (broken by affinity).
const TIE: f64 = 1e-6;

/// Picks the server for a job among those that can run it: one with room (fewer than `capacity` jobs in
/// flight) and the least expected wait before the job can start (its work × its measured seconds per job);
/// ties (idle servers, say) go to the one where the job's tag last ran, then to the faster, then the first.
/// None: every capable server is full (the job waits in the hub).
pub fn choose(candidates: &[Candidate], capacity: usize) -> Option<usize> {
    let known: Vec<f64> = candidates.iter().filter_map(|c| c.seconds_per_job).collect();
    // A server without a measurement yet is assumed as fast as the average measured one.
    let typical = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let mut best: Option<(usize, f64, bool, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        if c.in_flight >= capacity.max(1) {
            continue;
        }
        let speed = c.seconds_per_job.unwrap_or(typical);
        let wait = c.work.max(0.0) * speed;
        let better = match best {
            None => true,
            Some((_, bw, baff, bspeed)) => {
                if (wait - bw).abs() <= TIE {
                    (c.affine && !baff) || (c.affine == baff && speed < bspeed - TIE)
                } else {
                    wait < bw
                }
            }
        };
        if better {
            best = Some((i, wait, c.affine, speed));
        }
    }
    best.map(|(i, ..)| i)
}

/// How one server's node list differs from the rest of its pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryDifference {
    pub server: String,
    /// Node classes another server of the pool has and this one lacks (the first 50, sorted).
    pub lacks_nodes: Vec<String>,
    pub lacks_count: usize,
}

/// Per server, what the others have that it lacks; servers with nothing missing are left out.
pub fn inventory_differences(inventories: &[(String, &Value)]) -> Vec<InventoryDifference> {
    let sets: Vec<BTreeSet<&str>> = inventories
        .iter()
        .map(|(_, v)| {
            v.as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default()
        })
        .collect();
    let all: BTreeSet<&str> = sets.iter().flatten().copied().collect();
    let mut out = Vec::new();
    for ((server, _), set) in inventories.iter().zip(&sets) {
        let lacks: Vec<&str> = all.difference(set).copied().collect();
        if !lacks.is_empty() {
            out.push(InventoryDifference {
                server: server.clone(),
                lacks_nodes: lacks.iter().take(50).map(|s| s.to_string()).collect(),
                lacks_count: lacks.len(),
            });
        }
    }
    out
}

/// Two servers that share no node class cannot run any workflow in common: a pool of them is a mistake.
pub fn disjoint_pairs(inventories: &[(String, &Value)]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (i, (a, va)) in inventories.iter().enumerate() {
        for (b, vb) in inventories.iter().skip(i + 1) {
            let (Some(oa), Some(ob)) = (va.as_object(), vb.as_object()) else {
                continue;
            };
            if !oa.is_empty() && !ob.is_empty() && !oa.keys().any(|k| ob.contains_key(k)) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cand(in_flight: usize, work: f64, spj: Option<f64>, affine: bool) -> Candidate {
        Candidate {
            in_flight,
            work,
            seconds_per_job: spj,
            affine,
        }
    }

    #[test]
    fn needs_and_what_a_server_lacks() {
        let prompt = json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            "2": {"class_type": "Fancy", "inputs": {"x": 1}},
            "3": {"class_type": "LoadImage", "inputs": {"image": "shot.png"}},
        });
        let needs = Needs::of(&prompt);
        assert_eq!(needs.classes.len(), 3);
        assert_eq!(needs.files.len(), 1, "an image is not a model file");
        let inventory = json!({
            "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["b.safetensors"], {}]}}},
            "LoadImage": {"input": {"required": {"image": [["other.png"], {}]}}},
        });
        assert_eq!(
            needs.missing_in(&inventory),
            vec![
                "node Fancy".to_string(),
                "model a.safetensors (CheckpointLoaderSimple.ckpt_name)".to_string()
            ]
        );
        let v3 = json!({
            "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": ["COMBO", {"options": ["a.safetensors"]}]}}},
            "Fancy": {}, "LoadImage": {},
        });
        assert!(needs.missing_in(&v3).is_empty());
    }

    #[test]
    fn least_work_then_affinity_then_speed() {
        // Full servers are skipped.
        assert_eq!(
            choose(&[cand(2, 0.0, None, false), cand(1, 3.0, None, false)], 2),
            Some(1)
        );
        assert_eq!(choose(&[cand(2, 0.0, None, false)], 2), None);
        // Least work wins over affinity.
        assert_eq!(
            choose(&[cand(1, 1.0, None, true), cand(0, 0.0, None, false)], 2),
            Some(1)
        );
        // Idle servers tie: the tag's last server wins, even if slower.
        assert_eq!(
            choose(&[cand(0, 0.0, Some(1.0), false), cand(0, 0.0, Some(2.0), true)], 2),
            Some(1)
        );
        // Without affinity the faster idle server wins.
        assert_eq!(
            choose(&[cand(0, 0.0, Some(2.0), false), cand(0, 0.0, Some(1.0), false)], 2),
            Some(1)
        );
        // A slow server with less work can lose to a fast one with a little more.
        assert_eq!(
            choose(&[cand(1, 0.5, Some(10.0), false), cand(1, 1.0, Some(1.0), false)], 2),
            Some(1)
        );
        // Busy servers with equal waits: affinity.
        assert_eq!(
            choose(&[cand(1, 1.0, None, false), cand(1, 1.0, None, true)], 2),
            Some(1)
        );
    }

    #[test]
    fn differences_and_disjoint_sets() {
        let a = json!({"A": {}, "B": {}});
        let b = json!({"A": {}});
        let c = json!({"C": {}});
        let inv = vec![("a".to_string(), &a), ("b".to_string(), &b), ("c".to_string(), &c)];
        let diff = inventory_differences(&inv);
        assert_eq!(diff.len(), 3);
        assert_eq!(diff[1].lacks_nodes, vec!["B".to_string(), "C".to_string()]);
        assert_eq!(
            disjoint_pairs(&inv),
            vec![("a".into(), "c".into()), ("b".into(), "c".into())]
        );
    }
}
