//! The tokenizer as the hub ships it: `tokenizer.json` through the `tokenizers` crate, with BOS
//! handling from `tokenizer_config.json` and EOS ids from `generation_config.json` and the model
//! config.

use crate::config::{read_json, token_ids, ModelConfig};
use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Tokenizer {
    /// Shared with the detokenizer (`shared`): a large vocabulary's tables are tens of MB.
    inner: Arc<tokenizers::Tokenizer>,
    path: PathBuf,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    /// Prepend BOS when encoding with special tokens and the post-processor did not.
    add_bos_token: bool,
    /// Append this id when encoding with special tokens (a GGUF's `add_eos_token`).
    append_eos: Option<u32>,
}

impl Tokenizer {
    /// A tokenizer built elsewhere (from a GGUF file's metadata): `path` is named in errors,
    /// BOS is prepended and `append_eos` appended when encoding with special tokens.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        path: PathBuf,
        bos_token_id: Option<u32>,
        eos_token_ids: Vec<u32>,
        add_bos_token: bool,
        append_eos: Option<u32>,
    ) -> Tokenizer {
        Tokenizer {
            inner: Arc::new(inner),
            path,
            bos_token_id,
            eos_token_ids,
            add_bos_token,
            append_eos,
        }
    }

    pub fn from_dir(dir: &Path, config: &ModelConfig) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile { path });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;

        let tc_path = dir.join("tokenizer_config.json");
        let tc = if tc_path.is_file() {
            Some(read_json(&tc_path)?)
        } else {
            None
        };
        let special = |key: &str| -> Option<u32> {
            let v = tc.as_ref()?.get(key)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))?;
            inner.token_to_id(s)
        };
        let bos_token_id = config.bos_token_id.or_else(|| special("bos_token"));
        let add_bos_token = tc
            .as_ref()
            .and_then(|t| t.get("add_bos_token"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let gc_path = dir.join("generation_config.json");
        let mut eos_token_ids = if gc_path.is_file() {
            token_ids(read_json(&gc_path)?.get("eos_token_id"))
        } else {
            Vec::new()
        };
        for id in config
            .eos_token_ids
            .iter()
            .copied()
            .chain(special("eos_token"))
        {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        Ok(Tokenizer {
            inner: Arc::new(inner),
            path,
            bos_token_id,
            eos_token_ids,
            add_bos_token,
            append_eos: None,
        })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| ModelError::Tokenizer {
                    path: self.path.clone(),
                    msg: e.to_string(),
                })?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens && self.add_bos_token {
            if let Some(bos) = self.bos_token_id {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        if let Some(eos) = self.append_eos.filter(|_| add_special_tokens) {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })
    }

    /// The file the tokenizer was read from (named in errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The same tokenizer, shared rather than copied.
    pub fn shared(&self) -> Arc<tokenizers::Tokenizer> {
        Arc::clone(&self.inner)
    }

    /// Tokens the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether encoding with special tokens prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos_token
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
}
