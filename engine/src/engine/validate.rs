//! Validation of new orders and amendments against the instrument and the book.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::Engine;
use crate::book::{Book, NIL};
use crate::command::NewOrder;
use crate::event::RejectReason;
use crate::types::{OrderType, Price, Qty, TimeInForce};

impl Engine {
    pub(super) fn check_price(book: &Book, price: Price) -> Result<(), RejectReason> {
        let s = &book.spec;
        if price == 0 {
            Err(RejectReason::ZeroPrice)
        } else if price % s.tick_size != 0 {
            Err(RejectReason::PriceOffTick)
        } else if price < s.min_price || price > s.max_price {
            Err(RejectReason::PriceOutOfBand)
        } else {
            Ok(())
        }
    }

    pub(super) fn check_qty(book: &Book, qty: Qty) -> Result<(), RejectReason> {
        let s = &book.spec;
        if qty == 0 {
            Err(RejectReason::ZeroQuantity)
        } else if qty % s.lot_size != 0 {
            Err(RejectReason::QuantityOffLot)
        } else if qty > s.max_qty {
            Err(RejectReason::QuantityOverMax)
        } else {
            Ok(())
        }
    }

    pub(super) fn validate_new(&self, b: usize, o: &NewOrder) -> Result<(), RejectReason> {
        let book = &self.books[b];
        if book.halted {
            return Err(RejectReason::InstrumentHalted);
        }
        match o.order_type {
            OrderType::Market => {
                if o.post_only {
                    return Err(RejectReason::InvalidOrderType);
                }
                if o.tif == TimeInForce::Gtc {
                    return Err(RejectReason::InvalidTimeInForce);
                }
                if o.price != 0 {
                    return Err(RejectReason::MarketOrderHasPrice);
                }
            }
            OrderType::Limit => {
                if o.post_only && o.tif != TimeInForce::Gtc {
                    return Err(RejectReason::InvalidTimeInForce);
                }
                Self::check_price(book, o.price)?;
            }
        }
        Self::check_qty(book, o.qty)?;
        if o.client_order_id == 0 {
            return Err(RejectReason::ZeroClientOrderId);
        }
        if self.by_client.contains(&(o.account, o.client_order_id)) {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        let limit = (o.order_type == OrderType::Limit).then_some(o.price);
        if o.post_only && self.crosses(b, o.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        if o.tif == TimeInForce::Fok && !self.fillable(b, o.side, limit, o.qty, o.account, o.stp) {
            return Err(RejectReason::FokNotFillable);
        }
        if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc {
            if self.free_head == NIL {
                return Err(RejectReason::OrderCapacityReached);
            }
            let live = self.account_live_orders(o.account);
            if live == 0 && self.live_accounts() >= self.config.max_accounts as usize {
                return Err(RejectReason::AccountCapacityReached);
            }
            let per_account = self.config.max_orders_per_account;
            if per_account != 0 && live >= per_account {
                return Err(RejectReason::AccountOrderLimit);
            }
        }
        Ok(())
    }
}
