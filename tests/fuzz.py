"""The fuzzing run: ``frames`` malformed, truncated, oversized and random
frames over TCP at a real node (a ``run.py node`` subprocess, so that its
worker's memory is measured alone), from ``concurrency`` connections at a
time, while well-behaved raw clients keep chatting.

Each fuzz connection follows a seeded script: sometimes straight to a bad
frame, sometimes HELLO first, sometimes a full login followed by a stream
of well-formed frames with random content (unknown users, bogus seqs,
huge lists, typing to strangers) before the bad one. The bad frame is one
of ``BAD_KINDS``. After it the connection must end with an ERROR (a fatal
code) and a close, or, for a truncated frame (the client then shuts its
side), with a close: a connection that is left hanging is a failure.

Meanwhile ``pairs`` senders each send a message every 20 ms to their
receiver; the send -> delivery latency is measured, and their history is
judged (0 lost, duplicated, unexpected, reordered). Pass: no hanging bad
connection, probe p99 < 250 ms, worker RSS growth < 50 MB.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.e2e.conftest import Account, RawClient, login, register
from tests.history import History, Verdict
from transport import wire

__all__ = ["FuzzResult", "fuzz", "BAD_KINDS", "bad_frame"]

E = wire.ErrorCode
P99_TARGET_MS, RSS_TARGET_MB = 250.0, 50.0
FUZZ_USERS = [f"+1555800{i:04d}" for i in range(8)]


@dataclass
class FuzzResult:
    scenario: str
    seed: int
    verdict: Verdict
    frames: int = 0                       # fuzz frames sent (bad + random-content ones)
    connections: int = 0
    endings: Counter = field(default_factory=Counter)   # "ERROR <CODE>" / "close" / "HANGING"
    kinds: Counter = field(default_factory=Counter)     # bad-frame kinds sent
    latencies_ms: list[float] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_peak_kb: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def p99_ms(self) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")

    @property
    def rss_growth_mb(self) -> float:
        return (self.rss_peak_kb - self.rss_start_kb) / 1024

    @property
    def ok(self) -> bool:
        return (self.verdict.ok and not self.endings["HANGING"] and self.p99_ms < P99_TARGET_MS
                and self.rss_growth_mb < RSS_TARGET_MB and len(self.latencies_ms) > 0)

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        endings = ", ".join(f"{k} {v}" for k, v in self.endings.most_common())
        return (f"fuzz seed {self.seed}: {self.frames:,} frames over {self.connections:,} "
                f"connections in {self.seconds:.1f} s ({endings}); probe {len(lat)} msgs "
                f"p50 {p50:.1f} ms p99 {self.p99_ms:.1f} ms; worker RSS "
                f"{self.rss_start_kb / 1024:.1f} -> peak {self.rss_peak_kb / 1024:.1f} MB "
                f"(+{self.rss_growth_mb:.1f}); {self.verdict.summary()}")


# -- bad frames ---------------------------------------------------------------------------
def _header(n: int) -> bytes:
    return struct.pack(">I", n)


def _valid(rng: random.Random) -> bytes:
    return wire.encode(rng.choice([
        wire.Send(f"f{rng.randrange(10**6)}", "+15559990000", os.urandom(rng.randrange(64)),
                  ref=rng.randrange(1, 2**32)),
        wire.Ping(ref=rng.randrange(1, 2**32)),
        wire.Received((rng.randrange(1, 2**40),), ref=rng.randrange(1, 2**32)),
    ]))


def _random_object(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 2 else 6)
    if pick == 0:
        return rng.randrange(-2**63, 2**64)
    if pick == 1:
        return rng.random() * 10 ** rng.randrange(-5, 30)
    if pick == 2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(20)))
    if pick == 3:
        return os.urandom(rng.randrange(40))
    if pick == 4:
        return rng.choice([None, True, False])
    if pick == 5:
        return rng.randrange(0, 128)
    if pick == 6:
        return {str(i): _random_object(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_random_object(rng, depth + 1) for _ in range(rng.randrange(6))]


def bad_frame(rng: random.Random, kind: str) -> bytes:
    """One bad frame of ``kind`` (see ``BAD_KINDS``)."""
    if kind == "garbage":
        return os.urandom(rng.randrange(1, 300))
    if kind == "oversized":
        n = rng.randrange(wire.MAX_FRAME + 1, 2**32)
        return _header(n) + os.urandom(rng.randrange(0, 2048))
    if kind == "not_msgpack":
        body = b"\xc1" + os.urandom(rng.randrange(0, 200))     # 0xc1: never valid msgpack
        return _header(len(body)) + body
    if kind == "wrong_shape":
        obj = _random_object(rng)
        if isinstance(obj, list) and len(obj) >= 2:
            obj[0] = rng.choice(list(wire.FrameType))              # a known type, wrong fields
        return wire.encode_raw(obj)
    if kind == "unknown_type":
        return wire.encode_raw([rng.choice([0, 63, 99, 200, 2**16]), rng.randrange(2**32)])
    if kind == "server_frame":
        return wire.encode(wire.Ack(ref=rng.randrange(1, 2**32)))
    if kind == "mutated":
        data = bytearray(_valid(rng))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(4, len(data))
            data[i] = rng.randrange(256)
        data += bad_frame(rng, "not_msgpack")                      # if the mutant is valid
        return bytes(data)
    if kind == "huge_body":
        body = wire.encode_raw([int(wire.FrameType.SEND), 1, "x", "+15550000000",
                                b"\0" * (wire.MAX_FRAME - 40)])[4:]
        return _header(len(body)) + body                           # just under the cap, invalid
    if kind == "truncated":
        data = _valid(rng)
        return data[:rng.randrange(1, len(data))]
    raise ValueError(kind)


BAD_KINDS = ["garbage", "oversized", "not_msgpack", "wrong_shape", "unknown_type",
             "server_frame", "mutated", "huge_body", "truncated"]


def random_content(rng: random.Random, ref: int) -> bytes:
    """A well-formed frame with random content, for a logged-in connection."""
    someone = f"+1{rng.randrange(10**9, 10**10)}"
    frame = rng.choice([
        lambda: wire.Send(f"z{rng.randrange(10**9)}", someone, os.urandom(rng.randrange(100)), ref=ref),
        lambda: wire.Received(tuple(rng.randrange(1, 2**62) for _ in range(rng.randrange(1, 50))), ref=ref),
        lambda: wire.Read(someone, tuple(f"i{rng.randrange(99)}" for _ in range(rng.randrange(1, 20))), ref=ref),
        lambda: wire.Subscribe(tuple(f"+1{rng.randrange(10**9, 10**10)}" for _ in range(rng.randrange(1, 30))), ref=ref),
        lambda: wire.Typing(someone, rng.random() < 0.5, ref=ref),
        lambda: wire.Ping(ref=ref),
    ])()
    return wire.encode(frame)


# -- the run --------------------------------------------------------------------------------
async def _ending(reader: asyncio.StreamReader, timeout: float) -> str:
    """Read until the server closes: "ERROR <CODE>" if it said why, "close"
    if it just closed, "HANGING" if neither happened within ``timeout``."""
    decoder, last_error = wire.FrameDecoder(wire.Side.SERVER), None
    deadline = time.monotonic() + timeout
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not data:
                break
            for frame in decoder.feed(data):
                if isinstance(frame, wire.Error) and frame.code.fatal:
                    last_error = frame.code
    except asyncio.TimeoutError:
        return "HANGING"
    except (ConnectionError, wire.FrameError):
        pass
    return f"ERROR {last_error.name}" if last_error else "close"


async def _fuzz_connection(node: Any, rng: random.Random, accounts: list[Account],
                           result: FuzzResult) -> None:
    reader, writer = await asyncio.open_connection(node.host, node.port)
    mode = rng.random()
    try:
        if mode >= 0.4:                                       # HELLO first
            writer.write(wire.encode(wire.Hello(wire.PROTOCOL_VERSION, 30.0, "fuzz", ref=1)))
            hello = await _read_frame(reader, wire.HelloOk)
            if mode >= 0.7 and hello is not None:             # and log in, then noise
                acct = rng.choice(accounts)
                sig = acct.key.sign(wire.login_challenge(hello.nonce, acct.phone, acct.device))
                writer.write(wire.encode(wire.Login(acct.phone, acct.device, sig, ref=2)))
                if await _read_frame(reader, wire.Ack) is None:
                    raise ConnectionError("closed before the LOGIN ack")
                for ref in range(3, 3 + rng.randrange(10, 200)):
                    writer.write(random_content(rng, ref))
                    result.frames += 1
            else:
                for ref in range(2, 2 + rng.randrange(0, 20)):
                    writer.write(wire.encode(wire.Ping(ref=ref)))
                    result.frames += 1
        kind = rng.choice(BAD_KINDS)
        writer.write(bad_frame(rng, kind))
        result.frames += 1
        result.kinds[kind] += 1
        if kind in ("truncated", "garbage"):     # may be the start of a longer frame:
            writer.write_eof()                   # the server sees it end
        await writer.drain()
        result.endings[await _ending(reader, 10.0)] += 1
    except ConnectionError:
        result.endings["close"] += 1
    except asyncio.TimeoutError:                # HELLO not answered
        result.endings["HANGING"] += 1
    finally:
        result.connections += 1
        writer.close()


async def _read_frame(reader: asyncio.StreamReader, cls: type) -> Any:
    decoder = wire.FrameDecoder(wire.Side.SERVER)
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5.0)
        if not data:
            return None
        for frame in decoder.feed(data):
            if isinstance(frame, cls):
                return frame


_TICKS = {wire.ReceiptKind.DELIVERED: "delivered", wire.ReceiptKind.READ: "read"}


class Probe:
    """``pairs`` raw senders, each sending to its receiver every ``every`` s."""

    def __init__(self, node: Any, pairs: int, every: float = 0.02):
        self.node, self.pairs, self.every = node, pairs, every
        self.history, self.sent_at = History(), {}
        self.latencies_ms: list[float] = []
        self.tasks: list[asyncio.Future] = []
        self.running = True

    async def start(self) -> None:
        for i in range(self.pairs):
            alice, bob = f"+1555810{i:04d}", f"+1555820{i:04d}"
            sender = await login(self.node, await register(self.node, alice))
            receiver = await login(self.node, await register(self.node, bob))
            self.tasks += [asyncio.ensure_future(self._send(sender, alice, bob, i)),
                           asyncio.ensure_future(self._receive(receiver, bob))]

    async def _send(self, client: RawClient, me: str, to: str, pair: int) -> None:
        ids, n = {}, 0
        reader = asyncio.ensure_future(self._acks(client, ids, me))
        try:
            while self.running:
                n += 1
                msg_id, body = f"p{pair}-{n}", b"%d" % n
                self.history.send(msg_id, me, to, body)
                self.sent_at[msg_id] = time.monotonic()
                ids[client.send(wire.Send(msg_id, to, body, ref=client.ref()))] = msg_id
                await asyncio.sleep(self.every)
            await asyncio.sleep(2.0)                 # the last acks
        finally:
            reader.cancel()

    async def _acks(self, client: RawClient, ids: dict[int, str], me: str) -> None:
        while True:
            frame = await client.recv(timeout=60)
            if isinstance(frame, wire.Ack) and frame.ref in ids:
                self.history.ack(ids.pop(frame.ref))
            elif isinstance(frame, wire.Receipt) and frame.kind in _TICKS:
                self.history.receipt(frame.id, _TICKS[frame.kind], frame.by, me)

    async def _receive(self, client: RawClient, me: str) -> None:
        while True:
            frame = await client.recv(timeout=60)
            if isinstance(frame, wire.Message):
                self.history.deliver(frame.id, frame.sender, me, frame.body)
                self.latencies_ms.append((time.monotonic() - self.sent_at[frame.id]) * 1000)
                client.send(wire.Received((frame.seq,), ref=client.ref()))

    async def stop(self) -> None:
        self.running = False
        senders = self.tasks[0::2]
        await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), 30)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def fuzz(node: Any, worker_pid: int, rss: Callable[[int], int], seed: int = 1,
               frames: int = 100_000, concurrency: int = 8, pairs: int = 2,
               progress: Callable[[float], None] | None = None) -> FuzzResult:
    """Run the fuzzing scenario against ``node`` (a launched one; ``rss(pid)``
    reads its worker's memory)."""
    rng = random.Random(seed)
    result = FuzzResult("fuzz", seed, Verdict(0, 0, 0))
    # Step 1: the fuzz users exist (so that logins succeed), the probe chats.
    accounts = [await register(node, phone) for phone in FUZZ_USERS]
    probe = Probe(node, pairs)
    await probe.start()
    await asyncio.sleep(1.0)
    result.rss_start_kb = result.rss_peak_kb = rss(worker_pid)
    started = time.monotonic()

    # Step 2: ``concurrency`` fuzzers until ``frames`` bad frames are sent.
    async def fuzzer(n: int) -> None:
        mine = random.Random(rng.randrange(2**32) + n)
        while result.frames < frames:
            await _fuzz_connection(node, mine, accounts, result)
            if progress:
                progress(min(1.0, result.frames / frames))

    async def sample_rss() -> None:
        while True:
            result.rss_peak_kb = max(result.rss_peak_kb, rss(worker_pid))
            await asyncio.sleep(0.2)
    sampler = asyncio.ensure_future(sample_rss())
    try:
        await asyncio.gather(*(fuzzer(n) for n in range(concurrency)))
        result.seconds = time.monotonic() - started
        # Step 3: the probe drains; its history is judged.
        await probe.stop()
    finally:
        sampler.cancel()
    result.rss_peak_kb = max(result.rss_peak_kb, rss(worker_pid))
    result.verdict = probe.history.check()
    result.latencies_ms = probe.latencies_ms
    return result
