"""The load generator of ``run.py bench relay`` (bench/relay.py): what each
client process runs.

``run_client(spec, conn)`` registers and logs in its pairs (REGISTER, the
code from the node's code file, CONFIRM, LOGIN on one connection), tells the
driver it is ready, waits for the schedule (start, first measured instant,
round length, rounds), then drives the traffic: closed loop (each sender
refills its window as ACKs come back) or open loop (``_pace``: every 1 ms,
each sender sends what it owes by now, the window permitting). Receivers
answer every read's MESSAGEs with one RECEIVED, senders their RECEIPTs.
Latency samples (microseconds) and counters go to a ``Recorder`` per
process, sent back to the driver as arrays at the end, after the in-flight
messages drained (bounded: 10 s).
"""

from __future__ import annotations

import asyncio
import struct
import time
from array import array
from typing import Any

from bench.loadgen import WireClient, phone, run_client_process
from client.ids import new_message_id
from transport import wire

__all__ = ["Recorder", "Peer", "run_client"]

SENDERS, RECEIVERS = "+1555", "+1666"
_TS = struct.Struct(">q")
# Under load a peer reads frames raw (``wire.FrameDecoder.raw``): body arrays
# ``(type, ref, *fields)``, unchecked, as a C load generator would read them.
_ACK, _ERROR, _MESSAGE, _RECEIPT = (int(t) for t in (wire.FrameType.ACK, wire.FrameType.ERROR,
                                                      wire.FrameType.MESSAGE,
                                                      wire.FrameType.RECEIPT))
_encode_send, _encode_received = wire.encode_send, wire.encode_received


class Recorder:
    """Per-round counters and latency samples (microseconds) of one process."""

    def __init__(self, w0: int, round_ns: int, rounds: int):
        self.w0, self.round_ns, self.end = w0, round_ns, w0 + round_ns * rounds
        self.delivered = [0] * rounds
        self.acked = [0] * rounds
        self.receipts = [0] * rounds
        self.e2e = [array("l") for _ in range(rounds)]
        self.ack = [array("l") for _ in range(rounds)]
        self.receipt = [array("l") for _ in range(rounds)]
        self.errors: dict[str, int] = {}

    def round_of(self, now: int) -> int:
        """The measured round ``now`` falls in, or -1."""
        if self.w0 <= now < self.end:
            return (now - self.w0) // self.round_ns
        return -1


class Peer(WireClient):
    """A sender or a receiver of one pair."""

    def __init__(self, rec: Recorder | None = None):
        super().__init__()
        self.rec = rec
        self.to: str | None = None          # set on senders
        self.window = self.inflight = self.sent = 0
        self.rate = 0.0                      # open loop: messages/s of this sender
        self.until_receipt = False           # the window holds a SEND until its receipt
        self.running = False
        self.by_ref: dict[int, int] = {}
        self.by_id: dict[str, int] = {}
        self.pad = b""
        self.delivered = 0                   # receivers: every MESSAGE, measured or not

    def send_some(self, n: int, now: int) -> int:
        """Send up to ``n`` messages (the window permitting); returns how many."""
        room = self.window - self.inflight
        if n > room:
            n = room
        if n <= 0:
            return 0
        out, by_ref, by_id, to = self.out, self.by_ref, self.by_id, self.to
        body = _TS.pack(now) + self.pad
        ref, count = self.next_ref, self.sent
        ms = time.time_ns() // 1_000_000
        for _ in range(n):
            mid = new_message_id(ms)                 # as the SDK makes them: in time order
            out.append(_encode_send(ref, mid, to, body))
            by_ref[ref] = now
            by_id[mid] = now
            ref += 1
            count += 1
        self.next_ref, self.sent = ref, count
        self.inflight += n
        return n

    def on_frames(self, frames: list) -> None:
        now = time.monotonic_ns()
        rec = self.rec
        r = rec.round_of(now) if rec is not None else -1
        seqs = []
        if self.to is None:                           # a receiver
            got = 0
            for f in frames:                          # MESSAGE: type, ref, seq, id, from, ts, body
                if f[0] == _MESSAGE:
                    seqs.append(f[2])
                    got += 1
                    if r >= 0:
                        rec.e2e[r].append((now - _TS.unpack_from(f[6])[0]) // 1000)
                elif f[0] == _ERROR and rec is not None:
                    _count_error(rec, f)
            self.delivered += got
            if r >= 0:
                rec.delivered[r] += got
        else:                                         # a sender
            by_ref, by_id = self.by_ref, self.by_id
            acked = receipted = failed = 0
            for f in frames:                          # RECEIPT: type, ref, seq, kind, id, ...
                t = f[0]
                if t == _ACK:
                    t0 = by_ref.pop(f[1], None)
                    if t0 is not None:
                        acked += 1
                        if r >= 0:
                            rec.ack[r].append((now - t0) // 1000)
                elif t == _RECEIPT:
                    seqs.append(f[2])
                    t0 = by_id.pop(f[4], None)
                    receipted += t0 is not None
                    if t0 is not None and r >= 0:
                        rec.receipt[r].append((now - t0) // 1000)
                        rec.receipts[r] += 1
                elif t == _ERROR:
                    if rec is not None:
                        _count_error(rec, f)
                    if by_ref.pop(f[1], None) is not None:
                        acked += 1
                        failed += 1
            self.inflight -= receipted + failed if self.until_receipt else acked
            if r >= 0:
                rec.acked[r] += acked
            if self.running and self.window and self.rate == 0:
                self.send_some(self.window, now)
        for i in range(0, len(seqs), 1024):
            ref = self.next_ref
            self.next_ref = ref + 1
            self.out.append(_encode_received(ref, seqs[i:i + 1024]))


def _count_error(rec: Recorder, frame: tuple) -> None:
    """An ERROR frame (type, ref, code, message, ...), counted by code name."""
    name = wire.ErrorCode(frame[2]).name
    rec.errors[name] = rec.errors.get(name, 0) + 1


async def _client(spec: dict, conn: Any) -> dict:
    loop = asyncio.get_running_loop()
    pairs: list[int] = spec["pairs"]
    gate = asyncio.Semaphore(50)

    homes = spec["nodes"]                             # [(client port, data dir)] per node

    async def connect(user: str, home: int) -> Peer:
        """Register ``user`` on node ``home`` (which makes it its home) and log in there."""
        port, data_dir = homes[home % len(homes)]
        async with gate:
            _, peer = await loop.create_connection(Peer, "127.0.0.1", port)
            await peer.hello()
            await peer.login(user, await peer.register(user, data_dir))
            return peer

    async def pair(i: int) -> tuple[Peer, Peer]:              # receiver on the next node
        sender = await connect(phone(SENDERS, i), i)
        return sender, await connect(phone(RECEIVERS, i), i + 1)

    peers = await asyncio.gather(*[pair(i) for i in pairs])
    conn.send(("ready", len(peers)))
    schedule = await loop.run_in_executor(None, conn.recv)
    t0, w0, round_ns, rounds = schedule
    rec = Recorder(w0, round_ns, rounds)
    rate = spec["rate_per_sender"]
    for i, (sender, receiver) in zip(pairs, peers):
        for peer in (sender, receiver):
            peer.rec = rec
        sender.to, sender.window, sender.rate = phone(RECEIVERS, i), spec["window"], rate
        sender.until_receipt = spec["until_receipt"]
        sender.pad = b"x" * max(0, spec["body"] - _TS.size)
    await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
    senders = [s for s, _ in peers]
    for s, r in peers:
        s.decoder.raw = r.decoder.raw = True    # set-up is over: frames read raw from here on
    for s in senders:
        s.running = True
    if rate == 0:
        now = time.monotonic_ns()
        for s in senders:
            s.send_some(s.window, now)
            s.flush()
    else:
        _pace(loop, senders, rate, t0, rec.end)
    await asyncio.sleep(max(0.0, (rec.end - time.monotonic_ns()) / 1e9))
    for s in senders:
        s.running = False
    deadline = time.monotonic() + 10.0            # drain what is in flight, bounded
    while time.monotonic() < deadline and any(s.inflight or s.by_id for s in senders):
        await asyncio.sleep(0.05)
    sent = sum(s.sent for s in senders)
    delivered = sum(r.delivered for _, r in peers)
    for s, r in peers:
        for peer in (s, r):
            peer.transport.close()
    return {"delivered": rec.delivered, "acked": rec.acked, "receipts": rec.receipts,
            "e2e": [a.tobytes() for a in rec.e2e], "ack": [a.tobytes() for a in rec.ack],
            "receipt": [a.tobytes() for a in rec.receipt], "errors": rec.errors,
            "sent_total": sent, "delivered_total": delivered,
            "unacked_at_end": sum(s.inflight for s in senders),
            "receipts_missing_at_end": sum(len(s.by_id) for s in senders)}


def _pace(loop: Any, senders: list[Peer], rate: float, t0: int, end: int) -> None:
    """Open loop: every 1 ms, each sender sends what it owes by now (window permitting)."""
    spread = 1e9 / rate                               # stagger the senders' phases
    offsets = [int(spread * i / len(senders)) for i in range(len(senders))]

    def tick() -> None:
        now = time.monotonic_ns()
        if now >= end:
            return
        for s, off in zip(senders, offsets):
            owed = int((now - t0 + off) * rate / 1e9) - s.sent
            if owed > 0 and s.send_some(owed, now):
                s.flush()
        loop.call_later(0.001, tick)
    tick()


def run_client(spec: dict, conn: Any) -> None:
    """The body of one load-generator process (``start_client_processes``)."""
    run_client_process(_client, spec, conn)
