//! all-MiniLM-L6-v2 (fetched by models/fetch-minilm.sh) against sentence-transformers' embeddings
//! of the same weights on a multilingual corpus (golden/embed-all-MiniLM-L6-v2.json, made by
//! golden-gen/make_embed_golden.py), and the batch invariance the engine relies on.

use std::path::PathBuf;

use encoder::{Encoded, Precision, Truncate};
use kernels::Threads;
use serde::Deserialize;

/// The bound; f32 with another summation order lands far above it (the test prints the
/// lowest: 1 - cosine is around 1e-12), bf16 closer (around 1e-5).
const MIN_COSINE: f64 = 0.9999;

#[derive(Deserialize)]
struct Golden {
    max_seq_length: usize,
    dimension: usize,
    texts: Vec<GoldenText>,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("COHOST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/cache"))
        .join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run models/fetch-minilm.sh (or set COHOST_MODEL_DIR)",
        dir.display()
    );
    dir
}

fn golden() -> Golden {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/embed-all-MiniLM-L6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_sentence_transformers_and_do_not_depend_on_the_batch() {
    check_golden(Precision::F32);
}

/// On a CPU without AMX this runs the portable bf16 path: slower, the same bound.
#[test]
fn bf16_embeddings_stay_within_the_bound() {
    check_golden(Precision::Bf16);
}

fn check_golden(precision: Precision) {
    let (model, text) = encoder::load(&model_dir(), precision).unwrap();
    assert_eq!(model.precision(), precision);
    let golden = golden();
    assert_eq!(model.spec().max_tokens, golden.max_seq_length);
    assert_eq!(model.spec().dimension(), golden.dimension);
    let inputs: Vec<Encoded> = golden
        .texts
        .iter()
        .map(|g| text.encode("", &g.text, Truncate::End).unwrap())
        .collect();
    for (g, e) in golden.texts.iter().zip(&inputs) {
        assert_eq!(e.ids, g.ids, "token ids of {:?}", g.text);
    }
    let threads = Threads::new(2);
    let mut scratch = encoder::model::Scratch::default();
    let all: Vec<&Encoded> = inputs.iter().collect();
    let batch = model.embed(&all, &threads, &mut scratch);
    let mut worst = (1.0f64, String::new());
    for (g, v) in golden.texts.iter().zip(&batch) {
        let c = cosine(v, &g.embedding);
        if c < worst.0 {
            worst = (c, g.text.clone());
        }
        assert!(
            c >= MIN_COSINE,
            "{precision:?}: cosine {c} for {:?}",
            g.text
        );
        let norm: f64 = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "the Normalize module: norm {norm}"
        );
    }
    println!(
        "{precision:?}: lowest cosine to sentence-transformers: {:.9} (1 - cos = {:.2e}) for {:?}",
        worst.0,
        1.0 - worst.0,
        worst.1.chars().take(40).collect::<String>()
    );

    // Alone, in reverse order, and on one thread: the same bits.
    let one = Threads::new(1);
    for (i, e) in inputs.iter().enumerate() {
        let alone = model.embed(&[e], &one, &mut scratch);
        assert_eq!(alone[0], batch[i], "text {i} alone differs from the batch");
    }
    let reversed: Vec<&Encoded> = inputs.iter().rev().collect();
    let back = model.embed(&reversed, &threads, &mut scratch);
    for (i, v) in back.iter().rev().enumerate() {
        assert_eq!(*v, batch[i], "text {i} differs in another batch order");
    }
}

#[test]
fn truncation_follows_the_request() {
    let (model, text) = encoder::load(&model_dir(), Precision::F32).unwrap();
    let max = model.spec().max_tokens;
    let long = "word ".repeat(400) + "tail";
    match text.encode("", &long, Truncate::None) {
        Err(encoder::TextError::TooLong { tokens, max: m }) => {
            assert_eq!(m, max);
            assert_eq!(tokens, 403);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let end = text.encode("", &long, Truncate::End).unwrap();
    let start = text.encode("", &long, Truncate::Start).unwrap();
    assert_eq!(end.len(), max);
    assert_eq!(start.len(), max);
    let tail = text.encode("", "tail", Truncate::None).unwrap();
    // START keeps the end of the text (and the special tokens at both ends).
    assert_eq!(start.ids[max - 2], tail.ids[1]);
    assert_eq!(start.ids[0], tail.ids[0]);
    assert_eq!(start.ids[max - 1], tail.ids[2]);
    assert_ne!(end.ids[max - 2], tail.ids[1]);
}
