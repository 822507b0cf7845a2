//! Runs a kernel over weights held in groups of interleaved rows ([`super::q8_packed`],
//! [`super::k_packed`]: [`GROUP`] rows; [`super::q8_packed_avx2`]: 8): the groups are split over
//! the current rayon pool, each task owning the output columns of its groups in every
//! activation row, so results land straight in `y` (a lane is an output; there is no
//! transpose).

/// Weight rows interleaved per group on AVX-512: one per lane of a 512-bit vector of i32/f32.
pub(crate) const GROUP: usize = 16;

/// Activation rows a task's weights meet before the next batch of rows, so the task's share
/// of the weights stays in L2 while the activations stream.
pub(crate) const ROWS_PER_PASS: usize = 64;

/// `y`'s base, shared by the tasks, which write disjoint columns.
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint elements (see `run`).
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Element `off` (a method, so closures capture the whole `Sync` wrapper).
    ///
    /// # Safety
    /// `off` must be inside `y`.
    unsafe fn at(&self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// One tile: group `g` against activation rows `i0 .. i0 + c`, writing lane `r` of row `i`'s
/// result to `y[i·n + r]` for the lanes set in `mask`, `y` being the output's column
/// `group·g`.
pub(crate) type Tile<'a> = dyn Fn(usize, usize, usize, *mut f32, u16) + Sync + 'a;

/// Runs `tile` over every `group`-row group (`group` ≤ 16, the mask's width) of an `n`-row
/// matrix and every activation row of `y` (`[m, n]` row-major), at most `tile_m` rows a tile.
/// `k` only sizes the work.
pub(crate) fn run(
    m: usize,
    n: usize,
    k: usize,
    (group, tile_m): (usize, usize),
    y: &mut [f32],
    tile: &Tile,
) {
    use rayon::prelude::*;
    assert!(y.len() == m * n && tile_m > 0 && (1..=16).contains(&group));
    let groups = n.div_ceil(group);
    if groups == 0 || m == 0 {
        return;
    }
    let tasks = if m * n * k < super::SERIAL_WORK {
        1
    } else {
        rayon::current_num_threads() * 4
    };
    let per_task = groups.div_ceil(tasks);
    let out = OutPtr(y.as_mut_ptr());
    let task = |t: usize| {
        let g0 = t * per_task;
        let g1 = (g0 + per_task).min(groups);
        for p0 in (0..m).step_by(ROWS_PER_PASS) {
            let p1 = (p0 + ROWS_PER_PASS).min(m);
            for g in g0..g1 {
                let valid = (n - g * group).min(group);
                let mask = if valid == 16 {
                    u16::MAX
                } else {
                    (1u16 << valid) - 1
                };
                // SAFETY: column group·g is inside every row of `y` (g < n.div_ceil(group)).
                let col = unsafe { out.at(g * group) };
                let mut i0 = p0;
                while i0 < p1 {
                    let c = (p1 - i0).min(tile_m);
                    tile(g, i0, c, col, mask);
                    i0 += c;
                }
            }
        }
    };
    let used = groups.div_ceil(per_task);
    if used == 1 {
        task(0);
    } else {
        (0..used).into_par_iter().for_each(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_is_written_once_with_its_coordinates() {
        for ((m, n), group) in [(1usize, 5usize), (3, 16), (70, 37), (9, 33)]
            .into_iter()
            .flat_map(|s| [(s, GROUP), (s, 8)])
        {
            let mut y = vec![f32::NAN; m * n];
            let tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
                assert_eq!(mask, (((1u32 << (n - g * group).min(group)) - 1) as u16));
                for i in i0..i0 + c {
                    for r in 0..group {
                        if mask >> r & 1 == 1 {
                            // SAFETY: `run` hands out in-bounds, disjoint columns.
                            unsafe {
                                let p = col.add(i * n + r);
                                assert!((*p).is_nan(), "written twice");
                                *p = (i * 1000 + g * group + r) as f32;
                            }
                        }
                    }
                }
            };
            // Large k so the work is split over the pool.
            run(m, n, 1 << 20, (group, 8), &mut y, &tile);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(y[i * n + j], (i * 1000 + j) as f32, "m={m} n={n} {group}");
                }
            }
        }
    }
}
