"""Group messages end-to-end encrypted with sender keys, through the SDK
against a real node: members read them, the server stores ciphertext, and
a removed member cannot read what is sent after, even holding on to every
key it had."""

from __future__ import annotations

import os

import pytest

from client.events import Undecryptable
from client.groups import GroupEvent, GroupKeysPending, GroupMessage
from client_testkit import next_event
from test_e2e_sdk import files_under, relogin, sdk_user
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport.e2e import E2EError, GroupCipher

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "+15550000101", "+15550000102", "+15550000103"


async def test_a_removed_member_cannot_read_later_messages(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=str(tmp_path / "bob"))
    carol = await sdk_user(node, CAROL)
    store = node.system.env["mailbox"]
    try:
        # Step 1: a group of three; the first message reads on both sides
        group = await alice.create_group("team", "team", [BOB, CAROL])
        await alice.send_group(group, b"zqGROUP one, for all three")
        for member in (bob, carol):
            message = await next_event(member, (GroupMessage,))
            assert (message.group, message.body) == (group, b"zqGROUP one, for all three")
        # Carol keeps a copy of every group key she holds (a member turned hostile)
        kept = carol.group_codec.store.group(group).to_bytes()

        # Step 2: Alice removes Carol; Alice and Bob see it (and re-key)
        await alice.remove_members(group, [CAROL])
        for member in (alice, bob):
            event = await next_event(member, (GroupEvent,))
            while event.event != "removed":
                event = await next_event(member, (GroupEvent,))
            assert event.users == (CAROL,)

        # Step 3: Bob is away; Alice writes to the group; the server keeps it for Bob
        await bob.close()
        sent = await alice.send_group(group, b"zqGROUP two, after carol left")
        stored = [i for i in store.inbox_after(BOB, 0, 1000)
                  if i.kind == "message" and i.payload.id == sent.id]
        assert len(stored) == 1 and stored[0].payload.group == group
        ciphertext = stored[0].payload.body
        assert b"zqGROUP" not in ciphertext
        assert not [i for i in store.inbox_after(CAROL, 0, 1000) if i.kind == "message"
                    and getattr(i.payload, "id", None) == sent.id]

        # Step 4: Carol, even with every key she ever had, cannot open it
        with pytest.raises(E2EError):
            GroupCipher.from_bytes(kept).decrypt(ALICE, ciphertext)
        assert carol.group_codec.open(group, ALICE, ciphertext) is None

        # Step 5: Bob returns and reads it
        bob = await relogin(node, bob, e2e_dir=str(tmp_path / "bob"))
        message = await next_event(bob, (GroupMessage,))
        assert message.body == b"zqGROUP two, after carol left"
    finally:
        for client in (alice, bob, carol):
            await client.close()
    # no group plaintext in the node's files
    for path, data in files_under(node.data_dir):
        assert b"zqGROUP" not in data, path
    assert os.path.isdir(node.data_dir)


async def test_a_member_removed_while_keys_are_in_flight_does_not_break_the_send(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    try:
        group = await alice.create_group("race", "race", [BOB, CAROL])
        send_sealed, removed = alice._send_sealed, []

        async def remove_carol_first(*args):
            # the first key distribution of the send: at this moment Alice
            # removes Carol, and the GROUP_EVENT re-keys her sender key
            if not removed:
                removed.append(True)
                before = alice.group_codec.store.group(group).own
                await alice.remove_members(group, [CAROL])
                await wait_for(lambda: alice.group_codec.store.group(group).own is not before)
            return await send_sealed(*args)
        alice._send_sealed = remove_carol_first

        await alice.send_group(group, b"zqGROUP sent while carol was removed")
        assert removed
        message = await next_event(bob, (GroupMessage, Undecryptable))
        assert isinstance(message, GroupMessage), message
        assert message.body == b"zqGROUP sent while carol was removed"
    finally:
        await alice.close()
        await bob.close()
        await carol.close()


@pytest.mark.node_config(keys_fetch_limit=(2, 60.0))
async def test_members_over_the_key_fetch_limit_are_skipped_not_the_send(node, tmp_path):  # noqa: F811
    dave = "+15550000104"
    alice = await sdk_user(node, ALICE)
    members = [await sdk_user(node, phone) for phone in (BOB, CAROL, dave)]
    try:
        # Step 1: Alice has no session with any of the three, and may fetch
        # only two key bundles: one member is skipped, the send goes out
        group = await alice.create_group("big", "big", [BOB, CAROL, dave])
        await alice.send_group(group, b"zqGROUP for those with the key")
        pending = await next_event(alice, (GroupKeysPending,))
        assert pending.group == group and pending.reason == "rate_limited"
        assert len(pending.users) == 1
        # Step 2: the two others read it; the skipped one cannot
        for member in members:
            event = await next_event(member, (GroupMessage, Undecryptable))
            if member.user in pending.users:
                assert isinstance(event, Undecryptable), event
            else:
                assert event.body == b"zqGROUP for those with the key", event
    finally:
        await alice.close()
        for member in members:
            await member.close()


class _Members:
    """The parts of a ``Client`` a ``SenderKeyCodec`` uses, with the
    server's member list in ``members`` (what GROUP_INFO answers)."""

    def __init__(self, user: str, group: str, members: tuple[str, ...]):
        from types import SimpleNamespace
        from client.e2e_store import E2EStore
        from client.groups import GroupInfo
        self.user, self.group, self.members = user, group, members
        self._e2e = SimpleNamespace(store=E2EStore())
        self._groups = SimpleNamespace(states={})
        self.spawned: list = []
        self.info = lambda: GroupInfo(group, "g", ALICE, (ALICE,), self.members, 1)

    async def group_info(self, group):
        return self.info()

    def _spawn(self, coro):
        self.spawned.append(coro)


async def test_a_removed_member_cannot_install_a_new_sender_key():
    """Bob saw Carol removed: a sender key she sends him after (over their
    1:1 session) is kept only if the server says she is a member again, so
    her group messages, should a hostile server deliver them, do not open.
    Added again, her new key is kept at once."""
    from client.group_e2e import SenderKeyCodec
    group = f"{ALICE}/review"
    client = _Members(BOB, group, (ALICE, BOB, CAROL))
    bob, carol = SenderKeyCodec(client), GroupCipher(group)
    store = client._e2e.store
    bob.on_event(group, "created", (ALICE, BOB, CAROL))
    bob.process(CAROL, carol.distribution_message())
    assert bob.open_item(1, group, CAROL, "c1", carol.encrypt(b"hello")) == b"hello"
    client.members = (ALICE, BOB)
    bob.on_event(group, "removed", (CAROL,))
    carol.rekey()
    bob.process(CAROL, carol.distribution_message())            # checked with the server first
    for check in client.spawned:
        await check
    client.spawned.clear()
    assert CAROL not in store.group(group).keys
    assert bob.open_item(2, group, CAROL, "c2", carol.encrypt(b"from a non-member")) is None
    client.members = (ALICE, BOB, CAROL)
    bob.on_event(group, "added", (CAROL,))
    carol.rekey()
    bob.process(CAROL, carol.distribution_message())            # a member again: kept at once
    assert client.spawned == []
    assert bob.open_item(3, group, CAROL, "c3", carol.encrypt(b"back")) == b"back"
