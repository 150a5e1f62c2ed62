"""The key directory's one-time prekeys: each is handed out once, even when
the publisher resends a publish it never saw acknowledged."""

from __future__ import annotations

import pytest

from storage_testkit import KEY, OTHER, RECEIVER, SENDER

pytestmark = pytest.mark.timeout(20)


def prekeys(*ids: int) -> tuple[tuple[int, bytes], ...]:
    return tuple((i, bytes([i]) * 32) for i in ids)


async def test_a_resent_publish_does_not_rehand_a_prekey(users):
    st = users.storage
    assert await st.publish_keys(SENDER, KEY, b"signed", prekeys(1, 2, 3)) == 3
    first = await st.fetch_keys(RECEIVER, SENDER)
    assert first.one_time[0] == 1
    # the ACK was lost with the connection: the same frame comes again
    assert await st.publish_keys(SENDER, KEY, b"signed", prekeys(1, 2, 3)) == 2
    assert st.count_keys(SENDER) == 2
    handed = [first.one_time[0]]
    for fetcher in (OTHER, RECEIVER):
        handed.append((await st.fetch_keys(fetcher, SENDER)).one_time[0])
    assert handed == [1, 2, 3]
    assert (await st.fetch_keys(OTHER, SENDER)).one_time is None


async def test_a_top_up_after_fetches_adds_only_the_new_ids(users):
    st = users.storage
    await st.publish_keys(SENDER, KEY, b"signed", prekeys(1, 2))
    assert (await st.fetch_keys(RECEIVER, SENDER)).one_time[0] == 1
    # the full local stock (2, still held, and 1, handed out) plus new ids
    assert await st.publish_keys(SENDER, KEY, b"signed2", prekeys(1, 2, 3, 4)) == 3
    got = [(await st.fetch_keys(OTHER, SENDER)).one_time[0] for _ in range(3)]
    assert got == [2, 3, 4]


async def test_a_new_device_counts_its_prekeys_afresh(users):
    st = users.storage
    await st.publish_keys(SENDER, KEY, b"signed", prekeys(1, 2))
    await st.fetch_keys(RECEIVER, SENDER)
    await st.fetch_keys(RECEIVER, SENDER)
    await st.register_device(SENDER, KEY, 2)        # a new phone: its counter starts at 1
    assert await st.publish_keys(SENDER, KEY, b"new", prekeys(1, 2)) == 2
    assert (await st.fetch_keys(OTHER, SENDER)).one_time[0] == 1
