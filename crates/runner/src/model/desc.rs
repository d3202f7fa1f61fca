//! What a model is, as plain data: its shape, the structure of its blocks and the name of every
//! weight in its file. The architecture files (`arch/`) build a [`ModelDesc`] from GGUF metadata
//! or `config.json`; a backend (`cpu/` today) reads the named weights and runs the description.
//! Nothing here computes, and nothing here depends on a device, so a second backend reuses the
//! descriptions as they are.

use super::ModelError;

/// How a model pairs the dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama-architecture GGUF files (their Q/K rows are permuted for it) and
    /// Cohere's models in both formats.
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face llama-family checkpoints, qwen2/qwen3 and gemma3 GGUF.
    Halves,
}

/// The gate's nonlinearity in a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (llama family, Qwen, Cohere).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

/// The normalisation every norm of the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / sqrt(mean(x^2) + eps) * w`.
    Rms,
    /// `(x - mean) / sqrt(var + eps) * w`, without bias (Cohere).
    Layer,
}

/// How attention and MLP share a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `x += attn(norm1(x)); x += mlp(norm2(x))` (llama, Qwen, Gemma).
    Sequential,
    /// `h = norm(x); x = x + attn(h) + mlp(h)`: one norm, both branches on it (Cohere).
    Parallel,
}

/// A projection's weight and optional bias, by tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    pub weight: String,
    pub bias: Option<String>,
}

impl Linear {
    pub fn new(weight: impl Into<String>) -> Self {
        Self {
            weight: weight.into(),
            bias: None,
        }
    }
}

/// How one layer attends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attention {
    /// Some(w): key j is visible from query p when `p - j < w` (sliding window); None: every
    /// earlier key.
    pub window: Option<usize>,
    /// Index into [`ModelDesc::rope_bases`]; None for layers without positional encoding
    /// (Cohere2's global layers).
    pub rope: Option<usize>,
}

/// One transformer block: its structure and the names of its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerDesc {
    pub attn_norm: String,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Per-head norm of queries and keys before RoPE. The tensor holds `head_dim` values shared
    /// by every head (Qwen3, Gemma) or `heads * head_dim`, one row per head (Cohere).
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
    /// Norm of the attention output before the residual add (Gemma).
    pub post_attn_norm: Option<String>,
    /// The MLP's own input norm: Some in sequential blocks, None in parallel ones.
    pub mlp_norm: Option<String>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub post_mlp_norm: Option<String>,
    pub attention: Attention,
}

/// A whole decoder-only model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDesc {
    /// The architecture as the file names it (`general.architecture` or `model_type`).
    pub architecture: String,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// The longest context (prompt + output) the model supports.
    pub max_context: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub block: BlockKind,
    pub activation: Activation,
    pub rope_style: RopeStyle,
    /// RoPE bases; each layer names one by index.
    pub rope_bases: Vec<f32>,
    /// Gemma multiplies the embedding by sqrt(hidden).
    pub embed_scale: Option<f32>,
    /// Cohere multiplies the output logits by this.
    pub logit_scale: Option<f32>,
    /// `cap * tanh(logit / cap)` on the output logits (Gemma).
    pub final_softcap: Option<f32>,
    /// `[vocab, hidden]`.
    pub embed: String,
    pub final_norm: String,
    /// None when the output projection is the embedding (tied).
    pub lm_head: Option<String>,
    pub layers: Vec<LayerDesc>,
}

impl ModelDesc {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks that the description is one a backend can run.
    pub fn check(&self) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Config(what));
        if self.hidden == 0 || self.vocab == 0 || self.layers.is_empty() {
            return bad(format!(
                "hidden size {}, vocabulary {} and {} layers: none may be zero",
                self.hidden,
                self.vocab,
                self.layers.len()
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} query heads cannot share {} KV heads evenly",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.max_context == 0 {
            return bad(format!(
                "head dim {} / context {} unusable",
                self.head_dim, self.max_context
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(r) = l.attention.rope {
                if r >= self.rope_bases.len() {
                    return bad(format!(
                        "layer {i} names RoPE base {r} of {}",
                        self.rope_bases.len()
                    ));
                }
            }
            if l.attention.window == Some(0) {
                return bad(format!("layer {i} has a sliding window of 0 tokens"));
            }
            let post_norms = l.post_attn_norm.is_some() || l.post_mlp_norm.is_some();
            match self.block {
                BlockKind::Sequential if l.mlp_norm.is_none() => {
                    return bad(format!("layer {i} of a sequential block has no MLP norm"))
                }
                BlockKind::Parallel if l.mlp_norm.is_some() || post_norms => {
                    return bad(format!(
                        "layer {i} of a parallel block has its own MLP or post norms"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every tensor the description names, for backends that load by name.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names = vec![self.embed.as_str(), self.final_norm.as_str()];
        names.extend(self.lm_head.as_deref());
        for l in &self.layers {
            names.push(&l.attn_norm);
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                names.push(&lin.weight);
                names.extend(lin.bias.as_deref());
            }
            for norm in [
                &l.q_norm,
                &l.k_norm,
                &l.post_attn_norm,
                &l.mlp_norm,
                &l.post_mlp_norm,
            ] {
                names.extend(norm.as_deref());
            }
        }
        names
    }
}
