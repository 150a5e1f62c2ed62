"""SEND's ``device`` over real TCP against a real node: a SEND sealed for a
device the recipient has replaced is refused with STALE_DEVICE and stores
nothing; the send gate keeps the SENDs behind it from overtaking it; a
client gives such a SEND up by sending it once more as it was; a SEND
without the field is stored as before; an id stored before the device
changed is still answered as stored; KEYS_FETCH can ask which device is
current without spending a one-time prekey."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import login, register
from transport import wire
from transport.e2e import KeyBundle, LocalKeys

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+4915112345678", "+14155550123"
E = wire.ErrorCode


async def ask(client, frame):
    return await client.answer(client.send(frame))


def inbox_ids(node, user: str) -> list[str]:
    return [item.payload.id for item in node.system.env["mailbox"].inbox_after(user)]


async def test_a_send_for_a_replaced_device_is_refused_and_stores_nothing(node):
    alice, old_bob = await register(node, ALICE), await register(node, BOB)
    a = await login(node, alice)
    # Step 1: the current device named, and no device named: stored as ever
    reply = await ask(a, wire.Send("m0", BOB, b"sealed for 1", device=old_bob.device, ref=a.ref()))
    assert isinstance(reply, wire.Ack), reply
    reply = await ask(a, wire.Send("m1", BOB, b"no device named", ref=a.ref()))
    assert isinstance(reply, wire.Ack), reply
    # Step 2: Bob registers a new device; a SEND still sealed for the old one is refused
    bob = await register(node, BOB)
    assert bob.device == old_bob.device + 1
    reply = await ask(a, wire.Send("m2", BOB, b"sealed for 1", device=old_bob.device, ref=a.ref()))
    assert isinstance(reply, wire.Error) and reply.code is E.STALE_DEVICE, reply
    assert not reply.code.fatal and str(bob.device) in reply.message
    assert inbox_ids(node, BOB) == ["m0", "m1"]                 # nothing stored
    # Step 3: sealed again for the new device, the same id is stored (no dedup record
    # was left by the refusal); the connection is still usable
    reply = await ask(a, wire.Send("m2", BOB, b"sealed for 2", device=bob.device, ref=a.ref()))
    assert isinstance(reply, wire.Ack), reply
    reply = await ask(a, wire.Send("m3", BOB, b"no device named", ref=a.ref()))
    assert isinstance(reply, wire.Ack), reply
    assert inbox_ids(node, BOB) == ["m0", "m1", "m2", "m3"]
    items = node.system.env["mailbox"].inbox_after(BOB)
    assert items[2].payload.body == b"sealed for 2"
    await a.close()


async def test_the_sends_behind_a_stale_one_wait_for_it(node):
    alice, old_bob = await register(node, ALICE), await register(node, BOB)
    bob = await register(node, BOB)
    a = await login(node, alice)
    # Step 1: three SENDs in one write: the first sealed for the old device, the
    # others for the current one (or naming none): they must not overtake it
    frames = [wire.Send("s1", BOB, b"old", device=old_bob.device, ref=a.ref()),
              wire.Send("s2", BOB, b"new", device=bob.device, ref=a.ref()),
              wire.Send("s3", BOB, b"plain", ref=a.ref())]
    a.send_raw(b"".join(wire.encode(f) for f in frames))
    first = await a.answer(frames[0].ref)
    assert isinstance(first, wire.Error) and first.code is E.STALE_DEVICE, first
    for frame in frames[1:]:
        reply = await a.answer(frame.ref)
        assert isinstance(reply, wire.Error) and reply.code is E.RATE_LIMITED, reply
        assert "s1" in reply.message and reply.retry_after == 1
    assert inbox_ids(node, BOB) == []
    # Step 2: s1 sealed again comes first; then the others pass, in order
    for frame in (wire.Send("s1", BOB, b"new", device=bob.device, ref=a.ref()),
                  wire.Send("s2", BOB, b"new", device=bob.device, ref=a.ref()),
                  wire.Send("s3", BOB, b"plain", ref=a.ref())):
        assert isinstance(await ask(a, frame), wire.Ack)
    assert inbox_ids(node, BOB) == ["s1", "s2", "s3"]
    await a.close()


async def test_a_stale_send_given_up_leaves_no_gate(node):
    alice, old_bob = await register(node, ALICE), await register(node, BOB)
    bob = await register(node, BOB)
    a = await login(node, alice)
    # Step 1: refused, and gating
    stale = wire.Send("g1", BOB, b"old", device=old_bob.device, ref=a.ref())
    assert (await ask(a, stale)).code is E.STALE_DEVICE
    reply = await ask(a, wire.Send("g2", BOB, b"new", device=bob.device, ref=a.ref()))
    assert reply.code is E.RATE_LIMITED, reply
    # Step 2: the client cannot seal it again: it sends it once more as it was
    again = await ask(a, wire.Send("g1", BOB, b"old", device=old_bob.device, ref=a.ref()))
    assert isinstance(again, wire.Error) and again.code is E.STALE_DEVICE, again
    # Step 3: nothing gated now
    assert isinstance(await ask(a, wire.Send("g2", BOB, b"new", device=bob.device, ref=a.ref())),
                      wire.Ack)
    assert inbox_ids(node, BOB) == ["g2"]
    await a.close()


async def test_sealed_again_for_a_device_replaced_meanwhile_it_gates_again(node):
    alice, first = await register(node, ALICE), await register(node, BOB)
    second = await register(node, BOB)
    a = await login(node, alice)
    assert (await ask(a, wire.Send("r1", BOB, b"for 1", device=first.device, ref=a.ref()))).code \
        is E.STALE_DEVICE
    # Step 1: sealed again for device 2, which is replaced too before it arrives
    third = await register(node, BOB)
    reply = await ask(a, wire.Send("r1", BOB, b"for 2", device=second.device, ref=a.ref()))
    assert reply.code is E.STALE_DEVICE and str(third.device) in reply.message
    reply = await ask(a, wire.Send("r2", BOB, b"x", device=third.device, ref=a.ref()))
    assert reply.code is E.RATE_LIMITED and "r1" in reply.message, reply     # gated again
    # Step 2: sealed for device 3, it passes, and so does what waited
    for frame in (wire.Send("r1", BOB, b"for 3", device=third.device, ref=a.ref()),
                  wire.Send("r2", BOB, b"x", device=third.device, ref=a.ref())):
        assert isinstance(await ask(a, frame), wire.Ack)
    assert inbox_ids(node, BOB) == ["r1", "r2"]
    await a.close()


async def test_an_id_stored_before_the_device_changed_is_still_acked_as_stored(node):
    alice, old_bob = await register(node, ALICE), await register(node, BOB)
    a = await login(node, alice)
    first = await ask(a, wire.Send("d1", BOB, b"sealed for 1", device=old_bob.device, ref=a.ref()))
    assert isinstance(first, wire.Ack), first
    await register(node, BOB)                                   # a new device
    # the ACK was lost, say: the resend, the same bytes, is answered as stored
    again = await ask(a, wire.Send("d1", BOB, b"sealed for 1", device=old_bob.device, ref=a.ref()))
    assert again == wire.Ack(first.value, ref=again.ref)
    assert inbox_ids(node, BOB) == ["d1"]
    # and it gated nothing
    assert isinstance(await ask(a, wire.Send("d2", BOB, b"x", ref=a.ref())), wire.Ack)
    await a.close()


async def test_a_fetch_without_a_one_time_prekey_spends_none(node):
    alice, bob = await register(node, ALICE), await register(node, BOB)
    a, b = await login(node, alice), await login(node, bob)
    keys = LocalKeys.generate(bob.key, one_time=2)
    assert (await ask(b, wire.KeysPublish(keys.bundle().to_bytes(), ref=b.ref()))).value == 2
    for _ in range(3):
        reply = await ask(a, wire.KeysFetch(BOB, False, ref=a.ref()))
        assert isinstance(reply, wire.Ack) and reply.value["device"] == bob.device, reply
        bundle = KeyBundle.from_bytes(reply.value["bundle"]).verify()
        assert bundle.identity == bob.key.public and bundle.one_time == ()
    assert (await ask(b, wire.KeysCount(ref=b.ref()))).value == 2
    reply = await ask(a, wire.KeysFetch(BOB, ref=a.ref()))
    assert len(KeyBundle.from_bytes(reply.value["bundle"]).one_time) == 1
    assert (await ask(b, wire.KeysCount(ref=b.ref()))).value == 1
    await a.close()
    await b.close()
