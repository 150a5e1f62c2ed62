"""A contact sending what the SDK should never trust, against a real node:
an item that cannot be opened is one ``Undecryptable`` event, acknowledged,
and never an error that drops the connection (which would push the same
item again at every login, forever)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from client import Message
from client.e2e_store import E2EStore
from client.events import Disconnected, Undecryptable
from test_e2e_sdk import relogin, sdk_user
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport.e2e import GroupCipher, SenderKey, SenderKeyMessage

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000211", "+15550000212"


async def collect(client, until, timeout: float = 3.0) -> list:
    """Events until one of kind ``until`` (returned last)."""
    seen = []

    async def run():
        async for event in client.events():
            seen.append(event)
            if isinstance(event, until):
                return
    await asyncio.wait_for(run(), timeout)
    return seen


@pytest.mark.parametrize("group", ["x" * 300, "a\x00b", f"{ALICE}/" + "y" * 20],
                         ids=["too-long", "nul", "no-such-group"])
async def test_a_poisoned_sender_key_is_one_event_and_acknowledged(node, tmp_path, group):  # noqa: F811
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=str(tmp_path / "bob"))
    store = node.system.env["mailbox"]
    try:
        # Step 1: Alice hands Bob a sender key named as no file could be
        # (or for a group that does not exist), then a plain message
        distribution = SenderKey.create(group).distribution_message()
        await alice._send_sealed(BOB, SenderKeyMessage(distribution), (), None)
        await alice.send(BOB, "after the poison")
        seen = await collect(bob, Message)
        assert seen[-1].body == b"after the poison"
        assert not [e for e in seen if isinstance(e, Disconnected)]
        assert [type(e) for e in seen[:-1]] in ([], [Undecryptable])

        # Step 2: everything is acknowledged: nothing is left for a new process
        await wait_for(lambda: not store.inbox_after(BOB, 0, 100), timeout=3)
        await wait_for(lambda: not bob.group_codec._unknown, timeout=3)
        assert not list((tmp_path / "bob" / "groups").iterdir())
        await bob.close()
        bob = await relogin(node, bob, e2e_dir=str(tmp_path / "bob"))
        await bob.send(ALICE, "still here")
        with pytest.raises(asyncio.TimeoutError):
            await collect(bob, Disconnected, timeout=0.5)
    finally:
        await alice.close()
        await bob.close()


def test_group_files_are_named_by_hash_and_old_names_are_renamed(tmp_path):
    # A profile from before: groups/<id with "/" as "~">.bin, and a file
    # that does not parse (left alone)
    profile = tmp_path / "profile"
    E2EStore(str(profile))
    old = GroupCipher(f"{ALICE}/team")
    old.distribution_message()
    (profile / "groups" / f"{ALICE}~team.bin").write_bytes(old.to_bytes())
    (profile / "groups" / "junk.bin").write_bytes(b"not a cipher")
    store = E2EStore(str(profile))
    names = sorted(p.name for p in (profile / "groups").iterdir())
    assert names == sorted([hashlib.sha256(f"{ALICE}/team".encode()).hexdigest() + ".bin",
                            "junk.bin"])
    assert store.has_group(f"{ALICE}/team")
    assert store.group(f"{ALICE}/team").own.key_id == old.own.key_id
