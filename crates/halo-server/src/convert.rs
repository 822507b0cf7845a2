//! The wire messages and the engine's types, both ways. Inbound, this is the first validation
//! layer: what only the wire can get wrong (a missing prompt, a negative top_k, an over-long
//! request id) and every float checked finite *first*, written positively
//! (`!(x.is_finite() && in range)`) so NaN can never slip through a negated comparison. The
//! engine's admission then checks limits and vocabulary; both run before any state changes.

use halo_engine::{Event, Finish, FinishReason, StopCriteria, Timings, TopToken, Usage};
use halo_hal::SamplingParams;
use halo_proto::worker::v1 as pb;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use thiserror::Error;

/// Longest client request id.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Longest client cache salt, in bytes.
pub const MAX_CACHE_SALT_BYTES: usize = 256;

/// A request the wire layer refuses; always INVALID_ARGUMENT. Never quotes the prompt.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum WireError {
    #[error("request_id has {len} characters, more than the maximum of {max}")]
    RequestIdTooLong { len: usize, max: usize },
    #[error("request_id contains a control character")]
    RequestIdControl,
    #[error("a prompt is required: set text, token_ids or messages")]
    MissingPrompt,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("max_new_tokens must be at least 1")]
    ZeroMaxNewTokens,
    #[error("sampling.{field} is {value}, must be {rule}")]
    BadSampling {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("the prompt text could not be tokenized")]
    Tokenize,
    #[error("cache_salt has {len} bytes, more than the maximum of {max}")]
    CacheSaltTooLong { len: usize, max: usize },
    #[error("cache_salt contains a control character")]
    CacheSaltControl,
}

/// Where the prompt comes from, once the wire checks passed.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
    Chat(pb::ChatMessages),
}

/// An engine request whose prompt may still need tokenizing.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: halo_engine::GenerateRequest,
    pub prompt: PromptInput,
    /// The client's prefix-cache salt (checked; empty when unset), before tenant scoping.
    pub cache_salt: String,
}

/// Checks the wire request and maps it to the engine's request (prompt left empty until
/// [`PromptInput`] is resolved).
pub fn parse_generate(
    req: pb::GenerateRequest,
    request_id: String,
    deadline: Option<Instant>,
) -> Result<Parsed, WireError> {
    let sampling = parse_sampling(req.sampling.as_ref())?;
    let prompt = match req.prompt {
        None => return Err(WireError::MissingPrompt),
        Some(pb::generate_request::Prompt::Text(t)) if t.is_empty() => {
            return Err(WireError::EmptyPrompt)
        }
        Some(pb::generate_request::Prompt::Text(t)) => PromptInput::Text(t),
        Some(pb::generate_request::Prompt::TokenIds(ids)) if ids.ids.is_empty() => {
            return Err(WireError::EmptyPrompt)
        }
        Some(pb::generate_request::Prompt::TokenIds(ids)) => PromptInput::Ids(ids.ids),
        Some(pb::generate_request::Prompt::Messages(chat)) if chat.messages.is_empty() => {
            return Err(WireError::EmptyPrompt)
        }
        Some(pb::generate_request::Prompt::Messages(chat)) => PromptInput::Chat(chat),
    };
    if req.max_new_tokens == 0 {
        return Err(WireError::ZeroMaxNewTokens);
    }
    if req.cache_salt.len() > MAX_CACHE_SALT_BYTES {
        return Err(WireError::CacheSaltTooLong {
            len: req.cache_salt.len(),
            max: MAX_CACHE_SALT_BYTES,
        });
    }
    if req.cache_salt.chars().any(char::is_control) {
        return Err(WireError::CacheSaltControl);
    }
    let stop = req.stop.unwrap_or_default();
    Ok(Parsed {
        request: halo_engine::GenerateRequest {
            request_id,
            prompt: Vec::new(),
            max_new_tokens: req.max_new_tokens as usize,
            sampling,
            stop: StopCriteria {
                stop_sequences: stop.stop_sequences,
                stop_token_ids: stop.stop_token_ids,
                ignore_eos: stop.ignore_eos,
            },
            logprobs: req.logprobs,
            top_n: req.top_n,
            deadline,
        },
        prompt,
        cache_salt: req.cache_salt,
    })
}

/// The salt the engine scopes prefix reuse by: the caller's identity (when the worker
/// authenticates callers) and then the client's own salt. A client's salt can never name
/// another identity's scope: the identity has a fixed form and a NUL, which no salt contains.
pub fn scoped_salt(identity: Option<&str>, client_salt: &str) -> String {
    match identity {
        Some(id) => format!("{id}\0{client_salt}"),
        None => client_salt.to_string(),
    }
}

/// The client's id when it gave a valid one, else a fresh one.
pub fn request_id(given: &str) -> Result<String, WireError> {
    let len = given.chars().count();
    if len > MAX_REQUEST_ID_CHARS {
        return Err(WireError::RequestIdTooLong {
            len,
            max: MAX_REQUEST_ID_CHARS,
        });
    }
    if given.chars().any(char::is_control) {
        return Err(WireError::RequestIdControl);
    }
    if given.is_empty() {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        return Ok(format!("halo-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    }
    Ok(given.to_string())
}

fn parse_sampling(p: Option<&pb::SamplingParams>) -> Result<SamplingParams, WireError> {
    let Some(p) = p else {
        return Ok(SamplingParams {
            seed: random_seed(),
            ..SamplingParams::greedy()
        });
    };
    let bad = |field: &'static str, value: String, rule: &'static str| {
        Err(WireError::BadSampling { field, value, rule })
    };
    let t = p.temperature;
    if !(t.is_finite() && t >= 0.0) {
        return bad("temperature", t.to_string(), "finite and >= 0");
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return bad("top_p", top_p.to_string(), "finite and in (0, 1]");
    }
    let min_p = p.min_p;
    if !(min_p.is_finite() && (0.0..=1.0).contains(&min_p)) {
        return bad("min_p", min_p.to_string(), "finite and in [0, 1]");
    }
    let rep = p.repetition_penalty.unwrap_or(1.0);
    if !(rep.is_finite() && rep > 0.0) {
        return bad("repetition_penalty", rep.to_string(), "finite and > 0");
    }
    for (field, v) in [
        ("frequency_penalty", p.frequency_penalty),
        ("presence_penalty", p.presence_penalty),
    ] {
        if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
            return bad(field, v.to_string(), "finite and in [-2, 2]");
        }
    }
    if p.top_k < 0 {
        return bad("top_k", p.top_k.to_string(), ">= 0");
    }
    Ok(SamplingParams {
        temperature: t,
        top_k: p.top_k as u32,
        top_p,
        min_p,
        repetition_penalty: rep,
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
        seed: p.seed.unwrap_or_else(random_seed),
    })
}

/// A seed for requests that did not fix one: std's per-process random hasher keys mixed with a
/// counter, so no RNG dependency is needed for a non-cryptographic value.
fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

pub fn finish(f: &Finish) -> pb::Finish {
    pb::Finish {
        reason: finish_reason(f.reason) as i32,
        matched_stop: f.matched_stop.clone().unwrap_or_default(),
        usage: Some(usage(&f.usage)),
        timings: Some(timings(&f.timings)),
    }
}

fn finish_reason(r: FinishReason) -> pb::FinishReason {
    match r {
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::Eos => pb::FinishReason::Eos,
        FinishReason::StopSequence => pb::FinishReason::StopSequence,
        FinishReason::StopToken => pb::FinishReason::StopToken,
    }
}

fn usage(u: &Usage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens,
        generated_tokens: u.generated_tokens,
        cached_prompt_tokens: u.cached_prompt_tokens,
    }
}

fn timings(t: &Timings) -> pb::Timings {
    pb::Timings {
        queue_us: t.queue_us,
        ttft_us: t.ttft_us,
        e2e_us: t.e2e_us,
        decode_us: t.decode_us,
        preemptions: t.preemptions,
        itl_us_p50: t.itl_us_p50,
        itl_us_max: t.itl_us_max,
    }
}

pub fn top_tokens(top: &[Vec<TopToken>]) -> Vec<pb::TopTokens> {
    top.iter()
        .map(|alts| pb::TopTokens {
            ids: alts.iter().map(|t| t.token).collect(),
            logprobs: alts.iter().map(|t| t.logprob).collect(),
        })
        .collect()
}

/// One stream message for a token event; `None` for terminal events.
pub fn stream_chunk(e: &Event) -> Option<pb::GenerateStreamResponse> {
    match e {
        Event::Tokens {
            token_ids,
            text,
            logprobs,
            top,
        } => Some(pb::GenerateStreamResponse {
            token_ids: token_ids.clone(),
            text: text.clone(),
            logprobs: logprobs.clone(),
            top_tokens: top_tokens(top),
            finish: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> pb::GenerateRequest {
        pb::GenerateRequest {
            request_id: String::new(),
            prompt: Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds {
                ids: vec![1, 2],
            })),
            max_new_tokens: 4,
            sampling: Some(pb::SamplingParams::default()),
            stop: None,
            logprobs: false,
            top_n: 0,
            cache_salt: String::new(),
        }
    }

    fn with(f: impl FnOnce(&mut pb::SamplingParams)) -> pb::GenerateRequest {
        let mut r = base();
        f(r.sampling.as_mut().unwrap());
        r
    }

    #[test]
    fn cache_salts_are_checked_and_scoped_under_the_identity() {
        let salted = |s: &str| pb::GenerateRequest {
            cache_salt: s.into(),
            ..base()
        };
        let ok = parse_generate(salted("tenant"), "r".into(), None).unwrap();
        assert_eq!(ok.cache_salt, "tenant");
        assert_eq!(
            parse_generate(salted(&"x".repeat(257)), "r".into(), None).unwrap_err(),
            WireError::CacheSaltTooLong { len: 257, max: 256 }
        );
        assert_eq!(
            parse_generate(salted("a\0b"), "r".into(), None).unwrap_err(),
            WireError::CacheSaltControl
        );
        assert_eq!(scoped_salt(None, "s"), "s");
        assert_eq!(scoped_salt(Some("cert:ab"), "s"), "cert:ab\0s");
        // Different identities never share a scope, whatever salts their clients choose.
        assert_ne!(
            scoped_salt(Some("cert:ab"), ""),
            scoped_salt(Some("cert:cd"), "")
        );
        assert_ne!(scoped_salt(Some("cert:ab"), ""), scoped_salt(None, ""));
    }

    #[test]
    fn unset_optional_filters_mean_off() {
        let p = parse_generate(base(), "r".into(), None).unwrap();
        assert_eq!(p.request.sampling.top_p, 1.0);
        assert_eq!(p.request.sampling.repetition_penalty, 1.0);
        assert!(p.request.sampling.is_greedy());
    }

    #[test]
    fn every_float_rejects_nan_and_infinities() {
        type Setter = fn(&mut pb::SamplingParams, f32);
        let setters: [(&str, Setter); 7] = [
            ("temperature", |p, v| p.temperature = v),
            ("top_p", |p, v| p.top_p = Some(v)),
            ("min_p", |p, v| p.min_p = v),
            ("repetition_penalty", |p, v| p.repetition_penalty = Some(v)),
            ("frequency_penalty", |p, v| p.frequency_penalty = v),
            ("presence_penalty", |p, v| p.presence_penalty = v),
            ("temperature", |p, v| p.temperature = -v.abs()),
        ];
        for (name, set) in setters {
            for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let r = with(|p| set(p, v));
                let e = parse_generate(r, "r".into(), None).unwrap_err();
                assert!(
                    matches!(e, WireError::BadSampling { .. }),
                    "{name} {v}: {e}"
                );
            }
        }
    }

    #[test]
    fn ranges() {
        let bad: Vec<pb::GenerateRequest> = vec![
            with(|p| p.temperature = -0.1),
            with(|p| p.top_p = Some(0.0)),
            with(|p| p.top_p = Some(1.01)),
            with(|p| p.top_k = -1),
            with(|p| p.min_p = 1.5),
            with(|p| p.repetition_penalty = Some(0.0)),
            with(|p| p.frequency_penalty = 2.5),
            with(|p| p.presence_penalty = -2.5),
        ];
        for r in bad {
            assert!(parse_generate(r, "r".into(), None).is_err());
        }
        let ok = with(|p| {
            p.temperature = 0.7;
            p.top_p = Some(1.0);
            p.min_p = 1.0;
            p.frequency_penalty = -2.0;
            p.presence_penalty = 2.0;
            p.seed = Some(9);
        });
        let parsed = parse_generate(ok, "r".into(), None).unwrap();
        assert_eq!(parsed.request.sampling.seed, 9);
    }

    #[test]
    fn prompt_and_lengths() {
        let mut none = base();
        none.prompt = None;
        assert_eq!(
            parse_generate(none, "r".into(), None),
            Err(WireError::MissingPrompt)
        );
        let mut empty = base();
        empty.prompt = Some(pb::generate_request::Prompt::Text(String::new()));
        assert_eq!(
            parse_generate(empty, "r".into(), None),
            Err(WireError::EmptyPrompt)
        );
        let mut zero = base();
        zero.max_new_tokens = 0;
        assert_eq!(
            parse_generate(zero, "r".into(), None),
            Err(WireError::ZeroMaxNewTokens)
        );
        assert!(request_id(&"x".repeat(129)).is_err());
        assert!(request_id("a\nb").is_err());
        assert_eq!(request_id("abc").unwrap(), "abc");
        assert!(request_id("").unwrap().starts_with("halo-"));
    }

    #[test]
    fn error_messages_never_quote_the_prompt() {
        let mut r = with(|p| p.temperature = f32::NAN);
        r.prompt = Some(pb::generate_request::Prompt::Text("SECRET PROMPT".into()));
        let e = parse_generate(r, "r".into(), None).unwrap_err();
        assert!(!e.to_string().contains("SECRET"));
    }

    proptest! {
        // Arbitrary sampling values only ever parse or give a typed error, never a panic, and
        // whatever parses is in range.
        #[test]
        fn arbitrary_sampling(t in any::<f32>(), k in any::<i32>(), tp in any::<f32>(),
                              mp in any::<f32>(), rp in any::<f32>(), fp in any::<f32>(),
                              pp in any::<f32>()) {
            let r = with(|p| {
                p.temperature = t; p.top_k = k; p.top_p = Some(tp); p.min_p = mp;
                p.repetition_penalty = Some(rp); p.frequency_penalty = fp; p.presence_penalty = pp;
            });
            if let Ok(parsed) = parse_generate(r, "r".into(), None) {
                let s = parsed.request.sampling;
                prop_assert!(s.temperature.is_finite() && s.temperature >= 0.0);
                prop_assert!(s.top_p > 0.0 && s.top_p <= 1.0);
                prop_assert!((0.0..=1.0).contains(&s.min_p));
                prop_assert!(s.repetition_penalty.is_finite() && s.repetition_penalty > 0.0);
                prop_assert!((-2.0..=2.0).contains(&s.frequency_penalty));
                prop_assert!((-2.0..=2.0).contains(&s.presence_penalty));
            }
        }
    }
}
