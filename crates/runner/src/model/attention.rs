//! Pieces shared by the architectures: linear layers over quantized or dense weights, the token
//! embedding, RoPE by absolute position, and attention of one sequence against its cache.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::kv_cache::KvCache;

/// `y = x W^T (+ b)`, with W quantized (GGUF) or dense (safetensors).
#[derive(Debug)]
pub(super) struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: QMatMul, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn quantized(weight: QTensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        Ok(Self::new(QMatMul::from_qtensor(weight)?, bias))
    }

    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::new(QMatMul::Tensor(weight), bias)
    }

    /// `x`: `[n, in]` -> `[n, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// The token embedding. A quantized table stays quantized: rows are dequantized on lookup, which
/// saves the f32 copy of the whole table (113 MB for SmolLM2, 671 MB for Gemma 3 270M).
#[derive(Debug)]
pub(super) enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    /// `[ids.len(), hidden]` in f32.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, device)?;
        match self {
            Self::Quantized(q) => q.embedding(&ids),
            Self::Dense(t) => t.index_select(&ids, 0),
        }
    }
}

/// How a model pairs the dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama-architecture GGUF files (their Q/K rows are permuted for it).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face checkpoints, qwen2 and gemma3 GGUF files.
    Halves,
}

/// cos and sin for every token of a step, `[n, 1, head_dim / 2]` each. Computed per step from
/// the positions rather than from a table sized to the whole context.
pub(super) fn rope_cos_sin(
    positions: &[usize],
    head_dim: usize,
    base: f32,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1f32 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = (positions.len(), 1, half);
    Ok((
        Tensor::from_vec(cos, shape, device)?,
        Tensor::from_vec(sin, shape, device)?,
    ))
}

/// Rotates `x` (`[n, heads, head_dim]`), row t by the angle of its own position.
pub(super) fn apply_rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    style: RopeStyle,
) -> candle_core::Result<Tensor> {
    let (n, heads, d) = x.dims3()?;
    // Each token is its own "batch" of one position, so each gets its own cos/sin row.
    let x = x.reshape((n, heads, 1, d))?.contiguous()?;
    let y = match style {
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
        RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, cos, sin)?,
    };
    y.reshape((n, heads, d))
}

/// Attention of one sequence's new tokens against its cache.
///
/// `q`: `[len, heads, d]`; `k`, `v`: `[len, kv_heads, d]` for positions `start..start + len`.
/// Writes `k`, `v` into the cache, then attends causally (and within `window` positions when
/// set: key j is visible from query p when `p - j < window`, as llama.cpp does).
/// Returns `[len, heads * d]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut KvCache,
    layer: usize,
    start: usize,
    scale: f64,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (len, heads, d) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let k = k.transpose(0, 1)?.contiguous()?;
    let v = v.transpose(0, 1)?.contiguous()?;
    let (k_all, v_all) = cache.write(layer, &k, &v)?;
    let total = start + len;
    // Keys before the window of the chunk's first query are invisible to every query.
    let kv_start = window.map_or(0, |w| (start + 1).saturating_sub(w));
    let kv_len = total - kv_start;
    let k_all = k_all.narrow(1, kv_start, kv_len)?;
    let v_all = v_all.narrow(1, kv_start, kv_len)?;
    // Query heads that share a KV head are stacked as extra rows: no repeated K/V copies.
    let q = q
        .transpose(0, 1)?
        .contiguous()?
        .reshape((kv_heads, group * len, d))?;
    let scores = (q.matmul(&k_all.t()?)? * scale)?;
    let scores = if len > 1 {
        let mask = attention_mask(len, start, kv_start, window, q.device())?;
        scores
            .reshape((kv_heads, group, len, kv_len))?
            .broadcast_add(&mask)?
            .reshape((kv_heads, group * len, kv_len))?
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v_all)?;
    out.reshape((heads, len, d))?
        .transpose(0, 1)?
        .reshape((len, heads * d))
}

/// `[len, kv_len]`: 0 where query `start + t` may see key `kv_start + j`, -inf elsewhere.
fn attention_mask(
    len: usize,
    start: usize,
    kv_start: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let kv_len = start + len - kv_start;
    let mut mask = Vec::with_capacity(len * kv_len);
    for t in 0..len {
        let p = start + t;
        for j in 0..kv_len {
            let key = kv_start + j;
            let visible = key <= p && window.is_none_or(|w| p - key < w);
            mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_vec(mask, (len, kv_len), device)
}

/// RMS norm over the last dimension.
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps)
}
