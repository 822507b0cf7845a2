//! Admission checks: everything about a request that can be judged before it changes any state.
//! A request that passes can always run to completion alone in the KV pool, so nothing admitted
//! can wait forever.

use crate::config::Limits;
use crate::error::SubmitError;
use crate::request::GenerateRequest;

/// Checks `req` against the limits and the vocabulary.
pub fn validate_request(
    req: &GenerateRequest,
    limits: &Limits,
    vocab_size: usize,
) -> Result<(), SubmitError> {
    let len = req.prompt.len();
    if len == 0 {
        return Err(SubmitError::EmptyPrompt);
    }
    if len > limits.max_input_tokens {
        return Err(SubmitError::PromptTooLong {
            len,
            max: limits.max_input_tokens,
        });
    }
    if req.max_new_tokens == 0 {
        return Err(SubmitError::ZeroMaxNewTokens);
    }
    if req.max_new_tokens > limits.max_new_tokens {
        return Err(SubmitError::MaxNewTokensTooLarge {
            requested: req.max_new_tokens,
            max: limits.max_new_tokens,
        });
    }
    if len.saturating_add(req.max_new_tokens) > limits.max_total_tokens {
        return Err(SubmitError::TotalTooLong {
            prompt: len,
            max_new: req.max_new_tokens,
            max_total: limits.max_total_tokens,
        });
    }
    if let Some(index) = req.prompt.iter().position(|&t| t as usize >= vocab_size) {
        return Err(SubmitError::TokenOutOfVocab {
            field: "prompt",
            index,
            vocab_size,
        });
    }
    if let Some(index) = req
        .stop
        .stop_token_ids
        .iter()
        .position(|&t| t as usize >= vocab_size)
    {
        return Err(SubmitError::TokenOutOfVocab {
            field: "stop",
            index,
            vocab_size,
        });
    }
    if req.top_n > limits.max_top_n {
        return Err(SubmitError::TopNTooLarge {
            requested: req.top_n,
            max: limits.max_top_n,
        });
    }
    let stops = &req.stop.stop_sequences;
    if stops.len() > limits.max_stop_sequences {
        return Err(SubmitError::TooManyStopSequences {
            count: stops.len(),
            max: limits.max_stop_sequences,
        });
    }
    for (index, s) in stops.iter().enumerate() {
        if s.is_empty() {
            return Err(SubmitError::InvalidStopSequence {
                index,
                reason: "empty",
            });
        }
        if s.len() > limits.max_stop_sequence_bytes {
            return Err(SubmitError::InvalidStopSequence {
                index,
                reason: "too long",
            });
        }
    }
    validate_sampling(&req.sampling)
}

/// Written positively (`is_finite() && in range`) so NaN never slips through.
fn validate_sampling(p: &halo_hal::SamplingParams) -> Result<(), SubmitError> {
    let bad = |field, reason| Err(SubmitError::InvalidSampling { field, reason });
    if !(p.temperature.is_finite() && p.temperature >= 0.0) {
        return bad("temperature", "must be finite and >= 0");
    }
    if !(p.top_p.is_finite() && p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad("top_p", "must be in (0, 1]");
    }
    if !(p.min_p.is_finite() && (0.0..=1.0).contains(&p.min_p)) {
        return bad("min_p", "must be in [0, 1]");
    }
    if !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0) {
        return bad("repetition_penalty", "must be finite and > 0");
    }
    if !(p.frequency_penalty.is_finite() && (-2.0..=2.0).contains(&p.frequency_penalty)) {
        return bad("frequency_penalty", "must be in [-2, 2]");
    }
    if !(p.presence_penalty.is_finite() && (-2.0..=2.0).contains(&p.presence_penalty)) {
        return bad("presence_penalty", "must be in [-2, 2]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;

    fn limits() -> Limits {
        EngineConfig::default().limits(100, 64)
    }

    #[test]
    fn limits_come_from_kv_capacity() {
        let l = limits();
        assert_eq!(l.max_total_tokens, 64);
        assert_eq!(l.max_input_tokens, 63);
    }

    #[test]
    fn each_rule_rejects() {
        let ok = GenerateRequest::greedy(vec![1, 2, 3], 4);
        validate_request(&ok, &limits(), 10).unwrap();
        let cases: Vec<(GenerateRequest, &str)> = vec![
            (GenerateRequest::greedy(vec![], 4), "empty"),
            (GenerateRequest::greedy(vec![1; 64], 1), "input"),
            (GenerateRequest::greedy(vec![1; 60], 5), "total"),
            (GenerateRequest::greedy(vec![1], 0), "zero"),
            (GenerateRequest::greedy(vec![1, 10], 1), "vocab"),
        ];
        for (req, what) in cases {
            assert!(validate_request(&req, &limits(), 10).is_err(), "{what}");
        }
        let mut nan = ok.clone();
        nan.sampling.temperature = f32::NAN;
        assert!(validate_request(&nan, &limits(), 10).is_err());
        let mut top_p = ok.clone();
        top_p.sampling.top_p = f32::NAN;
        assert!(validate_request(&top_p, &limits(), 10).is_err());
        let mut stop = ok.clone();
        stop.stop.stop_sequences = vec![String::new()];
        assert!(validate_request(&stop, &limits(), 10).is_err());
        let mut stop_id = ok;
        stop_id.stop.stop_token_ids = vec![10];
        assert!(validate_request(&stop_id, &limits(), 10).is_err());
    }

    #[test]
    fn total_message_names_both_numbers() {
        let e =
            validate_request(&GenerateRequest::greedy(vec![1; 60], 5), &limits(), 10).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("60") && msg.contains("64"), "{msg}");
        assert!(e.is_invalid_argument());
    }
}
