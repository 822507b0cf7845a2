//! Llama, Mistral and Qwen2: SwiGLU, pre-norms only; they differ in biases and windows.

use super::{Activation, Architecture, Fields, ModelConfig};
use crate::error::Result;

pub(super) fn apply(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    c.activation = f.activation("hidden_act", Activation::Silu)?;
    if c.activation != Activation::Silu {
        return Err(f.invalid(
            "hidden_act",
            "only silu is supported for this family".into(),
        ));
    }
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    (c.qkv_bias, c.o_bias) = match c.architecture {
        Architecture::Qwen2 => (true, false),
        _ => (attention_bias, attention_bias),
    };
    c.sliding_window = match c.architecture {
        Architecture::Mistral => f.opt_usize("sliding_window")?,
        Architecture::Qwen2 => qwen_window(f)?,
        _ => None,
    };
    if c.sliding_window.is_some() {
        c.sliding_layers = match f.layer_types(c.num_hidden_layers)? {
            Some(types) => types,
            None if c.architecture == Architecture::Qwen2 => {
                qwen_window_layers(f, c.num_hidden_layers)?
            }
            None => vec![true; c.num_hidden_layers],
        };
    }
    Ok(())
}

/// Qwen's window applies only when `use_sliding_window` says so.
pub(super) fn qwen_window(f: &Fields<'_>) -> Result<Option<usize>> {
    if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
        f.opt_usize("sliding_window")
    } else {
        Ok(None)
    }
}

/// Qwen uses full attention below `max_window_layers` and the window from there on.
pub(super) fn qwen_window_layers(f: &Fields<'_>, layers: usize) -> Result<Vec<bool>> {
    let first = f.opt_usize("max_window_layers")?.unwrap_or(0);
    Ok((0..layers).map(|l| l >= first).collect())
}
