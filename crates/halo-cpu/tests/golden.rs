//! Golden tests: transformers' own greedy continuations and logits (golden.json beside each
//! model) reproduced exactly by the CPU device, alone and inside mixed batches, for the shared
//! tiny-mha model and every feature fixture in tests/fixtures/models.

mod common;

use common::{
    assert_greedy_alone, assert_ids_up_to_tie, cases, device, generate_together, prompt_logits,
};
use std::path::{Path, PathBuf};

fn model_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let mut dirs = vec![shared.join("models/tiny-mha")];
    if let Ok(entries) = std::fs::read_dir(root.join("tests/fixtures/models")) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("golden.json").is_file())
            .collect();
        more.sort();
        dirs.extend(more);
    }
    dirs
}

#[test]
fn golden_greedy_ids_alone_exact() {
    for dir in model_dirs() {
        let mut d = device(&dir, 256);
        assert_greedy_alone(&mut d, &cases(&dir), None, &dir.display().to_string());
    }
}

#[test]
fn golden_logits_within_1e4() {
    for dir in model_dirs() {
        let mut d = device(&dir, 256);
        for (ci, case) in cases(&dir).iter().enumerate() {
            let logits = prompt_logits(&mut d, &case.prompt_ids, false);
            for (i, (a, b)) in logits.iter().zip(&case.logits_head).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{} case {ci} logit {i}: {a} vs {b}",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn golden_ids_in_mixed_batches_with_chunked_prefill() {
    for dir in model_dirs() {
        let cases = cases(&dir);
        let mut d = device(&dir, 512);
        let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt_ids.as_slice()).collect();
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| generate_together(&mut d, &[p], &[usize::MAX], 48).remove(0))
            .collect();
        // Different chunk sizes put prefill chunks and decode tokens of others in one step.
        for chunks in [[usize::MAX, 3, 1, 7], [5, usize::MAX, 2, 16]] {
            let got = generate_together(&mut d, &prompts, &chunks, 48);
            for (ci, case) in cases.iter().enumerate() {
                // The kernels are batch invariant: a sequence's ids are exactly its lone run's,
                // whatever else shares the step and however its prompt is chunked.
                assert_eq!(
                    got[ci],
                    alone[ci],
                    "{} case {ci} chunks {chunks:?}",
                    dir.display()
                );
                // And transformers' own ids, exact up to its first near-tie.
                assert_ids_up_to_tie(
                    &format!("{} case {ci} chunks {chunks:?}", dir.display()),
                    &got[ci],
                    case,
                    1e-3,
                );
            }
        }
    }
}
