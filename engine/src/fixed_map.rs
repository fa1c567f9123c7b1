//! A fixed-capacity open-addressing hash map (linear probing, backward-shift deletion).
//!
//! Capacity is chosen at construction and never grows, so inserts and removes never allocate.
//! Hashing is seeded but deterministic: iteration order is never observable by the engine.

pub(crate) trait MapKey: Copy + Eq {
    fn hash64(&self, seed: u64) -> u64;
}

#[inline]
fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MapKey for u32 {
    #[inline]
    fn hash64(&self, seed: u64) -> u64 {
        mix(u64::from(*self) ^ seed)
    }
}
impl MapKey for u64 {
    #[inline]
    fn hash64(&self, seed: u64) -> u64 {
        mix(*self ^ seed)
    }
}
/// An engine-assigned order id. Ids are issued in increasing order, so hashing them by
/// identity lays the live orders (mostly recent ids) out next to each other: a lookup stays in
/// cache however large the table is. Clients cannot choose them, so they cannot collide them
/// on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OrderKey(pub(crate) u64);

impl MapKey for OrderKey {
    #[inline]
    fn hash64(&self, _seed: u64) -> u64 {
        self.0
    }
}

impl MapKey for (u32, u64) {
    #[inline]
    fn hash64(&self, seed: u64) -> u64 {
        mix(self.1 ^ seed ^ mix(u64::from(self.0).wrapping_add(0x9e37_79b9_7f4a_7c15)))
    }
}

#[derive(Clone, Copy)]
struct Slot<K, V> {
    key: K,
    val: V,
    /// In use when equal to the map's `era` (0 = never in use).
    era: u32,
}

#[derive(Clone)]
pub(crate) struct FixedMap<K, V> {
    slots: Box<[Slot<K, V>]>,
    mask: usize,
    len: usize,
    limit: usize,
    seed: u64,
    /// The era of the slots in use: [`FixedMap::clear`] starts a new one.
    era: u32,
}

impl<K: MapKey + Default, V: Copy + Default> FixedMap<K, V> {
    /// A map that holds up to `limit` entries at a load factor of at most 1/2.
    pub(crate) fn with_limit(limit: usize, seed: u64) -> Self {
        let cap = (limit.max(1) * 2).next_power_of_two();
        let empty = Slot {
            key: K::default(),
            val: V::default(),
            era: 0,
        };
        Self {
            slots: vec![empty; cap].into_boxed_slice(),
            mask: cap - 1,
            len: 0,
            limit,
            seed,
            era: 1,
        }
    }

    #[inline]
    fn find(&self, key: &K) -> Option<usize> {
        let mut i = (key.hash64(self.seed) as usize) & self.mask;
        loop {
            let s = &self.slots[i];
            if s.era != self.era {
                return None;
            }
            if s.key == *key {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Asks the CPU to start loading the slot `key` hashes to (a hint; no effect on the map).
    #[inline]
    pub(crate) fn prefetch(&self, key: &K) {
        let i = (key.hash64(self.seed) as usize) & self.mask;
        crate::prefetch::read(&self.slots[i]);
    }

    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.find(key).map(|i| self.slots[i].val)
    }

    #[inline]
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.find(key).is_some()
    }

    /// Inserts or overwrites. Returns `false` (and changes nothing) when full.
    #[inline]
    pub(crate) fn insert(&mut self, key: K, val: V) -> bool {
        let mut i = (key.hash64(self.seed) as usize) & self.mask;
        loop {
            let era = self.era;
            let s = &mut self.slots[i];
            if s.era != era {
                if self.len >= self.limit {
                    return false;
                }
                *s = Slot { key, val, era };
                self.len += 1;
                return true;
            }
            if s.key == key {
                s.val = val;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let mut hole = self.find(key)?;
        let val = self.slots[hole].val;
        self.slots[hole].era = 0;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            if self.slots[j].era != self.era {
                break;
            }
            let home = (self.slots[j].key.hash64(self.seed) as usize) & self.mask;
            // Move the entry back into the hole if the hole lies on its probe path.
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = self.slots[j];
                self.slots[j].era = 0;
                hole = j;
            }
        }
        Some(val)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Empties the map in O(1): the slots of the old era read as empty from now on.
    pub(crate) fn clear(&mut self) {
        self.era = self.era.wrapping_add(1);
        if self.era == 0 {
            // After 2^32 - 1 clears: rewrite every slot once, so no old era comes back.
            for s in self.slots.iter_mut() {
                s.era = 0;
            }
            self.era = 1;
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::FixedMap;
    use std::collections::HashMap;

    #[test]
    fn behaves_like_a_hashmap_under_churn() {
        let mut m: FixedMap<u64, u32> = FixedMap::with_limit(500, 7);
        let mut r: HashMap<u64, u32> = HashMap::new();
        let mut x: u64 = 1;
        for step in 0..200_000u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let k = (x >> 33) % 1000;
            if x & 1 == 0 {
                let ok = m.insert(k, step);
                if r.len() < 500 || r.contains_key(&k) {
                    assert!(ok);
                    r.insert(k, step);
                } else {
                    assert!(!ok, "insert beyond the limit must fail");
                }
            } else {
                assert_eq!(m.remove(&k), r.remove(&k));
            }
            assert_eq!(m.len(), r.len());
            assert_eq!(m.get(&k), r.get(&k).copied());
        }
        for (k, v) in &r {
            assert_eq!(m.get(k), Some(*v));
        }
    }

    /// Dense runs (identity-hashed ids, mostly consecutive, and consecutive client ids) with
    /// removals anywhere in them and wrap-around at the table's end, against a `HashMap`.
    #[test]
    fn dense_runs_behave_like_a_hashmap() {
        use super::OrderKey;
        let mut ids: FixedMap<OrderKey, u64> = FixedMap::with_limit(300, 0);
        let mut cids: FixedMap<(u32, u64), u64> = FixedMap::with_limit(300, 9);
        let mut r: HashMap<u64, u64> = HashMap::new();
        let mut x: u64 = 7;
        let mut next = 1u64;
        for step in 0..300_000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            if x >> 62 != 0 && r.len() < 300 {
                // Mostly the next id, sometimes one a little further on (gaps).
                let k = next + (x >> 59 & 3);
                next = k + 1;
                if let std::collections::hash_map::Entry::Vacant(e) = r.entry(k) {
                    e.insert(step);
                    assert!(ids.insert(OrderKey(k), step));
                    assert!(cids.insert((3, k), step));
                }
            } else if !r.is_empty() {
                // Remove a live id near the recent end or anywhere.
                let back = if x & 1 == 0 {
                    (x >> 40) % 8
                } else {
                    (x >> 40) % 600
                };
                let k = (next - 1).saturating_sub(back);
                let want = r.remove(&k);
                assert_eq!(ids.remove(&OrderKey(k)), want);
                assert_eq!(cids.remove(&(3, k)), want);
            }
            assert_eq!(ids.len(), r.len());
            assert_eq!(cids.len(), r.len());
        }
        for (k, v) in &r {
            assert_eq!(ids.get(&OrderKey(*k)), Some(*v));
            assert_eq!(cids.get(&(3, *k)), Some(*v));
        }
    }

    #[test]
    fn clear_empties_the_map_and_its_slots_are_reused_across_eras_and_the_era_wrap() {
        let mut m: FixedMap<u64, u32> = FixedMap::with_limit(64, 3);
        for round in 0..6u32 {
            if round == 3 {
                // Slots of eras 1..=3 are left over; this round's clear wraps the era counter,
                // which must rewrite every slot once so that none of them comes back.
                m.era = u32::MAX;
            }
            for k in 0..64u64 {
                assert!(
                    m.insert(k * 7 + u64::from(round), round),
                    "room after a clear"
                );
            }
            assert!(!m.insert(10_000, round), "full at the limit");
            assert_eq!(m.remove(&(u64::from(round))), Some(round));
            assert_eq!(m.len(), 63);
            m.clear();
            assert_eq!(m.len(), 0);
            for k in 0..64u64 {
                assert_eq!(
                    m.get(&(k * 7 + u64::from(round))),
                    None,
                    "round {round}: {k} cleared"
                );
            }
        }
        assert_eq!(
            m.era, 3,
            "wrapped to era 1 at the fourth clear, then two more"
        );
    }
}
