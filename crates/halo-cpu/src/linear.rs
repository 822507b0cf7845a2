//! Projections and the embedding table with their weights kept in the stored type (f32, f16,
//! bf16 or a ggml block type): a quantized model costs its file size in memory, not 4 bytes a
//! parameter, and a decode step streams that many bytes.

use crate::qmatmul::{qmatmul_t, QMatrix};
use halo_hal::DeviceError;
use halo_model::{quant, StoredDType};

/// One checkpoint tensor's rows in its stored type, before fusion.
pub struct Part {
    pub dtype: StoredDType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
    /// BF16 rows meet bf16-rounded activations ([`QMatrix::meeting_bf16_activations`]).
    pub bf16_activations: bool,
}

impl Part {
    pub fn into_matrix(self) -> Result<QMatrix, DeviceError> {
        Ok(QMatrix::new(self.dtype, self.rows, self.cols, self.data)?
            .meeting_bf16_activations(self.bf16_activations))
    }
}

/// A projection `y = x Wᵀ (+ b)` whose rows may come from several checkpoint tensors (q, k and v
/// fused; gate and up fused). Consecutive parts of one type are stored as one matrix, so the
/// usual case is one matmul per projection; parts of different types (Q4_K_M keeps v in Q6_K)
/// each run their own and fill their own columns of `y`.
pub struct Linear {
    groups: Vec<QMatrix>,
    bias: Option<Vec<f32>>,
    out_dim: usize,
    in_dim: usize,
}

impl Linear {
    /// Fuses `parts` (each `[rows_i, in_dim]`) row-wise, in order.
    pub fn fused(parts: Vec<Part>, bias: Option<Vec<f32>>) -> Result<Self, DeviceError> {
        let in_dim = parts.first().map_or(0, |p| p.cols);
        if parts.is_empty() || parts.iter().any(|p| p.cols != in_dim) {
            return Err(DeviceError::Load(format!(
                "fused projection parts disagree on the input width: {:?}",
                parts.iter().map(|p| p.cols).collect::<Vec<_>>()
            )));
        }
        let out_dim = parts.iter().map(|p| p.rows).sum();
        if bias.as_ref().is_some_and(|b| b.len() != out_dim) {
            return Err(DeviceError::Load(format!(
                "projection [{out_dim}, {in_dim}] has {} biases",
                bias.as_ref().map_or(0, Vec::len)
            )));
        }
        // Rows are independent in every stored type, so same-type neighbours concatenate.
        let mut merged: Vec<Part> = Vec::with_capacity(parts.len());
        for part in parts {
            match merged.last_mut() {
                Some(last)
                    if last.dtype == part.dtype
                        && last.bf16_activations == part.bf16_activations =>
                {
                    last.rows += part.rows;
                    last.data.extend_from_slice(&part.data);
                }
                _ => merged.push(part),
            }
        }
        Ok(Linear {
            groups: merged
                .into_iter()
                .map(Part::into_matrix)
                .collect::<Result<_, _>>()?,
            bias,
            out_dim,
            in_dim,
        })
    }

    pub fn single(w: Part, bias: Option<Vec<f32>>) -> Result<Self, DeviceError> {
        Self::fused(vec![w], bias)
    }

    /// The matrix of a single-part projection (a tied head shares it with the embedding).
    pub fn matrix(&self) -> Option<&QMatrix> {
        match self.groups.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The stored types of the projection's parts.
    pub fn dtypes(&self) -> impl Iterator<Item = StoredDType> + '_ {
        self.groups.iter().map(QMatrix::dtype)
    }

    /// Bytes of weights one forward pass streams.
    pub fn weight_bytes(&self) -> u64 {
        self.groups.iter().map(|g| g.bytes() as u64).sum()
    }

    /// `x` is `[rows, in_dim]`; returns `[rows, out_dim]`. Each output row depends only on its
    /// own input row, bit for bit (see [`crate::qmatmul`]).
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, DeviceError> {
        if x.len() != rows * self.in_dim {
            return Err(DeviceError::Backend(format!(
                "projection input has {} values, expected {rows} x {}",
                x.len(),
                self.in_dim
            )));
        }
        let mut y = vec![0.0f32; rows * self.out_dim];
        if let [only] = self.groups.as_slice() {
            qmatmul_t(x, rows, only, &mut y);
        } else {
            let mut col = 0;
            for g in &self.groups {
                let n = g.rows();
                let mut part = vec![0.0f32; rows * n];
                qmatmul_t(x, rows, g, &mut part);
                for (dst, src) in y.chunks_exact_mut(self.out_dim).zip(part.chunks_exact(n)) {
                    dst[col..col + n].copy_from_slice(src);
                }
                col += n;
            }
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_dim) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Ok(y)
    }
}

/// Looks up embedding rows, widening only the rows a step uses.
pub fn embed_rows(table: &QMatrix, tokens: impl Iterator<Item = u32>, out: &mut Vec<f32>) {
    let h = table.cols();
    for t in tokens {
        let start = out.len();
        out.resize(start + h, 0.0);
        quant::dequantize(table.dtype(), &table.row(t as usize), &mut out[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_part(rows: usize, cols: usize, values: &[f32]) -> Part {
        Part {
            dtype: StoredDType::F32,
            rows,
            cols,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            bf16_activations: false,
        }
    }

    #[test]
    fn linear_matches_hand_product() {
        let l = Linear::single(
            f32_part(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            Some(vec![0.5, -0.5]),
        )
        .unwrap();
        let y = l.forward(&[1.0, 1.0, 1.0, 0.0, 1.0, 0.0], 2).unwrap();
        assert_eq!(y, vec![6.5, 14.5, 2.5, 4.5]);
    }

    #[test]
    fn mixed_type_parts_fill_their_own_columns() {
        let a = f32_part(1, 2, &[1.0, 2.0]);
        let halves = quant::quantize_to_vec(StoredDType::F16, &[3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Part {
            dtype: StoredDType::F16,
            rows: 2,
            cols: 2,
            data: halves,
            bf16_activations: false,
        };
        let c = f32_part(1, 2, &[7.0, 8.0]);
        let l = Linear::fused(vec![a, b, c], None).unwrap();
        assert_eq!(l.out_dim(), 4);
        let y = l.forward(&[1.0, 10.0], 1).unwrap();
        assert_eq!(y, vec![21.0, 43.0, 65.0, 87.0]);
    }

    #[test]
    fn parts_of_different_widths_are_refused() {
        let e = Linear::fused(
            vec![f32_part(1, 2, &[1.0, 2.0]), f32_part(1, 1, &[1.0])],
            None,
        );
        assert!(matches!(e, Err(DeviceError::Load(_))));
    }

    #[test]
    fn embedding_widens_only_the_asked_rows() {
        let t = f32_part(3, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .into_matrix()
            .unwrap();
        let mut out = Vec::new();
        embed_rows(&t, [2u32, 0].into_iter(), &mut out);
        assert_eq!(out, vec![5.0, 6.0, 1.0, 2.0]);
    }
}
