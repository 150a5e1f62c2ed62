"""Benchmarks, run by ``python run.py bench SUITE``. Each suite prints medians
over several rounds (these machines are shared and noisy) and the targets
they are held to; docs/benchmarks.md records the figures."""

from __future__ import annotations

import argparse


def run_suite(args: argparse.Namespace) -> int:
    if args.suite == "actors":
        from bench.actors import main
        return main(quick=args.quick)
    if args.suite == "storage":
        from bench.storage import main
        return main(quick=args.quick)
    if args.suite == "monitor":
        from bench.monitor import main
        return main(quick=args.quick)
    if args.suite == "relay":
        from bench.relay import main
        return main(args)
    if args.suite == "writer":
        from bench.writer import main
        return main(args)
    if args.suite == "connections":
        from bench.connections import main
        return main(args)
    if args.suite == "census":
        from bench.census import main
        return main(args)
    if args.suite == "media":
        from bench.media import main
        return main(args)
    if args.suite == "groups":
        from bench.groups import main
        return main(args)
    raise SystemExit(f"unknown suite {args.suite!r}")
