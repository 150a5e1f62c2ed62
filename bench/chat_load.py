"""A chat load for watching a node: N users, each sending to random peers.

    python -m bench.chat_load --port 5222 --data-dir data --users 50 --rate 2000 --seconds 60

Every user registers (the code is read from the node's code files, so run it
on the node's machine, or pass ``codes``), logs in, then sends messages at
``rate / users`` per second each to random other users, and acknowledges
(RECEIVED) everything pushed to it, as a client must. Speaks the wire
protocol directly (``transport.wire``), one connection per user, all in one
asyncio loop; bounded by ``seconds``. Used by ``bench/dashboard_screenshot.py``
and the dashboard's browser test; the SDK (``client/``) is the way for apps.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from client.ids import new_message_id
from transport import wire
from transport.code_sender import read_code_file
from transport.crypto import DeviceKey

__all__ = ["LoadUser", "run_load", "main"]


@dataclass
class LoadUser:
    phone: str
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    decoder: wire.FrameDecoder = field(default_factory=lambda: wire.FrameDecoder(wire.Side.SERVER))
    refs: itertools.count = field(default_factory=lambda: itertools.count(1))
    pending: list = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    received: int = 0

    async def connect(self, host: str, port: int) -> bytes:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        hello = await self.request(wire.Hello(wire.PROTOCOL_VERSION, 30.0, "chat-load",
                                              ref=next(self.refs)))
        return hello.nonce

    def send(self, frame: wire.Frame) -> None:
        self.writer.write(wire.encode(frame))

    async def recv(self, timeout: float = 10.0) -> wire.Frame:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError(f"{self.phone}: server closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def request(self, frame: wire.Frame) -> wire.Frame:
        """Send ``frame`` and return its answer (before login nothing else arrives)."""
        self.send(frame)
        while True:
            reply = await self.recv()
            if reply.ref == frame.ref:
                if isinstance(reply, wire.Error):
                    raise RuntimeError(f"{self.phone}: {type(frame).__name__} refused: "
                                       f"{reply.code} {reply.message}")
                return reply

    async def register_and_login(self, host: str, port: int,
                                 codes: Callable[[str], str | None]) -> None:
        nonce = await self.connect(host, port)
        await self.request(wire.Register(self.phone, ref=next(self.refs)))
        key = DeviceKey()
        code = codes(self.phone)
        device = (await self.request(wire.Confirm(self.phone, code, key.public,
                                                  ref=next(self.refs)))).value
        signature = key.sign(wire.login_challenge(nonce, self.phone, device))
        await self.request(wire.Login(self.phone, device, signature, ref=next(self.refs)))

    async def read_forever(self) -> None:
        """Count answers and acknowledge pushed items in batches."""
        while True:
            frames = [await self.recv(timeout=3600)] + self.pending
            self.pending = []
            seqs = []
            for frame in frames:
                if isinstance(frame, (wire.Message, wire.Receipt)):
                    seqs.append(frame.seq)
                    self.received += isinstance(frame, wire.Message)
                elif isinstance(frame, wire.Ack):
                    self.acked += 1
            if seqs:
                self.send(wire.Received(tuple(seqs), ref=next(self.refs)))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def run_load(host: str, port: int, codes: Callable[[str], str | None], users: int = 20,
                   rate: float = 500.0, seconds: float = 10.0, prefix: str = "+1555",
                   stop: asyncio.Event | None = None) -> dict[str, int]:
    """Drive the load; returns totals. ``stop`` ends it early."""
    if users < 2:
        raise ValueError("a chat load needs at least 2 users")
    run = random.randrange(1000)
    people = [LoadUser(f"{prefix}{run:03d}{i:04d}") for i in range(users)]
    for user in people:                          # one at a time: registration is rate limited
        await user.register_and_login(host, port, codes)
    readers = [asyncio.ensure_future(u.read_forever()) for u in people]
    started, total = time.monotonic(), 0
    try:
        while time.monotonic() - started < seconds and not (stop and stop.is_set()):
            tick = time.monotonic()
            due = int(rate * (tick - started)) - total      # paced: 100 ticks a second
            for _ in range(max(0, due)):
                user, peer = random.sample(people, 2)
                user.sent += 1
                total += 1
                user.send(wire.Send(new_message_id(), peer.phone, b"x" * 64, ref=next(user.refs)))
            await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for user in people:
            await user.close()
    return {"users": users, "sent": sum(u.sent for u in people),
            "acked": sum(u.acked for u in people), "received": sum(u.received for u in people)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--data-dir", default="data", help="the node's data dir (for the codes)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second, all users")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    totals = asyncio.run(run_load(args.host, args.port,
                                  lambda phone: read_code_file(args.data_dir, phone),
                                  args.users, args.rate, args.seconds))
    print(totals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
