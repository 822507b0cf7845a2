//! One test per way a GGUF file can be wrong: each is one clear typed error naming the file
//! (and the tensor or key where it applies), never a panic or an allocation sized by the file.
//! The files are written by halo's own `GgufWriter`, then damaged.

use halo_model::gguf::{Array, GgufError, GgufWriter, Value};
use halo_model::{Model, ModelError, StoredDType};
use std::path::{Path, PathBuf};

const HIDDEN: usize = 8;
const FF: usize = 16;
const TOKENS: [&str; 5] = ["<s>", "</s>", "a", "b", "ab"];

fn f32_bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (((i as u32 * 7 + seed) % 13) as f32 / 13.0 - 0.5).to_le_bytes())
        .collect()
}

/// A complete one-layer llama model, valid, in F32.
fn writer_without(skip: &str) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama")
        .add_u32("llama.context_length", 64)
        .add_u32("llama.embedding_length", HIDDEN as u32)
        .add_u32("llama.block_count", 1)
        .add_u32("llama.feed_forward_length", FF as u32)
        .add_u32("llama.attention.head_count", 2)
        .add_u32("llama.attention.head_count_kv", 2)
        .add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .add_f32("llama.rope.freq_base", 10000.0)
        .add_u32("llama.rope.dimension_count", 4)
        .add_str("tokenizer.ggml.model", "gpt2")
        .add_str("tokenizer.ggml.pre", "gpt-2")
        .add_strings("tokenizer.ggml.tokens", &TOKENS)
        .add(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![3, 3, 1, 1, 1])),
        )
        .add_strings("tokenizer.ggml.merges", &["a b"])
        .add_u32("tokenizer.ggml.bos_token_id", 0)
        .add_u32("tokenizer.ggml.eos_token_id", 1)
        .add_bool("tokenizer.ggml.add_bos_token", true);
    let v = TOKENS.len();
    let tensors: Vec<(&str, Vec<usize>)> = vec![
        ("token_embd.weight", vec![v, HIDDEN]),
        ("output_norm.weight", vec![HIDDEN]),
        ("output.weight", vec![v, HIDDEN]),
        ("blk.0.attn_norm.weight", vec![HIDDEN]),
        ("blk.0.ffn_norm.weight", vec![HIDDEN]),
        ("blk.0.attn_q.weight", vec![HIDDEN, HIDDEN]),
        ("blk.0.attn_k.weight", vec![HIDDEN, HIDDEN]),
        ("blk.0.attn_v.weight", vec![HIDDEN, HIDDEN]),
        ("blk.0.attn_output.weight", vec![HIDDEN, HIDDEN]),
        ("blk.0.ffn_gate.weight", vec![FF, HIDDEN]),
        ("blk.0.ffn_up.weight", vec![FF, HIDDEN]),
        ("blk.0.ffn_down.weight", vec![HIDDEN, FF]),
    ];
    for (i, (name, shape)) in tensors.into_iter().enumerate() {
        if name != skip {
            let n = shape.iter().product();
            w.add_tensor(name, &shape, StoredDType::F32, f32_bytes(n, i as u32))
                .unwrap();
        }
    }
    w
}

fn good() -> Vec<u8> {
    writer_without("").to_bytes()
}

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Opens and checks; returns the error and its message, which must name the file.
fn open_err(bytes: &[u8]) -> (ModelError, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), bytes);
    let e = Model::open(&path)
        .and_then(|m| m.check_tensors().map(|_| m))
        .err()
        .expect("must fail");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("model.gguf"), "names the file: {msg}");
    (e, msg)
}

fn gguf_err(e: &ModelError) -> &GgufError {
    match e {
        ModelError::Gguf { source, .. } => source,
        other => panic!("expected a GGUF error, got {other:?}"),
    }
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

/// Byte positions of a tensor info's dims, type and offset fields.
fn tensor_fields(bytes: &[u8], name: &str) -> (usize, usize, usize) {
    let at = find(bytes, name.as_bytes()) + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let dims = at + 4;
    let ty = dims + 8 * n_dims;
    (dims, ty, ty + 4)
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn the_good_file_opens_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::open(&write(dir.path(), &good())).unwrap();
    m.check_tensors().unwrap();
    assert_eq!(m.config.vocab_size, 5);
    assert_eq!(m.config.head_dim, 4);
    assert!(!m.config.tie_word_embeddings);
    assert_eq!(m.tokenizer.encode("ab", true).unwrap(), vec![0, 4]);
    assert_eq!(
        m.tokenizer.encode("<s>ab</s>", false).unwrap(),
        vec![0, 4, 1]
    );
}

#[test]
fn bad_magic() {
    let mut b = good();
    b[..4].copy_from_slice(b"GGML");
    let (e, msg) = open_err(&b);
    assert!(matches!(gguf_err(&e), GgufError::BadMagic { .. }), "{msg}");
}

#[test]
fn bad_version() {
    for v in [1u32, 4, 0x0300_0000] {
        let mut b = good();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let (e, msg) = open_err(&b);
        assert!(
            matches!(gguf_err(&e), GgufError::BadVersion { version } if *version == v),
            "{msg}"
        );
    }
    // Version 2 has the same layout and opens.
    let mut w = writer_without("");
    w.set_version(2);
    let dir = tempfile::tempdir().unwrap();
    Model::open(&write(dir.path(), &w.to_bytes())).unwrap();
}

#[test]
fn truncated_header() {
    let b = good();
    let cut = find(&b, b"tokenizer.ggml.tokens") + 40;
    let (e, msg) = open_err(&b[..cut]);
    assert!(
        matches!(
            gguf_err(&e),
            GgufError::TruncatedHeader { .. } | GgufError::LengthPastEnd { .. }
        ),
        "{msg}"
    );
    let (e, msg) = open_err(&b[..10]);
    assert!(
        matches!(gguf_err(&e), GgufError::TruncatedHeader { .. }),
        "{msg}"
    );
}

#[test]
fn truncated_data() {
    let b = good();
    let (e, msg) = open_err(&b[..b.len() - 100]);
    assert!(
        matches!(gguf_err(&e), GgufError::TruncatedData { .. }),
        "{msg}"
    );
    assert!(msg.contains("blk.0.ffn_down.weight"), "{msg}");
}

#[test]
fn string_length_past_the_end() {
    let mut b = good();
    // The first key's length field follows the 24-byte header.
    put_u64(&mut b, 24, 1 << 40);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::LengthPastEnd { .. }),
        "{msg}"
    );
}

#[test]
fn array_length_past_the_end_is_not_an_allocation() {
    let mut b = good();
    // key, value type (ARRAY), element type (STRING), then the count.
    let count_at = find(&b, b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 8;
    put_u64(&mut b, count_at, 1 << 60);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::LengthPastEnd { length, .. } if *length == 1 << 60),
        "{msg}"
    );
    assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");
}

#[test]
fn offset_past_the_end() {
    let mut b = good();
    let (_, _, offset_at) = tensor_fields(&b, "blk.0.attn_v.weight");
    put_u64(&mut b, offset_at, 1 << 20);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::OffsetPastEnd { .. }),
        "{msg}"
    );
    assert!(msg.contains("blk.0.attn_v.weight"), "{msg}");
    // Misaligned offsets are refused too.
    let mut b = good();
    put_u64(&mut b, offset_at, 4);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::Misaligned { .. }),
        "{msg}"
    );
}

#[test]
fn tensor_size_past_the_end() {
    let mut b = good();
    let (dims_at, _, _) = tensor_fields(&b, "blk.0.attn_q.weight");
    put_u64(&mut b, dims_at + 8, 1 << 20);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::TruncatedData { .. }),
        "{msg}"
    );
    assert!(msg.contains("blk.0.attn_q.weight"), "{msg}");
    // Dimensions whose product overflows.
    put_u64(&mut b, dims_at, 1 << 62);
    put_u64(&mut b, dims_at + 8, 1 << 62);
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::SizeOverflow { .. }),
        "{msg}"
    );
}

#[test]
fn unknown_or_unsupported_tensor_type() {
    for (ty, name) in [(3u32, "type Q4_1"), (999, "type 999 (unknown)")] {
        let mut b = good();
        let (_, type_at, _) = tensor_fields(&b, "blk.0.ffn_gate.weight");
        b[type_at..type_at + 4].copy_from_slice(&ty.to_le_bytes());
        let (e, msg) = open_err(&b);
        assert!(
            matches!(gguf_err(&e), GgufError::UnsupportedType { .. }),
            "{msg}"
        );
        assert!(
            msg.contains("blk.0.ffn_gate.weight")
                && msg.contains(name)
                && msg.contains(&StoredDType::supported_list()),
            "{msg}"
        );
    }
}

#[test]
fn missing_tensor() {
    let (e, msg) = open_err(&writer_without("blk.0.ffn_up.weight").to_bytes());
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("blk.0.ffn_up.weight") && msg.contains("mlp.up_proj"),
        "{msg}"
    );
}

#[test]
fn shape_disagreeing_with_the_metadata() {
    let mut w = writer_without("blk.0.ffn_down.weight");
    w.add_tensor(
        "blk.0.ffn_down.weight",
        &[HIDDEN, FF / 2],
        StoredDType::F32,
        f32_bytes(HIDDEN * FF / 2, 0),
    )
    .unwrap();
    let (e, msg) = open_err(&w.to_bytes());
    assert!(matches!(e, ModelError::TensorShape { .. }), "{msg}");
    assert!(
        msg.contains("blk.0.ffn_down.weight") && msg.contains("[8, 8]"),
        "{msg}"
    );
}

#[test]
fn unknown_architecture_names_the_supported_ones() {
    let mut w = writer_without("");
    w.add_str("general.architecture", "gpt2");
    let (e, msg) = open_err(&w.to_bytes());
    assert!(
        matches!(gguf_err(&e), GgufError::UnknownArchitecture { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("'gpt2'") && msg.contains("llama, qwen2"),
        "{msg}"
    );
}

#[test]
fn alignment_must_be_a_power_of_two() {
    let mut w = writer_without("");
    w.set_alignment(64);
    let dir = tempfile::tempdir().unwrap();
    Model::open(&write(dir.path(), &w.to_bytes()))
        .unwrap()
        .check_tensors()
        .unwrap();
    let mut b = w.to_bytes();
    let at = find(&b, b"general.alignment") + "general.alignment".len() + 4;
    b[at..at + 4].copy_from_slice(&48u32.to_le_bytes());
    let (e, msg) = open_err(&b);
    assert!(
        matches!(gguf_err(&e), GgufError::BadAlignment { alignment: 48 }),
        "{msg}"
    );
}

#[test]
fn unsupported_pre_tokenizer_is_named() {
    let mut w = writer_without("");
    w.add_str("tokenizer.ggml.pre", "chatglm-bpe");
    let (e, msg) = open_err(&w.to_bytes());
    assert!(matches!(gguf_err(&e), GgufError::Tokenizer { .. }), "{msg}");
    assert!(
        msg.contains("chatglm-bpe") && msg.contains("llama-bpe"),
        "{msg}"
    );
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut a = Array::U8(vec![1]);
    for _ in 0..8 {
        a = Array::Array(vec![a]);
    }
    let mut w = writer_without("");
    w.add("x.nested", Value::Array(a));
    let (e, msg) = open_err(&w.to_bytes());
    assert!(matches!(gguf_err(&e), GgufError::TooDeep { .. }), "{msg}");
}

/// A layer count sizes per-layer tables before any tensor is looked at: an absurd one is an
/// error naming the key, not an allocation (found by the gguf_parse fuzz target).
#[test]
fn an_absurd_block_count_is_refused_before_anything_is_sized() {
    let mut w = writer_without("");
    w.add_u32("llama.block_count", u32::MAX - 6);
    let (_, msg) = open_err(&w.to_bytes());
    assert!(
        msg.contains("llama.block_count") && msg.contains("at most 4096"),
        "{msg}"
    );
}
