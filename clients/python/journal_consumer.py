#!/usr/bin/env python3
"""Independent journal consumer: decodes every Caldera journal event from Kafka (or from the
embedded segment files) using only docs/protocol.md and the flatc-generated Python code.

    python3 journal_consumer.py --kafka 127.0.0.1:9092 --topic caldera.events
    python3 journal_consumer.py --kafka broker:9093 --kafka-config security.protocol=sasl_ssl \
        --kafka-config sasl.mechanism=SCRAM-SHA-512 --kafka-config sasl.username=reader ...
    python3 journal_consumer.py --segments ./caldera-journal

Prints one JSON summary: batches, events, first/last sequence, counts per event type, and
whether sequence numbers were contiguous. Exits 1 on any gap or undecodable record.
"""
import argparse
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from caldera.wire.JournalBatch import JournalBatch  # noqa: E402

FIELDS = ["Accepted", "Rejected", "Trade", "Done", "Replaced", "BookDelta", "MassCancelled", "InstrumentStatus"]
# Format 2: one vector of fixed-size structs per event type (accessor prefix → type name).
VECTORS = [("Accepted", "Accepted"), ("Rejected", "Rejected"), ("Trades", "Trade"), ("Dones", "Done"),
           ("Replaced", "Replaced"), ("BookDeltas", "BookDelta"), ("MassCancelled", "MassCancelled"),
           ("Statuses", "InstrumentStatus")]


def crc32c(data, crc=0):
    table = crc32c.table
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    crc32c.table.append(c)


# The largest epoch step readers accept (caldera_journal::recover::MAX_EPOCH_JUMP).
MAX_EPOCH_JUMP = 1 << 20


class Summary:
    def __init__(self):
        self.batches = 0
        self.events = 0
        self.first = None
        self.last = None
        self.types = {}
        self.errors = []
        self.epoch = 0
        self.stale = 0
        self.heartbeats = 0
        self.rejected = 0
        self.undecodable = 0
        self.pending = []  # events of split-batch parts waiting for their final record
        self.pending_epoch = 0

    def batch(self, payload):
        try:
            b = JournalBatch.GetRootAs(payload, 0)
            epoch = b.Epoch()
        except Exception:  # not a journal batch: skipped and counted (docs/journal.md)
            self.undecodable += 1
            return
        # The epoch rule (docs/failover.md): a batch from an older epoch than one already seen
        # is a fenced primary's late append, and one more than MAX_EPOCH_JUMP above it is
        # forged or corrupted; neither is part of the history.
        if epoch < self.epoch:
            self.stale += 1
            return
        if epoch > self.epoch + MAX_EPOCH_JUMP:
            self.rejected += 1
            return
        self.epoch = b.Epoch()
        fmt = b.Format()
        if fmt > 3:
            self.errors.append("batch format %d is newer than this reader" % fmt)
            return
        if self.pending_epoch != epoch:
            self.pending = []  # parts of a batch whose final record never came
            self.pending_epoch = epoch
        commands = b.CmdsLength() if fmt >= 2 else b.CommandsLength()
        events = self.events_v2(b) if fmt >= 2 else self.events_v1(b)
        if commands == 0:
            if events:
                # A part of a batch split across records (docs/journal.md): history once the
                # batch's final record (format 3) follows.
                if self.pending and self.pending[-1][0] + 1 != events[0][0]:
                    self.pending = []
                self.pending += events
            else:
                self.heartbeats += 1  # heartbeat, or a new primary's first record
            return
        self.batches += 1
        if self.pending and self.pending[0][0] == b.FirstSeq():
            events = [e for e in self.pending if e[0] <= b.LastSeq()] + events
        self.pending = []
        for seq, kind in events:
            if self.last is not None and seq != self.last + 1:
                self.errors.append("gap: %d after %d" % (seq, self.last))
            if self.first is None:
                self.first = seq
            self.last = seq
            self.events += 1
            self.types[kind] = self.types.get(kind, 0) + 1
        if events and (b.FirstSeq() != events[0][0] or b.LastSeq() != events[-1][0]):
            self.errors.append("batch header %d..%d does not match its events" % (b.FirstSeq(), b.LastSeq()))

    def events_v1(self, b):
        """Format 1: a table per event, in order."""
        out = []
        for i in range(b.EventsLength()):
            e = b.Events(i)
            kinds = [f for f in FIELDS if getattr(e, f)() is not None]
            if len(kinds) != 1:
                self.errors.append("event %d of batch %d has %d bodies" % (i, self.batches, len(kinds)))
                continue
            out.append((getattr(e, kinds[0])().Seq(), kinds[0]))
        return out

    def events_v2(self, b):
        """Format 2: per-type vectors of structs; every struct carries its seq: order by it."""
        out = []
        for name, kind in VECTORS:
            for i in range(getattr(b, name + "Length")()):
                out.append((getattr(b, name)(i).Seq(), kind))
        out.sort()
        return out


def from_kafka(brokers, topic, idle, s, extra):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    conf = {"bootstrap.servers": brokers, "group.id": "caldera-independent-%d" % os.getpid(),
            "enable.auto.commit": False, "fetch.message.max.bytes": 8388608,
            "fetch.wait.max.ms": 1}  # tansu 0.6 holds fetches for the full wait
    conf.update(extra)  # TLS / SASL: the same properties as the node's [journal.kafka]
    c = Consumer(conf)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    while True:  # poll until idle: never trust the broker's high watermark
        m = c.poll(idle)
        if m is None:
            break
        if m.error():
            s.errors.append(str(m.error()))
            continue
        s.batch(m.value())
    c.close()


def from_segments(d, s):
    for name in sorted(n for n in os.listdir(d) if n.endswith(".seg")):
        data = open(os.path.join(d, name), "rb").read()
        if data[:8] != b"CALDSEG1":
            s.errors.append("%s: bad magic" % name)
            return
        at = 16
        while at + 24 <= len(data):
            if not any(data[at:at + 24]):
                break  # preallocated space the writer has not reached (only zeros follow)
            length, crc = struct.unpack_from("<II", data, at)
            body = data[at + 8: at + 24 + length]
            if len(body) < 16 + length:
                break  # torn tail: not yet written
            if crc32c(body) != crc:
                s.errors.append("%s: CRC mismatch at %d" % (name, at))
                return
            s.batch(bytearray(body[16:]))
            at += 24 + length


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka")
    p.add_argument("--topic", default="caldera.events")
    p.add_argument("--segments")
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka property, e.g. security.protocol=sasl_ssl (repeat)")
    a = p.parse_args()
    extra = dict(kv.split("=", 1) for kv in a.kafka_config)
    s = Summary()
    if a.kafka:
        from_kafka(a.kafka, a.topic, a.idle, s, extra)
    elif a.segments:
        from_segments(a.segments, s)
    else:
        p.error("--kafka or --segments")
    print(json.dumps({"batches": s.batches, "events": s.events, "first_seq": s.first, "last_seq": s.last,
                      "types": s.types, "contiguous": not s.errors, "errors": s.errors[:10],
                      "epoch": s.epoch, "stale_batches": s.stale, "heartbeats": s.heartbeats,
                      "rejected_epochs": s.rejected, "undecodable": s.undecodable}))
    return 0 if not s.errors else 1


if __name__ == "__main__":
    sys.exit(main())
