"""``python run.py bench census [N]``: where a worker's memory per idle user
goes, by the line that allocated it.

The worker's supervision tree runs in this process (``run_worker_tree``,
real TCP on 127.0.0.1, LMDB under a temp dir, the LMDB writer in its own
process as on a node); N accounts are provisioned straight into LMDB
(``bench.loadgen.provision``); one load-generator process logs them all in
and holds them, as ``bench connections`` does. ``tracemalloc`` is started
just before the logins and compared once all are in and idle: the growth
per user in total, the top allocating lines, and the instance dicts of the
project's classes (a class past 30 attributes gets a dict of its own per
instance in CPython 3.11, where fewer share their keys).

This is a census, not a speed figure: tracemalloc roughly doubles the RSS
it measures, so the RSS it prints is not comparable with ``bench
connections`` (which runs without it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import linecache
import os
import sys
import tempfile
import tracemalloc

from bench.connections import _client_process
from bench.host import memory_kb
from bench.loadgen import (BenchError, phone, provision, recv_report, start_client_processes,
                           stop_client_processes)

__all__ = ["add_arguments", "main"]

PREFIX = "+1888"
PROJECT = ("actors", "transport", "storage", "supervisor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("n", type=int, nargs="?", default=2000,
                        help="users to hold (default 2,000)")
    parser.add_argument("--top", type=int, default=25, help="allocating lines to show (default 25)")


async def _census(n: int, top: int, data_dir: str) -> int:
    from supervisor.tree import run_worker_tree

    users = [phone(PREFIX, i) for i in range(n)]
    config = {"data_dir": data_dir, "bind": "127.0.0.1", "port": 0, "http_port": 0,
              "media_port": 0}
    systems: list = []
    stopping, started = asyncio.Event(), asyncio.Event()
    tree = asyncio.ensure_future(run_worker_tree(config, stopping, started, systems.append))
    await asyncio.wait({tree, asyncio.ensure_future(started.wait())},
                       return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if tree.done():
        tree.result()                            # the start failed: say why
    port = systems[0].env["tcp_port"]
    procs, conns = [], []
    try:
        # Step 1: the baseline, then tracing, then everyone logs in.
        gc.collect()
        before = memory_kb(os.getpid())
        tracemalloc.start()
        first = tracemalloc.take_snapshot()
        procs, conns = start_client_processes(_client_process, [
            {"users": users, "source": "127.0.0.2", "port": port, "heartbeat": 300.0,
             "concurrency": 50}])
        report = await asyncio.to_thread(recv_report, conns[0], 600.0, "its logins")
        if report["held"] != n:
            raise BenchError(f"{report['held']} of {n} logged in: {report['failures']}")
        # Step 2: idle, then the census.
        await asyncio.sleep(2.0)
        gc.collect()
        after = memory_kb(os.getpid())
        second = tracemalloc.take_snapshot()
        tracemalloc.stop()
        imports = [tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                   tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>")]
        stats = second.filter_traces(imports).compare_to(first.filter_traces(imports), "lineno")
        print(f"bench census: {n:,} idle users held by one worker in this process")
        print(f"Python objects per user (tracemalloc): "
              f"{sum(s.size_diff for s in stats) / n:,.0f} B; RSS per user with tracing on: "
              f"{(after['VmRSS'] - before['VmRSS']) * 1024 / n:,.0f} B")
        print(f"{'B/user':>8} {'objs/user':>9}  allocated at")
        for s in stats[:top]:
            frame = s.traceback[0]
            print(f"{s.size_diff / n:8.1f} {s.count_diff / n:9.2f}  "
                  f"{frame.filename.split('/')[-1]}:{frame.lineno}  "
                  f"{_line(frame.filename, frame.lineno)}")
        print("instance dicts of the project's classes (the largest):")
        for name, (count, size, attrs) in _instance_dicts()[:8]:
            print(f"  {name}: {count:,} objects, {size / count:,.0f} B dict, "
                  f"{attrs / count:.0f} attributes")
        conns[0].send("close")
        await asyncio.to_thread(recv_report, conns[0], 60.0, "its end")
    finally:
        stop_client_processes(procs, timeout=10)
        stopping.set()
        await asyncio.wait_for(tree, 30)
    return 0


def _line(filename: str, lineno: int) -> str:
    return linecache.getline(filename, lineno).strip()[:90]


def _instance_dicts() -> list[tuple[str, tuple[int, int, int]]]:
    per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for obj in gc.get_objects():
        d = getattr(obj, "__dict__", None)
        if (isinstance(d, dict) and not isinstance(obj, type)
                and type(obj).__module__.split(".")[0] in PROJECT):
            entry = per[f"{type(obj).__module__}.{type(obj).__qualname__}"]
            entry[0] += 1
            entry[1] += sys.getsizeof(d)
            entry[2] += len(d)
    return sorted(((k, tuple(v)) for k, v in per.items()), key=lambda kv: -kv[1][1])


def main(args: argparse.Namespace) -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="switchboard-census-") as data_dir:
            provision(data_dir, [phone(PREFIX, i) for i in range(args.n)])
            return asyncio.run(_census(args.n, args.top, data_dir))
    except BenchError as error:
        print(f"bench census failed: {error}", file=sys.stderr)
        return 1

