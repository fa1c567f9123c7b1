//! One instrument's book: a dense array of price levels per side over the price band, with a
//! two-level bitmap of non-empty levels so the best price is O(1) to read and cheap to advance,
//! and two levels of quantity sums (per 64 levels, per 4,096 levels) so the quantity between
//! two prices — what a fill-or-kill check needs — is bounded work however deep the book is.

use crate::config::InstrumentSpec;
use crate::types::{Price, Qty, Side};

pub(crate) const NIL: u32 = u32::MAX;

/// One price level: an intrusive FIFO of order handles plus its total open quantity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) qty: Qty,
}

const EMPTY_LEVEL: Level = Level {
    head: NIL,
    tail: NIL,
    qty: 0,
};

#[derive(Clone)]
pub(crate) struct BookSide {
    pub(crate) levels: Box<[Level]>,
    words: Box<[u64]>,
    summary: Box<[u64]>,
    /// Index of the best non-empty level, or NIL.
    pub(crate) best: u32,
    is_bid: bool,
    /// Open quantity of each block of 64 levels (the levels of one bitmap word).
    block_qty: Box<[Qty]>,
    /// Open quantity of each group of 4,096 levels (the levels of one summary word).
    group_qty: Box<[Qty]>,
}

/// Levels per block (one bitmap word).
const BLOCK: usize = 64;
/// Levels per group (one summary word).
const GROUP: usize = 64 * 64;

impl BookSide {
    fn new(ticks: usize, is_bid: bool) -> Self {
        let words = ticks.div_ceil(64);
        let summary = words.div_ceil(64);
        Self {
            levels: vec![EMPTY_LEVEL; ticks].into_boxed_slice(),
            words: vec![0; words].into_boxed_slice(),
            summary: vec![0; summary].into_boxed_slice(),
            best: NIL,
            is_bid,
            block_qty: vec![0; words].into_boxed_slice(),
            group_qty: vec![0; summary].into_boxed_slice(),
        }
    }

    /// Adds `q` to level `i`'s open quantity (and to its block's and group's); returns the
    /// level's new quantity. Sums cannot overflow: the configuration bounds
    /// `max_qty × max_orders` by `u64::MAX`.
    #[inline]
    pub(crate) fn add_qty(&mut self, i: u32, q: Qty) -> Qty {
        let i = i as usize;
        self.block_qty[i / BLOCK] += q;
        self.group_qty[i / GROUP] += q;
        let level = &mut self.levels[i];
        level.qty += q;
        level.qty
    }

    /// Takes `q` from level `i`'s open quantity (and from its block's and group's); returns
    /// the level's new quantity.
    #[inline]
    pub(crate) fn sub_qty(&mut self, i: u32, q: Qty) -> Qty {
        let i = i as usize;
        self.block_qty[i / BLOCK] -= q;
        self.group_qty[i / GROUP] -= q;
        let level = &mut self.levels[i];
        level.qty -= q;
        level.qty
    }

    /// Whether the levels from `from` (inclusive, in priority order) up to `to` (inclusive;
    /// worse than or equal to `from`) hold at least `want` open quantity. Walks levels, then
    /// blocks, then groups, then back down near `to`, stopping as soon as the sum is reached:
    /// at most ~2 × (64 + 64) steps plus one per 4,096 levels of band, whatever the book holds.
    pub(crate) fn holds_at_least(&self, from: u32, to: u32, want: Qty) -> bool {
        let mut sum: Qty = 0;
        let (from, to) = (from as usize, to as usize);
        if self.is_bid {
            // Priority runs downwards: from ≥ to. `pos` is one past the next level to add.
            let mut pos = from + 1;
            while pos > to {
                if pos % GROUP == 0 && pos - GROUP >= to {
                    sum += self.group_qty[pos / GROUP - 1];
                    pos -= GROUP;
                } else if pos % BLOCK == 0 && pos - BLOCK >= to {
                    sum += self.block_qty[pos / BLOCK - 1];
                    pos -= BLOCK;
                } else {
                    sum += self.levels[pos - 1].qty;
                    pos -= 1;
                }
                if sum >= want {
                    return true;
                }
            }
        } else {
            let mut pos = from;
            while pos <= to {
                if pos % GROUP == 0 && pos + GROUP - 1 <= to {
                    sum += self.group_qty[pos / GROUP];
                    pos += GROUP;
                } else if pos % BLOCK == 0 && pos + BLOCK - 1 <= to {
                    sum += self.block_qty[pos / BLOCK];
                    pos += BLOCK;
                } else {
                    sum += self.levels[pos].qty;
                    pos += 1;
                }
                if sum >= want {
                    return true;
                }
            }
        }
        false
    }

    /// Whether the per-block and per-group sums agree with the non-empty levels (integrity
    /// checks): each non-empty block's sum is its marked levels' quantities, and each group's
    /// sum is both its non-empty blocks' sums and all its blocks' sums (so a stale sum in an
    /// empty block shows). Costs one step per non-empty level and per block.
    pub(crate) fn sums_consistent(&self) -> bool {
        const WORDS_PER_GROUP: usize = GROUP / BLOCK;
        for (g, &want) in self.group_qty.iter().enumerate() {
            let mut group: Qty = 0;
            let mut blocks = self.summary[g];
            while blocks != 0 {
                let w = g * WORDS_PER_GROUP + blocks.trailing_zeros() as usize;
                blocks &= blocks - 1;
                let mut block: Qty = 0;
                let mut levels = self.words[w];
                while levels != 0 {
                    block += self.levels[w * BLOCK + levels.trailing_zeros() as usize].qty;
                    levels &= levels - 1;
                }
                if block != self.block_qty[w] {
                    return false;
                }
                group += block;
            }
            // Empty blocks must add nothing: every block's sum together is the group's.
            let words = g * WORDS_PER_GROUP..((g + 1) * WORDS_PER_GROUP).min(self.block_qty.len());
            if group != want || self.block_qty[words].iter().sum::<Qty>() != want {
                return false;
            }
        }
        true
    }

    /// Marks level `i` non-empty and updates the best index.
    #[inline]
    pub(crate) fn mark_non_empty(&mut self, i: u32) {
        let w = (i >> 6) as usize;
        self.words[w] |= 1 << (i & 63);
        self.summary[w >> 6] |= 1 << (w & 63);
        if self.best == NIL || (self.is_bid && i > self.best) || (!self.is_bid && i < self.best) {
            self.best = i;
        }
    }

    /// Marks level `i` empty and, if it was the best, finds the next best.
    #[inline]
    pub(crate) fn mark_empty(&mut self, i: u32) {
        let w = (i >> 6) as usize;
        self.words[w] &= !(1 << (i & 63));
        if self.words[w] == 0 {
            self.summary[w >> 6] &= !(1 << (w & 63));
        }
        if i == self.best {
            self.best = self.next_worse(i);
        }
    }

    /// The next non-empty level after `i` in priority order (lower for bids, higher for asks).
    #[inline]
    pub(crate) fn next_worse(&self, i: u32) -> u32 {
        if self.is_bid {
            self.highest_below(i)
        } else {
            self.lowest_above(i)
        }
    }

    fn lowest_above(&self, i: u32) -> u32 {
        let j = i as usize + 1;
        if j >= self.levels.len() {
            return NIL;
        }
        let w = j >> 6;
        let m = self.words[w] & (!0u64 << (j & 63));
        if m != 0 {
            return ((w << 6) + m.trailing_zeros() as usize) as u32;
        }
        let w2 = w + 1;
        if w2 >= self.words.len() {
            return NIL;
        }
        let mut s = w2 >> 6;
        let mut m = self.summary[s] & (!0u64 << (w2 & 63));
        loop {
            if m != 0 {
                let ww = (s << 6) + m.trailing_zeros() as usize;
                return ((ww << 6) + self.words[ww].trailing_zeros() as usize) as u32;
            }
            s += 1;
            if s >= self.summary.len() {
                return NIL;
            }
            m = self.summary[s];
        }
    }

    fn highest_below(&self, i: u32) -> u32 {
        if i == 0 {
            return NIL;
        }
        let j = i as usize - 1;
        let w = j >> 6;
        let m = self.words[w] & (!0u64 >> (63 - (j & 63)));
        if m != 0 {
            return ((w << 6) + 63 - m.leading_zeros() as usize) as u32;
        }
        if w == 0 {
            return NIL;
        }
        let w2 = w - 1;
        let mut s = w2 >> 6;
        let mut m = self.summary[s] & (!0u64 >> (63 - (w2 & 63)));
        loop {
            if m != 0 {
                let ww = (s << 6) + 63 - m.leading_zeros() as usize;
                return ((ww << 6) + 63 - self.words[ww].leading_zeros() as usize) as u32;
            }
            if s == 0 {
                return NIL;
            }
            s -= 1;
            m = self.summary[s];
        }
    }
}

#[derive(Clone)]
pub(crate) struct Book {
    pub(crate) spec: InstrumentSpec,
    pub(crate) halted: bool,
    pub(crate) sides: [BookSide; 2],
}

impl Book {
    pub(crate) fn new(spec: InstrumentSpec) -> Self {
        let ticks = usize::try_from(spec.band_ticks()).expect("band validated");
        Self {
            spec,
            halted: false,
            sides: [BookSide::new(ticks, true), BookSide::new(ticks, false)],
        }
    }

    /// Level index of a validated (on-tick, in-band) price.
    #[inline]
    pub(crate) fn index(&self, price: Price) -> u32 {
        ((price - self.spec.min_price) / self.spec.tick_size) as u32
    }

    #[inline]
    pub(crate) fn price(&self, index: u32) -> Price {
        self.spec.min_price + u64::from(index) * self.spec.tick_size
    }

    #[inline]
    pub(crate) fn side(&self, side: Side) -> &BookSide {
        &self.sides[side.index()]
    }

    /// Best price on `side`, if any.
    #[inline]
    pub(crate) fn best_price(&self, side: Side) -> Option<Price> {
        let b = self.side(side).best;
        (b != NIL).then(|| self.price(b))
    }
}

#[cfg(test)]
mod tests {
    use super::{BookSide, NIL};
    use std::collections::BTreeSet;

    #[test]
    fn bitmap_best_tracking_matches_a_btreeset() {
        for &n in &[1usize, 63, 64, 65, 4096, 4097, 300_000] {
            for is_bid in [true, false] {
                let mut s = BookSide::new(n, is_bid);
                let mut r = BTreeSet::new();
                let mut x: u64 = 42 + n as u64;
                for _ in 0..20_000 {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let i = ((x >> 33) % n as u64) as u32;
                    if r.contains(&i) {
                        r.remove(&i);
                        s.mark_empty(i);
                    } else {
                        r.insert(i);
                        s.mark_non_empty(i);
                    }
                    let want = if is_bid {
                        r.iter().next_back()
                    } else {
                        r.iter().next()
                    };
                    assert_eq!(s.best, want.copied().unwrap_or(NIL));
                    // walking from best visits every element in priority order
                    if r.len() < 50 {
                        let mut got = vec![];
                        let mut c = s.best;
                        while c != NIL {
                            got.push(c);
                            c = s.next_worse(c);
                        }
                        let mut want: Vec<u32> = r.iter().copied().collect();
                        if is_bid {
                            want.reverse();
                        }
                        assert_eq!(got, want);
                    }
                }
            }
        }
    }

    #[test]
    fn range_quantity_checks_agree_with_a_plain_sum() {
        for &n in &[1usize, 63, 64, 65, 4096, 4097, 20_000] {
            for is_bid in [true, false] {
                let mut s = BookSide::new(n, is_bid);
                let mut x: u64 = 7 + n as u64;
                let mut next = || {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    x >> 33
                };
                for _ in 0..3_000 {
                    let i = (next() % n as u64) as u32;
                    let q = next() % 5;
                    let was = s.levels[i as usize].qty;
                    let now = if next() % 3 == 0 && was >= q {
                        s.sub_qty(i, q)
                    } else {
                        s.add_qty(i, q)
                    };
                    // The book marks exactly the levels holding quantity.
                    if was == 0 && now > 0 {
                        s.mark_non_empty(i);
                    } else if was > 0 && now == 0 {
                        s.mark_empty(i);
                    }
                    assert!(s.sums_consistent());
                    let (a, b) = ((next() % n as u64) as u32, (next() % n as u64) as u32);
                    let (lo, hi) = (a.min(b), a.max(b));
                    let total: u64 = (lo..=hi).map(|k| s.levels[k as usize].qty).sum();
                    let (from, to) = if is_bid { (hi, lo) } else { (lo, hi) };
                    for want in [1, total.max(1), total + 1, total / 2 + 1] {
                        assert_eq!(
                            s.holds_at_least(from, to, want),
                            total >= want,
                            "n {n} bid {is_bid} [{lo}, {hi}] total {total} want {want}"
                        );
                    }
                }
                // A stale sum, in an empty block or not, is found.
                let last = s.block_qty.len() - 1;
                s.block_qty[last] += 1;
                assert!(!s.sums_consistent());
                s.block_qty[last] -= 1;
                s.group_qty[0] += 1;
                assert!(!s.sums_consistent());
            }
        }
    }
}
