//! Conversions between the engine's types and the wire enums. Wire → engine conversions are
//! fallible: a client can send any byte, so an out-of-range value is `None` (the gateway turns
//! it into an `InvalidEnumValue` reject).

use crate::wire;
use caldera_engine as e;

/// Engine side → wire side.
#[must_use]
pub fn side(s: e::Side) -> wire::Side {
    match s {
        e::Side::Buy => wire::Side::Buy,
        e::Side::Sell => wire::Side::Sell,
    }
}

/// Wire side → engine side.
#[must_use]
pub fn side_from(s: wire::Side) -> Option<e::Side> {
    e::Side::from_u8(s.0)
}

/// Wire order type → engine.
#[must_use]
pub fn order_type_from(t: wire::OrderType) -> Option<e::OrderType> {
    e::OrderType::from_u8(t.0)
}

/// Engine order type → wire.
#[must_use]
pub fn order_type(t: e::OrderType) -> wire::OrderType {
    wire::OrderType(t.as_u8())
}

/// Wire time in force → engine.
#[must_use]
pub fn tif_from(t: wire::TimeInForce) -> Option<e::TimeInForce> {
    e::TimeInForce::from_u8(t.0)
}

/// Engine time in force → wire.
#[must_use]
pub fn tif(t: e::TimeInForce) -> wire::TimeInForce {
    wire::TimeInForce(t.as_u8())
}

/// Wire self-trade prevention → engine.
#[must_use]
pub fn stp_from(s: wire::SelfTradePrevention) -> Option<e::SelfTradePrevention> {
    e::SelfTradePrevention::from_u8(s.0)
}

/// Engine self-trade prevention → wire.
#[must_use]
pub fn stp(s: e::SelfTradePrevention) -> wire::SelfTradePrevention {
    wire::SelfTradePrevention(s.as_u8())
}

/// Engine reject reason → wire (same numeric codes).
#[must_use]
pub fn reject_reason(r: e::RejectReason) -> wire::RejectReason {
    wire::RejectReason(u16::from(r.as_u8()))
}

/// Engine request kind → wire (same numeric codes).
#[must_use]
pub fn request_kind(r: e::RequestKind) -> wire::RequestKind {
    wire::RequestKind(r.as_u8())
}

/// Engine done reason → wire (same numeric codes).
#[must_use]
pub fn done_reason(r: e::DoneReason) -> wire::DoneReason {
    wire::DoneReason(r.as_u8())
}

/// Wire done reason → engine.
#[must_use]
pub fn done_reason_from(r: wire::DoneReason) -> Option<e::DoneReason> {
    e::DoneReason::from_u8(r.0)
}

/// Wire reject reason → engine reason, when it is an engine reason.
#[must_use]
pub fn engine_reject_reason_from(r: wire::RejectReason) -> Option<e::RejectReason> {
    u8::try_from(r.0).ok().and_then(e::RejectReason::from_u8)
}

/// Wire request kind → engine request kind (engine commands only).
#[must_use]
pub fn request_kind_from(r: wire::RequestKind) -> Option<e::RequestKind> {
    e::RequestKind::from_u8(r.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_reject_reason_has_the_same_wire_code_and_name() {
        for code in 1..=255u8 {
            if let Some(r) = e::RejectReason::from_u8(code) {
                let w = reject_reason(r);
                assert_eq!(w.0, u16::from(code));
                assert_eq!(
                    w.variant_name(),
                    Some(format!("{r:?}").as_str()),
                    "code {code}"
                );
                assert_eq!(engine_reject_reason_from(w), Some(r));
            }
        }
    }

    #[test]
    fn enums_round_trip() {
        for s in [e::Side::Buy, e::Side::Sell] {
            assert_eq!(side_from(side(s)), Some(s));
        }
        for c in 0..=255u8 {
            if let Some(t) = e::TimeInForce::from_u8(c) {
                assert_eq!(tif_from(tif(t)), Some(t));
            }
            if let Some(t) = e::SelfTradePrevention::from_u8(c) {
                assert_eq!(stp_from(stp(t)), Some(t));
            }
            if let Some(t) = e::DoneReason::from_u8(c) {
                assert_eq!(done_reason_from(done_reason(t)), Some(t));
            }
            if let Some(t) = e::RequestKind::from_u8(c) {
                assert_eq!(request_kind_from(request_kind(t)), Some(t));
                assert_eq!(
                    request_kind(t).variant_name(),
                    Some(format!("{t:?}").as_str())
                );
            }
        }
        assert_eq!(side_from(wire::Side(7)), None);
    }
}
