//! The tensors of a synthetic Llama (or Mixtral) model, generated lazily: each one's bytes are produced only
//! when the safetensors writer asks for them and dropped once written, so writing a 1B-parameter
//! model holds one tensor (at most the embedding) in memory, never the whole model.

use super::preset::Preset;
use super::rng::{tensor_seed, SplitMix64};
use super::{SynthDType, WEIGHT_STD};
use safetensors::tensor::View;
use safetensors::Dtype;
use std::borrow::Cow;

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform with mean 0 and standard deviation `std`.
    Uniform { std: f32 },
    /// Uniform in [1 - spread, 1 + spread): RMSNorm gains near 1 but not all equal, so a loader
    /// that skips a norm weight changes the output.
    NearOne { spread: f32 },
}

/// One tensor to be written.
#[derive(Clone, Debug)]
pub struct SynthTensor {
    pub seed: u64,
    pub shape: Vec<usize>,
    pub dtype: SynthDType,
    pub init: Init,
}

impl SynthTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32, before conversion to the stored dtype.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        let (scale, offset) = match self.init {
            Init::Uniform { std } => (std * 3f32.sqrt(), 0.0),
            Init::NearOne { spread } => (spread, 1.0),
        };
        let mut rng = SplitMix64::new(self.seed);
        (0..self.numel().div_ceil(2))
            .flat_map(move |_| {
                let (a, b) = rng.next_pair();
                [a * scale + offset, b * scale + offset]
            })
            .take(self.numel())
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data_len());
        match self.dtype {
            SynthDType::F32 => self
                .values()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            SynthDType::F16 => self
                .values()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes())),
            SynthDType::Bf16 => self
                .values()
                .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
        }
        out
    }
}

impl View for SynthTensor {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            SynthDType::F32 => Dtype::F32,
            SynthDType::F16 => Dtype::F16,
            SynthDType::Bf16 => Dtype::BF16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.bytes())
    }

    fn data_len(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }
}

/// Every tensor of `preset` under its Hugging Face name, in file order.
pub fn plan(preset: &Preset, seed: u64, dtype: SynthDType) -> Vec<(String, SynthTensor)> {
    let h = preset.hidden_size;
    let q = preset.num_attention_heads * preset.head_dim;
    let kv = preset.num_key_value_heads * preset.head_dim;
    let i = preset.intermediate_size;
    let weight = Init::Uniform { std: WEIGHT_STD };
    let norm = preset
        .family
        .map_or(Init::NearOne { spread: 0.1 }, |f| f.norm_init());
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| {
        let seed = tensor_seed(seed, &name);
        out.push((
            name,
            SynthTensor {
                seed,
                shape,
                dtype,
                init,
            },
        ));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![preset.vocab_size, h],
        weight,
    );
    for l in 0..preset.num_hidden_layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), vec![h], norm);
        if preset.phi3.is_some() {
            // Phi-3 stores q|k|v as one matrix
            add(
                format!("{p}.self_attn.qkv_proj.weight"),
                vec![q + 2 * kv, h],
                weight,
            );
        } else {
            add(format!("{p}.self_attn.q_proj.weight"), vec![q, h], weight);
            add(format!("{p}.self_attn.k_proj.weight"), vec![kv, h], weight);
            add(format!("{p}.self_attn.v_proj.weight"), vec![kv, h], weight);
        }
        add(format!("{p}.self_attn.o_proj.weight"), vec![h, q], weight);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            norm,
        );
        for (suffix, shape) in preset.family.map_or(vec![], |f| f.layer_tensors(preset)) {
            // q/k norms are RMSNorm gains like the others.
            add(format!("{p}.{suffix}"), shape, norm);
        }
        match preset.moe {
            // The router, then each expert's gate, down and up (Mixtral's w1, w2, w3).
            Some(m) => {
                let names = preset
                    .expert_names()
                    .expect("an MoE preset has expert names");
                add(names.router(&p), vec![m.num_experts, h], weight);
                for e in 0..m.num_experts {
                    add(names.expert(&p, e, names.gate), vec![i, h], weight);
                    add(names.expert(&p, e, names.down), vec![h, i], weight);
                    add(names.expert(&p, e, names.up), vec![i, h], weight);
                }
            }
            None if preset.phi3.is_some() => {
                // and gate|up as one
                add(
                    format!("{p}.mlp.gate_up_proj.weight"),
                    vec![2 * i, h],
                    weight,
                );
                add(format!("{p}.mlp.down_proj.weight"), vec![h, i], weight);
            }
            None => {
                add(format!("{p}.mlp.gate_proj.weight"), vec![i, h], weight);
                add(format!("{p}.mlp.up_proj.weight"), vec![i, h], weight);
                add(format!("{p}.mlp.down_proj.weight"), vec![h, i], weight);
            }
        }
    }
    add("model.norm.weight".into(), vec![h], norm);
    if !preset.tie_word_embeddings {
        add("lm_head.weight".into(), vec![preset.vocab_size, h], weight);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: SynthDType, init: Init, n: usize) -> SynthTensor {
        SynthTensor {
            seed: 42,
            shape: vec![n],
            dtype,
            init,
        }
    }

    #[test]
    fn values_have_the_requested_spread() {
        let t = tensor(SynthDType::F32, Init::Uniform { std: 0.02 }, 100_001);
        let v: Vec<f32> = t.values().collect();
        assert_eq!(v.len(), 100_001);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 1e-3,
            "{mean} {var}"
        );
        let n = tensor(SynthDType::F32, Init::NearOne { spread: 0.1 }, 1000);
        assert!(n.values().all(|x| (0.9..1.1).contains(&x)));
        assert!(n.values().any(|x| x < 0.95) && n.values().any(|x| x > 1.05));
    }

    #[test]
    fn stored_bytes_round_to_the_dtype() {
        let init = Init::Uniform { std: 0.02 };
        let f32s: Vec<f32> = tensor(SynthDType::F32, init, 64).values().collect();
        for (dtype, width) in [
            (SynthDType::F32, 4),
            (SynthDType::F16, 2),
            (SynthDType::Bf16, 2),
        ] {
            let t = tensor(dtype, init, 64);
            let b = t.data();
            assert_eq!(b.len(), 64 * width);
            assert_eq!(b.len(), t.data_len());
            for (k, &want) in f32s.iter().enumerate() {
                let got = match dtype {
                    SynthDType::F32 => f32::from_le_bytes(b[4 * k..4 * k + 4].try_into().unwrap()),
                    SynthDType::F16 => half::f16::from_le_bytes([b[2 * k], b[2 * k + 1]]).to_f32(),
                    SynthDType::Bf16 => {
                        half::bf16::from_le_bytes([b[2 * k], b[2 * k + 1]]).to_f32()
                    }
                };
                assert!(
                    (got - want).abs() <= want.abs() / 128.0 + 1e-7,
                    "{dtype:?} {got} {want}"
                );
            }
        }
    }
}
