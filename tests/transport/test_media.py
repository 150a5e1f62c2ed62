"""Media over HTTP, against a real MediaListener on 127.0.0.1: content-hash
dedup, the size cap and 413, traversal attempts, credentials, ranges."""

from __future__ import annotations

import hashlib
import os
import time

import aiohttp
import pytest

from storage import open_storage
from transport import media_auth
from transport.crypto import DeviceKey
from transport.media import CHUNK, MediaListener

pytestmark = pytest.mark.timeout(30)

ALICE = "+15550000061"
CAP = 1024 * 1024          # 1 MiB in these tests


@pytest.fixture
async def media(system, tmp_path):
    # Step 1: a memory store with alice's device, and the listener on a free port.
    storage = open_storage("memory")
    key = DeviceKey()
    device = await storage.register_device(ALICE, key.public, 0)
    system.env.update(mailbox=storage, config={
        "data_dir": str(tmp_path), "media_port": 0, "media_max_size": CAP})
    listener = await system.spawn(MediaListener)
    base = f"http://127.0.0.1:{system.env['media_port']}"
    async with aiohttp.ClientSession() as http:
        yield Media(http, base, key, device, tmp_path / "blobs", listener._actor.app)
    await listener.stop()
    storage.close()


class Media:
    def __init__(self, http, base, key, device, root, app):
        self.http, self.base, self.key, self.device, self.root = http, base, key, device, root
        self.app = app

    def headers(self, method: str, path: str, **override) -> dict:
        headers = media_auth.signed_headers(self.key.sign, method, path, ALICE, self.device)
        headers.update(override)
        return headers

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs):
        return self.http.request(method, self.base + path,
                                 headers=self.headers(method, path) if headers is None else headers,
                                 **kwargs)

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("??/??/*"))


async def test_upload_is_named_by_its_hash_and_stored_once(media):
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    async with media.request("POST", "/media", data=data) as first:
        assert first.status == 201 and await first.json() == {"sha256": digest, "size": len(data)}
    async with media.request("POST", "/media", data=data) as second:
        assert second.status == 200 and (await second.json())["sha256"] == digest
    assert media.stored() == [digest]


async def test_head_tells_whether_to_skip_the_upload(media):
    data = b"forward me"
    digest = hashlib.sha256(data).hexdigest()
    async with media.request("HEAD", f"/media/{digest}") as missing:
        assert missing.status == 404
    async with media.request("POST", "/media", data=data) as up:
        assert up.status == 201
    async with media.request("HEAD", f"/media/{digest}") as there:
        assert there.status == 200 and there.headers["Content-Length"] == str(len(data))


async def test_download_whole_and_by_range(media):
    data = os.urandom(200_000)
    async with media.request("POST", "/media", data=data) as up:
        digest = (await up.json())["sha256"]
    async with media.request("GET", f"/media/{digest}") as whole:
        assert whole.status == 200 and await whole.read() == data
    headers = {**media.headers("GET", f"/media/{digest}"), "Range": "bytes=1000-1999"}
    async with media.request("GET", f"/media/{digest}", headers=headers) as part:
        assert part.status == 206 and await part.read() == data[1000:2000]


async def test_cap_at_the_limit_and_one_past(media):
    async with media.request("POST", "/media", data=b"x" * CAP) as at:
        assert at.status == 201
    async with media.request("POST", "/media", data=b"y" * (CAP + 1)) as past:
        assert past.status == 413
    assert len(media.stored()) == 1


async def test_413_comes_before_the_body_when_streamed(media):
    # No Content-Length (chunked): the server stops at the first chunk past the
    # cap, long before the 64 MiB the client offers; nothing is kept.
    async def body():
        chunk = b"z" * 65536
        for _ in range(1024):
            yield chunk
    try:
        async with media.request("POST", "/media", data=body()) as reply:
            assert reply.status == 413
    except aiohttp.ClientError:
        pass                        # the server may close while the client still writes
    assert 0 < media.app.refused_after <= CAP + CHUNK   # read at most one chunk past the cap
    assert media.stored() == [] and list((media.root / "tmp").iterdir()) == []


async def test_mismatched_declared_hash_is_refused(media):
    headers = {**media.headers("POST", "/media"), "X-Content-SHA256": "0" * 64}
    async with media.request("POST", "/media", headers=headers, data=b"abc") as reply:
        assert reply.status == 400
    assert media.stored() == []


@pytest.mark.parametrize("path", [
    "/media/../../etc/passwd", "/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/media/" + "A" * 64,
    "/media/" + "a" * 63, "/media/" + "a" * 65, "/media/" + "a" * 64 + "/x",
])
async def test_traversal_and_bad_names_never_reach_the_filesystem(media, path):
    async with media.request("GET", path) as reply:
        assert reply.status in (401, 404)
        assert b"root:" not in await reply.read()


async def test_missing_wrong_and_stale_credentials(media):
    path = "/media/" + "a" * 64
    async with media.http.get(media.base + path) as none:
        assert none.status == 401
    forged = media_auth.signed_headers(DeviceKey().sign, "GET", path, ALICE, media.device)
    async with media.request("GET", path, headers=forged) as wrong:
        assert wrong.status == 401
    stale = media_auth.signed_headers(media.key.sign, "GET", path, ALICE, media.device,
                                      ts_ms=int(time.time() * 1000) - 10 * 60_000)
    async with media.request("GET", path, headers=stale) as old:
        assert old.status == 401
    other_path = media_auth.signed_headers(media.key.sign, "GET", "/media/" + "b" * 64, ALICE,
                                           media.device)
    async with media.request("GET", path, headers=other_path) as replayed:
        assert replayed.status == 401
    revoked = media_auth.signed_headers(media.key.sign, "GET", path, ALICE, media.device + 1)
    async with media.request("GET", path, headers=revoked) as unknown_device:
        assert unknown_device.status == 401
