"""``run.py bench relay``: single-node chat throughput and latency, full flow.

A real node (``run.py node`` subprocess, fsync'd LMDB, ``--workers``,
default 1) and ``--pairs`` P pairs of real TCP clients, sender -> receiver,
spread over ``--clients`` load-generator processes (bench/relay_load.py:
uvloop, asyncio protocols, chunked reads, raw ``transport.wire`` frames,
one write per read or timer tick). The 2P users register through the protocol (REGISTER, the
code from the node's code file, CONFIRM) and LOGIN on the same connection.

Traffic is the production flow: each sender keeps up to ``--window`` W SENDs
unacknowledged (the ACK is the durable commit: one tick; ``--window-until
receipt``: until its delivered RECEIPT, which bounds what is in flight
across nodes too, where the ACK comes before the shipment); each receiver
answers every read's MESSAGEs with one RECEIVED, so delivered RECEIPTs flow
back to the senders, who RECEIVED them too. ``--rate`` R > 0 is an open loop
(R messages/s in all, paced by a 1 ms tick, still capped by the window);
R = 0 is a closed loop, as fast as the window allows. Message ids are the
SDK's (``client.ids``: in time order), as the node's dedup index expects.

After ``--warmup`` s, ``--rounds`` consecutive intervals of ``--duration`` s
are measured; each prints delivered messages/s (MESSAGEs received by the
receivers), latencies (end to end: SEND written -> MESSAGE read at the
receiver, the send time travels in the body, one CLOCK_MONOTONIC for all
processes; ack: SEND -> its ACK; receipt: SEND -> the delivered RECEIPT), the
node's worker CPU and the load generator's CPU (utime + stime from /proc, %
of one core). The last line is the median of the rounds.

With ``--workers`` N > 1 the kernel spreads the connections over the
workers' SO_REUSEPORT sockets, so about (N-1)/N of the pairs talk across
workers: their messages, receipts and acks' nudges travel through the node's
mesh (``actors/cluster.py``) in batches. That is the scaling from one to N
worker processes on one node, cross-worker routing included.

``--nodes N`` (N > 1) compares, in one run and with the same load, one
node of one worker, one node of N workers and a cluster of N nodes of one
worker each, where every pair's sender and receiver live on different nodes
(bench/relay_nodes.py).

``--floor`` runs the same load against the wire floor instead of a node
(bench/floor.py): a server that answers the frames and stores nothing, the
least any server speaking this protocol pays on the host at that rate.

The last lines say whether the run met the target it measures (the closed
loop's throughput, or the p99 at ``--rate 25000``, both with 100 pairs and
window 32), and on the floor what that means for any server on this host.
"""

from __future__ import annotations

import argparse
import statistics
import time
from array import array
from typing import Callable

from bench.host import cpu_seconds, machine_cpu
from bench.loadgen import (BenchError, LaunchedNode, add_round_arguments, percentile, recv_report,
                           start_client_processes, stop_client_processes)
from bench.relay_load import run_client
from bench.relay_targets import verdicts

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=100, help="sender -> receiver pairs (default 100)")
    parser.add_argument("--window", type=int, default=32,
                        help="unacknowledged SENDs per sender (default 32)")
    parser.add_argument("--window-until", choices=("ack", "receipt"), default="ack",
                        help="a SEND leaves the window at its ACK (the commit on the sender's "
                             "node; default) or at its delivered RECEIPT")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: messages/s in all; 0 = closed loop (default)")
    add_round_arguments(parser, duration=10.0, warmup=5.0)
    parser.add_argument("--workers", type=int, default=1,
                        help="node worker processes (default 1)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="N > 1: the same load on 1 node x 1 worker, 1 node x N workers and "
                             "N nodes x 1 worker (every message crossing nodes), in one run "
                             "(bench/relay_nodes.py; default 1)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --nodes: runs of each configuration, interleaved (default 1)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a node setting, as for run.py node --set (repeatable)")
    parser.add_argument("--floor", action="store_true",
                        help="the same load against the wire floor instead of a node: a server "
                             "that answers the frames and stores nothing (bench/floor.py), to "
                             "tell what the load generator and the frames alone take")


# -- the driver ----------------------------------------------------------------------------
def _merge(results: list[dict], key: str, r: int) -> list[int]:
    merged = array("l")
    for res in results:
        merged.frombytes(res[key][r])
    return sorted(merged)


def _ms(values: list[int], q: float) -> float:
    return percentile(values, q) / 1000.0


def check_arguments(args: argparse.Namespace) -> None:
    if args.pairs < 1 or args.window < 1 or args.clients < 1 or args.rounds < 1:
        raise BenchError("--pairs, --window, --clients and --rounds must be >= 1")
    if args.duration <= 0 or args.warmup < 0 or args.rate < 0 or args.workers < 1:
        raise BenchError("--duration must be > 0, --warmup and --rate >= 0, --workers >= 1")
    if args.floor and (args.workers != 1 or args.settings or args.nodes != 1 or args.repeat != 1):
        raise BenchError("--floor is one process: it takes no --workers, --set, --nodes or "
                         "--repeat")


def run(args: argparse.Namespace) -> list[dict]:
    """Run the benchmark on one node (or the floor); returns one dict of
    figures per round, then one of totals."""
    check_arguments(args)
    if args.floor:
        from bench.floor import FloorNode
        with FloorNode() as floor:
            floor.start()
            return measure(args, [floor], floor.cpu)
    settings = tuple(arg for kv in args.settings for arg in ("--set", kv))
    with LaunchedNode(args.workers, args=settings) as node:
        node.start()
        return measure(args, [node], node.worker_cpu, node.writer_cpu)


def measure(args: argparse.Namespace, nodes: list[LaunchedNode],
            server_cpu: Callable[[], float],
            writer_cpu: Callable[[], float] = lambda: 0.0) -> list[dict]:
    """The load of ``args`` on ``nodes`` (already up; one node, or a cluster:
    pair i's sender lives on node i mod N, its receiver on the next node, so
    with N > 1 every message and receipt crosses nodes). ``server_cpu()``
    gives the CPU seconds charged to the server, ``writer_cpu()`` the part of
    them its LMDB writer processes took. Returns one dict of figures per
    round, then one of totals."""
    homes = [(node.port, str(node.data_dir)) for node in nodes]
    clients = min(args.clients, args.pairs)
    procs, conns = start_client_processes(run_client, [
        {"nodes": homes, "pairs": list(range(c, args.pairs, clients)), "window": args.window,
         "rate_per_sender": args.rate / args.pairs, "body": args.body,
         "until_receipt": args.window_until == "receipt"}
        for c in range(clients)])
    try:
        for conn in conns:
            recv_report(conn, 120.0, "ready")
        rounds, round_ns = args.rounds, int(args.duration * 1e9)
        t0 = time.monotonic_ns() + 200_000_000
        w0 = t0 + int(args.warmup * 1e9)
        for conn in conns:
            conn.send((t0, w0, round_ns, rounds))
        cpu_server, cpu_writer, cpu_clients, cpu_machine = [], [], [], []
        for r in range(rounds + 1):
            boundary = w0 + r * round_ns
            time.sleep(max(0.0, (boundary - time.monotonic_ns()) / 1e9))
            cpu_server.append(server_cpu())
            cpu_writer.append(writer_cpu())
            cpu_clients.append(sum(cpu_seconds(p.pid) for p in procs))
            cpu_machine.append(machine_cpu())
        results = [recv_report(conn, 60.0, "results") for conn in conns]
    finally:
        stop_client_processes(procs, timeout=15)
    figures = []
    for r in range(rounds):
        e2e, ack, rcpt = (_merge(results, k, r) for k in ("e2e", "ack", "receipt"))
        figures.append({
            "delivered_per_s": sum(res["delivered"][r] for res in results) / args.duration,
            "acked_per_s": sum(res["acked"][r] for res in results) / args.duration,
            "receipts_per_s": sum(res["receipts"][r] for res in results) / args.duration,
            "e2e_p50": _ms(e2e, 50), "e2e_p99": _ms(e2e, 99),
            "ack_p50": _ms(ack, 50), "ack_p99": _ms(ack, 99),
            "receipt_p50": _ms(rcpt, 50), "receipt_p99": _ms(rcpt, 99),
            "server_cpu": 100.0 * (cpu_server[r + 1] - cpu_server[r]) / args.duration,
            "writer_cpu": 100.0 * (cpu_writer[r + 1] - cpu_writer[r]) / args.duration,
            "client_cpu": 100.0 * (cpu_clients[r + 1] - cpu_clients[r]) / args.duration,
        })
        delivered = figures[-1]["delivered_per_s"] * args.duration
        figures[-1]["server_us"] = (1e6 * (cpu_server[r + 1] - cpu_server[r]) / delivered
                                    if delivered else float("nan"))
        figures[-1]["other_cpu"] = (100.0 * (cpu_machine[r + 1] - cpu_machine[r]) / args.duration
                                    - figures[-1]["server_cpu"] - figures[-1]["client_cpu"])
    errors: dict[str, int] = {}
    for res in results:
        for code, n in res["errors"].items():
            errors[code] = errors.get(code, 0) + n
    figures.append({"errors": errors,
                    "sent_total": sum(res["sent_total"] for res in results),
                    "delivered_total": sum(res["delivered_total"] for res in results),
                    "unacked_at_end": sum(res["unacked_at_end"] for res in results),
                    "receipts_missing_at_end": sum(res["receipts_missing_at_end"]
                                                   for res in results)})
    return figures


_COLUMNS = [("delivered/s", "delivered_per_s", "{:>11,.0f}"), ("acked/s", "acked_per_s", "{:>9,.0f}"),
            ("e2e p50", "e2e_p50", "{:>8.2f}"), ("p99", "e2e_p99", "{:>7.2f}"),
            ("ack p50", "ack_p50", "{:>8.2f}"), ("p99", "ack_p99", "{:>7.2f}"),
            ("rcpt p50", "receipt_p50", "{:>8.2f}"), ("p99", "receipt_p99", "{:>7.2f}"),
            ("server CPU%", "server_cpu", "{:>11.0f}"), ("writer", "writer_cpu", "{:>6.0f}"),
            ("us/msg", "server_us", "{:>6.1f}"), ("loadgen CPU%", "client_cpu", "{:>12.0f}"),
            ("other CPU%", "other_cpu", "{:>10.0f}")]


def main(args: argparse.Namespace) -> int:
    if args.nodes != 1 or args.repeat != 1:
        from bench.relay_nodes import main as compare
        return compare(args)
    mode = f"open loop at {args.rate:,.0f} msgs/s" if args.rate > 0 else "closed loop"
    server = ("the wire floor (bench/floor.py: frames answered, nothing stored)" if args.floor
              else f"node: {args.workers} worker(s), fsync'd LMDB")
    print(f"bench relay: {args.pairs} pairs, window {args.window} (until {args.window_until}), "
          f"{mode}, body {args.body} B; "
          f"{server}; {args.clients} load-generator "
          f"processes; warm-up {args.warmup:g} s, {args.rounds} x {args.duration:g} s"
          + ("; pairs spread over the workers by the kernel (cross-worker routing)"
             if args.workers > 1 else ""))
    try:
        figures = run(args)
    except BenchError as error:
        print(f"bench relay failed: {error}")
        return 1
    totals, rounds = figures[-1], figures[:-1]
    print("latencies in ms; CPU in % of one core (server: the node's worker processes; writer: "
          "the part of it their LMDB writer processes took; us/msg: the server's CPU time per "
          "delivered message; other: everything else on the machine)")
    print("round " + " ".join(f"{name:>{len(fmt.format(0))}}" for name, _, fmt in _COLUMNS))
    for i, fig in enumerate(rounds, 1):
        print(f"{i:>5} " + " ".join(fmt.format(fig[key]) for _, key, fmt in _COLUMNS))
    print("median" + " ".join(fmt.format(statistics.median(f[key] for f in rounds))
                              for _, key, fmt in _COLUMNS))
    print(f"totals: sent {totals['sent_total']:,}, delivered {totals['delivered_total']:,}, "
          f"unacked at the end {totals['unacked_at_end']}, receipts missing at the end "
          f"{totals['receipts_missing_at_end']}, errors {totals['errors'] or 'none'}")
    for line in verdicts(args, rounds):
        print(line)
    return 0
