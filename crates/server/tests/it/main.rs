//! All of this crate's integration tests in one binary (one link instead of one per file;
//! tests of every file share the harness's threads). Run one file's tests with
//! `cargo test --test it <file>::`.

mod common;

mod constrained;
mod playground;
mod retrieval;
mod routes;
mod sse_golden;
mod tools;
