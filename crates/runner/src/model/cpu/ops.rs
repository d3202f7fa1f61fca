//! Small f32 kernels of the forward pass that are not matrix products over weights: RMS and
//! layer norms, RoPE, gated activations, and (in `attention`) attention over the f16 KV cache.
//!
//! The exp-heavy loops have an AVX2+FMA path chosen once at run time and a portable path. A
//! machine always takes the same path, and every output element is computed in the same order
//! whatever the batch around it, so a sequence's results do not depend on its neighbours.

use std::sync::OnceLock;

use super::super::desc::{Activation, NormKind, RopeStyle};

mod attention;
pub(super) use attention::{
    attend_chunk, merge_chunks, partial_len, AttnRows, ChunkKv, Scores, ATTN_ROWS, CHUNK_BLOCKS,
    KEY_BLOCK, KEY_CHUNK,
};

/// Whether the AVX2+FMA+F16C paths may run on this CPU (checked once).
fn simd() -> bool {
    static SIMD: OnceLock<bool> = OnceLock::new();
    *SIMD.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

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

/// `out = (x - mean) / sqrt(var + eps) * w`, for each row of `x` (row length `w.len()`); no bias.
pub(super) fn layer_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (mean, inv) = mean_and_inv_std(xr, eps);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = (v - mean) * inv * g;
        }
    }
}

/// [`layer_norm`] in place.
pub(super) fn layer_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let (mean, inv) = mean_and_inv_std(xr, eps);
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = (*v - mean) * inv * g;
        }
    }
}

fn mean_and_inv_std(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The model's norm of each row of `x` into `out`.
pub(super) fn norm(kind: NormKind, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    match kind {
        NormKind::Rms => rms_norm(x, w, eps, out),
        NormKind::Layer => layer_norm(x, w, eps, out),
    }
}

/// The model's norm in place, of each `w.len()` values of `x`.
pub(super) fn norm_inplace(kind: NormKind, x: &mut [f32], w: &[f32], eps: f32) {
    match kind {
        NormKind::Rms => rms_norm_inplace(x, w, eps),
        NormKind::Layer => layer_norm_inplace(x, w, eps),
    }
}

/// The per-head norm of one row of queries or keys (`heads * head_dim` values): `w` holds either
/// `head_dim` weights every head shares, or one row of `head_dim` weights per head.
pub(super) fn norm_heads(kind: NormKind, row: &mut [f32], w: &[f32], head_dim: usize, eps: f32) {
    if w.len() == head_dim {
        norm_inplace(kind, row, w, eps);
    } else {
        for (head, wh) in row.chunks_exact_mut(head_dim).zip(w.chunks_exact(head_dim)) {
            norm_inplace(kind, head, wh, eps);
        }
    }
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    #[inline(always)]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
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
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
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

    pub(super) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
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
    fn layer_norm_matches_its_formula_and_per_head_rows_use_their_own_weights() {
        let x: Vec<f32> = pseudo(24, 11).iter().map(|v| v * 3.0 + 0.5).collect();
        let w: Vec<f32> = pseudo(24, 12).iter().map(|v| 1.0 + 0.2 * v).collect();
        // Three heads of 8, each with its own row of weights (Cohere's q/k norm).
        let mut got = x.clone();
        norm_heads(NormKind::Layer, &mut got, &w, 8, 1e-5);
        for h in 0..3 {
            let xs = &x[h * 8..(h + 1) * 8];
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / 8.0;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 8.0;
            for d in 0..8 {
                let want = (xs[d] as f64 - mean) / (var + 1e-5).sqrt() * w[h * 8 + d] as f64;
                let g = got[h * 8 + d] as f64;
                assert!((g - want).abs() < 1e-5, "head {h} dim {d}: {g} vs {want}");
            }
        }
        // Shared weights (Qwen3, Gemma): the same as the plain norm over each head.
        let mut shared = x.clone();
        norm_heads(NormKind::Rms, &mut shared, &w[..8], 8, 1e-6);
        let mut plain = x.clone();
        rms_norm_inplace(&mut plain, &w[..8], 1e-6);
        assert_eq!(shared, plain);
        let mut out = vec![0f32; 24];
        layer_norm(&x, &w, 1e-5, &mut out);
        let mut inplace = x.clone();
        layer_norm_inplace(&mut inplace, &w, 1e-5);
        assert_eq!(out, inplace);
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
