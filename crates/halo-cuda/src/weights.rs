//! The model's weights on the device in the compute dtype, with the projections that share an
//! input fused (q|k|v, gate|up) so each costs one GEMM; checkpoints that already store them
//! fused (Phi-3's `qkv_proj`, `gate_up_proj`) are uploaded as they are. A sparse layer's experts
//! are stacked into one buffer per projection (`[experts, rows, cols]`), which is what the MoE
//! kernels index by expert id.

use crate::error::CudaError;
use crate::family::Features;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use halo_hal::{DType, DeviceError};
use halo_model::{Model, ModelConfig};
use std::sync::Arc;

/// A device buffer and its raw address (kernel arguments and cuBLAS take addresses).
pub(crate) struct DevBuf {
    _buf: CudaSlice<u8>,
    pub ptr: u64,
}

impl DevBuf {
    pub(crate) fn zeros(stream: &Arc<CudaStream>, bytes: usize) -> Result<DevBuf, CudaError> {
        let buf = stream.alloc_zeros::<u8>(bytes.max(1))?;
        let ptr = buf.device_ptr(stream).0;
        Ok(DevBuf { _buf: buf, ptr })
    }

    pub(crate) fn from_bytes(stream: &Arc<CudaStream>, bytes: &[u8]) -> Result<DevBuf, CudaError> {
        let buf = stream.clone_htod(bytes)?;
        let ptr = buf.device_ptr(stream).0;
        Ok(DevBuf { _buf: buf, ptr })
    }
}

/// Host f32 values as little-endian bytes of `dtype` (round to nearest even).
pub(crate) fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

pub(crate) struct LayerWeights {
    pub input_norm: DevBuf,
    /// The feed-forward's input norm: `post_attention_layernorm`, or with sandwich norms
    /// (Gemma) `pre_feedforward_layernorm`.
    pub post_norm: DevBuf,
    /// With sandwich norms: the attention's output norm (`post_attention_layernorm`) and the
    /// feed-forward's (`post_feedforward_layernorm`).
    pub sandwich: Option<(DevBuf, DevBuf)>,
    /// Per-head q and k norm weights (`head_dim` each).
    pub qk_norm: Option<(DevBuf, DevBuf)>,
    pub qkv: DevBuf,
    pub qkv_bias: Option<DevBuf>,
    pub o: DevBuf,
    pub o_bias: Option<DevBuf>,
    pub ffn: FfnWeights,
    /// The attention window of this layer (0 = full causal).
    pub window: i32,
    /// Index into [`ModelWeights::ropes`].
    pub rope: usize,
}

/// A layer's feed-forward on the device.
pub(crate) enum FfnWeights {
    Dense {
        gate_up: DevBuf,
        gate_up_bias: Option<DevBuf>,
        down: DevBuf,
        down_bias: Option<DevBuf>,
    },
    /// Router `[experts, hidden]`; every expert's gate|up `[experts, 2 * inter, hidden]` and
    /// down `[experts, hidden, inter]`.
    Sparse {
        router: DevBuf,
        gate_up: DevBuf,
        down: DevBuf,
    },
}

/// One RoPE's inverse frequencies (f32): the only set, and LongRoPE's long set (the short one
/// again when there is none, so the kernel always has a valid address).
pub(crate) struct RopeWeights {
    pub short: DevBuf,
    pub long: DevBuf,
}

pub(crate) struct ModelWeights {
    pub embed: DevBuf,
    pub final_norm: DevBuf,
    /// `None` when tied to the embedding.
    pub lm_head: Option<DevBuf>,
    pub layers: Vec<LayerWeights>,
    /// Per RoPE of [`Features::ropes`], its frequency tables.
    pub ropes: Vec<RopeWeights>,
    /// Bytes of weights a forward pass reads.
    pub bytes_read: u64,
}

impl ModelWeights {
    pub(crate) fn lm_head_ptr(&self) -> u64 {
        self.lm_head.as_ref().unwrap_or(&self.embed).ptr
    }
}

/// A device tensor as the checkpoint tensors it concatenates (row-wise, in order): name, shape.
type Parts = Vec<(String, Vec<usize>)>;

/// The checkpoint tensors behind one layer's device buffers. Pure: decides names and shapes from
/// the config and the features, so what upload reads is tested without a GPU.
pub(crate) struct LayerTensors {
    pub input_norm: Parts,
    pub post_norm: Parts,
    pub sandwich: Option<(Parts, Parts)>,
    pub qk_norm: Option<(Parts, Parts)>,
    pub qkv: Parts,
    pub qkv_bias: Option<Parts>,
    pub o: Parts,
    pub o_bias: Option<Parts>,
    pub ffn: FfnTensors,
}

/// The checkpoint tensors behind a layer's feed-forward buffers.
pub(crate) enum FfnTensors {
    Dense {
        gate_up: Parts,
        gate_up_bias: Option<Parts>,
        down: Parts,
        down_bias: Option<Parts>,
    },
    /// Expert by expert: its gate then its up rows; its down rows.
    Sparse {
        router: Parts,
        gate_up: Parts,
        down: Parts,
    },
}

impl FfnTensors {
    fn new(c: &ModelConfig, features: &Features, l: usize) -> FfnTensors {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let t = |s: &str, shape: Vec<usize>| (format!("model.layers.{l}.{s}"), shape);
        if let (Some(names), Some(moe)) = (
            c.sparse_layer_names(l)
                .filter(|_| features.layers[l].sparse),
            features.moe,
        ) {
            let prefix = format!("model.layers.{l}");
            let (e_count, ei) = (moe.num_experts, moe.inter);
            let expert =
                |e: usize, which: &str, shape: Vec<usize>| (names.expert(&prefix, e, which), shape);
            return FfnTensors::Sparse {
                router: vec![(names.router(&prefix), vec![e_count, h])],
                gate_up: (0..e_count)
                    .flat_map(|e| {
                        [
                            expert(e, names.gate, vec![ei, h]),
                            expert(e, names.up, vec![ei, h]),
                        ]
                    })
                    .collect(),
                down: (0..e_count)
                    .map(|e| expert(e, names.down, vec![h, ei]))
                    .collect(),
            };
        }
        let gate_up = if features.fused_projections {
            vec![t("mlp.gate_up_proj.weight", vec![2 * i, h])]
        } else {
            vec![
                t("mlp.gate_proj.weight", vec![i, h]),
                t("mlp.up_proj.weight", vec![i, h]),
            ]
        };
        FfnTensors::Dense {
            gate_up,
            gate_up_bias: c.mlp_bias.then(|| {
                vec![
                    t("mlp.gate_proj.bias", vec![i]),
                    t("mlp.up_proj.bias", vec![i]),
                ]
            }),
            down: vec![t("mlp.down_proj.weight", vec![h, i])],
            down_bias: c.mlp_bias.then(|| vec![t("mlp.down_proj.bias", vec![h])]),
        }
    }

    #[cfg(test)]
    fn all(&self) -> Vec<&(String, Vec<usize>)> {
        match self {
            FfnTensors::Dense {
                gate_up,
                gate_up_bias,
                down,
                down_bias,
            } => gate_up
                .iter()
                .chain(down)
                .chain(gate_up_bias.iter().flatten())
                .chain(down_bias.iter().flatten())
                .collect(),
            FfnTensors::Sparse {
                router,
                gate_up,
                down,
            } => router.iter().chain(gate_up).chain(down).collect(),
        }
    }
}

impl LayerTensors {
    pub(crate) fn new(c: &ModelConfig, features: &Features, l: usize) -> LayerTensors {
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let t = |s: &str, shape: Vec<usize>| (format!("model.layers.{l}.{s}"), shape);
        let one = |s: &str, shape: Vec<usize>| vec![t(s, shape)];
        let (post_norm, sandwich) = if features.sandwich_norms {
            // Gemma: the MLP's input norm is `pre_feedforward_layernorm`, and the attention's
            // and the MLP's outputs have their own
            (
                one("pre_feedforward_layernorm.weight", vec![h]),
                Some((
                    one("post_attention_layernorm.weight", vec![h]),
                    one("post_feedforward_layernorm.weight", vec![h]),
                )),
            )
        } else {
            (one("post_attention_layernorm.weight", vec![h]), None)
        };
        let qkv = if features.fused_projections {
            one("self_attn.qkv_proj.weight", vec![q + 2 * kv, h])
        } else {
            vec![
                t("self_attn.q_proj.weight", vec![q, h]),
                t("self_attn.k_proj.weight", vec![kv, h]),
                t("self_attn.v_proj.weight", vec![kv, h]),
            ]
        };
        LayerTensors {
            input_norm: one("input_layernorm.weight", vec![h]),
            post_norm,
            sandwich,
            qk_norm: features.qk_norm.then(|| {
                (
                    one("self_attn.q_norm.weight", vec![hd]),
                    one("self_attn.k_norm.weight", vec![hd]),
                )
            }),
            qkv,
            qkv_bias: c.qkv_bias.then(|| {
                vec![
                    t("self_attn.q_proj.bias", vec![q]),
                    t("self_attn.k_proj.bias", vec![kv]),
                    t("self_attn.v_proj.bias", vec![kv]),
                ]
            }),
            o: one("self_attn.o_proj.weight", vec![h, q]),
            o_bias: c.o_bias.then(|| one("self_attn.o_proj.bias", vec![h])),
            ffn: FfnTensors::new(c, features, l),
        }
    }

    /// Every checkpoint tensor this layer reads.
    #[cfg(test)]
    fn all(&self) -> impl Iterator<Item = &(String, Vec<usize>)> {
        let pairs = [&self.sandwich, &self.qk_norm]
            .into_iter()
            .flatten()
            .flat_map(|(a, b)| a.iter().chain(b));
        let opts = [&self.qkv_bias, &self.o_bias]
            .into_iter()
            .flatten()
            .flatten();
        [&self.input_norm, &self.post_norm, &self.qkv, &self.o]
            .into_iter()
            .flatten()
            .chain(pairs)
            .chain(opts)
            .chain(self.ffn.all())
    }
}

/// The model-level tensors: embedding, final norm and, when untied, the head.
pub(crate) fn global_tensors(c: &ModelConfig) -> (Parts, Parts, Option<Parts>) {
    let h = c.hidden_size;
    (
        vec![("model.embed_tokens.weight".into(), vec![c.vocab_size, h])],
        vec![("model.norm.weight".into(), vec![h])],
        (!c.tie_word_embeddings).then(|| vec![("lm_head.weight".into(), vec![c.vocab_size, h])]),
    )
}

pub(crate) fn upload(
    model: &Model,
    features: &Features,
    dtype: DType,
    stream: &Arc<CudaStream>,
) -> Result<ModelWeights, DeviceError> {
    let c = &model.config;
    let mut bytes_read = 0u64;
    let mut put = |parts: &Parts| -> Result<DevBuf, DeviceError> {
        let mut all = Vec::new();
        for (name, shape) in parts {
            all.extend(
                model
                    .weights
                    .load_f32(name, shape)
                    .map_err(|e| DeviceError::Load(e.to_string()))?,
            );
        }
        let bytes = encode(&all, dtype);
        bytes_read += bytes.len() as u64;
        DevBuf::from_bytes(stream, &bytes).map_err(DeviceError::from)
    };
    // A token reads its top_k experts of each sparse layer, not the stack (bytes_read is what a
    // batch-1 step streams).
    let mut unread_experts = 0u64;
    let (embed, final_norm, lm_head) = global_tensors(c);
    let embed = put(&embed)?;
    let final_norm = put(&final_norm)?;
    let lm_head = lm_head.as_ref().map(&mut put).transpose()?;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let t = LayerTensors::new(c, features, l);
        let mut pair = |p: &Option<(Parts, Parts)>| -> Result<_, DeviceError> {
            p.as_ref().map(|(a, b)| Ok((put(a)?, put(b)?))).transpose()
        };
        let sandwich = pair(&t.sandwich)?;
        let qk_norm = pair(&t.qk_norm)?;
        let plan = features.layers[l];
        layers.push(LayerWeights {
            input_norm: put(&t.input_norm)?,
            post_norm: put(&t.post_norm)?,
            sandwich,
            qk_norm,
            qkv: put(&t.qkv)?,
            qkv_bias: t.qkv_bias.as_ref().map(&mut put).transpose()?,
            o: put(&t.o)?,
            o_bias: t.o_bias.as_ref().map(&mut put).transpose()?,
            ffn: match &t.ffn {
                FfnTensors::Dense {
                    gate_up,
                    gate_up_bias,
                    down,
                    down_bias,
                } => FfnWeights::Dense {
                    gate_up: put(gate_up)?,
                    gate_up_bias: gate_up_bias.as_ref().map(&mut put).transpose()?,
                    down: put(down)?,
                    down_bias: down_bias.as_ref().map(&mut put).transpose()?,
                },
                FfnTensors::Sparse {
                    router,
                    gate_up,
                    down,
                } => {
                    let moe = features.moe.expect("a sparse layer has a MoE plan");
                    let (e, k) = (moe.num_experts as u64, moe.top_k as u64);
                    let expert_bytes =
                        3 * (moe.inter * c.hidden_size * dtype.size_in_bytes()) as u64;
                    unread_experts += (e - k) * expert_bytes;
                    FfnWeights::Sparse {
                        router: put(router)?,
                        gate_up: put(gate_up)?,
                        down: put(down)?,
                    }
                }
            },
            window: plan.window,
            rope: plan.rope,
        });
    }
    if c.tie_word_embeddings {
        bytes_read += (c.vocab_size * c.hidden_size * dtype.size_in_bytes()) as u64;
    }
    let bytes_read = bytes_read - unread_experts;
    let ropes = features
        .ropes
        .iter()
        .map(|r| {
            let long = r.tables.long.as_ref().map_or(&r.tables.short, |(l, _)| l);
            Ok(RopeWeights {
                short: DevBuf::from_bytes(stream, &encode(&r.tables.short, DType::F32))?,
                long: DevBuf::from_bytes(stream, &encode(long, DType::F32))?,
            })
        })
        .collect::<Result<Vec<_>, CudaError>>()?;
    Ok(ModelWeights {
        embed,
        final_norm,
        lm_head,
        layers,
        ropes,
        bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upload reads exactly the tensors the checkpoint holds (the loader's list), each once,
    /// for every dense family: fused projections, q/k norms, sandwich norms and biases included.
    #[test]
    fn upload_reads_exactly_the_checkpoint_tensors() {
        use std::collections::BTreeMap;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let dirs = [
            "models/tiny-qwen2",
            "models/tiny-linear-rope-classic",
            "models/tiny-gqa-tied",
            "families/tiny-qwen3",
            "families/tiny-gemma2",
            "families/tiny-gemma3",
            "families/tiny-phi3",
            "families/tiny-mixtral",
            "families/tiny-qwen3moe",
        ];
        for dir in dirs {
            let c = ModelConfig::from_dir(&root.join(dir)).unwrap();
            let f = Features::from_config(&c).unwrap();
            let (embed, norm, head) = global_tensors(&c);
            let mut read: Vec<(String, Vec<usize>)> = embed.into_iter().chain(norm).collect();
            read.extend(head.into_iter().flatten());
            for l in 0..c.num_hidden_layers {
                read.extend(LayerTensors::new(&c, &f, l).all().cloned());
            }
            let n = read.len();
            let read: BTreeMap<String, Vec<usize>> = read.into_iter().collect();
            assert_eq!(read.len(), n, "{dir}: a tensor read twice");
            let expected: BTreeMap<String, Vec<usize>> = c.expected_tensors().into_iter().collect();
            assert_eq!(read, expected, "{dir}");
        }
    }

    /// Every device buffer of the MoE fixtures reads from both the safetensors checkpoint and
    /// llama.cpp's f32 GGUF of it (experts sliced out of `ffn_*_exps`), to the same values.
    #[test]
    fn expert_stacks_read_alike_from_safetensors_and_gguf() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        for name in ["tiny-mixtral", "tiny-qwen3moe"] {
            let hf = Model::open(&root.join("families").join(name)).unwrap();
            let gguf_path = root.join(format!("families/gguf/{name}-f32.gguf"));
            let gguf = Model::open(&gguf_path).unwrap();
            let f = Features::from_config(&hf.config).unwrap();
            assert_eq!(Features::from_config(&gguf.config).unwrap().moe, f.moe);
            let read = |m: &Model, parts: &Parts| -> Vec<f32> {
                parts
                    .iter()
                    .flat_map(|(n, shape)| {
                        m.weights
                            .load_f32(n, shape)
                            .unwrap_or_else(|e| panic!("{name}: {n}: {e}"))
                    })
                    .collect()
            };
            let mut sparse = 0;
            for l in 0..hf.config.num_hidden_layers {
                if let FfnTensors::Sparse {
                    router,
                    gate_up,
                    down,
                } = LayerTensors::new(&hf.config, &f, l).ffn
                {
                    sparse += 1;
                    for parts in [&router, &gate_up, &down] {
                        let a = read(&hf, parts);
                        assert_eq!(a, read(&gguf, parts), "{name} layer {l}");
                        let want: usize =
                            parts.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
                        assert_eq!(a.len(), want);
                    }
                }
            }
            assert_eq!(sparse, hf.config.num_hidden_layers, "{name}");
        }
    }

    #[test]
    fn encodes_each_dtype_little_endian() {
        assert_eq!(encode(&[1.0], DType::F32), 1.0f32.to_le_bytes().to_vec());
        assert_eq!(encode(&[1.0], DType::BF16), vec![0x80, 0x3f]);
        assert_eq!(encode(&[1.0], DType::F16), vec![0x00, 0x3c]);
        // Round to nearest even: 1 + 2^-8 is halfway between two bf16 values and goes down.
        assert_eq!(encode(&[1.0 + 1.0 / 256.0], DType::BF16), vec![0x80, 0x3f]);
    }
}
