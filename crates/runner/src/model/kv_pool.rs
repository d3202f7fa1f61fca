//! The KV block pool: which blocks of KV memory exist, which sequences hold them, and which hold
//! a known prefix of tokens. Plain bookkeeping, no tensors: a backend keeps the keys and values of
//! block `b` wherever it likes (the CPU backend in one slab per layer) and asks a sequence's
//! [`BlockTable`] which block each position lives in.
//!
//! - Memory is `total` blocks of `block_tokens` positions each, for every layer at once; the
//!   budget is fixed at start-up, so a server never grows past it.
//! - A block is held by any number of sequences (a reference count): requests whose prompts start
//!   alike share the blocks of their common prefix rather than computing and storing it again.
//! - The prefix index maps (the block before, the block's tokens) to a full block whose keys and
//!   values for exactly those tokens at exactly those positions are computed. The longest cached
//!   prefix of a prompt is found block by block from its start, one hash probe per block. Keys
//!   are compared in full, so no collision can hand a sequence another prompt's cache, and every
//!   allocation of a block gets a fresh serial, so a block taken for new work never matches the
//!   children of what it held before.
//! - Blocks enter the index as they fill, during the prefill or the decode of a running sequence,
//!   so a request can reuse what a running one computed, not only what a finished one left.
//! - A block no sequence holds stays cached while it is indexed, until its memory is needed: then
//!   the least recently used goes first, the deepest first among equals, so a prefix outlives its
//!   extensions and is never orphaned while they are cached. A block that holds a partial block's
//!   worth of tokens is never indexed: it frees when its sequence ends.
//!
//! Cost: a lookup is one hash probe per block of the prompt; taking, holding and releasing a block
//! are O(log n) in the number of idle cached blocks.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

/// The index of a block in the pool's memory.
pub type BlockId = u32;

/// What a full, computed block is found by: its parent's serial (0 for the first block) and its
/// tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    parent: u64,
    tokens: Box<[u32]>,
}

#[derive(Debug, Default)]
struct Block {
    /// Sequences holding the block.
    refs: u32,
    /// Fresh on every allocation (0 is never used: it names "no parent").
    serial: u64,
    /// The block's index in the sequences that hold it (its depth in the prefix tree).
    depth: u32,
    /// When the last holder let go (the LRU order of idle blocks).
    stamp: u64,
    /// Set while the block is in the prefix index.
    key: Option<BlockKey>,
}

/// How much of the pool is in use, in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub block_tokens: usize,
    pub total: usize,
    /// Held by at least one sequence.
    pub held: usize,
    /// Held by none, kept for the prefix index (taken when memory runs short).
    pub cached: usize,
}

impl PoolUsage {
    /// Blocks a new allocation can get: never-used ones plus idle cached ones.
    pub fn available(&self) -> usize {
        self.total - self.held
    }
}

/// The blocks of one sequence, in position order, and the tokens whose keys and values they
/// hold.
#[derive(Debug, Default)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    /// Tokens committed: positions `0..tokens.len()` hold computed keys and values.
    tokens: Vec<u32>,
    /// Leading blocks that are full and in the index (computed here or shared from the cache).
    indexed: usize,
}

impl BlockTable {
    /// Tokens whose keys and values are committed.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Blocks held, committed or reserved, in position order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }
}

/// The pool; see the module docs.
#[derive(Debug)]
pub struct KvPool {
    block_tokens: usize,
    blocks: Vec<Block>,
    /// Blocks holding nothing anyone can find, taken first (last freed first, so that memory
    /// already touched is reused before fresh pages are).
    free: Vec<BlockId>,
    /// Indexed blocks no sequence holds: (stamp, deepest first, id), oldest first.
    idle: BTreeSet<(u64, Reverse<u32>, BlockId)>,
    index: HashMap<BlockKey, BlockId>,
    /// Whether full blocks are indexed and looked up at all (`--prefix-cache false` turns the
    /// reuse off; the pool still budgets memory).
    caching: bool,
    clock: u64,
    serials: u64,
}

impl KvPool {
    pub fn new(total: usize, block_tokens: usize, caching: bool) -> Self {
        assert!(block_tokens > 0, "a block holds at least one position");
        Self {
            block_tokens,
            blocks: (0..total).map(|_| Block::default()).collect(),
            free: (0..total as BlockId).rev().collect(),
            idle: BTreeSet::new(),
            index: HashMap::new(),
            caching,
            clock: 0,
            serials: 0,
        }
    }

    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    pub fn usage(&self) -> PoolUsage {
        let idle = self.idle.len();
        PoolUsage {
            block_tokens: self.block_tokens,
            total: self.blocks.len(),
            held: self.blocks.len() - self.free.len() - idle,
            cached: idle,
        }
    }

    /// Blocks that `tokens` positions take.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_tokens)
    }

    /// Tokens of the longest cached prefix of `prompt`, in whole blocks, leaving at least its
    /// last token to compute (its logits are the reply's first): what [`Self::attach`] would
    /// give a new sequence now.
    pub fn cached_prefix(&self, prompt: &[u32]) -> usize {
        self.walk(0, 0, prompt).len() * self.block_tokens
    }

    /// The blocks of the index that hold `prompt`'s blocks `from..`, following from the block
    /// of serial `parent`.
    fn walk(&self, from: usize, mut parent: u64, prompt: &[u32]) -> Vec<BlockId> {
        let bt = self.block_tokens;
        let limit = prompt.len().saturating_sub(1) / bt;
        let mut found = Vec::new();
        if !self.caching {
            return found;
        }
        for i in from..limit {
            let key = BlockKey {
                parent,
                tokens: prompt[i * bt..(i + 1) * bt].into(),
            };
            let Some(&b) = self.index.get(&key) else {
                break;
            };
            found.push(b);
            parent = self.blocks[b as usize].serial;
        }
        found
    }

    /// Points `table` at the longest cached prefix of `prompt` (see [`Self::cached_prefix`]) and
    /// returns its length in tokens. The table must hold nothing it computed itself (a new
    /// sequence, or one that so far only shares cached blocks); blocks it reserved for those
    /// positions are given back. Otherwise, or when `prompt` does not extend what the table
    /// holds, nothing changes and the table's length is returned.
    pub fn attach(&mut self, table: &mut BlockTable, prompt: &[u32]) -> usize {
        let bt = self.block_tokens;
        if table.tokens.len() != table.indexed * bt || !prompt.starts_with(&table.tokens) {
            return table.tokens.len();
        }
        let parent = match table.indexed {
            0 => 0,
            n => self.blocks[table.blocks[n - 1] as usize].serial,
        };
        let found = self.walk(table.indexed, parent, prompt);
        for (i, b) in (table.indexed..).zip(found) {
            self.hold(b);
            match table.blocks.get_mut(i) {
                Some(slot) => {
                    let reserved = std::mem::replace(slot, b);
                    self.let_go(reserved, 0);
                }
                None => table.blocks.push(b),
            }
            table.indexed = i + 1;
        }
        table.tokens = prompt[..table.indexed * bt].to_vec();
        table.tokens.len()
    }

    /// Makes `table` hold blocks for `tokens` positions in all, taking free blocks first and
    /// then the least recently used cached ones. Returns the table positions of the blocks newly
    /// taken (their memory holds stale data), or None, changing nothing, when the pool cannot
    /// hold that many.
    pub fn reserve(&mut self, table: &mut BlockTable, tokens: usize) -> Option<Range<usize>> {
        let have = table.blocks.len();
        let need = self.blocks_for(tokens).saturating_sub(have);
        if need > self.usage().available() {
            return None;
        }
        for _ in 0..need {
            let b = self.take();
            table.blocks.push(b);
        }
        Some(have..table.blocks.len())
    }

    /// Records that `tokens` follow what `table` holds (their keys and values are written), and
    /// indexes the blocks they fill. A filled block whose tokens the index already holds after
    /// the same prefix is swapped for the indexed one, whose keys and values are the same (the
    /// forward pass gives a position the same numbers whatever batch it ran in), so that
    /// requests computed side by side end up sharing memory.
    ///
    /// The last `tentative` of `tokens` are guesses (a speculative draft) that a later
    /// [`Self::truncate`] may take back: a block holding any of them is not indexed yet, so that
    /// no other sequence can share memory that is about to be overwritten. It is indexed by the
    /// next commit or truncation that confirms it.
    pub fn commit(&mut self, table: &mut BlockTable, tokens: &[u32], tentative: usize) {
        table.tokens.extend_from_slice(tokens);
        debug_assert!(table.tokens.len() <= table.blocks.len() * self.block_tokens);
        debug_assert!(tentative <= tokens.len());
        self.index_full(table, table.tokens.len() - tentative);
    }

    /// Takes back every position of `table` from `len` on (rejected draft tokens): their keys
    /// and values are overwritten by the next commit. The blocks stay held, reserved for it.
    /// Positions before `len` are confirmed, and the blocks they fill are indexed. Positions in
    /// indexed blocks are never taken back (they were committed as confirmed).
    pub fn truncate(&mut self, table: &mut BlockTable, len: usize) {
        assert!(
            len >= table.indexed * self.block_tokens,
            "truncating to {len} would cut into {} shared positions",
            table.indexed * self.block_tokens
        );
        table.tokens.truncate(len);
        self.index_full(table, len);
    }

    /// Indexes the full blocks of `table` that lie within its first `confirmed` positions.
    fn index_full(&mut self, table: &mut BlockTable, confirmed: usize) {
        if !self.caching {
            return;
        }
        let bt = self.block_tokens;
        let full = confirmed / bt;
        while table.indexed < full {
            let i = table.indexed;
            let parent = match i {
                0 => 0,
                _ => self.blocks[table.blocks[i - 1] as usize].serial,
            };
            let key = BlockKey {
                parent,
                tokens: table.tokens[i * bt..(i + 1) * bt].into(),
            };
            let mine = table.blocks[i];
            match self.index.get(&key) {
                Some(&other) if other != mine => {
                    self.hold(other);
                    table.blocks[i] = other;
                    self.let_go(mine, 0);
                }
                Some(_) => {}
                None => {
                    let block = &mut self.blocks[mine as usize];
                    block.depth = i as u32;
                    block.key = Some(key.clone());
                    self.index.insert(key, mine);
                }
            }
            table.indexed += 1;
        }
    }

    /// Gives back every block of a finished (or failed) sequence: full, indexed ones stay cached
    /// for later requests; the rest are free at once.
    pub fn release(&mut self, table: BlockTable) {
        self.clock += 1;
        let stamp = self.clock;
        for b in table.blocks {
            self.let_go(b, stamp);
        }
    }

    /// One more holder of `b` (taking it off the idle list if it was idle).
    fn hold(&mut self, b: BlockId) {
        let block = &mut self.blocks[b as usize];
        if block.refs == 0 {
            self.idle.remove(&(block.stamp, Reverse(block.depth), b));
        }
        block.refs += 1;
    }

    /// One holder fewer; the last one makes an indexed block idle (as of `stamp`) and any other
    /// block free.
    fn let_go(&mut self, b: BlockId, stamp: u64) {
        let block = &mut self.blocks[b as usize];
        debug_assert!(block.refs > 0, "block {b} released more often than held");
        block.refs -= 1;
        if block.refs > 0 {
            return;
        }
        if block.key.is_some() {
            block.stamp = stamp;
            self.idle.insert((stamp, Reverse(block.depth), b));
        } else {
            self.free.push(b);
        }
    }

    /// A block for new work: a free one, or else the least recently used idle one, which leaves
    /// the index. The caller checked that one is available.
    fn take(&mut self) -> BlockId {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, _, b) = self.idle.pop_first().expect("checked available");
                if let Some(key) = self.blocks[b as usize].key.take() {
                    self.index.remove(&key);
                }
                b
            }
        };
        self.serials += 1;
        let block = &mut self.blocks[b as usize];
        block.refs = 1;
        block.serial = self.serials;
        block.depth = 0;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize, seed: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + seed).collect()
    }

    /// A sequence that attaches, reserves and commits `prompt` as the engine does.
    fn run(pool: &mut KvPool, prompt: &[u32]) -> (BlockTable, usize) {
        let mut table = BlockTable::default();
        let cached = pool.attach(&mut table, prompt);
        pool.reserve(&mut table, prompt.len()).unwrap();
        pool.commit(&mut table, &prompt[cached..], 0);
        (table, cached)
    }

    #[test]
    fn a_prompt_reuses_the_full_blocks_of_a_finished_one_and_computes_its_last_token() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(10, 1);
        let (ta, cached) = run(&mut pool, &a);
        assert_eq!(cached, 0);
        assert_eq!(pool.usage().held, 3);
        pool.release(ta);
        // Two full blocks stay cached; the partial third is free.
        assert_eq!(pool.usage().cached, 2);
        assert_eq!(pool.usage().held, 0);

        // Same first 9 tokens, then different: the hit ends inside block 2, so 8 tokens reuse.
        let mut b = a[..9].to_vec();
        b.extend([999, 998, 997]);
        assert_eq!(pool.cached_prefix(&b), 8);
        let (tb, cached) = run(&mut pool, &b);
        assert_eq!(cached, 8);
        assert_eq!(tb.blocks()[..2], ta_blocks(&pool, &a)[..]);
        assert_eq!(pool.usage().cached, 0, "the shared blocks are held again");

        // A prompt of exactly two full blocks keeps its last block to compute.
        assert_eq!(pool.cached_prefix(&a[..8]), 4);
        pool.release(tb);
    }

    fn ta_blocks(pool: &KvPool, prompt: &[u32]) -> Vec<BlockId> {
        pool.walk(0, 0, prompt)
    }

    #[test]
    fn a_different_block_early_on_hides_everything_after_it() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(17, 1);
        let (ta, _) = run(&mut pool, &a);
        pool.release(ta);
        let mut b = a.clone();
        b[1] = 12345;
        assert_eq!(pool.cached_prefix(&b), 0);
        let mut c = a.clone();
        c[5] = 12345;
        assert_eq!(pool.cached_prefix(&c), 4);
        assert_eq!(pool.cached_prefix(&a), 16);
    }

    #[test]
    fn a_running_sequence_shares_blocks_as_it_fills_them() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(6, 3);
        let (mut ta, _) = run(&mut pool, &a);
        assert_eq!(pool.cached_prefix(&tokens(20, 3)), 4);
        // Decode two tokens: block 1 fills and is found by the next prompt.
        let more = tokens(8, 3);
        pool.reserve(&mut ta, 8).unwrap();
        pool.commit(&mut ta, &more[6..], 0);
        assert_eq!(pool.cached_prefix(&tokens(20, 3)), 8);
        let (tb, cached) = run(&mut pool, &tokens(20, 3));
        assert_eq!(cached, 8);
        assert_eq!(ta.blocks()[..2], tb.blocks()[..2]);
        assert_eq!(pool.usage().held, 2 + 3);
        pool.release(ta);
        pool.release(tb);
    }

    #[test]
    fn identical_prompts_computed_side_by_side_end_up_sharing_blocks() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(9, 5);
        let (mut t1, mut t2) = (BlockTable::default(), BlockTable::default());
        for t in [&mut t1, &mut t2] {
            assert_eq!(pool.attach(t, &a), 0);
            pool.reserve(t, a.len()).unwrap();
        }
        assert_eq!(pool.usage().held, 6);
        pool.commit(&mut t1, &a, 0);
        pool.commit(&mut t2, &a, 0);
        assert_eq!(t1.blocks()[..2], t2.blocks()[..2]);
        assert_ne!(
            t1.blocks()[2],
            t2.blocks()[2],
            "partial blocks stay private"
        );
        assert_eq!(pool.usage().held, 4);
    }

    #[test]
    fn a_sequence_attached_early_picks_up_what_was_computed_since() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(13, 2);
        let (mut first, mut second) = (BlockTable::default(), BlockTable::default());
        for t in [&mut first, &mut second] {
            assert_eq!(pool.attach(t, &a), 0);
            pool.reserve(t, a.len()).unwrap();
        }
        pool.commit(&mut first, &a[..8], 0);
        // The second has computed nothing: it re-attaches to the first's two blocks and gives
        // back the two it had reserved for them.
        assert_eq!(pool.attach(&mut second, &a), 8);
        assert_eq!(first.blocks()[..2], second.blocks()[..2]);
        assert_eq!(second.blocks().len(), 4);
        assert_eq!(pool.usage().held, 4 + 2);
        // Once it computed a token of its own, attaching changes nothing.
        pool.commit(&mut second, &a[8..9], 0);
        pool.commit(&mut first, &a[8..], 0);
        assert_eq!(pool.attach(&mut second, &a), 9);
    }

    #[test]
    fn draft_tokens_are_shared_only_once_confirmed_and_a_truncation_takes_them_back() {
        let mut pool = KvPool::new(16, 4, true);
        let a = tokens(6, 4);
        let (mut ta, _) = run(&mut pool, &a);
        // One confirmed token and three drafts fill block 1 (positions 4..8) and spill over.
        let drafted = [a.clone(), vec![100, 101, 102, 103]].concat();
        pool.reserve(&mut ta, drafted.len()).unwrap();
        pool.commit(&mut ta, &drafted[6..], 3);
        assert_eq!(ta.len(), 10);
        assert_eq!(
            pool.cached_prefix(&tokens(20, 4)),
            4,
            "a block holding drafts is not shared"
        );
        // The first draft is accepted, the rest rejected: block 1 is now confirmed and shared.
        pool.truncate(&mut ta, 8);
        assert_eq!(ta.len(), 8);
        let mut follow = drafted[..8].to_vec();
        follow.extend([7, 7, 7]);
        assert_eq!(pool.cached_prefix(&follow), 8);
        // The rejected positions are written again by the next commit.
        pool.commit(&mut ta, &[55], 0);
        assert_eq!(ta.len(), 9);
        assert_eq!(
            ta.blocks().len(),
            3,
            "the blocks reserved for drafts stay held"
        );
        pool.release(ta);
        assert_eq!(pool.usage().cached, 2);
    }

    #[test]
    #[should_panic(expected = "shared positions")]
    fn a_truncation_never_cuts_into_a_shared_block() {
        let mut pool = KvPool::new(16, 4, true);
        let (mut ta, _) = run(&mut pool, &tokens(9, 1));
        pool.truncate(&mut ta, 7);
    }

    #[test]
    fn memory_runs_out_only_when_nothing_idle_is_left_and_the_oldest_goes_first() {
        let mut pool = KvPool::new(6, 4, true);
        let (a, b) = (tokens(9, 1), tokens(9, 2));
        let (ta, _) = run(&mut pool, &a);
        pool.release(ta);
        let (tb, _) = run(&mut pool, &b);
        pool.release(tb);
        assert_eq!(pool.usage().cached, 4);
        // Free blocks go first, then a's two (older); b stays whole.
        let mut t = BlockTable::default();
        assert_eq!(pool.reserve(&mut t, 8), Some(0..2));
        assert_eq!(pool.cached_prefix(&a), 8);
        assert_eq!(pool.reserve(&mut t, 16), Some(2..4));
        assert_eq!(pool.cached_prefix(&a), 0);
        assert_eq!(pool.cached_prefix(&b), 8);
        // Three more blocks cannot be had: nothing changes.
        assert_eq!(pool.reserve(&mut t, 28), None);
        assert_eq!(t.blocks().len(), 4);
        assert_eq!(pool.reserve(&mut t, 24), Some(4..6));
        assert_eq!(pool.cached_prefix(&b), 0);
        assert_eq!(pool.usage().available(), 0);
        pool.release(t);
        assert_eq!(pool.usage().available(), 6);
    }

    #[test]
    fn when_eviction_splits_a_chain_the_prefix_goes_last() {
        let mut pool = KvPool::new(3, 4, true);
        let (a, longer) = (tokens(12, 1), tokens(13, 1));
        let (ta, _) = run(&mut pool, &a);
        pool.release(ta);
        assert_eq!(pool.usage().cached, 3);
        assert_eq!(pool.cached_prefix(&longer), 12);
        let mut t = BlockTable::default();
        pool.reserve(&mut t, 4).unwrap();
        assert_eq!(
            pool.cached_prefix(&longer),
            8,
            "the deepest block went first"
        );
        pool.reserve(&mut t, 8).unwrap();
        assert_eq!(pool.cached_prefix(&longer), 4);
    }

    #[test]
    fn with_caching_off_nothing_is_shared_and_everything_frees() {
        let mut pool = KvPool::new(8, 4, false);
        let a = tokens(9, 1);
        let (ta, _) = run(&mut pool, &a);
        pool.release(ta);
        assert_eq!(pool.usage().cached, 0);
        assert_eq!(pool.cached_prefix(&a), 0);
        let (_, cached) = run(&mut pool, &a);
        assert_eq!(cached, 0);
    }
}
