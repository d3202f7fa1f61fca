//! The CPU backend's KV memory: every sequence's keys and values, in the blocks of one
//! [`KvPool`], and the bookkeeping of one batched step.
//!
//! The pool decides which block each position of a sequence lives in (and which blocks sequences
//! share); this file keeps their bytes. Each layer has one slab of `total` blocks; block `b` of a
//! KV head holds [`KEY_BLOCK`] positions of keys transposed within the block (`[head_dim]
//! [KEY_BLOCK]`, so the scores of a query against a block are vector FMAs over contiguous memory)
//! and the same positions' values (`[KEY_BLOCK][head_dim]`), both in f16 as llama.cpp does:
//! attention streams the whole cache every step, and half the bytes is half the time once contexts
//! grow. The slabs are allocated zeroed up front, so the operating system only backs the blocks
//! that are ever used: memory stays within the budget and grows only as far as traffic needs.

use std::collections::HashMap;

use super::super::kv_pool::{BlockId, BlockTable, KvPool, PoolUsage};
use super::super::{validate_batch, BatchItem, ModelError, SeqId};
use super::ops::KEY_BLOCK;

/// The shape every cache of one model shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct CacheShape {
    pub n_layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_context: usize,
}

impl CacheShape {
    /// f16 values of one block of one layer, keys or values: every KV head's positions.
    fn block_values(&self) -> usize {
        self.kv_heads * self.head_dim * KEY_BLOCK
    }

    /// Bytes one position takes over every layer, keys and values.
    pub fn bytes_per_token(&self) -> usize {
        self.n_layers * self.kv_heads * self.head_dim * 2 * 2
    }
}

/// The bytes of every block, for each layer (see the module docs).
#[derive(Debug)]
struct KvStore {
    shape: CacheShape,
    /// f16 bits, `[block][kv_head][head_dim][KEY_BLOCK]` per layer.
    k: Vec<Vec<u16>>,
    /// f16 bits, `[block][kv_head][KEY_BLOCK][head_dim]` per layer.
    v: Vec<Vec<u16>>,
}

impl KvStore {
    fn new(shape: CacheShape, blocks: usize) -> Self {
        let values = blocks * shape.block_values();
        // `vec![0; n]` asks for zeroed memory, which the allocator maps lazily: untouched blocks
        // cost address space, not memory.
        let slab = || (0..shape.n_layers).map(|_| vec![0u16; values]).collect();
        Self {
            shape,
            k: slab(),
            v: slab(),
        }
    }

    fn range(&self, block: BlockId, head: usize) -> std::ops::Range<usize> {
        let per_head = self.shape.head_dim * KEY_BLOCK;
        let at = block as usize * self.shape.block_values() + head * per_head;
        at..at + per_head
    }

    /// Zeroes a block taken for new work. Attention reads the unwritten tail of a sequence's last
    /// block with weight zero, and zero times stale data that overflowed f16 (an infinity) would
    /// be NaN.
    fn clear(&mut self, block: BlockId) {
        let n = self.shape.block_values();
        let at = block as usize * n;
        for slab in self.k.iter_mut().chain(self.v.iter_mut()) {
            slab[at..at + n].fill(0);
        }
    }

    /// Keys `[head_dim][KEY_BLOCK]` and values `[KEY_BLOCK][head_dim]` of one block of one head.
    pub fn block(&self, layer: usize, block: BlockId, head: usize) -> (&[u16], &[u16]) {
        let r = self.range(block, head);
        (&self.k[layer][r.clone()], &self.v[layer][r])
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
    /// The last `drafts` tokens are a draft (see `BatchItem::drafts`).
    pub drafts: usize,
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
    /// Rows of the flattened batch that get logits: each item's last token, and the draft's
    /// tokens with the one before them.
    pub fn logit_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.spans
            .iter()
            .flat_map(|s| s.offset + s.len - 1 - s.drafts..s.offset + s.len)
    }

    /// How many rows [`Self::logit_rows`] gives.
    pub fn logit_row_count(&self) -> usize {
        self.spans.iter().map(|s| s.drafts + 1).sum()
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

#[derive(Debug)]
struct SeqKv {
    seq: SeqId,
    table: BlockTable,
}

/// Every live sequence's block table, in a slab indexed by slot (slots are stable within a
/// step), the pool they draw from and the memory behind it.
#[derive(Debug)]
pub(super) struct SeqCaches {
    shape: CacheShape,
    pool: KvPool,
    store: KvStore,
    seqs: Vec<SeqKv>,
    slots: HashMap<SeqId, usize>,
}

impl SeqCaches {
    pub fn new(shape: CacheShape, blocks: usize, prefix_cache: bool) -> Self {
        Self {
            shape,
            pool: KvPool::new(blocks, KEY_BLOCK, prefix_cache),
            store: KvStore::new(shape, blocks),
            seqs: Vec::new(),
            slots: HashMap::new(),
        }
    }

    pub fn max_context(&self) -> usize {
        self.shape.max_context
    }

    pub fn usage(&self) -> PoolUsage {
        self.pool.usage()
    }

    /// The slot of `seq`, created empty when new (the bool says whether it was).
    fn slot_of(&mut self, seq: SeqId) -> (usize, bool) {
        match self.slots.get(&seq) {
            Some(&slot) => (slot, false),
            None => {
                self.seqs.push(SeqKv {
                    seq,
                    table: BlockTable::default(),
                });
                self.slots.insert(seq, self.seqs.len() - 1);
                (self.seqs.len() - 1, true)
            }
        }
    }

    /// See `BatchModel::attach_prefix`.
    pub fn attach(&mut self, seq: SeqId, prompt: &[u32]) -> usize {
        let (slot, _) = self.slot_of(seq);
        self.pool.attach(&mut self.seqs[slot].table, prompt)
    }

    /// See `BatchModel::reserve`.
    pub fn reserve(&mut self, seq: SeqId, tokens: usize) -> bool {
        if tokens > self.shape.max_context {
            return false;
        }
        let (slot, created) = self.slot_of(seq);
        let table = &mut self.seqs[slot].table;
        match self.pool.reserve(table, tokens) {
            Some(taken) => {
                for &b in &table.blocks()[taken] {
                    self.store.clear(b);
                }
                true
            }
            None => {
                if created {
                    self.release(seq);
                }
                false
            }
        }
    }

    /// Validates a batch, creates caches for new sequences and makes room for the new tokens
    /// (the engine reserves ahead, so this only fails when a caller did not).
    pub fn begin(&mut self, batch: &[BatchItem<'_>], vocab: usize) -> Result<StepPlan, ModelError> {
        validate_batch(batch, vocab, self.shape.max_context, |seq| {
            self.slots
                .get(&seq)
                .map_or(0, |&slot| self.seqs[slot].table.len())
        })?;
        let mut plan = StepPlan {
            spans: Vec::with_capacity(batch.len()),
            ids: Vec::new(),
            positions: Vec::new(),
            created: Vec::new(),
        };
        for item in batch {
            let (slot, created) = self.slot_of(item.seq);
            if created {
                plan.created.push(item.seq);
            }
            let start = self.seqs[slot].table.len();
            if !self.reserve(item.seq, start + item.tokens.len()) {
                let usage = self.pool.usage();
                self.finish(&plan, false);
                return Err(ModelError::KvFull {
                    seq: item.seq,
                    needed: start + item.tokens.len(),
                    available: usage.available() * usage.block_tokens,
                });
            }
            plan.spans.push(ItemSpan {
                slot,
                offset: plan.ids.len(),
                len: item.tokens.len(),
                start,
                drafts: item.drafts,
            });
            plan.ids.extend_from_slice(item.tokens);
            plan.positions.extend(start..start + item.tokens.len());
        }
        Ok(plan)
    }

    /// Writes one token's key and value rows (`kv_heads * head_dim` each) of one layer at
    /// position `pos` of the sequence in `slot`. Nothing counts as cached until
    /// [`Self::finish`] commits the step.
    pub fn write(&mut self, slot: usize, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.shape.head_dim;
        let block = self.seqs[slot].table.blocks()[pos / KEY_BLOCK];
        let at = pos % KEY_BLOCK;
        let f16 = kernels::f32_to_f16;
        for (h, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            let r = self.store.range(block, h);
            let keys = &mut self.store.k[layer][r.clone()];
            for (d, &x) in kh.iter().enumerate() {
                keys[d * KEY_BLOCK + at] = f16(x);
            }
            let values = &mut self.store.v[layer][r][at * hd..(at + 1) * hd];
            for (o, &x) in values.iter_mut().zip(vh) {
                *o = f16(x);
            }
        }
    }

    /// The blocks of the sequence in `slot`, in position order.
    pub fn blocks(&self, slot: usize) -> &[BlockId] {
        self.seqs[slot].table.blocks()
    }

    /// Keys and values of one block of one head (see [`KvStore::block`]).
    pub fn block(&self, layer: usize, block: BlockId, head: usize) -> (&[u16], &[u16]) {
        self.store.block(layer, block, head)
    }

    /// Commits a step's tokens (which indexes the blocks they filled), or forgets the
    /// sequences it created when it failed.
    pub fn finish(&mut self, plan: &StepPlan, ok: bool) {
        if ok {
            for span in &plan.spans {
                let tokens = &plan.ids[span.offset..span.offset + span.len];
                let table = &mut self.seqs[span.slot].table;
                self.pool.commit(table, tokens, span.drafts);
            }
        } else {
            for &seq in &plan.created {
                self.release(seq);
            }
        }
    }

    /// See `BatchModel::truncate`.
    pub fn truncate(&mut self, seq: SeqId, len: usize) {
        if let Some(&slot) = self.slots.get(&seq) {
            self.pool.truncate(&mut self.seqs[slot].table, len);
        }
    }

    pub fn release(&mut self, seq: SeqId) {
        if let Some(slot) = self.slots.remove(&seq) {
            let gone = self.seqs.swap_remove(slot);
            self.pool.release(gone.table);
            if let Some(moved) = self.seqs.get(slot) {
                self.slots.insert(moved.seq, slot);
            }
        }
    }

    /// Tokens `seq` holds (0 when unknown).
    pub fn len(&self, seq: SeqId) -> usize {
        self.slots
            .get(&seq)
            .map_or(0, |&slot| self.seqs[slot].table.len())
    }

    pub fn live(&self) -> usize {
        self.seqs.len()
    }
}
