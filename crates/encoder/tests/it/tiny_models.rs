//! The tiny random fixtures (tests/fixtures/, made by golden-gen/make_tiny_models.py) against
//! what `transformers` and sentence-transformers compute from the same files: a BERT
//! cross-encoder (ms-marco layout, f16 weights), an XLM-RoBERTa cross-encoder (bge-reranker
//! layout, f32), and a sentence-transformers embedder with CLS pooling, prompts and a 24-token
//! window (bf16).

use std::path::PathBuf;

use encoder::{Encoded, EncoderKind, Precision, Truncate};
use kernels::Threads;
use serde::Deserialize;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Pairs {
    pairs: Vec<Pair>,
}

#[derive(Deserialize)]
struct Pair {
    query: String,
    document: String,
    ids: Vec<u32>,
    logit: f32,
}

/// f32 with another summation order: a few ulps of the values involved.
fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 2e-5 * (1.0 + want.abs())
}

fn check_reranker(name: &str) {
    let dir = fixture(name);
    assert_eq!(encoder::config::detect(&dir), Some(EncoderKind::Rerank));
    let (model, text) = encoder::load(&dir, Precision::F32).unwrap();
    assert_eq!(model.spec().kind, EncoderKind::Rerank);
    let golden: Pairs = golden(name);
    let inputs: Vec<Encoded> = golden
        .pairs
        .iter()
        .map(|p| text.encode_pair(&p.query, &p.document, None).unwrap())
        .collect();
    for (p, e) in golden.pairs.iter().zip(&inputs) {
        assert_eq!(
            e.ids, p.ids,
            "{name}: ids of ({:?}, {:?})",
            p.query, p.document
        );
    }
    let threads = Threads::new(2);
    let mut scratch = encoder::model::Scratch::default();
    let all: Vec<&Encoded> = inputs.iter().collect();
    let logits = model.score(&all, &threads, &mut scratch);
    for (p, &l) in golden.pairs.iter().zip(&logits) {
        assert!(
            close(l, p.logit),
            "{name}: logit {l}, reference {} for {:?}",
            p.logit,
            p.query
        );
    }
    for (i, e) in inputs.iter().enumerate() {
        assert_eq!(
            model.score(&[e], &threads, &mut scratch)[0],
            logits[i],
            "{name}: pair {i} alone"
        );
    }
    // bf16 (AMX where the CPU has it): close to the reference, and the same alone and in a batch.
    let (bf16, _) = encoder::load(&dir, Precision::Bf16).unwrap();
    let coarse = bf16.score(&all, &threads, &mut scratch);
    let spread = golden
        .pairs
        .iter()
        .map(|p| p.logit)
        .fold(0f32, |m, l| m.max(l.abs()));
    for (p, &l) in golden.pairs.iter().zip(&coarse) {
        assert!(
            (l - p.logit).abs() <= BF16_LOGIT_TOLERANCE * spread,
            "{name}: bf16 logit {l}, reference {} for {:?}",
            p.logit,
            p.query
        );
    }
    for (i, e) in inputs.iter().enumerate() {
        assert_eq!(bf16.score(&[e], &threads, &mut scratch)[0], coarse[i]);
    }
}

/// bf16 operands carry 8 significant bits. The tiny random models (f16 weights, no training)
/// move a logit by up to about 1.7% of the largest logit's size; trained models far less.
const BF16_LOGIT_TOLERANCE: f32 = 0.03;

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_reranker("tiny-bert-reranker");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    check_reranker("tiny-xlmr-reranker");
}

#[derive(Deserialize)]
struct Embedded {
    max_seq_length: usize,
    texts: Vec<EmbeddedText>,
}

#[derive(Deserialize)]
struct EmbeddedText {
    prompt_name: Option<String>,
    text: String,
    embedding: Vec<f32>,
}

#[test]
fn sentence_transformers_prompts_pooling_and_window() {
    let dir = fixture("tiny-st-embedder");
    assert_eq!(encoder::config::detect(&dir), Some(EncoderKind::Embed));
    let (model, text) = encoder::load(&dir, Precision::F32).unwrap();
    let golden: Embedded = golden("tiny-st-embedder");
    let spec = model.spec();
    assert_eq!(spec.max_tokens, golden.max_seq_length);
    let encoder::config::Head::Embedding(head) = &spec.head else {
        panic!("an embedder")
    };
    assert_eq!(head.pooling, encoder::config::Pooling::Cls);
    assert!(!head.normalize);
    let threads = Threads::new(2);
    let mut scratch = encoder::model::Scratch::default();
    let mut truncated = 0;
    for g in &golden.texts {
        let prompt = g
            .prompt_name
            .as_ref()
            .map_or("", |n| head.prompts[n].as_str());
        let e = text.encode(prompt, &g.text, Truncate::End).unwrap();
        truncated += usize::from(e.len() == spec.max_tokens);
        let v = &model.embed(&[&e], &threads, &mut scratch)[0];
        assert_eq!(v.len(), g.embedding.len());
        for (a, b) in v.iter().zip(&g.embedding) {
            assert!(
                close(*a, *b),
                "{:?} {:?}: {a} vs {b}",
                g.prompt_name,
                g.text
            );
        }
    }
    assert!(
        truncated > 0,
        "some golden texts are longer than the window"
    );
}

#[test]
fn a_causal_lm_directory_and_a_file_are_not_encoders() {
    let tmp = std::env::temp_dir().join(format!("encoder-detect-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
    )
    .unwrap();
    assert_eq!(encoder::config::detect(&tmp), None);
    assert_eq!(encoder::config::detect(&tmp.join("config.json")), None);
    std::fs::write(
        tmp.join("config.json"),
        r#"{"architectures": ["NomicBertModel"], "model_type": "nomic_bert"}"#,
    )
    .unwrap();
    assert_eq!(
        encoder::config::detect(&tmp),
        None,
        "no sentence-transformers files"
    );
    std::fs::write(tmp.join("modules.json"), "[]").unwrap();
    assert_eq!(encoder::config::detect(&tmp), Some(EncoderKind::Embed));
    let err = encoder::config::inspect(&tmp).unwrap_err().to_string();
    assert!(err.contains("nomic_bert"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn start_truncation_keeps_the_prompt_and_max_tokens_tightens_the_window() {
    let (model, text) = encoder::load(&fixture("tiny-st-embedder"), Precision::F32).unwrap();
    let window = model.spec().max_tokens;
    let long = "bread ".repeat(40) + "rust";
    let prompt = text.encode("query: ", "", Truncate::None).unwrap();
    let start = text.encode("query: ", &long, Truncate::Start).unwrap();
    assert_eq!(start.len(), window);
    // [CLS] and the prompt's tokens first, the text's last tokens and [SEP] at the end.
    let p = prompt.len() - 1;
    assert_eq!(start.ids[..p], prompt.ids[..p]);
    assert_eq!(start.prompt_tokens, p);
    let tail = text.encode("", "rust", Truncate::None).unwrap();
    assert_eq!(start.ids[window - tail.len() + 1..], tail.ids[1..]);
    let end = text
        .encode_limited("query: ", &long, Truncate::End, Some(9))
        .unwrap();
    assert_eq!(end.len(), 9);
    assert_eq!(end.ids[..p], prompt.ids[..p]);
    assert!(matches!(
        text.encode_limited("", &long, Truncate::None, Some(9)),
        Err(encoder::TextError::TooLong { max: 9, .. })
    ));
    // A larger max_tokens than the window changes nothing.
    assert_eq!(
        text.encode_limited("", &long, Truncate::End, Some(10_000))
            .unwrap(),
        text.encode("", &long, Truncate::End).unwrap()
    );
}
