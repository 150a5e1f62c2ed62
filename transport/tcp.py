"""TCP: frames <-> wire <-> session actor (cf. ejabberd_c2s's socket half).

``Listener`` is a light actor in the worker's tree: it binds the port
(loopback by default, SO_REUSEPORT so several workers can share it), owns
every ``Connection``, sweeps for connections silent for three heartbeat
intervals, and on shutdown tells each client ``SHUTTING_DOWN`` and closes.

``Connection`` is an asyncio protocol, one per socket. It reads chunks,
decodes frames with ``wire.FrameDecoder`` (size checked before the body is
read), and walks a small state machine: HELLO first, then only
REGISTER / CONFIRM / LOGIN until a login succeeds, then the chat frames,
each translated into a command for the user's session. It is the one place
where wire frames and internal messages meet (``translate.py`` holds the
tables). Every client frame gets an ACK or an ERROR; a malformed,
oversized or out-of-order frame gets an ERROR and closes this connection
only. Writes are gathered and flushed once per event-loop turn.

Flow control (``FlowControl``, transport/flow.py): a window of requests in
flight (past it the socket is not read), inbox pushes held back while the
client is slow to read (SLOW_CONSUMER when it stays so), and token-bucket
rate limits per connection, per user and per (sender, recipient).

Its log lines about closed connections are bounded (``transport/log_limit.py``).

Messages (Listener): ``Sweep``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from actors.actor import Actor
from actors.counters import counters_of
from actors.exits import ActorError
from actors.messages import Acked, KeysFetched, Rejected, SendGroup, SendMessage, TypingChanged
from actors.session_registry import REGISTRY_NAME, CloseSession
from transport import wire
from storage.records import InboxItem
from transport.auth import Authentication
from transport.flow import RATED, FlowConfig, FlowControl, Limits
from transport.log_limit import LogLimit
from transport.translate import bytes_for, command_for

__all__ = ["Listener", "Connection", "ListenerConfig", "Sweep"]

log = logging.getLogger("switchboard.tcp")
closings = LogLimit(log, "connections closed")   # clients cause these: at most 20 lines per 10 s

E = wire.ErrorCode
_PRE_LOGIN = (wire.Register, wire.Confirm, wire.Login)
LINGER = 2.0                            # seconds a closing connection waits for the client
ANSWERS = frozenset({Acked, Rejected, KeysFetched})   # a request's last event: frees its window slot
_SENDS = frozenset({SendMessage, SendGroup})    # commands a send gate holds back
_CHAT = frozenset({wire.Send, wire.Received, wire.Read, wire.Subscribe, wire.Typing, wire.Ping})


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 5222
    max_frame: int = wire.MAX_FRAME
    heartbeat_min: float = wire.HEARTBEAT_MIN
    heartbeat_max: float = wire.HEARTBEAT_MAX
    max_auth_failures: int = 5          # per connection, then it is closed
    port_file: str | None = None        # write the bound port here (port 0 picks one)
    flow: FlowConfig = FlowConfig()     # windows, buffers, rate limits (transport/flow.py)


@dataclass(frozen=True)
class Sweep:
    """Close connections silent for more than three heartbeat intervals (not
    one whose socket the server has stopped reading: its window is full, and
    what the client sends meanwhile waits unread in the kernel)."""


class Listener(Actor):
    def __init__(self, config: ListenerConfig | None = None):
        self.config = config
        self.connections: set[Connection] = set()
        self.server: asyncio.base_events.Server | None = None
        self.limits: Limits | None = None

    async def init(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config = self.config or self.system.env.get("listener") or ListenerConfig()
        self.limits = Limits(cfg.flow)
        self.server = await loop.create_server(
            lambda: Connection(self.system, cfg, self.connections, self.limits),
            # port 0 picks a free port once; a restarted listener keeps it, so
            # clients reconnect to where they were
            cfg.host, cfg.port or self.system.env.get("tcp_port", 0), reuse_port=True, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        self.system.env["tcp_port"] = self.port
        if cfg.port_file:
            tmp = f"{cfg.port_file}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.port}\n")
            os.replace(tmp, cfg.port_file)
        log.info("listening on %s:%d", cfg.host, self.port)
        self.system.send_after(1.0, self.ref, Sweep())

    def handle_sweep(self, msg: Sweep) -> None:
        now = asyncio.get_running_loop().time()
        slow = self.config.flow.slow_consumer_timeout
        for conn in list(self.connections):
            if conn.reading and now - conn.last_heard > wire.SILENT_INTERVALS * conn.heartbeat:
                conn.fail(0, E.HEARTBEAT_TIMEOUT,
                          f"nothing heard for {wire.SILENT_INTERVALS} heartbeats of {conn.heartbeat:g} s")
            elif conn.backed_up_since is not None and now - conn.backed_up_since > slow:
                conn.fail(0, E.SLOW_CONSUMER, f"not reading: pushes held back for over {slow:g} s")
        closings.flush()
        self.system.send_after(1.0, self.ref, Sweep())

    async def terminate(self, reason: Any) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.fail(0, E.SHUTTING_DOWN, "the server is shutting down")
        if self.server is not None:
            await self.server.wait_closed()


class Connection(Authentication, FlowControl, asyncio.Protocol):
    """One client socket. See the module docstring."""

    # Slotted: an idle server holds one per user, and its 36 attributes in a
    # __dict__ took 1,584 B (past 30 keys CPython stops sharing the keys of
    # instance dicts). The two mixins have empty slots and list theirs here.
    __slots__ = (
        "system", "config", "registry", "decoder", "transport", "state", "closed", "heartbeat",
        "nonce", "user", "session", "waiting", "auth_failures", "auth_chain", "out", "loop",
        "last_heard", "counters",
        # FlowControl (transport/flow.py)
        "flow", "limits", "outstanding", "in_flight", "held", "held_error", "draining",
        "reading", "send_gate", "gate_stale", "sends_out", "out_bytes", "buffered", "write_paused",
        "backed_up_since", "resuming", "pushed_seq", "slow", "tokens", "tokens_at")

    def __init__(self, system: Any, config: ListenerConfig, registry: set,
                 limits: Limits | None = None):
        self.system, self.config, self.registry = system, config, registry
        self.init_flow(config.flow, limits or Limits(config.flow))
        self.decoder = wire.FrameDecoder(wire.Side.CLIENT, max_frame=config.max_frame)
        self.transport: asyncio.Transport | None = None
        self.state = "new"                  # new -> hello -> logged_in
        self.closed = False
        self.heartbeat = 30.0
        self.nonce = b""
        self.user: str | None = None
        self.session: Any = None            # the session actor serving us, once bound
        self.waiting: list[Any] = []        # commands that arrived before the session bound
        self.auth_failures = 0
        self.auth_chain: asyncio.Future | None = None
        self.out: list[bytes] = []
        self.loop = asyncio.get_event_loop()    # kept: get_running_loop() costs a getpid()
        self.last_heard = self.loop.time()
        self.counters = counters_of(system)

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport          # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.flow.push_high, low=self.flow.push_low)
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        self.counters.bytes_in += len(data)
        if self.closed:                     # lingering: what still arrives is discarded
            self.held = None
            return
        try:
            frames = self.decoder.feed(data)
        except wire.FrameError as error:
            # A copy, not ``error``: its traceback (and its context's) holds
            # this frame, whose ``self`` is this connection; a cycle that kept
            # each connection a bad frame closed, and its last read, alive
            # until a full collection (rare: ``GC_THRESHOLDS``).
            frames = error.frames
            self.held_error = wire.FrameError(error.code, error.message, error.ref)
        self.counters.frames_in += len(frames)
        if self.held or self.held_error or self.in_flight + len(frames) > self.flow.max_in_flight:
            if self.held is None:
                self.held = deque(frames)   # the window may fill within this read
            else:
                self.held.extend(frames)
            self.drain_held()
            return
        for frame in frames:                # the hot path: the window has room for all
            if self.closed:
                return
            self.dispatch(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        self.closed = True
        if self.user is not None:
            registry = self.system.whereis(REGISTRY_NAME)
            if registry is not None:
                registry.cast(CloseSession(self.user, self))

    # -- the state machine ----------------------------------------------------------------
    def dispatch(self, frame: wire.Frame) -> None:
        wait = self.admit_frame()
        if wait:
            self.refuse(frame, wait, f"over {self.flow.frame_rate:g} frames/s on this connection")
            return
        if self.state == "logged_in":
            if type(frame) in RATED and not self.admit(frame):
                return
            if type(frame) in _CHAT:                # the hot path: straight to the session
                self.to_session(command_for(frame, self))
            elif isinstance(frame, wire.Bye):
                self.send(wire.Ack(ref=frame.ref))
                self.close_after_flush()
            elif isinstance(frame, (wire.Hello, *_PRE_LOGIN)):
                self.fail(frame.ref, E.OUT_OF_ORDER, f"{type(frame).__name__} after login")
            else:
                self.to_session(command_for(frame, self))
        elif self.state == "hello":
            if isinstance(frame, _PRE_LOGIN):
                self.chain(frame)       # its state is checked when it runs
            elif isinstance(frame, wire.Ping):      # keeps a connection alive while a code is typed
                self.send(wire.Ack(int(time.time() * 1000), ref=frame.ref))
            elif isinstance(frame, wire.Bye):
                self.send(wire.Ack(ref=frame.ref))
                self.close_after_flush()
            else:
                self.fail(frame.ref, E.OUT_OF_ORDER, f"{type(frame).__name__} before login")
        elif self.state == "new":
            if isinstance(frame, wire.Hello):
                self.hello(frame)
            else:
                self.fail(frame.ref, E.OUT_OF_ORDER, "the first frame must be HELLO")

    def hello(self, frame: wire.Hello) -> None:
        if frame.version != wire.PROTOCOL_VERSION:
            self.fail(frame.ref, E.UNSUPPORTED_VERSION,
                      f"server speaks version {wire.PROTOCOL_VERSION}, not {frame.version}")
            return
        cfg = self.config
        self.heartbeat = min(max(frame.heartbeat, cfg.heartbeat_min), cfg.heartbeat_max)
        self.nonce = os.urandom(32)
        self.state = "hello"
        media = (self.system.env.get("media_port")   # published by the MediaListener,
                 or (self.system.env.get("config") or {}).get("media_port"))  # or to come
        self.send(wire.HelloOk(wire.PROTOCOL_VERSION, self.heartbeat, self.nonce,
                               cfg.max_frame, media or None, ref=frame.ref))

    def to_session(self, command: Any) -> None:
        self.in_flight += 1
        self.outstanding[command.ref] = self.outstanding.get(command.ref, 0) + 1
        if type(command) in _SENDS:
            self.sends_out[command.ref] = command.id
        if self.session is None:
            self.waiting.append(command)
        else:
            self.cast(command)

    def cast(self, command: Any) -> None:
        try:
            self.session.cast(command)
        except ActorError:
            self.answered(command.ref)
            if type(command) in _SENDS and self.send_gate is None:
                self.send_gate, self.gate_stale = command.id, None   # nothing overtakes it
            self.send(wire.Error(E.INTERNAL, "session restarting; resend", ref=command.ref))

    def bind(self, session: Any) -> None:
        """The session (a new incarnation of it, after a crash) serves this
        connection. What the old one had not answered is answered INTERNAL
        (resend); if that includes SENDs, the first of them becomes the send
        gate, so that no later SEND is stored before the resent ones
        (``FlowControl.admit_send``)."""
        if self.session is not None and session is not self.session:
            lost_sends = [self.sends_out[r] for r in sorted(self.sends_out)]
            for ref, count in sorted(self.outstanding.items()):   # the old incarnation lost them
                for _ in range(count):
                    self.send(wire.Error(E.INTERNAL, "session restarted; resend", ref=ref))
            lost, self.outstanding, self.sends_out = sum(self.outstanding.values()), {}, {}
            self.window_freed(lost)
            if lost_sends:          # admitted before any gate there is: it goes first
                self.send_gate, self.gate_stale = lost_sends[0], None
        self.session = session
        self.pushed_seq, self.backed_up_since, self.resuming = 0, None, False  # it pushes anew
        waiting, self.waiting = self.waiting, []
        for command in waiting:
            self.cast(command)

    def push(self, event: Any) -> bool | None:
        kind = type(event)
        if kind in ANSWERS:                 # answers (and all but the two below) go out,
            if not self.answered(event.ref):
                return None                 # once: one answer per request
        elif kind is InboxItem or kind is TypingChanged:
            if self.backed_up_since is not None or self.write_paused or self.over_high():
                if kind is TypingChanged:
                    return None             # ephemeral: dropped
                if self.backed_up_since is None:
                    self.backed_up_since = self.loop.time()
                return False                # the session pushes it again after ResumePushes
            if kind is InboxItem:
                self.pushed_seq = event.seq
        if self.closed:
            return None
        if not self.out:
            self.loop.call_soon(self.flush)
        data = bytes_for(event)
        self.out_bytes += len(data)
        self.out.append(data)
        return True

    def close(self, reason: str, text: str) -> None:
        self.fail(0, E[reason.upper()], text)

    # -- output ----------------------------------------------------------------------------
    def send(self, frame: wire.Frame) -> None:
        if self.closed:
            return
        if not self.out:
            self.loop.call_soon(self.flush)
        data = wire.encode(frame)
        self.out_bytes += len(data)
        self.out.append(data)

    def flush(self) -> None:
        if not self.out:                    # a session's drain has flushed it already
            return
        out, self.out, self.out_bytes = self.out, [], 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = b"".join(out)
            self.counters.frames_out += len(out)
            self.counters.bytes_out += len(data)
            transport.write(data)
            self.buffered = transport.get_write_buffer_size()
            if self.buffered > self.flow.max_output and not self.slow:
                self.slow = True
                self.fail(0, E.SLOW_CONSUMER,
                          f"not reading: over {self.flow.max_output} bytes waiting to be sent")
                return
        if self.backed_up_since is not None:
            self.ask_resume()

    def fail(self, ref: int, code: wire.ErrorCode, text: str) -> None:
        """Send an error; a fatal one also closes the connection."""
        if self.closed:
            return
        self.send(wire.Error(code, text[:256], ref=ref))
        if code in wire.FATAL:
            closings.log(logging.INFO, "closing %s: %s %s", self.user or "connection", code.name, text)
            self.close_after_flush()

    def close_after_flush(self) -> None:
        """Stop handling frames, write what is queued, then a lingering close:
        half-close (FIN after the last frame) and discard what still arrives
        until the client closes or ``LINGER`` seconds pass. Closing outright
        would answer the client's unread bytes with a reset, which makes its
        kernel drop our last frame, often the ERROR saying why.
        ``connection_lost`` then tells the registry."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:                 # ENOTCONN: the client is already gone
                transport.abort()
                return
            self.loop.call_later(LINGER, _finish, transport)
        else:
            _finish(transport)

    def eof_received(self) -> bool:
        return False                    # the client is done: close our side too


def _finish(transport: asyncio.Transport) -> None:
    """Close; a client that left output unread (a slow consumer) is cut off:
    ``close`` would keep the unread bytes in memory until it reads them."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()
