//! Per-sequence KV caches and the bookkeeping of one batched step.
//!
//! A cache keeps, for each layer, one preallocated key buffer and one value buffer of shape
//! `[kv_heads, capacity, head_dim]`. New keys are written in place; attention reads a narrowed
//! view. Capacity doubles when full, so over a whole generation the cache is copied O(log n)
//! times instead of once per token (which is what `Tensor::cat` per step would cost).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::{validate_batch, BatchItem, ModelError, SeqId};

/// Smallest capacity allocated, so short chats do not regrow several times.
const MIN_CAPACITY: usize = 64;

/// The shape every cache of one model shares.
#[derive(Debug, Clone)]
pub(super) struct CacheShape {
    pub n_layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_context: usize,
    pub device: Device,
}

/// The keys and values of one sequence, for every layer.
#[derive(Debug)]
pub struct KvCache {
    /// `(keys, values)` per layer, each `[kv_heads, capacity, head_dim]`.
    layers: Vec<(Tensor, Tensor)>,
    /// Tokens committed: positions `0..len` hold valid keys and values.
    len: usize,
    capacity: usize,
}

impl KvCache {
    fn new() -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens that fit before the buffers must grow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes room for `extra` more tokens, doubling the buffers (never past `max_context`).
    fn reserve(&mut self, extra: usize, shape: &CacheShape) -> candle_core::Result<()> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed
            .max(self.capacity * 2)
            .max(MIN_CAPACITY)
            .min(shape.max_context.max(needed));
        let dims = (shape.kv_heads, capacity, shape.head_dim);
        let mut layers = Vec::with_capacity(shape.n_layers);
        for layer in 0..shape.n_layers {
            let k = Tensor::zeros(dims, DType::F32, &shape.device)?;
            let v = Tensor::zeros(dims, DType::F32, &shape.device)?;
            if let Some((old_k, old_v)) = self.layers.get(layer) {
                // The whole old buffer is contiguous; positions past `len` are garbage but harmless.
                k.slice_set(old_k, 1, 0)?;
                v.slice_set(old_v, 1, 0)?;
            }
            layers.push((k, v));
        }
        self.layers = layers;
        self.capacity = capacity;
        Ok(())
    }

    /// Writes a chunk's keys and values (`[kv_heads, n, head_dim]`, contiguous) for one layer at
    /// positions `len..len + n`, and returns views of all keys and values up to the chunk's end.
    /// Nothing counts as cached until [`SeqCaches::finish`] commits the step.
    pub(super) fn write(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let (kb, vb) = &self.layers[layer];
        kb.slice_set(k, 1, self.len)?;
        vb.slice_set(v, 1, self.len)?;
        let total = self.len + n;
        Ok((kb.narrow(1, 0, total)?, vb.narrow(1, 0, total)?))
    }
}

/// Where one item's tokens sit in a step: rows `offset..offset + len` of the flattened batch,
/// at positions `start..start + len` of its sequence.
#[derive(Debug, Clone, Copy)]
pub(super) struct ItemSpan {
    pub seq: SeqId,
    pub offset: usize,
    pub len: usize,
    pub start: usize,
}

/// What one step runs: every item's span, the flattened token ids and their positions.
#[derive(Debug)]
pub(super) struct StepPlan {
    pub spans: Vec<ItemSpan>,
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
    /// Sequences first seen in this step, dropped again if the step fails.
    created: Vec<SeqId>,
}

impl StepPlan {
    /// Row of each item's last token in the flattened batch.
    pub fn last_rows(&self) -> Vec<u32> {
        self.spans
            .iter()
            .map(|s| (s.offset + s.len - 1) as u32)
            .collect()
    }
}

/// Every live sequence's cache.
#[derive(Debug)]
pub(super) struct SeqCaches {
    shape: CacheShape,
    caches: HashMap<SeqId, KvCache>,
}

impl SeqCaches {
    pub fn new(shape: CacheShape) -> Self {
        Self {
            shape,
            caches: HashMap::new(),
        }
    }

    pub fn max_context(&self) -> usize {
        self.shape.max_context
    }

    /// Validates a batch, creates caches for new sequences and makes room for the new tokens.
    pub fn begin(&mut self, batch: &[BatchItem<'_>], vocab: usize) -> Result<StepPlan, ModelError> {
        validate_batch(batch, vocab, self.shape.max_context, |seq| {
            self.caches.get(&seq).map_or(0, KvCache::len)
        })?;
        let mut plan = StepPlan {
            spans: Vec::with_capacity(batch.len()),
            ids: Vec::new(),
            positions: Vec::new(),
            created: Vec::new(),
        };
        for item in batch {
            let cache = self.caches.entry(item.seq).or_insert_with(|| {
                plan.created.push(item.seq);
                KvCache::new()
            });
            let start = cache.len();
            plan.spans.push(ItemSpan {
                seq: item.seq,
                offset: plan.ids.len(),
                len: item.tokens.len(),
                start,
            });
            plan.ids.extend_from_slice(item.tokens);
            plan.positions.extend(start..start + item.tokens.len());
        }
        for span in &plan.spans {
            let cache = self.caches.get_mut(&span.seq).expect("created above");
            if let Err(e) = cache.reserve(span.len, &self.shape) {
                self.finish(&plan, false);
                return Err(e.into());
            }
        }
        Ok(plan)
    }

    pub fn get_mut(&mut self, seq: SeqId) -> Result<&mut KvCache, ModelError> {
        self.caches
            .get_mut(&seq)
            .ok_or_else(|| ModelError::InvalidBatch(format!("sequence {seq} has no cache")))
    }

    /// Commits a step's tokens, or forgets the sequences it created when it failed.
    pub fn finish(&mut self, plan: &StepPlan, ok: bool) {
        if ok {
            for span in &plan.spans {
                if let Some(cache) = self.caches.get_mut(&span.seq) {
                    cache.len = span.start + span.len;
                }
            }
        } else {
            for seq in &plan.created {
                self.caches.remove(seq);
            }
        }
    }

    pub fn release(&mut self, seq: SeqId) {
        self.caches.remove(&seq);
    }

    pub fn get(&self, seq: SeqId) -> Option<&KvCache> {
        self.caches.get(&seq)
    }

    pub fn live(&self) -> usize {
        self.caches.len()
    }
}
