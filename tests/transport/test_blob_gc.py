"""Blob garbage collection against a real MediaListener and store: a blob is
deleted only when no stored message refers to it and its grace has passed
(since upload for a blob never referenced, since its last reference went
for one that was)."""

from __future__ import annotations

import os
import time

import pytest

from storage import open_storage
from storage.batch import ACK, SEND
from transport.crypto import DeviceKey
from transport.media import MediaListener

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000071", "+15550000072"
GRACE = 60.0


async def test_unreferenced_blobs_are_collected_after_their_grace(system, tmp_path):
    # Step 1: a store with two users, a listener whose collector we drive by hand
    storage = open_storage("memory")
    for phone in (ALICE, BOB):
        await storage.register_device(phone, DeviceKey().public, 0)
    system.env.update(mailbox=storage, config={
        "data_dir": str(tmp_path), "media_port": 0, "media_gc_interval": 0,
        "media_gc_grace": GRACE})
    listener = await system.spawn(MediaListener)
    blobs = listener._actor.blobs
    now = time.time()
    old = now - 2 * GRACE

    def put(data: bytes, mtime: float) -> str:
        writer = blobs.writer()
        writer.write(data)
        name = blobs.commit(writer).sha256
        os.utime(blobs.path_for(name), (mtime, mtime))
        return name

    held = put(b"held by a message not yet acked", old)
    released_long_ago = put(b"its message was acked long ago", old)
    released_just_now = put(b"its message was acked a moment ago", old)
    fresh = put(b"just uploaded, its SEND not here yet", now)
    orphan = put(b"uploaded long ago, never referenced", old)

    # Step 2: messages referring to three of them; two are acked, at different times
    ms = int(old * 1000)
    sends = [(SEND, f"m{i}", BOB, b"ciphertext", (name,))
             for i, name in enumerate((held, released_long_ago, released_just_now))]
    results = await storage.user_batch(ALICE, sends, ms, 100)
    seqs = [stored.seq for ok, stored in results]
    await storage.user_batch(BOB, [(ACK, (seqs[1],))], ms, 100)
    await storage.user_batch(BOB, [(ACK, (seqs[2],))], int(now * 1000), 100)
    assert [storage.blob_refs(n) for n in (held, released_long_ago, released_just_now)] == [1, 0, 0]

    # Step 3: collect; only the two past their grace with no reference go
    removed = await listener._actor.collect(now)
    assert sorted(removed) == sorted([released_long_ago, orphan])
    for name in (held, released_just_now, fresh):
        assert blobs.size(name) is not None
    for name in (released_long_ago, orphan):
        assert blobs.size(name) is None

    # Step 4: once the last message is acked and the grace has passed, it goes too
    await storage.user_batch(BOB, [(ACK, (seqs[0],))], ms, 100)
    removed = await listener._actor.collect(now + GRACE + 1)
    assert sorted(removed) == sorted([held, released_just_now, fresh])
    await listener.stop()
    storage.close()
