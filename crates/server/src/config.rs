//! The server's settings, built once from the command line and passed down unchanged.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::ApiKeys;

#[derive(Debug, Clone)]
pub struct Config {
    /// The models to serve, in order: each a GGUF path, a model directory or a Hugging Face id
    /// (chat, through `runner::load`) or an encoder directory (embed / rerank).
    pub models: Vec<String>,
    pub addr: SocketAddr,
    /// Names a request's `model` may use; empty means each model's own name. With one model
    /// all of them are its names; with several, the i-th is the i-th model's.
    pub served_model_names: Vec<String>,
    pub api_keys: ApiKeys,
    pub max_concurrent: usize,
    pub max_queue: usize,
    /// Context length to serve; `None` means the model's own.
    pub context_length: Option<usize>,
    /// Compute threads; `None` lets the runtime decide.
    pub threads: Option<usize>,
    /// MiB of each chat model's KV pool; `None`: the default for the model and the machine.
    pub kv_cache_mb: Option<u64>,
    /// Reuse the KV cache of repeated prompt prefixes.
    pub prefix_cache: bool,
    /// Prompt-lookup speculative decoding (`max_draft` 0: off).
    pub speculation: runner::engine::Speculation,
    /// Added to encoder models' thread priority (Linux nice), so chat streams go first.
    pub encoder_nice: i32,
    /// What encoder models' matrix products run at.
    pub embed_precision: encoder::Precision,
    /// Server-side ceiling on output tokens per request; `None` means only the context limits it.
    pub max_tokens: Option<usize>,
    pub max_body_bytes: usize,
    /// Longest a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// Longest a client may take to send a request's headers (also how long an idle kept-alive
    /// connection stays open).
    pub header_read_timeout: Duration,
    /// Most connections open at once (also kept under the process's file limit).
    pub max_connections: usize,
    /// How long a streamed request may sit without an event before a keep-alive comment.
    pub keep_alive: Duration,
    /// How long running streams may continue after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Serve `/metrics` without an API key.
    pub metrics_public: bool,
}

impl Config {
    /// Settings for tests and embedding: loopback, no auth, small limits.
    pub fn for_model(model: impl Into<String>) -> Self {
        Self {
            models: vec![model.into()],
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            served_model_names: Vec::new(),
            api_keys: ApiKeys::default(),
            max_concurrent: 4,
            max_queue: 16,
            context_length: None,
            threads: None,
            kv_cache_mb: None,
            prefix_cache: true,
            speculation: runner::engine::Speculation::default(),
            encoder_nice: 5,
            embed_precision: encoder::Precision::Auto,
            max_tokens: None,
            max_body_bytes: 8 << 20,
            body_read_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            keep_alive: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            metrics_public: false,
        }
    }
}
