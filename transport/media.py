"""Media over HTTP: upload and download blobs by content hash (aiohttp).

``MediaListener`` is a light actor in the worker's tree; its aiohttp server
runs on a thread of its own (``transport.http_thread``), so a 100 MiB
upload written to disk never stalls the chat loop. Workers share the port
(SO_REUSEPORT) and the blob directory.

Routes (every one needs the device credential: ``transport.media_auth``;
GET and HEAD also take the node credential of a cluster, ``Authorization:
Node <secret>``, for a node fetching a blob uploaded here):

- ``POST /media``: the body is the blob (end-to-end encrypted by the client:
  the server sees ciphertext only). The server hashes what arrives and
  stores it as ``blobs/<sha256>``; a second upload of the same bytes is
  stored once. ``413`` as soon as the body passes ``max_size`` (from the
  Content-Length header before reading anything, else after at most one
  chunk past the cap). The body's SHA-256 is declared in ``X-Content-SHA256``,
  which the credential signs, and checked before the blob is committed
  (``400`` if it does not match), so a captured upload cannot carry other
  bytes; its nonce is taken once per node (``401`` for a replay, on any
  worker, before or after a restart: ``storage.nonces``, one small write to
  the node's LMDB, committed before the body is read; ``503`` if it could
  not be written).
  Answers ``201`` (or ``200`` if it was already there) with
  ``{"sha256": ..., "size": ...}``.
- ``HEAD /media/<sha256>``: ``200`` with its size if stored (the client can
  skip the upload: the forward optimisation), else ``404``.
- ``GET /media/<sha256>``: the bytes; ``Range`` requests get ``206``. A
  blob a message stored here names but that is not here yet is on its way
  from the node it was uploaded to (transport/media_fetch.py): the GET
  waits for it up to ``media_fetch_wait`` seconds (default 10) before 404.

Only names matching 64 lowercase hex digits are routed at all; nothing a
client sends is ever used as a path.

Garbage collection (``CollectBlobs``, every ``media_gc_interval`` seconds,
default 600): a blob is deleted when no stored message refers to it
(``storage.blob_refs``: SENDs name their blobs, the count drops when the
recipient acks) and nothing has touched it for ``media_gc_grace`` seconds
(default one day). The grace covers both ends: a freshly uploaded blob
waiting for its SEND (its file's mtime; a HEAD that finds a blob, or a
second upload of it, touches it again), and a recipient who acked the
message but has not downloaded the file yet (the time its count fell to
0). The file deletions run on a thread, off the chat loop. A blob is taken
out of sight before the second look that decides its deletion
(``BlobStore.collect``), so a HEAD that answered 200 or an upload that
found it stored never leaves a message naming a deleted blob.

The nonce is taken on the worker's event loop (the store is that loop's):
the HTTP thread hands it over with ``run_coroutine_threadsafe`` and waits,
so an upload waits for one turn of that loop (the body is still read and
written on the HTTP thread).

In a cluster, the gateway's listener also owns the ``MediaFetcher``
(transport/media_fetch.py, ``env["media_fetcher"]``) that brings blobs
sent to users homed here from the node they were uploaded to.

Messages: ``CollectBlobs``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from storage.blobs import BlobStore, is_blob_name
from storage.errors import InvalidArgument, StorageError
from transport import media_auth
from transport.crypto import verify
from transport.http_thread import AppThread, AppThreadActor
from transport.media_fetch import fetcher_for

__all__ = ["MediaListener", "MediaApp", "CollectBlobs", "nonce_taker", "MAX_SIZE",
           "DEFAULT_MEDIA_PORT"]

log = logging.getLogger("switchboard.media")

MAX_SIZE = 100 * 1024 * 1024
DEFAULT_MEDIA_PORT = 5280
CHUNK = 256 * 1024
_ROUTE = "/media/{name:[0-9a-f]{64}}"
GC_INTERVAL = 600.0
GC_GRACE = 86_400.0
FETCH_WAIT = 10.0          # seconds a GET waits for a blob being fetched from another node
_POLL = 0.05


@dataclass(frozen=True)
class CollectBlobs:
    """Delete the blobs no message refers to whose grace has passed."""


class MediaListener(AppThreadActor):
    port_key = "media_port"

    def make_server(self) -> AppThread:
        env = self.system.env
        config = env.get("config") or {}
        self.blobs = BlobStore(os.path.join(config.get("data_dir", "data"), "blobs"))
        app = MediaApp(self.blobs, env["mailbox"].get_account,
                       int(config.get("media_max_size", MAX_SIZE)),
                       node_secret=lambda: getattr(env.get("federation"), "secret", ""),
                       refs=env["mailbox"].blob_refs,
                       fetch_wait=float(config.get("media_fetch_wait", FETCH_WAIT)),
                       take_nonce=nonce_taker(env["mailbox"], asyncio.get_running_loop()))
        host = config.get("bind", "127.0.0.1")
        port = int(config.get("media_port", DEFAULT_MEDIA_PORT))
        self.app = app
        self.gc_interval = float(config.get("media_gc_interval", GC_INTERVAL))
        self.gc_grace = float(config.get("media_gc_grace", GC_GRACE))
        return AppThread(app.app, host, port, "media", reuse_port=True)

    async def init(self) -> None:
        await super().init()
        log.info("media on http://%s:%d/media", self.server.host, self.bound_port)
        self.fetcher = None
        federation = self.system.env.get("federation")
        if federation is not None and federation.gateway:   # where shipments are applied
            self.fetcher = fetcher_for(self.system.env["config"], federation.media_of,
                                       lambda: federation.secret)
            self.system.env["media_fetcher"] = self.fetcher
            wanted, federation.blobs_wanted = federation.blobs_wanted, []
            for origin, hashes in wanted:       # applied while no fetcher was running
                self.fetcher.want(origin, hashes)
        if self.gc_interval > 0:
            self.system.send_after(self.gc_interval, self.ref, CollectBlobs())

    async def terminate(self, reason: Any) -> None:
        fetcher = getattr(self, "fetcher", None)
        if fetcher is not None:
            if self.system.env.get("media_fetcher") is fetcher:
                del self.system.env["media_fetcher"]
            await asyncio.get_running_loop().run_in_executor(None, fetcher.stop)
        await super().terminate(reason)

    async def handle_collect_blobs(self, msg: CollectBlobs) -> list[str]:
        try:
            return await self.collect()
        finally:
            if self.gc_interval > 0:
                self.system.send_after(self.gc_interval, self.ref, CollectBlobs())

    async def collect(self, now: float | None = None) -> list[str]:
        """One collection; returns the names deleted."""
        cutoff = (time.time() if now is None else now) - self.gc_grace
        mail, cutoff_ms = self.system.env["mailbox"], int(cutoff * 1000)
        keep = mail.blobs_to_keep(cutoff_ms)
        removed = await asyncio.get_running_loop().run_in_executor(
            None, self.blobs.collect, keep, cutoff, lambda name: mail.blob_kept(name, cutoff_ms))
        await mail.forget_blob_refs(cutoff_ms)
        if removed:
            log.info("collected %d unreferenced blob(s)", len(removed))
        return removed


def nonce_taker(mail: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """``take_nonce`` for a ``MediaApp`` on another thread: the op is
    submitted on ``loop`` (the worker's, whose store ``mail`` is), its
    answer awaited on the caller's loop."""
    async def submit(*args: Any) -> str:
        return await mail.take_nonce(*args)

    async def take(*args: Any) -> str:
        coro = submit(*args)
        try:
            done = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:                    # the worker's loop is closed: stopping
            coro.close()
            raise
        return await asyncio.wrap_future(done)
    return take


class MediaApp:
    """``node_secret()``: the cluster secret ("" outside a cluster);
    ``refs(sha256)``: how many stored messages name a blob;
    ``take_nonce(user, device, nonce, ts_ms, before_ms)``: awaitable,
    ``Storage.take_nonce``'s answer (None: no nonce table, uploads are 503)."""

    def __init__(self, blobs: BlobStore, get_account: Any, max_size: int = MAX_SIZE, *,
                 node_secret: Any = lambda: "", refs: Any = lambda name: 0,
                 fetch_wait: float = FETCH_WAIT, take_nonce: Any = None):
        self.blobs, self.get_account, self.max_size = blobs, get_account, max_size
        self.node_secret, self.refs, self.fetch_wait = node_secret, refs, fetch_wait
        self.take_nonce = take_nonce
        self.refused_after = 0          # body bytes read before the last mid-stream 413

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.authenticate])
        app.router.add_post("/media", self.upload)
        app.router.add_route("HEAD", _ROUTE, self.head)
        app.router.add_get(_ROUTE, self.download, allow_head=False)
        return app

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            return await self.node_request(request, authorization, handler)
        try:
            credential = media_auth.read_headers(request.headers)
        except media_auth.AuthError as error:
            raise web.HTTPUnauthorized(text=str(error))
        now_ms = time.time() * 1000
        if abs(now_ms - credential.ts_ms) > media_auth.MAX_SKEW_MS:
            raise web.HTTPUnauthorized(text="request time too far from the server's")
        try:
            account = self.get_account(credential.user)
        except Exception:                       # a malformed user id: no such account
            account = None
        challenge = credential.challenge(request.method, request.path)
        if account is None or account.device_id != credential.device or not verify(
                account.verify_key, challenge, credential.signature):
            raise web.HTTPUnauthorized(text="bad credential")
        if request.method == "POST":
            if credential.nonce is None:
                raise web.HTTPUnauthorized(text="a version 1 credential cannot upload: sign the "
                                                "body's SHA-256 (switchboard-media-v2)")
            await self.take_once(credential, int(now_ms))
        return await handler(request)

    async def take_once(self, credential: media_auth.Credential, now_ms: int) -> None:
        """Take an upload's nonce for the node, or refuse the request."""
        if self.take_nonce is None:
            raise web.HTTPServiceUnavailable(text="this server keeps no nonce table: no uploads")
        try:
            outcome = await self.take_nonce(credential.user, credential.device, credential.nonce,
                                            credential.ts_ms, now_ms - media_auth.MAX_SKEW_MS)
        except InvalidArgument as error:
            raise web.HTTPBadRequest(text=str(error))
        except (StorageError, RuntimeError) as error:   # CommitFailed, StoreClosed, stopping
            log.warning("upload nonce not taken: %r", error)
            raise web.HTTPServiceUnavailable(text="could not record the request's nonce: try again")
        if outcome == "replayed":
            raise web.HTTPUnauthorized(text="replayed request: this nonce was used")
        if outcome != "fresh":                  # "stale": below the node's sweep
            raise web.HTTPUnauthorized(text="request time too far from the server's")

    async def node_request(self, request: web.Request, authorization: str,
                           handler: Any) -> web.StreamResponse:
        """Another node of the cluster reads a blob (the only thing it may do)."""
        try:
            offered = media_auth.node_secret_of(authorization)
        except media_auth.AuthError as error:
            raise web.HTTPUnauthorized(text=str(error))
        secret = self.node_secret() or ""
        if not secret or not hmac.compare_digest(offered.encode(), secret.encode()):
            raise web.HTTPUnauthorized(text="bad node credential")
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPUnauthorized(text="a node credential only reads blobs")
        return await handler(request)

    async def upload(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_size:
            raise _too_large(self.max_size, request.content_length)
        expected = request.headers.get(media_auth.CONTENT)
        if expected is None:
            raise web.HTTPBadRequest(text="an upload must declare (and sign) X-Content-SHA256")
        if not is_blob_name(expected):
            raise web.HTTPBadRequest(text="X-Content-SHA256 must be 64 lowercase hex digits")
        writer = self.blobs.writer()
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                if writer.size + len(chunk) > self.max_size:
                    self.refused_after = writer.size + len(chunk)     # bytes read in all
                    raise _too_large(self.max_size, self.refused_after)
                writer.write(chunk)
            if request.content_length is not None and writer.size != request.content_length:
                raise web.HTTPBadRequest(text="body shorter than its Content-Length")
            if not hmac.compare_digest(expected, writer.hash.hexdigest()):
                raise web.HTTPBadRequest(text="body does not match X-Content-SHA256")
            blob = self.blobs.commit(writer)
        except BaseException:
            writer.abort()
            raise
        log.info("blob %s (%d bytes) %s", blob.sha256, blob.size,
                 "stored" if blob.created else "already stored")
        return web.json_response({"sha256": blob.sha256, "size": blob.size},
                                 status=201 if blob.created else 200)

    async def head(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Touch first, and only then answer: a blob the collector has taken
        # out of sight (storage/blobs.py) is absent, so a 200 is never
        # followed by its deletion.
        if not self.blobs.touch(name):          # about to be referenced: not garbage yet
            raise web.HTTPNotFound()
        size = self.blobs.size(name)
        if size is None:
            raise web.HTTPNotFound()
        return web.Response(headers={"Content-Length": str(size), "Accept-Ranges": "bytes"})

    async def download(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.blobs.path_for(name)
        if not path.exists() and not await self.arrived(name):
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def arrived(self, name: str) -> bool:
        """Wait (bounded) for a blob a stored message names: this node is
        fetching it from the node it was uploaded to."""
        if self.fetch_wait <= 0 or not self.refs(name):
            return False
        loop = asyncio.get_running_loop()
        until = loop.time() + self.fetch_wait
        while loop.time() < until:
            await asyncio.sleep(_POLL)
            if self.blobs.size(name) is not None:
                return True
        return False


def _too_large(cap: int, size: int) -> web.HTTPRequestEntityTooLarge:
    """413, closing the connection: the rest of the body is never read."""
    error = web.HTTPRequestEntityTooLarge(cap, size, headers={"Connection": "close"})
    error.force_close()
    return error
