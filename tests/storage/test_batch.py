"""``UserBatch`` (one op for a session's queued requests) against every
backend: requests run in order inside one op, each gets its own result, a
refused request fails alone and writes nothing, the counts stay exact, and
the results match what the single ops return."""

from __future__ import annotations

import pytest

from storage import (DuplicateId, InboxMeta, InvalidArgument, OfflineFull, Receipt, RoutedReceipt,
                     StaleDevice, Stored, UnknownUser)
from storage.batch import ACK, READ, SEND, UserBatch
from storage.errors import StorageError
from storage.mailbox import recount_inbox

from storage_testkit import OTHER, RECEIVER, SENDER

T = 1_700_000_000_000
CAP = 1000


def audit(backend, *phones: str) -> None:
    for phone in phones:
        assert backend.storage.inbox_meta(phone) == backend.store.read(
            lambda txn: recount_inbox(txn, phone)), phone


async def test_sends_keep_their_order_and_share_one_op(users):
    s = users.storage
    before = users.store.stats().ops
    results = await s.user_batch(SENDER, [(SEND, f"m{i}", RECEIVER, b"%d" % i) for i in range(5)],
                                 T, CAP)
    assert results == [(True, Stored(i + 1, T)) for i in range(5)]
    assert users.store.stats().ops - before == 1
    assert [(i.seq, i.payload.id, i.payload.body) for i in s.inbox_after(RECEIVER)] == [
        (i + 1, f"m{i}", b"%d" % i) for i in range(5)]
    audit(users, SENDER, RECEIVER)


async def test_a_refused_request_fails_alone_and_writes_nothing(users):
    s = users.storage
    await s.store_message(SENDER, "first", RECEIVER, b"", T, CAP)
    results = await s.user_batch(SENDER, [
        (SEND, "a", RECEIVER, b"a"),
        (SEND, "b", "+4915112345678", b"b"),          # not registered
        (SEND, "first", OTHER, b"c"),                  # id already used for RECEIVER
        (SEND, "", RECEIVER, b"d"),                    # malformed id
        (SEND, "e", RECEIVER, b"e"),
    ], T, 3)                                           # the cap: 3 messages
    assert results[0] == (True, Stored(2, T))
    assert [type(v) for ok, v in results[1:4]] == [UnknownUser, DuplicateId, InvalidArgument]
    assert not any(ok for ok, _ in results[1:4])
    assert results[4] == (True, Stored(3, T))
    assert [i.payload.id for i in s.inbox_after(RECEIVER)] == ["first", "a", "e"]
    # The next one finds the inbox full; its refusal leaves the rest of the batch.
    results = await s.user_batch(SENDER, [(SEND, "f", RECEIVER, b""), (SEND, "g", OTHER, b"")],
                                 T, 3)
    assert isinstance(results[0][1], OfflineFull) and results[1] == (True, Stored(1, T))
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=4, messages=3, receipts=0)
    audit(users, SENDER, RECEIVER, OTHER)


async def test_a_resend_in_the_same_batch_is_a_duplicate(users):
    results = await users.storage.user_batch(
        SENDER, [(SEND, "m1", RECEIVER, b"x"), (SEND, "m1", RECEIVER, b"changed")], T, CAP)
    assert results == [(True, Stored(1, T)), (True, Stored(1, T, duplicate=True))]
    assert users.storage.inbox_count(RECEIVER) == 1


async def test_acks_and_reads_mixed_with_sends_in_arrival_order(users):
    s = users.storage
    await s.user_batch(SENDER, [(SEND, "m1", RECEIVER, b""), (SEND, "m2", RECEIVER, b"")], T, CAP)
    # RECEIVER acks m1, sends a reply, reads both, acks m1 again (idempotent), acks m2.
    results = await s.user_batch(RECEIVER, [
        (ACK, (1,)),
        (SEND, "r1", SENDER, b"hi"),
        (READ, SENDER, ("m1", "m2")),
        (ACK, (1, 99)),
        (ACK, (2,)),
    ], T + 1, CAP)
    delivered = Receipt("delivered", "m1", RECEIVER, T + 1)
    assert results[0] == (True, [RoutedReceipt(SENDER, 1, delivered)])
    assert results[1] == (True, Stored(2, T + 1))     # after the receipt in SENDER's inbox
    assert results[2] == (True, [RoutedReceipt(SENDER, 3, Receipt("read", "m1", RECEIVER, T + 1)),
                                 RoutedReceipt(SENDER, 4, Receipt("read", "m2", RECEIVER, T + 1))])
    assert results[3] == (True, [])
    assert results[4][1][0].seq == 5
    assert [(i.seq, i.kind) for i in s.inbox_after(SENDER)] == [
        (1, "receipt"), (2, "message"), (3, "receipt"), (4, "receipt"), (5, "receipt")]
    assert s.inbox_meta(SENDER) == InboxMeta(next_seq=6, messages=1, receipts=4)
    audit(users, SENDER, RECEIVER)


async def test_results_match_the_single_ops(users):
    """The same requests through single ops (SENDER -> RECEIVER) and through
    UserBatch ops (OTHER -> FOURTH) return the same values and leave the
    same inboxes."""
    s = users.storage
    fourth = "+15550000004"
    await users.register(fourth)
    single = [await s.store_message(SENDER, f"s{i}", RECEIVER, b"x", T, CAP) for i in range(3)]
    single.append(await s.ack_inbox(RECEIVER, [1, 3], T))
    batched = [v for _, v in await s.user_batch(
        OTHER, [(SEND, f"s{i}", fourth, b"x") for i in range(3)], T, CAP)]
    batched += [v for _, v in await s.user_batch(fourth, [(ACK, (1, 3))], T, CAP)]
    assert batched[:3] == single[:3]
    assert [(r.seq, r.receipt.id) for r in batched[3]] == [(r.seq, r.receipt.id) for r in single[3]]
    assert ([(i.seq, i.payload.id) for i in s.inbox_after(fourth)]
            == [(i.seq, i.payload.id) for i in s.inbox_after(RECEIVER)])
    assert ([(i.seq, i.payload.id) for i in s.inbox_after(OTHER)]
            == [(i.seq, i.payload.id) for i in s.inbox_after(SENDER)])
    audit(users, SENDER, RECEIVER, OTHER, fourth)


async def test_an_unexpected_error_fails_the_whole_op(users):
    """Anything but a StorageError escapes: the op is rolled back whole, so
    nothing of it is stored (and nothing of it can be acknowledged)."""
    if users.kind == "lmdb-process":
        pytest.skip("the faulty request is a local class: it cannot reach the writer process")
    s = users.storage

    class Weird(tuple):
        def __getitem__(self, i):
            if i == 2:
                raise RuntimeError("not a storage refusal")
            return tuple.__getitem__(self, i)

    with pytest.raises(RuntimeError):
        await s.user_batch(SENDER, [(SEND, "ok", RECEIVER, b""), Weird((SEND, "x", RECEIVER, b""))],
                           T, CAP)
    assert s.inbox_count(RECEIVER) == 0
    assert s.inbox_meta(RECEIVER) == InboxMeta()
    assert issubclass(UnknownUser, StorageError)


async def test_unknown_request_kind_is_refused(users):
    op = UserBatch(SENDER, (("bogus",), (SEND, "m1", RECEIVER, b"")), T, CAP)
    results = await users.store.submit(op)
    assert isinstance(results[0][1], InvalidArgument) and results[1] == (True, Stored(1, T))


async def test_drains_of_one_batch_share_each_users_meta(users):
    """The ops of a flat LMDB batch share one ``Metas`` (``BatchScope``):
    each user's inbox_meta is read once and written once, at the end, and
    every op still sees the ones before it."""
    s = users.storage
    await s.store_message(SENDER, "m0", RECEIVER, b"0", T, CAP)
    # Step 1: three drains in ONE batch: a send, the receiver's ack, another send
    async with users.hold():
        sent = s.user_batch(SENDER, [(SEND, "m1", RECEIVER, b"1")], T, CAP)
        acked = s.user_batch(RECEIVER, [(ACK, (1, 2))], T, CAP)
        again = s.user_batch(SENDER, [(SEND, "m2", RECEIVER, b"2"), (ACK, (1,))], T, CAP)
    # Step 2: each op saw what the ones before it wrote
    assert await sent == [(True, Stored(2, T))]
    [(ok, routed)] = await acked
    assert ok and [(r.to, r.seq, r.receipt.id) for r in routed] == [(SENDER, 1, "m0"),
                                                                   (SENDER, 2, "m1")]
    assert await again == [(True, Stored(3, T)), (True, [])]      # receipt 1 acked
    # Step 3: and what was written at the end is what the inboxes hold
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=4, messages=1, receipts=0)
    assert s.inbox_meta(SENDER) == InboxMeta(next_seq=3, messages=0, receipts=1)
    audit(users, SENDER, RECEIVER)


async def test_ops_with_different_homes_in_one_batch_each_see_the_others_appends(tmp_path):
    """A flat batch shares ONE Metas: an op whose ``remote`` is not the
    batch's (a store opened before ``follow_homes``, an op made without
    one) makes the batch run again with a transaction per op, so two
    appends to one inbox never take the same seq (the later one
    overwrote the earlier, acknowledged, message)."""
    from storage.mailbox import StoreMessage
    from storage.metas import Homes
    from storage_testkit import Harness
    h = Harness("lmdb", tmp_path)
    try:
        await h.register(SENDER, RECEIVER, OTHER)
        h.storage.follow_homes(Homes("n1"))
        async with h.hold():
            homed = h.store.submit(StoreMessage(SENDER, "a", RECEIVER, b"1", T, CAP, h.storage.remote))
            plain = h.store.submit(StoreMessage(OTHER, "b", RECEIVER, b"2", T, CAP))
        assert [(await homed).seq, (await plain).seq] == [1, 2]
        assert [(i.seq, i.payload.id) for i in h.storage.inbox_after(RECEIVER)] == [(1, "a"), (2, "b")]
        audit(h, RECEIVER)
    finally:
        h.close()


async def test_a_send_for_a_replaced_device_fails_alone_and_leaves_no_dedup(users):
    s = users.storage
    # RECEIVER is on device 1; a message sealed for it is stored
    results = await s.user_batch(SENDER, [(SEND, "d1", RECEIVER, b"for 1", (), 1)], T, CAP)
    assert results == [(True, Stored(1, T))]
    await s.register_device(RECEIVER, bytes(32), T)              # device 2 now
    assert s.get_account(RECEIVER).device_id == 2
    results = await s.user_batch(SENDER, [
        (SEND, "d1", RECEIVER, b"for 1", (), 1),       # stored before the change: a duplicate
        (SEND, "d2", RECEIVER, b"for 1", (), 1),       # stale: refused, nothing written
        (SEND, "d3", RECEIVER, b"no device"),          # as before
    ], T + 1, CAP)
    assert results[0] == (True, Stored(1, T, duplicate=True))
    assert not results[1][0] and isinstance(results[1][1], StaleDevice)
    assert (results[1][1].device, results[1][1].current) == (1, 2)
    assert results[2] == (True, Stored(2, T + 1))
    assert s.stale_device(SENDER, "d2", RECEIVER, 1) == 2      # the connection's read agrees
    assert s.stale_device(SENDER, "d1", RECEIVER, 1) is None   # stored: answered as stored
    assert s.stale_device(SENDER, "d2", RECEIVER, 2) is None
    # sealed again for device 2, the same id is stored
    results = await s.user_batch(SENDER, [(SEND, "d2", RECEIVER, b"for 2", (), 2)], T + 2, CAP)
    assert results == [(True, Stored(3, T + 2))]
    assert [i.payload.id for i in s.inbox_after(RECEIVER)] == ["d1", "d3", "d2"]
    audit(users, SENDER, RECEIVER)
