//! `halo generate`: one prompt, or a file of prompts submitted at once, through the same engine
//! the server uses. Prints the text (or one JSON object per prompt with `--json`) and timings.

use super::{device, usage};
use anyhow::Context;
use clap::Args;
use halo_engine::{
    Completion, Engine, EngineConfig, GenerateRequest, SamplingParams, StopCriteria,
};
use halo_hal::{DType, LoadOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: a directory (config.json, model.safetensors or a sharded index, tokenizer.json),
    /// a .gguf file, or a directory holding one .gguf (or one split -00001-of-N set).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype (f32, f16, bf16); default: the backend's choice.
    #[arg(long)]
    dtype: Option<String>,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompts_file",
        required_unless_present = "prompts_file"
    )]
    prompt: Option<String>,
    /// A file with one prompt per line, all submitted at once (batched).
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A stop sequence (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// A stop token id (repeatable).
    #[arg(long = "stop-token-id")]
    stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Also report each token's logprob.
    #[arg(long)]
    logprobs: bool,
    /// Also report the n most likely alternatives per token.
    #[arg(long, default_value_t = 0)]
    top_n: u32,
    /// Print one JSON object per prompt.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: super::engine_args::EngineArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let prompts = read_prompts(&args)?;
    let kind = device::parse_kind(&args.device)?;
    let dtype = args
        .dtype
        .as_deref()
        .map(str::parse::<DType>)
        .transpose()
        .map_err(usage)?;
    // A bad model path is the user's to fix: one line, exit 2, before any device starts.
    halo_model::open_config_and_tokenizer(&args.model).map_err(usage)?;
    let config = EngineConfig {
        max_concurrent_requests: prompts.len().max(args.engine.max_batch_seqs),
        max_new_tokens_cap: args.max_new_tokens.max(1),
        ..args.engine.config()
    };
    let dev = device::open(kind)?;
    let engine = Engine::start(
        dev,
        &args.model,
        LoadOptions {
            dtype,
            quantize: args.engine.quantize,
        },
        config,
    )
    .map_err(usage)?;

    let tokenizer = engine.tokenizer();
    let mut requests = Vec::with_capacity(prompts.len());
    for (i, text) in prompts.iter().enumerate() {
        let prompt = tokenizer.encode(text, true).map_err(usage)?;
        requests.push(GenerateRequest {
            request_id: format!("cli-{i}"),
            prompt,
            max_new_tokens: args.max_new_tokens,
            sampling: SamplingParams {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                min_p: args.min_p,
                repetition_penalty: args.repetition_penalty,
                frequency_penalty: args.frequency_penalty,
                presence_penalty: args.presence_penalty,
                seed: args.seed,
            },
            stop: StopCriteria {
                stop_sequences: args.stop.clone(),
                stop_token_ids: args.stop_token_ids.clone(),
                ignore_eos: args.ignore_eos,
            },
            logprobs: args.logprobs,
            top_n: args.top_n,
            deadline: None,
        });
    }
    let started = Instant::now();
    let results = engine.run_blocking(requests);
    let wall = started.elapsed();

    let mut generated = 0usize;
    for (i, result) in results.into_iter().enumerate() {
        // A rejected request is the user's input problem: exit 2 with the engine's reason.
        let done = result.map_err(|e| match e {
            halo_engine::RunError::Rejected(r) => usage(format!("prompt {}: {r}", i + 1)),
            other => anyhow::Error::new(other).context(format!("prompt {}", i + 1)),
        })?;
        generated += done.token_ids.len();
        print_completion(&args, &done)?;
    }
    engine.shutdown();
    if args.prompts_file.is_some() {
        let secs = wall.as_secs_f64();
        let summary = json!({
            "prompts": prompts.len(),
            "generated_tokens": generated,
            "wall_s": secs,
            "generated_tokens_per_s": generated as f64 / secs.max(1e-9),
        });
        if args.json {
            println!("{}", json!({ "summary": summary }));
        } else {
            eprintln!(
                "{} prompts, {} tokens in {:.3} s: {:.1} tokens/s",
                prompts.len(),
                generated,
                secs,
                generated as f64 / secs.max(1e-9)
            );
        }
    }
    Ok(())
}

fn read_prompts(args: &GenerateArgs) -> anyhow::Result<Vec<String>> {
    if let Some(p) = &args.prompt {
        if p.is_empty() {
            return Err(usage("--prompt is empty"));
        }
        return Ok(vec![p.clone()]);
    }
    let path = args
        .prompts_file
        .as_ref()
        .expect("clap requires one of them");
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(usage)?;
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if prompts.is_empty() {
        return Err(usage(format!(
            "{}: no prompts (one per line)",
            path.display()
        )));
    }
    Ok(prompts)
}

fn print_completion(args: &GenerateArgs, c: &Completion) -> anyhow::Result<()> {
    if !args.json {
        println!("{}", c.text);
        return Ok(());
    }
    let t = &c.finish.timings;
    let mut obj = json!({
        "token_ids": c.token_ids,
        "text": c.text,
        "finish_reason": c.finish.reason.as_str(),
        "matched_stop": c.finish.matched_stop,
        "prompt_tokens": c.finish.usage.prompt_tokens,
        "generated_tokens": c.finish.usage.generated_tokens,
        "cached_prompt_tokens": c.finish.usage.cached_prompt_tokens,
        "timings": {
            "queue_us": t.queue_us,
            "ttft_us": t.ttft_us,
            "e2e_us": t.e2e_us,
            "decode_us": t.decode_us,
            "preemptions": t.preemptions,
            "itl_us_p50": t.itl_us_p50,
            "itl_us_max": t.itl_us_max,
            "decode_tokens_per_s": if t.decode_us > 0 && c.token_ids.len() > 1 {
                (c.token_ids.len() - 1) as f64 / (t.decode_us as f64 / 1e6)
            } else { 0.0 },
        },
    });
    if args.logprobs {
        obj["logprobs"] = json!(c.logprobs);
    }
    if args.top_n > 0 {
        obj["top_tokens"] = json!(c
            .top
            .iter()
            .map(|alts| alts
                .iter()
                .map(|t| json!({"id": t.token, "logprob": t.logprob}))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>());
    }
    println!("{obj}");
    Ok(())
}
