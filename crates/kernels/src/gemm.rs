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
//! that share its call (a text embeds the same alone and in a batch). Paths: AVX-512 (12 x 32
//! tiles over two panels, the same bits as AVX2), AVX2+FMA, and a portable one with the same
//! order (unfused, so its rounding differs from the AVX2 path's).

use crate::{Isa, SharedMut, Threads};

/// Output features per packed panel: two 8-lane vectors.
pub const NR: usize = 16;
/// Activation rows per register tile (6 × 2 accumulators + 2 weight vectors + 1 broadcast fit in
/// the 16 vector registers).
const MR: usize = 6;
/// k values per cache block.
const KC: usize = 256;
/// Rows per task (a multiple of `MR` and of `MR512`).
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

/// `gemm` on a chosen path; panics if this CPU cannot run it. `Avx512Vnni` means the AVX-512
/// kernel here (every such CPU has AVX-512F): 12 x 32 register tiles, the AVX2 kernel's
/// arithmetic per output, so the same bits.
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
    check_dense(rows, cols, x, m, bias, out);
    assert!(
        crate::supported_isas().contains(&path),
        "{path:?} is not supported by this CPU"
    );
    if trivial_dense(rows, cols, m, bias, out) {
        return;
    }
    let kind = match path {
        Isa::Portable => Kernel::Portable,
        Isa::Avx2 => Kernel::Avx2,
        Isa::Avx512Vnni => Kernel::Avx512,
    };
    let panels = rows.div_ceil(NR);
    let (row_tasks, col_tasks) = (m.div_ceil(MB), panels.div_ceil(NB));
    let outp = SharedMut(out.as_mut_ptr());
    threads.run(row_tasks * col_tasks, &|t| {
        let (rt, ct) = (t / col_tasks, t % col_tasks);
        let rows_range = rt * MB..((rt + 1) * MB).min(m);
        let panel_range = ct * NB..((ct + 1) * NB).min(panels);
        // SAFETY: task t owns output rows `rows_range` x the columns of `panel_range`.
        unsafe { task(kind, w, x, bias, outp, rows_range, panel_range) };
    });
}

/// The shape checks `gemm` and `gemm_bf16` share: `x` holds `m x cols`, `out` `m x rows`, a
/// bias `rows` values.
pub(crate) fn check_dense(
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) {
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
}

/// Does the calls with nothing to multiply (no rows, or no columns: every output is its bias)
/// and says whether it did.
pub(crate) fn trivial_dense(
    rows: usize,
    cols: usize,
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> bool {
    if m == 0 || rows == 0 {
        return true;
    }
    if cols > 0 {
        return false;
    }
    for r in out[..m * rows].chunks_exact_mut(rows) {
        match bias {
            Some(b) => r.copy_from_slice(b),
            None => r.fill(0.0),
        }
    }
    true
}

/// What a tile starts from: the bias (first k block) or the partial sums already in `out`.
#[derive(Clone, Copy)]
enum Start<'a> {
    Bias(&'a [f32; NR]),
    Out,
}

/// Which tile kernel a task runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    Avx2,
    Avx512,
}

/// # Safety
/// The caller owns `rows` x the panels' columns of `out` (`m x w.rows`, row-major).
unsafe fn task(
    kind: Kernel,
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
        // Panels one at a time, or two at a time on AVX-512.
        let step = if kind == Kernel::Avx512 { 2 } else { 1 };
        for p in panels.clone().step_by(step) {
            let np = step.min(panels.end - p);
            let j0 = p * NR;
            let ncols = (np * NR).min(n - j0);
            let mut b32 = [0f32; 2 * NR];
            if let Some(b) = bias {
                b32[..ncols].copy_from_slice(&b[j0..j0 + ncols]);
            }
            let panel = w.data.as_ptr().add((p * k + kb) * NR);
            let rows_per_tile = if kind == Kernel::Avx512 { MR512 } else { MR };
            for i0 in rows.clone().step_by(rows_per_tile) {
                let r = rows_per_tile.min(rows.end - i0);
                let tile = Tile {
                    a: x.as_ptr().add(i0 * k + kb),
                    lda: k,
                    b: panel,
                    kc,
                    c: out.get().add(i0 * n + j0),
                    ldc: n,
                    ncols,
                };
                let first = kb == 0;
                match kind {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512 => {
                        let start = if first {
                            Start2::Bias(&b32)
                        } else {
                            Start2::Out
                        };
                        // The second panel's k block is one panel (k x NR values) further on.
                        if np == 2 {
                            avx512::tile_rows::<2>(r, &tile, k * NR, start);
                        } else {
                            avx512::tile_rows::<1>(r, &tile, k * NR, start);
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => {
                        let b16: &[f32; NR] = b32[..NR].try_into().expect("16 values");
                        let start = if first { Start::Bias(b16) } else { Start::Out };
                        match r {
                            6 => avx2::tile::<6>(&tile, start),
                            5 => avx2::tile::<5>(&tile, start),
                            4 => avx2::tile::<4>(&tile, start),
                            3 => avx2::tile::<3>(&tile, start),
                            2 => avx2::tile::<2>(&tile, start),
                            _ => avx2::tile::<1>(&tile, start),
                        }
                    }
                    _ => {
                        let b16: &[f32; NR] = b32[..NR].try_into().expect("16 values");
                        let start = if first { Start::Bias(b16) } else { Start::Out };
                        portable_tile(r, &tile, start);
                    }
                }
            }
        }
    }
}

/// Activation rows per AVX-512 register tile: 12 rows x 2 panels = 24 accumulators, plus the two
/// weight vectors and a broadcast, in the 32 vector registers.
const MR512: usize = 12;

/// What an AVX-512 tile (up to two panels) starts from.
#[derive(Clone, Copy)]
enum Start2<'a> {
    Bias(&'a [f32; 2 * NR]),
    Out,
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Start2, Tile, MR512, NR};
    use std::arch::x86_64::*;

    /// `r` rows (1..=12) of a `P`-panel tile.
    ///
    /// # Safety
    /// AVX-512F present; the tile's operands as in `task`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_rows<const P: usize>(
        r: usize,
        t: &Tile,
        stride: usize,
        start: Start2,
    ) {
        match r {
            12 => tile::<12, P>(t, stride, start),
            11 => tile::<11, P>(t, stride, start),
            10 => tile::<10, P>(t, stride, start),
            9 => tile::<9, P>(t, stride, start),
            8 => tile::<8, P>(t, stride, start),
            7 => tile::<7, P>(t, stride, start),
            6 => tile::<6, P>(t, stride, start),
            5 => tile::<5, P>(t, stride, start),
            4 => tile::<4, P>(t, stride, start),
            3 => tile::<3, P>(t, stride, start),
            2 => tile::<2, P>(t, stride, start),
            _ => tile::<1, P>(t, stride, start),
        }
    }

    /// `R` rows x `P` panels of 16 columns, accumulators in registers for the whole k block:
    /// per output the start value then one FMA per k in order, as in the AVX2 tile.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const P: usize>(t: &Tile, stride: usize, start: Start2) {
        debug_assert!(R <= MR512 && P <= 2);
        let mask: [__mmask16; P] = std::array::from_fn(|q| {
            let valid = t.ncols.saturating_sub(q * NR).min(NR);
            ((1u32 << valid) - 1) as __mmask16
        });
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        match start {
            Start2::Bias(b) => {
                let bv: [__m512; P] =
                    std::array::from_fn(|q| _mm512_loadu_ps(b.as_ptr().add(q * NR)));
                for row in acc.iter_mut() {
                    *row = bv;
                }
            }
            Start2::Out => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (q, v) in row.iter_mut().enumerate() {
                        *v = _mm512_maskz_loadu_ps(mask[q], t.c.add(i * t.ldc + q * NR));
                    }
                }
            }
        }
        let mut b = t.b;
        for k in 0..t.kc {
            let bv: [__m512; P] = std::array::from_fn(|q| _mm512_loadu_ps(b.add(q * stride)));
            for (i, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*t.a.add(i * t.lda + k));
                for (v, &w) in row.iter_mut().zip(&bv) {
                    *v = _mm512_fmadd_ps(a, w, *v);
                }
            }
            b = b.add(NR);
        }
        for (i, row) in acc.iter().enumerate() {
            for (q, &v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(i * t.ldc + q * NR), mask[q], v);
            }
        }
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
