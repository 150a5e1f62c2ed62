"""``run.py bench relay --nodes N``: the relay load across nodes, compared in
the same run with one node.

Three configurations get the same load (``--pairs``, ``--window`` or
``--rate``, ``--body``, rounds) one after the other, each on fresh
processes and data: one node of one worker; one node of N workers (the
kernel spreads the pairs over the workers, so most of them cross workers
through the node's mesh); and N nodes of one worker joined in a cluster
(bench/cluster.py), where pair i's sender is registered and logged in on
node i mod N and its receiver on the next node. There every message crosses
nodes: the sender's node commits it into its durable outbound queue
(storage/outq.py) and acks, its gateway ships it to the receiver's node,
which appends it to the inbox and pushes it; the delivered receipt comes
back the same way.

Server CPU is the same measure in every row: all the processes of every
node (launcher, Thespian Admin, node supervisor, workers, the cluster
directory), so what the cluster costs beyond the workers is counted. With
``--repeat K`` the configurations run K times, interleaved (the machine's
speed drifts), and the table gives the median of the runs' medians.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

from bench.cluster import LaunchedCluster
from bench.loadgen import BenchError, LaunchedNode
from bench.relay import check_arguments, measure

__all__ = ["configurations", "run", "main"]

_FIGURES = ("delivered_per_s", "acked_per_s", "e2e_p50", "e2e_p99", "ack_p50", "ack_p99",
            "receipt_p50", "receipt_p99", "server_cpu", "server_us", "client_cpu", "other_cpu")


def configurations(nodes: int) -> list[tuple[str, int, int]]:
    """(label, nodes, workers per node) of each row, the baseline first."""
    return [("1 node x 1 worker", 1, 1),
            (f"1 node x {nodes} workers", 1, nodes),
            (f"{nodes} nodes x 1 worker (cross-node)", nodes, 1)]


def _measure_once(args: argparse.Namespace, nodes: int, workers: int) -> list[dict]:
    """One configuration on fresh processes: the rounds' figures, then totals."""
    if nodes == 1:
        with LaunchedNode(workers, args=("--media-port", "0")) as node:
            node.start()
            return measure(args, [node], node.process_cpu)
    with LaunchedCluster(nodes, workers) as cluster:
        cluster.start()
        return measure(args, cluster.nodes, cluster.process_cpu)


def run(args: argparse.Namespace,
        progress: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Every configuration ``args.repeat`` times; returns per configuration
    ``{"label", "runs": [medians of one run's rounds], "totals": [...],
    "median": {figure: median of the runs}}``."""
    check_arguments(args)
    if args.nodes < 2 or args.repeat < 1:
        raise BenchError("--nodes must be >= 2 and --repeat >= 1 to compare configurations")
    if args.workers != 1:
        raise BenchError("--workers does not go with --nodes: the comparison runs 1 node x 1 "
                         "worker, 1 node x N workers and N nodes x 1 worker itself")
    rows = [{"label": label, "nodes": n, "workers": w, "runs": [], "totals": []}
            for label, n, w in configurations(args.nodes)]
    for k in range(args.repeat):
        for row in rows:
            figures = _measure_once(args, row["nodes"], row["workers"])
            rounds, totals = figures[:-1], figures[-1]
            medians = {key: statistics.median(f[key] for f in rounds) for key in _FIGURES}
            row["runs"].append(medians)
            row["totals"].append(totals)
            progress(f"run {k + 1}/{args.repeat}, {row['label']}: "
                     f"{medians['delivered_per_s']:,.0f} delivered/s, e2e p50 "
                     f"{medians['e2e_p50']:.2f} / p99 {medians['e2e_p99']:.2f} ms, server "
                     f"{medians['server_cpu']:.0f}% CPU, {medians['server_us']:.0f} us/msg; "
                     f"{_totals_line(totals)}")
    for row in rows:
        row["median"] = {key: statistics.median(r[key] for r in row["runs"]) for key in _FIGURES}
    return rows


def _totals_line(totals: dict) -> str:
    return (f"sent {totals['sent_total']:,}, delivered {totals['delivered_total']:,}, unacked "
            f"at the end {totals['unacked_at_end']}, receipts missing at the end "
            f"{totals['receipts_missing_at_end']}, errors {totals['errors'] or 'none'}")


_COLUMNS = [("delivered/s", "delivered_per_s", "{:>11,.0f}"),
            ("e2e p50", "e2e_p50", "{:>8.2f}"), ("p99", "e2e_p99", "{:>7.2f}"),
            ("ack p50", "ack_p50", "{:>8.2f}"), ("p99", "ack_p99", "{:>7.2f}"),
            ("rcpt p50", "receipt_p50", "{:>8.2f}"), ("p99", "receipt_p99", "{:>7.2f}"),
            ("server CPU%", "server_cpu", "{:>11.0f}"), ("us/msg", "server_us", "{:>6.0f}"),
            ("loadgen CPU%", "client_cpu", "{:>12.0f}"), ("other CPU%", "other_cpu", "{:>10.0f}")]


def main(args: argparse.Namespace) -> int:
    mode = f"open loop at {args.rate:,.0f} msgs/s" if args.rate > 0 else "closed loop"
    print(f"bench relay --nodes {args.nodes}: {args.pairs} pairs, window {args.window} "
          f"(until {args.window_until}), {mode}, "
          f"body {args.body} B; fsync'd LMDB; {args.clients} load-generator processes; warm-up "
          f"{args.warmup:g} s, {args.rounds} x {args.duration:g} s per run; {args.repeat} run(s) "
          f"of each configuration, interleaved", flush=True)
    try:
        rows = run(args, progress=lambda line: print(line, flush=True))
    except BenchError as error:
        print(f"bench relay failed: {error}")
        return 1
    print("medians of the runs; latencies in ms; CPU in % of one core (server: every process "
          "of every node; us/msg: its CPU time per delivered message)")
    width = max(len(row["label"]) for row in rows)
    print(f"{'configuration':<{width}} "
          + " ".join(f"{name:>{len(fmt.format(0))}}" for name, _, fmt in _COLUMNS)
          + "  vs 1x1")
    base = rows[0]["median"]["delivered_per_s"]
    for row in rows:
        med = row["median"]
        ratio = med["delivered_per_s"] / base if base else float("nan")
        print(f"{row['label']:<{width}} " + " ".join(fmt.format(med[key])
                                                      for _, key, fmt in _COLUMNS)
              + f"  {ratio:>6.2f}x")
    for row in rows:
        runs = "; ".join(f"{r['delivered_per_s']:,.0f}" for r in row["runs"])
        print(f"{row['label']}: delivered/s of the runs: {runs}")
    return 0
