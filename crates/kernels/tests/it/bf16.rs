//! `gemm_bf16` against the f64 reference over the same bf16-rounded operands on every path this
//! CPU runs (AMX where present), and the encoder's property: a row's result is bit-identical
//! whatever rows share its call and however many threads run it.
use kernels::testing::{random_activations, Rng};
use kernels::{
    bf16_paths, bf16_to_f32, f32_to_bf16, gemm_bf16_on, gemm_bf16_reference, Bf16Path, PackedBf16,
    Threads,
};
use proptest::prelude::*;

fn random_weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols).map(|_| 0.2 * rng.unit()).collect()
}

fn run(
    path: Bf16Path,
    w: &PackedBf16,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    threads: &Threads,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; m * w.rows()];
    gemm_bf16_on(path, w, x, m, bias, &mut out, threads);
    out
}

/// Products of bf16 values are exact in f32, so the only error left is the f32 rounding of the
/// sums: `k * eps * sum |w x|`, doubled for any order of adds.
fn check(rows: usize, cols: usize, m: usize, with_bias: bool, seed: u64) {
    let threads = Threads::new(2);
    let w = PackedBf16::new(rows, cols, &random_weights(rows, cols, seed));
    let x = random_activations(m * cols, seed + 7);
    let bias: Option<Vec<f32>> = with_bias.then(|| random_weights(1, rows, seed + 9));
    let want = gemm_bf16_reference(&w, &x, m, bias.as_deref());
    let wrows: Vec<Vec<f32>> = (0..rows).map(|j| w.row(j)).collect();
    for path in bf16_paths() {
        let got = run(path, &w, &x, m, bias.as_deref(), &threads);
        for i in 0..m {
            for j in 0..rows {
                let abs: f64 = (0..cols)
                    .map(|k| (wrows[j][k] as f64 * x[i * cols + k] as f64).abs())
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn gemm_bf16_matches_reference_on_random_shapes(
        rows in 1usize..90, cols in 1usize..300, m in 1usize..70, bias: bool, seed in 0u64..1000,
    ) {
        check(rows, cols, m, bias, seed);
    }
}

#[test]
fn encoder_shapes_match_the_reference() {
    for (rows, cols) in [(1152, 384), (1536, 384), (384, 1536), (1, 384)] {
        for m in [1, 16, 33, 97] {
            check(rows, cols, m, true, (rows * 31 + cols + m) as u64);
        }
    }
}

#[test]
fn a_row_is_the_same_alone_and_in_any_batch() {
    let (one, two) = (Threads::new(1), Threads::new(2));
    for (rows, cols, m) in [(40, 300, 53), (16, 257, 13), (7, 3, 9), (1536, 384, 50)] {
        let seed = (rows + cols + m) as u64;
        let w = PackedBf16::new(rows, cols, &random_weights(rows, cols, seed));
        let x = random_activations(m * cols, seed + 3);
        let bias = random_weights(1, rows, seed + 5);
        for path in bf16_paths() {
            let all = run(path, &w, &x, m, Some(&bias), &two);
            assert_eq!(
                all,
                run(path, &w, &x, m, Some(&bias), &one),
                "{path:?}: threads"
            );
            for i in 0..m {
                let alone = run(path, &w, &x[i * cols..(i + 1) * cols], 1, Some(&bias), &two);
                assert_eq!(
                    alone[..],
                    all[i * rows..(i + 1) * rows],
                    "{path:?} [{rows}x{cols}] m={m}: row {i} differs alone"
                );
            }
            let cut = m / 3;
            let tail = run(path, &w, &x[cut * cols..], m - cut, Some(&bias), &two);
            assert_eq!(
                tail[..],
                all[cut * rows..],
                "{path:?}: a split batch differs"
            );
        }
    }
}

#[test]
fn rounding_is_to_nearest_even() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
    assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
    assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(f32_to_bf16(1.0 + 1.5 / 256.0), 0x3f81);
    assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
}

#[test]
fn zero_columns_give_the_bias_and_packing_keeps_rounded_rows() {
    let threads = Threads::new(2);
    let w = PackedBf16::new(3, 0, &[]);
    for path in bf16_paths() {
        let mut out = vec![f32::NAN; 6];
        gemm_bf16_on(path, &w, &[], 2, Some(&[1.0, 2.0, 3.0]), &mut out, &threads);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
    let data = random_weights(37, 45, 4);
    let w = PackedBf16::new(37, 45, &data);
    for j in 0..37 {
        let want: Vec<f32> = data[j * 45..(j + 1) * 45]
            .iter()
            .map(|&v| bf16_to_f32(f32_to_bf16(v)))
            .collect();
        assert_eq!(w.row(j), want);
    }
}
