"""Group messages end-to-end encrypted with sender keys, through the SDK
against a real node: members read them, the server stores ciphertext, and
a removed member cannot read what is sent after, even holding on to every
key it had."""

from __future__ import annotations

import asyncio
import os

import pytest

from client.events import KeyChanged, Message, Receipt, Sent, SendFailed, Status, Undecryptable
from client.groups import GroupEvent, GroupKeysPending, GroupMessage, GroupReceipt
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


async def test_the_app_gets_no_event_about_the_sdks_own_sender_key_messages(node):  # noqa: F811
    """Handing out a sender key is a 1:1 message the SDK sends for itself:
    its ACK and its receipts are not the app's (they named ids it never
    sent); and the app cannot pick an id of that form."""
    alice, bob, carol = [await sdk_user(node, u) for u in (ALICE, BOB, CAROL)]
    try:
        group = await alice.create_group("team", "team", [BOB, CAROL])
        first = await alice.send_group(group, b"one")            # hands out the key first
        for member in (bob, carol):
            assert (await next_event(member, (GroupMessage,))).id == first.id
        direct = await alice.send(BOB, b"two")
        assert (await next_event(bob, (Message,))).id == direct.id
        events = []
        async def until_ticked():
            async for event in alice.events():
                events.append(event)
                if isinstance(event, Receipt) and event.id == direct.id:
                    return
        await asyncio.wait_for(until_ticked(), 5.0)
        await wait_for(lambda: alice.group_ticks(first.id) == {BOB: Status.DELIVERED,
                                                               CAROL: Status.DELIVERED})
        async def drain():                      # every receipt due by now, and no more
            async for event in alice.events():
                events.append(event)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(drain(), 0.5)
        named = {e.id for e in events if isinstance(e, (Sent, SendFailed, Receipt, GroupReceipt))}
        assert named == {first.id, direct.id}, named
        for send in (alice.send(BOB, b"x", id="__mine"), alice.send_group(group, b"x", id="__x")):
            with pytest.raises(ValueError, match="the SDK's own"):
                await send
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_a_member_removed_while_keys_are_in_flight_does_not_break_the_send(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    try:
        group = await alice.create_group("race", "race", [BOB, CAROL])
        send_sealed, removed = alice._send_sealed, []

        async def remove_carol_first(*args, **options):
            # the first key distribution of the send: at this moment Alice
            # removes Carol, and the GROUP_EVENT re-keys her sender key
            if not removed:
                removed.append(True)
                before = alice.group_codec.store.group(group).own
                await alice.remove_members(group, [CAROL])
                await wait_for(lambda: alice.group_codec.store.group(group).own is not before)
            return await send_sealed(*args, **options)
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


@pytest.mark.parametrize("away", [False, True], ids=["online", "restarted"])
async def test_a_members_old_device_cannot_read_after_it_is_replaced(node, tmp_path, away):  # noqa: F811
    """Bob registers a new device: Alice's next group message goes out
    under a new sender key, handed to the current devices only. Bob's new
    device and Carol read it; the state Bob's old device held cannot.
    ``restarted``: Alice is away meanwhile and comes back on the same
    profile (whom her key was handed to was saved with it)."""
    profile = str(tmp_path / "alice")
    alice = await sdk_user(node, ALICE, e2e_dir=profile)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    try:
        # Step 1: a group of three; Alice's first message reads on both sides
        group = await alice.create_group("phones", "phones", [BOB, CAROL])
        await alice.send_group(group, b"zqGROUP before bob's new phone")
        for member in (bob, carol):
            assert (await next_event(member, (GroupMessage,))).body == b"zqGROUP before bob's new phone"
        old_device = bob.group_codec.store.group(group).to_bytes()   # what the old phone holds

        # Step 2: Bob registers a new device; Alice's SDK gets the KEY_CHANGED notice
        await bob.close()
        if away:
            await alice.close()
        bob = await sdk_user(node, BOB)
        if away:
            alice = await relogin(node, alice, e2e_dir=profile)
        assert (await next_event(alice, (KeyChanged,))).user == BOB

        # Step 3: Alice writes to the group again (her sealed body kept aside)
        sealed, seal = [], alice.group_codec.seal
        alice.group_codec.seal = lambda g, body: sealed.append(seal(g, body)) or sealed[-1]
        await alice.send_group(group, b"zqGROUP after bob's new phone")

        # Step 4: Bob's new device and Carol read it
        for member in (bob, carol):
            event = await next_event(member, (GroupMessage, Undecryptable))
            assert isinstance(event, GroupMessage), event
            assert event.body == b"zqGROUP after bob's new phone"
        # Step 5: the keys Bob's old device held cannot open it
        assert len(sealed) == 1
        with pytest.raises(E2EError):
            GroupCipher.from_bytes(old_device).decrypt(ALICE, sealed[0])
    finally:
        for client in (alice, bob, carol):
            await client.close()


@pytest.mark.node_config(keys_fetch_limit=(2, 60.0))
async def test_members_over_the_key_fetch_limit_are_skipped_not_the_send(node, tmp_path):  # noqa: F811
    dave = "+15550000104"
    alice = await sdk_user(node, ALICE)
    members = [await sdk_user(node, phone) for phone in (BOB, CAROL, dave)]
    for member in members:      # the skipped one waits this long for a key that never comes
        member.group_codec.held.timeout = 0.5
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


async def test_a_new_identity_or_a_key_change_notice_replaces_the_own_sender_key(tmp_path):
    """The notice is not needed: a first message from Bob's new identity
    is enough to replace the sender key his old device was handed. A
    KEY_CHANGED notice does the same once (not again when pushed again),
    also for a group only saved on disk; and a member never handed the
    current key changes nothing."""
    from client.e2e_store import E2EStore
    from client.encryption import Encryption
    from client.events import IdentityChanged
    from client.group_e2e import SenderKeyCodec
    from transport.crypto import DeviceKey
    from transport.e2e import KeyBundle, LocalKeys, SessionRecord, Text
    group, profile, alice_key = f"{ALICE}/devices", str(tmp_path / "alice"), DeviceKey()

    def alice_device():
        events: list = []
        alice = Encryption(E2EStore(profile), call=None, emit=events.append)
        alice.prepare(ALICE, alice_key)
        client = _Members(ALICE, group, (ALICE, BOB, CAROL))
        client._e2e.store = alice.store
        alice.on_device_changed = SenderKeyCodec(client).device_changed
        return alice, events

    def first_message(sender_keys: LocalKeys, text: str) -> bytes:
        record = SessionRecord()
        record.initiate(sender_keys, KeyBundle.from_bytes(alice.keys.bundle().to_bytes()).verify())
        return record.encrypt(Text(text).encode())

    # Step 1: Alice's sender key of the group, handed to Bob's first device and to Carol
    alice, events = alice_device()
    cipher = alice.store.group(group)
    cipher.distribution_message()
    cipher.handed(BOB)
    cipher.handed(CAROL)
    alice.store.save_group(group)
    first = cipher.own
    assert alice.open_item(1, BOB, "b1", first_message(LocalKeys.generate(), "hi")) == Text("hi")
    assert alice.store.group(group).own is first                 # Bob seen for the first time

    # Step 2: a first message from Bob's new identity: the key is replaced
    assert alice.open_item(2, BOB, "b2", first_message(LocalKeys.generate(), "new")) == Text("new")
    assert [type(e) for e in events] == [IdentityChanged]
    second = alice.store.group(group).own
    assert second.key_id != first.key_id and alice.store.group(group).given == {}
    alice.key_changed(3, CAROL)                                  # never had the new key
    assert alice.store.group(group).own is second

    # Step 3: after a restart (the group only on disk), Carol's notice
    # replaces a key handed to her, once
    alice.store.group(group).handed(CAROL)
    alice.store.save_group(group)
    alice, events = alice_device()
    alice.key_changed(4, CAROL)
    third = alice.store.group(group).own
    assert third.key_id != second.key_id
    alice.store.group(group).handed(CAROL)
    alice.key_changed(4, CAROL)                                  # the same notice, pushed again
    assert alice.store.group(group).own is third
    assert E2EStore(profile).group(group).own.key_id == third.key_id


def test_a_profile_registered_on_a_new_device_gets_new_own_sender_keys(tmp_path):
    """The profile moved to a new device key: a copy left on the old device
    knows every current own sender key, so each is replaced; the keys
    received from others are kept, and the same device key changes nothing."""
    from client.e2e_store import E2EStore
    from transport.crypto import DeviceKey
    group, profile, old_key = f"{ALICE}/moved", str(tmp_path / "bob"), DeviceKey()
    store = E2EStore(profile)
    store.keys_for(old_key)
    alice = GroupCipher(group)
    cipher = store.group(group)
    cipher.distribution_message()
    cipher.process(ALICE, alice.distribution_message())
    store.save_group(group)
    before = cipher.own.key_id
    again = E2EStore(profile)
    assert again.keys_for(old_key)[1] is False and again.group(group).own.key_id == before
    moved = E2EStore(profile)
    assert moved.keys_for(DeviceKey())[1] is True
    assert moved.group(group).own.key_id != before
    restarted = E2EStore(profile).group(group)
    assert restarted.own.key_id == moved.group(group).own.key_id
    assert restarted.decrypt(ALICE, alice.encrypt(b"still read")) == b"still read"
