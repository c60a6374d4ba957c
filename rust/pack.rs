//! Sample lengths → packs of at most `capacity` tokens, by best-fit decreasing.
//!
//! Longest sample first; each goes into the open pack with the least room that still fits it
//! (ties: the oldest pack), else into a new pack. Deterministic (ties broken by index), every
//! sample exactly once, no pack over capacity. O(n log n): the open packs sit in a B-tree keyed by
//! (room left, pack id). Ten million samples take a few seconds.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packs {
    /// Sample indices, pack after pack.
    pub order: Vec<u64>,
    /// Pack `j` is `order[bounds[j]..bounds[j + 1]]`; `bounds.len()` = packs + 1.
    pub bounds: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("capacity must be positive")]
    ZeroCapacity,
    #[error("sample {index} has {length} tokens, more than the pack length {capacity}; prepare with --max-len {capacity} or raise --pack-len")]
    TooLong { index: usize, length: u64, capacity: u64 },
}

pub fn pack_best_fit_decreasing(lengths: &[u64], capacity: u64) -> Result<Packs, PackError> {
    if capacity == 0 {
        return Err(PackError::ZeroCapacity);
    }
    if let Some((index, &length)) = lengths.iter().enumerate().find(|(_, &l)| l > capacity) {
        return Err(PackError::TooLong { index, length, capacity });
    }
    let mut by_length: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep index order, so the result is deterministic.
    by_length.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));

    let mut open: BTreeSet<(u64, usize)> = BTreeSet::new(); // (room left, pack id)
    let mut members: Vec<Vec<u64>> = Vec::new();
    for index in by_length {
        let length = lengths[index];
        let best = open.range((length, 0)..).next().copied();
        let pack = match best {
            Some(key @ (room, pack)) => {
                open.remove(&key);
                if room > length {
                    open.insert((room - length, pack));
                }
                pack
            }
            None => {
                members.push(Vec::new());
                let pack = members.len() - 1;
                if capacity > length {
                    open.insert((capacity - length, pack));
                }
                pack
            }
        };
        members[pack].push(index as u64);
    }
    let mut order = Vec::with_capacity(lengths.len());
    let mut bounds = Vec::with_capacity(members.len() + 1);
    bounds.push(0);
    for pack in members {
        order.extend(pack);
        bounds.push(order.len() as u64);
    }
    Ok(Packs { order, bounds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_a_known_example() {
        // 7 goes first into pack 0 (room 3); 5 opens pack 1 (room 5); 4 fits pack 1 best
        // (room 5 ≥ 4, tighter than... pack 0 has room 3 < 4); 3 fills pack 0; 1 fills pack 1.
        let packs = pack_best_fit_decreasing(&[3, 7, 5, 1, 4], 10).unwrap();
        assert_eq!(packs.order, vec![1, 0, 2, 4, 3]);
        assert_eq!(packs.bounds, vec![0, 2, 5]);
    }

    #[test]
    fn rejects_a_sample_longer_than_capacity() {
        assert_eq!(pack_best_fit_decreasing(&[1, 11], 10), Err(PackError::TooLong { index: 1, length: 11, capacity: 10 }));
        assert_eq!(pack_best_fit_decreasing(&[1], 0), Err(PackError::ZeroCapacity));
    }

    proptest! {
        #[test]
        fn every_sample_once_and_no_pack_over_capacity(lengths in prop::collection::vec(1u64..=64, 0..300), capacity in 64u64..200) {
            let packs = pack_best_fit_decreasing(&lengths, capacity).unwrap();
            let mut seen = packs.order.clone();
            seen.sort();
            prop_assert_eq!(seen, (0..lengths.len() as u64).collect::<Vec<_>>());
            for pair in packs.bounds.windows(2) {
                let total: u64 = packs.order[pair[0] as usize..pair[1] as usize].iter().map(|&i| lengths[i as usize]).sum();
                prop_assert!(total <= capacity && total > 0);
            }
            prop_assert_eq!(pack_best_fit_decreasing(&lengths, capacity).unwrap(), packs);
        }
    }
}
