//! The one place where every error of the request path becomes an HTTP status and the body
//! `{"id": "<uuid>", "message": "..."}` that the Cohere SDKs turn into their typed exceptions.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use runner::engine::{ErrorKind, SubmitError, TextOpError};
use runner::reply::ReplyError;

use crate::wire::ErrorBody;

/// Seconds a client is told to wait after a 429; the SDKs honour `Retry-After`.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Everything a route can answer with instead of a success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A request the server understood but refuses; the message is already in Cohere's wording.
    #[error("{0}")]
    BadRequest(String),
    #[error("model '{0}' not found, make sure the correct model ID was used and that you have access to the model.")]
    ModelNotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("route not found: {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
    #[error("the server is overloaded ({waiting} requests waiting), please retry later")]
    Overloaded { waiting: usize },
    #[error("the model is still loading, please retry shortly")]
    NotReady,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A fault of the server, never of the request (clients retry these).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Shorthand for the common `invalid request: ...` 400.
    pub fn invalid(detail: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("invalid request: {detail}"))
    }

    /// What a body that is not the JSON we expect becomes: a syntax error keeps serde's text
    /// (`invalid json syntax: ...`), a shape error is an ordinary invalid request.
    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Self::BadRequest(format!("invalid json syntax: {err}"))
            }
            Category::Data => Self::invalid(err),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::QueueFull(waiting) => Self::Overloaded { waiting },
            SubmitError::PromptTooLong { prompt, context } => Self::BadRequest(format!(
                "too many tokens: the prompt has {prompt} tokens, at least as many as the {context} tokens of context this model serves, so no room is left for the reply."
            )),
            SubmitError::TooBigForCache { prompt, capacity } => Self::BadRequest(format!(
                "too many tokens: the prompt has {prompt} tokens, and this server's KV cache holds {capacity} (see --kv-cache-mb), so it can never run."
            )),
            SubmitError::Sampling(e) => Self::invalid(e),
            SubmitError::Invalid(m) => Self::invalid(m),
            SubmitError::Stopped => Self::ShuttingDown,
        }
    }
}

impl From<TextOpError> for ApiError {
    fn from(err: TextOpError) -> Self {
        match err {
            // The template refusing a chat (its `raise_exception`) is about the request.
            TextOpError::Template(m) => Self::invalid(format!(
                "the model's chat template rejected the messages: {m}"
            )),
            TextOpError::Tokenizer(m) => Self::Internal(format!("tokenizer: {m}")),
        }
    }
}

impl From<ReplyError> for ApiError {
    /// A reply that failed before anything was sent: a failure the request caused (its grammar
    /// cannot be continued) is the client's 400, never a 5xx that SDKs retry.
    fn from(err: ReplyError) -> Self {
        match err.kind {
            ErrorKind::Request => Self::invalid(err.message),
            ErrorKind::Server => Self::Internal(err.message),
        }
    }
}

impl From<encoder::EngineError> for ApiError {
    fn from(err: encoder::EngineError) -> Self {
        match err {
            encoder::EngineError::QueueFull(waiting) => Self::Overloaded { waiting },
            encoder::EngineError::Stopped => Self::ShuttingDown,
            encoder::EngineError::Failed(m) => Self::Internal(m),
        }
    }
}

/// The JSON error body for a message, as every error response carries it.
pub fn error_body_json(message: &str) -> String {
    serde_json::to_string(&ErrorBody {
        id: uuid::Uuid::new_v4().to_string(),
        message: message.to_string(),
    })
    .expect("an error body serializes")
}

/// Largest non-JSON error body read back to become the message of its JSON replacement.
const FOREIGN_ERROR_BYTES: usize = 4096;

/// Middleware over the whole router: an error response that is not our JSON (axum's own
/// rejections, such as a path that is not UTF-8, answer in plain text) is rewritten to the
/// `{"id", "message"}` shape, keeping its status and headers and its text as the message.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FOREIGN_ERROR_BYTES)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let message = if status == StatusCode::BAD_REQUEST {
        format!("invalid request: {text}")
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(error_body_json(&message)))
}

impl From<encoder::TextError> for ApiError {
    fn from(err: encoder::TextError) -> Self {
        match err {
            encoder::TextError::TooLong { tokens, max } => Self::BadRequest(format!(
                "too many tokens: the input has {tokens} tokens, more than the {max} this model reads."
            )),
            encoder::TextError::Tokenizer(m) => Self::Internal(format!("tokenizer: {m}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            id: uuid::Uuid::new_v4().to_string(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            Self::Overloaded { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            // The body was not read (or not all of it): the connection cannot be reused.
            Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_syntax_and_shape_errors_get_distinct_prefixes() {
        let syntax = serde_json::from_str::<serde_json::Value>("{\"a\": tru}").unwrap_err();
        assert!(ApiError::from_json(&syntax)
            .to_string()
            .starts_with("invalid json syntax: "));
        let eof = serde_json::from_str::<serde_json::Value>("{\"a\": ").unwrap_err();
        assert!(ApiError::from_json(&eof)
            .to_string()
            .starts_with("invalid json syntax: "));
        let shape = serde_json::from_str::<crate::wire::ChatRequest>("{\"temperature\": \"hot\"}")
            .unwrap_err();
        let err = ApiError::from_json(&shape);
        assert!(err.to_string().starts_with("invalid request: "), "{err}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn submit_errors_map_to_client_statuses() {
        assert_eq!(
            ApiError::from(SubmitError::QueueFull(3)).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let long = ApiError::from(SubmitError::PromptTooLong {
            prompt: 9000,
            context: 8192,
        });
        assert_eq!(long.status(), StatusCode::BAD_REQUEST);
        assert!(long.to_string().starts_with("too many tokens: "));
        assert!(long.to_string().contains("9000") && long.to_string().contains("8192"));
        assert_eq!(
            ApiError::from(SubmitError::Stopped).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn response_is_json_with_id_and_message_and_429_has_retry_after() {
        let response = ApiError::Overloaded { waiting: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert!(uuid::Uuid::parse_str(&body.id).is_ok());
        assert!(body.message.contains("7 requests waiting"));
    }

    #[test]
    fn a_reply_that_failed_by_the_requests_fault_is_a_400_never_a_5xx() {
        let request = ApiError::from(ReplyError {
            kind: ErrorKind::Request,
            message: "the response grammar failed during generation: x".into(),
        });
        assert_eq!(request.status(), StatusCode::BAD_REQUEST);
        let server = ApiError::from(ReplyError {
            kind: ErrorKind::Server,
            message: "forward pass failed".into(),
        });
        assert_eq!(server.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let long = ApiError::from(SubmitError::PromptTooLong {
            prompt: 64,
            context: 64,
        });
        assert!(
            long.to_string()
                .contains("64 tokens, at least as many as the 64 tokens"),
            "{long}"
        );
    }

    #[tokio::test]
    async fn foreign_error_responses_become_the_json_shape() {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_REQUEST, "Invalid URL: bad bytes") }),
            )
            .route("/empty", get(|| async { StatusCode::URI_TOO_LONG }))
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(json_errors));
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                let request = axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let kind = response.headers().get(header::CONTENT_TYPE).cloned();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, kind, bytes)
            }
        };
        let (status, kind, bytes) = call("/plain").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(kind.unwrap(), "application/json");
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.message, "invalid request: Invalid URL: bad bytes");
        let (status, _, bytes) = call("/empty").await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.message, "URI Too Long");
        let (status, _, bytes) = call("/ok").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], b"fine");
    }

    #[test]
    fn unknown_model_message_names_it() {
        let err = ApiError::ModelNotFound("xyz".into());
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert!(err.to_string().starts_with("model 'xyz' not found"));
    }
}
