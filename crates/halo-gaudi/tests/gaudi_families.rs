//! Issue 16's family fixtures (tests/fixtures/families: Qwen3, Mixtral, Gemma 2, Gemma 3 text,
//! Phi-3, Qwen3-MoE) through the engine on GaudiDevice (sidecar on torch CPU, f32):
//! transformers' greedy ids exactly, every prompt in one mixed batch with chunked prefill. For
//! Phi-3's LongRoPE the engine sends each sequence's regime (so the chunks of the 67-token prompt
//! are all long) and recomputes a sequence that crosses the original length, as transformers'
//! generate() does; nothing is re-sent by hand.

mod common;

use common::*;
use halo_engine::{Engine, EngineConfig, GenerateRequest};
use halo_hal::{DType, LoadOptions};
use std::path::{Path, PathBuf};

fn families_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families")
}

/// Whether the fixture's RoPE is LongRoPE (Phi-3's classic `rope_scaling` layout).
fn is_longrope(dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&text).expect("config.json parses");
    let scaling = &cfg["rope_scaling"];
    let kind = scaling["type"].as_str().or(scaling["rope_type"].as_str());
    kind == Some("longrope")
}

#[test]
fn family_fixtures_give_the_golden_ids_in_a_mixed_batch() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(families_dir())
        .expect("tests/fixtures/families")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("golden.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "{dirs:?}");
    for dir in dirs {
        let cases = golden_at(&dir);
        let dev = halo_gaudi::GaudiDevice::new(options()).expect("sidecar starts");
        let config = EngineConfig {
            block_size: BLOCK,
            num_blocks: Some(64),
            // 24 tokens a step: long prompts run in chunks beside the others' decodes
            max_batch_tokens: 24,
            max_batch_seqs: 4,
            max_total_tokens: Some(128),
            ..Default::default()
        };
        let load = LoadOptions {
            dtype: Some(DType::F32),
            ..Default::default()
        };
        let engine = Engine::start(Box::new(dev), &dir, load, config).expect("engine starts");
        let reqs = cases
            .iter()
            .map(|c| {
                let mut r = GenerateRequest::greedy(c.prompt_ids.clone(), c.greedy_ids.len());
                r.stop.ignore_eos = true;
                r
            })
            .collect();
        for (i, (r, c)) in engine
            .run_blocking(reqs)
            .into_iter()
            .zip(&cases)
            .enumerate()
        {
            let done = r.expect("request completes");
            assert_eq!(done.token_ids, c.greedy_ids, "{} case {i}", dir.display());
        }
        // Phi-3's crossing cases were recomputed by the engine, and only Phi-3 has any
        let longrope = is_longrope(&dir);
        let recomputes = engine.stats().rope_recomputes;
        assert_eq!(longrope, recomputes > 0, "{}: {recomputes}", dir.display());
    }
}
