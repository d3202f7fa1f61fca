//! The decoder-only transformer every supported architecture runs on the CPU: one batched forward
//! pass per step over plain f32 buffers, quantized matmuls from the `kernels` crate.
//!
//! A step flattens the new tokens of every item (decode tokens and prefill chunks alike) into
//! `n` rows. Each weight matrix runs one matmul over all `n` rows, so it is read from memory once
//! per step. Attention runs per sequence against its own cache, split over (sequence, KV head,
//! block of query rows, chunk of keys) across the same thread pool, then the chunks of each
//! block are merged. Only each item's last row goes through the
//! final norm and the output projection. The architectures differ only in the switches of their
//! [`ModelDesc`] and the optional norms of each [`Layer`].

use std::sync::atomic::{AtomicUsize, Ordering};

use kernels::{QMatrix, Scratch, Threads};

use super::super::desc::{Activation, BlockKind, ModelDesc};
use super::super::kv_pool::PoolUsage;
use super::super::{BatchItem, BatchModel, LoadOptions, ModelError, SeqId};
use super::kv_cache::{CacheShape, SeqCaches, StepPlan};
use super::ops::{
    self, AttnRows, ChunkKv, RopeTable, Scores, ATTN_ROWS, CHUNK_BLOCKS, KEY_BLOCK, KEY_CHUNK,
};
use super::proj::Proj;

/// One transformer block's weights.
pub(super) struct Layer {
    pub attn_norm: Vec<f32>,
    /// q | k | v outputs side by side.
    pub qkv: Proj,
    /// Norm of each query / key head before RoPE: `head_dim` shared weights or one row per head.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: Proj,
    /// Gemma: norm of the attention output before the residual add.
    pub post_attn_norm: Option<Vec<f32>>,
    /// None in parallel blocks, whose MLP reads the attention's input norm.
    pub mlp_norm: Option<Vec<f32>>,
    /// gate | up outputs side by side.
    pub gate_up: Proj,
    pub down: Proj,
    pub post_mlp_norm: Option<Vec<f32>>,
    /// Some(w) on sliding-window layers: key j is visible from query p when `p - j < w`.
    pub window: Option<usize>,
    /// Index into the RoPE tables; None: no positional encoding.
    pub rope: Option<usize>,
}

/// The weights of a whole model, with the description they were read for.
pub(super) struct Weights {
    pub desc: ModelDesc,
    /// `[vocab, hidden]`; rows are dequantized on lookup, never the whole table.
    pub embed: QMatrix,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// None when the output projection is the embedding (tied).
    pub lm_head: Option<QMatrix>,
}

impl Weights {
    /// Checks that every weight has the shape the description implies.
    pub fn check(&self) -> Result<(), ModelError> {
        let a = &self.desc;
        a.check()?;
        let shape = |what: &str, p: &Proj, out: usize, inp: usize| {
            if p.out_features() == out && p.in_features() == inp {
                Ok(())
            } else {
                Err(ModelError::Config(format!(
                    "{what} is [{} x {}], expected [{out} x {inp}]",
                    p.out_features(),
                    p.in_features()
                )))
            }
        };
        let norm = |what: &str, w: Option<&Vec<f32>>, allowed: &[usize]| match w {
            Some(w) if !allowed.contains(&w.len()) => Err(ModelError::Config(format!(
                "{what} has {} weights, expected {}",
                w.len(),
                allowed
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
            _ => Ok(()),
        };
        if self.embed.rows() != a.vocab || self.embed.cols() != a.hidden {
            return Err(ModelError::Config(format!(
                "token embedding is [{} x {}], expected [{} x {}]",
                self.embed.rows(),
                self.embed.cols(),
                a.vocab,
                a.hidden
            )));
        }
        if let Some(h) = &self.lm_head {
            if h.rows() != a.vocab || h.cols() != a.hidden {
                return Err(ModelError::Config(format!(
                    "output projection is [{} x {}], expected [{} x {}]",
                    h.rows(),
                    h.cols(),
                    a.vocab,
                    a.hidden
                )));
            }
        }
        norm("final norm", Some(&self.norm), &[a.hidden])?;
        let hd = a.head_dim;
        for (i, l) in self.layers.iter().enumerate() {
            shape(
                &format!("layer {i} qkv"),
                &l.qkv,
                a.q_dim() + 2 * a.kv_dim(),
                a.hidden,
            )?;
            shape(&format!("layer {i} output"), &l.o, a.hidden, a.q_dim())?;
            let ffn = l.down.in_features();
            shape(&format!("layer {i} gate|up"), &l.gate_up, 2 * ffn, a.hidden)?;
            shape(&format!("layer {i} down"), &l.down, a.hidden, ffn)?;
            for (what, w) in [
                ("attention norm", Some(&l.attn_norm)),
                ("post-attention norm", l.post_attn_norm.as_ref()),
                ("MLP norm", l.mlp_norm.as_ref()),
                ("post-MLP norm", l.post_mlp_norm.as_ref()),
            ] {
                norm(&format!("layer {i} {what}"), w, &[a.hidden])?;
            }
            norm(
                &format!("layer {i} query norm"),
                l.q_norm.as_ref(),
                &[hd, a.q_dim()],
            )?;
            norm(
                &format!("layer {i} key norm"),
                l.k_norm.as_ref(),
                &[hd, a.kv_dim()],
            )?;
        }
        Ok(())
    }
}

/// Step buffers, grown to the largest step seen and reused.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn_out: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    tmp: Vec<f32>,
    last: Vec<f32>,
    /// Attention partial results, one slot of `ATTN_ROWS` rows per item.
    partials: Vec<f32>,
    attn: AttnPlan,
}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// A model with the KV caches of all its live sequences, run on the CPU.
pub struct Transformer {
    w: Weights,
    caches: SeqCaches,
    rope: Vec<RopeTable>,
    threads: Threads,
    scratch: Scratch,
    bufs: Buffers,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("architecture", &self.w.desc.architecture)
            .field("layers", &self.w.layers.len())
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Transformer {
    pub(super) fn new(w: Weights, opts: &LoadOptions) -> Result<Self, ModelError> {
        w.check()?;
        let a = &w.desc;
        let shape = CacheShape {
            n_layers: w.layers.len(),
            kv_heads: a.n_kv_heads,
            head_dim: a.head_dim,
            max_context: a.max_context,
        };
        let budget = opts
            .kv
            .resolve(shape.bytes_per_token(), a.max_context, KEY_BLOCK)?;
        tracing::info!(
            "KV cache: {} MiB, {} blocks of {KEY_BLOCK} tokens ({} tokens, {:.1} KiB per token, \
             {:.1} full {}-token contexts; {}), prefix cache {}",
            budget.bytes >> 20,
            budget.blocks,
            budget.blocks * KEY_BLOCK,
            shape.bytes_per_token() as f64 / 1024.0,
            (budget.blocks * KEY_BLOCK) as f64 / budget.context as f64,
            budget.context,
            budget.origin,
            if opts.kv.prefix_cache { "on" } else { "off" },
        );
        let caches = SeqCaches::new(shape, budget.blocks, opts.kv.prefix_cache);
        let rope = a
            .rope_bases
            .iter()
            .map(|&base| RopeTable::new(a.head_dim, base))
            .collect();
        let threads = Threads::new(opts.threads());
        Ok(Self {
            w,
            caches,
            rope,
            threads,
            scratch: Scratch::default(),
            bufs: Buffers::default(),
        })
    }

    /// Tokens a sequence holds in its cache (0 when unknown).
    pub fn cached_len(&self, seq: SeqId) -> usize {
        self.caches.len(seq)
    }

    /// Sequences holding a cache.
    pub fn live_sequences(&self) -> usize {
        self.caches.live()
    }

    /// Threads the forward pass runs on.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    fn run(&mut self, plan: &StepPlan, logits: &mut Vec<f32>) -> Result<(), ModelError> {
        let Self {
            w,
            caches,
            rope,
            threads,
            scratch,
            bufs,
        } = self;
        let a = &w.desc;
        let n = plan.ids.len();
        let (hidden, hd) = (a.hidden, a.head_dim);
        let (q_dim, kv_dim) = (a.q_dim(), a.kv_dim());
        let qkv_dim = q_dim + 2 * kv_dim;
        let group = a.n_heads / a.n_kv_heads;
        for table in rope.iter_mut() {
            table.ensure(plan.max_position());
        }
        bufs.attn.clear();

        let x = grow(&mut bufs.x, n * hidden);
        for (row, &id) in x.chunks_exact_mut(hidden).zip(&plan.ids) {
            w.embed.dequantize_row(id as usize, row);
            if let Some(s) = a.embed_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, layer) in w.layers.iter().enumerate() {
            let h = grow(&mut bufs.h, n * hidden);
            ops::norm(a.norm, x, &layer.attn_norm, a.norm_eps, h);
            let qkv = grow(&mut bufs.qkv, n * qkv_dim);
            layer
                .qkv
                .forward(h, n, qkv, &mut bufs.tmp, scratch, threads);
            let table = layer.rope.map(|r| &rope[r]);
            for (row, &pos) in qkv.chunks_exact_mut(qkv_dim).zip(&plan.positions) {
                let (q, rest) = row.split_at_mut(q_dim);
                let k = &mut rest[..kv_dim];
                if let Some(norm) = &layer.q_norm {
                    ops::norm_heads(a.norm, q, norm, hd, a.norm_eps);
                }
                if let Some(norm) = &layer.k_norm {
                    ops::norm_heads(a.norm, k, norm, hd, a.norm_eps);
                }
                if let Some(table) = table {
                    table.apply(q, hd, pos, a.rope_style);
                    table.apply(k, hd, pos, a.rope_style);
                }
                q.iter_mut().for_each(|v| *v *= scale);
            }
            for span in &plan.spans {
                for t in 0..span.len {
                    let row = &qkv[(span.offset + t) * qkv_dim..][..qkv_dim];
                    let (k, v) = row[q_dim..].split_at(kv_dim);
                    caches.write(span.slot, li, span.start + t, k, v);
                }
            }

            if bufs.attn.window != Some(layer.window) {
                bufs.attn.build(plan, group, a.n_kv_heads, layer.window);
            }
            let attn = grow(&mut bufs.attn_out, n * q_dim);
            attention(
                &bufs.attn,
                &mut bufs.partials,
                plan,
                &*caches,
                li,
                &*qkv,
                (qkv_dim, q_dim, hd, group),
                attn,
                threads,
            );

            let proj = grow(&mut bufs.proj, n * hidden);
            layer
                .o
                .forward(attn, n, proj, &mut bufs.tmp, scratch, threads);
            if let Some(norm) = &layer.post_attn_norm {
                ops::norm_inplace(a.norm, proj, norm, a.norm_eps);
            }
            add(x, proj);
            let h = grow(&mut bufs.h, n * hidden);
            match (&layer.mlp_norm, a.block) {
                (Some(norm), _) => ops::norm(a.norm, x, norm, a.norm_eps, h),
                // Parallel blocks: the MLP reads the attention's input norm, still in `h`.
                (None, BlockKind::Parallel) => {}
                (None, BlockKind::Sequential) => unreachable!("checked by ModelDesc::check"),
            }
            let ffn = layer.down.in_features();
            let gu = grow(&mut bufs.gate_up, n * 2 * ffn);
            layer
                .gate_up
                .forward(h, n, gu, &mut bufs.tmp, scratch, threads);
            let act = grow(&mut bufs.act, n * ffn);
            gated_parallel(threads, a.activation, gu, ffn, act);
            layer
                .down
                .forward(act, n, proj, &mut bufs.tmp, scratch, threads);
            if let Some(norm) = &layer.post_mlp_norm {
                ops::norm_inplace(a.norm, proj, norm, a.norm_eps);
            }
            add(x, proj);
        }

        let b = plan.logit_row_count();
        let last = grow(&mut bufs.last, b * hidden);
        for (dst, row) in last.chunks_exact_mut(hidden).zip(plan.logit_rows()) {
            ops::norm(
                a.norm,
                &x[row * hidden..(row + 1) * hidden],
                &w.norm,
                a.norm_eps,
                dst,
            );
        }
        logits.clear();
        logits.resize(b * a.vocab, 0.0);
        let head = w.lm_head.as_ref().unwrap_or(&w.embed);
        kernels::matmul(head, last, b, logits, scratch, threads);
        if let Some(scale) = a.logit_scale {
            logits.iter_mut().for_each(|v| *v *= scale);
        }
        if let Some(cap) = a.final_softcap {
            logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        Ok(())
    }
}

/// The output buffer of attention, shared by the tasks (each writes its own rows and heads).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// `len` values from element `at`.
    ///
    /// # Safety
    /// The range must lie in the buffer and no other live slice may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// One unit of attention work: rows `r0..r0 + rows` of one item of the step and one KV head,
/// against the keys of one chunk. Rows of a (sequence, KV head) run position-major over its
/// query heads: row r is query head `kvh * group + r % group` at chunk position `r / group`.
#[derive(Debug, Clone, Copy)]
struct AttnItem {
    span: u32,
    kvh: u32,
    r0: u32,
    rows: u32,
    chunk: u32,
}

/// The attention work of a step for one window setting: the items, and for each block of rows
/// the range of its items (its chunks, consecutive and in key order).
#[derive(Debug, Default)]
struct AttnPlan {
    /// The sliding window the plan was built for; None before the first layer of a step.
    window: Option<Option<usize>>,
    items: Vec<AttnItem>,
    blocks: Vec<(u32, u32)>,
}

impl AttnPlan {
    fn clear(&mut self) {
        self.window = None;
        self.items.clear();
        self.blocks.clear();
    }

    /// Splits every item's rows into blocks of at most [`ATTN_ROWS`] per KV head, and each block
    /// into the key chunks its rows can see. Longest sequences first, so that the big prefill
    /// items do not finish last.
    fn build(&mut self, plan: &StepPlan, group: usize, kv_heads: usize, window: Option<usize>) {
        self.clear();
        self.window = Some(window);
        let mut order: Vec<usize> = (0..plan.spans.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(plan.spans[i].start + plan.spans[i].len));
        for i in order {
            let span = plan.spans[i];
            let rows = span.len * group;
            for kvh in 0..kv_heads {
                for r0 in (0..rows).step_by(ATTN_ROWS) {
                    let n = ATTN_ROWS.min(rows - r0);
                    let first = span.start + r0 / group;
                    let last = span.start + (r0 + n - 1) / group;
                    let lo = window.map_or(0, |w| (first + 1).saturating_sub(w));
                    let start = self.items.len();
                    for chunk in lo / KEY_CHUNK..=last / KEY_CHUNK {
                        self.items.push(AttnItem {
                            span: i as u32,
                            kvh: kvh as u32,
                            r0: r0 as u32,
                            rows: n as u32,
                            chunk: chunk as u32,
                        });
                    }
                    self.blocks
                        .push((start as u32, (self.items.len() - start) as u32));
                }
            }
        }
    }
}

/// Floats of attention partial results held at once: a long prompt runs its attention in waves
/// of blocks, so the buffer stays at 4 MB however long the context (at 8,192 tokens a 256-token
/// prefill slice of SmolLM2 has 36,000 chunk items, about 38 MB of partials in one go).
const PARTIALS_BUDGET: usize = 1 << 20;

/// Attention of every row of the step for layer `li`, into `out` (`n * q_dim`): the chunks of
/// every block across the pool, then the merge of each block's chunks.
#[allow(clippy::too_many_arguments)]
fn attention(
    work: &AttnPlan,
    partials: &mut Vec<f32>,
    plan: &StepPlan,
    caches: &SeqCaches,
    li: usize,
    qkv: &[f32],
    (qkv_dim, q_dim, hd, group): (usize, usize, usize, usize),
    out: &mut [f32],
    threads: &Threads,
) {
    let window = work.window.flatten();
    let slot = ATTN_ROWS * ops::partial_len(hd);
    // Row r of an item: (row of the step, query head, position).
    let locate = |it: &AttnItem, r: usize| {
        let span = plan.spans[it.span as usize];
        let r = it.r0 as usize + r;
        let t = r / group;
        (
            span.offset + t,
            it.kvh as usize * group + r % group,
            span.start + t,
        )
    };
    let dst = SharedOut(out.as_mut_ptr());
    // Waves of whole blocks, each at least one block and at most PARTIALS_BUDGET floats of
    // partial results (unless one block alone needs more).
    let max_items = (PARTIALS_BUDGET / slot).max(1);
    let mut b0 = 0;
    while b0 < work.blocks.len() {
        let first = work.blocks[b0].0 as usize;
        let end_of = |b: usize| (work.blocks[b].0 + work.blocks[b].1) as usize;
        let mut b1 = b0 + 1;
        while b1 < work.blocks.len() && end_of(b1) - first <= max_items {
            b1 += 1;
        }
        let items = &work.items[first..end_of(b1 - 1)];
        let parts = SharedOut(grow(partials, items.len() * slot).as_mut_ptr());
        let next = AtomicUsize::new(0);
        threads.run(threads.len(), &|_| {
            let mut scores: Scores = [[0.0; KEY_CHUNK]; ATTN_ROWS];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(it) = items.get(i) else { break };
                let rows = it.rows as usize;
                let mut visible = [(0usize, 0usize); ATTN_ROWS];
                let mut q_rows: [&[f32]; ATTN_ROWS] = [&[]; ATTN_ROWS];
                for r in 0..rows {
                    let (row, head, p) = locate(it, r);
                    visible[r] = (window.map_or(0, |w| (p + 1).saturating_sub(w)), p + 1);
                    q_rows[r] = &qkv[row * qkv_dim + head * hd..][..hd];
                }
                let blocks = caches.blocks(plan.spans[it.span as usize].slot);
                let chunk = it.chunk as usize;
                let first = chunk * CHUNK_BLOCKS;
                let in_chunk = &blocks[first..(first + CHUNK_BLOCKS).min(blocks.len())];
                let mut k: [&[u16]; CHUNK_BLOCKS] = [&[]; CHUNK_BLOCKS];
                let mut v: [&[u16]; CHUNK_BLOCKS] = [&[]; CHUNK_BLOCKS];
                for (i, &b) in in_chunk.iter().enumerate() {
                    (k[i], v[i]) = caches.block(li, b, it.kvh as usize);
                }
                let kv = ChunkKv {
                    k: &k[..in_chunk.len()],
                    v: &v[..in_chunk.len()],
                };
                let block = AttnRows {
                    q: &q_rows[..rows],
                    visible: &visible[..rows],
                    head_dim: hd,
                };
                // SAFETY: slot i belongs to item i alone.
                let part = unsafe { parts.slice(i * slot, slot) };
                ops::attend_chunk(&block, &kv, chunk, &mut scores, part);
            }
        });

        let parts = &partials[..];
        let merge = |b: usize| {
            let (start, count) = work.blocks[b];
            let item = &work.items[start as usize];
            let from = start as usize - first;
            let chunks = &parts[from * slot..(from + count as usize) * slot];
            let rows = item.rows as usize;
            let mut outs: [&mut [f32]; ATTN_ROWS] = Default::default();
            for (r, o) in outs.iter_mut().enumerate().take(rows) {
                let (row, head, _) = locate(item, r);
                // SAFETY: each (row, head) output slot belongs to exactly one block.
                *o = unsafe { dst.slice(row * q_dim + head * hd, hd) };
            }
            ops::merge_chunks(chunks, slot, &mut outs[..rows]);
        };
        // A decode step has a handful of blocks: handing them to the pool costs more than
        // merging them here.
        if b1 - b0 <= 4 * threads.len() {
            (b0..b1).for_each(merge);
        } else {
            threads.run(b1 - b0, &|b| merge(b0 + b));
        }
        b0 = b1;
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The gated activation, split by rows across the pool when the step is big enough to pay for
/// the hand-off.
fn gated_parallel(threads: &Threads, act: Activation, gu: &[f32], ffn: usize, out: &mut [f32]) {
    let n = out.len() / ffn;
    if n < 8 || threads.len() == 1 {
        ops::gated(act, gu, ffn, out);
        return;
    }
    let chunks = threads.len() * 2;
    let per = n.div_ceil(chunks);
    let dst = SharedOut(out.as_mut_ptr());
    threads.run(chunks, &|c| {
        let r0 = (c * per).min(n);
        let r1 = ((c + 1) * per).min(n);
        if r0 == r1 {
            return;
        }
        // SAFETY: chunk c owns rows r0..r1 of `out`.
        let o = unsafe { dst.slice(r0 * ffn, (r1 - r0) * ffn) };
        ops::gated(act, &gu[r0 * 2 * ffn..r1 * 2 * ffn], ffn, o);
    });
}

impl BatchModel for Transformer {
    fn vocab_size(&self) -> usize {
        self.w.desc.vocab
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
        let plan = self.caches.begin(batch, self.w.desc.vocab)?;
        let result = self.run(&plan, logits);
        self.caches.finish(&plan, result.is_ok());
        result
    }

    fn attach_prefix(&mut self, seq: SeqId, prompt: &[u32]) -> usize {
        self.caches.attach(seq, prompt)
    }

    fn reserve(&mut self, seq: SeqId, tokens: usize) -> bool {
        self.caches.reserve(seq, tokens)
    }

    fn takes_drafts(&self) -> bool {
        true
    }

    fn truncate(&mut self, seq: SeqId, len: usize) {
        self.caches.truncate(seq, len);
    }

    fn kv_usage(&self) -> Option<PoolUsage> {
        Some(self.caches.usage())
    }

    fn release(&mut self, seq: SeqId) {
        self.caches.release(seq);
    }
}
