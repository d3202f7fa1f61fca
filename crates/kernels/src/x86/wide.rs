//! AVX-512 VNNI at full width: the tile path with 16 weight rows per 512-bit vector instead of 8
//! per 256-bit one, for `m >= TILE_MIN_M` unsigned formats and Q6_K (prefill chunks, big decode
//! batches), and the decode path's pair sums of Q4_0, Q4_1 and Q8_0 two at a time
//! ([`q4_dots`], [`q8_isum`]).
//!
//! A [`WTile16`] is two 8-row [`WTile`]s side by side: every 64-byte slot holds the 8-row
//! interleave of rows 0..8 in its low half and of rows 8..16 in its high half, and the scales
//! likewise. Each lane then does exactly what the 8-row kernel's lane does (the same `vpdpbusd`
//! sums, the same fused multiply-adds into the same block-position accumulator, the same final
//! adds), so a row's result is bit-identical to the narrow path's: batching still never changes
//! a sequence's tokens. What halves is the instruction count per weight row (one activation
//! broadcast feeds 16 rows); and each weight vector loaded feeds [`ACT_ROWS`] activation rows.

use super::*;

/// Activation rows the tile kernel takes per pass over a weight tile, each weight vector loaded
/// once for all of them. Measured with `examples/model_sweep` (a 256-row chunk through SmolLM2,
/// 2 threads, interleaved runs): 4 rows 1.2-1.5x faster than 1; 2, 3, 6 and 8 in between, though
/// 4 rows' 32 accumulators already spill some.
const ACT_ROWS: usize = 4;

/// One activation group laid out for the decode path's 512-bit dots (Q4_0, Q4_1): for
/// `h` in 0..2, `lo[h]` is the low-nibble activations of pairs `2h` and `2h + 1` side by side
/// (`[xl(2h) | xl(2h+1)]`, in [`AGroup`] terms vectors `4h` and `4h + 2`) and `hi[h]` the
/// high-nibble ones (vectors `4h + 1` and `4h + 3`). A 64-byte load of packed quants then meets
/// its activations without a shuffle.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct XWide {
    lo: [[i8; 64]; 2],
    hi: [[i8; 64]; 2],
}

impl XWide {
    pub(crate) fn of(a: &AGroup) -> Self {
        let v = |i: usize| &a.q[32 * i..32 * i + 32];
        let mut x = XWide {
            lo: [[0; 64]; 2],
            hi: [[0; 64]; 2],
        };
        for h in 0..2 {
            x.lo[h][..32].copy_from_slice(v(4 * h));
            x.lo[h][32..].copy_from_slice(v(4 * h + 2));
            x.hi[h][..32].copy_from_slice(v(4 * h + 1));
            x.hi[h][32..].copy_from_slice(v(4 * h + 3));
        }
        x
    }
}

/// A full Q4 group's quants (at `qs`) unpacked for [`q4_dots`]: the low and high nibbles of
/// each 64-byte half, `[lo(0), hi(0), lo(1), hi(1)]`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; `qs` points at 128 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4_weights(qs: *const u8) -> [__m512i; 4] {
    let low = _mm512_set1_epi8(0x0f);
    let v = |h: usize| _mm512_loadu_si512(qs.add(64 * h) as *const _);
    let (v0, v1) = (v(0), v(1));
    [
        _mm512_and_si512(v0, low),
        _mm512_and_si512(_mm512_srli_epi16(v0, 4), low),
        _mm512_and_si512(v1, low),
        _mm512_and_si512(_mm512_srli_epi16(v1, 4), low),
    ]
}

/// A full Q4 group's block dots with one activation row (weights from [`q4_weights`]): for
/// half `h`, `dpbusd(dpbusd(0, wl, xl), wh, xh)`, whose 128-bit lanes hold blocks `4h..4h + 4`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4_dots(w: &[__m512i; 4], x: &XWide) -> [__m512i; 2] {
    std::array::from_fn(|h| {
        let xl = _mm512_load_si512(x.lo[h].as_ptr() as *const _);
        let xh = _mm512_load_si512(x.hi[h].as_ptr() as *const _);
        _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[2 * h], xl),
            w[2 * h + 1],
            xh,
        )
    })
}

/// Sums each 128-bit lane of `z[0]` and `z[1]` (from [`q4_dots`]): lane `L` of the result is
/// `[block L, block 4 + L]` twice. Exact integers, so any order of the adds gives the
/// one-row path's block sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lane_sums(z: [__m512i; 2]) -> __m512i {
    // Lane L: [z0[0] + z0[2], z1[0] + z1[2], z0[1] + z0[3], z1[1] + z1[3]].
    let t = _mm512_add_epi32(
        _mm512_unpacklo_epi32(z[0], z[1]),
        _mm512_unpackhi_epi32(z[0], z[1]),
    );
    _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t))
}

/// The 8 block sums of a Q4 group, in `ORDER` (see `x86.rs`), from its [`q4_dots`].
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4_isum(z: [__m512i; 2]) -> __m256i {
    // ORDER = blocks [0, 2, 4, 6, 1, 3, 5, 7]; block L (< 4) is dword 4 L, block 4 + L dword
    // 4 L + 1 of `lane_sums`.
    let order = _mm512_setr_epi32(0, 8, 1, 9, 4, 12, 5, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, lane_sums(z)))
}

/// [`q4_isum`] of two activation rows at once, sharing the last steps.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4_isum2(a: [__m512i; 2], b: [__m512i; 2]) -> [__m256i; 2] {
    // Lane L: [a's block L, a's 4 + L, b's block L, b's 4 + L].
    let (ta, tb) = (lane_sums(a), lane_sums(b));
    let u = _mm512_mask_blend_epi32(0b1100_1100_1100_1100, ta, tb);
    let order = _mm512_setr_epi32(0, 8, 1, 9, 4, 12, 5, 13, 2, 10, 3, 11, 6, 14, 7, 15);
    let v = _mm512_permutexvar_epi32(order, u);
    [_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)]
}

/// 16 weight rows of one group, interleaved (see the module docs).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct WTile16 {
    pub(super) q: [[u8; 64]; 64],
    pub(super) dw: [[f32; 16]; 8],
    pub(super) mw: [[f32; 16]; 8],
}

pub(super) const ZERO_T16: WTile16 = WTile16 {
    q: [[0; 64]; 64],
    dw: [[0.0; 16]; 8],
    mw: [[0.0; 16]; 8],
};

/// A full Q8_0 group's quants (at `qs`) with their sign bits flipped, for [`q8_isum`].
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI; `qs` points at 256 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q8_weights(qs: *const u8) -> [__m512i; 4] {
    let flip = _mm512_set1_epi8(-128);
    std::array::from_fn(|p| _mm512_xor_si512(_mm512_loadu_si512(qs.add(64 * p) as *const _), flip))
}

/// The 8 block sums of a full Q8_0 group under VNNI (weights from [`q8_weights`]), in `ORDER`:
/// one 512-bit `vpdpbusd` per pair, whose 128-bit lanes hold `[2p low, 2p + 1 low, 2p high,
/// 2p + 1 high]`, then lane sums (exact integers, so the order of the adds cannot matter).
///
/// # Safety
/// The CPU has AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q8_isum(w: &[__m512i; 4], a: &AGroup) -> __m256i {
    let z: [__m512i; 4] = std::array::from_fn(|p| {
        let x = _mm512_loadu_si512(a.q.as_ptr().add(64 * p) as *const _);
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], x)
    });
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (t01, t23) = (pair(z[0], z[1]), pair(z[2], z[3]));
    // Lane L, dword p: the sum of z[p]'s lane L.
    let u = _mm512_add_epi32(
        _mm512_unpacklo_epi64(t01, t23),
        _mm512_unpackhi_epi64(t01, t23),
    );
    // Lanes 0 + 2 hold blocks 2p (dword p), lanes 1 + 3 blocks 2p + 1.
    let v = _mm512_add_epi32(u, _mm512_shuffle_i64x2::<0b01_00_11_10>(u, u));
    _mm512_castsi512_si256(v)
}

/// Q6_K's scales in a 16-row tile: `sc[2 B + h]` holds the 16 rows' integer scales of the
/// `h`-th 16 quants of block `B`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Scales16 {
    sc: [[i32; 16]; 16],
}

const ZERO_S16: Scales16 = Scales16 { sc: [[0; 16]; 16] };

/// For Q6_K's tile path, one activation group's sums: `s[2 B + h]` is 32 times the sum of the
/// `h`-th 16 quants of block `B`, the term that turns the tile's unsigned 6-bit weights back
/// into Q6_K's signed ones (`q - 32`). Made once per call by the driver.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Sums16 {
    s: [i32; 16],
}

const ZERO_X16: Sums16 = Sums16 { s: [0; 16] };

impl Sums16 {
    pub(crate) fn of(a: &AGroup) -> Self {
        // Vector v = 2 p + h of a group holds block 2p's quants 16h..16h+16, then block
        // 2p + 1's (see the layout in `x86.rs`).
        Sums16 {
            s: std::array::from_fn(|i| {
                let (b, h) = (i / 2, i % 2);
                let (p, second) = (b / 2, b % 2);
                let at = 32 * (2 * p + h) + 16 * second;
                32 * a.q[at..at + 16].iter().map(|&q| q as i32).sum::<i32>()
            }),
        }
    }
}

/// Rows `j0..j0 + 16` of `w` for all `m` activation rows: an unsigned format, or with `Q6`,
/// Q6_K (`sums` then holds each activation group's [`Sums16`]).
///
/// Q6_K's block sums are `sum_h sc_h sum_i (q_i - 32) x_i` over its two halves of 16, exact
/// integers. Here the tile holds the unsigned `q_i` (what `vpdpbusd` takes), each half is summed
/// alone and corrected by `32 sum_i x_i` before its scale multiplies it: the same integers as
/// the narrow kernel's, so the same floats after.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` is an unsigned format, or Q6_K
/// when `Q6`; rows `j0..j0 + 16` exist; the caller owns those columns of `out` (`m x w.rows`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn rows16<const Q6: bool>(
    w: &QMatrix,
    act: &[AGroup],
    sums: &[Sums16],
    m: usize,
    ngroups: usize,
    j0: usize,
    out: SharedMut<f32>,
    buf: &mut RowBufs,
) {
    buf.0.resize(16 * ngroups, ZERO_W);
    buf.3.resize(ngroups, ZERO_T16);
    if Q6 {
        buf.1.resize(16 * ngroups, WScales { s: [0; 128] });
        buf.4.resize(ngroups, ZERO_S16);
    }
    for r in 0..16 {
        let wg = &mut buf.0[r * ngroups..(r + 1) * ngroups];
        if Q6 {
            vnni::unpack_row(w, j0 + r, wg, &mut buf.1[r * ngroups..(r + 1) * ngroups]);
            let bias = _mm256_set1_epi8(32);
            for g in wg.iter_mut() {
                let q = g.q.as_mut_ptr() as *mut __m256i;
                for v in 0..8 {
                    _mm256_store_si256(
                        q.add(v),
                        _mm256_add_epi8(_mm256_load_si256(q.add(v)), bias),
                    );
                }
            }
            let row = w.row(j0 + r);
            for (g, t) in buf.4.iter_mut().enumerate() {
                for (i, sc) in t.sc.iter_mut().enumerate() {
                    sc[r] = row[210 * g + 192 + i] as i8 as i32;
                }
            }
        } else {
            vnni::unpack_row(w, j0 + r, wg, &mut []);
        }
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
    let last_blocks = last_blocks(w.cols);
    let sc = if Q6 { &buf.4[..] } else { &[][..] };
    sweep16::<Q6>(
        &buf.3,
        sc,
        act,
        sums,
        m,
        ngroups,
        last_blocks,
        out.at(j0),
        w.rows,
    );
}

/// Every one of the `m` activation rows dotted with 16 weight rows in `tiles` (and, with `Q6`,
/// `sc`), row `i`'s 16 results stored at `out + i * stride`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; the caller owns those outputs.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn sweep16<const Q6: bool>(
    tiles: &[WTile16],
    sc: &[Scales16],
    act: &[AGroup],
    sums: &[Sums16],
    m: usize,
    ngroups: usize,
    last_blocks: usize,
    out: SharedMut<f32>,
    stride: usize,
) {
    let a = |i: usize| &act[i * ngroups..(i + 1) * ngroups];
    let x = |i: usize| {
        if Q6 {
            &sums[i * ngroups..(i + 1) * ngroups]
        } else {
            &[][..]
        }
    };
    let store = |i: usize, v: __m512| _mm512_storeu_ps(out.get().add(i * stride), v);
    let mut i = 0;
    while i + ACT_ROWS <= m {
        let rows = std::array::from_fn(|r| a(i + r));
        let xs = std::array::from_fn(|r| x(i + r));
        let v = dot16::<ACT_ROWS, Q6>(tiles, sc, rows, xs, last_blocks);
        for (r, v) in v.into_iter().enumerate() {
            store(i + r, v);
        }
        i += ACT_ROWS;
    }
    for i in i..m {
        store(i, dot16::<1, Q6>(tiles, sc, [a(i)], [x(i)], last_blocks)[0]);
    }
}

/// `tile_block` of the 8-row kernel on 16 lanes, for `R` activation rows at once: each weight
/// vector is loaded once for all of them, and each row's sums are formed in exactly the order
/// the one-row kernel uses (so `R` never changes a result). With `Q6`, Q6_K's block sums (see
/// [`rows16`]) from the tile's scales `sc` and the rows' activation sums `xs`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block16<const B: usize, const R: usize, const Q6: bool>(
    t: &WTile16,
    sc: &Scales16,
    ag: [&AGroup; R],
    xs: [&Sums16; R],
    acc: &mut [[__m512; 8]; R],
) {
    let (p, second) = (B / 2, B % 2);
    let mut isum = [_mm512_setzero_si512(); R];
    for h in 0..2 {
        let v = 2 * p + h;
        let c0 = 4 * second;
        let mut half = [_mm512_setzero_si512(); R];
        for c in 0..4 {
            let wq = _mm512_load_si512(t.q[8 * v + c0 + c].as_ptr().cast());
            let sums = if Q6 { &mut half } else { &mut isum };
            for (sum, a) in sums.iter_mut().zip(ag) {
                let xw = a.q.as_ptr().add(32 * v + 4 * (c0 + c)) as *const i32;
                *sum = _mm512_dpbusd_epi32(*sum, wq, _mm512_set1_epi32(xw.read_unaligned()));
            }
        }
        if Q6 {
            let scale = _mm512_load_si512(sc.sc[2 * B + h].as_ptr().cast());
            for ((sum, half), x) in isum.iter_mut().zip(half).zip(xs) {
                let signed = _mm512_sub_epi32(half, _mm512_set1_epi32(x.s[2 * B + h]));
                *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(signed, scale));
            }
        }
    }
    let k = POS[B];
    let dw = _mm512_load_ps(t.dw[B].as_ptr());
    let mw = _mm512_load_ps(t.mw[B].as_ptr());
    for ((acc, sum), a) in acc.iter_mut().zip(isum).zip(ag) {
        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.dx[k]));
        acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[k]);
        // Q6_K has no offset term (the narrow kernel adds none).
        if !Q6 {
            acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.sx[k]), acc[k]);
        }
    }
}

/// `dot_tile` of the 8-row kernel on 16 lanes: the 16 rows' sums for each of `R` activation
/// rows (`a[r]` holds row r's groups).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot16<const R: usize, const Q6: bool>(
    tiles: &[WTile16],
    scales: &[Scales16],
    a: [&[AGroup]; R],
    x: [&[Sums16]; R],
    last_blocks: usize,
) -> [__m512; R] {
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    let n = tiles.len();
    for (g, t) in tiles.iter().enumerate() {
        let ag: [&AGroup; R] = std::array::from_fn(|r| &a[r][g]);
        let (sc, xs): (&Scales16, [&Sums16; R]) = if Q6 {
            (&scales[g], std::array::from_fn(|r| &x[r][g]))
        } else {
            (&ZERO_S16, [&ZERO_X16; R])
        };
        let blocks = if g + 1 == n { last_blocks } else { GROUP };
        block16::<0, R, Q6>(t, sc, ag, xs, &mut acc);
        block16::<1, R, Q6>(t, sc, ag, xs, &mut acc);
        if blocks > 2 {
            block16::<2, R, Q6>(t, sc, ag, xs, &mut acc);
            block16::<3, R, Q6>(t, sc, ag, xs, &mut acc);
        }
        if blocks > 4 {
            block16::<4, R, Q6>(t, sc, ag, xs, &mut acc);
            block16::<5, R, Q6>(t, sc, ag, xs, &mut acc);
        }
        if blocks > 6 {
            block16::<6, R, Q6>(t, sc, ag, xs, &mut acc);
            block16::<7, R, Q6>(t, sc, ag, xs, &mut acc);
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
