//! Per-sequence KV caches and the bookkeeping of one batched step.
//!
//! A cache keeps, for each layer, the keys transposed (`[kv_heads][head_dim][capacity]`, so the
//! scores of one query against many keys are plain vector FMAs) and the values
//! (`[kv_heads][capacity][head_dim]`), in f32. Capacity grows by a quarter (at least 64 tokens)
//! when full, so that the cache stays close to what a sequence holds while copies stay rare.

use std::collections::HashMap;

use super::{validate_batch, BatchItem, ModelError, SeqId};

/// Capacity is a multiple of this (and so of the attention key block).
const CAPACITY_STEP: usize = 64;

/// The shape every cache of one model shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct CacheShape {
    pub n_layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_context: usize,
}

#[derive(Debug, Default)]
struct LayerKv {
    kt: Vec<f32>,
    v: Vec<f32>,
}

/// The keys and values of one sequence, for every layer.
#[derive(Debug)]
pub struct KvCache {
    seq: SeqId,
    layers: Vec<LayerKv>,
    /// Tokens committed: positions `0..len` hold valid keys and values.
    len: usize,
    capacity: usize,
}

impl KvCache {
    fn new(seq: SeqId, n_layers: usize) -> Self {
        Self {
            seq,
            layers: (0..n_layers).map(|_| LayerKv::default()).collect(),
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

    /// Makes room for `extra` more tokens.
    fn reserve(&mut self, extra: usize, shape: &CacheShape) {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return;
        }
        let capacity = needed
            .max(self.capacity + (self.capacity / 4).max(CAPACITY_STEP))
            .min(shape.max_context.max(needed))
            .next_multiple_of(CAPACITY_STEP);
        let (heads, hd, old) = (shape.kv_heads, shape.head_dim, self.capacity);
        // Fresh buffers are zeroed: attention may read (with weight 0) a few slots past the end.
        for layer in &mut self.layers {
            let mut kt = vec![0f32; heads * hd * capacity];
            let mut v = vec![0f32; heads * capacity * hd];
            if old > 0 {
                for h in 0..heads {
                    for d in 0..hd {
                        let from = (h * hd + d) * old;
                        let to = (h * hd + d) * capacity;
                        kt[to..to + self.len].copy_from_slice(&layer.kt[from..from + self.len]);
                    }
                    let from = h * old * hd;
                    let to = h * capacity * hd;
                    v[to..to + self.len * hd].copy_from_slice(&layer.v[from..from + self.len * hd]);
                }
            }
            layer.kt = kt;
            layer.v = v;
        }
        self.capacity = capacity;
    }

    /// Writes one token's key and value rows (`kv_heads * head_dim` each) of one layer at
    /// position `pos`. Nothing counts as cached until [`SeqCaches::finish`] commits the step.
    pub(super) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32], hd: usize) {
        let cap = self.capacity;
        let l = &mut self.layers[layer];
        for (h, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            for (d, &x) in kh.iter().enumerate() {
                l.kt[(h * hd + d) * cap + pos] = x;
            }
            l.v[(h * cap + pos) * hd..][..hd].copy_from_slice(vh);
        }
    }

    /// Transposed keys `[head_dim][capacity]` and values `[capacity][head_dim]` of one head.
    pub(super) fn head(&self, layer: usize, head: usize, hd: usize) -> (&[f32], &[f32]) {
        let cap = self.capacity;
        let l = &self.layers[layer];
        (
            &l.kt[head * hd * cap..(head + 1) * hd * cap],
            &l.v[head * cap * hd..(head + 1) * cap * hd],
        )
    }
}

/// Where one item's tokens sit in a step: rows `offset..offset + len` of the flattened batch,
/// at positions `start..start + len` of its sequence, whose cache is `slot`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ItemSpan {
    pub slot: usize,
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
    pub fn last_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.spans.iter().map(|s| s.offset + s.len - 1)
    }

    /// One past the largest position of the step.
    pub fn max_position(&self) -> usize {
        self.spans
            .iter()
            .map(|s| s.start + s.len)
            .max()
            .unwrap_or(0)
    }
}

/// Every live sequence's cache, in a slab indexed by slot (slots are stable within a step).
#[derive(Debug)]
pub(super) struct SeqCaches {
    shape: CacheShape,
    caches: Vec<KvCache>,
    slots: HashMap<SeqId, usize>,
}

impl SeqCaches {
    pub fn new(shape: CacheShape) -> Self {
        Self {
            shape,
            caches: Vec::new(),
            slots: HashMap::new(),
        }
    }

    pub fn max_context(&self) -> usize {
        self.shape.max_context
    }

    /// Validates a batch, creates caches for new sequences and makes room for the new tokens.
    pub fn begin(&mut self, batch: &[BatchItem<'_>], vocab: usize) -> Result<StepPlan, ModelError> {
        validate_batch(batch, vocab, self.shape.max_context, |seq| {
            self.get(seq).map_or(0, KvCache::len)
        })?;
        let mut plan = StepPlan {
            spans: Vec::with_capacity(batch.len()),
            ids: Vec::new(),
            positions: Vec::new(),
            created: Vec::new(),
        };
        for item in batch {
            let slot = match self.slots.get(&item.seq) {
                Some(&slot) => slot,
                None => {
                    plan.created.push(item.seq);
                    self.caches
                        .push(KvCache::new(item.seq, self.shape.n_layers));
                    self.slots.insert(item.seq, self.caches.len() - 1);
                    self.caches.len() - 1
                }
            };
            let cache = &mut self.caches[slot];
            let start = cache.len();
            cache.reserve(item.tokens.len(), &self.shape);
            plan.spans.push(ItemSpan {
                slot,
                offset: plan.ids.len(),
                len: item.tokens.len(),
                start,
            });
            plan.ids.extend_from_slice(item.tokens);
            plan.positions.extend(start..start + item.tokens.len());
        }
        Ok(plan)
    }

    pub fn slot_mut(&mut self, slot: usize) -> &mut KvCache {
        &mut self.caches[slot]
    }

    pub fn slot(&self, slot: usize) -> &KvCache {
        &self.caches[slot]
    }

    /// Commits a step's tokens, or forgets the sequences it created when it failed.
    pub fn finish(&mut self, plan: &StepPlan, ok: bool) {
        if ok {
            for span in &plan.spans {
                self.caches[span.slot].len = span.start + span.len;
            }
        } else {
            for &seq in &plan.created {
                self.release(seq);
            }
        }
    }

    pub fn release(&mut self, seq: SeqId) {
        if let Some(slot) = self.slots.remove(&seq) {
            self.caches.swap_remove(slot);
            if let Some(moved) = self.caches.get(slot) {
                self.slots.insert(moved.seq, slot);
            }
        }
    }

    pub fn get(&self, seq: SeqId) -> Option<&KvCache> {
        self.slots.get(&seq).map(|&slot| &self.caches[slot])
    }

    pub fn live(&self) -> usize {
        self.caches.len()
    }
}
