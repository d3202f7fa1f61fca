//! Router-level tests: every validation rule and error shape, and real generations, through
//! `server::app` as a tower service with the real default model.

use super::common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use server::{AppState, Config};

fn with(extra: Value) -> Value {
    let mut body = chat(json!([{"role": "user", "content": "Say hello."}]));
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn every_validation_rule_is_a_json_400_with_cohere_wording() {
    let app = app();
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name,
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}})
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"temperature": 1.01})), "invalid request: temperature must be between 0 and 1.0 inclusive."),
        (with(json!({"p": 0.0})), "invalid request: p must be between 0.01 and 0.99 inclusive."),
        (with(json!({"k": 501})), "invalid request: k must be between 0 and 500 inclusive."),
        (with(json!({"frequency_penalty": 1.5})), "invalid request: frequency_penalty must be between 0 and 1 inclusive."),
        (with(json!({"presence_penalty": -0.5})), "invalid request: presence_penalty must be between 0 and 1 inclusive."),
        (with(json!({"seed": -3})), "invalid request: seed must be an integer between 0 and"),
        (with(json!({"stop_sequences": ["a", "b", "c", "d", "e", "f"]})), "invalid request: stop_sequences can contain at most 5"),
        (with(json!({"messages": []})), "invalid request: messages must not be empty."),
        (with(json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]})),
         "system turn must be the first in the list"),
        (with(json!({"messages": [{"role": "user", "content": ""}]})), "message must not be empty in a turn"),
        (with(json!({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "x", "content": "1"}]})),
         "tool call id not found in previous tool calls"),
        (with(json!({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "1"}]})),
         "tool call id must be provided with tool message"),
        (with(json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]})),
         "cannot have duplicate tool ids"),
        (with(json!({"tools": [tool("9lives")]})),
         "invalid request: tool names can only contain certain characters (A-Za-z0-9_) and can't begin with a digit (provided name: '9lives')."),
        (with(json!({"tools": [tool("f"), tool("f")]})), "invalid request: duplicate tool name 'f'."),
        (with(json!({"tool_choice": "REQUIRED"})), "invalid request: tool_choice REQUIRED can only be used when tools are specified."),
        (with(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]})),
         "invalid request: image content is not supported: the model 'SmolLM2-135M-Instruct.Q4_1' accepts text only."),
        (with(json!({"response_format": {"type": "json_object"}, "documents": ["d"]})), "invalid request: response_format is not supported with RAG."),
        (with(json!({"response_format": {"type": "json_object", "json_schema": {"type": "string"}}})), "schema must be an object"),
        (with(json!({"messages": [{"role": "robot", "content": "x"}]})), "invalid request: unknown variant `robot`"),
        (with(json!({"temperature": "warm"})), "invalid request: invalid type: string \"warm\""),
        (with(json!({"max_tokens": 0})), "invalid request: max_tokens must be a positive integer"),
        (json!({"messages": [{"role": "user", "content": "a"}]}), "invalid request: model must be specified."),
    ];
    for (body, expected) in cases {
        let reply = post_json(&app, "/v2/chat", &body).await;
        let message = reply.error_message(StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with(expected),
            "for {body}\n  expected: {expected}\n  got:      {message}"
        );
    }
}

#[tokio::test]
async fn malformed_json_and_unknown_models() {
    let app = app();
    let reply = send(
        &app,
        "POST",
        "/v2/chat",
        Some("{\"model\": \"x\", \"messages\": [}"),
        &[],
    )
    .await;
    assert!(reply
        .error_message(StatusCode::BAD_REQUEST)
        .starts_with("invalid json syntax: "));
    let reply = send(&app, "POST", "/v2/chat", Some(""), &[]).await;
    assert!(reply
        .error_message(StatusCode::BAD_REQUEST)
        .starts_with("invalid json syntax: "));
    let reply = post_json(
        &app,
        "/v2/chat",
        &json!({"model": "command-r", "messages": [{"role": "user", "content": "a"}]}),
    )
    .await;
    assert_eq!(
        reply.error_message(StatusCode::NOT_FOUND),
        "model 'command-r' not found, make sure the correct model ID was used and that you have access to the model."
    );
    // Nulls and unknown keys are fine; the model check runs before validation.
    let reply = post_json(
        &app,
        "/v2/chat",
        &with(json!({"model": "nope", "temperature": 9})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_too_many_tokens() {
    let app = app();
    let long = "lorem ipsum dolor ".repeat(TEST_CONTEXT);
    let reply = post_json(
        &app,
        "/v2/chat",
        &with(json!({"messages": [{"role": "user", "content": long}]})),
    )
    .await;
    let message = reply.error_message(StatusCode::BAD_REQUEST);
    assert!(message.starts_with("too many tokens: "), "{message}");
    assert!(message.contains(&TEST_CONTEXT.to_string()), "{message}");
    assert!(message.contains("at least as many as"), "{message}");

    // Far too long to fit whatever it holds: refused on its byte length, before tokenizing.
    let huge = "z".repeat(5 << 20);
    let reply = post_json(
        &app,
        "/v2/chat",
        &with(json!({"messages": [{"role": "user", "content": huge}]})),
    )
    .await;
    let message = reply.error_message(StatusCode::BAD_REQUEST);
    assert!(
        message.starts_with("too many tokens: the prompt is 52428"),
        "{message}"
    );
    assert!(message.contains("bytes"), "{message}");
}

#[tokio::test]
async fn a_schema_with_no_finite_value_is_a_400_before_generation() {
    let app = app();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
        "required": ["name", "child"]
    });
    let reply = post_json(
        &app,
        "/v2/chat",
        &with(json!({"response_format": {"type": "json_object", "json_schema": schema}})),
    )
    .await;
    let message = reply.error_message(StatusCode::BAD_REQUEST);
    assert!(message.contains("admits no finite value"), "{message}");
}

#[tokio::test]
async fn the_tokenizer_file_is_built_once_and_revalidated_by_etag() {
    let app = app();
    let first = send(&app, "GET", "/tokenizer.json", None, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let tokenizer: serde_json::Value = first.json();
    assert!(tokenizer["model"]["vocab"].is_object());
    let again = send(&app, "GET", "/tokenizer.json", None, &[]).await;
    assert_eq!(again.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(again.body, first.body);
    let cached = send(
        &app,
        "GET",
        "/tokenizer.json",
        None,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
}

#[tokio::test]
async fn a_burst_takes_every_free_slot_before_queue_places() {
    // Eight streams at once on eight slots and one queue place: none is refused.
    let mut config = test_config();
    config.max_concurrent = 8;
    config.max_queue = 1;
    let engine = server::cli::load_engine(&config).expect("engine");
    let app = server::app(AppState::with_engine(config, engine));
    let mut body = greedy(8);
    body["stream"] = json!(true);
    let replies = futures_join_all((0..8).map(|_| {
        let app = app.clone();
        let body = body.clone();
        async move { post_json(&app, "/v2/chat", &body).await }
    }))
    .await;
    let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn route_method_and_size_errors_are_json() {
    let app = app();
    let reply = send(&app, "GET", "/v3/nothing", None, &[]).await;
    assert_eq!(
        reply.error_message(StatusCode::NOT_FOUND),
        "route not found: GET /v3/nothing"
    );
    let reply = send(&app, "GET", "/v2/chat", None, &[]).await;
    reply.error_message(StatusCode::METHOD_NOT_ALLOWED);

    let mut config = test_config();
    config.max_body_bytes = 1024;
    let small = app_with(config);
    let big = with(json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]}));
    let reply = post_json(&small, "/v2/chat", &big).await;
    assert!(reply
        .error_message(StatusCode::PAYLOAD_TOO_LARGE)
        .contains("1024"));
}

#[tokio::test]
async fn before_the_model_loads_only_liveness_is_up() {
    let app = server::app(AppState::new(Config::for_model("unused")));
    assert_eq!(
        send(&app, "GET", "/health", None, &[]).await.status,
        StatusCode::OK
    );
    send(&app, "GET", "/ready", None, &[])
        .await
        .error_message(StatusCode::SERVICE_UNAVAILABLE);
    post_json(&app, "/v2/chat", &with(json!({})))
        .await
        .error_message(StatusCode::SERVICE_UNAVAILABLE);
    let ready = send(&common::app(), "GET", "/ready", None, &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
}

#[tokio::test]
async fn api_keys_guard_every_api_route_but_not_health() {
    let mut config = test_config();
    config.api_keys = server::auth::ApiKeys::new(vec!["k-123".to_string()]);
    let app = app_with(config);
    let body = with(json!({"max_tokens": 1})).to_string();
    for (method, path, body) in [
        ("POST", "/v2/chat", Some(body.as_str())),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/SmolLM2-135M-Instruct.Q4_1", None),
        ("POST", "/v1/tokenize", Some("{}")),
        ("POST", "/v1/detokenize", Some("{}")),
        ("POST", "/v1/check-api-key", None),
    ] {
        let reply = send(&app, method, path, body, &[]).await;
        assert_eq!(
            reply.error_message(StatusCode::UNAUTHORIZED),
            "no api key supplied",
            "{path}"
        );
        let reply = send(
            &app,
            method,
            path,
            body,
            &[("authorization", "Bearer k-12")],
        )
        .await;
        assert_eq!(
            reply.error_message(StatusCode::UNAUTHORIZED),
            "invalid api token",
            "{path}"
        );
    }
    let reply = send(
        &app,
        "POST",
        "/v1/check-api-key",
        None,
        &[("authorization", "bearer k-123")],
    )
    .await;
    assert_eq!(reply.json(), json!({"valid": true}));
    let reply = send(
        &app,
        "POST",
        "/v2/chat",
        Some(&body),
        &[("authorization", "BEARER k-123")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for path in ["/health", "/ready", "/tokenizer.json"] {
        assert_eq!(
            send(&app, "GET", path, None, &[]).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn models_tokenize_and_detokenize() {
    let app = app();
    let list = send(
        &app,
        "GET",
        "/v1/models",
        None,
        &[("host", "example.test:1234")],
    )
    .await
    .json();
    let model = &list["models"][0];
    assert_eq!(model["name"], MODEL);
    assert_eq!(model["endpoints"], json!(["chat"]));
    assert_eq!(model["context_length"], TEST_CONTEXT);
    assert_eq!(
        model["tokenizer_url"],
        "http://example.test:1234/tokenizer.json"
    );
    assert_eq!(
        send(&app, "GET", "/v1/models?endpoint=embed", None, &[])
            .await
            .json(),
        json!({"models": []})
    );
    let one = send(&app, "GET", &format!("/v1/models/{MODEL}"), None, &[]).await;
    assert_eq!(one.json()["name"], MODEL);
    send(&app, "GET", "/v1/models/other", None, &[])
        .await
        .error_message(StatusCode::NOT_FOUND);

    let tokenizer = send(&app, "GET", "/tokenizer.json", None, &[]).await;
    assert_eq!(tokenizer.status, StatusCode::OK);
    assert!(tokenizer.json().is_object());

    let text = "Hello, world! Bonjour.";
    let tokens = post_json(&app, "/v1/tokenize", &json!({"model": MODEL, "text": text}))
        .await
        .json();
    let ids = tokens["tokens"].as_array().unwrap();
    assert!(ids.len() > 3);
    assert_eq!(tokens["token_strings"].as_array().unwrap().len(), ids.len());
    let joined: String = tokens["token_strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(joined, text);
    let back = post_json(
        &app,
        "/v1/detokenize",
        &json!({"model": MODEL, "tokens": ids}),
    )
    .await
    .json();
    assert_eq!(back["text"], text);

    let bad = post_json(
        &app,
        "/v1/detokenize",
        &json!({"model": MODEL, "tokens": [49152]}),
    )
    .await;
    assert!(bad
        .error_message(StatusCode::BAD_REQUEST)
        .contains("outside the vocabulary"));
    let empty = post_json(&app, "/v1/tokenize", &json!({"model": MODEL, "text": ""})).await;
    empty.error_message(StatusCode::BAD_REQUEST);
    let wrong = post_json(&app, "/v1/tokenize", &json!({"model": "x", "text": "a"})).await;
    wrong.error_message(StatusCode::NOT_FOUND);
}

fn greedy(max_tokens: usize) -> Value {
    with(json!({"temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
}

#[tokio::test]
async fn non_stream_reply_has_real_usage_and_logprobs() {
    let app = app();
    let mut body = greedy(4);
    body["logprobs"] = json!(true);
    let reply = post_json(&app, "/v2/chat", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert!(uuid::Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
    assert_eq!(v["finish_reason"], "MAX_TOKENS");
    assert_eq!(v["message"]["role"], "assistant");
    let text = v["message"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(v["message"]["content"][0]["type"], "text");
    assert_eq!(v["usage"]["tokens"]["output_tokens"], 4);
    assert_eq!(v["usage"]["billed_units"], v["usage"]["tokens"]);

    // input_tokens is the rendered prompt's real length.
    let engine = engine();
    let valid = server::validate::validate_chat(
        serde_json::from_value(body.clone()).unwrap(),
        engine.info(),
    )
    .unwrap();
    let prompt = engine
        .tokenize(&engine.render_chat(&valid.prompt).unwrap(), false)
        .unwrap();
    assert_eq!(v["usage"]["tokens"]["input_tokens"], prompt.len());

    let items = v["logprobs"].as_array().unwrap();
    let pieces: String = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    assert_eq!(pieces, text);
    let token_count: usize = items
        .iter()
        .map(|i| i["token_ids"].as_array().unwrap().len())
        .sum();
    assert_eq!(token_count, 4);
    for item in items {
        let lps = item["logprobs"].as_array().unwrap();
        assert_eq!(lps.len(), item["token_ids"].as_array().unwrap().len());
        assert!(lps.iter().all(|l| l.as_f64().unwrap() <= 0.0));
    }
    body["logprobs"] = json!(false);
    let plain = post_json(&app, "/v2/chat", &body).await.json();
    assert!(plain.get("logprobs").is_none());
    assert_eq!(
        plain["message"]["content"][0]["text"], text,
        "greedy is deterministic"
    );
}

#[tokio::test]
async fn stop_sequences_cut_the_reply_and_say_so() {
    let app = app();
    let full = post_json(&app, "/v2/chat", &greedy(24)).await.json();
    let text = full["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    // Stop at the second word of the greedy answer.
    let word = text
        .split_whitespace()
        .nth(1)
        .expect("a few words of reply")
        .to_string();
    let mut body = greedy(24);
    body["stop_sequences"] = json!([word]);
    let cut = post_json(&app, "/v2/chat", &body).await.json();
    assert_eq!(cut["finish_reason"], "STOP_SEQUENCE", "{cut}");
    let cut_text = cut["message"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(cut_text) && cut_text.len() < text.len(),
        "{cut_text:?} vs {text:?}"
    );
    assert!(!cut_text.contains(&word));
}

#[tokio::test]
async fn max_tokens_above_the_context_is_capped_not_rejected() {
    let app = app();
    let mut config = test_config();
    config.max_tokens = Some(3);
    let capped = app_with(config);
    let reply = post_json(&capped, "/v2/chat", &greedy(100_000)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert_eq!(
        v["usage"]["tokens"]["output_tokens"], 3,
        "server ceiling applies"
    );
    assert_eq!(v["finish_reason"], "MAX_TOKENS");
    let reply = post_json(&app, "/v2/chat", &greedy(1_000_000)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn stream_reply_is_sse_and_matches_the_non_stream_text() {
    let app = app();
    // Fewer tokens than the greedy answer needs, so the reply ends at MAX_TOKENS.
    let mut body = greedy(5);
    body["stream"] = json!(true);
    body["logprobs"] = json!(true);
    let reply = post_json(&app, "/v2/chat", &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let sse = reply.text();
    assert!(sse.ends_with("\n\ndata: [DONE]\n\n"), "{sse}");
    let mut text = String::new();
    let mut deltas = 0;
    for block in sse
        .split("\n\n")
        .filter(|b| !b.is_empty() && !b.starts_with(':') && *b != "data: [DONE]")
    {
        let mut lines = block.lines();
        let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert!(lines.next().is_none());
        assert_eq!(data["type"], event);
        if event == "content-delta" {
            deltas += 1;
            let piece = data["delta"]["message"]["content"]["text"]
                .as_str()
                .unwrap();
            assert_eq!(data["logprobs"]["text"], piece);
            assert!(!data["logprobs"]["token_ids"].as_array().unwrap().is_empty());
            text.push_str(piece);
        }
        if event == "message-end" {
            assert_eq!(data["delta"]["finish_reason"], "MAX_TOKENS");
            assert_eq!(data["delta"]["usage"]["tokens"]["output_tokens"], 5);
        }
    }
    assert!(deltas >= 1);
    body["stream"] = json!(false);
    let plain = post_json(&app, "/v2/chat", &body).await.json();
    assert_eq!(plain["message"]["content"][0]["text"], text.as_str());
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let mut config = test_config();
    config.max_concurrent = 1;
    config.max_queue = 1;
    let engine = server::cli::load_engine(&config).expect("engine");
    let app = server::app(AppState::with_engine(config, engine));
    let body = greedy(48);
    let replies = futures_join_all((0..6).map(|_| {
        let app = app.clone();
        let body = body.clone();
        async move { post_json(&app, "/v2/chat", &body).await }
    }))
    .await;
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !limited.is_empty(),
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in limited {
        assert_eq!(reply.headers["retry-after"], "1");
        reply.error_message(StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(replies.iter().any(|r| r.status == StatusCode::OK));
}

/// Runs the futures concurrently on this task (no extra dependency for one join).
async fn futures_join_all<F: std::future::Future<Output = Reply> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_engine_steps_and_need_the_key() {
    let mut config = test_config();
    config.api_keys = server::auth::ApiKeys::new(vec!["k-123".to_string()]);
    // An engine of its own: the counts below are this test's requests only.
    let engine = server::cli::load_engine(&config).expect("default model loads");
    let app = server::app(AppState::with_engine(config.clone(), engine.clone()));
    let key = [("authorization", "Bearer k-123")];
    let body = with(json!({"max_tokens": 3, "temperature": 0})).to_string();
    let reply = send(&app, "POST", "/v2/chat", Some(&body), &key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let output = reply.json()["usage"]["tokens"]["output_tokens"]
        .as_u64()
        .unwrap();
    send(&app, "GET", "/no/such/route", None, &key).await;
    let reply = send(&app, "GET", "/metrics", None, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    // The reply can reach the client a moment before the engine has freed its slot and
    // reported its last step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.load().1 > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let reply = send(&app, "GET", "/metrics", None, &key).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.text();
    let model = format!("model=\"{MODEL}\"");
    for line in [
        "cohost_requests_total{route=\"/v2/chat\",status=\"200\"} 1".to_string(),
        "cohost_requests_total{route=\"unmatched\",status=\"404\"} 1".to_string(),
        "cohost_requests_total{route=\"/metrics\",status=\"401\"} 1".to_string(),
        format!("cohost_kv_cache_tokens{{{model}}} 0"),
        format!("cohost_generation_tokens_total{{{model}}} {output}"),
        format!("cohost_time_to_first_token_seconds_count{{{model}}} 1"),
        format!("cohost_request_duration_seconds_count{{{model}}} 1"),
        format!("cohost_queue_wait_seconds_count{{{model}}} 1"),
        format!("cohost_running_sequences{{{model}}} 0"),
        format!("cohost_queued_requests{{{model}}} 0"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    let prompt: u64 = metric(&text, &format!("cohost_prompt_tokens_total{{{model}}}"));
    assert!(prompt > 5, "{text}");
    // One prefill step and a decode step per further token, one sequence each.
    let steps: u64 = metric(&text, &format!("cohost_batch_size_count{{{model}}}"));
    assert!(steps >= output, "{text}");
    // --metrics-public opens it without the key.
    config.metrics_public = true;
    let app = server::app(AppState::with_engine(config, engine));
    assert_eq!(
        send(&app, "GET", "/metrics", None, &[]).await.status,
        StatusCode::OK
    );
}

/// The value of the sample whose name and labels are `series`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}
