"""The inbox against every backend: idempotent store, the offline cap,
sequence numbers, acks and the receipts they route, read receipts, last
seen, dedup pruning."""

from __future__ import annotations

import asyncio

import pytest

from storage import (DuplicateId, InboxItem, InboxMeta, InvalidArgument, Message, OfflineFull,
                     Receipt, RoutedReceipt, Stored, UnknownUser)
from storage.mailbox import MAX_READ_IDS, recount_inbox

from storage_testkit import OTHER, RECEIVER, SENDER

T = 1_700_000_000_000
CAP = 1000


def audit(backend, *phones: str) -> None:
    """inbox_meta agrees with a full scan of the inbox."""
    for phone in phones:
        assert backend.storage.inbox_meta(phone) == backend.store.read(
            lambda txn: recount_inbox(txn, phone)), phone


async def send(s, cid: str, to: str = RECEIVER, sender: str = SENDER, ts: int = T,
               cap: int = CAP, body: bytes = b"hello") -> Stored:
    return await s.store_message(sender, cid, to, body, ts, cap)


# -- store_message ----------------------------------------------------------------
async def test_store_message_appends_to_the_recipient_inbox(users):
    s = users.storage
    assert await send(s, "m1", body=b"\x00hi") == Stored(1, T, False)
    expected = InboxItem(1, "message", Message("m1", SENDER, T, b"\x00hi"))
    assert s.inbox_after(RECEIVER) == [expected]
    assert s.inbox_count(RECEIVER) == 1
    assert s.inbox_after(SENDER) == [] and s.inbox_count(SENDER) == 0
    audit(users, SENDER, RECEIVER)


async def test_writes_are_submitted_when_called_and_keep_their_order(users):
    s = users.storage
    futs = [s.store_message(SENDER, f"m{i}", RECEIVER, b"", T, CAP) for i in range(5)]
    futs[2].add_done_callback(lambda f: None)            # a future, not a coroutine
    assert [(await f).seq for f in futs] == [1, 2, 3, 4, 5]
    assert (await s.ack_inbox(RECEIVER, [1]))[0].receipt.ts > T   # ts defaults to now


async def test_resend_is_idempotent(users):
    s = users.storage
    first = await send(s, "m1", ts=T)
    again = await send(s, "m1", ts=T + 999, body=b"changed")
    assert again == Stored(first.seq, T, duplicate=True)
    assert s.inbox_count(RECEIVER) == 1
    assert s.inbox_after(RECEIVER)[0].payload.body == b"hello"
    # The same client id from another sender is another message.
    assert await send(s, "m1", sender=OTHER) == Stored(2, T, False)
    audit(users, RECEIVER)


async def test_resend_in_the_same_batch_is_a_duplicate(users):
    s = users.storage
    async with users.hold():
        futs = [asyncio.ensure_future(send(s, "m1")) for _ in range(3)]
        await asyncio.sleep(0)                  # let the three coroutines submit
    results = await asyncio.gather(*futs)
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert {r.seq for r in results} == {1}
    assert s.inbox_count(RECEIVER) == 1


async def test_client_id_reused_for_another_recipient_is_refused(users):
    s = users.storage
    await send(s, "m1", to=RECEIVER)
    with pytest.raises(DuplicateId, match="already used client id 'm1'"):
        await send(s, "m1", to=OTHER)
    assert users.storage.inbox_count(OTHER) == 0


async def test_unknown_recipient(users):
    s = users.storage
    stranger = "+4915112345678"
    with pytest.raises(UnknownUser, match=r"\+4915112345678"):
        await send(s, "m1", to=stranger)
    # Nothing was kept, not even the client id.
    await users.register(stranger)
    assert await send(s, "m1", to=stranger) == Stored(1, T, False)


async def test_cap_at_the_limit_and_one_past(users):
    s = users.storage
    cap = 5
    for i in range(cap):                                      # up to the limit: stored
        assert (await send(s, f"m{i}", cap=cap)).seq == i + 1
    with pytest.raises(OfflineFull, match="5 undelivered"):   # one past: refused
        await send(s, "m5", cap=cap)
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=6, messages=5, receipts=0)
    assert await send(s, "m0", cap=cap) == Stored(1, T, True)  # a resend is still answered
    await s.ack_inbox(RECEIVER, [1], T)                        # room again
    assert await send(s, "m5", cap=cap) == Stored(6, T, False)
    audit(users, SENDER, RECEIVER)


async def test_receipts_do_not_count_toward_the_cap(users):
    s = users.storage
    for i in range(10):                          # RECEIVER wrote to OTHER, who reads it all
        await s.store_message(RECEIVER, f"r{i}", OTHER, b"x", T, 100)
    await s.store_read(OTHER, RECEIVER, [f"r{i}" for i in range(10)], T)
    for i in range(3):
        await send(s, f"m{i}", cap=3)
    with pytest.raises(OfflineFull):
        await send(s, "m3", cap=3)
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=14, messages=3, receipts=10)


async def test_refused_op_in_a_batch_leaves_the_others(users):
    s = users.storage
    await send(s, "m0", cap=2)
    async with users.hold():
        futs = [asyncio.ensure_future(send(s, f"m{i}", cap=2)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert results[0] == Stored(2, T) and isinstance(results[1], OfflineFull)
    assert isinstance(results[2], OfflineFull)
    assert [i.seq for i in s.inbox_after(RECEIVER)] == [1, 2]
    audit(users, RECEIVER)


@pytest.mark.parametrize("cid", ["", "x" * 65, "\u00e9" * 33, 7])
async def test_malformed_client_id(users, cid):
    with pytest.raises(InvalidArgument):
        await send(users.storage, cid)


async def test_body_must_be_bytes(users):
    with pytest.raises(InvalidArgument):
        await send(users.storage, "m1", body="text")


# -- sequence numbers and scans ---------------------------------------------------
async def test_seqs_are_monotonic_and_scans_ordered(users):
    s = users.storage
    results = await asyncio.gather(*(send(s, f"m{i}", sender=(SENDER, OTHER)[i % 2])
                                     for i in range(200)))
    assert sorted(r.seq for r in results) == list(range(1, 201))
    items = s.inbox_after(RECEIVER, 0, limit=None)
    assert [i.seq for i in items] == list(range(1, 201))
    # Paging: after_seq and limit.
    assert [i.seq for i in s.inbox_after(RECEIVER, 50, limit=3)] == [51, 52, 53]
    assert s.inbox_after(RECEIVER, 200) == []
    # Acking everything never rewinds the counter.
    await s.ack_inbox(RECEIVER, range(1, 201), T)
    assert (await send(s, "next")).seq == 201
    audit(users, SENDER, OTHER, RECEIVER)


async def test_inboxes_of_prefix_sharing_users_are_separate(users):
    s = users.storage
    short, long_ = "+155500000", "+1555000001"              # one is a prefix of the other
    await users.register(short, long_)
    await send(s, "a", to=short)
    await send(s, "b", to=long_)
    assert [i.payload.id for i in s.inbox_after(short)] == ["a"]
    assert [i.payload.id for i in s.inbox_after(long_)] == ["b"]
    audit(users, short, long_)


# -- acks and receipts ------------------------------------------------------------
async def test_ack_routes_delivered_receipts_to_the_sender(users):
    s = users.storage
    await send(s, "m1")
    await send(s, "m2")
    routed = await s.ack_inbox(RECEIVER, [2, 1], T + 5)
    delivered = [Receipt("delivered", "m1", RECEIVER, T + 5),
                 Receipt("delivered", "m2", RECEIVER, T + 5)]
    assert routed == [RoutedReceipt(SENDER, 1, delivered[0]),
                      RoutedReceipt(SENDER, 2, delivered[1])]
    assert s.inbox_after(SENDER) == [InboxItem(1, "receipt", delivered[0]),
                                     InboxItem(2, "receipt", delivered[1])]
    assert s.inbox_count(RECEIVER) == 0
    audit(users, SENDER, RECEIVER)


async def test_an_ack_takes_a_receipt_it_appends_itself_at_a_seq_it_names(users):
    # A message to oneself: acking it appends its receipt to the same inbox;
    # a seq named in the same call is taken once the call reaches it (the
    # mailbox model's semantics; hypothesis found a version that read every
    # seq before writing, which left it there)
    s = users.storage
    await s.store_message(SENDER, "self", SENDER, b"note", T, 100)
    routed = await s.ack_inbox(SENDER, [1, 2], T + 5)
    assert [r.seq for r in routed] == [2]
    assert s.inbox_after(SENDER) == [] and s.inbox_count(SENDER) == 0
    audit(users, SENDER)


async def test_ack_is_idempotent(users):
    s = users.storage
    await send(s, "m1")
    await send(s, "m2")
    assert len(await s.ack_inbox(RECEIVER, [1], T)) == 1
    assert await s.ack_inbox(RECEIVER, [1, 1, 99], T) == []     # gone or never there
    assert [r.receipt.id for r in await s.ack_inbox(RECEIVER, [1, 2], T)] == ["m2"]
    assert s.inbox_meta(SENDER) == InboxMeta(next_seq=3, messages=0, receipts=2)
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=3, messages=0, receipts=0)
    audit(users, SENDER, RECEIVER)


async def test_acking_a_receipt_just_deletes_it(users):
    s = users.storage
    await send(s, "m1")
    await s.ack_inbox(RECEIVER, [1], T)
    assert await s.ack_inbox(SENDER, [1], T) == []
    assert s.inbox_after(SENDER) == [] and s.inbox_after(RECEIVER) == []
    audit(users, SENDER, RECEIVER)


async def test_ack_routes_each_receipt_to_its_own_sender(users):
    s = users.storage
    await send(s, "a", sender=SENDER)
    await send(s, "b", sender=OTHER)
    await send(s, "self", sender=RECEIVER)                    # a note to self
    routed = await s.ack_inbox(RECEIVER, [1, 2, 3], T)
    assert [(r.to, r.seq, r.receipt.id) for r in routed] == [
        (SENDER, 1, "a"), (OTHER, 1, "b"), (RECEIVER, 4, "self")]
    assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=5, messages=0, receipts=1)
    audit(users, SENDER, OTHER, RECEIVER)


async def test_read_receipts(users):
    s = users.storage
    for cid in ("m1", "m2"):
        await send(s, cid)
    await send(s, "o1", to=OTHER)
    # Only what the reader got is read: "o1" went to OTHER, "zz" was never sent.
    routed = await s.store_read(RECEIVER, SENDER, ["m1", "o1", "zz", "m2"], T + 9)
    reads = [Receipt("read", "m1", RECEIVER, T + 9), Receipt("read", "m2", RECEIVER, T + 9)]
    assert routed == [RoutedReceipt(SENDER, 1, reads[0]), RoutedReceipt(SENDER, 2, reads[1])]
    assert [i.payload for i in s.inbox_after(SENDER)] == reads
    assert await s.store_read(RECEIVER, SENDER, ["m1"], T + 10) == []     # read once
    with pytest.raises(UnknownUser):
        await s.store_read(RECEIVER, "+4915112345678", ["m1"], T)
    with pytest.raises(InvalidArgument):
        await s.store_read(RECEIVER, SENDER, ["m"] * (MAX_READ_IDS + 1), T)
    audit(users, SENDER)


# -- last seen and dedup pruning --------------------------------------------------
async def test_last_seen_never_goes_back(users):
    s = users.storage
    assert s.get_last_seen(SENDER) is None
    assert await s.set_last_seen(SENDER, T) == T
    assert await s.set_last_seen(SENDER, T - 1) == T
    assert s.get_last_seen(SENDER) == T
    assert await s.set_last_seen(SENDER, T + 1) == T + 1


async def test_last_seen_of_many_in_one_op_never_goes_back_either(users):
    s = users.storage
    await s.set_last_seen(SENDER, T)
    assert await s.set_last_seen_many([(SENDER, T - 5), (RECEIVER, T + 7)]) == 2
    assert (s.get_last_seen(SENDER), s.get_last_seen(RECEIVER)) == (T, T + 7)


async def test_prune_dedup_forgets_old_client_ids_only(users):
    s = users.storage
    for i, ts in enumerate([10, 20, 30]):
        await send(s, f"m{i}", ts=ts)
    assert await s.prune_dedup(before_ms=25) == 2
    assert await s.prune_dedup(before_ms=25) == 0
    assert (await send(s, "m2", ts=40)).duplicate is True     # still remembered
    assert (await send(s, "m0", ts=40)).duplicate is False    # forgotten: stored again
    assert await s.prune_dedup(before_ms=100, limit=1) == 1
