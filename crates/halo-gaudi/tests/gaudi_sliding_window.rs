//! A sliding-window model on the sidecar under the engine: tiny-mistral-swa (window 8) with
//! 4-token blocks, so the engine releases blocks behind the window and sends their table entries
//! as `FREED_BLOCK`; the sidecar points them at its scratch block (hidden by the window mask)
//! and still gives transformers' greedy ids.

mod common;

use common::*;
use halo_engine::{Engine, EngineConfig, GenerateRequest};
use halo_hal::{DType, LoadOptions};
use std::path::PathBuf;

#[test]
fn golden_ids_with_blocks_released_behind_the_window() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/tiny-mistral-swa");
    let dev = halo_gaudi::GaudiDevice::new(options()).expect("sidecar starts");
    let config = EngineConfig {
        block_size: 4,
        num_blocks: Some(64),
        max_batch_tokens: 64,
        max_batch_seqs: 8,
        ..Default::default()
    };
    let load = LoadOptions {
        dtype: Some(DType::F32),
        ..Default::default()
    };
    let engine = Engine::start(Box::new(dev), &dir, load, config).expect("engine starts");
    let cases = golden_at(&dir);
    let reqs: Vec<GenerateRequest> = cases
        .iter()
        .map(|c| {
            let mut r = GenerateRequest::greedy(c.prompt_ids.clone(), c.greedy_ids.len());
            r.stop.ignore_eos = true;
            r
        })
        .collect();
    for (i, (c, r)) in cases.iter().zip(engine.run_blocking(reqs)).enumerate() {
        assert_eq!(
            r.expect("request completes").token_ids,
            c.greedy_ids,
            "golden case {i}"
        );
    }
}
