//! The 8-row tile path of the int8 kernels, for `m >= TILE_MIN_M` unsigned formats: 8 unpacked
//! weight rows interleaved into [`WTile`]s so that one broadcast activation word feeds all 8 and
//! no horizontal sums are needed. The kernels are written once here and compiled per
//! instruction set by `tile_kernels!`, which `isa_kernels!` expands inside each ISA's module
//! (so they call that module's `unpack_row` and see its `VNNI`).

/// One group of 8 weight rows, interleaved so each 32-byte vector holds the same 4 quants of
/// all 8 rows: `q[8 v + c]` is bytes `4c..4c+4` of vector `v` of rows 0..8. `dw[b]`/`mw[b]` are
/// the 8 rows' scale and offset of block `b` (natural block order).
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(crate) struct WTile {
    pub(super) q: [[u8; 32]; 64],
    pub(super) dw: [[f32; 8]; 8],
    pub(super) mw: [[f32; 8]; 8],
}

pub(super) const ZERO_T: WTile = WTile {
    q: [[0; 32]; 64],
    dw: [[0.0; 8]; 8],
    mw: [[0.0; 8]; 8],
};

/// From this many activation rows on, unsigned formats use the tiles.
pub(crate) const TILE_MIN_M: usize = 8;

/// Activation rows the 8-row tile kernel takes per pass over a weight tile (each weight vector
/// loaded once for all of them). Two keep 16 accumulators, all AVX2 has; `examples/model_sweep`
/// on the AVX2 path (one layer, 256 rows, one thread, 3 interleaved rounds): median 16-45%
/// faster than one row, four no better than two.
pub(super) const TILE_ACT_ROWS: usize = 2;

/// The tile kernels for one instruction set (`$features`), expanded inside its module.
macro_rules! tile_kernels {
    ($features:literal) => {
            /// Interleaves 8 unpacked rows (`rows[r * ngroups + g]`) into tiles, one per group.
            #[target_feature(enable = $features)]
            unsafe fn build_tiles(rows: &[WGroup], ngroups: usize, tiles: &mut [WTile]) {
                for (g, t) in tiles.iter_mut().enumerate() {
                    interleave(rows, ngroups, g, t.q.as_mut_ptr().cast(), 32);
                    for b in 0..8 {
                        for r in 0..8 {
                            t.dw[b][r] = rows[r * ngroups + g].dw[POS[b]];
                            t.mw[b][r] = rows[r * ngroups + g].mw[POS[b]];
                        }
                    }
                }
            }

            /// Group `g`'s quants of 8 unpacked rows, interleaved: the 32 bytes for vector `v`,
            /// word `c` go to `q + (8 v + c) * slot` (`slot` 32 for a [`WTile`], 64 for each
            /// half of a 16-row tile).
            #[target_feature(enable = $features)]
            pub(super) unsafe fn interleave(
                rows: &[WGroup],
                ngroups: usize,
                g: usize,
                q: *mut u8,
                slot: usize,
            ) {
                for v in 0..8 {
                    let r: [__m256i; 8] = std::array::from_fn(|r| {
                        _mm256_load_si256(
                            rows[r * ngroups + g].q.as_ptr().add(32 * v) as *const __m256i
                        )
                    });
                    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
                    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
                    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
                    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
                    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
                    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
                    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
                    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
                    let u0 = _mm256_unpacklo_epi64(t0, t2);
                    let u1 = _mm256_unpackhi_epi64(t0, t2);
                    let u2 = _mm256_unpacklo_epi64(t1, t3);
                    let u3 = _mm256_unpackhi_epi64(t1, t3);
                    let u4 = _mm256_unpacklo_epi64(t4, t6);
                    let u5 = _mm256_unpackhi_epi64(t4, t6);
                    let u6 = _mm256_unpacklo_epi64(t5, t7);
                    let u7 = _mm256_unpackhi_epi64(t5, t7);
                    let at = |c: usize| q.add((8 * v + c) * slot) as *mut __m256i;
                    _mm256_storeu_si256(at(0), _mm256_permute2x128_si256(u0, u4, 0x20));
                    _mm256_storeu_si256(at(1), _mm256_permute2x128_si256(u1, u5, 0x20));
                    _mm256_storeu_si256(at(2), _mm256_permute2x128_si256(u2, u6, 0x20));
                    _mm256_storeu_si256(at(3), _mm256_permute2x128_si256(u3, u7, 0x20));
                    _mm256_storeu_si256(at(4), _mm256_permute2x128_si256(u0, u4, 0x31));
                    _mm256_storeu_si256(at(5), _mm256_permute2x128_si256(u1, u5, 0x31));
                    _mm256_storeu_si256(at(6), _mm256_permute2x128_si256(u2, u6, 0x31));
                    _mm256_storeu_si256(at(7), _mm256_permute2x128_si256(u3, u7, 0x31));
                }
            }

            /// Block `B` of one tile group dotted with `R` activation rows' blocks, each added to
            /// that row's accumulator of its position in `ORDER`; each weight vector is loaded
            /// once for all `R` rows, and each row's sums are formed as with `R = 1`. `B` is a
            /// constant so that, inlined, every accumulator index is known.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn tile_block<const B: usize, const R: usize>(
                t: &WTile,
                ag: [&AGroup; R],
                acc: &mut [[__m256; 8]; R],
            ) {
                let (p, second) = (B / 2, B % 2);
                let mut isum = [_mm256_setzero_si256(); R];
                for h in 0..2 {
                    let v = 2 * p + h;
                    let c0 = 4 * second;
                    let w = t.q.as_ptr().add(8 * v + c0) as *const __m256i;
                    let wq: [__m256i; 4] = std::array::from_fn(|c| _mm256_load_si256(w.add(c)));
                    for (sum, a) in isum.iter_mut().zip(ag) {
                        let xw = a.q.as_ptr().add(32 * v + 4 * c0) as *const i32;
                        let xb: [__m256i; 4] =
                            std::array::from_fn(|c| _mm256_set1_epi32(xw.add(c).read_unaligned()));
                        if VNNI {
                            for c in 0..4 {
                                *sum = _mm256_dpbusd_epi32(*sum, wq[c], xb[c]);
                            }
                        } else {
                            // Four products summed in i16: at most 4 * 2 * 31 * 127 < 2^15 for
                            // the 5-bit formats, the widest unsigned ones on AVX2.
                            let p: [__m256i; 4] =
                                std::array::from_fn(|c| _mm256_maddubs_epi16(wq[c], xb[c]));
                            let s = _mm256_add_epi16(
                                _mm256_add_epi16(p[0], p[1]),
                                _mm256_add_epi16(p[2], p[3]),
                            );
                            *sum =
                                _mm256_add_epi32(*sum, _mm256_madd_epi16(s, _mm256_set1_epi16(1)));
                        }
                    }
                }
                let k = POS[B];
                let dw = _mm256_load_ps(t.dw[B].as_ptr());
                let mw = _mm256_load_ps(t.mw[B].as_ptr());
                for ((acc, sum), a) in acc.iter_mut().zip(isum).zip(ag) {
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.dx[k]));
                    acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[k]);
                    acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a.sx[k]), acc[k]);
                }
            }

            /// 8 weight rows (tiles) dotted with each of `R` activation rows (`a[r]` holds row
            /// r's groups); returns each row's 8 sums. Each sum is accumulated in exactly the
            /// order `dot_unsigned` and `dot_packed` use (one accumulator per block position,
            /// d term then min term, combined like `hsum_ps`), so a row's result does not
            /// depend on the batch size that chose this path: batching never changes a
            /// sequence's tokens.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot_tile<const R: usize>(
                tiles: &[WTile],
                a: [&[AGroup]; R],
                last_blocks: usize,
            ) -> [__m256; R] {
                let mut acc = [[_mm256_setzero_ps(); 8]; R];
                let n = tiles.len();
                for (g, t) in tiles.iter().enumerate() {
                    let ag: [&AGroup; R] = std::array::from_fn(|r| &a[r][g]);
                    // The last group may hold fewer blocks (an even count); the rest are zero
                    // padding. Blocks are spelled out one by one: see `tile_block`.
                    let blocks = if g + 1 == n { last_blocks } else { GROUP };
                    tile_block::<0, R>(t, ag, &mut acc);
                    tile_block::<1, R>(t, ag, &mut acc);
                    if blocks > 2 {
                        tile_block::<2, R>(t, ag, &mut acc);
                        tile_block::<3, R>(t, ag, &mut acc);
                    }
                    if blocks > 4 {
                        tile_block::<4, R>(t, ag, &mut acc);
                        tile_block::<5, R>(t, ag, &mut acc);
                    }
                    if blocks > 6 {
                        tile_block::<6, R>(t, ag, &mut acc);
                        tile_block::<7, R>(t, ag, &mut acc);
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

            /// Rows `range` in 8-row interleaved tiles, for `m >= TILE_MIN_M` unsigned formats.
            #[target_feature(enable = $features)]
            unsafe fn rows_tiled(
                w: &QMatrix,
                act: &[AGroup],
                m: usize,
                ngroups: usize,
                range: Range<usize>,
                out: SharedMut<f32>,
                buf: &mut RowBufs,
            ) {
                buf.0.resize(8 * ngroups, ZERO_W);
                buf.2.resize(ngroups, ZERO_T);
                let mut j0 = range.start;
                while j0 < range.end {
                    if VNNI && range.end - j0 >= 16 {
                        // SAFETY: this instantiation's features include AVX-512 F/BW/VL/VNNI.
                        wide::rows16::<false>(w, act, &[], m, ngroups, j0, out, buf);
                        j0 += 16;
                        continue;
                    }
                    let n = 8.min(range.end - j0);
                    for r in 0..8 {
                        let wg = &mut buf.0[r * ngroups..(r + 1) * ngroups];
                        if r < n {
                            unpack_row(w, j0 + r, wg, &mut []);
                        } else {
                            wg.fill(ZERO_W);
                        }
                    }
                    build_tiles(&buf.0, ngroups, &mut buf.2);
                    let last_blocks = last_blocks(w.cols);
                    sweep_tiles(&buf.2, act, m, ngroups, last_blocks, out.at(j0), w.rows, n);
                    j0 += n;
                }
            }

            /// Every one of the `m` activation rows dotted with the 8 weight rows in `tiles`,
            /// row `i`'s first `n` results stored at `out + i * stride`.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn sweep_tiles(
                tiles: &[WTile],
                act: &[AGroup],
                m: usize,
                ngroups: usize,
                last_blocks: usize,
                out: SharedMut<f32>,
                stride: usize,
                n: usize,
            ) {
                let a = |i: usize| &act[i * ngroups..(i + 1) * ngroups];
                let store = |i: usize, v: __m256| {
                    let o = out.get().add(i * stride);
                    if n == 8 {
                        _mm256_storeu_ps(o, v);
                    } else {
                        let mut tmp = [0f32; 8];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, n);
                    }
                };
                let mut i = 0;
                while i + TILE_ACT_ROWS <= m {
                    let rows = std::array::from_fn(|r| a(i + r));
                    let v = dot_tile::<TILE_ACT_ROWS>(tiles, rows, last_blocks);
                    for (r, v) in v.into_iter().enumerate() {
                        store(i + r, v);
                    }
                    i += TILE_ACT_ROWS;
                }
                for i in i..m {
                    store(i, dot_tile::<1>(tiles, [a(i)], last_blocks)[0]);
                }
            }

    };
}
