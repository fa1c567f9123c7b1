//! A realistic, seeded order flow per connection: a skewed choice of symbols, limits around a
//! walking mid, some market/IOC, cancels and replaces of the connection's own recent orders,
//! and a warm-up that fills the books. The flow is a pure function of (seed, connection): it
//! never depends on what the exchange answered, so the same seed sends the same requests.

use caldera_client::requests;
use caldera_client::wire::{self, Side, TimeInForce};
use caldera_client::ClientRequest;
use caldera_testkit::flow::Rng;

/// What a request is, for latency accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// New order.
    New,
    /// Cancel.
    Cancel,
    /// Replace.
    Replace,
}

/// Flow parameters shared by every connection.
#[derive(Clone, Debug)]
pub struct FlowParams {
    /// Seed.
    pub seed: u64,
    /// Symbols used (ids 1..=n); symbol k is chosen with weight 1/k (Zipf-like skew).
    pub symbols: u32,
    /// Mid price every symbol starts at.
    pub base_price: u64,
    /// Client order ids start after this. Runs against the same server must use disjoint
    /// ranges: the engine remembers recent ids (its dedupe window) and rejects reuse.
    pub client_id_base: u64,
}

/// One connection's flow.
pub struct Flow {
    rng: Rng,
    cumulative: Vec<u64>,
    mids: Vec<u64>,
    base: u64,
    next_cl: u64,
    recent: Vec<(u64, Side)>,
    recent_at: usize,
    /// GTC orders pushed out of `recent`: cancelled next, so each connection keeps a bounded
    /// number of resting orders whatever the timing.
    expired: std::collections::VecDeque<u64>,
}

const RECENT: usize = 128;

impl Flow {
    /// The flow of connection `conn`.
    #[must_use]
    pub fn new(p: &FlowParams, conn: u32) -> Self {
        let mut cumulative = Vec::new();
        let mut acc = 0u64;
        for k in 1..=u64::from(p.symbols) {
            acc += 1_000_000 / k;
            cumulative.push(acc);
        }
        Self {
            rng: Rng::new(
                p.seed
                    .wrapping_mul(0x9e37_79b9)
                    .wrapping_add(u64::from(conn)),
            ),
            cumulative,
            mids: vec![p.base_price; p.symbols as usize],
            base: p.base_price,
            next_cl: p.client_id_base,
            recent: Vec::with_capacity(RECENT),
            recent_at: 0,
            expired: std::collections::VecDeque::new(),
        }
    }

    fn symbol(&mut self) -> u32 {
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = self.rng.below(total);
        self.cumulative.iter().position(|c| x < *c).unwrap_or(0) as u32 + 1
    }

    fn remember(&mut self, cl: u64, side: Side) {
        if self.recent.len() < RECENT {
            self.recent.push((cl, side));
        } else {
            let old = std::mem::replace(&mut self.recent[self.recent_at], (cl, side));
            self.expired.push_back(old.0);
            self.recent_at = (self.recent_at + 1) % RECENT;
        }
    }

    fn side(&mut self) -> Side {
        if self.rng.percent(50) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// A passive GTC order a few ticks from the mid (warm-up: fills the books).
    pub fn warmup(&mut self) -> ClientRequest {
        let symbol = self.symbol();
        let side = self.side();
        let mid = self.mids[(symbol - 1) as usize];
        let depth = 1 + self.rng.below(50);
        let price = if side == Side::Buy {
            mid - depth
        } else {
            mid + depth
        };
        self.next_cl += 1;
        self.remember(self.next_cl, side);
        requests::limit(
            self.next_cl,
            symbol,
            side,
            TimeInForce::Gtc,
            price,
            1 + self.rng.below(100),
        )
    }

    /// The next request of the steady flow.
    pub fn next(&mut self) -> (ClientRequest, Kind) {
        let symbol = self.symbol();
        let i = (symbol - 1) as usize;
        if self.rng.percent(2) {
            let step = self.rng.below(3) as i64 - 1;
            self.mids[i] = (self.mids[i] as i64 + step)
                .clamp(self.base as i64 - 2, self.base as i64 + 2)
                as u64;
        }
        let mid = self.mids[i];
        // Mix: 25% cancel, 23% replace, 2% market, 5% IOC, 45% GTC limit (5% of them crossing).
        let mut roll = self.rng.below(100);
        if self.expired.len() > RECENT {
            roll = 0; // catch up on cancels before adding more resting orders
        }
        if roll < 25 && !self.recent.is_empty() {
            let cl = match self.expired.pop_front() {
                Some(cl) => cl,
                None => self.recent[self.rng.below(self.recent.len() as u64) as usize].0,
            };
            return (requests::cancel_client(cl), Kind::Cancel);
        }
        if roll < 48 && !self.recent.is_empty() {
            // Move a recent order to another passive price on its own side.
            let (cl, side) = self.recent[self.rng.below(self.recent.len() as u64) as usize];
            let depth = 1 + self.rng.below(30);
            let price = if side == Side::Buy {
                mid - depth
            } else {
                mid + depth
            };
            let r = ClientRequest::Replace(wire::Replace::new(
                0,
                cl,
                price,
                1 + self.rng.below(100),
                true,
            ));
            return (r, Kind::Replace);
        }
        let side = self.side();
        self.next_cl += 1;
        let cl = self.next_cl;
        if roll < 50 {
            return (
                requests::market(cl, symbol, side, 1 + self.rng.below(20)),
                Kind::New,
            );
        }
        if roll < 55 {
            let price = if side == Side::Buy {
                mid + self.rng.below(5)
            } else {
                mid - self.rng.below(5)
            };
            return (
                requests::limit(
                    cl,
                    symbol,
                    side,
                    TimeInForce::Ioc,
                    price,
                    1 + self.rng.below(50),
                ),
                Kind::New,
            );
        }
        // GTC limit: mostly passive, sometimes crossing.
        let crossing = self.rng.percent(5);
        let depth = self.rng.below(20);
        let price = match (side, crossing) {
            (Side::Buy, false) => mid - 1 - depth,
            (Side::Sell, false) => mid + 1 + depth,
            (Side::Buy, true) => mid + self.rng.below(3),
            _ => mid - self.rng.below(3),
        };
        self.remember(cl, side);
        (
            requests::limit(
                cl,
                symbol,
                side,
                TimeInForce::Gtc,
                price,
                1 + self.rng.below(100),
            ),
            Kind::New,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_flow_and_the_mix_is_mixed() {
        let p = FlowParams {
            seed: 9,
            symbols: 4,
            base_price: 100_000,
            client_id_base: 0,
        };
        let mut a = Flow::new(&p, 3);
        let mut b = Flow::new(&p, 3);
        let mut c = Flow::new(&p, 4);
        let mut kinds = [0usize; 3];
        let mut differs = false;
        for _ in 0..10_000 {
            let (x, k) = a.next();
            let (y, _) = b.next();
            let (z, _) = c.next();
            assert_eq!(x, y);
            differs |= x != z;
            kinds[k as usize] += 1;
        }
        assert!(differs, "connections get different flows");
        assert!(kinds.iter().all(|k| *k > 1000), "{kinds:?}");
    }
}
