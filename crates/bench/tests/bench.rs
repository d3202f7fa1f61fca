//! `cohost bench` end to end against in-process fake servers (no model): one that streams Cohere
//! v2 events and fails every third chat, and one that speaks llama-server's `/completion`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bench::{Api, BenchConfig, BenchError, LlamaPrompt};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    chats: AtomicUsize,
    prompts: Mutex<Vec<String>>,
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn stream_response(frames: Vec<Bytes>) -> Response {
    let body = async_stream::stream! {
        for frame in frames {
            // Separate writes a moment apart, so the client sees chunks arrive one by one.
            tokio::time::sleep(Duration::from_millis(1)).await;
            yield Ok::<_, Infallible>(frame);
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn cohere_chat(State(fake): State<Arc<Fake>>, Json(req): Json<Value>) -> Response {
    assert_eq!(req["stream"], true);
    assert_eq!(req["temperature"], 0);
    assert_eq!(req["model"], "fake-model");
    let text = req["messages"][0]["content"].as_str().unwrap().to_string();
    fake.prompts.lock().unwrap().push(text);
    if fake.chats.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"id": "x", "message": "fake: too many requests"})),
        )
            .into_response();
    }
    let n = req["max_tokens"].as_u64().unwrap();
    let mut frames = vec![
        event("message-start", json!({"type": "message-start", "id": "x"})),
        event(
            "content-start",
            json!({"type": "content-start", "index": 0}),
        ),
    ];
    // Two tokens per delta: the client must take the count from usage, not from the deltas.
    for i in 0..n.div_ceil(2) {
        frames.push(event(
            "content-delta",
            json!({"type": "content-delta", "index": 0,
                   "delta": {"message": {"content": {"text": format!(" w{i}")}}}}),
        ));
    }
    frames.push(Bytes::from_static(b": keep-alive\n\n"));
    frames.push(event(
        "content-end",
        json!({"type": "content-end", "index": 0}),
    ));
    frames.push(event(
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "MAX_TOKENS",
               "usage": {"tokens": {"input_tokens": 25, "output_tokens": n}}}}),
    ));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream_response(frames)
}

async fn llama_completion(State(fake): State<Arc<Fake>>, Json(req): Json<Value>) -> Response {
    assert_eq!(req["cache_prompt"], false);
    assert_eq!(req["temperature"], 0);
    let prompt = req["prompt"].as_str().unwrap().to_string();
    assert!(
        prompt.starts_with("<user>"),
        "rendered by the template: {prompt}"
    );
    fake.prompts.lock().unwrap().push(prompt);
    let n = req["n_predict"].as_u64().unwrap();
    let mut frames: Vec<Bytes> = (0..n)
        .map(|i| {
            Bytes::from(format!(
                "data: {}\n\n",
                json!({"content": format!(" t{i}"), "stop": false})
            ))
        })
        .collect();
    frames.push(Bytes::from(format!(
        "data: {}\n\n",
        json!({"content": "", "stop": true, "tokens_predicted": n, "tokens_evaluated": 40})
    )));
    stream_response(frames)
}

async fn start(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"models": [{"name": "fake-model"}]})) }),
        )
        .route("/v2/chat", post(cohere_chat))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/apply-template",
            post(|Json(req): Json<Value>| async move {
                let content = req["messages"][0]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Json(json!({"prompt": format!("<user>{content}<assistant>")}))
            }),
        )
        .route("/completion", post(llama_completion))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(api: Api, url: String, concurrency: Vec<usize>) -> BenchConfig {
    BenchConfig {
        api,
        url,
        api_key: None,
        model: None,
        label: format!("fake-{}", api.name()),
        concurrency,
        rounds: 1,
        max_tokens: 9,
        prompt_tokens: None,
        llama_prompt: LlamaPrompt::Template,
        warmup: 0,
        wait_ready: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn cohere_sweep_counts_tokens_and_errors_without_stopping() {
    let fake = Arc::new(Fake::default());
    let url = start(fake.clone()).await;
    let mut seen = Vec::new();
    let report = bench::run(&config(Api::Cohere, url, vec![1, 3, 6]), |l| {
        seen.push(l.concurrency)
    })
    .await
    .unwrap();
    assert_eq!(seen, [1, 3, 6]);
    assert_eq!(report.model.as_deref(), Some("fake-model"));
    // Requests 1..=10 in arrival order; every third one (3, 6, 9) failed with a 429.
    let levels: Vec<(usize, usize, usize)> = report
        .levels
        .iter()
        .map(|l| (l.concurrency, l.requests, l.errors))
        .collect();
    assert_eq!(levels.iter().map(|l| l.1).sum::<usize>(), 10);
    assert_eq!(levels.iter().map(|l| l.2).sum::<usize>(), 3, "{levels:?}");
    for l in &report.levels {
        let ok = l.requests - l.errors;
        assert_eq!(l.output_tokens, 9 * ok, "usage counts, not delta counts");
        assert!(l.aggregate_tokens_per_s > 0.0);
        assert_eq!(l.mean_prompt_tokens, Some(25.0));
        let ttft = l.ttft_ms.expect("successful streams have a TTFT");
        assert!(ttft.p50 <= ttft.p95);
        assert!(l.itl_ms.is_some() && l.per_stream_tokens_per_s.is_some());
        if l.errors > 0 {
            assert_eq!(
                l.first_error.as_deref(),
                Some("HTTP 429: fake: too many requests")
            );
        }
    }
    let prompts = fake.prompts.lock().unwrap();
    let distinct: HashSet<&String> = prompts.iter().collect();
    assert_eq!(distinct.len(), prompts.len(), "every prompt is distinct");

    // The outputs: JSON that reads back, a chart with one marker per level, a table.
    // (serde_json's float parsing may move the last bit, so compare the counts and the labels.)
    let back = bench::Report::from_json(&report.to_json()).unwrap();
    assert_eq!(
        (&back.label, back.api, back.max_tokens),
        (&report.label, report.api, 9)
    );
    let counts = |r: &bench::Report| -> Vec<(usize, usize, usize, usize, Option<String>)> {
        r.levels
            .iter()
            .map(|l| {
                (
                    l.concurrency,
                    l.requests,
                    l.errors,
                    l.output_tokens,
                    l.first_error.clone(),
                )
            })
            .collect()
    };
    assert_eq!(counts(&back), counts(&report));
    let svg = bench::svg::chart(std::slice::from_ref(&report));
    assert_eq!(svg.matches("<circle ").count(), 2 * report.levels.len());
    assert!(report.table().contains("errors at concurrency"));
}

#[tokio::test]
async fn llama_completion_streams_are_measured_the_same_way() {
    let fake = Arc::new(Fake::default());
    let url = start(fake.clone()).await;
    let mut cfg = config(Api::Llama, url, vec![2]);
    cfg.rounds = 2;
    cfg.warmup = 1;
    cfg.prompt_tokens = Some(200);
    let report = bench::run(&cfg, |_| {}).await.unwrap();
    let level = &report.levels[0];
    assert_eq!((level.requests, level.errors), (4, 0));
    assert_eq!(level.output_tokens, 4 * 9);
    assert_eq!(level.mean_prompt_tokens, Some(40.0));
    let prompts = fake.prompts.lock().unwrap();
    assert_eq!(prompts.len(), 5, "warm-up plus two rounds of two");
    assert!(prompts.iter().all(|p| p.split_whitespace().count() > 150));
    assert_eq!(prompts.iter().collect::<HashSet<_>>().len(), 5);
}

#[tokio::test]
async fn a_server_that_never_comes_up_is_reported_not_hung() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(Api::Cohere, format!("http://127.0.0.1:{port}"), vec![1]);
    cfg.wait_ready = Duration::from_millis(300);
    match bench::run(&cfg, |_| {}).await {
        Err(BenchError::NotReady { .. }) => {}
        other => panic!("{other:?}"),
    }
}
