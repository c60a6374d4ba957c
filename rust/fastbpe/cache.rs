//! A per-thread word → ids cache, one per `FastTokenizer` instance, and the Fx hash used by the
//! tokenizer's tables.
//!
//! Thread-local, so rayon workers never contend on a lock; entries are keyed by the instance's
//! unique id so two tokenizers in one process never share words. A cache that grows past
//! [`MAX_WORDS`] is emptied (the corpus' frequent words come back at once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's): one multiply per 8 bytes; good enough for token ids and short words.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// Words of more bytes than this are not cached (long words rarely repeat).
pub const MAX_WORD_BYTES: usize = 96;
/// Entries kept per thread and tokenizer before the cache is emptied.
pub const MAX_WORDS: usize = 1 << 17;
/// Tokenizer instances whose caches one thread keeps.
const MAX_INSTANCES: usize = 4;

#[derive(Default)]
pub struct WordCache {
    /// Word bytes → (offset, length) in `ids`.
    map: FxHashMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
}

impl WordCache {
    #[inline]
    pub fn get(&self, word: &[u8]) -> Option<&[u32]> {
        self.map.get(word).map(|&(start, len)| &self.ids[start as usize..(start + len) as usize])
    }

    #[inline]
    pub fn insert(&mut self, word: &[u8], ids: &[u32]) {
        if word.len() > MAX_WORD_BYTES {
            return;
        }
        if self.map.len() >= MAX_WORDS {
            self.map.clear();
            self.ids.clear();
        }
        let start = self.ids.len() as u32;
        self.ids.extend_from_slice(ids);
        self.map.insert(word.into(), (start, ids.len() as u32));
    }
}

thread_local! {
    static CACHES: RefCell<Vec<(u64, WordCache)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's cache for tokenizer `instance`.
pub fn with_cache<R>(instance: u64, f: impl FnOnce(&mut WordCache) -> R) -> R {
    CACHES.with(|caches| {
        let Ok(mut caches) = caches.try_borrow_mut() else {
            // Re-entered (cannot happen from `encode`): work without a cache.
            return f(&mut WordCache::default());
        };
        let pos = match caches.iter().position(|(id, _)| *id == instance) {
            Some(p) => p,
            None => {
                if caches.len() >= MAX_INSTANCES {
                    caches.remove(0);
                }
                caches.push((instance, WordCache::default()));
                caches.len() - 1
            }
        };
        f(&mut caches[pos].1)
    })
}
