//! GPU tests (need an NVIDIA GPU, driver and CUDA 13 libraries): `cargo test -p halo-cuda
//! --test cuda_gpu -- --ignored`, run by ci/gpu-check.sh. The golden model is tiny-mha
//! (HALO_TINY_MHA, default /work/shared/models/tiny-mha): transformers' greedy ids must come
//! out exactly in f32, alone and inside a batch; the dense family fixtures (tests/fixtures/families)
//! give theirs up to near-ties.

use halo_cuda::CudaDevice;
use halo_hal::{DType, Device, LoadOptions, SampleRequest, SeqStep, StepBatch, WarmupRequest};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    std::env::var("HALO_TINY_MHA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| "/work/shared/models/tiny-mha".into())
}

fn golden() -> Vec<(Vec<u32>, Vec<u32>)> {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("golden.json")).unwrap())
            .unwrap();
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (ids(&c["prompt_ids"]), ids(&c["greedy_ids"])))
        .collect()
}

fn device(dtype: DType) -> (CudaDevice, usize) {
    let mut d = CudaDevice::new(0).expect("a CUDA GPU");
    d.load(
        &model_dir(),
        &LoadOptions {
            dtype: Some(dtype),
            ..Default::default()
        },
    )
    .unwrap();
    let layout = d.warmup(&small_pool()).unwrap();
    assert_eq!(layout.num_blocks, 256);
    (d, layout.block_size)
}

/// Greedy generation of several prompts in one batch (prefill together, then decode together).
/// The K/V is kept throughout: with LongRoPE (`long_above`, the original length) each step is
/// flagged long once its sequence is longer, which is transformers' cached path
/// (cached_path.json), not generate()'s recompute at the crossing (the engine's job).
fn generate(
    d: &mut CudaDevice,
    block_size: usize,
    prompts: &[Vec<u32>],
    new: usize,
    long_above: Option<usize>,
) -> Vec<Vec<u32>> {
    let per_seq = 512 / block_size;
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|i| ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect())
        .collect();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut last: Vec<u32> = Vec::new();
    for step in 0..new {
        let seqs = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (tokens, start) = if step == 0 {
                    (p.clone(), 0)
                } else {
                    (vec![last[i]], p.len() + step - 1)
                };
                let long_rope = long_above.is_some_and(|n| start + tokens.len() > n);
                SeqStep {
                    seq_id: i as u64,
                    tokens,
                    start_pos: start,
                    block_table: tables[i].clone(),
                    long_rope,
                    sample: Some(SampleRequest::greedy()),
                }
            })
            .collect();
        let r = d.step(&StepBatch { seqs }).unwrap();
        last = r
            .results
            .iter()
            .map(|r| r.outcome.as_ref().unwrap().token)
            .collect();
        for (o, t) in out.iter_mut().zip(&last) {
            o.push(*t);
        }
    }
    out
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn f32_greedy_matches_transformers_alone_and_batched() {
    let (mut d, bs) = device(DType::F32);
    let cases = golden();
    for (prompt, want) in &cases {
        let got = generate(&mut d, bs, std::slice::from_ref(prompt), want.len(), None);
        assert_eq!(&got[0], want, "alone");
    }
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
    let n = cases.iter().map(|c| c.1.len()).min().unwrap();
    let got = generate(&mut d, bs, &prompts, n, None);
    for (g, (_, want)) in got.iter().zip(&cases) {
        assert_eq!(g[..], want[..n], "inside a batch");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn bf16_loads_and_generates_in_vocab() {
    let (mut d, bs) = device(DType::BF16);
    let cases = golden();
    let got = generate(&mut d, bs, &[cases[0].0.clone()], 8, None);
    assert_eq!(got[0].len(), 8);
}

/// A dense family fixture (tests/fixtures/families): its prompts, transformers' greedy ids and
/// margins. LongRoPE fixtures are checked on transformers' cached path (cached_path.json), the
/// path [`generate`] drives (the device follows each step's regime flag); the engine's recompute
/// at the crossing, which gives golden.json, is tested on the CPU device
/// (crates/halo-engine/tests/longrope_cpu.rs).
fn family_cases(dir: &std::path::Path) -> Vec<(Vec<u32>, Vec<u32>, Vec<f64>)> {
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let nums = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let ids = |v: &serde_json::Value| -> Vec<u32> { nums(v).iter().map(|&x| x as u32).collect() };
    let cached = dir.join("cached_path.json").is_file();
    let (file, key) = if cached {
        ("cached_path.json", "cached_ids")
    } else {
        ("golden.json", "greedy_ids")
    };
    read(file)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (ids(&c["prompt_ids"]), ids(&c[key]), nums(&c["margins"])))
        .collect()
}

/// The warmup every test runs: a 256-block pool of 16 tokens, room for 8 sequences of 512.
fn small_pool() -> WarmupRequest {
    WarmupRequest {
        block_size: 16,
        max_batch_tokens: 256,
        max_batch_seqs: 8,
        max_seq_len: 512,
        num_blocks: Some(256),
        kv_cache_bytes: None,
        resident_kv_pool: false,
    }
}

/// A family fixture loaded in f32 and warmed up: the device, its block size and the fixture dir.
fn family_device(name: &str) -> (CudaDevice, usize, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families")
        .join(name);
    let mut d = CudaDevice::new(0).expect("a CUDA GPU");
    d.load(
        &dir,
        &LoadOptions {
            dtype: Some(DType::F32),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let layout = d.warmup(&small_pool()).unwrap();
    (d, layout.block_size, dir)
}

/// Each case alone: transformers' greedy ids up to near ties. cuBLAS (and the MoE kernels) sum
/// in another order than transformers: a step whose top two are within 1e-3 may go either way,
/// and the continuation after it with it. Returns what each case generated.
fn alone_match_up_to_near_ties(name: &str) -> Vec<Vec<u32>> {
    let (mut d, block_size, dir) = family_device(name);
    let long_above = halo_model::ModelConfig::from_dir(&dir)
        .unwrap()
        .rope
        .long_regime_above();
    let mut out = Vec::new();
    for (ci, (prompt, want, margins)) in family_cases(&dir).iter().enumerate() {
        let got = generate(
            &mut d,
            block_size,
            std::slice::from_ref(prompt),
            want.len(),
            long_above,
        );
        if let Some(i) = got[0].iter().zip(want).position(|(g, w)| g != w) {
            assert!(
                margins[i] < 1e-3,
                "{name} case {ci}: token {i} is {}, transformers chose {} (margin {})",
                got[0][i],
                want[i],
                margins[i]
            );
        }
        out.push(got[0].clone());
    }
    out
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn dense_families_f32_match_transformers_up_to_near_ties() {
    for name in ["tiny-qwen3", "tiny-gemma2", "tiny-gemma3", "tiny-phi3"] {
        alone_match_up_to_near_ties(name);
    }
}

/// Mixtral and Qwen3-MoE through kernels/moe.cu: transformers' greedy ids up to near ties, and
/// every prompt's ids the same alone and in one batch with the others (the batch's tokens go to
/// different experts within a step, so this exercises the grouping).
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn moe_families_f32_match_transformers_alone_and_batched() {
    for name in ["tiny-mixtral", "tiny-qwen3moe"] {
        let alone = alone_match_up_to_near_ties(name);
        let (mut d, block_size, dir) = family_device(name);
        let cases = family_cases(&dir);
        let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
        let steps = cases.iter().map(|c| c.1.len()).min().unwrap();
        let batched = generate(&mut d, block_size, &prompts, steps, None);
        for (ci, (b, a)) in batched.iter().zip(&alone).enumerate() {
            assert_eq!(
                b[..],
                a[..steps],
                "{name} case {ci}: batched differs from alone"
            );
        }
    }
}
