//! The element types a weight tensor can be stored in: the float types of safetensors and the
//! block-quantized types of GGUF that halo can compute with.
//!
//! A quantized row of `cols` values is `cols / block_elems()` blocks laid end to end, each
//! `block_bytes()` long (the layouts are documented in [`crate::quant`]). Rows are independent,
//! so row permutations and row concatenations are legal on quantized tensors.

use std::fmt;

/// How a tensor's elements are stored, in memory as in the file. The names are ggml's.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    /// 32 values: f16 scale, 16 bytes of 4-bit quants (value = d · (q − 8)).
    Q4_0,
    /// 32 values: f16 scale, 32 signed bytes (value = d · q).
    Q8_0,
    /// 256 values in 8 sub-blocks of 32: f16 d and dmin, 12 bytes of 6-bit scales and mins,
    /// 128 bytes of 4-bit quants (value = d · sc · q − dmin · m).
    Q4_K,
    /// As Q4_K with a fifth bit per value in 32 extra bytes.
    Q5_K,
    /// 256 values in 16 sub-blocks of 16: 4-bit low and 2-bit high quant parts, 16 signed 8-bit
    /// scales, f16 d (value = d · sc · (q − 32)).
    Q6_K,
}

/// Every type, in the order error messages list them.
pub const SUPPORTED_DTYPES: [StoredDType; 8] = [
    StoredDType::F32,
    StoredDType::F16,
    StoredDType::BF16,
    StoredDType::Q4_0,
    StoredDType::Q8_0,
    StoredDType::Q4_K,
    StoredDType::Q5_K,
    StoredDType::Q6_K,
];

impl StoredDType {
    /// Values per block (1 for the float types).
    pub const fn block_elems(self) -> usize {
        match self {
            StoredDType::F32 | StoredDType::F16 | StoredDType::BF16 => 1,
            StoredDType::Q4_0 | StoredDType::Q8_0 => 32,
            StoredDType::Q4_K | StoredDType::Q5_K | StoredDType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            StoredDType::F32 => 4,
            StoredDType::F16 | StoredDType::BF16 => 2,
            StoredDType::Q4_0 => 18,
            StoredDType::Q8_0 => 34,
            StoredDType::Q4_K => 144,
            StoredDType::Q5_K => 176,
            StoredDType::Q6_K => 210,
        }
    }

    /// Bytes per element of the float types (kept for callers that predate the block types).
    pub const fn size_in_bytes(self) -> usize {
        self.block_bytes()
    }

    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes of a row of `cols` values; `None` when `cols` is not a whole number of blocks or
    /// the size overflows.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_elems()) {
            return None;
        }
        (cols / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// The type's name as llama.cpp and gguf-py spell it.
    pub const fn name(self) -> &'static str {
        match self {
            StoredDType::F32 => "F32",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
            StoredDType::Q4_0 => "Q4_0",
            StoredDType::Q8_0 => "Q8_0",
            StoredDType::Q4_K => "Q4_K",
            StoredDType::Q5_K => "Q5_K",
            StoredDType::Q6_K => "Q6_K",
        }
    }

    /// The `ggml_type` number a GGUF tensor info carries.
    pub const fn ggml_type(self) -> u32 {
        match self {
            StoredDType::F32 => 0,
            StoredDType::F16 => 1,
            StoredDType::Q4_0 => 2,
            StoredDType::Q8_0 => 8,
            StoredDType::Q4_K => 12,
            StoredDType::Q5_K => 13,
            StoredDType::Q6_K => 14,
            StoredDType::BF16 => 30,
        }
    }

    /// The supported type for a `ggml_type` number; `Err` carries the type's name (or number)
    /// for the error message when it is known but unsupported, or unknown.
    pub fn from_ggml_type(t: u32) -> Result<StoredDType, String> {
        SUPPORTED_DTYPES
            .into_iter()
            .find(|d| d.ggml_type() == t)
            .ok_or_else(|| ggml_type_name(t).map_or_else(|| format!("type {t}"), str::to_owned))
    }

    /// The names of every supported type, comma-separated (for error messages).
    pub fn supported_list() -> String {
        SUPPORTED_DTYPES.map(|d| d.name()).join(", ")
    }
}

impl std::str::FromStr for StoredDType {
    type Err = String;

    /// A type by its ggml name, any case (`q4_k`, `Q8_0`, `bf16`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SUPPORTED_DTYPES
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown weight type '{s}' (supported: {})",
                    Self::supported_list()
                )
            })
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names of the ggml types halo does not compute with, so errors can say which one a file has.
fn ggml_type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_bytes_need_whole_blocks() {
        assert_eq!(StoredDType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(StoredDType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(StoredDType::Q8_0.row_bytes(65), None);
        assert_eq!(StoredDType::F16.row_bytes(3), Some(6));
        assert_eq!(StoredDType::F32.row_bytes(usize::MAX / 2 + 1), None);
        assert_eq!(StoredDType::Q8_0.row_bytes(usize::MAX / 32 * 32), None);
    }

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!("q4_k".parse(), Ok(StoredDType::Q4_K));
        assert_eq!("BF16".parse(), Ok(StoredDType::BF16));
        let e = "q3_k".parse::<StoredDType>().unwrap_err();
        assert!(e.contains("Q4_K") && e.contains("'q3_k'"), "{e}");
    }

    #[test]
    fn ggml_numbers_round_trip_and_unsupported_types_are_named() {
        for d in SUPPORTED_DTYPES {
            assert_eq!(StoredDType::from_ggml_type(d.ggml_type()), Ok(d));
        }
        assert_eq!(StoredDType::from_ggml_type(3), Err("Q4_1".into()));
        assert_eq!(StoredDType::from_ggml_type(999), Err("type 999".into()));
    }
}
