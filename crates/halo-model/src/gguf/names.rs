//! llama.cpp's tensor names mapped to the Hugging Face names the rest of halo reads.

/// Per-layer tensors: GGUF suffix after `blk.N.` → HF suffix after `model.layers.N.`.
const LAYER: [(&str, &str); 11] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const GLOBAL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Gemma's norms around attention and MLP (`sandwich_norms`): there `ffn_norm` is the MLP's
/// input norm, which HF calls `pre_feedforward_layernorm` (Llama's `post_attention_layernorm`
/// is then the attention's output norm, `post_attention_norm` in GGUF).
const SANDWICH: [(&str, &str); 3] = [
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// Phi-3's fused projections (`fused_projections`): llama.cpp's `attn_qkv` is HF's `qkv_proj`,
/// and its `ffn_up` holds gate then up, HF's `gate_up_proj`.
const FUSED: [(&str, &str); 2] = [
    ("attn_qkv", "self_attn.qkv_proj"),
    ("ffn_up", "mlp.gate_up_proj"),
];

/// The HF name of a fused projection of a `fused_projections` model, `None` for other tensors.
pub fn hf_name_fused(gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    let (layer, part) = stem.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = FUSED.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of a fused projection (the inverse of [`hf_name_fused`]).
pub fn gguf_name_fused(hf: &str) -> Option<String> {
    let (stem, kind) = hf.rsplit_once('.')?;
    let (layer, part) = stem.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, _) = FUSED.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// The layer table to search first: Gemma's norm names, then the common ones.
fn layer_table(
    sandwich_norms: bool,
) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let first: &[(&str, &str)] = if sandwich_norms { &SANDWICH } else { &[] };
    first.iter().chain(LAYER.iter())
}

/// The HF name of a GGUF tensor, or `None` for tensors halo has no HF name for (such as
/// `rope_freqs.weight`, which becomes part of the config instead).
pub fn hf_name(gguf: &str) -> Option<String> {
    hf_name_for(gguf, false)
}

/// [`hf_name`] for a model whose config has `sandwich_norms` as given.
pub fn hf_name_for(gguf: &str, sandwich_norms: bool) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, hf) = layer_table(sandwich_norms).find(|(g, _)| *g == part)?;
        return Some(format!("model.layers.{layer}.{hf}.{kind}"));
    }
    let (_, hf) = GLOBAL.iter().find(|(g, _)| *g == stem)?;
    Some(format!("{hf}.{kind}"))
}

/// The GGUF name of an HF tensor (the inverse of [`hf_name`]), for writers and messages.
pub fn gguf_name(hf: &str) -> Option<String> {
    gguf_name_for(hf, false)
}

/// [`gguf_name`] for a model whose config has `sandwich_norms` as given.
pub fn gguf_name_for(hf: &str, sandwich_norms: bool) -> Option<String> {
    let (stem, kind) = hf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    if let Some(rest) = stem.strip_prefix("model.layers.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (g, _) = layer_table(sandwich_norms).find(|(_, h)| *h == part)?;
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    let (g, _) = GLOBAL.iter().find(|(_, h)| *h == stem)?;
    Some(format!("{g}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_projections_map_both_ways() {
        for (g, h) in [
            (
                "blk.1.attn_qkv.weight",
                "model.layers.1.self_attn.qkv_proj.weight",
            ),
            (
                "blk.0.ffn_up.weight",
                "model.layers.0.mlp.gate_up_proj.weight",
            ),
        ] {
            assert_eq!(hf_name_fused(g).as_deref(), Some(h));
            assert_eq!(gguf_name_fused(h).as_deref(), Some(g));
        }
        assert_eq!(hf_name_fused("blk.0.ffn_down.weight"), None);
        assert_eq!(hf_name_fused("output.weight"), None);
    }

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            (
                "blk.11.ffn_norm.weight",
                "model.layers.11.post_attention_layernorm.weight",
            ),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.2.ffn_down.weight",
                "model.layers.2.mlp.down_proj.weight",
            ),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.0.post_ffw_norm.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_q.scale"), None);
    }

    #[test]
    fn gemma_norms_map_both_ways() {
        for (g, h) in [
            (
                "blk.1.post_attention_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.pre_feedforward_layernorm.weight",
            ),
            (
                "blk.1.post_ffw_norm.weight",
                "model.layers.1.post_feedforward_layernorm.weight",
            ),
            (
                "blk.1.attn_q_norm.weight",
                "model.layers.1.self_attn.q_norm.weight",
            ),
            (
                "blk.1.attn_q.weight",
                "model.layers.1.self_attn.q_proj.weight",
            ),
        ] {
            assert_eq!(hf_name_for(g, true).as_deref(), Some(h));
            assert_eq!(gguf_name_for(h, true).as_deref(), Some(g));
        }
    }
}
