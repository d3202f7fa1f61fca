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
    poly = poly * r + 5.000_000_1e-1;
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

dispatched! {
    /// The largest logit, or `Err(index)` of the first logit that is NaN or +inf.
    pub(crate) fn checked_max(logits: &[f32]) -> Result<f32, usize> {
        let mut max = [f32::NEG_INFINITY; LANES];
        let mut bad = [false; LANES];
        let chunks = logits.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for j in 0..LANES {
                let x = chunk[j];
                max[j] = if x > max[j] { x } else { max[j] };
                bad[j] |= x.is_nan() | (x == f32::INFINITY);
            }
        }
        for &x in tail {
            max[0] = if x > max[0] { x } else { max[0] };
            bad[0] |= x.is_nan() | (x == f32::INFINITY);
        }
        if bad.iter().any(|&b| b) {
            let index = logits
                .iter()
                .position(|&x| x.is_nan() || x == f32::INFINITY)
                .unwrap_or(0);
            return Err(index);
        }
        Ok(max.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a }))
    }
}

dispatched! {
    /// `sum_i exp((logits[i] - max) * inv_temperature)`; `max` must be the largest logit, so every
    /// term lies in [0, 1] and the largest is 1.
    pub(crate) fn sum_exp(logits: &[f32], max: f32, inv_temperature: f32) -> f64 {
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
    /// Index of the first logit equal to `value` (which must occur), so ties go to the lowest id.
    pub(crate) fn first_index_of(logits: &[f32], value: f32) -> usize {
        let chunks = logits.chunks_exact(LANES);
        let tail_start = logits.len() - chunks.remainder().len();
        for (c, chunk) in chunks.enumerate() {
            let mut hit = false;
            for j in 0..LANES {
                hit |= chunk[j] == value;
            }
            if hit {
                let j = chunk.iter().position(|&x| x == value).unwrap_or(0);
                return c * LANES + j;
            }
        }
        logits[tail_start..].iter().position(|&x| x == value).map_or(0, |j| tail_start + j)
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
            for j in 0..LANES {
                hit |= (chunk[j] >= lower) & (chunk[j] < upper);
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
            for j in 0..LANES {
                hit |= chunk[j] > threshold;
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
    fn checked_max_finds_max_and_first_bad_index_in_any_position() {
        for len in [1usize, 15, 16, 17, 33, 100] {
            let mut row: Vec<f32> = (0..len).map(|i| (i as f32 * 7.3).sin()).collect();
            let want = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(checked_max(&row), Ok(want));
            for bad_at in [0, len / 2, len - 1] {
                for bad in [f32::NAN, f32::INFINITY] {
                    let keep = row[bad_at];
                    row[bad_at] = bad;
                    assert_eq!(checked_max(&row), Err(bad_at), "len {len} at {bad_at}");
                    row[bad_at] = keep;
                }
            }
        }
    }

    #[test]
    fn first_index_of_returns_lowest_of_ties() {
        let mut row = vec![0.0f32; 50];
        row[20] = 3.0;
        row[35] = 3.0;
        row[49] = 3.0;
        assert_eq!(first_index_of(&row, 3.0), 20);
        assert_eq!(first_index_of(&row[21..], 3.0), 14);
        assert_eq!(first_index_of(&row[36..], 3.0), 13);
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
