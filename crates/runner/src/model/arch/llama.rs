//! The llama family: Llama, SmolLM2 and Mistral layouts (`llama`), Qwen2 (llama with q/k/v
//! biases) and Qwen3 (llama with a per-head RMS norm of queries and keys, shared by every head,
//! and no biases).
//!
//! llama GGUF files store Q and K rows permuted for interleaved RoPE; qwen2/qwen3 GGUF files and
//! every Hugging Face checkpoint rotate halves.

use super::super::desc::{Activation, Attention, BlockKind, ModelDesc, NormKind, RopeStyle};
use super::super::source::WeightSource;
use super::super::ModelError;
use super::{gguf_layer, gguf_lm_head, hf_layer, hf_lm_head, GgufMeta, HfConfig};

pub(super) fn gguf(meta: &GgufMeta, tensors: &dyn WeightSource) -> Result<ModelDesc, ModelError> {
    let s = meta.shape(tensors)?;
    let rope_style = if meta.arch == "llama" {
        RopeStyle::Interleaved
    } else {
        RopeStyle::Halves
    };
    let qk_norm = meta.arch == "qwen3";
    let global = Attention {
        window: None,
        rope: Some(0),
    };
    let layers = (0..s.n_layers)
        .map(|i| {
            let mut l = gguf_layer(i, tensors, global);
            if qk_norm {
                l.q_norm = Some(format!("blk.{i}.attn_q_norm.weight"));
                l.k_norm = Some(format!("blk.{i}.attn_k_norm.weight"));
            }
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
        norm: NormKind::Rms,
        norm_eps: meta
            .f32_opt("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5),
        block: BlockKind::Sequential,
        activation: Activation::Silu,
        rope_style,
        rope_bases: vec![meta.f32_opt("rope.freq_base").unwrap_or(10_000.0)],
        embed_scale: None,
        logit_scale: None,
        final_softcap: None,
        embed: "token_embd.weight".into(),
        final_norm: "output_norm.weight".into(),
        lm_head: gguf_lm_head(tensors),
        layers,
    })
}

pub(super) fn hf(hf: &HfConfig, tensors: &dyn WeightSource) -> Result<ModelDesc, ModelError> {
    hf.check_silu()?;
    let qwen = hf.model_type.starts_with("qwen");
    let qk_norm = hf.model_type == "qwen3";
    // Qwen's optional sliding window applies to layers from `max_window_layers` on.
    let window = hf.sliding_window.filter(|_| qwen);
    let sliding = hf.sliding_layers(|i| {
        qwen && hf.use_sliding_window == Some(true)
            && window.is_some()
            && i >= hf.max_window_layers.unwrap_or(0)
    })?;
    if sliding.iter().any(|&s| s) && window.is_none() {
        return Err(ModelError::Config(
            "sliding-window layers without a sliding_window size".into(),
        ));
    }
    let layers = sliding
        .iter()
        .enumerate()
        .map(|(i, &sliding)| {
            let attention = Attention {
                window: if sliding { window } else { None },
                rope: Some(0),
            };
            let mut l = hf_layer(i, tensors, attention);
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
        head_dim: hf.head_dim(),
        vocab: hf.vocab_size,
        max_context: hf.max_position_embeddings,
        norm: NormKind::Rms,
        norm_eps: hf.rms_norm_eps.unwrap_or(1e-6) as f32,
        block: BlockKind::Sequential,
        activation: Activation::Silu,
        rope_style: RopeStyle::Halves,
        rope_bases: vec![hf.rope_theta(10_000.0)?],
        embed_scale: None,
        logit_scale: None,
        final_softcap: None,
        embed: "model.embed_tokens.weight".into(),
        final_norm: "model.norm.weight".into(),
        lm_head: hf_lm_head(hf.tie_word_embeddings.unwrap_or(false), tensors),
        layers,
    })
}
