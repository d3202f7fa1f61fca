//! Shared by the `text_*` tests: where model files and goldens are, and the tokenizers built
//! from the two GGUF files (built once per test binary).
#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::Content;
use runner::tokenizer::{tokenizer_from_gguf, TokenizerBundle};

pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// A model file from `COHOST_MODEL_DIR`, or else the repository's `models/cache`. Missing files
/// fail the test: CI fetches the models before testing.
pub fn model_file(file: &str) -> PathBuf {
    let dir = std::env::var_os("COHOST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/cache"));
    let path = dir.join(file);
    let script = if file == GEMMA3_FILE {
        "models/fetch-gemma3.sh"
    } else {
        "models/fetch-default.sh"
    };
    assert!(
        path.is_file(),
        "model file {} is missing: run {script} (or set COHOST_MODEL_DIR)",
        path.display()
    );
    path
}

pub fn gguf_content(file: &str) -> Content {
    let path = model_file(file);
    let mut reader = BufReader::new(File::open(&path).expect("open model file"));
    Content::read(&mut reader).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn smollm2() -> &'static TokenizerBundle {
    static BUNDLE: OnceLock<TokenizerBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        tokenizer_from_gguf(&gguf_content(SMOLLM2_FILE)).expect("SmolLM2 tokenizer")
    })
}

pub fn gemma3() -> &'static TokenizerBundle {
    static BUNDLE: OnceLock<TokenizerBundle> = OnceLock::new();
    BUNDLE
        .get_or_init(|| tokenizer_from_gguf(&gguf_content(GEMMA3_FILE)).expect("Gemma 3 tokenizer"))
}

pub fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/text")
        .join(name)
}

/// One JSON value per line.
pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = golden_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("golden line is JSON"))
        .collect()
}

pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of ids")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

/// llama.cpp's tokenizations of a multilingual corpus, for one model file.
pub struct TokenizeCase {
    pub text: String,
    pub ids: Vec<u32>,
    pub detokenized: String,
}

pub fn tokenize_cases(model_file: &str) -> Vec<TokenizeCase> {
    let stem = model_file.trim_end_matches(".gguf");
    read_jsonl(&format!("tokenize-{stem}.jsonl"))
        .into_iter()
        .map(|v| TokenizeCase {
            text: v["text"].as_str().unwrap().to_string(),
            ids: ids(&v["ids"]),
            detokenized: v["detokenized"].as_str().unwrap().to_string(),
        })
        .collect()
}
