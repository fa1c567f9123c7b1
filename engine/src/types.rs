//! Primitive identifiers and small enums shared by commands and events.
//!
//! Prices are integers in the instrument's price unit and must be a multiple of its tick size;
//! quantities are integers in the instrument's quantity unit and must be a multiple of its lot size.
//! There are no floats anywhere in matching.

/// Price in the instrument's integer price unit (a multiple of the tick size).
pub type Price = u64;
/// Quantity in the instrument's integer quantity unit (a multiple of the lot size).
pub type Qty = u64;
/// Engine-assigned order id; strictly increasing, never reused.
pub type OrderId = u64;
/// Account (trading participant) id.
pub type AccountId = u32;
/// Client-chosen order id, unique among one account's live orders.
pub type ClientOrderId = u64;
/// Instrument id.
pub type SymbolId = u32;
/// Engine sequence number; every event gets the next one.
pub type Seq = u64;
/// Engine-assigned trade id; strictly increasing.
pub type TradeId = u64;

macro_rules! u8_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v = $n),+ }
        impl $name {
            /// Decodes the stable wire/snapshot code; `None` for an unknown code.
            #[must_use]
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v { $($n => Some(Self::$v),)+ _ => None }
            }
            /// The stable wire/snapshot code.
            #[must_use]
            pub const fn as_u8(self) -> u8 { self as u8 }
        }
    };
}
pub(crate) use u8_enum;

u8_enum!(
    /// Order side.
    Side {
        /// Bid.
        Buy = 0,
        /// Ask.
        Sell = 1,
    }
);

impl Side {
    /// The other side.
    #[must_use]
    #[inline]
    pub const fn opposite(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    #[inline]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

u8_enum!(
    /// Limit or market.
    OrderType {
        /// Executes at its limit price or better; a GTC remainder rests.
        Limit = 0,
        /// Executes against whatever liquidity exists; never rests. Must be IOC or FOK, price 0.
        Market = 1,
    }
);

u8_enum!(
    /// Time in force.
    TimeInForce {
        /// Good till cancelled: the remainder rests on the book.
        Gtc = 0,
        /// Immediate or cancel: the remainder is cancelled (`Done`/`Expired`).
        Ioc = 1,
        /// Fill or kill: fills completely at once, or is rejected with no trade at all.
        Fok = 2,
    }
);

u8_enum!(
    /// Self-trade prevention mode, chosen by the incoming (taker) order.
    SelfTradePrevention {
        /// Orders of the same account may trade with each other.
        Allow = 0,
        /// Cancel the incoming order's remainder; the resting order stays.
        CancelNewest = 1,
        /// Cancel the resting order and keep matching.
        CancelOldest = 2,
        /// Cancel both the resting order and the incoming remainder.
        CancelBoth = 3,
    }
);
