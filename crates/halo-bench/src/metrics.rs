//! Metric definitions (docs/bench.md states them in words; the tests below check them on
//! hand-computed timelines).
//!
//! Per request, from its chunks `(t_i, k_i)` (arrival after send, tokens carried), its end `E`
//! and its token count `N` (usage when reported, else Σk_i):
//! - TTFT = t_1 (the first chunk that carries a token).
//! - ITL: one gap per token after the first. The first chunk's extra tokens contribute k_1 − 1
//!   zero gaps; every later chunk contributes t_i − t_{i−1} once and k_i − 1 zeros. So a request
//!   has exactly Σk_i − 1 gaps and they sum to t_m − t_1.
//! - TPOT = (E − TTFT) / (N − 1), defined only when N ≥ 2.
//! - E2E = E.
//!
//! Aggregates: TTFT, TPOT and E2E over successful requests; ITL over the pooled gaps of all
//! successful requests. Percentiles interpolate linearly between order statistics (numpy's
//! default). The window is from the first send to the last end of any request in the level
//! (failures occupy the target too), and every throughput divides by it.

use crate::record::{Chunk, RequestRecord};
use serde::Serialize;
use std::collections::BTreeMap;

pub fn ttft(chunks: &[Chunk]) -> Option<f64> {
    chunks.first().map(|c| c.t)
}

pub fn itl_gaps(chunks: &[Chunk]) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut prev: Option<f64> = None;
    for c in chunks {
        if let Some(p) = prev {
            gaps.push(c.t - p);
        }
        gaps.extend(std::iter::repeat_n(
            0.0,
            c.tokens.saturating_sub(1) as usize,
        ));
        prev = Some(c.t);
    }
    gaps
}

pub fn tpot(ttft: f64, e2e: f64, tokens: u32) -> Option<f64> {
    (tokens >= 2).then(|| (e2e - ttft) / (tokens - 1) as f64)
}

/// Linear interpolation between the closest ranks; `sorted` ascending, `p` in [0, 100].
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Distribution summary, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// From values in seconds; `None` when there are none.
    pub fn from_secs(values: &[f64]) -> Option<Stats> {
        Stats::from_ms(&values.iter().map(|v| v * 1e3).collect::<Vec<_>>())
    }

    pub fn from_ms(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stats {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: percentile(&v, 50.0)?,
            p90: percentile(&v, 90.0)?,
            p99: percentile(&v, 99.0)?,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// A service-level objective: a request is "good" when it succeeded and meets every bound given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2e_ms.is_none()
    }

    /// `ttft_ms=500,tpot_ms=50,e2e_ms=10000` (any subset).
    pub fn parse(s: &str) -> Result<Slo, crate::BenchError> {
        let mut slo = Slo::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                crate::BenchError::Arg(format!(
                    "bad --slo item '{item}' (ttft_ms=, tpot_ms=, e2e_ms=)"
                ))
            };
            let (k, v) = item.split_once('=').ok_or_else(bad)?;
            let v: f64 = v.trim().parse().map_err(|_| bad())?;
            if !v.is_finite() || v <= 0.0 {
                return Err(bad());
            }
            match k.trim() {
                "ttft_ms" => slo.ttft_ms = Some(v),
                "tpot_ms" => slo.tpot_ms = Some(v),
                "e2e_ms" => slo.e2e_ms = Some(v),
                _ => return Err(bad()),
            }
        }
        if slo.is_empty() {
            return Err(crate::BenchError::Arg("--slo names no bound".into()));
        }
        Ok(slo)
    }

    /// TPOT is vacuous for one-token outputs (it is undefined there).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let Some(t) = ttft(&r.chunks) else {
            return false;
        };
        let ok_ttft = self.ttft_ms.is_none_or(|b| t * 1e3 <= b);
        let ok_tpot = match (self.tpot_ms, tpot(t, r.end, r.output_tokens())) {
            (Some(b), Some(x)) => x * 1e3 <= b,
            _ => true,
        };
        let ok_e2e = self.e2e_ms.is_none_or(|b| r.end * 1e3 <= b);
        r.ok() && ok_ttft && ok_tpot && ok_e2e
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub requests: usize,
    pub queue_ms: Option<Stats>,
    pub ttft_ms: Option<Stats>,
    pub e2e_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    pub preemptions: u64,
}

/// Everything reported for one target at one load level.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    pub failures_by_status: BTreeMap<String, usize>,
    /// Failures by class (`transport`, `timeout`, `server`; see `record::failure_class`), so the
    /// client's connection trouble is never read as the target's errors.
    pub failures_by_class: BTreeMap<String, usize>,
    /// Resends on a fresh connection after a failure before anything was sent (not failures).
    pub client_retries: u64,
    /// Requests for which the target reported how many prompt tokens it reused from its cache.
    pub cache_reported: usize,
    /// Prompt tokens the target reported reusing, summed over those requests: a number above 0
    /// means part of the prompt work was a cache hit, not prefill.
    pub cached_prompt_tokens: u64,
    pub duration_s: f64,
    pub input_tokens: u64,
    /// True when every counted input length came from the target (else some are nominal).
    pub input_tokens_from_target: bool,
    pub output_tokens: u64,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    pub itl_ms: Option<Stats>,
    pub e2e_ms: Option<Stats>,
    pub request_throughput: f64,
    pub output_token_throughput: f64,
    pub total_token_throughput: f64,
    pub slo: Option<Slo>,
    pub good_requests: Option<usize>,
    /// Good requests per second.
    pub goodput: Option<f64>,
    pub price_per_hour: Option<f64>,
    pub cost_per_million_output_tokens: Option<f64>,
    pub cost_per_million_total_tokens: Option<f64>,
    /// The target's own timings (halo's `Finish.timings`), when it sent them.
    pub server: Option<ServerStats>,
}

fn per_s(count: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        count / secs
    } else {
        0.0
    }
}

fn cost_per_million(price_per_hour: Option<f64>, tokens_per_s: f64) -> Option<f64> {
    price_per_hour
        .filter(|_| tokens_per_s > 0.0)
        .map(|p| p / 3600.0 / tokens_per_s * 1e6)
}

impl Summary {
    pub fn compute(
        records: &[RequestRecord],
        slo: Option<Slo>,
        price_per_hour: Option<f64>,
    ) -> Summary {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
        let mut failures_by_status = BTreeMap::new();
        for r in records {
            if let crate::record::Outcome::Failed { status, .. } = &r.outcome {
                *failures_by_status.entry(status.clone()).or_insert(0) += 1;
            }
        }
        let mut failures_by_class = BTreeMap::new();
        for r in records {
            if let crate::record::Outcome::Failed { status, .. } = &r.outcome {
                *failures_by_class
                    .entry(crate::record::failure_class(status).to_string())
                    .or_insert(0) += 1;
            }
        }
        let first = records
            .iter()
            .map(|r| r.start)
            .fold(f64::INFINITY, f64::min);
        let last = records
            .iter()
            .map(|r| r.start + r.end)
            .fold(f64::NEG_INFINITY, f64::max);
        let duration_s = if records.is_empty() {
            0.0
        } else {
            (last - first).max(0.0)
        };

        let ttfts: Vec<f64> = ok.iter().filter_map(|r| ttft(&r.chunks)).collect();
        let tpots: Vec<f64> = ok
            .iter()
            .filter_map(|r| tpot(ttft(&r.chunks)?, r.end, r.output_tokens()))
            .collect();
        let itls: Vec<f64> = ok.iter().flat_map(|r| itl_gaps(&r.chunks)).collect();
        let e2es: Vec<f64> = ok.iter().map(|r| r.end).collect();
        let output_tokens: u64 = ok.iter().map(|r| r.output_tokens() as u64).sum();
        let input_tokens: u64 = ok
            .iter()
            .map(|r| r.input_tokens().unwrap_or(0) as u64)
            .sum();
        let output_token_throughput = per_s(output_tokens as f64, duration_s);
        let total_token_throughput = per_s((output_tokens + input_tokens) as f64, duration_s);
        let good = slo.map(|s| ok.iter().filter(|r| s.met_by(r)).count());

        let with_server: Vec<_> = ok.iter().filter_map(|r| Some((r, r.server?))).collect();
        let server = (!with_server.is_empty()).then(|| ServerStats {
            requests: with_server.len(),
            queue_ms: Stats::from_ms(
                &with_server
                    .iter()
                    .map(|(_, s)| s.queue_ms)
                    .collect::<Vec<_>>(),
            ),
            ttft_ms: Stats::from_ms(
                &with_server
                    .iter()
                    .map(|(_, s)| s.ttft_ms)
                    .collect::<Vec<_>>(),
            ),
            e2e_ms: Stats::from_ms(
                &with_server
                    .iter()
                    .map(|(_, s)| s.e2e_ms)
                    .collect::<Vec<_>>(),
            ),
            tpot_ms: Stats::from_ms(
                &with_server
                    .iter()
                    .filter(|(r, _)| r.output_tokens() >= 2)
                    .map(|(r, s)| s.decode_ms / (r.output_tokens() - 1) as f64)
                    .collect::<Vec<_>>(),
            ),
            preemptions: with_server.iter().map(|(_, s)| s.preemptions as u64).sum(),
        });

        Summary {
            requests: records.len(),
            completed: ok.len(),
            failed: records.len() - ok.len(),
            failures_by_status,
            failures_by_class,
            client_retries: records.iter().map(|r| r.retries as u64).sum(),
            cache_reported: ok
                .iter()
                .filter(|r| r.cached_prompt_tokens.is_some())
                .count(),
            cached_prompt_tokens: ok
                .iter()
                .filter_map(|r| r.cached_prompt_tokens)
                .map(u64::from)
                .sum(),
            duration_s,
            input_tokens,
            input_tokens_from_target: ok.iter().all(|r| r.prompt_tokens.is_some()),
            output_tokens,
            ttft_ms: Stats::from_secs(&ttfts),
            tpot_ms: Stats::from_secs(&tpots),
            itl_ms: Stats::from_secs(&itls),
            e2e_ms: Stats::from_secs(&e2es),
            request_throughput: per_s(ok.len() as f64, duration_s),
            output_token_throughput,
            total_token_throughput,
            slo,
            good_requests: good,
            goodput: good.map(|g| per_s(g as f64, duration_s)),
            price_per_hour,
            cost_per_million_output_tokens: cost_per_million(
                price_per_hour,
                output_token_throughput,
            ),
            cost_per_million_total_tokens: cost_per_million(price_per_hour, total_token_throughput),
            server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, ServerTimings};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn rec(start: f64, end: f64, chunks: &[(f64, u32)], usage: Option<u32>) -> RequestRecord {
        let chunks: Vec<Chunk> = chunks
            .iter()
            .map(|&(t, tokens)| Chunk { t, tokens })
            .collect();
        RequestRecord {
            target: "t".into(),
            level: "c=1".into(),
            index: 0,
            start,
            end,
            stream_tokens: chunks.iter().map(|c| c.tokens).sum(),
            chunks,
            outcome: Outcome::Ok,
            usage_output_tokens: usage,
            prompt_tokens: Some(10),
            nominal_input_len: Some(8),
            max_tokens: 8,
            finish_reason: Some("length".into()),
            server: None,
            cached_prompt_tokens: None,
            round: 0,
            retries: 0,
        }
    }

    fn failed(start: f64, end: f64, status: &str) -> RequestRecord {
        let mut r = rec(start, end, &[], None);
        r.outcome = Outcome::Failed {
            status: status.into(),
            message: "x".into(),
        };
        r.prompt_tokens = None;
        r
    }

    #[test]
    fn one_token_per_chunk() {
        // Sent at 0; tokens at 100, 150, 250 ms; stream closed at 300 ms.
        let r = rec(0.0, 0.300, &[(0.100, 1), (0.150, 1), (0.250, 1)], Some(3));
        assert_eq!(ttft(&r.chunks), Some(0.100));
        let g = itl_gaps(&r.chunks);
        assert_eq!(g.len(), 2);
        assert!(close(g[0], 0.050) && close(g[1], 0.100));
        // TPOT = (300 - 100) / (3 - 1) = 100 ms.
        assert!(close(tpot(0.100, r.end, 3).unwrap(), 0.100));
    }

    #[test]
    fn first_chunk_with_several_tokens() {
        // 3 tokens at 200 ms, 1 at 300 ms, 2 at 500 ms; end at 500 ms; 6 tokens.
        let r = rec(0.0, 0.5, &[(0.2, 3), (0.3, 1), (0.5, 2)], None);
        let g = itl_gaps(&r.chunks);
        let want = [0.0, 0.0, 0.1, 0.2, 0.0];
        assert_eq!(g.len(), 5, "{g:?}");
        for (a, b) in g.iter().zip(want) {
            assert!(close(*a, b), "{g:?}");
        }
        let s = Summary::compute(&[r], None, None);
        assert!(close(s.ttft_ms.unwrap().p50, 200.0));
        // TPOT = (500 - 200) / 5 = 60 ms, the same as the mean ITL here.
        assert!(close(s.tpot_ms.unwrap().mean, 60.0));
        assert!(close(s.itl_ms.unwrap().mean, 60.0));
        assert!(close(s.itl_ms.unwrap().p50, 0.0));
        assert_eq!(s.output_tokens, 6);
    }

    #[test]
    fn usage_count_wins_over_stream_count_for_tpot_and_throughput() {
        // The stream showed 2 messages but the target says it made 5 tokens.
        let r = rec(0.0, 1.0, &[(0.2, 1), (1.0, 1)], Some(5));
        let s = Summary::compute(&[r], None, None);
        assert_eq!(s.output_tokens, 5);
        assert!(close(s.tpot_ms.unwrap().mean, 200.0)); // (1000 - 200) / 4
        assert!(close(s.output_token_throughput, 5.0));
    }

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&v, 50.0).unwrap(), 50.5));
        assert!(close(percentile(&v, 90.0).unwrap(), 90.1));
        assert!(close(percentile(&v, 99.0).unwrap(), 99.01));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn failures_throughput_goodput_and_cost() {
        let records = vec![
            // ok: ttft 100, tpot (400-100)/3 = 100 ms (just inside the 101 ms bound)
            rec(0.0, 0.4, &[(0.1, 1), (0.2, 1), (0.3, 1), (0.4, 1)], Some(4)),
            // ok: ttft 300 (misses a 200 ms TTFT bound), tpot (500-300)/3 = 66.7 ms
            rec(0.5, 0.5, &[(0.3, 2), (0.5, 2)], Some(4)),
            // ok, one token: TPOT undefined, so only TTFT (50 ms) is checked
            rec(1.0, 0.05, &[(0.05, 1)], Some(1)),
            failed(1.5, 0.5, "grpc:UNAVAILABLE"),
            failed(1.6, 0.1, "http:503"),
            failed(1.7, 0.1, "http:503"),
        ];
        let slo = Slo {
            ttft_ms: Some(200.0),
            tpot_ms: Some(101.0),
            e2e_ms: None,
        };
        let s = Summary::compute(&records, Some(slo), Some(3.6));
        assert_eq!((s.requests, s.completed, s.failed), (6, 3, 3));
        assert_eq!(s.failures_by_status["http:503"], 2);
        assert_eq!(s.failures_by_status["grpc:UNAVAILABLE"], 1);
        assert_eq!(s.failures_by_class["server"], 2);
        assert_eq!(s.failures_by_class["transport"], 1);
        assert_eq!((s.cache_reported, s.cached_prompt_tokens), (0, 0));
        // Window: first send 0.0 to last end 1.5 + 0.5 = 2.0 s.
        assert!(close(s.duration_s, 2.0));
        assert!(close(s.request_throughput, 1.5));
        assert_eq!(s.output_tokens, 9);
        assert!(close(s.output_token_throughput, 4.5));
        assert_eq!(s.input_tokens, 30);
        assert!(close(s.total_token_throughput, 19.5));
        assert_eq!(s.good_requests, Some(2));
        assert!(close(s.goodput.unwrap(), 1.0));
        // $3.6/h = $0.001/s; 4.5 tok/s → $0.001 / 4.5 per token → 222.2 per million.
        assert!(close(
            s.cost_per_million_output_tokens.unwrap(),
            1e6 * 0.001 / 4.5
        ));
        // Failures contribute no latency samples.
        assert_eq!(s.e2e_ms.unwrap().count, 3);
        assert_eq!(s.ttft_ms.unwrap().count, 3);
        assert_eq!(s.tpot_ms.unwrap().count, 2);
        assert_eq!(s.itl_ms.unwrap().count, 3 + 3);
        assert!(s.server.is_none());
    }

    #[test]
    fn all_failed_has_no_latency_and_zero_throughput() {
        let s = Summary::compute(&[failed(0.0, 1.0, "transport")], None, Some(1.0));
        assert_eq!(s.completed, 0);
        assert!(s.ttft_ms.is_none() && s.e2e_ms.is_none());
        assert_eq!(s.output_token_throughput, 0.0);
        assert_eq!(s.cost_per_million_output_tokens, None);
    }

    #[test]
    fn server_timings_are_summarised_beside() {
        let mut r = rec(0.0, 0.4, &[(0.1, 1), (0.4, 2)], Some(3));
        r.server = Some(ServerTimings {
            queue_ms: 5.0,
            ttft_ms: 90.0,
            e2e_ms: 390.0,
            decode_ms: 300.0,
            preemptions: 1,
            ..Default::default()
        });
        let s = Summary::compute(&[r], None, None);
        let srv = s.server.unwrap();
        assert_eq!(srv.requests, 1);
        assert!(close(srv.ttft_ms.unwrap().p50, 90.0));
        assert!(close(srv.tpot_ms.unwrap().p50, 150.0));
        assert_eq!(srv.preemptions, 1);
    }

    #[test]
    fn slo_parsing() {
        let s = Slo::parse("ttft_ms=500, tpot_ms=50").unwrap();
        assert_eq!(
            s,
            Slo {
                ttft_ms: Some(500.0),
                tpot_ms: Some(50.0),
                e2e_ms: None
            }
        );
        for bad in ["", "ttft=5", "ttft_ms=-1", "ttft_ms=abc", "ttft_ms"] {
            assert!(Slo::parse(bad).is_err(), "{bad}");
        }
    }
}
