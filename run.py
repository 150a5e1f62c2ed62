"""Switchboard command line: wiring only.

    python run.py node [--data-dir DIR] [--workers N] [--http-port P]   start a node
    python run.py node --name A [--join HOST:PORT] ...   a node of a cluster (docs/cluster.md)
    python run.py cluster [--nodes 3]                  a local cluster of nodes A, B, C on loopback
    python run.py client [--phone P] [--port N] ...     interactive chat client (docs/client.md)
    python run.py chaos [SCENARIO] [--duration S] [--seed N] [--frames N]   chaos (history-checked), fuzzing
    python run.py top [--host H] [--http-port P]       live terminal view of a node
    python run.py status [--host H] [--http-port P]    one-shot summary (exit 0 ok, 1 degraded, 2 unreachable)
    python run.py bench actors|storage|monitor [--quick]   benchmarks (docs/benchmarks.md)
    python run.py bench relay [--pairs P --window W --rate R] [--floor]  chat throughput and latency
    python run.py bench writer [--ids sdk|random|counter]    the relay's storage ops, LMDB only
    python run.py bench connections [N] [--quick]            idle users held by one node
    python run.py bench census [N]                           a worker's memory per idle user, by line
    python run.py bench media [--size MiB --rounds R]          media upload/download MiB/s
    python run.py bench groups [--members M --senders S]       group fan-out, everyone online
"""

from __future__ import annotations

import argparse
import re
import sys


def _node_name(text: str) -> str:
    """A node's name: 1 to 32 letters, digits, '-' or '_' (it names its
    workers "<name>/<slot>" and keys its outbound queue in LMDB)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", text):
        raise argparse.ArgumentTypeError(f"a node name is 1 to 32 letters, digits, '-' or '_', "
                                         f"not {text!r}")
    return text


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:                 # the client parses its own options
        from client.cli import main as client_main
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="start a node (Thespian system, node supervisor, workers)")
    node.add_argument("--data-dir", default="data", help="where LMDB and node files live (default: ./data)")
    node.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    node.add_argument("--admin-port", type=int, default=0, help="Thespian admin port (default: a free one)")
    node.add_argument("--bind", default="127.0.0.1", help="address every listener binds (default: loopback)")
    node.add_argument("--port", type=int, default=5222, help="client TCP port (default: 5222; 0: a free one)")
    node.add_argument("--media-port", type=int, default=5280,
                      help="media upload/download HTTP port, shared by the workers (default: 5280; 0: a free one)")
    node.add_argument("--http-port", type=int, default=8222,
                      help="dashboard/metrics port of worker 0; worker N uses it + N (default: 8222; 0: free ports)")
    node.add_argument("--alert-webhook", metavar="URL", help="POST queue alerts as JSON to URL")
    node.add_argument("--name", type=_node_name,
                      help="this node's name in a cluster; without --join it leads the cluster")
    node.add_argument("--join", type=_host_port, metavar="HOST:PORT",
                      help="join the cluster whose leader's admin port is HOST:PORT (needs --name)")
    node.add_argument("--advertise", metavar="HOST",
                      help="the address other nodes send this node's clients to (default: --bind)")
    node.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                      help="a monitor setting, e.g. alert_actor_high=500 (docs/operations.md)")

    cluster = commands.add_parser("cluster", help="a local cluster of N nodes on loopback (docs/cluster.md)")
    cluster.add_argument("--nodes", type=int, default=3, help="nodes A, B, C, ... (default: 3)")
    cluster.add_argument("--data-dir", default="data/cluster", help="node X keeps its data in DIR/X")
    cluster.add_argument("--workers", type=int, default=1, help="worker processes per node (default: 1)")
    cluster.add_argument("--bind", default="127.0.0.1", help="address every listener binds (default: loopback)")
    cluster.add_argument("--port", type=int, default=5222, help="client port of node A; B gets +1, ... (0: free)")
    cluster.add_argument("--media-port", type=int, default=5280, help="media port of node A; B gets +1, ...")
    cluster.add_argument("--http-port", type=int, default=8222, help="HTTP port of node A; B gets +10, ...")
    cluster.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                         help="a setting for every node (see run.py node --set)")

    commands.add_parser("client", help="interactive chat client (see: run.py client --help)")

    for name, text in (("top", "live terminal view of a node's queues, rates and alerts"),
                       ("status", "one-shot node summary; exit 0 ok, 1 degraded, 2 unreachable")):
        view = commands.add_parser(name, help=text)
        view.add_argument("--host", default="127.0.0.1", help="the node's HTTP address (default: loopback)")
        view.add_argument("--http-port", type=int, default=8222, help="any worker's HTTP port (default: 8222)")
        if name == "top":
            view.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
            view.add_argument("--iterations", type=int, default=0, help="stop after N refreshes (0: until Ctrl-C)")

    chaos = commands.add_parser("chaos", help="chaos scenarios, long mode, judged by the history checker")
    chaos.add_argument("scenario", nargs="?", default="all",
                       choices=["all", "kill_sessions", "escalation_storm", "worker_kill", "fuzz",
                                "node_kill"])
    chaos.add_argument("--seed", type=int, default=None, help="seed (default: from the clock)")
    chaos.add_argument("--duration", type=float, default=60.0, help="seconds of chaos per scenario")
    chaos.add_argument("--clients", type=int, default=20, help="chatting clients")
    chaos.add_argument("--rounds", type=int, default=1, help="runs per scenario: seeds seed, seed+1, ...")
    chaos.add_argument("--frames", type=int, default=100_000, help="fuzz: bad frames to send")
    chaos.add_argument("--concurrency", type=int, default=8, help="fuzz: bad connections at a time")

    bench = commands.add_parser("bench", help="run a benchmark (docs/benchmarks.md)")
    suites = bench.add_subparsers(dest="suite", required=True)
    for name in ("actors", "storage", "monitor"):
        suites.add_parser(name).add_argument("--quick", action="store_true",
                                             help="small sizes, for a smoke run")
    from bench.relay import add_arguments as relay_arguments
    relay_arguments(suites.add_parser("relay", help="P pairs of TCP clients through a node"))
    from bench.writer import add_arguments as writer_arguments
    writer_arguments(suites.add_parser("writer", help="the relay's storage ops, straight into LMDB"))
    from bench.connections import add_arguments as connections_arguments
    connections_arguments(suites.add_parser("connections", help="N idle logged-in users on a node"))
    from bench.census import add_arguments as census_arguments
    census_arguments(suites.add_parser("census", help="a worker's memory per idle user, by line"))
    from bench.media import add_arguments as media_arguments
    media_arguments(suites.add_parser("media", help="upload/download MiB/s, raw and end-to-end"))
    from bench.groups import add_arguments as groups_arguments
    groups_arguments(suites.add_parser("groups", help="fan-out to a group of M members, all online"))

    args = parser.parse_args(argv)
    if args.command == "node":
        from ops.console import parse_settings
        from supervisor.launcher import run_node
        try:
            args.settings = parse_settings(args.settings, webhook=args.alert_webhook)
        except ValueError as exc:
            parser.error(str(exc))
        return run_node(args)
    if args.command == "cluster":
        from supervisor.cluster_launcher import run_cluster
        return run_cluster(args)
    if args.command in ("top", "status"):
        from ops import console
        return console.main(args)
    if args.command == "chaos":
        from tests.chaos_main import main as chaos_main
        return chaos_main(args)
    if args.command == "bench":
        from bench import run_suite
        return run_suite(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
