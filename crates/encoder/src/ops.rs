//! The f32 kernels of the forward pass that are not weight matrix products: layer norm, the
//! feed-forward activations (exact erf GELU, tanh GELU, ReLU, SiLU), and one attention head over
//! one sequence (scores, softmax, weighted sum of values).
//!
//! Each has an AVX2+FMA path, chosen once at run time (the erf GELU also an AVX-512 one with the
//! same bits), and a portable one. Every result depends
//! only on its own row (or its own sequence, for attention), never on the batch around it.

use std::sync::OnceLock;

use crate::config::Activation;

/// Whether the AVX2+FMA paths may run on this CPU (checked once).
pub(crate) fn simd() -> bool {
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

/// Whether the AVX-512 GELU may run (checked once): BERT's erf GELU is the largest f32 step
/// left once the matrix products run on AMX, and 16 lanes halve it.
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| simd() && std::is_x86_feature_detected!("avx512f"))
}

/// `x = layer_norm(x + residual) * g + b` for each row (`residual` may be empty: plain norm).
/// Mean and variance in two passes over the row, in f32, as PyTorch does.
pub(crate) fn add_layer_norm(x: &mut [f32], residual: &[f32], g: &[f32], b: &[f32], eps: f32) {
    let d = g.len();
    for (r, xr) in x.chunks_exact_mut(d).enumerate() {
        if !residual.is_empty() {
            for (v, &y) in xr.iter_mut().zip(&residual[r * d..(r + 1) * d]) {
                *v += y;
            }
        }
        let mean = sum8(xr) / d as f32;
        let mut var = [0f32; 8];
        let chunks = xr.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for l in 0..8 {
                var[l] += (c[l] - mean) * (c[l] - mean);
            }
        }
        let var = (var.iter().sum::<f32>() + tail) / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &gi), &bi) in xr.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * gi + bi;
        }
    }
}

/// A sum with 8 independent accumulators (vectorizes; a fixed order for a given length).
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Applies the activation in place.
pub(crate) fn activate(act: Activation, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if act == Activation::Gelu && avx512() {
        // SAFETY: AVX-512F was detected.
        unsafe { x86::gelu_avx512(x) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA were detected.
        unsafe { x86::activate(act, x) };
        return;
    }
    for v in x {
        *v = activate_scalar(act, *v);
    }
}

fn activate_scalar(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + erf_scalar(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => 0.5 * x * (1.0 + tanh_scalar(GELU_C * (x + 0.044_715 * x * x * x))),
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + exp_scalar(-x)),
    }
}

/// sqrt(2 / pi).
const GELU_C: f32 = 0.797_884_6;

// Cephes-style exp: e^x = 2^n * e^r with |r| <= ln2/2, e^r by a degree-5 polynomial; relative
// error about 1e-7. Below EXP_LO the result is exactly 0.
const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

pub(crate) fn exp_scalar(x: f32) -> f32 {
    if x < EXP_LO {
        return 0.0;
    }
    let x = x.min(EXP_HI);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut y = EXP_P[0];
    for p in &EXP_P[1..] {
        y = y * r + p;
    }
    let y = y * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// tanh(x) = 1 - 2 / (e^{2x} + 1), saturating to ±1.
pub(crate) fn tanh_scalar(x: f32) -> f32 {
    let x = x.clamp(-9.0, 9.0);
    1.0 - 2.0 / (exp_scalar(2.0 * x) + 1.0)
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), odd symmetry.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152_1,
    1.061_405_4,
];

fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let mut poly = ERF_A[4];
    for c in ERF_A[..4].iter().rev() {
        poly = poly * t + c;
    }
    let y = 1.0 - poly * t * exp_scalar(-a * a);
    y.copysign(x)
}

/// One attention head over one sequence of `n` tokens: for each query row `i`,
/// `out_i = softmax(q_i · K^T * scale) V`. Rows of `q`, `k` and `v` are `stride` apart, rows of
/// `out` `out_stride` apart; the head's `d` values start at each row's first element. `scores`
/// holds `n` values.
///
/// # Safety
/// `out` points to `n` rows of `d` writable values, `out_stride` apart, that nothing else
/// reads or writes meanwhile (other heads' columns between them may be written by others).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attention_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    out: *mut f32,
    out_stride: usize,
    n: usize,
    d: usize,
    scale: f32,
    scores: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if simd() && d.is_multiple_of(8) {
        // SAFETY: AVX2 and FMA were detected; the caller's guarantees.
        return x86::attention_head(q, k, v, stride, out, out_stride, n, d, scale, scores);
    }
    scores.resize(n, 0.0);
    let row = |m: &[f32], j: usize| -> *const f32 { m[j * stride..j * stride + d].as_ptr() };
    for i in 0..n {
        let qi = row(q, i);
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(qi, row(k, j), d) * scale;
        }
        softmax(scores);
        let o = out.add(i * out_stride);
        std::ptr::write_bytes(o, 0, d);
        for (j, &p) in scores.iter().enumerate() {
            axpy(p, row(v, j), o, d);
        }
    }
}

/// In-place softmax of one row.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA were detected.
        unsafe { x86::exp_shifted(x, max) };
    } else {
        x.iter_mut().for_each(|v| *v = exp_scalar(*v - max));
    }
    #[cfg(not(target_arch = "x86_64"))]
    x.iter_mut().for_each(|v| *v = exp_scalar(*v - max));
    let inv = 1.0 / sum8(x);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// # Safety
/// `a` and `b` point to `d` readable values.
unsafe fn dot(a: *const f32, b: *const f32, d: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return x86::dot(a, b, d);
    }
    let (a, b) = (
        std::slice::from_raw_parts(a, d),
        std::slice::from_raw_parts(b, d),
    );
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `o += p * v` over `d` values.
///
/// # Safety
/// `v` and `o` point to `d` values (`o` writable).
unsafe fn axpy(p: f32, v: *const f32, o: *mut f32, d: usize) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return x86::axpy(p, v, o, d);
    }
    for l in 0..d {
        *o.add(l) += p * *v.add(l);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp256(x: __m256) -> __m256 {
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
        let x = _mm256_min_ps(x, _mm256_set1_ps(EXP_HI));
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LO));
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(LOG2E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(EXP_P[0]);
        for &p in &EXP_P[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(p));
        }
        let y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let pow = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(pow)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tanh256(x: __m256) -> __m256 {
        let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(9.0)), _mm256_set1_ps(-9.0));
        let e = exp256(_mm256_add_ps(x, x));
        let one = _mm256_set1_ps(1.0);
        _mm256_sub_ps(
            one,
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn erf256(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign, x);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
        let mut poly = _mm256_set1_ps(ERF_A[4]);
        for &c in ERF_A[..4].iter().rev() {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
        let y = _mm256_fnmadd_ps(_mm256_mul_ps(poly, t), e, one);
        _mm256_or_ps(y, _mm256_and_ps(x, sign))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn activate8(act: Activation, x: __m256) -> __m256 {
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        match act {
            Activation::Gelu => {
                let e = erf256(_mm256_mul_ps(
                    x,
                    _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
                ));
                _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, e))
            }
            Activation::GeluTanh => {
                let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                let inner = _mm256_mul_ps(
                    _mm256_set1_ps(GELU_C),
                    _mm256_fmadd_ps(_mm256_set1_ps(0.044_715), x3, x),
                );
                _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, tanh256(inner)))
            }
            Activation::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
            Activation::Silu => {
                let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
                _mm256_div_ps(x, _mm256_add_ps(one, e))
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn activate(act: Activation, x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = activate8(act, _mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), v);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            // The tail goes through the same vector code, so a value's result does not depend
            // on where it sits in the buffer.
            let mut tmp = [0f32; 8];
            tmp[..rest.len()].copy_from_slice(rest);
            _mm256_storeu_ps(
                tmp.as_mut_ptr(),
                activate8(act, _mm256_loadu_ps(tmp.as_ptr())),
            );
            rest.copy_from_slice(&tmp[..rest.len()]);
        }
    }

    /// `x[i] = exp(x[i] - shift)`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(x: &mut [f32], shift: f32) {
        let s = _mm256_set1_ps(shift);
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = exp256(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
            _mm256_storeu_ps(c.as_mut_ptr(), v);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tmp = [f32::NEG_INFINITY; 8];
            tmp[..rest.len()].copy_from_slice(rest);
            let v = exp256(_mm256_sub_ps(_mm256_loadu_ps(tmp.as_ptr()), s));
            _mm256_storeu_ps(tmp.as_mut_ptr(), v);
            rest.copy_from_slice(&tmp[..rest.len()]);
        }
    }

    /// `exp256` on 16 lanes: the same operations in the same order, so the same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp512(x: __m512) -> __m512 {
        let zero = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
        let x = _mm512_min_ps(x, _mm512_set1_ps(EXP_HI));
        let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LO));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
            _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), _mm512_set1_ps(0.5)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut y = _mm512_set1_ps(EXP_P[0]);
        for &p in &EXP_P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(p));
        }
        let y = _mm512_fmadd_ps(
            y,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        let pow = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_maskz_mov_ps(!zero, _mm512_mul_ps(y, _mm512_castsi512_ps(pow)))
    }

    /// `erf256` on 16 lanes, the same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn erf512(x: __m512) -> __m512 {
        let sign = _mm512_set1_epi32(i32::MIN);
        let xi = _mm512_castps_si512(x);
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xi));
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
        let mut poly = _mm512_set1_ps(ERF_A[4]);
        for &c in ERF_A[..4].iter().rev() {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let y = _mm512_fnmadd_ps(_mm512_mul_ps(poly, t), e, one);
        _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(y),
            _mm512_and_si512(xi, sign),
        ))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu16(x: __m512) -> __m512 {
        let e = erf512(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        ));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(_mm512_set1_ps(1.0), e),
        )
    }

    /// The erf GELU in place, 16 at a time (a tail through the same vector code).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_avx512(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            _mm512_storeu_ps(c.as_mut_ptr(), gelu16(_mm512_loadu_ps(c.as_ptr())));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tmp = [0f32; 16];
            tmp[..rest.len()].copy_from_slice(rest);
            _mm512_storeu_ps(tmp.as_mut_ptr(), gelu16(_mm512_loadu_ps(tmp.as_ptr())));
            rest.copy_from_slice(&tmp[..rest.len()]);
        }
    }

    /// [`super::attention_head`] for `d` a multiple of 8, vectorized over keys rather than
    /// over a head's dimensions: K is transposed once per head, so each query's `n` scores are
    /// `d` broadcast-FMAs per 8 keys with no horizontal sums, and each output row stays in
    /// registers while the values are summed into it.
    ///
    /// # Safety
    /// As [`super::attention_head`]; `d % 8 == 0`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attention_head(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        out: *mut f32,
        out_stride: usize,
        n: usize,
        d: usize,
        scale: f32,
        scratch: &mut Vec<f32>,
    ) {
        debug_assert!(d.is_multiple_of(8));
        let np = n.next_multiple_of(8);
        scratch.clear();
        scratch.resize(d * np + np, 0.0);
        let (kt, scores) = scratch.split_at_mut(d * np);
        for j in 0..n {
            for (l, &x) in k[j * stride..j * stride + d].iter().enumerate() {
                kt[l * np + j] = x;
            }
        }
        let sv = _mm256_set1_ps(scale);
        for i in 0..n {
            let qi = q[i * stride..i * stride + d].as_ptr();
            for jb in (0..np).step_by(8) {
                let mut acc = _mm256_setzero_ps();
                for l in 0..d {
                    let kv = _mm256_loadu_ps(kt.as_ptr().add(l * np + jb));
                    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*qi.add(l)), kv, acc);
                }
                _mm256_storeu_ps(scores.as_mut_ptr().add(jb), _mm256_mul_ps(acc, sv));
            }
            let s = &mut scores[..n];
            super::softmax(s);
            let o = out.add(i * out_stride);
            for lb in (0..d).step_by(8) {
                let mut acc = _mm256_setzero_ps();
                for (j, &p) in s.iter().enumerate() {
                    let vj = _mm256_loadu_ps(v.as_ptr().add(j * stride + lb));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(p), vj, acc);
                }
                _mm256_storeu_ps(o.add(lb), acc);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: *const f32, b: *const f32, d: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut l = 0;
        while l + 8 <= d {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(l)), _mm256_loadu_ps(b.add(l)), acc);
            l += 8;
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut sum = _mm_cvtss_f32(s);
        while l < d {
            sum += *a.add(l) * *b.add(l);
            l += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(p: f32, v: *const f32, o: *mut f32, d: usize) {
        let pv = _mm256_set1_ps(p);
        let mut l = 0;
        while l + 8 <= d {
            let r = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v.add(l)), _mm256_loadu_ps(o.add(l)));
            _mm256_storeu_ps(o.add(l), r);
            l += 8;
        }
        while l < d {
            *o.add(l) += p * *v.add(l);
            l += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.28-free reference: the series, exact enough for |x| <= 4.
        if x.abs() > 4.0 {
            return x.signum();
        }
        let mut sum = 0f64;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn gelu_ref(x: f64) -> f64 {
        0.5 * x * (1.0 + erf_ref(x / std::f64::consts::SQRT_2))
    }

    #[test]
    fn activations_match_their_definitions_on_both_paths() {
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let mut fast = xs.clone();
        activate(Activation::Gelu, &mut fast);
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // The AVX-512 GELU is the AVX2 one on wider vectors: the same bits.
            let mut narrow = xs.clone();
            unsafe { x86::activate(Activation::Gelu, &mut narrow) };
            assert_eq!(fast, narrow);
        }
        for (&x, &g) in xs.iter().zip(&fast) {
            let want = gelu_ref(x as f64);
            let scalar = activate_scalar(Activation::Gelu, x) as f64;
            assert!(
                (g as f64 - want).abs() < 3e-7 * (1.0 + want.abs()),
                "gelu({x}) = {g}, want {want}"
            );
            assert!(
                (scalar - want).abs() < 3e-7 * (1.0 + want.abs()),
                "scalar gelu({x}) = {scalar}"
            );
        }
        for act in [Activation::GeluTanh, Activation::Silu, Activation::Relu] {
            let mut fast = xs.clone();
            activate(act, &mut fast);
            for (&x, &g) in xs.iter().zip(&fast) {
                let xd = x as f64;
                let want = match act {
                    Activation::GeluTanh => {
                        0.5 * xd
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (xd + 0.044715 * xd.powi(3)))
                                .tanh())
                    }
                    Activation::Silu => xd / (1.0 + (-xd).exp()),
                    _ => xd.max(0.0),
                };
                assert!(
                    (g as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                    "{act:?}({x}) = {g}, want {want}"
                );
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_orders_like_its_input() {
        for n in [1, 3, 8, 13, 40] {
            let mut x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
                .collect();
            let orig = x.clone();
            softmax(&mut x);
            let sum: f32 = x.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "n={n} sum {sum}");
            let m = orig.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = orig.iter().map(|&v| ((v - m) as f64).exp()).sum();
            for (&p, &v) in x.iter().zip(&orig) {
                let want = ((v - m) as f64).exp() / z;
                assert!((p as f64 - want).abs() < 1e-6, "n={n}: {p} vs {want}");
            }
        }
    }

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance_before_the_affine() {
        let d = 19;
        let mut x: Vec<f32> = (0..2 * d)
            .map(|i| (i as f32 * 0.7).sin() * 3.0 + 1.0)
            .collect();
        let res = vec![0.5f32; 2 * d];
        add_layer_norm(&mut x, &res, &vec![1.0; d], &vec![0.0; d], 1e-12);
        for r in x.chunks(d) {
            let mean: f32 = r.iter().sum::<f32>() / d as f32;
            let var: f32 = r.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d as f32;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "mean {mean} var {var}"
            );
        }
    }

    #[test]
    fn attention_head_matches_a_direct_computation() {
        // d = 12 takes the general path, 32 and 64 the vectorized one where the CPU has it.
        for (n, d) in [(5, 12), (19, 32), (1, 32), (9, 64)] {
            check_attention_head(n, d);
        }
    }

    fn check_attention_head(n: usize, d: usize) {
        let stride = 3 * d + 4;
        let m: Vec<f32> = (0..n * stride)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let (q, k, v) = (&m[0..], &m[d..], &m[2 * d..]);
        let mut out = vec![0f32; n * d];
        let mut scores = Vec::new();
        unsafe { attention_head(q, k, v, stride, out.as_mut_ptr(), d, n, d, 0.3, &mut scores) };
        for i in 0..n {
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    (0..d)
                        .map(|l| q[i * stride + l] as f64 * k[j * stride + l] as f64)
                        .sum::<f64>()
                        * 0.3
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
            for l in 0..d {
                let want: f64 = (0..n)
                    .map(|j| (s[j] - mx).exp() / z * v[j * stride + l] as f64)
                    .sum();
                assert!(
                    (out[i * d + l] as f64 - want).abs() < 1e-5,
                    "d={d} out[{i},{l}]"
                );
            }
        }
    }
}
