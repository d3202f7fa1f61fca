//! `matmul` against the dequantize-then-multiply reference, over random shapes and every path
//! this CPU supports.
use kernels::testing::{random_activations, random_blocks, random_matrix};
use kernels::{
    matmul, matmul_on, matmul_reference, supported_isas, Isa, Layout, QMatrix, QuantType, Scratch,
    Threads,
};
use proptest::prelude::*;

/// Checks `matmul` on `w` against the reference. The int8 paths quantize each 32- or 256-value
/// block of activations to int8 (absmax/127, so at most half a step = |x|max/254 off per value)
/// and round the block scale; the error of one output is therefore below
/// sum_k |w_k| * |x|max_block / 254 (+ f32 rounding), which `budget` bounds from above using
/// the dequantized weights.
fn check(w: &QMatrix, m: usize, seed: u64, threads: &Threads) {
    for path in supported_isas() {
        check_on(path, w, m, seed, threads);
    }
}

fn check_on(path: kernels::Isa, w: &QMatrix, m: usize, seed: u64, threads: &Threads) {
    let w = &w.for_path(path);
    let (rows, cols) = (w.rows(), w.cols());
    let x = random_activations(m * cols, seed);
    let mut want = vec![0f32; m * rows];
    matmul_reference(w, &x, m, &mut want);
    let mut got = vec![f32::NAN; m * rows];
    let mut scratch = Scratch::default();
    matmul_on(path, w, &x, m, &mut got, &mut scratch, threads);
    // Twice with the same scratch: reuse must not change results.
    let mut again = vec![f32::NAN; m * rows];
    matmul_on(path, w, &x, m, &mut again, &mut scratch, threads);
    assert_eq!(got, again, "{path:?}: scratch reuse changed the result");

    let mut row = vec![0f32; cols];
    let blk = 32;
    for j in 0..rows {
        w.dequantize_row(j, &mut row);
        for i in 0..m {
            let xi = &x[i * cols..(i + 1) * cols];
            let mut budget = 0f32;
            let mut abs_dot = 0f32;
            for (wb, xb) in row.chunks(blk).zip(xi.chunks(blk)) {
                let xmax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                // Activation rounding: at most half a step of xmax/127 per value.
                budget += wb.iter().map(|v| v.abs()).sum::<f32>() * xmax * (0.5 / 127.0) * 1.001;
                abs_dot += wb.iter().zip(xb).map(|(a, b)| (a * b).abs()).sum::<f32>();
            }
            let tol = budget + 1e-5 * abs_dot + 1e-6;
            let (g, e) = (got[i * rows + j], want[i * rows + j]);
            assert!(
                (g - e).abs() <= tol,
                "{path:?} {:?} [{rows}x{cols}] m={m} out[{i},{j}] = {g}, reference {e}, tolerance {tol}",
                w.ty()
            );
        }
    }
}

fn shape_strategy() -> impl Strategy<Value = (QuantType, usize, usize, usize)> {
    (0..QuantType::ALL.len(), 1usize..70, 1usize..4, 1usize..11).prop_map(|(t, rows, k, m)| {
        let ty = QuantType::ALL[t];
        // Columns: a few blocks, odd and even counts, including a partial 8-block group.
        let cols = if ty.block_len() == 256 {
            256 * k
        } else {
            32 * (k * 3 + (rows % 5))
        };
        (ty, rows, cols, m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_reference_on_random_shapes((ty, rows, cols, m) in shape_strategy(), seed in 0u64..1000) {
        let threads = Threads::new(2);
        let w = random_matrix(ty, rows, cols, seed);
        check(&w, m, seed + 1, &threads);
    }
}

#[test]
fn model_shapes_every_format_one_and_two_threads() {
    for nt in [1, 2] {
        let threads = Threads::new(nt);
        for ty in QuantType::ALL {
            let cols = if ty.block_len() == 256 { 1536 } else { 576 };
            let w = random_matrix(ty, 200, cols, 3);
            for m in [1, 5, 17] {
                check(&w, m, 11, &threads);
            }
        }
    }
}

#[test]
fn default_path_is_the_best_supported() {
    assert_eq!(supported_isas()[0], kernels::isa());
    let threads = Threads::new(2);
    let w = random_matrix(QuantType::Q4_1, 40, 96, 5);
    let x = random_activations(3 * 96, 6);
    let (mut a, mut b) = (vec![0f32; 120], vec![0f32; 120]);
    let mut scratch = Scratch::default();
    matmul(&w, &x, 3, &mut a, &mut scratch, &threads);
    matmul_on(kernels::isa(), &w, &x, 3, &mut b, &mut scratch, &threads);
    assert_eq!(a, b);
}

#[test]
fn zero_rows_or_zero_m_do_nothing() {
    let threads = Threads::new(2);
    let w = random_matrix(QuantType::Q4_1, 0, 64, 1);
    let mut scratch = Scratch::default();
    matmul(&w, &[0.0; 64], 1, &mut [], &mut scratch, &threads);
    let w = random_matrix(QuantType::Q4_1, 4, 64, 1);
    let mut out = [7f32; 4];
    matmul(&w, &[], 0, &mut out, &mut scratch, &threads);
    assert_eq!(out, [7.0; 4]);
}

#[test]
fn rejects_bad_shapes() {
    assert!(QMatrix::new(QuantType::Q4_1, 2, 48, vec![0; 60]).is_err());
    assert!(QMatrix::new(QuantType::Q4_1, 2, 64, vec![0; 79]).is_err());
    assert!(QMatrix::new(QuantType::Q4_1, 2, 64, vec![0; 80]).is_ok());
    assert_eq!(QuantType::from_ggml_type(3), Some(QuantType::Q4_1));
    assert_eq!(QuantType::from_ggml_type(14), Some(QuantType::Q6K));
    assert_eq!(QuantType::from_ggml_type(10), None);
}

/// A row's result is bit-identical whatever path its batch size picks (fused for small m, one
/// to four rows per weight row, unpacked rows below 8, 8- and 16-row tiles from 8 on, strips
/// dotted directly or through tiles), on every ISA path: batching never changes a sequence's
/// tokens.
#[test]
fn a_row_is_the_same_alone_and_in_any_batch() {
    let threads = Threads::new(2);
    for ty in QuantType::ALL {
        let cols = if ty.block_len() == 256 { 512 } else { 32 * 19 };
        // 40 rows: two 16-row tiles and an 8-row one on the widest path; 48: three strips
        // where the path reads strips.
        for rows in [40, 48] {
            let w = random_matrix(ty, rows, cols, 21);
            let m = 33;
            let x = random_activations(m * cols, 22);
            for path in supported_isas() {
                let w = w.for_path(path);
                let mut scratch = Scratch::default();
                let mut all = vec![0f32; m * rows];
                matmul_on(path, &w, &x, m, &mut all, &mut scratch, &threads);
                for sub in [1, 2, 3, 4, 5, 7, 8, 16] {
                    for i0 in (0..m - sub).step_by(7) {
                        let mut part = vec![0f32; sub * rows];
                        let xs = &x[i0 * cols..(i0 + sub) * cols];
                        matmul_on(path, &w, xs, sub, &mut part, &mut scratch, &threads);
                        assert_eq!(
                            part[..],
                            all[i0 * rows..(i0 + sub) * rows],
                            "{path:?} {ty:?} {:?}: rows {i0}..{} in a batch of {sub} differ \
                             from m = {m}",
                            w.layout(),
                            i0 + sub
                        );
                    }
                }
            }
        }
    }
}

/// Every path that lays matrices out in strips (VNNI, AVX2 for Q4) stays within the int8 error bound
/// of the reference on them, for every pass shape (1 to 4 activation rows a pass and the rest,
/// tiles above 8) and for groups cut short at the end of a row.
#[test]
fn strips_match_the_reference_on_every_path() {
    let threads = Threads::new(2);
    for ty in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0] {
        for nblocks in [2, 9, 19] {
            let w = random_matrix(ty, 32, 32 * nblocks, 50 + nblocks as u64);
            for path in supported_isas() {
                let q4 = ty != QuantType::Q8_0;
                if path == Isa::Avx512Vnni || (path == Isa::Avx2 && q4) {
                    assert_eq!(w.for_path(path).layout(), Layout::Strips, "{path:?} {ty:?}");
                }
                if path == Isa::Portable {
                    assert_eq!(w.for_path(path).layout(), Layout::Rows, "{ty:?}");
                }
                for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 13] {
                    check_on(path, &w, m, 60 + m as u64, &threads);
                }
            }
        }
    }
}

/// On every path that reads strips (VNNI: Q4_0, Q4_1, Q8_0; AVX2: Q4_0, Q4_1; Portable, which
/// lays out nothing in strips, all three), a matrix in strips gives the same bits as the same
/// matrix in rows, for every batch size and for groups
/// cut short at the end of a row.
#[test]
fn strips_give_the_bits_rows_give() {
    let threads = Threads::new(2);
    let mut checked = 0;
    for path in supported_isas() {
        for ty in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0] {
            // Portable lays nothing out in strips but reads them (row by row) when given them.
            if path != Isa::Portable && Layout::for_path(path, ty, 48) != Layout::Strips {
                continue;
            }
            for nblocks in [2, 8, 18, 19] {
                let (rows, cols) = (48, 32 * nblocks);
                let bytes = random_blocks(ty, rows, cols, 40 + nblocks as u64);
                let strips = QMatrix::with_layout(ty, rows, cols, bytes.clone(), Layout::Strips)
                    .expect("valid sizes");
                assert_eq!(strips.layout(), Layout::Strips);
                let by_rows = QMatrix::with_layout(ty, rows, cols, bytes, Layout::Rows).unwrap();
                for m in (1..=20).chain([33]) {
                    let x = random_activations(m * cols, m as u64);
                    let run = |w: &QMatrix| {
                        let mut out = vec![f32::NAN; m * rows];
                        let mut scratch = Scratch::default();
                        matmul_on(path, w, &x, m, &mut out, &mut scratch, &threads);
                        out
                    };
                    let (a, b) = (run(&strips), run(&by_rows));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&a),
                        bits(&b),
                        "{path:?} {ty:?} {nblocks} blocks, m = {m}"
                    );
                }
                checked += 1;
            }
        }
    }
    // Every x86-64 CPU we take a fast path on has AVX2.
    if supported_isas().contains(&Isa::Avx2) {
        assert!(checked >= 20, "only {checked} layouts compared");
    }
}
