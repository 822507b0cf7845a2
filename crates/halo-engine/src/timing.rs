//! Per-request timestamps, taken by the scheduler at the one place tokens are emitted, so every
//! backend is measured the same way (WORKER_API.md "Timings").

use crate::event::Timings;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct RequestTimer {
    arrival: Instant,
    first_scheduled: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    /// Gaps between consecutive emitted tokens, in microseconds.
    gaps_us: Vec<u64>,
    preemptions: u32,
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

impl RequestTimer {
    pub fn new(arrival: Instant) -> Self {
        RequestTimer {
            arrival,
            first_scheduled: None,
            first_token: None,
            last_token: None,
            gaps_us: Vec::new(),
            preemptions: 0,
        }
    }

    pub fn scheduled(&mut self, now: Instant) {
        self.first_scheduled.get_or_insert(now);
    }

    pub fn was_scheduled(&self) -> bool {
        self.first_scheduled.is_some()
    }

    pub fn token(&mut self, now: Instant) {
        if let Some(last) = self.last_token {
            self.gaps_us.push(micros(last, now));
        }
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
    }

    pub fn preempted(&mut self) {
        self.preemptions += 1;
    }

    pub fn finish(&self, now: Instant) -> Timings {
        let mut gaps = self.gaps_us.clone();
        gaps.sort_unstable();
        Timings {
            queue_us: self
                .first_scheduled
                .map_or(micros(self.arrival, now), |t| micros(self.arrival, t)),
            ttft_us: self.first_token.map_or(0, |t| micros(self.arrival, t)),
            e2e_us: micros(self.arrival, now),
            decode_us: self.first_token.map_or(0, |t| micros(t, now)),
            preemptions: self.preemptions,
            itl_us_p50: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
            itl_us_max: gaps.last().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timings_are_ordered() {
        let t0 = Instant::now();
        let mut t = RequestTimer::new(t0);
        t.scheduled(t0 + Duration::from_micros(10));
        t.scheduled(t0 + Duration::from_micros(99)); // only the first counts
        for us in [100, 130, 200] {
            t.token(t0 + Duration::from_micros(us));
        }
        let tm = t.finish(t0 + Duration::from_micros(250));
        assert_eq!(
            (tm.queue_us, tm.ttft_us, tm.e2e_us, tm.decode_us),
            (10, 100, 250, 150)
        );
        assert_eq!((tm.itl_us_p50, tm.itl_us_max), (70, 70));
    }
}
