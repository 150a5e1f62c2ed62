"""An aiohttp application on a thread and event loop of its own, and the
light actor that owns one.

The worker's event loop carries the chat; HTTP work (a dashboard page, a
100 MiB upload written to disk) must neither wait behind a busy chat loop
nor stall it. So each HTTP server runs on its own thread and loop, sharing
only thread-safe things with the worker: immutable snapshots, LMDB reads.

- ``AppThread(make_app, host, port, name, background=None)``: ``start()``,
  ``stop()``; ``ready`` resolves to the bound port (or the bind error),
  ``done`` when the thread ends. ``background`` is a coroutine function run
  beside the server while it serves.
- ``AppThreadActor``: a light actor that starts its ``AppThread`` in
  ``init`` (the port goes to ``system.env[port_key]``), crashes if the thread
  ends on its own (so its supervisor restarts it), and stops it in
  ``terminate``. Subclasses implement ``make_server()``.

Messages (``AppThreadActor``): ``AppThreadStopped`` (from the thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from actors.actor import Actor

__all__ = ["AppThread", "AppThreadActor", "AppThreadStopped", "AppThreadDied", "START_TIMEOUT"]

log = logging.getLogger("switchboard.http")

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class AppThreadStopped:
    """The server thread ended while the actor still wanted it."""
    reason: str


class AppThreadDied(RuntimeError):
    """An HTTP server thread ended on its own."""


class AppThread:
    def __init__(self, make_app: Callable[[], web.Application], host: str, port: int,
                 name: str, background: Callable[[], Awaitable[Any]] | None = None,
                 reuse_port: bool = False):
        self.make_app, self.host, self.port = make_app, host, port
        self.background, self.reuse_port = background, reuse_port
        self.ready: concurrent.futures.Future = concurrent.futures.Future()
        self.done: concurrent.futures.Future = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self.thread = threading.Thread(target=self._run, name=f"{name}-{port}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop_requested = True
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass

    def _run(self) -> None:
        loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        error: BaseException | None = None
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:           # noqa: BLE001 - reported through the futures
            error = exc
            if not self.ready.done():
                self.ready.set_exception(exc)
            else:
                log.error("HTTP server thread failed", exc_info=exc)
        finally:
            loop.close()
            if not self.ready.done():
                self.ready.set_exception(RuntimeError("stopped before it started"))
            if self.done.done():
                pass                            # a waiter gave up on it (cancelled it)
            elif error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        if self._stop_requested:
            return
        runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=128,
                               reuse_port=self.reuse_port or None)
            await site.start()
            self.ready.set_result(runner.addresses[0][1])
            beside = asyncio.ensure_future(self.background()) if self.background else None
            await self._stopping.wait()
            if beside is not None:
                beside.cancel()
                await asyncio.gather(beside, return_exceptions=True)
        finally:
            await runner.cleanup()


class AppThreadActor(Actor):
    """Owns one ``AppThread``; see the module docstring."""

    port_key = "http_port"           # where the bound port is published in env

    def make_server(self) -> AppThread:
        raise NotImplementedError

    async def init(self) -> None:
        self.stopping = False
        self.server = self.make_server()
        if self.server.port == 0:       # a restart keeps the port first picked
            self.server.port = self.system.env.get(self.port_key, 0)
        self.server.start()
        bound = await asyncio.wait_for(asyncio.wrap_future(self.server.ready), START_TIMEOUT)
        self.system.env[self.port_key] = self.bound_port = bound
        loop, ref = asyncio.get_running_loop(), self.ref
        self.server.done.add_done_callback(lambda f: self._thread_ended(loop, ref, f))

    def _thread_ended(self, loop: asyncio.AbstractEventLoop, ref: Any,
                      fut: concurrent.futures.Future) -> None:
        if self.stopping:
            return
        error = fut.exception()
        reason = f"{type(error).__name__}: {error}" if error else "returned"
        try:
            loop.call_soon_threadsafe(ref.cast, AppThreadStopped(reason))
        except RuntimeError:                   # the worker's loop is closed already
            pass

    def handle_app_thread_stopped(self, msg: AppThreadStopped) -> None:
        raise AppThreadDied(f"{type(self).__name__}: server thread ended: {msg.reason}")

    async def terminate(self, reason: Any) -> None:
        self.stopping = True
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
            try:
                await asyncio.wait_for(asyncio.wrap_future(server.done), 4.0)
            except (asyncio.TimeoutError, Exception) as exc:   # noqa: BLE001 - stopping anyway
                log.warning("%s did not stop cleanly: %r", type(self).__name__, exc)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
