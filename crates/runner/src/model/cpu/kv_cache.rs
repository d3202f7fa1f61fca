//! Per-sequence KV caches and the bookkeeping of one batched step.
//!
//! A cache keeps, for each layer, the keys in blocks of [`KEY_BLOCK`] positions, transposed
//! within the block (`[kv_heads][capacity / KEY_BLOCK][head_dim][KEY_BLOCK]`, so the scores of a
//! query against a block are vector FMAs over contiguous memory) and the values
//! (`[kv_heads][capacity][head_dim]`), both in f16 as llama.cpp does: attention streams the whole
//! cache every step, and half the bytes is half the time once contexts grow. Capacity grows by a
//! quarter (at least 64 tokens) when full, so that the cache stays close to what a sequence holds
//! while copies stay rare.

use std::collections::HashMap;

use super::super::{validate_batch, BatchItem, ModelError, SeqId};
use super::ops::KEY_BLOCK;

/// Capacity is a multiple of this (and so of the key block).
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
    /// f16 bits.
    k: Vec<u16>,
    /// f16 bits.
    v: Vec<u16>,
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
        // Both layouts keep a head's positions as a prefix of its slab, so growing copies each
        // head's old slab to the start of its new one. Fresh buffers are zeroed: attention may
        // read (with weight 0) a few slots past the end.
        for layer in &mut self.layers {
            let mut k = vec![0u16; heads * hd * capacity];
            let mut v = vec![0u16; heads * capacity * hd];
            if old > 0 {
                for h in 0..heads {
                    let (from, to) = (h * old * hd, h * capacity * hd);
                    k[to..to + old * hd].copy_from_slice(&layer.k[from..from + old * hd]);
                    v[to..to + old * hd].copy_from_slice(&layer.v[from..from + old * hd]);
                }
            }
            layer.k = k;
            layer.v = v;
        }
        self.capacity = capacity;
    }

    /// Writes one token's key and value rows (`kv_heads * head_dim` each) of one layer at
    /// position `pos`. Nothing counts as cached until [`SeqCaches::finish`] commits the step.
    pub(super) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32], hd: usize) {
        let cap = self.capacity;
        let l = &mut self.layers[layer];
        let f16 = kernels::f32_to_f16;
        for (h, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            let block = h * cap * hd + pos / KEY_BLOCK * hd * KEY_BLOCK + pos % KEY_BLOCK;
            for (d, &x) in kh.iter().enumerate() {
                l.k[block + d * KEY_BLOCK] = f16(x);
            }
            for (o, &x) in l.v[(h * cap + pos) * hd..][..hd].iter_mut().zip(vh) {
                *o = f16(x);
            }
        }
    }

    /// Keys (blocked, see the module docs) and values `[capacity][head_dim]` of one head.
    pub(super) fn head(&self, layer: usize, head: usize, hd: usize) -> (&[u16], &[u16]) {
        let slab = self.capacity * hd;
        let l = &self.layers[layer];
        (
            &l.k[head * slab..(head + 1) * slab],
            &l.v[head * slab..(head + 1) * slab],
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
