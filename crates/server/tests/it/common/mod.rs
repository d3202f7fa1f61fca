//! Shared by the router tests: the real default model behind an engine, and a one-request client
//! that drives the router as a tower service (no socket).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use runner::engine::EngineHandle;
use serde_json::Value;
use server::{AppState, Config};
use tower::ServiceExt;

/// Small enough that a long prompt overflows it cheaply.
pub const TEST_CONTEXT: usize = 512;

pub fn default_model() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "default model missing at {}: run models/fetch-default.sh",
        path.display()
    );
    path
}

pub fn test_config() -> Config {
    let mut config = Config::for_model(default_model().display().to_string());
    config.context_length = Some(TEST_CONTEXT);
    config.max_concurrent = 4;
    config.max_queue = 32;
    // Slow shared machines must not slip keep-alive comments into the golden bytes.
    config.keep_alive = std::time::Duration::from_secs(3600);
    config
}

/// One engine for the whole test binary: loading takes about a second, and requests on it are
/// independent sequences.
pub fn engine() -> EngineHandle {
    static ENGINE: OnceLock<EngineHandle> = OnceLock::new();
    ENGINE
        .get_or_init(|| server::cli::load_engine(&test_config()).expect("default model loads"))
        .clone()
}

pub fn app_with(config: Config) -> Router {
    server::app(AppState::with_engine(config, engine()))
}

pub fn app() -> Router {
    app_with(test_config())
}

pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("utf-8 body")
    }

    /// Asserts the Cohere error shape and returns the message.
    pub fn error_message(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/json");
        let v = self.json();
        assert!(
            uuid::Uuid::parse_str(v["id"].as_str().expect("id")).is_ok(),
            "{v}"
        );
        v["message"].as_str().expect("message").to_string()
    }
}

pub async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post_json(app: &Router, path: &str, body: &Value) -> Reply {
    send(
        app,
        "POST",
        path,
        Some(&body.to_string()),
        &[("content-type", "application/json")],
    )
    .await
}

pub fn chat(messages: Value) -> Value {
    serde_json::json!({"model": MODEL, "messages": messages})
}
