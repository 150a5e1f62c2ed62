"""Sender-key requests (client/group_requests.py), against a real node: a
member that lost a sender's key asks for it and reads what the sender
writes next, without the sender re-keying; requests from non-members, for
unknown groups, or too many, are not answered; asking is bounded. The
codec-level test drives a real ``SenderKeyCodec`` with real ciphertexts."""

from __future__ import annotations

import asyncio

import pytest

from client import Client
from client.events import Message, Receipt, Sent, Undecryptable
from client.groups import GroupMessage, GroupReceipt
from client.ids import is_internal, new_internal_id
from client_testkit import next_event
from test_e2e_sdk import sdk_user
from test_group_key_wait import GROUP, bob_codec, push
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire
from transport.e2e import GroupCipher, SenderKeyRequest

pytestmark = pytest.mark.timeout(90)

ALICE, BOB, CAROL = "+15550000401", "+15550000402", "+15550000403"


def watch(client: Client, sender: str, drop: int = 0) -> list[wire.Message]:
    """Record the SDK-internal 1:1 messages ``sender`` pushes to ``client``;
    the first ``drop`` of them never reach its receive path (lost)."""
    on_push, seen = client._receiver.on_push, []

    def push(frame: wire.Frame) -> None:
        if (type(frame) is wire.Message and frame.group is None and frame.sender == sender
                and is_internal(frame.id)):
            seen.append(frame)
            if len(seen) <= drop:
                return
        on_push(frame)
    client._receiver.on_push = push
    return seen


async def app_events(client: Client, wait: float = 0.3) -> list:
    """Every event the app can take now (until none comes for ``wait`` s)."""
    events = []
    async def drain():
        async for event in client.events():
            events.append(event)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), wait)
    return events


async def request(client: Client, to: str, group: str) -> None:
    await client._send_sealed(to, SenderKeyRequest(group), (), new_internal_id())


@pytest.mark.parametrize("lost", ["state_deleted", "key_dropped"])
async def test_a_member_that_lost_a_senders_key_asks_and_reads_the_next_messages(node, tmp_path, lost):  # noqa: F811
    """Bob's copy of Alice's sender key is lost (his state for the group
    deleted, or her distribution message never reached him). Alice believes
    he has it, so she will not hand it again: Bob's SDK asks her for it
    after holding her message ASK_AFTER (2) seconds, her SDK answers with
    her current key, and her next messages open. The message he held was
    written before that key's iteration: it stays shut (Undecryptable, at
    once, not after the 60 s wait). No app event on either side names the
    request or the answer, and Alice did not re-key."""
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=str(tmp_path / "bob"))
    carol = await sdk_user(node, CAROL)
    try:
        bob.group_codec.held.timeout = 30.0
        from_alice = watch(bob, ALICE, drop=1 if lost == "key_dropped" else 0)
        group = await alice.create_group("lost", "lost", [BOB, CAROL])
        # Step 1: Bob's copy of Alice's key goes
        ids = set()
        if lost == "state_deleted":
            ids.add((await alice.send_group(group, b"zqGROUP zero")).id)
            for member in (bob, carol):
                assert (await next_event(member, (GroupMessage,))).body == b"zqGROUP zero"
            bob.group_codec.store.drop_group(group)
        key_id = None if lost == "key_dropped" else alice.group_codec.store.group(group).own.key_id

        # Step 2: Alice writes; Bob holds it, asks, gets her key: it stays shut
        start = asyncio.get_running_loop().time()
        one = await alice.send_group(group, b"zqGROUP one")
        ids.add(one.id)
        assert (await next_event(carol, (GroupMessage,))).body == b"zqGROUP one"
        shut = await next_event(bob, (GroupMessage, Undecryptable), timeout=15.0)
        assert isinstance(shut, Undecryptable) and shut.id == one.id, shut
        assert "within" not in shut.reason, shut.reason                     # not the wait's end
        assert asyncio.get_running_loop().time() - start >= 2.0 - 0.1        # asked after ASK_AFTER
        assert bob.group_codec.requests.asked == 1 and alice.group_codec.requests.answered == 1

        # Step 3: what Alice writes next opens, under the same key
        two = await alice.send_group(group, b"zqGROUP two")
        ids.add(two.id)
        message = await next_event(bob, (GroupMessage, Undecryptable), timeout=5.0)
        assert isinstance(message, GroupMessage), message
        assert (message.id, message.body) == (two.id, b"zqGROUP two")
        if key_id is not None:
            assert alice.group_codec.store.group(group).own.key_id == key_id
        assert (await next_event(carol, (GroupMessage,))).body == b"zqGROUP two"
        assert len(from_alice) == 2                 # her key, then her answer: nothing more

        # Step 4: no app event names the request or the answer
        for client in (alice, bob):
            for event in await app_events(client):
                assert not isinstance(event, (Message, Undecryptable)), event
                assert not is_internal(getattr(event, "id", "") or ""), event
                if isinstance(event, (Sent, Receipt, GroupReceipt)):
                    assert event.id in ids, event
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_requests_from_non_members_or_for_unknown_groups_are_not_answered(node):  # noqa: F811
    alice, bob, carol = [await sdk_user(node, u) for u in (ALICE, BOB, CAROL)]
    try:
        group = await alice.create_group("closed", "closed", [BOB])
        await alice.send_group(group, b"zqGROUP for bob")
        assert (await next_event(bob, (GroupMessage,))).body == b"zqGROUP for bob"
        to_bob, to_carol = watch(bob, ALICE), watch(carol, ALICE)
        answers = alice.group_codec.requests
        # Step 1: Carol, never a member, asks; and for a group that does not
        # exist, and one Alice is not in; Bob, a member, asks: only he is answered
        await request(carol, ALICE, group)
        await request(carol, ALICE, f"{ALICE}/made-up")
        await request(carol, ALICE, f"{CAROL}/hers")
        await request(bob, ALICE, group)
        await wait_for(lambda: answers.answered == 1 and answers.dropped == 3, timeout=5.0)
        await wait_for(lambda: len(to_bob) == 1, timeout=5.0)
        assert to_carol == [] and CAROL not in alice.group_codec.store.group(group).given
        assert not alice.group_codec.store.has_group(f"{ALICE}/made-up")

        # Step 2: Bob is removed (Alice's key is replaced); his request now is refused
        await alice.remove_members(group, [BOB])
        await wait_for(lambda: alice.group_codec.store.group(group).removed, timeout=5.0)
        answers._answered.clear()                   # not the rate limit that refuses him
        await request(bob, ALICE, group)
        await wait_for(lambda: answers.dropped == 4, timeout=5.0)
        await asyncio.sleep(0.3)
        assert len(to_bob) == 1 and to_carol == [] and answers.answered == 1
        for event in await app_events(alice):
            assert not isinstance(event, (Message, Undecryptable)), event
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_requests_are_bounded_both_ways(node):  # noqa: F811
    """Asking: one request per (group, sender) every ask_every seconds,
    however many messages wait, and none once nothing waits. Answering:
    one answer per (requester, group) every ANSWER_EVERY (10) seconds,
    however many requests come."""
    alice, bob = [await sdk_user(node, u) for u in (ALICE, BOB)]
    try:
        group = await alice.create_group("bounded", "bounded", [BOB])
        from_alice = watch(bob, ALICE, drop=1_000)       # Alice's keys never reach Bob
        from_bob = watch(alice, BOB)
        held = bob.group_codec.held
        held.ask_after, held.ask_every, held.timeout = 0.2, 1.0, 2.5
        # Step 1: ten messages wait for a key that never comes: Bob asks at
        # ~0.2, 1.2 and 2.2 s (one pair), not once per message
        start = asyncio.get_running_loop().time()
        for i in range(10):
            await alice.send_group(group, b"zqGROUP %d" % i)
        for _ in range(10):
            event = await next_event(bob, (GroupMessage, Undecryptable), timeout=10.0)
            assert isinstance(event, Undecryptable), event
        elapsed = asyncio.get_running_loop().time() - start
        asked = bob.group_codec.requests.asked
        assert 1 <= asked <= 1 + int((elapsed - 0.2) / 1.0), (asked, elapsed)
        await wait_for(lambda: len(from_bob) == asked, timeout=5.0)
        await asyncio.sleep(1.5)                        # nothing waits: no more requests
        assert bob.group_codec.requests.asked == asked and len(from_bob) == asked
        # Alice answered the first only (the rest within ANSWER_EVERY); her
        # answers were lost on the way, as her key was
        assert alice.group_codec.requests.answered == 1
        assert len(from_alice) == 2

        # Step 2: a flood of requests gets one answer
        alice.group_codec.requests._answered.clear()
        dropped = alice.group_codec.requests.dropped
        for _ in range(5):
            await request(bob, ALICE, group)
        await wait_for(lambda: alice.group_codec.requests.dropped == dropped + 4, timeout=5.0)
        await wait_for(lambda: len(from_alice) == 3, timeout=5.0)
        await asyncio.sleep(0.3)
        assert alice.group_codec.requests.answered == 2 and len(from_alice) == 3
    finally:
        await alice.close()
        await bob.close()


async def test_a_held_pair_is_asked_after_a_while_then_at_most_every_interval():
    """KeyWait alone: the sender of a waiting (group, sender) is asked after
    ask_after, then every ask_every while it waits, also across waits; a
    pair whose key came is not asked again."""
    bob, got = bob_codec(timeout=5.0, ask_after=0.1, ask_every=0.4)
    asked: list[tuple[str, str]] = []
    bob.held.ask = lambda group, sender: asked.append((group, sender))
    alice, carol = GroupCipher(GROUP), GroupCipher(GROUP)
    alice_key = alice.distribution_message()
    carol.distribution_message()
    for seq in range(1, 6):
        push(bob, got, seq, ALICE, alice.encrypt(b"a%d" % seq))
    push(bob, got, 6, "+15550000304", carol.encrypt(b"c1"))           # another sender waits too
    await asyncio.sleep(0.05)
    assert asked == []                                                  # not yet
    await wait_for(lambda: len(asked) == 2, timeout=1.0)
    assert set(asked) == {(GROUP, ALICE), (GROUP, "+15550000304")}
    await wait_for(lambda: asked.count((GROUP, ALICE)) == 2, timeout=1.0)
    bob.process(ALICE, alice_key)                                       # Alice's key comes
    assert [seq for seq, body, _ in got] == [1, 2, 3, 4, 5]
    count = asked.count((GROUP, ALICE))
    alice.rekey()                                                       # a key Bob never gets
    push(bob, got, 7, ALICE, alice.encrypt(b"a7"))
    await asyncio.sleep(0.15)           # waiting again, but asked less than ask_every ago
    assert asked.count((GROUP, ALICE)) == count
    await wait_for(lambda: asked.count((GROUP, ALICE)) == count + 1, timeout=1.0)
    bob.close()
    assert bob.held._timers == {} and bob.held._next_ask == {}
