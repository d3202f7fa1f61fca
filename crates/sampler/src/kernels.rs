//! Whole-vocabulary passes over one row of logits.
//!
//! These loops are the only O(vocab) work in a step, so they are written for the vectoriser:
//! fixed-width chunks with per-lane accumulators, comparisons folded with `|` instead of
//! early exits, and an `exp` made of plain arithmetic (the libm call does not vectorise).
//! The workspace builds for baseline x86-64 (SSE2), so each pass is also compiled with AVX2
//! and FMA and picked at run time when the CPU has them.

use crate::Candidate;

/// Chunk width of the vectorised loops: two AVX2 registers or four SSE registers of f32.
const LANES: usize = 16;

/// Below this, `exp` underflows f32's normal range: such a token weighs nothing next to the
/// best one (whose weight is 1), so it counts as exactly 0.
const EXP_FLOOR: f32 = -87.0;

/// Defines `$name` as a safe function that runs `$body` compiled for AVX2+FMA when the CPU has
/// them, and for the build's baseline otherwise. The body is written once and inlined into both.
macro_rules! dispatched {
    ($(#[$doc:meta])* pub(crate) fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: `avx2` only differs from `body` by its target features, and the
                    // running CPU has just been checked to support them.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `e^x` for `x <= 0` (including -inf), relative error about 1e-7; 0 for `x < -87`.
///
/// Cephes' `expf`: split `x = n ln2 + r` with |r| <= ln2/2, a degree-5 polynomial for `e^r`,
/// and `2^n` built directly in the exponent bits. Rounding `n` uses the 1.5 * 2^23 trick,
/// which needs no rounding instruction that SSE2 lacks.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = if x < EXP_FLOOR { EXP_FLOOR } else { x };
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut poly = 1.987_569_2e-4;
    poly = poly * r + 1.398_199_9e-3;
    poly = poly * r + 8.333_452e-3;
    poly = poly * r + 4.166_579_6e-2;
    poly = poly * r + 1.666_666_5e-1;
    poly = poly * r + 0.5; // Cephes 5.0000001e-1 rounds to 0.5 in f32
    let er = poly * (r * r) + r + 1.0;
    // n is in -126..=0 here, so n + 127 is a normal biased exponent.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < EXP_FLOOR {
        0.0
    } else {
        er * scale
    }
}

/// Block width of [`argmax`]'s first pass: 1 KiB of logits, small enough to re-read from L1.
const BLOCK: usize = 256;

/// The largest logit and the lowest id holding it, or `Err(index)` of the first logit that is
/// NaN or +inf. An all -inf row gives `Ok((-inf, 0))`.
///
/// One read of the row: each block of [`BLOCK`] logits is reduced to its maximum (and a NaN
/// flag) and only the first block holding the overall maximum is scanned again, from cache,
/// for the index. +inf needs no test of its own: it would be the maximum.
pub(crate) fn argmax(logits: &[f32]) -> Result<(f32, usize), usize> {
    let (max, block, bad) = scan_blocks(logits);
    if bad || max == f32::INFINITY {
        let index = logits
            .iter()
            .position(|&x| x.is_nan() || x == f32::INFINITY)
            .unwrap_or(0);
        return Err(index);
    }
    let start = block * BLOCK;
    let end = (start + BLOCK).min(logits.len());
    let index = logits[start..end]
        .iter()
        .position(|&x| x == max)
        .map_or(0, |j| start + j);
    Ok((max, index))
}

/// `(max, index of the first block holding it, whether any logit is NaN)`; the tail after the
/// last whole block counts as one more block.
fn scan_blocks(logits: &[f32]) -> (f32, usize, bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has just been checked to support AVX2 and FMA.
        return unsafe { avx2::scan_blocks(logits) };
    }
    scan_blocks_portable(logits)
}

fn scan_blocks_portable(logits: &[f32]) -> (f32, usize, bool) {
    let mut best = f32::NEG_INFINITY;
    let mut best_block = 0;
    let mut bad = false;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        let mut max = [f32::NEG_INFINITY; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for j in 0..LANES {
                let x = chunk[j];
                max[j] = if x > max[j] { x } else { max[j] };
                bad |= x.is_nan();
            }
        }
        for &x in tail {
            max[0] = if x > max[0] { x } else { max[0] };
            bad |= x.is_nan();
        }
        let m = max
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if m > best {
            best = m;
            best_block = b;
        }
    }
    (best, best_block, bad)
}

/// `sum_i exp((logits[i] - max) * inv_temperature)`; `max` must be the largest logit, so every
/// term lies in [0, 1] and the largest is 1.
pub(crate) fn sum_exp(logits: &[f32], max: f32, inv_temperature: f32) -> f64 {
    sum_exp_gather(logits, max, inv_temperature, f32::INFINITY, &mut Vec::new())
}

/// [`sum_exp`], and in the same pass appends to `out`, in id order and with weight 0, every
/// token whose logit is at least `lower` and not -inf.
pub(crate) fn sum_exp_gather(
    logits: &[f32],
    max: f32,
    inv_temperature: f32,
    lower: f32,
    out: &mut Vec<Candidate>,
) -> f64 {
    let lower = if lower > f32::NEG_INFINITY {
        lower
    } else {
        f32::MIN
    };
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has just been checked to support AVX2 and FMA.
        return unsafe { avx2::sum_exp_gather(logits, max, inv_temperature, lower, out) };
    }
    let total = sum_exp_portable(logits, max, inv_temperature);
    gather_band(logits, lower, f32::INFINITY, out);
    total
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Hand-written AVX2+FMA versions of the two passes every sampled step makes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Candidate, BLOCK, EXP_FLOOR};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(v: __m256) -> f32 {
        let x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_max_ss(x, _mm_shuffle_ps::<1>(x, x));
        _mm_cvtss_f32(x)
    }

    /// See [`super::scan_blocks`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scan_blocks(logits: &[f32]) -> (f32, usize, bool) {
        let mut best = f32::NEG_INFINITY;
        let mut best_block = 0;
        let mut bad = _mm256_setzero_ps();
        let blocks = logits.chunks_exact(BLOCK);
        let tail = blocks.remainder();
        let whole = logits.len() / BLOCK;
        for (b, block) in blocks.enumerate() {
            let p = block.as_ptr();
            let mut m0 = _mm256_set1_ps(f32::NEG_INFINITY);
            let (mut m1, mut m2, mut m3) = (m0, m0, m0);
            let mut i = 0;
            while i < BLOCK {
                let v0 = _mm256_loadu_ps(p.add(i));
                let v1 = _mm256_loadu_ps(p.add(i + 8));
                let v2 = _mm256_loadu_ps(p.add(i + 16));
                let v3 = _mm256_loadu_ps(p.add(i + 24));
                // vmaxps returns its second operand when either is NaN: NaN never wins.
                m0 = _mm256_max_ps(v0, m0);
                m1 = _mm256_max_ps(v1, m1);
                m2 = _mm256_max_ps(v2, m2);
                m3 = _mm256_max_ps(v3, m3);
                let nan01 = _mm256_cmp_ps::<_CMP_UNORD_Q>(v0, v1);
                let nan23 = _mm256_cmp_ps::<_CMP_UNORD_Q>(v2, v3);
                bad = _mm256_or_ps(bad, _mm256_or_ps(nan01, nan23));
                i += 32;
            }
            let m = hmax(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
            if m > best {
                best = m;
                best_block = b;
            }
        }
        let mut tail_max = f32::NEG_INFINITY;
        let mut tail_bad = false;
        for &x in tail {
            tail_max = if x > tail_max { x } else { tail_max };
            tail_bad |= x.is_nan();
        }
        if tail_max > best {
            best = tail_max;
            best_block = whole;
        }
        (best, best_block, tail_bad || _mm256_movemask_ps(bad) != 0)
    }

    /// `exp(s)` for 8 lanes of `s <= 0` (or -inf): the same method as
    /// [`super::exp_nonpositive`], with fused multiply-adds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(s: __m256) -> __m256 {
        let floor = _mm256_set1_ps(EXP_FLOOR);
        let round = _mm256_set1_ps(12_582_912.0);
        let xc = _mm256_max_ps(s, floor);
        let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut poly = _mm256_set1_ps(1.987_569_2e-4);
        poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.398_199_9e-3));
        poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.333_452e-3));
        poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.166_579_6e-2));
        poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.666_666_5e-1));
        poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5));
        let er = _mm256_add_ps(
            _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let n_int = _mm256_sub_epi32(
            _mm256_castps_si256(t),
            _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32),
        );
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            n_int,
            _mm256_set1_epi32(127),
        )));
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(s, floor);
        _mm256_andnot_ps(below, _mm256_mul_ps(er, scale))
    }

    /// See [`super::sum_exp_gather`]; `lower` is finite or +inf.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp_gather(
        logits: &[f32],
        max: f32,
        inv_temperature: f32,
        lower: f32,
        out: &mut Vec<Candidate>,
    ) -> f64 {
        let maxv = _mm256_set1_ps(max);
        let invt = _mm256_set1_ps(inv_temperature);
        let lowerv = _mm256_set1_ps(lower);
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let chunks = logits.chunks_exact(16);
        let tail_start = logits.len() - chunks.remainder().len();
        for (c, chunk) in chunks.enumerate() {
            let p = chunk.as_ptr();
            let v0 = _mm256_loadu_ps(p);
            let v1 = _mm256_loadu_ps(p.add(8));
            let hit = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(v0, lowerv),
                _mm256_cmp_ps::<_CMP_GE_OQ>(v1, lowerv),
            );
            if _mm256_movemask_ps(hit) != 0 {
                for (j, &x) in chunk.iter().enumerate() {
                    if x >= lower {
                        out.push(Candidate::new((c * 16 + j) as u32, x));
                    }
                }
            }
            acc0 = _mm256_add_ps(acc0, exp8(_mm256_mul_ps(_mm256_sub_ps(v0, maxv), invt)));
            acc1 = _mm256_add_ps(acc1, exp8(_mm256_mul_ps(_mm256_sub_ps(v1, maxv), invt)));
        }
        let mut lanes = [0.0f32; 16];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc0);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc1);
        let mut total: f64 = lanes.iter().map(|&a| a as f64).sum();
        for (j, &x) in logits[tail_start..].iter().enumerate() {
            total += super::exp_nonpositive((x - max) * inv_temperature) as f64;
            if x >= lower {
                out.push(Candidate::new((tail_start + j) as u32, x));
            }
        }
        total
    }
}

dispatched! {
    /// `sum_i exp((logits[i] - max) * inv_temperature)`; `max` must be the largest logit, so every
    /// term lies in [0, 1] and the largest is 1.
    pub(crate) fn sum_exp_portable(logits: &[f32], max: f32, inv_temperature: f32) -> f64 {
        let mut acc = [0.0f32; LANES];
        let chunks = logits.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for j in 0..LANES {
                acc[j] += exp_nonpositive((chunk[j] - max) * inv_temperature);
            }
        }
        let mut total: f64 = acc.iter().map(|&a| a as f64).sum();
        for &x in tail {
            total += exp_nonpositive((x - max) * inv_temperature) as f64;
        }
        total
    }
}

dispatched! {
    /// Appends every token whose logit lies in `[lower, upper)` and is not -inf, in id order,
    /// with weight 0 (the caller weighs them); returns how many.
    pub(crate) fn gather_band(logits: &[f32], lower: f32, upper: f32, out: &mut Vec<Candidate>) -> usize {
        let before = out.len();
        let lower = if lower > f32::NEG_INFINITY { lower } else { f32::MIN };
        let chunks = logits.chunks_exact(LANES);
        let tail_start = logits.len() - chunks.remainder().len();
        for (c, chunk) in chunks.enumerate() {
            let mut hit = false;
            for &x in chunk {
                hit |= (x >= lower) & (x < upper);
            }
            if hit {
                for (j, &x) in chunk.iter().enumerate() {
                    if x >= lower && x < upper {
                        out.push(Candidate::new((c * LANES + j) as u32, x));
                    }
                }
            }
        }
        for (j, &x) in logits[tail_start..].iter().enumerate() {
            if x >= lower && x < upper {
                out.push(Candidate::new((tail_start + j) as u32, x));
            }
        }
        out.len() - before
    }
}

dispatched! {
    /// Leaves in `out` the `k` highest-ranked finite tokens (fewer if there are fewer), unordered,
    /// and returns how many.
    ///
    /// One streaming pass: a token is kept only if it beats the current threshold, and whenever
    /// the buffer fills up a selection keeps the best `k` and raises the threshold to the k-th
    /// logit. On a peaked row almost every chunk fails the threshold test, so the pass costs
    /// about as much as reading the row.
    pub(crate) fn top_k(logits: &[f32], k: usize, out: &mut Vec<Candidate>) -> usize {
        out.clear();
        if k == 0 {
            return 0;
        }
        let compact_at = 2 * k + 1024;
        // Tokens are visited in id order, so a later token whose logit only equals the k-th
        // ranks below every kept one (ties go to the lower id): `>` is exact.
        let mut threshold = f32::NEG_INFINITY;
        let visit = |out: &mut Vec<Candidate>, id: usize, x: f32, threshold: &mut f32| {
            if x > *threshold {
                out.push(Candidate::new(id as u32, x));
                if out.len() >= compact_at {
                    keep_best(out, k);
                    *threshold = out[k - 1].logit;
                }
            }
        };
        let chunks = logits.chunks_exact(LANES);
        let tail_start = logits.len() - chunks.remainder().len();
        for (c, chunk) in chunks.enumerate() {
            let mut hit = false;
            for &x in chunk {
                hit |= x > threshold;
            }
            if hit {
                for (j, &x) in chunk.iter().enumerate() {
                    visit(out, c * LANES + j, x, &mut threshold);
                }
            }
        }
        for (j, &x) in logits[tail_start..].iter().enumerate() {
            visit(out, tail_start + j, x, &mut threshold);
        }
        if out.len() > k {
            keep_best(out, k);
        }
        out.len()
    }
}

/// Truncates `cands` to its `k` highest-ranked members, with the k-th last.
fn keep_best(cands: &mut Vec<Candidate>, k: usize) {
    cands.select_nth_unstable_by(k - 1, Candidate::rank);
    cands.truncate(k);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_1e6_relative() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            assert!(((got - want) / want).abs() < 1e-6, "x={x}: {got} vs {want}");
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn argmax_finds_max_first_index_and_first_bad_index_in_any_position() {
        for len in [1usize, 15, 16, 17, 33, 100, 255, 256, 257, 600, 1000, 1300] {
            let mut row: Vec<f32> = (0..len).map(|i| (i as f32 * 7.3).sin()).collect();
            let want = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let first = row.iter().position(|&x| x == want).unwrap();
            assert_eq!(argmax(&row), Ok((want, first)));
            assert_eq!(scan_blocks_portable(&row), scan_blocks(&row));
            for bad_at in [0, len / 2, len - 1] {
                for bad in [f32::NAN, f32::INFINITY] {
                    let keep = row[bad_at];
                    row[bad_at] = bad;
                    assert_eq!(argmax(&row), Err(bad_at), "len {len} at {bad_at}");
                    assert_eq!(scan_blocks_portable(&row).2, scan_blocks(&row).2);
                    row[bad_at] = keep;
                }
            }
        }
        assert_eq!(
            argmax(&[f32::NEG_INFINITY; 300]),
            Ok((f32::NEG_INFINITY, 0))
        );
    }

    #[test]
    fn argmax_returns_lowest_of_ties_within_and_across_blocks() {
        for ties in [
            [20usize, 35, 49],
            [20, 300, 1100],
            [700, 701, 1299],
            [1290, 1295, 1299],
        ] {
            let mut row = vec![0.0f32; 1300];
            for &t in &ties {
                row[t] = 3.0;
            }
            assert_eq!(argmax(&row), Ok((3.0, ties[0])));
        }
    }

    #[test]
    fn fused_sum_exp_and_gather_match_the_portable_passes() {
        for len in [1usize, 15, 16, 17, 100, 1000, 4099] {
            let mut row: Vec<f32> = (0..len).map(|i| (i as f32 * 7.3).sin() * 20.0).collect();
            if len > 2 {
                row[len / 3] = f32::NEG_INFINITY;
            }
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            for (inv_t, lower) in [
                (1.0f32, 15.0f32),
                (3.3, f32::NEG_INFINITY),
                (0.01, f32::INFINITY),
            ] {
                let mut got = Vec::new();
                let total = sum_exp_gather(&row, max, inv_t, lower, &mut got);
                let want_total = sum_exp_portable(&row, max, inv_t);
                assert!(
                    (total - want_total).abs() <= 1e-6 * want_total,
                    "{total} vs {want_total}"
                );
                let mut want = Vec::new();
                let lower = if lower > f32::NEG_INFINITY {
                    lower
                } else {
                    f32::MIN
                };
                gather_band(&row, lower, f32::INFINITY, &mut want);
                let ids = |c: &[Candidate]| c.iter().map(|c| (c.id, c.logit)).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want));
            }
        }
    }

    #[test]
    fn top_k_equals_sorting_with_lowest_id_first_on_ties() {
        // Many repeated values force ties at the k-th place and several compactions.
        let row: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 97) as f32).collect();
        for k in [1usize, 3, 50, 500, 4999, 5000, 6000] {
            let mut out = Vec::new();
            top_k(&row, k, &mut out);
            out.sort_by(Candidate::rank);
            let mut all: Vec<Candidate> = row
                .iter()
                .enumerate()
                .map(|(i, &x)| Candidate::new(i as u32, x))
                .collect();
            all.sort_by(Candidate::rank);
            all.truncate(k);
            let got: Vec<u32> = out.iter().map(|c| c.id).collect();
            let want: Vec<u32> = all.iter().map(|c| c.id).collect();
            assert_eq!(got, want, "k={k}");
        }
    }

    #[test]
    fn top_k_and_gather_skip_minus_infinity() {
        let row = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, 0.5];
        let mut out = Vec::new();
        top_k(&row, 4, &mut out);
        let mut ids: Vec<u32> = out.iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, [1, 3]);
        out.clear();
        gather_band(&row, f32::NEG_INFINITY, f32::INFINITY, &mut out);
        let ids: Vec<u32> = out.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 3]);
    }
}
