"""Media between the nodes of a cluster, on 127.0.0.1: the node credential
(``Authorization: Node <secret>``: GET and HEAD only, compared with the
cluster secret), the ``MediaFetcher`` that brings a blob from the node it
was uploaded to (verified, retried until the origin is known), and a
recipient's GET that waits for a blob on its way. Real ``MediaApp``s served
by ``AppThread``s; the multi-node path end to end is in
tests/cluster/test_node_media.py."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest

from storage.blobs import BlobStore
from transport import media_auth
from transport.http_thread import AppThread
from transport.media import MediaApp
from transport.media_fetch import MediaFetcher

pytestmark = pytest.mark.timeout(30)

SECRET = "c0ffee" * 8


def put(blobs: BlobStore, data: bytes) -> str:
    writer = blobs.writer()
    writer.write(data)
    return blobs.commit(writer).sha256


class Served:
    """A MediaApp on a free port, on its own thread."""

    def __init__(self, root, secret: str = SECRET, refs=lambda name: 0, fetch_wait: float = 0):
        self.blobs = BlobStore(root)
        self.app = MediaApp(self.blobs, lambda user: None, 1 << 20, node_secret=lambda: secret,
                            refs=refs, fetch_wait=fetch_wait)
        self.server = AppThread(self.app.app, "127.0.0.1", 0, "media-test")
        self.server.start()
        self.port = self.server.ready.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop()
        self.server.done.result(timeout=10)


@pytest.fixture
def origin(tmp_path):
    served = Served(tmp_path / "origin")
    yield served
    served.close()


async def status(method: str, url: str, **kwargs) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kwargs) as reply:
            await reply.read()
            return reply.status


async def test_the_node_credential_reads_blobs_and_nothing_else(origin):
    name = put(origin.blobs, b"a photo")
    url = f"{origin.url}/media/{name}"
    node = media_auth.node_headers(SECRET)
    assert await status("GET", url, headers=node) == 200
    assert await status("HEAD", url, headers=node) == 200
    assert await status("GET", url, headers=media_auth.node_headers(SECRET + "0")) == 401
    assert await status("GET", url, headers={"Authorization": "Bearer " + SECRET}) == 401
    assert await status("GET", url, headers={"Authorization": "Node "}) == 401
    assert await status("POST", f"{origin.url}/media", headers=node, data=b"x") == 401
    assert await status("GET", url) == 401                      # no credential at all


async def test_outside_a_cluster_no_node_credential_is_accepted(tmp_path):
    single = Served(tmp_path / "single", secret="")
    try:
        name = put(single.blobs, b"x")
        for offered in ("", SECRET):
            headers = {"Authorization": "Node " + offered}
            assert await status("GET", f"{single.url}/media/{name}", headers=headers) == 401
    finally:
        single.close()
    with pytest.raises(ValueError, match="secret"):
        media_auth.node_headers("")


def fetcher(tmp_path, where, secret=SECRET) -> MediaFetcher:
    f = MediaFetcher(BlobStore(tmp_path / "here"), where, lambda: secret, max_size=1 << 20,
                     give_up_after=10, retry_first=0.05, retry_max=0.2)
    f.start()
    return f


async def until(condition, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_a_blob_is_fetched_verified_and_stored_once(origin, tmp_path):
    # Step 1: a blob on the origin; step 2: the fetcher is asked for it twice.
    data = os.urandom(700_000)                       # several chunks
    name = put(origin.blobs, data)
    f = fetcher(tmp_path, lambda node: ("127.0.0.1", origin.port) if node == "A" else None)
    try:
        f.want("A", [name, name, "not-a-hash"])
        f.want("A", [name])
        # Step 3: it is here, whole, under its hash; one fetch made.
        await until(lambda: f.fetched == 1)             # counted once the blob is stored
        assert f.blobs.path_for(name).read_bytes() == data
        assert hashlib.sha256(data).hexdigest() == name and f.fetched == 1
    finally:
        f.stop()


async def test_a_fetch_is_retried_until_the_origin_is_known(origin, tmp_path):
    name = put(origin.blobs, b"sent while the origin was unreachable")
    known: dict[str, tuple[str, int]] = {}
    f = fetcher(tmp_path, known.get)
    try:
        f.want("A", [name])
        await asyncio.sleep(0.3)                      # a few failed attempts
        assert f.blobs.size(name) is None and name in f.pending
        known["A"] = ("127.0.0.1", origin.port)
        await until(lambda: f.fetched == 1)             # counted once the blob is stored
        assert f.fetched == 1 and f.given_up == 0
    finally:
        f.stop()


async def test_a_wrong_secret_is_refused_and_given_up(origin, tmp_path):
    name = put(origin.blobs, b"private")
    f = MediaFetcher(BlobStore(tmp_path / "here"), lambda node: ("127.0.0.1", origin.port),
                     lambda: "wrong", max_size=1 << 20, give_up_after=0.3, retry_first=0.05,
                     retry_max=0.1)
    f.start()
    try:
        f.want("A", [name])
        await until(lambda: f.given_up == 1)
        assert f.blobs.size(name) is None and f.fetched == 0
    finally:
        f.stop()


async def test_a_blob_the_origin_never_had_is_given_up_after_a_few_404s(origin, tmp_path):
    # A SEND may name any well-formed hash: one never uploaded must not be
    # asked for every 30 s for an hour.
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    f = MediaFetcher(BlobStore(tmp_path / "here"), lambda node: ("127.0.0.1", origin.port),
                     lambda: SECRET, max_size=1 << 20, give_up_after=3600.0,
                     retry_first=0.01, retry_max=0.02)
    f.start()
    try:
        f.want("A", [missing])
        await until(lambda: f.given_up == 1 and missing not in f.pending)   # (its own thread)
        assert f.fetched == 0 and f.blobs.size(missing) is None
    finally:
        f.stop()


async def test_a_get_waits_for_a_blob_a_message_names(tmp_path):
    # A blob a stored message names (refs 1) but not here yet: the GET waits.
    data = b"arriving"
    name = hashlib.sha256(data).hexdigest()
    here = Served(tmp_path / "here", refs=lambda n: 1 if n == name else 0, fetch_wait=5)
    try:
        headers = media_auth.node_headers(SECRET)
        async with aiohttp.ClientSession() as http:
            get = asyncio.ensure_future(http.get(f"{here.url}/media/{name}", headers=headers))
            await asyncio.sleep(0.3)
            assert not get.done()
            put(here.blobs, data)
            async with await get as reply:
                assert reply.status == 200 and await reply.read() == data
        other = "0" * 64                               # no message names it: 404 at once
        assert await status("GET", f"{here.url}/media/{other}", headers=headers) == 404
    finally:
        here.close()


def test_a_collector_skips_what_another_worker_collected_since_its_listing(tmp_path):
    """Every worker collects the one blob directory: a blob (or abandoned
    upload) in this collector's listing may be gone by the time it looks
    at it. It is skipped; the collector (the MediaListener) does not crash."""
    import os
    import time
    mine, theirs = BlobStore(tmp_path), BlobStore(tmp_path)
    old = time.time() - 10_000
    for i in range(3):
        name = put(mine, b"blob %d" % i)
        os.utime(mine.path_for(name), (old, old))
    listed = list(mine.names())
    assert sorted(theirs.collect(set(), time.time())) == sorted(listed)
    mine.names = lambda: iter(listed)           # the listing made before the other collector ran
    assert mine.collect(set(), time.time()) == []
