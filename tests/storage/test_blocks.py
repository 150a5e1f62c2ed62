"""Blocking (storage.blocks) on every backend: the list kept with the
blocker, counted in its inbox_meta, and a blocked sender's messages dropped
at the inbox append: acknowledged, deduplicated, never stored, no receipt."""

from __future__ import annotations

import pytest

from storage import InvalidArgument, UnknownUser
from storage.batch import ACK, SEND
from storage.blocks import BlocksFull
from storage.mailbox import recount_inbox
from storage_testkit import OTHER, RECEIVER, SENDER

pytestmark = pytest.mark.timeout(20)

T, CAP = 1_000, 100


async def test_block_and_unblock_are_stored_counted_and_idempotent(users):
    st = users.storage
    assert st.blocked_list(RECEIVER) == []
    assert await st.set_block(RECEIVER, SENDER, True) is True
    assert await st.set_block(RECEIVER, SENDER, True) is False     # a resend changes nothing
    assert await st.set_block(RECEIVER, OTHER, True) is True
    assert st.blocked_list(RECEIVER) == sorted([SENDER, OTHER])
    assert st.is_blocked(RECEIVER, SENDER) and not st.is_blocked(SENDER, RECEIVER)
    assert await st.set_block(RECEIVER, SENDER, False) is True
    assert await st.set_block(RECEIVER, SENDER, False) is False
    assert st.blocked_list(RECEIVER) == [OTHER]
    assert not st.is_blocked(RECEIVER, SENDER)


async def test_refusals_change_nothing(users):
    st = users.storage
    with pytest.raises(InvalidArgument):
        await st.set_block(RECEIVER, RECEIVER, True)
    with pytest.raises(UnknownUser):
        await st.set_block(RECEIVER, "+15559999999", True)
    with pytest.raises(InvalidArgument):
        await st.set_block(RECEIVER, "nobody", True)
    await st.set_block(RECEIVER, SENDER, True, limit=1)
    with pytest.raises(BlocksFull):
        await st.set_block(RECEIVER, OTHER, True, limit=1)
    assert st.blocked_list(RECEIVER) == [SENDER]
    assert await st.set_block(RECEIVER, SENDER, False, limit=1) is True  # unblock: never refused
    assert await st.set_block(RECEIVER, OTHER, True, limit=1) is True
    assert st.blocked_list(RECEIVER) == [OTHER]


async def test_a_blocked_senders_message_is_acked_deduplicated_and_never_stored(users):
    st = users.storage
    await st.set_block(RECEIVER, SENDER, True)
    stored = await st.store_message(SENDER, "m1", RECEIVER, b"spam", T, CAP)
    assert (stored.seq, stored.ts_ms, stored.duplicate) == (0, T, False)
    again = await st.store_message(SENDER, "m1", RECEIVER, b"spam", T + 5, CAP)
    assert (again.seq, again.ts_ms, again.duplicate) == (0, T, True)
    assert st.inbox_after(RECEIVER) == []
    # the blocker cannot read it into a receipt, and an unblock does not bring it back
    assert await st.store_read(RECEIVER, SENDER, ["m1"], T + 6) == []
    await st.set_block(RECEIVER, SENDER, False)
    assert (await st.store_message(SENDER, "m1", RECEIVER, b"spam", T + 7, CAP)).duplicate
    assert st.inbox_after(RECEIVER) == []
    # new messages flow again; others were never affected
    assert (await st.store_message(SENDER, "m2", RECEIVER, b"hi", T + 8, CAP)).seq == 1
    assert (await st.store_message(OTHER, "o1", RECEIVER, b"yo", T + 9, CAP)).seq == 2
    assert users.storage.store.read(lambda txn: recount_inbox(txn, RECEIVER)) == \
        st.inbox_meta(RECEIVER)


async def test_the_blocker_acks_an_older_message_without_a_receipt(users):
    st = users.storage
    old = await st.store_message(SENDER, "m1", RECEIVER, b"before", T, CAP)
    other = await st.store_message(OTHER, "o1", RECEIVER, b"other", T, CAP)
    await st.set_block(RECEIVER, SENDER, True)
    routed = await st.ack_inbox(RECEIVER, [old.seq, other.seq], T + 1)
    assert [r.to for r in routed] == [OTHER]
    assert st.inbox_after(SENDER) == [] and st.inbox_after(RECEIVER) == []


async def test_a_batch_drops_blocked_sends_and_keeps_the_rest(users):
    st = users.storage
    await st.set_block(RECEIVER, SENDER, True)
    await st.store_message(RECEIVER, "r0", SENDER, b"to the blocked", T, CAP)
    results = await st.user_batch(SENDER, [(SEND, "a", RECEIVER, b"x"), (SEND, "b", OTHER, b"y"),
                                           (ACK, (1,))], T, CAP)
    assert [ok for ok, _ in results] == [True, True, True]
    assert results[0][1].seq == 0 and results[1][1].seq == 1
    assert len(st.inbox_after(OTHER)) == 1
    # the blocked user's delivered receipt still reaches the blocker: only the blocker's are held
    assert [(i.kind, i.payload.id) for i in st.inbox_after(RECEIVER)] == [("receipt", "r0")]
