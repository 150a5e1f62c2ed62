"""The SDK against a fake server: the outbox and resend with the same ids,
ordering across reconnects, RECEIVED batching, client-side dedup, receipts
and status, presence, reconnect policy."""

from __future__ import annotations

import asyncio

import pytest

from client import (
    Backoff, Client, ClientClosed, Disconnected, Message, Presence, Receipt, Reconnected, Sent,
    ServerError, Status, Typing,
)
from client.groups import GroupInfo
from client_testkit import FAST, next_event
from transport import wire
from transport.e2e import LocalKeys

E = wire.ErrorCode
ALICE, BOB, CAROL = "+15550000001", "+15550000002", "+15550000003"


def commit_without_ack(server):
    """A SEND handler that stores the message but loses the ACK."""
    def handler(conn, frame):
        conn.ack = lambda *args: None
        try:
            server.on_send(conn, frame)
        finally:
            del conn.ack
    return handler


def message_ids(server, user):
    return [m.id for m in server.inboxes.get(user, {}).values() if type(m) is wire.Message]


def with_keys(server, user):
    """An account with published keys (the fake directory checks no signatures)."""
    _, key = server.add_account(user)
    server.publish_keys(user, LocalKeys.generate(key, one_time=2).bundle())


async def messages(client, n, timeout=3.0):
    return [await next_event(client, (Message,), timeout) for _ in range(n)]


async def test_outbox_resent_with_same_ids_after_drop(server, logged_in):
    # Step 1: m1, m2 are committed but their ACKs lost; m3, m4 never reach the store
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    server.on(wire.Send, commit_without_ack(server))
    sends = [asyncio.ensure_future(alice.send(BOB, b"%d" % i, id=f"m{i}")) for i in (1, 2)]
    await server.wait(lambda: len(server.frames(wire.Send)) == 2)
    server.on(wire.Send, lambda conn, frame: None)
    sends += [asyncio.ensure_future(alice.send(BOB, b"%d" % i, id=f"m{i}")) for i in (3, 4)]
    await server.wait(lambda: len(server.frames(wire.Send)) == 4)
    assert [s.done() for s in sends] == [False] * 4
    assert [id for id, _, _ in alice.outbox] == ["m1", "m2", "m3", "m4"]

    # Step 2: the connection drops; the client reconnects and resends all four, in order
    server.on(wire.Send, server.default)
    server.drop()
    results = await asyncio.wait_for(asyncio.gather(*sends), 5)
    assert [r.id for r in results] == ["m1", "m2", "m3", "m4"]
    second = server.conns[-1]
    assert [f.id for f in server.frames(wire.Send, second)] == ["m1", "m2", "m3", "m4"]

    # Step 3: stored once each, in order; the outbox is empty
    assert message_ids(server, BOB) == ["m1", "m2", "m3", "m4"]
    assert alice.outbox == [] and all(alice.status(f"m{i}") is Status.SENT for i in range(1, 5))


async def test_send_while_disconnected_completes_after_reconnect(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    # Step 1: the server goes away
    await server.stop_listening()
    server.drop()
    assert (await next_event(alice, (Disconnected,))).reconnecting
    # Step 2: messages written while offline wait in the outbox
    offline = [asyncio.ensure_future(alice.send(BOB, b"x", id=f"off{i}")) for i in range(3)]
    await asyncio.sleep(0.2)
    assert not any(s.done() for s in offline)
    assert alice.status("off0") is Status.QUEUED and not alice.connected
    # Step 3: the server is back; the outbox goes out first, then a new send
    await server.listen()
    await next_event(alice, (Reconnected,))
    await alice.send(BOB, b"y", id="new")
    await asyncio.wait_for(asyncio.gather(*offline), 3)
    assert [f.id for f in server.frames(wire.Send)] == ["off0", "off1", "off2", "new"]
    assert message_ids(server, BOB) == ["off0", "off1", "off2", "new"]


async def test_order_kept_when_new_sends_race_the_resend(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    server.on(wire.Send, lambda conn, frame: None)
    old = [asyncio.ensure_future(alice.send(BOB, b"", id=f"a{i}")) for i in range(50)]
    await server.wait(lambda: len(server.frames(wire.Send)) == 50)
    server.on(wire.Send, server.default)
    server.drop()
    new = [asyncio.ensure_future(alice.send(BOB, b"", id=f"b{i}")) for i in range(50)]
    await asyncio.wait_for(asyncio.gather(*old, *new), 5)
    expected = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    assert message_ids(server, BOB) == expected


async def test_internal_resend_uses_the_same_id(server, logged_in):
    # A session restart fails every outstanding request with INTERNAL "resend".
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    failed = set()

    def restart_once(conn, frame):
        if frame.id in failed:
            return server.on_send(conn, frame)
        failed.add(frame.id)
        conn.error(frame, E.INTERNAL, "session restarted; resend")
    server.on(wire.Send, restart_once)
    results = await asyncio.wait_for(asyncio.gather(
        alice.send(BOB, b"1", id="r1"), alice.send(BOB, b"2", id="r2")), 3)
    assert [r.id for r in results] == ["r1", "r2"]
    assert [f.id for f in server.frames(wire.Send)] == ["r1", "r2", "r1", "r2"]
    assert message_ids(server, BOB) == ["r1", "r2"]


async def test_internal_on_one_message_keeps_order_with_one_in_flight(server, logged_in):
    alice = await logged_in(ALICE, max_in_flight=1)
    server.add_account(BOB)
    failures = iter([True])

    def fail_first(conn, frame):
        if next(failures, False):
            return conn.error(frame, E.INTERNAL, "storage error")
        server.on_send(conn, frame)
    server.on(wire.Send, fail_first)
    await asyncio.wait_for(asyncio.gather(*(alice.send(BOB, b"", id=f"o{i}") for i in range(5))), 3)
    assert message_ids(server, BOB) == [f"o{i}" for i in range(5)]


async def test_in_flight_sends_are_capped(server, logged_in):
    held = []
    alice = await logged_in(ALICE, max_in_flight=2)
    server.add_account(BOB)
    server.on(wire.Send, lambda conn, frame: held.append((conn, frame)))
    sends = [asyncio.ensure_future(alice.send(BOB, b"", id=f"c{i}")) for i in range(5)]
    await server.wait(lambda: len(held) == 2)
    await asyncio.sleep(0.1)
    assert len(held) == 2
    server.on(wire.Send, server.default)
    for conn, frame in held:
        server.on_send(conn, frame)
    await asyncio.wait_for(asyncio.gather(*sends), 3)
    assert message_ids(server, BOB) == [f"c{i}" for i in range(5)]


async def test_same_id_twice_is_one_message(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    first, second = await asyncio.gather(alice.send(BOB, b"x", id="dup"), alice.send(BOB, b"x", id="dup"))
    assert first == second and message_ids(server, BOB) == ["dup"]
    with pytest.raises(ValueError, match="already queued"):
        server.on(wire.Send, lambda conn, frame: None)
        task = asyncio.ensure_future(alice.send(BOB, b"y", id="dup2"))
        await asyncio.sleep(0.05)
        await alice.send(BOB, b"different", id="dup2")
    task.cancel()


async def test_e2e_same_id_joins_a_retry_and_refuses_another_message(server, logged_in):
    """With encryption on every send seals its body anew, yet the rule is
    the plain one: the same id, recipient and text again joins the queued
    message (one SEND, the same Sent); the same id with another text or
    recipient is a ValueError while the first is queued. 1:1 and group."""
    alice = await logged_in(ALICE, e2e=True)
    with_keys(server, BOB)
    with_keys(server, CAROL)
    gid = f"{ALICE}/team"
    alice._groups.states[gid] = GroupInfo(gid, "team", ALICE, (ALICE,), (ALICE,), 1)
    held = []
    server.on(wire.Send, lambda conn, frame: held.append((conn, frame)))
    server.on(wire.GroupSend, lambda conn, frame: held.append((conn, frame)))
    first = asyncio.ensure_future(alice.send(BOB, "hello", id="one"))
    group_first = asyncio.ensure_future(alice.send_group(gid, b"hello team", id="g1"))
    await server.wait(lambda: len(held) == 2)
    # Step 1: true retries join (bytes of the same text are the same message)
    retry = asyncio.ensure_future(alice.send(BOB, b"hello", id="one"))
    group_retry = asyncio.ensure_future(alice.send_group(gid, b"hello team", id="g1"))
    # Step 2: another message under a queued id is refused, not dropped
    for reuse in (lambda: alice.send(BOB, "another text", id="one"),
                  lambda: alice.send(CAROL, "hello", id="one"),
                  lambda: alice.send_group(gid, b"another text", id="g1")):
        with pytest.raises(ValueError, match="already queued"):
            await asyncio.wait_for(reuse(), 2)
    # Step 3: the ACKs come: each message went out once; its retry got its Sent
    for conn, frame in held:
        conn.ack(frame, 1234)
    sent = await asyncio.wait_for(asyncio.gather(first, retry, group_first, group_retry), 3)
    assert sent[0] == sent[1] and sent[2] == sent[3] and sent[0].id == "one"
    assert len(server.frames(wire.Send)) == 1 and len(server.frames(wire.GroupSend)) == 1


async def test_received_is_batched(server, logged_in):
    alice = await logged_in(ALICE)
    for i in range(3000):
        server.append(ALICE, lambda seq, i=i: wire.Message(seq, f"id{i}", BOB, 1, b"x"))

    async def take_all():
        got = []
        async for event in alice.events():
            got.append(event.seq)
            if len(got) == 3000:
                return got
    assert await asyncio.wait_for(take_all(), 5) == list(range(1, 3001))
    await server.wait(lambda: not server.inboxes[ALICE])
    batches = [f.seqs for f in server.frames(wire.Received)]
    assert all(len(b) <= 1024 for b in batches) and len(batches) <= 10
    assert sorted(s for b in batches for s in b) == list(range(1, 3001))


async def test_items_are_acked_only_when_taken_by_the_app(server, logged_in):
    alice = await logged_in(ALICE)
    server.append(ALICE, lambda seq: wire.Message(seq, "q1", BOB, 1, b"x"))
    await asyncio.sleep(0.1)
    assert server.frames(wire.Received) == []
    assert (await next_event(alice, (Message,))).id == "q1"
    await server.wait(lambda: server.frames(wire.Received))
    assert server.frames(wire.Received)[0].seqs == (1,)


async def test_resent_items_are_delivered_once_and_acked_again(server, logged_in):
    alice = await logged_in(ALICE)
    # Step 1: two messages taken by the app; their RECEIVED is lost
    server.on(wire.Received, lambda conn, frame: None)
    for i in (1, 2):
        server.append(ALICE, lambda seq, i=i: wire.Message(seq, f"d{i}", BOB, 1, b"x"))
    assert [m.id for m in await messages(alice, 2)] == ["d1", "d2"]
    await server.wait(lambda: server.frames(wire.Received))
    # Step 2: a third arrives but the app has not taken it when the link drops
    server.append(ALICE, lambda seq: wire.Message(seq, "d3", BOB, 1, b"x"))
    await asyncio.sleep(0.05)
    server.on(wire.Received, server.default)
    server.drop()
    # Step 3: after the re-login the server pushes 1, 2, 3 again: only d3 comes out, once
    await server.wait(lambda: len(server.frames(wire.Login)) == 2)
    # a copy of d1 under a new seq (same sender and id) is not delivered either
    server.append(ALICE, lambda seq: wire.Message(seq, "d1", BOB, 1, b"x"))
    server.append(ALICE, lambda seq: wire.Message(seq, "d5", BOB, 1, b"x"))
    assert [(m.seq, m.id) for m in await messages(alice, 2)] == [(3, "d3"), (5, "d5")]
    await server.wait(lambda: not server.inboxes[ALICE])
    acked = [s for f in server.frames(wire.Received, server.conns[-1]) for s in f.seqs]
    assert sorted(acked) == [1, 2, 3, 4, 5]


async def test_receipts_move_status_and_read_follows_received(server, logged_in):
    alice = await logged_in(ALICE)
    bob = await logged_in(BOB, ack_delay=1.0)       # RECEIVED would wait a second...
    sent = await alice.send(BOB, b"hello", id="t1")
    assert isinstance(sent, Sent) and alice.status("t1") is Status.SENT
    message = await next_event(bob, (Message,))
    await bob.mark_read(ALICE, [message.id])        # ...but READ flushes it first
    bob_frames = [type(f) for f in server.conns[1].frames]
    assert bob_frames.index(wire.Received) < bob_frames.index(wire.Read)
    delivered = await next_event(alice, (Receipt,))
    read = await next_event(alice, (Receipt,))
    assert (delivered.kind, delivered.id, delivered.by) == (Status.DELIVERED, "t1", BOB)
    assert (read.kind, read.id) == (Status.READ, "t1")
    assert alice.status("t1") is Status.READ


async def test_presence_typing_and_resubscribe(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    await alice.subscribe([BOB])
    assert await next_event(alice, (Presence,)) == Presence(BOB, False, None)
    bob = await logged_in(BOB)
    assert (await next_event(alice, (Presence,))).online
    await bob.typing(ALICE, True)
    assert await next_event(alice, (Typing,)) == Typing(BOB, True)
    # Alice's link drops: she subscribes again by herself
    server.online[ALICE].abort()
    await server.wait(lambda: len(server.frames(wire.Subscribe)) == 2)
    await bob.close()
    seen = await next_event(alice, (Presence,))
    while seen.online:
        seen = await next_event(alice, (Presence,))
    assert seen.last_seen is not None and alice.presence(BOB) == seen


async def test_reconnect_backoff_is_bounded(server, logged_in):
    backoff = Backoff(initial=0.05, maximum=0.3, jitter=0.5)
    alice = await logged_in(ALICE, backoff=backoff)
    loop = asyncio.get_running_loop()
    await server.stop_listening()
    server.drop()
    await next_event(alice, (Disconnected,))
    await asyncio.sleep(1.0)                # several refused attempts meanwhile
    back = loop.time()
    await server.listen()
    event = await next_event(alice, (Reconnected,), timeout=2.0)
    assert loop.time() - back < backoff.maximum + 0.25
    assert event.attempts >= 4 and alice.connected


async def test_shutting_down_then_reconnect(server, logged_in):
    alice = await logged_in(ALICE)
    server.conns[0].fail(0, E.SHUTTING_DOWN, "node stopping")
    event = await next_event(alice, (Disconnected,))
    assert event.reconnecting and "SHUTTING_DOWN" in event.reason
    await next_event(alice, (Reconnected,))
    assert alice.connected and await alice.ping() > 0


@pytest.mark.parametrize("how", ["replaced", "device_gone"])
async def test_no_reconnect_when_the_session_is_over(server, logged_in, how):
    alice = await logged_in(ALICE)
    if how == "replaced":
        server.conns[0].fail(0, E.SESSION_REPLACED, "logged in elsewhere")
        code = E.SESSION_REPLACED
    else:
        server.add_account(ALICE)           # a new device: the old one's LOGIN fails
        server.drop()
        code = E.LOGIN_FAILED
    event = await next_event(alice, (Disconnected,))
    while event.reconnecting:
        event = await next_event(alice, (Disconnected,))
    assert [e async for e in alice.events()] == []
    assert alice.closed and alice.closed_reason.code is code
    conns = len(server.conns)
    await asyncio.sleep(0.3)
    assert len(server.conns) == conns
    with pytest.raises(ClientClosed):
        await alice.send(BOB, b"x")


async def test_outbox_file_survives_a_client_restart(server, logged_in, tmp_path):
    path = str(tmp_path / "outbox.jsonl")
    device, key = server.add_account(ALICE)
    server.add_account(BOB)
    # Step 1: the first client's messages are never acked; it closes
    server.on(wire.Send, lambda conn, frame: None)
    first = await Client.connect("127.0.0.1", server.port, outbox_path=path, e2e=False, **FAST)
    await first.login(ALICE, device, key)
    pending = [asyncio.ensure_future(first.send(BOB, b"%d" % i, id=f"p{i}")) for i in range(3)]
    await server.wait(lambda: len(server.frames(wire.Send)) == 3)
    await first.close()
    for task in pending:
        with pytest.raises(ClientClosed):
            await task
    # Step 2: a new client on the same outbox file sends them after its login
    server.on(wire.Send, server.default)
    second = await Client.connect("127.0.0.1", server.port, outbox_path=path, e2e=False, **FAST)
    try:
        assert [id for id, _, _ in second.outbox] == ["p0", "p1", "p2"]
        await second.login(ALICE, device, key)
        sent = [await next_event(second, (Sent,)) for _ in range(3)]
        assert [s.id for s in sent] == ["p0", "p1", "p2"]
        assert message_ids(server, BOB) == ["p0", "p1", "p2"]
        assert second.outbox == [] and await second.drain(0.1)
    finally:
        await second.close()
    third = Client("127.0.0.1", server.port, outbox_path=path)
    assert third.outbox == []
    third._sender.close(None)


async def test_send_refused_for_good_is_reported(server, logged_in):
    alice = await logged_in(ALICE)
    server.add_account(BOB)
    server.on(wire.Send, lambda conn, frame: conn.error(frame, E.OFFLINE_FULL, "inbox full"))
    with pytest.raises(ServerError) as caught:
        await alice.send(BOB, b"x", id="full")
    assert caught.value.code is E.OFFLINE_FULL
    assert alice.status("full") is Status.FAILED and alice.outbox == []


async def test_events_follow_wire_order_when_ack_and_receipt_share_a_read(server, logged_in):
    # The SEND's ACK and the delivered RECEIPT arrive in one segment: the
    # app sees Sent (one tick) before the Receipt (two), never the reverse.
    alice = await logged_in(ALICE)
    server.add_account(BOB)

    def ack_and_receipt_at_once(conn, frame):
        conn.transport.write(wire.encode(wire.Ack(5, ref=frame.ref)) + wire.encode(
            wire.Receipt(1, wire.ReceiptKind.DELIVERED, frame.id, BOB, 6)))
    server.on(wire.Send, ack_and_receipt_at_once)
    await alice.send(BOB, b"x", id="w1")
    events = [await next_event(alice, (Sent, Receipt)) for _ in range(2)]
    assert [type(e) for e in events] == [Sent, Receipt]
    assert alice.status("w1") is Status.DELIVERED
