//! `halo info`: what the device is and, with `--model`, what the model is, as text or JSON.

use super::{device, usage};
use clap::Args;
use halo_hal::LoadOptions;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model directory to describe (loaded on the device).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let kind = device::parse_kind(&args.device)?;
    let (dev_info, model_info) = match &args.model {
        None => (device::probe(kind)?, None),
        Some(dir) => {
            let mut dev = device::open(kind)?;
            let model = dev.load(dir, &LoadOptions::default()).map_err(usage)?;
            (dev.info(), Some(model))
        }
    };
    if args.json {
        println!(
            "{}",
            json!({ "version": env!("CARGO_PKG_VERSION"), "device": dev_info, "model": model_info })
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
        println!(
            "  {:.1} M parameters, {:.1} MB of weights",
            m.param_count as f64 / 1e6,
            m.weight_bytes as f64 / 1e6
        );
    }
    Ok(())
}
