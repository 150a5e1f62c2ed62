"""The blob collector against what can happen between its decision and the
deletion: a HEAD that finds the blob, an upload of the same bytes, a SEND
that names it. Real MediaListener on 127.0.0.1, real LMDB and blob files in
a temp dir. The race is driven deterministically: the collector's look at
the blob's mtime (``storage.blobs._mtime``) is wrapped so that, right after
it has read an old time, the other party does its whole request, and only
then does the collector go on. Before the fix, the collector unlinked the
blob there: the client had been told it was stored and its message named a
deleted file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.error
import urllib.request

import pytest

from storage import blobs as blobs_module, open_storage
from storage.batch import SEND
from transport import media_auth
from transport.crypto import DeviceKey
from transport.media import MediaListener

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000081", "+15550000082"
GRACE = 60.0
DATA = b"uploaded long ago, never referenced: garbage, until someone wants it again"
NAME = hashlib.sha256(DATA).hexdigest()


class Node:
    def __init__(self, storage, listener, key, device, base):
        self.storage, self.listener, self.key, self.device, self.base = (
            storage, listener, key, device, base)
        self.blobs = listener._actor.blobs

    def http(self, method: str, path: str, data: bytes | None = None) -> int:
        """One blocking request, as a client on another machine would make it."""
        content = hashlib.sha256(data).hexdigest() if data is not None else ""
        headers = media_auth.signed_headers(self.key.sign, method, path, ALICE, self.device,
                                            content=content)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code

    def put_old(self) -> None:
        writer = self.blobs.writer()
        writer.write(DATA)
        assert self.blobs.commit(writer).sha256 == NAME
        old = time.time() - 2 * GRACE
        os.utime(self.blobs.path_for(NAME), (old, old))


@pytest.fixture
async def node(system, tmp_path):
    storage = open_storage("lmdb", str(tmp_path / "lmdb"))
    key = DeviceKey()
    device = await storage.register_device(ALICE, key.public, 0)
    await storage.register_device(BOB, DeviceKey().public, 0)
    system.env.update(mailbox=storage, config={
        "data_dir": str(tmp_path), "media_port": 0, "media_gc_interval": 0,
        "media_gc_grace": GRACE})
    listener = await system.spawn(MediaListener)
    node = Node(storage, listener, key, device, f"http://127.0.0.1:{system.env['media_port']}")
    node.put_old()
    yield node
    await listener.stop()
    storage.close()


def between_check_and_delete(monkeypatch, meanwhile) -> list:
    """Run ``meanwhile()`` once, on the collector's thread, just after it has
    read blob NAME's (old) mtime; returns a list that gets its result."""
    real, results = blobs_module._mtime, []

    def mtime(path):
        seen = real(path)
        if path.name == NAME and not results:
            results.append(meanwhile())
        return seen
    monkeypatch.setattr(blobs_module, "_mtime", mtime)
    return results


async def test_a_head_that_found_the_blob_keeps_it(node, monkeypatch):
    results = between_check_and_delete(monkeypatch, lambda: node.http("HEAD", f"/media/{NAME}"))
    removed = await node.listener._actor.collect()
    assert results == [200]                         # the client was told: skip the upload
    assert NAME not in removed
    assert node.blobs.size(NAME) == len(DATA)
    assert node.http("GET", f"/media/{NAME}") == 200


async def test_an_upload_that_found_the_blob_stored_keeps_it(node, monkeypatch):
    results = between_check_and_delete(monkeypatch, lambda: node.http("POST", "/media", DATA))
    removed = await node.listener._actor.collect()
    assert results and results[0] in (200, 201)     # "stored" either way
    assert NAME not in removed
    assert node.blobs.size(NAME) == len(DATA)


async def test_a_reference_that_came_after_the_keep_list_keeps_it(node, monkeypatch):
    # The collector read which blobs are referenced, then a SEND naming this
    # one was committed; its second look at the references keeps the blob.
    loop = asyncio.get_running_loop()

    async def store() -> list:
        return await node.storage.user_batch(
            ALICE, [(SEND, "m1", BOB, b"ciphertext", (NAME,))], int(time.time() * 1000), 100)

    def send() -> bool:                     # on the collector's thread: the loop is free
        [(ok, _)] = asyncio.run_coroutine_threadsafe(store(), loop).result(timeout=5)
        return ok
    results = between_check_and_delete(monkeypatch, send)
    removed = await node.listener._actor.collect()
    assert results == [True] and node.storage.blob_refs(NAME) == 1
    assert NAME not in removed
    assert node.blobs.size(NAME) == len(DATA)


async def test_a_blob_being_collected_is_absent_and_can_be_stored_again(node):
    # The steps one by one: once condemned, HEAD says 404 (so the client
    # uploads), the upload stores it anew, and settling the condemned copy
    # deletes that copy only.
    blobs, cutoff = node.blobs, time.time() - GRACE
    doomed = blobs.condemn(NAME)
    assert doomed is not None and blobs.size(NAME) is None
    assert node.http("HEAD", f"/media/{NAME}") == 404
    # (off the loop: the upload's nonce is taken on it, storage/nonces.py)
    upload = asyncio.get_running_loop().run_in_executor(None, node.http, "POST", "/media", DATA)
    assert await upload == 201
    assert blobs.settle(doomed, cutoff, lambda name: False) is True
    assert not doomed.exists() and blobs.size(NAME) == len(DATA)
    assert node.http("HEAD", f"/media/{NAME}") == 200


async def test_a_head_that_the_collector_overtakes_says_200_only_for_a_kept_blob(node,
                                                                              monkeypatch):
    # The other way round: the collector condemns the blob in the middle of
    # a HEAD (after HEAD has read its size). A HEAD that still answers 200
    # must have touched it first, so settling puts it back.
    blobs, doomed, real = node.blobs, [], node.blobs.size

    def size(name):
        seen = real(name)
        if name == NAME and not doomed:
            doomed.append(blobs.condemn(NAME))
        return seen
    monkeypatch.setattr(blobs, "size", size)
    status = await asyncio.get_running_loop().run_in_executor(
        None, node.http, "HEAD", f"/media/{NAME}")
    assert doomed and doomed[0] is not None
    deleted = blobs.settle(doomed[0], time.time() - GRACE, lambda name: False)
    assert status in (200, 404)
    if status == 200:
        assert not deleted and real(NAME) == len(DATA)


async def test_blobs_left_condemned_by_a_crash_are_settled_next_time(node):
    # The collector died between its two steps, twice: a blob a message now
    # names goes back in place, a garbage one is deleted.
    blobs = node.blobs
    blobs.condemn(NAME)
    await node.storage.user_batch(ALICE, [(SEND, "m1", BOB, b"ciphertext", (NAME,))],
                                  int(time.time() * 1000), 100)
    writer = blobs.writer()
    writer.write(b"garbage")
    garbage = blobs.commit(writer).sha256
    old = time.time() - 2 * GRACE
    os.utime(blobs.path_for(garbage), (old, old))
    blobs.condemn(garbage)
    assert blobs.size(NAME) is None and blobs.size(garbage) is None
    await node.listener._actor.collect()
    assert blobs.size(NAME) == len(DATA) and blobs.size(garbage) is None
    assert list(blobs.tmp.glob("gc-*")) == []


async def test_a_blob_whose_references_cannot_be_read_is_put_back(node):
    blobs = node.blobs
    doomed = blobs.condemn(NAME)

    def store_down(name):
        raise OSError("the store failed")
    with pytest.raises(OSError):
        blobs.settle(doomed, time.time() - GRACE, store_down)
    assert blobs.size(NAME) == len(DATA) and not doomed.exists()
