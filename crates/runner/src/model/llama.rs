//! The llama family (Llama, SmolLM2, Mistral layouts, and qwen2 = llama + q/k/v biases): where
//! its weights live in GGUF and safetensors files, and the switches it sets on the shared
//! [`Transformer`].

use std::io::{Read, Seek};
use std::path::PathBuf;

use candle_core::quantized::gguf_file;

use super::ops::{Activation, RopeStyle};
use super::transformer::{Arch, Layer, Transformer, Weights};
use super::weights::{GgufReader, Proj, SafetensorsReader};
use super::{GgufMeta, LoadOptions, ModelError};

/// `config.json` of a Hugging Face llama or qwen2 checkpoint (the fields used).
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct HfConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f32 {
    10_000.0
}

/// q|k|v biases side by side (qwen2); missing ones are zero. None when there are none.
fn qkv_bias(
    q: Option<Vec<f32>>,
    k: Option<Vec<f32>>,
    v: Option<Vec<f32>>,
    q_dim: usize,
    kv_dim: usize,
) -> Option<Vec<f32>> {
    if q.is_none() && k.is_none() && v.is_none() {
        return None;
    }
    let mut all = q.unwrap_or_else(|| vec![0.0; q_dim]);
    all.extend(k.unwrap_or_else(|| vec![0.0; kv_dim]));
    all.extend(v.unwrap_or_else(|| vec![0.0; kv_dim]));
    Some(all)
}

pub(super) fn from_gguf<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    opts: &LoadOptions,
) -> Result<Transformer, ModelError> {
    let meta = GgufMeta::new(content)?;
    let rope_style = match meta.arch.as_str() {
        "llama" => RopeStyle::Interleaved,
        "qwen2" => RopeStyle::Halves,
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                found: other.to_string(),
                supported: &["llama", "qwen2"],
            })
        }
    };
    let mut t = GgufReader::new(content, reader);
    let (vocab, hidden) = t.dims2("token_embd.weight")?;
    let n_heads = meta.usize("attention.head_count")?;
    let head_dim = meta
        .usize_opt("attention.key_length")
        .unwrap_or(hidden / n_heads.max(1));
    let arch = Arch {
        hidden,
        n_heads,
        n_kv_heads: meta.usize_opt("attention.head_count_kv").unwrap_or(n_heads),
        head_dim,
        vocab,
        max_context: meta.usize("context_length")?,
        rms_eps: meta
            .f32_opt("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5),
        rope_style,
        rope_bases: vec![meta.f32_opt("rope.freq_base").unwrap_or(10_000.0)],
        embed_scale: None,
        activation: Activation::Silu,
        final_softcap: None,
    };
    arch.check()?;
    if let Some(rope_dim) = meta.usize_opt("rope.dimension_count") {
        if rope_dim != head_dim {
            return Err(ModelError::Config(format!(
                "partial RoPE ({rope_dim} of {head_dim} dims) is not supported"
            )));
        }
    }
    let (q_dim, kv_dim) = (n_heads * head_dim, arch.n_kv_heads * head_dim);
    let n_layers = meta.usize("block_count")?;
    let mut layers = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let p = format!("blk.{i}");
        let bias = qkv_bias(
            t.vector_opt(&format!("{p}.attn_q.bias"))?,
            t.vector_opt(&format!("{p}.attn_k.bias"))?,
            t.vector_opt(&format!("{p}.attn_v.bias"))?,
            q_dim,
            kv_dim,
        );
        let mats = t.block_matrices(i)?;
        layers.push(Layer {
            attn_norm: t.vector(&format!("{p}.attn_norm.weight"))?,
            qkv: Proj::fuse(mats.qkv, bias)?,
            q_norm: None,
            k_norm: None,
            o: Proj::single(mats.o)?,
            post_attn_norm: None,
            mlp_norm: t.vector(&format!("{p}.ffn_norm.weight"))?,
            gate_up: Proj::fuse(mats.gate_up, None)?,
            down: Proj::single(mats.down)?,
            post_mlp_norm: None,
            window: None,
            rope: 0,
        });
    }
    t.finish(arch, layers, opts)
}

pub(super) fn from_safetensors(
    hf: &HfConfig,
    files: &[PathBuf],
    opts: &LoadOptions,
) -> Result<Transformer, ModelError> {
    if let Some(scaling) = &hf.rope_scaling {
        if !scaling.is_null() {
            return Err(ModelError::Config(format!(
                "rope_scaling {scaling} is not supported"
            )));
        }
    }
    let n_heads = hf.num_attention_heads;
    let head_dim = hf.head_dim.unwrap_or(hf.hidden_size / n_heads.max(1));
    let arch = Arch {
        hidden: hf.hidden_size,
        n_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
        head_dim,
        vocab: hf.vocab_size,
        max_context: hf.max_position_embeddings,
        rms_eps: hf.rms_norm_eps as f32,
        rope_style: RopeStyle::Halves,
        rope_bases: vec![hf.rope_theta],
        embed_scale: None,
        activation: Activation::Silu,
        final_softcap: None,
    };
    arch.check()?;
    let t = SafetensorsReader::open(files)?;
    let (hidden, ffn) = (arch.hidden, hf.intermediate_size);
    let (q_dim, kv_dim) = (n_heads * head_dim, arch.n_kv_heads * head_dim);
    let mut layers = Vec::with_capacity(hf.num_hidden_layers);
    for i in 0..hf.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let attn = |name: &str, rows: usize, cols: usize| {
            t.matrix(&format!("{p}.self_attn.{name}.weight"), rows, cols)
        };
        let bias = |name: &str, n: usize| t.vector_opt(&format!("{p}.self_attn.{name}.bias"), n);
        let qkv = vec![
            attn("q_proj", q_dim, hidden)?,
            attn("k_proj", kv_dim, hidden)?,
            attn("v_proj", kv_dim, hidden)?,
        ];
        let qkv_b = qkv_bias(
            bias("q_proj", q_dim)?,
            bias("k_proj", kv_dim)?,
            bias("v_proj", kv_dim)?,
            q_dim,
            kv_dim,
        );
        let mlp = |name: &str, rows: usize, cols: usize| {
            t.matrix(&format!("{p}.mlp.{name}.weight"), rows, cols)
        };
        let mlp_bias = |name: &str, n: usize| t.vector_opt(&format!("{p}.mlp.{name}.bias"), n);
        let gate_up_b = match (mlp_bias("gate_proj", ffn)?, mlp_bias("up_proj", ffn)?) {
            (None, None) => None,
            (g, u) => {
                let mut b = g.unwrap_or_else(|| vec![0.0; ffn]);
                b.extend(u.unwrap_or_else(|| vec![0.0; ffn]));
                Some(b)
            }
        };
        layers.push(Layer {
            attn_norm: t.vector(&format!("{p}.input_layernorm.weight"), hidden)?,
            qkv: Proj::fuse(qkv, qkv_b)?,
            q_norm: None,
            k_norm: None,
            o: Proj::fuse(
                vec![attn("o_proj", hidden, q_dim)?],
                bias("o_proj", hidden)?,
            )?,
            post_attn_norm: None,
            mlp_norm: t.vector(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
            gate_up: Proj::fuse(
                vec![mlp("gate_proj", ffn, hidden)?, mlp("up_proj", ffn, hidden)?],
                gate_up_b,
            )?,
            down: Proj::fuse(
                vec![mlp("down_proj", hidden, ffn)?],
                mlp_bias("down_proj", hidden)?,
            )?,
            post_mlp_norm: None,
            window: None,
            rope: 0,
        });
    }
    let embed = t
        .matrix("model.embed_tokens.weight", arch.vocab, hidden)?
        .into_qmatrix()?;
    let norm = t.vector("model.norm.weight", hidden)?;
    let lm_head = if hf.tie_word_embeddings || !t.has("lm_head.weight") {
        None
    } else {
        Some(
            t.matrix("lm_head.weight", arch.vocab, hidden)?
                .into_qmatrix()?,
        )
    };
    Transformer::new(
        Weights {
            arch,
            embed,
            layers,
            norm,
            lm_head,
        },
        opts,
    )
}
