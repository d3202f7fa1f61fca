//! The architectures cohost knows, one file per family: each reads a model file's metadata (GGUF
//! keys, or `config.json` for safetensors) into a [`ModelDesc`] and names its tensors. Nothing
//! here loads weights or runs anything; a backend does that from the description.
//!
//! A new architecture is a file here with a `gguf` and/or `hf` function, and a line in each
//! dispatch below.

mod cohere;
mod gemma3;
mod llama;

use candle_core::quantized::gguf_file;

use super::desc::{Attention, LayerDesc, Linear, ModelDesc};
use super::source::WeightSource;
use super::ModelError;

/// Architectures [`describe_gguf`] accepts (`general.architecture`).
pub const GGUF_ARCHITECTURES: &[&str] =
    &["llama", "qwen2", "qwen3", "gemma3", "command-r", "cohere2"];
/// Architectures [`describe_hf`] accepts (`config.json` `model_type`).
pub const SAFETENSORS_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "cohere", "cohere2"];

/// The description of a GGUF model, from its metadata and the tensors it holds.
pub(super) fn describe_gguf(
    content: &gguf_file::Content,
    tensors: &dyn WeightSource,
) -> Result<ModelDesc, ModelError> {
    let meta = GgufMeta::new(content)?;
    let desc = match meta.arch.as_str() {
        "llama" | "qwen2" | "qwen3" => llama::gguf(&meta, tensors)?,
        "gemma3" => gemma3::gguf(&meta, tensors)?,
        "command-r" | "cohere2" => cohere::gguf(&meta, tensors)?,
        _ => {
            return Err(ModelError::UnsupportedArchitecture {
                found: meta.arch.clone(),
                supported: GGUF_ARCHITECTURES,
            })
        }
    };
    desc.check()?;
    Ok(desc)
}

/// The description of a Hugging Face checkpoint, from its `config.json` and its tensors.
pub(super) fn describe_hf(
    config: &HfConfig,
    tensors: &dyn WeightSource,
) -> Result<ModelDesc, ModelError> {
    let desc = match config.model_type.as_str() {
        "llama" | "qwen2" | "qwen3" => llama::hf(config, tensors)?,
        "cohere" | "cohere2" => cohere::hf(config, tensors)?,
        _ => {
            return Err(ModelError::UnsupportedArchitecture {
                found: config.model_type.clone(),
                supported: SAFETENSORS_ARCHITECTURES,
            })
        }
    };
    desc.check()?;
    Ok(desc)
}

pub(super) fn gguf_architecture(content: &gguf_file::Content) -> Result<String, ModelError> {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| ModelError::MissingMetadata("general.architecture".into()))
}

/// Typed access to GGUF metadata under one architecture prefix (`llama.block_count`, ...).
pub(super) struct GgufMeta<'a> {
    content: &'a gguf_file::Content,
    pub arch: String,
}

impl<'a> GgufMeta<'a> {
    fn new(content: &'a gguf_file::Content) -> Result<Self, ModelError> {
        Ok(Self {
            content,
            arch: gguf_architecture(content)?,
        })
    }

    fn value(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(&format!("{}.{key}", self.arch))
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.usize_opt(key)
            .ok_or_else(|| ModelError::MissingMetadata(format!("{}.{key}", self.arch)))
    }

    fn usize_opt(&self, key: &str) -> Option<usize> {
        let v = self.value(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .ok()
    }

    fn f32_opt(&self, key: &str) -> Option<f32> {
        self.value(key)?.to_f32().ok()
    }

    /// A per-layer array of booleans (`attention.sliding_window_pattern` as llama.cpp writes
    /// it for some models).
    fn bools_opt(&self, key: &str) -> Option<Vec<bool>> {
        let items = self.value(key)?.to_vec().ok()?;
        items.iter().map(|v| v.to_bool().ok()).collect()
    }

    /// The model's shape keys shared by every family.
    fn shape(&self, tensors: &dyn WeightSource) -> Result<Shape, ModelError> {
        let (vocab, hidden) = match tensors.dims("token_embd.weight").as_deref() {
            Some(&[vocab, hidden]) => (vocab, hidden),
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "token_embd.weight has shape {other:?}, not 2-D"
                )))
            }
            None => return Err(ModelError::MissingTensor("token_embd.weight".into())),
        };
        let n_heads = self.usize("attention.head_count")?;
        let head_dim = self
            .usize_opt("attention.key_length")
            .unwrap_or(hidden / n_heads.max(1));
        if let Some(rope_dim) = self.usize_opt("rope.dimension_count") {
            if rope_dim != head_dim {
                return Err(ModelError::Config(format!(
                    "partial RoPE ({rope_dim} of {head_dim} dims) is not supported"
                )));
            }
        }
        Ok(Shape {
            hidden,
            vocab,
            n_heads,
            n_kv_heads: self.usize_opt("attention.head_count_kv").unwrap_or(n_heads),
            head_dim,
            n_layers: self.usize("block_count")?,
            max_context: self.usize("context_length")?,
        })
    }
}

/// The sizes every description starts from.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    vocab: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    n_layers: usize,
    max_context: usize,
}

/// Block `i` under llama.cpp's GGUF names: the projections, the attention norm and the MLP
/// norm (`ffn_norm`) required, biases where the file has them, no q/k or post norms (the family
/// adds those it has).
fn gguf_layer(i: usize, tensors: &dyn WeightSource, attention: Attention) -> LayerDesc {
    let name = |s: &str| format!("blk.{i}.{s}");
    let linear = |s: &str| Linear {
        weight: name(&format!("{s}.weight")),
        bias: Some(name(&format!("{s}.bias"))).filter(|b| tensors.has(b)),
    };
    LayerDesc {
        attn_norm: name("attn_norm.weight"),
        q: linear("attn_q"),
        k: linear("attn_k"),
        v: linear("attn_v"),
        o: linear("attn_output"),
        q_norm: None,
        k_norm: None,
        post_attn_norm: None,
        mlp_norm: Some(name("ffn_norm.weight")),
        gate: linear("ffn_gate"),
        up: linear("ffn_up"),
        down: linear("ffn_down"),
        post_mlp_norm: None,
        attention,
    }
}

/// `config.json` of a Hugging Face checkpoint: the fields any supported family uses. Each family
/// reads its own defaults for the optional ones.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct HfConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: Option<f64>,
    pub layer_norm_eps: Option<f64>,
    pub hidden_act: Option<String>,
    /// Older configs write the base here; transformers 5 writes `rope_parameters`.
    pub rope_theta: Option<f32>,
    pub rope_scaling: Option<serde_json::Value>,
    pub rope_parameters: Option<serde_json::Value>,
    pub tie_word_embeddings: Option<bool>,
    pub logit_scale: Option<f32>,
    pub use_qk_norm: Option<bool>,
    pub sliding_window: Option<usize>,
    pub sliding_window_pattern: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub use_sliding_window: Option<bool>,
    pub max_window_layers: Option<usize>,
}

impl HfConfig {
    fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base; any RoPE scaling (linear, dynamic, YaRN, llama3...) is refused.
    fn rope_theta(&self, default: f32) -> Result<f32, ModelError> {
        let scaling = self.rope_scaling.as_ref().filter(|s| !s.is_null());
        if let Some(scaling) = scaling {
            return Err(ModelError::Config(format!(
                "rope_scaling {scaling} is not supported"
            )));
        }
        if let Some(params) = self.rope_parameters.as_ref().filter(|p| !p.is_null()) {
            let kind = params.get("rope_type").and_then(|t| t.as_str());
            if kind.is_some_and(|k| k != "default") {
                return Err(ModelError::Config(format!(
                    "rope_parameters {params} are not supported (only the default RoPE)"
                )));
            }
            if let Some(theta) = params.get("rope_theta").and_then(|t| t.as_f64()) {
                return Ok(theta as f32);
            }
        }
        Ok(self.rope_theta.unwrap_or(default))
    }

    /// Refuses an MLP activation other than SiLU.
    fn check_silu(&self) -> Result<(), ModelError> {
        match self.hidden_act.as_deref() {
            None | Some("silu") | Some("swish") => Ok(()),
            Some(other) => Err(ModelError::Config(format!(
                "hidden_act {other:?} is not supported for {} (only silu)",
                self.model_type
            ))),
        }
    }

    /// Per layer, whether it is a sliding-window layer: `layer_types` when the config lists it,
    /// else `fallback(i)`.
    fn sliding_layers(&self, fallback: impl Fn(usize) -> bool) -> Result<Vec<bool>, ModelError> {
        match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(ModelError::Config(format!(
                        "layer_types lists {} layers for {} hidden layers",
                        types.len(),
                        self.num_hidden_layers
                    )));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(ModelError::Config(format!(
                            "layer type {other:?} is not supported"
                        ))),
                    })
                    .collect()
            }
            None => Ok((0..self.num_hidden_layers).map(fallback).collect()),
        }
    }
}

/// Block `i` under Hugging Face names (`model.layers.{i}.self_attn.q_proj` ...): projections,
/// input norm and `post_attention_layernorm` as the MLP norm, biases where present.
fn hf_layer(i: usize, tensors: &dyn WeightSource, attention: Attention) -> LayerDesc {
    let name = |s: &str| format!("model.layers.{i}.{s}");
    let linear = |s: &str| Linear {
        weight: name(&format!("{s}.weight")),
        bias: Some(name(&format!("{s}.bias"))).filter(|b| tensors.has(b)),
    };
    LayerDesc {
        attn_norm: name("input_layernorm.weight"),
        q: linear("self_attn.q_proj"),
        k: linear("self_attn.k_proj"),
        v: linear("self_attn.v_proj"),
        o: linear("self_attn.o_proj"),
        q_norm: None,
        k_norm: None,
        post_attn_norm: None,
        mlp_norm: Some(name("post_attention_layernorm.weight")),
        gate: linear("mlp.gate_proj"),
        up: linear("mlp.up_proj"),
        down: linear("mlp.down_proj"),
        post_mlp_norm: None,
        attention,
    }
}

/// `lm_head.weight` unless the checkpoint ties it to the embedding (or does not have it).
fn hf_lm_head(tied: bool, tensors: &dyn WeightSource) -> Option<String> {
    let name = "lm_head.weight";
    (!tied && tensors.has(name)).then(|| name.to_string())
}

/// `output.weight` when the GGUF file has one; else the output projection is the embedding.
fn gguf_lm_head(tensors: &dyn WeightSource) -> Option<String> {
    let name = "output.weight";
    tensors.has(name).then(|| name.to_string())
}
