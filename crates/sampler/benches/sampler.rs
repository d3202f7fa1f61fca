//! One sampling step over realistic logits, against candle-transformers' `LogitsProcessor` on
//! the same logits as the baseline.
//!
//! Run: `cargo bench -p sampler -- --warm-up-time 1 --measurement-time 3`
//!
//! Row shape: a Gaussian bulk (sigma 2.5) with a head of 64 tokens at `16 - 1.5 * sqrt(rank)`
//! placed at random ids. At T=1 the top token has about 40% of the mass; at T=0.3 the nucleus
//! is a handful of tokens. That is the shape of a language model's next-token logits, not
//! uniform noise (which would make top-p keep most of the vocabulary).
//!
//! Settings (ours / candle):
//! - `greedy`: temperature 0 / `Sampling::ArgMax`.
//! - `t0.7_k50`: T=0.7, k=50, p=0.99 (p is always on in Cohere's API; 0.99 is the closest to
//!   off) / `Sampling::TopK { k: 50, temperature: 0.7 }`.
//! - `default_p0.75`: T=0.3, k=0, p=0.75, Cohere's defaults / `Sampling::TopP`.
//! - `full_chain`: frequency and presence penalties 0.5 over a 1,000-token history, k=40, p=0.9,
//!   T=0.7, logprobs / candle's way of doing the same work: `utils::apply_repeat_penalty`, then
//!   `Sampling::TopKThenTopP`, then a log-softmax on the tensor for the logprob.
//!
//! Both sides run on one thread: the sampler never spawns any, and candle's CPU ops (and the
//! rayon pool behind them) are limited to one through `RAYON_NUM_THREADS=1`, set at the start
//! of the run before candle or rayon read it (an explicit value from the environment is kept).
//!
//! The sampler may modify its row, so each iteration gets a fresh copy made outside the timed
//! region (`BatchSize::PerIteration`); the candle tensor is built once, outside as well.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sampler::{Sampler, SamplingParams};
use std::hint::black_box;

const VOCABS: [usize; 3] = [49_152, 151_936, 262_144];

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn realistic_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut row: Vec<f32> = (0..vocab)
        .map(|_| {
            // Box-Muller.
            let (u, v) = (uniform(&mut rng), uniform(&mut rng));
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 2.5) as f32
        })
        .collect();
    for rank in 0..64 {
        let id = (rng.next_u64() % vocab as u64) as usize;
        row[id] = 16.0 - 1.5 * (rank as f32).sqrt();
    }
    row
}

/// A 1,000-token history with repeats, as text has: ids skewed towards a few hundred tokens.
fn history(vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    (0..1000)
        .map(|_| {
            let r = uniform(&mut rng);
            ((r * r * r * vocab as f64) as u32).min(vocab as u32 - 1)
        })
        .collect()
}

struct Setting {
    name: &'static str,
    ours: SamplingParams,
    candle: Sampling,
    penalties: bool,
}

fn settings() -> Vec<Setting> {
    let base = SamplingParams {
        seed: Some(42),
        ..SamplingParams::default()
    };
    vec![
        Setting {
            name: "greedy",
            ours: SamplingParams {
                temperature: 0.0,
                ..base.clone()
            },
            candle: Sampling::ArgMax,
            penalties: false,
        },
        Setting {
            name: "t0.7_k50",
            ours: SamplingParams {
                temperature: 0.7,
                k: 50,
                p: 0.99,
                ..base.clone()
            },
            candle: Sampling::TopK {
                k: 50,
                temperature: 0.7,
            },
            penalties: false,
        },
        Setting {
            name: "default_p0.75",
            ours: base.clone(),
            candle: Sampling::TopP {
                p: 0.75,
                temperature: 0.3,
            },
            penalties: false,
        },
        Setting {
            name: "full_chain",
            ours: SamplingParams {
                temperature: 0.7,
                k: 40,
                p: 0.9,
                frequency_penalty: 0.5,
                presence_penalty: 0.5,
                logprobs: true,
                ..base.clone()
            },
            candle: Sampling::TopKThenTopP {
                k: 40,
                p: 0.9,
                temperature: 0.7,
            },
            penalties: true,
        },
    ]
}

/// candle's logprob of `token`: log-softmax over the tensor.
fn candle_logprob(logits: &Tensor, token: u32) -> f32 {
    let max = logits.max_keepdim(0).unwrap();
    let shifted = logits.broadcast_sub(&max).unwrap();
    let log_sum = shifted
        .exp()
        .unwrap()
        .sum_keepdim(0)
        .unwrap()
        .log()
        .unwrap();
    let log_probs = shifted.broadcast_sub(&log_sum).unwrap();
    log_probs
        .get(token as usize)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn bench_sampling(c: &mut Criterion) {
    // candle reads this for its thread count, and rayon sizes its global pool from it on first
    // use; nothing has started a thread yet here.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    for setting in settings() {
        let mut group = c.benchmark_group(setting.name);
        for vocab in VOCABS {
            let logits = realistic_logits(vocab, vocab as u64);
            let context = history(vocab);

            let mut base = Sampler::new(setting.ours.clone(), vocab).unwrap();
            if setting.penalties {
                base.observe_all(&context);
            }
            let mut running = base.clone();
            group.bench_with_input(BenchmarkId::new("cohost", vocab), &vocab, |b, _| {
                b.iter_batched_ref(
                    // A fresh row, and for penalties a sampler whose history stays 1,000 tokens.
                    || (logits.clone(), setting.penalties.then(|| base.clone())),
                    |(row, fresh)| match fresh {
                        Some(s) => black_box(s.sample(row).unwrap()),
                        None => black_box(running.sample(row).unwrap()),
                    },
                    BatchSize::PerIteration,
                )
            });

            let tensor = Tensor::from_vec(logits.clone(), vocab, &Device::Cpu).unwrap();
            let mut processor = LogitsProcessor::from_sampling(42, setting.candle.clone());
            group.bench_with_input(BenchmarkId::new("candle", vocab), &vocab, |b, _| {
                b.iter(|| {
                    if setting.penalties {
                        let penalised = candle_transformers::utils::apply_repeat_penalty(
                            &tensor, 1.1, &context,
                        )
                        .unwrap();
                        let token = processor.sample(&penalised).unwrap();
                        black_box((token, candle_logprob(&tensor, token)))
                    } else {
                        black_box((processor.sample(&tensor).unwrap(), 0.0))
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_sampling);
criterion_main!(benches);
