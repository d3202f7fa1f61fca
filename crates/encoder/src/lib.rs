//! encoder: BERT-family encoder models on the CPU, for sentence embeddings and cross-encoder
//! relevance scores. That is this crate's one job; it knows nothing of HTTP or Cohere's wire
//! format.
//!
//! In order:
//! 1. [`config::inspect`] reads a Hugging Face directory (`config.json`, safetensors,
//!    `tokenizer.json`, sentence-transformers modules and prompts) into an [`EncoderSpec`];
//!    [`config::detect`] tells the server whether a directory is one of ours at all.
//! 2. [`text::TextEncoder`] tokenizes texts (with the model's prompts, and truncation as asked)
//!    and (query, document) pairs, never padding them.
//! 3. [`model::Model`] holds the weights (f32 packed for [`kernels::gemm`], or bf16 for
//!    [`kernels::gemm_bf16`]: see [`Precision`]) and runs the forward pass over a packed batch: BERT / RoBERTa / XLM-RoBERTa layers, then pooling
//!    (CLS, mean, max, ...), Dense and Normalize modules, or the classification head.
//! 4. [`engine::start`] puts a model on its own thread and compute pool behind a bounded queue;
//!    [`engine::EncoderHandle`] is the server's only way in.
//!
//! Cost: about `2 * parameters` FLOPs per token (plus attention, quadratic in a text's length),
//! in f32 FMA, or in AMX bf16 tiles at several times that rate. Accuracy: at f32 a text's
//! embedding is within f32 rounding of sentence-transformers' on the same weights (1 - cosine
//! around 1e-12 on the multilingual golden corpus); at bf16 the cosine stays above 0.9999 (the
//! golden tests check both). Either way a text embeds bit-identically alone and in any batch.

pub mod config;
pub mod engine;
pub mod model;
mod ops;
pub mod text;
mod weights;

use std::path::{Path, PathBuf};

pub use config::{EncoderKind, EncoderSpec};
pub use engine::{EncoderHandle, EngineConfig, EngineError, Output};
pub use model::Model;
pub use text::{Encoded, TextEncoder, TextError, Truncate};

/// What the encoder's matrix products run at. Everything else (embeddings, attention, layer
/// norms, pooling) stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bf16 where the CPU has AMX (several times faster, cosine to f32 above 0.9999), else f32.
    #[default]
    Auto,
    /// f32 weights and sums: as close to the reference as the CPU's rounding allows.
    F32,
    /// Weights and activations rounded to bf16, sums in f32. Without AMX this runs AVX-512 BF16
    /// (`vdpbf16ps`) where the CPU has it: on a Sapphire Rapids class Xeon no faster than f32,
    /// not yet measured on AMD Zen 4, which is why `Auto` does not pick it. Elsewhere a slow
    /// portable path: ask for it there only to compare.
    Bf16,
}

impl Precision {
    /// `Auto` decided for this CPU; the others as they are.
    pub fn resolve(self) -> Precision {
        match self {
            Precision::Auto if kernels::amx_available() => Precision::Bf16,
            Precision::Auto => Precision::F32,
            p => p,
        }
    }

    /// How logs and `/v1/models` name it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("missing {0}")]
    Missing(PathBuf),
    #[error("bad model config: {0}")]
    Config(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{file}: {message}")]
    Weights { file: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TextError),
}

impl EncoderError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        EncoderError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads and loads an encoder directory: the model and its tokenizer.
pub fn load(dir: &Path, precision: Precision) -> Result<(Model, TextEncoder), EncoderError> {
    let spec = config::inspect(dir)?;
    let text = TextEncoder::load(&spec.tokenizer, spec.max_tokens, spec.config.vocab_size)?;
    let model = Model::load(spec, precision)?;
    Ok((model, text))
}

/// Loads an encoder directory and starts its engine.
pub fn start(dir: &Path, config: EngineConfig) -> Result<EncoderHandle, EncoderError> {
    let (model, text) = load(dir, config.precision)?;
    Ok(engine::start(model, text, config))
}
