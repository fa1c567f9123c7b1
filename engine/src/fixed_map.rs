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
    used: bool,
}

#[derive(Clone)]
pub(crate) struct FixedMap<K, V> {
    slots: Box<[Slot<K, V>]>,
    mask: usize,
    len: usize,
    limit: usize,
    seed: u64,
}

impl<K: MapKey + Default, V: Copy + Default> FixedMap<K, V> {
    /// A map that holds up to `limit` entries at a load factor of at most 1/2.
    pub(crate) fn with_limit(limit: usize, seed: u64) -> Self {
        let cap = (limit.max(1) * 2).next_power_of_two();
        let empty = Slot {
            key: K::default(),
            val: V::default(),
            used: false,
        };
        Self {
            slots: vec![empty; cap].into_boxed_slice(),
            mask: cap - 1,
            len: 0,
            limit,
            seed,
        }
    }

    #[inline]
    fn find(&self, key: &K) -> Option<usize> {
        let mut i = (key.hash64(self.seed) as usize) & self.mask;
        loop {
            let s = &self.slots[i];
            if !s.used {
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
            let s = &mut self.slots[i];
            if !s.used {
                if self.len >= self.limit {
                    return false;
                }
                *s = Slot {
                    key,
                    val,
                    used: true,
                };
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
        self.slots[hole].used = false;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            if !self.slots[j].used {
                break;
            }
            let home = (self.slots[j].key.hash64(self.seed) as usize) & self.mask;
            // Move the entry back into the hole if the hole lies on its probe path.
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = self.slots[j];
                self.slots[j].used = false;
                hole = j;
            }
        }
        Some(val)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
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
}
