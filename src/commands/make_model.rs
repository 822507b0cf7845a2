//! `halo make-model`: writes a random-weight model in the hub's format (see
//! `halo_model::synth`) so benchmarks and smoke tests can run real shapes with no download.

use anyhow::Context;
use halo_model::synth::{self, SynthDType, SynthError};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct MakeModelArgs {
    /// Model shapes to write: tiny, bench-110m (stories110M), llama-1b (Llama-3.2-1B).
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
}

pub fn run(args: MakeModelArgs) -> anyhow::Result<()> {
    let preset = synth::preset_by_name(&args.preset).map_err(super::usage)?;
    let dtype = match args.dtype.as_deref() {
        Some(s) => s.parse::<SynthDType>().map_err(super::usage)?,
        None => preset.default_dtype,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(preset: &str, out: PathBuf, dtype: Option<&str>) -> MakeModelArgs {
        MakeModelArgs {
            preset: preset.into(),
            out,
            seed: 5,
            dtype: dtype.map(str::to_owned),
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
}
