//! The whole layout of a GGUF file: header, metadata, tensor infos, and the aligned data
//! section, with every tensor's byte range checked to lie inside the file.

use super::error::GgufError;
use super::metadata::Metadata;
use super::reader::ByteReader;
use super::tensor_info::{read_tensor_info, TensorInfo};
use super::value::read_value;
use std::collections::HashSet;

pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Smallest encodings, used to bound the header's counts by the bytes left: a key-value pair
/// is at least a length, a type and one byte; a tensor info a name length, a dimension count,
/// a type and an offset.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: usize,
}

impl GgufFile {
    /// Parses and checks the layout of `bytes` (the whole file).
    pub fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let mut r = ByteReader::new(bytes);
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let version = r.u32("version")?;
        // Version 1 had 32-bit counts; a big-endian file reads as a huge version.
        if !(2..=3).contains(&version) {
            return Err(GgufError::BadVersion { version });
        }
        let n_tensors = r.count(MIN_TENSOR_INFO_BYTES, "tensor count")?;
        let n_kv = r.count(MIN_KV_BYTES, "metadata count")?;

        let mut metadata = Metadata::default();
        for _ in 0..n_kv {
            let key = r.str("metadata key")?.to_owned();
            let value = read_value(&mut r, &key)?;
            metadata.insert(key, value)?;
        }
        let alignment = match metadata.opt_u64(ALIGNMENT_KEY)? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a != 0 && a.is_power_of_two() && a <= 1 << 30 => a,
            Some(a) => return Err(GgufError::BadAlignment { alignment: a }),
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = HashSet::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let t = read_tensor_info(&mut r)?;
            if !names.insert(t.name.clone()) {
                return Err(GgufError::DuplicateTensor { tensor: t.name });
            }
            tensors.push(t);
        }

        // The alignment is at most 2^30, so rounding up cannot overflow on a real length.
        let align = alignment as usize;
        let data_start = r
            .pos()
            .checked_next_multiple_of(align)
            .ok_or(GgufError::BadAlignment { alignment })?;
        for t in &tensors {
            check_range(t, alignment, data_start, bytes.len())?;
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    /// The bytes of tensor `t` (one of `self.tensors`) inside `bytes`, the file it was parsed
    /// from.
    pub fn data<'a>(&self, bytes: &'a [u8], t: &TensorInfo) -> Option<&'a [u8]> {
        let start = self.data_start.checked_add(t.offset as usize)?;
        bytes.get(start..start.checked_add(t.size)?)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

fn check_range(
    t: &TensorInfo,
    alignment: u64,
    data_start: usize,
    file_len: usize,
) -> Result<(), GgufError> {
    if !t.offset.is_multiple_of(alignment) {
        return Err(GgufError::Misaligned {
            tensor: t.name.clone(),
            offset: t.offset,
            alignment,
        });
    }
    let data_len = file_len.saturating_sub(data_start);
    if t.offset > data_len as u64 {
        return Err(GgufError::OffsetPastEnd {
            tensor: t.name.clone(),
            offset: t.offset,
            data_len,
        });
    }
    let end = t.offset.checked_add(t.size as u64);
    if end.is_none_or(|e| e > data_len as u64) {
        return Err(GgufError::TruncatedData {
            tensor: t.name.clone(),
            needed: (data_start as u64).saturating_add(end.unwrap_or(u64::MAX)),
            len: file_len,
        });
    }
    Ok(())
}
