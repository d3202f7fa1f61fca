//! server: the Cohere v2 HTTP API in front of the runner's engine, and the `cohost` command line.
//!
//! Invariant: only this crate knows Cohere's wire format; the runner sees chats and sampling
//! parameters and answers with reply events (`runner::reply`), which `response` and `sse`
//! encode.

pub mod auth;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod listen;
pub mod model_store;
pub mod playground;
pub mod progress;
pub mod pull;
pub mod response;
pub mod routes;
pub mod sse;
pub mod validate;
pub mod wire;

pub use config::Config;
pub use routes::{app, AppState};
