"""A session's life at its edges, where a crash, the linger timer, a
disconnect and a supervisor's restart meet: presence subscriptions survive
a crash (the connection is re-attached and does not SUBSCRIBE again), a
login racing the linger timer gets a session, and a user whose connection
goes while no session can say so is still reported offline, with a last
seen."""

from __future__ import annotations

import asyncio

import pytest

from actors import KILL
from actors.messages import LingerExpired
from actors.presence import PRESENCE_NAME
from actors.session_registry import REGISTRY_NAME, SESSIONS_SUP_NAME, OpenSession, clients_of, session_of
from tests.conftest import wait_for
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000071", "+15550000072"


class Port:
    """A stand-in connection that records what the session does with it."""

    def __init__(self):
        self.events, self.closed, self.bound = [], None, []

    def bind(self, session) -> None:
        self.bound.append(session)

    def push(self, event):
        self.events.append(event)
        return True

    def flush(self) -> None:
        pass

    def close(self, reason: str, text: str) -> None:
        self.closed = reason


async def test_presence_subscriptions_survive_a_session_crash(node):
    """A crashed session is restarted and re-attached to the same connection;
    the client does not log in again, so it does not SUBSCRIBE again. Its
    presence subscriptions must still hold."""
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice = await login(node, alice_acct)
    ref = alice.send(wire.Subscribe((BOB,), ref=alice.ref()))
    assert isinstance(await alice.answer(ref), wire.Ack)
    first = await wait_for(lambda: session_of(node.system, ALICE))
    first.exit(RuntimeError("injected crash"))
    await wait_for(lambda: (s := session_of(node.system, ALICE)) and s is not first and s)
    # the connection survived the crash
    assert isinstance(await alice.answer(alice.send(wire.Ping(ref=alice.ref()))), wire.Ack)
    bob = await login(node, bob_acct)
    frame, _ = await alice.recv_until(lambda f: isinstance(f, wire.Presence), timeout=3)
    assert (frame.user, frame.online) == (BOB, True)
    await alice.close()
    await bob.close()


@pytest.mark.node_config(linger=30.0)
async def test_a_login_racing_the_linger_timer_gets_a_session(node):
    """The linger timer fires (LingerExpired queued) just as the user logs in
    again: the registry finds the lingering session alive and casts Attach
    behind LingerExpired. The login must end with a live, attached session."""
    bob = await login(node, await register(node, BOB))
    session = await wait_for(lambda: session_of(node.system, BOB))
    await bob.close()
    await wait_for(lambda: BOB not in clients_of(node.system) and session._actor.client is None)
    token = session._actor.linger_token
    port = Port()
    registry = node.system.whereis(REGISTRY_NAME)
    # One loop turn: the login's OpenSession reaches the registry, the linger
    # timer fires (send_after -> notify) for the lingering session.
    registry.cast(OpenSession(BOB, port))
    session.notify(LingerExpired(token))
    await asyncio.sleep(0.5)
    assert clients_of(node.system).get(BOB) is port          # the registry says: logged in
    assert port.bound, "the new connection was never bound to a session"
    assert session_of(node.system, BOB) is not None, "no live session for a logged-in user"


async def test_presence_goes_offline_when_the_sessions_supervisor_restarts(node):
    """Sessions crash past their supervisor's intensity: chat restarts
    ``sessions`` and the listener, every connection is closed. A user with
    no connection must not stay online in the presence hub."""
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    bob = await login(node, bob_acct)
    sup = node.system.whereis(SESSIONS_SUP_NAME)
    last = None
    for _ in range(200):                                    # crash bob's session until sup gives up
        if node.system.whereis(SESSIONS_SUP_NAME) is not sup:
            break
        s = session_of(node.system, BOB)
        if s is not None and s is not last:
            last = s
            s.exit(RuntimeError("injected crash"))
        await asyncio.sleep(0.002)
    assert node.system.whereis(SESSIONS_SUP_NAME) is not sup, "sessions supervisor did not give up"
    assert await bob.closed(timeout=5)                       # SHUTTING_DOWN, then closed
    await wait_for(lambda: BOB not in clients_of(node.system), timeout=5)
    hub = node.system.whereis(PRESENCE_NAME)
    await asyncio.sleep(0.3)
    alice = await login(node, alice_acct)
    ref = alice.send(wire.Subscribe((BOB,), ref=alice.ref()))
    frame, _ = await alice.recv_until(lambda f: isinstance(f, wire.Presence))
    assert BOB not in hub._actor.online and frame.online is False, \
        f"bob has no connection, but presence says {frame}"
    assert frame.last_seen is not None
    await alice.close()


async def test_presence_goes_offline_when_a_disconnect_races_a_session_crash(node):
    """Bob's connection drops at the moment his session crashes: the
    registry's CloseSession finds no live session (the restart has not
    registered yet), so no Detach; the restarted session finds no client and
    lingers. Bob must end up offline, with a last seen."""
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    bob = await login(node, bob_acct)
    session = await wait_for(lambda: session_of(node.system, BOB))
    listener = node.system.whereis("listener")._actor
    conn = next(c for c in listener.connections if c.user == BOB)
    conn.transport.abort()                  # the client's connection is lost...
    session.exit(KILL)                      # ...as its session dies
    await wait_for(lambda: BOB not in clients_of(node.system))
    await asyncio.sleep(1.0)                # > linger (0.2 s): any session has stopped
    alice = await login(node, alice_acct)
    alice.send(wire.Subscribe((BOB,), ref=alice.ref()))
    frame, _ = await alice.recv_until(lambda f: isinstance(f, wire.Presence))
    assert frame.online is False, f"bob has no connection, but presence says {frame}"
    assert frame.last_seen is not None
    await alice.close()
    await bob.close()


async def test_a_login_whose_session_cannot_be_opened_is_closed(node, monkeypatch):
    """The LOGIN was ACKed, then its session could not be opened (the
    sessions supervisor restarting): the client is told (INTERNAL, ref 0)
    and the connection closed, not left logged in with nothing to answer
    it; the registry keeps no client for the user, and does not crash."""
    from actors.session_registry import SessionRegistry

    async def cannot(self, user):
        raise RuntimeError("the sessions supervisor is not running")

    alice = await login(node, await register(node, ALICE))
    registry = node.system.whereis(REGISTRY_NAME)
    monkeypatch.setattr(SessionRegistry, "_find_or_start", cannot)
    bob = await login(node, await register(node, BOB))
    error, _ = await bob.recv_until(lambda f: isinstance(f, wire.Error))
    assert (error.code, error.ref) == (wire.ErrorCode.INTERNAL, 0)
    assert await bob.closed(timeout=5)
    await wait_for(lambda: BOB not in clients_of(node.system), timeout=5)
    # The registry did not crash over it: no restart of every session and
    # connection (rest_for_one); alice, logged in before, is still served.
    assert node.system.whereis(REGISTRY_NAME) is registry
    assert isinstance(await alice.answer(alice.send(wire.Ping(ref=alice.ref()))), wire.Ack)
    await alice.close()
