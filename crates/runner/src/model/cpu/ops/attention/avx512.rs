//! Attention on 512-bit vectors: the AVX2 kernels' arithmetic, lane for lane, on 16 lanes.
//!
//! Scores: one vector holds a whole 16-key block, so each head dimension costs one f16
//! conversion and one FMA per row instead of two of each. Weighted values: 16 dimensions per
//! vector. Every lane runs the same chain of fused multiply-adds in the same order as in the
//! AVX2 kernels (a key's score over the head dimension, a dimension's sum over the keys), so the
//! results are bit-identical to theirs; the softmax between them is the shared AVX2 code.

use std::arch::x86_64::*;

use super::super::{EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, P0, P1, P2, P3, P4, P5};
use super::{mask_row, partial_len, AttnRows, ChunkKv, Scores, KEY_BLOCK, KEY_CHUNK};

/// Largest head the AVX-512 kernels take (Gemma 3's 256); bigger ones take the AVX2 kernels.
pub(super) const MAX_HEAD_DIM: usize = 256;

/// [`super::attend_chunk`] for head sizes that are multiples of 16, up to [`MAX_HEAD_DIM`].
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512F present; `j0` and `j1` are multiples of `KEY_BLOCK` within the
/// chunk's blocks; `head_dim % 16 == 0` and `head_dim <= MAX_HEAD_DIM`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn attend_chunk(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &mut Scores,
    partial: &mut [f32],
) {
    macro_rules! scores {
        ($($r:literal)*) => {
            match a.q.len() {
                $($r => scores::<$r>(a, kv, c0, j0, j1, s),)*
                _ => scores::<16>(a, kv, c0, j0, j1, s),
            }
        };
    }
    scores!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    softmax_rows(a, j0, j1, s, partial);
    // The weighted values take at most 8 rows at a time, so that each row keeps two vectors of
    // dimensions in flight (16 FMA chains): a bigger group is done in two halves.
    let (rows, hd) = (a.q.len(), a.head_dim);
    let half = rows.min(VALUE_ROWS);
    values(half, hd, kv, c0, j0, j1, &s[..half], partial);
    if rows > half {
        let rest = &mut partial[half * partial_len(hd)..];
        values(rows - half, hd, kv, c0, j0, j1, &s[half..rows], rest);
    }
}

/// Most rows one pass of [`weighted_values`] takes (8 rows x 2 vectors of accumulators).
const VALUE_ROWS: usize = 8;

/// [`weighted_values`] for `rows` (1 to [`VALUE_ROWS`]) rows, whose weights are `s`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn values(
    rows: usize,
    hd: usize,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &[[f32; KEY_CHUNK]],
    partial: &mut [f32],
) {
    let nd = hd / 16;
    macro_rules! values {
        ($($r:literal)*) => {
            match (rows, nd.is_multiple_of(4), nd.is_multiple_of(2)) {
                (1, true, _) => weighted_values::<1, 4>(hd, kv, c0, j0, j1, s, partial),
                (1, false, true) => weighted_values::<1, 2>(hd, kv, c0, j0, j1, s, partial),
                (1, false, false) => weighted_values::<1, 1>(hd, kv, c0, j0, j1, s, partial),
                $(
                    ($r, _, true) => weighted_values::<$r, 2>(hd, kv, c0, j0, j1, s, partial),
                    ($r, _, false) => weighted_values::<$r, 1>(hd, kv, c0, j0, j1, s, partial),
                )*
                (_, _, true) => weighted_values::<8, 2>(hd, kv, c0, j0, j1, s, partial),
                (_, _, false) => weighted_values::<8, 1>(hd, kv, c0, j0, j1, s, partial),
            }
        };
    }
    values!(2 3 4 5 6 7);
}

/// The AVX2 `exp8` on 16 lanes: the same operations lane by lane, so the same bits.
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_LO));
    let x = _mm512_min_ps(x, _mm512_set1_ps(EXP_HI));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        x,
        _mm512_set1_ps(LOG2E),
        _mm512_set1_ps(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut y = _mm512_set1_ps(P0);
    for p in [P1, P2, P3, P4, P5] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(p));
    }
    let y = _mm512_fmadd_ps(
        y,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_maskz_mov_ps(keep, _mm512_mul_ps(y, _mm512_castsi512_ps(pow2)))
}

/// The shared softmax ([`super::softmax_rows`]) with its exponentials 16 at a time. The sum
/// still adds each half of a vector into one 8-lane total in key order, as the AVX2 code adds
/// its 8-key vectors, so the bits are the same; the max does not depend on order.
#[inline(always)]
unsafe fn softmax_rows(
    a: &AttnRows<'_>,
    j0: usize,
    j1: usize,
    s: &mut Scores,
    partial: &mut [f32],
) {
    let (n, hd) = (j1 - j0, a.head_dim);
    let stride = partial_len(hd);
    for r in 0..a.q.len() {
        let row = &mut s[r][..n];
        if !mask_row(row, a.visible[r], j0) {
            continue;
        }
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in row.chunks_exact(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(c.as_ptr()));
        }
        let max = _mm512_reduce_max_ps(m);
        let maxv = _mm512_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        for c in row.chunks_exact_mut(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), maxv));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, _mm512_castps512_ps256(e));
            sum = _mm256_add_ps(
                sum,
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e))),
            );
        }
        partial[r * stride + hd] = max;
        partial[r * stride + hd + 1] = super::super::x86::hsum(sum);
    }
}

/// Scores of `R` query rows against keys `j0..j1`: a block's 16 keys in one vector per row.
/// The rows are first copied `MAX_HEAD_DIM` apart, so that every row's broadcast is one base
/// register plus a constant (16 row pointers do not fit in the general registers).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn scores<const R: usize>(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &mut Scores,
) {
    let hd = a.head_dim;
    let mut rows = std::mem::MaybeUninit::<[[f32; MAX_HEAD_DIM]; R]>::uninit();
    let q = rows.as_mut_ptr() as *mut f32;
    for r in 0..R {
        std::ptr::copy_nonoverlapping(a.q[r].as_ptr(), q.add(r * MAX_HEAD_DIM), hd);
    }
    let q = q as *const f32;
    let mut j = j0;
    while j < j1 {
        let kb = kv.k.get_unchecked((j - c0) / KEY_BLOCK).as_ptr();
        let mut acc = [_mm512_setzero_ps(); R];
        for d in 0..hd {
            let k = _mm512_cvtph_ps(_mm256_loadu_si256(kb.add(d * KEY_BLOCK) as *const __m256i));
            for r in 0..R {
                let qd = _mm512_set1_ps(*q.add(r * MAX_HEAD_DIM + d));
                acc[r] = _mm512_fmadd_ps(qd, k, acc[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(s[r].as_mut_ptr().add(j - j0), acc[r]);
        }
        j += KEY_BLOCK;
    }
}

/// `partial[r][..hd] = sum_j e_r[j] V[j]` for `R` rows, `ND` vectors of 16 dims at a time.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn weighted_values<const R: usize, const ND: usize>(
    hd: usize,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &[[f32; KEY_CHUNK]],
    partial: &mut [f32],
) {
    let stride = partial_len(hd);
    let mut d0 = 0;
    while d0 < hd {
        let mut acc = [[_mm512_setzero_ps(); ND]; R];
        // Block by block (j0 and j1 are block-aligned), a key at a time within each.
        for b in (j0 - c0) / KEY_BLOCK..(j1 - c0) / KEY_BLOCK {
            let block = kv.v.get_unchecked(b).as_ptr().add(d0);
            let jb = c0 + b * KEY_BLOCK - j0;
            for i in 0..KEY_BLOCK {
                let vj = block.add(i * hd);
                let vv: [__m512; ND] = std::array::from_fn(|n| {
                    _mm512_cvtph_ps(_mm256_loadu_si256(vj.add(16 * n) as *const __m256i))
                });
                for r in 0..R {
                    let p = _mm512_set1_ps(*s[r].get_unchecked(jb + i));
                    for n in 0..ND {
                        acc[r][n] = _mm512_fmadd_ps(p, vv[n], acc[r][n]);
                    }
                }
            }
        }
        for r in 0..R {
            let o = partial.as_mut_ptr().add(r * stride + d0);
            for n in 0..ND {
                _mm512_storeu_ps(o.add(16 * n), acc[r][n]);
            }
        }
        d0 += 16 * ND;
    }
}
