//! What an encoder directory holds, read into plain data: the architecture (`config.json`), the
//! task (sentence embedding or cross-encoder scoring, from `architectures` and the
//! sentence-transformers files), pooling, normalization, prompts and the token window.
//!
//! Hugging Face layout: `config.json`, `model.safetensors` (or an index of shards),
//! `tokenizer.json`, optionally `tokenizer_config.json`; sentence-transformers adds
//! `modules.json` with its modules (`Transformer`, `Pooling` with `1_Pooling/config.json`,
//! `Dense`, `Normalize`), `config_sentence_transformers.json` (prompts) and
//! `sentence_bert_config.json` (`max_seq_length`). Both the 2.x and the 6.x spellings of these
//! files are read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::EncoderError;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    /// One vector per text (sentence-transformers, or a bare encoder with mean pooling).
    Embed,
    /// One relevance logit per (query, document) pair: a cross-encoder.
    Rerank,
}

/// Architectures that differ in layout: BERT, and RoBERTa / XLM-RoBERTa (positions start past
/// the padding id, a two-layer classification head, no pooler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
}

/// The feed-forward nonlinearity (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

/// The transformer's shape, from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// `model_type` as written, e.g. "bert", "xlm-roberta".
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    /// Position id of the first token (RoBERTa: `pad_token_id + 1`; BERT: 0).
    pub position_offset: usize,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Longest input the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset)
    }
}

/// How token vectors become one text vector (sentence-transformers' `Pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's vector.
    Cls,
    /// The mean over the text's tokens (never over padding: inputs are never padded).
    Mean,
    /// The element-wise maximum over the tokens.
    Max,
    /// The sum over the tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The last token's vector.
    LastToken,
}

/// A sentence-transformers `Dense` module: `act(W x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseModule {
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub tanh: bool,
}

/// What follows the transformer.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    Embedding(EmbeddingHead),
    /// A sequence-classification head with one label: the relevance logit.
    Classifier,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingHead {
    pub pooling: Pooling,
    /// Whether prompt tokens count in the pooling (sentence-transformers' `include_prompt`).
    pub include_prompt: bool,
    pub dense: Vec<DenseModule>,
    pub normalize: bool,
    /// Prompt name to prompt text (`config_sentence_transformers.json`).
    pub prompts: BTreeMap<String, String>,
    pub default_prompt: Option<String>,
}

/// Everything needed to load and run one encoder directory.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// The directory's name: the model's default served name.
    pub name: String,
    pub kind: EncoderKind,
    pub config: ModelConfig,
    pub head: Head,
    /// Longest input in tokens, special tokens included (sentence-transformers'
    /// `max_seq_length`, else the tokenizer's `model_max_length`, within the position table).
    pub max_tokens: usize,
    pub weights: Vec<PathBuf>,
    pub tokenizer: PathBuf,
}

impl EncoderSpec {
    /// The size of one output vector (embedders) or 1 (cross-encoders).
    pub fn dimension(&self) -> usize {
        match &self.head {
            Head::Embedding(h) => h
                .dense
                .last()
                .map_or(self.config.hidden, |d| d.out_features),
            Head::Classifier => 1,
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: String,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    pad_token_id: Option<usize>,
    position_embedding_type: Option<String>,
    num_labels: Option<usize>,
    id2label: Option<BTreeMap<String, serde_json::Value>>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EncoderError> {
    let text = std::fs::read_to_string(path).map_err(|e| EncoderError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| EncoderError::Config(format!("{}: {e}", path.display())))
}

fn read_json_opt<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, EncoderError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

const ENCODER_TYPES: [&str; 4] = ["bert", "roberta", "xlm-roberta", "camembert"];

/// Whether `dir` holds an encoder this crate serves, and for what: `None` for anything else
/// (a GGUF file, a causal LM directory, no `config.json`). A sentence-transformers directory
/// counts even when its architecture is not supported, so that loading it says why.
pub fn detect(dir: &Path) -> Option<EncoderKind> {
    let raw: RawConfig = read_json(&dir.join("config.json")).ok()?;
    if raw
        .architectures
        .iter()
        .any(|a| a.ends_with("ForCausalLM") || a.ends_with("LMHeadModel"))
    {
        return None;
    }
    if raw
        .architectures
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"))
    {
        return Some(EncoderKind::Rerank);
    }
    if dir.join("modules.json").is_file() || ENCODER_TYPES.contains(&raw.model_type.as_str()) {
        return Some(EncoderKind::Embed);
    }
    None
}

/// Reads an encoder directory: every setting checked, nothing loaded yet.
pub fn inspect(dir: &Path) -> Result<EncoderSpec, EncoderError> {
    let modules: Option<Vec<StModule>> = read_json_opt(&dir.join("modules.json"))?;
    // A sentence-transformers model may keep its transformer in a subfolder.
    let model_dir = match modules.as_ref().and_then(|m| {
        m.iter()
            .find(|m| module_kind(&m.kind) == "Transformer")
            .map(|m| m.path.clone())
    }) {
        Some(p) if !p.is_empty() => dir.join(p),
        _ => dir.to_path_buf(),
    };
    let raw: RawConfig = read_json(&model_dir.join("config.json"))?;
    let config = model_config(&raw)?;
    let classifier = raw
        .architectures
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"));
    let (kind, head) = if classifier {
        let labels = raw
            .id2label
            .as_ref()
            .map(|m| m.len())
            .or(raw.num_labels)
            .unwrap_or(2);
        if labels != 1 {
            return Err(EncoderError::Unsupported(format!(
                "a sequence classifier with {labels} labels: a cross-encoder for reranking has one (a relevance logit)"
            )));
        }
        (EncoderKind::Rerank, Head::Classifier)
    } else {
        (
            EncoderKind::Embed,
            Head::Embedding(embedding_head(dir, modules.as_deref())?),
        )
    };
    let tokenizer_config: Option<TokenizerConfig> =
        read_json_opt(&model_dir.join("tokenizer_config.json"))?;
    let st_config: Option<SentenceBertConfig> =
        read_json_opt(&model_dir.join("sentence_bert_config.json"))?;
    let declared = st_config.and_then(|c| c.max_seq_length).or(tokenizer_config
        .and_then(|c| c.model_max_length)
        .filter(|&n| n > 0.0 && n < 1e6)
        .map(|n| n as usize));
    let max_tokens = declared
        .unwrap_or(usize::MAX)
        .min(config.max_tokens())
        .max(2);
    let tokenizer = model_dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(EncoderError::Missing(tokenizer));
    }
    let weights = weight_files(&model_dir)?;
    if let Head::Embedding(h) = &head {
        let mut width = config.hidden;
        for d in &h.dense {
            if d.in_features != width {
                return Err(EncoderError::Config(format!(
                    "Dense module {} takes {} features but receives {width}",
                    d.dir.display(),
                    d.in_features
                )));
            }
            width = d.out_features;
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(EncoderSpec {
        name,
        kind,
        config,
        head,
        max_tokens,
        weights,
        tokenizer,
    })
}

fn model_config(raw: &RawConfig) -> Result<ModelConfig, EncoderError> {
    let family = match raw.model_type.as_str() {
        "bert" => Family::Bert,
        "roberta" | "xlm-roberta" | "camembert" => Family::Roberta,
        other => {
            return Err(EncoderError::Unsupported(format!(
                "encoder architecture {other:?} (supported: {})",
                ENCODER_TYPES.join(", ")
            )))
        }
    };
    if let Some(p) = raw.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(EncoderError::Unsupported(format!(
                "position_embedding_type {p:?} (only \"absolute\")"
            )));
        }
    }
    let need = |v: Option<usize>, name: &str| {
        v.filter(|&v| v > 0)
            .ok_or_else(|| EncoderError::Config(format!("config.json has no positive {name}")))
    };
    let hidden = need(raw.hidden_size, "hidden_size")?;
    let heads = need(raw.num_attention_heads, "num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(EncoderError::Config(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    let activation = match raw.hidden_act.as_deref().unwrap_or("gelu") {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => return Err(EncoderError::Unsupported(format!("hidden_act {other:?}"))),
    };
    let position_offset = match family {
        Family::Bert => 0,
        Family::Roberta => raw.pad_token_id.unwrap_or(1) + 1,
    };
    let max_positions = need(raw.max_position_embeddings, "max_position_embeddings")?;
    if max_positions <= position_offset + 2 {
        return Err(EncoderError::Config(format!(
            "max_position_embeddings {max_positions} leaves no room past the offset {position_offset}"
        )));
    }
    Ok(ModelConfig {
        family,
        model_type: raw.model_type.clone(),
        vocab_size: need(raw.vocab_size, "vocab_size")?,
        hidden,
        layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
        heads,
        intermediate: need(raw.intermediate_size, "intermediate_size")?,
        max_positions,
        type_vocab_size: raw.type_vocab_size.unwrap_or(2).max(1),
        layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12) as f32,
        activation,
        position_offset,
    })
}

#[derive(Deserialize)]
struct StModule {
    #[serde(default)]
    idx: usize,
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The class name of a module type: "sentence_transformers.models.Pooling" and
/// "sentence_transformers.sentence_transformer.modules.pooling.Pooling" are both "Pooling".
fn module_kind(ty: &str) -> &str {
    ty.rsplit('.').next().unwrap_or(ty)
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    // sentence-transformers 6.x
    pooling_mode: Option<serde_json::Value>,
    // 2.x to 5.x
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    include_prompt: Option<bool>,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: String,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct StConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

fn pooling_of(cfg: &PoolingConfig) -> Result<Pooling, EncoderError> {
    if let Some(mode) = &cfg.pooling_mode {
        let modes: Vec<String> = match mode {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            other => {
                return Err(EncoderError::Config(format!(
                    "pooling_mode {other} is neither a name nor a list of names"
                )))
            }
        };
        return match modes.as_slice() {
            [m] => match m.as_str() {
                "cls" => Ok(Pooling::Cls),
                "mean" => Ok(Pooling::Mean),
                "max" => Ok(Pooling::Max),
                "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
                "lasttoken" => Ok(Pooling::LastToken),
                other => Err(EncoderError::Unsupported(format!("pooling mode {other:?}"))),
            },
            _ => Err(EncoderError::Unsupported(format!(
                "pooling modes {modes:?} (exactly one is supported)"
            ))),
        };
    }
    let set = [
        (cfg.pooling_mode_cls_token, Some(Pooling::Cls)),
        (cfg.pooling_mode_mean_tokens, Some(Pooling::Mean)),
        (cfg.pooling_mode_max_tokens, Some(Pooling::Max)),
        (
            cfg.pooling_mode_mean_sqrt_len_tokens,
            Some(Pooling::MeanSqrtLen),
        ),
        (cfg.pooling_mode_lasttoken, Some(Pooling::LastToken)),
        (cfg.pooling_mode_weightedmean_tokens, None),
    ];
    let chosen: Vec<Option<Pooling>> = set.iter().filter(|(on, _)| *on).map(|s| s.1).collect();
    match chosen.as_slice() {
        [Some(p)] => Ok(*p),
        [None] => Err(EncoderError::Unsupported(
            "weighted-mean pooling".to_string(),
        )),
        [] => Err(EncoderError::Config(
            "the pooling config sets no mode".into(),
        )),
        _ => Err(EncoderError::Unsupported(
            "several pooling modes at once (concatenated)".into(),
        )),
    }
}

fn embedding_head(dir: &Path, modules: Option<&[StModule]>) -> Result<EmbeddingHead, EncoderError> {
    let st: Option<StConfig> = read_json_opt(&dir.join("config_sentence_transformers.json"))?;
    let (prompts, default_prompt) = st
        .map(|c| (c.prompts, c.default_prompt_name))
        .unwrap_or_default();
    let mut head = EmbeddingHead {
        // A bare encoder: sentence-transformers' own default.
        pooling: Pooling::Mean,
        include_prompt: true,
        dense: Vec::new(),
        normalize: false,
        prompts,
        default_prompt,
    };
    let Some(modules) = modules else {
        return Ok(head);
    };
    let mut modules: Vec<&StModule> = modules.iter().collect();
    modules.sort_by_key(|m| m.idx);
    let mut seen_pooling = false;
    for m in modules {
        let sub = dir.join(&m.path);
        match module_kind(&m.kind) {
            "Transformer" => {}
            "Pooling" => {
                let cfg: PoolingConfig = read_json(&sub.join("config.json"))?;
                head.pooling = pooling_of(&cfg)?;
                head.include_prompt = cfg.include_prompt.unwrap_or(true);
                seen_pooling = true;
            }
            "Dense" => {
                let cfg: DenseConfig = read_json(&sub.join("config.json"))?;
                let tanh = match module_kind(&cfg.activation_function) {
                    "Tanh" => true,
                    "Identity" | "" => false,
                    other => {
                        return Err(EncoderError::Unsupported(format!(
                            "Dense activation {other:?}"
                        )))
                    }
                };
                head.dense.push(DenseModule {
                    dir: sub,
                    in_features: cfg.in_features,
                    out_features: cfg.out_features,
                    bias: cfg.bias,
                    tanh,
                });
            }
            "Normalize" => head.normalize = true,
            other => {
                return Err(EncoderError::Unsupported(format!(
                    "sentence-transformers module {other:?}"
                )))
            }
        }
    }
    if !seen_pooling {
        return Err(EncoderError::Config(
            "modules.json lists no Pooling module".into(),
        ));
    }
    Ok(head)
}

#[derive(Deserialize)]
struct SafetensorsIndex {
    weight_map: BTreeMap<String, String>,
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, EncoderError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let idx: SafetensorsIndex = read_json(&index)?;
        let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(EncoderError::Missing(missing.clone()));
        }
        return Ok(files);
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(EncoderError::Unsupported(
            "PyTorch .bin weights: convert them to model.safetensors".into(),
        ));
    }
    Err(EncoderError::Missing(single))
}
