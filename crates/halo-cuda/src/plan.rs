//! A step batch as the flat arrays the kernels read, and the launch geometry. Pure host logic,
//! unit-tested without a GPU.
//!
//! Rows are tokens in batch order. A CUDA-graph replay covers a fixed number of rows, so a plan
//! can be padded: padding rows carry token 0 at position 0, sequence -1 (attention writes zeros)
//! and slot -1 (the KV write skips them), and their logits are never sampled.

use halo_hal::{DeviceError, StepBatch};

/// The device-side description of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    /// Real token rows.
    pub num_tokens: usize,
    /// Rows every launch covers (>= num_tokens; larger for a graph bucket).
    pub rows: usize,
    pub token_ids: Vec<u32>,
    pub positions: Vec<i32>,
    /// Picks each token's LongRoPE frequency set: 1 when its sequence is in the long regime
    /// ([`halo_hal::SeqStep::long_rope`], decided by the engine), 0 otherwise.
    pub long_rope: Vec<i32>,
    /// The block-table row of each token's sequence, -1 for padding.
    pub tok_seq: Vec<i32>,
    /// The KV slot each token's K/V goes to, -1 for padding.
    pub slots: Vec<i64>,
    /// `rows_for_tables` rows of `table_width` block ids, zero-padded.
    pub block_tables: Vec<i32>,
    pub table_width: usize,
    /// For each sampled sequence, the row of its last token (padded with row 0 to `sample_slots`).
    pub sample_rows: Vec<i32>,
    /// Indices into `batch.seqs` of the sequences that sample, in batch order.
    pub sampled: Vec<usize>,
}

impl StepPlan {
    /// Lays out `batch` over `rows` token rows, `seq_rows` block-table rows and `sample_slots`
    /// gathered rows. The batch must already have passed [`StepBatch::validate`].
    pub fn build(
        batch: &StepBatch,
        block_size: usize,
        table_width: usize,
        rows: usize,
        seq_rows: usize,
        sample_slots: usize,
    ) -> Result<StepPlan, DeviceError> {
        let num_tokens = batch.num_tokens();
        let too_big = |what: &str, have: usize, cap: usize| {
            Err(DeviceError::BadBatch(format!(
                "{what}: {have} exceeds the warmed-up maximum of {cap}"
            )))
        };
        if num_tokens > rows {
            return too_big("tokens in the step", num_tokens, rows);
        }
        if batch.seqs.len() > seq_rows {
            return too_big("sequences in the step", batch.seqs.len(), seq_rows);
        }
        if batch.num_samples() > sample_slots {
            return too_big("sampled sequences", batch.num_samples(), sample_slots);
        }
        let mut plan = StepPlan {
            num_tokens,
            rows,
            token_ids: vec![0; rows],
            positions: vec![0; rows],
            long_rope: vec![0; rows],
            tok_seq: vec![-1; rows],
            slots: vec![-1; rows],
            block_tables: vec![0; seq_rows * table_width],
            table_width,
            sample_rows: vec![0; sample_slots],
            sampled: Vec::with_capacity(batch.num_samples()),
        };
        let mut row = 0usize;
        for (si, s) in batch.seqs.iter().enumerate() {
            let needed = s.end_pos().div_ceil(block_size);
            if needed > table_width {
                return too_big("blocks of one sequence", needed, table_width);
            }
            let dst = &mut plan.block_tables[si * table_width..si * table_width + needed];
            for (d, &b) in dst.iter_mut().zip(&s.block_table[..needed]) {
                *d = b as i32;
            }
            let regime = i32::from(s.long_rope);
            for (j, &t) in s.tokens.iter().enumerate() {
                let pos = s.start_pos + j;
                plan.token_ids[row] = t;
                plan.positions[row] = pos as i32;
                plan.long_rope[row] = regime;
                plan.tok_seq[row] = si as i32;
                plan.slots[row] = s.slot(pos, block_size) as i64;
                row += 1;
            }
            if s.sample.is_some() {
                plan.sample_rows[plan.sampled.len()] = (row - 1) as i32;
                plan.sampled.push(si);
            }
        }
        Ok(plan)
    }

    /// Whether every sequence runs exactly one token: the shape CUDA graphs are captured for.
    pub fn is_decode(batch: &StepBatch) -> bool {
        batch.seqs.iter().all(|s| s.tokens.len() == 1)
    }
}

/// Launch geometry: (grid, block) per kernel family, kept here so it is tested.
pub mod geometry {
    /// Threads for row-wise kernels (norms, gathers, RoPE, KV writes): enough to cover a row
    /// of `width` elements in one or a few passes, a multiple of the warp size, fixed per model
    /// so reductions never depend on the batch.
    pub fn row_threads(width: usize) -> u32 {
        (width.div_ceil(32) * 32).clamp(32, 1024) as u32
    }

    /// One block per row.
    pub fn rows(n: usize, width: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        ((n as u32, 1, 1), (row_threads(width), 1, 1))
    }

    /// One block per (token row, sub-row): `per_row` rows of `width` inside each token's row
    /// (per-head q/k norms; 1 for a norm over the whole hidden row).
    pub fn sub_rows(n: usize, per_row: usize, width: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        ((n as u32, per_row as u32, 1), (row_threads(width), 1, 1))
    }

    /// A grid-stride elementwise launch over `total` elements.
    pub fn elementwise(total: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        const THREADS: usize = 256;
        const MAX_BLOCKS: usize = 65_535;
        let blocks = total.div_ceil(THREADS).clamp(1, MAX_BLOCKS);
        ((blocks as u32, 1, 1), (THREADS as u32, 1, 1))
    }

    /// Warps per attention block; must equal ATTN_WARPS in kernels/attention.cu.
    pub const ATTN_WARPS: u32 = 4;
    /// The largest head_dim the attention kernel handles (ATTN_MAX_PER_LANE * 32).
    pub const ATTN_MAX_HEAD_DIM: usize = 256;

    /// One block per (token row, query head).
    pub fn attention(rows: usize, heads: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        ((rows as u32, heads as u32, 1), (ATTN_WARPS * 32, 1, 1))
    }

    /// Threads per sampling block; must equal SAMPLE_THREADS in kernels/sampling.cu.
    pub const SAMPLE_THREADS: u32 = 1024;

    pub fn sampling(samples: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        ((samples as u32, 1, 1), (SAMPLE_THREADS, 1, 1))
    }

    /// Must equal MOE_MAX_EXPERTS / MOE_MAX_TOP_K in kernels/moe.cu (shared-memory arrays).
    pub const MOE_MAX_EXPERTS: usize = 256;
    pub const MOE_MAX_TOP_K: usize = 32;
    /// Warps per moe_linear block; must equal MOE_LINEAR_WARPS in kernels/moe.cu.
    pub const MOE_LINEAR_WARPS: u32 = 8;
    /// Threads of the single moe_group block (each scans the pairs for its experts).
    pub const MOE_GROUP_THREADS: u32 = 256;

    /// One block per token; its first thread routes (a warp, so the block is a whole one).
    pub fn moe_route(rows: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        ((rows as u32, 1, 1), (32, 1, 1))
    }

    pub fn moe_group() -> ((u32, u32, u32), (u32, u32, u32)) {
        ((1, 1, 1), (MOE_GROUP_THREADS, 1, 1))
    }

    /// One block per (group of output columns, expert): experts nobody chose exit at once.
    pub fn moe_linear(n_out: usize, experts: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
        let cols = n_out.div_ceil(MOE_LINEAR_WARPS as usize);
        (
            (cols as u32, experts as u32, 1),
            (MOE_LINEAR_WARPS * 32, 1, 1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::{SampleRequest, SeqStep};

    fn seq(id: u64, tokens: Vec<u32>, start: usize, blocks: Vec<u32>, sample: bool) -> SeqStep {
        SeqStep {
            seq_id: id,
            tokens,
            start_pos: start,
            block_table: blocks,
            sample: sample.then(SampleRequest::greedy),
            long_rope: false,
        }
    }

    #[test]
    fn mixed_batch_lays_out_rows_slots_and_tables() {
        // block_size 4: a 5-token prefill chunk in blocks [3, 1] and a decode at position 6.
        let mut long_seq = seq(11, vec![42], 6, vec![0, 2, 7], true);
        long_seq.long_rope = true;
        let b = StepBatch {
            seqs: vec![seq(10, vec![5, 6, 7, 8, 9], 0, vec![3, 1], false), long_seq],
        };
        let p = StepPlan::build(&b, 4, 3, 8, 4, 2).unwrap();
        assert_eq!(p.num_tokens, 6);
        assert_eq!(p.token_ids, vec![5, 6, 7, 8, 9, 42, 0, 0]);
        assert_eq!(p.positions, vec![0, 1, 2, 3, 4, 6, 0, 0]);
        assert_eq!(p.long_rope, vec![0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(p.tok_seq, vec![0, 0, 0, 0, 0, 1, -1, -1]);
        assert_eq!(p.slots, vec![12, 13, 14, 15, 4, 10, -1, -1]);
        // Only the blocks covering end_pos are copied; the third block of seq 11 is not needed.
        assert_eq!(p.block_tables, vec![3, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p.sample_rows, vec![5, 0]);
        assert_eq!(p.sampled, vec![1]);
    }

    #[test]
    fn over_capacity_is_a_bad_batch() {
        let b = StepBatch {
            seqs: vec![seq(1, vec![1; 9], 0, vec![0, 1, 2], true)],
        };
        assert!(matches!(
            StepPlan::build(&b, 4, 3, 8, 4, 4),
            Err(DeviceError::BadBatch(_))
        ));
        let b = StepBatch {
            seqs: vec![seq(1, vec![1; 2], 10, vec![0, 1, 2], true)],
        };
        assert!(
            StepPlan::build(&b, 4, 2, 8, 4, 4).is_err(),
            "needs 3 blocks, table holds 2"
        );
    }

    #[test]
    fn decode_shape_detection() {
        let d = StepBatch {
            seqs: vec![
                seq(1, vec![1], 3, vec![0], true),
                seq(2, vec![2], 0, vec![1], true),
            ],
        };
        assert!(StepPlan::is_decode(&d));
        let m = StepBatch {
            seqs: vec![seq(1, vec![1, 2], 0, vec![0], true)],
        };
        assert!(!StepPlan::is_decode(&m));
    }

    #[test]
    fn geometry_is_warp_aligned_and_bounded() {
        assert_eq!(geometry::row_threads(1), 32);
        assert_eq!(geometry::row_threads(100), 128);
        assert_eq!(geometry::row_threads(4096), 1024);
        assert_eq!(geometry::rows(7, 64), ((7, 1, 1), (64, 1, 1)));
        assert_eq!(geometry::sub_rows(7, 6, 128), ((7, 6, 1), (128, 1, 1)));
        assert_eq!(geometry::elementwise(0).0 .0, 1);
        assert_eq!(geometry::elementwise(1 << 30).0 .0, 65_535);
        assert_eq!(geometry::attention(5, 32), ((5, 32, 1), (128, 1, 1)));
        assert_eq!(geometry::sampling(3).1 .0, 1024);
        assert_eq!(geometry::moe_linear(17, 8), ((3, 8, 1), (256, 1, 1)));
        assert_eq!(geometry::moe_route(5), ((5, 1, 1), (32, 1, 1)));
    }

    #[test]
    fn geometry_constants_match_the_kernel_sources() {
        let attn = crate::kernels::KernelSource::Attention.raw();
        assert!(attn.contains(&format!("#define ATTN_WARPS {}", geometry::ATTN_WARPS)));
        assert!(attn.contains(&format!(
            "#define ATTN_MAX_PER_LANE {}",
            geometry::ATTN_MAX_HEAD_DIM / 32
        )));
        let samp = crate::kernels::KernelSource::Sampling.raw();
        assert!(samp.contains(&format!(
            "#define SAMPLE_THREADS {}",
            geometry::SAMPLE_THREADS
        )));
        let moe = crate::kernels::KernelSource::Moe.raw();
        for (name, v) in [
            ("MOE_MAX_EXPERTS", geometry::MOE_MAX_EXPERTS),
            ("MOE_MAX_TOP_K", geometry::MOE_MAX_TOP_K),
            ("MOE_LINEAR_WARPS", geometry::MOE_LINEAR_WARPS as usize),
        ] {
            assert!(moe.contains(&format!("#define {name} {v}")), "{name}");
        }
    }
}
