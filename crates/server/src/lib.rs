//! server: the Cohere HTTP API (chat v2, embed and rerank v1 and v2, models, tokenize) in front
//! of the models' engines (the runner's for chat, the encoder's for embed and rerank), and the
//! server's subcommands of the `cohost` command line (`serve`, `pull`).
//!
//! Invariant: only this crate knows Cohere's wire format; the runner sees chats and sampling
//! parameters and answers with reply events (`runner::reply`), which `response` and `sse`
//! encode; the encoder sees token ids and answers vectors.

pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod embed;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod model_store;
pub mod playground;
pub mod progress;
pub mod pull;
pub mod registry;
pub mod rerank;
pub mod response;
pub mod routes;
pub mod sse;
pub mod validate;
pub mod wire;
pub mod wire_retrieval;

pub use config::Config;
pub use routes::{app, AppState};
