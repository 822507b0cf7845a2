//! Incremental detokenization: turn a growing list of generated ids into text deltas.
//!
//! The text of a completion is what the generated ids add to the prompt's text,
//! `decode(prompt + ids) - decode(prompt)` in effect. Decoding the generated ids alone is wrong for
//! SentencePiece-style tokenizers: their decoder strips the leading space of the decoded text, so
//! the first generated word (`▁as`) would lose its space. So decoding starts a few ids back in the
//! prompt, and only the difference is emitted.
//!
//! The prefix/read-offset method (as in vLLM and TGI, written here from the idea): the window
//! `ids[prefix_offset..]` is decoded twice, without and with the ids after `read_offset`, and the
//! difference is emitted; then the window slides so that its start is the old read offset. The
//! decode is never of more than the window, so a step costs the same however long the text.
//!
//! Text is held back (the window grows instead) while it may still change:
//! - it ends in U+FFFD: byte-level BPE splits a character across tokens, and the next id may
//!   complete it;
//! - the newest id is a byte-fallback token (`<0xNN>`): the `ByteFallback` decoder turns a whole
//!   run of byte tokens into its UTF-8 text, or into one U+FFFD per byte when the run is not valid
//!   UTF-8, so a run's text is known only once a non-byte token ends it.
//!
//! `finish` emits what was held back (the window's full decode, replacement characters
//! included), so the deltas always concatenate to the full decode difference. A window held back
//! longer than [`MAX_HELD`] ids (a long run of invalid bytes) is emitted as it decodes then, which
//! keeps the cost bounded.

use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("detokenization failed: {0}")]
pub struct DetokError(String);

/// How many prompt ids the first window starts before the generated ones.
const PROMPT_CONTEXT: usize = 5;
/// A prompt window is moved back over at most this many byte-fallback ids to start its run.
const MAX_RUN_BACK: usize = MAX_HELD;
/// Held-back ids past which the window is emitted anyway.
pub const MAX_HELD: usize = 512;

const REPLACEMENT: char = '\u{FFFD}';

/// The streaming state of one sequence.
#[derive(Clone, Debug)]
pub struct IncrementalDetokenizer {
    /// The prompt's tail (the window's context) followed by the generated ids.
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix_offset: usize,
    /// Ids before this were emitted.
    read_offset: usize,
    /// decode(ids[prefix_offset..read_offset]), the window's already-emitted text.
    prefix_text: String,
    skip_special_tokens: bool,
    /// The last id that decodes to something was a byte token: its run may go on.
    in_byte_run: bool,
}

/// Whether `id` is a SentencePiece byte-fallback token, `<0xNN>`.
fn is_byte_token(tok: &Tokenizer, id: u32) -> bool {
    tok.id_to_token(id).is_some_and(|t| {
        let b = t.as_bytes();
        b.len() == 6
            && t.starts_with("<0x")
            && b[5] == b'>'
            && b[3].is_ascii_hexdigit()
            && b[4].is_ascii_hexdigit()
    })
}

impl IncrementalDetokenizer {
    /// Text of the generated ids alone (no prompt context): the deltas concatenate to
    /// `decode(ids)`.
    pub fn new(skip_special_tokens: bool) -> Self {
        IncrementalDetokenizer {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            prefix_text: String::new(),
            skip_special_tokens,
            in_byte_run: false,
        }
    }

    /// Text the generated ids add to `prompt`'s: the deltas concatenate to
    /// `decode(prompt + ids) - decode(prompt)`. Only the prompt's last few ids are kept.
    pub fn with_prompt(
        tok: &Tokenizer,
        prompt: &[u32],
        skip_special_tokens: bool,
    ) -> Result<Self, DetokError> {
        let mut start = prompt.len().saturating_sub(PROMPT_CONTEXT);
        // do not start inside a run of byte tokens: its text depends on the whole run
        let floor = start.saturating_sub(MAX_RUN_BACK);
        while start > floor && is_byte_token(tok, prompt[start - 1]) {
            start -= 1;
        }
        let mut d = IncrementalDetokenizer::new(skip_special_tokens);
        d.ids.extend_from_slice(&prompt[start..]);
        d.read_offset = d.ids.len();
        d.prefix_text = d.decode(tok, &d.ids)?;
        for &id in &prompt[start..] {
            d.track_run(tok, id);
        }
        Ok(d)
    }

    fn decode(&self, tok: &Tokenizer, ids: &[u32]) -> Result<String, DetokError> {
        tok.decode(ids, self.skip_special_tokens)
            .map_err(|e| DetokError(e.to_string()))
    }

    /// A skipped special token does not end a byte run: the decoder never sees it, so the bytes
    /// on both sides of it fuse.
    fn track_run(&mut self, tok: &Tokenizer, id: u32) {
        let skipped = self.skip_special_tokens
            && tok
                .id_to_token(id)
                .is_some_and(|t| tok.get_added_vocabulary().is_special_token(&t));
        if !skipped {
            self.in_byte_run = is_byte_token(tok, id);
        }
    }

    /// Adds one id; returns the text it completes (often empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, DetokError> {
        self.ids.push(id);
        self.track_run(tok, id);
        let text = self.decode(tok, &self.ids[self.prefix_offset..])?;
        let settled = text.starts_with(&self.prefix_text)
            && !text.ends_with(REPLACEMENT)
            && !self.in_byte_run;
        if settled || self.ids.len() - self.read_offset > MAX_HELD {
            self.emit(tok, text)
        } else {
            Ok(String::new())
        }
    }

    /// Emits `text` (the window's decode) beyond what was emitted, and slides the window.
    fn emit(&mut self, tok: &Tokenizer, text: String) -> Result<String, DetokError> {
        let delta: String = match text.strip_prefix(self.prefix_text.as_str()) {
            Some(rest) => rest.to_string(),
            // the window's start changed its text (not seen with the tokenizers halo loads):
            // emit past the longest common prefix
            None => {
                let common = self
                    .prefix_text
                    .char_indices()
                    .zip(text.chars())
                    .find(|((_, a), b)| a != b)
                    .map_or(self.prefix_text.len().min(text.len()), |((i, _), _)| i);
                text.get(common..).unwrap_or_default().to_string()
            }
        };
        // Slide the window to start at the old read offset, unless that part decodes to nothing
        // (skipped special tokens, a lone stripped space): a window must start with a token that
        // decodes, or a decoder that strips the window's leading space (Strip, Metaspace) would
        // strip the next token's space instead.
        let tail = self.decode(tok, &self.ids[self.read_offset..])?;
        if tail.is_empty() {
            self.prefix_text = text;
        } else {
            self.prefix_offset = self.read_offset;
            self.prefix_text = tail;
        }
        self.read_offset = self.ids.len();
        // the ids before the window are settled: drop them
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
        Ok(delta)
    }

    /// Everything held back: the rest of the window's decode (a final incomplete character is
    /// emitted as the full decode has it, replacement characters included).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, DetokError> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let text = self.decode(tok, &self.ids[self.prefix_offset..])?;
        self.emit(tok, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// tiny-mha's byte-level BPE.
    fn tokenizer() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let dir = crate::testing::tiny_mha_dir();
            Tokenizer::from_file(dir.join("tokenizer.json")).expect("tiny-mha tokenizer.json")
        })
    }

    /// The Llama-2 style SentencePiece fixture: Metaspace spaces, byte fallback, Strip decoder.
    fn spm() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/models/tiny-llama2-spm/tokenizer.json");
            Tokenizer::from_file(path).expect("tiny-llama2-spm tokenizer.json")
        })
    }

    fn both() -> [&'static Tokenizer; 2] {
        [tokenizer(), spm()]
    }

    /// Streams `ids` and checks the contract: every prefix of the stream is a prefix of the
    /// full decode (so no replacement character appears that the full decode lacks) and the
    /// deltas concatenate to it exactly.
    fn check_stream_with(tok: &Tokenizer, ids: &[u32], skip: bool) -> Result<(), TestCaseError> {
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
        prop_assert_eq!(d.finish(tok).unwrap(), "");
        Ok(())
    }

    /// With a prompt: the deltas concatenate to `decode(prompt + ids) - decode(prompt)`, and
    /// every prefix of the stream is a prefix of that.
    fn check_continuation(
        tok: &Tokenizer,
        prompt: &[u32],
        ids: &[u32],
        skip: bool,
    ) -> Result<(), TestCaseError> {
        let all: Vec<u32> = prompt.iter().chain(ids).copied().collect();
        let full = tok.decode(&all, skip).unwrap();
        let head = tok.decode(prompt, skip).unwrap();
        // a prompt ending inside a byte run that the generated bytes extend has no such difference
        prop_assume!(full.starts_with(&head));
        let want = &full[head.len()..];
        let mut d = IncrementalDetokenizer::with_prompt(tok, prompt, skip).unwrap();
        let mut out = String::new();
        for &id in ids {
            out.push_str(&d.push(tok, id).unwrap());
            prop_assert!(
                want.starts_with(&out),
                "streamed {:?} is not a prefix of {:?}",
                out,
                want
            );
        }
        out.push_str(&d.finish(tok).unwrap());
        prop_assert_eq!(out, want);
        Ok(())
    }

    #[test]
    fn cjk_split_across_tokens_streams_whole_characters() {
        for tok in both() {
            let text = "我很感谢你的热情 👍🏽 e\u{301}";
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert!(ids.len() > text.chars().count(), "characters are split");
            let mut d = IncrementalDetokenizer::new(true);
            for &id in &ids {
                let delta = d.push(tok, id).unwrap();
                assert!(!delta.contains('\u{FFFD}'), "delta {delta:?}");
            }
            check_stream_with(tok, &ids, true).unwrap();
        }
    }

    #[test]
    fn sentencepiece_keeps_the_first_generated_words_space() {
        let tok = spm();
        let prompt = tok
            .encode("The license grants you the freedom to", true)
            .unwrap();
        let prompt = prompt.get_ids();
        let gen = tok.encode("as the", false).unwrap().get_ids().to_vec();
        let mut d = IncrementalDetokenizer::with_prompt(tok, prompt, true).unwrap();
        let mut out = String::new();
        for &id in &gen {
            out.push_str(&d.push(tok, id).unwrap());
        }
        out.push_str(&d.finish(tok).unwrap());
        assert_eq!(out, " as the");
        // the generated ids alone decode without it, which is why the prompt is the context
        assert_eq!(tok.decode(&gen, true).unwrap(), "as the");
    }

    #[test]
    fn an_incomplete_byte_run_is_held_then_flushed() {
        let tok = spm();
        let prompt = tok.encode("a", true).unwrap().get_ids().to_vec();
        let b = |x: u8| tok.token_to_id(&format!("<0x{x:02X}>")).unwrap();
        let the = tok
            .token_to_id("▁the")
            .unwrap_or_else(|| tok.token_to_id("▁").unwrap());
        let mut d = IncrementalDetokenizer::with_prompt(tok, &prompt, true).unwrap();
        // 我 = E6 88 91: nothing until the run ends
        assert_eq!(d.push(tok, b(0xE6)).unwrap(), "");
        assert_eq!(d.push(tok, b(0x88)).unwrap(), "");
        assert_eq!(d.push(tok, b(0x91)).unwrap(), "");
        let text = d.push(tok, the).unwrap();
        assert!(text.starts_with("我"), "{text:?}");
        // an incomplete run at the end is flushed by finish, as the full decode has it
        assert_eq!(d.push(tok, b(0xE6)).unwrap(), "");
        assert_eq!(d.push(tok, b(0x88)).unwrap(), "");
        assert_eq!(d.finish(tok).unwrap(), "\u{FFFD}\u{FFFD}");
        assert_eq!(d.finish(tok).unwrap(), "");
    }

    #[test]
    fn a_long_invalid_run_is_emitted_after_max_held() {
        let tok = spm();
        let ff = tok.token_to_id("<0xFF>").unwrap();
        let mut d = IncrementalDetokenizer::new(true);
        let mut out = String::new();
        for _ in 0..=MAX_HELD {
            out.push_str(&d.push(tok, ff).unwrap());
        }
        assert_eq!(out.chars().count(), MAX_HELD + 1);
        assert!(out.chars().all(|c| c == '\u{FFFD}'));
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
            "  ",
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

    /// Random ids, weighted towards byte tokens and specials for the SentencePiece vocabulary
    /// (0..3 specials, 3..259 bytes): invalid runs, split characters, runs cut by specials.
    fn ids(n: usize) -> impl Strategy<Value = Vec<u32>> {
        let id = prop_oneof![
            4 => 0u32..512,
            3 => 3u32..259,
            2 => prop::sample::select(vec![0xE6u32 + 3, 0x88 + 3, 0x91 + 3, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]),
            1 => 0u32..3,
        ];
        prop::collection::vec(id, 0..n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn encoded_multilingual_text_round_trips(text in multilingual(), skip in any::<bool>(), which in 0usize..2) {
            let tok = both()[which];
            let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            check_stream_with(tok, &ids, skip)?;
        }

        /// Arbitrary ids (invalid UTF-8 byte runs, special tokens) keep the same contract.
        #[test]
        fn random_ids_round_trip(ids in ids(40), skip in any::<bool>(), which in 0usize..2) {
            check_stream_with(both()[which], &ids, skip)?;
        }

        /// After an encoded prompt, the deltas are the full decode's difference.
        #[test]
        fn continuation_is_the_full_decode_difference(
            prompt in multilingual(),
            gen_text in multilingual(),
            random in ids(24),
            skip in any::<bool>(),
            which in 0usize..2,
        ) {
            let tok = both()[which];
            let prompt = tok.encode(format!("Hi {prompt}"), true).unwrap().get_ids().to_vec();
            let encoded = tok.encode(gen_text.as_str(), false).unwrap().get_ids().to_vec();
            check_continuation(tok, &prompt, &encoded, skip)?;
            check_continuation(tok, &prompt, &random, skip)?;
            let mixed: Vec<u32> = encoded.iter().chain(&random).chain(&encoded).copied().collect();
            check_continuation(tok, &prompt, &mixed, skip)?;
        }
    }
}
