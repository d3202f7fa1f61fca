//! The HTTP side: one streamed request against either API, timed at the client.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::{read_cohere, read_llama, Reading, SseEvent, SseParser, StreamEnd};
use crate::stats::RequestOutcome;

/// Which wire format the server under test speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Cohere Chat API v2: `POST /v2/chat` with `stream: true`.
    Cohere,
    /// llama.cpp's llama-server native `POST /completion` with `stream: true`.
    Llama,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Cohere => "cohere",
            Api::Llama => "llama",
        }
    }
}

/// One message of a chat history, in the shape both Cohere's `messages` and llama-server's
/// `/apply-template` take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Why a request got no usable response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection (server not up yet, wrong port, reset).
    Unreachable(String),
    /// An HTTP error status with the server's message.
    Status(StatusCode, String),
    /// Anything else (timeout, malformed reply).
    Other(String),
}

impl SendError {
    /// Worth retrying while waiting for a server to come up: nothing listening yet, or a server
    /// that answers 503 while it loads its model (cohost and llama-server both do).
    pub fn while_starting(&self) -> bool {
        match self {
            SendError::Unreachable(_) => true,
            SendError::Status(status, _) => *status == StatusCode::SERVICE_UNAVAILABLE,
            SendError::Other(_) => false,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(m) | SendError::Other(m) => f.write_str(m),
            SendError::Status(status, m) => write!(f, "HTTP {}: {m}", status.as_u16()),
        }
    }
}

/// A server under test and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub api: Api,
    /// Base URL without a trailing slash.
    pub base: String,
    pub api_key: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl Target {
    pub fn new(
        api: Api,
        base: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Every stream has its own connection, as separate users would.
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            api,
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http,
            timeout,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        let resp = req.send().await.map_err(describe)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(SendError::Status(status, error_message(&body)))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, SendError> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        read_json(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        let resp = self.send(self.json_post(path, body)).await?;
        read_json(resp).await
    }

    fn json_post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body.to_string())
    }

    /// The request body for one generation: `text` is the user message (Cohere) or the full
    /// prompt text (llama-server). Greedy, fixed length, no prompt cache.
    pub fn generation_body(&self, model: Option<&str>, text: &str, max_tokens: usize) -> Value {
        match self.api {
            Api::Cohere => json!({
                "model": model.unwrap_or_default(),
                "stream": true,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }),
            Api::Llama => json!({
                "prompt": text,
                "stream": true,
                "n_predict": max_tokens,
                "temperature": 0,
                "cache_prompt": false,
            }),
        }
    }

    /// llama-server's rendering of a chat with its own chat template (`POST /apply-template`),
    /// the text its chat endpoint would build, ending where the assistant's reply starts.
    pub async fn render_template(&self, messages: &[ChatMessage]) -> Result<String, SendError> {
        let body = json!({ "messages": messages });
        // llama-server may close a pooled keep-alive connection just as it is reused; one more
        // try on a fresh connection tells that apart from a real refusal.
        let rendered = match self.post_json("/apply-template", &body).await {
            Ok(v) => v,
            Err(_) => self.post_json("/apply-template", &body).await?,
        };
        rendered["prompt"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| SendError::Other("no `prompt` in the /apply-template reply".into()))
    }

    /// The request body for one turn of a conversation, or one request with a shared system
    /// prompt: the whole history, greedy, at most `max_tokens`, and the server's prompt cache
    /// allowed (the point of the workloads that send it). Cohere: `messages` as they are;
    /// llama-server: the history rendered by its template (one extra request, made here so that
    /// it is done before the caller starts its clock) with `cache_prompt: true`, its default.
    pub async fn history_body(
        &self,
        model: Option<&str>,
        messages: &[ChatMessage],
        max_tokens: usize,
    ) -> Result<Value, SendError> {
        Ok(match self.api {
            Api::Cohere => json!({
                "model": model.unwrap_or_default(),
                "stream": true,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0,
            }),
            Api::Llama => json!({
                "prompt": self.render_template(messages).await?,
                "stream": true,
                "n_predict": max_tokens,
                "temperature": 0,
                "cache_prompt": true,
            }),
        })
    }

    fn generation_path(&self) -> &'static str {
        match self.api {
            Api::Cohere => "/v2/chat",
            Api::Llama => "/completion",
        }
    }

    /// Sends one streamed generation and times every content chunk from the moment of sending.
    /// Failures of any kind end up in the outcome's `error`; nothing here panics or aborts.
    pub async fn stream(&self, body: &Value) -> Result<RequestOutcome, SendError> {
        let start = Instant::now();
        let mut resp = self
            .send(self.json_post(self.generation_path(), body))
            .await?;
        let read = match self.api {
            Api::Cohere => read_cohere,
            Api::Llama => read_llama,
        };
        let mut parser = SseParser::default();
        let mut events: Vec<SseEvent> = Vec::new();
        let mut outcome = RequestOutcome::default();
        let mut end: Option<StreamEnd> = None;
        let handle = |events: &mut Vec<SseEvent>,
                      at: Duration,
                      outcome: &mut RequestOutcome,
                      end: &mut Option<StreamEnd>| {
            for event in events.drain(..) {
                match read(&event) {
                    Ok(Reading::Content(text)) => {
                        outcome.chunk_times.push(at);
                        outcome.text.push_str(&text);
                    }
                    Ok(Reading::End { content, end: e }) => {
                        if let Some(text) = content {
                            outcome.chunk_times.push(at);
                            outcome.text.push_str(&text);
                        }
                        end.get_or_insert(e);
                    }
                    Ok(Reading::Other) => {}
                    Err(message) => {
                        outcome.error.get_or_insert(message);
                    }
                }
            }
        };
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    let at = start.elapsed();
                    parser.push(&bytes, &mut events);
                    handle(&mut events, at, &mut outcome, &mut end);
                }
                Ok(None) => {
                    parser.finish(&mut events);
                    handle(&mut events, start.elapsed(), &mut outcome, &mut end);
                    break;
                }
                Err(e) => {
                    outcome.error.get_or_insert(format!(
                        "the stream broke after {} chunks: {}",
                        outcome.chunk_times.len(),
                        describe(e)
                    ));
                    break;
                }
            }
        }
        let chunks = outcome.chunk_times.len();
        match end {
            Some(end) => {
                outcome.output_tokens = end.output_tokens.unwrap_or(chunks);
                outcome.prompt_tokens = end.prompt_tokens;
                outcome.cached_tokens = end.cached_tokens;
                if let Some(e) = end.error {
                    outcome.error.get_or_insert(e);
                }
            }
            None => {
                outcome.output_tokens = chunks;
                outcome
                    .error
                    .get_or_insert_with(|| "the stream closed before its end event".to_string());
            }
        }
        Ok(outcome)
    }
}

async fn read_json(resp: reqwest::Response) -> Result<Value, SendError> {
    let bytes = resp.bytes().await.map_err(describe)?;
    serde_json::from_slice(&bytes).map_err(|e| SendError::Other(format!("not JSON: {e}")))
}

/// The message of an error body: Cohere's `{"message"}`, llama-server's `{"error":{"message"}}`,
/// or the body itself.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v["message"]
            .as_str()
            .or_else(|| v["error"]["message"].as_str())
            .or_else(|| v["error"].as_str())
            .map(String::from)
    });
    from_json.unwrap_or_else(|| body.chars().take(300).collect())
}

fn describe(e: reqwest::Error) -> SendError {
    // reqwest's own text is generic ("error sending request"); the cause is in the sources.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        SendError::Unreachable(text)
    } else if e.is_timeout() {
        SendError::Other(format!("timed out: {text}"))
    } else {
        SendError::Other(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_both_servers_give_their_message() {
        assert_eq!(
            error_message(r#"{"id":"x","message":"invalid request: max_tokens"}"#),
            "invalid request: max_tokens"
        );
        assert_eq!(
            error_message(r#"{"error":{"code":503,"message":"Loading model"}}"#),
            "Loading model"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }

    #[test]
    fn only_unreachable_and_503_are_waited_for() {
        assert!(SendError::Unreachable("refused".into()).while_starting());
        assert!(
            SendError::Status(StatusCode::SERVICE_UNAVAILABLE, "loading".into()).while_starting()
        );
        assert!(!SendError::Status(StatusCode::UNAUTHORIZED, "key".into()).while_starting());
        assert!(!SendError::Other("timeout".into()).while_starting());
    }

    #[test]
    fn bodies_are_greedy_fixed_length_and_uncached() {
        let t = |api| Target::new(api, "http://h:1/", None, Duration::from_secs(1)).unwrap();
        let cohere = t(Api::Cohere);
        assert_eq!(cohere.base, "http://h:1");
        let b = cohere.generation_body(Some("m"), "hi", 7);
        assert_eq!(
            (
                &b["model"],
                &b["stream"],
                &b["max_tokens"],
                &b["temperature"]
            ),
            (&json!("m"), &json!(true), &json!(7), &json!(0))
        );
        assert_eq!(b["messages"][0]["content"], "hi");
        let b = t(Api::Llama).generation_body(None, "<prompt>", 7);
        assert_eq!(
            (
                &b["prompt"],
                &b["n_predict"],
                &b["cache_prompt"],
                &b["stream"]
            ),
            (&json!("<prompt>"), &json!(7), &json!(false), &json!(true))
        );
    }
}
