"""``storage.outq``, the durable queue of what one node owes users homed on
another, between two real LMDB stores: A (home of ALICE and CAROL) and B
(home of BOB). A message or receipt for a remote user is queued in the same
transaction as the rest of the op, shipped with ``peek``, applied exactly
once at the destination (per-origin watermark, reset by a new epoch), and
trimmed; a refusal at the destination comes back as a ``failed`` receipt."""

from __future__ import annotations

import pytest

from storage import (DuplicateId, InboxItem, InboxMeta, InvalidArgument, Message, Receipt,
                     RoutedReceipt, Stored, UnknownUser)
from storage import outq
from storage.batch import ACK, SEND, UserBatch
from storage.groups import CREATE, RENAME, SEND as GSEND
from storage.mailbox import recount_inbox, store_message
from storage.records import GroupEvent, pack_item

from storage_testkit import KEY, Harness

T = 1_700_000_000_000
CAP = 1000
ALICE, CAROL = "+15550000001", "+15550000003"    # homed at A
BOB = "+15550000002"                             # homed at B
DAVE = "+15550000009"                            # A believes B has him; B does not
HOMES = {ALICE: "A", CAROL: "A", BOB: "B", DAVE: "B"}


def remote_of(here: str):
    def remote(user: str) -> str | None:
        home = HOMES.get(user)
        return home if home is not None and home != here else None
    return remote


async def node(tmp_path, name: str, *users: str) -> Harness:
    harness = Harness("lmdb", tmp_path / name)
    harness.storage.remote = remote_of(name)
    for user in users:
        await harness.storage.register_device(user, KEY, 1)
    return harness


@pytest.fixture
async def cluster(tmp_path):
    a = await node(tmp_path, "A", ALICE, CAROL)
    b = await node(tmp_path, "B", BOB)
    yield a.storage, b.storage
    a.close()
    b.close()


async def ship(src, src_name: str, dst, dst_name: str, cap: int = CAP, limit: int = 512):
    """One round of a forwarder: peek, apply at the destination, trim."""
    items = src.outq_peek(dst_name, limit)
    applied = await dst.outq_apply(src_name, await src.outq_epoch(), items, cap)
    await src.outq_trim(dst_name, applied.upto)
    return applied


def audit(s, *users: str) -> None:
    for user in users:
        assert s.inbox_meta(user) == s.store.read(lambda txn: recount_inbox(txn, user)), user


def meta_record(s, user: str):
    return s.store.read(lambda txn: txn.get("inbox_meta", user.encode()))


# -- the origin's side ------------------------------------------------------------
async def test_a_message_to_a_remote_user_is_queued_and_acked_with_seq_0(cluster):
    a, _ = cluster
    assert await a.store_message(ALICE, "m1", BOB, b"hi", T, CAP) == Stored(0, T)
    assert a.outq_pending() == {"B": 1}
    assert a.outq_peek("B") == [(1, ("msg", ALICE, "m1", BOB, b"hi", T, ()))]
    assert meta_record(a, BOB) is None and a.inbox_after(BOB) == []
    # A resend is answered from the local dedup record and queues nothing.
    assert await a.store_message(ALICE, "m1", BOB, b"hi", T + 5, CAP) == Stored(0, T, True)
    assert a.outq_pending() == {"B": 1}
    with pytest.raises(DuplicateId):
        await a.store_message(ALICE, "m1", CAROL, b"hi", T, CAP)
    assert a.outq_pending() == {"B": 1} and a.inbox_count(CAROL) == 0


async def test_a_user_batch_queues_remote_sends_and_stores_local_ones(cluster):
    a, _ = cluster
    results = await a.user_batch(ALICE, [(SEND, "r", BOB, b"1"), (SEND, "l", CAROL, b"2"),
                                         (SEND, "r2", DAVE, b"3")], T, CAP)
    assert results == [(True, Stored(0, T)), (True, Stored(1, T)), (True, Stored(0, T))]
    assert [item[3] for _, item in a.outq_peek("B")] == [BOB, DAVE]
    assert a.inbox_count(CAROL) == 1
    audit(a, ALICE, CAROL)


async def test_an_op_that_raises_leaves_nothing_in_the_queue(cluster):
    a, _ = cluster
    seen = []

    def send_then_fail(txn):
        store_message(txn, ALICE, "x", BOB, b"", T, CAP, remote=remote_of("A"))
        seen.append(outq.peek(txn, "B"))
        raise RuntimeError("after the put")

    with pytest.raises(RuntimeError):
        await a.store.submit(send_then_fail)
    assert len(seen[0]) == 1                        # it was queued inside the op
    assert a.outq_pending() == {} and a.outq_peek("B") == []
    assert await a.store_message(ALICE, "x", BOB, b"", T, CAP) == Stored(0, T)  # no dedup left
    assert a.outq_peek("B")[0][0] == 1


async def test_trim_removes_exactly_up_to_and_seqs_are_never_reused(cluster):
    a, _ = cluster
    for i in range(5):
        await a.store_message(ALICE, f"m{i}", BOB, b"", T, CAP)
    assert await a.outq_trim("B", 3) == 3
    assert [seq for seq, _ in a.outq_peek("B")] == [4, 5]
    assert [item[2] for _, item in a.outq_peek("B")] == ["m3", "m4"]
    assert await a.outq_trim("B", 3) == 0
    assert a.outq_pending() == {"B": 2}
    assert await a.outq_trim("B", 99) == 2 and a.outq_pending() == {}
    await a.store_message(ALICE, "m5", BOB, b"", T, CAP)
    assert a.outq_peek("B") == [(6, ("msg", ALICE, "m5", BOB, b"", T, ()))]
    with pytest.raises(InvalidArgument):
        await a.outq_trim("B", -1)
    with pytest.raises(InvalidArgument):
        a.outq_peek("B\x00x")


async def test_pending_counts_per_destination(cluster):
    a, _ = cluster
    assert a.outq_pending() == {}
    s = a.store
    await s.submit(lambda txn: [outq.put(txn, "C", ("item", BOB, "receipt", b"x"))
                                for _ in range(3)])
    await a.store_message(ALICE, "m1", BOB, b"", T, CAP)
    assert a.outq_pending() == {"B": 1, "C": 3}
    with pytest.raises(InvalidArgument):
        await s.submit(lambda txn: outq.put(txn, "C", ("nope", BOB)))
    assert a.outq_pending() == {"B": 1, "C": 3}


async def test_the_epoch_is_drawn_once_per_store(cluster):
    a, b = cluster
    first = await a.outq_epoch()
    assert await a.outq_epoch() == first and isinstance(first, str) and first
    assert await b.outq_epoch() != first


# -- the destination's side -------------------------------------------------------
async def test_shipping_delivers_once_with_the_same_ts(cluster):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"hi", T, CAP)
    items = a.outq_peek("B")
    epoch = await a.outq_epoch()
    applied = await b.outq_apply("A", epoch, items, CAP)
    message = Message("m1", ALICE, T, b"hi")
    assert applied == outq.Applied(1, [(BOB, InboxItem(1, "message", message))])
    assert b.inbox_after(BOB) == [InboxItem(1, "message", message)]
    # The same shipment again (its confirmation was lost): nothing more.
    assert await b.outq_apply("A", epoch, items, CAP) == outq.Applied(1, [])
    assert b.inbox_count(BOB) == 1
    assert await a.outq_trim("B", 1) == 1 and a.outq_pending() == {}
    audit(b, BOB)


async def test_applied_names_the_media_of_messages_stored_here_and_holds_them(cluster):
    # Step 1: ALICE (at A) sends BOB (at B) a message naming two blobs, and one without.
    a, b = cluster
    blobs = ("a" * 64, "b" * 64)
    await a.user_batch(ALICE, [(SEND, "f1", BOB, b"file", blobs), (SEND, "t1", BOB, b"text")],
                       T, CAP)
    assert a.blob_refs(blobs[0]) == 0            # the origin holds no reference (docs/cluster.md)
    # Step 2: B applies them: the media list says what to fetch and from where.
    items = a.outq_peek("B")
    applied = await b.outq_apply("A", await a.outq_epoch(), items, CAP)
    assert applied.media == [("A", blobs)] and len(applied.nudges) == 2
    assert b.blob_refs(blobs[0]) == 1 and b.blob_refs(blobs[1]) == 1
    # Step 3: a resend names nothing (already applied); BOB's ack releases the references.
    again = await b.outq_apply("A", await a.outq_epoch(), items, CAP)
    assert again.media == []
    await b.ack_inbox(BOB, [1, 2], T + 1)
    assert b.blob_refs(blobs[0]) == 0 and b.blob_refs(blobs[1]) == 0


async def test_a_new_epoch_restarting_seqs_is_applied(cluster, tmp_path):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"", T, CAP)
    await ship(a, "A", b, "B")
    wiped = await node(tmp_path, "A-again", ALICE)      # A recreated: seqs restart at 1
    wiped.storage.remote = remote_of("A")
    try:
        await wiped.storage.store_message(ALICE, "m2", BOB, b"", T + 1, CAP)
        assert wiped.storage.outq_peek("B")[0][0] == 1
        applied = await ship(wiped.storage, "A", b, "B")
        assert applied.upto == 1 and [i.payload.id for _, i in applied.nudges] == ["m2"]
    finally:
        wiped.close()
    assert [i.payload.id for i in b.inbox_after(BOB)] == ["m1", "m2"]


async def test_order_is_kept_across_many_items_and_shipments(cluster):
    a, b = cluster
    await a.user_batch(ALICE, [(SEND, f"m{i}", BOB, b"%d" % i) for i in range(300)], T, CAP)
    assert a.outq_pending() == {"B": 300}
    for _ in range(10):                             # bounded: 3 rounds are enough
        if not a.outq_pending():
            break
        await ship(a, "A", b, "B", limit=100)
    assert a.outq_pending() == {}
    assert [(i.seq, i.payload.id) for i in b.inbox_after(BOB, limit=None)] == [
        (i + 1, f"m{i}") for i in range(300)]
    audit(b, BOB)


async def test_an_ack_at_b_sends_the_delivered_receipt_back_to_a(cluster):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"hi", T, CAP)
    await ship(a, "A", b, "B")
    routed = await b.ack_inbox(BOB, [1], T + 10)
    receipt = Receipt("delivered", "m1", BOB, T + 10)
    assert routed == [RoutedReceipt(ALICE, 0, receipt)]
    assert b.outq_pending() == {"A": 1} and meta_record(b, ALICE) is None
    items, epoch = b.outq_peek("A"), await b.outq_epoch()
    applied = await ship(b, "B", a, "A")
    assert applied.nudges == [(ALICE, InboxItem(1, "receipt", receipt))]
    # A resend (the confirmation was lost): a receipt has no dedup record of
    # its own, the watermark alone keeps it from being appended twice.
    assert await a.outq_apply("B", epoch, items, CAP) == outq.Applied(1, [])
    assert a.inbox_after(ALICE) == [InboxItem(1, "receipt", receipt)]
    audit(a, ALICE)
    audit(b, BOB)


async def test_a_read_at_b_queues_one_read_receipt(cluster):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"hi", T, CAP)
    await a.store_message(ALICE, "m2", BOB, b"hi", T, CAP)
    await ship(a, "A", b, "B", limit=1)                 # m2 still queued at A
    routed = await b.store_read(BOB, ALICE, ["m1", "m2", "never"], T + 20)
    receipt = Receipt("read", "m1", BOB, T + 20)
    assert routed == [RoutedReceipt(ALICE, 0, receipt)]  # m2 not here yet, "never" not sent
    assert await b.store_read(BOB, ALICE, ["m1"], T + 30) == []   # read once
    assert b.outq_pending() == {"A": 1}
    await ship(b, "B", a, "A")
    assert [i.payload for i in a.inbox_after(ALICE)] == [receipt]


async def test_a_full_inbox_at_b_becomes_a_failed_receipt_for_the_sender(cluster):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"", T, CAP)
    await a.store_message(ALICE, "m2", BOB, b"", T + 1, CAP)
    applied = await ship(a, "A", b, "B", cap=1)
    assert applied.upto == 2 and [i.payload.id for _, i in applied.nudges] == ["m1"]
    assert [i.payload.id for i in b.inbox_after(BOB)] == ["m1"]
    assert a.outq_pending() == {}                       # a refusal is not a failed shipment
    applied = await ship(b, "B", a, "A")
    failed = Receipt("failed", "m2", BOB, T + 1)
    assert applied.nudges == [(ALICE, InboxItem(1, "receipt", failed))]
    assert [i.payload for i in a.inbox_after(ALICE)] == [failed]


async def test_an_unknown_user_at_b_becomes_a_failed_receipt(cluster):
    a, b = cluster
    assert await a.store_message(ALICE, "d1", DAVE, b"", T, CAP) == Stored(0, T)
    applied = await ship(a, "A", b, "B")
    assert applied == outq.Applied(1, [])
    await ship(b, "B", a, "A")
    assert [i.payload for i in a.inbox_after(ALICE)] == [Receipt("failed", "d1", DAVE, T)]


async def test_a_message_for_a_replaced_device_comes_back_failed_and_its_id_freed(cluster):
    a, b = cluster
    # Step 1: BOB registers a new device at B; ALICE's message, sealed for device 1,
    # is accepted at A (its home cannot be asked) and carries the device it names
    await b.register_device(BOB, bytes(32), T)                   # device 2
    assert await a.user_batch(ALICE, [(SEND, "s1", BOB, b"for 1", (), 1),
                                      (SEND, "s2", BOB, b"no device")], T, CAP) == [
        (True, Stored(0, T)), (True, Stored(0, T))]
    assert [item for _, item in a.outq_peek("B")] == [
        ("msg", ALICE, "s1", BOB, b"for 1", T, (), 1), ("msg", ALICE, "s2", BOB, b"no device", T, ())]
    # Step 2: B refuses s1 (nothing stored for BOB) and queues back, in order, the
    # release of its id and the failed receipt; s2 is stored
    applied = await ship(a, "A", b, "B")
    assert [i.payload.id for i in b.inbox_after(BOB)] == ["s2"]
    assert [item[:2] for _, item in b.outq_peek("A")] == [("unsent", ALICE), ("item", ALICE)]
    assert applied.upto == 2
    # Step 3: at A, the id is free again and the failed receipt is ALICE's
    await ship(b, "B", a, "A")
    assert [i.payload for i in a.inbox_after(ALICE)] == [Receipt("failed", "s1", BOB, T)]
    assert await a.store_message(ALICE, "s2", BOB, b"no device", T + 1, CAP) == Stored(0, T, True)
    results = await a.user_batch(ALICE, [(SEND, "s1", BOB, b"for 2", (), 2)], T + 2, CAP)
    assert results == [(True, Stored(0, T + 2))]                # queued anew, not a duplicate
    await ship(a, "A", b, "B")
    assert [(i.payload.id, i.payload.body) for i in b.inbox_after(BOB)] == [
        ("s2", b"no device"), ("s1", b"for 2")]
    # Step 4: a release that does not match a message shipped from here changes nothing
    await b.outq_apply("A", "e9", [(1, ("unsent", ALICE, "s2", CAROL))], CAP)
    applied = await a.outq_apply("B", "e9", [(1, ("unsent", ALICE, "s1", CAROL))], CAP)
    assert applied.upto == 1
    assert await a.store_message(ALICE, "s1", BOB, b"", T + 3, CAP) == Stored(0, T + 2, True)


async def test_an_item_for_a_user_unknown_here_is_dropped_and_passed(cluster):
    _, b = cluster
    item = ("item", DAVE, "receipt", pack_item(Receipt("read", "x", ALICE, T)))
    applied = await b.outq_apply("A", "e1", [(1, item)], CAP)
    assert applied == outq.Applied(1, []) and b.inbox_count(DAVE) == 0
    assert await b.outq_apply("A", "e1", [(1, item)], CAP) == outq.Applied(1, [])


async def test_a_malformed_shipment_is_refused_whole(cluster):
    a, b = cluster
    await a.store_message(ALICE, "m1", BOB, b"", T, CAP)
    good = a.outq_peek("B")
    for bad in ([good[0], (3, ("what", BOB))],
                [(2, good[0][1]), (2, good[0][1])],
                [good[0], (2, ("item", BOB, "nope", b""))],
                [good[0], (2, ("msg", ALICE, "m9", "bob", b"", T, ()))],
                [good[0], (2, ("msg", ALICE, "m9", BOB, b"", T, (), 0))],
                [good[0], (2, ("unsent", ALICE, "m9"))]):
        with pytest.raises(InvalidArgument):
            await b.outq_apply("A", "e1", bad, CAP)
    assert b.inbox_count(BOB) == 0
    assert (await b.outq_apply("A", "e1", good, CAP)).upto == 1


async def test_a_group_fan_out_queues_for_a_remote_member_capped_at_its_home(cluster):
    a, b = cluster
    gid = f"{ALICE}/g"
    results, record = await a.group_batch(gid, [(CREATE, ALICE, "G", [CAROL, BOB]),
                                                (GSEND, ALICE, "g1", b"yo")], T, 1, 16)
    assert record.members == (ALICE, CAROL, BOB)
    assert [u for ok, out in results for u, _ in out.appended] == [ALICE, CAROL, CAROL]
    assert meta_record(a, BOB) is None and a.outq_pending() == {"B": 2}
    # A remote member is not capped here but at its home, with the same rule.
    (ok, out), = (await a.group_batch(gid, [(GSEND, ALICE, "g2", b"")], T, 1, 16))[0]
    assert ok and [u for u, _ in out.appended] == [CAROL]   # CAROL: a "missed" marker
    applied = await ship(a, "A", b, "B", cap=1)
    assert [(u, i.kind, i.seq) for u, i in applied.nudges] == [
        (BOB, "group", 1), (BOB, "message", 2), (BOB, "group", 3)]
    assert b.inbox_after(BOB)[0].payload == GroupEvent(gid, "created", ALICE, (CAROL, BOB),
                                                       "G", T)
    missed = b.inbox_after(BOB)[2].payload
    assert (missed.event, missed.count, missed.name) == ("missed", 1, "G")
    assert b.inbox_meta(BOB) == InboxMeta(4, 1, 2, 2)
    # 50 more: still one message and one marker, whose count runs
    for i in range(50):
        await a.group_batch(gid, [(GSEND, ALICE, f"h{i}", b"")], T, 1, 16)
    applied = await ship(a, "A", b, "B", cap=1)
    assert b.inbox_meta(BOB) == InboxMeta(54, 1, 2, 2)
    assert b.inbox_after(BOB)[-1].payload.count == 51
    assert [i.seq for _, i in applied.nudges] == [53]      # superseded markers not nudged
    audit(a, ALICE, CAROL)
    audit(b, BOB)


async def test_past_outq_high_a_remote_members_group_items_fold_into_one_missed(cluster):
    """B is down: the queue to it stops growing at ``high`` items; what the
    group said to BOB past that waits as one record, queued as one MISSED
    (with the count) once shipping leaves room, after what was queued
    before it and before what follows."""
    a, b = cluster
    gid, high = f"{ALICE}/g", 3
    await a.group_batch(gid, [(CREATE, ALICE, "G", [CAROL, BOB])], T, CAP, 16, outq_high=high)
    for i in range(40):
        (ok, _), = (await a.group_batch(gid, [(GSEND, ALICE, f"g{i}", b"x")], T + i, CAP, 16,
                                        outq_high=high))[0]
        assert ok                              # accepted for everyone else
    await a.group_batch(gid, [(RENAME, ALICE, "G2")], T + 50, CAP, 16, outq_high=high)
    assert a.outq_pending() == {"B": high}     # created, g0, g1; the rest folded
    assert a.outq_folded() == {"B": 39}        # g2..g39 and the rename, in one record
    assert a.inbox_count(CAROL) == 42          # CAROL, at home, got everything
    # B is back: ship and trim; the trim queues the fold, and it ships too
    items = a.outq_peek("B")
    applied = await b.outq_apply("A", await a.outq_epoch(), items, CAP)
    await a.outq_trim("B", applied.upto, high)
    assert [item[0] for _, item in a.outq_peek("B")] == ["missed"]
    assert a.outq_folded() == {} and a.outq_pending() == {"B": 1}
    # with room again, what follows is queued one by one, after the marker
    await a.group_batch(gid, [(GSEND, ALICE, "late", b"x")], T + 60, CAP, 16, outq_high=high)
    assert [item[0] for _, item in a.outq_peek("B")] == ["missed", "group"]
    await ship(a, "A", b, "B")
    assert a.outq_pending() == {}
    got = b.inbox_after(BOB)
    assert [i.payload.id if i.kind == "message" else i.payload.event for i in got] == [
        "created", "g0", "g1", "missed", "late"]
    assert (got[3].payload.count, got[3].payload.name, got[3].payload.by) == (38, "G2", ALICE)
    audit(a, ALICE, CAROL)
    audit(b, BOB)


async def test_the_items_folded_per_node_are_counted_until_each_fold_is_queued(cluster):
    """What the operator's view shows beside the queue (``outq_folded``):
    every group item folded, down by a fold's items as each is queued."""
    a, _ = cluster
    high, g, h = 2, f"{ALICE}/g", f"{ALICE}/h"
    for gid in (g, h):                         # "created" for BOB, twice: the queue is full
        await a.group_batch(gid, [(CREATE, ALICE, "G", [BOB])], T, CAP, 16, outq_high=high)
    for i in range(3):
        await a.group_batch(g, [(GSEND, ALICE, f"g{i}", b"x")], T, CAP, 16, outq_high=high)
    for i in range(2):
        await a.group_batch(h, [(GSEND, ALICE, f"h{i}", b"x")], T, CAP, 16, outq_high=high)
    assert a.outq_pending() == {"B": 2} and a.outq_folded() == {"B": 5}
    await a.outq_trim("B", 1, high)            # room for one: g's fold is queued
    assert a.outq_pending() == {"B": 2} and a.outq_folded() == {"B": 2}
    await a.outq_trim("B", 99, high)           # and then h's
    assert a.outq_pending() == {"B": 1} and a.outq_folded() == {}
    assert [item[5] for _, item in a.outq_peek("B")] == [2]      # h's MISSED: 2 messages


async def test_without_remote_every_user_is_local_as_before(cluster):
    a, _ = cluster
    op = UserBatch(ALICE, ((SEND, "m1", CAROL, b""), (SEND, "m2", BOB, b""), (ACK, [1])), T, CAP)
    results = await a.store.submit(op)               # no remote: a single node
    assert results[0] == (True, Stored(1, T)) and isinstance(results[1][1], UnknownUser)
    assert a.outq_pending() == {}


async def test_a_shipment_after_one_never_applied_is_refused_whole(cluster):
    a, b = cluster
    for i in range(6):
        await a.store_message(ALICE, f"m{i}", BOB, b"x", T + i, CAP)
    epoch = await a.outq_epoch()
    first, second = a.outq_peek("B", 3), a.outq_peek("B", 3, after=3)
    assert [s for s, _ in first] == [1, 2, 3] and [s for s, _ in second] == [4, 5, 6]
    # the first shipment was lost (its gateway died): the second must not
    # move the watermark past items never applied
    with pytest.raises(outq.Gap):
        await b.outq_apply("A", epoch, second, CAP, after=3)
    assert b.inbox_after(BOB) == []
    assert (await b.outq_apply("A", epoch, first, CAP)).upto == 3    # a first one: no check
    assert (await b.outq_apply("A", epoch, second, CAP, after=3)).upto == 6
    assert [i.payload.id for i in b.inbox_after(BOB)] == [f"m{i}" for i in range(6)]
    # a resend of what was applied, following what was applied, is skipped
    assert (await b.outq_apply("A", epoch, second, CAP, after=3)).nudges == []


async def test_receipts_go_back_to_where_a_message_came_from_while_the_map_lags(cluster):
    """B's home map lags the directory (or was rebuilt without A's users
    yet): it does not list ALICE. The receipts for her messages, which B
    applied from A, go back to A (delivered, read, and the failed receipt
    of a refused one), not into an inbox for her on B that nobody reads."""
    a, b = cluster
    b.remote = lambda user: None                    # B knows no one's home yet
    await a.store_message(ALICE, "m1", BOB, b"hi", T, CAP)
    await a.store_message(ALICE, "m2", BOB, b"hi", T + 1, CAP)
    applied = await ship(a, "A", b, "B", cap=1)                    # m2 refused: B's cap is 1
    assert [i.payload.id for _, i in applied.nudges] == ["m1"]
    assert await b.ack_inbox(BOB, [1], T + 10) == [
        RoutedReceipt(ALICE, 0, Receipt("delivered", "m1", BOB, T + 10))]
    assert [r.seq for r in await b.store_read(BOB, ALICE, ["m1"], T + 20)] == [0]
    assert b.inbox_after(ALICE) == [] and meta_record(b, ALICE) is None
    assert b.outq_pending() == {"A": 3}
    await ship(b, "B", a, "A")
    assert [(i.payload.kind, i.payload.id) for i in a.inbox_after(ALICE)] == [
        ("failed", "m2"), ("delivered", "m1"), ("read", "m1")]
    audit(a, ALICE)


async def test_an_item_for_a_user_the_home_map_does_not_list_yet_is_refused_whole(tmp_path):
    """A restarted node's replica of the home map lags the directory: an
    item due to a user it does not list, and who has no account here, is
    refused (HomeUnknown: INTERNAL, resent) before anything is written,
    where it used to go into an inbox on this node that nobody reads."""
    from storage import HomeUnknown
    homes = {ALICE: "A", CAROL: "A", BOB: "B"}
    a = Harness("lmdb", tmp_path / "A")
    s = a.storage
    s.remote = lambda user: None if homes.get(user) in (None, "A") else homes[user]
    for user in (ALICE, CAROL):
        await s.register_device(user, KEY, 1)
    group = f"{ALICE}/g"
    try:
        results, _ = await s.group_batch(group, [(CREATE, ALICE, "Team", [BOB, CAROL])], T, CAP, 64)
        assert results[0][0]
        results, _ = await s.group_batch(group, [(GSEND, BOB, "b1", b"hi")], T, CAP, 64)
        assert results[0][0]                        # BOB's message, fanned out here
        seq = [i.seq for i in s.inbox_after(CAROL) if i.kind == "message"][0]
        del homes[BOB]                              # the replica, rebuilt, lacks BOB for now
        queued = s.outq_pending()
        results, _ = await s.group_batch(group, [(GSEND, ALICE, "a1", b"x")], T, CAP, 64)
        assert not results[0][0] and isinstance(results[0][1], HomeUnknown)
        with pytest.raises(HomeUnknown):            # BOB's delivered receipt: nowhere to go
            await s.ack_inbox(CAROL, [seq], T)
        with pytest.raises(HomeUnknown):
            await s.store_read(CAROL, BOB, ["b1"], T, group)
        assert seq in [i.seq for i in s.inbox_after(CAROL)]
        assert s.outq_pending() == queued and meta_record(s, BOB) is None
        homes[BOB] = "B"                            # caught up: the same requests pass
        results, _ = await s.group_batch(group, [(GSEND, ALICE, "a1", b"x")], T, CAP, 64)
        assert results[0][0]
        await s.ack_inbox(CAROL, [seq], T)
        assert await s.store_read(CAROL, BOB, ["b1"], T, group)
        assert s.outq_pending()["B"] == queued["B"] + 3     # a1, the delivered and read receipts
        assert meta_record(s, BOB) is None
    finally:
        a.close()
