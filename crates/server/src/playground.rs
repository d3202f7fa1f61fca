//! `GET /`: the playground, one self-contained HTML page compiled into the binary. It streams
//! replies from `/v2/chat` in the browser; the page holds no secret (the key typed into it goes
//! with each API call), so it is served without auth, like `/health`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("playground.html");

/// The page allows nothing from elsewhere: its own inline script and style, calls back to this
/// server, and no framing. An asset added from another origin would fail loudly in the browser
/// test rather than quietly reach out at run time.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
