"""``run.py bench monitor``: what the queue-length monitor costs.

Measures, medians of several rounds, with 100,000 idle actors alive:

- the sampling pass (``actors.queue_sample.measure``) at 1k / 10k / 100k
  actors, and the naive pass it replaced (copy the table, read every
  ``mailbox_len``, aggregate every actor) for comparison;
- cast throughput between two actors (``bench.actors.cast_throughput``)
  without a monitor, with one sampling every 1 s and every 0.1 s;
- ``GET /api/node`` latency from the dashboard's HTTP thread while that
  cast flood keeps the worker's loop busy, against an idle loop.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time

from actors import Actor, System
from actors.monitor import MonitorSettings, QueueMonitor
from actors.queue_sample import measure
from bench.actors import cast_throughput

ROUNDS = 5


class Idle(Actor):
    pass


def naive_pass(system: System) -> None:
    """The first monitor's pass: every actor read and aggregated."""
    kinds: dict = {}
    for ref in system.actors():
        n = ref.mailbox_len
        stats = kinds.setdefault(ref.kind, [0, 0, 0])
        stats[0] += 1
        stats[1] += n
        stats[2] = max(stats[2], n)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def pass_times(system: System, sizes: list[int]) -> None:
    print("| actors | sampling pass (measure) | naive pass |")
    print("| --- | --- | --- |")
    for size in sizes:
        while len(system) < size:
            await system.spawn(Idle)
        fast, naive = [], []
        for _ in range(ROUNDS * 2):
            started = time.perf_counter()
            measure(system)
            fast.append(time.perf_counter() - started)
            started = time.perf_counter()
            naive_pass(system)
            naive.append(time.perf_counter() - started)
        print(f"| {size:,} | {_ms(statistics.median(fast))} | {_ms(statistics.median(naive))} |")


async def throughput(system: System, count: int, interval: float | None) -> float:
    monitor = None
    if interval is not None:
        monitor = await system.spawn(QueueMonitor, MonitorSettings(
            monitor_interval=interval, offline_scan=0))
    rates = [await cast_throughput(system, count) for _ in range(ROUNDS)]
    if monitor is not None:
        await monitor.stop()
    return statistics.median(rates)


_POLLER = """
import sys, time, urllib.request
url, out = sys.argv[1], []
for line in sys.stdin:
    if line.strip() == "stop":
        break
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
    print(time.perf_counter() - started, flush=True)
"""


def _latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    """GET ``url`` from another process (a browser is one: a client thread in
    this process would compete for the GIL and measure itself), every 10 ms."""
    poller = subprocess.Popen([sys.executable, "-c", _POLLER, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        while not stop.is_set() and len(out) < 2000:
            poller.stdin.write("go\n")
            poller.stdin.flush()
            out.append(float(poller.stdout.readline()))
            time.sleep(0.01)
    finally:
        poller.stdin.write("stop\n")
        poller.stdin.close()
        poller.wait(timeout=10)


async def http_under_load(system: System, count: int) -> None:
    from transport.http import HttpListener
    system.env["config"] = {"http_port": 0}
    monitor = await system.spawn(QueueMonitor, MonitorSettings(offline_scan=0))
    http = await system.spawn(HttpListener)
    url = f"http://127.0.0.1:{system.env['http_port']}/api/node"
    for label, busy in (("idle loop", False), ("loop busy with a cast flood", True)):
        stop, out = threading.Event(), []
        poller = threading.Thread(target=_latencies, args=(url, stop, out))
        poller.start()
        while not out:                         # the poller process is up and answered
            await asyncio.sleep(0.05)
        out.clear()
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            if busy:
                await cast_throughput(system, count)
            else:
                await asyncio.sleep(0.1)
        stop.set()
        await asyncio.to_thread(poller.join)
        out.sort()
        print(f"| GET /api/node, {label} | {len(out)} | {_ms(out[len(out) // 2])} | "
              f"{_ms(out[int(len(out) * 0.99)])} |")
    await http.stop()
    await monitor.stop()


async def run(quick: bool) -> None:
    actors = 10_000 if quick else 100_000
    count = 300_000 if quick else 1_000_000       # as bench.actors: the sink holds 1M at most
    async with System() as system:
        await pass_times(system, [1_000, 10_000, actors] if not quick else [1_000, actors])
        print()
        print(f"| cast throughput, {actors:,} idle actors alive | msgs/s | vs none |")
        print("| --- | --- | --- |")
        base = await throughput(system, count, None)
        print(f"| no monitor | {base:,.0f} | |")
        for interval in (1.0, 0.1):
            rate = await throughput(system, count, interval)
            print(f"| monitor every {interval:g} s | {rate:,.0f} | {100 * (rate / base - 1):+.1f}% |")
        print()
        print("| request | samples | p50 | p99 |")
        print("| --- | --- | --- | --- |")
        await http_under_load(system, count)
        await system.shutdown(timeout=60)


def main(quick: bool = False) -> int:
    import logging
    import uvloop
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(run(quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main("--quick" in sys.argv))
