"""``run.py bench relay --floor``: the wire floor of the relay benchmark.

The relay's load (same load generator, same pairs, window and rate) against
a server that answers its frames as a node does and keeps nothing: one
process, one uvloop, no actors, no storage, no commit. A SEND is ACKed at
once and pushed to the recipient as a MESSAGE with the next seq of an
in-memory inbox; a RECEIVED is ACKed and every MESSAGE it covers turns into
a delivered RECEIPT pushed to its sender; each connection's output of a
loop turn goes out in one write. Frames are read with the node's own
decoder (``transport.wire.FrameDecoder``, checked) and written with its
encoders, so a message costs the same 8 frames, the same reads and writes
of loopback TCP, and the same msgpack work.

What it measures is the part of the machine that the load generator and the
frames alone take at a rate: the least that any server speaking this
protocol over these sockets pays on this host, before it stores anything.
A node's figures are read against it (docs/benchmarks.md). It is not a
server to run: it keeps its inboxes in memory and loses them when it stops.

Registration and login are real enough to drive the bench's handshake:
REGISTER writes a random code with the node's ``FileCodeSender``, CONFIRM
checks it and keeps the device key, LOGIN verifies the signature over the
connection's nonce. Any other frame before LOGIN is refused with
UNAUTHENTICATED; a malformed or unknown frame gets its ERROR and closes the
connection, as on a node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench.host import cpu_seconds
from bench.loadgen import BenchError
from transport import wire
from transport.code_sender import FileCodeSender
from transport.crypto import verify

__all__ = ["FloorNode", "Floor", "main"]

ROOT = Path(__file__).resolve().parents[1]
_E = wire.ErrorCode
_PRE_LOGIN = (wire.Hello, wire.Register, wire.Confirm, wire.Login)


class Floor:
    """The server's state: connections by user, in-memory inboxes, and the
    connections with output waiting for the end of the loop turn."""

    def __init__(self, data_dir: str):
        self.codes = FileCodeSender(data_dir)
        self.pending_codes: dict[str, str] = {}
        self.keys: dict[str, bytes] = {}
        self.online: dict[str, "FloorConnection"] = {}
        self.next_seq: dict[str, int] = {}
        self.inbox: dict[str, dict[int, tuple]] = {}      # user -> seq -> (frame, sender, id)
        self.dirty: deque["FloorConnection"] = deque()

    def append(self, user: str, encode: Any, sender: str | None, msg_id: str | None) -> None:
        """Append an item to ``user``'s inbox (``encode(seq)`` makes its
        frame) and push it if the user is online."""
        seq = self.next_seq.get(user, 0) + 1
        self.next_seq[user] = seq
        frame = encode(seq)
        self.inbox.setdefault(user, {})[seq] = (frame, sender, msg_id)
        conn = self.online.get(user)
        if conn is not None:
            conn.write(frame)

    def flush(self) -> None:
        dirty = self.dirty
        while dirty:
            dirty.popleft().flush()


class FloorConnection(asyncio.Protocol):
    def __init__(self, floor: Floor):
        self.floor = floor
        self.decoder = wire.FrameDecoder(wire.Side.CLIENT)
        self.out: list[bytes] = []
        self.transport: Any = None
        self.user: str | None = None
        self.nonce = secrets.token_bytes(32)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.user is not None and self.floor.online.get(self.user) is self:
            del self.floor.online[self.user]

    def write(self, data: bytes) -> None:
        if not self.out:
            floor = self.floor
            if not floor.dirty:
                asyncio.get_running_loop().call_soon(floor.flush)
            floor.dirty.append(self)
        self.out.append(data)

    def flush(self) -> None:
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except wire.FrameError as error:
            for frame in error.frames or ():
                self.handle(frame)
            self.fail(error.ref, error.code, error.message)
            return
        for frame in frames:
            if self.transport.is_closing():
                return
            self.handle(frame)

    def fail(self, ref: int, code: wire.ErrorCode, text: str) -> None:
        self.write(wire.encode(wire.Error(code, text, ref=ref)))
        if code.fatal:
            self.flush()
            self.transport.close()

    def handle(self, frame: wire.Frame) -> None:
        kind, floor, ref = type(frame), self.floor, frame.ref
        if self.user is None and kind not in _PRE_LOGIN:
            self.fail(ref, _E.UNAUTHENTICATED, "log in first")
        elif kind is wire.Send:
            ts, sender, mid, body = int(time.time() * 1000), self.user, frame.id, frame.body
            self.write(wire.encode_ack(ref, ts))
            floor.append(frame.to, lambda seq: wire.encode_message(seq, mid, sender, ts, body),
                         sender, mid)
        elif kind is wire.Received:
            held = floor.inbox.get(self.user, {})
            for seq in frame.seqs:
                item = held.pop(seq, None)
                if item is not None and item[1] is not None:     # a MESSAGE: tick its sender
                    by, mid, now = self.user, item[2], int(time.time() * 1000)
                    floor.append(item[1], lambda s: wire.encode_receipt(
                        s, wire.ReceiptKind.DELIVERED, mid, by, now), None, None)
            self.write(wire.encode_ack(ref))
        elif kind is wire.Hello:
            self.write(wire.encode(wire.HelloOk(wire.PROTOCOL_VERSION, frame.heartbeat,
                                                self.nonce, wire.MAX_FRAME, ref=ref)))
        elif kind is wire.Register:
            code = f"{secrets.randbelow(10**6):06d}"
            floor.pending_codes[frame.phone] = code
            floor.codes.send(frame.phone, code)
            self.write(wire.encode_ack(ref))
        elif kind is wire.Confirm:
            if floor.pending_codes.get(frame.phone) != frame.code:
                self.fail(ref, _E.BAD_CODE, "wrong code")
                return
            del floor.pending_codes[frame.phone]
            floor.keys[frame.phone] = frame.device_key
            self.write(wire.encode_ack(ref, 1))
        elif kind is wire.Login:
            key = floor.keys.get(frame.user)
            challenge = wire.login_challenge(self.nonce, frame.user, frame.device)
            if key is None or frame.device != 1 or not verify(key, challenge, frame.signature):
                self.fail(ref, _E.LOGIN_FAILED, "unknown device or bad signature")
                return
            self.user = frame.user
            floor.online[frame.user] = self
            self.write(wire.encode_ack(ref))
            for _, (held, _, _) in sorted(floor.inbox.get(frame.user, {}).items()):
                self.write(held)                    # what came while away, in seq order
        else:
            self.fail(ref, _E.INVALID, f"{kind.__name__} is not served by the floor")


async def serve(data_dir: str, port_file: str) -> None:
    floor = Floor(data_dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorConnection(floor), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    Path(f"{port_file}.tmp").write_text(str(port))
    os.replace(f"{port_file}.tmp", port_file)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


class FloorNode:
    """The floor server as a subprocess on a free loopback port, shaped as
    ``bench.loadgen.LaunchedNode`` for ``bench.relay.measure``: ``port``,
    ``data_dir`` (where REGISTER's codes go), ``cpu()``."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="switchboard-floor-")
        self.data_dir = Path(self.tmp.name)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "FloorNode":
        port_file = self.data_dir / "port"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor", str(self.data_dir),
                                      str(port_file)], cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists():
                self.port = int(port_file.read_text())
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise BenchError("the floor server did not come up")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.tmp.cleanup()

    def __enter__(self) -> "FloorNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor",
                                     description="the relay bench's wire floor (bench/floor.py)")
    parser.add_argument("data_dir")
    parser.add_argument("port_file")
    args = parser.parse_args(argv)
    import uvloop
    uvloop.run(serve(args.data_dir, args.port_file))


if __name__ == "__main__":
    main(sys.argv[1:])
