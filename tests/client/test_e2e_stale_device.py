"""A recipient's replaced device, through the SDK against a real node: a
message sealed for a device its recipient has replaced is refused
(STALE_DEVICE), sealed again for the new device under the same id and
resent, ahead of what was written after it; the plaintext it needs for that
survives a restart; a device that cannot be sealed for is a clear failure
that holds nothing else back."""

from __future__ import annotations

import asyncio

import pytest

from client import Client, Message
from client.events import IdentityChanged, SendFailed, Undecryptable
from client.errors import ServerError
from client_testkit import FAST, next_event, texts
from test_e2e_sdk import sdk_user
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "+15550000301", "+15550000302", "+15550000303"


async def offline(running, profile: str, outbox: str) -> Client:
    """A client of the same profile that has not logged in: what it sends is
    sealed with the sessions it holds and waits in the outbox."""
    return await Client.connect(running.host, running.port, e2e_dir=profile, outbox_path=outbox,
                                **FAST)


async def test_messages_sealed_for_a_replaced_device_reach_the_new_one_in_order(node, tmp_path):  # noqa: F811
    profile, outbox = str(tmp_path / "alice"), str(tmp_path / "alice.outbox")
    # Step 1: a conversation: Alice's session is with Bob's first device
    alice = await sdk_user(node, ALICE, e2e_dir=profile, outbox_path=outbox)
    bob = await sdk_user(node, BOB)
    await alice.send(BOB, "hello")
    assert await texts(bob, 1) == ["hello"]
    key, device = alice.test_key, alice.test_device
    await alice.close()
    await bob.close()
    # Step 2: Bob registers a new device (new key, keys published); Alice's app,
    # offline, writes three messages, sealed for the old device, then restarts
    bob = await sdk_user(node, BOB, DeviceKey())
    assert bob.test_device == 2
    alice = await offline(node, profile, outbox)
    pending = [asyncio.ensure_future(alice.send(BOB, f"old {i}", id=f"old-{i}")) for i in range(3)]
    await wait_for(lambda: len(alice.outbox) == 3)
    await alice.close()
    for task in pending:                        # the app's waits end; the messages stay
        assert isinstance(await asyncio.gather(task, return_exceptions=True), list)
    # Step 3: Alice is back: the outbox goes out, is refused, sealed again, resent;
    # what she writes meanwhile comes after it
    alice = await offline(node, profile, outbox)
    assert [e.id for e in alice._sender.outbox] == ["old-0", "old-1", "old-2"]
    await alice.login(ALICE, device, key)
    later = [asyncio.ensure_future(alice.send(BOB, f"new {i}")) for i in range(3)]
    await asyncio.gather(*later)
    # Step 4: Bob's new device reads every one, in order, once
    assert await texts(bob, 6) == ["old 0", "old 1", "old 2", "new 0", "new 1", "new 2"]
    changed = await next_event(alice, (IdentityChanged,))
    assert changed.user == BOB
    assert await alice.drain(5)
    await wait_for(lambda: node.system.env["mailbox"].inbox_count(BOB) == 0, 3)
    with pytest.raises(asyncio.TimeoutError):   # nothing more: each arrived once
        await next_event(bob, (Message, Undecryptable), timeout=0.5)
    await alice.close()
    await bob.close()


async def test_a_reply_from_the_side_that_did_not_begin_names_the_device_too(node, tmp_path):  # noqa: F811
    profile, outbox = str(tmp_path / "bob"), str(tmp_path / "bob.outbox")
    mail = node.system.env["mailbox"]
    # Step 1: Alice begins; Bob's replies go over the session she began: his SDK
    # asks the directory which device that is, spending none of her prekeys
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=profile, outbox_path=outbox)
    await alice.send(BOB, "hi bob")
    assert await texts(bob, 1) == ["hi bob"]
    held = mail.count_keys(ALICE)
    await bob.send(ALICE, "hi alice")
    assert await texts(alice, 1) == ["hi alice"]
    assert mail.count_keys(ALICE) == held
    first_device = alice.test_device
    key, device = bob.test_key, bob.test_device
    await bob.close()
    await alice.close()
    # Step 2: Alice registers a new device; Bob, offline, replies twice, then returns
    alice = await sdk_user(node, ALICE, DeviceKey())
    bob = await offline(node, profile, outbox)
    pending = [asyncio.ensure_future(bob.send(ALICE, f"reply {i}")) for i in range(2)]
    await wait_for(lambda: len(bob.outbox) == 2)
    await bob.login(BOB, device, key)
    await asyncio.gather(*pending)
    # Step 3: Alice's new device reads both, in order
    assert await texts(alice, 2) == ["reply 0", "reply 1"]
    assert (first_device, bob._e2e.store.device(ALICE)) == (1, 2)
    await alice.close()
    await bob.close()


async def test_a_new_device_without_keys_fails_the_message_and_holds_nothing_back(node, tmp_path):  # noqa: F811
    profile, outbox = str(tmp_path / "alice"), str(tmp_path / "alice.outbox")
    alice = await sdk_user(node, ALICE, e2e_dir=profile, outbox_path=outbox)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    await alice.send(BOB, "hello")
    assert await texts(bob, 1) == ["hello"]
    await alice.send(CAROL, "hello")
    assert await texts(carol, 1) == ["hello"]
    key, device = alice.test_key, alice.test_device
    await alice.close()
    await bob.close()
    # Step 1: Bob confirms a new device that has not logged in (no keys published);
    # Alice's app wrote two messages to him while offline, and one to Carol after them
    new_bob = await Client.connect(node.host, node.port, **FAST)
    await new_bob.register(BOB)
    new_key = DeviceKey()
    new_device = await new_bob.confirm(BOB, node.codes[BOB], new_key)
    alice = await offline(node, profile, outbox)
    to_bob = [asyncio.ensure_future(alice.send(BOB, f"to bob {i}", id=f"b{i}")) for i in range(2)]
    await wait_for(lambda: len(alice.outbox) == 2)
    to_carol = asyncio.ensure_future(alice.send(CAROL, "to carol", id="c0"))
    await wait_for(lambda: len(alice.outbox) == 3)
    # Step 2: at login both to Bob fail, clearly (no keys to seal for); Carol's goes
    await alice.login(ALICE, device, key)
    failed = [await next_event(alice, (SendFailed,)) for _ in range(2)]
    assert sorted(f.id for f in failed) == ["b0", "b1"]
    assert all(isinstance(f.error, ServerError) and f.error.code is wire.ErrorCode.NO_KEYS
               for f in failed)
    await asyncio.wait_for(to_carol, 5)
    assert all(isinstance(r, ServerError) for r in await asyncio.gather(*to_bob, return_exceptions=True))
    assert await texts(carol, 1) == ["to carol"]
    assert node.system.env["mailbox"].inbox_count(BOB) == 0
    # Step 3: once the new device has logged in (and published), Bob is reachable again
    await new_bob.login(BOB, new_device, new_key)
    await alice.send(BOB, "now with keys")
    assert await texts(new_bob, 1) == ["now with keys"]
    for client in (alice, new_bob, carol):
        await client.close()


async def test_a_device_that_keeps_changing_ends_in_a_failure_not_a_loop(node, tmp_path):  # noqa: F811
    from tests.e2e.conftest import Account, login
    from transport.e2e import LocalKeys
    profile, outbox = str(tmp_path / "alice"), str(tmp_path / "alice.outbox")
    alice = await sdk_user(node, ALICE, e2e_dir=profile, outbox_path=outbox)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    await alice.send(BOB, "hello")
    assert await texts(bob, 1) == ["hello"]
    key, device = alice.test_key, alice.test_device
    await alice.close()
    await bob.close()

    async def new_bob_device() -> None:
        # what CONFIRM commits (the registrar allows 3 codes per 10 minutes), then
        # the new device logs in and publishes its keys
        key = DeviceKey()
        device = await node.system.env["mailbox"].register_device(BOB, key.public, 1)
        raw = await login(node, Account(BOB, device, key))
        bundle = LocalKeys.generate(key, one_time=2).bundle()
        reply = await raw.answer(raw.send(wire.KeysPublish(bundle.to_bytes(), ref=raw.ref())))
        assert isinstance(reply, wire.Ack), reply
        await raw.close()

    # Step 1: Bob's device changes; Alice's app writes while offline; then every
    # time her SDK fetches Bob's keys, Bob's device changes again before she resends
    await new_bob_device()
    alice = await offline(node, profile, outbox)
    sent = asyncio.ensure_future(alice.send(BOB, "moving target", id="mt"))
    await wait_for(lambda: len(alice.outbox) == 1)
    call = alice._e2e.call
    fetches = []

    async def call_then_move(frame):
        answer = await call(frame)
        if isinstance(frame, wire.KeysFetch) and frame.user == BOB:
            fetches.append(frame)
            await new_bob_device()
        return answer
    alice._e2e.call = call_then_move
    # Step 2: a bounded number of tries, then a failure the app sees
    await alice.login(ALICE, device, key)
    failed = await next_event(alice, (SendFailed,), timeout=20)
    assert failed.id == "mt" and failed.error.code is wire.ErrorCode.STALE_DEVICE
    assert len(fetches) == 3                    # MAX_RESEALS
    with pytest.raises(ServerError):
        await sent
    assert node.system.env["mailbox"].inbox_count(BOB) == 0
    # Step 3: nothing is held back after it
    await alice.send(CAROL, "still here")
    assert await texts(carol, 1) == ["still here"]
    for client in (alice, carol):
        await client.close()
