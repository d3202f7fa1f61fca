//! Gemma 3 (text), run as one batched forward pass over every sequence of a step.
//!
//! Differences from llama: the embedding is scaled by sqrt(hidden); queries and keys are
//! RMS-normed per head; each block has four norms (before and after attention and MLP); the MLP
//! is GELU (tanh) gated; most layers attend within a sliding window with a local RoPE base, and
//! every sixth layer attends globally with the global base. GGUF files store the norm weights
//! with Gemma's `1 + w` already applied, so the norms here are plain RMS norms.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{Device, Tensor};

use super::attention::{apply_rope, attend, rms_norm, rope_cos_sin, Embedding, Linear, RopeStyle};
use super::kv_cache::{CacheShape, SeqCaches, StepPlan};
use super::llama::write_logits;
use super::{gguf_tensor, BatchItem, BatchModel, GgufMeta, ModelError, SeqId};

/// Every `SLIDING_PATTERN`-th layer is global; the others use the sliding window.
const SLIDING_PATTERN: usize = 6;

#[derive(Debug, Clone)]
struct Gemma3Config {
    hidden: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    max_context: usize,
    rms_eps: f32,
    rope_global: f32,
    rope_local: f32,
    window: usize,
    final_softcap: Option<f32>,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_mlp_norm: Tensor,
    /// Some(window) on sliding-window layers.
    window: Option<usize>,
}

/// A Gemma 3 model with the KV caches of all its live sequences.
#[derive(Debug)]
pub struct Gemma3 {
    cfg: Gemma3Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    caches: SeqCaches,
    device: Device,
}

impl Gemma3 {
    pub(super) fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let meta = GgufMeta::new(content)?;
        let mut tensor = |name: &str| gguf_tensor(content, reader, name, device);
        let embd = Arc::new(tensor("token_embd.weight")?);
        let (vocab, hidden) = embd.shape().dims2()?;
        let n_heads = meta.usize("attention.head_count")?;
        let n_layers = meta.usize("block_count")?;
        let cfg = Gemma3Config {
            hidden,
            n_heads,
            n_kv_heads: meta.usize("attention.head_count_kv")?,
            head_dim: meta
                .usize_opt("attention.key_length")
                .unwrap_or(hidden / n_heads),
            vocab,
            max_context: meta.usize("context_length")?,
            rms_eps: meta
                .f32_opt("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6),
            rope_global: meta.f32_opt("rope.freq_base").unwrap_or(1_000_000.0),
            rope_local: meta.f32_opt("rope.local_freq_base").unwrap_or(10_000.0),
            window: meta.usize("attention.sliding_window")?,
            final_softcap: meta.f32_opt("final_logit_softcapping"),
        };
        if cfg.n_kv_heads == 0
            || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads)
            || !cfg.head_dim.is_multiple_of(2)
        {
            return Err(ModelError::Config(format!(
                "{} query heads, {} KV heads, head dim {}",
                cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
            )));
        }
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str| -> Result<Linear, ModelError> {
                let w = gguf_tensor(content, reader, &format!("{p}.{name}.weight"), device)?;
                Ok(Linear::quantized(w, None)?)
            };
            let (q, k, v, o) = (
                linear("attn_q")?,
                linear("attn_k")?,
                linear("attn_v")?,
                linear("attn_output")?,
            );
            let (gate, up, down) = (linear("ffn_gate")?, linear("ffn_up")?, linear("ffn_down")?);
            let mut norm = |name: &str| -> Result<Tensor, ModelError> {
                Ok(
                    gguf_tensor(content, reader, &format!("{p}.{name}.weight"), device)?
                        .dequantize(device)?,
                )
            };
            let sliding = (i + 1) % SLIDING_PATTERN != 0;
            layers.push(Layer {
                attn_norm: norm("attn_norm")?,
                q_norm: norm("attn_q_norm")?,
                k_norm: norm("attn_k_norm")?,
                post_attn_norm: norm("post_attention_norm")?,
                mlp_norm: norm("ffn_norm")?,
                post_mlp_norm: norm("post_ffw_norm")?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                window: sliding.then_some(cfg.window),
            });
        }
        let lm_head = if content.tensor_infos.contains_key("output.weight") {
            Linear::quantized(gguf_tensor(content, reader, "output.weight", device)?, None)?
        } else {
            Linear::new(QMatMul::from_arc(embd.clone())?, None)
        };
        let caches = SeqCaches::new(CacheShape {
            n_layers,
            kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            max_context: cfg.max_context,
            device: device.clone(),
        });
        Ok(Self {
            cfg,
            embed: Embedding::Quantized(embd),
            layers,
            norm,
            lm_head,
            caches,
            device: device.clone(),
        })
    }

    fn run(&mut self, plan: &StepPlan, logits: &mut Vec<f32>) -> Result<(), ModelError> {
        let cfg = &self.cfg;
        let n = plan.ids.len();
        let (hd, dev) = (cfg.head_dim, &self.device);
        let global = rope_cos_sin(&plan.positions, hd, cfg.rope_global, dev)?;
        let local = rope_cos_sin(&plan.positions, hd, cfg.rope_local, dev)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = (self.embed.lookup(&plan.ids, dev)? * (cfg.hidden as f64).sqrt())?;
        for (li, layer) in self.layers.iter().enumerate() {
            let (cos, sin) = if layer.window.is_some() {
                &local
            } else {
                &global
            };
            let h = rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let q = layer.q.forward(&h)?.reshape((n, cfg.n_heads, hd))?;
            let k = layer.k.forward(&h)?.reshape((n, cfg.n_kv_heads, hd))?;
            let v = layer.v.forward(&h)?.reshape((n, cfg.n_kv_heads, hd))?;
            let q = rms_norm(&q, &layer.q_norm, cfg.rms_eps)?;
            let k = rms_norm(&k, &layer.k_norm, cfg.rms_eps)?;
            let q = apply_rope(&q, cos, sin, RopeStyle::Halves)?;
            let k = apply_rope(&k, cos, sin, RopeStyle::Halves)?;
            let mut outs = Vec::with_capacity(plan.spans.len());
            for span in &plan.spans {
                let cache = self.caches.get_mut(span.seq)?;
                outs.push(attend(
                    &q.narrow(0, span.offset, span.len)?,
                    &k.narrow(0, span.offset, span.len)?,
                    &v.narrow(0, span.offset, span.len)?,
                    cache,
                    li,
                    span.start,
                    scale,
                    layer.window,
                )?);
            }
            let attn = if outs.len() == 1 {
                outs.pop().expect("one output")
            } else {
                Tensor::cat(&outs, 0)?
            };
            let attn = rms_norm(&layer.o.forward(&attn)?, &layer.post_attn_norm, cfg.rms_eps)?;
            x = (x + attn)?;
            let h = rms_norm(&x, &layer.mlp_norm, cfg.rms_eps)?;
            let gated = (layer.gate.forward(&h)?.gelu()? * layer.up.forward(&h)?)?;
            let mlp = rms_norm(
                &layer.down.forward(&gated)?,
                &layer.post_mlp_norm,
                cfg.rms_eps,
            )?;
            x = (x + mlp)?;
        }
        let last = Tensor::new(plan.last_rows(), dev)?;
        let x = x.index_select(&last, 0)?;
        let x = rms_norm(&x, &self.norm, cfg.rms_eps)?;
        let mut out = self.lm_head.forward(&x)?;
        if let Some(cap) = cfg.final_softcap {
            out = ((out / cap as f64)?.tanh()? * cap as f64)?;
        }
        write_logits(&out, logits)
    }
}

impl BatchModel for Gemma3 {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab
    }

    fn max_context(&self) -> usize {
        self.caches.max_context()
    }

    fn forward(
        &mut self,
        batch: &[BatchItem<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        if batch.is_empty() {
            logits.clear();
            return Ok(());
        }
        let plan = self.caches.begin(batch, self.cfg.vocab)?;
        let result = self.run(&plan, logits);
        self.caches.finish(&plan, result.is_ok());
        result
    }

    fn release(&mut self, seq: SeqId) {
        self.caches.release(seq);
    }
}
