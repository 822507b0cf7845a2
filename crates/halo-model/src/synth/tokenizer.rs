//! A synthetic byte-level BPE `tokenizer.json` of any vocabulary size from 258 up.
//!
//! Layout (the same structure as the oracle's trained tokenizers): id 0 `<s>`, id 1 `</s>`, ids
//! 2..=257 the 256 byte symbols (id = 2 + byte, in GPT-2's byte-to-unicode spelling), then merges
//! made in rounds: round 1 joins each of 64 common characters (space, newline, letters, digits)
//! with each non-whitespace one of them; round r joins every round r-1 token with those 62
//! characters again. Round r tokens are r + 1 characters long and unique by construction, every id
//! decodes to bytes, and ordinary text is encoded through the merges.

use super::preset::{BOS_ID, EOS_ID};
use super::SynthError;
use serde_json::{json, Map, Value};

/// The byte-level pre-tokenizer's spelling of each byte: printable Latin-1 bytes stand for
/// themselves, the rest are shifted to U+0100 onwards in byte order.
pub fn byte_symbols() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut out = ['\0'; 256];
    let mut shifted = 256u32;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(shifted).unwrap_or('\0');
            shifted += 1;
            c
        };
    }
    out
}

/// The first id after the special and byte tokens.
pub const FIRST_MERGE_ID: usize = 258;

/// A vocabulary: token strings by id, and the merges in rank order as pairs of ids.
pub struct Vocabulary {
    pub tokens: Vec<String>,
    pub merges: Vec<(u32, u32)>,
}

/// The vocabulary of `vocab_size` tokens.
pub fn vocabulary(vocab_size: usize) -> Result<Vocabulary, SynthError> {
    if vocab_size < FIRST_MERGE_ID {
        return Err(SynthError::VocabTooSmall {
            vocab_size,
            min: FIRST_MERGE_ID,
        });
    }
    let sym = byte_symbols();
    let mut tokens: Vec<String> = vec!["<s>".into(), "</s>".into()];
    tokens.extend(sym.iter().map(|c| c.to_string()));
    let byte_id = |b: u8| 2 + u32::from(b);

    let mut common: Vec<u8> = vec![b' ', b'\n'];
    common.extend(b'a'..=b'z');
    common.extend(b'A'..=b'Z');
    common.extend(b'0'..=b'9');
    // a word-piece never continues with whitespace under the ByteLevel split, so the right side
    // of a merge is never whitespace
    let right: Vec<u8> = common
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();

    let mut merges = Vec::with_capacity(vocab_size - FIRST_MERGE_ID);
    let mut round: Vec<u32> = common.iter().map(|&b| byte_id(b)).collect();
    'rounds: while tokens.len() < vocab_size {
        let mut next = Vec::with_capacity(round.len() * right.len());
        for &left in &round {
            for &b in &right {
                if tokens.len() == vocab_size {
                    break 'rounds;
                }
                let id = tokens.len() as u32;
                let mut s = tokens[left as usize].clone();
                s.push(sym[b as usize]);
                tokens.push(s);
                merges.push((left, byte_id(b)));
                next.push(id);
            }
        }
        round = next;
    }
    Ok(Vocabulary { tokens, merges })
}

/// The whole `tokenizer.json` document.
pub fn tokenizer_json(vocab_size: usize) -> Result<Value, SynthError> {
    let Vocabulary { tokens, merges } = vocabulary(vocab_size)?;
    let special = |id: u32, content: &str| {
        json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true,
        })
    };
    let mut vocab = Map::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(id));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!([tokens[a as usize], tokens[b as usize]]))
        .collect();
    let byte_level = |add_prefix_space: bool| {
        json!({
            "type": "ByteLevel", "add_prefix_space": add_prefix_space,
            "trim_offsets": true, "use_regex": true,
        })
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS_ID, "<s>"), special(EOS_ID, "</s>")],
        "normalizer": null,
        "pre_tokenizer": byte_level(false),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                { "SpecialToken": { "id": "<s>", "type_id": 0 } },
                { "Sequence": { "id": "A", "type_id": 0 } },
            ],
            "pair": [
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "Sequence": { "id": "B", "type_id": 1 } },
            ],
            "special_tokens": { "<s>": { "id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"] } },
        },
        "decoder": byte_level(true),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn load(vocab_size: usize) -> tokenizers::Tokenizer {
        let json = serde_json::to_string(&tokenizer_json(vocab_size).unwrap()).unwrap();
        tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap()
    }

    #[test]
    fn byte_symbols_are_distinct_and_keep_printable_ascii() {
        let s = byte_symbols();
        assert_eq!(s.iter().collect::<HashSet<_>>().len(), 256);
        assert_eq!(s[b'a' as usize], 'a');
        assert_eq!(s[b' ' as usize], '\u{120}');
        assert_eq!(s[b'\n' as usize], '\u{10A}');
    }

    #[test]
    fn tokens_are_unique_and_merges_refer_to_earlier_tokens() {
        for size in [258, 512, 5000, 32000] {
            let Vocabulary { tokens, merges } = vocabulary(size).unwrap();
            assert_eq!(tokens.len(), size);
            assert_eq!(merges.len(), size - FIRST_MERGE_ID);
            assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), size);
            for (i, &(a, b)) in merges.iter().enumerate() {
                let id = FIRST_MERGE_ID + i;
                assert!((a as usize) < id && (b as usize) < id);
                assert_eq!(
                    tokens[id],
                    format!("{}{}", tokens[a as usize], tokens[b as usize])
                );
            }
        }
        assert!(matches!(
            vocabulary(100),
            Err(SynthError::VocabTooSmall { .. })
        ));
    }

    #[test]
    fn every_id_decodes_and_text_round_trips() {
        let tok = load(32000);
        assert_eq!(tok.get_vocab_size(true), 32000);
        assert_eq!(tok.token_to_id("<s>"), Some(0));
        assert_eq!(tok.token_to_id("</s>"), Some(1));
        for text in [
            "The quick brown fox jumps over the lazy dog 12345.\nSecond line!",
            "héllo wörld — ünïcödé, 日本語のテキスト, emoji 🎉🦀, tab\tand  two spaces",
        ] {
            let enc = tok.encode(text, true).unwrap();
            assert_eq!(enc.get_ids()[0], BOS_ID);
            assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        }
        // the merges do work: plain words take fewer tokens than bytes
        let text = "the model writes random weights and a tokenizer for benchmarks";
        let n = tok.encode(text, false).unwrap().get_ids().len();
        assert!(n * 2 < text.len(), "{n} tokens for {} bytes", text.len());
        // every byte id decodes to its byte
        let sym = byte_symbols();
        for b in 0..=255u8 {
            assert_eq!(
                tok.id_to_token(2 + u32::from(b)),
                Some(sym[b as usize].to_string())
            );
        }
        let all: Vec<u32> = (2..32000).collect();
        assert!(!tok.decode(&all, true).unwrap().is_empty());
    }
}
