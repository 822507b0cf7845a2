//! Stop sequences matched on the streamed text, across token boundaries.
//!
//! Text that could be the start of a stop sequence is held back until it either completes one
//! (the match and everything after it are dropped) or cannot anymore (it is released). Holding
//! happens at character boundaries only, because the input is whole-character deltas, so a stop
//! sequence never splits a character.

/// The held-back state of one sequence.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What one push produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Text that is safe to emit (possibly empty).
    Emit(String),
    /// A stop sequence matched: emit `before`, then finish.
    Matched { before: String, stop: String },
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, delta: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Emit(delta.to_string());
        }
        self.held.push_str(delta);
        // The earliest match wins; at equal starts the first listed.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = found {
            let before = self.held[..at].to_string();
            let stop = stop.clone();
            self.held.clear();
            return StopScan::Matched { before, stop };
        }
        // Hold the longest suffix that is a proper prefix of some stop sequence.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopScan::Emit(emit)
    }

    /// The held text, when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_across_deltas_and_drops_the_stop() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E"), StopScan::Emit("hello ".into()));
        assert_eq!(m.push("N"), StopScan::Emit(String::new()));
        assert_eq!(
            m.push("Dtail"),
            StopScan::Matched {
                before: String::new(),
                stop: "END".into()
            }
        );
    }

    #[test]
    fn releases_a_false_start() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), StopScan::Emit(String::new()));
        assert_eq!(m.push("X"), StopScan::Emit("ENX".into()));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn never_splits_a_character() {
        let mut m = StopMatcher::new(vec!["感谢你".into()]);
        assert_eq!(m.push("我很感"), StopScan::Emit("我很".into()));
        assert_eq!(m.push("动"), StopScan::Emit("感动".into()));
    }

    proptest! {
        /// Emitted text + held text is always the input up to the first match, and the match is
        /// found exactly when the input contains a stop sequence.
        #[test]
        fn streaming_equals_whole_text(
            parts in prop::collection::vec("[abé😀]{0,3}", 0..12),
            stop in "[abé😀]{1,3}",
        ) {
            let whole: String = parts.concat();
            let mut m = StopMatcher::new(vec![stop.clone()]);
            let mut out = String::new();
            let mut matched = false;
            for p in &parts {
                match m.push(p) {
                    StopScan::Emit(t) => out.push_str(&t),
                    StopScan::Matched { before, .. } => { out.push_str(&before); matched = true; break; }
                }
            }
            if !matched { out.push_str(&m.flush()); }
            match whole.find(stop.as_str()) {
                Some(at) => { prop_assert!(matched); prop_assert_eq!(&out, &whole[..at]); }
                None => { prop_assert!(!matched); prop_assert_eq!(&out, &whole); }
            }
        }
    }
}
