//! bf16 products for many rows: `out = bf16(x) · bf16(W)ᵀ + bias`, summed in f32. The encoder's
//! fast path on CPUs with AMX (Intel's tile unit: one `tdpbf16ps` multiplies a 16 × 32 bf16
//! tile by a 32 × 16 one, 8,192 multiply-adds, several times the f32 FMA peak).
//!
//! Weights are rounded to bf16 once, at load, and packed as AMX B tiles ([`PackedBf16`]): per
//! panel of 16 output features, one 1 KiB tile per 32 k, pairs of k side by side. Each call
//! rounds the activation rows to bf16 (round to nearest even) into A tiles (16 rows x 32 k,
//! contiguous, zero-padded), then tasks of 32 rows × a few 32-column panel pairs keep a 2 × 2 block of f32 sum tiles
//! in the tile registers for the whole k loop: they start from the bias and are stored straight
//! into the output (through a small buffer at the edges).
//!
//! Cost: the operands lose precision (8 significant bits), the sums do not (products of two bf16
//! values are exact in f32). Per output the error against f32 is about
//! `2^-8 * sqrt(sum_k (w_k x_k)^2)`; an encoder's embedding stays within cosine 0.9999 of f32's
//! (the encoder's golden tests check it).
//!
//! **Invariant:** a row's result depends only on that row and the weights, never on the rows
//! that share its call or the task split (a text embeds the same alone and in a batch).
//!
//! Paths ([`Bf16Path`]): AMX-BF16 where the CPU has it and the OS grants it; AVX-512 BF16
//! (`vdpbf16ps`, 8 x 32 register blocks over the same tiles) where the CPU has that; and a
//! portable one (f32 sums in a fixed order) that every CPU runs.

use crate::{SharedMut, Threads};

/// Output features per panel: one tile row of 16 f32 sums.
const NT: usize = 16;
/// k values per tile step: 16 tile rows of bf16 pairs (64 bytes each).
const KT: usize = 32;
/// Activation rows per tile.
const MT: usize = 16;
/// Panel pairs (32 output features each) per task.
const PAIRS_PER_TASK: usize = 4;

/// Rounds to the nearest bf16, ties to even; NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// A dense weight matrix `[rows = out features, cols = in features]` in bf16, packed as AMX B
/// tiles for [`gemm_bf16`].
#[derive(Clone)]
pub struct PackedBf16 {
    rows: usize,
    cols: usize,
    /// `cols` rounded up to a whole k step.
    kp: usize,
    /// Panels of `NT` features, rounded up to an even number (tasks take them in pairs).
    panels: usize,
    /// `data[((p * kp / KT + s) * 16 + r) * 32 + 2 * l + e] = bf16(W[p * NT + l, s * KT + 2 * r + e])`,
    /// zero past `rows` and `cols`.
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBf16")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl PackedBf16 {
    /// Rounds and packs a row-major `rows x cols` f32 matrix (PyTorch's `nn.Linear.weight`).
    pub fn new(rows: usize, cols: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), rows * cols, "PackedBf16: data is not rows x cols");
        let kp = cols.next_multiple_of(KT);
        let panels = rows.div_ceil(NT).next_multiple_of(2);
        let steps = kp / KT;
        let mut data = vec![0u16; panels * NT * kp];
        for j in 0..rows {
            let (p, l) = (j / NT, j % NT);
            for (k, &v) in w[j * cols..(j + 1) * cols].iter().enumerate() {
                let (s, r, e) = (k / KT, (k % KT) / 2, k % 2);
                data[((p * steps + s) * 16 + r) * 32 + 2 * l + e] = f32_to_bf16(v);
            }
        }
        Self {
            rows,
            cols,
            kp,
            panels,
            data,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the packed weights occupy.
    pub fn weight_bytes(&self) -> usize {
        self.data.len() * 2
    }

    /// Row `j` as stored, widened to f32 (for tests and references).
    pub fn row(&self, j: usize) -> Vec<f32> {
        assert!(j < self.rows, "row {j} out of {}", self.rows);
        let (p, l, steps) = (j / NT, j % NT, self.kp / KT);
        (0..self.cols)
            .map(|k| {
                let (s, r, e) = (k / KT, (k % KT) / 2, k % 2);
                bf16_to_f32(self.data[((p * steps + s) * 16 + r) * 32 + 2 * l + e])
            })
            .collect()
    }
}

/// How [`gemm_bf16`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// Intel AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`: 32 bf16 products per instruction, twice an f32 FMA's), for
    /// CPUs that have it without AMX (AMD Zen 4 and later, Intel Cooper Lake). On a Sapphire
    /// Rapids class Xeon it runs at about the AVX2 f32 GEMM's rate (110 GFLOP/s a core).
    Avx512Bf16,
    /// Plain f32 sums in a fixed order: slow, for CPUs without AMX and as a second opinion.
    Portable,
}

/// Whether this CPU has AMX-BF16 and the OS lets this process use it (asked once).
pub fn amx_available() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(detect_amx)
}

fn detect_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // CPUID.(7,0):EDX bit 24 = AMX-TILE, bit 22 = AMX-BF16.
        let l7 = std::arch::x86_64::__cpuid_count(7, 0);
        if (l7.edx >> 24) & 1 == 0 || (l7.edx >> 22) & 1 == 0 {
            return false;
        }
        // Linux leaves the 8 KiB tile state off until a process asks for it:
        // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). The grant covers every thread.
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// The paths this CPU runs, best first (tests run each).
pub fn bf16_paths() -> Vec<Bf16Path> {
    supported_paths().to_vec()
}

/// [`bf16_paths`], found once: every call of [`gemm_bf16`] reads it.
fn supported_paths() -> &'static [Bf16Path] {
    static PATHS: std::sync::OnceLock<Vec<Bf16Path>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths = Vec::new();
        if amx_available() {
            paths.push(Bf16Path::Amx);
        }
        if avx512_bf16_available() {
            paths.push(Bf16Path::Avx512Bf16);
        }
        paths.push(Bf16Path::Portable);
        paths
    })
}

/// Whether this CPU has AVX-512 BF16 (with F and BW).
pub fn avx512_bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[i * rows + j] = bias[j] + sum_k bf16(x[i * cols + k]) * W[j, k]` for `i` in `0..m`, on
/// the best path.
pub fn gemm_bf16(
    w: &PackedBf16,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    gemm_bf16_on(supported_paths()[0], w, x, m, bias, out, threads);
}

thread_local! {
    /// The caller's bf16 activation buffer, reused across calls.
    static ACTIVATIONS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `gemm_bf16` on a chosen path; panics if this CPU cannot run it.
#[doc(hidden)]
pub fn gemm_bf16_on(
    path: Bf16Path,
    w: &PackedBf16,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    let (rows, cols) = (w.rows, w.cols);
    crate::gemm::check_dense(rows, cols, x, m, bias, out);
    assert!(
        supported_paths().contains(&path),
        "{path:?} is not supported by this CPU"
    );
    if crate::gemm::trivial_dense(rows, cols, m, bias, out) {
        return;
    }
    let mp = m.next_multiple_of(MT);
    ACTIVATIONS.with_borrow_mut(|a| {
        // Every element is written below (rows, their padding, the padding rows), so a grown
        // buffer needs no clearing.
        if a.len() < mp * w.kp {
            a.resize(mp * w.kp, 0);
        }
        let a = &mut a[..mp * w.kp];
        round_rows(x, m, cols, w.kp, a, threads);
        match path {
            Bf16Path::Amx => amx_gemm(w, a, m, bias, out, threads),
            Bf16Path::Avx512Bf16 => dp_gemm(w, a, m, bias, out, threads),
            Bf16Path::Portable => portable_gemm(w, a, m, bias, out, threads),
        }
    });
}

/// Where activation `(i, k)` sits in the rounded buffer: as AMX A tiles (16 rows x 32 k, 1 KiB),
/// a 16-row group's tiles in k order, so every tile load reads one contiguous KiB (which the
/// hardware prefetchers follow; rows `kp` apart were the kernel's main stall).
fn a_index(i: usize, k: usize, steps: usize) -> usize {
    ((i / MT) * steps + k / KT) * (MT * KT) + (i % MT) * KT + k % KT
}

/// Rounds `m` rows of `x` into `a` as A tiles (rows up to the next multiple of 16 and k up to
/// `kp` are zero), 16-row groups split over threads.
fn round_rows(x: &[f32], m: usize, cols: usize, kp: usize, a: &mut [u16], threads: &Threads) {
    const GROUPS: usize = 2;
    let steps = kp / KT;
    let groups = m.div_ceil(MT);
    let ap = SharedMut(a.as_mut_ptr());
    threads.run(groups.div_ceil(GROUPS), &|t| {
        let mut row = vec![0u16; kp];
        for i in t * GROUPS * MT..((t + 1) * GROUPS * MT).min(groups * MT) {
            if i < m {
                round_row(&x[i * cols..(i + 1) * cols], &mut row[..cols]);
            } else {
                row.fill(0);
            }
            for (s, chunk) in row.chunks_exact(KT).enumerate() {
                // SAFETY: task t owns the tiles of its 16-row groups; `a` holds `groups`
                // groups of `steps` tiles.
                unsafe {
                    let dst = ap.get().add(a_index(i, s * KT, steps));
                    std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst, KT);
                }
            }
        }
    });
}

/// `dst[i] = f32_to_bf16(src[i])`, 16 at a time where AVX-512 is there (every AMX CPU has it).
fn round_row(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: the features were just checked.
        unsafe { avx512::round_row(src, dst) };
        return;
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16(v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Copies the valid part of a 32 x 32 block of results (`stage`, row stride `2 * NT`) to `out`.
///
/// # Safety
/// The caller owns rows `r0..r0 + nr` x columns `c0..c0 + nc` of `out` (row stride `n`).
unsafe fn write_block(
    stage: &[f32],
    nr: usize,
    nc: usize,
    out: SharedMut<f32>,
    n: usize,
    r0: usize,
    c0: usize,
) {
    for i in 0..nr {
        let dst = std::slice::from_raw_parts_mut(out.get().add((r0 + i) * n + c0), nc);
        dst.copy_from_slice(&stage[i * 2 * NT..i * 2 * NT + nc]);
    }
}

/// The bias padded to whole panel pairs (zero where there is none): the sums start from it.
fn padded_bias(w: &PackedBf16, bias: Option<&[f32]>) -> Vec<f32> {
    let mut b = vec![0f32; w.panels * NT];
    if let Some(bias) = bias {
        b[..w.rows].copy_from_slice(bias);
    }
    b
}

/// One unit of work: up to 32 rows x one pair of panels (32 output features).
struct Block<'a> {
    rows: std::ops::Range<usize>,
    /// The first output column and how many of the 32 exist.
    c0: usize,
    nc: usize,
    /// The pair's two panels: `steps` B tiles each.
    b0: &'a [u16],
    b1: &'a [u16],
    /// The 32 bias values the sums start from (zero past the weights' rows).
    bias: &'a [f32],
}

/// The task grid every path shares: tasks of 32 rows x up to `PAIRS_PER_TASK` panel pairs,
/// spread over the pool, each calling `f` once per pair.
fn for_each_block(
    w: &PackedBf16,
    m: usize,
    bias: Option<&[f32]>,
    threads: &Threads,
    f: &(dyn Fn(Block<'_>) + Sync),
) {
    let bias = padded_bias(w, bias);
    let panel = (w.kp / KT) * NT * KT;
    let pairs = w.panels / 2;
    let row_tasks = m.div_ceil(2 * MT);
    let col_tasks = pairs.div_ceil(PAIRS_PER_TASK);
    threads.run(row_tasks * col_tasks, &|t| {
        let (rt, ct) = (t / col_tasks, t % col_tasks);
        let rows = rt * 2 * MT..((rt + 1) * 2 * MT).min(m);
        for q in ct * PAIRS_PER_TASK..((ct + 1) * PAIRS_PER_TASK).min(pairs) {
            let c0 = q * 2 * NT;
            f(Block {
                rows: rows.clone(),
                c0,
                nc: (2 * NT).min(w.rows - c0),
                b0: &w.data[2 * q * panel..(2 * q + 1) * panel],
                b1: &w.data[(2 * q + 1) * panel..(2 * q + 2) * panel],
                bias: &bias[c0..c0 + 2 * NT],
            });
        }
    });
}

fn portable_gemm(
    w: &PackedBf16,
    a: &[u16],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    let (n, steps) = (w.rows, w.kp / KT);
    let outp = SharedMut(out.as_mut_ptr());
    for_each_block(w, m, bias, threads, &|blk| {
        let (rows, c0, nc) = (blk.rows, blk.c0, blk.nc);
        let wrows: Vec<Vec<f32>> = (c0..c0 + nc).map(|j| w.row(j)).collect();
        let mut stage = [0f32; 2 * MT * 2 * NT];
        for (i, srow) in stage.chunks_exact_mut(2 * NT).take(rows.len()).enumerate() {
            let arow: Vec<f32> = (0..w.cols)
                .map(|k| bf16_to_f32(a[a_index(rows.start + i, k, steps)]))
                .collect();
            for ((s, wr), &b) in srow.iter_mut().zip(&wrows).zip(blk.bias) {
                *s = b + crate::dot_f32(&arow, wr);
            }
        }
        // SAFETY: this block's task owns `rows` x the pair's columns.
        unsafe { write_block(&stage, rows.len(), nc, outp, n, rows.start, c0) };
    });
}

fn amx_gemm(
    w: &PackedBf16,
    a: &[u16],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let (n, steps) = (w.rows, w.kp / KT);
        let outp = SharedMut(out.as_mut_ptr());
        for_each_block(w, m, bias, threads, &|blk| {
            amx::configure();
            let (rows, c0, nc) = (blk.rows, blk.c0, blk.nc);
            let a0 = a[a_index(rows.start, 0, steps)..].as_ptr();
            let tall = rows.len() > MT;
            // A whole block goes straight to `out`; an edge block through `stage`.
            let direct = nc == 2 * NT && rows.len() == if tall { 2 * MT } else { MT };
            // Written by the tile stores before it is read; zeroing 4 KiB per block cost as
            // much as a tenth of an encoder pass.
            let mut stage = std::mem::MaybeUninit::<[f32; 2 * MT * 2 * NT]>::uninit();
            let (c, ldc) = if direct {
                (outp.get().wrapping_add(rows.start * n + c0), n * 4)
            } else {
                (stage.as_mut_ptr().cast::<f32>(), 2 * NT * 4)
            };
            let t = amx::Operands {
                a0,
                a1: a0.wrapping_add(steps * MT * KT),
                b0: blk.b0.as_ptr(),
                b1: blk.b1.as_ptr(),
                steps,
                bias: blk.bias.as_ptr(),
                c,
                ldc,
            };
            // SAFETY: `a` holds whole 16-row groups of `steps` tiles from `rows.start` (padded
            // to `mp`); each panel holds `steps` tiles; the bias has 32 values; `c` is this
            // block of `out` (whole) or `stage`.
            unsafe {
                if tall {
                    amx::tile_32x32(&t);
                } else {
                    amx::tile_16x32(&t);
                }
                if !direct {
                    let stage = stage.assume_init_ref();
                    write_block(stage, rows.len(), nc, outp, n, rows.start, c0);
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, a, m, bias, out, threads);
        unreachable!("AMX is x86-64 only");
    }
}

fn dp_gemm(
    w: &PackedBf16,
    a: &[u16],
    m: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: &Threads,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let (n, steps) = (w.rows, w.kp / KT);
        let outp = SharedMut(out.as_mut_ptr());
        for_each_block(w, m, bias, threads, &|blk| {
            for i0 in blk.rows.clone().step_by(dp::MR) {
                let nr = dp::MR.min(blk.rows.end - i0);
                let a0 = a[a_index(i0, 0, steps)..].as_ptr();
                // SAFETY: rows are zero-padded to whole 16-row groups, so 8 rows from i0 (a
                // multiple of 8) exist; each panel holds `steps` tiles; the bias has 32 values;
                // this block's task owns its rows x the pair's columns.
                unsafe {
                    let o = outp.get().add(i0 * n + blk.c0);
                    let (b0, b1) = (blk.b0.as_ptr(), blk.b1.as_ptr());
                    dp::block(a0, b0, b1, steps, blk.bias.as_ptr(), o, n, nr, blk.nc);
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, a, m, bias, out, threads);
        unreachable!("AVX-512 BF16 is x86-64 only");
    }
}

#[cfg(target_arch = "x86_64")]
mod dp;

#[cfg(target_arch = "x86_64")]
mod amx;

/// `gemm_bf16` in f64 over the bf16-rounded operands, one output at a time: the reference for
/// tests (it differs from the fast paths only by their f32 rounding of the sums).
#[doc(hidden)]
pub fn gemm_bf16_reference(w: &PackedBf16, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f64> {
    let (rows, cols) = (w.rows, w.cols);
    let mut out = vec![0f64; m * rows];
    for j in 0..rows {
        let wr = w.row(j);
        for i in 0..m {
            let xi = &x[i * cols..(i + 1) * cols];
            let dot: f64 = wr
                .iter()
                .zip(xi)
                .map(|(&a, &b)| a as f64 * bf16_to_f32(f32_to_bf16(b)) as f64)
                .sum();
            out[i * rows + j] = dot + bias.map_or(0.0, |b| b[j] as f64);
        }
    }
    out
}
