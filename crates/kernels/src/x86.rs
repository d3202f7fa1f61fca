//! The int8 paths: AVX2 and AVX-512 VNNI.
//!
//! One scheme for every format. Activations are quantized once per call to int8 blocks of 32
//! (`AGroup`: 8 blocks, their scales `dx` and `sx = dx * sum(q)`). Each weight row is unpacked
//! once into the same shape (`WGroup`: 256 quants as bytes, per-block scale `dw` and offset `mw`,
//! value = `dw * q + mw`) and then dotted with every activation row while it sits in L1, so a
//! weight byte is read from memory once per call whatever `m` is. Per group:
//! `sum_b dw_b dx_b <q_w, q_x>_b + mw_b sx_b`.
//!
//! Quants of a block pair are laid out as two vectors `[a0..16 | b0..16]` and
//! `[a16..32 | b16..32]`, which is how ggml's nibbles fall when a pair's 32 bytes are loaded as
//! one vector; the horizontal reduction of four pairs then yields the 8 block sums in the order
//! `ORDER`, so the scales are stored in that order and no shuffle is needed per activation row.
//!
//! Weights are unsigned (`vpmaddubsw`/`vpdpbusd` take u8 x i8) with the format's offset in `mw`
//! (Q4_0: -8 d, Q5_0: -16 d, Q8_0 under VNNI: -128 d after flipping the sign bit). On AVX2,
//! Q8_0 and Q6_K stay signed and use the sign trick, Q6_K with its per-16 scales applied by
//! `vpmaddwd`; Q6_K does the same under VNNI, except on the 16-row tile path (`wide.rs`), which
//! dots its unsigned 6-bit quants and subtracts 32 times the activation sum per 16.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::formats::{q4k_scale_min, rd_f16};
use crate::pack::{self, GROUP};
use crate::{QMatrix, QuantType, SharedMut};

mod driver;
mod strips;
#[macro_use]
mod tiled;
mod wide;
pub(crate) use driver::{matmul, Scratch};
pub(crate) use tiled::TILE_MIN_M;
use tiled::{WTile, TILE_ACT_ROWS, ZERO_T};
use wide::{Sums16, XWide};

/// A task's reusable buffers: unpacked weight rows, Q6_K scales, 8-row tiles, 16-row tiles,
/// and Q6_K's scales in 16-row tiles.
pub(crate) type RowBufs = (
    Vec<WGroup>,
    Vec<WScales>,
    Vec<WTile>,
    Vec<wide::WTile16>,
    Vec<wide::Scales16>,
);

/// Bytes of unpacked weight rows kept in L1 at once (Zen 4 has 32 KiB of L1 data).
const BLOCK_BYTES: usize = 12 * 1024;

/// How many rows ahead the decode path prefetches weights.
const PREFETCH_ROWS: usize = 4;

/// Up to this many activation rows, 32-weight formats are unpacked in registers, a few rows
/// per weight group, instead of once into a buffer or tiles: on SmolLM2's shapes this beats the
/// tiles up to 8 rows (VNNI 15.7 against 20.3 ms a sweep at m = 8; AVX2 even) and loses from 12.
pub(crate) const FUSED_MAX_M: usize = 8;

/// One call's quantized activations: `groups` (`m * ngroups` of them), the same in the
/// [`XWide`] layout where [`wants_wide`] says so, and their [`Sums16`] where [`wants_sums`]
/// does (else empty).
#[derive(Clone, Copy)]
pub(crate) struct Acts<'a> {
    pub(crate) groups: &'a [AGroup],
    pub(crate) wide: &'a [XWide],
    pub(crate) sums: &'a [Sums16],
}

/// Whether `ty` takes Q6_K's 16-row tile path, whose activation sums the driver then makes
/// once per call.
pub(crate) fn wants_sums(ty: QuantType, m: usize, vnni: bool) -> bool {
    vnni && m >= TILE_MIN_M && ty == QuantType::Q6K
}

/// Whether the fused path dots `ty` on 512-bit vectors from the [`XWide`] layout, which the
/// driver then makes once per call.
pub(crate) fn wants_wide(ty: QuantType, m: usize, vnni: bool) -> bool {
    vnni && m <= FUSED_MAX_M && matches!(ty, QuantType::Q4_0 | QuantType::Q4_1)
}

/// Blocks in the last group of a row of `cols` weights in a 32-weight format (rows are padded
/// to an even block count); the tile kernels skip the rest.
fn last_blocks(cols: usize) -> usize {
    ((cols / 32).next_multiple_of(2) - 1) % GROUP + 1
}

/// Position of block b in a reduced group: the reduction yields blocks in the order
/// [0, 2, 4, 6, 1, 3, 5, 7] (called ORDER in the docs above).
const POS: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// 8 quantized activation blocks.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(crate) struct AGroup {
    q: [i8; 256],
    dx: [f32; 8],
    sx: [f32; 8],
}

/// 8 unpacked weight blocks.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(crate) struct WGroup {
    q: [u8; 256],
    dw: [f32; 8],
    mw: [f32; 8],
}

/// Q6_K's per-16 scales, as the i16 lanes `vpmaddwd` multiplies: per pair, the low vector's
/// 16 lanes then the high vector's.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(crate) struct WScales {
    s: [i16; 128],
}

const ZERO_A: AGroup = AGroup {
    q: [0; 256],
    dx: [0.0; 8],
    sx: [0.0; 8],
};
const ZERO_W: WGroup = WGroup {
    q: [0; 256],
    dw: [0.0; 8],
    mw: [0.0; 8],
};

/// How a format's unpacked quants are dotted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dot {
    /// u8 weights with an offset term.
    Unsigned,
    /// i8 weights, one scale per block (Q8_0 on AVX2).
    Signed,
    /// i8 weights with i16 scales per 16 (Q6_K).
    SignedScaled,
}

fn dot_kind(ty: QuantType, vnni: bool) -> Dot {
    match ty {
        QuantType::Q8_0 if !vnni => Dot::Signed,
        QuantType::Q6K => Dot::SignedScaled,
        _ => Dot::Unsigned,
    }
}

/// The kernels, compiled once per instruction set: `$vnni` picks the VNNI variants of the
/// unsigned dot and the bit expansion; everything else is shared AVX2 code.
macro_rules! isa_kernels {
    ($name:ident, $features:literal, $vnni:literal) => {
        pub(crate) mod $name {
            use super::*;

            const VNNI: bool = $vnni;

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn hsum_ps(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn hsum_epi32(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                _mm_cvtsi128_si32(s)
            }

            /// Quantizes one activation row to int8 blocks of 32 (absmax / 127, round to
            /// nearest even), padding the last group with zero blocks.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn quantize_row(x: &[f32], out: &mut [AGroup]) {
                let nb = x.len() / 32;
                let sign = _mm256_set1_ps(-0.0);
                let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                for b in 0..out.len() * GROUP {
                    let grp = &mut out[b / GROUP];
                    let k = b % GROUP;
                    let (pair, second) = (k / 2, k % 2);
                    let q = grp.q.as_mut_ptr().add(64 * pair + 16 * second);
                    if b >= nb {
                        _mm_storeu_si128(q as *mut __m128i, _mm_setzero_si128());
                        _mm_storeu_si128(q.add(32) as *mut __m128i, _mm_setzero_si128());
                        grp.dx[POS[k]] = 0.0;
                        grp.sx[POS[k]] = 0.0;
                        continue;
                    }
                    let p = x.as_ptr().add(32 * b);
                    let v = [
                        _mm256_loadu_ps(p),
                        _mm256_loadu_ps(p.add(8)),
                        _mm256_loadu_ps(p.add(16)),
                        _mm256_loadu_ps(p.add(24)),
                    ];
                    let a = _mm256_max_ps(
                        _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
                    );
                    let a = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
                    let a = _mm_max_ps(a, _mm_movehl_ps(a, a));
                    let a = _mm_max_ss(a, _mm_movehdup_ps(a));
                    let amax = _mm_cvtss_f32(a);
                    let d = amax / 127.0;
                    let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
                    let qi = [
                        _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)),
                        _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id)),
                        _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)),
                        _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id)),
                    ];
                    let sum = hsum_epi32(_mm256_add_epi32(
                        _mm256_add_epi32(qi[0], qi[1]),
                        _mm256_add_epi32(qi[2], qi[3]),
                    ));
                    let p01 = _mm256_packs_epi32(qi[0], qi[1]);
                    let p23 = _mm256_packs_epi32(qi[2], qi[3]);
                    let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
                    _mm_storeu_si128(q as *mut __m128i, _mm256_castsi256_si128(bytes));
                    _mm_storeu_si128(
                        q.add(32) as *mut __m128i,
                        _mm256_extracti128_si256(bytes, 1),
                    );
                    grp.dx[POS[k]] = d;
                    grp.sx[POS[k]] = d * sum as f32;
                }
            }

            /// Spreads the 32 bits of `bits` over 32 bytes as 0x10 (set) or 0 (clear).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn fifth_bits(bits: u32) -> __m256i {
                if VNNI {
                    _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10))
                } else {
                    let v = _mm256_set1_epi32(bits as i32);
                    let spread = _mm256_setr_epi8(
                        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
                        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                    );
                    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                    let v = _mm256_and_si256(_mm256_shuffle_epi8(v, spread), mask);
                    _mm256_and_si256(_mm256_cmpeq_epi8(v, mask), _mm256_set1_epi8(0x10))
                }
            }

            /// Loads `n` half-precision values (n <= 8) as 8 f32 in reduced order, zero-padded.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load_halves(p: *const u8, n: usize) -> __m256 {
                let order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
                // Exact-size loads for a short group (no stack copy: a wide load from a
                // narrow store stalls on store forwarding).
                let h = match n {
                    GROUP => _mm_loadu_si128(p as *const __m128i),
                    6 => _mm_insert_epi32(
                        _mm_loadl_epi64(p as *const __m128i),
                        (p.add(8) as *const i32).read_unaligned(),
                        2,
                    ),
                    4 => _mm_loadl_epi64(p as *const __m128i),
                    2 => _mm_cvtsi32_si128((p as *const i32).read_unaligned()),
                    _ => unreachable!("groups hold an even number of blocks"),
                };
                _mm256_permutevar8x32_ps(_mm256_cvtph_ps(h), order)
            }

            /// Unpacks one packed group of `g` blocks (8, or an even count for a row's last
            /// group) of a 32-weight format. Quants past `g` are left as they were: their scales
            /// are zero.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn unpack_packed(ty: QuantType, grp: *const u8, g: usize, out: &mut WGroup) {
                let (fd, fm, fqh, fqs) = pack::group_fields(ty, g);
                let d = load_halves(grp.add(fd), g);
                let m = match ty {
                    QuantType::Q4_1 | QuantType::Q5_1 => load_halves(grp.add(fm), g),
                    QuantType::Q4_0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                    QuantType::Q5_0 => _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
                    _ if VNNI => _mm256_mul_ps(d, _mm256_set1_ps(-128.0)),
                    _ => _mm256_setzero_ps(),
                };
                _mm256_store_ps(out.dw.as_mut_ptr(), d);
                _mm256_store_ps(out.mw.as_mut_ptr(), m);
                let q = out.q.as_mut_ptr() as *mut __m256i;
                if ty == QuantType::Q8_0 {
                    let flip = _mm256_set1_epi8(if VNNI { -128 } else { 0 });
                    for v in 0..g {
                        let s = _mm256_loadu_si256(grp.add(fqs + 32 * v) as *const __m256i);
                        _mm256_store_si256(q.add(v), _mm256_xor_si256(s, flip));
                    }
                    return;
                }
                let low = _mm256_set1_epi8(0x0f);
                for p in 0..g / 2 {
                    let v = _mm256_loadu_si256(grp.add(fqs + 32 * p) as *const __m256i);
                    let mut lo = _mm256_and_si256(v, low);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    if pack::has_qh(ty) {
                        let h = grp.add(fqh + 8 * p) as *const u32;
                        lo = _mm256_or_si256(lo, fifth_bits(h.read_unaligned()));
                        hi = _mm256_or_si256(hi, fifth_bits(h.add(1).read_unaligned()));
                    }
                    _mm256_store_si256(q.add(2 * p), lo);
                    _mm256_store_si256(q.add(2 * p + 1), hi);
                }
            }

            /// Unpacks one Q4_K super-block (8 sub-blocks of 32).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn unpack_q4k(b: &[u8], out: &mut WGroup) {
                let d = rd_f16(b, 0);
                let dmin = rd_f16(b, 2);
                for j in 0..8 {
                    let (sc, mn) = q4k_scale_min(j, &b[4..16]);
                    out.dw[POS[j]] = d * sc as f32;
                    out.mw[POS[j]] = -dmin * mn as f32;
                }
                let low = _mm256_set1_epi8(0x0f);
                let q = out.q.as_mut_ptr() as *mut __m256i;
                for p in 0..4 {
                    let v = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * p) as *const __m256i);
                    let a = _mm256_and_si256(v, low);
                    let c = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    _mm256_store_si256(q.add(2 * p), _mm256_permute2x128_si256(a, c, 0x20));
                    _mm256_store_si256(q.add(2 * p + 1), _mm256_permute2x128_si256(a, c, 0x31));
                }
            }

            /// Unpacks one Q6_K super-block to signed quants and per-16 scale lanes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn unpack_q6k(b: &[u8], out: &mut WGroup, sc: &mut WScales) {
                let d = rd_f16(b, 208);
                out.dw = [d; 8];
                out.mw = [0.0; 8];
                let low = _mm256_set1_epi8(0x0f);
                let three = _mm256_set1_epi8(3);
                let bias = _mm256_set1_epi8(32);
                let q = out.q.as_mut_ptr() as *mut __m256i;
                let s = sc.s.as_mut_ptr() as *mut __m256i;
                let scale = |i: usize| b[192 + i] as i8 as i16;
                for h in 0..2 {
                    let l0 = _mm256_loadu_si256(b.as_ptr().add(64 * h) as *const __m256i);
                    let l1 = _mm256_loadu_si256(b.as_ptr().add(64 * h + 32) as *const __m256i);
                    let hb = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * h) as *const __m256i);
                    // Bits 2i..2i+2 of each qh byte, moved to bits 4..6.
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(hb, three), 4);
                    let h1 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), three), 4);
                    let h2 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), three), 4);
                    let h3 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), three), 4);
                    let chunks = [
                        _mm256_or_si256(_mm256_and_si256(l0, low), h0),
                        _mm256_or_si256(_mm256_and_si256(l1, low), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low), h3),
                    ];
                    for pp in 0..2 {
                        let p = 2 * h + pp;
                        let a = _mm256_sub_epi8(chunks[2 * pp], bias);
                        let c = _mm256_sub_epi8(chunks[2 * pp + 1], bias);
                        _mm256_store_si256(q.add(2 * p), _mm256_permute2x128_si256(a, c, 0x20));
                        _mm256_store_si256(q.add(2 * p + 1), _mm256_permute2x128_si256(a, c, 0x31));
                        // Chunk c' of this half uses scales 8h + 2c' (first 16) and + 1.
                        let (ca, cb) = (8 * h + 4 * pp, 8 * h + 4 * pp + 2);
                        let lo =
                            _mm256_setr_m128i(_mm_set1_epi16(scale(ca)), _mm_set1_epi16(scale(cb)));
                        let hi = _mm256_setr_m128i(
                            _mm_set1_epi16(scale(ca + 1)),
                            _mm_set1_epi16(scale(cb + 1)),
                        );
                        _mm256_store_si256(s.add(2 * p), lo);
                        _mm256_store_si256(s.add(2 * p + 1), hi);
                    }
                }
            }

            /// Unpacks weight row `j` of `w` into `wg` (and `ws` for Q6_K).
            #[target_feature(enable = $features)]
            pub(super) unsafe fn unpack_row(
                w: &QMatrix,
                j: usize,
                wg: &mut [WGroup],
                ws: &mut [WScales],
            ) {
                let row = w.row(j);
                let ty = w.ty;
                match ty {
                    QuantType::Q4K => {
                        for (gi, g) in wg.iter_mut().enumerate() {
                            unpack_q4k(&row[144 * gi..144 * (gi + 1)], g);
                        }
                    }
                    QuantType::Q6K => {
                        for (gi, (g, s)) in wg.iter_mut().zip(ws.iter_mut()).enumerate() {
                            unpack_q6k(&row[210 * gi..210 * (gi + 1)], g, s);
                        }
                    }
                    _ => {
                        let bb = ty.block_bytes();
                        let nb = row.len() / bb;
                        for (gi, g) in wg.iter_mut().enumerate() {
                            let n = pack::group_len(nb, gi);
                            unpack_packed(ty, row.as_ptr().add(gi * GROUP * bb), n, g);
                        }
                    }
                }
            }

            /// The dword sums of one block pair with u8 weights: `dpbusd` under VNNI, else
            /// `vpmaddubsw` then `vpmaddwd` (the u8 x i8 products of a pair fit i16 pairwise).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn pair_unsigned(wl: __m256i, wh: __m256i, xl: __m256i, xh: __m256i) -> __m256i {
                if VNNI {
                    _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wl, xl), wh, xh)
                } else {
                    let t = _mm256_add_epi16(
                        _mm256_maddubs_epi16(wl, xl),
                        _mm256_maddubs_epi16(wh, xh),
                    );
                    _mm256_madd_epi16(t, _mm256_set1_epi16(1))
                }
            }

            /// `sum over groups` for u8 weights with offsets.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot_unsigned(w: &[WGroup], a: &[AGroup]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for (wg, ag) in w.iter().zip(a) {
                    let wq = wg.q.as_ptr() as *const __m256i;
                    let xq = ag.q.as_ptr() as *const __m256i;
                    let mut s = [_mm256_setzero_si256(); 4];
                    for (p, sp) in s.iter_mut().enumerate() {
                        let (wl, wh) = (
                            _mm256_load_si256(wq.add(2 * p)),
                            _mm256_load_si256(wq.add(2 * p + 1)),
                        );
                        let (xl, xh) = (
                            _mm256_load_si256(xq.add(2 * p)),
                            _mm256_load_si256(xq.add(2 * p + 1)),
                        );
                        *sp = pair_unsigned(wl, wh, xl, xh);
                    }
                    let isum = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(s[0], s[1]),
                        _mm256_hadd_epi32(s[2], s[3]),
                    );
                    let scale = _mm256_mul_ps(
                        _mm256_load_ps(wg.dw.as_ptr()),
                        _mm256_load_ps(ag.dx.as_ptr()),
                    );
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
                    acc = _mm256_fmadd_ps(
                        _mm256_load_ps(wg.mw.as_ptr()),
                        _mm256_load_ps(ag.sx.as_ptr()),
                        acc,
                    );
                }
                hsum_ps(acc)
            }

            /// The same for i8 weights with per-16 i16 scales (Q6_K; Q8_0 on AVX2 takes
            /// `rows_packed` at every batch size).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot_signed(w: &[WGroup], ws: &[WScales], a: &[AGroup]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for (gi, (wg, ag)) in w.iter().zip(a).enumerate() {
                    let wq = wg.q.as_ptr() as *const __m256i;
                    let xq = ag.q.as_ptr() as *const __m256i;
                    let sc = ws[gi].s.as_ptr() as *const __m256i;
                    let mut s = [_mm256_setzero_si256(); 4];
                    for (p, sp) in s.iter_mut().enumerate() {
                        let (wl, wh) = (
                            _mm256_load_si256(wq.add(2 * p)),
                            _mm256_load_si256(wq.add(2 * p + 1)),
                        );
                        let (xl, xh) = (
                            _mm256_load_si256(xq.add(2 * p)),
                            _mm256_load_si256(xq.add(2 * p + 1)),
                        );
                        let pl =
                            _mm256_maddubs_epi16(_mm256_abs_epi8(wl), _mm256_sign_epi8(xl, wl));
                        let ph =
                            _mm256_maddubs_epi16(_mm256_abs_epi8(wh), _mm256_sign_epi8(xh, wh));
                        let (sl, sh) = (
                            _mm256_load_si256(sc.add(2 * p)),
                            _mm256_load_si256(sc.add(2 * p + 1)),
                        );
                        *sp =
                            _mm256_add_epi32(_mm256_madd_epi16(pl, sl), _mm256_madd_epi16(ph, sh));
                    }
                    let isum = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(s[0], s[1]),
                        _mm256_hadd_epi32(s[2], s[3]),
                    );
                    let scale = _mm256_mul_ps(
                        _mm256_load_ps(wg.dw.as_ptr()),
                        _mm256_load_ps(ag.dx.as_ptr()),
                    );
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
                }
                hsum_ps(acc)
            }

            /// One packed row of a 32-weight format dotted with `R` activation rows, unpacking
            /// in registers: for decode and small batches, where a weight row meets a few
            /// activation rows and staging it through `WGroup` or a tile would cost more than
            /// it saves. Each group's weights are loaded and unpacked once for the `R` rows,
            /// and each row's sums and float steps are the one-row ones, in the same order, so a
            /// row's result does not depend on `R`.
            ///
            /// Under VNNI, full groups of Q8_0, and of Q4_0 and Q4_1 when `xw` holds the
            /// activations in the [`XWide`] layout (else its rows are empty), are dotted on
            /// 512-bit vectors: fewer instructions for the same integer block sums.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot_packed<const T: u8, const R: usize>(
                row: *const u8,
                nb: usize,
                a: [&[AGroup]; R],
                xw: [&[XWide]; R],
            ) -> [f32; R] {
                let ty = match T {
                    0 => QuantType::Q4_0,
                    1 => QuantType::Q4_1,
                    2 => QuantType::Q5_0,
                    3 => QuantType::Q5_1,
                    _ => QuantType::Q8_0,
                };
                let signed = T == 4 && !VNNI;
                let bb = ty.block_bytes();
                let ones = _mm256_set1_epi16(1);
                let low = _mm256_set1_epi8(0x0f);
                let flip = _mm256_set1_epi8(-128);
                let mut acc = [_mm256_setzero_ps(); R];
                for gi in 0..a[0].len() {
                    let g = pack::group_len(nb, gi);
                    let grp = row.add(gi * GROUP * bb);
                    let (fd, fm, fqh, fqs) = pack::group_fields(ty, g);
                    let d = load_halves(grp.add(fd), g);
                    let mut s = [[_mm256_setzero_si256(); 4]; R];
                    let wide =
                        VNNI && g == GROUP && (T == 4 || ((T == 0 || T == 1) && !xw[0].is_empty()));
                    // The block sums in ORDER, per row.
                    let mut isum = [_mm256_setzero_si256(); R];
                    if wide {
                        if T == 4 {
                            let wq = wide::q8_weights(grp.add(fqs));
                            for r in 0..R {
                                isum[r] = wide::q8_isum(&wq, &a[r][gi]);
                            }
                        } else {
                            let wq = wide::q4_weights(grp.add(fqs));
                            let z: [_; R] = std::array::from_fn(|r| wide::q4_dots(&wq, &xw[r][gi]));
                            for r in (0..R - R % 2).step_by(2) {
                                [isum[r], isum[r + 1]] = wide::q4_isum2(z[r], z[r + 1]);
                            }
                            if R % 2 == 1 {
                                isum[R - 1] = wide::q4_isum(z[R - 1]);
                            }
                        }
                    }
                    for p in 0..if wide { 0 } else { g / 2 } {
                        let (wl, wh) = if T == 4 {
                            let wl = _mm256_loadu_si256(grp.add(fqs + 64 * p) as *const __m256i);
                            let wh =
                                _mm256_loadu_si256(grp.add(fqs + 64 * p + 32) as *const __m256i);
                            if signed {
                                (wl, wh)
                            } else {
                                (_mm256_xor_si256(wl, flip), _mm256_xor_si256(wh, flip))
                            }
                        } else {
                            let v = _mm256_loadu_si256(grp.add(fqs + 32 * p) as *const __m256i);
                            let mut lo = _mm256_and_si256(v, low);
                            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                            if T == 2 || T == 3 {
                                let h = grp.add(fqh + 8 * p) as *const u32;
                                lo = _mm256_or_si256(lo, fifth_bits(h.read_unaligned()));
                                hi = _mm256_or_si256(hi, fifth_bits(h.add(1).read_unaligned()));
                            }
                            (lo, hi)
                        };
                        // The sign trick's operands depend on the weights only.
                        let (al, ah) = if signed {
                            (_mm256_abs_epi8(wl), _mm256_abs_epi8(wh))
                        } else {
                            (wl, wh)
                        };
                        for r in 0..R {
                            let xq = a[r][gi].q.as_ptr() as *const __m256i;
                            let (xl, xh) = (
                                _mm256_load_si256(xq.add(2 * p)),
                                _mm256_load_si256(xq.add(2 * p + 1)),
                            );
                            s[r][p] = if signed {
                                let pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(xl, wl));
                                let ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(xh, wh));
                                _mm256_add_epi32(
                                    _mm256_madd_epi16(pl, ones),
                                    _mm256_madd_epi16(ph, ones),
                                )
                            } else {
                                pair_unsigned(wl, wh, xl, xh)
                            };
                        }
                    }
                    let m = match T {
                        1 | 3 => load_halves(grp.add(fm), g),
                        0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                        2 => _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
                        _ => _mm256_mul_ps(d, _mm256_set1_ps(-128.0)),
                    };
                    for r in 0..R {
                        let ag = &a[r][gi];
                        if !wide {
                            let sr = &s[r];
                            isum[r] = _mm256_hadd_epi32(
                                _mm256_hadd_epi32(sr[0], sr[1]),
                                _mm256_hadd_epi32(sr[2], sr[3]),
                            );
                        }
                        let scale = _mm256_mul_ps(d, _mm256_load_ps(ag.dx.as_ptr()));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), scale, acc[r]);
                        if !signed {
                            acc[r] = _mm256_fmadd_ps(m, _mm256_load_ps(ag.sx.as_ptr()), acc[r]);
                        }
                    }
                }
                acc.map(|v| hsum_ps(v))
            }

            /// Asks the cache for the weight bytes of row `j`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn prefetch_row(w: &QMatrix, j: usize) {
                let row = w.row(j);
                for line in (0..row.len()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(line) as *const i8);
                }
            }

            /// `dot_packed` over rows `range` for `m` activation rows (`xw`: theirs in the
            /// [`XWide`] layout, or empty), up to 4 activation rows per weight row at a time
            /// (2 on AVX2, whose 16 vector registers hold no more).
            #[target_feature(enable = $features)]
            unsafe fn rows_packed<const T: u8>(
                w: &QMatrix,
                act: &[AGroup],
                xw: &[XWide],
                m: usize,
                ngroups: usize,
                range: Range<usize>,
                out: SharedMut<f32>,
            ) {
                let end = range.end;
                for j in range {
                    let row = w.row(j);
                    let nb = row.len() / w.ty.block_bytes();
                    // Decode is bound by streaming the weights from memory: ask for a row a
                    // few ahead while this one is computed.
                    if j + PREFETCH_ROWS < end {
                        prefetch_row(w, j + PREFETCH_ROWS);
                    }
                    let mut i = 0;
                    while i < m {
                        let left = m - i;
                        let at = Rows {
                            act,
                            xw,
                            ngroups,
                            i,
                        };
                        let o = out.get().add(i * w.rows + j);
                        i += if VNNI && left >= 4 {
                            at.put::<T, 4>(row.as_ptr(), nb, o, w.rows)
                        } else if left >= 2 {
                            at.put::<T, 2>(row.as_ptr(), nb, o, w.rows)
                        } else {
                            at.put::<T, 1>(row.as_ptr(), nb, o, w.rows)
                        };
                    }
                }
            }

            /// Activation rows `i..` of a call, for `rows_packed`.
            #[derive(Clone, Copy)]
            struct Rows<'a> {
                act: &'a [AGroup],
                xw: &'a [XWide],
                ngroups: usize,
                i: usize,
            }

            impl Rows<'_> {
                /// Dots rows `i..i + R` with one packed weight row and stores the results
                /// `stride` apart from `o`; returns `R`.
                #[inline]
                #[target_feature(enable = $features)]
                unsafe fn put<const T: u8, const R: usize>(
                    self,
                    row: *const u8,
                    nb: usize,
                    o: *mut f32,
                    stride: usize,
                ) -> usize {
                    let n = self.ngroups;
                    let a = std::array::from_fn(|r| &self.act[(self.i + r) * n..][..n]);
                    let x = std::array::from_fn(|r| {
                        if self.xw.is_empty() {
                            self.xw
                        } else {
                            &self.xw[(self.i + r) * n..][..n]
                        }
                    });
                    for (r, v) in dot_packed::<T, R>(row, nb, a, x).into_iter().enumerate() {
                        *o.add(r * stride) = v;
                    }
                    R
                }
            }

            // The 8-row tile path: build_tiles, interleave, dot_tile, rows_tiled.
            tile_kernels!($features);

            /// Output columns `range` for all `m` activation rows.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn rows_task(
                w: &QMatrix,
                acts: Acts<'_>,
                m: usize,
                ngroups: usize,
                range: Range<usize>,
                out: SharedMut<f32>,
                buf: &mut RowBufs,
            ) {
                let (act, xw) = (acts.groups, acts.wide);
                if m <= FUSED_MAX_M {
                    match w.ty {
                        QuantType::Q4_0 => {
                            return rows_packed::<0>(w, act, xw, m, ngroups, range, out)
                        }
                        QuantType::Q4_1 => {
                            return rows_packed::<1>(w, act, xw, m, ngroups, range, out)
                        }
                        QuantType::Q5_0 => {
                            return rows_packed::<2>(w, act, xw, m, ngroups, range, out)
                        }
                        QuantType::Q5_1 => {
                            return rows_packed::<3>(w, act, xw, m, ngroups, range, out)
                        }
                        QuantType::Q8_0 => {
                            return rows_packed::<4>(w, act, xw, m, ngroups, range, out)
                        }
                        _ => {}
                    }
                }
                let kind = dot_kind(w.ty, VNNI);
                if kind == Dot::Signed {
                    // Q8_0 on AVX2 has no tile path, and the fused kernel beats the unpacking
                    // one below at every batch size: `model_sweep 2 20 0 m avx2` (the LM head
                    // alone, 2 threads, best of 20, 3 interleaved rounds) gave 14.7-15.8 ms
                    // against 8.6-13.0 at m = 16, 25.9-29.6 against 18.9-21.9 at m = 32. Blocking
                    // the weight rows for L2 and the activation rows for L1 did not beat it.
                    return rows_packed::<4>(w, act, xw, m, ngroups, range, out);
                }
                if kind == Dot::Unsigned && m >= TILE_MIN_M {
                    return rows_tiled(w, act, m, ngroups, range, out, buf);
                }
                let mut range = range;
                if VNNI && !acts.sums.is_empty() {
                    // Q6_K in 16-row tiles; the last few rows take the kernel below.
                    while range.end - range.start >= 16 {
                        // SAFETY: this instantiation's features include AVX-512 F/BW/VL/VNNI.
                        wide::rows16::<true>(w, act, acts.sums, m, ngroups, range.start, out, buf);
                        range.start += 16;
                    }
                }
                // Unpack a block of weight rows that fits in L1 with room for an activation row,
                // then sweep every activation row over it: each activation row is read once
                // per block instead of once per weight row.
                let block = (BLOCK_BYTES / (ngroups * std::mem::size_of::<WGroup>())).clamp(1, 16);
                buf.0.resize(block * ngroups, ZERO_W);
                let nscales = if kind == Dot::SignedScaled {
                    block * ngroups
                } else {
                    0
                };
                buf.1.resize(nscales, WScales { s: [0; 128] });
                let mut j0 = range.start;
                while j0 < range.end {
                    let n = block.min(range.end - j0);
                    for r in 0..n {
                        let wg = &mut buf.0[r * ngroups..(r + 1) * ngroups];
                        let ws = if nscales > 0 {
                            &mut buf.1[r * ngroups..(r + 1) * ngroups]
                        } else {
                            &mut [][..]
                        };
                        unpack_row(w, j0 + r, wg, ws);
                    }
                    for i in 0..m {
                        let a = &act[i * ngroups..(i + 1) * ngroups];
                        let o = out.get().add(i * w.rows + j0);
                        for r in 0..n {
                            let wg = &buf.0[r * ngroups..(r + 1) * ngroups];
                            *o.add(r) = match kind {
                                Dot::Unsigned => dot_unsigned(wg, a),
                                Dot::Signed => unreachable!("Q8_0 on AVX2 takes rows_packed"),
                                Dot::SignedScaled => {
                                    dot_signed(wg, &buf.1[r * ngroups..(r + 1) * ngroups], a)
                                }
                            };
                        }
                    }
                    j0 += n;
                }
            }
        }
    };
}

isa_kernels!(avx2, "avx2,fma,f16c", false);
isa_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    true
);
