//! The engine thread: results equal the model's own, whatever requests share a pass; a full
//! queue refuses at once; a request whose caller left is dropped without harm.

use std::path::PathBuf;

use encoder::{EngineConfig, EngineError, Output, Precision, Truncate};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "text number {i} about bread and rust {}",
                "paris ".repeat(i % 7)
            )
        })
        .collect()
}

#[test]
fn concurrent_requests_get_the_model_s_own_results() {
    let dir = fixture("tiny-st-embedder");
    let (model, text) = encoder::load(&dir, Precision::Auto).unwrap();
    let threads = kernels::Threads::new(1);
    let mut scratch = encoder::model::Scratch::default();
    let handle = encoder::start(
        &dir,
        EngineConfig {
            threads: 2,
            // Small passes, so requests are split and interleaved.
            max_batch_tokens: 40,
            max_queue: 8,
            nice: 0,
            // The same as the reference `model` above: bf16 on a CPU with AMX.
            precision: Precision::Auto,
        },
    )
    .unwrap();
    let requests: Vec<Vec<encoder::Encoded>> = (0..6)
        .map(|r| {
            texts(3 + r * 5)
                .iter()
                .map(|t| text.encode("query: ", t, Truncate::End).unwrap())
                .collect()
        })
        .collect();
    let pending: Vec<_> = requests
        .iter()
        .map(|inputs| handle.submit(inputs.clone()).unwrap())
        .collect();
    for (inputs, p) in requests.iter().zip(pending) {
        let Output::Embeddings(got) = p.blocking_recv().unwrap().unwrap() else {
            panic!("embeddings")
        };
        assert_eq!(got.len(), inputs.len());
        for (e, v) in inputs.iter().zip(&got) {
            assert_eq!(*v, model.embed(&[e], &threads, &mut scratch)[0]);
        }
    }
    assert_eq!(handle.waiting(), 0);
    assert_eq!(
        handle.run_blocking(Vec::new()).unwrap(),
        Output::Embeddings(Vec::new())
    );
}

#[test]
fn cross_encoder_requests_return_logits() {
    let dir = fixture("tiny-bert-reranker");
    let handle = encoder::start(&dir, EngineConfig::default()).unwrap();
    let pairs: Vec<_> = ["paris is the capital", "bake the dough", "rust"]
        .iter()
        .map(|d| {
            handle
                .text()
                .encode_pair("what is the capital of france", d, Some(8))
                .unwrap()
        })
        .collect();
    let Output::Logits(l) = handle.run_blocking(pairs).unwrap() else {
        panic!("logits")
    };
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|v| v.is_finite()));
}

#[test]
fn a_full_queue_refuses_and_a_dropped_request_is_abandoned() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/cache/all-MiniLM-L6-v2");
    assert!(
        dir.exists(),
        "{} is missing: run models/fetch-minilm.sh",
        dir.display()
    );
    let handle = encoder::start(
        &dir,
        EngineConfig {
            threads: 1,
            max_batch_tokens: 256,
            max_queue: 1,
            nice: 0,
            // The same as the reference `model` above: bf16 on a CPU with AMX.
            precision: Precision::Auto,
        },
    )
    .unwrap();
    let long = "a long document about everything ".repeat(60);
    let big: Vec<_> = (0..96)
        .map(|_| handle.text().encode("", &long, Truncate::End).unwrap())
        .collect();
    // 96 windows of 256 tokens take seconds: the queue is still full right after.
    let first = handle.submit(big).unwrap();
    let small = vec![handle.text().encode("", "hello", Truncate::End).unwrap()];
    assert_eq!(
        handle.submit(small.clone()).unwrap_err(),
        EngineError::QueueFull(1)
    );
    drop(first);
    // The abandoned request is dropped at the next pass boundary and frees its place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while handle.waiting() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped request was never released"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let Output::Embeddings(v) = handle.run_blocking(small).unwrap() else {
        panic!("embeddings")
    };
    assert_eq!(v[0].len(), 384);
}
