//! The AVX-512 BF16 kernel: 8 rows x 32 columns of f32 sums in 16 registers, one
//! `vdpbf16ps` per row and panel for each pair of k, reading the same A and B tiles as AMX.

use super::{KT, MT, NT};
use std::arch::x86_64::*;

/// Activation rows per register block.
pub(super) const MR: usize = 8;

/// `out[i][j] = bias[j] + sum_k A[i][k] B[k][j]` for `nr <= 8` rows from `a` (a row's place
/// in its 16-row group's tiles) and `nc <= 32` columns (panels `b0`, `b1`), k in order.
///
/// # Safety
/// AVX-512 F/BW/BF16 present; 8 rows of `steps` tiles readable from `a`; `out` holds `nr`
/// rows of `nc` values `ldo` apart.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn block(
    a: *const u16,
    b0: *const u16,
    b1: *const u16,
    steps: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    nr: usize,
    nc: usize,
) {
    let (z0, z1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
    let mut acc = [[z0, z1]; MR];
    for s in 0..steps {
        let (at, t0, t1) = (a.add(s * MT * KT), b0.add(s * NT * KT), b1.add(s * NT * KT));
        for r in 0..16 {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(t0.add(32 * r).cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(t1.add(32 * r).cast()));
            for (i, row) in acc.iter_mut().enumerate() {
                let pair = at.add(i * KT + 2 * r).cast::<i32>().read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], x, w0);
                row[1] = _mm512_dpbf16_ps(row[1], x, w1);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(nr) {
        let o = out.add(i * ldo);
        if nc == 32 {
            _mm512_storeu_ps(o, row[0]);
            _mm512_storeu_ps(o.add(16), row[1]);
        } else {
            let mut tmp = [0f32; 32];
            _mm512_storeu_ps(tmp.as_mut_ptr(), row[0]);
            _mm512_storeu_ps(tmp.as_mut_ptr().add(16), row[1]);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, nc);
        }
    }
}
