//! /v1|v2/embed and /v1|v2/rerank, and several models in one router: the default chat model,
//! all-MiniLM-L6-v2 (models/fetch-minilm.sh), and the encoder crate's tiny random fixtures (a
//! cross-encoder, and an embedder with query/document prompts).

use super::common;

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::http::StatusCode;
use base64::Engine as _;
use common::*;
use encoder::{EncoderHandle, EngineConfig, Output, Truncate};
use serde_json::{json, Value};
use server::registry::{Backend, Registry};
use server::AppState;

const MINILM: &str = "all-MiniLM-L6-v2";
const RERANKER: &str = "tiny-bert-reranker";
const PROMPTED: &str = "tiny-st-embedder";

fn minilm_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/cache")
        .join(MINILM);
    assert!(
        dir.is_dir(),
        "{} is missing: run models/fetch-minilm.sh",
        dir.display()
    );
    dir
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../encoder/tests/fixtures")
        .join(name)
}

fn encoder(dir: PathBuf) -> EncoderHandle {
    encoder::start(
        &dir,
        EngineConfig {
            threads: 2,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

/// One set of engines for the whole binary.
fn encoders() -> &'static (EncoderHandle, EncoderHandle, EncoderHandle) {
    static E: OnceLock<(EncoderHandle, EncoderHandle, EncoderHandle)> = OnceLock::new();
    E.get_or_init(|| {
        (
            encoder(minilm_dir()),
            encoder(fixture(RERANKER)),
            encoder(fixture(PROMPTED)),
        )
    })
}

fn app() -> axum::Router {
    let (minilm, reranker, prompted) = encoders().clone();
    let registry = Registry::new(
        vec![
            Backend::Chat(engine()),
            Backend::Encoder(minilm),
            Backend::Encoder(reranker),
            Backend::Encoder(prompted),
        ],
        &[],
    );
    let state = AppState::new(test_config());
    state.set_registry(registry);
    server::app(state)
}

/// What the engine gives for these texts, without the HTTP layer.
async fn direct(handle: &EncoderHandle, prompt: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    let inputs = texts
        .iter()
        .map(|t| handle.text().encode(prompt, t, Truncate::End).unwrap())
        .collect();
    match handle.run(inputs).await.unwrap() {
        Output::Embeddings(v) => v,
        Output::Logits(_) => panic!("an embedder"),
    }
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test]
async fn models_lists_every_model_with_what_it_serves() {
    let app = app();
    let models = send(&app, "GET", "/v1/models", None, &[]).await.json();
    let by_name = |n: &str| -> Value {
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(models["models"].as_array().unwrap().len(), 4);
    assert_eq!(by_name(MODEL)["endpoints"], json!(["chat"]));
    assert!(by_name(MODEL).get("embedding_dimension").is_none());
    let m = by_name(MINILM);
    assert_eq!(m["endpoints"], json!(["embed", "rerank"]));
    assert_eq!(m["default_endpoints"], json!(["embed"]));
    assert_eq!(m["context_length"], 256);
    assert_eq!(m["embedding_dimension"], 384);
    assert_eq!(m["features"], json!(["rerank-by-embedding-cosine"]));
    assert_eq!(
        m["tokenizer_url"],
        "http://127.0.0.1/tokenizer.json?model=all-MiniLM-L6-v2"
    );
    assert_eq!(by_name(RERANKER)["endpoints"], json!(["rerank"]));
    assert_eq!(by_name(RERANKER)["context_length"], 64);
    let names = |v: Value| -> Vec<String> {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    let embed = send(&app, "GET", "/v1/models?endpoint=embed", None, &[])
        .await
        .json();
    assert_eq!(names(embed), [MINILM, PROMPTED]);
    let rerank = send(&app, "GET", "/v1/models?endpoint=rerank", None, &[])
        .await
        .json();
    assert_eq!(names(rerank), [MINILM, RERANKER, PROMPTED]);
    let one = send(&app, "GET", &format!("/v1/models/{MINILM}"), None, &[])
        .await
        .json();
    assert_eq!(one["embedding_dimension"], 384);
    let tok = send(
        &app,
        "GET",
        &format!("/tokenizer.json?model={MINILM}"),
        None,
        &[],
    )
    .await;
    assert!(tok.text().contains("[CLS]"));
    let ready = send(&app, "GET", "/ready", None, &[]).await.json();
    assert_eq!(ready["models"], json!([MODEL, MINILM, RERANKER, PROMPTED]));
}

#[tokio::test]
async fn a_model_asked_for_an_endpoint_it_does_not_serve_is_a_400_naming_what_it_serves() {
    let app = app();
    let cases = [
        (
            "/v2/embed",
            json!({"model": MODEL, "texts": ["a"], "input_type": "search_query"}),
            "it serves: chat.",
        ),
        (
            "/v2/embed",
            json!({"model": RERANKER, "texts": ["a"], "input_type": "search_query"}),
            "it serves: rerank.",
        ),
        (
            "/v2/rerank",
            json!({"model": MODEL, "query": "q", "documents": ["a"]}),
            "it serves: chat.",
        ),
        ("/v2/chat", chat_body(MINILM), "it serves: embed, rerank."),
        (
            "/v1/tokenize",
            json!({"model": MINILM, "text": "hello"}),
            "it serves: embed, rerank.",
        ),
    ];
    for (path, body, want) in cases {
        let msg = post_json(&app, path, &body)
            .await
            .error_message(StatusCode::BAD_REQUEST);
        assert!(msg.contains(want), "{path}: {msg}");
        assert!(msg.contains("does not support the"), "{msg}");
    }
    let body = json!({"model": "nope", "texts": ["a"], "input_type": "search_query"});
    let msg = post_json(&app, "/v2/embed", &body)
        .await
        .error_message(StatusCode::NOT_FOUND);
    assert!(msg.starts_with("model 'nope' not found"), "{msg}");
    let chat = post_json(&app, "/v2/chat", &chat_body(MODEL)).await;
    assert_eq!(
        chat.status,
        StatusCode::OK,
        "chat still works next to the encoders"
    );
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
}

#[tokio::test]
async fn v2_embed_returns_the_engine_s_vectors_in_every_type() {
    let app = app();
    let texts = [
        "The capital of France is Paris.",
        "Rust is a programming language.",
        "hello",
    ];
    let body = json!({"model": MINILM, "texts": texts, "input_type": "search_document",
                      "embedding_types": ["float", "int8", "uint8", "binary", "ubinary", "base64"]});
    let reply = post_json(&app, "/v2/embed", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["response_type"], "embeddings_by_type");
    assert_eq!(v["texts"], json!(texts));
    assert_eq!(v["meta"]["api_version"]["version"], "2");
    let want = direct(&encoders().0, "", &texts).await;
    let tokens: usize = texts
        .iter()
        .map(|t| {
            encoders()
                .0
                .text()
                .encode("", t, Truncate::End)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(v["meta"]["billed_units"]["input_tokens"], tokens);
    let e = &v["embeddings"];
    assert_eq!(floats(&e["float"]), want);
    for (i, w) in want.iter().enumerate() {
        let int8: Vec<f32> = serde_json::from_value::<Vec<i8>>(e["int8"][i].clone())
            .unwrap()
            .iter()
            .map(|&x| x as f32)
            .collect();
        assert!(
            cosine(&int8, w) > 0.99,
            "int8 keeps the direction: {}",
            cosine(&int8, w)
        );
        let uint8: Vec<u8> = serde_json::from_value(e["uint8"][i].clone()).unwrap();
        let back: Vec<f32> = uint8.iter().map(|&x| x as f32 - 128.0).collect();
        assert_eq!(back, int8, "uint8 is int8 + 128");
        let ubinary: Vec<u8> = serde_json::from_value(e["ubinary"][i].clone()).unwrap();
        assert_eq!(ubinary.len(), 48);
        for (d, &x) in w.iter().enumerate() {
            assert_eq!(ubinary[d / 8] >> (7 - d % 8) & 1 == 1, x > 0.0, "bit {d}");
        }
        let binary: Vec<i8> = serde_json::from_value(e["binary"][i].clone()).unwrap();
        for (b, u) in binary.iter().zip(&ubinary) {
            assert_eq!(*b as i16, *u as i16 - 128);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e["base64"][i].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(&decoded, w);
    }
    // Only what was asked for.
    let body = json!({"model": MINILM, "texts": ["x"], "input_type": "clustering", "embedding_types": ["int8"]});
    let e = post_json(&app, "/v2/embed", &body).await.json()["embeddings"].clone();
    assert_eq!(e.as_object().unwrap().keys().collect::<Vec<_>>(), ["int8"]);
    // v2 without embedding_types: floats by type.
    let body = json!({"model": MINILM, "texts": ["x"], "input_type": "classification"});
    let e = post_json(&app, "/v2/embed", &body).await.json()["embeddings"].clone();
    assert_eq!(floats(&e["float"]), direct(&encoders().0, "", &["x"]).await);
}

#[tokio::test]
async fn v1_embed_answers_floats_unless_types_are_asked_for() {
    let app = app();
    let reply = post_json(
        &app,
        "/v1/embed",
        &json!({"model": MINILM, "texts": ["hello", "world"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["response_type"], "embeddings_floats");
    assert_eq!(v["meta"]["api_version"]["version"], "1");
    assert_eq!(
        floats(&v["embeddings"]),
        direct(&encoders().0, "", &["hello", "world"]).await
    );
    let body =
        json!({"model": MINILM, "texts": ["hello"], "embedding_types": ["float", "ubinary"]});
    let v = post_json(&app, "/v1/embed", &body).await.json();
    assert_eq!(v["response_type"], "embeddings_by_type");
    assert_eq!(v["embeddings"]["ubinary"][0].as_array().unwrap().len(), 48);
}

#[tokio::test]
async fn inputs_prompts_truncation_and_max_tokens() {
    let app = app();
    // `inputs` with text content embed like `texts`.
    let body = json!({"model": MINILM, "input_type": "search_query",
                      "inputs": [{"content": [{"type": "text", "text": "hello"}]}]});
    let v = post_json(&app, "/v2/embed", &body).await.json();
    assert_eq!(
        floats(&v["embeddings"]["float"]),
        direct(&encoders().0, "", &["hello"]).await
    );
    assert_eq!(v["texts"], json!(["hello"]));
    // The model's own prompts follow input_type.
    let prompted = &encoders().2;
    for (input_type, prompt) in [
        ("search_query", "query: "),
        ("search_document", "passage: "),
        ("clustering", ""),
    ] {
        let body = json!({"model": PROMPTED, "texts": ["what is rust"], "input_type": input_type});
        let v = post_json(&app, "/v2/embed", &body).await.json();
        assert_eq!(
            floats(&v["embeddings"]["float"]),
            direct(prompted, prompt, &["what is rust"]).await,
            "{input_type}"
        );
    }
    // max_tokens cuts each input (special tokens included); NONE refuses instead.
    let long = "word ".repeat(300);
    let body = json!({"model": MINILM, "texts": [long, "a b"], "input_type": "search_query", "max_tokens": 5});
    let v = post_json(&app, "/v2/embed", &body).await.json();
    assert_eq!(v["meta"]["billed_units"]["input_tokens"], 5 + 4);
    let body = json!({"model": MINILM, "texts": [long], "input_type": "search_query"});
    let v = post_json(&app, "/v2/embed", &body).await.json();
    assert_eq!(
        v["meta"]["billed_units"]["input_tokens"], 256,
        "END by default, at the window"
    );
    for truncate in ["START", "END"] {
        let body = json!({"model": MINILM, "texts": [long], "input_type": "search_query", "truncate": truncate});
        assert_eq!(
            post_json(&app, "/v2/embed", &body).await.status,
            StatusCode::OK
        );
    }
    let body = json!({"model": MINILM, "texts": ["ok", long], "input_type": "search_query", "truncate": "NONE"});
    let msg = post_json(&app, "/v2/embed", &body)
        .await
        .error_message(StatusCode::BAD_REQUEST);
    assert!(
        msg.contains("texts[1] has 302 tokens, more than the 256 allowed"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_embed_requests_are_400s() {
    let app = app();
    let many: Vec<String> = (0..97).map(|i| i.to_string()).collect();
    let base = |extra: Value| {
        let mut b = json!({"model": MINILM, "texts": ["a"], "input_type": "search_query"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (
            base(json!({"texts": []})),
            "texts must contain between 1 and 96 items (received 0)",
        ),
        (
            base(json!({"texts": many})),
            "between 1 and 96 items (received 97)",
        ),
        (
            json!({"model": MINILM, "input_type": "search_query"}),
            "one of texts, images or inputs must be provided",
        ),
        (
            base(json!({"inputs": [{"content": [{"type": "text", "text": "a"}]}]})),
            "only one of texts, images or inputs",
        ),
        (
            base(json!({"images": ["data:image/png;base64,AA"]})),
            "embeds text only",
        ),
        (
            json!({"model": MINILM, "input_type": "search_query",
                "inputs": [{"content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]}),
            "inputs[0].content[0] is an image",
        ),
        (
            base(json!({"input_type": "image"})),
            "input_type 'image' is not supported",
        ),
        (
            base(json!({"input_type": "poetry"})),
            "input_type must be one of",
        ),
        (
            json!({"model": MINILM, "texts": ["a"]}),
            "input_type is required",
        ),
        (
            base(json!({"embedding_types": ["float", "int4"]})),
            "embedding_types must be among",
        ),
        (
            base(json!({"truncate": "MIDDLE"})),
            "truncate must be one of NONE, START, END",
        ),
        (
            base(json!({"output_dimension": 256})),
            "output_dimension 256 is not supported",
        ),
        (
            base(json!({"max_tokens": 0})),
            "max_tokens must be a positive integer",
        ),
        (base(json!({"texts": "a"})), "invalid type"),
        (
            json!({"texts": ["a"], "input_type": "search_query"}),
            "model must be specified",
        ),
    ];
    for (body, want) in cases {
        let msg = post_json(&app, "/v2/embed", &body)
            .await
            .error_message(StatusCode::BAD_REQUEST);
        assert!(msg.contains(want), "{body}: {msg}");
    }
    assert_eq!(
        post_json(&app, "/v2/embed", &base(json!({"output_dimension": 384})))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rerank_with_a_cross_encoder_sorts_sigmoid_scores() {
    let app = app();
    let docs = [
        "Paris is the capital of France.",
        "Bake the dough.",
        "Rust is a language.",
        "Berlin",
    ];
    let body =
        json!({"model": RERANKER, "query": "what is the capital of france", "documents": docs});
    let reply = post_json(&app, "/v2/rerank", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let handle = &encoders().1;
    let pairs = docs
        .iter()
        .map(|d| {
            handle
                .text()
                .encode_pair("what is the capital of france", d, Some(4096))
                .unwrap()
        })
        .collect();
    let Output::Logits(logits) = handle.run(pairs).await.unwrap() else {
        panic!()
    };
    let mut last = f64::INFINITY;
    for r in results {
        let (i, s) = (
            r["index"].as_u64().unwrap() as usize,
            r["relevance_score"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&s) && s <= last, "{results:?}");
        let want = 1.0 / (1.0 + (-logits[i] as f64).exp());
        assert!((s - want).abs() < 1e-6, "score {s}, sigmoid(logit) {want}");
        assert!(r.get("document").is_none());
        last = s;
    }
    assert_eq!(v["meta"]["billed_units"]["search_units"], 1);
    let body = json!({"model": RERANKER, "query": "q", "documents": docs, "top_n": 2});
    assert_eq!(
        post_json(&app, "/v2/rerank", &body).await.json()["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn rerank_with_an_embedding_model_uses_cosine() {
    let app = app();
    let docs = [
        "The Eiffel Tower is in Berlin.",
        "Bread is baked from flour, water and yeast.",
        "Paris is the capital and largest city of France.",
    ];
    let body = json!({"model": MINILM, "query": "What is the capital of France?", "documents": docs, "top_n": 2});
    let v = post_json(&app, "/v2/rerank", &body).await.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 2, "{results:?}");
    let q = direct(&encoders().0, "", &["What is the capital of France?"]).await;
    let d = direct(&encoders().0, "", &[docs[2]]).await;
    let want = (cosine(&q[0], &d[0]) + 1.0) / 2.0;
    assert!((results[0]["relevance_score"].as_f64().unwrap() - want as f64).abs() < 1e-6);
}

#[tokio::test]
async fn v1_rerank_objects_rank_fields_and_return_documents() {
    let app = app();
    let docs = json!([
        {"title": "Bread", "text": "Mix flour and water.", "id": "a"},
        {"title": "France", "text": "Paris is the capital of France.", "id": "b"},
        "A plain string document.",
    ]);
    let body = json!({"model": MINILM, "query": "capital of France", "documents": docs,
                      "return_documents": true, "top_n": 3});
    let v = post_json(&app, "/v1/rerank", &body).await.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["index"], 1);
    assert_eq!(results[0]["document"], docs[1], "objects come back as sent");
    let plain = results.iter().find(|r| r["index"] == 2).unwrap();
    assert_eq!(
        plain["document"],
        json!({"text": "A plain string document."})
    );
    assert_eq!(v["meta"]["api_version"]["version"], "1");
    let body = json!({"model": MINILM, "query": "capital of France", "documents": docs,
                      "rank_fields": ["title", "text"]});
    let v = post_json(&app, "/v1/rerank", &body).await.json();
    assert_eq!(v["results"][0]["index"], 1, "{v}");
    let two = json!([docs[0], docs[1]]);
    let body = json!({"model": MINILM, "query": "q", "documents": two, "rank_fields": ["author"]});
    let msg = post_json(&app, "/v1/rerank", &body)
        .await
        .error_message(StatusCode::BAD_REQUEST);
    assert!(msg.contains("documents[0] has no field 'author'"), "{msg}");
}

#[tokio::test]
async fn bad_rerank_requests_are_400s() {
    let app = app();
    let cases = [
        (
            json!({"model": RERANKER, "documents": ["a"]}),
            "query is required",
        ),
        (
            json!({"model": RERANKER, "query": "q", "documents": []}),
            "at least one document",
        ),
        (
            json!({"model": RERANKER, "query": "q", "documents": ["a"], "top_n": 0}),
            "top_n must be at least 1",
        ),
        (
            json!({"model": RERANKER, "query": "q", "documents": [{"text": "a"}]}),
            "documents[0] must be a string",
        ),
        (
            json!({"query": "q", "documents": ["a"]}),
            "model must be specified",
        ),
    ];
    for (body, want) in cases {
        let msg = post_json(&app, "/v2/rerank", &body)
            .await
            .error_message(StatusCode::BAD_REQUEST);
        assert!(msg.contains(want), "{body}: {msg}");
    }
}
