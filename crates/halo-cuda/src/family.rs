//! What the CUDA forward pass runs for a model, decided once at load from the config's knobs
//! (never from the family's name, except to refuse what it cannot run): which activation
//! kernel, the norm weight offset, q/k norms, Gemma's sandwich norms, the embedding scale,
//! the attention scale and soft-caps, per-layer windows and RoPE tables (partial rotary,
//! LongRoPE's two sets, Gemma 3's local base), which layers are mixtures of experts and how
//! they route. Pure host logic, unit-tested without a GPU.

use crate::error::CudaError;
use crate::kernels::KernelId;
use crate::plan::geometry;
use halo_model::config::moe::ExpertNames;
use halo_model::{Activation, ModelConfig, RotaryTables};

/// One RoPE as the rope kernel takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RopePlan {
    pub tables: RotaryTables,
    /// `long_from` kernel argument: the position from which LongRoPE's long set applies, -1
    /// when there is one set. The kernel only tests it for >= 0 (whether the long set exists);
    /// which rows use it is the engine's per-sequence flag.
    pub long_from: i32,
}

/// Per layer: its attention window (0 = full causal) and which RoPE it rotates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    pub window: i32,
    pub rope: usize,
    /// The feed-forward is the sparse MoE block ([`Features::moe`]), not a dense MLP.
    pub sparse: bool,
}

/// How the sparse layers route (kernels/moe.cu's arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoePlan {
    pub num_experts: usize,
    pub top_k: usize,
    /// Divide the kept probabilities by their sum (Mixtral; Qwen3-MoE's `norm_topk_prob`).
    pub renormalize: bool,
    /// Each expert's MLP width.
    pub inter: usize,
}

/// The forward pass's choices for one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// `SiluMul` or `GeluTanhMul`.
    pub activation: KernelId,
    /// Added to every RMSNorm weight inside the kernel (Gemma's `1 + w` in f32).
    pub norm_offset: f32,
    pub qk_norm: bool,
    /// Norms on the attention's and the MLP's outputs (Gemma).
    pub sandwich_norms: bool,
    /// Multiplies the looked-up embeddings (1 = none, an exact multiply).
    pub embed_scale: f32,
    pub attn_scale: f32,
    /// 0 = none.
    pub attn_softcap: f32,
    /// 0 = none.
    pub final_softcap: f32,
    /// q/k/v and gate/up are single checkpoint tensors (Phi-3).
    pub fused_projections: bool,
    /// The global RoPE, then the local one when the model has it.
    pub ropes: Vec<RopePlan>,
    pub layers: Vec<LayerPlan>,
    /// Present when some layer is sparse.
    pub moe: Option<MoePlan>,
}

fn unsupported(msg: String) -> CudaError {
    CudaError::Unsupported(msg)
}

fn positive_or_none(v: Option<f32>, what: &str) -> Result<f32, CudaError> {
    match v {
        None => Ok(0.0),
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        Some(x) => Err(unsupported(format!("{what} {x} is not a positive number"))),
    }
}

fn rope_plan(rope: &halo_model::RopeConfig, head_dim: usize) -> Result<RopePlan, CudaError> {
    let tables = rope.tables(head_dim);
    let half = tables.rotary_dim / 2;
    if tables.rotary_dim == 0
        || !tables.rotary_dim.is_multiple_of(2)
        || tables.rotary_dim > head_dim
    {
        return Err(unsupported(format!(
            "{} rotary dimensions in a head of {head_dim}",
            tables.rotary_dim
        )));
    }
    if tables.short.len() != half || tables.long.as_ref().is_some_and(|(l, _)| l.len() != half) {
        return Err(unsupported(format!(
            "RoPE frequency tables are not {half} long (rotary dimensions / 2)"
        )));
    }
    let long_from = match &tables.long {
        None => -1,
        Some((_, from)) => i32::try_from(*from).map_err(|_| {
            unsupported(format!(
                "LongRoPE original length {from} exceeds an i32 position"
            ))
        })?,
    };
    Ok(RopePlan { tables, long_from })
}

fn moe_plan(c: &ModelConfig) -> Result<Option<MoePlan>, CudaError> {
    let Some(m) = c
        .moe
        .as_ref()
        .filter(|m| m.sparse_layers.iter().any(|&s| s))
    else {
        return Ok(None);
    };
    if ExpertNames::for_architecture(c.architecture).is_none() {
        return Err(unsupported(format!(
            "{} has sparse layers, but no expert layout the CUDA backend knows",
            c.architecture.hf_name()
        )));
    }
    if m.num_experts == 0 || m.num_experts > geometry::MOE_MAX_EXPERTS {
        return Err(unsupported(format!(
            "{} experts per layer (the MoE kernels route among at most {})",
            m.num_experts,
            geometry::MOE_MAX_EXPERTS
        )));
    }
    if m.experts_per_token == 0
        || m.experts_per_token > m.num_experts
        || m.experts_per_token > geometry::MOE_MAX_TOP_K
    {
        return Err(unsupported(format!(
            "{} experts per token (the MoE kernels keep between 1 and {} of the {} experts)",
            m.experts_per_token,
            geometry::MOE_MAX_TOP_K.min(m.num_experts),
            m.num_experts
        )));
    }
    if m.expert_intermediate_size == 0 {
        return Err(unsupported("experts of zero width".into()));
    }
    Ok(Some(MoePlan {
        num_experts: m.num_experts,
        top_k: m.experts_per_token,
        renormalize: m.norm_topk_prob,
        inter: m.expert_intermediate_size,
    }))
}

impl Features {
    pub fn from_config(c: &ModelConfig) -> Result<Features, CudaError> {
        let moe = moe_plan(c)?;
        if c.head_dim > geometry::ATTN_MAX_HEAD_DIM || !c.head_dim.is_multiple_of(2) {
            return Err(unsupported(format!(
                "head_dim {} (the attention kernel takes an even head_dim of at most {})",
                c.head_dim,
                geometry::ATTN_MAX_HEAD_DIM
            )));
        }
        if c.num_key_value_heads == 0
            || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
        {
            return Err(unsupported(
                "attention heads are not a multiple of KV heads".into(),
            ));
        }
        if c.fused_projections && (c.qkv_bias || c.mlp_bias) {
            return Err(unsupported(
                "biases on fused qkv_proj / gate_up_proj projections".into(),
            ));
        }
        let activation = match c.activation {
            Activation::Silu => KernelId::SiluMul,
            Activation::GeluTanh => KernelId::GeluTanhMul,
        };
        let embed_scale = match c.embed_scale {
            None => 1.0,
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => return Err(unsupported(format!("embedding scale {s}"))),
        };
        if !(c.attn_scale.is_finite() && c.attn_scale > 0.0) {
            return Err(unsupported(format!("attention scale {}", c.attn_scale)));
        }
        if !c.norm_weight_offset.is_finite() {
            return Err(unsupported(format!(
                "norm weight offset {}",
                c.norm_weight_offset
            )));
        }
        let mut ropes = vec![rope_plan(&c.rope, c.head_dim)?];
        if let Some(local) = &c.local_rope {
            ropes.push(rope_plan(local, c.head_dim)?);
        }
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let window = c.window_for_layer(l);
                LayerPlan {
                    window: window.map_or(0, |w| w.min(i32::MAX as usize) as i32),
                    // the same rule as ModelConfig::rope_for_layer: the local RoPE on windowed
                    // layers when the model has one
                    rope: usize::from(c.local_rope.is_some() && window.is_some()),
                    sparse: moe.is_some() && c.moe.as_ref().is_some_and(|m| m.is_sparse(l)),
                }
            })
            .collect();
        Ok(Features {
            activation,
            norm_offset: c.norm_weight_offset,
            qk_norm: c.qk_norm,
            sandwich_norms: c.sandwich_norms,
            embed_scale,
            attn_scale: c.attn_scale,
            attn_softcap: positive_or_none(c.attn_logit_softcap, "attention soft-cap")?,
            final_softcap: positive_or_none(c.final_logit_softcap, "final logit soft-cap")?,
            fused_projections: c.fused_projections,
            ropes,
            layers,
            moe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_model::Architecture;
    use std::path::{Path, PathBuf};

    fn fixture(dir: &str) -> ModelConfig {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        ModelConfig::from_dir(&root.join(dir)).unwrap()
    }

    fn family(name: &str) -> PathBuf {
        PathBuf::from("tests/fixtures/families").join(name)
    }

    #[test]
    fn llama_family_is_the_plain_block() {
        let c = fixture("tests/fixtures/models/tiny-mistral-swa");
        let f = Features::from_config(&c).unwrap();
        assert_eq!(f.activation, KernelId::SiluMul);
        assert_eq!((f.norm_offset, f.embed_scale), (0.0, 1.0));
        assert_eq!((f.attn_softcap, f.final_softcap), (0.0, 0.0));
        assert!(!f.qk_norm && !f.sandwich_norms && !f.fused_projections);
        assert_eq!(f.ropes.len(), 1);
        assert_eq!(f.ropes[0].long_from, -1);
        assert_eq!(f.ropes[0].tables.rotary_dim, c.head_dim);
        assert_eq!(f.attn_scale, 1.0 / (c.head_dim as f32).sqrt());
        let w = c.sliding_window.unwrap() as i32;
        assert!(f.layers.iter().all(|l| l.window == w && l.rope == 0));
    }

    #[test]
    fn gemma2_softcaps_sandwich_norms_and_alternating_windows() {
        let c = fixture(family("tiny-gemma2").to_str().unwrap());
        let f = Features::from_config(&c).unwrap();
        assert_eq!(f.activation, KernelId::GeluTanhMul);
        assert_eq!(f.norm_offset, 1.0);
        assert!(f.sandwich_norms);
        assert_eq!(f.embed_scale, (c.hidden_size as f32).sqrt());
        assert_eq!(f.attn_softcap, c.attn_logit_softcap.unwrap());
        assert_eq!(f.final_softcap, c.final_logit_softcap.unwrap());
        assert_eq!(f.attn_scale, c.attn_scale);
        let windows: Vec<i32> = f.layers.iter().map(|l| l.window).collect();
        let expected: Vec<i32> = (0..c.num_hidden_layers)
            .map(|l| c.window_for_layer(l).map_or(0, |w| w as i32))
            .collect();
        assert_eq!(windows, expected);
        assert!(windows.contains(&0) && windows.iter().any(|&w| w > 0));
    }

    #[test]
    fn gemma3_local_layers_take_the_local_rope() {
        let c = fixture(family("tiny-gemma3").to_str().unwrap());
        let f = Features::from_config(&c).unwrap();
        assert!(f.qk_norm);
        assert_eq!(f.ropes.len(), 2);
        assert_eq!(
            f.ropes[1].tables.short,
            c.local_rope.as_ref().unwrap().inv_freq(c.head_dim)
        );
        for (l, lp) in f.layers.iter().enumerate() {
            assert_eq!(lp.rope == 1, c.window_for_layer(l).is_some(), "layer {l}");
            assert_eq!(
                f.ropes[lp.rope].tables.short,
                c.rope_for_layer(l).inv_freq(c.head_dim)
            );
        }
    }

    #[test]
    fn phi3_partial_rotary_and_long_rope() {
        let c = fixture(family("tiny-phi3").to_str().unwrap());
        let f = Features::from_config(&c).unwrap();
        assert!(f.fused_projections);
        let r = &f.ropes[0];
        assert_eq!(r.tables.rotary_dim, c.head_dim * 3 / 4);
        assert_eq!(r.long_from, 32);
        assert!(r.tables.attention_factor > 1.0);
        assert_eq!(
            r.tables.long.as_ref().unwrap().0.len(),
            r.tables.rotary_dim / 2
        );
    }

    #[test]
    fn mixture_of_experts_layers_and_routing() {
        for moe in ["tiny-mixtral", "tiny-qwen3moe"] {
            let c = fixture(family(moe).to_str().unwrap());
            let m = c.moe.as_ref().unwrap();
            let f = Features::from_config(&c).unwrap();
            assert_eq!(
                f.moe,
                Some(MoePlan {
                    num_experts: m.num_experts,
                    top_k: m.experts_per_token,
                    renormalize: m.norm_topk_prob,
                    inter: m.expert_intermediate_size,
                }),
                "{moe}"
            );
            let sparse: Vec<bool> = f.layers.iter().map(|l| l.sparse).collect();
            let expected: Vec<bool> = (0..c.num_hidden_layers).map(|l| m.is_sparse(l)).collect();
            assert_eq!(sparse, expected, "{moe}");
        }
        // Dense models have no plan and no sparse layer.
        let f = Features::from_config(&fixture("tests/fixtures/models/tiny-qwen2")).unwrap();
        assert!(f.moe.is_none() && f.layers.iter().all(|l| !l.sparse));
    }

    #[test]
    fn routing_past_the_kernels_shared_arrays_is_refused() {
        let base = fixture(family("tiny-mixtral").to_str().unwrap());
        let with = |f: &dyn Fn(&mut halo_model::config::moe::MoeConfig)| {
            let mut c = base.clone();
            f(c.moe.as_mut().unwrap());
            Features::from_config(&c)
        };
        let too_many = with(&|m| m.num_experts = geometry::MOE_MAX_EXPERTS + 1);
        assert!(
            matches!(&too_many, Err(CudaError::Unsupported(e)) if e.contains("at most 256")),
            "{:?}",
            too_many.err()
        );
        assert!(with(&|m| m.experts_per_token = 0).is_err());
        assert!(with(&|m| m.experts_per_token = m.num_experts + 1).is_err());
        assert!(with(&|m| {
            m.num_experts = 64;
            m.experts_per_token = geometry::MOE_MAX_TOP_K + 1;
        })
        .is_err());
        assert!(with(&|m| m.expert_intermediate_size = 0).is_err());
        // Sparse layers on an architecture with no expert layout.
        let mut c = base.clone();
        c.architecture = Architecture::Llama;
        assert!(Features::from_config(&c).is_err());
    }

    #[test]
    fn oversized_heads_and_bad_softcaps_are_refused() {
        let mut c = fixture("tests/fixtures/models/tiny-qwen2");
        c.head_dim = 512;
        assert!(matches!(
            Features::from_config(&c),
            Err(CudaError::Unsupported(_))
        ));
        let mut c = fixture("tests/fixtures/models/tiny-qwen2");
        c.attn_logit_softcap = Some(-1.0);
        assert!(Features::from_config(&c).is_err());
    }
}
