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
pub mod kv_pool;
mod source;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;

pub use arch::{GGUF_ARCHITECTURES, SAFETENSORS_ARCHITECTURES};
pub use cpu::Transformer;
pub use desc::ModelDesc;
pub use kv_pool::PoolUsage;

pub type SeqId = u64;

/// New tokens to append to one sequence: a prompt chunk (prefill), one sampled token (decode),
/// or a sampled token followed by a speculative draft of the tokens after it.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    /// How many of the last `tokens` are a draft to verify (less than `tokens.len()`; 0 for
    /// prefill and plain decode): the item gets logits rows for its last `drafts + 1` tokens,
    /// and the draft's positions stay out of the prefix cache until a later step or
    /// [`BatchModel::truncate`] confirms them.
    pub drafts: usize,
}

impl<'a> BatchItem<'a> {
    /// An item without a draft.
    pub fn new(seq: SeqId, tokens: &'a [u32]) -> Self {
        Self {
            seq,
            tokens,
            drafts: 0,
        }
    }

    /// Logits rows the item gets.
    pub fn rows(&self) -> usize {
        self.drafts + 1
    }
}

/// A model the engine can drive: it owns its weights and the KV cache of every sequence.
///
/// KV memory: a model with a pool ([`Self::kv_usage`] is Some) holds each sequence's positions
/// in shared blocks under a fixed budget. The engine reserves a sequence's memory before it runs
/// ([`Self::reserve`]) and starts it on the longest cached prefix of its prompt
/// ([`Self::attach_prefix`]); `forward` itself only fails for memory when nobody reserved.
pub trait BatchModel: Send {
    fn vocab_size(&self) -> usize;
    /// The longest context (prompt + output) the model supports.
    fn max_context(&self) -> usize;
    /// ONE forward pass for every item together. Appends each item's tokens to that sequence's
    /// cache (creating the cache on first sight of a SeqId) and writes the logits of each item's
    /// last [`BatchItem::rows`] tokens into `logits`, items in order, so that an item without a
    /// draft has one row (resized to the rows in all times vocab_size). Items may have
    /// different lengths. A row's logits are the same whatever else the batch holds.
    ///
    /// On error no sequence's cache changes.
    fn forward(&mut self, batch: &[BatchItem<'_>], logits: &mut Vec<f32>)
        -> Result<(), ModelError>;
    /// Frees a sequence's cache (no-op for an unknown id). Full blocks of computed tokens stay
    /// cached for later prompts that start the same way, until their memory is needed.
    fn release(&mut self, seq: SeqId);
    /// Points `seq` (new, or holding only shared cached blocks so far) at the longest cached
    /// prefix of `prompt`, in whole blocks and never its last token, and returns its length: the
    /// engine then feeds `prompt[attached..]`. Blocks it had reserved for those positions are
    /// given back. Models without a prefix cache attach nothing.
    fn attach_prefix(&mut self, seq: SeqId, prompt: &[u32]) -> usize {
        let _ = (seq, prompt);
        0
    }
    /// Makes `seq` (created when new) hold KV memory for `tokens` positions in all. False,
    /// changing nothing, when the pool cannot hold them even after evicting every cached block
    /// nobody holds. Models without a pool always have room.
    fn reserve(&mut self, seq: SeqId, tokens: usize) -> bool {
        let _ = (seq, tokens);
        true
    }
    /// Whether `forward` takes drafts ([`BatchItem::drafts`]) and [`Self::truncate`] takes
    /// rejected ones back: the engine speculates only on such a model.
    fn takes_drafts(&self) -> bool {
        false
    }
    /// Forgets the positions of `seq` from `len` on (draft tokens that were rejected); `len` is
    /// at least what the sequence held before the step that fed the draft.
    fn truncate(&mut self, seq: SeqId, len: usize) {
        let _ = (seq, len);
    }
    /// How full the KV pool is; None for a model without one.
    fn kv_usage(&self) -> Option<PoolUsage> {
        None
    }
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
    #[error("sequence {seq} needs KV memory for {needed} tokens; the pool has room for {available} more")]
    KvFull {
        seq: SeqId,
        needed: usize,
        available: usize,
    },
    #[error("{0}")]
    KvBudget(String),
}

/// How to run a loaded model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Threads of the forward pass; `None` uses every available core.
    pub threads: Option<usize>,
    pub kv: KvBudget,
}

/// How much memory the KV pool gets, and whether it reuses prompt prefixes.
#[derive(Debug, Clone)]
pub struct KvBudget {
    /// MiB of keys and values; None: enough for `max_concurrent` full contexts, capped at a
    /// quarter of the memory available at start-up.
    pub mib: Option<u64>,
    /// Sequences expected at once (the engine's slots), for the default.
    pub max_concurrent: usize,
    /// The context served, when shorter than the model's: the pool must hold one sequence of it.
    pub context_length: Option<usize>,
    /// Reuse the cached keys and values of prompt prefixes.
    pub prefix_cache: bool,
}

impl Default for KvBudget {
    fn default() -> Self {
        Self {
            mib: None,
            max_concurrent: 16,
            context_length: None,
            prefix_cache: true,
        }
    }
}

/// A budget turned into blocks for one model.
#[derive(Debug, Clone)]
pub struct ResolvedBudget {
    pub blocks: usize,
    pub bytes: u64,
    /// The served context the budget was checked against.
    pub context: usize,
    /// Where the size came from, for the start-up line.
    pub origin: String,
}

impl KvBudget {
    /// Blocks of `block_tokens` positions at `bytes_per_token`, for a model of `max_context`.
    /// An explicit budget under one full-context sequence is an error that names the minimum.
    pub fn resolve(
        &self,
        bytes_per_token: usize,
        max_context: usize,
        block_tokens: usize,
    ) -> Result<ResolvedBudget, ModelError> {
        const MIB: u64 = 1 << 20;
        let context = self
            .context_length
            .map_or(max_context, |c| c.min(max_context))
            .max(1);
        let block_bytes = (bytes_per_token * block_tokens) as u64;
        let min_blocks = context.div_ceil(block_tokens) as u64;
        let (bytes, origin) = match self.mib {
            Some(mib) => {
                let bytes = mib.saturating_mul(MIB);
                if bytes / block_bytes < min_blocks {
                    return Err(ModelError::KvBudget(format!(
                        "--kv-cache-mb {mib} holds {} tokens, less than one sequence at the \
                         served context of {context} tokens: use at least {} MiB, or a shorter \
                         --context-length",
                        bytes / block_bytes * block_tokens as u64,
                        (min_blocks * block_bytes).div_ceil(MIB)
                    )));
                }
                (bytes, "--kv-cache-mb".to_string())
            }
            None => {
                let want = self.max_concurrent.max(1) as u64 * min_blocks * block_bytes;
                let (cap, of) = match available_memory() {
                    Some(avail) => (
                        avail / 4,
                        format!("a quarter of {} MiB available", avail >> 20),
                    ),
                    None => (4 << 30, "4 GiB, the memory available being unknown".into()),
                };
                let bytes = want.min(cap).max(min_blocks * block_bytes);
                let origin = if bytes == want {
                    format!("default: {} full contexts", self.max_concurrent.max(1))
                } else if bytes > cap {
                    "default: one full context, above the memory cap".into()
                } else {
                    format!("default, capped at {of}")
                };
                (bytes, origin)
            }
        };
        let blocks = (bytes / block_bytes) as usize;
        Ok(ResolvedBudget {
            blocks,
            bytes: blocks as u64 * block_bytes,
            context,
            origin,
        })
    }
}

/// Bytes of memory the system can still give (Linux's MemAvailable), if known.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
        if item.drafts >= item.tokens.len() {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {} has a draft of {} tokens in {}",
                item.seq,
                item.drafts,
                item.tokens.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's KV bytes per token (30 layers, 3 KV heads of 64, keys and values in f16).
    const SMOLLM2: usize = 30 * 3 * 64 * 2 * 2;

    #[test]
    fn an_explicit_budget_is_whole_blocks_and_must_hold_one_full_context() {
        let budget = KvBudget {
            mib: Some(100),
            context_length: Some(2048),
            ..KvBudget::default()
        };
        let resolved = budget.resolve(SMOLLM2, 8192, 16).unwrap();
        assert_eq!(resolved.blocks, (100 << 20) / (SMOLLM2 * 16));
        assert_eq!(resolved.context, 2048);
        assert!(resolved.bytes <= 100 << 20);

        let small = KvBudget {
            mib: Some(40),
            ..budget
        };
        let message = small.resolve(SMOLLM2, 8192, 16).unwrap_err().to_string();
        assert!(
            message.contains("served context of 2048 tokens: use at least 45 MiB"),
            "{message}"
        );
    }

    #[test]
    fn the_default_budget_holds_every_slot_at_full_context_within_the_memory_cap() {
        let budget = KvBudget {
            max_concurrent: 4,
            context_length: Some(1024),
            ..KvBudget::default()
        };
        let resolved = budget.resolve(SMOLLM2, 8192, 16).unwrap();
        let full = 4 * 1024 / 16;
        match available_memory() {
            Some(avail) if (full * SMOLLM2 * 16) as u64 > avail / 4 => {
                assert!(resolved.blocks >= 1024 / 16 && resolved.blocks < full)
            }
            _ => assert_eq!(resolved.blocks, full),
        }
    }
}
