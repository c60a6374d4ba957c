//! The BPE merge loop, with the `tokenizers` crate's exact order: repeatedly apply the merge of
//! lowest rank, the leftmost one among equals, until no adjacent pair has a merge.
//!
//! Two implementations of that rule: a scan over a rank array for short words (no heap, one
//! hash lookup per new pair) and a min-heap over a linked list for long ones (SentencePiece
//! pieces can be whole paragraphs). Symbols are token ids; the caller builds the initial ids.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::cache::FxHashMap;

/// Words with more symbols than this use the heap.
const LINEAR_MAX: usize = 128;
const NONE: u64 = u64::MAX;

/// Merge table: (left id, right id) → rank (position in `merges`) and the merged id.
pub struct Merges {
    map: FxHashMap<u64, u64>,
}

impl Merges {
    pub fn new() -> Merges {
        Merges { map: FxHashMap::default() }
    }

    /// Later duplicates of a pair replace earlier ones, as in the `tokenizers` crate.
    pub fn insert(&mut self, left: u32, right: u32, rank: u32, merged: u32) {
        self.map.insert(key(left, right), (rank as u64) << 32 | merged as u64);
    }

    /// `rank << 32 | merged`, or `NONE`: ordering these compares ranks.
    #[inline(always)]
    fn get(&self, left: u32, right: u32) -> u64 {
        self.map.get(&key(left, right)).copied().unwrap_or(NONE)
    }

    /// Applies all merges to `ids` in place.
    pub fn apply(&self, ids: &mut Vec<u32>) {
        if ids.len() < 2 {
            return;
        }
        if ids.len() <= LINEAR_MAX {
            self.apply_linear(ids);
        } else {
            self.apply_heap(ids);
        }
    }

    fn apply_linear(&self, ids: &mut Vec<u32>) {
        let mut ranks = [NONE; LINEAR_MAX];
        let mut n = ids.len();
        for i in 0..n - 1 {
            ranks[i] = self.get(ids[i], ids[i + 1]);
        }
        loop {
            let mut best = NONE;
            let mut at = 0;
            for (i, &r) in ranks[..n - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NONE {
                break;
            }
            ids[at] = best as u32;
            ids.remove(at + 1);
            ranks.copy_within(at + 1..n - 1, at);
            n -= 1;
            if at + 1 < n {
                ranks[at] = self.get(ids[at], ids[at + 1]);
            }
            if at > 0 {
                ranks[at - 1] = self.get(ids[at - 1], ids[at]);
            }
            if n < 2 {
                break;
            }
        }
    }

    fn apply_heap(&self, ids: &mut Vec<u32>) {
        let n = ids.len();
        const END: u32 = u32::MAX;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = END;
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = END;
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let m = self.get(ids[i], ids[i + 1]);
            if m != NONE {
                heap.push(Reverse(((m >> 32) as u32, i as u32)));
            }
        }
        while let Some(Reverse((rank, pos))) = heap.pop() {
            let pos = pos as usize;
            if !alive[pos] || next[pos] == END {
                continue;
            }
            let right = next[pos] as usize;
            let m = self.get(ids[pos], ids[right]);
            if m == NONE || (m >> 32) as u32 != rank {
                continue; // stale: the pair at `pos` changed since it was queued
            }
            ids[pos] = m as u32;
            alive[right] = false;
            next[pos] = next[right];
            if next[right] != END {
                prev[next[right] as usize] = pos as u32;
            }
            if prev[pos] != END {
                let p = prev[pos] as usize;
                let m = self.get(ids[p], ids[pos]);
                if m != NONE {
                    heap.push(Reverse(((m >> 32) as u32, p as u32)));
                }
            }
            if next[pos] != END {
                let m = self.get(ids[pos], ids[next[pos] as usize]);
                if m != NONE {
                    heap.push(Reverse(((m >> 32) as u32, pos as u32)));
                }
            }
        }
        let mut w = 0;
        for r in 0..n {
            if alive[r] {
                ids[w] = ids[r];
                w += 1;
            }
        }
        ids.truncate(w);
    }
}

impl Default for Merges {
    fn default() -> Self {
        Merges::new()
    }
}

#[inline(always)]
fn key(left: u32, right: u32) -> u64 {
    (left as u64) << 32 | right as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small random merge table over ids 0..8 whose merged ids are fresh.
    fn table(pairs: &[(u32, u32)]) -> Merges {
        let mut m = Merges::new();
        for (rank, &(a, b)) in pairs.iter().enumerate() {
            m.insert(a, b, rank as u32, 100 + rank as u32);
        }
        m
    }

    /// The rule written as plainly as possible.
    fn reference(m: &Merges, mut ids: Vec<u32>) -> Vec<u32> {
        loop {
            let best = (0..ids.len().saturating_sub(1))
                .map(|i| (m.get(ids[i], ids[i + 1]), i))
                .filter(|(r, _)| *r != NONE)
                .min();
            let Some((r, i)) = best else { return ids };
            ids[i] = r as u32;
            ids.remove(i + 1);
        }
    }

    proptest! {
        #[test]
        fn linear_and_heap_follow_the_rule(
            pairs in proptest::collection::vec((0u32..4, 0u32..4), 0..12),
            extra in proptest::collection::vec((100u32..112, 0u32..112), 0..24),
            ids in proptest::collection::vec(0u32..4, 0..300),
        ) {
            let mut all = pairs.clone();
            all.extend(extra);
            let m = table(&all);
            let want = reference(&m, ids.clone());
            let mut a = ids.clone();
            if a.len() >= 2 { m.apply_heap(&mut a); }
            prop_assert_eq!(&a, &want);
            if ids.len() <= LINEAR_MAX {
                let mut b = ids.clone();
                if b.len() >= 2 { m.apply_linear(&mut b); }
                prop_assert_eq!(&b, &want);
            }
        }
    }
}
