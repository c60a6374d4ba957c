//! The vocabulary as an open-addressing table over one arena of token bytes: a lookup is one
//! 16-byte slot (hash tag, length, arena offset, id) and, when the tag matches, one compare in
//! the arena. Most lookups are misses (Llama 3's `ignore_merges` asks for every new word), and a
//! miss usually ends at the first slot, where a `HashMap<Box<[u8]>, u32>` chased a pointer.

use std::hash::Hasher;

use super::cache::FxHasher;
use super::tables::{Reader, Writer};

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    /// 0 marks an empty slot (tokens are never empty).
    len: u32,
    offset: u32,
    id: u32,
}

pub struct Vocab {
    slots: Vec<Slot>,
    shift: u32,
    bytes: Vec<u8>,
    len: usize,
}

#[inline(always)]
fn hash(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(key);
    // Fx leaves the low bits weak: mix so that the top bits (the slot) and low bits (the tag)
    // both depend on every byte.
    let x = h.finish();
    (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

impl Vocab {
    /// A table sized for `n` tokens (it grows if given more).
    pub fn with_capacity(n: usize) -> Vocab {
        let cap = (n.max(4) * 2).next_power_of_two();
        Vocab { slots: vec![Slot::default(); cap], shift: 64 - cap.trailing_zeros(), bytes: Vec::new(), len: 0 }
    }

    #[inline(always)]
    fn find(&self, key: &[u8], h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = (h >> self.shift) as usize;
        loop {
            let s = self.slots[i];
            if s.len == 0
                || (s.tag == h as u32
                    && s.len as usize == key.len()
                    && &self.bytes[s.offset as usize..s.offset as usize + key.len()] == key)
            {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts or replaces (a later duplicate wins, as in a `HashMap`).
    pub fn insert(&mut self, key: &[u8], id: u32) {
        if key.is_empty() {
            return;
        }
        let h = hash(key);
        let i = self.find(key, h);
        if self.slots[i].len != 0 {
            self.slots[i].id = id;
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
            return self.insert(key, id);
        }
        self.slots[i] = Slot { tag: h as u32, len: key.len() as u32, offset: self.bytes.len() as u32, id };
        self.bytes.extend_from_slice(key);
        self.len += 1;
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        self.shift = 64 - cap.trailing_zeros();
        let mask = cap - 1;
        for s in old.into_iter().filter(|s| s.len != 0) {
            let key = &self.bytes[s.offset as usize..(s.offset + s.len) as usize];
            let mut i = (hash(key) >> self.shift) as usize;
            while self.slots[i].len != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        if key.is_empty() {
            return None;
        }
        let s = self.slots[self.find(key, hash(key))];
        (s.len != 0).then_some(s.id)
    }
}

impl Vocab {
    pub(super) fn write(&self, w: &mut Writer) {
        let flat: Vec<u32> = self.slots.iter().flat_map(|s| [s.tag, s.len, s.offset, s.id]).collect();
        w.u32s(&flat);
        w.u32(self.shift);
        w.bytes(&self.bytes);
        w.u64(self.len as u64);
    }

    /// `None` unless the table is well formed (a power-of-two size, every entry inside the arena).
    pub(super) fn read(r: &mut Reader) -> Option<Vocab> {
        let flat = r.u32s()?;
        let slots: Vec<Slot> = flat.chunks_exact(4).map(|c| Slot { tag: c[0], len: c[1], offset: c[2], id: c[3] }).collect();
        let (shift, bytes, len) = (r.u32()?, r.bytes()?.to_vec(), usize::try_from(r.u64()?).ok()?);
        let fits = |s: &Slot| s.len == 0 || (s.offset as usize).checked_add(s.len as usize).is_some_and(|end| end <= bytes.len());
        let well_formed = flat.len() % 4 == 0
            && slots.len().is_power_of_two()
            && shift == 64 - slots.len().trailing_zeros()
            && len < slots.len()
            && slots.iter().all(fits);
        well_formed.then_some(Vocab { slots, shift, bytes, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut v = Vocab::with_capacity(10);
        for i in 0..1000u32 {
            v.insert(format!("tok{i}").as_bytes(), i);
        }
        v.insert(b"tok7", 70);
        for i in 0..1000u32 {
            assert_eq!(v.get(format!("tok{i}").as_bytes()), Some(if i == 7 { 70 } else { i }));
        }
        assert_eq!(v.get(b"tok"), None);
        assert_eq!(v.get(b"tok1000"), None);
        assert_eq!(v.get(b""), None);
    }
}
