//! Cohere's models: `cohere` (Command R, Command R+, Aya 23, Aya Expanse; `command-r` in GGUF)
//! and `cohere2` (Command R7B, Command A).
//!
//! Differences from llama (transformers' `modeling_cohere.py` / `modeling_cohere2.py`, llama.cpp's
//! `command-r` and `cohere2`):
//! - LayerNorm without bias instead of RMS norm, everywhere;
//! - parallel blocks: attention and MLP both read the one input norm, and both outputs add to
//!   the residual, `x + attn(h) + mlp(h)`;
//! - RoPE rotates adjacent pairs (`repeat_interleave`), in Hugging Face and GGUF files alike;
//! - logits are multiplied by `logit_scale`; the output projection is the embedding (tied);
//! - `cohere` optionally LayerNorms queries and keys per head, each head with its own weights
//!   (`use_qk_norm`, Command R+), stored as `[heads, head_dim]`;
//! - `cohere2` interleaves sliding-window layers, which use RoPE, with global layers, which use
//!   no positional encoding: every `sliding_window_pattern`-th layer (4) is global unless
//!   `layer_types` lists them; the window is `sliding_window` tokens.

use super::super::desc::{Activation, Attention, BlockKind, ModelDesc, NormKind, RopeStyle};
use super::super::source::WeightSource;
use super::super::ModelError;
use super::{gguf_layer, gguf_lm_head, hf_layer, hf_lm_head, GgufMeta, HfConfig};

/// Command R7B / A: three sliding-window layers, then a global one.
const DEFAULT_SLIDING_PATTERN: usize = 4;

/// Sliding with RoPE, or global without positional encoding (Cohere2).
fn cohere2_attention(sliding: bool, window: usize) -> Attention {
    if sliding {
        Attention {
            window: Some(window),
            rope: Some(0),
        }
    } else {
        Attention {
            window: None,
            rope: None,
        }
    }
}

fn pattern_layers(n_layers: usize, pattern: usize) -> Result<Vec<bool>, ModelError> {
    if pattern == 0 {
        return Err(ModelError::Config("a sliding window pattern of 0".into()));
    }
    Ok((0..n_layers).map(|i| (i + 1) % pattern != 0).collect())
}

pub(super) fn gguf(meta: &GgufMeta, tensors: &dyn WeightSource) -> Result<ModelDesc, ModelError> {
    let s = meta.shape(tensors)?;
    let cohere2 = meta.arch == "cohere2";
    let sliding = if cohere2 {
        // llama.cpp writes the pattern as a per-layer array, as a period, or not at all (4).
        let layers = match meta.bools_opt("attention.sliding_window_pattern") {
            Some(layers) => layers,
            None => pattern_layers(
                s.n_layers,
                meta.usize_opt("attention.sliding_window_pattern")
                    .unwrap_or(DEFAULT_SLIDING_PATTERN),
            )?,
        };
        if layers.len() != s.n_layers {
            return Err(ModelError::Config(format!(
                "the sliding window pattern covers {} of {} layers",
                layers.len(),
                s.n_layers
            )));
        }
        layers
    } else {
        vec![false; s.n_layers]
    };
    let window = if cohere2 {
        meta.usize("attention.sliding_window")?
    } else {
        0
    };
    let base = meta.f32_opt("rope.freq_base").unwrap_or(10_000.0);
    let layers = sliding
        .iter()
        .enumerate()
        .map(|(i, &sliding)| {
            let attention = if cohere2 {
                cohere2_attention(sliding, window)
            } else {
                Attention {
                    window: None,
                    rope: Some(0),
                }
            };
            let mut l = gguf_layer(i, tensors, attention);
            l.mlp_norm = None;
            let opt = |s: &str| Some(format!("blk.{i}.{s}.weight")).filter(|n| tensors.has(n));
            l.q_norm = opt("attn_q_norm");
            l.k_norm = opt("attn_k_norm");
            l
        })
        .collect();
    Ok(ModelDesc {
        architecture: meta.arch.clone(),
        hidden: s.hidden,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        head_dim: s.head_dim,
        vocab: s.vocab,
        max_context: s.max_context,
        norm: NormKind::Layer,
        norm_eps: meta.f32_opt("attention.layer_norm_epsilon").unwrap_or(1e-5),
        block: BlockKind::Parallel,
        activation: Activation::Silu,
        rope_style: RopeStyle::Interleaved,
        // The sliding layers' own base, when the file gives one, else the model's.
        rope_bases: vec![meta
            .f32_opt("rope.freq_base_swa")
            .filter(|_| cohere2)
            .unwrap_or(base)],
        embed_scale: None,
        logit_scale: meta.f32_opt("logit_scale"),
        final_softcap: None,
        embed: "token_embd.weight".into(),
        final_norm: "output_norm.weight".into(),
        lm_head: gguf_lm_head(tensors),
        layers,
    })
}

pub(super) fn hf(hf: &HfConfig, tensors: &dyn WeightSource) -> Result<ModelDesc, ModelError> {
    hf.check_silu()?;
    let cohere2 = hf.model_type == "cohere2";
    let (sliding, window) = if cohere2 {
        let pattern = hf.sliding_window_pattern.unwrap_or(DEFAULT_SLIDING_PATTERN);
        let layers = match &hf.layer_types {
            Some(_) => hf.sliding_layers(|_| false)?,
            None => pattern_layers(hf.num_hidden_layers, pattern)?,
        };
        let window = match hf.sliding_window {
            Some(w) => w,
            None if layers.iter().any(|&s| s) => {
                return Err(ModelError::Config(
                    "cohere2 config without a sliding_window size".into(),
                ))
            }
            None => 0,
        };
        (layers, window)
    } else {
        (vec![false; hf.num_hidden_layers], 0)
    };
    let qk_norm = !cohere2 && hf.use_qk_norm == Some(true);
    let layers = sliding
        .iter()
        .enumerate()
        .map(|(i, &sliding)| {
            let attention = if cohere2 {
                cohere2_attention(sliding, window)
            } else {
                Attention {
                    window: None,
                    rope: Some(0),
                }
            };
            let mut l = hf_layer(i, tensors, attention);
            l.mlp_norm = None;
            if qk_norm {
                l.q_norm = Some(format!("model.layers.{i}.self_attn.q_norm.weight"));
                l.k_norm = Some(format!("model.layers.{i}.self_attn.k_norm.weight"));
            }
            l
        })
        .collect();
    Ok(ModelDesc {
        architecture: hf.model_type.clone(),
        hidden: hf.hidden_size,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.n_kv_heads(),
        // Cohere2 always splits the hidden size evenly over the heads.
        head_dim: if cohere2 {
            hf.hidden_size / hf.num_attention_heads.max(1)
        } else {
            hf.head_dim()
        },
        vocab: hf.vocab_size,
        max_context: hf.max_position_embeddings,
        norm: NormKind::Layer,
        norm_eps: hf.layer_norm_eps.unwrap_or(1e-5) as f32,
        block: BlockKind::Parallel,
        activation: Activation::Silu,
        rope_style: RopeStyle::Interleaved,
        rope_bases: vec![hf.rope_theta(10_000.0)?],
        embed_scale: None,
        logit_scale: Some(hf.logit_scale.unwrap_or(0.0625)),
        final_softcap: None,
        embed: "model.embed_tokens.weight".into(),
        final_norm: "model.norm.weight".into(),
        // Cohere ties the output projection to the embedding unless the config says otherwise.
        lm_head: hf_lm_head(hf.tie_word_embeddings.unwrap_or(true), tensors),
        layers,
    })
}
