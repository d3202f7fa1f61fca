//! The llama family (Llama, SmolLM2, Mistral layouts, and qwen2 = llama + q/k/v biases), run as
//! one batched forward pass over every sequence of a step.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::attention::{apply_rope, attend, rms_norm, rope_cos_sin, Embedding, Linear, RopeStyle};
use super::kv_cache::{CacheShape, SeqCaches, StepPlan};
use super::{gguf_tensor, BatchItem, BatchModel, GgufMeta, ModelError, SeqId};

#[derive(Debug, Clone)]
pub(super) struct LlamaConfig {
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub max_context: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    fn check(&self) -> Result<(), ModelError> {
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ModelError::Config(format!(
                "{} query heads cannot share {} KV heads evenly",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) || self.max_context == 0 {
            return Err(ModelError::Config(format!(
                "head dim {} / context {} unusable",
                self.head_dim, self.max_context
            )));
        }
        Ok(())
    }
}

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

#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A llama-family model with the KV caches of all its live sequences.
#[derive(Debug)]
pub struct Llama {
    cfg: LlamaConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    caches: SeqCaches,
    device: Device,
}

impl Llama {
    /// Loads a llama or qwen2 GGUF file on a device.
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = gguf_file::Content::read(&mut file)?;
        Self::from_gguf(&content, &mut file, device)
    }

    pub(super) fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self, ModelError> {
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
        let mut tensor = |name: &str| gguf_tensor(content, reader, name, device);
        let embd = Arc::new(tensor("token_embd.weight")?);
        let (vocab, hidden) = embd.shape().dims2()?;
        let n_heads = meta.usize("attention.head_count")?;
        let head_dim = meta
            .usize_opt("attention.key_length")
            .unwrap_or(hidden / n_heads);
        let cfg = LlamaConfig {
            hidden,
            n_layers: meta.usize("block_count")?,
            n_heads,
            n_kv_heads: meta.usize_opt("attention.head_count_kv").unwrap_or(n_heads),
            head_dim,
            vocab,
            max_context: meta.usize("context_length")?,
            rms_eps: meta
                .f32_opt("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            rope_base: meta.f32_opt("rope.freq_base").unwrap_or(10_000.0),
            rope_style,
        };
        cfg.check()?;
        if let Some(rope_dim) = meta.usize_opt("rope.dimension_count") {
            if rope_dim != head_dim {
                return Err(ModelError::Config(format!(
                    "partial RoPE ({rope_dim} of {head_dim} dims) is not supported"
                )));
            }
        }
        // Norms and biases are small f32 vectors: keep them dense.
        let mut dense =
            |name: &str| -> Result<Tensor, ModelError> { Ok(tensor(name)?.dequantize(device)?) };
        let norm = dense("output_norm.weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            let mut bias = |name: &str| -> Result<Option<Tensor>, ModelError> {
                let name = format!("{p}.{name}.bias");
                if content.tensor_infos.contains_key(&name) {
                    Ok(Some(
                        gguf_tensor(content, reader, &name, device)?.dequantize(device)?,
                    ))
                } else {
                    Ok(None)
                }
            };
            let (qb, kb, vb) = (bias("attn_q")?, bias("attn_k")?, bias("attn_v")?);
            let mut linear = |name: &str, b: Option<Tensor>| -> Result<Linear, ModelError> {
                let w = gguf_tensor(content, reader, &format!("{p}.{name}.weight"), device)?;
                Ok(Linear::quantized(w, b)?)
            };
            let q = linear("attn_q", qb)?;
            let k = linear("attn_k", kb)?;
            let v = linear("attn_v", vb)?;
            let o = linear("attn_output", None)?;
            let gate = linear("ffn_gate", None)?;
            let up = linear("ffn_up", None)?;
            let down = linear("ffn_down", None)?;
            let mut norm = |name: &str| -> Result<Tensor, ModelError> {
                Ok(
                    gguf_tensor(content, reader, &format!("{p}.{name}.weight"), device)?
                        .dequantize(device)?,
                )
            };
            layers.push(Layer {
                attn_norm: norm("attn_norm")?,
                mlp_norm: norm("ffn_norm")?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        // Tied embeddings share the quantized table with the output projection.
        let lm_head = if content.tensor_infos.contains_key("output.weight") {
            Linear::quantized(gguf_tensor(content, reader, "output.weight", device)?, None)?
        } else {
            Linear::new(
                candle_core::quantized::QMatMul::from_arc(embd.clone())?,
                None,
            )
        };
        Ok(Self::assemble(
            cfg,
            Embedding::Quantized(embd),
            layers,
            norm,
            lm_head,
            device,
        ))
    }

    pub(super) fn from_safetensors(
        hf: &HfConfig,
        files: &[PathBuf],
        device: &Device,
    ) -> Result<Self, ModelError> {
        if let Some(scaling) = &hf.rope_scaling {
            if !scaling.is_null() {
                return Err(ModelError::Config(format!(
                    "rope_scaling {scaling} is not supported"
                )));
            }
        }
        let head_dim = hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads);
        let cfg = LlamaConfig {
            hidden: hf.hidden_size,
            n_layers: hf.num_hidden_layers,
            n_heads: hf.num_attention_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim,
            vocab: hf.vocab_size,
            max_context: hf.max_position_embeddings,
            rms_eps: hf.rms_norm_eps as f32,
            rope_base: hf.rope_theta,
            rope_style: RopeStyle::Halves,
        };
        cfg.check()?;
        // SAFETY: the files are mapped read-only and must not change while the model lives,
        // which is how every safetensors loader works.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, device)? };
        let get =
            |vb: &VarBuilder, shape: (usize, usize), name: &str| -> Result<Tensor, ModelError> {
                if !vb.contains_tensor(name) {
                    return Err(ModelError::MissingTensor(format!("{}.{name}", vb.prefix())));
                }
                Ok(vb.get(shape, name)?)
            };
        let get1 = |vb: &VarBuilder, n: usize, name: &str| -> Result<Tensor, ModelError> {
            if !vb.contains_tensor(name) {
                return Err(ModelError::MissingTensor(format!("{}.{name}", vb.prefix())));
            }
            Ok(vb.get(n, name)?)
        };
        let m = vb.pp("model");
        let embed = get(&m, (cfg.vocab, cfg.hidden), "embed_tokens.weight")?;
        let norm = get1(&m, cfg.hidden, "norm.weight")?;
        let (q_dim, kv_dim) = (cfg.n_heads * head_dim, cfg.n_kv_heads * head_dim);
        let ffn = hf.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = m.pp(format!("layers.{i}"));
            let attn = l.pp("self_attn");
            let mlp = l.pp("mlp");
            let proj = |vb: &VarBuilder, name: &str, out: usize, inp: usize| {
                let w = get(vb, (out, inp), &format!("{name}.weight"))?;
                let bias_name = format!("{name}.bias");
                let b = if vb.contains_tensor(&bias_name) {
                    Some(vb.get(out, &bias_name)?)
                } else {
                    None
                };
                Ok::<_, ModelError>(Linear::dense(w, b))
            };
            layers.push(Layer {
                attn_norm: get1(&l, cfg.hidden, "input_layernorm.weight")?,
                q: proj(&attn, "q_proj", q_dim, cfg.hidden)?,
                k: proj(&attn, "k_proj", kv_dim, cfg.hidden)?,
                v: proj(&attn, "v_proj", kv_dim, cfg.hidden)?,
                o: proj(&attn, "o_proj", cfg.hidden, q_dim)?,
                mlp_norm: get1(&l, cfg.hidden, "post_attention_layernorm.weight")?,
                gate: proj(&mlp, "gate_proj", ffn, cfg.hidden)?,
                up: proj(&mlp, "up_proj", ffn, cfg.hidden)?,
                down: proj(&mlp, "down_proj", cfg.hidden, ffn)?,
            });
        }
        let lm_head = if hf.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
            Linear::dense(embed.clone(), None)
        } else {
            Linear::dense(get(&vb, (cfg.vocab, cfg.hidden), "lm_head.weight")?, None)
        };
        Ok(Self::assemble(
            cfg,
            Embedding::Dense(embed),
            layers,
            norm,
            lm_head,
            device,
        ))
    }

    fn assemble(
        cfg: LlamaConfig,
        embed: Embedding,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Linear,
        device: &Device,
    ) -> Self {
        let caches = SeqCaches::new(CacheShape {
            n_layers: cfg.n_layers,
            kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            max_context: cfg.max_context,
            device: device.clone(),
        });
        Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            caches,
            device: device.clone(),
        }
    }

    /// Tokens a sequence holds in its cache (0 when unknown).
    pub fn cached_len(&self, seq: SeqId) -> usize {
        self.caches.get(seq).map_or(0, |c| c.len())
    }

    /// Sequences holding a cache.
    pub fn live_sequences(&self) -> usize {
        self.caches.live()
    }

    fn run(&mut self, plan: &StepPlan, logits: &mut Vec<f32>) -> Result<(), ModelError> {
        let cfg = &self.cfg;
        let n = plan.ids.len();
        let (cos, sin) = rope_cos_sin(&plan.positions, cfg.head_dim, cfg.rope_base, &self.device)?;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let mut x = self.embed.lookup(&plan.ids, &self.device)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let q = layer
                .q
                .forward(&h)?
                .reshape((n, cfg.n_heads, cfg.head_dim))?;
            let k = layer
                .k
                .forward(&h)?
                .reshape((n, cfg.n_kv_heads, cfg.head_dim))?;
            let v = layer
                .v
                .forward(&h)?
                .reshape((n, cfg.n_kv_heads, cfg.head_dim))?;
            let q = apply_rope(&q, &cos, &sin, cfg.rope_style)?;
            let k = apply_rope(&k, &cos, &sin, cfg.rope_style)?;
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
                    None,
                )?);
            }
            let attn = if outs.len() == 1 {
                outs.pop().expect("one output")
            } else {
                Tensor::cat(&outs, 0)?
            };
            x = (x + layer.o.forward(&attn)?)?;
            let h = rms_norm(&x, &layer.mlp_norm, cfg.rms_eps)?;
            let gated = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&gated)?)?;
        }
        let last = Tensor::new(plan.last_rows(), &self.device)?;
        let x = x.index_select(&last, 0)?;
        let x = rms_norm(&x, &self.norm, cfg.rms_eps)?;
        let out = self.lm_head.forward(&x)?;
        write_logits(&out, logits)
    }
}

/// Copies `[batch, vocab]` logits into the caller's buffer.
pub(super) fn write_logits(out: &Tensor, logits: &mut Vec<f32>) -> Result<(), ModelError> {
    let out = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    logits.clear();
    logits.extend_from_slice(&out);
    Ok(())
}

impl BatchModel for Llama {
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
