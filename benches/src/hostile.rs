//! A hostile client's flow for the engine benchmark: what one account can send through the
//! protocol's rules to make the engine thread slow.
//!
//! - **Colliding client order ids.** The engine's `(account, client order id)` index is an
//!   open-addressing table hashed with a splitmix64 finaliser, which is invertible: knowing the
//!   seed, a client can pick ids whose hashes share their low 20 bits, so its live orders form
//!   one long probe run that its own inserts and lookups (and every other key that lands in the
//!   run) must walk. A node draws a secret seed per process; a seed the attacker knows (the
//!   public default of earlier versions) is the "before".
//! - **Deep fill-or-kill orders.** The hostile account spreads 1-lot orders over thousands of
//!   price levels far from the market, then sends FOK orders too large to fill, with the widest
//!   limit, which older versions answered by walking every level.

use caldera_engine::{
    Cancel, Command, Engine, EngineConfig, Event, EventBody, MassCancel, NewOrder, OrderRef,
    OrderType, SelfTradePrevention, Side, TimeInForce,
};
use std::collections::HashMap;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The engine's hash finaliser (splitmix64's).
#[must_use]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The inverse of [`mix`].
#[must_use]
pub fn unmix(mut z: u64) -> u64 {
    z ^= (z >> 31) ^ (z >> 62);
    z = z.wrapping_mul(0x3196_42b2_d24d_8ec3);
    z ^= (z >> 27) ^ (z >> 54);
    z = z.wrapping_mul(0x96de_1b17_3f11_9089);
    z ^ (z >> 30) ^ (z >> 60)
}

/// How the engine hashes an `(account, client order id)` key with a table seed.
#[must_use]
pub fn key_hash(account: u32, client_order_id: u64, table_seed: u64) -> u64 {
    mix(client_order_id ^ table_seed ^ mix(u64::from(account).wrapping_add(GOLDEN)))
}

/// The seed of the engine's client-order-id index for an engine `hash_seed`.
#[must_use]
pub fn client_index_seed(hash_seed: u64) -> u64 {
    hash_seed.rotate_left(29)
}

/// `n` client order ids of `account` whose hashes under `hash_seed`'s client index all end in
/// the same 20 bits: one slot of any table up to 2^20 slots.
#[must_use]
pub fn colliding_ids(account: u32, hash_seed: u64, n: usize) -> Vec<u64> {
    let seed = client_index_seed(hash_seed);
    let salt = mix(u64::from(account).wrapping_add(GOLDEN));
    (1..=n as u64)
        .map(|k| unmix((k << 20) | 0x5_a5a5) ^ seed ^ salt)
        .collect()
}

/// Shape of the hostile flow.
#[derive(Clone, Debug)]
pub struct Hostile {
    /// The hostile account (must fit the engine's account slots).
    pub account: u32,
    /// The seed the attacker crafts its ids for.
    pub known_seed: u64,
    /// One command in this many is the attacker's.
    pub every: usize,
    /// Live orders the attacker keeps (its ids' probe run).
    pub resting: usize,
    /// The instrument.
    pub symbol: u32,
    /// Highest price of the band (the attacker's orders sit just below it).
    pub max_price: u64,
}

/// Interleaves a hostile account's commands into `normal`: first it rests `resting` 1-lot
/// sells with colliding ids on distinct levels just below `max_price`; then it keeps the run
/// long by cancelling its oldest order (by client id) and placing a new one with the next
/// colliding id, in turn, and every tenth of its commands is a buy FOK too large to fill, limited at
/// `max_price` (every other one with self-trade prevention on).
///
/// The hostile orders take engine order ids, so the normal flow's cancels and replaces (which
/// name engine ids) are renumbered: both flows run through engines built from `cfg` here, and
/// each normal order's id in the normal-only run is mapped to its id in the mixed run. The
/// normal commands then do exactly the work they do alone (the hostile orders rest far from
/// the market and never trade with them).
///
/// # Panics
/// If `cfg` is not a valid engine configuration for both flows.
#[must_use]
pub fn interleave(normal: &[Command], h: &Hostile, cfg: &EngineConfig) -> Vec<Command> {
    let mixed = interleave_raw(normal, h);
    let mut alone = Engine::new(cfg.clone()).expect("config");
    let mut together = Engine::new(cfg.clone()).expect("config");
    let mut ids: HashMap<u64, u64> = HashMap::new();
    let mut out = Vec::with_capacity(mixed.len());
    let (mut ea, mut et): (Vec<Event>, Vec<Event>) = (Vec::new(), Vec::new());
    let accepted = |evs: &[Event]| {
        evs.iter().find_map(|e| match e.body {
            EventBody::Accepted(a) => Some(a.order_id),
            _ => None,
        })
    };
    for (c, is_normal) in mixed {
        let mut c = c;
        if is_normal {
            ea.clear();
            alone.process(&c, &mut ea);
            let map = |r: &mut OrderRef| {
                if let OrderRef::Id(id) = r {
                    *id = ids.get(id).copied().unwrap_or(*id);
                }
            };
            match &mut c {
                Command::Cancel(x) => map(&mut x.target),
                Command::Replace(x) => map(&mut x.target),
                _ => {}
            }
        }
        et.clear();
        together.process(&c, &mut et);
        if is_normal {
            if let (Some(a), Some(t)) = (accepted(&ea), accepted(&et)) {
                ids.insert(a, t);
            }
        }
        out.push(c);
    }
    out
}

fn interleave_raw(normal: &[Command], h: &Hostile) -> Vec<(Command, bool)> {
    let hostile_total = normal.len() / h.every.max(1) + h.resting + 1;
    let ids = colliding_ids(h.account, h.known_seed, hostile_total + 16);
    let mut out = Vec::with_capacity(normal.len() + hostile_total);
    let (mut placed, mut n) = (0usize, 0usize);
    // The hostile account's resting orders (client ids), oldest first.
    let mut live = std::collections::VecDeque::with_capacity(h.resting + 1);
    let rest = |cl: u64, k: usize| {
        Command::New(NewOrder {
            account: h.account,
            client_order_id: cl,
            symbol: h.symbol,
            side: Side::Sell,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            post_only: false,
            price: h.max_price - 2 * (k % h.resting.max(1)) as u64,
            qty: 1,
            stp: SelfTradePrevention::Allow,
        })
    };
    for c in normal {
        out.push((*c, true));
        n += 1;
        if !n.is_multiple_of(h.every.max(1)) {
            continue;
        }
        if placed < h.resting {
            out.push((rest(ids[placed], placed), false));
            live.push_back(ids[placed]);
            placed += 1;
            continue;
        }
        let step = n / h.every.max(1);
        if step.is_multiple_of(10) {
            out.push((
                Command::New(NewOrder {
                    account: h.account,
                    client_order_id: ids[placed],
                    symbol: h.symbol,
                    side: Side::Buy,
                    order_type: OrderType::Limit,
                    tif: TimeInForce::Fok,
                    post_only: false,
                    price: h.max_price,
                    qty: 900_000,
                    stp: if step.is_multiple_of(20) {
                        SelfTradePrevention::CancelNewest
                    } else {
                        SelfTradePrevention::Allow
                    },
                }),
                false,
            ));
            placed += 1;
        } else if live.len() >= h.resting {
            let oldest = live.pop_front().expect("resting orders");
            out.push((
                Command::Cancel(Cancel {
                    account: h.account,
                    target: OrderRef::Client(oldest),
                }),
                false,
            ));
        } else {
            out.push((rest(ids[placed], placed), false));
            live.push_back(ids[placed]);
            placed += 1;
        }
    }
    out.push((
        Command::MassCancel(MassCancel {
            account: h.account,
            symbol: None,
        }),
        false,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmix_inverts_mix() {
        for x in [0u64, 1, 42, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(mix(unmix(x)), x);
            assert_eq!(unmix(mix(x)), x);
        }
    }

    #[test]
    fn crafted_ids_share_their_low_bits_under_the_known_seed_only() {
        let ids = colliding_ids(7, 99, 1000);
        let low = |seed| {
            ids.iter()
                .map(|&c| key_hash(7, c, client_index_seed(seed)) & 0xf_ffff)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert_eq!(low(99), 1, "all in one slot under the known seed");
        assert!(low(12_345) > 990, "spread out under another seed");
    }
}

#[cfg(test)]
mod flow_tests {
    use super::*;
    use caldera_testkit::flow::{generate, FlowConfig};

    #[test]
    fn normal_commands_do_the_same_work_between_the_hostile_ones() {
        let cfg = FlowConfig::default();
        let normal = generate(&cfg, 200_000);
        let mut ec = cfg.engine_config();
        ec.max_orders += 2016;
        let h = Hostile {
            account: ec.max_accounts - 1,
            known_seed: ec.hash_seed,
            every: 5,
            resting: 2000,
            symbol: 1,
            max_price: 200_000,
        };
        let mixed = interleave_raw(&normal, &h);
        let flow = interleave(&normal, &h, &ec);
        let mut alone = Engine::new(ec.clone()).unwrap();
        let mut together = Engine::new(ec.clone()).unwrap();
        let mut ni = 0;
        for (i, c) in flow.iter().enumerate() {
            let mut et = Vec::new();
            together.process(c, &mut et);
            if mixed[i].1 {
                let mut ea = Vec::new();
                alone.process(&normal[ni], &mut ea);
                ni += 1;
                let kinds = |v: &Vec<Event>| {
                    v.iter()
                        .map(|e| std::mem::discriminant(&e.body))
                        .collect::<Vec<_>>()
                };
                assert_eq!(kinds(&ea), kinds(&et), "diverged at {i}: {c:?}");
            }
        }
    }
}
