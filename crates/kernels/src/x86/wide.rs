//! The AVX-512 VNNI tile path at full width: 16 weight rows per 512-bit vector instead of 8 per
//! 256-bit one, for `m >= TILE_MIN_M` unsigned formats (prefill chunks, big decode batches).
//!
//! A [`WTile16`] is two 8-row [`WTile`]s side by side: every 64-byte slot holds the 8-row
//! interleave of rows 0..8 in its low half and of rows 8..16 in its high half, and the scales
//! likewise. Each lane then does exactly what the 8-row kernel's lane does (the same `vpdpbusd`
//! sums, the same fused multiply-adds into the same block-position accumulator, the same final
//! adds), so a row's result is bit-identical to the narrow path's: batching still never changes
//! a sequence's tokens. What halves is the instruction count per weight row (one activation
//! broadcast feeds 16 rows).

use super::*;

/// 16 weight rows of one group, interleaved (see the module docs).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct WTile16 {
    q: [[u8; 64]; 64],
    dw: [[f32; 16]; 8],
    mw: [[f32; 16]; 8],
}

const ZERO_T16: WTile16 = WTile16 {
    q: [[0; 64]; 64],
    dw: [[0.0; 16]; 8],
    mw: [[0.0; 16]; 8],
};

/// Rows `j0..j0 + 16` of `w` for all `m` activation rows.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` is an unsigned format; rows
/// `j0..j0 + 16` exist; the caller owns those columns of `out` (`m x w.rows`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn rows16(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    j0: usize,
    out: SharedMut<f32>,
    buf: &mut RowBufs,
) {
    buf.0.resize(16 * ngroups, ZERO_W);
    buf.3.resize(ngroups, ZERO_T16);
    for r in 0..16 {
        vnni::unpack_row(
            w,
            j0 + r,
            &mut buf.0[r * ngroups..(r + 1) * ngroups],
            &mut [],
        );
    }
    let (lo, hi) = buf.0.split_at(8 * ngroups);
    for (g, t) in buf.3.iter_mut().enumerate() {
        let q = t.q.as_mut_ptr().cast::<u8>();
        vnni::interleave(lo, ngroups, g, q, 64);
        vnni::interleave(hi, ngroups, g, q.add(32), 64);
        for (b, &pos) in POS.iter().enumerate() {
            for r in 0..16 {
                t.dw[b][r] = buf.0[r * ngroups + g].dw[pos];
                t.mw[b][r] = buf.0[r * ngroups + g].mw[pos];
            }
        }
    }
    let last_blocks = ((w.cols / 32).next_multiple_of(2) - 1) % GROUP + 1;
    for i in 0..m {
        let a = &act[i * ngroups..(i + 1) * ngroups];
        let v = dot16(&buf.3, a, last_blocks);
        _mm512_storeu_ps(out.get().add(i * w.rows + j0), v);
    }
}

/// `tile_block` of the 8-row kernel on 16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block16<const B: usize>(t: &WTile16, ag: &AGroup, acc: &mut [__m512; 8]) {
    let x = ag.q.as_ptr();
    let (p, second) = (B / 2, B % 2);
    let mut isum = _mm512_setzero_si512();
    for h in 0..2 {
        let v = 2 * p + h;
        let c0 = 4 * second;
        let xw = x.add(32 * v + 4 * c0) as *const i32;
        for c in 0..4 {
            let wq = _mm512_load_si512(t.q[8 * v + c0 + c].as_ptr().cast());
            isum = _mm512_dpbusd_epi32(isum, wq, _mm512_set1_epi32(xw.add(c).read_unaligned()));
        }
    }
    let k = POS[B];
    let scale = _mm512_mul_ps(_mm512_load_ps(t.dw[B].as_ptr()), _mm512_set1_ps(ag.dx[k]));
    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[k]);
    acc[k] = _mm512_fmadd_ps(
        _mm512_load_ps(t.mw[B].as_ptr()),
        _mm512_set1_ps(ag.sx[k]),
        acc[k],
    );
}

/// `dot_tile` of the 8-row kernel on 16 lanes: the 16 rows' sums for one activation row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot16(tiles: &[WTile16], a: &[AGroup], last_blocks: usize) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); 8];
    let n = tiles.len();
    for (g, (t, ag)) in tiles.iter().zip(a).enumerate() {
        let blocks = if g + 1 == n { last_blocks } else { GROUP };
        block16::<0>(t, ag, &mut acc);
        block16::<1>(t, ag, &mut acc);
        if blocks > 2 {
            block16::<2>(t, ag, &mut acc);
            block16::<3>(t, ag, &mut acc);
        }
        if blocks > 4 {
            block16::<4>(t, ag, &mut acc);
            block16::<5>(t, ag, &mut acc);
        }
        if blocks > 6 {
            block16::<6>(t, ag, &mut acc);
            block16::<7>(t, ag, &mut acc);
        }
    }
    let add = _mm512_add_ps;
    add(
        add(add(acc[0], acc[4]), add(acc[2], acc[6])),
        add(add(acc[1], acc[5]), add(acc[3], acc[7])),
    )
}
