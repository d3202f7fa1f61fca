//! Attention on 512-bit vectors: the AVX2 kernels' arithmetic, lane for lane, on 16 lanes.
//!
//! Scores: one vector holds a whole 16-key block, so each head dimension costs one f16
//! conversion and one FMA per row instead of two of each. Weighted values: 16 dimensions per
//! vector. Every lane runs the same chain of fused multiply-adds in the same order as in the
//! AVX2 kernels (a key's score over the head dimension, a dimension's sum over the keys), so the
//! results are bit-identical to theirs; the softmax between them is the shared AVX2 code.

use std::arch::x86_64::*;

use super::{partial_len, softmax_rows, AttnRows, ChunkKv, ATTN_ROWS, KEY_BLOCK, KEY_CHUNK};

/// [`super::attend_chunk`] for head sizes that are multiples of 16.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512F present; `j0` and `j1` are multiples of `KEY_BLOCK` within the
/// chunk's blocks; `head_dim % 16 == 0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn attend_chunk(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &mut [[f32; KEY_CHUNK]; ATTN_ROWS],
    partial: &mut [f32],
) {
    match a.q.len() {
        1 => scores::<1>(a, kv, c0, j0, j1, s),
        2 => scores::<2>(a, kv, c0, j0, j1, s),
        3 => scores::<3>(a, kv, c0, j0, j1, s),
        4 => scores::<4>(a, kv, c0, j0, j1, s),
        5 => scores::<5>(a, kv, c0, j0, j1, s),
        6 => scores::<6>(a, kv, c0, j0, j1, s),
        7 => scores::<7>(a, kv, c0, j0, j1, s),
        _ => scores::<8>(a, kv, c0, j0, j1, s),
    }
    softmax_rows(a, j0, j1, s, partial);
    let nd = a.head_dim / 16;
    macro_rules! values {
        ($($r:literal)*) => {
            match (a.q.len(), nd.is_multiple_of(4), nd.is_multiple_of(2)) {
                (1, true, _) => weighted_values::<1, 4>(a, kv, c0, j0, j1, s, partial),
                (1, false, true) => weighted_values::<1, 2>(a, kv, c0, j0, j1, s, partial),
                (1, false, false) => weighted_values::<1, 1>(a, kv, c0, j0, j1, s, partial),
                $(
                    ($r, _, true) => weighted_values::<$r, 2>(a, kv, c0, j0, j1, s, partial),
                    ($r, _, false) => weighted_values::<$r, 1>(a, kv, c0, j0, j1, s, partial),
                )*
                (_, _, true) => weighted_values::<8, 2>(a, kv, c0, j0, j1, s, partial),
                (_, _, false) => weighted_values::<8, 1>(a, kv, c0, j0, j1, s, partial),
            }
        };
    }
    values!(2 3 4 5 6 7);
}

/// Scores of `R` query rows against keys `j0..j1`: a block's 16 keys in one vector per row.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn scores<const R: usize>(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &mut [[f32; KEY_CHUNK]; ATTN_ROWS],
) {
    let hd = a.head_dim;
    let q: [*const f32; R] = std::array::from_fn(|r| a.q[r].as_ptr());
    let mut j = j0;
    while j < j1 {
        let kb = kv.k.get_unchecked((j - c0) / KEY_BLOCK).as_ptr();
        let mut acc = [_mm512_setzero_ps(); R];
        for d in 0..hd {
            let k = _mm512_cvtph_ps(_mm256_loadu_si256(kb.add(d * KEY_BLOCK) as *const __m256i));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q[r].add(d)), k, acc[r]);
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
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    s: &[[f32; KEY_CHUNK]; ATTN_ROWS],
    partial: &mut [f32],
) {
    let hd = a.head_dim;
    let stride = partial_len(hd);
    let mut d0 = 0;
    while d0 < hd {
        let mut acc = [[_mm512_setzero_ps(); ND]; R];
        for j in j0..j1 {
            let block = kv.v.get_unchecked((j - c0) / KEY_BLOCK).as_ptr();
            let vj = block.add((j % KEY_BLOCK) * hd + d0);
            let vv: [__m512; ND] = std::array::from_fn(|n| {
                _mm512_cvtph_ps(_mm256_loadu_si256(vj.add(16 * n) as *const __m256i))
            });
            for r in 0..R {
                let p = _mm512_set1_ps(*s[r].get_unchecked(j - j0));
                for n in 0..ND {
                    acc[r][n] = _mm512_fmadd_ps(p, vv[n], acc[r][n]);
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
