//! Gemma 3 (text), GGUF only.
//!
//! Differences from llama: the embedding is scaled by sqrt(hidden); queries and keys are
//! RMS-normed per head; each block has four norms (before and after attention and MLP); the MLP
//! is GELU (tanh) gated; most layers attend within a sliding window with a local RoPE base, and
//! every sixth layer attends globally with the global base. GGUF files store the norm weights
//! with Gemma's `1 + w` already applied, so the norms are plain RMS norms.

use super::super::desc::{Activation, Attention, BlockKind, ModelDesc, NormKind, RopeStyle};
use super::super::source::WeightSource;
use super::super::ModelError;
use super::{gguf_layer, gguf_lm_head, GgufMeta};

/// Every `SLIDING_PATTERN`-th layer is global; the others use the sliding window.
const SLIDING_PATTERN: usize = 6;
/// Indices into the RoPE bases.
const ROPE_GLOBAL: usize = 0;
const ROPE_LOCAL: usize = 1;

pub(super) fn gguf(meta: &GgufMeta, tensors: &dyn WeightSource) -> Result<ModelDesc, ModelError> {
    let s = meta.shape(tensors)?;
    let window = meta.usize("attention.sliding_window")?;
    let layers = (0..s.n_layers)
        .map(|i| {
            let sliding = (i + 1) % SLIDING_PATTERN != 0;
            let attention = Attention {
                window: sliding.then_some(window),
                rope: Some(if sliding { ROPE_LOCAL } else { ROPE_GLOBAL }),
            };
            let mut l = gguf_layer(i, tensors, attention);
            let name = |s: &str| Some(format!("blk.{i}.{s}.weight"));
            l.q_norm = name("attn_q_norm");
            l.k_norm = name("attn_k_norm");
            l.post_attn_norm = name("post_attention_norm");
            l.post_mlp_norm = name("post_ffw_norm");
            l
        })
        .collect();
    Ok(ModelDesc {
        architecture: meta.arch.clone(),
        hidden: s.hidden,
        n_heads: s.n_heads,
        n_kv_heads: meta.usize("attention.head_count_kv")?,
        head_dim: s.head_dim,
        vocab: s.vocab,
        max_context: s.max_context,
        norm: NormKind::Rms,
        norm_eps: meta
            .f32_opt("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-6),
        block: BlockKind::Sequential,
        activation: Activation::GeluTanh,
        rope_style: RopeStyle::Halves,
        rope_bases: vec![
            meta.f32_opt("rope.freq_base").unwrap_or(1_000_000.0),
            meta.f32_opt("rope.local_freq_base").unwrap_or(10_000.0),
        ],
        embed_scale: Some((s.hidden as f32).sqrt()),
        logit_scale: None,
        final_softcap: meta.f32_opt("final_logit_softcapping"),
        embed: "token_embd.weight".into(),
        final_norm: "output_norm.weight".into(),
        lm_head: gguf_lm_head(tensors),
        layers,
    })
}
