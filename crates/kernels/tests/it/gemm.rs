//! `gemm` against the f64 reference on every path this CPU supports, and the property the
//! encoder relies on: a row's result is bit-identical whatever rows share its call and however
//! many threads run it.
use kernels::testing::{random_activations, Rng};
use kernels::{gemm_on, gemm_reference, supported_isas, Isa, PackedF32, Threads};
use proptest::prelude::*;

fn random_weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols).map(|_| 0.2 * rng.unit()).collect()
}

fn run(
    path: Isa,
    w: &PackedF32,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    threads: &Threads,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; m * w.rows()];
    gemm_on(path, w, x, m, bias, &mut out, threads);
    out
}

/// Within f32 rounding of the f64 reference: one rounding per add, bounded by
/// `k * eps * sum |w x|` (with room for the portable path's separate multiply).
fn check(rows: usize, cols: usize, m: usize, with_bias: bool, seed: u64) {
    let threads = Threads::new(2);
    let data = random_weights(rows, cols, seed);
    let w = PackedF32::new(rows, cols, &data);
    let x = random_activations(m * cols, seed + 7);
    let bias: Option<Vec<f32>> = with_bias.then(|| random_weights(1, rows, seed + 9));
    let want = gemm_reference(&w, &x, m, bias.as_deref());
    for path in supported_isas() {
        let got = run(path, &w, &x, m, bias.as_deref(), &threads);
        for i in 0..m {
            for j in 0..rows {
                let abs: f64 = (0..cols)
                    .map(|k| (data[j * cols + k] as f64 * x[i * cols + k] as f64).abs())
                    .sum::<f64>()
                    + bias.as_ref().map_or(0.0, |b| b[j].abs() as f64);
                let tol = 2.0 * (cols as f64 + 2.0) * f32::EPSILON as f64 * abs + 1e-30;
                let (g, e) = (got[i * rows + j] as f64, want[i * rows + j]);
                assert!(
                    (g - e).abs() <= tol,
                    "{path:?} [{rows}x{cols}] m={m} out[{i},{j}] = {g}, reference {e}, tolerance {tol}"
                );
            }
        }
    }
}

/// Every row of one call equals the same row computed alone, and any split of the batch, on
/// one thread or two.
fn check_batch_invariance(rows: usize, cols: usize, m: usize, seed: u64) {
    let (one, two) = (Threads::new(1), Threads::new(2));
    let w = PackedF32::new(rows, cols, &random_weights(rows, cols, seed));
    let x = random_activations(m * cols, seed + 3);
    let bias = random_weights(1, rows, seed + 5);
    for path in supported_isas() {
        let all = run(path, &w, &x, m, Some(&bias), &two);
        assert_eq!(
            all,
            run(path, &w, &x, m, Some(&bias), &one),
            "{path:?}: thread count changed the result"
        );
        for i in 0..m {
            let alone = run(path, &w, &x[i * cols..(i + 1) * cols], 1, Some(&bias), &two);
            assert_eq!(
                alone[..],
                all[i * rows..(i + 1) * rows],
                "{path:?} [{rows}x{cols}] m={m}: row {i} differs alone"
            );
        }
        // An odd split in the middle.
        let cut = m / 3;
        let tail = run(path, &w, &x[cut * cols..], m - cut, Some(&bias), &two);
        assert_eq!(
            tail[..],
            all[cut * rows..],
            "{path:?}: a split batch differs"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_reference_on_random_shapes(
        rows in 1usize..70, cols in 1usize..600, m in 1usize..60, bias: bool, seed in 0u64..1000,
    ) {
        check(rows, cols, m, bias, seed);
    }
}

#[test]
fn encoder_shapes_match_the_reference() {
    // all-MiniLM-L6-v2's matrices (q|k|v fused, attention out, FFN up, FFN down) and a
    // one-label classifier, with row counts around the tile and task sizes.
    for (rows, cols) in [(1152, 384), (384, 384), (1536, 384), (384, 1536), (1, 384)] {
        for m in [1, 6, 47, 97] {
            check(rows, cols, m, true, (rows * 31 + cols + m) as u64);
        }
    }
}

#[test]
fn a_row_is_the_same_alone_and_in_any_batch() {
    for (rows, cols, m) in [(40, 300, 53), (16, 257, 13), (7, 3, 9), (1536, 384, 50)] {
        check_batch_invariance(rows, cols, m, (rows + cols + m) as u64);
    }
}

#[test]
fn zero_columns_give_the_bias_and_zero_rows_do_nothing() {
    let threads = Threads::new(2);
    let w = PackedF32::new(3, 0, &[]);
    let mut out = vec![f32::NAN; 6];
    gemm_on(
        Isa::Portable,
        &w,
        &[],
        2,
        Some(&[1.0, 2.0, 3.0]),
        &mut out,
        &threads,
    );
    assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let w = PackedF32::new(4, 8, &[0.5; 32]);
    let mut out: Vec<f32> = Vec::new();
    for path in supported_isas() {
        gemm_on(path, &w, &[], 0, None, &mut out, &threads);
    }
}

#[test]
fn packing_keeps_every_row() {
    let data = random_weights(37, 19, 4);
    let w = PackedF32::new(37, 19, &data);
    for j in 0..37 {
        assert_eq!(w.row(j), data[j * 19..(j + 1) * 19]);
    }
}

#[test]
#[should_panic(expected = "bias of 2 values for 3 outputs")]
fn rejects_a_bias_of_the_wrong_length() {
    let w = PackedF32::new(3, 4, &[0.0; 12]);
    let mut out = vec![0f32; 3];
    gemm_on(
        Isa::Portable,
        &w,
        &[0.0; 4],
        1,
        Some(&[1.0, 2.0]),
        &mut out,
        &Threads::new(1),
    );
}

/// The AVX-512 kernel is the AVX2 one on wider tiles: every output the same bits, including
/// partial panels, an odd panel count and rows past a 12-row tile.
#[test]
fn the_avx512_kernel_gives_the_avx2_bits() {
    if !supported_isas().contains(&Isa::Avx512Vnni) {
        return;
    }
    let threads = Threads::new(2);
    for (rows, cols, m) in [
        (40, 300, 53),
        (1152, 384, 29),
        (16, 257, 13),
        (7, 3, 9),
        (49, 600, 100),
    ] {
        let seed = (rows * 7 + cols + m) as u64;
        let w = PackedF32::new(rows, cols, &random_weights(rows, cols, seed));
        let x = random_activations(m * cols, seed + 1);
        let bias = random_weights(1, rows, seed + 2);
        for b in [None, Some(&bias[..])] {
            assert_eq!(
                run(Isa::Avx512Vnni, &w, &x, m, b, &threads),
                run(Isa::Avx2, &w, &x, m, b, &threads),
                "[{rows}x{cols}] m={m}"
            );
        }
    }
}
