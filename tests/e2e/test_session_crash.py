"""A user actor crashing mid-conversation: its supervisor restarts it from
LMDB, it re-attaches to the user's connection, and nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from actors.messages import Acked, Attach, Heartbeat, Rejected, SendMessage
from actors.session_registry import session_of
from tests.conftest import wait_for
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000041", "+15550000042"


async def test_session_crash_mid_conversation_loses_nothing(node):
    alice, bob = (await login(node, await register(node, ALICE)),
                  await login(node, await register(node, BOB)))
    first = await wait_for(lambda: session_of(node.system, BOB))
    # Step 1: alice sends 50; bob's session is crashed after the 20th is acked.
    acked = []
    for i in range(50):
        reply = await alice.answer(alice.send(wire.Send(f"s{i}", BOB, b"%d" % i, ref=alice.ref())))
        assert isinstance(reply, wire.Ack)
        acked.append(f"s{i}")
        if i == 20:
            first.exit(RuntimeError("injected crash"))
    # Step 2: a new incarnation serves bob, on the same connection.
    second = await wait_for(lambda: (s := session_of(node.system, BOB)) and s is not first and s)
    assert isinstance(first.exit_reason, RuntimeError)
    # Step 3: bob receives every message (some twice, re-pushed after the
    # restart until acked); by id, all 50, in order.
    seen, order = set(), []
    while len(seen) < 50:
        frame, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message), timeout=5)
        if frame.id not in seen:
            seen.add(frame.id)
            order.append(frame.id)
        bob.send(wire.Received((frame.seq,), ref=bob.ref()))
    assert order == acked
    # Step 4: bob's connection survived and is served by the new session.
    assert isinstance(await bob.answer(bob.send(wire.Ping(ref=bob.ref()))), wire.Ack)
    assert session_of(node.system, BOB) is second
    await alice.close()
    await bob.close()


async def test_a_disconnected_session_lingers_then_stops(node):
    account = await register(node, ALICE)
    client = await login(node, account)
    session = await wait_for(lambda: session_of(node.system, ALICE))
    await client.close()
    # linger is 0.2 s in the test node: the session stops normally, and is gone.
    assert await asyncio.wait_for(session.join(), 3) == "normal"
    assert session_of(node.system, ALICE) is None


class Port:
    """A stand-in connection that records what the session pushes."""

    def __init__(self):
        self.events, self.closed = [], None

    def bind(self, session) -> None:
        pass

    def push(self, event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self, reason: str, text: str) -> None:
        self.closed = reason


async def test_a_request_is_answered_on_its_own_connection(node):
    # Step 1: a SEND from connection A is queued, then connection B attaches
    # before the SEND's storage op completes (both casts sit in the mailbox).
    client = await login(node, await register(node, ALICE))
    session = await wait_for(lambda: session_of(node.system, ALICE))
    a, b = Port(), Port()
    session.cast(Attach(a))
    session.cast(SendMessage(41, "x1", "+15559999999", b"?", a))
    session.cast(Attach(b))
    session.cast(Heartbeat(41, b))
    # Step 2: A gets the answer to its ref 41, B only the answer to its own.
    await wait_for(lambda: a.events and b.events)
    assert [type(e) for e in a.events] == [Rejected] and a.events[0].ref == 41
    assert [type(e) for e in b.events] == [Acked] and b.events[0].ref == 41
    assert a.closed == "session_replaced"
    await client.close()


async def test_a_send_the_crashed_session_lost_is_not_overtaken(node):
    """A SEND taken by a session that then crashes is answered INTERNAL
    (resend); a SEND the client pipelined behind it must not be stored
    first, or the conversation's order breaks (found by the chaos history
    checker: one reorder in ~10 runs). The lost SEND becomes the send gate:
    the next SEND is refused RATE_LIMITED until the lost one comes again."""
    alice, bob = (await login(node, await register(node, ALICE)),
                  await login(node, await register(node, BOB)))
    first = await wait_for(lambda: session_of(node.system, ALICE))
    listener = node.system.whereis("listener")
    conn = next(c for c in listener._actor.connections if c.user == ALICE and not c.closed)
    # Step 1: m1 reaches the session's mailbox as the session dies, unhandled
    # (both in one step of the loop: nothing runs in between).
    first.exit(RuntimeError("injected crash"))
    conn.dispatch(wire.Send("m1", BOB, b"one", ref=9001))
    assert isinstance(await alice.answer(9001), wire.Error)     # INTERNAL, at the rebind
    await wait_for(lambda: (s := session_of(node.system, ALICE)) and s is not first and s)
    # Step 2: m2, sent before m1 again, waits for it
    refused = await alice.answer(alice.send(wire.Send("m2", BOB, b"two", ref=alice.ref())))
    assert isinstance(refused, wire.Error) and refused.code == wire.ErrorCode.RATE_LIMITED, refused
    assert "m1" in refused.message
    for mid, body in (("m1", b"one"), ("m2", b"two")):
        ack = await alice.answer(alice.send(wire.Send(mid, BOB, body, ref=alice.ref())))
        assert isinstance(ack, wire.Ack), ack
    got = []
    while len(got) < 2:
        frame, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message), timeout=5)
        got.append(frame.id)
    assert got == ["m1", "m2"]
