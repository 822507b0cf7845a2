//! llama.cpp's converter reorders the Q and K rows of `llama` models for its interleaved RoPE:
//! within each head, HF row `half · d/2 + i` is stored at row `2i + half`. Undoing it at load
//! lets one rotate-half RoPE serve both formats. It moves whole rows, so it is as legal on
//! quantized rows (blocks never straddle rows) as on floats, and on biases (rows of one value).

/// Undoes the permutation on `bytes`, `rows` rows of `row_bytes` each, in heads of `head_rows`
/// rows. `None` when the sizes disagree (callers check shapes first).
pub fn unpermute_rows(
    bytes: &[u8],
    rows: usize,
    row_bytes: usize,
    head_rows: usize,
) -> Option<Vec<u8>> {
    if head_rows == 0
        || !head_rows.is_multiple_of(2)
        || !rows.is_multiple_of(head_rows)
        || rows.checked_mul(row_bytes)? != bytes.len()
    {
        return None;
    }
    let half = head_rows / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for head in 0..rows / head_rows {
        let base = head * head_rows;
        // HF row `h·half + i` (h = 0, 1) comes from stored row `2i + h`.
        for h in 0..2 {
            for i in 0..half {
                let src = (base + 2 * i + h) * row_bytes;
                out.extend_from_slice(&bytes[src..src + row_bytes]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's permutation, written out for the test: HF row `h·half + i` goes to
    /// stored row `2i + h` within each head.
    fn permute(rows: &[u8], head_rows: usize) -> Vec<u8> {
        let half = head_rows / 2;
        let mut out = vec![0; rows.len()];
        for (r, &v) in rows.iter().enumerate() {
            let (head, within) = (r / head_rows, r % head_rows);
            let (h, i) = (within / half, within % half);
            out[head * head_rows + 2 * i + h] = v;
        }
        out
    }

    #[test]
    fn undoes_the_converters_permutation() {
        let rows: Vec<u8> = (0..24).collect();
        let stored = permute(&rows, 8);
        assert_ne!(stored, rows);
        assert_eq!(unpermute_rows(&stored, 24, 1, 8).unwrap(), rows);
        // Wide rows move whole.
        let wide: Vec<u8> = (0..48).collect();
        let un = unpermute_rows(&wide, 12, 4, 4).unwrap();
        assert_eq!(&un[..8], &[0, 1, 2, 3, 8, 9, 10, 11]);
        assert!(unpermute_rows(&wide, 12, 4, 5).is_none());
    }
}
