//! `halo make-model`: writes a random-weight model in the hub's format (see
//! `halo_model::synth`) so benchmarks and smoke tests can run real shapes with no download.

use anyhow::Context;
use halo_model::gguf::export::{export, Quantization};
use halo_model::synth::{self, SynthDType, SynthError};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct MakeModelArgs {
    /// Model shapes to write: tiny, bench-110m (stories110M), llama-1b (Llama-3.2-1B),
    /// bench-moe / bench-qwen3moe (Mixtral / Qwen3-MoE: 16 experts of 512, top-2, at
    /// bench-110m's width), bench-phi3, bench-qwen3, bench-gemma2, bench-gemma3 (those families'
    /// blocks at bench-110m's width).
    #[arg(long)]
    pub preset: String,
    /// Directory to write (created if missing; existing model files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed for the weights; the same preset, seed and dtype always give the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage dtype: f32, f16 or bf16 (default: the preset's, bf16 for llama-1b, else f32).
    #[arg(long)]
    pub dtype: Option<String>,
    /// safetensors (a hub directory) or gguf (one `<preset>-<quant>.gguf` file in --out, written
    /// as llama.cpp's converter and llama-quantize would, so llama.cpp can run it too).
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    /// GGUF weight types: f32, f16, q8_0, q4_k_m or q6_k (with --format gguf).
    #[arg(long, default_value = "q8_0")]
    pub quant: String,
}

pub fn run(args: MakeModelArgs) -> anyhow::Result<()> {
    let preset = synth::preset_by_name(&args.preset).map_err(super::usage)?;
    let dtype = match args.dtype.as_deref() {
        Some(s) => s.parse::<SynthDType>().map_err(super::usage)?,
        None => preset.default_dtype,
    };
    match args.format.as_str() {
        "safetensors" => {}
        "gguf" => {
            let quant = args.quant.parse::<Quantization>().map_err(super::usage)?;
            return write_gguf(&args, preset, dtype, quant);
        }
        other => {
            return Err(super::usage(format!(
                "unknown --format '{other}' (choose safetensors or gguf)"
            )))
        }
    }
    let started = Instant::now();
    let summary = synth::write_model(preset, &args.out, args.seed, dtype).map_err(|e| match e {
        e @ SynthError::DirNotWritable { .. } => super::usage(e),
        e => anyhow::Error::new(e),
    });
    let summary = summary.with_context(|| format!("writing the {} model", preset.name))?;
    println!(
        "wrote {} ({} parameters, {}, {:.1} MB of weights) to {} in {:.1}s",
        preset.name,
        summary.params,
        summary.dtype.hf_name(),
        summary.weight_bytes as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes the preset's hub directory to a scratch folder inside `--out`, then exports it.
fn write_gguf(
    args: &MakeModelArgs,
    preset: &synth::Preset,
    dtype: SynthDType,
    quant: Quantization,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let scratch = args.out.join(".halo-make-model");
    let made = synth::write_model(preset, &scratch, args.seed, dtype).map_err(|e| match e {
        e @ SynthError::DirNotWritable { .. } => super::usage(e),
        e => anyhow::Error::new(e),
    });
    let exported = made.and_then(|_| {
        let model = halo_model::Model::open(&scratch)?;
        let file = args.out.join(format!(
            "{}-{}.gguf",
            preset.name,
            args.quant.to_ascii_uppercase()
        ));
        let summary = export(&model, quant, &file)?;
        Ok((file, summary))
    });
    // The scratch copy goes whatever happened.
    let _ = std::fs::remove_dir_all(&scratch);
    let (file, summary) = exported.with_context(|| format!("writing the {} GGUF", preset.name))?;
    println!(
        "wrote {} ({} tensors, {:.1} MB) in {:.1}s",
        file.display(),
        summary.tensors,
        summary.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(preset: &str, out: PathBuf, dtype: Option<&str>) -> MakeModelArgs {
        MakeModelArgs {
            preset: preset.into(),
            out,
            seed: 5,
            dtype: dtype.map(str::to_owned),
            format: "safetensors".into(),
            quant: "q8_0".into(),
        }
    }

    #[test]
    fn bad_requests_exit_2_and_name_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(args("gpt-5", dir.path().join("m"), None)).unwrap_err();
        assert_eq!(super::super::exit_code(&e), 2);
        assert!(e.to_string().contains("tiny, bench-110m, llama-1b"), "{e}");

        let e = run(args("tiny", dir.path().join("m"), Some("int4"))).unwrap_err();
        assert_eq!(super::super::exit_code(&e), 2);

        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = run(args("tiny", file.join("m"), None)).unwrap_err();
        assert_eq!(super::super::exit_code(&e), 2, "{e}");
    }

    #[test]
    fn writes_a_loadable_model() {
        let dir = tempfile::tempdir().unwrap();
        run(args("tiny", dir.path().to_path_buf(), Some("bf16"))).unwrap();
        let model = halo_model::Model::open(dir.path()).unwrap();
        model.check_tensors().unwrap();
        assert_eq!(model.config.torch_dtype.as_deref(), Some("bfloat16"));
    }

    #[test]
    fn gguf_export_loads_with_the_same_config_and_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args("tiny", dir.path().join("st"), None);
        run(MakeModelArgs { seed: 5, ..a }).unwrap();
        let original = halo_model::Model::open(&dir.path().join("st")).unwrap();
        for quant in ["f32", "q8_0", "q4_k_m"] {
            a = args("tiny", dir.path().join(quant), None);
            a.format = "gguf".into();
            a.quant = quant.into();
            run(a).unwrap();
            let gguf = halo_model::Model::open(&dir.path().join(quant)).unwrap();
            gguf.check_tensors().unwrap();
            assert_eq!(gguf.config.hidden_size, original.config.hidden_size);
            assert_eq!(gguf.config.rope, original.config.rope);
            let text = "The license grants you the freedom to share";
            assert_eq!(
                gguf.tokenizer.encode(text, true).unwrap(),
                original.tokenizer.encode(text, true).unwrap(),
                "{quant}"
            );
            if quant == "f32" {
                // Exact weights: q_proj comes back un-permuted, bit for bit.
                let name = "model.layers.0.self_attn.q_proj.weight";
                let shape = [original.config.hidden_size; 2];
                let shape = [
                    original.config.num_attention_heads * original.config.head_dim,
                    shape[1],
                ];
                assert_eq!(
                    gguf.weights.load_f32(name, &shape).unwrap(),
                    original.weights.load_f32(name, &shape).unwrap()
                );
            }
        }
        let mut bad = args("tiny", dir.path().join("bad"), None);
        bad.format = "gguf".into();
        bad.quant = "q3_k".into();
        let e = run(bad).unwrap_err();
        assert_eq!(super::super::exit_code(&e), 2);
    }
}
