//! Shared helpers for halo-gaudi's integration tests: sidecar options for tests, the tiny
//! model and its golden ids, and a small driver that plays the engine's part (blocks, steps).

#![allow(dead_code)]

use halo_gaudi::{GaudiDevice, GaudiOptions};
use halo_hal::{DType, Device, LoadOptions, SampleRequest, SeqStep, StepBatch, WarmupRequest};
use std::path::PathBuf;
use std::time::Duration;

pub const BLOCK: usize = 16;

pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("HALO_TINY_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(halo_engine::testing::tiny_mha_dir);
    assert!(
        dir.join("config.json").exists(),
        "tiny model missing at {} (set HALO_TINY_MODEL)",
        dir.display()
    );
    dir
}

pub struct Case {
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
}

pub fn golden() -> Vec<Case> {
    golden_at(&model_dir())
}

/// The cases of the golden.json in `dir`.
pub fn golden_at(dir: &std::path::Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("golden.json")).expect("golden.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("golden.json parses");
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .expect("array")
            .iter()
            .map(|t| t.as_u64().expect("id") as u32)
            .collect()
    };
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            prompt_ids: ids(&c["prompt_ids"]),
            greedy_ids: ids(&c["greedy_ids"]),
        })
        .collect()
}

pub fn options() -> GaudiOptions {
    GaudiOptions {
        backend: Some("cpu".into()),
        threads: 1,
        // Run every bucket at warmup, as on HPU (CPU's default runs only the extremes).
        env: vec![("HALO_SIDECAR_WARMUP".into(), "all".into())],
        ready_timeout: Duration::from_secs(120),
        step_timeout: Duration::from_secs(3),
        restart_backoff: Duration::from_millis(200),
        restart_backoff_max: Duration::from_secs(2),
        ..Default::default()
    }
}

pub fn fake_options(mode: &str, after: usize) -> GaudiOptions {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    GaudiOptions {
        sidecar_dir: Some(here.join("tests/fake")),
        module: "halo_fake_sidecar".into(),
        env: vec![
            ("HALO_SIDECAR_WARMUP".into(), "edges".into()),
            ("HALO_FAKE_MODE".into(), mode.into()),
            ("HALO_FAKE_AFTER".into(), after.to_string()),
            (
                "HALO_REAL_SIDECAR_DIR".into(),
                here.join("sidecar").to_string_lossy().into_owned(),
            ),
        ],
        ..options()
    }
}

pub fn warmup_request() -> WarmupRequest {
    WarmupRequest {
        block_size: BLOCK,
        max_batch_tokens: 64,
        max_batch_seqs: 4,
        max_seq_len: 128,
        num_blocks: Some(64),
        kv_cache_bytes: None,
        resident_kv_pool: false,
    }
}

/// A started, loaded and warmed device.
pub fn ready_device(opts: GaudiOptions) -> GaudiDevice {
    ready_device_for(opts, &model_dir())
}

/// A started device with the model in `dir` loaded (f32) and warmed.
pub fn ready_device_for(opts: GaudiOptions, dir: &std::path::Path) -> GaudiDevice {
    let mut dev = GaudiDevice::new(opts).expect("sidecar starts");
    // The sidecar keeps its KV cache in the compute dtype: another type is refused before the
    // sidecar is asked anything, and the device still loads afterwards.
    let refused = dev
        .load(
            dir,
            &LoadOptions {
                dtype: Some(DType::F32),
                kv_cache_dtype: Some(DType::F16),
                ..Default::default()
            },
        )
        .expect_err("a KV type the sidecar cannot store");
    assert!(
        matches!(&refused, halo_hal::DeviceError::Unavailable(m) if m.contains("--dtype")),
        "{refused}"
    );
    let info = dev
        .load(
            dir,
            &LoadOptions {
                dtype: Some(DType::F32),
                ..Default::default()
            },
        )
        .expect("model loads");
    assert_eq!(info.vocab_size, 512);
    let layout = dev.warmup(&warmup_request()).expect("warmup");
    assert_eq!(layout.num_blocks, 64);
    assert!(!layout.warmed_shapes.is_empty());
    dev
}

/// One sequence as the engine sees it: its blocks, what it has run, what it has sampled.
pub struct Gen {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub out: Vec<u32>,
    pub blocks: Vec<u32>,
    pub pos: usize,
}

impl Gen {
    pub fn new(id: u64, prompt: &[u32], first_block: u32) -> Gen {
        Gen {
            id,
            prompt: prompt.to_vec(),
            out: vec![],
            blocks: (first_block..first_block + 8).collect(),
            pos: 0,
        }
    }

    /// The next piece of work: a prompt chunk of at most `chunk` tokens, or one decode token.
    pub fn next_step(&mut self, chunk: usize) -> SeqStep {
        let (tokens, sample) = if self.pos < self.prompt.len() {
            let end = (self.pos + chunk).min(self.prompt.len());
            (
                self.prompt[self.pos..end].to_vec(),
                end == self.prompt.len(),
            )
        } else {
            (vec![*self.out.last().expect("sampled before")], true)
        };
        let s = SeqStep {
            seq_id: self.id,
            start_pos: self.pos,
            block_table: self.blocks.clone(),
            sample: sample.then(SampleRequest::greedy),
            tokens,
            long_rope: false,
        };
        self.pos += s.tokens.len();
        s
    }
}

/// Runs the sequences together (at most 64 new tokens per step) until each has `steps` ids.
pub fn drive(dev: &mut GaudiDevice, gens: &mut [Gen], steps: usize, chunk: usize) {
    while gens.iter().any(|g| g.out.len() < steps) {
        let mut batch = StepBatch::default();
        let mut budget = 64;
        for g in gens.iter_mut().filter(|g| g.out.len() < steps) {
            if budget == 0 {
                break;
            }
            let s = g.next_step(chunk.min(budget));
            budget -= s.tokens.len();
            batch.seqs.push(s);
        }
        let out = dev.step(&batch).expect("step");
        assert!(!out.timings.graph_compiled, "{:?}", out.timings.bucket);
        for r in out.results {
            let g = gens
                .iter_mut()
                .find(|g| g.id == r.seq_id)
                .expect("known id");
            g.out.push(r.outcome.expect("finite logits").token);
        }
    }
}
