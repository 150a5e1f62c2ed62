"""One TCP connection to a Switchboard server (the client's socket half).

``Connection`` is an asyncio protocol. It reads chunks into
``wire.FrameDecoder(Side.SERVER)``, matches each ACK, HELLO_OK or ERROR to
the request with its ``ref`` (a Future, or a callback run as the answer is
decoded, so it keeps its place among pushed frames), and hands pushed
frames (MESSAGE, RECEIPT, PRESENCE, TYPING_EVENT) to ``on_push``. Writes are
gathered and flushed once per event-loop turn, so a burst of SENDs and a
RECEIVED share one ``write``. ``keep_alive`` is the heartbeat: a PING when
the client has been idle for the negotiated interval.

Refs count up from 1 per connection and wrap within 1..2**32-1. An ERROR
with ref 0 is about the connection: it becomes ``error`` and the connection
is closed from this side (the server closes after a fatal one anyway; after
a non-fatal one such as "could not open a session; reconnect" the session
is unusable). A fatal ERROR answering a request fails that request and
closes the connection too, so nothing more is written to it. When the
connection closes every waiting request fails with ``ConnectionLost`` and
``on_lost(self)`` runs once.

It knows nothing of login, outboxes or reconnects: that is ``sdk.Client``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from typing import Callable

from transport import wire
from client.errors import ConnectionLost, RequestTimeout, ServerError

__all__ = ["Connection"]

log = logging.getLogger("switchboard.client")

_U32 = 2**32 - 1
Answered = Callable[[wire.Frame | None, Exception | None], None]
_ANSWERS = (wire.Ack, wire.HelloOk)


class Connection(asyncio.Protocol):
    def __init__(self, on_push: Callable[[wire.Frame], None],
                 on_lost: Callable[["Connection"], None]):
        self.on_push, self.on_lost = on_push, on_lost
        self.decoder = wire.FrameDecoder(wire.Side.SERVER)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future | Answered] = {}
        self.max_frame = wire.MAX_FRAME         # the server's cap, from HELLO_OK
        self.closed = False
        self.error: Exception | None = None     # why it closed, when we know
        self._ref = 0
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.last_sent = self.last_heard = self._loop.time()
        self.lost: asyncio.Future = self._loop.create_future()

    # -- requests ----------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open and not closing (a fatal ERROR closes it at once)."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def request(self, frame: wire.Frame, on_answer: Answered | None = None) -> asyncio.Future | None:
        """Send ``frame`` with a fresh ref. Without ``on_answer``: a Future
        that gets the ACK/HELLO_OK frame, or fails with ServerError /
        ConnectionLost. With it: ``on_answer(frame, None)`` or
        ``on_answer(None, error)`` is called at once when the answer is
        decoded, so it is handled in wire order with pushed frames (a SEND's
        ACK before the RECEIPT that followed it). Raises ConnectionLost if not
        usable, FrameError(TOO_LARGE) over the server's cap."""
        if not self.usable:
            raise ConnectionLost(str(self.error or "connection closed"))
        self._ref = self._ref % _U32 + 1
        data = wire.encode(dataclasses.replace(frame, ref=self._ref), max_frame=self.max_frame)
        future = None
        if on_answer is None:
            on_answer = future = self._loop.create_future()
        self.pending[self._ref] = on_answer
        self._write(data)
        return future

    async def ask(self, frame: wire.Frame, deadline: float) -> wire.Frame:
        """``request`` and wait for the answer until ``deadline`` (loop time):
        the ACK/HELLO_OK frame, or ServerError, ConnectionLost, RequestTimeout."""
        future = self.request(frame)
        try:
            return await asyncio.wait_for(future, max(deadline - self._loop.time(), 0))
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no answer to {type(frame).__name__.upper()} in time") from None

    async def keep_alive(self, interval: float) -> None:
        """Until closed: PING whenever nothing was sent for ``interval``
        seconds, and drop the connection when nothing was heard for
        SILENT_INTERVALS of them (a dead server or a half-open socket)."""
        loop, silent = self._loop, wire.SILENT_INTERVALS * interval
        while self.usable:
            now = loop.time()
            if now - self.last_heard >= silent:
                log.warning("nothing from the server for %g s; dropping the connection", silent)
                self.abort(ConnectionLost(f"server silent for {silent:g} s"))
                return
            if now - self.last_sent >= interval:
                self.request(wire.Ping()).add_done_callback(_quiet)
            wake = min(self.last_sent + interval, self.last_heard + silent)
            await asyncio.sleep(max(wake - loop.time(), 0.01))

    def _write(self, data: bytes) -> None:
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)
        self.last_sent = self._loop.time()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.usable:
            self.transport.write(b"".join(out))

    def close(self, error: Exception | None = None) -> None:
        """Write what is queued, then close."""
        if error is not None and self.error is None:
            self.error = error
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()

    def abort(self, error: Exception | None = None) -> None:
        """Drop the connection now (a dead or misbehaving server)."""
        if error is not None and self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport      # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self._loop.time()
        bad = None
        try:
            frames = self.decoder.feed(data)
        except wire.FrameError as error:
            frames, bad = error.frames, error
        for frame in frames:
            self._dispatch(frame)
        if bad is not None:
            log.warning("server sent a bad frame: %s", bad)
            self.abort(ConnectionLost(f"bad frame from the server: {bad}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.error is None:
            self.error = ConnectionLost(f"connection lost: {exc}" if exc else "connection closed")
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            _answer(waiter, None, ConnectionLost(str(self.error)))
        if not self.lost.done():
            self.lost.set_result(None)
        self.on_lost(self)

    # -- incoming --------------------------------------------------------------------------
    def _dispatch(self, frame: wire.Frame) -> None:
        if isinstance(frame, _ANSWERS):
            _answer(self.pending.pop(frame.ref, None), frame, None)
        elif isinstance(frame, wire.Error):
            self._error(frame)
        else:
            self.on_push(frame)

    def _error(self, frame: wire.Error) -> None:
        error = ServerError(frame.code, frame.message, frame.retry_after, frame.redirect)
        if frame.ref == 0:                  # about the connection: it is over
            log.info("server ends the connection: %s", error)
            self.close(error)
            return
        if error.fatal:                     # the server closes after it; so do we, first,
            self.close(error)               # so nothing more is written to it
        _answer(self.pending.pop(frame.ref, None), None, error)


def _answer(waiter: asyncio.Future | Answered | None, frame: wire.Frame | None,
            error: Exception | None) -> None:
    if waiter is None:
        return                              # an answer nobody waits for (a timed-out ask)
    if not isinstance(waiter, asyncio.Future):
        waiter(frame, error)
    elif not waiter.done():
        if error is None:
            waiter.set_result(frame)
        else:
            waiter.set_exception(error)


def _quiet(future: asyncio.Future) -> None:
    """Done callback of a PING: its answer matters only as a sign of life."""
    if not future.cancelled():
        future.exception()
