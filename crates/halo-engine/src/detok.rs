//! Incremental detokenization: turn a growing list of generated ids into text deltas.
//!
//! Byte-level BPE splits multi-byte characters across tokens, so decoding token by token would
//! emit U+FFFD halves. The prefix-offset method (as in vLLM and TGI, written here from the idea):
//! decode a small window of recent ids twice, with and without the newest ones, and emit the
//! difference only once the window's text no longer ends in a replacement character. `finish`
//! emits whatever the full decode has beyond what was streamed, so the deltas always concatenate
//! to the full decode of the ids.
//!
//! Decoding starts at the first generated id (no prompt context), so the property holds against
//! `decode(generated_ids)` exactly.

use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("detokenization failed: {0}")]
pub struct DetokError(String);

/// The streaming state of one sequence.
#[derive(Clone, Debug)]
pub struct IncrementalDetokenizer {
    ids: Vec<u32>,
    /// Start of the decode window (ids before it are settled and emitted).
    prefix_offset: usize,
    /// Ids before this were emitted.
    read_offset: usize,
    /// decode(ids[prefix_offset..read_offset]), the window's already-emitted text.
    prefix_text: String,
    /// Bytes emitted so far.
    emitted: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special_tokens: bool) -> Self {
        IncrementalDetokenizer {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            prefix_text: String::new(),
            emitted: 0,
            skip_special_tokens,
        }
    }

    fn decode(&self, tok: &Tokenizer, ids: &[u32]) -> Result<String, DetokError> {
        tok.decode(ids, self.skip_special_tokens)
            .map_err(|e| DetokError(e.to_string()))
    }

    /// Adds one id; returns the text it completes (often empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, DetokError> {
        self.ids.push(id);
        let text = self.decode(tok, &self.ids[self.prefix_offset..])?;
        // A trailing U+FFFD may be half a character that the next id completes: wait for it.
        if text.len() > self.prefix_text.len()
            && !text.ends_with('\u{FFFD}')
            && text.starts_with(&self.prefix_text)
        {
            let delta = text[self.prefix_text.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            self.prefix_text = self.decode(tok, &self.ids[self.prefix_offset..self.read_offset])?;
            self.emitted += delta.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// The rest of the full decode: whatever was held back (a final incomplete character is
    /// emitted as the full decode has it, replacement character included).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, DetokError> {
        let full = self.decode(tok, &self.ids)?;
        let rest = full.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted += rest.len();
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        self.prefix_text.clear();
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn tokenizer() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let dir = crate::testing::tiny_mha_dir();
            Tokenizer::from_file(dir.join("tokenizer.json")).expect("tiny-mha tokenizer.json")
        })
    }

    /// Streams `ids` and checks the contract: every prefix of the stream is a prefix of the
    /// full decode (so no replacement character appears that the full decode lacks) and the
    /// deltas concatenate to it exactly.
    fn check_stream(ids: &[u32], skip: bool) -> Result<(), TestCaseError> {
        let tok = tokenizer();
        let full = tok.decode(ids, skip).unwrap();
        let mut d = IncrementalDetokenizer::new(skip);
        let mut out = String::new();
        for &id in ids {
            out.push_str(&d.push(tok, id).unwrap());
            prop_assert!(
                full.starts_with(&out),
                "streamed {:?} is not a prefix of {:?}",
                out,
                full
            );
        }
        out.push_str(&d.finish(tok).unwrap());
        prop_assert_eq!(out, full);
        Ok(())
    }

    #[test]
    fn cjk_split_across_tokens_streams_whole_characters() {
        let tok = tokenizer();
        let text = "我很感谢你的热情 👍🏽 e\u{301}";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert!(
            ids.len() > text.chars().count(),
            "byte-level BPE splits characters"
        );
        let mut d = IncrementalDetokenizer::new(true);
        for &id in &ids {
            let delta = d.push(tok, id).unwrap();
            assert!(!delta.contains('\u{FFFD}'), "delta {delta:?}");
        }
        check_stream(&ids, true).unwrap();
    }

    fn multilingual() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "我",
            "很",
            "感谢",
            "你的",
            "热情",
            "こんにちは",
            "한국어",
            "👍",
            "🏽",
            "👨‍👩‍👧",
            "e\u{301}",
            "a\u{308}\u{323}",
            " ",
            "the",
            " license",
            "\n",
            "Ω",
            "ß",
            "🦀",
            "«»",
        ]);
        prop::collection::vec(pieces, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn encoded_multilingual_text_round_trips(text in multilingual(), skip in any::<bool>()) {
            let ids = tokenizer().encode(text.as_str(), false).unwrap().get_ids().to_vec();
            check_stream(&ids, skip)?;
        }

        /// Arbitrary ids (invalid UTF-8 byte runs, special tokens) keep the same contract.
        #[test]
        fn random_ids_round_trip(ids in prop::collection::vec(0u32..512, 0..40), skip in any::<bool>()) {
            check_stream(&ids, skip)?;
        }
    }
}
