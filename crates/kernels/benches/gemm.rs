//! Dense f32 `gemm` throughput (GFLOP/s) at all-MiniLM-L6-v2's shapes, for a packed batch of
//! `m` token rows; also `gemm_bf16` on each fast path the CPU has (AMX, AVX-512 BF16) and the int8 `matmul` on the same shapes
//! with Q8_0 weights, for comparison.
//! `KERNELS_BENCH_THREADS` (default 1,2) and `KERNELS_BENCH_M` (default 32,256,1024) narrow it.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::testing::{random_activations, random_matrix};
use kernels::{
    bf16_paths, gemm, gemm_bf16_on, matmul, Bf16Path, PackedBf16, PackedF32, QuantType, Scratch,
    Threads,
};

/// (name, out features, in features): q|k|v fused, attention out, FFN up, FFN down.
const SHAPES: &[(&str, usize, usize)] = &[
    ("minilm_qkv", 1152, 384),
    ("minilm_o", 384, 384),
    ("minilm_up", 1536, 384),
    ("minilm_down", 384, 1536),
];

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.split(',').map(|t| t.parse().ok()).collect())
        .unwrap_or(default.to_vec())
}

fn bench(c: &mut Criterion) {
    for nt in env_list("KERNELS_BENCH_THREADS", &[1, 2]) {
        let threads = Threads::new(nt);
        let mut g = c.benchmark_group(format!("gemm_t{nt}"));
        for &(name, rows, cols) in SHAPES {
            let dense: Vec<f32> = random_activations(rows * cols, 3)
                .iter()
                .map(|v| v * 0.05)
                .collect();
            let w = PackedF32::new(rows, cols, &dense);
            let wb = PackedBf16::new(rows, cols, &dense);
            let q = random_matrix(QuantType::Q8_0, rows, cols, 3);
            let bias = vec![0.1f32; rows];
            for m in env_list("KERNELS_BENCH_M", &[32, 256, 1024]) {
                let x = random_activations(m * cols, 2);
                let mut out = vec![0f32; m * rows];
                g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
                g.bench_with_input(BenchmarkId::new(format!("{name}_f32"), m), &m, |b, &m| {
                    b.iter(|| gemm(&w, &x, m, Some(&bias), &mut out, &threads))
                });
                // Every fast bf16 path this CPU has (AMX, AVX-512 BF16).
                for path in bf16_paths()
                    .into_iter()
                    .filter(|p| *p != Bf16Path::Portable)
                {
                    let id = BenchmarkId::new(format!("{name}_bf16_{path:?}"), m);
                    g.bench_with_input(id, &m, |b, &m| {
                        b.iter(|| gemm_bf16_on(path, &wb, &x, m, Some(&bias), &mut out, &threads))
                    });
                }
                let mut scratch = Scratch::default();
                g.bench_with_input(BenchmarkId::new(format!("{name}_q8_0"), m), &m, |b, &m| {
                    b.iter(|| matmul(&q, &x, m, &mut out, &mut scratch, &threads))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
