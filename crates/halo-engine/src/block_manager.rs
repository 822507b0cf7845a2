//! The KV block pool: which blocks are free, who holds each block (reference counts), and the
//! prefix cache.
//!
//! Prefix caching (vLLM's automatic prefix caching, reimplemented): a *full* block whose KV has
//! been computed is keyed by a hash of its tokens chained with the hash of everything before it,
//! so the key names the whole prefix. A new sequence looks up its prompt block by block and
//! takes a reference on every hit, skipping that part of the prefill.
//!
//! The hash only finds a candidate; a hit is decided on identity, never on the hash. Each cached
//! block records its exact tokens and its parent: the *block* (id and generation) before it, or
//! for a first block the cache salt itself. A lookup walks from the root and accepts block `i`
//! only when its tokens equal the request's and its parent is the very block it accepted at
//! `i - 1` (by induction, the whole prefix and the salt match), so even a forced 64-bit collision
//! cannot hand out wrong KV. A block whose parent is not itself cached stays private.
//!
//! A [`CacheScope`] bounds reuse: the chain of a request starts at its scope, the cache salt
//! and the RoPE regime its KV is computed in, so requests with different salts (tenants) never
//! share a block, `cached_prompt_tokens` tells a client only about prefixes sent under its own
//! salt, and KV rotated with LongRoPE's long factors never serves a short-regime sequence (nor
//! the reverse).
//!
//! When the last reference to a cached block goes, the block keeps its contents and joins an
//! LRU of *evictable* blocks; allocation takes truly free blocks first and then evicts the
//! least recently released cached block.
//!
//! Accounting: **free = never-cached free blocks + evictable cached blocks** (both can be handed
//! out at once), **used = blocks with a reference count above zero**, and free + used = total
//! always holds. After all work drains, used = 0 and free = total.

use halo_hal::{BlockId, FREED_BLOCK};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The seed of the hash chain (the "parent" of a sequence's first block, before the salt).
pub const ROOT_HASH: u64 = 0x6861_6c6f_5f6b_7631;

/// Chains one block's tokens onto the hash of everything before it. Injectable
/// ([`BlockManager::with_hasher`]) so tests can force collisions.
pub type BlockHasher = fn(parent: u64, tokens: &[u32]) -> u64;

/// The chained hash of one full block: `parent` names everything before it.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: deterministic across runs; hits are verified on identity anyway.
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Which requests may share cached blocks: those with the same cache salt whose KV is computed
/// in the same RoPE regime (see crate::rope_regime).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CacheScope {
    pub salt: Arc<str>,
    pub long_rope: bool,
}

impl CacheScope {
    /// The short-regime scope of `salt`.
    pub fn salt(salt: impl Into<Arc<str>>) -> Self {
        CacheScope {
            salt: salt.into(),
            long_rope: false,
        }
    }
}

/// The hash a scope's chain starts from.
pub fn root_hash(scope: &CacheScope) -> u64 {
    if *scope == CacheScope::default() {
        return ROOT_HASH;
    }
    let mut h = DefaultHasher::new();
    ROOT_HASH.hash(&mut h);
    scope.hash(&mut h);
    h.finish()
}

/// What a cached block follows: the scope (a first block) or one exact block generation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Parent {
    Root(CacheScope),
    Block { id: BlockId, generation: u64 },
}

#[derive(Clone, Debug)]
struct CacheKey {
    hash: u64,
    parent: Parent,
    tokens: Box<[u32]>,
}

#[derive(Clone, Debug, Default)]
struct BlockState {
    ref_count: u32,
    key: Option<CacheKey>,
    /// Position in the LRU while evictable.
    lru_tick: u64,
    /// Bumped whenever the block's contents may change hands (allocation, forgetting the
    /// cache), so a child's parent link can never point at a reused block.
    generation: u64,
}

/// The pool of KV blocks.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    blocks: Vec<BlockState>,
    /// Unreferenced blocks with no cached contents (a stack: reuse is cache-friendly).
    free: Vec<BlockId>,
    /// Unreferenced blocks with cached contents, oldest release first.
    lru: BTreeMap<u64, BlockId>,
    /// Every block with a cache key, referenced or evictable.
    cached: HashMap<u64, BlockId>,
    tick: u64,
    used: usize,
    caching: bool,
    hasher: BlockHasher,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize, caching: bool) -> Self {
        Self::with_hasher(num_blocks, block_size, caching, block_hash)
    }

    /// As [`Self::new`] with another chain hash (tests force collisions with a weak one).
    pub fn with_hasher(
        num_blocks: usize,
        block_size: usize,
        caching: bool,
        hasher: BlockHasher,
    ) -> Self {
        BlockManager {
            block_size,
            blocks: vec![BlockState::default(); num_blocks],
            // Reversed so block 0 is handed out first (easier to read in tests and dumps).
            free: (0..num_blocks as BlockId).rev().collect(),
            lru: BTreeMap::new(),
            cached: HashMap::new(),
            tick: 0,
            used: 0,
            caching,
            hasher,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// An empty pool of the same shape (every block free, nothing cached): after a panic, when
    /// the reference counts can no longer be trusted.
    pub fn rebuilt(&self) -> Self {
        Self::with_hasher(self.total(), self.block_size, self.caching, self.hasher)
    }

    pub fn total(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that can be allocated now, including evictable cached ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Free blocks that still hold a cached prefix.
    pub fn num_evictable(&self) -> usize {
        self.lru.len()
    }

    /// Blocks some sequence holds.
    pub fn num_used(&self) -> usize {
        self.used
    }

    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks[block as usize].ref_count
    }

    /// Takes a free block (evicting the least recently released cached block if needed).
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.lru.pop_first()?;
                let key = self.blocks[b as usize]
                    .key
                    .take()
                    .expect("an LRU block is cached");
                self.cached.remove(&key.hash);
                b
            }
        };
        let state = &mut self.blocks[block as usize];
        debug_assert_eq!(state.ref_count, 0);
        state.ref_count = 1;
        state.generation += 1;
        self.used += 1;
        Some(block)
    }

    /// Drops one reference. Blocks are released in the reverse of table order by
    /// [`Self::release_all`] so a sequence's tail is evicted before its (more shareable) head.
    pub fn release(&mut self, block: BlockId) {
        let state = &mut self.blocks[block as usize];
        assert!(
            state.ref_count > 0,
            "block {block} released more often than taken"
        );
        state.ref_count -= 1;
        if state.ref_count == 0 {
            self.used -= 1;
            if state.key.is_some() {
                self.tick += 1;
                state.lru_tick = self.tick;
                self.lru.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// Forgets every cached prefix: the device lost the contents (it restarted). Evictable blocks
    /// become plain free blocks; blocks still referenced keep their holders but lose their keys.
    pub fn forget_cached(&mut self) {
        for (_, b) in std::mem::take(&mut self.lru) {
            self.free.push(b);
        }
        self.cached.clear();
        for state in &mut self.blocks {
            state.key = None;
            state.generation += 1;
        }
    }

    /// Releases every block of a table, tail first; entries already freed
    /// ([`FREED_BLOCK`], outside a sliding window) hold nothing.
    pub fn release_all(&mut self, table: &[BlockId]) {
        for &b in table.iter().rev().filter(|&&b| b != FREED_BLOCK) {
            self.release(b);
        }
    }

    /// Looks up the longest cached prefix of `tokens` under `scope` made of at most
    /// `max_blocks` full blocks, takes a reference on each hit, and returns the blocks with
    /// their chained hashes. A block is a hit only when its tokens and its parent (the scope, or
    /// the block accepted just before) are exactly the request's.
    pub fn match_prefix(
        &mut self,
        scope: &CacheScope,
        tokens: &[u32],
        max_blocks: usize,
    ) -> (Vec<BlockId>, Vec<u64>) {
        let mut blocks: Vec<BlockId> = Vec::new();
        let mut hashes = Vec::new();
        if !self.caching {
            return (blocks, hashes);
        }
        let mut parent_hash = root_hash(scope);
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = (self.hasher)(parent_hash, chunk);
            let Some(&b) = self.cached.get(&hash) else {
                break;
            };
            let key = self.blocks[b as usize]
                .key
                .as_ref()
                .expect("indexed blocks have keys");
            let parent_ok = match (&key.parent, blocks.last()) {
                (Parent::Root(s), None) => s == scope,
                (Parent::Block { id, generation }, Some(&prev)) => {
                    *id == prev && *generation == self.blocks[prev as usize].generation
                }
                _ => false,
            };
            if !parent_ok || *key.tokens != *chunk {
                break;
            }
            self.acquire(b);
            blocks.push(b);
            hashes.push(hash);
            parent_hash = hash;
        }
        (blocks, hashes)
    }

    /// Records that `block` now holds the computed KV of `tokens` following `parent` (the
    /// previous block of the same table with its chained hash; `None` for a first block, whose
    /// parent is `scope`), and returns the block's chained hash. The block is indexed only when
    /// its parent is itself cached (or it is a first block) and no identical block is cached
    /// already (two sequences computed the same prefix at once); otherwise it stays private.
    pub fn register(
        &mut self,
        block: BlockId,
        parent: Option<(BlockId, u64)>,
        scope: &CacheScope,
        tokens: &[u32],
    ) -> u64 {
        debug_assert_eq!(tokens.len(), self.block_size);
        let parent_hash = parent.map_or_else(|| root_hash(scope), |(_, h)| h);
        let hash = (self.hasher)(parent_hash, tokens);
        if !self.caching || self.blocks[block as usize].key.is_some() {
            return hash;
        }
        let parent = match parent {
            None => Parent::Root(scope.clone()),
            Some((p, _)) => {
                let state = &self.blocks[p as usize];
                if state.key.is_none() {
                    return hash;
                }
                Parent::Block {
                    id: p,
                    generation: state.generation,
                }
            }
        };
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(block);
            self.blocks[block as usize].key = Some(CacheKey {
                hash,
                parent,
                tokens: tokens.into(),
            });
        }
        hash
    }

    fn acquire(&mut self, block: BlockId) {
        let state = &mut self.blocks[block as usize];
        if state.ref_count == 0 {
            self.lru.remove(&state.lru_tick);
            self.used += 1;
        }
        state.ref_count += 1;
    }

    /// Checks the pool's own bookkeeping, and (when given) that reference counts equal the
    /// number of tables holding each block.
    pub fn check_invariants(&self, tables: Option<&[&[BlockId]]>) -> Result<(), String> {
        if self.num_free() + self.used != self.total() {
            return Err(format!(
                "free {} + used {} != total {}",
                self.num_free(),
                self.used,
                self.total()
            ));
        }
        let referenced = self.blocks.iter().filter(|b| b.ref_count > 0).count();
        if referenced != self.used {
            return Err(format!(
                "{referenced} referenced blocks but used = {}",
                self.used
            ));
        }
        for &b in &self.free {
            let s = &self.blocks[b as usize];
            if s.ref_count != 0 || s.key.is_some() {
                return Err(format!("free block {b} is referenced or cached"));
            }
        }
        for (&tick, &b) in &self.lru {
            let s = &self.blocks[b as usize];
            if s.ref_count != 0 || s.key.is_none() || s.lru_tick != tick {
                return Err(format!(
                    "evictable block {b} is referenced, uncached or mis-ticked"
                ));
            }
        }
        for (&hash, &b) in &self.cached {
            if self.blocks[b as usize].key.as_ref().map(|k| k.hash) != Some(hash) {
                return Err(format!("cache index points at block {b} with another key"));
            }
        }
        if let Some(tables) = tables {
            let mut counts = vec![0u32; self.total()];
            for t in tables {
                for &b in t.iter().filter(|&&b| b != FREED_BLOCK) {
                    counts[b as usize] += 1;
                }
            }
            for (b, (c, s)) in counts.iter().zip(&self.blocks).enumerate() {
                if *c != s.ref_count {
                    return Err(format!(
                        "block {b}: {c} holders but ref_count {}",
                        s.ref_count
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn salt(s: &str) -> CacheScope {
        CacheScope::salt(s)
    }

    /// Registers a whole table the way the scheduler does; returns the chained hashes.
    fn register_all(
        m: &mut BlockManager,
        s: &CacheScope,
        table: &[BlockId],
        tokens: &[u32],
    ) -> Vec<u64> {
        let bs = m.block_size();
        let mut hashes: Vec<u64> = Vec::new();
        for (i, chunk) in tokens.chunks_exact(bs).enumerate() {
            let parent = (i > 0).then(|| (table[i - 1], hashes[i - 1]));
            hashes.push(m.register(table[i], parent, s, chunk));
        }
        hashes
    }

    #[test]
    fn allocate_until_empty_then_release() {
        let mut m = BlockManager::new(3, 4, true);
        let a: Vec<_> = (0..3).map(|_| m.allocate().unwrap()).collect();
        assert_eq!(m.allocate(), None);
        assert_eq!(m.num_free(), 0);
        m.release_all(&a);
        assert_eq!(m.num_free(), 3);
        m.check_invariants(Some(&[])).unwrap();
    }

    #[test]
    fn prefix_hit_shares_and_eviction_forgets() {
        let mut m = BlockManager::new(4, 2, true);
        let toks = [1, 2, 3, 4, 5];
        let s = salt("");
        let b0 = m.allocate().unwrap();
        let b1 = m.allocate().unwrap();
        register_all(&mut m, &s, &[b0, b1], &toks[..4]);
        // A second sequence with the same prompt shares both blocks.
        let (hit, _) = m.match_prefix(&s, &toks, 2);
        assert_eq!(hit, vec![b0, b1]);
        assert_eq!(m.ref_count(b0), 2);
        m.release_all(&hit);
        m.release_all(&[b0, b1]);
        // Released but cached: counted free, still matchable.
        assert_eq!((m.num_free(), m.num_evictable()), (4, 2));
        let (hit, _) = m.match_prefix(&s, &[1, 2, 9, 9], 2);
        assert_eq!(hit, vec![b0]);
        m.release_all(&hit);
        // Allocating the whole pool evicts every cached block.
        let all: Vec<_> = (0..4).map(|_| m.allocate().unwrap()).collect();
        assert_eq!(m.num_evictable(), 0);
        m.release_all(&all);
        assert_eq!(m.match_prefix(&s, &toks, 2).0, Vec::<BlockId>::new());
        m.check_invariants(Some(&[])).unwrap();
    }

    #[test]
    fn a_different_prefix_never_matches_the_same_block_tokens() {
        let mut m = BlockManager::new(4, 2, true);
        let s = salt("");
        let b0 = m.allocate().unwrap();
        let b1 = m.allocate().unwrap();
        register_all(&mut m, &s, &[b0, b1], &[1, 2, 3, 4]);
        // Same second block, different first block: no hit at all.
        assert!(m.match_prefix(&s, &[7, 7, 3, 4], 2).0.is_empty());
        m.release_all(&[b0, b1]);
    }

    /// A hash that sees only the block's last token: [1, 2] and [7, 2] collide, and so does
    /// everything chained after them.
    fn weak_hash(_parent: u64, tokens: &[u32]) -> u64 {
        *tokens.last().unwrap() as u64
    }

    #[test]
    fn a_forced_collision_never_hands_out_another_prefix() {
        let mut m = BlockManager::with_hasher(8, 2, true, weak_hash);
        let s = salt("");
        // Sequence A caches [1, 2]; sequence B computes [7, 2] [3, 4]: its first block collides
        // with A's (stays private), its second has the same chained hash and tokens that a
        // request for [1, 2, 3, 4] would look up.
        let a = [m.allocate().unwrap()];
        register_all(&mut m, &s, &a, &[1, 2]);
        let b = [m.allocate().unwrap(), m.allocate().unwrap()];
        register_all(&mut m, &s, &b, &[7, 2, 3, 4]);
        let (hit, _) = m.match_prefix(&s, &[1, 2, 3, 4, 5], 2);
        assert_eq!(
            hit,
            vec![a[0]],
            "B's second block follows [7, 2], not [1, 2]"
        );
        m.release_all(&hit);
        // B's own prompt is not served A's first block either.
        assert!(m.match_prefix(&s, &[7, 2, 3, 4, 5], 2).0.is_empty());
        // Parents are blocks, not slots: once A's block is evicted and reused for another
        // prefix, a child registered under it is unreachable.
        m.release_all(&a);
        m.release_all(&b);
        let all: Vec<_> = (0..8).map(|_| m.allocate().unwrap()).collect();
        m.release_all(&all);
        m.check_invariants(Some(&[])).unwrap();
    }

    #[test]
    fn a_child_is_not_served_after_its_parent_block_is_reused() {
        let mut m = BlockManager::with_hasher(4, 2, true, weak_hash);
        let s = salt("");
        let (p, c) = (m.allocate().unwrap(), m.allocate().unwrap());
        register_all(&mut m, &s, &[p, c], &[1, 2, 3, 4]);
        // Release the parent first so it is evicted first; the child stays cached.
        m.release(p);
        m.release(c);
        let fresh: Vec<_> = (0..3).map(|_| m.allocate().unwrap()).collect();
        assert!(fresh.contains(&p) && !fresh.contains(&c));
        // The parent's slot now holds [9, 2] (same weak hash as [1, 2]).
        register_all(&mut m, &s, &[p], &[9, 2]);
        let (hit, _) = m.match_prefix(&s, &[9, 2, 3, 4, 5], 2);
        assert_eq!(
            hit,
            vec![p],
            "the child was computed after [1, 2], not [9, 2]"
        );
        m.release_all(&hit);
        m.release_all(&fresh);
        m.check_invariants(Some(&[])).unwrap();
    }

    #[test]
    fn salts_scope_reuse() {
        let mut m = BlockManager::new(8, 2, true);
        let (a, b) = (salt("tenant-a"), salt("tenant-b"));
        let t = [m.allocate().unwrap(), m.allocate().unwrap()];
        register_all(&mut m, &a, &t, &[1, 2, 3, 4]);
        assert!(m.match_prefix(&b, &[1, 2, 3, 4, 5], 2).0.is_empty());
        assert!(m.match_prefix(&salt(""), &[1, 2, 3, 4, 5], 2).0.is_empty());
        let (hit, _) = m.match_prefix(&a, &[1, 2, 3, 4, 5], 2);
        assert_eq!(hit, t.to_vec());
        m.release_all(&hit);
        m.release_all(&t);
        m.check_invariants(Some(&[])).unwrap();
    }

    /// Two salts whose chained root hashes collide still never share.
    #[test]
    fn colliding_salts_never_share() {
        let mut m = BlockManager::with_hasher(8, 2, true, weak_hash);
        let t = [m.allocate().unwrap()];
        register_all(&mut m, &salt("a"), &t, &[1, 2]);
        assert!(m.match_prefix(&salt("b"), &[1, 2, 3], 1).0.is_empty());
        m.release_all(&t);
    }

    /// KV computed in one RoPE regime never serves the other, under any salt (LongRoPE's long
    /// and short factors rotate the same tokens differently).
    #[test]
    fn regimes_never_share() {
        for name in ["", "tenant\0a"] {
            let mut m = BlockManager::new(8, 2, true);
            let short = salt(name);
            let long = CacheScope {
                long_rope: true,
                ..short.clone()
            };
            let t = [m.allocate().unwrap()];
            register_all(&mut m, &long, &t, &[1, 2]);
            assert!(m.match_prefix(&short, &[1, 2, 3], 1).0.is_empty());
            let (hit, _) = m.match_prefix(&long, &[1, 2, 3], 1);
            assert_eq!(hit, t.to_vec());
            m.release_all(&hit);
            m.release_all(&t);
            m.check_invariants(Some(&[])).unwrap();
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A new sequence of these tokens (prefix lookup, then blocks for the rest).
        Start(Vec<u32>),
        /// Finish (or preempt) the sequence at this index.
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec(0u32..3, 1..12).prop_map(Op::Start),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random starts (with prefix sharing over a 3-token alphabet) and frees keep the pool
        /// consistent, reference counts equal holders, and every block comes back.
        #[test]
        fn pool_invariants_hold(ops in prop::collection::vec(op(), 1..60), caching in any::<bool>()) {
            let bs = 2;
            let mut m = BlockManager::new(8, bs, caching);
            let salt = salt("");
            let mut live: Vec<Vec<BlockId>> = Vec::new();
            for op in ops {
                match op {
                    Op::Start(tokens) => {
                        let full = tokens.len() / bs;
                        let (mut table, mut hashes) = m.match_prefix(&salt, &tokens, full);
                        let needed = tokens.len().div_ceil(bs);
                        let mut ok = true;
                        while table.len() < needed {
                            match m.allocate() {
                                Some(b) => table.push(b),
                                None => { ok = false; break; }
                            }
                        }
                        if !ok {
                            m.release_all(&table);
                        } else {
                            for i in hashes.len()..full {
                                let parent = (i > 0).then(|| (table[i - 1], hashes[i - 1]));
                                hashes.push(m.register(table[i], parent, &salt, &tokens[i * bs..(i + 1) * bs]));
                            }
                            live.push(table);
                        }
                    }
                    Op::Free(i) => {
                        if !live.is_empty() {
                            let t = live.swap_remove(i % live.len());
                            m.release_all(&t);
                        }
                    }
                }
                let tables: Vec<&[BlockId]> = live.iter().map(|t| t.as_slice()).collect();
                prop_assert_eq!(m.check_invariants(Some(&tables)), Ok(()));
            }
            for t in live.drain(..) {
                m.release_all(&t);
            }
            prop_assert_eq!(m.num_free(), m.total());
            prop_assert_eq!(m.check_invariants(Some(&[])), Ok(()));
        }
    }
}
