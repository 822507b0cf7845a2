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
