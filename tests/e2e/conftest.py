"""A real node for end-to-end tests, and a raw wire client.

``node`` runs the worker's real supervision tree in the test's event loop
(``tests.nodes.running_node``: real TCP on 127.0.0.1, real LMDB in a temp
dir, codes kept in memory for the test). ``RawClient``
speaks frames directly, for the protocol and bad-input cases; the SDK has its
own tests and is used where a whole conversation is easier to read.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest

from tests.nodes import Node, running_node
from transport import wire
from transport.crypto import DeviceKey


@pytest.fixture
async def node(tmp_path, request):
    """A running worker tree; ``@pytest.mark.node_config(key=value)`` overrides config."""
    marker = request.node.get_closest_marker("node_config")
    async with running_node(tmp_path, **(marker.kwargs if marker else {})) as running:
        yield running


class RawClient:
    """Frames in, frames out, over a real socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.decoder = wire.FrameDecoder(wire.Side.SERVER)
        self.pending: list[wire.Frame] = []
        self.refs = itertools.count(1)
        self.nonce = b""

    @classmethod
    async def connect(cls, node: Node) -> "RawClient":
        reader, writer = await asyncio.open_connection(node.host, node.port)
        return cls(reader, writer)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, frame: wire.Frame) -> int:
        self.writer.write(wire.encode(frame))
        return frame.ref

    def ref(self) -> int:
        return next(self.refs)

    async def recv(self, timeout: float = 3.0) -> wire.Frame:
        """The next frame; raises EOFError when the server closed."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("server closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def recv_until(self, predicate, timeout: float = 3.0) -> tuple[wire.Frame, list]:
        """Frames until one matches; returns it and the ones skipped."""
        skipped = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)

    async def answer(self, ref: int, timeout: float = 3.0) -> wire.Frame:
        """The ACK or ERROR for ``ref``."""
        frame, _ = await self.recv_until(
            lambda f: isinstance(f, (wire.Ack, wire.Error)) and f.ref == ref, timeout)
        return frame

    async def closed(self, timeout: float = 3.0) -> bool:
        """True once the server has closed the connection."""
        try:
            while True:
                await self.recv(timeout)
        except EOFError:
            return True

    async def hello(self, heartbeat: float = 30.0) -> wire.HelloOk:
        ref = self.send(wire.Hello(wire.PROTOCOL_VERSION, heartbeat, "raw-test", ref=self.ref()))
        frame = await self.recv()
        assert isinstance(frame, wire.HelloOk) and frame.ref == ref, frame
        self.nonce = frame.nonce
        return frame

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@dataclass
class Account:
    phone: str
    device: int
    key: DeviceKey = field(repr=False)


async def register(node: Node, phone: str) -> Account:
    """Register ``phone`` over a fresh connection; returns its credential."""
    client = await RawClient.connect(node)
    try:
        await client.hello()
        reply = await client.answer(client.send(wire.Register(phone, ref=client.ref())))
        assert isinstance(reply, wire.Ack), reply
        key = DeviceKey()
        code = node.codes[phone]
        reply = await client.answer(client.send(wire.Confirm(phone, code, key.public, ref=client.ref())))
        assert isinstance(reply, wire.Ack) and isinstance(reply.value, int), reply
        return Account(phone, reply.value, key)
    finally:
        await client.close()


async def login(node: Node, account: Account, heartbeat: float = 30.0) -> RawClient:
    """A logged-in raw client for ``account``."""
    client = await RawClient.connect(node)
    await client.hello(heartbeat)
    signature = account.key.sign(wire.login_challenge(client.nonce, account.phone, account.device))
    reply = await client.answer(client.send(
        wire.Login(account.phone, account.device, signature, ref=client.ref())))
    assert isinstance(reply, wire.Ack), reply
    return client
