//! halo's block dequantization and the Q8_0/Q4_0/F16/BF16 quantizers against gguf-py
//! (`gguf.quants`), bit for bit. The fixtures are made by `ci/oracle/quant_fixture.py`.

use halo_model::dtype::StoredDType;
use halo_model::quant::{dequantize, dequantize_row, quantize};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/quant/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Bitwise equality, reporting the first mismatch with its block and position.
fn assert_bits(dtype: StoredDType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{dtype}: value count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{dtype}: value {i} (block {}, index {}): halo {g:e}, gguf-py {w:e}",
            i / dtype.block_elems(),
            i % dtype.block_elems()
        );
    }
}

const BLOCK_TYPES: [StoredDType; 5] = [
    StoredDType::Q4_0,
    StoredDType::Q8_0,
    StoredDType::Q4_K,
    StoredDType::Q5_K,
    StoredDType::Q6_K,
];

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    for dtype in BLOCK_TYPES {
        let name = dtype.name().to_lowercase();
        let blocks = read(&format!("{name}.blocks.bin"));
        let want = read_f32(&format!("{name}.dequant.f32"));
        assert_eq!(
            blocks.len() % dtype.block_bytes(),
            0,
            "{dtype}: fixture size"
        );
        assert!(
            want.iter().all(|v| v.is_finite()),
            "{dtype}: fixture not finite"
        );
        let mut got = vec![f32::NAN; want.len()];
        dequantize(dtype, &blocks, &mut got);
        assert_bits(dtype, &got, &want);
    }
}

#[test]
fn row_dequantization_matches_the_whole_tensor() {
    // The fixture's blocks read as a tensor of rows of two blocks each.
    for dtype in BLOCK_TYPES {
        let name = dtype.name().to_lowercase();
        let blocks = read(&format!("{name}.blocks.bin"));
        let want = read_f32(&format!("{name}.dequant.f32"));
        let cols = 2 * dtype.block_elems();
        for row in 0..want.len() / cols {
            let mut got = vec![f32::NAN; cols];
            dequantize_row(dtype, &blocks, cols, row, &mut got);
            assert_bits(dtype, &got, &want[row * cols..(row + 1) * cols]);
        }
    }
}

#[test]
fn quantizers_match_gguf_py_bit_for_bit() {
    for dtype in [
        StoredDType::Q8_0,
        StoredDType::Q4_0,
        StoredDType::F16,
        StoredDType::BF16,
    ] {
        let name = dtype.name().to_lowercase();
        let src = read_f32(&format!("{name}.quant_src.f32"));
        let want = read(&format!("{name}.quant.bin"));
        let mut got = vec![0u8; want.len()];
        quantize(dtype, &src, &mut got);
        let per_block = dtype.block_bytes() * (32 / dtype.block_elems());
        for (b, (g, w)) in got
            .chunks(per_block)
            .zip(want.chunks(per_block))
            .enumerate()
        {
            assert_eq!(
                g,
                w,
                "{dtype}: 32-value group {b} ({:?})",
                &src[32 * b..32 * b + 32]
            );
        }
    }
}

fn k_quantized(dtype: StoredDType, src: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let theirs = read(&format!("{}.ggml_quant.bin", dtype.name().to_lowercase()));
    let mut ours = vec![0u8; theirs.len()];
    quantize(dtype, src, &mut ours);
    (ours, theirs)
}

const K_TYPES: [StoredDType; 3] = [StoredDType::Q4_K, StoredDType::Q5_K, StoredDType::Q6_K];

/// gguf-py has no K-quant quantizers, so halo's are compared with ggml's own
/// `quantize_row_*_ref` on assorted super-blocks. The contract: each block's squared
/// reconstruction error is no worse than ggml's (2% slack for summation-order noise in the fits).
#[test]
fn k_quantizers_are_as_accurate_as_ggml() {
    let src = read_f32("k.quant_src.f32");
    let sq = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum()
    };
    for dtype in K_TYPES {
        let (ours, theirs) = k_quantized(dtype, &src);
        let mut ours_f = vec![0.0f32; src.len()];
        let mut theirs_f = vec![0.0f32; src.len()];
        dequantize(dtype, &ours, &mut ours_f);
        dequantize(dtype, &theirs, &mut theirs_f);
        for b in 0..src.len() / 256 {
            let r = b * 256..(b + 1) * 256;
            let e_ours = sq(&src[r.clone()], &ours_f[r.clone()]);
            let e_ggml = sq(&src[r.clone()], &theirs_f[r]);
            assert!(
                e_ours <= e_ggml * 1.02 + 1e-30,
                "{dtype} block {b}: squared error {e_ours:e}, ggml's {e_ggml:e}"
            );
        }
    }
}

/// Stronger than promised: the K-quant quantizers make the same bytes as ggml's reference
/// (libggml-base built from the vendored sources, without -march=native), including the
/// don't-care levels of sub-blocks whose scale rounds to 0 and the sign of zero scales. Since halo mirrors ggml's f32
/// operations in order, `halo make-model --quant` then writes what `llama-quantize` (without an
/// importance matrix) would. Should a ggml build with other float contraction ever disagree in
/// a last bit, the error test above is the contract.
#[test]
fn k_quantizers_make_ggml_bytes() {
    let src = read_f32("k.quant_src.f32");
    for dtype in K_TYPES {
        let (ours, theirs) = k_quantized(dtype, &src);
        for (b, (o, t)) in ours
            .chunks(dtype.block_bytes())
            .zip(theirs.chunks(dtype.block_bytes()))
            .enumerate()
        {
            assert_eq!(o, t, "{dtype} block {b}");
        }
    }
}
