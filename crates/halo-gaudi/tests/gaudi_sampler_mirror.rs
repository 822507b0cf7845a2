//! The sidecar's sampler (Python) against halo_hal::sampling (the definition) on the same
//! logits: the same token, the same logprob bits and the same top-n for every case, across
//! temperatures, top-k/top-p/min-p, penalties, ties and seeds.

mod common;

use halo_hal::rng::uniform;
use halo_hal::sampling::sample;
use halo_hal::{PenaltyContext, SampleRequest, SamplingParams};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn cases() -> Vec<(Vec<f32>, SampleRequest)> {
    let mut out = vec![];
    let mut n = 0u64;
    let mut next = || {
        n += 1;
        uniform(77, n)
    };
    for i in 0..300u64 {
        let vocab = 2 + (next() * 300.0) as usize;
        // Every third row is coarse, so ties are common.
        let logits: Vec<f32> = (0..vocab)
            .map(|_| {
                let x = (next() * 24.0 - 12.0) as f32;
                if i % 3 == 0 {
                    (x * 2.0).round() / 2.0
                } else {
                    x
                }
            })
            .collect();
        let pick =
            |x: f64, choices: &[f32]| choices[(x * choices.len() as f64) as usize % choices.len()];
        let params = SamplingParams {
            temperature: pick(next(), &[0.0, 0.3, 0.7, 1.0, 1.5]),
            top_k: pick(next(), &[0.0, 1.0, 5.0, 50.0]) as u32,
            top_p: pick(next(), &[1.0, 0.9, 0.5, 0.05]),
            min_p: pick(next(), &[0.0, 0.05, 0.3]),
            repetition_penalty: pick(next(), &[1.0, 1.0, 1.3, 0.8]),
            frequency_penalty: pick(next(), &[0.0, 0.0, 0.5, -0.4]),
            presence_penalty: pick(next(), &[0.0, 0.0, 0.7]),
            seed: (next() * 1e18) as u64,
        };
        let penalties = params.uses_penalties().then(|| {
            let prompt: Vec<u32> = (0..5).map(|_| (next() * vocab as f64) as u32).collect();
            let generated: Vec<u32> = (0..6).map(|_| (next() * vocab as f64) as u32).collect();
            PenaltyContext::from_history(&prompt, &generated)
        });
        let req = SampleRequest {
            params,
            rng_offset: (next() * 1000.0) as u64,
            logprobs: true,
            top_n: pick(next(), &[0.0, 1.0, 5.0]) as u32,
            penalties,
        };
        out.push((logits, req));
    }
    out.push((vec![0.0, f32::NAN, 1.0], SampleRequest::greedy()));
    out
}

#[test]
fn python_sampler_mirrors_the_reference_exactly() {
    let cases = cases();
    let input: Vec<Value> = cases
        .iter()
        .map(|(logits, r)| {
            let p = &r.params;
            let mut v = json!({
                "logits": logits.iter().map(|&x| if x.is_finite() { json!(x) } else { json!("nan") }).collect::<Vec<_>>(),
                "params": {
                    "temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p, "min_p": p.min_p,
                    "repetition_penalty": p.repetition_penalty, "frequency_penalty": p.frequency_penalty,
                    "presence_penalty": p.presence_penalty, "seed": p.seed,
                },
                "rng_offset": r.rng_offset,
                "top_n": r.top_n,
            });
            if let Some(ctx) = &r.penalties {
                // as the sidecar gets it on the wire: (token, output count) per distinct token
                v["history"] = json!(ctx
                    .entries()
                    .iter()
                    .map(|e| [e.token, e.output_count])
                    .collect::<Vec<_>>());
            }
            v
        })
        .collect();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("HALO_SIDECAR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/halo/sidecar-venv/bin/python")
        });
    let mut child = Command::new(python)
        .arg(here.join("tests/sampler_mirror.py"))
        .env("HALO_REAL_SIDECAR_DIR", here.join("sidecar"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sidecar python runs (ci/sidecar-venv.sh)");
    let text = serde_json::to_string(&input)
        .unwrap()
        .replace("\"nan\"", "NaN");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got.len(), cases.len());
    let mut sampled = 0;
    for (i, ((logits, req), g)) in cases.iter().zip(&got).enumerate() {
        match sample(logits, req) {
            Err(_) => assert!(g.is_null(), "case {i}: python sampled non-finite logits"),
            Ok(want) => {
                sampled += 1;
                assert_eq!(
                    g["token"].as_u64(),
                    Some(want.token as u64),
                    "case {i}: token"
                );
                let lp = g["logprob"].as_f64().unwrap() as f32;
                assert_eq!(lp.to_bits(), want.logprob.to_bits(), "case {i}: logprob");
                let top: Vec<(u64, u32)> = g["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        (
                            t[0].as_u64().unwrap(),
                            (t[1].as_f64().unwrap() as f32).to_bits(),
                        )
                    })
                    .collect();
                let want_top: Vec<(u64, u32)> = want
                    .top
                    .iter()
                    .map(|t| (t.token as u64, t.logprob.to_bits()))
                    .collect();
                assert_eq!(top, want_top, "case {i}: top");
            }
        }
    }
    assert_eq!(sampled, 300);
}
