//! Tensor infos: name, dimensions (ggml order, innermost first), type and offset into the data
//! section, with the byte size computed by checked arithmetic from the dimensions and type.

use super::error::GgufError;
use super::reader::ByteReader;
use crate::dtype::StoredDType;

/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (the contiguous, block-quantized dimension).
    pub dims: Vec<u64>,
    pub dtype: StoredDType,
    /// Bytes from the start of the data section.
    pub offset: u64,
    /// Bytes the tensor's data takes.
    pub size: usize,
}

impl TensorInfo {
    /// The shape in row-major (Hugging Face) order: `[rows.., cols]`.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim fits in usize: `tensor_size` checked their product.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// Bytes of a tensor of `dims` (ggml order) in `dtype`, or the error naming what is wrong.
pub fn tensor_size(name: &str, dims: &[u64], dtype: StoredDType) -> Result<usize, GgufError> {
    let overflow = || GgufError::SizeOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let cols = dims.first().copied().unwrap_or(1);
    let cols_usize = usize::try_from(cols).map_err(|_| overflow())?;
    if !cols_usize.is_multiple_of(dtype.block_elems()) {
        return Err(GgufError::PartialBlock {
            tensor: name.to_owned(),
            dtype: dtype.name().to_owned(),
            cols,
            block: dtype.block_elems(),
        });
    }
    let row = dtype.row_bytes(cols_usize).ok_or_else(overflow)?;
    let mut size = row;
    let mut elems = cols_usize;
    for &d in dims.iter().skip(1) {
        let d = usize::try_from(d).map_err(|_| overflow())?;
        size = size.checked_mul(d).ok_or_else(overflow)?;
        elems = elems.checked_mul(d).ok_or_else(overflow)?;
    }
    // Element counts must be addressable too (a backend multiplies by 4 to widen to f32).
    elems.checked_mul(4).ok_or_else(overflow)?;
    Ok(size)
}

pub(crate) fn read_tensor_info(r: &mut ByteReader<'_>) -> Result<TensorInfo, GgufError> {
    let name = r.str("tensor name")?.to_owned();
    let n_dims = r.u32(&format!("dimension count of '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64(&format!("dimensions of '{name}'"))?);
    }
    let raw_type = r.u32(&format!("type of '{name}'"))?;
    let offset = r.u64(&format!("offset of '{name}'"))?;
    let dtype = StoredDType::from_ggml_type(raw_type).map_err(|known| {
        // `known` is ggml's name for a type halo does not compute with, or "type N".
        let type_name = if known.starts_with("type ") {
            format!("{raw_type} (unknown)")
        } else {
            known
        };
        GgufError::UnsupportedType {
            tensor: name.clone(),
            type_name,
            supported: StoredDType::supported_list(),
        }
    })?;
    let size = tensor_size(&name, &dims, dtype)?;
    Ok(TensorInfo {
        name,
        dims,
        dtype,
        offset,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_blocks_and_overflow_is_an_error() {
        assert_eq!(
            tensor_size("t", &[256, 3], StoredDType::Q4_K).unwrap(),
            3 * 144
        );
        assert_eq!(tensor_size("t", &[7], StoredDType::F32).unwrap(), 28);
        assert_eq!(tensor_size("t", &[], StoredDType::F32).unwrap(), 4);
        assert!(matches!(
            tensor_size("t", &[33], StoredDType::Q8_0),
            Err(GgufError::PartialBlock { .. })
        ));
        assert!(matches!(
            tensor_size("t", &[1 << 40, 1 << 40], StoredDType::F32),
            Err(GgufError::SizeOverflow { .. })
        ));
    }
}
