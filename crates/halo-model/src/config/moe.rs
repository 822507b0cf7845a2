//! Mixture-of-experts families: Mixtral (Mistral's attention, every layer sparse) and Qwen3-MoE
//! (Qwen3's attention; every `decoder_sparse_step`-th layer outside `mlp_only_layers` sparse, the
//! rest dense MLPs of `intermediate_size`), and the same facts from GGUF metadata.

use super::{Architecture, Fields, ModelConfig};
use crate::error::Result;
use crate::gguf::metadata::Metadata;
use crate::gguf::GgufError;
use serde_json::Value;

/// How a model's sparse layers route tokens to experts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    /// Experts each token uses (`num_experts_per_tok`).
    pub experts_per_token: usize,
    /// Width of each expert's MLP (Mixtral's `intermediate_size`, Qwen3-MoE's
    /// `moe_intermediate_size`).
    pub expert_intermediate_size: usize,
    /// Whether the kept router probabilities are divided by their sum (Mixtral always;
    /// Qwen3-MoE's `norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// Per layer: whether its feed-forward is the sparse block (else a dense MLP).
    pub sparse_layers: Vec<bool>,
}

/// The checkpoint names of one sparse layer's tensors, after `{prefix}layers.{l}.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertNames {
    /// The block's module (`block_sparse_moe` for Mixtral, `mlp` for Qwen3-MoE).
    pub block: &'static str,
    /// gate, up and down inside `experts.{e}.` (`w1`, `w3`, `w2` for Mixtral).
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl ExpertNames {
    pub const MIXTRAL: ExpertNames = ExpertNames {
        block: "block_sparse_moe",
        gate: "w1",
        up: "w3",
        down: "w2",
    };
    pub const QWEN: ExpertNames = ExpertNames {
        block: "mlp",
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    };

    /// The names `arch`'s checkpoints use, for the MoE architectures.
    pub fn for_architecture(arch: Architecture) -> Option<ExpertNames> {
        match arch {
            Architecture::Mixtral => Some(ExpertNames::MIXTRAL),
            Architecture::Qwen3Moe => Some(ExpertNames::QWEN),
            _ => None,
        }
    }

    /// The router's weight, `[experts, hidden]`.
    pub fn router(&self, layer_prefix: &str) -> String {
        format!("{layer_prefix}.{}.gate.weight", self.block)
    }

    /// Expert `e`'s `which` (one of `self.gate`, `self.up`, `self.down`) weight.
    pub fn expert(&self, layer_prefix: &str, e: usize, which: &str) -> String {
        format!("{layer_prefix}.{}.experts.{e}.{which}.weight", self.block)
    }
}

impl MoeConfig {
    /// Whether `layer`'s feed-forward is the sparse block.
    pub fn is_sparse(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }

    fn check(
        self,
        experts_key: &str,
        top_k_key: &str,
    ) -> std::result::Result<Self, (String, String)> {
        if self.experts_per_token == 0 || self.experts_per_token > self.num_experts {
            return Err((
                top_k_key.to_owned(),
                format!(
                    "{} experts per token is not between 1 and the {} experts ({experts_key})",
                    self.experts_per_token, self.num_experts
                ),
            ));
        }
        Ok(self)
    }

    /// The tensors one sparse layer reads, with their HF shapes.
    pub fn layer_tensors(
        &self,
        names: ExpertNames,
        layer_prefix: &str,
        hidden: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let i = self.expert_intermediate_size;
        let mut t = vec![(names.router(layer_prefix), vec![self.num_experts, hidden])];
        for e in 0..self.num_experts {
            t.push((names.expert(layer_prefix, e, names.gate), vec![i, hidden]));
            t.push((names.expert(layer_prefix, e, names.up), vec![i, hidden]));
            t.push((names.expert(layer_prefix, e, names.down), vec![hidden, i]));
        }
        t
    }

    /// Reads the MoE fields of a GGUF file (`{arch}.expert_count` and friends): `None` when it
    /// has no experts. llama.cpp renormalises the kept weights for both `llama` (Mixtral) and
    /// `qwen3moe` unless `{arch}.expert_weights_norm` says otherwise.
    pub fn from_gguf(
        meta: &Metadata,
        arch: &str,
        layers: usize,
        feed_forward_length: usize,
    ) -> std::result::Result<Option<MoeConfig>, GgufError> {
        let key = |k: &str| format!("{arch}.{k}");
        let Some(num_experts) = meta.opt_usize(&key("expert_count"))?.filter(|&n| n > 0) else {
            return Ok(None);
        };
        let top_k =
            meta.opt_usize(&key("expert_used_count"))?
                .ok_or_else(|| GgufError::InvalidValue {
                    key: key("expert_used_count"),
                    msg: format!("missing, and the model has {num_experts} experts"),
                })?;
        let inter = meta
            .opt_usize(&key("expert_feed_forward_length"))?
            .unwrap_or(feed_forward_length);
        if inter == 0 {
            return Err(GgufError::InvalidValue {
                key: key("expert_feed_forward_length"),
                msg: "must be positive".into(),
            });
        }
        MoeConfig {
            num_experts,
            experts_per_token: top_k,
            expert_intermediate_size: inter,
            norm_topk_prob: meta.opt_bool(&key("expert_weights_norm"))?.unwrap_or(true),
            sparse_layers: vec![true; layers],
        }
        .check(&key("expert_count"), &key("expert_used_count"))
        .map(Some)
        .map_err(|(key, msg)| GgufError::InvalidValue { key, msg })
    }
}

/// Mixtral: Mistral's attention (its window, when set, on every layer) and a sparse block in
/// every layer.
pub(super) fn apply_mixtral(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    super::llama::apply(f, c)?;
    c.sliding_window = f.opt_usize("sliding_window")?;
    if c.sliding_window.is_some() {
        c.sliding_layers = match f.layer_types(c.num_hidden_layers)? {
            Some(types) => types,
            None => vec![true; c.num_hidden_layers],
        };
    }
    c.moe = Some(mixtral(f, c)?);
    Ok(())
}

/// Qwen3-MoE: Qwen3's attention (q/k norms) and sparse blocks where the config puts them.
pub(super) fn apply_qwen3_moe(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    super::qwen3::apply(f, c)?;
    c.moe = qwen3_moe(f, c)?;
    Ok(())
}

/// Mixtral: every layer routes to `num_local_experts` experts of `intermediate_size`, the kept
/// two (by default) renormalised.
fn mixtral(f: &Fields<'_>, c: &ModelConfig) -> Result<MoeConfig> {
    MoeConfig {
        num_experts: f.opt_usize("num_local_experts")?.unwrap_or(8),
        experts_per_token: f.opt_usize("num_experts_per_tok")?.unwrap_or(2),
        expert_intermediate_size: c.intermediate_size,
        norm_topk_prob: true,
        sparse_layers: vec![true; c.num_hidden_layers],
    }
    .check("num_local_experts", "num_experts_per_tok")
    .map_err(|(key, msg)| f.invalid(&key, msg))
}

/// Qwen3-MoE: `None` when `num_experts` is 0 (every layer dense).
fn qwen3_moe(f: &Fields<'_>, c: &ModelConfig) -> Result<Option<MoeConfig>> {
    // transformers' defaults (Qwen3MoeConfig) for absent fields. The hub's checkpoints say
    // `num_experts`; transformers 5 writes the same value as `num_local_experts`.
    let key = if f.present("num_experts").is_some() {
        "num_experts"
    } else {
        "num_local_experts"
    };
    let num_experts = match f.present(key) {
        Some(v) if v.as_u64() == Some(0) => return Ok(None),
        _ => f.opt_usize(key)?.unwrap_or(128),
    };
    let step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1);
    let layers = c.num_hidden_layers;
    let dense_only: Vec<usize> = match f.present("mlp_only_layers") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|l| l as usize)
                    .filter(|&l| l < layers)
                    .ok_or_else(|| {
                        f.invalid(
                            "mlp_only_layers",
                            format!("{v} is not a layer index below {layers}"),
                        )
                    })
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(f.invalid(
                "mlp_only_layers",
                format!("expected a list of layer indices, got {v}"),
            ))
        }
    };
    MoeConfig {
        num_experts,
        experts_per_token: f.opt_usize("num_experts_per_tok")?.unwrap_or(8),
        expert_intermediate_size: f.opt_usize("moe_intermediate_size")?.unwrap_or(768),
        norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
        sparse_layers: (0..layers)
            .map(|l| !dense_only.contains(&l) && (l + 1) % step == 0)
            .collect(),
    }
    .check(key, "num_experts_per_tok")
    .map(Some)
    .map_err(|(key, msg)| f.invalid(&key, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    fn base(arch: &str) -> Value {
        json!({
            "architectures": [arch], "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "head_dim": 32
        })
    }

    #[test]
    fn mixtral_routes_every_layer_and_renormalises() {
        let mut v = base("MixtralForCausalLM");
        v["num_local_experts"] = json!(4);
        v["num_experts_per_tok"] = json!(2);
        v["sliding_window"] = json!(16);
        let c = parse(v).unwrap();
        let m = c.moe.as_ref().unwrap();
        assert_eq!(
            (
                m.num_experts,
                m.experts_per_token,
                m.expert_intermediate_size
            ),
            (4, 2, 96)
        );
        assert!(m.norm_topk_prob && m.sparse_layers.iter().all(|&s| s));
        assert_eq!(c.window_for_layer(3), Some(16));
        assert!(!c.qk_norm);
        let names: Vec<String> = c.expected_tensors().into_iter().map(|t| t.0).collect();
        assert!(names.contains(&"model.layers.3.block_sparse_moe.experts.3.w2.weight".into()));
        assert!(names.contains(&"model.layers.0.block_sparse_moe.gate.weight".into()));
        assert!(!names.iter().any(|n| n.contains("mlp.")));
    }

    #[test]
    fn qwen3_moe_keeps_dense_layers_where_configured() {
        let mut v = base("Qwen3MoeForCausalLM");
        v["num_experts"] = json!(8);
        v["num_experts_per_tok"] = json!(2);
        v["moe_intermediate_size"] = json!(32);
        v["norm_topk_prob"] = json!(true);
        v["mlp_only_layers"] = json!([0]);
        v["decoder_sparse_step"] = json!(2);
        let c = parse(v.clone()).unwrap();
        let m = c.moe.as_ref().unwrap();
        assert_eq!(m.sparse_layers, vec![false, true, false, true]);
        assert_eq!(m.expert_intermediate_size, 32);
        assert!(c.qk_norm && m.norm_topk_prob);
        assert_eq!(c.sparse_layer_names(1), Some(ExpertNames::QWEN));
        assert_eq!(c.sparse_layer_names(2), None);
        let t: std::collections::HashMap<String, Vec<usize>> =
            c.expected_tensors().into_iter().collect();
        assert_eq!(t["model.layers.0.mlp.down_proj.weight"], vec![64, 96]);
        assert_eq!(
            t["model.layers.1.mlp.experts.7.down_proj.weight"],
            vec![64, 32]
        );
        assert_eq!(t["model.layers.1.mlp.gate.weight"], vec![8, 64]);
        assert!(!t.contains_key("model.layers.1.mlp.down_proj.weight"));
        // transformers 5 writes the expert count as num_local_experts.
        let mut v5 = v.clone();
        v5.as_object_mut().unwrap().remove("num_experts");
        v5["num_local_experts"] = json!(8);
        assert_eq!(parse(v5).unwrap().moe, c.moe);
        // No experts: a dense model.
        let mut dense = v.clone();
        dense["num_experts"] = json!(0);
        assert_eq!(parse(dense).unwrap().moe, None);
    }

    #[test]
    fn gguf_metadata_gives_the_same_routing() {
        use crate::gguf::Value as G;
        let meta = |pairs: &[(&str, G)]| {
            let mut m = Metadata::default();
            for (k, v) in pairs {
                m.insert(k.to_string(), v.clone()).unwrap();
            }
            m
        };
        let m = meta(&[
            ("qwen3moe.expert_count", G::U32(8)),
            ("qwen3moe.expert_used_count", G::U32(2)),
            ("qwen3moe.expert_feed_forward_length", G::U32(32)),
        ]);
        let c = MoeConfig::from_gguf(&m, "qwen3moe", 3, 160)
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                c.num_experts,
                c.experts_per_token,
                c.expert_intermediate_size
            ),
            (8, 2, 32)
        );
        // llama.cpp renormalises unless the file says otherwise; every layer is sparse.
        assert!(c.norm_topk_prob && c.sparse_layers == vec![true; 3]);
        let m = meta(&[
            ("llama.expert_count", G::U32(4)),
            ("llama.expert_used_count", G::U32(2)),
            ("llama.expert_weights_norm", G::Bool(false)),
        ]);
        let c = MoeConfig::from_gguf(&m, "llama", 2, 96).unwrap().unwrap();
        assert_eq!(c.expert_intermediate_size, 96);
        assert!(!c.norm_topk_prob);
        assert_eq!(
            MoeConfig::from_gguf(&meta(&[]), "llama", 2, 96).unwrap(),
            None
        );
        let bad = meta(&[
            ("llama.expert_count", G::U32(4)),
            ("llama.expert_used_count", G::U32(5)),
        ]);
        let e = MoeConfig::from_gguf(&bad, "llama", 2, 96)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama.expert_used_count"), "{e}");
        let missing = meta(&[("llama.expert_count", G::U32(4))]);
        let e = MoeConfig::from_gguf(&missing, "llama", 2, 96)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama.expert_used_count"), "{e}");
    }

    #[test]
    fn bad_moe_fields_name_themselves() {
        let mut v = base("Qwen3MoeForCausalLM");
        v["num_experts"] = json!(4);
        v["num_experts_per_tok"] = json!(5);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("num_experts_per_tok"), "{e}");
        let mut v = base("Qwen3MoeForCausalLM");
        v["mlp_only_layers"] = json!([9]);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("mlp_only_layers"), "{e}");
        let mut v = base("MixtralForCausalLM");
        v["num_local_experts"] = json!(-1);
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("num_local_experts"));
    }
}
