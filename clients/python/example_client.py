#!/usr/bin/env python3
"""Caldera example client in Python (pyzmq + flatbuffers from PyPI).

Uses only docs/protocol.md and the code flatc generates from schema/fbs/caldera.fbs
(the `caldera/wire` package next to this file). Two sessions (accounts 101 and 102):
the seller rests an order, the buyer takes part of it, then the seller cancels the rest.
Then the resend: the seller goes away with an order resting, the buyer fills it, and the
seller comes back with a resend logon after the last engine_seq it processed — the node resends
the Fill and Done it missed (frames marked resent), then ResendComplete.
Prints every report as a JSON line and exits 0 if the exchange answered as expected.

Connects over CURVE with the keys `caldera init` made: this client's secret certificate
(KEYS/trader.key_secret) and the server's public certificate (KEYS/server.key), read with
pyzmq's own zmq.auth.load_certificate.

    python3 example_client.py --order-entry tcp://127.0.0.1:7001 --keys caldera-keys
"""
import argparse
import json
import os
import sys
import time

import flatbuffers
import zmq
import zmq.auth

sys.path.insert(0, os.path.dirname(__file__))
from caldera.wire import (  # noqa: E402
    Cancel, ClientBatch, Logon, LogonWith, NewOrder, ReportBatch, Request,
    OrderType, Side, SelfTradePrevention, TimeInForce,
)
from caldera.wire.RejectReason import RejectReason  # noqa: E402
from caldera.wire.DoneReason import DoneReason  # noqa: E402
from caldera.wire.LogoutReason import LogoutReason  # noqa: E402

NAMES = {v: k for k, v in vars(RejectReason).items() if not k.startswith("_")}
LOGOUT = {v: k for k, v in vars(LogoutReason).items() if not k.startswith("_")}
DONE = {v: k for k, v in vars(DoneReason).items() if not k.startswith("_")}


def batch(requests):
    """Encodes a list of (kind, args) as one ClientBatch frame."""
    b = flatbuffers.Builder(256)
    offsets = []
    for kind, args in requests:
        Request.Start(b)
        if kind == "logon":
            Request.AddLogon(b, Logon.CreateLogon(b, *args))
        elif kind == "logon_with":  # (resume_after, account, flags: 1 = resend, 2 = cancel on disconnect)
            Request.AddLogonWith(b, LogonWith.CreateLogonWith(b, *args))
        elif kind == "new":
            Request.AddNewOrder(b, NewOrder.CreateNewOrder(b, *args))
        elif kind == "cancel":
            Request.AddCancel(b, Cancel.CreateCancel(b, *args))
        offsets.append(Request.End(b))
    ClientBatch.StartRequestsVector(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    vec = b.EndVector()
    ClientBatch.Start(b)
    ClientBatch.AddRequests(b, vec)
    b.Finish(ClientBatch.End(b))
    return bytes(b.Output())


def curve_keys(keys_dir, name):
    """(client public, client secret, server public) from a `caldera init` directory."""
    public, secret = zmq.auth.load_certificate(os.path.join(keys_dir, name + ".key_secret"))
    server, _ = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key"))
    if secret is None:
        raise SystemExit("%s.key_secret has no secret key" % name)
    return public, secret, server


class Session:
    def __init__(self, ctx, endpoint, account, keys=None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            public, secret, server = keys
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.curve_serverkey = server
        self.sock.connect(endpoint)
        self.account = account
        self.next_seq = 1
        self.pending = []
        # The last engine_seq processed: what a LogonWith{RESEND} resumes after.
        self.last_engine_seq = 0

    def send(self, requests):
        self.sock.send(batch(requests))

    def recv(self, timeout_ms=3000):
        """Returns the decoded reports of one frame (checks session sequence numbers)."""
        if not self.sock.poll(timeout_ms):
            raise TimeoutError("no report within %d ms" % timeout_ms)
        frame = self.sock.recv()
        rb = ReportBatch.ReportBatch.GetRootAs(frame, 0)
        if rb.FirstSessionSeq() != self.next_seq:
            raise RuntimeError("gap: expected %d got %d" % (self.next_seq, rb.FirstSessionSeq()))
        out = []
        resent = rb.Resent()
        for i in range(rb.ReportsLength()):
            r = rb.Reports(i)
            seq = self.next_seq + i
            if r.LoggedOn() is not None:
                out.append({"seq": seq, "type": "LoggedOn", "account": r.LoggedOn().Account()})
            elif r.LoggedOut() is not None:
                lo = r.LoggedOut()
                out.append({"seq": seq, "type": "LoggedOut", "account": lo.Account(),
                            "reason": LOGOUT.get(lo.Reason(), lo.Reason())})
            elif r.Accepted() is not None:
                a = r.Accepted()
                out.append({"seq": seq, "type": "Accepted", "order_id": a.OrderId(),
                            "client_order_id": a.ClientOrderId(), "price": a.Price(), "qty": a.Qty(),
                            "engine_seq": a.EngineSeq()})
            elif r.Rejected() is not None:
                x = r.Rejected()
                rep = {"seq": seq, "type": "Rejected", "client_order_id": x.ClientOrderId(),
                       "reason": NAMES.get(x.Reason(), x.Reason())}
                if x.Reason() < 100:  # an engine reject; gateway rejects (100+) are not events
                    rep["engine_seq"] = x.EngineSeq()
                elif x.Reason() == RejectReason.ResendUnavailable:
                    rep["oldest_kept"] = x.EngineSeq()
                out.append(rep)
            elif r.Fill() is not None:
                f = r.Fill()
                out.append({"seq": seq, "type": "Fill", "order_id": f.OrderId(), "trade_id": f.TradeId(),
                            "price": f.Price(), "qty": f.Qty(), "leaves": f.Leaves(),
                            "engine_seq": f.EngineSeq()})
            elif r.Done() is not None:
                d = r.Done()
                out.append({"seq": seq, "type": "Done", "order_id": d.OrderId(),
                            "reason": DONE.get(d.Reason(), d.Reason()), "leaves": d.Leaves(),
                            "engine_seq": d.EngineSeq()})
            elif r.ResendComplete() is not None:
                c = r.ResendComplete()
                out.append({"seq": seq, "type": "ResendComplete", "account": c.Account(),
                            "from_seq": c.FromSeq(), "through_seq": c.ThroughSeq(), "count": c.Count()})
            else:
                out.append({"seq": seq, "type": "Other"})
        self.next_seq += rb.ReportsLength()
        for rep in out:
            rep["account"] = rep.get("account", self.account)
            if resent:
                rep["resent"] = True
            self.last_engine_seq = max(self.last_engine_seq, rep.get("engine_seq", 0))
            print(json.dumps(rep), flush=True)
        return out

    def wait_for(self, predicate, timeout_s=5.0):
        """The next report matching `predicate` and the reports before it. Reports after it in
        the same frame stay queued for the next call (one frame may carry several answers)."""
        deadline = time.time() + timeout_s
        seen = []
        while True:
            while self.pending:
                rep = self.pending.pop(0)
                seen.append(rep)
                if predicate(rep):
                    return rep, seen
            if time.time() >= deadline:
                raise TimeoutError("expected report not seen; got %r" % seen)
            self.pending.extend(self.recv())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order-entry", default="tcp://127.0.0.1:7001")
    p.add_argument("--symbol", type=int, default=1)
    p.add_argument("--price", type=int, default=1000)
    p.add_argument("--keys", default="caldera-keys", help="directory made by `caldera init`")
    p.add_argument("--key-name", default="trader", help="which client key of --keys")
    p.add_argument("--insecure", action="store_true", help="plain TCP (a node run with --insecure)")
    args = p.parse_args()
    keys = None if args.insecure else curve_keys(args.keys, args.key_name)
    if keys is not None and not zmq.has("curve"):
        raise SystemExit("this pyzmq has no CURVE support")
    ctx = zmq.Context()
    seller = Session(ctx, args.order_entry, 101, keys)
    buyer = Session(ctx, args.order_entry, 102, keys)
    gtc, allow, limit = TimeInForce.TimeInForce.Gtc, SelfTradePrevention.SelfTradePrevention.Allow, OrderType.OrderType.Limit
    buy, sell = Side.Side.Buy, Side.Side.Sell
    # Client order ids must be fresh per account: the engine remembers recent ones (its dedupe
    # window) and rejects a reuse as DuplicateClientOrderId. Microseconds since the epoch.
    cl = time.time_ns() // 1000

    seller.send([("logon", (101,)), ("new", (cl + 1, args.price, 10, args.symbol, sell, limit, gtc, allow, False))])
    seller.wait_for(lambda r: r["type"] == "LoggedOn")
    acc, _ = seller.wait_for(lambda r: r["type"] == "Accepted")
    buyer.send([("logon", (102,)), ("new", (cl + 7, args.price, 4, args.symbol, buy, limit, gtc, allow, False))])
    fill, _ = buyer.wait_for(lambda r: r["type"] == "Fill")
    assert fill["qty"] == 4 and fill["price"] == args.price, fill
    maker_fill, _ = seller.wait_for(lambda r: r["type"] == "Fill")
    assert maker_fill["leaves"] == 6, maker_fill
    seller.send([("cancel", (acc["order_id"], 0, False))])
    done, _ = seller.wait_for(lambda r: r["type"] == "Done")
    assert done["reason"] == "Cancelled" and done["leaves"] == 6, done
    # A bad request gets a typed reject.
    seller.send([("new", (cl + 2, 0, 10, args.symbol, sell, limit, gtc, allow, False))])
    rej, _ = seller.wait_for(lambda r: r["type"] == "Rejected")
    assert rej["reason"] == "ZeroPrice", rej

    # Resend: the seller goes away with an order resting; the buyer fills it meanwhile.
    seller.send([("new", (cl + 3, args.price, 5, args.symbol, sell, limit, gtc, allow, False))])
    seller.wait_for(lambda r: r["type"] == "Accepted")
    resume_after = seller.last_engine_seq
    seller.sock.close()
    buyer.send([("new", (cl + 8, args.price, 5, args.symbol, buy, limit, gtc, allow, False))])
    # This order's Done, not the first order's (which may still be queued from its frame).
    buyer.wait_for(lambda r: r["type"] == "Done" and r["engine_seq"] > resume_after)
    # Back on a new session: LogonWith{RESEND} after the last engine_seq processed.
    seller = Session(ctx, args.order_entry, 101, keys)
    seller.send([("logon_with", (resume_after, 101, 1))])
    complete, seen = seller.wait_for(lambda r: r["type"] == "ResendComplete")
    resent = [r for r in seen if r.get("resent")]
    assert [r["type"] for r in resent] == ["Fill", "Done"], seen
    assert all(r["engine_seq"] > resume_after for r in resent), seen
    assert complete["count"] == 2 and complete["from_seq"] == resume_after, complete
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
