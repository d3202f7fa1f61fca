//! Golden bytes of a streamed greedy chat with the default model. The response id is random, so
//! it is replaced by `<id>` before comparing. Re-bless with `UPDATE_GOLDEN=1` and review the diff.

use super::common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

const HAIKU: &str = "Write a haiku about the sea.";

/// The golden bytes carry `usage.cached_tokens`, which depends on what earlier requests left in
/// the prefix cache; so these streams come from an engine of their own with the cache off, and
/// the other tests' requests (same binary, same prompts) cannot change them.
fn app() -> axum::Router {
    static ENGINE: std::sync::OnceLock<runner::engine::EngineHandle> = std::sync::OnceLock::new();
    let mut config = test_config();
    config.prefix_cache = false;
    let engine = ENGINE
        .get_or_init(|| server::cli::load_engine(&config).expect("default model loads"))
        .clone();
    server::app(server::AppState::with_engine(config, engine))
}

fn golden_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The stream with its one random field (the message-start id) made stable.
fn normalise(sse: &str) -> String {
    let id_at = sse.find("\"id\":\"").expect("message-start carries an id") + "\"id\":\"".len();
    let id_len = sse[id_at..].find('"').unwrap();
    assert!(uuid::Uuid::parse_str(&sse[id_at..id_at + id_len]).is_ok());
    format!("{}<id>{}", &sse[..id_at], &sse[id_at + id_len..])
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "SSE bytes differ from {} (UPDATE_GOLDEN=1 re-blesses)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

async fn stream(body: Value) -> String {
    let reply = post_json(&app(), "/v2/chat", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text()
}

#[tokio::test]
async fn greedy_stream_bytes_match_the_golden_file() {
    let sse = stream(json!({
        "model": MODEL, "stream": true, "temperature": 0, "max_tokens": 32,
        "messages": [{"role": "user", "content": HAIKU}]
    }))
    .await;
    check_golden("stream-greedy-haiku.sse", &normalise(&sse));
}

#[tokio::test]
async fn greedy_stream_with_a_stop_sequence_and_bracket_text_matches_the_golden_file() {
    // The `[` in the question makes the model likely to echo brackets, exercising the escape.
    let sse = stream(json!({
        "model": MODEL, "stream": true, "temperature": 0, "max_tokens": 24, "stop_sequences": ["sea"],
        "messages": [{"role": "system", "content": "Answer in one line."},
                     {"role": "user", "content": "Repeat exactly: [DONE] is the end of the sea."}]
    }))
    .await;
    assert!(
        !sse[..sse.len() - "data: [DONE]\n\n".len()].contains("[DONE]"),
        "{sse}"
    );
    check_golden("stream-greedy-stop.sse", &normalise(&sse));
}

/// A thinking model's reply (scripted engine events, as a Qwen3-style model writes them),
/// encoded both ways. The SDK suite parses these two files with the real Python SDK
/// (`tests/sdk/python/test_thinking.py`), so the thinking block's shape is checked against the
/// client, not only against the spec.
#[test]
fn a_thinking_reply_encodes_to_the_golden_stream_and_response() {
    use runner::engine::{FinishReason, StreamEvent};
    use runner::reply::{ReplyAssembler, ReplyOptions};
    let events = || {
        [
            ("<think>\nThe user", 1),
            (" greets me.\n</th", 2),
            ("ink>\n\nHello", 3),
            ("! How can I help?", 4),
        ]
        .into_iter()
        .map(|(text, id)| StreamEvent::Text {
            text: text.into(),
            token_ids: vec![id],
            logprobs: Vec::new(),
        })
        .chain([StreamEvent::Done {
            reason: FinishReason::EndOfTurn,
            prompt_tokens: 12,
            output_tokens: 4,
            cached_tokens: 0,
        }])
    };
    let options = || ReplyOptions {
        thinking: runner::thinking::markers_of("<think></think>"),
        ..ReplyOptions::default()
    };
    let id = "29f14a5a-11de-4cae-9800-25e4747408ea";
    let mut assembler = ReplyAssembler::new(12, options());
    let mut encoder = server::sse::SseEncoder::new(false);
    let mut sse = String::from_utf8(encoder.start(id).to_vec()).unwrap();
    for event in events() {
        for reply_event in assembler.push(event) {
            for frame in encoder.event(reply_event) {
                sse.push_str(std::str::from_utf8(&frame).unwrap());
            }
        }
    }
    check_golden("thinking-stream.sse", &sse);
    let mut assembler = ReplyAssembler::new(12, options());
    let mut fold = server::response::ResponseFold::new(false);
    let mut response = None;
    for event in events() {
        for reply_event in assembler.push(event) {
            if let Some(end) = fold.push(reply_event) {
                response = Some(end);
            }
        }
    }
    let response = fold.finish(id.into(), response.expect("an end")).unwrap();
    let json = serde_json::to_string_pretty(&response).unwrap() + "\n";
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["message"]["content"][0]["type"], "thinking");
    assert_eq!(
        value["message"]["content"][0]["thinking"],
        "The user greets me."
    );
    assert_eq!(
        value["message"]["content"][1]["text"],
        "Hello! How can I help?"
    );
    check_golden("thinking-response.json", &json);
}
