//! `cohost bench` end to end against in-process fake servers (no model): one that streams Cohere
//! v2 events and fails every third chat, and one that speaks llama-server's `/completion`; for
//! the prompt-cache workloads, one that answers either API with replies named after the turn.

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
use bench::conversation::{ConversationPlan, Order};
use bench::shared_prefix::SharedPrefixPlan;
use bench::throughput::ThroughputPlan;
use bench::{Api, BenchConfig, BenchError, LlamaPrompt, Plan};
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
    with_plan(
        api,
        url,
        Plan::Throughput(ThroughputPlan {
            concurrency,
            rounds: 1,
            prompt_tokens: None,
            llama_prompt: LlamaPrompt::Template,
            prompt_set: Default::default(),
        }),
    )
}

fn with_plan(api: Api, url: String, plan: Plan) -> BenchConfig {
    BenchConfig {
        api,
        url,
        api_key: None,
        model: None,
        label: format!("fake-{}", api.name()),
        max_tokens: 9,
        warmup: 0,
        wait_ready: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        plan,
    }
}

fn throughput(cfg: &mut BenchConfig) -> &mut ThroughputPlan {
    match &mut cfg.plan {
        Plan::Throughput(p) => p,
        other => panic!("{other:?}"),
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
    throughput(&mut cfg).rounds = 2;
    throughput(&mut cfg).prompt_tokens = Some(200);
    cfg.warmup = 1;
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

// The prompt-cache workloads, against a fake that answers with a reply named after the request's
// conversation and turn, records every history it was sent, and says how many requests were in
// flight at most.

#[derive(Default)]
struct ChatFake {
    /// Every request's messages (Cohere) or rendered prompt (llama), in arrival order.
    seen: Mutex<Vec<Value>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Answer this (conversation, turn) with an HTTP 500.
    fail: Option<(usize, usize)>,
}

/// The (conversation, turn) a user turn names: "Conversation <tag>-<c>, turn <t>. ...".
fn conversation_turn(text: &str) -> Option<(usize, usize)> {
    let rest = &text[text.find("Conversation ")? + "Conversation ".len()..];
    let (id, rest) = rest.split_once(", turn ")?;
    let c = id.rsplit('-').next()?.parse().ok()?;
    let t = rest.split('.').next()?.parse().ok()?;
    Some((c, t))
}

/// What the fake replies to a prompt whose last user turn is `last_user`.
fn reply_for(last_user: &str) -> String {
    match conversation_turn(last_user) {
        Some((c, t)) => format!(" Reply to {c}.{t} [ok]"),
        None => " An answer.".to_string(),
    }
}

/// Counts a request in flight until the returned guard (moved into the stream) drops.
struct InFlight(Arc<ChatFake>);

impl InFlight {
    fn new(fake: Arc<ChatFake>) -> Self {
        let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(fake)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Streams `pieces` 5 ms apart (so that requests overlap), then `last`, holding `guard`.
fn slow_stream(pieces: Vec<Bytes>, last: Vec<Bytes>, guard: InFlight) -> Response {
    let body = async_stream::stream! {
        let _guard = guard;
        for frame in pieces.into_iter().chain(last) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            yield Ok::<_, Infallible>(frame);
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn history_chat(State(fake): State<Arc<ChatFake>>, Json(req): Json<Value>) -> Response {
    assert_eq!(req["stream"], true);
    assert_eq!(req["temperature"], 0);
    let messages = req["messages"].as_array().unwrap().clone();
    fake.seen
        .lock()
        .unwrap()
        .push(Value::Array(messages.clone()));
    let last_user = messages.last().unwrap()["content"].as_str().unwrap();
    if fake.fail.is_some() && conversation_turn(last_user) == fake.fail {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"id": "x", "message": "fake: boom"})),
        )
            .into_response();
    }
    let guard = InFlight::new(fake.clone());
    // The reply in three deltas; usage says 10 prompt tokens per message, all but the last
    // message's cached.
    let reply = reply_for(last_user);
    let words: Vec<String> = reply.split_inclusive(' ').map(String::from).collect();
    let pieces = words
        .iter()
        .map(|w| {
            event(
                "content-delta",
                json!({"type": "content-delta", "index": 0,
                       "delta": {"message": {"content": {"text": w}}}}),
            )
        })
        .collect();
    let n = messages.len() as u64;
    let last = vec![
        event(
            "message-end",
            json!({"type": "message-end", "delta": {"finish_reason": "COMPLETE",
                   "usage": {"tokens": {"input_tokens": 10 * n, "output_tokens": 3},
                             "cached_tokens": 10 * (n - 1)}}}),
        ),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ];
    slow_stream(pieces, last, guard)
}

async fn history_completion(State(fake): State<Arc<ChatFake>>, Json(req): Json<Value>) -> Response {
    assert_eq!(
        req["cache_prompt"], true,
        "the prompt cache is llama-server's default"
    );
    let prompt = req["prompt"].as_str().unwrap().to_string();
    fake.seen
        .lock()
        .unwrap()
        .push(Value::String(prompt.clone()));
    let guard = InFlight::new(fake.clone());
    let last_user = prompt
        .rsplit("<user>")
        .next()
        .unwrap()
        .trim_end_matches("<assistant>");
    let reply = reply_for(last_user);
    let pieces = reply
        .split_inclusive(' ')
        .map(|w| {
            Bytes::from(format!(
                "data: {}\n\n",
                json!({"content": w, "stop": false})
            ))
        })
        .collect();
    let last = vec![Bytes::from(format!(
        "data: {}\n\n",
        json!({"content": "", "stop": true, "tokens_predicted": 3, "tokens_evaluated": 100,
               "timings": {"cache_n": 60, "prompt_n": 40}})
    ))];
    slow_stream(pieces, last, guard)
}

async fn start_chat_fake(fake: Arc<ChatFake>) -> String {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"models": [{"name": "fake-model"}]})) }),
        )
        .route("/v2/chat", post(history_chat))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/apply-template",
            post(|Json(req): Json<Value>| async move {
                let mut prompt = String::new();
                for m in req["messages"].as_array().unwrap() {
                    let role = m["role"].as_str().unwrap();
                    prompt.push_str(&format!("<{role}>{}", m["content"].as_str().unwrap()));
                }
                prompt.push_str("<assistant>");
                Json(json!({ "prompt": prompt }))
            }),
        )
        .route("/completion", post(history_completion))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn conversations(order: Order, conversations: usize, turns: usize) -> Plan {
    Plan::Conversations(ConversationPlan {
        order,
        conversations,
        turns,
        turn_tokens: 40,
    })
}

#[tokio::test]
async fn multi_turn_resends_each_history_with_the_streamed_replies() {
    let fake = Arc::new(ChatFake::default());
    let url = start_chat_fake(fake.clone()).await;
    let cfg = with_plan(Api::Cohere, url, conversations(Order::Independent, 3, 3));
    let report = bench::run(&cfg, |_| {}).await.unwrap();
    let c = report.conversations.as_ref().unwrap();
    assert_eq!(report.workload, bench::Workload::MultiTurn);
    assert_eq!(
        (c.conversations, c.turns, c.in_flight, c.skipped),
        (3, 3, 3, 0)
    );
    assert_eq!(
        c.per_turn
            .iter()
            .map(|g| (g.requests, g.errors))
            .collect::<Vec<_>>(),
        [(3, 0), (3, 0), (3, 0)]
    );
    // Turn t has 2t - 1 messages of 10 tokens, all but the last cached.
    assert_eq!(c.per_turn[2].prompt_tokens, Some(3 * 50));
    assert_eq!(c.per_turn[2].cached_tokens, Some(3 * 40));
    // Turn 1 has nothing cached, turn 2 two of its three messages, turn 3 four of five.
    assert_eq!(c.all.cached_tokens, Some(3 * (20 + 40)));
    assert!(c.later_turns.ttft_ms.is_some());
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 3, "all at once");

    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 9);
    for conv in 0..3 {
        let mine: Vec<&Vec<Value>> = seen
            .iter()
            .map(|m| m.as_array().unwrap())
            .filter(|m| {
                conversation_turn(m[0]["content"].as_str().unwrap()).map(|ct| ct.0) == Some(conv)
            })
            .collect();
        assert_eq!(mine.len(), 3, "conversation {conv}");
        for (i, messages) in mine.iter().enumerate() {
            let turn = i + 1;
            assert_eq!(messages.len(), 2 * turn - 1);
            // Each history extends the previous one by the streamed reply and a new turn.
            if turn > 1 {
                assert_eq!(messages[..2 * turn - 3], mine[i - 1][..]);
                assert_eq!(
                    messages[2 * turn - 3],
                    json!({"role": "assistant", "content": format!(" Reply to {conv}.{}", turn - 1) + " [ok]"})
                );
            }
            let user = messages.last().unwrap();
            assert_eq!(user["role"], "user");
            assert_eq!(
                conversation_turn(user["content"].as_str().unwrap()),
                Some((conv, turn))
            );
        }
    }
}

#[tokio::test]
async fn round_robin_on_llama_takes_turns_in_order_within_its_in_flight_limit() {
    let fake = Arc::new(ChatFake::default());
    let url = start_chat_fake(fake.clone()).await;
    let cfg = with_plan(
        Api::Llama,
        url,
        conversations(Order::RoundRobin { in_flight: 2 }, 5, 2),
    );
    let report = bench::run(&cfg, |_| {}).await.unwrap();
    let c = report.conversations.as_ref().unwrap();
    assert_eq!(report.workload, bench::Workload::RoundRobin);
    assert_eq!((c.all.requests, c.all.errors, c.in_flight), (10, 0, 2));
    // llama-server's cache_n, summed.
    assert_eq!(c.all.cached_tokens, Some(10 * 60));
    assert_eq!(c.all.prompt_tokens, Some(10 * 100));
    assert!(fake.max_in_flight.load(Ordering::SeqCst) <= 2);

    let seen = fake.seen.lock().unwrap();
    let order: Vec<(usize, usize)> = seen
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            let last_user = p.rsplit("<user>").next().unwrap();
            conversation_turn(last_user).unwrap()
        })
        .collect();
    let turns: Vec<usize> = order.iter().map(|ct| ct.1).collect();
    assert_eq!(turns, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], "{order:?}");
    // A turn-2 prompt is the conversation's rendered history: its first turn and the reply.
    for p in seen.iter().skip(5) {
        let p = p.as_str().unwrap();
        let (conv, _) = conversation_turn(p.rsplit("<user>").next().unwrap()).unwrap();
        assert!(p.starts_with("<user>Conversation "), "{p}");
        assert!(
            p.contains(&format!("<assistant> Reply to {conv}.1 [ok]<user>")),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_failed_turn_ends_its_conversation_and_is_counted() {
    let fake = Arc::new(ChatFake {
        fail: Some((1, 2)),
        ..ChatFake::default()
    });
    let url = start_chat_fake(fake.clone()).await;
    let cfg = with_plan(Api::Cohere, url, conversations(Order::Independent, 2, 3));
    let report = bench::run(&cfg, |_| {}).await.unwrap();
    let c = report.conversations.as_ref().unwrap();
    assert_eq!((c.all.requests, c.all.errors, c.skipped), (5, 1, 1));
    assert_eq!(c.per_turn[2].requests, 1);
    assert_eq!(
        report.levels[0].first_error.as_deref(),
        Some("HTTP 500: fake: boom")
    );
    // Conversation 1 never sent its third turn.
    assert_eq!(fake.seen.lock().unwrap().len(), 5);
    assert!(report.table().contains("1 turns skipped after an error"));
}

#[tokio::test]
async fn shared_prefix_rounds_share_one_system_message() {
    let fake = Arc::new(ChatFake::default());
    let url = start_chat_fake(fake.clone()).await;
    let cfg = with_plan(
        Api::Cohere,
        url,
        Plan::SharedPrefix(SharedPrefixPlan {
            concurrency: 4,
            rounds: 2,
            prefix_tokens: 200,
        }),
    );
    let report = bench::run(&cfg, |_| {}).await.unwrap();
    let s = report.shared_prefix.as_ref().unwrap();
    assert_eq!(s.rounds.len(), 2);
    assert!(s.rounds.iter().all(|g| g.requests == 4 && g.errors == 0));
    assert_eq!(s.all.cached_tokens, Some(8 * 10));
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 8);
    let systems: HashSet<&Value> = seen.iter().map(|m| &m[0]).collect();
    assert_eq!(systems.len(), 1, "one system message for all");
    let system = seen[0][0]["content"].as_str().unwrap();
    assert_eq!(seen[0][0]["role"], "system");
    assert!(system.split_whitespace().count() > 150);
    let questions: HashSet<&Value> = seen.iter().map(|m| &m[1]).collect();
    assert_eq!(questions.len(), 8, "a question of its own for each request");
    // The JSON report keeps the workload's section.
    let back = bench::Report::from_json(&report.to_json()).unwrap();
    assert_eq!(back.shared_prefix.unwrap().rounds.len(), 2);
}
