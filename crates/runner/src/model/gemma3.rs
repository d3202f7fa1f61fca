//! Gemma 3 (text): where its weights live in a GGUF file and the switches it sets on the shared
//! [`Transformer`].
//!
//! Differences from llama: the embedding is scaled by sqrt(hidden); queries and keys are
//! RMS-normed per head; each block has four norms (before and after attention and MLP); the MLP
//! is GELU (tanh) gated; most layers attend within a sliding window with a local RoPE base, and
//! every sixth layer attends globally with the global base. GGUF files store the norm weights
//! with Gemma's `1 + w` already applied, so the norms here are plain RMS norms.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;

use super::ops::{Activation, RopeStyle};
use super::transformer::{Arch, Layer, Transformer};
use super::weights::{GgufReader, Proj};
use super::{GgufMeta, LoadOptions, ModelError};

/// Every `SLIDING_PATTERN`-th layer is global; the others use the sliding window.
const SLIDING_PATTERN: usize = 6;
/// Indices into the RoPE bases.
const ROPE_GLOBAL: usize = 0;
const ROPE_LOCAL: usize = 1;

pub(super) fn from_gguf<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    opts: &LoadOptions,
) -> Result<Transformer, ModelError> {
    let meta = GgufMeta::new(content)?;
    let mut t = GgufReader::new(content, reader);
    let (vocab, hidden) = t.dims2("token_embd.weight")?;
    let n_heads = meta.usize("attention.head_count")?;
    let n_layers = meta.usize("block_count")?;
    let window = meta.usize("attention.sliding_window")?;
    let arch = Arch {
        hidden,
        n_heads,
        n_kv_heads: meta.usize("attention.head_count_kv")?,
        head_dim: meta
            .usize_opt("attention.key_length")
            .unwrap_or(hidden / n_heads.max(1)),
        vocab,
        max_context: meta.usize("context_length")?,
        rms_eps: meta
            .f32_opt("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-6),
        rope_style: RopeStyle::Halves,
        rope_bases: vec![
            meta.f32_opt("rope.freq_base").unwrap_or(1_000_000.0),
            meta.f32_opt("rope.local_freq_base").unwrap_or(10_000.0),
        ],
        embed_scale: Some((hidden as f32).sqrt()),
        activation: Activation::GeluTanh,
        final_softcap: meta.f32_opt("final_logit_softcapping"),
    };
    arch.check()?;
    let mut layers = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let p = format!("blk.{i}");
        let mats = t.block_matrices(i)?;
        let mut norm = |name: &str| t.vector(&format!("{p}.{name}.weight"));
        let sliding = (i + 1) % SLIDING_PATTERN != 0;
        layers.push(Layer {
            attn_norm: norm("attn_norm")?,
            qkv: Proj::fuse(mats.qkv, None)?,
            q_norm: Some(norm("attn_q_norm")?),
            k_norm: Some(norm("attn_k_norm")?),
            o: Proj::single(mats.o)?,
            post_attn_norm: Some(norm("post_attention_norm")?),
            mlp_norm: norm("ffn_norm")?,
            gate_up: Proj::fuse(mats.gate_up, None)?,
            down: Proj::single(mats.down)?,
            post_mlp_norm: Some(norm("post_ffw_norm")?),
            window: sliding.then_some(window),
            rope: if sliding { ROPE_LOCAL } else { ROPE_GLOBAL },
        });
    }
    t.finish(arch, layers, opts)
}
