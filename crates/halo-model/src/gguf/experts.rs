//! GGUF's mixture-of-experts tensors under the per-expert Hugging Face names the checkpoint had.
//!
//! llama.cpp's converter stacks each layer's experts into one tensor per projection,
//! `blk.N.ffn_{gate,up,down}_exps.weight` (ggml dims `[cols, rows, experts]`, so row-major
//! `[experts, rows, cols]`), and names the router `blk.N.ffn_gate_inp.weight`. Rows are
//! independent in every stored type, so expert `e` is one contiguous run of the stacked bytes:
//! it becomes a byte range of the mapped file named like the original checkpoint
//! (`model.layers.N.block_sparse_moe.experts.E.w1.weight` for Mixtral,
//! `model.layers.N.mlp.experts.E.gate_proj.weight` for Qwen3-MoE), with no copy.

use super::error::GgufError;
use super::tensor_info::TensorInfo;
use super::writer::GgufWriter;
use crate::config::moe::{ExpertNames, MoeConfig};
use crate::config::Architecture;
use crate::error::ModelError;
use crate::weights::{Entry, EntryDType};
use crate::{Model, StoredDType};
use std::path::Path;

/// One expert's share of a stacked tensor: its HF name, shape `[rows, cols]`, and byte range
/// relative to the start of the stacked tensor's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertSlice {
    pub name: String,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// The layer and the GGUF projection (`gate`, `up`, `down`) of a stacked expert tensor name.
fn parse(gguf: &str) -> Option<(usize, &str)> {
    let rest = gguf.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (layer, part) = rest.split_once('.')?;
    let which = part.strip_prefix("ffn_")?.strip_suffix("_exps")?;
    Some((layer.parse().ok()?, which))
}

/// The HF name of a GGUF router tensor (`blk.N.ffn_gate_inp.weight`).
pub fn router_name(gguf: &str, names: ExpertNames) -> Option<String> {
    let rest = gguf.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    (part == "ffn_gate_inp").then(|| names.router(&format!("model.layers.{layer}")))
}

/// Splits a stacked expert tensor of row-major `shape` and `bytes` bytes into its experts;
/// `None` when `gguf` is not a stacked expert tensor.
pub fn split(
    gguf: &str,
    shape: &[usize],
    bytes: usize,
    names: ExpertNames,
) -> Option<Result<Vec<ExpertSlice>, GgufError>> {
    let (layer, which) = parse(gguf)?;
    let hf = match which {
        "gate" => names.gate,
        "up" => names.up,
        "down" => names.down,
        _ => return None,
    };
    let bad = |msg: String| GgufError::BadTensor {
        tensor: gguf.to_owned(),
        msg,
    };
    let &[experts, rows, cols] = shape else {
        return Some(Err(bad(format!(
            "shape {shape:?}, expected [experts, rows, cols]"
        ))));
    };
    if experts == 0 || !bytes.is_multiple_of(experts) {
        return Some(Err(bad(format!(
            "{bytes} bytes do not split into {experts} experts"
        ))));
    }
    let each = bytes / experts;
    let prefix = format!("model.layers.{layer}");
    Some(Ok((0..experts)
        .map(|e| ExpertSlice {
            name: names.expert(&prefix, e, hf),
            shape: vec![rows, cols],
            start: e * each,
            end: (e + 1) * each,
        })
        .collect()))
}

/// The weight entries a GGUF tensor of an MoE architecture becomes: one per expert for a stacked
/// tensor, the router under its HF name; `None` for every other tensor (or architecture).
/// `data_start` is the file's data section offset, `file` its index in the shard list.
pub(crate) fn entries(
    t: &TensorInfo,
    file: usize,
    data_start: usize,
    arch: Architecture,
) -> Option<Result<Vec<(String, Entry)>, GgufError>> {
    let names = ExpertNames::for_architecture(arch)?;
    let start = data_start + t.offset as usize;
    let entry = |shape: Vec<usize>, from: usize, to: usize| Entry {
        file,
        dtype: EntryDType::Stored(t.dtype),
        shape,
        start: start + from,
        end: start + to,
        unpermute_head_rows: None,
        file_name: Some(t.name.clone()),
    };
    if let Some(router) = router_name(&t.name, names) {
        return Some(Ok(vec![(router, entry(t.shape(), 0, t.size))]));
    }
    let slices = split(&t.name, &t.shape(), t.size, names)?;
    Some(slices.map(|v| {
        v.into_iter()
            .map(|s| (s.name, entry(s.shape, s.start, s.end)))
            .collect()
    }))
}

/// One stacked tensor an exporter writes for a sparse layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// `blk.N.ffn_{gate,up,down}_exps.weight`.
    pub gguf: String,
    /// The HF names of its experts, in expert order.
    pub experts: Vec<String>,
    /// `[experts, rows, cols]`.
    pub shape: [usize; 3],
    /// The dense projection it stands for (`model.layers.N.mlp.down_proj.weight`), for the
    /// quantization mix: llama-quantize treats `ffn_down_exps` as it treats `ffn_down`.
    pub dense_like: String,
}

/// The three stacked tensors of sparse layer `layer` (the inverse of [`split`]).
pub fn stacks(m: &MoeConfig, names: ExpertNames, layer: usize, hidden: usize) -> Vec<Stack> {
    let prefix = format!("model.layers.{layer}");
    let i = m.expert_intermediate_size;
    [
        ("gate", names.gate, [i, hidden]),
        ("up", names.up, [i, hidden]),
        ("down", names.down, [hidden, i]),
    ]
    .into_iter()
    .map(|(g, hf, [rows, cols])| Stack {
        gguf: format!("blk.{layer}.ffn_{g}_exps.weight"),
        experts: (0..m.num_experts)
            .map(|e| names.expert(&prefix, e, hf))
            .collect(),
        shape: [m.num_experts, rows, cols],
        dense_like: format!("{prefix}.mlp.{g}_proj.weight"),
    })
    .collect()
}

/// The GGUF name of a sparse layer's router (`None` for any other tensor; experts are written
/// as [`Stack`]s).
pub fn gguf_name(hf: &str, names: ExpertNames) -> Option<String> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    (part == format!("{}.gate.weight", names.block))
        .then(|| format!("blk.{layer}.ffn_gate_inp.weight"))
}

/// Whether `hf` is one expert's slice of a stacked tensor.
pub fn is_expert(hf: &str, names: ExpertNames) -> bool {
    hf.strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(_, part)| part.starts_with(&format!("{}.experts.", names.block)))
}

/// Writes every sparse layer's experts as llama.cpp's stacked tensors, each in the type
/// `type_of(dense_like, cols)` gives the dense projection it stands for; returns the tensors
/// and bytes written.
pub(crate) fn write_stacks(
    model: &Model,
    out: &Path,
    w: &mut GgufWriter,
    type_of: impl Fn(&str, usize) -> StoredDType,
) -> crate::error::Result<(usize, u64)> {
    let c = &model.config;
    let (Some(m), Some(names)) = (&c.moe, ExpertNames::for_architecture(c.architecture)) else {
        return Ok((0, 0));
    };
    let gguf_err = |source| ModelError::Gguf {
        path: out.to_path_buf(),
        source,
    };
    let (mut tensors, mut bytes) = (0, 0u64);
    for layer in (0..c.num_hidden_layers).filter(|&l| m.is_sparse(l)) {
        for st in stacks(m, names, layer, c.hidden_size) {
            let [experts, rows, cols] = st.shape;
            let mut values = Vec::with_capacity(experts * rows * cols);
            for e in &st.experts {
                values.extend(model.weights.check(e, &[rows, cols])?.to_f32());
            }
            let dtype = type_of(&st.dense_like, cols);
            let data = crate::quant::quantize_to_vec(dtype, &values).ok_or_else(|| {
                gguf_err(GgufError::BadTensor {
                    tensor: st.gguf.clone(),
                    msg: format!("{cols} columns do not fit {dtype} blocks"),
                })
            })?;
            bytes += data.len() as u64;
            tensors += 1;
            w.add_tensor(&st.gguf, &st.shape, dtype, data)
                .map_err(gguf_err)?;
        }
    }
    Ok((tensors, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_experts_become_byte_ranges_under_hf_names() {
        let s = split(
            "blk.3.ffn_up_exps.weight",
            &[4, 8, 32],
            4 * 8 * 34,
            ExpertNames::MIXTRAL,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[2].name,
            "model.layers.3.block_sparse_moe.experts.2.w3.weight"
        );
        assert_eq!(s[2].shape, vec![8, 32]);
        assert_eq!((s[2].start, s[2].end), (2 * 272, 3 * 272));
        let q = split(
            "blk.0.ffn_down_exps.weight",
            &[2, 16, 8],
            2 * 16 * 32,
            ExpertNames::QWEN,
        )
        .unwrap()
        .unwrap();
        assert_eq!(q[1].name, "model.layers.0.mlp.experts.1.down_proj.weight");
        assert_eq!(
            router_name("blk.5.ffn_gate_inp.weight", ExpertNames::QWEN).as_deref(),
            Some("model.layers.5.mlp.gate.weight")
        );
        assert_eq!(
            router_name("blk.5.ffn_gate_inp.weight", ExpertNames::MIXTRAL).as_deref(),
            Some("model.layers.5.block_sparse_moe.gate.weight")
        );
    }

    #[test]
    fn export_stacks_invert_the_split() {
        let m = MoeConfig {
            num_experts: 3,
            experts_per_token: 2,
            expert_intermediate_size: 8,
            norm_topk_prob: true,
            sparse_layers: vec![true; 2],
        };
        for names in [ExpertNames::MIXTRAL, ExpertNames::QWEN] {
            for st in stacks(&m, names, 1, 32) {
                let [e, rows, cols] = st.shape;
                let bytes = e * rows * cols * 4;
                let back = split(&st.gguf, &st.shape, bytes, names).unwrap().unwrap();
                let back_names: Vec<String> = back.iter().map(|s| s.name.clone()).collect();
                assert_eq!(back_names, st.experts);
                assert!(back.iter().all(|s| s.shape == vec![rows, cols]));
                assert!(st.experts.iter().all(|n| is_expert(n, names)));
            }
            let router = names.router("model.layers.1");
            assert_eq!(
                gguf_name(&router, names).as_deref(),
                Some("blk.1.ffn_gate_inp.weight")
            );
            assert_eq!(
                router_name("blk.1.ffn_gate_inp.weight", names),
                Some(router.clone())
            );
            assert!(!is_expert(&router, names));
        }
        let down = &stacks(&m, ExpertNames::MIXTRAL, 0, 32)[2];
        assert_eq!(down.gguf, "blk.0.ffn_down_exps.weight");
        assert_eq!(down.shape, [3, 32, 8]);
        assert_eq!(down.dense_like, "model.layers.0.mlp.down_proj.weight");
    }

    #[test]
    fn an_exported_mixtral_reads_back_with_the_same_experts() {
        use crate::gguf::export::{export, Quantization};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/families/tiny-mixtral");
        let hf = Model::open(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("tiny-mixtral-f32.gguf");
        export(&hf, Quantization::F32, &file).unwrap();
        let back = Model::open(&file).unwrap();
        assert_eq!(back.config.architecture, Architecture::Mixtral);
        assert_eq!(back.config.moe, hf.config.moe);
        back.check_tensors().unwrap();
        for (name, shape) in hf.config.expected_tensors() {
            let a = hf.weights.check(&name, &shape).unwrap().to_f32();
            let b = back.weights.check(&name, &shape).unwrap().to_f32();
            assert_eq!(a, b, "{name}");
        }
        // The converter's layout: one stacked tensor per projection, the router in f32.
        let g = crate::gguf::GgufModel::open(&file).unwrap();
        let info = |n: &str| g.tensors().find(|t| t.name == n).cloned().unwrap();
        assert_eq!(info("blk.1.ffn_down_exps.weight").dims, vec![32, 64, 8]);
        assert_eq!(info("blk.0.ffn_gate_inp.weight").dtype, StoredDType::F32);
        let q8 = tmp.path().join("tiny-mixtral-q8_0.gguf");
        export(&hf, Quantization::Q8_0, &q8).unwrap();
        let g = crate::gguf::GgufModel::open(&q8).unwrap();
        let t = g
            .tensors()
            .find(|t| t.name == "blk.0.ffn_up_exps.weight")
            .unwrap();
        assert_eq!(t.dtype, StoredDType::Q8_0);
        assert!(g
            .tensors()
            .all(|t| t.name != "blk.0.ffn_gate_inp.weight" || t.dtype == StoredDType::F32));
    }

    #[test]
    fn other_tensors_are_left_alone_and_bad_stacks_refused() {
        assert!(split("blk.0.ffn_up.weight", &[8, 32], 1024, ExpertNames::QWEN).is_none());
        assert!(split(
            "blk.0.ffn_norm_exps.weight",
            &[2, 8, 32],
            2048,
            ExpertNames::QWEN
        )
        .is_none());
        assert!(router_name("blk.0.ffn_gate.weight", ExpertNames::QWEN).is_none());
        assert!(!is_expert(
            "model.layers.0.mlp.gate_proj.weight",
            ExpertNames::QWEN
        ));
        assert_eq!(
            gguf_name("model.layers.0.mlp.gate_proj.weight", ExpertNames::QWEN),
            None
        );
        assert!(matches!(
            split(
                "blk.0.ffn_gate_exps.weight",
                &[8, 32],
                1024,
                ExpertNames::QWEN
            ),
            Some(Err(GgufError::BadTensor { .. }))
        ));
        assert!(matches!(
            split(
                "blk.0.ffn_gate_exps.weight",
                &[3, 8, 32],
                1000,
                ExpertNames::QWEN
            ),
            Some(Err(GgufError::BadTensor { .. }))
        ));
    }
}
