"""Media over HTTP, against a real MediaListener on 127.0.0.1: content-hash
dedup, the size cap and 413, traversal attempts, credentials (an upload's
signs its body's hash and is taken once: the node-wide check across worker
processes is tests/transport/test_media_workers.py), ranges."""

from __future__ import annotations

import base64
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

    def headers(self, method: str, path: str, content: str = "", **override) -> dict:
        headers = media_auth.signed_headers(self.key.sign, method, path, ALICE, self.device,
                                            content=content)
        headers.update(override)
        return headers

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs):
        """Signed headers unless given; an upload of bytes signs their hash."""
        if headers is None:
            data = kwargs.get("data")
            content = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else ""
            headers = self.headers(method, path, content)
        return self.http.request(method, self.base + path, headers=headers, **kwargs)

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
    headers = media.headers("POST", "/media", "0" * 64)      # never reached: 413 first
    try:
        async with media.request("POST", "/media", headers, data=body()) as reply:
            assert reply.status == 413
    except aiohttp.ClientError:
        pass                        # the server may close while the client still writes
    assert 0 < media.app.refused_after <= CAP + CHUNK   # read at most one chunk past the cap
    assert media.stored() == [] and list((media.root / "tmp").iterdir()) == []


async def test_mismatched_declared_hash_is_refused(media):
    headers = media.headers("POST", "/media", "0" * 64)
    async with media.request("POST", "/media", headers=headers, data=b"abc") as reply:
        assert reply.status == 400 and "does not match" in await reply.text()
    assert media.stored() == []


async def test_a_captured_upload_cannot_carry_other_bytes(media):
    # The upload's signature covers the body's hash: replaying its headers
    # with other bytes is refused whether the hash header is kept (400: the
    # body does not match) or dropped or changed (401: the signature breaks).
    mine, theirs = b"alice's ciphertext", b"someone else's bytes"
    captured = media.headers("POST", "/media", hashlib.sha256(mine).hexdigest())
    async with media.request("POST", "/media", dict(captured), data=theirs) as kept:
        assert kept.status == 400 and "does not match" in await kept.text()
    for forged in ({k: v for k, v in captured.items() if k != media_auth.CONTENT},
                   {**captured, media_auth.CONTENT: hashlib.sha256(theirs).hexdigest()}):
        forged[media_auth.NONCE] = os.urandom(16).hex()   # not refused as a mere replay
        async with media.request("POST", "/media", forged, data=theirs) as reply:
            assert reply.status == 401 and await reply.text() == "bad credential"
    unsigned = media.headers("POST", "/media")                # a credential with no hash
    async with media.request("POST", "/media", unsigned, data=theirs) as reply:
        assert reply.status == 400 and "X-Content-SHA256" in await reply.text()
    assert media.stored() == []


async def test_an_upload_is_taken_once(media):
    data = b"sent once"
    headers = media.headers("POST", "/media", hashlib.sha256(data).hexdigest())
    async with media.request("POST", "/media", headers, data=data) as first:
        assert first.status == 201
    async with media.request("POST", "/media", headers, data=data) as replayed:
        assert replayed.status == 401 and "replayed" in await replayed.text()
    async with media.request("POST", "/media", data=data) as fresh:     # a new nonce
        assert fresh.status == 200


async def test_version_1_credentials_still_read_but_cannot_upload(media):
    # Clients from before the body was signed: GET and HEAD work as they did,
    # an upload is refused with a message saying what to do.
    def v1(method: str, path: str) -> dict:
        ts = int(time.time() * 1000)
        signature = media.key.sign(media_auth.media_challenge_v1(method, path, ALICE,
                                                                 media.device, ts))
        return {media_auth.USER: ALICE, media_auth.DEVICE: str(media.device),
                media_auth.TIME: str(ts), media_auth.SIGNATURE: base64.b64encode(signature).decode()}
    data = b"uploaded by a current client"
    async with media.request("POST", "/media", data=data) as up:
        digest = (await up.json())["sha256"]
    async with media.request("GET", f"/media/{digest}", v1("GET", f"/media/{digest}")) as get:
        assert get.status == 200 and await get.read() == data
    async with media.request("HEAD", f"/media/{digest}", v1("HEAD", f"/media/{digest}")) as head:
        assert head.status == 200
    headers = {**v1("POST", "/media"), media_auth.CONTENT: hashlib.sha256(b"new").hexdigest()}
    async with media.request("POST", "/media", headers, data=b"new") as old:
        assert old.status == 401 and "switchboard-media-v2" in await old.text()
    assert media.stored() == [digest]


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


async def test_an_upload_whose_nonce_cannot_be_written_is_refused_503(media, system,
                                                                       monkeypatch):
    # The nonce is taken (committed) before the body is read: when the commit
    # fails, the upload is refused whole, nothing stored, the server up.
    def failing_commit(undo):
        raise OSError("disk on fire")
    store = system.env["mailbox"].store
    real_commit = store._commit
    monkeypatch.setattr(store, "_commit", failing_commit)
    data = b"not now"
    async with media.request("POST", "/media", data=data) as reply:
        assert reply.status == 503 and "try again" in await reply.text()
    assert media.stored() == []
    monkeypatch.setattr(store, "_commit", real_commit)     # the disk is back: a new nonce
    async with media.request("POST", "/media", data=data) as again:
        assert again.status == 201
