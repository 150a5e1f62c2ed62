"""Every frame handler under hypothesis: random sequences of client frames
(valid in form, random in content: unknown users, bad seqs, huge lists,
frames out of order) sent over real TCP to a logged-in connection of a real
node. Property: every frame carrying a ref is answered (ACK or ERROR with
that ref) unless a fatal ERROR closed the connection first, and afterwards
the node still serves a well-behaved client with its tree intact.

The node runs on a thread of its own; the test drives it with blocking
sockets, so hypothesis can run many examples against one node."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.nodes import running_node
from tests.transport.test_wire_properties import client_frames
from transport import wire
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(120)

USER = "+15550000071"


class NodeThread:
    """``running_node`` on its own thread and loop."""

    def __init__(self, data_dir: str):
        self.ready, self.stop = threading.Event(), None
        self.node, self.loop = None, None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main(data_dir)), daemon=True)

    async def _main(self, data_dir: str) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_node(data_dir) as node:
            self.node = node
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> "NodeThread":
        self.thread.start()
        assert self.ready.wait(15), "node did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = wire.FrameDecoder(wire.Side.SERVER)
        self.frames: list[wire.Frame] = []
        self.closed = False

    def send(self, frame: wire.Frame) -> None:
        try:
            self.sock.sendall(wire.encode(frame))
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def recv(self) -> wire.Frame | None:
        while not self.frames and not self.closed:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                data = b""
            if not data:
                self.closed = True
                break
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0) if self.frames else None

    def answer(self, ref: int) -> wire.Frame | None:
        while (frame := self.recv()) is not None:
            if isinstance(frame, (wire.Ack, wire.Error)) and frame.ref == ref:
                return frame
            if isinstance(frame, wire.Error) and frame.ref == 0 and frame.code.fatal:
                return frame
        return None

    def close(self) -> None:
        self.sock.close()


def logged_in(port: int, key: DeviceKey, device: int) -> Conn:
    conn = Conn(port)
    conn.send(wire.Hello(wire.PROTOCOL_VERSION, 30.0, "fuzz", ref=1))
    hello = conn.recv()
    conn.send(wire.Login(USER, device, key.sign(wire.login_challenge(hello.nonce, USER, device)),
                         ref=2))
    assert isinstance(conn.answer(2), wire.Ack)
    return conn


def test_every_frame_is_answered_and_the_node_keeps_serving(tmp_path):
    with NodeThread(str(tmp_path)) as running:
        port, key = running.node.port, DeviceKey()
        # Step 1: one account, registered over the protocol.
        conn = Conn(port)
        conn.send(wire.Hello(wire.PROTOCOL_VERSION, 30.0, "fuzz", ref=1))
        conn.recv()
        conn.send(wire.Register(USER, ref=2))
        assert isinstance(conn.answer(2), wire.Ack)
        conn.send(wire.Confirm(USER, running.node.codes[USER], key.public, ref=3))
        device = conn.answer(3).value
        conn.close()

        # Step 2: hypothesis sends random frame sequences after login.
        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(client_frames, min_size=1, max_size=12))
        def check(frames):
            conn = logged_in(port, key, device)
            try:
                refs = [100 + i for i in range(len(frames))]
                for ref, frame in zip(refs, frames):
                    conn.send(dataclasses.replace(frame, ref=ref))
                answers, fatal = {}, None
                while len(answers) < len(refs) and (frame := conn.recv()) is not None:
                    if isinstance(frame, (wire.Ack, wire.Error)) and frame.ref in refs:
                        assert frame.ref not in answers, f"ref {frame.ref} answered twice"
                        answers[frame.ref] = frame
                    if isinstance(frame, wire.Error) and frame.code.fatal:
                        fatal = frame
                        break
                    if isinstance(frame, wire.Ack) and isinstance(
                            frames[refs.index(frame.ref)] if frame.ref in refs else None, wire.Bye):
                        fatal = frame                 # BYE: acked, then the server closes
                        break
                if fatal is None:
                    assert sorted(answers) == refs, f"unanswered: {sorted(set(refs) - set(answers))}"
                else:
                    # A fatal error (say, HELLO after login) or a BYE ends the
                    # connection; it answers a frame of ours, and nothing after it
                    # is handled.
                    assert fatal.ref in refs or fatal.ref == 0
                    assert conn.recv() is None or conn.closed
            finally:
                conn.close()

        check()
        # Step 3: the tree is intact and a well-behaved client is served.
        system = running.node.system
        for name in ("root", "chat", "sessions", "listener", "registrar"):
            assert system.whereis(name) is not None, name
        probe = logged_in(port, key, device)
        probe.send(wire.Ping(ref=9))
        assert isinstance(probe.answer(9), wire.Ack)
        probe.close()
