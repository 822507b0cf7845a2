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
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: a directory (config.json, model.safetensors or a sharded index, tokenizer.json),
    /// a .gguf file, or a directory holding one .gguf (or one split -00001-of-N set).
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The type float weights are stored in on the device: f32, f16 or bf16 (default: as in the
    /// file). The CPU backend keeps them in that type and computes activations in f32; not with
    /// --quantize.
    #[arg(long, value_name = "TYPE")]
    dtype: Option<String>,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompts_file",
        required_unless_present = "prompts_file"
    )]
    prompt: Option<String>,
    /// A file with one prompt per line (`-`: standard input), all submitted at once (batched).
    #[arg(long, value_name = "FILE")]
    prompts_file: Option<PathBuf>,
    /// Most tokens to generate per prompt (at least 1).
    #[arg(long, value_name = "N", default_value_t = 64, allow_negative_numbers = true,
          value_parser = parse_max_new_tokens)]
    max_new_tokens: usize,
    /// Sampling temperature, >= 0; 0 = greedy.
    #[arg(long, value_name = "T", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_temperature)]
    temperature: f32,
    /// Sample only from the K most likely tokens; 0 = off.
    #[arg(long, value_name = "K", default_value_t = 0, allow_negative_numbers = true,
          value_parser = parse_count::<u32>)]
    top_k: u32,
    /// Nucleus sampling: the smallest set of tokens whose probabilities sum to P, in (0, 1].
    #[arg(long, value_name = "P", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = parse_top_p)]
    top_p: f32,
    /// Drop tokens less likely than M times the most likely one, in [0, 1]; 0 = off.
    #[arg(long, value_name = "M", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_min_p)]
    min_p: f32,
    /// Divides the logits of tokens already seen (prompt and output), > 0; 1 = off.
    #[arg(long, value_name = "R", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = parse_repetition_penalty)]
    repetition_penalty: f32,
    /// Subtracts F times a token's count in the output from its logit, in [-2, 2]; 0 = off.
    #[arg(long, value_name = "F", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_penalty)]
    frequency_penalty: f32,
    /// Subtracts P from the logit of every token already in the output, in [-2, 2]; 0 = off.
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_penalty)]
    presence_penalty: f32,
    /// Sampling seed: the same seed and prompt give the same tokens.
    #[arg(long, value_name = "S", default_value_t = 0, allow_negative_numbers = true,
          value_parser = parse_count::<u64>)]
    seed: u64,
    /// A stop sequence (repeatable).
    #[arg(long = "stop", value_name = "STR")]
    stop: Vec<String>,
    /// A stop token id (repeatable).
    #[arg(long = "stop-token-id", value_name = "ID")]
    stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Also report each generated token's logprob (in the --json output).
    #[arg(long)]
    logprobs: bool,
    /// Also report the N most likely alternatives per token (in the --json output).
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = parse_count::<u32>)]
    top_n: u32,
    /// Print one JSON object per prompt (and, with --prompts-file, a summary).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: super::engine_args::EngineArgs,
}

/// A whole number >= 0; a negative one is refused with that reason rather than as a bad flag.
fn parse_count<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    if let Some(rest) = s.strip_prefix('-') {
        if rest.parse::<f64>().is_ok() {
            return Err("must not be negative".into());
        }
    }
    s.parse::<T>()
        .map_err(|_| "expected a whole number".to_string())
}

fn parse_max_new_tokens(s: &str) -> Result<usize, String> {
    let n: usize = parse_count(s).map_err(|e| {
        if e.starts_with("must") {
            "max_new_tokens must be at least 1".to_string()
        } else {
            e
        }
    })?;
    if n == 0 {
        return Err("max_new_tokens must be at least 1".into());
    }
    Ok(n)
}

/// A finite number accepted by `ok`, else `why`.
fn parse_float(s: &str, ok: impl Fn(f32) -> bool, why: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| "expected a number".to_string())?;
    if v.is_finite() && ok(v) {
        Ok(v)
    } else {
        Err(why.to_string())
    }
}

fn parse_temperature(s: &str) -> Result<f32, String> {
    parse_float(s, |v| v >= 0.0, "temperature must be >= 0 (0 = greedy)")
}

fn parse_top_p(s: &str) -> Result<f32, String> {
    parse_float(s, |v| v > 0.0 && v <= 1.0, "top_p must be in (0, 1]")
}

fn parse_min_p(s: &str) -> Result<f32, String> {
    parse_float(s, |v| (0.0..=1.0).contains(&v), "min_p must be in [0, 1]")
}

fn parse_repetition_penalty(s: &str) -> Result<f32, String> {
    parse_float(s, |v| v > 0.0, "repetition_penalty must be > 0 (1 = off)")
}

fn parse_penalty(s: &str) -> Result<f32, String> {
    parse_float(s, |v| (-2.0..=2.0).contains(&v), "must be in [-2, 2]")
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if !args.json && (args.logprobs || args.top_n > 0) {
        let flag = if args.logprobs {
            "--logprobs"
        } else {
            "--top-n"
        };
        return Err(usage(format!(
            "{flag} is reported only in the --json output: add --json"
        )));
    }
    let prompts = read_prompts(&args)?;
    let kind = device::parse_kind(&args.device)?;
    let dtype = args
        .dtype
        .as_deref()
        .map(str::parse::<DType>)
        .transpose()
        .map_err(usage)?;
    // A bad model path is the user's to fix: one line, exit 2, before any device starts.
    // Tokenized here to size the job; the tokenizer (tens of MB for a large vocabulary) is
    // dropped before the engine loads its own.
    let prompt_ids = {
        let (_, tokenizer) = halo_model::open_config_and_tokenizer(&args.model).map_err(usage)?;
        prompts
            .iter()
            .map(|text| tokenizer.encode(text, true).map_err(usage))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let config = job_config(&args, &prompt_ids);
    let dev = super::progress::WithProgress::wrap(device::open(kind)?);
    let engine = Engine::start(
        dev,
        &args.model,
        LoadOptions {
            dtype,
            quantize: args.engine.quantize,
            kv_cache_dtype: args.engine.kv_cache_dtype,
            activation_dtype: args.engine.activation_dtype,
        },
        config,
    )
    .map_err(usage)?;

    let mut requests = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompt_ids.into_iter().enumerate() {
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
        if !args.json && args.prompts_file.is_some() {
            // Several completions in text: each under its own header, so where one ends is
            // never a guess (a completion may hold blank lines).
            println!("--- prompt {} ---", i + 1);
        }
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

/// The engine for one known job. Unless `--num-blocks` or `--kv-cache-mb` say otherwise, the
/// pool holds the sequences that can run at once at the longest prompt plus `--max-new-tokens`
/// (the device caps a pool by sequences × longest sequence), not the model's whole context,
/// and is made resident at start, as llama.cpp clears its KV buffer before it times anything:
/// the decode steps then pay no page faults for blocks the job reaches first. No request is
/// limited by this that the model's context would have allowed.
fn job_config(args: &GenerateArgs, prompts: &[Vec<u32>]) -> EngineConfig {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let longest_job = longest
        .saturating_add(args.max_new_tokens.max(1))
        .min(halo_engine::config::MAX_SEQUENCE_TOKENS);
    EngineConfig {
        max_concurrent_requests: prompts.len().max(args.engine.max_batch_seqs),
        max_batch_seqs: args.engine.max_batch_seqs.min(prompts.len().max(1)),
        max_new_tokens_cap: args.max_new_tokens.max(1),
        max_total_tokens: Some(longest_job),
        resident_kv_pool: true,
        ..args.engine.config()
    }
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
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading prompts from standard input")
            .map_err(usage)?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --prompts-file {}", path.display()))
            .map_err(usage)?
    };
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if prompts.is_empty() {
        let name = if path.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        return Err(usage(format!("{name}: no prompts (one per line)")));
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
