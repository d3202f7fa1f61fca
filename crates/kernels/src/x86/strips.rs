//! AVX-512 VNNI over matrices in strips ([`Layout::Strips`](crate::Layout)): Q4_0, Q4_1 and
//! Q8_0 laid out at load so that each 64-byte slot holds the same dword of 16 weight rows
//! (`pack::strip_fields`).
//!
//! Why: the row layout makes every call rebuild that interleave (unpack 16 rows, shuffle them
//! into [`WTile16`]s) before the tile kernel runs, and makes the decode kernels reduce every
//! block's lanes horizontally, once per activation row. In strips, one broadcast activation
//! word meets 16 rows straight from memory: a Q4 slot needs only its nibbles split, and each
//! extra activation row costs 8 `vpdpbusd` and a few float operations per block of 16 rows.
//!
//! Exactness: every lane does what a lane of the 16-row tile kernel does (the same integer
//! block sums, the same multiply-adds into the same block-position accumulators, the same
//! final adds), and that kernel is bit-identical to the row layout's decode kernels, so a
//! result does not depend on the layout, the path or the batch.

use super::wide::{sweep16, WTile16};
use super::*;

/// Up to this many activation rows, a strip is dotted straight from memory; above it, each
/// strip is first unpacked into [`WTile16`]s (nibbles split once for all rows) and swept by the
/// tile kernel.
pub(crate) const DIRECT_MAX_M: usize = 8;

/// Activation rows dotted per pass over a strip on the direct path (a remainder of up to 3
/// takes one more pass). `examples/model_sweep` on SmolLM2's shapes, 2 threads: 4 rows a pass
/// beat 2 (m = 4: 4.0 against 4.6 ms a sweep, m = 8: 6.5 against 9.1), though their 32
/// accumulators spill some; 8 were no better than 4.
const DIRECT_ROWS: usize = 4;

/// How far ahead of the group being dotted the direct path prefetches.
const PREFETCH_BYTES: usize = 4096;

/// `T`: 0 Q4_0, 1 Q4_1, 4 Q8_0 (as `rows_packed`).
const fn is_q8(t: u8) -> bool {
    t == 4
}

/// The 16 rows' scale and offset of block `b` of a strip group of `g` blocks at `grp`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scales<const T: u8>(grp: *const u8, g: usize, b: usize) -> (__m512, __m512) {
    let half = |at: usize| _mm512_cvtph_ps(_mm256_loadu_si256(grp.add(at) as *const __m256i));
    let dw = half(32 * b);
    // The row layout's offsets, computed the same way (`unpack_packed`).
    let mw = match T {
        0 => _mm512_mul_ps(dw, _mm512_set1_ps(-8.0)),
        1 => half(32 * g + 32 * b),
        _ => _mm512_mul_ps(dw, _mm512_set1_ps(-128.0)),
    };
    (dw, mw)
}

/// Block `B` of a strip group of `g` blocks at `grp` dotted with `R` activation rows' blocks,
/// each added to its row's accumulator of the block's position, as `block16` does.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block<const T: u8, const B: usize, const R: usize>(
    grp: *const u8,
    g: usize,
    qs: *const u8,
    ag: [&AGroup; R],
    acc: &mut [[__m512; 8]; R],
) {
    let (p, second) = (B / 2, B % 2);
    let c0 = 4 * second;
    let slot = |s: usize| _mm512_loadu_si512(qs.add(64 * s) as *const _);
    // The activation dword `c` of vector `v`, broadcast to every row.
    let x = |a: &AGroup, v: usize, c: usize| {
        _mm512_set1_epi32((a.q.as_ptr().add(32 * v + 4 * c) as *const i32).read_unaligned())
    };
    let mut isum = [_mm512_setzero_si512(); R];
    for c in c0..c0 + 4 {
        if is_q8(T) {
            let flip = _mm512_set1_epi8(-128);
            for v in [2 * p, 2 * p + 1] {
                let wq = _mm512_xor_si512(slot(8 * v + c), flip);
                for (sum, a) in isum.iter_mut().zip(ag) {
                    *sum = _mm512_dpbusd_epi32(*sum, wq, x(a, v, c));
                }
            }
        } else {
            let low = _mm512_set1_epi8(0x0f);
            let raw = slot(8 * p + c);
            let lo = _mm512_and_si512(raw, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
            for (sum, a) in isum.iter_mut().zip(ag) {
                *sum = _mm512_dpbusd_epi32(*sum, lo, x(a, 2 * p, c));
                *sum = _mm512_dpbusd_epi32(*sum, hi, x(a, 2 * p + 1, c));
            }
        }
    }
    let k = POS[B];
    let (dw, mw) = scales::<T>(grp, g, B);
    for ((acc, sum), a) in acc.iter_mut().zip(isum).zip(ag) {
        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.dx[k]));
        acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[k]);
        acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.sx[k]), acc[k]);
    }
}

/// Strip `s` of `w` dotted with `R` activation rows (`a[r]` holds row r's groups): the 16
/// rows' sums for each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
// `gi` also places the group in the strip, so it stays an index.
#[allow(clippy::needless_range_loop)]
unsafe fn dot_strip<const T: u8, const R: usize>(
    w: &QMatrix,
    s: usize,
    a: [&[AGroup]; R],
) -> [__m512; R] {
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    let nb = w.row_bytes / w.ty.block_bytes();
    for gi in 0..nb.div_ceil(GROUP) {
        let g = pack::group_len(nb, gi);
        let grp = w
            .data
            .as_ptr()
            .add(pack::strip_group_offset(w.ty, w.row_bytes, s, gi));
        let qs = grp.add(pack::strip_fields(w.ty, g).2);
        // The stream runs on through the next strips; without prefetching, decode reads at
        // about two thirds of the bandwidth the row layout's prefetching decode kernel reaches.
        let ahead = grp.wrapping_add(PREFETCH_BYTES);
        for line in (0..pack::STRIP * g * w.ty.block_bytes()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
        }
        let ag: [&AGroup; R] = std::array::from_fn(|r| &a[r][gi]);
        // Blocks spelled out one by one so every accumulator index is a constant.
        block::<T, 0, R>(grp, g, qs, ag, &mut acc);
        block::<T, 1, R>(grp, g, qs, ag, &mut acc);
        if g > 2 {
            block::<T, 2, R>(grp, g, qs, ag, &mut acc);
            block::<T, 3, R>(grp, g, qs, ag, &mut acc);
        }
        if g > 4 {
            block::<T, 4, R>(grp, g, qs, ag, &mut acc);
            block::<T, 5, R>(grp, g, qs, ag, &mut acc);
        }
        if g > 6 {
            block::<T, 6, R>(grp, g, qs, ag, &mut acc);
            block::<T, 7, R>(grp, g, qs, ag, &mut acc);
        }
    }
    let add = _mm512_add_ps;
    acc.map(|acc| {
        add(
            add(add(acc[0], acc[4]), add(acc[2], acc[6])),
            add(add(acc[1], acc[5]), add(acc[3], acc[7])),
        )
    })
}

/// Strip `s` of `w` unpacked into one [`WTile16`] per group, for the tile kernel.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn strip_tiles<const T: u8>(w: &QMatrix, s: usize, tiles: &mut [WTile16]) {
    let nb = w.row_bytes / w.ty.block_bytes();
    for (gi, t) in tiles.iter_mut().enumerate() {
        let g = pack::group_len(nb, gi);
        let grp = w
            .data
            .as_ptr()
            .add(pack::strip_group_offset(w.ty, w.row_bytes, s, gi));
        let qs = grp.add(pack::strip_fields(w.ty, g).2);
        let slot = |i: usize| _mm512_loadu_si512(qs.add(64 * i) as *const _);
        let put = |t: &mut WTile16, i: usize, v: __m512i| {
            _mm512_store_si512(t.q[i].as_mut_ptr() as *mut _, v)
        };
        if is_q8(T) {
            let flip = _mm512_set1_epi8(-128);
            for i in 0..8 * g {
                put(t, i, _mm512_xor_si512(slot(i), flip));
            }
        } else {
            let low = _mm512_set1_epi8(0x0f);
            for p in 0..g / 2 {
                for c in 0..8 {
                    let raw = slot(8 * p + c);
                    put(t, 8 * (2 * p) + c, _mm512_and_si512(raw, low));
                    let hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
                    put(t, 8 * (2 * p + 1) + c, hi);
                }
            }
        }
        for b in 0..g {
            let (dw, mw) = scales::<T>(grp, g, b);
            _mm512_store_ps(t.dw[b].as_mut_ptr(), dw);
            _mm512_store_ps(t.mw[b].as_mut_ptr(), mw);
        }
    }
}

/// Output columns `range` (whole strips) of `w`, in strips, for all `m` activation rows.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` is in strips; `range` starts and
/// ends on strip boundaries; the caller owns those columns of `out` (`m x w.rows`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows_task(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    range: Range<usize>,
    out: SharedMut<f32>,
    tiles: &mut Vec<WTile16>,
) {
    match w.ty {
        QuantType::Q4_0 => rows::<0>(w, act, m, ngroups, range, out, tiles),
        QuantType::Q4_1 => rows::<1>(w, act, m, ngroups, range, out, tiles),
        QuantType::Q8_0 => rows::<4>(w, act, m, ngroups, range, out, tiles),
        ty => unreachable!("{ty:?} is never laid out in strips"),
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<const T: u8>(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    range: Range<usize>,
    out: SharedMut<f32>,
    tiles: &mut Vec<WTile16>,
) {
    debug_assert!(range.start.is_multiple_of(pack::STRIP) && range.end.is_multiple_of(pack::STRIP));
    let a = |i: usize| &act[i * ngroups..(i + 1) * ngroups];
    let store =
        |i: usize, j0: usize, v: __m512| _mm512_storeu_ps(out.get().add(i * w.rows + j0), v);
    if m > DIRECT_MAX_M {
        tiles.resize(ngroups, super::wide::ZERO_T16);
    }
    let last_blocks = last_blocks(w.cols);
    for s in range.start / pack::STRIP..range.end / pack::STRIP {
        let j0 = s * pack::STRIP;
        if m > DIRECT_MAX_M {
            strip_tiles::<T>(w, s, tiles);
            sweep16::<false>(
                tiles,
                &[],
                act,
                &[],
                m,
                ngroups,
                last_blocks,
                out.at(j0),
                w.rows,
            );
            continue;
        }
        let mut i = 0;
        while i + DIRECT_ROWS <= m {
            let v = dot_strip::<T, DIRECT_ROWS>(w, s, std::array::from_fn(|r| a(i + r)));
            for (r, v) in v.into_iter().enumerate() {
                store(i + r, j0, v);
            }
            i += DIRECT_ROWS;
        }
        // The rest in one pass too (each weight slot still loaded once per pass).
        let put = |v: &[__m512]| {
            for (r, &v) in v.iter().enumerate() {
                store(i + r, j0, v);
            }
        };
        match m - i {
            0 => {}
            1 => put(&dot_strip::<T, 1>(w, s, [a(i)])),
            2 => put(&dot_strip::<T, 2>(w, s, [a(i), a(i + 1)])),
            _ => put(&dot_strip::<T, 3>(w, s, [a(i), a(i + 1), a(i + 2)])),
        }
    }
}
pub(crate) mod avx2;
