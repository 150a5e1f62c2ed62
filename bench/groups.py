"""``run.py bench groups``: group fan-out, every member online.

A real node (``run.py node`` subprocess, fsync'd LMDB, one worker) and one
group of ``--members`` M users (default 256, accounts provisioned straight
into LMDB before the node starts; the group made by member 0 with
GROUP_CREATE). Every member is logged in over its own TCP connection, the
members spread over ``--clients`` load-generator processes (uvloop, raw
``transport.wire`` frames, one write per read, as ``bench relay``).

``--senders`` S members keep up to ``--window`` W GROUP_SENDs unacknowledged
each (closed loop): each send is committed once per other member (M - 1
inbox items in one transaction, ack after commit) and pushed to the M - 1
online members. Every member answers each read's MESSAGEs with one
RECEIVED, so M - 1 delivered RECEIPTs flow back to the sender per message,
and the senders RECEIVED those too: the full per-member receipt flow.

After ``--warmup`` s, ``--rounds`` intervals of ``--duration`` s are
measured; each prints deliveries/s (MESSAGEs received by members), group
sends acked/s, latencies in ms (delivery: GROUP_SEND written -> MESSAGE
read by a member, the send time in the body, one CLOCK_MONOTONIC for all
processes; ack: GROUP_SEND -> its ACK), the node's CPU and its CPU per
delivery. The last line is the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
from array import array
from typing import Any

from bench.host import cpu_seconds
from bench.loadgen import (BenchError, LaunchedNode, WireClient, add_round_arguments, percentile,
                           phone, provision, recv_report, run_client_process, start_client_processes,
                           stop_client_processes)
from client.ids import new_message_id
from transport import wire

__all__ = ["add_arguments", "main", "run"]

MEMBERS = "+1777"
KEY = "bench"
_TS = struct.Struct(">q")
_ACK, _ERROR, _MESSAGE, _RECEIPT, _EVENT = (wire.Ack, wire.Error, wire.Message, wire.Receipt,
                                            wire.GroupEvent)
_encode, _GroupSend, _Received = wire.encode, wire.GroupSend, wire.Received


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=256, help="group members (default 256)")
    parser.add_argument("--senders", type=int, default=4,
                        help="members sending at once (default 4)")
    parser.add_argument("--window", type=int, default=8,
                        help="unacknowledged GROUP_SENDs per sender (default 8)")
    add_round_arguments(parser, duration=5.0, warmup=3.0)


def group_id() -> str:
    return f"{phone(MEMBERS, 0)}/{KEY}"


# -- the load generator (one per client process) --------------------------------------
class Member(WireClient):
    """One member's connection; a sender when ``window`` > 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w0 = self.round_ns = self.end = 0
        self.delivered: list[int] = []
        self.acked: list[int] = []
        self.latency: list[array] = []
        self.ack_latency: list[array] = []
        self.errors: dict[str, int] = {}
        self.window = self.inflight = self.sent = 0
        self.running = False
        self.by_ref: dict[int, int] = {}
        self.pad = b""
        self.group = group_id()

    def measure(self, w0: int, round_ns: int, rounds: int) -> None:
        self.w0, self.round_ns, self.end = w0, round_ns, w0 + round_ns * rounds
        self.delivered, self.acked = [0] * rounds, [0] * rounds
        self.latency = [array("l") for _ in range(rounds)]
        self.ack_latency = [array("l") for _ in range(rounds)]

    def round_of(self, now: int) -> int:
        return (now - self.w0) // self.round_ns if self.w0 <= now < self.end else -1

    def send_some(self, now: int) -> None:
        n = self.window - self.inflight
        if n <= 0 or not self.running:
            return
        body, ref, group = _TS.pack(now) + self.pad, self.next_ref, self.group
        ms = time.time_ns() // 1_000_000
        for _ in range(n):
            self.out.append(_encode(_GroupSend(new_message_id(ms), group, body, ref=ref)))
            self.by_ref[ref] = now
            ref += 1
            self.sent += 1
        self.next_ref = ref
        self.inflight += n

    def on_frames(self, frames: list) -> None:
        now = time.monotonic_ns()
        r = self.round_of(now)
        seqs, got, acked = [], 0, 0
        for f in frames:
            t = type(f)
            if t is _MESSAGE:
                seqs.append(f.seq)
                got += 1
                if r >= 0:
                    self.latency[r].append((now - _TS.unpack_from(f.body)[0]) // 1000)
            elif t is _RECEIPT or t is _EVENT:
                seqs.append(f.seq)
            elif t is _ACK:
                t0 = self.by_ref.pop(f.ref, None)
                if t0 is not None:
                    acked += 1
                    if r >= 0:
                        self.ack_latency[r].append((now - t0) // 1000)
            elif t is _ERROR:
                self.errors[f.code.name] = self.errors.get(f.code.name, 0) + 1
                if self.by_ref.pop(f.ref, None) is not None:
                    acked += 1
        if r >= 0:
            self.delivered[r] += got
            self.acked[r] += acked
        self.inflight -= acked
        if acked:
            self.send_some(now)
        for i in range(0, len(seqs), 1024):
            self.out.append(_encode(_Received(seqs[i:i + 1024], ref=self.ref())))


async def _client(spec: dict, conn: Any) -> dict:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)

    async def connect(i: int) -> Member:
        async with gate:
            _, member = await loop.create_connection(Member, "127.0.0.1", spec["port"])
            await member.hello()
            await member.login(phone(MEMBERS, i))
            return member

    members = await asyncio.gather(*[connect(i) for i in spec["members"]])
    conn.send(("ready", len(members)))
    t0, w0, round_ns, rounds = await loop.run_in_executor(None, conn.recv)
    senders = []
    for i, member in zip(spec["members"], members):
        member.measure(w0, round_ns, rounds)
        if i < spec["senders"]:
            member.window, member.pad = spec["window"], b"x" * max(0, spec["body"] - _TS.size)
            senders.append(member)
    await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
    now = time.monotonic_ns()
    for s in senders:
        s.running = True
        s.send_some(now)
        s.flush()
    await asyncio.sleep(max(0.0, (w0 + round_ns * rounds - time.monotonic_ns()) / 1e9))
    for s in senders:
        s.running = False
    deadline = time.monotonic() + 10.0            # drain what is in flight, bounded
    while time.monotonic() < deadline and any(s.inflight for s in senders):
        await asyncio.sleep(0.05)
    errors: dict[str, int] = {}
    for m in members:
        for code, n in m.errors.items():
            errors[code] = errors.get(code, 0) + n
        m.transport.close()
    return {"delivered": [sum(m.delivered[r] for m in members) for r in range(rounds)],
            "acked": [sum(m.acked[r] for m in members) for r in range(rounds)],
            "latency": [b"".join(m.latency[r].tobytes() for m in members) for r in range(rounds)],
            "ack": [b"".join(m.ack_latency[r].tobytes() for m in members) for r in range(rounds)],
            "errors": errors, "sent": sum(s.sent for s in senders),
            "unacked": sum(s.inflight for s in senders)}


def _client_process(spec: dict, conn: Any) -> None:
    run_client_process(_client, spec, conn)


async def _create_group(port: int, members: int) -> None:
    loop = asyncio.get_running_loop()
    _, creator = await loop.create_connection(WireClient, "127.0.0.1", port)
    try:
        await creator.hello()
        await creator.login(phone(MEMBERS, 0))
        others = tuple(phone(MEMBERS, i) for i in range(1, members))
        await creator.expect_ack(wire.GroupCreate(KEY, "bench", others[:256], ref=creator.ref()),
                                 "GROUP_CREATE")
        for i in range(256, len(others), 256):
            await creator.expect_ack(wire.GroupAdd(group_id(), others[i:i + 256],
                                                   ref=creator.ref()), "GROUP_ADD")
    finally:
        creator.transport.close()


# -- the driver ----------------------------------------------------------------------------
def _merged(results: list[dict], key: str, r: int) -> list[int]:
    values = array("l")
    for res in results:
        values.frombytes(res[key][r])
    return sorted(values)


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Run the benchmark: one dict of figures per round, and the totals."""
    if not 2 <= args.members <= 1024 or not 1 <= args.senders <= args.members \
            or args.clients < 1 or args.rounds < 1 or args.window < 1:
        raise BenchError("--members must be 2..1024 and --senders 1..members")
    with LaunchedNode(1) as node:                   # group_cap: the default 1,024
        provision(node.data_dir, [phone(MEMBERS, i) for i in range(args.members)])
        node.start()
        asyncio.run(_create_group(node.port, args.members))
        procs, conns = start_client_processes(_client_process, [
            {"port": node.port, "members": list(range(c, args.members, args.clients)),
             "senders": args.senders, "window": args.window, "body": args.body}
            for c in range(args.clients)])
        try:
            for conn in conns:
                recv_report(conn, 120.0, "ready")
            round_ns = int(args.duration * 1e9)
            t0 = time.monotonic_ns() + 200_000_000
            w0 = t0 + int(args.warmup * 1e9)
            for conn in conns:
                conn.send((t0, w0, round_ns, args.rounds))
            cpu = []
            for r in range(args.rounds + 1):
                time.sleep(max(0.0, (w0 + r * round_ns - time.monotonic_ns()) / 1e9))
                cpu.append((node.worker_cpu(), sum(cpu_seconds(p.pid) for p in procs)))
            results = [recv_report(conn, 60.0, "results") for conn in conns]
        finally:
            stop_client_processes(procs, timeout=15)
    figures = []
    for r in range(args.rounds):
        latency, ack = _merged(results, "latency", r), _merged(results, "ack", r)
        delivered = sum(res["delivered"][r] for res in results)
        server = cpu[r + 1][0] - cpu[r][0]
        figures.append({
            "deliveries_per_s": delivered / args.duration,
            "sends_per_s": sum(res["acked"][r] for res in results) / args.duration,
            "p50": percentile(latency, 50) / 1000, "p99": percentile(latency, 99) / 1000,
            "ack_p50": percentile(ack, 50) / 1000, "ack_p99": percentile(ack, 99) / 1000,
            "server_cpu": 100.0 * server / args.duration,
            "server_us": 1e6 * server / delivered if delivered else float("nan"),
            "client_cpu": 100.0 * (cpu[r + 1][1] - cpu[r][1]) / args.duration})
    errors: dict[str, int] = {}
    for res in results:
        for code, n in res["errors"].items():
            errors[code] = errors.get(code, 0) + n
    totals = {"sent": sum(res["sent"] for res in results),
              "unacked": sum(res["unacked"] for res in results), "errors": errors}
    return figures, totals


_COLUMNS = [("deliveries/s", "deliveries_per_s", "{:>12,.0f}"), ("sends/s", "sends_per_s", "{:>8,.0f}"),
            ("p50", "p50", "{:>7.2f}"), ("p99", "p99", "{:>7.2f}"),
            ("ack p50", "ack_p50", "{:>8.2f}"), ("p99", "ack_p99", "{:>7.2f}"),
            ("server CPU%", "server_cpu", "{:>11.0f}"), ("us/delivery", "server_us", "{:>11.1f}"),
            ("loadgen CPU%", "client_cpu", "{:>12.0f}")]


def main(args: argparse.Namespace) -> int:
    print(f"bench groups: one group of {args.members} members, all online over {args.clients} "
          f"load-generator processes; {args.senders} senders, window {args.window}, body "
          f"{args.body} B; node: 1 worker, fsync'd LMDB; warm-up {args.warmup:g} s, "
          f"{args.rounds} x {args.duration:g} s")
    try:
        figures, totals = run(args)
    except BenchError as error:
        print(f"bench groups failed: {error}")
        return 1
    print("latencies in ms (delivery: GROUP_SEND -> MESSAGE at a member); CPU in % of one core")
    print("round " + " ".join(f"{name:>{len(fmt.format(0))}}" for name, _, fmt in _COLUMNS))
    for i, fig in enumerate(figures, 1):
        print(f"{i:>5} " + " ".join(fmt.format(fig[key]) for _, key, fmt in _COLUMNS))
    print("median" + " ".join(fmt.format(statistics.median(f[key] for f in figures))
                              for _, key, fmt in _COLUMNS))
    print(f"totals: group sends {totals['sent']:,}, unacked at the end {totals['unacked']}, "
          f"errors {totals['errors'] or 'none'}")
    return 0
