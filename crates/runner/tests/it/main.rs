//! All of this crate's integration tests in one binary (one link instead of one per file;
//! tests of every file share the harness's threads). Run one file's tests with
//! `cargo test --test it <file>::`.

mod text_support;

mod constraint_walk;
mod engine_budget;
mod engine_default_model;
mod engine_prefix_cache;
mod engine_speculation;
mod loader_resolve;
mod model_bench;
mod model_gemma3;
mod model_llama;
mod model_safetensors;
mod model_tiny;
mod text_detok;
mod text_stop;
mod text_template;
mod text_tokenizer;
mod tools_parse;
mod tools_prompt;
