"""A member's replaced device can no longer post as the member
(``GroupCipher.retire``, transport/e2e_retire.py), through the SDK against
a real node: once Bob registers a new device, the sender key his old
device made opens messages for a short grace only; after his new device's
key arrives, a group message signed with the old key (a hostile server
delivering what the old device, or whoever holds its state, wrote) is
refused, while his new device's messages open."""

from __future__ import annotations

import pytest

from client.events import IdentityChanged, KeyChanged, Message, Undecryptable
from client.groups import GroupMessage
from client_testkit import next_event
from test_e2e_sdk import relogin, sdk_user
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport import wire
from transport.e2e import GroupCipher

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "+15550000501", "+15550000502", "+15550000503"


async def restart(running, client, profile: str):
    again = await relogin(running, client, e2e_dir=profile)
    again.test_key, again.test_device = client.test_key, client.test_device
    return again


def through_receive_path(client, group: str, sender: str, body: bytes) -> list:
    """Hand ``body`` to ``client``'s group codec as a pushed group message
    (as a hostile server would deliver it); the outcomes delivered at once."""
    got: list = []
    frame = wire.Message(10 ** 9, "forged", sender, 0, body, group)
    client.group_codec.receive(frame, lambda f, opened, why: got.append((opened, why)))
    return got


@pytest.mark.parametrize("away", [False, True], ids=["online", "restarted"])
async def test_a_replaced_devices_sender_key_is_refused_once_retired(node, tmp_path, away):  # noqa: F811
    profile = str(tmp_path / "alice")
    alice = await sdk_user(node, ALICE, e2e_dir=profile)
    bob = await sdk_user(node, BOB)
    carol = await sdk_user(node, CAROL)
    try:
        # Step 1: Bob writes to the group; Alice and Carol hold his sender key
        group = await alice.create_group("retire", "retire", [BOB, CAROL])
        await bob.send_group(group, b"zqGROUP from bob's first phone")
        for member in (alice, carol):
            assert (await next_event(member, (GroupMessage,))).body == b"zqGROUP from bob's first phone"
        old_phone = GroupCipher.from_bytes(bob.group_codec.store.group(group).to_bytes())

        # Step 2: Bob registers a new device; Alice's SDK gets the notice (and may restart)
        await bob.close()
        bob = await sdk_user(node, BOB)
        assert (await next_event(alice, (KeyChanged,))).user == BOB
        if away:
            await alice.close()
            alice = await restart(node, alice, profile)
        # what the old phone wrote before the change still opens (the grace)
        assert alice.group_codec.open(group, BOB, old_phone.encrypt(b"in flight")) == b"in flight"

        # Step 3: Bob's new device writes: its key reaches Alice, the old one retires
        sent = await bob.send_group(group, b"zqGROUP from bob's new phone")
        assert (await next_event(alice, (IdentityChanged,))).user == BOB
        for member in (alice, carol):
            event = await next_event(member, (GroupMessage, Undecryptable))
            assert isinstance(event, GroupMessage), event
            assert (event.id, event.body) == (sent.id, b"zqGROUP from bob's new phone")

        # Step 4: a message signed by the old phone's key is refused, at once
        # (not held for a key), on both members; also after Alice restarts
        for member in (alice, carol):
            forged = old_phone.encrypt(b"zqGROUP posted by the old phone")
            assert through_receive_path(member, group, BOB, forged) == [(None, "did not decrypt")]
            assert member.group_codec.held.count == 0
        await alice.close()
        alice = await restart(node, alice, profile)
        forged = old_phone.encrypt(b"zqGROUP posted by the old phone, later")
        assert alice.group_codec.open(group, BOB, forged) is None
        alice.group_codec.process(BOB, old_phone.distribution_message())    # not kept again
        assert alice.group_codec.open(group, BOB, forged) is None

        # Step 5: the new device's messages keep opening
        again = await bob.send_group(group, b"zqGROUP bob again")
        event = await next_event(alice, (GroupMessage, Undecryptable))
        assert isinstance(event, GroupMessage) and event.id == again.id, event
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_a_device_key_registered_again_hands_out_new_sender_keys(node, tmp_path):  # noqa: F811
    """Bob registers the same device key again (same profile): his contacts
    get KEY_CHANGED and retire the sender key they had from him, so his SDK
    makes a new one in every group (it finds nothing published at login),
    and his next message opens under it; the old key is retired."""
    profile = str(tmp_path / "bob")
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=profile)
    try:
        group = await alice.create_group("again", "again", [BOB])
        await bob.send_group(group, b"zqGROUP before")
        assert (await next_event(alice, (GroupMessage,))).body == b"zqGROUP before"
        before = bob.group_codec.store.group(group).own.key_id

        await bob.close()
        bob = await sdk_user(node, BOB, key=bob.test_key, e2e_dir=profile)
        assert (await next_event(alice, (KeyChanged,))).user == BOB
        assert bob.group_codec.store.group(group).own.key_id != before

        sent = await bob.send_group(group, b"zqGROUP after")
        event = await next_event(alice, (GroupMessage, Undecryptable))
        assert isinstance(event, GroupMessage) and event.id == sent.id, event
        assert before in alice.group_codec.store.group(group).retirement.retired[BOB]
        direct = await bob.send(ALICE, "zq1:1 after")          # its old sessions were dropped
        event = await next_event(alice, (Message, Undecryptable))
        assert isinstance(event, Message) and event.id == direct.id, event
    finally:
        await alice.close()
        await bob.close()


async def test_an_own_key_replaced_outside_the_codec_is_handed_out_again(node):  # noqa: F811
    """The store replaces the own sender keys (``rekey_groups``, as a login
    that finds the device key registered again does) on a client that
    already handed the old one out: the next send hands the new key to
    every member (the codec's record of who holds its key is for the old)."""
    alice, bob = [await sdk_user(node, u) for u in (ALICE, BOB)]
    try:
        group = await alice.create_group("rekeyed", "rekeyed", [BOB])
        await alice.send_group(group, b"zqGROUP one")
        assert (await next_event(bob, (GroupMessage,))).body == b"zqGROUP one"
        alice.group_codec.store.rekey_groups()
        sent = await alice.send_group(group, b"zqGROUP two")
        event = await next_event(bob, (GroupMessage, Undecryptable), timeout=5.0)
        assert isinstance(event, GroupMessage) and event.id == sent.id, event
    finally:
        await alice.close()
        await bob.close()
