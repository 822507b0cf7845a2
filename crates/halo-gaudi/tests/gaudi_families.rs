//! Issue 16's family fixtures (tests/fixtures/families: Qwen3, Mixtral, Gemma 2, Gemma 3 text,
//! Phi-3, Qwen3-MoE) through GaudiDevice (sidecar on torch CPU, f32): transformers' greedy ids
//! exactly, every prompt in one mixed batch with chunked prefill.

mod common;

use common::*;
use halo_hal::{Device, StepBatch};
use std::path::{Path, PathBuf};

fn families_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families")
}

/// Phi-3's longrope original length, where transformers recomputes a sequence with the long
/// factors (see ci/oracle/README.md); None for other rope types.
fn longrope_original(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&text).expect("config.json parses");
    let scaling = &cfg["rope_scaling"];
    let kind = scaling["type"].as_str().or(scaling["rope_type"].as_str());
    (kind == Some("longrope")).then(|| {
        cfg["original_max_position_embeddings"]
            .as_u64()
            .expect("original_max_position_embeddings") as usize
    })
}

/// Like common::drive (at most 64 new tokens per step), but a step that reaches the longrope
/// original length from a prefix cached with the short factors re-sends the whole sequence
/// from position 0, as the engine must to match transformers. Returns how many times it did.
fn drive_families(
    dev: &mut halo_gaudi::GaudiDevice,
    gens: &mut [Gen],
    steps: usize,
    chunk: usize,
    recompute_at: Option<usize>,
) -> usize {
    let mut recomputed = 0;
    while gens.iter().any(|g| g.out.len() < steps) {
        let mut batch = StepBatch::default();
        let mut budget = 64;
        for g in gens.iter_mut().filter(|g| g.out.len() < steps) {
            let start = g.pos;
            let n = if start < g.prompt.len() {
                chunk.min(budget).min(g.prompt.len() - start)
            } else {
                1
            };
            let end = start + n;
            let crosses = recompute_at.is_some_and(|orig| start > 0 && start <= orig && orig < end);
            let cost = if crosses { end } else { n };
            if cost > budget || n == 0 {
                break;
            }
            budget -= cost;
            let mut s = g.next_step(n);
            assert_eq!(s.start_pos + s.tokens.len(), end);
            if crosses {
                let mut all: Vec<u32> = g.prompt.iter().chain(&g.out).copied().collect();
                all.truncate(end);
                s.tokens = all;
                s.start_pos = 0;
                recomputed += 1;
            }
            batch.seqs.push(s);
        }
        let out = dev.step(&batch).expect("step");
        for r in out.results {
            let g = gens
                .iter_mut()
                .find(|g| g.id == r.seq_id)
                .expect("known id");
            g.out.push(r.outcome.expect("finite logits").token);
        }
    }
    recomputed
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
        let mut dev = ready_device_for(options(), &dir);
        let mut gens: Vec<Gen> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| Gen::new(10 + i as u64, &c.prompt_ids, 8 * i as u32))
            .collect();
        let recompute_at = longrope_original(&dir);
        let recomputed = drive_families(&mut dev, &mut gens, 48, 24, recompute_at);
        for (g, c) in gens.iter().zip(&cases) {
            assert_eq!(g.out, c.greedy_ids, "{} sequence {}", dir.display(), g.id);
        }
        assert_eq!(recompute_at.is_some(), recomputed > 0, "{}", dir.display());
    }
}
