//! Qwen3: Llama's block with a per-head RMSNorm on q and k before RoPE, an explicit
//! `head_dim` (not hidden / heads), Llama-style `attention_bias` and Qwen's optional window.

use super::llama::{qwen_window, qwen_window_layers};
use super::{Activation, Fields, ModelConfig};
use crate::error::Result;

pub(super) fn apply(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    c.activation = f.activation("hidden_act", Activation::Silu)?;
    if c.activation != Activation::Silu {
        return Err(f.invalid("hidden_act", "only silu is supported for Qwen3".into()));
    }
    c.qk_norm = true;
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    (c.qkv_bias, c.o_bias) = (attention_bias, attention_bias);
    c.sliding_window = qwen_window(f)?;
    if c.sliding_window.is_some() {
        c.sliding_layers = match f.layer_types(c.num_hidden_layers)? {
            Some(types) => types,
            None => qwen_window_layers(f, c.num_hidden_layers)?,
        };
    }
    Ok(())
}
