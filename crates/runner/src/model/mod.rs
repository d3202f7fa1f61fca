//! The model side of the runner: batched forward passes over many sequences, each with its own
//! KV cache. The engine drives a [`BatchModel`]; it never sees tensors.
//!
//! What a model is and how it runs are kept apart:
//! - [`desc`]: a [`ModelDesc`], plain data: shape, block structure, RoPE layout, the
//!   sliding-window / global layer pattern, and the name of every weight;
//! - `arch/`: one file per family that reads GGUF metadata or `config.json` into a description;
//! - `source`: weights by name from a GGUF file or safetensors files, as host data;
//! - `cpu/`: the CPU backend, which turns a description and its weights into a [`Transformer`]
//!   (kernels, ops, KV cache). A GPU backend would be another builder over the same
//!   descriptions and sources, returning another [`BatchModel`].
//!
//! One forward pass takes every running sequence's new tokens together, so that each weight
//! matrix is read once per step for the whole batch (decode is bound by reading the weights).
//!
//! Invariant: this module knows nothing of tokenizers, chat templates or sampling; it maps token
//! ids to logits.

mod arch;
mod cpu;
pub mod desc;
mod source;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;

pub use arch::{GGUF_ARCHITECTURES, SAFETENSORS_ARCHITECTURES};
pub use cpu::{KvCache, Transformer};
pub use desc::ModelDesc;

pub type SeqId = u64;

/// New tokens to append to one sequence: a prompt chunk (prefill) or one sampled token (decode).
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
}

/// A model the engine can drive: it owns its weights and the KV cache of every sequence.
pub trait BatchModel: Send {
    fn vocab_size(&self) -> usize;
    /// The longest context (prompt + output) the model supports.
    fn max_context(&self) -> usize;
    /// ONE forward pass for every item together. Appends each item's tokens to that sequence's
    /// cache (creating the cache on first sight of a SeqId) and writes the logits of each item's
    /// LAST token into row i of `logits` (resized to batch.len() * vocab_size). Items may have
    /// different lengths.
    ///
    /// On error no sequence's cache changes.
    fn forward(&mut self, batch: &[BatchItem<'_>], logits: &mut Vec<f32>)
        -> Result<(), ModelError>;
    /// Frees a sequence's cache (no-op for an unknown id).
    fn release(&mut self, seq: SeqId);
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported architecture {found:?} (supported: {supported:?})")]
    UnsupportedArchitecture {
        found: String,
        supported: &'static [&'static str],
    },
    #[error("the model has no tensor {0:?}")]
    MissingTensor(String),
    #[error("the model metadata has no usable {0:?}")]
    MissingMetadata(String),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("sequence {seq} would hold {needed} tokens, past the model's context of {max}")]
    ContextOverflow {
        seq: SeqId,
        needed: usize,
        max: usize,
    },
    #[error("token id {token} of sequence {seq} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        seq: SeqId,
        token: u32,
        vocab: usize,
    },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

/// How to run a loaded model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Threads of the forward pass; `None` uses every available core.
    pub threads: Option<usize>,
}

impl LoadOptions {
    fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// Loads a GGUF file and returns the model and the file's metadata (tokenizer and chat
/// template live there too).
pub fn load_gguf(path: &Path) -> Result<(Box<dyn BatchModel>, gguf_file::Content), ModelError> {
    let (model, content) = load_gguf_model(path, &LoadOptions::default())?;
    Ok((Box::new(model), content))
}

/// [`load_gguf`] with options, returning the concrete model.
pub fn load_gguf_model(
    path: &Path,
    opts: &LoadOptions,
) -> Result<(Transformer, gguf_file::Content), ModelError> {
    let io_err = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut src = source::GgufSource::new(&content, &mut file);
    let desc = arch::describe_gguf(&content, &src)?;
    let model = cpu::build(desc, &mut src, opts)?;
    Ok((model, content))
}

/// The description of a GGUF file's model, without loading its weights.
pub fn describe_gguf(path: &Path) -> Result<ModelDesc, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = gguf_file::Content::read(&mut file)?;
    arch::describe_gguf(&content, &source::GgufSource::new(&content, &mut file))
}

/// Loads a Hugging Face style directory: `config.json` plus `*.safetensors` weights.
pub fn load_safetensors_dir(dir: &Path) -> Result<Box<dyn BatchModel>, ModelError> {
    Ok(Box::new(load_safetensors_model(
        dir,
        &LoadOptions::default(),
    )?))
}

/// [`load_safetensors_dir`] with options, returning the concrete model.
pub fn load_safetensors_model(dir: &Path, opts: &LoadOptions) -> Result<Transformer, ModelError> {
    let (desc, mut src) = describe_dir(dir)?;
    cpu::build(desc, &mut src, opts)
}

/// The description of a Hugging Face directory's model, without loading its weights.
pub fn describe_safetensors_dir(dir: &Path) -> Result<ModelDesc, ModelError> {
    describe_dir(dir).map(|(desc, _)| desc)
}

fn describe_dir(dir: &Path) -> Result<(ModelDesc, source::SafetensorsSource), ModelError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config: arch::HfConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: {e}", config_path.display())))?;
    if !SAFETENSORS_ARCHITECTURES.contains(&config.model_type.as_str()) {
        return Err(ModelError::UnsupportedArchitecture {
            found: config.model_type,
            supported: SAFETENSORS_ARCHITECTURES,
        });
    }
    let src = source::SafetensorsSource::open(&safetensors_files(dir)?)?;
    let desc = arch::describe_hf(&config, &src)?;
    Ok((desc, src))
}

/// The weight files of a directory: those named by `model.safetensors.index.json` when there is
/// one, else every `*.safetensors` file.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", index.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config(format!("{}: no weight_map", index.display())))?;
        map.values()
            .filter_map(|v| v.as_str())
            .map(|name| dir.join(name))
            .collect()
    } else {
        std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect()
    };
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ModelError::MissingTensor(format!(
            "*.safetensors in {}",
            dir.display()
        )));
    }
    Ok(files)
}

/// Checks a batch before anything runs, so that a bad item fails the step without touching any
/// cache: no empty item, no sequence twice, no token outside the vocabulary, no context overflow.
fn validate_batch(
    batch: &[BatchItem<'_>],
    vocab: usize,
    max_context: usize,
    cached_len: impl Fn(SeqId) -> usize,
) -> Result<(), ModelError> {
    for (i, item) in batch.iter().enumerate() {
        if item.tokens.is_empty() {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {} has no tokens",
                item.seq
            )));
        }
        if batch[..i].iter().any(|other| other.seq == item.seq) {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {} appears twice",
                item.seq
            )));
        }
        if let Some(&token) = item.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange {
                seq: item.seq,
                token,
                vocab,
            });
        }
        let needed = cached_len(item.seq) + item.tokens.len();
        if needed > max_context {
            return Err(ModelError::ContextOverflow {
                seq: item.seq,
                needed,
                max: max_context,
            });
        }
    }
    Ok(())
}
