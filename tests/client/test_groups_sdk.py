"""The SDK's group API end to end against a real node: create, info, fan-out
with per-member ticks, system events, membership errors, and a group send
queued while offline going out after the reconnect."""

from __future__ import annotations

import asyncio

import pytest

from client import ServerError, Status
from client.groups import GroupEvent, GroupMessage, GroupReceipt
from client_testkit import next_event
from tests.client.test_node_e2e import sdk_user
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "+15550000071", "+15550000072", "+15550000073"
GID = f"{ALICE}/friends"


async def test_sdk_group_chat_with_per_member_ticks(node):  # noqa: F811
    alice, bob, carol = [await sdk_user(node, p) for p in (ALICE, BOB, CAROL)]
    try:
        # Step 1: alice creates the group; bob hears of it; everyone sees the members.
        assert await alice.create_group("friends", "Friends", [BOB, CAROL]) == GID
        created = await next_event(bob, (GroupEvent,))
        assert (created.event, created.by, set(created.users)) == ("created", ALICE, {BOB, CAROL})
        info = await bob.group_info(GID)
        assert (info.name, info.admins, info.members) == ("Friends", (ALICE,), (ALICE, BOB, CAROL))
        assert [i.group for i in await carol.group_info()] == [GID]
        await alice.group_info(GID)             # alice knows whom her messages are for
        # Step 2: one send reaches both; alice's ticks are per member.
        sent = await alice.send_group(GID, b"hi both", id="g-1")
        assert sent.id == "g-1" and alice.status("g-1") is Status.SENT
        for member in (bob, carol):
            message = await next_event(member, (GroupMessage,))
            assert (message.id, message.group, message.sender, message.body) == (
                "g-1", GID, ALICE, b"hi both")
        delivered = {(await next_event(alice, (GroupReceipt,))).by for _ in range(2)}
        assert delivered == {BOB, CAROL}
        assert alice.group_ticks("g-1") == {BOB: Status.DELIVERED, CAROL: Status.DELIVERED}
        assert alice.status("g-1") is Status.DELIVERED
        # Step 3: bob reads it: read by bob only, so the message is not "read" yet.
        await bob.mark_group_read(GID, ALICE, ["g-1"])
        read = await next_event(alice, (GroupReceipt,))
        assert (read.kind, read.by) == (Status.READ, BOB)
        assert alice.group_ticks("g-1")[BOB] is Status.READ
        assert alice.status("g-1") is Status.DELIVERED
        await carol.mark_group_read(GID, ALICE, ["g-1"])
        await next_event(alice, (GroupReceipt,))
        assert alice.status("g-1") is Status.READ
        # Step 4: bob is not an admin; carol is removed and can no longer send.
        with pytest.raises(ServerError) as refused:
            await bob.add_members(GID, [BOB])
        assert refused.value.code is wire.ErrorCode.NOT_ADMIN
        await alice.remove_members(GID, [CAROL])
        removed = await next_event(carol, (GroupEvent,))
        assert (removed.event, removed.users) == ("removed", (CAROL,))
        with pytest.raises(ServerError) as refused:
            await carol.send_group(GID, b"still here?")
        assert refused.value.code is wire.ErrorCode.NOT_MEMBER
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_sdk_group_send_queued_offline_goes_out_after_reconnect(node):  # noqa: F811
    alice, bob = [await sdk_user(node, p) for p in (ALICE, BOB)]
    try:
        await alice.create_group("friends", "Friends", [BOB])
        await alice.rename_group(GID, "Pals")
        await alice.set_admin(GID, BOB)
        # Step 1: alice's connection drops; her group sends wait in the outbox.
        alice._conn.abort()
        sends = [asyncio.ensure_future(alice.send_group(GID, b"%d" % i, id=f"q{i}"))
                 for i in range(5)]
        # Step 2: after the reconnect they go out, in order, once each.
        await asyncio.wait_for(asyncio.gather(*sends), 10)
        events = []
        while len([e for e in events if isinstance(e, GroupMessage)]) < 5:
            events.append(await next_event(bob, (GroupMessage, GroupEvent), timeout=5))
        assert [e.event for e in events if isinstance(e, GroupEvent)] == [
            "created", "renamed", "promoted"]
        assert [e.id for e in events if isinstance(e, GroupMessage)] == [f"q{i}" for i in range(5)]
        # Step 3: bob (now an admin) leaves; alice is told.
        await bob.leave_group(GID)
        mine = [await next_event(alice, (GroupEvent,)) for _ in range(4)]
        assert [e.event for e in mine] == ["created", "renamed", "promoted", "left"]
        assert mine[-1].by == BOB
        assert (await alice.group_info(GID)).members == (ALICE,)
    finally:
        await alice.close()
        await bob.close()
