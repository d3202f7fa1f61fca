//! Decode throughput of the default model, single sequence and batched. Timing goals live here,
//! not in timed tests: run with
//! `cargo test --release -p runner --test model_bench -- --ignored --nocapture`.

use std::path::PathBuf;
use std::time::Instant;

use runner::model::{load_gguf, BatchItem, BatchModel};

const PROMPT_LEN: usize = 30;
const DECODE_STEPS: usize = 64;

fn model_path() -> PathBuf {
    let dir = std::env::var_os("COHOST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/cache"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run models/fetch-default.sh",
        path.display()
    );
    path
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
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
        .map(|(i, p)| BatchItem {
            seq: i as u64,
            tokens: p,
        })
        .collect();
    let t0 = Instant::now();
    model.forward(&items, &mut logits).unwrap();
    let prefill = (batch * PROMPT_LEN) as f64 / t0.elapsed().as_secs_f64();
    let mut next: Vec<[u32; 1]> = (0..batch)
        .map(|i| [argmax(&logits[i * vocab..(i + 1) * vocab])])
        .collect();
    let t0 = Instant::now();
    for _ in 0..DECODE_STEPS {
        let items: Vec<BatchItem> = next
            .iter()
            .enumerate()
            .map(|(i, t)| BatchItem {
                seq: i as u64,
                tokens: t,
            })
            .collect();
        model.forward(&items, &mut logits).unwrap();
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
    let (mut model, _) = load_gguf(&model_path()).unwrap();
    run(model.as_mut(), 1); // warm-up
    for batch in [1, 8] {
        let (prefill, decode) = run(model.as_mut(), batch);
        eprintln!(
            "batch {batch}: prefill {prefill:.1} tok/s ({PROMPT_LEN}-token prompts), decode {decode:.1} tok/s aggregate ({:.1} per sequence)",
            decode / batch as f64
        );
    }
}
