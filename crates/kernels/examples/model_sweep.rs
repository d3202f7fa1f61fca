//! One forward step's matmuls, as the model runs them: every (fused) matrix of SmolLM2-135M Q4_1
//! (30 layers and the Q8_0 LM head, 96 MB, more than a core's caches hold) multiplied by `m`
//! activation rows, in layer order, on the CPU's best path (or `path`). It prints the time per sweep, the
//! weight bytes streamed per second (for decode, `m = 1`, to set against `membw` without the
//! rest of the engine in the figure) and the multiply-adds' rate (for a prefill chunk, `m = 256`,
//! against the compute peak).
//!
//! `cargo run --release -p kernels --example model_sweep -- [threads] [sweeps] [layers] [m]
//! [path]`: with fewer layers (and then no LM head) the weights stay in cache, which shows the
//! kernels' own ceiling; 0 layers is the LM head alone.
use std::time::Instant;

use kernels::testing::{random_activations, random_blocks};
use kernels::{isa, matmul_on, supported_isas, Isa, Layout, QMatrix, QuantType, Scratch, Threads};

fn main() {
    let mut args = std::env::args().skip(1);
    let nt: usize = args.next().map_or(2, |a| a.parse().expect("threads"));
    let sweeps: usize = args.next().map_or(200, |a| a.parse().expect("sweeps"));
    let layers: u64 = args.next().map_or(30, |a| a.parse().expect("layers"));
    let m: usize = args.next().map_or(1, |a| a.parse().expect("m"));
    let arg = args.next();
    // `avx512vnni-rows`, `avx2-rows`: the path on matrices in the row layout, for comparison.
    let rows_layout = arg.as_deref().is_some_and(|a| a.ends_with("-rows"));
    let path = match arg.as_deref().map(|a| a.trim_end_matches("-rows")) {
        None => isa(),
        Some("avx512vnni") => Isa::Avx512Vnni,
        Some("avx2") => Isa::Avx2,
        Some("portable") => Isa::Portable,
        Some(other) => panic!("unknown path {other:?} (avx512vnni, avx2, portable)"),
    };
    assert!(
        supported_isas().contains(&path),
        "{path:?} not supported here"
    );
    let laid_out = |ty: QuantType, rows: usize, cols: usize, seed: u64| {
        let layout = if rows_layout {
            Layout::Rows
        } else {
            Layout::for_path(path, ty, rows)
        };
        QMatrix::with_layout(ty, rows, cols, random_blocks(ty, rows, cols, seed), layout)
            .expect("valid sizes")
    };
    // q|k|v and gate|up fused, as the model loads them.
    let layer = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
    let mut mats: Vec<QMatrix> = Vec::new();
    for l in 0..layers {
        for (i, &(rows, cols)) in layer.iter().enumerate() {
            mats.push(laid_out(QuantType::Q4_1, rows, cols, l * 8 + i as u64));
        }
    }
    if layers >= 30 || layers == 0 {
        mats.push(laid_out(QuantType::Q8_0, 49152, 576, 999));
    }
    let bytes: usize = mats.iter().map(QMatrix::weight_bytes).sum();
    let flops: usize = mats.iter().map(|w| 2 * m * w.rows() * w.cols()).sum();
    let threads = Threads::new(nt);
    let mut scratch = Scratch::default();
    let x = random_activations(m * 1536, 7);
    let mut out = vec![0f32; m * 49152];
    let mut sweep = || {
        for w in &mats {
            let cols = w.cols();
            let (x, out) = (&x[..m * cols], &mut out[..m * w.rows()]);
            matmul_on(path, w, x, m, out, &mut scratch, &threads);
        }
    };
    for _ in 0..10 {
        sweep();
    }
    let mut times: Vec<f64> = (0..sweeps)
        .map(|_| {
            let t = Instant::now();
            sweep();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{} threads {nt} m {m}: {:.1} MB per sweep, median {:.3} ms ({:.1} GB/s, {:.0} GFLOP/s), \
         best {:.3} ms ({:.0} GFLOP/s)",
        path.name(),
        bytes as f64 / 1e6,
        med * 1e3,
        bytes as f64 / med / 1e9,
        flops as f64 / med / 1e9,
        times[0] * 1e3,
        flops as f64 / times[0] / 1e9,
    );
}
