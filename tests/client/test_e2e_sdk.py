"""End-to-end encryption through the SDK against a real node: bodies and
files reach the server only as ciphertext, tampering is caught by the
receiving client, a new device is announced to its contacts, files round
trip over the media API with dedup and resumed downloads."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import pytest

from client import Client, Message
from client.events import FileMessage, IdentityChanged, KeyChanged, Undecryptable
from client_testkit import FAST, next_event
from storage.keys import inbox_key, phone_bytes
from storage.records import pack, unpack
from tests.conftest import wait_for
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000081", "+15550000082"


async def sdk_user(running, phone: str, key: DeviceKey | None = None, **options) -> Client:
    """Register, confirm and log in through the SDK (keys published on return)."""
    media = f"http://127.0.0.1:{running.system.env['media_port']}"
    client = await Client.connect(running.host, running.port,
                                  **{**FAST, "media_url": media, **options})
    key = key or DeviceKey()
    await client.register(phone)
    device = await client.confirm(phone, running.codes[phone], key)
    await client.login(phone, device, key)
    client.test_key, client.test_device = key, device
    return client


async def relogin(running, client: Client, **options) -> Client:
    """The same device on a fresh Client (same key store directory)."""
    media = f"http://127.0.0.1:{running.system.env['media_port']}"
    again = await Client.connect(running.host, running.port, **{**FAST, "media_url": media, **options})
    await again.login(client.user, client.test_device, client.test_key)
    return again


def files_under(root: str):
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                yield os.path.join(directory, name), f.read()


async def test_canaries_never_reach_the_server_in_clear(node, caplog):  # noqa: F811
    # Step 1: 1,000 distinct canaries, Alice -> Bob (and a few back), logging at DEBUG
    caplog.set_level(logging.DEBUG)
    tag = secrets.token_hex(4)
    canaries = [f"zqCANARY-{tag}-{i:04d}-{secrets.token_hex(6)}" for i in range(1000)]
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB)
    try:
        await asyncio.gather(*(alice.send(BOB, text) for text in canaries[:990]))
        await asyncio.gather(*(bob.send(ALICE, text) for text in canaries[990:]))
        got: set[str] = set()
        async def receive(client: Client, count: int) -> None:
            async for event in client.events():
                if isinstance(event, Message):
                    got.add(event.body.decode())
                    count -= 1
                    if count == 0:
                        return
        await asyncio.wait_for(asyncio.gather(receive(bob, 990), receive(alice, 10)), 30)
        assert got == set(canaries)            # every one decrypted on the other side
        await alice.drain(5)
    finally:
        await alice.close()
        await bob.close()
    # Step 2: no file under the node's data directory (LMDB, blobs) holds any of them,
    # nor does anything logged; the marker shared by all of them is searched for
    # (any canary would contain it), then each canary in the logs
    marker = f"zqCANARY-{tag}".encode()
    for path, data in files_under(node.data_dir):
        assert marker not in data, f"plaintext in {path}"
    logged = caplog.text
    assert f"zqCANARY-{tag}" not in logged
    assert not any(c in logged for c in canaries)


@pytest.mark.node_config(lmdb_writer="thread")    # the test edits the inbox with a closure op
async def test_tampered_ciphertext_is_rejected_and_acknowledged(node, tmp_path):  # noqa: F811
    profile = str(tmp_path / "bob")             # Bob's keys outlive his Client
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB, e2e_dir=profile)
    await bob.close()
    store = node.system.env["mailbox"]
    try:
        # Step 1: Alice writes to Bob while he is away; a byte of the stored body flips
        await alice.send(BOB, "first, tampered", id="t1")
        items = store.inbox_after(BOB)
        assert [i.payload.id for i in items] == ["t1"]

        def flip(txn):
            key = inbox_key(phone_bytes(BOB), items[0].seq)
            value = unpack(txn.get("inbox", key))
            body = bytearray(value["body"])
            body[len(body) // 2] ^= 0x01
            value["body"] = bytes(body)
            txn.put("inbox", key, pack(value))
        await store.store.submit(flip)
        await alice.send(BOB, "second, intact", id="t2")
        # Step 2: Bob returns: the first is rejected (an event, never text), the second reads
        bob = await relogin(node, bob, e2e_dir=profile)
        rejected = await next_event(bob, (Message, Undecryptable))
        assert isinstance(rejected, Undecryptable) and rejected.id == "t1"
        message = await next_event(bob, (Message, Undecryptable))
        assert isinstance(message, Message) and message.body == b"second, intact"
        # Step 3: both were acknowledged: nothing is pushed again
        await wait_for(lambda: store.inbox_count(BOB) == 0, 3)
    finally:
        await alice.close()
        await bob.close()


async def test_a_new_device_is_announced_and_gets_new_sessions(node, tmp_path):  # noqa: F811
    alice = await sdk_user(node, ALICE, e2e_dir=str(tmp_path / "alice"))
    bob = await sdk_user(node, BOB)
    try:
        # Step 1: a conversation; both sides compute the same safety number
        await alice.send(BOB, "hi bob")
        assert (await next_event(bob, (Message,))).body == b"hi bob"
        await bob.send(ALICE, "hi alice")
        assert (await next_event(alice, (Message,))).body == b"hi alice"
        before = await alice.safety_number(BOB)
        assert before == await bob.safety_number(ALICE) and len(before.replace(" ", "")) == 60
        assert oct(os.stat(tmp_path / "alice" / "keys.bin").st_mode & 0o777) == "0o600"
        # Step 2: Alice goes offline; Bob registers a new device
        await alice.close()
        await bob.close()
        bob = await sdk_user(node, BOB)
        # Step 3: Alice returns (same profile): the notice, then a new identity on her next send
        alice = await relogin(node, alice, e2e_dir=str(tmp_path / "alice"))
        notice = await next_event(alice, (KeyChanged,))
        assert notice.user == BOB and notice.device == bob.test_device
        await alice.send(BOB, "hi new bob")
        changed = await next_event(alice, (IdentityChanged,))
        assert changed.user == BOB and changed.safety_number != before
        assert changed.safety_number == await bob.safety_number(ALICE)
        assert (await next_event(bob, (Message,))).body == b"hi new bob"
    finally:
        await alice.close()
        await bob.close()


async def test_files_round_trip_encrypted_with_dedup_and_resume(node, tmp_path):  # noqa: F811
    alice, bob = await sdk_user(node, ALICE), await sdk_user(node, BOB)
    blobs = node.system.env["mailbox"]
    try:
        # Step 1: a 3 MiB file, sent twice: uploaded once
        data = os.urandom(3 << 20)
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        await alice.send_file(BOB, str(path), caption="look")
        await alice.send_file(BOB, str(path))
        assert (alice.media.uploaded, alice.media.skipped) == (1, 1)
        first = await next_event(bob, (FileMessage,))
        second = await next_event(bob, (FileMessage,))
        assert first.file.sha256 == second.file.sha256
        assert (first.file.name, first.file.mime, first.file.caption, first.file.size) == (
            "photo.jpg", "image/jpeg", "look", len(data))
        # Step 2: the server's blob is ciphertext, referenced by the two messages until acked
        stored = [p for p, _ in files_under(os.path.join(node.data_dir, "blobs"))
                  if os.path.basename(p) == first.file.sha256]
        assert len(stored) == 1
        blob = open(stored[0], "rb").read()
        assert data[1000:1064] not in blob and len(blob) > len(data)
        await wait_for(lambda: blobs.blob_refs(first.file.sha256) == 0, 3)
        # Step 3: download; then again, resuming from a partial file
        out = tmp_path / "got.jpg"
        assert await bob.download(first, str(out)) == str(out)
        assert out.read_bytes() == data
        resumed = tmp_path / "resumed.jpg"
        (tmp_path / "resumed.jpg.part").write_bytes(blob[:1 << 20])
        await bob.download(second.file, str(resumed))
        assert resumed.read_bytes() == data and not os.path.exists(f"{resumed}.part")
    finally:
        await alice.close()
        await bob.close()


async def test_a_message_pushed_again_after_a_crash_still_opens(node, tmp_path):  # noqa: F811
    # Bob's client decrypts a message (spending its key) but dies before its
    # RECEIVED: the server pushes it again, and the new client opens it from
    # the profile instead of failing it as a replay.
    profile = str(tmp_path / "bob")
    alice = await sdk_user(node, ALICE)
    bob = await sdk_user(node, BOB, e2e_dir=profile, ack_delay=60.0)   # RECEIVED held back
    try:
        await alice.send(BOB, "before the crash", id="c1")
        assert (await next_event(bob, (Message,))).body == b"before the crash"
        assert os.listdir(os.path.join(profile, "opened"))        # kept until acknowledged
        # the same device logs in from a new client: the old one is replaced, never acks
        second = await relogin(node, bob, e2e_dir=profile)
        await bob.close()
        bob = second
        again = await next_event(bob, (Message, Undecryptable))
        assert isinstance(again, Message) and (again.id, again.body) == ("c1", b"before the crash")
        await wait_for(lambda: node.system.env["mailbox"].inbox_count(BOB) == 0, 3)
        await wait_for(lambda: not os.listdir(os.path.join(profile, "opened")), 3)
        await alice.send(BOB, "after", id="c2")          # the session carries on
        assert (await next_event(bob, (Message, Undecryptable))).body == b"after"
    finally:
        await alice.close()
        await bob.close()
