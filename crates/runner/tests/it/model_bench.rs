//! Decode and prefill throughput of the default model (and Gemma 3 when its file is present),
//! single sequence and batched. Timing goals live here, not in timed tests: run with
//! `cargo test --release -p runner --test it model_bench -- --ignored --nocapture --test-threads 1`
//! (`COHOST_THREADS` sets the forward pass's thread count).

use std::path::PathBuf;
use std::time::Instant;

use runner::model::{load_gguf_model, BatchItem, BatchModel, LoadOptions};

const PROMPT_LEN: usize = 30;
const DECODE_STEPS: usize = 64;

fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("COHOST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/cache"));
    dir.join(file)
}

fn load(file: &str) -> Box<dyn BatchModel> {
    let path = model_path(file);
    assert!(
        path.exists(),
        "{} is missing: run models/fetch-*.sh",
        path.display()
    );
    let threads = std::env::var("COHOST_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let opts = LoadOptions {
        threads,
        ..LoadOptions::default()
    };
    Box::new(load_gguf_model(&path, &opts).unwrap().0)
}

/// Prefills one `len`-token prompt in chunks of `chunk` (the engine's prefill slices); returns
/// prompt tok/s.
fn prefill(model: &mut dyn BatchModel, len: usize, chunk: usize) -> f64 {
    let prompt: Vec<u32> = (0..len).map(|t| ((t * 131 + 7) % 40_000) as u32).collect();
    let mut logits = Vec::new();
    let t0 = Instant::now();
    for piece in prompt.chunks(chunk) {
        model
            .forward(&[BatchItem::new(99, piece)], &mut logits)
            .unwrap();
    }
    let rate = len as f64 / t0.elapsed().as_secs_f64();
    model.release(99);
    rate
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

/// One decode token for each of sequences `0..next.len()`.
fn decode_items(next: &[[u32; 1]]) -> Vec<BatchItem<'_>> {
    next.iter()
        .enumerate()
        .map(|(i, t)| BatchItem::new(i as u64, t))
        .collect()
}

/// Prefills `batch` distinct prompts together, then decodes greedily; returns
/// (prefill tok/s, aggregate decode tok/s).
fn run(model: &mut dyn BatchModel, batch: usize) -> (f64, f64) {
    let vocab = model.vocab_size();
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..PROMPT_LEN)
                .map(|t| ((t * 31 + b * 977 + 100) % 40_000) as u32)
                .collect()
        })
        .collect();
    let mut logits = Vec::new();
    let items: Vec<BatchItem> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| BatchItem::new(i as u64, p))
        .collect();
    let t0 = Instant::now();
    model.forward(&items, &mut logits).unwrap();
    let prefill = (batch * PROMPT_LEN) as f64 / t0.elapsed().as_secs_f64();
    let mut next: Vec<[u32; 1]> = (0..batch)
        .map(|i| [argmax(&logits[i * vocab..(i + 1) * vocab])])
        .collect();
    let t0 = Instant::now();
    for _ in 0..DECODE_STEPS {
        model.forward(&decode_items(&next), &mut logits).unwrap();
        for (i, t) in next.iter_mut().enumerate() {
            *t = [argmax(&logits[i * vocab..(i + 1) * vocab])];
        }
    }
    let decode = (batch * DECODE_STEPS) as f64 / t0.elapsed().as_secs_f64();
    for i in 0..batch {
        model.release(i as u64);
    }
    (prefill, decode)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn decode_throughput() {
    let mut model = load("SmolLM2-135M-Instruct.Q4_1.gguf");
    run(model.as_mut(), 1); // warm-up
    for batch in [1, 4, 8, 16] {
        let (prefill, decode) = run(model.as_mut(), batch);
        eprintln!(
            "batch {batch}: prefill {prefill:.1} tok/s ({PROMPT_LEN}-token prompts), decode {decode:.1} tok/s aggregate ({:.1} per sequence)",
            decode / batch as f64
        );
    }
    for (len, chunk) in [(512, 512), (1000, 256)] {
        let rate = prefill(model.as_mut(), len, chunk);
        eprintln!("prefill of a {len}-token prompt in chunks of {chunk}: {rate:.1} tok/s");
    }
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn gemma3_throughput() {
    let mut model = load("gemma-3-270m-q4_k_m.gguf");
    run(model.as_mut(), 1); // warm-up
    for batch in [1, 8] {
        let (prefill, decode) = run(model.as_mut(), batch);
        eprintln!(
            "gemma3 batch {batch}: prefill {prefill:.1} tok/s, decode {decode:.1} tok/s aggregate"
        );
    }
    let rate = prefill(model.as_mut(), 512, 512);
    eprintln!("gemma3 prefill of a 512-token prompt: {rate:.1} tok/s");
}

/// Median time of one decode step of `batch` sequences holding `context` tokens each: runs of
/// 32 steps from a fresh prefill (prefill not timed), 5 runs.
fn decode_step_ms(model: &mut dyn BatchModel, batch: usize, context: usize) -> f64 {
    let vocab = model.vocab_size();
    let mut logits = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..5 {
        for seq in 0..batch {
            let prompt: Vec<u32> = (0..context)
                .map(|t| ((t * 131 + seq * 977 + 7) % (vocab - 1)) as u32)
                .collect();
            let item = BatchItem::new(seq as u64, &prompt);
            model.forward(&[item], &mut logits).unwrap();
        }
        let next: Vec<[u32; 1]> = (0..batch).map(|s| [(s * 31 + 5) as u32]).collect();
        let items = decode_items(&next);
        let t0 = Instant::now();
        for _ in 0..32 {
            model.forward(&items, &mut logits).unwrap();
        }
        runs.push(t0.elapsed().as_secs_f64() * 1000.0 / 32.0);
        for seq in 0..batch {
            model.release(seq as u64);
        }
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// How a decode step's time grows with the context held (attention reads the whole cache).
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn decode_step_time_by_context() {
    let mut model = load("SmolLM2-135M-Instruct.Q4_1.gguf");
    for (batch, context) in [(1, 64), (1, 1000), (16, 64), (16, 500)] {
        let ms = decode_step_ms(model.as_mut(), batch, context);
        eprintln!(
            "decode step, {batch} sequence(s) at context {context}: {ms:.2} ms ({:.1} tok/s)",
            batch as f64 * 1000.0 / ms
        );
    }
}
