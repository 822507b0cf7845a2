//! `halo info`: what the device is and, with `--model`, what the model is, as text or JSON.

use super::{device, usage};
use clap::Args;
use halo_hal::LoadOptions;
use halo_model::StoredDType;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model to describe (a directory or a .gguf), loaded on the device.
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

/// Bytes of stored weights per type, largest first: what the file holds (a Q4_K_M GGUF is
/// mostly Q4_K with some Q6_K; a safetensors checkpoint is one float type).
fn stored_types(model: &Path) -> anyhow::Result<Vec<(StoredDType, u64)>> {
    let m = halo_model::Model::open(model).map_err(usage)?;
    Ok(m.weights
        .bytes_by_dtype()
        .into_iter()
        .map(|(d, b)| (d, b as u64))
        .collect())
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let kind = device::parse_kind(&args.device)?;
    let (dev_info, model_info, types) = match &args.model {
        None => (device::probe(kind)?, None, Vec::new()),
        Some(path) => {
            let types = stored_types(path)?;
            let mut dev = device::open(kind)?;
            let model = dev.load(path, &LoadOptions::default()).map_err(usage)?;
            (dev.info(), Some(model), types)
        }
    };
    if args.json {
        let types: serde_json::Map<String, serde_json::Value> = types
            .iter()
            .map(|(d, b)| (d.name().to_string(), json!(b)))
            .collect();
        println!(
            "{}",
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "device": dev_info,
                "model": model_info,
                "stored_bytes_by_type": types,
            })
        );
        return Ok(());
    }
    println!("halo {}", env!("CARGO_PKG_VERSION"));
    println!("device: {} ({})", dev_info.kind, dev_info.name);
    println!(
        "  memory: {:.1} GiB",
        dev_info.memory_bytes as f64 / (1u64 << 30) as f64
    );
    if dev_info.peak_bandwidth_bytes_per_s > 0.0 {
        println!(
            "  peak bandwidth: {:.0} GB/s",
            dev_info.peak_bandwidth_bytes_per_s / 1e9
        );
    }
    if let Some(m) = model_info {
        println!("model: {} ({}, {})", m.name, m.architecture, m.dtype);
        println!(
            "  {} layers, hidden {}, {} KV heads x {}, vocab {}, context {}",
            m.num_layers, m.hidden_size, m.num_kv_heads, m.head_dim, m.vocab_size, m.context_length
        );
        let total: u64 = types.iter().map(|(_, b)| b).sum();
        let mix: Vec<String> = types
            .iter()
            .map(|(d, b)| format!("{d} {:.1} MB", *b as f64 / 1e6))
            .collect();
        println!(
            "  {:.1} M parameters; stored {:.1} MB ({})",
            m.param_count as f64 / 1e6,
            total as f64 / 1e6,
            mix.join(", ")
        );
        println!(
            "  {:.1} MB of weights read per step (embedding rows aside)",
            m.weight_bytes as f64 / 1e6
        );
    }
    Ok(())
}
