//! A `tokenizers::Tokenizer` from GGUF metadata, so everything above the model (engine,
//! detokenizer, server) is unchanged. `gpt2` files are byte-level BPE with the pre-tokenizer
//! regexes llama.cpp uses for `tokenizer.ggml.pre`; `llama` (SentencePiece) files go to
//! [`super::spm`].

use super::error::GgufError;
use super::metadata::Metadata;
use super::spm::{spm_tokenizer, SpmOptions};
use super::value::Array;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// The GPT-2 split (`gpt-2`, and the last stage of `default`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split, case-insensitive contractions spelled out as llama.cpp does.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub const SUPPORTED_PRE: &str = "default, gpt-2, llama-bpe (llama3, llama-v3), qwen2";

/// The regexes applied in turn (each splits the pieces of the one before, matches kept as
/// their own pieces) and whether whole words found in the vocabulary skip merging.
fn pre_tokenizer(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        "default" => (
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ),
        "gpt-2" => (&[GPT2], false),
        "llama3" | "llama-v3" | "llama-bpe" => (&[LLAMA3], true),
        "qwen2" => (&[QWEN2], false),
        _ => return None,
    })
}

/// The parts of a GGUF tokenizer halo's [`crate::Tokenizer`] wraps.
pub struct GgufTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_token_id: Option<u32>,
    pub add_bos_token: bool,
    /// EOS appended when encoding with special tokens (`tokenizer.ggml.add_eos_token`).
    pub append_eos: Option<u32>,
}

pub fn build(meta: &Metadata) -> Result<GgufTokenizer, GgufError> {
    let model = meta.str("tokenizer.ggml.model")?;
    let tokens =
        meta.opt_strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| GgufError::MissingKey {
                key: "tokenizer.ggml.tokens".into(),
            })?;
    let types = token_types(meta, tokens.len())?;
    let bos = meta.opt_u32("tokenizer.ggml.bos_token_id")?;
    let eos = meta.opt_u32("tokenizer.ggml.eos_token_id")?;
    for (k, id) in [("bos", bos), ("eos", eos)] {
        if id.is_some_and(|id| id as usize >= tokens.len()) {
            return Err(GgufError::InvalidValue {
                key: format!("tokenizer.ggml.{k}_token_id"),
                msg: format!("{} is outside the {} tokens", id.unwrap_or(0), tokens.len()),
            });
        }
    }
    // `self_adds` = the tokenizer's own post-processor adds BOS/EOS (spm.rs does), so the
    // wrapper must not add them a second time.
    let (inner, default_bos, self_adds) = match model {
        "gpt2" => {
            let pre = meta.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
            let merges = meta.opt_strings("tokenizer.ggml.merges")?.ok_or_else(|| {
                GgufError::MissingKey {
                    key: "tokenizer.ggml.merges".into(),
                }
            })?;
            let (mut inner, llama3) = byte_level_bpe(&tokens, &merges, pre)?;
            add_special_tokens(&mut inner, &tokens, &types)?;
            // llama.cpp adds BOS by default for the Llama 3 pre-tokenizers only.
            (inner, llama3, false)
        }
        // spm.rs adds its own special tokens (with llama.cpp's per-model strip rules).
        "llama" => (spm(meta, &tokens, &types)?, true, true),
        other => {
            return Err(GgufError::Tokenizer {
                msg: format!(
                    "tokenizer.ggml.model '{other}' is not supported (supported: gpt2, llama)"
                ),
            })
        }
    };
    let add_bos_token = meta
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_bos);
    let add_eos_token = meta
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    Ok(GgufTokenizer {
        inner,
        bos_token_id: bos,
        add_bos_token: add_bos_token && bos.is_some() && !self_adds,
        append_eos: eos.filter(|_| add_eos_token && !self_adds),
    })
}

fn token_types(meta: &Metadata, n: usize) -> Result<Vec<i32>, GgufError> {
    let key = "tokenizer.ggml.token_type";
    match meta.opt_array(key)? {
        None => Ok(vec![1; n]),
        Some(Array::I32(t)) if t.len() == n => Ok(t.clone()),
        Some(a) => Err(GgufError::InvalidValue {
            key: key.into(),
            msg: format!(
                "expected {n} INT32 entries (one per token), found {} {}",
                a.len(),
                a.elem_name()
            ),
        }),
    }
}

fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    pre: &str,
) -> Result<(tokenizers::Tokenizer, bool), GgufError> {
    let (regexes, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| GgufError::Tokenizer {
        msg: format!("tokenizer.ggml.pre '{pre}' is not supported (supported: {SUPPORTED_PRE})"),
    })?;
    let err = |e: tokenizers::Error| GgufError::Tokenizer { msg: e.to_string() };
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        // A repeated token keeps its first id, as a lookup in llama.cpp finds it.
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    // llama.cpp splits each merge at the first space after its first character, and ignores
    // merges whose parts or result are not tokens (the tokenizers crate refuses them).
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| {
            let at = m.char_indices().skip(1).find(|&(_, c)| c == ' ')?.0;
            let (a, b) = (&m[..at], &m[at + 1..]);
            (vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(&format!("{a}{b}")))
            .then(|| (a.to_owned(), b.to_owned()))
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(err)?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex((*r).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(err)?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, true, false).into());
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner
        .with_pre_tokenizer(Some(Sequence::new(steps)))
        .with_decoder(Some(ByteLevelDecoder::default()));
    Ok((inner, ignore_merges))
}

/// Control and user-defined tokens are matched whole in the input, before the model splits
/// text, as llama.cpp does when it parses special tokens.
fn add_special_tokens(
    inner: &mut tokenizers::Tokenizer,
    tokens: &[String],
    types: &[i32],
) -> Result<(), GgufError> {
    let of_type = |want: i32| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(t, &ty)| ty == want && !t.is_empty())
            .map(|(t, _)| AddedToken::from(t.clone(), want == TOKEN_CONTROL).normalized(false))
            .collect()
    };
    // Control tokens are special (skipped when decoding with skip_special_tokens); user-defined
    // ones are text.
    let err = |e: tokenizers::Error| GgufError::Tokenizer { msg: e.to_string() };
    inner
        .add_special_tokens(of_type(TOKEN_CONTROL))
        .map_err(err)?;
    inner.add_tokens(of_type(TOKEN_USER_DEFINED)).map_err(err)?;
    Ok(())
}

/// A SentencePiece vocabulary through [`super::spm`], with llama.cpp's defaults for the
/// settings the file leaves out.
fn spm(
    meta: &Metadata,
    tokens: &[String],
    types: &[i32],
) -> Result<tokenizers::Tokenizer, GgufError> {
    let scores = match meta.opt_array("tokenizer.ggml.scores")? {
        None => Vec::new(),
        Some(Array::F32(s)) => s.clone(),
        Some(a) => {
            return Err(GgufError::WrongType {
                key: "tokenizer.ggml.scores".into(),
                expected: "an array of FLOAT32",
                found: format!("ARRAY of {}", a.elem_name()),
            })
        }
    };
    // Field by field over the defaults, so settings spm.rs adds keep their defaults here.
    let mut options = SpmOptions::default();
    if let Some(v) = meta.opt_bool("tokenizer.ggml.add_space_prefix")? {
        options.add_space_prefix = v;
    }
    if let Some(id) = meta.opt_u32("tokenizer.ggml.bos_token_id")? {
        options.bos_token_id = Some(id);
    }
    if let Some(id) = meta.opt_u32("tokenizer.ggml.eos_token_id")? {
        options.eos_token_id = Some(id);
    }
    if let Some(v) = meta.opt_bool("tokenizer.ggml.add_bos_token")? {
        options.add_bos_token = v;
    }
    if let Some(v) = meta.opt_bool("tokenizer.ggml.add_eos_token")? {
        options.add_eos_token = v;
    }
    options.general_name = meta.opt_str("general.name")?.map(str::to_owned);
    spm_tokenizer(tokens, &scores, types, &options)
        .map_err(|e| GgufError::Tokenizer { msg: e.to_string() })
}
