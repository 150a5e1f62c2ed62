"""Random sequences of inbox operations against a plain-Python model, on
every backend (hypothesis): results, inbox contents, and exact counts must
match the model after every sequence."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from storage import DuplicateId, InboxMeta, OfflineFull, Stored
from storage.accounts import RegisterDevice
from storage.kv_lmdb import LmdbStore
from storage.kv_memory import MemoryStore
from storage.mailbox import (AckInbox, StoreMessage, StoreRead, inbox_after, inbox_meta,
                             recount_inbox)

PHONES = ["+15550000001", "+15550000002", "+15550000003"]
CAP = 2

user = st.integers(0, len(PHONES) - 1)
send = st.tuples(st.just("send"), user, user, st.integers(0, 4))        # sender, to, cid
op = st.one_of(
    send, send,
    st.tuples(st.just("ack"), user, st.lists(st.integers(1, 12), max_size=4)),
    st.tuples(st.just("read"), user, user, st.lists(st.integers(0, 4), min_size=1, max_size=2)),
)


class Model:
    def __init__(self) -> None:
        self.inbox: dict[str, dict[int, tuple]] = {p: {} for p in PHONES}
        self.next = {p: 1 for p in PHONES}
        self.dedup: dict[tuple[str, str], tuple[str, int, int]] = {}
        self.read_ids: set[tuple[str, str]] = set()

    def append(self, phone: str, item: tuple) -> int:
        seq = self.next[phone]
        self.next[phone] += 1
        self.inbox[phone][seq] = item
        return seq

    def messages(self, phone: str) -> int:
        return sum(1 for i in self.inbox[phone].values() if i[0] == "message")

    def send(self, sender, to, cid, ts):
        if (sender, cid) in self.dedup:
            first_to, seq, first_ts = self.dedup[sender, cid]
            return DuplicateId if first_to != to else Stored(seq, first_ts, True)
        if self.messages(to) >= CAP:
            return OfflineFull
        seq = self.append(to, ("message", cid, sender, ts))
        self.dedup[sender, cid] = (to, seq, ts)
        return Stored(seq, ts)

    def ack(self, phone, seqs, ts):
        routed = []
        for seq in sorted(set(seqs)):
            item = self.inbox[phone].pop(seq, None)
            if item is not None and item[0] == "message":
                _, cid, sender, _ = item
                routed.append((sender, self.append(sender, ("delivered", cid, phone, ts))))
        return routed

    def read(self, reader, peer, cids, ts):
        """Only ids ``peer`` sent to ``reader`` are read (the dedup record
        says), each once."""
        routed = []
        for cid in cids:
            sent_to_reader = self.dedup.get((peer, cid), (None,))[0] == reader
            if sent_to_reader and (peer, cid) not in self.read_ids:
                self.read_ids.add((peer, cid))
                routed.append((peer, self.append(peer, ("read", cid, reader, ts))))
        return routed


def as_tuple(item) -> tuple:
    p = item.payload
    if item.kind == "message":
        return ("message", p.id, p.sender, p.ts)
    return (p.kind, p.id, p.by, p.ts)


def run(store, ops) -> None:
    model = Model()
    for phone in PHONES:
        store.write(RegisterDevice(phone, bytes(32), 0))
    for ts, (name, *args) in enumerate(ops):
        if name == "send":
            sender, to, cid = PHONES[args[0]], PHONES[args[1]], f"c{args[2]}"
            expected = model.send(sender, to, cid, ts)
            try:
                got = store.write(StoreMessage(sender, cid, to, b"b", ts, CAP))
            except (DuplicateId, OfflineFull) as exc:
                got = type(exc)
            assert got == expected
        elif name == "ack":
            phone = PHONES[args[0]]
            expected = model.ack(phone, args[1], ts)
            got = store.write(AckInbox(phone, tuple(args[1]), ts))
            assert [(r.to, r.seq) for r in got] == expected
        else:
            reader, peer, cids = PHONES[args[0]], PHONES[args[1]], [f"c{i}" for i in args[2]]
            got = store.write(StoreRead(reader, peer, tuple(cids), ts))
            assert [(r.to, r.seq) for r in got] == model.read(reader, peer, cids, ts)
    for phone in PHONES:
        items = store.read(lambda txn: inbox_after(txn, phone, 0, None))
        assert {i.seq: as_tuple(i) for i in items} == model.inbox[phone]
        meta = store.read(lambda txn: recount_inbox(txn, phone))
        assert meta == InboxMeta(model.next[phone], model.messages(phone),
                                 len(model.inbox[phone]) - model.messages(phone))
        assert store.read(lambda txn: inbox_meta(txn, phone)) == meta


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
@settings(max_examples=100, deadline=None)
@given(ops=st.lists(op, max_size=30))
def test_inbox_matches_the_model(kind, ops):
    if kind == "memory":
        with MemoryStore() as store:
            run(store, ops)
        return
    path = tempfile.mkdtemp(prefix="sb-model-")
    try:
        with LmdbStore(path, sync=False, map_size=1 << 26) as store:
            run(store, ops)
    finally:
        shutil.rmtree(path, ignore_errors=True)
