//! End to end: start the real `cohost serve` binary on a free port with the default model, wait
//! until it is ready, and talk to it over a plain TCP socket with a hand-written HTTP/1.1 client.

use super::support;

use serde_json::{json, Value};
use support::Server;

#[test]
fn serves_the_default_model_and_streams_a_reply() {
    let server = Server::start(&[]);

    let health = server.request("GET", "/health", None, &[]);
    assert_eq!(health.status, 200);

    let models = server.request("GET", "/v1/models", None, &[]).json();
    let name = models["models"][0]["name"]
        .as_str()
        .expect("a model name")
        .to_string();
    assert_eq!(name, "SmolLM2-135M-Instruct.Q4_1");

    let request = json!({
        "model": name, "stream": true, "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    });
    let reply = server.request("POST", "/v2/chat", Some(&request), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);

    let mut types = Vec::new();
    let mut text = String::new();
    for block in reply
        .body
        .split("\n\n")
        .filter(|b| !b.is_empty() && !b.starts_with(':'))
    {
        let data = block
            .lines()
            .filter(|l| l.starts_with("data: "))
            .collect::<Vec<_>>();
        assert_eq!(data.len(), 1, "one data line per event: {block:?}");
        let data = &data[0]["data: ".len()..];
        if data == "[DONE]" {
            continue;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        let kind = event["type"].as_str().unwrap().to_string();
        assert_eq!(block.lines().next().unwrap(), format!("event: {kind}"));
        if kind == "content-delta" {
            text.push_str(
                event["delta"]["message"]["content"]["text"]
                    .as_str()
                    .unwrap(),
            );
        }
        if kind == "message-end" {
            let usage = &event["delta"]["usage"]["tokens"];
            assert!(usage["input_tokens"].as_u64().unwrap() > 5);
            let out = usage["output_tokens"].as_u64().unwrap();
            assert!((1..=12).contains(&out), "{event}");
            // The first chat of a fresh server finds nothing cached.
            assert_eq!(event["delta"]["usage"]["cached_tokens"], 0, "{event}");
            let finish = event["delta"]["finish_reason"].as_str().unwrap();
            assert!(["COMPLETE", "MAX_TOKENS"].contains(&finish), "{finish}");
        }
        types.push(kind);
    }
    assert_eq!(types.first().map(String::as_str), Some("message-start"));
    assert_eq!(types.get(1).map(String::as_str), Some("content-start"));
    assert_eq!(&types[types.len() - 2..], ["content-end", "message-end"]);
    assert!(types.iter().filter(|t| *t == "content-delta").count() >= 1);
    assert!(!text.trim().is_empty());

    // The same request without streaming gives the same greedy text, computed on ...
    let mut plain = request.clone();
    plain["stream"] = json!(false);
    let reply = server.request("POST", "/v2/chat", Some(&plain), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(
        body["message"]["content"][0]["text"].as_str().unwrap(),
        text
    );
    // ... its prompt from the prefix cache, in whole 16-token blocks before the last token.
    let prompt = body["usage"]["tokens"]["input_tokens"].as_u64().unwrap();
    assert_eq!(
        body["usage"]["cached_tokens"].as_u64(),
        Some((prompt - 1) / 16 * 16),
        "{body}"
    );

    // A client mistake is a JSON 400, an unknown model a 404.
    let bad = server.request(
        "POST",
        "/v2/chat",
        Some(&json!({"model": name, "messages": [], "temperature": 3})),
        &[],
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request: temperature"));
    let missing = server.request(
        "POST",
        "/v2/chat",
        Some(&json!({"model": "nope", "messages": []})),
        &[],
    );
    assert_eq!(missing.status, 404);
}

#[test]
fn api_keys_guard_the_api_but_not_health() {
    let server = Server::start(&["--api-key", "sekret", "--served-model-name", "smol"]);
    let request =
        json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let denied = server.request("POST", "/v2/chat", Some(&request), &[]);
    assert_eq!(denied.status, 401);
    assert!(denied.json()["id"].is_string());
    let wrong = server.request(
        "POST",
        "/v2/chat",
        Some(&request),
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.status, 401);
    let ok = server.request(
        "POST",
        "/v2/chat",
        Some(&request),
        &[("Authorization", "bearer sekret")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(server.request("GET", "/health", None, &[]).status, 200);
}

/// The architectures without small real weights serve a chat end to end from their tiny random
/// fixtures (crates/runner/tests/fixtures/tiny), as a Hugging Face directory and as GGUF: the
/// text is noise, the API shape and the token accounting are real.
#[test]
fn serves_the_tiny_cohere_cohere2_and_qwen3_models() {
    let tiny = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/runner/tests/fixtures/tiny"
    );
    for (model, architecture) in [
        ("cohere2", "cohere2"),
        ("cohere.gguf", "command-r"),
        ("qwen3.gguf", "qwen3"),
        ("qwen3", "qwen3"),
    ] {
        let path = format!("{tiny}/{model}");
        let server = Server::start(&["--model", &path]);
        let models = server.request("GET", "/v1/models", None, &[]).json();
        let name = models["models"][0]["name"].as_str().unwrap().to_string();
        let request = json!({
            "model": name, "temperature": 0, "max_tokens": 6,
            "messages": [{"role": "user", "content": "Hello there!"}]
        });
        let reply = server.request("POST", "/v2/chat", Some(&request), &[]);
        assert_eq!(reply.status, 200, "{model}: {}", reply.body);
        let body = reply.json();
        assert!(
            body["message"]["content"][0]["text"].is_string()
                || body["message"]["tool_calls"].is_array(),
            "{model}: {body}"
        );
        let usage = &body["usage"]["tokens"];
        assert!(
            usage["input_tokens"].as_u64().unwrap() > 3,
            "{model}: {body}"
        );
        assert!(
            usage["output_tokens"].as_u64().unwrap() <= 6,
            "{model}: {body}"
        );
        assert!(
            server
                .log
                .lock()
                .unwrap()
                .contains(&format!("architecture={architecture}")),
            "{model}: the log names the architecture"
        );
    }
}

/// A Command model that reasons: the tiny random cohere2 model under Cohere's Command 4 template
/// (`reasoning` switch). With thinking enabled the prompt opens `<|START_THINKING|>`, the
/// reply's thinking is block 0 and is closed at the token budget, the answer is block 1, and
/// none of the format's markers reaches either; disabled, only the answer comes back.
#[test]
fn a_tiny_command_model_thinks_within_its_budget() {
    let root = env!("CARGO_MANIFEST_DIR");
    let fixture = format!("{root}/crates/runner/tests/fixtures/tiny/cohere2");
    let dir = std::env::temp_dir().join(format!("cohost-e2e-north-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let template = std::fs::read_to_string(format!(
        "{root}/crates/runner/tests/golden/text/templates/cohere-north.jinja"
    ))
    .unwrap();
    let config_path = dir.join("tokenizer_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = Value::String(template);
    std::fs::write(&config_path, config.to_string()).unwrap();

    let server = Server::start(&[
        "--model",
        dir.to_str().unwrap(),
        "--served-model-name",
        "north",
    ]);
    let models = server.request("GET", "/v1/models", None, &[]).json();
    assert!(
        models["models"][0]["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("thinking"))),
        "{models}"
    );
    let chat = |thinking: Value| {
        let request = json!({
            "model": "north", "temperature": 0, "max_tokens": 12, "thinking": thinking,
            "messages": [{"role": "user", "content": "Hello there!"}]
        });
        let reply = server.request("POST", "/v2/chat", Some(&request), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    };
    let markers = [
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        "<|START_TEXT|>",
        "<|END_TEXT|>",
        "<|START_RESPONSE|>",
    ];
    let thought = chat(json!({"type": "enabled", "token_budget": 3}));
    let content = thought["message"]["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "thinking", "{thought}");
    assert_eq!(content[1]["type"], "text", "{thought}");
    let thinking = content[0]["thinking"].as_str().unwrap();
    let text = content[1]["text"].as_str().unwrap();
    for marker in markers {
        assert!(
            !thinking.contains(marker) && !text.contains(marker),
            "{thought}"
        );
    }
    // The budget's 3 tokens and the forced end marker, then at least one answer token.
    let output = thought["usage"]["tokens"]["output_tokens"]
        .as_u64()
        .unwrap();
    assert!((5..=12).contains(&output), "{thought}");

    let plain = chat(json!({"type": "disabled"}));
    let content = plain["message"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{plain}");
    assert_eq!(content[0]["type"], "text", "{plain}");
    std::fs::remove_dir_all(&dir).ok();
}
