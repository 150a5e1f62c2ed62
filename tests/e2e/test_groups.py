"""Group chats over real TCP and real LMDB: membership rules, fan-out,
per-member receipts, offline members, the size cap, a full inbox, and the
group actor's lifecycle (crash mid-fan-out, idle stop, rebuilt from LMDB)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from actors.group import group_of
from actors.messages import GroupRequest, Rejected, SendGroup
from tests.conftest import wait_for
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

E, K = wire.ErrorCode, wire.GroupEventKind
ALICE, BOB, CAROL, DAVE = "+15550000061", "+15550000062", "+15550000063", "+15550000064"
GID = f"{ALICE}/team"


class Port:
    """A stand-in connection that records what it is sent."""

    def __init__(self):
        self.events = []

    def push(self, event) -> None:
        self.events.append(event)


async def ask(client, frame: wire.Frame) -> wire.Frame:
    """Send ``frame`` with a fresh ref; its ACK or ERROR."""
    return await client.answer(client.send(dataclasses.replace(frame, ref=client.ref())))


async def next_of(client, cls, timeout: float = 3.0):
    frame, _ = await client.recv_until(lambda f: isinstance(f, cls), timeout)
    return frame


async def users(node, *phones):
    return [await login(node, await register(node, p)) for p in phones]


async def test_membership_rules(node):
    alice, bob, carol = await users(node, ALICE, BOB, CAROL)
    # Step 1: alice creates the group with bob; both hear of it.
    assert (await ask(alice, wire.GroupCreate("team", "Team", (BOB,)))).value == GID
    for member in (alice, bob):
        event = await next_of(member, wire.GroupEvent)
        assert (event.group, event.event, event.by, event.users, event.name) == (
            GID, K.CREATED, ALICE, (BOB,), "Team")
    # Step 2: carol is no member: she cannot send, nor see the group.
    assert (await ask(carol, wire.GroupSend("c1", GID, b"hi"))).code == E.NOT_MEMBER
    assert (await ask(carol, wire.GroupInfo(GID))).code == E.NOT_MEMBER
    # Step 3: bob is no admin: he cannot add, remove, promote or rename.
    assert (await ask(bob, wire.GroupAdd(GID, (CAROL,)))).code == E.NOT_ADMIN
    assert (await ask(bob, wire.GroupRemove(GID, (ALICE,)))).code == E.NOT_ADMIN
    assert (await ask(bob, wire.GroupAdmin(GID, BOB, True))).code == E.NOT_ADMIN
    assert (await ask(bob, wire.GroupRename(GID, "Mine"))).code == E.NOT_ADMIN
    # Step 4: alice adds carol (every member hears it), promotes bob, who renames.
    assert (await ask(alice, wire.GroupAdd(GID, (CAROL,)))).value == 2
    for member in (alice, bob, carol):
        event = await next_of(member, wire.GroupEvent)
        assert (event.event, event.by, event.users) == (K.ADDED, ALICE, (CAROL,))
    assert (await ask(alice, wire.GroupAdmin(GID, BOB, True))).value == 3
    assert (await ask(bob, wire.GroupRename(GID, "Team 2"))).value == 4
    event = await next_of(carol, wire.GroupEvent)
    assert (event.event, event.users) == (K.PROMOTED, (BOB,))
    event = await next_of(carol, wire.GroupEvent)
    assert (event.event, event.by, event.name) == (K.RENAMED, BOB, "Team 2")
    # Step 5: bob removes carol; she is told, and can no longer send.
    assert (await ask(bob, wire.GroupRemove(GID, (CAROL,)))).value == 5
    event = await next_of(carol, wire.GroupEvent)
    assert (event.event, event.by, event.users) == (K.REMOVED, BOB, (CAROL,))
    assert (await ask(carol, wire.GroupSend("c2", GID, b"hi"))).code == E.NOT_MEMBER
    # Step 6: bob steps down as admin; alice, the last admin, leaves: bob,
    # the oldest member left, is promoted.
    assert (await ask(bob, wire.GroupAdmin(GID, BOB, False))).value == 6
    assert (await ask(alice, wire.GroupLeave(GID))).value == 7
    assert (await ask(alice, wire.GroupLeave(GID))).value == 7      # a resend changes nothing
    left, promoted = [await next_of(bob, wire.GroupEvent) for _ in range(3)][1:]
    assert (left.event, left.users) == (K.LEFT, (ALICE,))
    assert (promoted.event, promoted.users) == (K.PROMOTED, (BOB,))
    ref = bob.send(wire.GroupInfo(GID, ref=bob.ref()))
    state = await next_of(bob, wire.GroupState)
    assert (state.name, state.created_by, state.admins, state.members, state.version) == (
        "Team 2", ALICE, (BOB,), (BOB,), 7)
    assert (await bob.answer(ref)).value == 1
    # Step 7: an unknown group, and a bad id, are refused clearly.
    assert (await ask(bob, wire.GroupSend("b1", f"{BOB}/nope", b"x"))).code == E.UNKNOWN_GROUP
    assert (await ask(alice, wire.GroupAdd(GID, ("+15559999999",)))).code == E.NOT_MEMBER
    for c in (alice, bob, carol):
        await c.close()


async def test_fan_out_with_per_member_receipts(node):
    alice, bob, carol = await users(node, ALICE, BOB, CAROL)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB, CAROL))), wire.Ack)
    # Step 1: alice sends three; each is acked after commit, once.
    ids = ["m1", "m2", "m3"]
    for i in ids:
        assert isinstance(await ask(alice, wire.GroupSend(i, GID, i.encode())), wire.Ack)
    # Step 2: bob and carol each get all three, tagged with the group, in order.
    for member in (bob, carol):
        got = [await next_of(member, wire.Message) for _ in ids]
        assert [(m.id, m.sender, m.group, m.body) for m in got] == [
            (i, ALICE, GID, i.encode()) for i in ids]
        member.send(wire.Received(tuple(m.seq for m in got), ref=member.ref()))
    # Step 3: alice sees who got each one: a delivered receipt per member.
    delivered = {(r.id, r.by) for r in [await next_of(alice, wire.Receipt) for _ in range(6)]
                 if r.kind == wire.ReceiptKind.DELIVERED and r.group == GID}
    assert delivered == {(i, u) for i in ids for u in (BOB, CAROL)}
    # Step 4: only bob reads m2: alice sees that bob, and only bob, read it.
    assert isinstance(await ask(bob, wire.Read(ALICE, ("m2",), GID)), wire.Ack)
    read = await next_of(alice, wire.Receipt)
    assert (read.kind, read.id, read.by, read.group) == (wire.ReceiptKind.READ, "m2", BOB, GID)
    # Step 5: the sender never gets its own message.
    assert not [f for f in alice.pending if isinstance(f, wire.Message)]
    for c in (alice, bob, carol):
        await c.close()


async def test_offline_member_gets_messages_and_events_in_order_on_return(node):
    alice = (await users(node, ALICE))[0]
    bob_account = await register(node, BOB)
    await register(node, CAROL)
    # Step 1: bob is offline while the group is created, used and changed.
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB,))), wire.Ack)
    assert isinstance(await ask(alice, wire.GroupSend("m1", GID, b"one")), wire.Ack)
    assert isinstance(await ask(alice, wire.GroupRename(GID, "Renamed")), wire.Ack)
    assert isinstance(await ask(alice, wire.GroupAdd(GID, (CAROL,))), wire.Ack)
    assert isinstance(await ask(alice, wire.GroupSend("m2", GID, b"two")), wire.Ack)
    # Step 2: on return bob gets all of it, in the order it was committed.
    bob = await login(node, bob_account)
    got = [await next_of(bob, (wire.Message, wire.GroupEvent)) for _ in range(5)]
    assert [(type(f).__name__, getattr(f, "id", None) or f.event) for f in got] == [
        ("GroupEvent", K.CREATED), ("Message", "m1"), ("GroupEvent", K.RENAMED),
        ("GroupEvent", K.ADDED), ("Message", "m2")]
    assert [f.seq for f in got] == sorted(f.seq for f in got)
    await alice.close()
    await bob.close()


@pytest.mark.node_config(group_cap=3)
async def test_size_cap_at_the_limit_and_one_past_it(node):
    alice, _, _, _ = await users(node, ALICE, BOB, CAROL, DAVE)
    # Step 1: one past the cap at creation is refused, and nothing is created.
    too_big = await ask(alice, wire.GroupCreate("big", "Big", (BOB, CAROL, DAVE)))
    assert too_big.code == E.GROUP_FULL
    assert (await ask(alice, wire.GroupInfo(f"{ALICE}/big"))).code == E.UNKNOWN_GROUP
    # Step 2: exactly at the cap is fine; one more member is refused.
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB, CAROL))), wire.Ack)
    assert (await ask(alice, wire.GroupAdd(GID, (DAVE,)))).code == E.GROUP_FULL
    # Step 3: after someone leaves there is room again.
    assert isinstance(await ask(alice, wire.GroupRemove(GID, (CAROL,))), wire.Ack)
    assert (await ask(alice, wire.GroupAdd(GID, (DAVE,)))).value == 3
    await alice.close()


@pytest.mark.node_config(offline_cap=2)
async def test_a_full_inbox_misses_nothing_silently(node):
    alice, carol = await users(node, ALICE, CAROL)
    bob_account = await register(node, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB, CAROL))), wire.Ack)
    # Step 1: bob's inbox fills with two 1:1 messages; the group goes on
    # without him: three sends are accepted and reach carol.
    for i in range(2):
        assert isinstance(await ask(alice, wire.Send(f"d{i}", BOB, b"direct")), wire.Ack)
    for i in range(3):
        assert isinstance(await ask(alice, wire.GroupSend(f"g{i}", GID, b"group")), wire.Ack)
        message = await next_of(carol, wire.Message)
        assert message.id == f"g{i}"
        assert isinstance(await ask(carol, wire.Received((message.seq,))), wire.Ack)
    # Step 2: bob finds his two messages and ONE missed event counting three.
    bob = await login(node, bob_account)
    got = [await next_of(bob, (wire.Message, wire.GroupEvent)) for _ in range(4)]
    missed = [f for f in got if isinstance(f, wire.GroupEvent) and f.event == K.MISSED]
    assert len(missed) == 1 and (missed[0].count, missed[0].by, missed[0].group) == (3, ALICE, GID)
    assert [f.id for f in got if isinstance(f, wire.Message)] == ["d0", "d1"]
    for c in (alice, bob, carol):
        await c.close()


@pytest.mark.node_config(offline_cap=2)
async def test_an_online_member_is_pushed_each_new_missed_count(node):
    alice, bob = await users(node, ALICE, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB,))), wire.Ack)
    created = await next_of(bob, wire.GroupEvent)
    assert isinstance(await ask(bob, wire.Received((created.seq,))), wire.Ack)
    # Step 1: bob is online but does not ack: two 1:1 messages fill his inbox.
    for i in range(2):
        assert isinstance(await ask(alice, wire.Send(f"d{i}", BOB, b"x")), wire.Ack)
    # Step 2: each group message that misses him replaces his marker with a
    # new one, pushed: he sees 1, 2, 3 (a count raised in place never came).
    counts = []
    for i in range(3):
        assert isinstance(await ask(alice, wire.GroupSend(f"g{i}", GID, b"g")), wire.Ack)
        event = await next_of(bob, wire.GroupEvent)
        counts.append((event.event, event.count))
    assert counts == [(K.MISSED, 1), (K.MISSED, 2), (K.MISSED, 3)]
    # Step 3: acking the last one leaves no marker behind.
    assert isinstance(await ask(bob, wire.Received((event.seq,))), wire.Ack)
    mailbox = node.system.env["mailbox"]
    assert [i.kind for i in mailbox.inbox_after(BOB)] == ["message", "message"]
    for c in (alice, bob):
        await c.close()


@pytest.mark.node_config(offline_cap=2)
async def test_a_flood_of_changes_folds_into_one_marker_for_a_full_member(node):
    alice, carol = await users(node, ALICE, CAROL)
    bob_account = await register(node, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB, CAROL))), wire.Ack)
    for i in range(10):
        assert (await ask(alice, wire.GroupRename(GID, f"Team {i}"))).value == i + 2
    # bob (offline, cap 2) finds CREATED, the first RENAMED, then one MISSED
    # (count 0: only events) naming the group as it is now
    bob = await login(node, bob_account)
    got = [await next_of(bob, wire.GroupEvent) for _ in range(3)]
    assert [(e.event, e.name, e.count) for e in got] == [
        (K.CREATED, "Team", 0), (K.RENAMED, "Team 0", 0), (K.MISSED, "Team 9", 0)]
    assert node.system.env["mailbox"].inbox_meta(BOB).count == 3
    for c in (alice, bob, carol):
        await c.close()


@pytest.mark.node_config(lmdb_writer="thread")    # parks the writer thread with a closure op
async def test_group_actor_crash_mid_fan_out_loses_nothing_acked(node):
    alice, bob = await users(node, ALICE, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB,))), wire.Ack)
    first = await wait_for(lambda: group_of(node.system, GID))
    # Step 1: 20 sends are acked; then the LMDB writer is held on a real op
    # while 180 more are pipelined, so the group actor has batches in the
    # writer (to be committed, never acked by it) when it is crashed.
    refs = {alice.send(wire.GroupSend(f"m{i}", GID, b"%d" % i, ref=alice.ref())): f"m{i}"
            for i in range(20)}
    acked: set[str] = set()
    while len(acked) < 20:
        frame, _ = await alice.recv_until(lambda f: isinstance(f, wire.Ack) and f.ref in refs)
        acked.add(refs.pop(frame.ref))
    release = threading.Event()
    held = node.system.env["mailbox"].store.submit(lambda txn: release.wait(10))
    refs.update({alice.send(wire.GroupSend(f"m{i}", GID, b"%d" % i, ref=alice.ref())): f"m{i}"
                 for i in range(20, 200)})
    await wait_for(lambda: sum(map(len, first._actor.in_flight)) == 180)
    port = Port()                           # and one request still in its mailbox
    first.cast(GroupRequest(ALICE, SendGroup(999, "queued", GID, b"q", port)))
    first.exit(RuntimeError("injected crash"))
    await first.join()
    assert [(type(e), e.ref, e.reason) for e in port.events] == [(Rejected, 999, "internal")]
    release.set()
    await held
    # Step 2: what was not acked (answered INTERNAL: "resend") is resent, same id.
    internal = 0
    while len(acked) < 200:
        frame, _ = await alice.recv_until(
            lambda f: isinstance(f, (wire.Ack, wire.Error)) and f.ref in refs, timeout=5)
        mid = refs.pop(frame.ref)
        if isinstance(frame, wire.Ack):
            acked.add(mid)
        else:
            assert frame.code == E.INTERNAL, frame
            internal += 1
            refs[alice.send(wire.GroupSend(mid, GID, mid[1:].encode(), ref=alice.ref()))] = mid
    second = await wait_for(lambda: (g := group_of(node.system, GID)) and g is not first and g)
    assert isinstance(first.exit_reason, RuntimeError) and second.is_alive
    assert internal == 180                  # every send the crash caught: answered, resent
    assert node.system.env["mailbox"].inbox_meta(BOB).messages == 200   # stored once each
    # Step 3: bob gets every message exactly once per id (one more send
    # nudges him past anything a dead incarnation stored without nudging).
    assert isinstance(await ask(alice, wire.GroupSend("last", GID, b"last")), wire.Ack)
    seen: list[str] = []
    while "last" not in seen:
        message = await next_of(bob, wire.Message, timeout=5)
        if message.id not in seen:
            seen.append(message.id)
        bob.send(wire.Received((message.seq,), ref=bob.ref()))
    assert set(seen) == acked | {"last"} and len(seen) == 201
    await alice.close()
    await bob.close()


@pytest.mark.node_config(group_linger=0.2)
async def test_idle_group_actor_stops_and_is_rebuilt_from_lmdb(node):
    alice, bob = await users(node, ALICE, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("team", "Team", (BOB,))), wire.Ack)
    assert isinstance(await ask(alice, wire.GroupRename(GID, "Quiet")), wire.Ack)
    # Step 1: with nothing to do the group actor stops normally.
    first = await wait_for(lambda: group_of(node.system, GID))
    assert await asyncio.wait_for(first.join(), 3) == "normal"
    assert group_of(node.system, GID) is None
    # Step 2: the next command starts a new one from the committed record.
    assert isinstance(await ask(bob, wire.GroupSend("b1", GID, b"back")), wire.Ack)
    second = group_of(node.system, GID)
    assert second is not None and second is not first
    record = second._actor.record           # the new incarnation's state, read in init
    assert (record.name, record.members, record.version) == ("Quiet", (ALICE, BOB), 2)
    message = await next_of(alice, wire.Message)
    assert (message.id, message.group, message.sender) == ("b1", GID, BOB)
    await alice.close()
    await bob.close()


@pytest.mark.node_config(offline_cap=1)
async def test_a_join_past_a_members_event_cap_is_offline_full(node):
    # Bob is offline and holds one group event: his cap (1). A second group
    # naming him is refused, naming him; nothing is written for it.
    alice = await login(node, await register(node, ALICE))
    await register(node, BOB)
    assert isinstance(await ask(alice, wire.GroupCreate("one", "One", (BOB,))), wire.Ack)
    created, _ = await alice.recv_until(lambda f: isinstance(f, wire.GroupEvent), 3.0)
    assert isinstance(await ask(alice, wire.Received((created.seq,))), wire.Ack)
    refused = await ask(alice, wire.GroupCreate("two", "Two", (BOB,)))
    assert refused.code == wire.ErrorCode.OFFLINE_FULL and BOB in refused.message, refused
    info = await ask(alice, wire.GroupInfo(f"{ALICE}/two"))
    assert isinstance(info, wire.Error) and info.code == wire.ErrorCode.UNKNOWN_GROUP, info
    await alice.close()
