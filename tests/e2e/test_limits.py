"""Limits at the limit and one past, over a real node, where
tests/e2e/test_bad_input.py and tests/transport/test_media.py do not already
cover them (offline cap: test_bad_input; upload size: test_media; one past
the frame size: test_bad_input; flow limits: test_flow_control)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import RawClient, login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

E = wire.ErrorCode
ALICE, BOB, CAROL = "+15550000041", "+15550000042", "+15550000043"


def read_of_size(peer: str, size: int, ref: int) -> bytes:
    """A valid READ frame whose body is exactly ``size`` bytes."""
    for count in range(max(1, size // 66 - 4), 1025):    # 66: a 64-char id, packed
        for last in range(1, 65):
            data = wire.encode(wire.Read(peer, ["i" * 64] * (count - 1) + ["j" * last], ref=ref),
                               max_frame=2**20)
            if len(data) - 4 == size:
                return data
            if len(data) - 4 > size:
                break
    raise AssertionError(size)


async def test_a_frame_of_exactly_max_frame_is_served_and_one_byte_more_is_not(node):
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    # At the limit: a 64 KiB READ is read and answered; the connection stays.
    alice.send_raw(read_of_size(BOB, wire.MAX_FRAME, ref=7))
    reply = await alice.answer(7)
    assert not (isinstance(reply, wire.Error) and reply.code.fatal), reply
    assert isinstance(await alice.answer(alice.send(wire.Ping(ref=alice.ref()))), wire.Ack)
    # One past: TOO_LARGE from the header alone, and the connection is closed.
    alice.send_raw(read_of_size(BOB, wire.MAX_FRAME + 1, ref=8)[:4])
    reply = await alice.recv()
    assert isinstance(reply, wire.Error) and reply.code == E.TOO_LARGE
    assert await alice.closed()


async def test_failed_logins_per_phone_at_the_limit_and_one_past(node):
    # The registrar allows 10 failed logins per phone in 5 minutes, across
    # connections (each connection closes at its 5th failure).
    account = await register(node, ALICE)
    failures = 0
    while failures < 10:
        client = await RawClient.connect(node)
        await client.hello()
        for _ in range(min(4, 10 - failures)):
            reply = await client.answer(client.send(wire.Login(ALICE, account.device, bytes(64),
                                                               ref=client.ref())))
            assert reply.code == E.LOGIN_FAILED, reply
            failures += 1
        await client.close()
    # One past: refused as RATE_LIMITED, even with the right signature...
    client = await RawClient.connect(node)
    await client.hello()
    signature = account.key.sign(wire.login_challenge(client.nonce, ALICE, account.device))
    reply = await client.answer(client.send(wire.Login(ALICE, account.device, signature,
                                                       ref=client.ref())))
    assert reply.code == E.RATE_LIMITED and "failed logins" in reply.message, reply
    assert 290_000 < reply.retry_after <= 300_000, reply   # when the first failure leaves
    await client.close()
    # ... and only for that phone: bob logs in.
    assert await login(node, await register(node, BOB))


async def test_failed_logins_per_phone_hold_their_limit_when_sent_at_once(node):
    """At most 10 failed logins per phone are judged in 5 minutes, also when
    they arrive together on many connections: the rest are RATE_LIMITED. (A
    failure was counted only once the connection had checked the signature,
    so all the LOGINs in flight at once were judged; found by review.)"""
    account = await register(node, ALICE)
    clients = [await RawClient.connect(node) for _ in range(30)]
    for client in clients:
        await client.hello()
    for client in clients:
        client.send(wire.Login(ALICE, account.device, bytes(64), ref=1))
    codes = [(await client.answer(1, timeout=10)).code for client in clients]
    assert codes.count(E.LOGIN_FAILED) == 10 and codes.count(E.RATE_LIMITED) == 20, codes
    for client in clients:
        await client.close()


async def test_good_logins_do_not_count_as_failed(node):
    """A login whose signature passes gives back the attempt counted when it
    arrived: a user may log in any number of times."""
    account = await register(node, BOB)
    for _ in range(12):                             # more than the 10 failures allowed
        client = await login(node, account)
        await client.close()


async def test_four_failed_logins_leave_the_connection_usable(node):
    # At the per-connection limit minus one (max_auth_failures is 5): the
    # connection stays and the right login passes on it.
    account = await register(node, CAROL)
    client = await RawClient.connect(node)
    await client.hello()
    for _ in range(4):
        reply = await client.answer(client.send(wire.Login(CAROL, account.device, bytes(64),
                                                           ref=client.ref())))
        assert reply.code == E.LOGIN_FAILED
    signature = account.key.sign(wire.login_challenge(client.nonce, CAROL, account.device))
    assert isinstance(await client.answer(client.send(
        wire.Login(CAROL, account.device, signature, ref=client.ref()))), wire.Ack)
    await client.close()
