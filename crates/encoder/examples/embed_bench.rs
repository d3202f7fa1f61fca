//! Embedding throughput of one encoder model through its engine, as the server runs it.
//!
//!     cargo run --release -p encoder --example embed_bench -- \
//!         --model models/cache/all-MiniLM-L6-v2 --texts texts.txt --threads 2 --rounds 3 \
//!         [--precision auto|f32|bf16]
//!
//! Reads one text per line, tokenizes them (timed, as sentence-transformers' `encode` includes
//! its tokenizer), submits them in requests of `--batch` texts all at once (the engine packs
//! passes of `--max-batch-tokens`), and waits for every answer. Prints one JSON object per
//! round (texts/s, tokens/s counting special tokens, seconds) and, with `--embeddings-out`,
//! writes the last round's vectors as little-endian f32, text after text.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use encoder::{EngineConfig, Output, Precision, Truncate};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    texts: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Texts per request.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 2048)]
    max_batch_tokens: usize,
    #[arg(long)]
    embeddings_out: Option<PathBuf>,
    /// What the matrix products run at: auto (bf16 with AMX, else f32), f32 or bf16.
    #[arg(long, default_value = "auto")]
    precision: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)?
        .lines()
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!texts.is_empty(), "no texts in {}", args.texts.display());
    let precision = match args.precision.as_str() {
        "auto" => Precision::Auto,
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        other => anyhow::bail!("--precision {other}: expected auto, f32 or bf16"),
    };
    let handle = encoder::start(
        &args.model,
        EngineConfig {
            threads: args.threads,
            max_batch_tokens: args.max_batch_tokens,
            max_queue: texts.len().div_ceil(args.batch.max(1)) + 1,
            nice: 0,
            precision,
        },
    )?;
    let precision = handle.config().precision.name();
    let round = || -> anyhow::Result<(f64, usize, Vec<Vec<f32>>)> {
        let started = Instant::now();
        let mut pending = Vec::new();
        let mut tokens = 0;
        for chunk in texts.chunks(args.batch.max(1)) {
            let inputs = chunk
                .iter()
                .map(|t| handle.text().encode("", t, Truncate::End))
                .collect::<Result<Vec<_>, _>>()?;
            tokens += inputs.iter().map(|e| e.len()).sum::<usize>();
            pending.push(handle.submit(inputs)?);
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for p in pending {
            match p.blocking_recv()?? {
                Output::Embeddings(v) => vectors.extend(v),
                Output::Logits(_) => anyhow::bail!("{} is a cross-encoder", args.model.display()),
            }
        }
        Ok((started.elapsed().as_secs_f64(), tokens, vectors))
    };
    // Warm-up: page in the weights, grow the buffers.
    round()?;
    let mut last = Vec::new();
    for r in 0..args.rounds {
        let (secs, tokens, vectors) = round()?;
        println!(
            "{}",
            serde_json::json!({
                "impl": format!("cohost {precision}"),
                "precision": precision,
                "round": r,
                "texts": texts.len(),
                "tokens": tokens,
                "seconds": secs,
                "texts_per_s": texts.len() as f64 / secs,
                "tokens_per_s": tokens as f64 / secs,
                "threads": args.threads,
            })
        );
        last = vectors;
    }
    if let Some(path) = args.embeddings_out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for v in &last {
            for x in v {
                f.write_all(&x.to_le_bytes())?;
            }
        }
    }
    Ok(())
}
