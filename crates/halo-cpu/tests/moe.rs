//! Mixture-of-experts models on the CPU device: the transformers-made fixtures
//! (tests/fixtures/families/tiny-mixtral, tiny-qwen3moe: routing that sends one step's tokens to
//! different experts) reproduce transformers' greedy ids exactly and its logits within 1e-4,
//! alone and in mixed batches with chunked prefill; llama.cpp's conversions of them (stacked
//! `ffn_*_exps` tensors) give the same ids; every other weight format loads and stays batch
//! invariant; and a step reads only the experts its tokens chose.

mod common;

use common::{
    assert_ids_up_to_tie, cases, device, device_with, generate_together, prompt_logits, Case, BLOCK,
};
use halo_hal::{DType, LoadOptions, SampleRequest, SeqStep, StepBatch};
use halo_model::StoredDType;
use std::path::{Path, PathBuf};

const FAMILIES: [&str; 3] = ["tiny-mixtral", "tiny-qwen3moe", "tiny-qwen3moe-dense0"];

fn families() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families")
}

/// The MoE fixtures present, each with its golden cases.
fn fixtures() -> Vec<(PathBuf, Vec<Case>)> {
    let found: Vec<(PathBuf, Vec<Case>)> = FAMILIES
        .iter()
        .map(|f| families().join(f))
        .filter(|d| d.join("golden.json").is_file())
        .map(|d| {
            let cases = cases(&d);
            (d, cases)
        })
        .collect();
    assert!(
        found.iter().any(|(d, _)| d.ends_with("tiny-mixtral")),
        "the tiny-mixtral fixture is missing from {}",
        families().display()
    );
    found
}

#[test]
fn golden_ids_exact_and_logits_within_1e4() {
    for (dir, cases) in fixtures() {
        let mut d = device(&dir, 256);
        for (ci, case) in cases.iter().enumerate() {
            let got = generate_together(
                &mut d,
                &[&case.prompt_ids],
                &[usize::MAX],
                case.greedy_ids.len(),
            );
            assert_eq!(got[0], case.greedy_ids, "{} case {ci}", dir.display());
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
    for (dir, cases) in fixtures() {
        let mut d = device(&dir, 512);
        let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt_ids.as_slice()).collect();
        let n = cases[0].greedy_ids.len();
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| generate_together(&mut d, &[p], &[usize::MAX], n).remove(0))
            .collect();
        // Prefill chunks of some sequences share steps with decode tokens of others, so each
        // step's expert groups mix tokens of different sequences.
        let mut chunk_sets = vec![vec![usize::MAX; prompts.len()], vec![1; prompts.len()]];
        chunk_sets.push(
            (0..prompts.len())
                .map(|i| [3, usize::MAX, 2, 7][i % 4])
                .collect(),
        );
        for chunks in chunk_sets {
            let got = generate_together(&mut d, &prompts, &chunks, n);
            for (ci, case) in cases.iter().enumerate() {
                let what = format!("{} case {ci} chunks {chunks:?}", dir.display());
                assert_eq!(got[ci], alone[ci], "{what}");
                assert_ids_up_to_tie(&what, &got[ci], case, 1e-3);
            }
        }
    }
}

/// llama.cpp's conversion of a fixture, when S's script has made it.
fn gguf(dir: &Path, ty: &str) -> PathBuf {
    let name = dir.file_name().unwrap().to_str().unwrap();
    families().join("gguf").join(format!("{name}-{ty}.gguf"))
}

#[test]
fn llamacpp_conversions_give_the_same_ids() {
    let mut checked = 0;
    for (dir, cases) in fixtures() {
        for ty in ["f32", "f16"] {
            let file = gguf(&dir, ty);
            if !file.is_file() {
                continue;
            }
            let mut d = device(&file, 512);
            for (ci, case) in cases.iter().enumerate() {
                let got = generate_together(
                    &mut d,
                    &[&case.prompt_ids],
                    &[usize::MAX],
                    case.greedy_ids.len(),
                );
                let what = format!("{} case {ci}", file.display());
                if ty == "f32" {
                    assert_eq!(got[0], case.greedy_ids, "{what}");
                    let logits = prompt_logits(&mut d, &case.prompt_ids, false);
                    for (a, b) in logits.iter().zip(&case.logits_head) {
                        assert!((a - b).abs() < 1e-4, "{what}: {a} vs {b}");
                    }
                } else {
                    // f16 weights: transformers' f32 ids up to a near-tie of its own.
                    assert_ids_up_to_tie(&what, &got[0], case, 2e-2);
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked > 0 || !families().join("gguf").is_dir(),
        "no MoE GGUF found under {}",
        families().join("gguf").display()
    );
}

#[test]
fn every_weight_format_loads_and_stays_batch_invariant() {
    let options = [
        (Some(DType::BF16), None, 0.1),
        (Some(DType::F16), None, 0.01),
        (None, Some(StoredDType::Q8_0), 0.2),
        (None, Some(StoredDType::Q4_0), 1.0),
    ];
    for (dir, cases) in fixtures() {
        for (dtype, quantize, bound) in options {
            let what = format!("{} {dtype:?} {quantize:?}", dir.display());
            let mut d = device_with(
                &dir,
                512,
                &LoadOptions {
                    dtype,
                    quantize,
                    ..LoadOptions::default()
                },
            );
            let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt_ids.as_slice()).collect();
            let alone: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| generate_together(&mut d, &[p], &[usize::MAX], 16).remove(0))
                .collect();
            let chunks: Vec<usize> = (0..prompts.len())
                .map(|i| [2, usize::MAX, 5][i % 3])
                .collect();
            let together = generate_together(&mut d, &prompts, &chunks, 16);
            assert_eq!(together, alone, "{what}");
            // The prompt's logits stay near transformers' f32 ones, by the format's rounding
            // (measured on these fixtures, logits of magnitude ~1.5: f16 1e-3, bf16 3e-2, Q8_0
            // 8e-2, Q4_0 0.53 at most).
            for (ci, case) in cases.iter().enumerate() {
                let logits = prompt_logits(&mut d, &case.prompt_ids, false);
                let diff = logits
                    .iter()
                    .zip(&case.logits_head)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff < bound, "{what} case {ci}: logits differ by {diff}");
            }
        }
    }
}

#[test]
fn a_step_reads_only_the_experts_its_tokens_chose() {
    use halo_hal::{Device, WarmupRequest};
    let dir = families().join("tiny-mixtral");
    let mut d = halo_cpu::CpuDevice::with_threads(2).unwrap();
    let info = d.load(&dir, &LoadOptions::default()).unwrap();
    d.warmup(&WarmupRequest {
        block_size: BLOCK,
        num_blocks: Some(64),
        max_seq_len: 512,
        ..Default::default()
    })
    .unwrap();
    // The whole model's projections, as a dense model of the same size would read them.
    let model = halo_model::Model::open(&dir).unwrap();
    let c = &model.config;
    let all: u64 = c
        .expected_tensors()
        .iter()
        .filter(|(n, s)| s.len() == 2 && !n.ends_with("embed_tokens.weight"))
        .map(|(_, s)| (s[0] * s[1] * 4) as u64)
        .sum();
    let m = c.moe.as_ref().unwrap();
    let expert = (3 * m.expert_intermediate_size * c.hidden_size * 4) as u64;
    let unused = (m.num_experts - m.experts_per_token) as u64 * expert * c.num_hidden_layers as u64;
    // What one token reads (the reported per-step figure): everything but the unused experts.
    assert_eq!(info.weight_bytes, all - unused);

    let prompt = &fixtures()[0].1[0].prompt_ids;
    let step = |d: &mut halo_cpu::CpuDevice, tokens: &[u32], start: usize| {
        d.logits(&StepBatch {
            seqs: vec![SeqStep {
                seq_id: 1,
                tokens: tokens.to_vec(),
                start_pos: start,
                block_table: (0..32).collect(),
                sample: Some(SampleRequest::greedy()),
                long_rope: false,
            }],
        })
        .unwrap();
        d.last_step_weight_bytes()
    };
    // A prompt's tokens go to different experts, so its step reads more than one token's
    // share, and never more than the whole model.
    let prefill = step(&mut d, prompt, 0);
    assert!(prefill > info.weight_bytes, "{prefill}");
    assert!(prefill <= all);
    // One decode token reads its two experts per layer and nothing else.
    let decode = step(&mut d, &[prompt[0]], prompt.len());
    assert_eq!(decode, info.weight_bytes);
}

#[test]
fn halo_s_own_gguf_export_runs_with_transformers_ids() {
    use halo_model::gguf::export::{export, Quantization};
    let tmp = std::env::temp_dir().join(format!("halo-moe-export-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for name in ["tiny-mixtral", "tiny-qwen3moe"] {
        let dir = families().join(name);
        let cases = cases(&dir);
        let model = halo_model::Model::open(&dir).unwrap();
        for (q, ty) in [(Quantization::F32, "f32"), (Quantization::Q8_0, "q8_0")] {
            let file = tmp.join(format!("{name}-{ty}.gguf"));
            export(&model, q, &file).unwrap();
            let mut d = device(&file, 512);
            let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt_ids.as_slice()).collect();
            let alone: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| generate_together(&mut d, &[p], &[usize::MAX], 16).remove(0))
                .collect();
            let chunks: Vec<usize> = (0..prompts.len()).map(|i| [3, usize::MAX][i % 2]).collect();
            let what = format!("{name} exported as {ty}");
            assert_eq!(
                generate_together(&mut d, &prompts, &chunks, 16),
                alone,
                "{what}"
            );
            if ty == "f32" {
                for (ci, case) in cases.iter().enumerate() {
                    assert_eq!(alone[ci][..], case.greedy_ids[..16], "{what}, case {ci}");
                }
            }
        }
    }
    // A dense layer among the experts has no qwen3moe form in llama.cpp: refused, nothing written.
    let model = halo_model::Model::open(&families().join("tiny-qwen3moe-dense0")).unwrap();
    let out = tmp.join("dense0.gguf");
    let e = match export(&model, Quantization::F32, &out) {
        Ok(_) => panic!("tiny-qwen3moe-dense0 exported despite its dense layer"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("Qwen3MoeForCausalLM"), "{e}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&tmp).unwrap();
}
