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

/// The paths to measure: the CPU's best unless `KERNELS_BENCH_ISA` lists others
/// (`avx512vnni,avx2,portable`); several paths run interleaved, shape by shape, so that
/// their figures come from the same minutes of a noisy machine.
fn paths() -> Vec<Isa> {
    let Ok(list) = std::env::var("KERNELS_BENCH_ISA") else {
        return vec![isa()];
    };
    list.split(',')
        .map(|name| {
            let want = match name {
                "avx512vnni" => Isa::Avx512Vnni,
                "avx2" => Isa::Avx2,
                "portable" => Isa::Portable,
                other => panic!("unknown KERNELS_BENCH_ISA path {other:?}"),
            };
            assert!(
                supported_isas().contains(&want),
                "{want:?} not supported here"
            );
            want
        })
        .collect()
}

/// Only the shapes whose name contains `KERNELS_BENCH_SHAPE`, if set.
fn shape_wanted(name: &str) -> bool {
    std::env::var("KERNELS_BENCH_SHAPE").map_or(true, |f| name.contains(&f))
}

/// A comma-separated list of numbers from the environment.
fn env_list(name: &str) -> Option<Vec<usize>> {
    let v = std::env::var(name).ok()?;
    Some(
        v.split(',')
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|_| panic!("{name}: bad number {t:?}"))
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    let paths = paths();
    eprintln!("kernels paths: {paths:?}");
    // `KERNELS_BENCH_M=256` measures a prefill chunk.
    let ms = env_list("KERNELS_BENCH_M").unwrap_or(vec![1, 4, 16, 64]);
    let thread_counts = env_list("KERNELS_BENCH_THREADS").unwrap_or(vec![1, 2]);
    for nt in thread_counts {
        let threads = Threads::new(nt);
        let mut g = c.benchmark_group(format!("matmul_t{nt}"));
        for &(name, ty, rows, cols) in SHAPES.iter().filter(|s| shape_wanted(s.0)) {
            let w = random_matrix(ty, rows, cols, 1);
            for &m in &ms {
                let x = random_activations(m * cols, 2);
                let mut out = vec![0f32; m * rows];
                let mut scratch = Scratch::default();
                // Bytes of weights streamed per call: GB/s against the memory bandwidth.
                g.throughput(Throughput::Bytes(w.weight_bytes() as u64));
                for &path in &paths {
                    let id = if paths.len() > 1 {
                        format!("m{m}/{}", path.name())
                    } else {
                        format!("m{m}")
                    };
                    let w = w.for_path(path);
                    g.bench_with_input(BenchmarkId::new(name, id), &m, |b, &m| {
                        b.iter(|| matmul_on(path, &w, &x, m, &mut out, &mut scratch, &threads))
                    });
                }
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
