//! Dense f32 products for many rows at once: `out = x · Wᵀ + bias`, the shape of an encoder's
//! forward pass (hundreds to thousands of token rows against every weight matrix).
//!
//! The weights are packed once, at load, into panels of [`NR`] output features stored k-major
//! (`PackedF32`), so the micro-kernel reads them as contiguous vectors. Each call splits the
//! output into tasks of up to [`MB`] rows by [`NB`] panels spread over [`Threads`]; a task walks
//! k in blocks of [`KC`] (one panel's block, 16 KiB, stays in L1 while every 6-row tile of the task
//! sweeps it) and a register-blocked 6 × 16 tile accumulates with FMA.
//!
//! **Invariant:** every output is `bias` followed by one fused multiply-add per k, in k order,
//! whatever `m`, the task split or the thread count; so a row's result never depends on the rows
//! that share its call (a text embeds the same alone and in a batch). Paths: AVX2+FMA, and a
//! portable one with the same order (unfused, so its rounding differs from the AVX2 path's).

use crate::{Isa, SharedMut, Threads};

/// Output features per packed panel: two 8-lane vectors.
pub const NR: usize = 16;
/// Activation rows per register tile (6 × 2 accumulators + 2 weight vectors + 1 broadcast fit in
/// the 16 vector registers).
const MR: usize = 6;
/// k values per cache block.
const KC: usize = 256;
/// Rows per task (a multiple of `MR`).
const MB: usize = 8 * MR;
/// Panels per task.
const NB: usize = 4;

/// A dense f32 weight matrix `[rows = out features, cols = in features]`, packed for [`gemm`].
#[derive(Clone)]
pub struct PackedF32 {
    rows: usize,
    cols: usize,
    /// `data[(p * cols + k) * NR + l] = W[p * NR + l, k]`, zero past `rows`.
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedF32")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl PackedF32 {
    /// Packs a row-major `rows x cols` matrix (one output feature per row, as PyTorch's
    /// `nn.Linear.weight` and safetensors store it).
    pub fn new(rows: usize, cols: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), rows * cols, "PackedF32: data is not rows x cols");
        let panels = rows.div_ceil(NR);
        let mut data = vec![0f32; panels * cols * NR];
        for j in 0..rows {
            let (p, l) = (j / NR, j % NR);
            for (k, &v) in w[j * cols..(j + 1) * cols].iter().enumerate() {
                data[(p * cols + k) * NR + l] = v;
            }
        }
        Self { rows, cols, data }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the packed weights occupy.
    pub fn weight_bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// Row `j` as stored (for tests and references).
    pub fn row(&self, j: usize) -> Vec<f32> {
        assert!(j < self.rows, "row {j} out of {}", self.rows);
        let (p, l) = (j / NR, j % NR);
        (0..self.cols)
            .map(|k| self.data[(p * self.cols + k) * NR + l])
            .collect()
    }
}

/// `out[i * rows + j] = bias[j] + sum_k x[i * cols + k] * W[j, k]` for `i` in `0..m`.
pub fn gemm(
    w: &PackedF32,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    gemm_on(crate::isa(), w, x, m, bias, out, threads);
}

/// `gemm` on a chosen path; panics if this CPU cannot run it. Every int8 path's CPU also runs
/// the AVX2 f32 kernel, which is what `Avx512Vnni` means here.
#[doc(hidden)]
pub fn gemm_on(
    path: Isa,
    w: &PackedF32,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(
        x.len() >= m * cols,
        "x holds {} values, need {m} x {cols}",
        x.len()
    );
    assert!(
        out.len() >= m * rows,
        "out holds {} values, need {m} x {rows}",
        out.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            rows,
            "bias of {} values for {rows} outputs",
            b.len()
        );
    }
    assert!(
        crate::supported_isas().contains(&path),
        "{path:?} is not supported by this CPU"
    );
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        for r in out[..m * rows].chunks_exact_mut(rows) {
            match bias {
                Some(b) => r.copy_from_slice(b),
                None => r.fill(0.0),
            }
        }
        return;
    }
    let simd = !matches!(path, Isa::Portable);
    let panels = rows.div_ceil(NR);
    let (row_tasks, col_tasks) = (m.div_ceil(MB), panels.div_ceil(NB));
    let outp = SharedMut(out.as_mut_ptr());
    threads.run(row_tasks * col_tasks, &|t| {
        let (rt, ct) = (t / col_tasks, t % col_tasks);
        let rows_range = rt * MB..((rt + 1) * MB).min(m);
        let panel_range = ct * NB..((ct + 1) * NB).min(panels);
        // SAFETY: task t owns output rows `rows_range` x the columns of `panel_range`.
        unsafe { task(simd, w, x, bias, outp, rows_range, panel_range) };
    });
}

/// What a tile starts from: the bias (first k block) or the partial sums already in `out`.
#[derive(Clone, Copy)]
enum Start<'a> {
    Bias(&'a [f32; NR]),
    Out,
}

/// # Safety
/// The caller owns `rows` x the panels' columns of `out` (`m x w.rows`, row-major).
unsafe fn task(
    simd: bool,
    w: &PackedF32,
    x: &[f32],
    bias: Option<&[f32]>,
    out: SharedMut<f32>,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
) {
    let (n, k) = (w.rows, w.cols);
    for kb in (0..k).step_by(KC) {
        let kc = KC.min(k - kb);
        for p in panels.clone() {
            let j0 = p * NR;
            let ncols = NR.min(n - j0);
            let mut b16 = [0f32; NR];
            if let Some(b) = bias {
                b16[..ncols].copy_from_slice(&b[j0..j0 + ncols]);
            }
            let start = if kb == 0 {
                Start::Bias(&b16)
            } else {
                Start::Out
            };
            let panel = w.data.as_ptr().add((p * k + kb) * NR);
            for i0 in rows.clone().step_by(MR) {
                let r = MR.min(rows.end - i0);
                let a = x.as_ptr().add(i0 * k + kb);
                let c = out.get().add(i0 * n + j0);
                let tile = Tile {
                    a,
                    lda: k,
                    b: panel,
                    kc,
                    c,
                    ldc: n,
                    ncols,
                };
                #[cfg(target_arch = "x86_64")]
                if simd {
                    match r {
                        6 => avx2::tile::<6>(&tile, start),
                        5 => avx2::tile::<5>(&tile, start),
                        4 => avx2::tile::<4>(&tile, start),
                        3 => avx2::tile::<3>(&tile, start),
                        2 => avx2::tile::<2>(&tile, start),
                        _ => avx2::tile::<1>(&tile, start),
                    }
                    continue;
                }
                let _ = simd;
                portable_tile(r, &tile, start);
            }
        }
    }
}

/// One register tile's operands: `r` rows of `a` (stride `lda`) from the k block's start, the
/// panel's k block (`kc x NR`), and the output tile (stride `ldc`, `ncols` valid columns).
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    ncols: usize,
}

/// The portable tile: the same order as the AVX2 one, one product then one add per k.
unsafe fn portable_tile(r: usize, t: &Tile, start: Start) {
    let mut acc = [[0f32; NR]; MR];
    for (i, row) in acc.iter_mut().enumerate().take(r) {
        match start {
            Start::Bias(b) => *row = *b,
            Start::Out => {
                for (l, v) in row.iter_mut().enumerate().take(t.ncols) {
                    *v = *t.c.add(i * t.ldc + l);
                }
            }
        }
    }
    for k in 0..t.kc {
        let b = std::slice::from_raw_parts(t.b.add(k * NR), NR);
        for (i, row) in acc.iter_mut().enumerate().take(r) {
            let a = *t.a.add(i * t.lda + k);
            for (v, &bl) in row.iter_mut().zip(b) {
                *v += a * bl;
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(r) {
        for (l, &v) in row.iter().enumerate().take(t.ncols) {
            *t.c.add(i * t.ldc + l) = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Start, Tile, MR, NR};
    use std::arch::x86_64::*;

    /// `R` rows x 16 columns: `R * 2` accumulators stay in registers for the whole k block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(t: &Tile, start: Start) {
        debug_assert!(R <= MR);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        match start {
            Start::Bias(b) => {
                let (b0, b1) = (
                    _mm256_loadu_ps(b.as_ptr()),
                    _mm256_loadu_ps(b.as_ptr().add(8)),
                );
                for row in acc.iter_mut() {
                    *row = [b0, b1];
                }
            }
            Start::Out => {
                for (i, row) in acc.iter_mut().enumerate() {
                    *row = load_row(t.c.add(i * t.ldc), t.ncols);
                }
            }
        }
        let mut b = t.b;
        for k in 0..t.kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*t.a.add(i * t.lda + k));
                row[0] = _mm256_fmadd_ps(a, b0, row[0]);
                row[1] = _mm256_fmadd_ps(a, b1, row[1]);
            }
            b = b.add(NR);
        }
        for (i, row) in acc.iter().enumerate() {
            store_row(t.c.add(i * t.ldc), t.ncols, *row);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_row(c: *const f32, ncols: usize) -> [__m256; 2] {
        if ncols == NR {
            return [_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))];
        }
        let mut tmp = [0f32; NR];
        std::ptr::copy_nonoverlapping(c, tmp.as_mut_ptr(), ncols);
        [
            _mm256_loadu_ps(tmp.as_ptr()),
            _mm256_loadu_ps(tmp.as_ptr().add(8)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_row(c: *mut f32, ncols: usize, v: [__m256; 2]) {
        if ncols == NR {
            _mm256_storeu_ps(c, v[0]);
            _mm256_storeu_ps(c.add(8), v[1]);
            return;
        }
        let mut tmp = [0f32; NR];
        _mm256_storeu_ps(tmp.as_mut_ptr(), v[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v[1]);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), c, ncols);
    }
}

/// `gemm` in f64, one output at a time: the reference for tests.
#[doc(hidden)]
pub fn gemm_reference(w: &PackedF32, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f64> {
    let (rows, cols) = (w.rows, w.cols);
    let mut out = vec![0f64; m * rows];
    for j in 0..rows {
        let wr = w.row(j);
        for i in 0..m {
            let xi = &x[i * cols..(i + 1) * cols];
            let dot: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[i * rows + j] = dot + bias.map_or(0.0, |b| b[j] as f64);
        }
    }
    out
}
