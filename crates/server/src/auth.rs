//! Bearer-token auth for the API routes: on when at least one key is configured.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::error::ApiError;

/// The configured keys; empty means auth is off.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .filter(|k| !k.is_empty())
                .map(String::into_bytes)
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks an `Authorization` header value. The scheme word is matched case-insensitively
    /// (the docs write `bearer`); every configured key is compared, each in constant time, so the
    /// answer's timing says nothing about how much of a key matched or which key it was.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let header =
            authorization.ok_or_else(|| ApiError::Unauthorized("no api key supplied".into()))?;
        let token = bearer_token(header).ok_or_else(|| {
            ApiError::Unauthorized(
                "invalid authorization header: expected 'Bearer <api key>'".into(),
            )
        })?;
        let mut matched = false;
        for key in &self.keys {
            matched |= constant_time_eq(key, token);
        }
        if matched {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("invalid api token".into()))
        }
    }
}

fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let text = header.trim_ascii();
    let space = text.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = text.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Compares without an early exit: time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    let longest = a.len().max(b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the loop back into a short-circuiting comparison.
    std::hint::black_box(diff) == 0
}

/// Middleware for the API routes.
pub async fn require_key(
    State(keys): State<Arc<ApiKeys>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match keys.check(header) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_keys_means_everything_passes() {
        let keys = ApiKeys::new(Vec::<String>::new());
        assert!(!keys.enabled());
        assert!(keys.check(None).is_ok());
        assert!(keys.check(Some(b"Bearer anything")).is_ok());
        assert!(
            !ApiKeys::new(vec![String::new()]).enabled(),
            "an empty key must not turn auth on"
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_any_configured_key_works() {
        let keys = ApiKeys::new(vec!["alpha".to_string(), "beta-key".to_string()]);
        assert!(keys.check(Some(b"Bearer alpha")).is_ok());
        assert!(keys.check(Some(b"bearer beta-key")).is_ok());
        assert!(keys.check(Some(b"BEARER  alpha ")).is_ok());
    }

    #[test]
    fn wrong_missing_or_malformed_credentials_are_401() {
        let keys = ApiKeys::new(vec!["alpha".to_string()]);
        for header in [
            Some(&b"Bearer alph"[..]),
            Some(b"Bearer alphaa"),
            Some(b"Basic alpha"),
            Some(b"alpha"),
            Some(b"Bearer "),
            None,
        ] {
            let err = keys.check(header).unwrap_err();
            assert_eq!(
                err.status(),
                axum::http::StatusCode::UNAUTHORIZED,
                "{header:?}"
            );
        }
        assert_eq!(
            keys.check(None).unwrap_err().to_string(),
            "no api key supplied"
        );
        assert_eq!(
            keys.check(Some(b"Bearer nope")).unwrap_err().to_string(),
            "invalid api token"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"\0", b""));
    }
}
