//! The SentencePiece tokenizer of a GGUF file (`tokenizer.ggml.model = "llama"`), as a
//! `tokenizers::Tokenizer` that gives the ids llama.cpp gives (`llm_tokenizer_spm` in
//! llama.cpp's `src/llama-vocab.cpp`, with special tokens parsed, as llama-server's `/tokenize`).
//!
//! # What llama.cpp does
//!
//! 1. The text is cut at every CONTROL (type 3), USER_DEFINED (4) and UNKNOWN (2) token's text,
//!    matched literally in the raw text; those pieces become their ids. Types are first corrected
//!    by text as llama.cpp does ([`effective_token_types`]: e.g. `<|im_end|>` is CONTROL whatever
//!    the file says), and for Phi-3 models (by `general.name`) the whitespace after a special
//!    token other than `<unk>`, `<s>`, `<|endoftext|>` is dropped.
//! 2. Every remaining piece gets a `" "` in front (`add_space_prefix`, default true: every raw
//!    piece follows either the start or a special token), then each `' '` becomes `▁`.
//! 3. The piece is split into UTF-8 characters; repeatedly, of all adjacent pairs of symbols whose
//!    concatenation is a token of the vocabulary, the one whose token has the highest score is
//!    merged (ties: the leftmost). No merge table: any split of a token into two tokens is a merge.
//! 4. A final symbol that is not a token (a character outside the vocabulary) is emitted as its
//!    UTF-8 bytes, `<0xNN>` tokens (type 6).
//!
//! # How it is expressed here
//!
//! Step 3 is exactly the byte-pair algorithm of the `tokenizers` crate's `BPE` model (a priority
//! queue of adjacent pairs, lowest rank first, ties leftmost, stale entries skipped) once the merge
//! table lists every pair `(l, r)` with `l`, `r` and `l + r` all tokens, ranked by the score of
//! `l + r`, highest first. So the model is a `BPE` over the GGUF's own vocabulary (ids unchanged)
//! with those merges and `byte_fallback` (step 4); the normalizer is `Prepend("▁")` (when
//! `add_space_prefix`) then `Replace(" ", "▁")`, applied by `tokenizers` to each piece between
//! added tokens just as llama.cpp prefixes each raw fragment (step 2); there is no pre-tokenizer
//! (llama.cpp does not split the piece); CONTROL and UNKNOWN tokens are special added tokens and
//! USER_DEFINED tokens plain added tokens, all matched on the raw text (`normalized: false`)
//! (step 1). BOS/EOS come from a `TemplateProcessing` post-processor when `add_bos_token` /
//! `add_eos_token` ask for them, so `encode(text, true)` is llama.cpp's `tokenize(text,
//! add_special = true, parse_special = true)`.
//!
//! Decoding is `Replace("▁", " ")`, `ByteFallback` (runs of `<0xNN>` fused into UTF-8), `Fuse`,
//! and, with `add_space_prefix`, `Strip(' ', 1, 0)` for the prefix space, so
//! `decode(encode(text, false), true) == text` for text without special-token strings.
//!
//! Unigram is not used: it would choose the segmentation of best total score (Viterbi), which is
//! not what llama.cpp's greedy merging computes.
//!
//! # Checked against
//!
//! llama-tokenize's ids on tests/fixtures/gguf-spm (a sentencepiece-trained vocabulary, with and
//! without the space prefix, and as a Phi-3), a transcription of `llm_tokenizer_spm` on random
//! strings, and, when `HALO_SPM_CASES` is given, llama-tokenize on Llama 2's and Phi-3's 32k
//! vocabularies (tests/gguf_spm.rs).
//!
//! # Where it can differ from llama.cpp (none occurs with vocabularies sentencepiece trains)
//!
//! - Two merges of equal score: llama.cpp takes the leftmost, `BPE` the lower rank, and ranks are
//!   distinct (here: score, then merged token id, then split point). Sentencepiece BPE models
//!   give every piece its own score, so only different splits of one token tie, and those differ
//!   only when they overlap (`ab`+`a` and `a`+`ba` both making `aba` in one place). Vocabularies
//!   whose scores are all equal (some converted without `tokenizer.model`) can differ more.
//! - A character that is not a token but is part of a longer token: llama.cpp can still merge it,
//!   `BPE` turns it into bytes first. Sentencepiece vocabularies contain every character of every
//!   piece.
//! - Overlapping special-token texts: llama.cpp cuts the longest special text first, everywhere;
//!   `tokenizers` matches leftmost-longest.
//! - Phi-3's whitespace after special tokens: `tokenizers` strips Unicode whitespace, llama.cpp
//!   only C's `isspace` (so a U+00A0 right after `<|user|>` differs). Other models' LSTRIP/RSTRIP
//!   (jina, nomic-bert, modern-bert) are not SPM.
//! - llama.cpp corrects the types of the end-of-turn and fill-in-the-middle texts only while
//!   the file names no such token (`tokenizer.ggml.eot_token_id`, `.fim_pre_token_id`, ...) and
//!   only for the first such text it meets; here every listed text is corrected. It also makes
//!   `</s>` normal in Gemma 4 / PLaMo vocabularies, which are not SPM.
//! - A character whose bytes are not all `<0xNN>` tokens: llama.cpp aborts, here it becomes the
//!   UNKNOWN token (when there is one).

use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The `tokenizer.ggml.*` settings besides the vocabulary. `Default` is llama.cpp's for an SPM
/// vocabulary whose file says nothing: space prefix on, BOS 1 added, EOS 2 not added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpmOptions {
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: bool,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: BOS first when encoding with special tokens.
    pub add_bos_token: bool,
    /// `tokenizer.ggml.add_eos_token`: EOS last when encoding with special tokens.
    pub add_eos_token: bool,
    /// `general.name`: llama.cpp strips the whitespace after special tokens of Phi-3 models
    /// (a name containing `phi-3` or `phi3`, any case).
    pub general_name: Option<String>,
}

impl Default for SpmOptions {
    fn default() -> Self {
        SpmOptions {
            add_space_prefix: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            add_bos_token: true,
            add_eos_token: false,
            general_name: None,
        }
    }
}

/// Texts llama.cpp makes CONTROL whatever their token type says: the end-of-generation and
/// fill-in-the-middle tokens it recognises by text (`llama_vocab::impl::load`).
pub const CONTROL_BY_TEXT: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Texts llama.cpp makes USER_DEFINED (shown when decoding) whatever their type says.
pub const USER_DEFINED_BY_TEXT: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The token types llama.cpp tokenizes with: the file's, corrected by text as llama.cpp does
/// ([`CONTROL_BY_TEXT`], [`USER_DEFINED_BY_TEXT`]). Missing types are NORMAL.
pub fn effective_token_types(tokens: &[String], token_types: &[i32]) -> Vec<i32> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if USER_DEFINED_BY_TEXT.contains(&t.as_str()) {
                token_type::USER_DEFINED
            } else if CONTROL_BY_TEXT.contains(&t.as_str()) {
                token_type::CONTROL
            } else {
                token_types.get(i).copied().unwrap_or(token_type::NORMAL)
            }
        })
        .collect()
}

/// What makes an SPM vocabulary unusable. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpmError {
    #[error("tokenizer.ggml.tokens is empty")]
    Empty,
    #[error("tokenizer.ggml.tokens has {tokens} entries, more than token ids can number")]
    TooLarge { tokens: usize },
    #[error("tokenizer.ggml.{key} has {found} entries, tokenizer.ggml.tokens has {tokens}")]
    Length {
        key: &'static str,
        found: usize,
        tokens: usize,
    },
    #[error("tokenizer.ggml.tokens: token {second} repeats the text of token {first}: {text:?}")]
    Duplicate {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("tokenizer.ggml.{key} = {id} is not a token id (the vocabulary has {tokens})")]
    SpecialId {
        key: &'static str,
        id: u32,
        tokens: usize,
    },
    #[error("tokenizer.ggml.{key} is set but tokenizer.ggml.{id_key} is missing")]
    MissingSpecial {
        key: &'static str,
        id_key: &'static str,
    },
    #[error("building the tokenizer: {0}")]
    Build(String),
}

/// A `tokenizers::Tokenizer` equivalent to llama.cpp's SPM tokenizer for this vocabulary
/// (`tokenizer.ggml.tokens`, `.scores`, `.token_type`). `scores` and `token_types` may be empty
/// when the file lacks them (llama.cpp then takes 0.0 and NORMAL); otherwise they have one entry
/// per token (extra entries are ignored, as llama.cpp does).
pub fn spm_tokenizer(
    tokens: &[String],
    scores: &[f32],
    token_types: &[i32],
    options: &SpmOptions,
) -> Result<Tokenizer, SpmError> {
    let n = tokens.len();
    if n == 0 {
        return Err(SpmError::Empty);
    }
    if u32::try_from(n).is_err() {
        return Err(SpmError::TooLarge { tokens: n });
    }
    for (key, len) in [("scores", scores.len()), ("token_type", token_types.len())] {
        if len != 0 && len < n {
            return Err(SpmError::Length {
                key,
                found: len,
                tokens: n,
            });
        }
    }
    let score = |id: usize| scores.get(id).copied().unwrap_or(0.0);
    let types = effective_token_types(tokens, token_types);
    let kind = |id: usize| types[id];

    // Token texts as llama.cpp keeps them: an empty one is renamed, a repeated one is refused
    // (llama.cpp asserts that every text maps to one id).
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect();
    let mut vocab = Vocab::default();
    for (i, t) in texts.iter().enumerate() {
        if let Some(first) = vocab.insert(t.clone(), i as u32) {
            return Err(SpmError::Duplicate {
                text: t.clone(),
                first,
                second: i as u32,
            });
        }
    }

    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges(&texts, &score, &kind))
        .byte_fallback(true);
    if let Some(unk) = (0..n).find(|&i| kind(i) == token_type::UNKNOWN) {
        bpe = bpe.unk_token(texts[unk].clone());
    }
    let mut tokenizer = Tokenizer::new(bpe.build().map_err(|e| SpmError::Build(e.to_string()))?);

    let escape = Replace::new(" ", "\u{2581}").map_err(|e| SpmError::Build(e.to_string()))?;
    let normalizer: NormalizerWrapper = if options.add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new("\u{2581}".into()).into(), escape.into()]).into()
    } else {
        escape.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| SpmError::Build(e.to_string()))?;

    let unescape = Replace::new("\u{2581}", " ").map_err(|e| SpmError::Build(e.to_string()))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        unescape.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if options.add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));

    // Special (skipped by decode with skip_special_tokens) and user-defined tokens, matched on
    // the raw text. Ids come from the model's vocabulary, where every text is. Phi-3's swallow
    // the whitespace after them, but for <unk>, <s> and <|endoftext|>.
    let phi3 = options.general_name.as_deref().is_some_and(|name| {
        let name = name.to_lowercase();
        name.contains("phi-3") || name.contains("phi3")
    });
    let added = |i: usize, special: bool| {
        let rstrip = phi3 && !["<unk>", "<s>", "<|endoftext|>"].contains(&texts[i].as_str());
        AddedToken::from(texts[i].clone(), special)
            .normalized(false)
            .special(special)
            .rstrip(rstrip)
    };
    let special: Vec<AddedToken> = (0..n)
        .filter(|&i| matches!(kind(i), token_type::CONTROL | token_type::UNKNOWN))
        .map(|i| added(i, true))
        .collect();
    let user: Vec<AddedToken> = (0..n)
        .filter(|&i| kind(i) == token_type::USER_DEFINED)
        .map(|i| added(i, false))
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| SpmError::Build(e.to_string()))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| SpmError::Build(e.to_string()))?;

    let special_id = |key: &'static str, id: Option<u32>| -> Result<Option<u32>, SpmError> {
        match id {
            Some(id) if id as usize >= n => Err(SpmError::SpecialId { key, id, tokens: n }),
            id => Ok(id),
        }
    };
    let bos = special_id("bos_token_id", options.bos_token_id)?;
    let eos = special_id("eos_token_id", options.eos_token_id)?;
    let bos = match (options.add_bos_token, bos) {
        (false, _) => None,
        (true, Some(id)) => Some(id),
        (true, None) => {
            return Err(SpmError::MissingSpecial {
                key: "add_bos_token",
                id_key: "bos_token_id",
            })
        }
    };
    let eos = match (options.add_eos_token, eos) {
        (false, _) => None,
        (true, Some(id)) => Some(id),
        (true, None) => {
            return Err(SpmError::MissingSpecial {
                key: "add_eos_token",
                id_key: "eos_token_id",
            })
        }
    };
    if bos.is_some() || eos.is_some() {
        let mut specials = Vec::new();
        let (mut single, mut pair) = (Vec::new(), Vec::new());
        if let Some(id) = bos {
            specials.push(
                SpecialToken::new("bos".into(), vec![id], vec![texts[id as usize].clone()])
                    .map_err(|e| SpmError::Build(e.to_string()))?,
            );
            single.push("bos");
            pair.push("bos");
        }
        single.push("$A");
        pair.push("$A");
        if let Some(id) = eos {
            specials.push(
                SpecialToken::new("eos".into(), vec![id], vec![texts[id as usize].clone()])
                    .map_err(|e| SpmError::Build(e.to_string()))?,
            );
            single.push("eos");
            pair.push("eos");
        }
        if bos.is_some() {
            pair.push("bos:1");
        }
        pair.push("$B:1");
        if eos.is_some() {
            pair.push("eos:1");
        }
        let post = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|b| b.try_pair(pair))
            .map_err(SpmError::Build)?
            .special_tokens(specials)
            .build()
            .map_err(|e| SpmError::Build(e.to_string()))?;
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

/// Every split of a token into two tokens, highest score of the whole first (then lower token
/// id, then shorter left part, for a fixed order). `<0xNN>` tokens take no part as halves: a
/// symbol with their text can only come from the text itself, never from byte fallback.
fn merges(
    texts: &[String],
    score: &dyn Fn(usize) -> f32,
    kind: &dyn Fn(usize) -> i32,
) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let is_half = |s: &str| index.get(s).is_some_and(|&i| kind(i) != token_type::BYTE);
    let mut found: Vec<(f32, usize, usize)> = Vec::new();
    for (id, text) in texts.iter().enumerate() {
        for (k, _) in text.char_indices().skip(1) {
            if is_half(&text[..k]) && is_half(&text[k..]) {
                found.push((score(id), id, k));
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found
        .into_iter()
        .map(|(_, id, k)| (texts[id][..k].to_string(), texts[id][k..].to_string()))
        .collect()
}
