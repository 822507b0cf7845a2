//! The token history that repetition, frequency and presence penalties look at, kept as counts.
//!
//! Penalties need, per distinct token, two facts: whether the prompt or the output holds it
//! (repetition) and how often the output holds it (frequency, presence). The engine keeps these
//! counts per sequence and adds one token per step ([`PenaltyContext::record_output`]), instead
//! of copying and re-sorting the whole history every step (quadratic in the length). The
//! counts sit behind an `Arc`: a step's [`crate::SampleRequest`] shares them in O(1), and the
//! next update happens in place once the device has dropped the step's batch.

use std::sync::Arc;

/// One distinct token of a sequence's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryToken {
    pub token: u32,
    /// Occurrences in the output (0: the prompt alone holds it).
    pub output_count: u32,
}

/// Every distinct token of prompt and output, ascending by id, with its output count.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PenaltyContext {
    entries: Arc<Vec<HistoryToken>>,
}

impl PenaltyContext {
    /// The counts of a prompt and the output generated so far.
    pub fn from_history(prompt: &[u32], generated: &[u32]) -> Self {
        let mut entries: Vec<HistoryToken> = prompt
            .iter()
            .map(|&token| HistoryToken {
                token,
                output_count: 0,
            })
            .chain(generated.iter().map(|&token| HistoryToken {
                token,
                output_count: 1,
            }))
            .collect();
        entries.sort_unstable_by_key(|e| e.token);
        entries.dedup_by(|later, kept| {
            if later.token != kept.token {
                return false;
            }
            kept.output_count += later.output_count;
            true
        });
        PenaltyContext {
            entries: Arc::new(entries),
        }
    }

    /// Counts one more output token: O(log n) to find it, plus a shift when it is new. Copies
    /// the counts only if a batch still shares them.
    pub fn record_output(&mut self, token: u32) {
        let entries = Arc::make_mut(&mut self.entries);
        match entries.binary_search_by_key(&token, |e| e.token) {
            Ok(i) => entries[i].output_count += 1,
            Err(i) => entries.insert(
                i,
                HistoryToken {
                    token,
                    output_count: 1,
                },
            ),
        }
    }

    /// The distinct tokens, ascending by id.
    pub fn entries(&self) -> &[HistoryToken] {
        &self.entries
    }

    /// Whether the counts are shared with another holder (a batch not yet dropped).
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.entries) > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(ctx: &PenaltyContext) -> Vec<(u32, u32)> {
        ctx.entries()
            .iter()
            .map(|e| (e.token, e.output_count))
            .collect()
    }

    #[test]
    fn prompt_tokens_count_zero_and_output_tokens_count_each_time() {
        let c = PenaltyContext::from_history(&[4, 4, 9, 999], &[9, 2, 9]);
        assert_eq!(counts(&c), vec![(2, 1), (4, 0), (9, 2), (999, 0)]);
    }

    #[test]
    fn recording_while_shared_leaves_the_shared_copy_alone() {
        let mut c = PenaltyContext::from_history(&[1], &[]);
        let held_by_batch = c.clone();
        assert!(c.is_shared());
        c.record_output(1);
        assert_eq!(counts(&held_by_batch), vec![(1, 0)]);
        assert_eq!(counts(&c), vec![(1, 1)]);
        assert!(!c.is_shared());
    }

    proptest! {
        #[test]
        fn recording_one_by_one_equals_counting_the_whole_history(
            prompt in prop::collection::vec(0u32..50, 0..40),
            generated in prop::collection::vec(0u32..50, 0..60),
        ) {
            let mut c = PenaltyContext::from_history(&prompt, &[]);
            for &t in &generated {
                c.record_output(t);
            }
            prop_assert_eq!(&c, &PenaltyContext::from_history(&prompt, &generated));
            prop_assert!(c.entries().windows(2).all(|w| w[0].token < w[1].token));
        }
    }
}
