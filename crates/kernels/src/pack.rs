//! The load-time layout of the 32-weight formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
//!
//! ggml interleaves each block's scale with its quants, so a vector kernel loads 16- or 32-byte
//! pieces at odd offsets and converts one half-precision scale at a time. We regroup each row
//! into groups of 8 blocks with the same bytes per block:
//!
//! ```text
//! d: f16 x G | m: f16 x G (Q4_1, Q5_1) | qh: 8 bytes per block pair (Q5_*) | qs
//! ```
//!
//! so a group's 8 scales convert with one instruction and block pairs load as one 32-byte
//! vector. `qs` keeps ggml's 16 nibble bytes per block (a pair's 32 bytes then hold
//! `[a0..16 | b0..16]` in low nibbles and `[a16..32 | b16..32]` in high ones); Q8_0 pairs are
//! stored as `[a0..16, b0..16, a16..32, b16..32]` to match. The fifth bits of a Q5 pair are stored
//! as two u32 words in that same element order. The last group of a row holds the remaining
//! blocks, rounded up to an even count with a zero block (weight 0), so a row of an even number
//! of blocks takes exactly the bytes it took in the GGUF file.

use crate::QuantType;

/// Blocks per group.
pub(crate) const GROUP: usize = 8;

pub(crate) fn is_packed(ty: QuantType) -> bool {
    matches!(
        ty,
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0
    )
}

pub(crate) fn has_min(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q4_1 | QuantType::Q5_1)
}

pub(crate) fn has_qh(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q5_0 | QuantType::Q5_1)
}

/// Blocks per packed row: the ggml count rounded up to even.
pub(crate) fn packed_blocks(cols: usize) -> usize {
    (cols / 32).next_multiple_of(2)
}

pub(crate) fn packed_row_bytes(ty: QuantType, cols: usize) -> usize {
    packed_blocks(cols) * ty.block_bytes()
}

/// Byte offsets of the fields of a group of `g` blocks: (d, m, qh, qs).
pub(crate) fn group_fields(ty: QuantType, g: usize) -> (usize, usize, usize, usize) {
    let m = 2 * g;
    let qh = m + if has_min(ty) { 2 * g } else { 0 };
    let qs = qh + if has_qh(ty) { 4 * g } else { 0 };
    (0, m, qh, qs)
}

/// Blocks in group `gi` of a packed row of `nb` (even) blocks.
pub(crate) fn group_len(nb: usize, gi: usize) -> usize {
    (nb - gi * GROUP).min(GROUP)
}

/// Repacks one ggml row (`cols / 32` blocks) into `out` (`packed_row_bytes` long).
pub(crate) fn pack_row(ty: QuantType, ggml: &[u8], out: &mut [u8]) {
    let bb = ty.block_bytes();
    let nb_in = ggml.len() / bb;
    let nb = nb_in.next_multiple_of(2);
    out.fill(0);
    let zero = vec![0u8; bb];
    let mut start = 0;
    for gi in 0..nb.div_ceil(GROUP) {
        let g = group_len(nb, gi);
        let (fd, fm, fqh, fqs) = group_fields(ty, g);
        let grp = &mut out[start..start + g * bb];
        for k in 0..g {
            let b = gi * GROUP + k;
            let blk = if b < nb_in {
                &ggml[b * bb..(b + 1) * bb]
            } else {
                &zero[..]
            };
            grp[fd + 2 * k..fd + 2 * k + 2].copy_from_slice(&blk[..2]);
            let mut at = 2;
            if has_min(ty) {
                grp[fm + 2 * k..fm + 2 * k + 2].copy_from_slice(&blk[2..4]);
                at = 4;
            }
            if has_qh(ty) {
                let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
                at += 4;
                // Pair word `lo` holds bits 0..16 of block a then of block b; `hi` bits 16..32.
                let (pair, second) = (k / 2, k % 2);
                let w = fqh + 8 * pair;
                let put16 = |grp: &mut [u8], off: usize, v: u32| {
                    grp[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes())
                };
                put16(grp, w + 2 * second, qh & 0xffff);
                put16(grp, w + 4 + 2 * second, qh >> 16);
            }
            let qs = &blk[at..];
            if ty == QuantType::Q8_0 {
                let (pair, second) = (k / 2, k % 2);
                let p = fqs + 64 * pair + 16 * second;
                grp[p..p + 16].copy_from_slice(&qs[..16]);
                grp[p + 32..p + 48].copy_from_slice(&qs[16..32]);
            } else {
                grp[fqs + 16 * k..fqs + 16 * k + 16].copy_from_slice(&qs[..16]);
            }
        }
        start += g * bb;
    }
}

/// Rebuilds ggml block `b` of a packed row into `blk` (`block_bytes` long).
pub(crate) fn unpack_block(ty: QuantType, row: &[u8], b: usize, blk: &mut [u8]) {
    let bb = ty.block_bytes();
    let nb = row.len() / bb;
    let gi = b / GROUP;
    let k = b % GROUP;
    let g = group_len(nb, gi);
    let (fd, fm, fqh, fqs) = group_fields(ty, g);
    let grp = &row[gi * GROUP * bb..];
    blk[..2].copy_from_slice(&grp[fd + 2 * k..fd + 2 * k + 2]);
    let mut at = 2;
    if has_min(ty) {
        blk[2..4].copy_from_slice(&grp[fm + 2 * k..fm + 2 * k + 2]);
        at = 4;
    }
    let (pair, second) = (k / 2, k % 2);
    if has_qh(ty) {
        let w = fqh + 8 * pair;
        let rd16 = |off: usize| u16::from_le_bytes([grp[off], grp[off + 1]]) as u32;
        let qh = rd16(w + 2 * second) | (rd16(w + 4 + 2 * second) << 16);
        blk[at..at + 4].copy_from_slice(&qh.to_le_bytes());
        at += 4;
    }
    if ty == QuantType::Q8_0 {
        let p = fqs + 64 * pair + 16 * second;
        blk[at..at + 16].copy_from_slice(&grp[p..p + 16]);
        blk[at + 16..at + 32].copy_from_slice(&grp[p + 32..p + 48]);
    } else {
        blk[at..at + 16].copy_from_slice(&grp[fqs + 16 * k..fqs + 16 * k + 16]);
    }
}

/// Repacks a whole matrix, in place when the size does not change (an even number of blocks
/// per row), so loading a 178 MB embedding does not briefly need twice the memory.
pub(crate) fn pack_matrix(ty: QuantType, rows: usize, cols: usize, mut data: Vec<u8>) -> Vec<u8> {
    let rb_in = ty.row_bytes(cols);
    let rb = packed_row_bytes(ty, cols);
    let mut tmp = vec![0u8; rb];
    if rb == rb_in {
        for r in 0..rows {
            let row = &mut data[r * rb..(r + 1) * rb];
            pack_row(ty, row, &mut tmp);
            row.copy_from_slice(&tmp);
        }
        data
    } else {
        let mut out = vec![0u8; rows * rb];
        for r in 0..rows {
            pack_row(
                ty,
                &data[r * rb_in..(r + 1) * rb_in],
                &mut out[r * rb..(r + 1) * rb],
            );
        }
        out
    }
}

/// Rows per strip of the strip layout.
pub(crate) const STRIP: usize = 16;

/// Whether `ty` can be laid out in strips (the formats the VNNI strip kernels read).
pub(crate) fn strips_apply(ty: QuantType, rows: usize) -> bool {
    matches!(ty, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0) && rows.is_multiple_of(STRIP)
}

/// Byte offsets of the fields of a strip group of `g` blocks: (d, m, qs). `d` and `m` hold, per
/// block, the 16 rows' f16 values side by side (32 bytes); `qs` holds 64-byte slots, each the
/// same dword of the 16 rows side by side: Q4 slot `8 p + c` is dword `c` of block pair `p`'s 32
/// packed bytes, Q8_0 slot `8 v + c` dword `c` of vector `v` (see `pack_row` for both).
pub(crate) fn strip_fields(ty: QuantType, g: usize) -> (usize, usize, usize) {
    let m = 32 * g;
    let qs = m + if has_min(ty) { 32 * g } else { 0 };
    (0, m, qs)
}

/// Where strip `s`, group `gi` starts, for rows of `rb` packed bytes (each strip takes the bytes
/// its 16 rows took, each group within it those of the 16 rows' groups).
pub(crate) fn strip_group_offset(ty: QuantType, rb: usize, s: usize, gi: usize) -> usize {
    s * STRIP * rb + STRIP * gi * GROUP * ty.block_bytes()
}

/// For the dword `c` of Q4 pair `p` (or Q8_0 vector `p`) in a packed group of `g` blocks: its
/// byte offset in the group (`pack_row`'s layout) and its slot's offset in the strip group.
fn strip_dwords(ty: QuantType, g: usize) -> impl Iterator<Item = (usize, usize)> {
    let (_, _, _, fqs) = group_fields(ty, g);
    let (_, _, sqs) = strip_fields(ty, g);
    let vectors = if ty == QuantType::Q8_0 { g } else { g / 2 };
    (0..8 * vectors).map(move |slot| (fqs + 4 * slot, sqs + 64 * slot))
}

/// Calls `mv(offset in the row, offset in the strip, length)` for every byte move between
/// packed row `r` of a strip (`pack_row`'s layout, `rb` bytes) and the strip: each scale, min
/// and quant dword, group by group. Laying out and reading back are the same moves in
/// opposite directions.
#[inline]
fn strip_moves(ty: QuantType, rb: usize, r: usize, mut mv: impl FnMut(usize, usize, usize)) {
    let bb = ty.block_bytes();
    let nb = rb / bb;
    for gi in 0..nb.div_ceil(GROUP) {
        let g = group_len(nb, gi);
        let (fd, fm, _, _) = group_fields(ty, g);
        let (sd, sm, _) = strip_fields(ty, g);
        let (row0, strip0) = (gi * GROUP * bb, strip_group_offset(ty, rb, 0, gi));
        for k in 0..g {
            mv(row0 + fd + 2 * k, strip0 + sd + 32 * k + 2 * r, 2);
            if has_min(ty) {
                mv(row0 + fm + 2 * k, strip0 + sm + 32 * k + 2 * r, 2);
            }
        }
        for (from, to) in strip_dwords(ty, g) {
            mv(row0 + from, strip0 + to + 4 * r, 4);
        }
    }
}

/// Rearranges 16 packed rows (`pack_row`'s layout, `rb` bytes each, one after another in
/// `rows`) into one strip in `out` (same length).
fn strip_of_rows(ty: QuantType, rows: &[u8], rb: usize, out: &mut [u8]) {
    for r in 0..STRIP {
        let row = &rows[r * rb..(r + 1) * rb];
        strip_moves(ty, rb, r, |ro, so, n| {
            out[so..so + n].copy_from_slice(&row[ro..ro + n])
        });
    }
}

/// Lays a packed matrix (`pack_matrix`'s output, `rows` a multiple of 16) out in strips, in
/// place: a strip occupies exactly the bytes of its 16 rows.
pub(crate) fn strip_matrix(ty: QuantType, rows: usize, cols: usize, mut data: Vec<u8>) -> Vec<u8> {
    let rb = packed_row_bytes(ty, cols);
    let mut tmp = vec![0u8; STRIP * rb];
    for s in 0..rows / STRIP {
        let strip = &mut data[s * STRIP * rb..(s + 1) * STRIP * rb];
        strip_of_rows(ty, strip, rb, &mut tmp);
        strip.copy_from_slice(&tmp);
    }
    data
}

/// Rebuilds packed row `j` (`pack_row`'s layout) of a matrix in strips into `out` (`rb` long).
pub(crate) fn row_of_strips(ty: QuantType, data: &[u8], rb: usize, j: usize, out: &mut [u8]) {
    let strip = &data[j / STRIP * STRIP * rb..];
    strip_moves(ty, rb, j % STRIP, |ro, so, n| {
        out[ro..ro + n].copy_from_slice(&strip[so..so + n])
    });
}

/// Rebuilds ggml row bytes (`cols / 32` blocks) from a packed row.
pub(crate) fn ggml_row(ty: QuantType, packed: &[u8], cols: usize, out: &mut [u8]) {
    let bb = ty.block_bytes();
    for b in 0..cols / 32 {
        unpack_block(ty, packed, b, &mut out[b * bb..(b + 1) * bb]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_blocks;

    #[test]
    fn every_block_survives_pack_and_unpack() {
        for ty in QuantType::ALL.into_iter().filter(|t| is_packed(*t)) {
            for nblocks in [1, 2, 3, 8, 9, 18, 20, 23] {
                let cols = 32 * nblocks;
                let ggml = random_blocks(ty, 1, cols, nblocks as u64);
                let mut packed = vec![0u8; packed_row_bytes(ty, cols)];
                pack_row(ty, &ggml, &mut packed);
                let bb = ty.block_bytes();
                let mut blk = vec![0u8; bb];
                for b in 0..nblocks {
                    unpack_block(ty, &packed, b, &mut blk);
                    assert_eq!(
                        blk,
                        ggml[b * bb..(b + 1) * bb],
                        "{ty:?} {nblocks} blocks, block {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_row_survives_strips_and_back() {
        for ty in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0] {
            for nblocks in [1, 2, 8, 9, 18, 23] {
                let (rows, cols) = (32, 32 * nblocks);
                let ggml = random_blocks(ty, rows, cols, nblocks as u64);
                let packed = pack_matrix(ty, rows, cols, ggml.clone());
                let strips = strip_matrix(ty, rows, cols, packed.clone());
                let rb = packed_row_bytes(ty, cols);
                assert_eq!(strips.len(), packed.len());
                let mut row = vec![0u8; rb];
                for j in 0..rows {
                    row_of_strips(ty, &strips, rb, j, &mut row);
                    assert_eq!(
                        row,
                        packed[j * rb..(j + 1) * rb],
                        "{ty:?} {nblocks} blocks, row {j}"
                    );
                }
            }
        }
    }
}
