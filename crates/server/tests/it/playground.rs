//! `GET /`: the playground page, from the router with no model loaded (the page needs none).
//! Its behaviour in a browser is tested by tests/playground/run.sh (headless Chromium).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use server::auth::ApiKeys;
use server::{AppState, Config};
use tower::ServiceExt;

async fn get_page(config: Config) -> (StatusCode, axum::http::HeaderMap, String) {
    let app = server::app(AppState::new(config));
    let response = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn the_page_is_served_without_a_key_and_without_foreign_assets() {
    let mut config = Config::for_model("unused.gguf");
    config.api_keys = ApiKeys::new(["secret".to_string()]);
    let (status, headers, body) = get_page(config).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "open like /health, even with auth on"
    );
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(body.contains("<title>cohost playground</title>"));
    assert!(!body.contains("secret"), "the page holds no key");
    // Everything it loads or calls is on this server: no http(s) URL and no src= at all.
    assert!(!body.contains("http://") && !body.contains("https://"));
    assert!(!body.contains(" src="));
    for call in ["\"/v2/chat\"", "\"/ready\"", "\"/v1/models?endpoint=chat\""] {
        assert!(body.contains(call), "{call}");
    }
}

#[tokio::test]
async fn the_page_needs_no_model() {
    // Served while the model is still loading (chat calls answer 503 until then).
    let (status, _, body) = get_page(Config::for_model("unused.gguf")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("<!doctype html>"));
}
