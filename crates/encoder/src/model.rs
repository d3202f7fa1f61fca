//! The forward pass: a batch of token sequences packed end to end (no padding anywhere), the
//! BERT / RoBERTa post-norm encoder over all their tokens at once, then each sequence pooled
//! (embedders) or classified (cross-encoders).
//!
//! Every matrix product runs once over the whole packed batch ([`kernels::gemm`]); attention runs
//! per sequence and head, so a token only ever sees its own sequence. No step mixes rows, and
//! the kernels keep each row's arithmetic independent of the batch, so a text's result is
//! bit-identical alone and in any batch.

use kernels::Threads;

use crate::config::{EmbeddingHead, EncoderSpec, Head, Pooling};
use crate::ops;
use crate::text::Encoded;
use crate::weights::{self, Linear, Weights};
use crate::{EncoderError, Precision};

/// A loaded encoder: its settings and weights. Stateless between calls.
pub struct Model {
    spec: EncoderSpec,
    precision: Precision,
    w: Weights,
}

/// Buffers reused across forward passes (grown to the largest batch seen).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
}

/// A raw pointer that pool tasks share; each task writes its own disjoint rows.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows per element-wise task (activation, layer norm).
const ROWS_PER_TASK: usize = 16;

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl Model {
    /// Loads the weights; [`Precision::Auto`] becomes what [`Precision::resolve`] says.
    pub fn load(spec: EncoderSpec, precision: Precision) -> Result<Self, EncoderError> {
        let precision = precision.resolve();
        let w = weights::load(&spec, precision)?;
        Ok(Self { spec, precision, w })
    }

    /// The precision the matrix products run at (never `Auto`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| l.weight_bytes();
        let e = &self.w.embeddings;
        let mut n = (e.word.len() + e.position.len() + e.token_type.len()) * 4;
        for l in &self.w.layers {
            n += lin(&l.qkv) + lin(&l.attn_out) + lin(&l.up) + lin(&l.down);
        }
        n
    }

    /// One vector per sequence: pooled, through any Dense modules, normalized if the model says
    /// so. Panics if the model is a cross-encoder.
    pub fn embed(&self, seqs: &[&Encoded], threads: &Threads, s: &mut Scratch) -> Vec<Vec<f32>> {
        let Head::Embedding(head) = &self.spec.head else {
            panic!("embed called on a cross-encoder");
        };
        let h = self.spec.config.hidden;
        self.hidden_states(seqs, threads, s);
        let mut pooled = Vec::with_capacity(seqs.len() * h);
        let mut start = 0;
        for seq in seqs {
            let n = seq.ids.len();
            let tokens = &s.x[start * h..(start + n) * h];
            let from = if head.include_prompt {
                0
            } else {
                seq.prompt_tokens.min(n.saturating_sub(1))
            };
            pooled.extend(pool(head, tokens, h, from));
            start += n;
        }
        let mut width = h;
        let mut cur = pooled;
        for d in &self.w.dense {
            let out_w = d.linear.out_features();
            let mut out = vec![0f32; seqs.len() * out_w];
            d.linear.apply(&cur, seqs.len(), &mut out, threads);
            if d.tanh {
                out.iter_mut().for_each(|v| *v = ops::tanh_scalar(*v));
            }
            cur = out;
            width = out_w;
        }
        cur.chunks_exact(width.max(1))
            .map(|v| {
                let mut v = v.to_vec();
                if head.normalize {
                    normalize(&mut v);
                }
                v
            })
            .collect()
    }

    /// One relevance logit per sequence (a query and document pair). Panics if the model is an
    /// embedder.
    pub fn score(&self, seqs: &[&Encoded], threads: &Threads, s: &mut Scratch) -> Vec<f32> {
        let c = self
            .w
            .classifier
            .as_ref()
            .expect("score called on an embedding model");
        let h = self.spec.config.hidden;
        self.hidden_states(seqs, threads, s);
        let mut first = Vec::with_capacity(seqs.len() * h);
        let mut start = 0;
        for seq in seqs {
            first.extend_from_slice(&s.x[start * h..(start + 1) * h]);
            start += seq.ids.len();
        }
        let b = seqs.len();
        let mut pooled = vec![0f32; b * h];
        c.dense.apply(&first, b, &mut pooled, threads);
        pooled.iter_mut().for_each(|v| *v = ops::tanh_scalar(*v));
        let mut logits = vec![0f32; b];
        c.out.apply(&pooled, b, &mut logits, threads);
        logits
    }

    /// Runs the encoder; the final hidden states of all tokens, packed, are left in `s.x`.
    fn hidden_states(&self, seqs: &[&Encoded], threads: &Threads, s: &mut Scratch) {
        let cfg = &self.spec.config;
        let (h, f) = (cfg.hidden, cfg.intermediate);
        let total: usize = seqs.iter().map(|q| q.ids.len()).sum();
        for q in seqs {
            assert!(
                !q.ids.is_empty() && q.ids.len() <= self.spec.max_tokens,
                "a sequence of {} tokens (1 to {} allowed)",
                q.ids.len(),
                self.spec.max_tokens
            );
        }
        let x = grow(&mut s.x, total * h);
        self.embed_tokens(seqs, x);
        let e = &self.w.embeddings.norm;
        par_rows(threads, x, h, |rows| {
            ops::add_layer_norm(rows, &[], &e.g, &e.b, cfg.layer_norm_eps)
        });
        let qkv = grow(&mut s.qkv, total * 3 * h);
        let ctx = grow(&mut s.ctx, total * h);
        let tmp = grow(&mut s.tmp, total * h);
        let ffn = grow(&mut s.ffn, total * f);
        let x = &mut s.x[..total * h];
        for layer in &self.w.layers {
            layer.qkv.apply(x, total, qkv, threads);
            self.attention(seqs, qkv, ctx, threads);
            layer.attn_out.apply(ctx, total, tmp, threads);
            let n = &layer.ln_attn;
            add_norm_rows(threads, x, tmp, h, &n.g, &n.b, cfg.layer_norm_eps);
            layer.up.apply(x, total, ffn, threads);
            par_rows(threads, ffn, f, |rows| ops::activate(cfg.activation, rows));
            layer.down.apply(ffn, total, tmp, threads);
            let n = &layer.ln_ffn;
            add_norm_rows(threads, x, tmp, h, &n.g, &n.b, cfg.layer_norm_eps);
        }
    }

    /// Word + position + token type embeddings of every token.
    fn embed_tokens(&self, seqs: &[&Encoded], x: &mut [f32]) {
        let cfg = &self.spec.config;
        let h = cfg.hidden;
        let e = &self.w.embeddings;
        let mut t = 0;
        for q in seqs {
            for (p, (&id, &ty)) in q.ids.iter().zip(&q.type_ids).enumerate() {
                let row = &mut x[t * h..(t + 1) * h];
                let id = (id as usize).min(cfg.vocab_size - 1);
                let ty = (ty as usize).min(cfg.type_vocab_size - 1);
                let pos = p + cfg.position_offset;
                let w = &e.word[id * h..(id + 1) * h];
                let pe = &e.position[pos * h..(pos + 1) * h];
                let te = &e.token_type[ty * h..(ty + 1) * h];
                for l in 0..h {
                    row[l] = w[l] + te[l] + pe[l];
                }
                t += 1;
            }
        }
    }

    /// Self-attention of every sequence and head, one pool task per (sequence, head).
    fn attention(&self, seqs: &[&Encoded], qkv: &[f32], ctx: &mut [f32], threads: &Threads) {
        let cfg = &self.spec.config;
        let (h, heads, d) = (cfg.hidden, cfg.heads, cfg.head_dim());
        let scale = 1.0 / (d as f32).sqrt();
        let mut starts = Vec::with_capacity(seqs.len());
        let mut t = 0;
        for q in seqs {
            starts.push((t, q.ids.len()));
            t += q.ids.len();
        }
        let out = SharedMut(ctx.as_mut_ptr());
        threads.run(seqs.len() * heads, &|task| {
            let (si, head) = (task / heads, task % heads);
            let (t0, n) = starts[si];
            let base = &qkv[t0 * 3 * h..(t0 + n) * 3 * h];
            let (q, k, v) = (
                &base[head * d..],
                &base[h + head * d..],
                &base[2 * h + head * d..],
            );
            let mut scores = Vec::new();
            // SAFETY: this task alone writes columns [head*d, (head+1)*d) of rows t0..t0+n.
            unsafe {
                let o = out.get().add(t0 * h + head * d);
                ops::attention_head(q, k, v, 3 * h, o, h, n, d, scale, &mut scores);
            }
        });
    }
}

/// Runs `f` over chunks of whole rows of `x` (row length `d`) across the pool.
fn par_rows(threads: &Threads, x: &mut [f32], d: usize, f: impl Fn(&mut [f32]) + Sync) {
    let rows = x.len() / d;
    let p = SharedMut(x.as_mut_ptr());
    threads.run(rows.div_ceil(ROWS_PER_TASK), &|t| {
        let r0 = t * ROWS_PER_TASK;
        let r1 = (r0 + ROWS_PER_TASK).min(rows);
        // SAFETY: task t owns rows [r0, r1).
        let chunk = unsafe { std::slice::from_raw_parts_mut(p.get().add(r0 * d), (r1 - r0) * d) };
        f(chunk);
    });
}

/// `x = layer_norm(x + residual)` row by row across the pool.
fn add_norm_rows(
    threads: &Threads,
    x: &mut [f32],
    residual: &[f32],
    d: usize,
    g: &[f32],
    b: &[f32],
    eps: f32,
) {
    let rows = x.len() / d;
    let p = SharedMut(x.as_mut_ptr());
    threads.run(rows.div_ceil(ROWS_PER_TASK), &|t| {
        let r0 = t * ROWS_PER_TASK;
        let r1 = (r0 + ROWS_PER_TASK).min(rows);
        // SAFETY: task t owns rows [r0, r1).
        let chunk = unsafe { std::slice::from_raw_parts_mut(p.get().add(r0 * d), (r1 - r0) * d) };
        ops::add_layer_norm(chunk, &residual[r0 * d..r1 * d], g, b, eps);
    });
}

/// One sequence's token vectors (`tokens`, `n x h`) pooled, skipping the first `from` tokens.
fn pool(head: &EmbeddingHead, tokens: &[f32], h: usize, from: usize) -> Vec<f32> {
    let rows: Vec<&[f32]> = tokens.chunks_exact(h).skip(from).collect();
    let n = rows.len().max(1) as f32;
    match head.pooling {
        Pooling::Cls => tokens[..h].to_vec(),
        Pooling::LastToken => tokens[tokens.len() - h..].to_vec(),
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let mut sum = vec![0f32; h];
            for r in &rows {
                for (s, &v) in sum.iter_mut().zip(*r) {
                    *s += v;
                }
            }
            let div = if head.pooling == Pooling::Mean {
                n
            } else {
                n.sqrt()
            };
            sum.iter_mut().for_each(|s| *s /= div);
            sum
        }
        Pooling::Max => {
            let mut m = vec![f32::NEG_INFINITY; h];
            for r in &rows {
                for (s, &v) in m.iter_mut().zip(*r) {
                    *s = s.max(v);
                }
            }
            m
        }
    }
}

/// Scales `v` to unit length (as `torch.nn.functional.normalize`, with its 1e-12 floor).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
