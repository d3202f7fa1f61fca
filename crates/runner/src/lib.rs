//! runner: turns a model reference into a running engine. It loads the weights (GGUF,
//! safetensors, Hugging Face ids), builds the tokenizer and chat template, owns the KV cache and
//! runs the engine loop that batches every running sequence into one forward pass per step.
//!
//! Invariant: the runner never sees HTTP or JSON wire formats; it takes chats and sampling
//! parameters and returns a stream of [`engine::StreamEvent`]s, which [`reply`] assembles into
//! the typed events of a reply (content blocks, tool plan and calls, the end with usage).

pub mod chat;
pub mod constraint;
pub mod detok;
pub mod engine;
pub mod grounding;
mod load;
pub mod loader;
pub mod model;
pub mod reply;
pub mod stop;
pub mod template;
pub mod text_error;
pub mod thinking;
pub mod tokenizer;
pub mod tools;

pub use load::{load, load_with, LoadModelError, LoadedModel};
