//! transformers' golden cases (the `golden.json` beside a fixture model: prompt ids and the
//! greedy continuation, generated with EOS not stopping) for the engine tests that run the real
//! CPU device.
#![allow(dead_code)]

use halo_engine::GenerateRequest;
use std::path::Path;

pub struct Case {
    pub prompt: Vec<u32>,
    pub greedy: Vec<u32>,
}

/// Every case of `dir/golden.json`.
pub fn cases(dir: &Path) -> Vec<Case> {
    let path = dir.join("golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> { serde_json::from_value(x.clone()).unwrap() };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: ids(&c["prompt_ids"]),
            greedy: ids(&c["greedy_ids"]),
        })
        .collect()
}

/// A greedy request for `n` tokens that EOS does not stop, as the golden ids were made.
pub fn greedy(prompt: &[u32], n: usize) -> GenerateRequest {
    let mut r = GenerateRequest::greedy(prompt.to_vec(), n);
    r.stop.ignore_eos = true;
    r
}
