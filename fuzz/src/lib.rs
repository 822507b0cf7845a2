//! Shared fixtures of the fuzz targets: the reference tokenizer, loaded once per process, and a
//! byte-to-id mapping. Kept out of the targets so each target file is only its property.

use halo_model::chat_template::ChatTemplate;
use std::path::PathBuf;
use std::sync::OnceLock;
use tokenizers::Tokenizer;

/// tiny-mha's directory: `../../shared/models/tiny-mha` next to the repository checkout, else
/// `$HALO_SHARED_DIR/models/tiny-mha` (the same lookup as `halo_engine::testing`).
pub fn tiny_mha_dir() -> PathBuf {
    let local = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/models/tiny-mha"
    ));
    if local.join("tokenizer.json").exists() {
        return local;
    }
    match std::env::var_os("HALO_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir).join("models/tiny-mha"),
        None => local,
    }
}

/// tiny-mha's byte-level BPE tokenizer. A missing file is a setup error, so it panics once with
/// the path rather than letting every input "crash".
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = tiny_mha_dir().join("tokenizer.json");
        Tokenizer::from_file(&path)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

/// A ChatML-style template with the checks real templates make (roles, alternation), compiled
/// once.
pub fn chat_template() -> &'static ChatTemplate {
    static TEMPLATE: OnceLock<ChatTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}\
             {% if m['role'] not in ['system', 'user', 'assistant'] %}\
             {{ raise_exception('unknown role ' ~ m['role']) }}{% endif %}\
             <|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}\
             {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            "<s>",
            "</s>",
        )
        .expect("the fixed template compiles")
    })
}

/// The vocabulary size including added (special) tokens.
pub fn vocab_size() -> usize {
    tokenizer().get_vocab_size(true)
}

/// Two little-endian bytes per id, reduced modulo `vocab`: every input is a valid id sequence,
/// and small mutations change one id at a time. A trailing odd byte is ignored.
pub fn ids_from_bytes(bytes: &[u8], vocab: usize) -> Vec<u32> {
    bytes
        .chunks_exact(2)
        .map(|c| (u16::from_le_bytes([c[0], c[1]]) as usize % vocab) as u32)
        .collect()
}
