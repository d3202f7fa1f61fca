//! The CPU backend: turns a [`ModelDesc`] and its weights into a [`Transformer`], the batched
//! forward pass over plain f32 buffers and the `kernels` crate's quantized matmuls, with
//! f16 KV caches in the blocks of a shared pool.

mod kv_cache;
mod ops;
mod proj;
mod transformer;

pub use transformer::Transformer;

use super::desc::{Linear, ModelDesc};
use super::source::{RawMatrix, WeightSource};
use super::{LoadOptions, ModelError};
use proj::Proj;
use transformer::{Layer, Weights};

/// Reads every weight `desc` names from `src` and builds the model.
pub(super) fn build(
    desc: ModelDesc,
    src: &mut dyn WeightSource,
    opts: &LoadOptions,
) -> Result<Transformer, ModelError> {
    desc.check()?;
    let mut layers = Vec::with_capacity(desc.layers.len());
    for l in &desc.layers {
        let mut norm = |name: &Option<String>| name.as_deref().map(|n| src.vector(n)).transpose();
        let q_norm = norm(&l.q_norm)?;
        let k_norm = norm(&l.k_norm)?;
        let post_attn_norm = norm(&l.post_attn_norm)?;
        let mlp_norm = norm(&l.mlp_norm)?;
        let post_mlp_norm = norm(&l.post_mlp_norm)?;
        layers.push(Layer {
            attn_norm: src.vector(&l.attn_norm)?,
            qkv: fused(src, &[&l.q, &l.k, &l.v])?,
            q_norm,
            k_norm,
            o: fused(src, &[&l.o])?,
            post_attn_norm,
            mlp_norm,
            gate_up: fused(src, &[&l.gate, &l.up])?,
            down: fused(src, &[&l.down])?,
            post_mlp_norm,
            window: l.attention.window,
            rope: l.attention.rope,
        });
    }
    let norm = src.vector(&desc.final_norm)?;
    let lm_head = match &desc.lm_head {
        Some(name) => Some(src.matrix(name)?.into_qmatrix()?),
        None => None,
    };
    let embed = src.matrix(&desc.embed)?.into_qmatrix()?;
    Transformer::new(
        Weights {
            desc,
            embed,
            layers,
            norm,
            lm_head,
        },
        opts,
    )
}

/// Projections that share an input, outputs side by side, as one [`Proj`]. Missing biases of
/// some parts are zeros; no bias at all is none.
fn fused(src: &mut dyn WeightSource, parts: &[&Linear]) -> Result<Proj, ModelError> {
    let mut mats: Vec<RawMatrix> = Vec::with_capacity(parts.len());
    for p in parts {
        mats.push(src.matrix(&p.weight)?);
    }
    let bias = if parts.iter().any(|p| p.bias.is_some()) {
        let mut all = Vec::new();
        for (p, m) in parts.iter().zip(&mats) {
            match &p.bias {
                Some(name) => all.extend(src.vector(name)?),
                None => all.extend(std::iter::repeat_n(0.0, m.rows)),
            }
        }
        Some(all)
    } else {
        None
    };
    Proj::fuse(mats, bias)
}
