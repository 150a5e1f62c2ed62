"""``Link``: the client's connection lifecycle (the base of ``sdk.Client``).

Purpose: keep one connection to the server, logged in, for as long as the
client is open, and make requests over it.

- ``_establish``: TCP connect, HELLO (negotiated heartbeat, nonce,
  max_frame), and LOGIN again if credentials are known; only then does the
  connection become current. ``Connection.keep_alive`` then PINGs it.
- ``_login``: LOGIN on the current connection, signing
  ``wire.login_challenge`` with the device key; the credentials are kept for
  every reconnect.
- Requests: ``_before_login`` (REGISTER, CONFIRM) on the current connection;
  ``_call`` (everything after login) waits for the login, and sends again
  after a reconnect or an ERROR INTERNAL ("session restarted; resend"), all
  within ``request_timeout``.
- ``_lost`` / ``_reconnect``: a dropped connection is replaced after a
  jittered exponential backoff (``Backoff``), unless the client is closing
  or the server ended the session for good (``FINAL``: SESSION_REPLACED,
  LOGIN_FAILED on re-login, UNSUPPORTED_VERSION).
- ``close``: BYE, close, stop every task.
- Homes (a cluster): a node that is not the user's home answers REGISTER,
  CONFIRM or LOGIN with ERROR WRONG_NODE carrying the home's address, and
  closes. ``_lost`` (or ``_reconnect``, for a re-login) follows it: the
  address becomes ``home``, the target of every later connect, and the
  connection there is made at once; the step that was refused waits for it
  and is made again there. ``next_node`` decides, a pure function: at most
  ``MAX_REDIRECTS`` in a row (reset by any step that succeeds), then the
  client is over with a ServerError saying so. An unreachable home is
  retried with the backoff like any drop (its users are unavailable until
  it is back: the design); a WRONG_NODE without an address is an ordinary
  error.

Hooks for the subclass: ``_on_push(frame)`` (pushed frames),
``_greeted(hello_ok)`` (the HELLO_OK of a new connection to ``home``),
``_went_online(conn)`` (logged in on ``conn``), ``_went_offline()``,
``_emit(event)`` (Disconnected / Reconnected), ``_settle(timeout)`` (before
BYE) and ``_over(reason)`` (the client is finished).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from transport import wire
from transport.crypto import DeviceKey
from client import events as ev
from client.backoff import Backoff
from client.connection import Connection
from client.errors import ClientClosed, ConnectionLost, RequestTimeout, ServerError

__all__ = ["Link", "FINAL", "MAX_REDIRECTS", "checked", "next_node"]

log = logging.getLogger("switchboard.client")

E = wire.ErrorCode
FINAL = frozenset({E.SESSION_REPLACED, E.LOGIN_FAILED, E.UNSUPPORTED_VERSION})
MAX_REDIRECTS = 3               # WRONG_NODE redirects followed in a row, at most


def next_node(error: BaseException | None, followed: int) -> tuple[str, int] | None:
    """Where ``error`` (a refused step's, or why a connection closed) sends
    the client: the (host, port) of a WRONG_NODE that carries one, None for
    anything else. ``followed`` redirects were followed in a row already;
    one more than MAX_REDIRECTS raises a ServerError WRONG_NODE saying so."""
    if not isinstance(error, ServerError) or error.code is not E.WRONG_NODE or not error.redirect:
        return None
    host, port = error.redirect
    if followed >= MAX_REDIRECTS:
        raise ServerError(E.WRONG_NODE, f"sent to another node {followed + 1} times in a row "
                          f"(last to {host}:{port}); the nodes disagree on this user's home")
    return host, port


def checked(frame: wire.Frame) -> wire.Frame:
    """The frame, if valid on the wire; else ValueError saying which field."""
    try:
        return wire.validate(frame)
    except wire.FrameError as error:
        raise ValueError(f"invalid {error.message}") from None


class Link:
    def __init__(self, host: str, port: int, hello: wire.Hello, *, request_timeout: float,
                 connect_timeout: float, reconnect: bool, backoff: Backoff):
        self.host, self.port = host, port
        self.request_timeout, self.connect_timeout = request_timeout, connect_timeout
        self.reconnect, self.backoff = reconnect, backoff
        self._hello = checked(hello)
        # from the server
        self.heartbeat: float = hello.heartbeat     # negotiated in HELLO_OK
        self.max_frame: int = wire.MAX_FRAME
        self.nonce: bytes = b""
        self.last_seen: int | None = None           # this user's previous last seen, from LOGIN
        # credentials, once logged in
        self.user: str | None = None
        self.device_id: int | None = None
        self._key: DeviceKey | None = None
        # the connection
        self._conn: Connection | None = None
        self._connected = asyncio.Event()           # HELLO done on self._conn
        self._online = asyncio.Event()              # logged in on self._conn
        self._closing = False                       # no more reconnects
        self._closed = asyncio.Event()              # set once the client is over
        self.closed_reason: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()
        self._reconnector: asyncio.Task | None = None
        self._redirects = 0                         # WRONG_NODEs followed since a step succeeded

    @property
    def home(self) -> tuple[str, int]:
        """The node this client connects to: the one given, until a
        WRONG_NODE names the user's home node."""
        return self.host, self.port

    @property
    def connected(self) -> bool:
        """Logged in on a live connection right now."""
        return self._online.is_set()

    @property
    def closed(self) -> bool:
        return self._closing

    # -- hooks --------------------------------------------------------------------------------
    def _on_push(self, frame: wire.Frame) -> None: ...
    def _greeted(self, ok: wire.HelloOk) -> None: ...
    def _went_online(self, conn: Connection) -> None: ...
    def _went_offline(self) -> None: ...
    def _emit(self, event: Any) -> None: ...
    async def _settle(self, timeout: float) -> None: ...
    def _over(self, reason: BaseException | None) -> None: ...

    # -- requests ---------------------------------------------------------------------------------
    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.request_timeout

    def _check_open(self) -> None:
        if self._closing:
            raise ClientClosed(self.closed_reason)

    async def _wait(self, state: asyncio.Event, deadline: float) -> Connection:
        """The current connection once ``state`` is set; RequestTimeout at ``deadline``.
        One that is closing, before ``_lost`` has heard of it (that comes at
        a later turn of the loop), is waited out: returned, its request would
        fail at once and be made again here without ever yielding."""
        loop = asyncio.get_running_loop()
        while True:
            self._check_open()
            conn = self._conn
            current = state.is_set() and conn is not None
            if current and conn.usable:
                return conn
            if loop.time() >= deadline:
                raise RequestTimeout("not connected to the server")
            if current:                         # closing: ``_lost`` runs at a later turn
                await asyncio.sleep(0.001)
                continue
            waits = {asyncio.ensure_future(state.wait()), asyncio.ensure_future(self._closed.wait())}
            try:
                await asyncio.wait(waits, timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _before_login(self, frame: wire.Frame) -> wire.Ack:
        if self.user is not None:
            raise RuntimeError(f"{type(frame).__name__.upper()} is only allowed before login")
        deadline = self._deadline()
        while True:
            conn = await self._wait(self._connected, deadline)
            try:
                ack = await conn.ask(frame, deadline)
            except ServerError as error:
                if next_node(error, 0) is None:
                    raise
                await self._redirected(conn, deadline)
                continue
            self._redirects = 0
            return ack

    async def _redirected(self, conn: Connection, deadline: float) -> None:
        """A step on ``conn`` was answered WRONG_NODE: wait until ``_lost``
        has followed it (the caller then makes the step on the next
        connection), or raise the ServerError with which it gave up."""
        loop = asyncio.get_running_loop()
        await asyncio.wait({conn.lost}, timeout=max(deadline - loop.time(), 0))
        if self._closing and isinstance(self.closed_reason, ServerError):
            raise self.closed_reason

    async def _call(self, frame: wire.Frame) -> Any:
        """A request that needs login: waits for the connection, sends again
        after a reconnect or an INTERNAL answer, gives up at the request
        timeout. Returns the ACK's value."""
        deadline, delay = self._deadline(), 0.02
        while True:
            conn = await self._wait(self._online, deadline)
            try:
                return (await conn.ask(frame, deadline)).value
            except ConnectionLost:
                continue
            except ServerError as error:
                remaining = deadline - asyncio.get_running_loop().time()
                if error.code is not E.INTERNAL or remaining < delay:
                    raise
                await asyncio.sleep(delay)
                delay *= 2

    # -- login ----------------------------------------------------------------------------------------
    async def _login(self, user: str, device: int, key: DeviceKey) -> dict:
        checked(wire.Login(user, device, bytes(64)))
        if self.user is not None:
            raise RuntimeError(f"already logged in as {self.user}")
        deadline = self._deadline()
        while True:                     # a connection lost meanwhile: again on the next one
            conn = await self._wait(self._connected, deadline)
            try:
                info = await self._login_on(conn, user, device, key)
            except ConnectionLost:
                continue
            except ServerError as error:
                if next_node(error, 0) is None:
                    raise
                await self._redirected(conn, deadline)
                continue
            if conn is self._conn and conn.usable:
                break
        self._redirects = 0
        self.user, self.device_id, self._key = user, device, key
        self._online.set()
        self._went_online(conn)
        return info

    async def _login_on(self, conn: Connection, user: str, device: int, key: DeviceKey) -> dict:
        signature = key.sign(wire.login_challenge(self.nonce, user, device))
        ack = await conn.ask(wire.Login(user, device, signature), self._deadline())
        info = ack.value if isinstance(ack.value, dict) else {}   # a nil ACK is accepted
        self.last_seen = info.get("last_seen")
        return info

    # -- connecting and reconnecting --------------------------------------------------------------
    async def _establish(self) -> None:
        """Connect, HELLO, and LOGIN if there are credentials; then make the
        connection current. Raises if any step fails (the connection is closed)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        _, conn = await asyncio.wait_for(loop.create_connection(
            lambda: Connection(self._on_push, self._lost), self.host, self.port), self.connect_timeout)
        try:
            ok = await conn.ask(self._hello, deadline)
            conn.max_frame, self.max_frame = ok.max_frame, min(ok.max_frame, wire.MAX_FRAME)
            self.heartbeat, self.nonce = ok.heartbeat, ok.nonce
            self._greeted(ok)
            if self.user is not None:
                await self._login_on(conn, self.user, self.device_id, self._key)
                self._redirects = 0
            if not conn.usable or self._closing:
                raise ConnectionLost(str(conn.error))
        except BaseException:
            conn.abort()
            raise
        self._conn = conn
        self._connected.set()
        self._spawn(conn.keep_alive(self.heartbeat))
        if self.user is not None:
            self._online.set()
            self._went_online(conn)

    def _lost(self, conn: Connection) -> None:
        if conn is not self._conn:
            return                      # a connection that never became current
        self._conn = None
        self._connected.clear()
        self._online.clear()
        self._went_offline()
        reason = conn.error
        if self._closing:
            return
        try:
            redirected = self._follow(reason)
        except ServerError as error:
            self._finish(error, disconnected=True)
            return
        if redirected:                  # a step goes to the home node, reconnect or not
            if self.user is not None:
                self._emit(ev.Disconnected(str(reason), reconnecting=True))
            self._reconnector = asyncio.ensure_future(
                self._reconnect(at_once=True, announce=self.user is not None))
            return
        if not self.reconnect or isinstance(reason, ServerError) and reason.code in FINAL:
            self._finish(reason, disconnected=True)
            return
        log.info("disconnected (%s); reconnecting", reason)
        self._emit(ev.Disconnected(str(reason), reconnecting=True))
        self._reconnector = asyncio.ensure_future(self._reconnect())

    def _follow(self, error: BaseException | None) -> bool:
        """Make a WRONG_NODE's address the home; False if ``error`` is not
        one to follow; ServerError past MAX_REDIRECTS in a row."""
        address = next_node(error, self._redirects)
        if address is None:
            return False
        self._redirects += 1
        log.info("%s is not this user's node; going to %s:%d", self.home, *address)
        self.host, self.port = address
        return True

    async def _reconnect(self, at_once: bool = False, announce: bool = True) -> None:
        """Connect again (to ``home``) until it works: after a backoff,
        except ``at_once`` (a redirect) and right after a WRONG_NODE."""
        attempt, wait = 0, not at_once
        while not self._closing:
            if wait:
                await asyncio.sleep(self.backoff.delay(attempt))
            attempt, wait = attempt + 1, True
            try:
                await self._establish()
            except ServerError as error:
                try:
                    if self._follow(error):
                        wait = False
                        continue
                except ServerError as gave_up:
                    self._finish(gave_up, disconnected=True)
                    return
                if error.code in FINAL:
                    self._finish(error, disconnected=True)
                    return
                log.info("reconnect attempt %d refused: %s", attempt, error)
            except (OSError, asyncio.TimeoutError, ConnectionLost, RequestTimeout) as error:
                log.debug("reconnect attempt %d failed: %r", attempt, error)
            except ClientClosed:
                return
            else:
                log.info("reconnected after %d attempt(s)", attempt)
                if announce:
                    self._emit(ev.Reconnected(attempt))
                return

    def _spawn(self, coro: Any) -> None:
        """A background task, cancelled by ``close``; its failure is only logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background request failed: %s", task.exception())

    # -- closing ----------------------------------------------------------------------------------
    async def close(self, timeout: float = 2.0) -> None:
        """Acknowledge what the app has taken, say BYE, close. The outbox is
        kept (in its file, if it has one); waiting ``send`` calls fail."""
        if self._closed.is_set():
            return
        self._closing = True
        conn = self._conn
        if conn is not None and conn.usable:
            try:
                if self._online.is_set():
                    await self._settle(timeout)
                await asyncio.wait_for(conn.request(wire.Bye()), timeout)
            except (ConnectionLost, ServerError, asyncio.TimeoutError):
                pass
            conn.close()
            await asyncio.wait({conn.lost}, timeout=timeout)
            conn.abort()
        self._finish(None)
        current = asyncio.current_task()
        tasks = [t for t in (*self._tasks, self._reconnector) if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finish(self, reason: BaseException | None, disconnected: bool = False) -> None:
        """The client is over: no reconnect, ``send`` waiters fail, events end
        (after ``Disconnected(reconnecting=False)`` if the server ended it)."""
        if self._closed.is_set():
            return
        if disconnected:
            self._emit(ev.Disconnected(str(reason), reconnecting=False))
        self._closing = True
        self.closed_reason = reason
        if self._reconnector is not None and self._reconnector is not asyncio.current_task():
            self._reconnector.cancel()
        self._over(reason)
        self._closed.set()
