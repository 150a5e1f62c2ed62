"""A group message that arrives before its sender key waits for the key
(client/group_hold.py), as on a cluster, where the 1:1 message handing the
key and the group message take different paths.

On one real node the key is always committed into the member's inbox
first; the tests reproduce the other order by keeping the sender's key
messages (1:1, SDK-internal ids) away from the member's receive path until
the test lets them through. The codec-level tests drive a real
``SenderKeyCodec`` with ciphertexts of real ``GroupCipher``s."""

from __future__ import annotations

import asyncio

import pytest

from client import Client
from client.events import Undecryptable
from client.group_e2e import SenderKeyCodec
from client.groups import GroupMessage
from client.ids import is_internal
from client_testkit import FAST, next_event
from test_e2e_sdk import relogin, sdk_user
from test_group_e2e import _Members
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire
from transport.e2e import GroupCipher, SenderKeyBehind
from transport.e2e_group import MAX_GROUP_SKIP

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL, DAVE = "+15550000301", "+15550000302", "+15550000303", "+15550000304"


async def login_without_keys_from(running, client: Client, sender: str, *, timeout: float = 60.0):
    """``client``'s device on a fresh Client whose receive path does not see
    ``sender``'s sender-key messages until ``release()``: the group message
    overtakes the key, as it can across nodes."""
    media = f"http://127.0.0.1:{running.system.env['media_port']}"
    again = await Client.connect(running.host, running.port,
                                 **{**FAST, "media_url": media, "e2e_dir": client.test_dir})
    again.test_key, again.test_device, again.test_dir = client.test_key, client.test_device, client.test_dir
    again.group_codec.held.timeout = timeout
    on_push, again.held_back, again.seen = again._receiver.on_push, [], []

    def push(frame: wire.Frame) -> None:
        if (type(frame) is wire.Message and frame.group is None and frame.sender == sender
                and is_internal(frame.id)):
            again.held_back.append(frame)   # a sender key on its way
            return
        again.seen.append(frame)
        on_push(frame)

    def release() -> None:
        frames, again.held_back = again.held_back, []
        for frame in frames:
            on_push(frame)
    again._receiver.on_push, again.release = push, release
    await again.login(client.user, client.test_device, client.test_key)
    return again


async def member(running, phone: str, tmp_path) -> Client:
    client = await sdk_user(running, phone, e2e_dir=str(tmp_path / phone))
    client.test_dir = str(tmp_path / phone)
    return client


def in_inbox(running, user: str, id: str) -> bool:
    store = running.system.env["mailbox"]
    return any(i.kind == "message" and i.payload.id == id for i in store.inbox_after(user, 0, 10_000))


async def no_group_message(client: Client, wait: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await next_event(client, (GroupMessage, Undecryptable), timeout=wait)


@pytest.mark.parametrize("then", ["key_arrives", "restarted"])
async def test_a_group_message_before_its_sender_key_opens_when_the_key_comes(node, tmp_path, then):  # noqa: F811
    alice, bob, carol = [await member(node, u, tmp_path) for u in (ALICE, BOB, CAROL)]
    try:
        # Step 1: Bob is away; Alice, Carol, Alice write to the group (each
        # first hands Bob her sender key: all of it waits in Bob's inbox)
        group = await alice.create_group("race", "race", [BOB, CAROL])
        await bob.close()
        a1 = await alice.send_group(group, b"zqA one")
        c1 = await carol.send_group(group, b"zqC one")
        a2 = await alice.send_group(group, b"zqA two")

        # Step 2: Bob is back, but Alice's key is still on its way: her
        # messages wait (no event, not acknowledged); Carol's opens at once
        bob = await login_without_keys_from(node, bob, ALICE)
        message = await next_event(bob, (GroupMessage, Undecryptable))
        assert isinstance(message, GroupMessage), message
        assert (message.id, message.body) == (c1.id, b"zqC one")
        await wait_for(lambda: {a1.id, a2.id} <= {getattr(f, "id", None) for f in bob.seen})
        await no_group_message(bob)
        await wait_for(lambda: not in_inbox(node, BOB, c1.id))       # Carol's acknowledged
        assert in_inbox(node, BOB, a1.id) and in_inbox(node, BOB, a2.id)

        # Step 3: Alice's key arrives (or Bob restarts: both are pushed
        # again, the key first): her messages open, in order
        if then == "key_arrives":
            bob.release()
        else:
            await bob.close()
            bob = await relogin(node, bob, e2e_dir=bob.test_dir)
        for sent, body in ((a1, b"zqA one"), (a2, b"zqA two")):
            message = await next_event(bob, (GroupMessage, Undecryptable))
            assert isinstance(message, GroupMessage), message
            assert (message.id, message.sender, message.body) == (sent.id, ALICE, body)
        await wait_for(lambda: not in_inbox(node, BOB, a1.id) and not in_inbox(node, BOB, a2.id))
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_a_sender_key_that_never_comes_makes_it_undecryptable_after_the_wait(node, tmp_path):  # noqa: F811
    alice, bob = [await member(node, u, tmp_path) for u in (ALICE, BOB)]
    try:
        group = await alice.create_group("lost", "lost", [BOB])
        await bob.close()
        sent = await alice.send_group(group, b"zqA lost key")
        bob = await login_without_keys_from(node, bob, ALICE, timeout=0.5)
        start = asyncio.get_running_loop().time()
        event = await next_event(bob, (GroupMessage, Undecryptable))
        assert isinstance(event, Undecryptable) and event.id == sent.id, event
        assert "no sender key from" in event.reason, event.reason
        assert asyncio.get_running_loop().time() - start >= 0.4
        await wait_for(lambda: not in_inbox(node, BOB, sent.id))     # given up: acknowledged
    finally:
        await alice.close()
        await bob.close()


# -- the codec alone, with real ciphertexts ---------------------------------------------------------

GROUP = f"{ALICE}/codec"


def bob_codec(**held) -> tuple[SenderKeyCodec, list]:
    client = _Members(BOB, GROUP, (ALICE, BOB, CAROL, DAVE))
    codec = SenderKeyCodec(client)
    for name, value in held.items():
        setattr(codec.held, name, value)
    codec.on_event(GROUP, "created", (ALICE, BOB, CAROL, DAVE))
    return codec, []


def push(codec: SenderKeyCodec, got: list, seq: int, sender: str, body: bytes) -> None:
    frame = wire.Message(seq, f"m{seq}", sender, 0, body, GROUP)
    codec.receive(frame, lambda f, opened, why: got.append((f.seq, opened, why)))


async def test_a_bad_or_replayed_ciphertext_is_undecryptable_at_once():
    bob, got = bob_codec()
    alice = GroupCipher(GROUP)
    bob.process(ALICE, alice.distribution_message())
    first = alice.encrypt(b"one")
    push(bob, got, 1, ALICE, first)
    push(bob, got, 2, ALICE, first)                             # replayed (a new seq)
    tampered = bytearray(alice.encrypt(b"two"))
    tampered[-70] ^= 1
    push(bob, got, 3, ALICE, bytes(tampered))                   # bad signature
    push(bob, got, 4, ALICE, b"\x07" + bytes(200))              # not a group message at all
    push(bob, got, 5, ALICE, alice.encrypt(b"three"))
    assert [(seq, body) for seq, body, _ in got] == [
        (1, b"one"), (2, None), (3, None), (4, None), (5, b"three")]
    assert bob.held.count == 0 and bob.held.queues == {}


async def test_order_holds_per_sender_and_other_senders_flow():
    bob, got = bob_codec()
    alice, carol = GroupCipher(GROUP), GroupCipher(GROUP)
    first_key = alice.distribution_message()
    bob.process(CAROL, carol.distribution_message())
    push(bob, got, 1, ALICE, alice.encrypt(b"a1"))              # no key from Alice: held
    push(bob, got, 2, CAROL, carol.encrypt(b"c1"))              # Carol: at once
    second_key = alice.rekey()
    push(bob, got, 3, ALICE, alice.encrypt(b"a2"))              # held behind a1
    push(bob, got, 4, CAROL, carol.encrypt(b"c2"))
    assert got == [(2, b"c1", "did not decrypt"), (4, b"c2", "did not decrypt")]
    bob.process(ALICE, second_key)          # opens a2, but a1 is first: both wait
    assert len(got) == 2 and bob.held.count == 2
    bob.process(ALICE, first_key)
    assert [(seq, body) for seq, body, _ in got[2:]] == [(1, b"a1"), (3, b"a2")]
    assert bob.held.count == 0 and bob.held.queues == {} and bob.held._timers == {}


async def test_a_message_from_a_sender_seen_removed_is_not_waited_for():
    bob, got = bob_codec()
    carol = GroupCipher(GROUP)
    bob.on_event(GROUP, "removed", (CAROL,))
    push(bob, got, 1, CAROL, carol.encrypt(b"from outside"))
    assert got == [(1, None, "did not decrypt")] and bob.held.count == 0


async def test_the_wait_ends_and_what_waited_behind_is_tried():
    bob, got = bob_codec(timeout=0.2)
    alice = GroupCipher(GROUP)
    alice.distribution_message()            # a first key, never handed to Bob
    push(bob, got, 1, ALICE, alice.encrypt(b"a1"))
    bob.process(ALICE, alice.rekey())       # a second key: opens a2, not a1
    push(bob, got, 2, ALICE, alice.encrypt(b"a2"))
    assert got == []
    await asyncio.sleep(0.3)
    assert got[0][:2] == (1, None) and f"no sender key from {ALICE}" in got[0][2]
    assert got[1:] == [(2, b"a2", "did not decrypt")]
    assert bob.held.count == 0 and bob.held._timers == {}


async def test_at_most_limit_items_are_held_the_oldest_gives_up_first():
    bob, got = bob_codec(limit=2)
    alice, dave = GroupCipher(GROUP), GroupCipher(GROUP)
    alice_key, dave_key = alice.distribution_message(), dave.distribution_message()
    push(bob, got, 1, ALICE, alice.encrypt(b"a1"))
    push(bob, got, 2, DAVE, dave.encrypt(b"d1"))
    push(bob, got, 3, ALICE, alice.encrypt(b"a2"))              # a third: a1 gives up
    assert [(seq, body) for seq, body, _ in got] == [(1, None)] and "over 2 held" in got[0][2]
    assert bob.held.count == 2
    bob.process(DAVE, dave_key)
    bob.process(ALICE, alice_key)
    assert [(seq, body) for seq, body, _ in got[1:]] == [(2, b"d1"), (3, b"a2")]
    assert bob.held.count == 0


async def test_a_message_too_far_ahead_of_the_chain_waits_for_a_newer_copy_of_the_key():
    bob, got = bob_codec()
    alice = GroupCipher(GROUP)
    bob.process(ALICE, alice.distribution_message())
    for _ in range(MAX_GROUP_SKIP + 1):                         # messages Bob never got
        alice.encrypt(b"lost")
    resent = alice.distribution_message()   # her key handed again (after her restart) ...
    far = alice.encrypt(b"far ahead")       # ... but her next message gets to Bob first
    with pytest.raises(SenderKeyBehind):
        GroupCipher.from_bytes(bob.store.group(GROUP).to_bytes()).decrypt(ALICE, far)
    push(bob, got, 1, ALICE, far)
    assert got == [] and bob.held.count == 1
    bob.process(ALICE, resent)
    assert got == [(1, b"far ahead", "did not decrypt")] and bob.held.count == 0


async def test_a_held_item_is_not_acknowledged_and_does_not_hold_up_later_acks():
    """Through the receive path: the held item stays out of RECEIVED (a
    re-push of it is a duplicate), later items are acknowledged as usual."""
    from client.groups import GroupInbox
    from client.receiving import Receiver
    receiver = Receiver(lambda id, status: None, ack_delay=60.0)
    receiver.groups = GroupInbox(receiver, lambda id, status: None)
    bob, _ = bob_codec()
    receiver.groups.codec = bob
    alice, carol = GroupCipher(GROUP), GroupCipher(GROUP)
    alice_key = alice.distribution_message()
    bob.process(CAROL, carol.distribution_message())
    a1 = wire.Message(1, "a1", ALICE, 0, alice.encrypt(b"a1"), GROUP)
    receiver.on_push(a1)                                            # held
    receiver.on_push(wire.Message(2, "c1", CAROL, 0, carol.encrypt(b"c1"), GROUP))
    receiver.on_push(a1)                                            # pushed again: a duplicate
    events = receiver.events()
    event = await anext(events)
    assert (event.seq, event.body) == (2, b"c1")
    assert receiver.inbox.to_ack == {2} and 1 in receiver.inbox.queued
    bob.process(ALICE, alice_key)
    event = await anext(events)
    assert (type(event), event.seq, event.body) == (GroupMessage, 1, b"a1")
    assert receiver.inbox.to_ack == {1, 2} and receiver._queue.empty()
    receiver.close()


async def test_a_message_of_a_group_not_known_yet_waits_and_does_not_make_it_known():
    """Looking at it must not make the group known: a sender key for it is
    still checked with the server (GROUP_INFO) before it is kept."""
    client = _Members(BOB, GROUP, (ALICE, BOB))
    bob, got = SenderKeyCodec(client), []
    alice = GroupCipher(GROUP)
    key = alice.distribution_message()
    push(bob, got, 1, ALICE, alice.encrypt(b"before the group event"))
    assert got == [] and not bob.store.has_group(GROUP)
    bob.process(ALICE, key)
    assert got == [] and len(client.spawned) == 1               # asked the server first
    await client.spawned.pop()
    assert got == [(1, b"before the group event", "did not decrypt")]
