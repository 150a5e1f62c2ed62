"""End-to-end state across restarts and crashes, through the SDK against a
real node: a message decrypted (its key consumed) but not yet acknowledged
must open again when the server pushes it again to a new client process."""

from __future__ import annotations

import os

import pytest

from client.e2e_store import E2EStore
from client.encryption import Encryption
from client import Message
from client.events import KeyChanged, Undecryptable
from client.groups import GroupMessage
from client_testkit import next_event
from test_e2e_sdk import relogin, sdk_user
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport.crypto import DeviceKey
from transport.e2e import KeyBundle, LocalKeys, SessionRecord, Text

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000201", "+15550000202"


async def test_a_group_message_pushed_but_not_taken_opens_after_a_restart(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=str(tmp_path / "bob"))
    try:
        group = await alice.create_group("t", "t", [BOB])
        await alice.send_group(group, b"one")
        assert (await next_event(bob, (GroupMessage,))).body == b"one"
        # Bob's app is busy: "two" is pushed and decrypted (its chain key
        # consumed and saved) but the app has not taken it: no RECEIVED
        await alice.send_group(group, b"two")
        await wait_for(lambda: bob._receiver._queue.qsize() > 0)
        await bob.close()
        bob = await relogin(node, bob, e2e_dir=str(tmp_path / "bob"))
        event = await next_event(bob, (GroupMessage, Undecryptable))
        assert isinstance(event, GroupMessage) and event.body == b"two", event
        # once acknowledged, the plaintext copy is gone
        await wait_for(lambda: not list((tmp_path / "bob" / "opened").iterdir()))
    finally:
        await alice.close()
        await bob.close()


def test_a_crash_between_the_copy_and_the_session_loses_nothing(tmp_path):
    # Bob's device (a real E2EStore on disk) and a first message from Alice
    profile = str(tmp_path / "bob")
    device_key = DeviceKey()
    bob = Encryption(E2EStore(profile), call=None, emit=lambda event: None)
    bob.prepare(BOB, device_key)
    alice_keys = LocalKeys.generate(DeviceKey(), one_time=1)
    record = SessionRecord()
    record.initiate(alice_keys, KeyBundle.from_bytes(bob.keys.bundle().to_bytes()).verify())
    body = record.encrypt(Text("zqCRASH survives").encode())

    # The plaintext copy cannot be written (its temporary file's name is
    # taken by a directory): the process "dies" there
    blocker = os.path.join(profile, "opened", "7.bin.tmp")
    os.mkdir(blocker)
    with pytest.raises(OSError):
        bob.open_item(7, ALICE, "m1", body)

    # A new process on the same profile: the re-push of item 7 opens
    os.rmdir(blocker)
    again = Encryption(E2EStore(profile), call=None, emit=lambda event: None)
    again.prepare(BOB, device_key)
    assert again.open_item(7, ALICE, "m1", body) == Text("zqCRASH survives")


async def test_a_key_change_notice_pushed_again_keeps_the_new_session(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE, e2e_dir=str(tmp_path / "alice"))
    bob = await sdk_user(node, BOB)
    try:
        await alice.send(BOB, "hi")
        assert (await next_event(bob, (Message,))).body == b"hi"
        # Step 1: Bob registers a new device; the KEY_CHANGED notice reaches
        # Alice's SDK (sessions dropped), her app has not taken it yet
        await bob.close()
        bob = await sdk_user(node, BOB)
        sessions = alice._e2e.store
        await wait_for(lambda: sessions.session(BOB).current is None)
        await alice.send(BOB, "to the new device")          # a new session
        assert (await next_event(bob, (Message,))).body == b"to the new device"
        session = sessions.session(BOB).current.id

        # Step 2: Alice restarts; the notice is pushed again: handled once already
        await alice.close()
        alice = await relogin(node, alice, e2e_dir=str(tmp_path / "alice"))
        notice = await next_event(alice, (KeyChanged,))
        assert notice.user == BOB
        assert alice._e2e.store.session(BOB).current.id == session
        await alice.send(BOB, "same session")
        assert (await next_event(bob, (Message,))).body == b"same session"
    finally:
        await alice.close()
        await bob.close()


async def test_one_time_prekeys_handed_out_and_never_used_are_retired():
    """Every KEYS_FETCH of this user spends one of its one-time prekeys at
    the directory; one never followed by a first message (a fetcher that
    does not send, a safety number looked up) kept its private half here
    for good, and every top-up at login added more, until the next top-up
    raised (10,000) and login failed for good. Only the newest
    ``HANDED_OUT_KEPT`` handed-out ones are kept; those still held by the
    directory are never retired."""
    from client.encryption import HANDED_OUT_KEPT, ONE_TIME
    from transport import wire
    store = E2EStore()
    held = {"n": None}

    async def call(frame):
        if isinstance(frame, wire.KeysCount):
            return held["n"]
        assert isinstance(frame, wire.KeysPublish), frame
        return 0

    enc = Encryption(store, call, lambda event: None)
    enc.prepare("+15550000203", DeviceKey())
    await enc.after_login()                             # first publish: ONE_TIME keys
    for _ in range(150):                                # each login finds the directory drained
        held["n"] = 0
        await enc.after_login()
    assert len(store.keys.one_time) == HANDED_OUT_KEPT + ONE_TIME
    newest = list(store.keys.one_time)[-ONE_TIME:]      # the ones just published
    held["n"] = ONE_TIME
    await enc.after_login()
    assert list(store.keys.one_time)[-ONE_TIME:] == newest


async def test_a_key_registered_again_publishes_fresh_one_time_prekeys():
    """Registered again with the same device key, a device finds nothing
    published (the directory dropped the old device's keys and its record
    of which one-time prekeys it had handed out). Publishing the old ones
    again would let one be handed out twice, and only one of the two first
    messages made with it would open: fresh ones are published instead."""
    from transport import wire
    from transport.e2e import KeyBundle
    store, published = E2EStore(), []
    held = {"n": None}

    async def call(frame):
        if isinstance(frame, wire.KeysCount):
            return held["n"]
        published.extend(i for i, _ in KeyBundle.from_bytes(frame.bundle).one_time)
        return 0

    key = DeviceKey()
    enc = Encryption(store, call, lambda event: None)
    enc.prepare("+15550000204", key)
    await enc.after_login()
    first = set(published)
    published.clear()
    enc = Encryption(store, call, lambda event: None)     # the same keys, registered again
    enc.prepare("+15550000204", key)
    await enc.after_login()                               # KEYS_COUNT: nothing published
    assert published and not first & set(published)
    assert set(store.keys.one_time) == set(published)
