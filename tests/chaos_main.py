"""``run.py chaos``: the chaos scenarios in their long mode, with a progress
bar, on an in-process node in a temp dir (``worker_kill`` and ``fuzz``: on a
``run.py node`` subprocess). Exit status 0 when every run passed.
Reproduce a run with its seed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time

from pathlib import Path

from tests import chaos
from tests.chaos_launched import LAUNCHED_SCENARIOS
from tests.nodes import running_node

SCENARIOS = [*chaos.SCENARIOS, *LAUNCHED_SCENARIOS]


def _bar(name: str, started: float):
    def show(fraction: float) -> None:
        width = 30
        done = int(fraction * width)
        sys.stderr.write(f"\r{name:<18} [{'#' * done}{'.' * (width - done)}] "
                         f"{fraction * 100:5.1f}%  {time.monotonic() - started:6.1f} s")
        sys.stderr.flush()
    return show


async def _run(args: argparse.Namespace) -> int:
    names = SCENARIOS if args.scenario == "all" else [args.scenario]
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    failures = 0
    for name in names:
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="switchboard-chaos-") as data_dir:
                if name in LAUNCHED_SCENARIOS:
                    result = await _launched(name, Path(data_dir), args, seed + round_)
                    sys.stderr.write("\n")
                    print(("PASS " if result.ok else "FAIL ") + result.summary(), flush=True)
                    failures += not result.ok
                    continue
                async with running_node(data_dir) as node:
                    kwargs = dict(seed=seed + round_, duration=args.duration, clients=args.clients,
                                  progress=_bar(name, time.monotonic()))
                    if name == "escalation_storm":
                        kwargs["storms"] = max(1, int(args.duration // 10))
                    result = await chaos.SCENARIOS[name](node, **kwargs)
            sys.stderr.write("\n")
            print(("PASS " if result.ok else "FAIL ") + result.summary(), flush=True)
            failures += not result.ok
    return 1 if failures else 0


async def _launched(name: str, data_dir: Path, args: argparse.Namespace, seed: int):
    progress = _bar(name, time.monotonic())
    if name == "fuzz":
        return await LAUNCHED_SCENARIOS[name](data_dir, seed=seed, frames=args.frames,
                                              concurrency=args.concurrency, progress=progress)
    if name == "node_kill":          # a kill, a node down for 3 s, its return: ~8 s each
        kills = max(1, int(args.duration // 10))
        return await LAUNCHED_SCENARIOS[name](data_dir, seed=seed, kills=kills, every=(3.0, 6.0),
                                              clients=args.clients, progress=progress)
    # Kills at least 10.5 s apart: never more than the node supervisor's 3 in 30 s.
    kills = max(1, int(args.duration // 12.25))
    return await LAUNCHED_SCENARIOS[name](data_dir, seed=seed, kills=kills, every=(10.5, 14.0),
                                          clients=args.clients, progress=progress)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.CRITICAL)      # crash reports are the point here
    try:
        import uvloop
        return uvloop.run(_run(args))
    except ImportError:
        return asyncio.run(_run(args))
