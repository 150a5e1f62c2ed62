"""``MediaFetcher``: a node fetches the media blobs its users were sent from
the node they were uploaded to.

A file travels as a blob on the sender's home node (the client uploads it
there) and a message naming its hash. When the message is for a user homed
on another node, it reaches that node through the outbound queue
(storage/outq.py), whose ``Applied.media`` says, per message stored, which
blobs it names and which node it came from. The gateway hands those to
``want``, and the fetcher GETs each blob this node lacks from the origin's
media HTTP with the cluster's node credential (``Authorization: Node
<secret>``, transport/media_auth.py), so the recipient downloads from its
own home as usual. Until then a recipient's GET waits for it a while
(``MediaApp.arrived``).

Off the chat loop: the fetcher runs its own asyncio loop on a thread of its
own, streams each body into a ``BlobStore`` temp file and makes it visible
only if the SHA-256 of what arrived is its name (the same check an upload
gets). A failure (the origin is down, its address or the secret not known
yet, a 401 after the leader drew a new secret, a 404, bytes that do not
match) is retried with a doubling delay, from ``retry_first`` up to
``retry_max`` seconds, for ``give_up_after`` seconds in all (config
``media_fetch_for``, default an hour), then logged and dropped. Fetches in
progress are not stored: a node restarted meanwhile does not resume them
(docs/cluster.md, Known limits).

``where(node)`` and ``secret()`` are read on the fetcher's thread at each
attempt: the federation's current view, so a node that came back at a new
address is found there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Callable, Iterable

import aiohttp

from storage.blobs import BlobStore, is_blob_name
from transport import media_auth
from transport.cluster_status import http_root

__all__ = ["MediaFetcher", "fetcher_for", "FETCH_FOR"]

log = logging.getLogger("switchboard.media_fetch")

FETCH_FOR = 3600.0          # seconds a blob is retried before it is given up
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
PARALLEL = 4                # fetches at a time
MAX_PENDING = 10_000        # blobs being fetched or retried; more are dropped (logged)
MAX_MISSING = 5             # 404s from the origin before a blob is given up (a SEND may
                            # name a hash that was never uploaded: the format is all it checks)
CHUNK = 256 * 1024
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=30.0)


class _Failed(Exception):
    """One attempt failed (retried); ``missing``: the origin answered 404."""

    def __init__(self, text: str, missing: bool = False):
        super().__init__(text)
        self.missing = missing


class MediaFetcher:
    def __init__(self, blobs: BlobStore, where: Callable[[str], tuple[str, int] | None],
                 secret: Callable[[], str], *, max_size: int, give_up_after: float = FETCH_FOR,
                 retry_first: float = RETRY_FIRST, retry_max: float = RETRY_MAX):
        self.blobs, self.where, self.secret, self.max_size = blobs, where, secret, max_size
        self.give_up_after, self.retry_first, self.retry_max = give_up_after, retry_first, retry_max
        self.fetched = self.given_up = 0            # outcomes, for operators and tests
        self.pending: dict[str, asyncio.Task] = {}  # on the fetcher's loop only
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="media-fetch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.result(timeout=10)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop is not None and self._stopping is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)

    def want(self, origin: str, hashes: Iterable[str]) -> None:
        """Fetch from node ``origin`` each of ``hashes`` not stored here.
        Thread-safe; returns at once."""
        names = tuple(h for h in hashes if is_blob_name(h))
        if names and self._ready.done() and not self._stopping.is_set():
            self.loop.call_soon_threadsafe(self._want, origin, names)

    # -- on the fetcher's thread --------------------------------------------------------
    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as error:          # noqa: BLE001 - logged: the thread is over
            log.error("the media fetcher stopped", exc_info=error)
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._gate = asyncio.Semaphore(PARALLEL)
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as self._http:
            self._ready.set_result(None)
            await self._stopping.wait()
            for task in list(self.pending.values()):
                task.cancel()
            await asyncio.gather(*self.pending.values(), return_exceptions=True)

    def _want(self, origin: str, names: tuple[str, ...]) -> None:
        for name in names:
            if name not in self.pending and len(self.pending) >= MAX_PENDING:
                log.error("blob %s from node %s not fetched: %d fetches pending already",
                          name, origin, len(self.pending))
                self.given_up += 1
                continue
            if name not in self.pending and self.blobs.size(name) is None:
                task = self.pending[name] = asyncio.ensure_future(self._fetch(origin, name))
                task.add_done_callback(lambda _, name=name: self.pending.pop(name, None))

    async def _fetch(self, origin: str, name: str) -> None:
        deadline, delay = time.monotonic() + self.give_up_after, self.retry_first
        missing = 0
        while self.blobs.size(name) is None:
            try:
                async with self._gate:
                    await self._get(origin, name)
                self.fetched += 1
                log.info("blob %s fetched from node %s", name, origin)
                return
            except (_Failed, aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                missing += getattr(error, "missing", False)
                if time.monotonic() + delay > deadline or missing >= MAX_MISSING:
                    self.given_up += 1
                    log.error("blob %s: not fetched from node %s in %.0f s, given up: %s",
                              name, origin, self.give_up_after, error)
                    return
                log.warning("blob %s: fetch from node %s failed (%s); again in %.1f s",
                            name, origin, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _get(self, origin: str, name: str) -> None:
        address, secret = self.where(origin), self.secret()
        if address is None:
            raise _Failed(f"node {origin}'s media address is not known")
        if not secret:
            raise _Failed("no cluster secret yet")
        host, port = address
        async with self._http.get(f"{http_root(host, port)}/media/{name}",
                                  headers=media_auth.node_headers(secret)) as response:
            if response.status != 200:
                raise _Failed(f"{response.status} {(await response.text())[:200]}",
                              missing=response.status == 404)
            writer = self.blobs.writer()       # blocking file I/O: this thread's own
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    if writer.size + len(chunk) > self.max_size:
                        raise _Failed(f"larger than the media cap ({self.max_size} bytes)")
                    writer.write(chunk)
                if writer.hash.hexdigest() != name:
                    raise _Failed("the bytes that arrived do not have its hash")
                self.blobs.commit(writer)
            except BaseException:
                writer.abort()
                raise


def fetcher_for(config: dict, where: Callable[[str], tuple[str, int] | None],
                secret: Callable[[], str]) -> MediaFetcher:
    """A started fetcher into the node's blob store (the one its MediaListener
    serves), under its media cap."""
    from transport.media import MAX_SIZE
    fetcher = MediaFetcher(BlobStore(os.path.join(config.get("data_dir", "data"), "blobs")),
                           where, secret, max_size=int(config.get("media_max_size", MAX_SIZE)),
                           give_up_after=float(config.get("media_fetch_for", FETCH_FOR)))
    fetcher.start()
    return fetcher
