"""Flow control through a real node (transport/flow.py): a client that
stops reading costs bounded memory and loses nothing; a client pipelining
more than its window is slowed by TCP, never overflows its session; rates
over the limits get RATE_LIMITED with a retry-after, and keep their order."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import socket

import pytest

from actors.session_registry import session_of
from client import Backoff, Client
from tests.e2e.conftest import RawClient, login, register
from transport import wire
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(60)

E = wire.ErrorCode
ALICE, BOB, CAROL = "+15550000031", "+15550000032", "+15550000033"
BIG = b"x" * 50_000                     # 300 of them: 15 MB, far more than socket buffers


def connection_of(node, user: str):
    listener = node.system.whereis("listener")
    conns = [c for c in listener._actor.connections if c.user == user and not c.closed]
    return conns[0] if conns else None


async def stalled_login(node, account) -> RawClient:
    """A logged-in client with a tiny receive buffer, so that once it stops
    reading the server's side fills up at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (node.host, node.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    client = RawClient(reader, writer)
    await client.hello()
    signature = account.key.sign(wire.login_challenge(client.nonce, account.phone, account.device))
    assert isinstance(await client.answer(client.send(
        wire.Login(account.phone, account.device, signature, ref=client.ref()))), wire.Ack)
    return client


async def flood(sender: RawClient, to: str, n: int, prefix: str = "m") -> list[str]:
    """Pipeline ``n`` big SENDs; returns the ids, all acked."""
    refs = {sender.send(wire.Send(f"{prefix}{i}", to, BIG, ref=sender.ref())): f"{prefix}{i}"
            for i in range(n)}
    acked = []
    while len(acked) < n:
        frame, _ = await sender.recv_until(lambda f: isinstance(f, (wire.Ack, wire.Error)), 20)
        assert isinstance(frame, wire.Ack), frame
        acked.append(refs[frame.ref])
    return acked


async def receive_all(client: RawClient, n: int) -> list[str]:
    got = []
    while len(got) < n:
        frame, _ = await client.recv_until(lambda f: isinstance(f, wire.Message), 10)
        got.append(frame.id)
    return got


async def watch_buffer(node, user: str, peak: list[int]) -> None:
    """Sample the bytes the server holds for ``user``'s connection."""
    while True:
        conn = connection_of(node, user)
        if conn is not None and conn.transport is not None:
            peak[0] = max(peak[0], conn.transport.get_write_buffer_size() + conn.out_bytes)
        await asyncio.sleep(0.002)


@pytest.mark.node_config(slow_consumer_timeout=1.0)
async def test_a_client_that_stops_reading_is_cut_off_and_loses_nothing(node):
    # Step 1: bob logs in and stops reading; alice floods him with 15 MB.
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await stalled_login(node, bob_acct)
    flow = node.system.env["listener"].flow
    peak = [0]
    watcher = asyncio.ensure_future(watch_buffer(node, BOB, peak))
    try:
        acked = await flood(alice, BOB, 300)
        # Step 2: the server holds back pushes: what it buffers for bob stays
        # near the high-water mark; after the timeout bob is disconnected.
        for _ in range(300):
            if connection_of(node, BOB) is None:
                break
            await asyncio.sleep(0.02)
        assert connection_of(node, BOB) is None, "the slow consumer was not disconnected"
    finally:
        watcher.cancel()
    print(f"peak bytes buffered for the slow client: {peak[0]}")
    assert 0 < peak[0] <= flow.push_high + 2 * len(BIG), peak[0]
    # What bob's socket still holds ends with ERROR SLOW_CONSUMER (or a reset).
    try:
        frame, _ = await bob.recv_until(lambda f: isinstance(f, wire.Error), 10)
        assert frame.code == E.SLOW_CONSUMER, frame
    except (ConnectionError, EOFError):
        pass
    await bob.close()
    # Step 3: bob reconnects and gets every message, once, in order.
    bob = await login(node, bob_acct)
    assert await receive_all(bob, 300) == acked == [f"m{i}" for i in range(300)]
    await alice.close()
    await bob.close()


@pytest.mark.node_config(slow_consumer_timeout=20.0)
async def test_a_briefly_slow_client_catches_up_without_a_disconnect(node):
    # Step 1: bob stops reading while alice sends 300 big messages.
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await stalled_login(node, bob_acct)
    acked = await flood(alice, BOB, 300)
    conn = connection_of(node, BOB)
    assert conn.backed_up_since is not None          # pushes are held back, not buffered
    # Step 2: bob reads again: pushes resume where they stopped, nothing twice.
    assert await receive_all(bob, 300) == acked
    assert connection_of(node, BOB) is conn
    await alice.close()
    await bob.close()


async def test_a_pipelining_client_is_held_to_its_window(node):
    # Step 1: alice pipelines 12,000 SENDs at once (more than her session's
    # mailbox holds: 10,000) to bob and carol.
    accounts = [await register(node, who) for who in (ALICE, BOB, CAROL)]
    alice = await login(node, accounts[0])
    session = session_of(node.system, ALICE)
    window = node.system.env["listener"].flow.max_in_flight
    n = 12_000
    for i in range(n):
        alice.send(wire.Send(f"w{i}", (BOB, CAROL)[i % 2], b"%d" % i, ref=alice.ref()))
    # Step 2: the server stops reading at the window; every SEND is acked by
    # the same session incarnation, its mailbox never near its bound.
    peak_in_flight, peak_mailbox, acks = 0, 0, 0
    conn = connection_of(node, ALICE)
    while acks < n:
        frame = await alice.recv(timeout=10)
        assert isinstance(frame, wire.Ack), frame
        acks += 1
        peak_in_flight = max(peak_in_flight, conn.in_flight)
        peak_mailbox = max(peak_mailbox, session.mailbox_len)
    print(f"peak in flight {peak_in_flight}, peak session mailbox {peak_mailbox}")
    assert session_of(node.system, ALICE) is session and session.is_alive
    assert peak_in_flight <= window + 4096          # at most one read past the window
    assert peak_mailbox < session._max_len // 2
    assert conn.reading and conn.in_flight == 0
    await alice.close()


@pytest.mark.node_config(max_in_flight=1)
async def test_a_pinging_client_is_not_timed_out_while_its_window_is_full(node, monkeypatch):
    """HEARTBEAT_TIMEOUT is for a client from which nothing arrived for 3
    intervals. A client whose window is full (here: a SUBSCRIBE stalled at
    the server for 4 intervals) is not read; the PINGs it sends on time wait
    unread in the kernel and are no silence of its own (found by review: it
    was closed after 3 intervals)."""
    from actors.session import Session
    original = Session.handle_subscribe

    async def stalled(self, msg):
        await asyncio.sleep(4.0)
        await original(self, msg)
    monkeypatch.setattr(Session, "_dispatch", {}, raising=False)   # handlers are cached here
    monkeypatch.setattr(Session, "handle_subscribe", stalled)
    await register(node, BOB)
    alice = await login(node, await register(node, ALICE), heartbeat=1.0)
    refs = {alice.send(wire.Subscribe((BOB,), ref=1000))}
    for _ in range(17):                             # a PING every 0.3 s for 5 s
        refs.add(alice.send(wire.Ping(ref=alice.ref())))
        await asyncio.sleep(0.3)
    while refs:                                     # all answered; nothing else (no ERROR)
        frame = await alice.recv(timeout=5)
        assert not isinstance(frame, wire.Error), frame
        if isinstance(frame, wire.Ack):
            refs.discard(frame.ref)
    await alice.close()


class _Socket:
    """Just enough of an asyncio transport for a ``Connection`` on its own."""
    def __init__(self):
        self.paused, self.closing = False, False

    def get_extra_info(self, name):
        return None

    def set_write_buffer_limits(self, high, low):
        pass

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def write(self, data):
        pass

    def get_write_buffer_size(self):
        return 0

    def is_closing(self):
        return self.closing

    def can_write_eof(self):
        return False

    def close(self):
        self.closing = True


async def test_the_heartbeat_sweep_does_not_judge_a_connection_it_stopped_reading():
    """The sweep's rule, on its own: a connection the server stopped reading
    (its window full) is not timed out however long that lasts, and resuming
    counts as hearing from it; a silent connection being read is closed."""
    import types

    from transport.flow import FlowConfig
    from transport.tcp import Connection, Listener, ListenerConfig, Sweep
    system = types.SimpleNamespace(env={}, send_after=lambda *args: None)
    config = ListenerConfig(flow=FlowConfig(max_in_flight=1))
    listener = Listener(config)
    listener.ref = types.SimpleNamespace(system=system)
    listener.connections = set()
    paused, silent = (Connection(system, config, listener.connections) for _ in range(2))
    for conn in (paused, silent):
        conn.connection_made(_Socket())
        conn.state, conn.heartbeat = "hello", 1.0
        conn.last_heard -= 10                       # nothing heard for 10 intervals
    paused.in_flight = 1                            # a request out, one held: reading paused
    paused.held = collections.deque([wire.Ping(ref=2)])
    paused.drain_held()
    assert not paused.reading and paused.transport.paused
    listener.handle_sweep(Sweep())
    assert silent.closed and not paused.closed
    paused.window_freed()                           # its answer came: reading resumes
    await asyncio.sleep(0)
    assert paused.reading and not paused.transport.paused
    listener.handle_sweep(Sweep())
    assert not paused.closed                        # resuming counted as hearing from it


@pytest.mark.node_config(send_rate=50, send_burst=20)
async def test_over_the_user_send_rate_a_send_is_refused_with_retry_after(node):
    accounts = [await register(node, who) for who in (ALICE, BOB)]
    alice, bob = await login(node, accounts[0]), await login(node, accounts[1])
    # Step 1: 30 SENDs at once: 20 pass (the burst); the 21st is refused with a
    # retry-after, and every one after it too ("send m20 again first").
    refs = [alice.send(wire.Send(f"m{i}", BOB, b"%d" % i, ref=alice.ref())) for i in range(30)]
    answers = {}
    while len(answers) < 30:
        frame, _ = await alice.recv_until(lambda f: isinstance(f, (wire.Ack, wire.Error)))
        answers[frame.ref] = frame
    assert all(isinstance(answers[r], wire.Ack) for r in refs[:20])
    first = answers[refs[20]]
    assert first.code == E.RATE_LIMITED and first.retry_after and first.retry_after <= 1000, first
    assert all(answers[r].code == E.RATE_LIMITED for r in refs[21:])
    assert "m20 again first" in answers[refs[21]].message
    # Step 2: the connection is open; after the wait the refused ones pass, in order.
    assert isinstance(await alice.answer(alice.send(wire.Ping(ref=alice.ref()))), wire.Ack)
    for i in range(20, 30):
        while True:
            reply = await alice.answer(alice.send(wire.Send(f"m{i}", BOB, b"%d" % i, ref=alice.ref())))
            if isinstance(reply, wire.Ack):
                break
            assert reply.code == E.RATE_LIMITED
            await asyncio.sleep(reply.retry_after / 1000)
    assert await receive_all(bob, 30) == [f"m{i}" for i in range(30)]
    await alice.close()
    await bob.close()


@pytest.mark.node_config(pair_rate=10, pair_burst=5)
async def test_a_sender_flooding_one_recipient_is_throttled_for_that_recipient_only(node):
    accounts = [await register(node, who) for who in (ALICE, BOB, CAROL)]
    alice = await login(node, accounts[0])
    replies = [await alice.answer(alice.send(wire.Send(f"b{i}", BOB, b"", ref=alice.ref())))
               for i in range(6)]
    assert [type(r) for r in replies] == [wire.Ack] * 5 + [wire.Error]
    assert replies[5].code == E.RATE_LIMITED and f"to {BOB}" in replies[5].message
    await asyncio.sleep(replies[5].retry_after / 1000)
    # bob's budget refilled; carol's was never touched (the gate wants b5 first).
    assert isinstance(await alice.answer(alice.send(wire.Send("b5", BOB, b"", ref=alice.ref()))), wire.Ack)
    for i in range(5):
        assert isinstance(await alice.answer(alice.send(wire.Send(f"c{i}", CAROL, b"", ref=alice.ref()))),
                          wire.Ack)
    await alice.close()


@pytest.mark.node_config(frame_rate=100, frame_burst=50)
async def test_over_the_frame_rate_frames_are_refused_and_the_connection_stays(node):
    alice = await login(node, await register(node, ALICE))
    for _ in range(80):
        alice.send(wire.Ping(ref=alice.ref()))
    answers = [await alice.recv() for _ in range(80)]
    limited = [a for a in answers if isinstance(a, wire.Error)]
    assert 20 <= len(limited) <= 32 and all(a.code == E.RATE_LIMITED and a.retry_after for a in limited)
    await asyncio.sleep(0.1)
    assert isinstance(await alice.answer(alice.send(wire.Ping(ref=alice.ref()))), wire.Ack)
    await alice.close()


@pytest.mark.node_config(send_rate=200, send_burst=10)
async def test_the_sdk_rides_the_send_limit_and_keeps_order(node):
    # The SDK pipelines; refused SENDs come back RATE_LIMITED and it resends
    # them in order: bob gets all 100, in order.
    fast = dict(backoff=Backoff(initial=0.02, maximum=0.2), request_timeout=5.0, e2e=False)
    alice = await Client.connect(node.host, node.port, **fast)
    await alice.register(ALICE)
    key = DeviceKey()
    await alice.login(ALICE, await alice.confirm(ALICE, node.codes[ALICE], key), key)
    bob = await login(node, await register(node, BOB))
    sends = [alice.send(BOB, b"%d" % i, id=f"s{i}") for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*sends), 30)
    assert await receive_all(bob, 100) == [f"s{i}" for i in range(100)]
    await alice.close()
    await bob.close()


@pytest.mark.node_config(max_watched=40)
async def test_a_user_watches_at_most_max_watched_users(node):
    alice = await login(node, await register(node, ALICE))
    users = [f"+1555900{i:04d}" for i in range(41)]
    # At the limit: 40 users watched (two SUBSCRIBEs, one repeating a user).
    r1 = alice.send(wire.Subscribe(tuple(users[:30]), ref=alice.ref()))
    assert isinstance(await alice.answer(r1), wire.Ack)
    r2 = alice.send(wire.Subscribe(tuple(users[29:40]), ref=alice.ref()))
    assert isinstance(await alice.answer(r2), wire.Ack)
    # One past it: refused, and nothing changed; the connection stays.
    r3 = alice.send(wire.Subscribe((users[40],), ref=alice.ref()))
    reply = await alice.answer(r3)
    assert isinstance(reply, wire.Error) and reply.code == E.INVALID and "at most 40" in reply.message
    assert isinstance(await alice.answer(alice.send(wire.Subscribe((users[0],), ref=alice.ref()))),
                      wire.Ack)
    await alice.close()


def test_every_answer_event_frees_its_window_slot():
    # An event a session pushes with a ``ref`` (and no ``client``: commands
    # carry one) is the answer to a request; if the connection did not count
    # it, the window would leak and the connection would stop reading.
    import dataclasses

    from actors import messages
    from transport.tcp import ANSWERS
    answers = {cls for cls in vars(messages).values()
               if dataclasses.is_dataclass(cls) and isinstance(cls, type)
               and {"ref"} <= {f.name for f in dataclasses.fields(cls)}
               and "client" not in {f.name for f in dataclasses.fields(cls)}}
    assert answers and answers <= ANSWERS, answers - ANSWERS


@pytest.mark.node_config(pair_rate=10, pair_burst=3)
async def test_group_sends_share_the_send_budget(node):
    accounts = [await register(node, who) for who in (ALICE, BOB)]
    alice = await login(node, accounts[0])
    create = await alice.answer(alice.send(wire.GroupCreate("team", "Team", (BOB,), ref=alice.ref())))
    assert isinstance(create, wire.Ack), create
    replies = [await alice.answer(alice.send(wire.GroupSend(f"g{i}", create.value, b"", ref=alice.ref())))
               for i in range(4)]
    assert [type(r) for r in replies] == [wire.Ack] * 3 + [wire.Error]
    assert replies[3].code == E.RATE_LIMITED and replies[3].retry_after
    await alice.close()


@pytest.mark.node_config(change_rate=5, change_burst=4)
async def test_group_changes_have_their_own_per_user_budget(node):
    accounts = [await register(node, who) for who in (ALICE, BOB)]
    alice = await login(node, accounts[0])

    async def ask(frame):
        return await alice.answer(alice.send(dataclasses.replace(frame, ref=alice.ref())))
    gid = (await ask(wire.GroupCreate("team", "Team", (BOB,)))).value
    # Step 1: three renames pass (the burst of four, the create included), the
    # next change of any kind is refused with a retry-after and changes nothing.
    replies = [await ask(wire.GroupRename(gid, f"n{i}")) for i in range(3)]
    refused = await ask(wire.GroupAdmin(gid, BOB, True))
    assert [type(r) for r in replies] == [wire.Ack] * 3 and replies[-1].value == 4
    assert refused.code == E.RATE_LIMITED and 0 < refused.retry_after <= 250, refused
    # Step 2: messages and leaving are not held back by it; after the wait
    # the change passes.
    assert isinstance(await ask(wire.GroupSend("g0", gid, b"")), wire.Ack)
    await asyncio.sleep(refused.retry_after / 1000)
    assert (await ask(wire.GroupAdmin(gid, BOB, True))).value == 5
    await alice.close()


async def test_a_closed_connection_discards_what_still_arrives(node):
    # Step 1: a client's first frame is fatal (a HELLO of an unknown version),
    # followed by more than a window of frames in the same write; the server
    # answers, closes its side and lingers.
    listener = node.system.whereis("listener")._actor
    ping = wire.encode(wire.Ping(ref=1))
    sock = socket.create_connection((node.host, node.port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, wire.encode(wire.Hello(99, 30.0, "bad", ref=1)) + ping * 1500)
    # Step 2: it keeps writing during the linger; what the closed connection
    # keeps stays empty (it used to decode and hold every frame).
    peak = 0
    try:
        for _ in range(40):
            await loop.sock_sendall(sock, ping * 5000)
            closed = [c for c in listener.connections if c.closed]
            peak = max([peak] + [len(c.held or ()) for c in closed])
            await asyncio.sleep(0.01)
    except OSError:
        pass                                # the server's linger ended: reset
    finally:
        sock.close()
    assert closed or peak == 0
    assert peak == 0, peak
