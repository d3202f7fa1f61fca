//! Attention over the f16 KV cache: the scores of a group of query rows against one chunk of
//! keys, their softmax within the chunk and the weighted sum of values, then the merge of a
//! row's chunks in order. An AVX-512 path (`attention/avx512.rs`), an AVX2+FMA path and a
//! portable one; a machine always takes the same path, and every output element is computed in
//! the same order whatever rows share its call, so a sequence's results never depend on its
//! neighbours.

use std::sync::OnceLock;

use super::{exp_scalar, simd};

/// Keys are stored in blocks of this many, transposed within the block (`[head_dim][KEY_BLOCK]`
/// f16), so the scores of one query against a block are two vectors of FMAs over contiguous
/// memory, and every key sits in the same SIMD lane whichever range it is read in.
pub(in crate::model::cpu) const KEY_BLOCK: usize = 16;

/// Attention splits every row's keys at multiples of this many positions; each chunk is a unit
/// of work, and the chunks are merged in order. The split depends only on key positions, never
/// on the batch or the thread count, so a sequence's results do not depend on its neighbours.
pub(in crate::model::cpu) const KEY_CHUNK: usize = 128;

/// Most query rows one attention call handles (they share every key and value loaded, and each
/// f16 conversion): the AVX-512 kernels' register budget (16 score or value accumulators and
/// their operands in 32 registers). Each row's arithmetic is the same whatever rows share its
/// call, so this only sets the grouping.
pub(in crate::model::cpu) const ATTN_ROWS: usize = 16;

/// One attention call's scores, then softmax weights: a row per query row, a lane per key of
/// the chunk. The caller owns it so that it is not cleared for every call (each call writes the
/// part it reads).
pub(in crate::model::cpu) type Scores = [[f32; KEY_CHUNK]; ATTN_ROWS];

/// Most rows the AVX2 kernels take at once: 12 accumulators (6 rows x 16 keys or dimensions),
/// the two key or value vectors they share and a broadcast fill the 16 registers, so each f16
/// conversion serves 6 rows. Bigger groups are split.
#[cfg(target_arch = "x86_64")]
const NARROW_ROWS: usize = 6;

/// Key blocks in one chunk.
pub(in crate::model::cpu) const CHUNK_BLOCKS: usize = KEY_CHUNK / KEY_BLOCK;

/// Up to [`ATTN_ROWS`] attention rows (query heads and positions) of one sequence against one
/// KV head.
pub(in crate::model::cpu) struct AttnRows<'a> {
    /// Query vectors, each `head_dim` long, already scaled.
    pub q: &'a [&'a [f32]],
    /// Per row: the first and one past the last visible key.
    pub visible: &'a [(usize, usize)],
    pub head_dim: usize,
}

/// The keys and values of one chunk of one KV head, as the cache's blocks hold them (wherever in
/// memory each block is): block `i` holds positions `chunk * KEY_CHUNK + i * KEY_BLOCK..`, keys
/// `[head_dim][KEY_BLOCK]` and values `[KEY_BLOCK][head_dim]`, f16 bits. At most
/// [`CHUNK_BLOCKS`] blocks; fewer at the end of a sequence, whose last block may be partly
/// written (the rest is never visible).
pub(in crate::model::cpu) struct ChunkKv<'a> {
    pub k: &'a [&'a [u16]],
    pub v: &'a [&'a [u16]],
}

/// Floats of one row's partial result: the unnormalised output, then the max score and the sum
/// of exponentials.
pub(in crate::model::cpu) fn partial_len(head_dim: usize) -> usize {
    head_dim + 2
}

/// Attention of each row over the keys of chunk `chunk` it may see: per row, into `partial`
/// (`rows * partial_len`), `sum_j e^(s_j - m) v_j`, `m` and `sum_j e^(s_j - m)`, where `m` is the
/// row's largest score in the chunk. A row that sees no key of the chunk gets `m = -inf` and
/// zeros.
pub(in crate::model::cpu) fn attend_chunk(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    chunk: usize,
    scores: &mut Scores,
    partial: &mut [f32],
) {
    let rows = a.q.len();
    debug_assert!(rows <= ATTN_ROWS);
    debug_assert!(kv.k.len() == kv.v.len() && kv.k.len() <= CHUNK_BLOCKS);
    let stride = partial_len(a.head_dim);
    let c0 = chunk * KEY_CHUNK;
    let lo = a.visible.iter().map(|v| v.0).min().unwrap_or(0);
    let hi = a.visible.iter().map(|v| v.1).max().unwrap_or(0);
    let j0 = c0.max(lo / KEY_BLOCK * KEY_BLOCK);
    let j1 = (c0 + kv.k.len() * KEY_BLOCK).min(hi.next_multiple_of(KEY_BLOCK));
    for r in 0..rows {
        let p = &mut partial[r * stride..(r + 1) * stride];
        p.fill(0.0);
        p[a.head_dim] = f32::NEG_INFINITY;
    }
    if j0 >= j1 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide_attention() && a.head_dim.is_multiple_of(16) && a.head_dim <= avx512::MAX_HEAD_DIM {
        // SAFETY: AVX-512F (and AVX2, FMA, F16C) were detected; as below.
        unsafe { avx512::attend_chunk(a, kv, c0, j0, j1, scores, partial) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() && a.head_dim.is_multiple_of(8) {
        // The group's key range serves every part: keys a row cannot see get zero weight, and
        // zeros leave its sums unchanged.
        for (r0, part) in (0..rows)
            .step_by(NARROW_ROWS)
            .zip(partial.chunks_mut(NARROW_ROWS * stride))
        {
            let r1 = (r0 + NARROW_ROWS).min(rows);
            let sub = AttnRows {
                q: &a.q[r0..r1],
                visible: &a.visible[r0..r1],
                head_dim: a.head_dim,
            };
            // SAFETY: AVX2, FMA and F16C were detected; j0 and j1 are multiples of KEY_BLOCK
            // within the chunk's blocks.
            unsafe { x86::attend_chunk(&sub, kv, c0, j0, j1, scores, part) };
        }
        return;
    }
    portable_attend_chunk(a, kv, c0, j0, j1, scores, partial);
}

fn portable_attend_chunk(
    a: &AttnRows<'_>,
    kv: &ChunkKv<'_>,
    c0: usize,
    j0: usize,
    j1: usize,
    scores: &mut Scores,
    partial: &mut [f32],
) {
    let hd = a.head_dim;
    let stride = partial_len(hd);
    let half = kernels::f16_to_f32;
    for (r, q) in a.q.iter().enumerate() {
        let s = &mut scores[r][..j1 - j0];
        let (vlo, vhi) = a.visible[r];
        for (i, sj) in s.iter_mut().enumerate() {
            let j = j0 + i;
            let block = &kv.k[(j - c0) / KEY_BLOCK][j % KEY_BLOCK..];
            let dot: f32 = (0..hd).map(|d| q[d] * half(block[d * KEY_BLOCK])).sum();
            *sj = if j >= vlo && j < vhi {
                dot
            } else {
                f32::NEG_INFINITY
            };
        }
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        if max == f32::NEG_INFINITY {
            continue;
        }
        let p = &mut partial[r * stride..(r + 1) * stride];
        let mut sum = 0f32;
        for (i, sj) in s.iter_mut().enumerate() {
            *sj = exp_scalar(*sj - max);
            sum += *sj;
            let j = j0 + i;
            let v = &kv.v[(j - c0) / KEY_BLOCK][(j % KEY_BLOCK) * hd..][..hd];
            for (o, &x) in p[..hd].iter_mut().zip(v) {
                *o += *sj * half(x);
            }
        }
        p[hd] = max;
        p[hd + 1] = sum;
    }
}

/// Merges the partial results of one block of rows over consecutive chunks (`partials` holds
/// one slot of `slot` floats per chunk, in chunk order, each starting with `rows *
/// partial_len` values) into the softmax-weighted outputs.
pub(in crate::model::cpu) fn merge_chunks(partials: &[f32], slot: usize, out: &mut [&mut [f32]]) {
    let hd = out.first().map_or(0, |o| o.len());
    let stride = partial_len(hd);
    for (r, o) in out.iter_mut().enumerate() {
        let part = |c: &[f32]| -> (f32, f32) { (c[r * stride + hd], c[r * stride + hd + 1]) };
        let m = partials
            .chunks_exact(slot)
            .map(|c| part(c).0)
            .fold(f32::NEG_INFINITY, f32::max);
        o.fill(0.0);
        let mut sum = 0f32;
        for c in partials.chunks_exact(slot) {
            let (cm, cs) = part(c);
            if cm == f32::NEG_INFINITY {
                continue;
            }
            let w = exp_scalar(cm - m);
            sum += w * cs;
            for (x, &y) in o.iter_mut().zip(&c[r * stride..r * stride + hd]) {
                *x += w * y;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Whether the AVX-512 attention may run (checked once).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| simd() && std::is_x86_feature_detected!("avx512f"))
}

/// [`avx512`], unless a test asked this thread for the AVX2 kernels (to compare the two).
#[cfg(target_arch = "x86_64")]
fn wide_attention() -> bool {
    #[cfg(test)]
    if tests::NARROW.get() {
        return false;
    }
    avx512()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// Scores of `R` query rows against keys `j0..j1` (multiples of `KEY_BLOCK`): per block,
    /// two vectors of keys per row in flight, one chain of FMAs over the head dimension per lane.
    #[inline(always)]
    // Register tiles indexed by row and lane group: iterators would hide the unrolled shape.
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
        let q: [*const f32; R] = std::array::from_fn(|r| a.q[r].as_ptr());
        let mut j = j0;
        while j < j1 {
            let kb = kv.k.get_unchecked((j - c0) / KEY_BLOCK).as_ptr();
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for d in 0..hd {
                let raw = _mm256_loadu_si256(kb.add(d * KEY_BLOCK) as *const __m256i);
                let k0 = _mm256_cvtph_ps(_mm256_castsi256_si128(raw));
                let k1 = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(raw));
                for r in 0..R {
                    let qd = _mm256_set1_ps(*q[r].add(d));
                    acc[r][0] = _mm256_fmadd_ps(qd, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qd, k1, acc[r][1]);
                }
            }
            for r in 0..R {
                let o = s[r].as_mut_ptr().add(j - j0);
                _mm256_storeu_ps(o, acc[r][0]);
                _mm256_storeu_ps(o.add(8), acc[r][1]);
            }
            j += KEY_BLOCK;
        }
    }

    /// `partial[r][..hd] = sum_j e_r[j] V[j]` for `R` rows, `ND` vectors of 8 dims at a time.
    #[inline(always)]
    // Register tiles indexed by row and lane group: iterators would hide the unrolled shape.
    #[allow(clippy::needless_range_loop)]
    unsafe fn weighted_values<const R: usize, const ND: usize>(
        a: &AttnRows<'_>,
        kv: &ChunkKv<'_>,
        c0: usize,
        j0: usize,
        j1: usize,
        s: &Scores,
        partial: &mut [f32],
    ) {
        let hd = a.head_dim;
        let stride = partial_len(hd);
        let mut d0 = 0;
        while d0 < hd {
            let mut acc = [[_mm256_setzero_ps(); ND]; R];
            // Block by block, so that a key's values are found by an offset within its block.
            let mut j = j0;
            while j < j1 {
                let block = kv.v.get_unchecked((j - c0) / KEY_BLOCK).as_ptr().add(d0);
                let sj = j - j0;
                for k in 0..KEY_BLOCK {
                    let vj = block.add(k * hd);
                    let vv: [__m256; ND] = std::array::from_fn(|n| {
                        _mm256_cvtph_ps(_mm_loadu_si128(vj.add(8 * n) as *const __m128i))
                    });
                    for r in 0..R {
                        let p = _mm256_set1_ps(*s[r].get_unchecked(sj + k));
                        for n in 0..ND {
                            acc[r][n] = _mm256_fmadd_ps(p, vv[n], acc[r][n]);
                        }
                    }
                }
                j += KEY_BLOCK;
            }
            for r in 0..R {
                let o = partial.as_mut_ptr().add(r * stride + d0);
                for n in 0..ND {
                    _mm256_storeu_ps(o.add(8 * n), acc[r][n]);
                }
            }
            d0 += 8 * ND;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend_chunk(
        a: &AttnRows<'_>,
        kv: &ChunkKv<'_>,
        c0: usize,
        j0: usize,
        j1: usize,
        s: &mut Scores,
        partial: &mut [f32],
    ) {
        let rows = a.q.len();
        let hd = a.head_dim;
        match rows {
            1 => scores::<1>(a, kv, c0, j0, j1, s),
            2 => scores::<2>(a, kv, c0, j0, j1, s),
            3 => scores::<3>(a, kv, c0, j0, j1, s),
            4 => scores::<4>(a, kv, c0, j0, j1, s),
            5 => scores::<5>(a, kv, c0, j0, j1, s),
            _ => scores::<6>(a, kv, c0, j0, j1, s),
        }
        softmax_rows(a, j0, j1, s, partial);
        // Up to 2 rows, 4 vectors of dimensions each; from 3, 2 (12 accumulators at most).
        let nd8 = hd / 8;
        match (rows, nd8.is_multiple_of(4), nd8.is_multiple_of(2)) {
            (1, true, _) => weighted_values::<1, 4>(a, kv, c0, j0, j1, s, partial),
            (2, true, _) => weighted_values::<2, 4>(a, kv, c0, j0, j1, s, partial),
            (1, false, true) => weighted_values::<1, 2>(a, kv, c0, j0, j1, s, partial),
            (2, false, true) => weighted_values::<2, 2>(a, kv, c0, j0, j1, s, partial),
            (1, false, false) => weighted_values::<1, 1>(a, kv, c0, j0, j1, s, partial),
            (2, false, false) => weighted_values::<2, 1>(a, kv, c0, j0, j1, s, partial),
            (3, _, true) => weighted_values::<3, 2>(a, kv, c0, j0, j1, s, partial),
            (3, _, false) => weighted_values::<3, 1>(a, kv, c0, j0, j1, s, partial),
            (4, _, true) => weighted_values::<4, 2>(a, kv, c0, j0, j1, s, partial),
            (4, _, false) => weighted_values::<4, 1>(a, kv, c0, j0, j1, s, partial),
            (5, _, true) => weighted_values::<5, 2>(a, kv, c0, j0, j1, s, partial),
            (5, _, false) => weighted_values::<5, 1>(a, kv, c0, j0, j1, s, partial),
            (_, _, true) => weighted_values::<6, 2>(a, kv, c0, j0, j1, s, partial),
            (_, _, false) => weighted_values::<6, 1>(a, kv, c0, j0, j1, s, partial),
        }
    }
}

/// Sets the scores of the keys `row` (keys `j0..`) that its query may not see to `-inf`; or,
/// if it sees none of them, every weight to 0 and returns false (its partial stays empty).
#[inline(always)]
fn mask_row(row: &mut [f32], (vlo, vhi): (usize, usize), j0: usize) -> bool {
    let n = row.len();
    let lo = vlo.saturating_sub(j0).min(n);
    let hi = vhi.saturating_sub(j0).min(n);
    if lo >= hi {
        row.fill(0.0);
        return false;
    }
    row[..lo].fill(f32::NEG_INFINITY);
    row[hi..].fill(f32::NEG_INFINITY);
    true
}

/// Softmax within the chunk per row, in place in `s`, and each row's max and sum into
/// `partial`; lanes follow the absolute key index (j0 is block-aligned). A row that sees no key
/// here keeps zero weights. Shared by the AVX2 and AVX-512 attention (inlined into each).
#[inline(always)]
#[cfg(target_arch = "x86_64")]
unsafe fn softmax_rows(
    a: &AttnRows<'_>,
    j0: usize,
    j1: usize,
    s: &mut Scores,
    partial: &mut [f32],
) {
    use super::x86::{exp8, hsum};
    use std::arch::x86_64::*;
    let (n, hd) = (j1 - j0, a.head_dim);
    let stride = partial_len(hd);
    for r in 0..a.q.len() {
        let row = &mut s[r][..n];
        if !mask_row(row, a.visible[r], j0) {
            continue;
        }
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in row.chunks_exact(8) {
            m = _mm256_max_ps(m, _mm256_loadu_ps(c.as_ptr()));
        }
        let m128 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m128 = _mm_max_ps(m128, _mm_movehl_ps(m128, m128));
        let m128 = _mm_max_ss(m128, _mm_shuffle_ps::<1>(m128, m128));
        let max = _mm_cvtss_f32(m128);
        let maxv = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        for c in row.chunks_exact_mut(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), maxv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
        partial[r * stride + hd] = max;
        partial[r * stride + hd + 1] = hsum(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pseudo;
    use super::*;

    thread_local! {
        /// Set by a test to run the AVX2 attention where AVX-512 is there.
        pub(super) static NARROW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Plain attention in f64 over explicit per-row key ranges; `keys` is `[cap][hd]`.
    fn reference(q: &[&[f32]], visible: &[(usize, usize)], keys: &[f32], v: &[f32]) -> Vec<f32> {
        let hd = q[0].len();
        let mut out = vec![0f32; q.len() * hd];
        for (r, q) in q.iter().enumerate() {
            let (lo, hi) = visible[r];
            let s: Vec<f64> = (lo..hi)
                .map(|j| (0..hd).map(|d| q[d] as f64 * keys[j * hd + d] as f64).sum())
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                let v: f64 = (lo..hi)
                    .zip(&e)
                    .map(|(j, p)| p * v[j * hd + d] as f64)
                    .sum();
                out[r * hd + d] = (v / z) as f32;
            }
        }
        out
    }

    /// Rounds through f16, as the cache stores keys and values.
    fn halves(x: &[f32]) -> (Vec<u16>, Vec<f32>) {
        let h: Vec<u16> = x.iter().map(|&v| kernels::f32_to_f16(v)).collect();
        let back = h.iter().map(|&v| kernels::f16_to_f32(v)).collect();
        (h, back)
    }

    /// Keys `[cap][hd]` in the cache's blocked layout.
    fn blocked(keys: &[u16], hd: usize) -> Vec<u16> {
        let mut k = vec![0u16; keys.len()];
        for (j, key) in keys.chunks_exact(hd).enumerate() {
            for (d, &x) in key.iter().enumerate() {
                k[(j / KEY_BLOCK * hd + d) * KEY_BLOCK + j % KEY_BLOCK] = x;
            }
        }
        k
    }

    /// Every chunk a block of rows sees, merged: what the transformer does for one block. `k`
    /// and `v` are the blocks of the whole context.
    fn attend(a: &AttnRows<'_>, k: &[&[u16]], v: &[&[u16]]) -> Vec<f32> {
        let hd = a.head_dim;
        let rows = a.q.len();
        let hi = a.visible.iter().map(|v| v.1).max().unwrap();
        let lo = a.visible.iter().map(|v| v.0).min().unwrap();
        let slot = rows * partial_len(hd);
        let chunks = lo / KEY_CHUNK..hi.div_ceil(KEY_CHUNK);
        let mut parts = vec![0f32; chunks.len() * slot];
        for (c, p) in chunks.zip(parts.chunks_exact_mut(slot)) {
            let b = c * CHUNK_BLOCKS..((c + 1) * CHUNK_BLOCKS).min(k.len());
            let kv = ChunkKv {
                k: &k[b.clone()],
                v: &v[b],
            };
            attend_chunk(a, &kv, c, &mut [[f32::NAN; KEY_CHUNK]; ATTN_ROWS], p);
        }
        let mut got = vec![0f32; rows * hd];
        let mut outs: Vec<&mut [f32]> = got.chunks_exact_mut(hd).collect();
        merge_chunks(&parts, slot, &mut outs);
        got
    }

    #[test]
    fn attention_over_chunks_matches_a_plain_reference_and_each_other() {
        // Head dims of SmolLM2 (64) and Gemma 3 (256), one only the portable path takes (12),
        // contexts within one chunk and across several, rows that see a window of keys, groups
        // of every size class the kernels pick by (1, 2-8 and 9-16 rows).
        for (hd, rows, cap) in [
            (64, 3, 128),
            (256, 4, 64),
            (12, 2, 64),
            (64, 4, 448),
            (8, 1, 320),
            (64, 8, 448),
            (256, 7, 208),
            (8, 6, 320),
            (64, 16, 448),
            (64, 11, 192),
            (256, 16, 96),
            (256, 13, 208),
            (16, 9, 160),
        ] {
            let q = pseudo(rows * hd, 1);
            let (kh, keys) = halves(&pseudo(cap * hd, 2));
            let (vh, v) = halves(&pseudo(cap * hd, 3));
            // Each block in its own allocation: a sequence's blocks sit anywhere in the pool.
            let k = blocked(&kh, hd);
            let k_mem: Vec<Vec<u16>> = k
                .chunks_exact(hd * KEY_BLOCK)
                .map(<[u16]>::to_vec)
                .collect();
            let v_mem: Vec<Vec<u16>> = vh
                .chunks_exact(hd * KEY_BLOCK)
                .map(<[u16]>::to_vec)
                .collect();
            let k_blocks: Vec<&[u16]> = k_mem.iter().map(Vec::as_slice).collect();
            let v_blocks: Vec<&[u16]> = v_mem.iter().map(Vec::as_slice).collect();
            let visible: Vec<(usize, usize)> = (0..rows)
                .map(|r| {
                    let hi = (cap - 5 - r * 3).max(1);
                    (
                        if r % 2 == 1 {
                            hi.saturating_sub(140)
                        } else {
                            0
                        },
                        hi,
                    )
                })
                .collect();
            let q_rows: Vec<&[f32]> = q.chunks_exact(hd).collect();
            let a = AttnRows {
                q: &q_rows,
                visible: &visible,
                head_dim: hd,
            };
            let want = reference(&q_rows, &visible, &keys, &v);
            let got = attend(&a, &k_blocks, &v_blocks);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "hd {hd} cap {cap}: {g} vs {w}");
            }
            // The AVX-512 kernels are the AVX2 ones on wider vectors: the same bits.
            #[cfg(target_arch = "x86_64")]
            if avx512() {
                NARROW.set(true);
                let narrow = attend(&a, &k_blocks, &v_blocks);
                NARROW.set(false);
                assert_eq!(narrow, got, "hd {hd} cap {cap}: AVX2 and AVX-512 differ");
            }
            // One row at a time gives bit-identical results (batch and chunk invariance).
            for r in 0..rows {
                let one = AttnRows {
                    q: &q_rows[r..r + 1],
                    visible: &visible[r..r + 1],
                    ..a
                };
                assert_eq!(
                    attend(&one, &k_blocks, &v_blocks),
                    got[r * hd..(r + 1) * hd],
                    "hd {hd} row {r}"
                );
            }
        }
    }
}
