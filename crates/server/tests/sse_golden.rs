//! Golden bytes of a streamed greedy chat with the default model. The response id is random, so
//! it is replaced by `<id>` before comparing. Re-bless with `UPDATE_GOLDEN=1` and review the diff.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

const HAIKU: &str = "Write a haiku about the sea.";

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
