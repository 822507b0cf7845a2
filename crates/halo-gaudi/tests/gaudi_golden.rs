//! The tiny reference model through GaudiDevice (sidecar on torch CPU, f32): transformers'
//! greedy ids exactly, alone and in mixed batches with chunked prefill.

mod common;

use common::*;
use halo_hal::{Device, SampleRequest, SamplingParams, SeqStep, StepBatch};

#[test]
fn golden_greedy_ids_alone_and_in_a_mixed_batch() {
    let cases = golden();
    let mut dev = ready_device(options());
    let info = dev.info();
    assert_eq!(info.kind, halo_hal::DeviceKind::Gaudi);
    assert!(info.name.contains("cpu"), "{}", info.name);

    let mut alone = vec![Gen::new(1, &cases[0].prompt_ids, 0)];
    drive(&mut dev, &mut alone, 48, 64);
    assert_eq!(alone[0].out, cases[0].greedy_ids);

    // Every prompt at once; the 67-token prompt is prefilled in 24-token chunks next to the
    // others' decode tokens.
    let mut gens: Vec<Gen> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| Gen::new(10 + i as u64, &c.prompt_ids, 8 * i as u32))
        .collect();
    drive(&mut dev, &mut gens, 48, 24);
    for (g, c) in gens.iter().zip(&cases) {
        assert_eq!(g.out, c.greedy_ids, "sequence {}", g.id);
    }

    let health = dev.health().expect("health");
    assert_eq!(health.compiles_after_warmup, 0);
    assert!(health.padded_tokens_total > 0);
}

#[test]
fn seeded_sampling_matches_the_reference_sampler_and_bad_batches_are_refused() {
    let cases = golden();
    let mut dev = ready_device(options());
    let prompt = &cases[1].prompt_ids;
    let params = SamplingParams {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        seed: 1234,
        ..Default::default()
    };
    let run = |dev: &mut _, id: u64, block: u32| -> Vec<u32> {
        let dev: &mut halo_gaudi::GaudiDevice = dev;
        let mut g = Gen::new(id, prompt, block);
        let mut toks = vec![];
        for n in 0..12u64 {
            let mut s = g.next_step(64);
            s.sample = Some(SampleRequest {
                params: params.clone(),
                rng_offset: n,
                logprobs: true,
                top_n: 3,
                penalties: None,
            });
            let out = dev.step(&StepBatch { seqs: vec![s] }).expect("step");
            let t = out.results[0].outcome.as_ref().expect("finite");
            assert!(t.logprob <= 0.0 && t.top.len() == 3);
            g.out.push(t.token);
            toks.push(t.token);
        }
        toks
    };
    let a = run(&mut dev, 1, 0);
    let b = run(&mut dev, 2, 8);
    assert_eq!(a, b, "same seed, same tokens");

    // Out-of-vocabulary input is the engine's bug: refused before it reaches the sidecar.
    let bad = StepBatch {
        seqs: vec![SeqStep {
            seq_id: 9,
            tokens: vec![9999],
            start_pos: 0,
            block_table: vec![0],
            sample: None,
            long_rope: false,
        }],
    };
    assert!(matches!(
        dev.step(&bad),
        Err(halo_hal::DeviceError::BadBatch(_))
    ));
    // ...and the device goes on.
    let mut g = vec![Gen::new(3, &cases[2].prompt_ids, 16)];
    drive(&mut dev, &mut g, 8, 64);
    assert_eq!(g[0].out, cases[2].greedy_ids[..8]);
}
