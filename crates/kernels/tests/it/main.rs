//! All of this crate's integration tests in one binary (one link instead of one per file;
//! tests of every file share the harness's threads). Run one file's tests with
//! `cargo test --test it <file>::`.

mod bf16;
mod formats;
mod gemm;
mod matmul;
