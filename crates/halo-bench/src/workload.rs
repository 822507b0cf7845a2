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
    /// How many distinct measured request sets to draw: one per load level and round, so that no
    /// target is ever sent a prompt it has already seen (a server with a prefix cache would
    /// otherwise answer the second level from its cache). Every target gets the same sets in the
    /// same order. 0 counts as 1.
    pub sets: usize,
    /// Send the same set at every level and round (`--reuse-prompts`): for measuring caches.
    pub reuse_prompts: bool,
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
    /// Distinct measured request sets (one per level and round unless prompts are reused).
    pub sets: usize,
    pub reuse_prompts: bool,
    /// sha256 over the canonical form of the measured requests (see [`hash_sets`]).
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Workload {
    /// The first measured set (the only one with `--reuse-prompts`).
    pub requests: Vec<RequestSpec>,
    /// Every measured set; level `l`, round `r` of a run with `R` rounds uses
    /// `set(l * R + r)`.
    pub sets: Vec<Vec<RequestSpec>>,
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
    set: usize,
) -> Vec<RequestSpec> {
    // Set 0 keeps the single-set stream (and so the hash of runs with one set); later sets are
    // decorrelated by mixing their number into the seed.
    let seed = cfg
        .seed
        .wrapping_add((set as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut rng = Rng::for_stream(seed, stream);
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
                    Stream::Workload => &jsonl[(set * count + index) % jsonl.len()],
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

/// The hash of all measured sets: with one set, [`hash_requests`] of it; with several, the sha256
/// of a version line and each set's hash in order.
pub fn hash_sets(sets: &[Vec<RequestSpec>]) -> String {
    if sets.len() == 1 {
        return hash_requests(&sets[0]);
    }
    let mut h = Sha256::new();
    h.update(format!("halo-bench-workload-sets-v1 {}\n", sets.len()).as_bytes());
    for s in sets {
        h.update(hash_requests(s).as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Workload {
    /// The measured set for slot `i` (cycling when fewer sets were drawn).
    pub fn set(&self, i: usize) -> &[RequestSpec] {
        &self.sets[i % self.sets.len()]
    }

    pub fn build(cfg: &WorkloadConfig) -> Result<Workload, BenchError> {
        if cfg.num_requests == 0 {
            return Err(BenchError::Arg("--num-requests must be at least 1".into()));
        }
        let jsonl = match &cfg.source {
            Source::Jsonl { path } => read_jsonl(path)?,
            Source::Synthetic { .. } => Vec::new(),
        };
        let n_sets = if cfg.reuse_prompts {
            1
        } else {
            cfg.sets.max(1)
        };
        let sets: Vec<Vec<RequestSpec>> = (0..n_sets)
            .map(|k| generate(cfg, &jsonl, Stream::Workload, cfg.num_requests, k))
            .collect();
        let requests = sets[0].clone();
        let warmup = generate(cfg, &jsonl, Stream::Warmup, cfg.num_warmup, 0);
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
            sets: n_sets,
            reuse_prompts: cfg.reuse_prompts,
            sha256: hash_sets(&sets),
        };
        Ok(Workload {
            requests,
            sets,
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
            sets: 1,
            reuse_prompts: false,
        }
    }

    #[test]
    fn every_set_is_fresh_unless_prompts_are_reused() {
        let mut cfg = synth(5);
        cfg.sets = 3;
        let w = Workload::build(&cfg).unwrap();
        assert_eq!(w.sets.len(), 3);
        let one = Workload::build(&synth(5)).unwrap();
        // Set 0 is the one-set workload; the others share no prompt with it, with each other or
        // with the warmup.
        assert_eq!(w.set(0)[0].prompt, one.requests[0].prompt);
        let mut seen = std::collections::HashSet::new();
        for r in w.sets.iter().flatten().chain(&w.warmup) {
            assert!(seen.insert(r.prompt.clone()), "repeated prompt");
        }
        assert_ne!(w.summary.sha256, one.summary.sha256);
        assert_eq!(
            w.summary.sha256,
            Workload::build(&cfg).unwrap().summary.sha256
        );
        assert_eq!(w.set(4)[0].prompt, w.set(1)[0].prompt);
        cfg.reuse_prompts = true;
        let r = Workload::build(&cfg).unwrap();
        assert_eq!((r.sets.len(), r.summary.sets), (1, 1));
        assert_eq!(r.set(2)[0].prompt, one.requests[0].prompt);
        assert_eq!(r.summary.sha256, one.summary.sha256);
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
