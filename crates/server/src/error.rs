//! The one place where every error of the request path becomes an HTTP status and the body
//! `{"id": "<uuid>", "message": "..."}` that the Cohere SDKs turn into their typed exceptions.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runner::engine::{SubmitError, TextOpError};

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
                "too many tokens: the prompt has {prompt} tokens, more than the {context} tokens of context this model serves."
            )),
            SubmitError::Sampling(e) => Self::invalid(e),
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

impl From<encoder::EngineError> for ApiError {
    fn from(err: encoder::EngineError) -> Self {
        match err {
            encoder::EngineError::QueueFull(waiting) => Self::Overloaded { waiting },
            encoder::EngineError::Stopped => Self::ShuttingDown,
            encoder::EngineError::Failed(m) => Self::Internal(m),
        }
    }
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
        if let Self::Overloaded { .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
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
    fn unknown_model_message_names_it() {
        let err = ApiError::ModelNotFound("xyz".into());
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert!(err.to_string().starts_with("model 'xyz' not found"));
    }
}
