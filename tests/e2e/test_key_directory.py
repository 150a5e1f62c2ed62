"""The key directory over real TCP against a real node: KEYS_PUBLISH checks
signatures and identity, KEYS_FETCH hands each one-time prekey out once,
a new device drops the old keys and reaches key contacts (offline ones on
their return) with KEY_CHANGED, and SEND's media refs are counted."""

from __future__ import annotations

import asyncio

import pytest

from actors.session_registry import session_of
from tests.e2e.conftest import login, register
from transport import wire
from transport.crypto import DeviceKey
from transport.e2e import KeyBundle, LocalKeys

pytestmark = pytest.mark.timeout(30)

ALICE, BOB, CAROL = "+4915112345678", "+14155550123", "+447700900123"
E = wire.ErrorCode


async def ask(client, frame):
    return await client.answer(client.send(frame))


async def publish(client, keys: LocalKeys, bundle: KeyBundle | None = None):
    bundle = keys.bundle() if bundle is None else bundle
    return await ask(client, wire.KeysPublish(bundle.to_bytes(), ref=client.ref()))


async def test_publish_refuses_a_bad_signature_and_a_foreign_identity(node):
    alice = await register(node, ALICE)
    client = await login(node, alice)
    keys = LocalKeys.generate(alice.key, one_time=3)
    good = keys.bundle()
    # Step 1: a flipped bit in the signed prekey's signature
    sig = bytearray(good.signed_prekey_sig)
    sig[5] ^= 1
    forged = KeyBundle(good.identity, good.identity_dh, good.identity_dh_sig,
                       good.signed_prekey_id, good.signed_prekey, bytes(sig), good.one_time)
    reply = await publish(client, keys, forged)
    assert isinstance(reply, wire.Error) and reply.code is E.BAD_BUNDLE, reply
    # Step 2: a well-signed bundle of another identity
    reply = await publish(client, keys, LocalKeys.generate(DeviceKey(), one_time=1).bundle())
    assert isinstance(reply, wire.Error) and reply.code is E.WRONG_IDENTITY, reply
    # Step 3: garbage of a valid length; the connection stays usable
    reply = await ask(client, wire.KeysPublish(b"\x01" + bytes(230), ref=client.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.BAD_BUNDLE, reply
    assert (await ask(client, wire.KeysCount(ref=client.ref()))).value is None
    # Step 4: the real one
    reply = await publish(client, keys)
    assert reply == wire.Ack(3, ref=reply.ref)
    assert (await ask(client, wire.KeysCount(ref=client.ref()))).value == 3
    await client.close()


async def test_fetch_hands_out_each_one_time_prekey_once(node):
    alice, bob = await register(node, ALICE), await register(node, BOB)
    a, b = await login(node, alice), await login(node, bob)
    reply = await ask(a, wire.KeysFetch(BOB, ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.NO_KEYS, reply
    reply = await ask(a, wire.KeysFetch("+19999999999", ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.UNKNOWN_USER, reply
    keys = LocalKeys.generate(bob.key, one_time=2)
    assert (await publish(b, keys)).value == 2
    seen = []
    for _ in range(3):
        reply = await ask(a, wire.KeysFetch(BOB, ref=a.ref()))
        assert isinstance(reply, wire.Ack) and reply.value["device"] == bob.device, reply
        bundle = KeyBundle.from_bytes(reply.value["bundle"]).verify()
        assert bundle.identity == bob.key.public
        seen.append(bundle.one_time)
    assert len(seen[0]) == len(seen[1]) == 1 and seen[0] != seen[1]
    assert {seen[0][0], seen[1][0]} == set(keys.bundle().one_time)
    assert seen[2] == ()                        # none left: the signed prekey alone
    assert (await ask(b, wire.KeysCount(ref=b.ref()))).value == 0
    # a top-up is added to what is held; a resent one changes nothing
    top_up = keys.bundle().with_one_time(keys.add_one_time(4))
    assert (await publish(b, keys, top_up)).value == 4
    assert (await publish(b, keys, top_up)).value == 4
    await a.close()
    await b.close()


async def test_a_new_device_reaches_an_offline_contact_on_return(node):
    alice, bob, carol = (await register(node, ALICE), await register(node, BOB),
                         await register(node, CAROL))
    b = await login(node, bob)
    assert (await publish(b, LocalKeys.generate(bob.key, one_time=1))).value == 1
    # Step 1: Alice fetches Bob's keys (so each is the other's key contact), goes offline
    a = await login(node, alice)
    assert isinstance(await ask(a, wire.KeysFetch(BOB, ref=a.ref())), wire.Ack)
    await a.close()
    # Step 2: Bob registers a new device; his old keys are gone
    await b.close()
    new_bob = await register(node, BOB)
    assert new_bob.device == bob.device + 1
    b = await login(node, new_bob)
    assert (await ask(b, wire.KeysCount(ref=b.ref()))).value is None
    c = await login(node, carol)
    reply = await ask(c, wire.KeysFetch(BOB, ref=c.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.NO_KEYS
    # Step 3: Alice returns and finds the notice in her inbox; Carol (no contact) got none
    a = await login(node, alice)
    notice, _ = await a.recv_until(lambda f: isinstance(f, wire.KeyChanged))
    assert (notice.user, notice.device) == (BOB, new_bob.device)
    assert isinstance(await ask(a, wire.Received((notice.seq,), ref=a.ref())), wire.Ack)
    assert node.system.env["mailbox"].inbox_count(ALICE) == 0
    assert node.system.env["mailbox"].inbox_count(CAROL) == 0
    for client in (a, b, c):
        await client.close()


async def test_media_refs_are_held_until_the_recipient_acks(node):
    alice, bob = await register(node, ALICE), await register(node, BOB)
    a, b = await login(node, alice), await login(node, bob)
    blob = "ab" * 32
    reply = await ask(a, wire.Send("m1", BOB, b"ciphertext", (blob,), ref=a.ref()))
    assert isinstance(reply, wire.Ack), reply
    assert node.system.env["mailbox"].blob_refs(blob) == 1
    message, _ = await b.recv_until(lambda f: isinstance(f, wire.Message))
    assert isinstance(await ask(b, wire.Received((message.seq,), ref=b.ref())), wire.Ack)
    assert node.system.env["mailbox"].blob_refs(blob) == 0
    reply = await ask(a, wire.Send("m2", BOB, b"x", ("not-hex",), ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.MALFORMED
    await a.close()
    await b.close()


@pytest.mark.node_config(keys_fetch_limit=(3, 60.0))
async def test_key_fetches_are_rate_limited(node):
    alice, bob = await register(node, ALICE), await register(node, BOB)
    a, b = await login(node, alice), await login(node, bob)
    assert (await publish(b, LocalKeys.generate(bob.key, one_time=10))).value == 10
    for _ in range(3):
        assert isinstance(await ask(a, wire.KeysFetch(BOB, ref=a.ref())), wire.Ack)
    reply = await ask(a, wire.KeysFetch(BOB, ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.RATE_LIMITED, reply
    assert 0 < reply.retry_after <= 60_000, reply  # when the first fetch leaves the window
    assert (await ask(b, wire.KeysCount(ref=b.ref()))).value == 7       # nothing more spent
    # Reconnecting (a new session once the old one's linger passed) does not
    # reset the limit.
    session = session_of(node.system, ALICE)
    await a.close()
    await asyncio.wait_for(session.join(), 3)
    a = await login(node, alice)
    reply = await ask(a, wire.KeysFetch(BOB, ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.RATE_LIMITED, reply
    await a.close()
    await b.close()
