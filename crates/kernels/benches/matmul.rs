//! Matmul throughput at the default models' real shapes.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::testing::{random_activations, random_matrix};
use kernels::{isa, matmul_on, supported_isas, Isa, QuantType, Scratch, Threads};

/// (name, format, rows, cols) of the matmuls in SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M.
const SHAPES: &[(&str, QuantType, usize, usize)] = &[
    ("smol_qo", QuantType::Q4_1, 576, 576),
    ("smol_kv", QuantType::Q4_1, 192, 576),
    ("smol_gate_up", QuantType::Q4_1, 1536, 576),
    ("smol_down", QuantType::Q4_1, 576, 1536),
    ("smol_lm_head", QuantType::Q8_0, 49152, 576),
    ("gemma_q", QuantType::Q5_0, 1024, 640),
    ("gemma_kv", QuantType::Q5_0, 256, 640),
    ("gemma_v", QuantType::Q8_0, 256, 640),
    ("gemma_o", QuantType::Q4K, 640, 1024),
    ("gemma_gate_up", QuantType::Q5_0, 2048, 640),
    ("gemma_down_q6k", QuantType::Q6K, 640, 2048),
    ("gemma_down_q4k", QuantType::Q4K, 640, 2048),
    ("gemma_lm_head", QuantType::Q8_0, 262144, 640),
];

/// The path to measure: the CPU's best unless `KERNELS_BENCH_ISA` names another
/// (`avx512vnni`, `avx2`, `portable`).
fn path() -> Isa {
    let want = match std::env::var("KERNELS_BENCH_ISA").as_deref() {
        Ok("avx512vnni") => Isa::Avx512Vnni,
        Ok("avx2") => Isa::Avx2,
        Ok("portable") => Isa::Portable,
        _ => isa(),
    };
    assert!(
        supported_isas().contains(&want),
        "{want:?} not supported here"
    );
    want
}

/// Only the shapes whose name contains `KERNELS_BENCH_SHAPE`, if set.
fn shape_wanted(name: &str) -> bool {
    std::env::var("KERNELS_BENCH_SHAPE").map_or(true, |f| name.contains(&f))
}

fn bench(c: &mut Criterion) {
    let path = path();
    eprintln!("kernels path: {path:?}");
    let filter_m: Option<usize> = std::env::var("KERNELS_BENCH_M")
        .ok()
        .and_then(|v| v.parse().ok());
    let thread_counts: Vec<usize> = std::env::var("KERNELS_BENCH_THREADS")
        .ok()
        .and_then(|v| v.split(',').map(|t| t.parse().ok()).collect())
        .unwrap_or(vec![1, 2]);
    for nt in thread_counts {
        let threads = Threads::new(nt);
        let mut g = c.benchmark_group(format!("matmul_t{nt}"));
        for &(name, ty, rows, cols) in SHAPES.iter().filter(|s| shape_wanted(s.0)) {
            let w = random_matrix(ty, rows, cols, 1);
            for m in [1usize, 4, 16, 64] {
                if filter_m.is_some_and(|f| f != m) {
                    continue;
                }
                let x = random_activations(m * cols, 2);
                let mut out = vec![0f32; m * rows];
                let mut scratch = Scratch::default();
                // Bytes of weights streamed per call: GB/s against the memory bandwidth.
                g.throughput(Throughput::Bytes(w.weight_bytes() as u64));
                g.bench_with_input(BenchmarkId::new(name, format!("m{m}")), &m, |b, &m| {
                    b.iter(|| matmul_on(path, &w, &x, m, &mut out, &mut scratch, &threads))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // Defaults kept short (104 cases); `--measurement-time` etc. on the command line override.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
