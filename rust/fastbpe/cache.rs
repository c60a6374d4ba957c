//! A per-thread word → ids cache, one per `FastTokenizer` instance, and the Fx hash used by the
//! tokenizer's tables.
//!
//! Thread-local, so rayon workers never contend on a lock; entries are keyed by the instance's
//! unique id so two tokenizers in one process never share words. A cache that grows past
//! [`MAX_WORDS`] is emptied (the corpus' frequent words come back at once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::bpe::Merges;

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
pub const MAX_WORDS: usize = 1 << 16;
/// Tokenizer instances whose caches one thread keeps.
const MAX_INSTANCES: usize = 4;

/// Open addressing over arenas: no allocation per word (a `HashMap<Box<[u8]>, _>` allocated a
/// key per insert and chased a pointer per probe).
pub struct WordCache {
    /// Recently looked-up merges (see [`PairCache`]).
    pub pairs: PairCache,
    /// Power-of-two table; `len == 0` marks an empty slot (words are never empty).
    slots: Vec<Slot>,
    words: usize,
    keys: Vec<u8>,
    ids: Vec<u32>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u32,
    len: u32,
    key: u32,
    ids: u32,
    n_ids: u32,
}

const SLOT_BITS: u32 = MAX_WORDS.trailing_zeros() + 1;
const SLOTS: usize = 1 << SLOT_BITS;

impl Default for WordCache {
    fn default() -> Self {
        WordCache {
            pairs: PairCache::default(),
            slots: vec![Slot::default(); SLOTS],
            words: 0,
            keys: Vec::new(),
            ids: Vec::new(),
        }
    }
}

#[inline(always)]
fn hash(word: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(word);
    h.finish()
}

impl WordCache {
    /// The slot holding `word`, or the empty slot where it would go.
    #[inline(always)]
    fn find(&self, word: &[u8], h: u64) -> usize {
        let mask = SLOTS - 1;
        // Fx mixes the high bits best: they pick the slot, the low ones make the tag.
        let tag = h as u32;
        let mut i = (h >> (64 - SLOT_BITS)) as usize;
        loop {
            let s = &self.slots[i];
            if s.len == 0 {
                return i;
            }
            if s.hash == tag
                && s.len as usize == word.len()
                && &self.keys[s.key as usize..s.key as usize + word.len()] == word
            {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub fn get(&self, word: &[u8]) -> Option<&[u32]> {
        if word.len() > MAX_WORD_BYTES {
            return None;
        }
        let s = &self.slots[self.find(word, hash(word))];
        if s.len == 0 {
            return None;
        }
        Some(&self.ids[s.ids as usize..(s.ids + s.n_ids) as usize])
    }

    #[inline]
    pub fn insert(&mut self, word: &[u8], ids: &[u32]) {
        if word.len() > MAX_WORD_BYTES {
            return;
        }
        if self.words >= MAX_WORDS {
            self.slots.iter_mut().for_each(|s| *s = Slot::default());
            self.words = 0;
            self.keys.clear();
            self.ids.clear();
        }
        let h = hash(word);
        let i = self.find(word, h);
        if self.slots[i].len != 0 {
            return;
        }
        self.slots[i] = Slot {
            hash: h as u32,
            len: word.len() as u32,
            key: self.keys.len() as u32,
            ids: self.ids.len() as u32,
            n_ids: ids.len() as u32,
        };
        self.keys.extend_from_slice(word);
        self.ids.extend_from_slice(ids);
        self.words += 1;
    }
}

const PAIR_BITS: u32 = 14;

/// A direct-mapped cache of merge-table lookups (256 KiB, stays in L2): the merge table of a
/// 128k–256k vocabulary is megabytes, and its cache misses were most of the BPE time on
/// Chinese text, where the same character-level pairs recur.
pub struct PairCache {
    slots: Vec<[u64; 2]>,
}

impl Default for PairCache {
    fn default() -> Self {
        PairCache { slots: vec![[u64::MAX, 0]; 1 << PAIR_BITS] }
    }
}

impl PairCache {
    #[inline(always)]
    pub fn get(&mut self, merges: &Merges, left: u32, right: u32) -> u64 {
        let key = (left as u64) << 32 | right as u64;
        let i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PAIR_BITS)) as usize;
        let slot = &mut self.slots[i];
        if slot[0] == key {
            return slot[1];
        }
        let v = merges.get(left, right);
        *slot = [key, v];
        v
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_returns_what_was_inserted_and_empties_when_full() {
        let mut c = WordCache::default();
        assert_eq!(c.get(b"hello"), None);
        c.insert(b"hello", &[1, 2]);
        c.insert(b"hell", &[3]);
        assert_eq!(c.get(b"hello"), Some(&[1u32, 2][..]));
        assert_eq!(c.get(b"hell"), Some(&[3u32][..]));
        assert_eq!(c.get(b"hel"), None);
        let long = vec![b'x'; MAX_WORD_BYTES + 1];
        c.insert(&long, &[9]);
        assert_eq!(c.get(&long), None);
        for i in 0..MAX_WORDS as u32 {
            c.insert(format!("w{i}").as_bytes(), &[i]);
        }
        assert_eq!(c.get(b"hello"), None, "emptied when full");
        assert_eq!(c.get(format!("w{}", MAX_WORDS - 1).as_bytes()), Some(&[MAX_WORDS as u32 - 1][..]));
    }
}
