"""Switchboard command line: wiring only.

    python run.py node [--data-dir DIR] [--workers N]   start a node
    python run.py bench actors|storage [--quick]         benchmarks (docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="start a node (Thespian system, node supervisor, workers)")
    node.add_argument("--data-dir", default="data", help="where LMDB and node files live (default: ./data)")
    node.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    node.add_argument("--admin-port", type=int, default=0, help="Thespian admin port (default: a free one)")
    node.add_argument("--bind", default="127.0.0.1", help="address every listener binds (default: loopback)")
    node.add_argument("--port", type=int, default=5222, help="client TCP port (default: 5222; 0: a free one)")

    bench = commands.add_parser("bench", help="run a benchmark")
    bench.add_argument("suite", choices=["actors", "storage"])
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")

    args = parser.parse_args(argv)
    if args.command == "node":
        from supervisor.launcher import run_node
        return run_node(args)
    if args.command == "bench":
        from bench import run_suite
        return run_suite(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
