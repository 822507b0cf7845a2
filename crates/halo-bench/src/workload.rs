//! Seeded, reproducible workloads: the exact request sequence every target receives, and the
//! sha256 over it that proves two runs sent the same thing.

use crate::dist::LengthDist;
use crate::rng::{Rng, Stream};
use crate::words::WORDS;
use crate::BenchError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Random words from [`WORDS`]; `input` counts words (≈ tokens, see `words.rs`).
    Synthetic { input: LengthDist },
    /// One JSON object per line: `{"prompt": "...", "max_tokens": N}` (`max_tokens` optional;
    /// `output_len` accepted as a synonym). Lines are used in order, cycling when more requests
    /// than lines are asked for.
    Jsonl { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub source: Source,
    /// Output lengths where the source does not fix them.
    pub output: LengthDist,
    pub num_requests: usize,
    pub num_warmup: usize,
    pub seed: u64,
    /// Force every output to its length (`ignore_eos`, and `min_tokens` for OpenAI peers).
    pub ignore_eos: bool,
}

/// One request, as every target receives it. Decoding is greedy (temperature 0) so that targets do
/// identical work.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSpec {
    pub index: usize,
    pub prompt: String,
    /// The intended input length (words for synthetic prompts; absent for JSONL prompts).
    pub nominal_input_len: Option<u32>,
    pub max_tokens: u32,
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSummary {
    pub kind: String,
    pub seed: u64,
    pub num_requests: usize,
    pub num_warmup: usize,
    pub input_len: Option<String>,
    pub output_len: String,
    pub ignore_eos: bool,
    /// sha256 over the canonical form of the measured requests (see [`hash_requests`]).
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub requests: Vec<RequestSpec>,
    pub warmup: Vec<RequestSpec>,
    pub summary: WorkloadSummary,
}

struct JsonlPrompt {
    prompt: String,
    max_tokens: Option<u32>,
}

fn read_jsonl(path: &Path) -> Result<Vec<JsonlPrompt>, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Arg(format!("cannot read workload '{}': {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // Errors name the line, never its content: prompts stay out of messages.
        let bad = |why: &str| {
            BenchError::Arg(format!(
                "workload '{}' line {}: {why}",
                path.display(),
                n + 1
            ))
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|_| bad("not a JSON object"))?;
        let prompt = v
            .get("prompt")
            .and_then(|p| p.as_str())
            .ok_or_else(|| bad("needs a string field \"prompt\""))?;
        if prompt.is_empty() {
            return Err(bad("\"prompt\" is empty"));
        }
        let max_tokens = match v.get("max_tokens").or_else(|| v.get("output_len")) {
            None | Some(serde_json::Value::Null) => None,
            Some(m) => match m.as_u64() {
                Some(m) if (1..=u32::MAX as u64).contains(&m) => Some(m as u32),
                _ => return Err(bad("\"max_tokens\" must be a positive integer")),
            },
        };
        out.push(JsonlPrompt {
            prompt: prompt.to_string(),
            max_tokens,
        });
    }
    if out.is_empty() {
        return Err(BenchError::Arg(format!(
            "workload '{}' has no prompts",
            path.display()
        )));
    }
    Ok(out)
}

fn synthetic_prompt(rng: &mut Rng, words: u32) -> String {
    let mut s = String::with_capacity(words as usize * 6);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

fn generate(
    cfg: &WorkloadConfig,
    jsonl: &[JsonlPrompt],
    stream: Stream,
    count: usize,
) -> Vec<RequestSpec> {
    let mut rng = Rng::for_stream(cfg.seed, stream);
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let (prompt, nominal_input_len, max_tokens) = match &cfg.source {
            Source::Synthetic { input } => {
                let len = input.sample(&mut rng);
                let max_tokens = cfg.output.sample(&mut rng);
                (synthetic_prompt(&mut rng, len), Some(len), max_tokens)
            }
            Source::Jsonl { .. } => {
                // Warmup draws lines at random so it does not pre-warm exactly the measured prefix.
                let line = match stream {
                    Stream::Workload => &jsonl[index % jsonl.len()],
                    _ => &jsonl[rng.below(jsonl.len())],
                };
                let max_tokens = line
                    .max_tokens
                    .unwrap_or_else(|| cfg.output.sample(&mut rng));
                (line.prompt.clone(), None, max_tokens)
            }
        };
        out.push(RequestSpec {
            index,
            prompt,
            nominal_input_len,
            max_tokens,
            ignore_eos: cfg.ignore_eos,
        });
    }
    out
}

/// The canonical byte form that is hashed: a version line, then one compact JSON object per
/// request with the fields every target receives, in order. Sampling is fixed (greedy), so it is
/// named in the version line rather than repeated.
pub fn hash_requests(requests: &[RequestSpec]) -> String {
    #[derive(Serialize)]
    struct Canon<'a> {
        i: usize,
        prompt: &'a str,
        max_tokens: u32,
        ignore_eos: bool,
    }
    let mut h = Sha256::new();
    h.update(b"halo-bench-workload-v1 greedy\n");
    for r in requests {
        let line = serde_json::to_vec(&Canon {
            i: r.index,
            prompt: &r.prompt,
            max_tokens: r.max_tokens,
            ignore_eos: r.ignore_eos,
        })
        .expect("serializing plain fields cannot fail");
        h.update(&line);
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Workload {
    pub fn build(cfg: &WorkloadConfig) -> Result<Workload, BenchError> {
        if cfg.num_requests == 0 {
            return Err(BenchError::Arg("--num-requests must be at least 1".into()));
        }
        let jsonl = match &cfg.source {
            Source::Jsonl { path } => read_jsonl(path)?,
            Source::Synthetic { .. } => Vec::new(),
        };
        let requests = generate(cfg, &jsonl, Stream::Workload, cfg.num_requests);
        let warmup = generate(cfg, &jsonl, Stream::Warmup, cfg.num_warmup);
        let (kind, input_len) = match &cfg.source {
            Source::Synthetic { input } => ("synthetic".to_string(), Some(input.to_string())),
            Source::Jsonl { path } => (format!("jsonl:{}", path.display()), None),
        };
        let summary = WorkloadSummary {
            kind,
            seed: cfg.seed,
            num_requests: cfg.num_requests,
            num_warmup: cfg.num_warmup,
            input_len,
            output_len: cfg.output.to_string(),
            ignore_eos: cfg.ignore_eos,
            sha256: hash_requests(&requests),
        };
        Ok(Workload {
            requests,
            warmup,
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            source: Source::Synthetic {
                input: LengthDist::Uniform { lo: 4, hi: 12 },
            },
            output: LengthDist::Fixed { len: 9 },
            num_requests: 20,
            num_warmup: 3,
            seed,
            ignore_eos: true,
        }
    }

    #[test]
    fn same_seed_same_requests_and_hash() {
        let a = Workload::build(&synth(5)).unwrap();
        let b = Workload::build(&synth(5)).unwrap();
        let c = Workload::build(&synth(6)).unwrap();
        assert_eq!(a.summary.sha256, b.summary.sha256);
        assert_eq!(a.requests[3].prompt, b.requests[3].prompt);
        assert_ne!(a.summary.sha256, c.summary.sha256);
        assert_eq!(a.summary.sha256.len(), 64);
        for r in &a.requests {
            let words = r.prompt.split(' ').count() as u32;
            assert_eq!(Some(words), r.nominal_input_len);
            assert!((4..=12).contains(&words));
            assert_eq!(r.max_tokens, 9);
        }
    }

    #[test]
    fn warmup_count_does_not_change_measured_requests() {
        let a = Workload::build(&synth(5)).unwrap();
        let mut cfg = synth(5);
        cfg.num_warmup = 0;
        let b = Workload::build(&cfg).unwrap();
        assert_eq!(a.summary.sha256, b.summary.sha256);
        assert!(b.warmup.is_empty());
    }

    #[test]
    fn hash_sees_every_field() {
        let a = Workload::build(&synth(5)).unwrap();
        let base = hash_requests(&a.requests);
        let mut r = a.requests.clone();
        r[0].max_tokens += 1;
        assert_ne!(hash_requests(&r), base);
        let mut r = a.requests.clone();
        r[0].ignore_eos = false;
        assert_ne!(hash_requests(&r), base);
        let mut r = a.requests.clone();
        r[19].prompt.push('x');
        assert_ne!(hash_requests(&r), base);
    }

    #[test]
    fn jsonl_source_cycles_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\":\"hello there\",\"max_tokens\":5}\n\n{\"prompt\":\"second\"}\n",
        )
        .unwrap();
        let mut cfg = synth(1);
        cfg.source = Source::Jsonl { path: p.clone() };
        cfg.num_requests = 5;
        let w = Workload::build(&cfg).unwrap();
        let got: Vec<(&str, u32)> = w
            .requests
            .iter()
            .map(|r| (r.prompt.as_str(), r.max_tokens))
            .collect();
        assert_eq!(
            got,
            vec![
                ("hello there", 5),
                ("second", 9),
                ("hello there", 5),
                ("second", 9),
                ("hello there", 5)
            ]
        );
        for bad in [
            "{\"text\":\"secret words\"}",
            "not json",
            "{\"prompt\":\"a\",\"max_tokens\":0}",
            "",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = Workload::build(&cfg).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
