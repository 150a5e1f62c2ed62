"""The client suite's test kit: a small scripted Switchboard server.

``FakeServer`` listens on 127.0.0.1 (port 0) and speaks the real wire
protocol (``transport.wire``, decoding with ``Side.CLIENT``). By default it
behaves like a version 1 server reduced to the essentials: accounts with
Ed25519 device keys, per-user inboxes with seqs, SEND deduplicated by
(sender, id), RECEIVED -> delivered receipt, READ -> read receipt,
presence, typing, PING, BYE. Every frame it receives is recorded.

Tests script it by replacing the handler of a frame type::

    server.on(wire.Send, lambda conn, frame: None)       # never answer SENDs
    server.on(wire.Send, server.default)                  # back to normal

and by dropping connections (``server.drop()``) or stopping and restarting
the listener on the same port (``stop_listening`` / ``listen``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from typing import Any, Callable

from transport import wire
from transport.code_sender import FileCodeSender
from transport.crypto import DeviceKey, verify
from transport.e2e import KeyBundle
from client import Backoff, Client

FAST = dict(backoff=Backoff(initial=0.02, maximum=0.1), request_timeout=3.0, connect_timeout=2.0)

E = wire.ErrorCode
CODE = "123456"


def now_ms() -> int:
    return int(time.time() * 1000)


class FakeConn(asyncio.Protocol):
    """One client connection of the fake server."""

    def __init__(self, server: "FakeServer"):
        self.server = server
        self.decoder = wire.FrameDecoder(wire.Side.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.user: str | None = None
        self.nonce = os.urandom(32)
        self.heartbeat = 30.0
        self.frames: list[wire.Frame] = []
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.server.conns.append(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except wire.FrameError as error:
            for frame in error.frames:
                self.server.dispatch(self, frame)
            self.fail(error.ref, error.code, error.message)
            return
        for frame in frames:
            self.server.dispatch(self, frame)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.server.gone(self)

    def send(self, frame: wire.Frame) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.encode(frame))

    def ack(self, frame: wire.Frame, value: Any = None) -> None:
        self.send(wire.Ack(value, ref=frame.ref))

    def error(self, frame: wire.Frame, code: E, message: str = "") -> None:
        self.send(wire.Error(code, message, ref=frame.ref))

    def fail(self, ref: int, code: E, message: str = "") -> None:
        self.send(wire.Error(code, message, ref=ref))
        if code.fatal:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class FakeServer:
    def __init__(self, data_dir: str | None = None, *, heartbeat_min: float = 1.0,
                 max_frame: int = wire.MAX_FRAME):
        self.data_dir, self.heartbeat_min, self.max_frame = data_dir, heartbeat_min, max_frame
        self.codes = FileCodeSender(data_dir) if data_dir else None
        self.accounts: dict[str, tuple[int, bytes]] = {}       # phone -> (device, verify key)
        self.keys: dict[str, tuple[KeyBundle, dict]] = {}        # phone -> (signed part, one-time prekeys)
        self.pending_codes: dict[str, str] = {}
        self.inboxes: dict[str, OrderedDict[int, wire.Frame]] = {}
        self.next_seq: dict[str, int] = {}
        self.stored: dict[tuple[str, str], int] = {}            # (sender, id) -> ts
        self.online: dict[str, FakeConn] = {}
        self.last_seen: dict[str, int] = {}
        self.watchers: dict[str, set[FakeConn]] = {}
        self.conns: list[FakeConn] = []
        self.log: list[tuple[FakeConn, wire.Frame]] = []
        self.handlers: dict[type, Callable[[FakeConn, wire.Frame], None]] = {}
        self.changed = asyncio.Event()
        self.port = 0
        self.listener: asyncio.Server | None = None

    # -- control -----------------------------------------------------------------------
    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(lambda: FakeConn(self), "127.0.0.1", self.port)
        self.port = self.listener.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.close()
            await self.listener.wait_closed()
            self.listener = None

    async def stop(self) -> None:
        await self.stop_listening()
        self.drop()
        await asyncio.sleep(0)

    def drop(self) -> None:
        """Abort every open connection (as a crash or a network cut would)."""
        for conn in self.conns:
            conn.abort()

    def on(self, frame_type: type, handler: Callable[[FakeConn, wire.Frame], None]) -> None:
        self.handlers[frame_type] = handler

    def add_account(self, phone: str) -> tuple[int, DeviceKey]:
        key = DeviceKey()
        device = len(self.accounts) + 1
        self.accounts[phone] = (device, key.public)
        return device, key

    def frames(self, frame_type: type, conn: FakeConn | None = None) -> list[wire.Frame]:
        return [f for c, f in self.log if type(f) is frame_type and (conn is None or c is conn)]

    async def wait(self, predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
        """Wait until ``predicate()`` is true (re-checked whenever a frame arrives)."""
        async def until():
            while not (result := predicate()):
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
            return result
        return await asyncio.wait_for(until(), timeout)

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch(self, conn: FakeConn, frame: wire.Frame) -> None:
        conn.frames.append(frame)
        self.log.append((conn, frame))
        self.changed.set()
        self.handlers.get(type(frame), self.default)(conn, frame)

    def default(self, conn: FakeConn, frame: wire.Frame) -> None:
        getattr(self, f"on_{type(frame).__name__.lower()}")(conn, frame)

    def gone(self, conn: FakeConn) -> None:
        self.changed.set()
        for watchers in self.watchers.values():
            watchers.discard(conn)
        if conn.user is not None and self.online.get(conn.user) is conn:
            del self.online[conn.user]
            self.last_seen[conn.user] = now_ms()
            self.tell_watchers(conn.user)

    # -- default behaviour ------------------------------------------------------------------------
    def on_hello(self, conn, f):
        conn.heartbeat = min(max(f.heartbeat, self.heartbeat_min), 300.0)
        conn.send(wire.HelloOk(1, conn.heartbeat, conn.nonce, self.max_frame, ref=f.ref))

    def on_register(self, conn, f):
        self.pending_codes[f.phone] = CODE
        if self.codes is not None:
            self.codes.send(f.phone, CODE)
        conn.ack(f)

    def on_confirm(self, conn, f):
        if self.pending_codes.get(f.phone) != f.code:
            return conn.error(f, E.BAD_CODE, "wrong code")
        device = len(self.accounts) + 1
        self.accounts[f.phone] = (device, f.device_key)
        conn.ack(f, device)

    def on_login(self, conn, f):
        device, key = self.accounts.get(f.user, (None, None))
        if device != f.device or not verify(key, wire.login_challenge(conn.nonce, f.user, f.device),
                                            f.signature):
            return conn.error(f, E.LOGIN_FAILED, "unknown user or device")
        old = self.online.get(f.user)
        if old is not None and old is not conn:
            old.fail(0, E.SESSION_REPLACED, "logged in elsewhere")
        conn.user = f.user
        self.online[f.user] = conn
        conn.ack(f, {"last_seen": self.last_seen.get(f.user)})
        for item in self.inboxes.get(f.user, {}).values():
            conn.send(item)
        self.tell_watchers(f.user)

    def on_send(self, conn, f):
        key = (conn.user, f.id)
        if key in self.stored:
            return conn.ack(f, self.stored[key])
        if f.to not in self.accounts:
            return conn.error(f, E.UNKNOWN_USER, f"{f.to} is not registered")
        ts = self.stored[key] = now_ms()
        conn.ack(f, ts)
        self.append(f.to, lambda seq: wire.Message(seq, f.id, conn.user, ts, f.body))

    def on_received(self, conn, f):
        inbox = self.inboxes.get(conn.user, {})
        for seq in f.seqs:
            item = inbox.pop(seq, None)
            if type(item) is wire.Message:
                self.append(item.sender, lambda s, m=item: wire.Receipt(
                    s, wire.ReceiptKind.DELIVERED, m.id, conn.user, now_ms()))
        conn.ack(f)

    def on_read(self, conn, f):
        for id in f.ids:
            self.append(f.peer, lambda s, id=id: wire.Receipt(
                s, wire.ReceiptKind.READ, id, conn.user, now_ms()))
        conn.ack(f)

    def on_subscribe(self, conn, f):
        conn.ack(f)
        for user in f.users:
            self.watchers.setdefault(user, set()).add(conn)
            conn.send(self.presence_of(user))

    def on_typing(self, conn, f):
        peer = self.online.get(f.to)
        if peer is not None:
            peer.send(wire.TypingEvent(conn.user, f.typing))
        conn.ack(f)

    def on_ping(self, conn, f):
        conn.ack(f, now_ms())

    # a key directory (end-to-end encryption): no signature checks, the node's
    # own behaviour is tested in tests/e2e/test_key_directory.py
    def on_keyspublish(self, conn, f):
        conn.ack(f, self.publish_keys(conn.user, KeyBundle.from_bytes(f.bundle)))

    def publish_keys(self, user: str, bundle: KeyBundle) -> int:
        _, held = self.keys.get(user, (None, {}))
        held.update(bundle.one_time)
        self.keys[user] = (bundle.with_one_time(()), held)
        return len(held)

    def on_keysfetch(self, conn, f):
        if f.user not in self.keys:
            return conn.error(f, E.NO_KEYS, f"{f.user} has no published keys")
        signed, held = self.keys[f.user]
        one_time = [held.popitem()] if held else []
        conn.ack(f, {"device": self.accounts[f.user][0],
                     "bundle": signed.with_one_time(one_time).to_bytes()})

    def on_keyscount(self, conn, f):
        conn.ack(f, len(self.keys[conn.user][1]) if conn.user in self.keys else None)

    def on_bye(self, conn, f):
        conn.ack(f)
        conn.transport.close()

    # -- helpers ----------------------------------------------------------------------------------
    def append(self, user: str, make: Callable[[int], wire.Frame]) -> wire.Frame:
        """Commit an item to ``user``'s inbox and push it if they are online."""
        seq = self.next_seq[user] = self.next_seq.get(user, 0) + 1
        item = self.inboxes.setdefault(user, OrderedDict())[seq] = make(seq)
        if user in self.online:
            self.online[user].send(item)
        return item

    def presence_of(self, user: str) -> wire.Presence:
        return wire.Presence(user, user in self.online, self.last_seen.get(user))

    def tell_watchers(self, user: str) -> None:
        for conn in list(self.watchers.get(user, ())):
            conn.send(self.presence_of(user))


async def next_event(client: Client, kinds: tuple = (), timeout: float = 3.0) -> Any:
    """The next event of one of ``kinds`` (any kind if empty), skipping others."""
    async def find():
        async for event in client.events():
            if not kinds or isinstance(event, kinds):
                return event
        raise AssertionError("the event stream ended")
    return await asyncio.wait_for(find(), timeout)


async def texts(client: Client, count: int, timeout: float = 15.0) -> list[str]:
    """The bodies of the next ``count`` 1:1 messages, as text (an
    undecryptable one fails the test)."""
    from client.events import Message, Undecryptable
    got: list[str] = []

    async def receive() -> None:
        async for event in client.events():
            assert not isinstance(event, Undecryptable), event
            if isinstance(event, Message):
                got.append(event.body.decode())
                if len(got) == count:
                    return
    await asyncio.wait_for(receive(), timeout)
    return got


class CliProcess:
    """``python -m client.cli`` in a subprocess, driven through its stdin
    pipe; ``expect`` waits for an output line matching a regex."""

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []
        self.seen = 0
        self.arrived = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, *args: str, home: str, cwd: str | None = None) -> "CliProcess":
        import sys
        env = {**os.environ, "PYTHONPATH": cls.ROOT, "HOME": home, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli", *args, cwd=cwd or cls.ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        return cls(proc)

    @classmethod
    async def logged_in(cls, node: Any, tmp_path: Any, phone: str, *args: str,
                        cwd: str | None = None) -> "CliProcess":
        """A terminal client of ``phone`` on the test ``node``, registered
        and logged in (the node keeps codes in memory: the client asks for
        the code on stdin). Its profile is under ``tmp_path``."""
        proc = await cls.start(
            "--phone", phone, "--port", str(node.port), *args,
            "--data-dir", str(tmp_path / "none"), "--profile", str(tmp_path / phone),
            "--code-wait", "0", home=str(tmp_path), cwd=cwd)
        try:
            await proc.expect("enter the code")
            proc.write(node.codes[phone])
            await proc.expect(rf"logged in as \{phone}")
        except BaseException:
            await proc.stop()
            raise
        return proc

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            self.arrived.set()

    def write(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, pattern: str, timeout: float = 5.0) -> str:
        """The first line after the last match that matches ``pattern``."""
        import re
        regex = re.compile(pattern)

        async def find():
            while True:
                for i in range(self.seen, len(self.lines)):
                    if regex.search(self.lines[i]):
                        self.seen = i + 1
                        return self.lines[i]
                self.arrived.clear()
                if self.reader.done():
                    raise AssertionError(f"exited before {pattern!r}")
                await self.arrived.wait()
        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines)) from None

    async def stop(self, timeout: float = 10.0) -> int:
        """Close stdin (end of input quits), wait; kill if it hangs."""
        if self.proc.returncode is None:
            try:
                self.proc.stdin.close()
                return await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise AssertionError("the client did not exit:\n" + "\n".join(self.lines))
            finally:
                await asyncio.wait_for(self.reader, 2)
        return self.proc.returncode


async def stop_all(procs: list[CliProcess], quit: bool = False) -> None:
    """Stop every client (``/quit`` first with ``quit``), killing any that is
    still running; the first failure is raised once all are stopped."""
    failure = None
    for proc in procs:
        try:
            if quit and proc.proc.returncode is None:
                proc.write("/quit")
            await proc.stop()
        except BaseException as error:  # noqa: BLE001 - raised below, after the others
            failure = failure or error
        finally:
            if proc.proc.returncode is None:
                proc.proc.kill()
                await proc.proc.wait()
    if failure is not None:
        raise failure
