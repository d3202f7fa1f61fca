//! AVX2 without AVX-512 over Q4_0 and Q4_1 in strips: each half of a 64-byte slot (8 rows)
//! is, once its nibbles are split, a word of the 8-row tile ([`WTile`]) the row layout builds
//! by unpacking and shuffling 8 rows on every call. So here a tile costs a split and a store
//! per slot, and the tile kernel (`dot_tile`) does the rest.
//!
//! Exactness: the tile kernel is the row layout's for `m >= TILE_MIN_M`, and it is
//! bit-identical to the row layout's decode kernels, so a result does not depend on the
//! layout or the batch.

use super::*;
use crate::x86::avx2::sweep_tiles;

/// Half `h` (rows `8h..8h + 8`) of strip `s` of `w` as one [`WTile`] per group.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_tiles<const T: u8>(w: &QMatrix, s: usize, h: usize, tiles: &mut [WTile]) {
    let low = _mm256_set1_epi8(0x0f);
    let nb = w.row_bytes / w.ty.block_bytes();
    for (gi, t) in tiles.iter_mut().enumerate() {
        let (g, grp, (fd, fm, fqs)) = group(w, nb, s, gi, h == 0);
        let qs = grp.add(fqs + 32 * h);
        let q = t.q.as_mut_ptr() as *mut __m256i;
        // Slot `8p + c` holds word `c` of pair `p`: its low nibbles are word `c` of vector
        // `2p`, its high ones of vector `2p + 1`.
        for p in 0..g / 2 {
            for c in 0..8 {
                let raw = _mm256_loadu_si256(qs.add(64 * (8 * p + c)) as *const __m256i);
                _mm256_store_si256(q.add(8 * (2 * p) + c), _mm256_and_si256(raw, low));
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
                _mm256_store_si256(q.add(8 * (2 * p + 1) + c), hi);
            }
        }
        for b in 0..g {
            let half = |at: usize| {
                _mm256_cvtph_ps(_mm_loadu_si128(grp.add(at + 32 * b + 16 * h) as *const _))
            };
            let dw = half(fd);
            // The row layout's offsets, computed the same way (`unpack_packed`).
            let mw = if T == 0 {
                _mm256_mul_ps(dw, _mm256_set1_ps(-8.0))
            } else {
                half(fm)
            };
            _mm256_store_ps(t.dw[b].as_mut_ptr(), dw);
            _mm256_store_ps(t.mw[b].as_mut_ptr(), mw);
        }
    }
}

/// Up to this many activation rows, a half-strip is dotted straight from memory (nibbles split
/// in registers) rather than through tiles.
const DIRECT_MAX_M: usize = 8;

/// Activation rows per direct pass (as the tile kernel takes).
const DIRECT_ROWS: usize = TILE_ACT_ROWS;

/// Block `B` of a half-strip group (`grp`: the group, `qs`: its half's first slot) dotted with
/// `R` activation rows' blocks: `tile_block`'s steps, with the tile's words split from the
/// slots in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const T: u8, const B: usize, const R: usize>(
    scales: (*const u8, *const u8),
    qs: *const u8,
    ag: [&AGroup; R],
    acc: &mut [[__m256; 8]; R],
) {
    let (p, second) = (B / 2, B % 2);
    let c0 = 4 * second;
    let low = _mm256_set1_epi8(0x0f);
    let raw: [__m256i; 4] =
        std::array::from_fn(|c| _mm256_loadu_si256(qs.add(64 * (8 * p + c0 + c)) as *const _));
    let mut isum = [_mm256_setzero_si256(); R];
    for h in 0..2 {
        let v = 2 * p + h;
        let wq: [__m256i; 4] = std::array::from_fn(|c| {
            let q = if h == 0 {
                raw[c]
            } else {
                _mm256_srli_epi16(raw[c], 4)
            };
            _mm256_and_si256(q, low)
        });
        for (sum, a) in isum.iter_mut().zip(ag) {
            let xw = a.q.as_ptr().add(32 * v + 4 * c0) as *const i32;
            let xb: [__m256i; 4] =
                std::array::from_fn(|c| _mm256_set1_epi32(xw.add(c).read_unaligned()));
            let p: [__m256i; 4] = std::array::from_fn(|c| _mm256_maddubs_epi16(wq[c], xb[c]));
            let s = _mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3]));
            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(s, _mm256_set1_epi16(1)));
        }
    }
    let k = POS[B];
    let dw = _mm256_cvtph_ps(_mm_loadu_si128(scales.0.add(32 * B) as *const _));
    // The row layout's offsets, computed the same way (`unpack_packed`).
    let mw = if T == 0 {
        _mm256_mul_ps(dw, _mm256_set1_ps(-8.0))
    } else {
        _mm256_cvtph_ps(_mm_loadu_si128(scales.1.add(32 * B) as *const _))
    };
    for ((acc, sum), a) in acc.iter_mut().zip(isum).zip(ag) {
        let scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.dx[k]));
        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[k]);
        acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a.sx[k]), acc[k]);
    }
}

/// Half `h` of strip `s` of `w` dotted with `R` activation rows: `dot_tile`'s sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
// `gi` also places the group in the strip, so it stays an index.
#[allow(clippy::needless_range_loop)]
unsafe fn dot_half<const T: u8, const R: usize>(
    w: &QMatrix,
    s: usize,
    h: usize,
    a: [&[AGroup]; R],
) -> [__m256; R] {
    let mut acc = [[_mm256_setzero_ps(); 8]; R];
    let nb = w.row_bytes / w.ty.block_bytes();
    for gi in 0..nb.div_ceil(GROUP) {
        let (g, grp, (fd, fm, fqs)) = group(w, nb, s, gi, h == 0);
        let scales = (grp.add(fd + 16 * h), grp.add(fm + 16 * h));
        let qs = grp.add(fqs + 32 * h);
        let ag: [&AGroup; R] = std::array::from_fn(|r| &a[r][gi]);
        // Blocks spelled out one by one so every accumulator index is a constant.
        block::<T, 0, R>(scales, qs, ag, &mut acc);
        block::<T, 1, R>(scales, qs, ag, &mut acc);
        if g > 2 {
            block::<T, 2, R>(scales, qs, ag, &mut acc);
            block::<T, 3, R>(scales, qs, ag, &mut acc);
        }
        if g > 4 {
            block::<T, 4, R>(scales, qs, ag, &mut acc);
            block::<T, 5, R>(scales, qs, ag, &mut acc);
        }
        if g > 6 {
            block::<T, 6, R>(scales, qs, ag, &mut acc);
            block::<T, 7, R>(scales, qs, ag, &mut acc);
        }
    }
    let add = _mm256_add_ps;
    acc.map(|acc| {
        add(
            add(add(acc[0], acc[4]), add(acc[2], acc[6])),
            add(add(acc[1], acc[5]), add(acc[3], acc[7])),
        )
    })
}

/// Group `gi` of strip `s` of `w` (rows of `nb` blocks): its block count, where it starts and
/// its fields' offsets (`pack::strip_fields`). With `prefetch`, asks for the bytes
/// `PREFETCH_BYTES` on: the stream runs on through the next strips (as the VNNI kernel's).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group(
    w: &QMatrix,
    nb: usize,
    s: usize,
    gi: usize,
    prefetch: bool,
) -> (usize, *const u8, (usize, usize, usize)) {
    let g = pack::group_len(nb, gi);
    let grp = w
        .data
        .as_ptr()
        .add(pack::strip_group_offset(w.ty, w.row_bytes, s, gi));
    if prefetch {
        let ahead = grp.wrapping_add(PREFETCH_BYTES);
        for line in (0..pack::STRIP * g * w.ty.block_bytes()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
        }
    }
    (g, grp, pack::strip_fields(w.ty, g))
}

/// Output columns `range` (whole strips) of `w`, Q4_0 or Q4_1 in strips, for all `m`
/// activation rows (`tiles`: a buffer kept across calls).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` is in strips; `range` starts and ends on strip
/// boundaries; the caller owns those columns of `out` (`m x w.rows`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_task(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    range: Range<usize>,
    out: SharedMut<f32>,
    tiles: &mut Vec<WTile>,
) {
    match w.ty {
        QuantType::Q4_0 => rows::<0>(w, act, m, ngroups, range, out, tiles),
        QuantType::Q4_1 => rows::<1>(w, act, m, ngroups, range, out, tiles),
        ty => unreachable!("{ty:?} is never laid out in strips for AVX2"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const T: u8>(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    range: Range<usize>,
    out: SharedMut<f32>,
    tiles: &mut Vec<WTile>,
) {
    if m <= DIRECT_MAX_M {
        return direct::<T>(w, act, m, ngroups, range, out);
    }
    tiles.resize(ngroups, ZERO_T);
    let last_blocks = last_blocks(w.cols);
    for s in range.start / pack::STRIP..range.end / pack::STRIP {
        for h in 0..2 {
            half_tiles::<T>(w, s, h, tiles);
            let j0 = s * pack::STRIP + 8 * h;
            sweep_tiles(tiles, act, m, ngroups, last_blocks, out.at(j0), w.rows, 8);
        }
    }
}

/// `rows_task` for up to [`DIRECT_MAX_M`] activation rows: straight from the strips.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn direct<const T: u8>(
    w: &QMatrix,
    act: &[AGroup],
    m: usize,
    ngroups: usize,
    range: Range<usize>,
    out: SharedMut<f32>,
) {
    let a = |i: usize| &act[i * ngroups..(i + 1) * ngroups];
    for s in range.start / pack::STRIP..range.end / pack::STRIP {
        for h in 0..2 {
            let j0 = s * pack::STRIP + 8 * h;
            let store = |i: usize, v: __m256| _mm256_storeu_ps(out.get().add(i * w.rows + j0), v);
            let mut i = 0;
            while i + DIRECT_ROWS <= m {
                let rows = std::array::from_fn(|r| a(i + r));
                for (r, v) in dot_half::<T, DIRECT_ROWS>(w, s, h, rows)
                    .into_iter()
                    .enumerate()
                {
                    store(i + r, v);
                }
                i += DIRECT_ROWS;
            }
            for i in i..m {
                store(i, dot_half::<T, 1>(w, s, h, [a(i)])[0]);
            }
        }
    }
}
