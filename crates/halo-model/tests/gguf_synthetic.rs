//! GGUF features the llama.cpp fixtures do not cover, on files written by `GgufWriter`: qwen2
//! (biases, no Q/K permutation, tied head), the llama Q/K un-permutation on biases and quantized
//! rows, llama3 `rope_freqs`, linear RoPE scaling, split sets, directories, and metadata of
//! every value type (also as gguf-py writes it).

use halo_model::gguf::{Array, GgufError, GgufFile, GgufWriter, Value};
use halo_model::{Architecture, Model, ModelError, ModelFormat, RopeScaling, StoredDType};
use std::path::{Path, PathBuf};

const HIDDEN: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 32;
const FF: usize = 64;
const TOKENS: [&str; 5] = ["<s>", "</s>", "a", "b", "ab"];

fn f32_bytes(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((i * 31 + seed * 7) as f32).to_le_bytes())
        .collect()
}

struct Spec {
    arch: &'static str,
    bias: bool,
    tied: bool,
    /// Type of the attention matrices.
    attn: StoredDType,
}

fn tensors(s: &Spec) -> Vec<(String, Vec<usize>, StoredDType)> {
    let f = StoredDType::F32;
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![TOKENS.len(), HIDDEN],
            f,
        ),
        ("output_norm.weight".into(), vec![HIDDEN], f),
    ];
    if !s.tied {
        t.push(("output.weight".into(), vec![TOKENS.len(), HIDDEN], f));
    }
    let mut layer = |n: &str, shape: Vec<usize>, d| t.push((format!("blk.0.{n}"), shape, d));
    layer("attn_norm.weight", vec![HIDDEN], f);
    layer("ffn_norm.weight", vec![HIDDEN], f);
    layer("attn_q.weight", vec![q, HIDDEN], s.attn);
    layer("attn_k.weight", vec![kv, HIDDEN], s.attn);
    layer("attn_v.weight", vec![kv, HIDDEN], s.attn);
    layer("attn_output.weight", vec![HIDDEN, q], s.attn);
    if s.bias {
        layer("attn_q.bias", vec![q], f);
        layer("attn_k.bias", vec![kv], f);
        layer("attn_v.bias", vec![kv], f);
    }
    layer("ffn_gate.weight", vec![FF, HIDDEN], f);
    layer("ffn_up.weight", vec![FF, HIDDEN], f);
    layer("ffn_down.weight", vec![HIDDEN, FF], f);
    t
}

/// Bytes of a tensor: f32 counting values, or Q8_0 blocks whose quants count rows (so a row's
/// identity survives any row reordering).
fn tensor_bytes(shape: &[usize], d: StoredDType, seed: usize) -> Vec<u8> {
    let n: usize = shape.iter().product();
    match d {
        StoredDType::F32 => f32_bytes(n, seed),
        StoredDType::Q8_0 => {
            let cols = *shape.last().unwrap();
            let mut out = Vec::new();
            for row in 0..n / cols {
                for _ in 0..cols / 32 {
                    out.extend_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
                    out.extend((0..32).map(|_| (row as i8).to_le_bytes()[0]));
                }
            }
            out
        }
        other => panic!("{other}"),
    }
}

fn writer(s: &Spec) -> GgufWriter {
    let a = s.arch;
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", a)
        .add_u32(&format!("{a}.context_length"), 128)
        .add_u32(&format!("{a}.embedding_length"), HIDDEN as u32)
        .add_u32(&format!("{a}.block_count"), 1)
        .add_u32(&format!("{a}.feed_forward_length"), FF as u32)
        .add_u32(&format!("{a}.attention.head_count"), HEADS as u32)
        .add_u32(&format!("{a}.attention.head_count_kv"), KV_HEADS as u32)
        .add_f32(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-6)
        .add_f32(&format!("{a}.rope.freq_base"), 1e6)
        .add_str("tokenizer.ggml.model", "gpt2")
        .add_str(
            "tokenizer.ggml.pre",
            if a == "qwen2" { "qwen2" } else { "llama-bpe" },
        )
        .add_strings("tokenizer.ggml.tokens", &TOKENS)
        .add(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![3, 3, 1, 1, 1])),
        )
        .add_strings("tokenizer.ggml.merges", &["a b"])
        .add_u32("tokenizer.ggml.bos_token_id", 0)
        .add_u32("tokenizer.ggml.eos_token_id", 1)
        .add_str("tokenizer.chat_template", "{{ messages }}");
    for (i, (name, shape, d)) in tensors(s).into_iter().enumerate() {
        w.add_tensor(&name, &shape, d, tensor_bytes(&shape, d, i))
            .unwrap();
    }
    w
}

fn save(dir: &Path, name: &str, w: &GgufWriter) -> PathBuf {
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

/// The converter's Q/K order for rows `0..rows` in heads of `head_rows`: stored row `r` holds
/// HF row `stored_to_hf(r)`.
fn stored_to_hf(r: usize, head_rows: usize) -> usize {
    let (head, within) = (r / head_rows, r % head_rows);
    head * head_rows + (within % 2) * (head_rows / 2) + within / 2
}

#[test]
fn qwen2_has_biases_a_tied_head_and_no_permutation() {
    let spec = Spec {
        arch: "qwen2",
        bias: true,
        tied: true,
        attn: StoredDType::F32,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), "q.gguf", &writer(&spec));
    let m = Model::open(&path).unwrap();
    m.check_tensors().unwrap();
    let c = &m.config;
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    assert_eq!(
        (c.head_dim, c.num_key_value_heads, c.rms_norm_eps),
        (32, 1, 1e-6)
    );
    assert_eq!(c.rope.theta, 1e6);
    assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(
        m.format,
        ModelFormat::Gguf {
            version: 3,
            files: 1
        }
    );
    let (i, (_, shape, _)) = tensors(&spec)
        .into_iter()
        .enumerate()
        .find(|(_, t)| t.0 == "blk.0.attn_q.weight")
        .unwrap();
    let q = m
        .weights
        .get("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(&q.bytes[..], &tensor_bytes(&shape, StoredDType::F32, i)[..]);
}

#[test]
fn llama_q_and_k_rows_and_biases_are_unpermuted_even_quantized() {
    let spec = Spec {
        arch: "llama",
        bias: true,
        tied: false,
        attn: StoredDType::Q8_0,
    };
    let dir = tempfile::tempdir().unwrap();
    let m = Model::open(&save(dir.path(), "l.gguf", &writer(&spec))).unwrap();
    m.check_tensors().unwrap();
    for (name, rows) in [
        ("q_proj", HEADS * HEAD_DIM),
        ("k_proj", KV_HEADS * HEAD_DIM),
    ] {
        let w = m
            .weights
            .get(&format!("model.layers.0.self_attn.{name}.weight"))
            .unwrap();
        assert_eq!(w.dtype, StoredDType::Q8_0);
        let row_bytes = w.bytes.len() / rows;
        // Stored row r carries the value r in its quants; it must now sit at its HF row.
        for r in 0..rows {
            let hf = stored_to_hf(r, HEAD_DIM);
            assert_eq!(w.bytes[hf * row_bytes + 2] as i8, r as i8, "{name} row {r}");
        }
        let b = m
            .weights
            .get(&format!("model.layers.0.self_attn.{name}.bias"))
            .unwrap();
        let stored = b.to_f32();
        let raw: Vec<f32> = tensors(&spec)
            .into_iter()
            .enumerate()
            .find(|(_, t)| t.0 == format!("blk.0.attn_{}.bias", &name[..1]))
            .map(|(i, (_, s, d))| {
                let bytes = tensor_bytes(&s, d, i);
                bytes
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            })
            .unwrap();
        for (r, v) in raw.iter().enumerate() {
            assert_eq!(stored[stored_to_hf(r, HEAD_DIM)], *v);
        }
    }
    // V is never permuted.
    let v = m
        .weights
        .get("model.layers.0.self_attn.v_proj.weight")
        .unwrap();
    assert_eq!(v.bytes[2], 0);
    assert_eq!(v.bytes[34 * 2 + 2], 1);
}

#[test]
fn llama3_rope_freqs_and_linear_scaling() {
    let spec = Spec {
        arch: "llama",
        bias: false,
        tied: false,
        attn: StoredDType::F32,
    };
    let factors: Vec<f32> = (0..HEAD_DIM / 2).map(|i| 1.0 + i as f32).collect();
    let mut w = writer(&spec);
    let bytes = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
    w.add_tensor(
        "rope_freqs.weight",
        &[HEAD_DIM / 2],
        StoredDType::F32,
        bytes,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = Model::open(&save(dir.path(), "l3.gguf", &w)).unwrap();
    assert_eq!(m.config.rope.scaling, RopeScaling::Factors(factors.clone()));
    let inv = m.config.rope.inv_freq(HEAD_DIM);
    let base = halo_model::RopeConfig {
        theta: 1e6,
        scaling: RopeScaling::Default,
        rotary_dim: None,
    }
    .inv_freq(HEAD_DIM);
    for i in 0..HEAD_DIM / 2 {
        assert_eq!(inv[i], base[i] / factors[i]);
    }

    let mut w = writer(&spec);
    w.add_str("llama.rope.scaling.type", "linear")
        .add_f32("llama.rope.scaling.factor", 4.0);
    let m = Model::open(&save(dir.path(), "lin.gguf", &w)).unwrap();
    assert_eq!(m.config.rope.scaling, RopeScaling::Linear { factor: 4.0 });

    let mut w = writer(&spec);
    w.add_u32("llama.rope.dimension_count", 16);
    let e = Model::open(&save(dir.path(), "partial.gguf", &w))
        .err()
        .unwrap();
    assert!(e.to_string().contains("rope.dimension_count"), "{e}");
}

/// The model of `spec` split over `n` files the way gguf-split writes them.
fn split(dir: &Path, spec: &Spec, n: usize) -> Vec<PathBuf> {
    let all = tensors(spec);
    let per = all.len().div_ceil(n);
    (0..n)
        .map(|k| {
            let mut w = GgufWriter::new();
            if k == 0 {
                // The first shard carries the model's metadata (and no tensors but its own).
                let full = writer(spec).to_bytes();
                for (key, v) in GgufFile::parse(&full).unwrap().metadata.iter() {
                    w.add(key, v.clone());
                }
                w.add("split.tensors.count", Value::I32(all.len() as i32));
            }
            w.add("split.no", Value::U16(k as u16))
                .add("split.count", Value::U16(n as u16));
            for (i, (name, shape, d)) in all.iter().enumerate().skip(k * per).take(per) {
                w.add_tensor(name, shape, *d, tensor_bytes(shape, *d, i))
                    .unwrap();
            }
            save(dir, &format!("m-{:05}-of-{n:05}.gguf", k + 1), &w)
        })
        .collect()
}

#[test]
fn split_sets_merge_their_tensors() {
    let spec = Spec {
        arch: "llama",
        bias: false,
        tied: false,
        attn: StoredDType::F32,
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = split(dir.path(), &spec, 3);
    for open in [dir.path(), paths[0].as_path()] {
        let m = Model::open(open).unwrap();
        m.check_tensors().unwrap();
        assert_eq!(
            m.format,
            ModelFormat::Gguf {
                version: 3,
                files: 3
            }
        );
    }
    assert_eq!(Model::open(&paths[0]).unwrap().name(), "m");
    // Opening a later shard names the first.
    let e = Model::open(&paths[1]).err().unwrap().to_string();
    assert!(e.contains("m-00001-of-00003.gguf"), "{e}");
    // A missing shard is named.
    std::fs::remove_file(&paths[2]).unwrap();
    let e = Model::open(&paths[0]).err().unwrap().to_string();
    assert!(
        e.contains("m-00003-of-00003.gguf") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn a_directory_with_one_gguf_opens_and_with_two_is_refused() {
    let spec = Spec {
        arch: "llama",
        bias: false,
        tied: true,
        attn: StoredDType::F32,
    };
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), "one.gguf", &writer(&spec));
    let m = Model::open(dir.path()).unwrap();
    assert!(m.config.tie_word_embeddings);
    let (c, t) = halo_model::open_config_and_tokenizer(dir.path()).unwrap();
    assert_eq!(c, m.config);
    // llama-bpe adds BOS by default.
    assert_eq!(t.encode("ab", true).unwrap(), vec![0, 4]);
    save(dir.path(), "two.gguf", &writer(&spec));
    let e = Model::open(dir.path()).err().unwrap();
    assert!(
        matches!(
            &e,
            ModelError::Gguf {
                source: GgufError::ManyFiles { count: 2, .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn metadata_of_every_type_round_trips() {
    let values = vec![
        Value::U8(1),
        Value::I8(-2),
        Value::U16(3),
        Value::I16(-4),
        Value::U32(5),
        Value::I32(-6),
        Value::F32(7.5),
        Value::Bool(true),
        Value::String(b"eight".to_vec()),
        Value::U64(9),
        Value::I64(-10),
        Value::F64(11.25),
        Value::Array(Array::Array(vec![
            Array::F64(vec![1.0, 2.0]),
            Array::String(vec![b"x".to_vec()]),
            Array::Bool(vec![false, true]),
        ])),
        Value::Array(Array::U8(vec![])),
    ];
    for version in [2, 3] {
        let mut w = GgufWriter::new();
        w.set_version(version).set_alignment(16);
        for (i, v) in values.iter().enumerate() {
            w.add(&format!("k{i}"), v.clone());
        }
        w.add_tensor("t", &[3, 2], StoredDType::F16, vec![7; 12])
            .unwrap();
        let bytes = w.to_bytes();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version, version);
        assert_eq!(f.alignment, 16);
        let got: Vec<_> = f
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with('k'))
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(got, values);
        let t = f.tensor("t").unwrap();
        assert_eq!((t.dims.clone(), t.shape()), (vec![2, 3], vec![3, 2]));
        assert_eq!(f.data(&bytes, t).unwrap(), &[7; 12]);
        assert_eq!(f.data_start % 16, 0);
    }
}

#[test]
fn gguf_py_files_parse() {
    // The fuzz seed, written by gguf-py's GGUFWriter (nested arrays, f64, i8, bool, F16 data).
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/gguf_parse/tiny_llama.gguf");
    let bytes = std::fs::read(path).unwrap();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.metadata.opt_f64("x.f64").unwrap(), Some(0.5));
    assert_eq!(f.metadata.get("x.i8"), Some(&Value::I8(-3)));
    assert_eq!(
        f.metadata.get("x.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3])
        ])))
    );
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.dtype, q.size), (StoredDType::F16, 32 * 32 * 2));
}

#[test]
fn sentencepiece_vocabularies_tokenize_as_llama_cpp() {
    // Vocabulary-only files (no tensors) with llama-tokenize's ids, from ci/oracle/spm_fixture.py.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf-spm");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spm.json")).unwrap()).unwrap();
    for (file, g) in golden["files"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let meta = GgufFile::parse(&bytes).unwrap().metadata;
        let t = halo_model::gguf::tokenizer::build(&meta).unwrap();
        for case in g["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let enc = t.inner.encode(text, true).unwrap();
            assert_eq!(enc.get_ids(), &want[..], "{file}: {text:?}");
        }
    }
}
