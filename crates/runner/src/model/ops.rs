//! Small f32 kernels of the forward pass that are not matrix products over weights: RMS norm,
//! RoPE, gated activations and the two inner loops of attention (scores and the weighted sum of
//! values).
//!
//! The exp-heavy and attention loops have an AVX2+FMA path chosen once at run time and a portable
//! path. A machine always takes the same path, and every output element is computed in the same
//! order whatever the batch around it, so a sequence's results do not depend on its neighbours.

use std::sync::OnceLock;

/// Whether the AVX2+FMA paths may run on this CPU (checked once).
fn simd() -> bool {
    static SIMD: OnceLock<bool> = OnceLock::new();
    *SIMD.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Keys are processed in aligned blocks of this many, so that every key sits in the same SIMD
/// lane whichever block it falls in (results stay independent of how a sequence is chunked).
pub(super) const KEY_BLOCK: usize = 32;

/// `out = x / sqrt(mean(x^2) + eps) * w`, for each row of `x` (row length `w.len()`).
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let m = (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v / m * g;
        }
    }
}

/// [`rms_norm`] in place.
pub(super) fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let m = (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = *v / m * g;
        }
    }
}

/// How a model pairs the dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama-architecture GGUF files (their Q/K rows are permuted for it).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face checkpoints, qwen2 and gemma3 GGUF files.
    Halves,
}

/// cos and sin of every position up to the longest context used so far, for one RoPE base.
/// Grown on demand rather than sized to the model's whole context.
#[derive(Debug)]
pub(super) struct RopeTable {
    inv_freq: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(head_dim: usize, base: f32) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1f32 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self {
            inv_freq,
            cos: Vec::new(),
            sin: Vec::new(),
        }
    }

    /// Makes positions `0..positions` available.
    pub fn ensure(&mut self, positions: usize) {
        let half = self.inv_freq.len();
        let have = self.cos.len() / half.max(1);
        if positions <= have {
            return;
        }
        let upto = positions.next_multiple_of(256);
        self.cos.reserve((upto - have) * half);
        self.sin.reserve((upto - have) * half);
        for p in have..upto {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                self.cos.push(angle.cos());
                self.sin.push(angle.sin());
            }
        }
    }

    /// Rotates every head of one row (`heads * head_dim` values) to position `pos`.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, pos: usize, style: RopeStyle) {
        let half = head_dim / 2;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        for head in row.chunks_exact_mut(head_dim) {
            match style {
                RopeStyle::Interleaved => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                }
                RopeStyle::Halves => {
                    let (lo, hi) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (lo[i], hi[i]);
                        lo[i] = a * cos[i] - b * sin[i];
                        hi[i] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

/// The gate's nonlinearity in a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// `x * sigmoid(x)` (llama family).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

/// `out[r] = act(gate[r]) * up[r]` for each row, where row r of `gu` holds the gate (`ffn`
/// values) then the up projection (`ffn` values).
pub(super) fn gated(act: Activation, gu: &[f32], ffn: usize, out: &mut [f32]) {
    for (row, o) in gu.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
        let (g, u) = row.split_at(ffn);
        #[cfg(target_arch = "x86_64")]
        if simd() {
            // SAFETY: AVX2 and FMA were detected.
            unsafe { x86::gated(act, g, u, o) };
            continue;
        }
        portable_gated(act, g, u, o);
    }
}

fn portable_gated(act: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
        *o = match act {
            Activation::Silu => x / (1.0 + exp_scalar(-x)),
            Activation::GeluTanh => {
                let t = GELU_C * (x + 0.044715 * x * x * x);
                0.5 * x * (2.0 - 2.0 / (exp_scalar(2.0 * t) + 1.0))
            }
        } * y;
    }
}

/// sqrt(2 / pi).
const GELU_C: f32 = 0.797_884_6;

// Cephes-style exp: e^x = 2^n * e^r with |r| <= ln2/2, r's exponential by a degree-5 polynomial.
// Relative error about 1e-7; inputs below EXP_LO give exactly 0 so that masked scores vanish.
const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 5e-1;

fn exp_scalar(x: f32) -> f32 {
    if x < EXP_LO {
        return 0.0;
    }
    let x = x.min(EXP_HI);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut y = P0;
    for p in [P1, P2, P3, P4, P5] {
        y = y * r + p;
    }
    let y = y * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// One block of attention rows (query heads and positions) of one sequence against one KV head.
pub(super) struct AttnRows<'a> {
    /// Query vectors, each `head_dim` long, already scaled.
    pub q: &'a [&'a [f32]],
    /// Per row: the first and one past the last visible key.
    pub visible: &'a [(usize, usize)],
    /// Keys transposed, `[head_dim][cap]`, and values `[cap][head_dim]`.
    pub kt: &'a [f32],
    pub v: &'a [f32],
    pub cap: usize,
    pub head_dim: usize,
}

/// Softmax attention for a block of rows: `out[r] = softmax(q_r K^T) V`. `scores` is scratch.
pub(super) fn attend_rows(a: &AttnRows<'_>, scores: &mut Vec<f32>, out: &mut [&mut [f32]]) {
    let rows = a.q.len();
    let lo = a.visible.iter().map(|v| v.0).min().unwrap_or(0);
    let hi = a.visible.iter().map(|v| v.1).max().unwrap_or(0);
    let j0 = lo / KEY_BLOCK * KEY_BLOCK;
    let j1 = hi.next_multiple_of(KEY_BLOCK).min(a.cap);
    let span = j1 - j0;
    if scores.len() < rows * span {
        scores.resize(rows * span, 0.0);
    }
    let scores = &mut scores[..rows * span];
    #[cfg(target_arch = "x86_64")]
    if simd() && a.head_dim.is_multiple_of(8) && span.is_multiple_of(KEY_BLOCK) {
        // SAFETY: AVX2 and FMA were detected; shapes checked above.
        unsafe { x86::attend_rows(a, j0, j1, scores, out) };
        return;
    }
    portable_attend_rows(a, j0, j1, scores, out);
}

fn portable_attend_rows(
    a: &AttnRows<'_>,
    j0: usize,
    j1: usize,
    scores: &mut [f32],
    out: &mut [&mut [f32]],
) {
    let span = j1 - j0;
    let hd = a.head_dim;
    for (r, o) in out.iter_mut().enumerate() {
        let q = &a.q[r][..hd];
        let s = &mut scores[r * span..(r + 1) * span];
        s.fill(0.0);
        for (d, &qd) in q.iter().enumerate() {
            let k = &a.kt[d * a.cap + j0..d * a.cap + j1];
            for (sj, &kj) in s.iter_mut().zip(k) {
                *sj += qd * kj;
            }
        }
        let (vlo, vhi) = a.visible[r];
        let max = s[vlo - j0..vhi - j0]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for (j, sj) in s.iter_mut().enumerate() {
            let key = j0 + j;
            *sj = if key >= vlo && key < vhi {
                exp_scalar(*sj - max)
            } else {
                0.0
            };
            sum += *sj;
        }
        let o = &mut o[..hd];
        o.fill(0.0);
        for (j, &p) in s.iter().enumerate() {
            let v = &a.v[(j0 + j) * hd..][..hd];
            for (od, &vd) in o.iter_mut().zip(v) {
                *od += p * vd;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_LO));
        let x = _mm256_min_ps(x, _mm256_set1_ps(EXP_HI));
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(LOG2E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(P0);
        for p in [P1, P2, P3, P4, P5] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(p));
        }
        let y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(pow2)), keep)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gated(act: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len();
        let body = n / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        let two = _mm256_set1_ps(2.0);
        for i in (0..body).step_by(8) {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let y = _mm256_loadu_ps(u.as_ptr().add(i));
            let a = match act {
                Activation::Silu => {
                    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
                    _mm256_div_ps(x, _mm256_add_ps(one, e))
                }
                Activation::GeluTanh => {
                    let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                    let t = _mm256_mul_ps(
                        _mm256_set1_ps(GELU_C),
                        _mm256_fmadd_ps(_mm256_set1_ps(0.044715), x3, x),
                    );
                    let e = exp8(_mm256_mul_ps(two, t));
                    let tanh1 = _mm256_sub_ps(two, _mm256_div_ps(two, _mm256_add_ps(e, one)));
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), tanh1)
                }
            };
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(a, y));
        }
        portable_gated(act, &g[body..], &u[body..], &mut out[body..]);
    }

    /// Scores of `R` query rows against keys `j0..j1` (multiples of 16): 2 vectors of 8 keys
    /// per row in flight, one chain of FMAs over the head dimension per output lane.
    #[inline(always)]
    // Register tiles indexed by row and lane group: iterators would hide the unrolled shape.
    #[allow(clippy::needless_range_loop)]
    unsafe fn scores<const R: usize>(
        a: &AttnRows<'_>,
        r0: usize,
        j0: usize,
        j1: usize,
        s: &mut [f32],
    ) {
        let span = j1 - j0;
        let hd = a.head_dim;
        let q: [*const f32; R] = std::array::from_fn(|r| a.q[r0 + r].as_ptr());
        let kt = a.kt.as_ptr();
        let mut j = j0;
        while j < j1 {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for d in 0..hd {
                let k0 = _mm256_loadu_ps(kt.add(d * a.cap + j));
                let k1 = _mm256_loadu_ps(kt.add(d * a.cap + j + 8));
                for r in 0..R {
                    let qd = _mm256_set1_ps(*q[r].add(d));
                    acc[r][0] = _mm256_fmadd_ps(qd, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qd, k1, acc[r][1]);
                }
            }
            for r in 0..R {
                let o = s.as_mut_ptr().add((r0 + r) * span + (j - j0));
                _mm256_storeu_ps(o, acc[r][0]);
                _mm256_storeu_ps(o.add(8), acc[r][1]);
            }
            j += 16;
        }
    }

    /// `out[r] += sum_j p_r[j] V[j]` for `R` rows, `ND` vectors of 8 dims at a time.
    #[inline(always)]
    // Register tiles indexed by row and lane group: iterators would hide the unrolled shape.
    #[allow(clippy::needless_range_loop)]
    unsafe fn weighted_values<const R: usize, const ND: usize>(
        a: &AttnRows<'_>,
        r0: usize,
        j0: usize,
        j1: usize,
        s: &[f32],
        out: &mut [&mut [f32]],
        inv: &[f32],
    ) {
        let span = j1 - j0;
        let hd = a.head_dim;
        let v = a.v.as_ptr();
        let mut d0 = 0;
        while d0 < hd {
            let mut acc = [[_mm256_setzero_ps(); ND]; R];
            for j in j0..j1 {
                let vj = v.add(j * hd + d0);
                let vv: [__m256; ND] = std::array::from_fn(|n| _mm256_loadu_ps(vj.add(8 * n)));
                for r in 0..R {
                    let p = _mm256_set1_ps(*s.get_unchecked((r0 + r) * span + (j - j0)));
                    for n in 0..ND {
                        acc[r][n] = _mm256_fmadd_ps(p, vv[n], acc[r][n]);
                    }
                }
            }
            for r in 0..R {
                let o = out[r0 + r].as_mut_ptr().add(d0);
                let scale = _mm256_set1_ps(inv[r0 + r]);
                for n in 0..ND {
                    _mm256_storeu_ps(o.add(8 * n), _mm256_mul_ps(acc[r][n], scale));
                }
            }
            d0 += 8 * ND;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attend_rows(
        a: &AttnRows<'_>,
        j0: usize,
        j1: usize,
        s: &mut [f32],
        out: &mut [&mut [f32]],
    ) {
        let span = j1 - j0;
        let rows = a.q.len();
        let mut r0 = 0;
        while r0 < rows {
            match rows - r0 {
                1 => scores::<1>(a, r0, j0, j1, s),
                2 => scores::<2>(a, r0, j0, j1, s),
                3 => scores::<3>(a, r0, j0, j1, s),
                _ => scores::<4>(a, r0, j0, j1, s),
            }
            r0 += 4;
        }
        // Softmax per row; lanes follow the absolute key index (j0 is block-aligned).
        let mut inv = [0f32; 4];
        let mut inv_all = Vec::new();
        let inv: &mut [f32] = if rows <= 4 {
            &mut inv[..rows]
        } else {
            inv_all.resize(rows, 0.0);
            &mut inv_all
        };
        for r in 0..rows {
            let row = &mut s[r * span..(r + 1) * span];
            let (vlo, vhi) = a.visible[r];
            for x in &mut row[..vlo - j0] {
                *x = f32::NEG_INFINITY;
            }
            for x in &mut row[vhi - j0..] {
                *x = f32::NEG_INFINITY;
            }
            let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
            for c in row.chunks_exact(8) {
                m = _mm256_max_ps(m, _mm256_loadu_ps(c.as_ptr()));
            }
            let m128 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m128 = _mm_max_ps(m128, _mm_movehl_ps(m128, m128));
            let m128 = _mm_max_ss(m128, _mm_shuffle_ps::<1>(m128, m128));
            let max = _mm256_set1_ps(_mm_cvtss_f32(m128));
            let mut sum = _mm256_setzero_ps();
            for c in row.chunks_exact_mut(8) {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), max));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
            inv[r] = 1.0 / hsum(sum);
        }
        let nd8 = a.head_dim / 8;
        let mut r0 = 0;
        while r0 < rows {
            match (
                (rows - r0).min(4),
                nd8.is_multiple_of(4),
                nd8.is_multiple_of(2),
            ) {
                (1, true, _) => weighted_values::<1, 4>(a, r0, j0, j1, s, out, inv),
                (1, false, true) => weighted_values::<1, 2>(a, r0, j0, j1, s, out, inv),
                (1, false, false) => weighted_values::<1, 1>(a, r0, j0, j1, s, out, inv),
                (2, _, true) => weighted_values::<2, 2>(a, r0, j0, j1, s, out, inv),
                (2, _, false) => weighted_values::<2, 1>(a, r0, j0, j1, s, out, inv),
                (3, _, true) => weighted_values::<3, 2>(a, r0, j0, j1, s, out, inv),
                (3, _, false) => weighted_values::<3, 1>(a, r0, j0, j1, s, out, inv),
                (_, _, true) => weighted_values::<4, 2>(a, r0, j0, j1, s, out, inv),
                (_, _, false) => weighted_values::<4, 1>(a, r0, j0, j1, s, out, inv),
            }
            r0 += 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulps() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_scalar(x);
            let want = x.exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_scalar(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_scalar(-100.0), 0.0);
    }

    /// Plain attention in f64 over explicit per-row key ranges.
    fn reference(a: &AttnRows<'_>) -> Vec<f32> {
        let hd = a.head_dim;
        let rows = a.q.len();
        let mut out = vec![0f32; rows * hd];
        for r in 0..rows {
            let q = a.q[r];
            let (lo, hi) = a.visible[r];
            let s: Vec<f64> = (lo..hi)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[d] as f64 * a.kt[d * a.cap + j] as f64)
                        .sum()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                let v: f64 = (lo..hi)
                    .zip(&e)
                    .map(|(j, p)| p * a.v[j * hd + d] as f64)
                    .sum();
                out[r * hd + d] = (v / z) as f32;
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn attention_rows_match_a_plain_reference_and_each_other() {
        for (hd, rows, cap) in [(64, 3, 128), (256, 4, 64), (16, 7, 192), (24, 1, 64)] {
            let q = pseudo(rows * hd, 1);
            let kt = pseudo(hd * cap, 2);
            let v = pseudo(cap * hd, 3);
            let visible: Vec<(usize, usize)> = (0..rows)
                .map(|r| {
                    let hi = (cap - 5 - r * 3).max(1);
                    (if r % 2 == 1 { hi.saturating_sub(40) } else { 0 }, hi)
                })
                .collect();
            let q_rows: Vec<&[f32]> = q.chunks_exact(hd).collect();
            let a = AttnRows {
                q: &q_rows,
                visible: &visible,
                kt: &kt,
                v: &v,
                cap,
                head_dim: hd,
            };
            let want = reference(&a);
            let mut got = vec![0f32; rows * hd];
            {
                let mut outs: Vec<&mut [f32]> = got.chunks_exact_mut(hd).collect();
                attend_rows(&a, &mut Vec::new(), &mut outs);
            }
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "hd {hd}: {g} vs {w}");
            }
            // One row at a time gives bit-identical results (batch and chunk invariance).
            for r in 0..rows {
                let one = AttnRows {
                    q: &q_rows[r..r + 1],
                    visible: &visible[r..r + 1],
                    ..a
                };
                let mut alone = vec![0f32; hd];
                attend_rows(&one, &mut Vec::new(), &mut [&mut alone[..]]);
                assert_eq!(alone, got[r * hd..(r + 1) * hd], "hd {hd} row {r}");
            }
        }
    }

    #[test]
    fn gated_activations_match_their_formulas() {
        let g = pseudo(37, 9).iter().map(|x| x * 6.0).collect::<Vec<_>>();
        let u = pseudo(37, 10);
        let mut gu = g.clone();
        gu.extend(&u);
        for act in [Activation::Silu, Activation::GeluTanh] {
            let mut out = vec![0f32; 37];
            gated(act, &gu, 37, &mut out);
            for i in 0..37 {
                let x = g[i] as f64;
                let a = match act {
                    Activation::Silu => x / (1.0 + (-x).exp()),
                    Activation::GeluTanh => {
                        0.5 * x * (1.0 + (0.7978845608 * (x + 0.044715 * x * x * x)).tanh())
                    }
                };
                let want = (a * u[i] as f64) as f32;
                assert!(
                    (out[i] - want).abs() < 1e-5,
                    "{act:?} {x}: {} vs {want}",
                    out[i]
                );
            }
        }
    }
}
