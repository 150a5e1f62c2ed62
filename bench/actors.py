"""``run.py bench actors``: the light-actor runtime and its supervisors.

Measures, each as the median of several rounds:

- cast throughput between two actors in one process (target >= 500,000/s);
- ping-pong ``call`` latency between two actors;
- spawn time and memory per idle actor at 100,000 actors (target <= 3 KB),
  in a fresh process so the RSS delta is the actors' own;
- restart latency of a crashed child under ``one_for_one`` (target < 1 ms);
- worker process restart after SIGKILL (target < 2 s), from
  ``bench/process_restart.py``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from actors import Actor, System
from supervisor.base import Supervisor, which_children
from supervisor.spec import SupFlags, worker

ROUNDS = 5


# -- cast throughput -----------------------------------------------------------
@dataclass(frozen=True)
class Flood:
    to: object
    count: int


class Sink(Actor):
    mailbox_size = 1 << 20

    def __init__(self, count: int, done: asyncio.Future):
        self.left, self.done = count, done

    def handle_int(self, msg: int) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(time.perf_counter())


class Producer(Actor):
    async def handle_flood(self, msg: Flood) -> None:
        cast = msg.to.cast
        for i in range(msg.count):
            cast(i)
            if i & 1023 == 1023:               # let the sink run: bounded queue
                await asyncio.sleep(0)


async def cast_throughput(system: System, count: int) -> float:
    done = asyncio.get_running_loop().create_future()
    sink = await system.spawn(Sink, count, done)
    producer = await system.spawn(Producer)
    started = time.perf_counter()
    producer.cast(Flood(sink, count))
    finished = await done
    await sink.stop()
    await producer.stop()
    return count / (finished - started)


# -- call latency ----------------------------------------------------------------
class Ponger(Actor):
    def handle_str(self, msg: str) -> str:
        return msg


@dataclass(frozen=True)
class PingMany:
    to: object
    count: int


class Pinger(Actor):
    async def handle_ping_many(self, msg: PingMany) -> list[float]:
        call, clock, times = msg.to.call, time.perf_counter, []
        for _ in range(msg.count):
            t = clock()
            await call("ping")
            times.append(clock() - t)
        return times


async def call_latency(system: System, count: int) -> list[float]:
    ponger = await system.spawn(Ponger)
    pinger = await system.spawn(Pinger)
    times = await pinger.call(PingMany(ponger, count), timeout=120)
    await pinger.stop()
    await ponger.stop()
    return times


# -- restart latency -------------------------------------------------------------
class Crashy(Actor):
    """Reports each start to the bench's ``starts`` future list."""

    starts: list = []

    def init(self) -> None:
        if Crashy.starts:
            Crashy.starts.pop(0).set_result(time.perf_counter())

    def handle_str(self, msg: str) -> None:
        raise RuntimeError("crash requested by the benchmark")


async def restart_latency(system: System, count: int) -> list[float]:
    flags = SupFlags("one_for_one", intensity=count + 1, period=3600)
    sup = await system.spawn(Supervisor, flags, [worker(Crashy, id="crashy")])
    loop, times = asyncio.get_running_loop(), []
    for _ in range(count):
        child = (await which_children(sup))[0].ref
        started = loop.create_future()
        Crashy.starts.append(started)
        t = time.perf_counter()
        child.cast("crash")
        times.append(await asyncio.wait_for(started, 5) - t)
    await sup.stop()
    return times


# -- memory per idle actor (run in a fresh process) --------------------------------
class Idle(Actor):
    pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _idle_actors(count: int) -> dict:
    async with System() as system:
        for _ in range(1000):                # warm allocator pools and dispatch caches
            await system.spawn(Idle)
        gc.collect()
        before = _rss()
        started = time.perf_counter()
        for _ in range(count):
            await system.spawn(Idle)
        elapsed = time.perf_counter() - started
        gc.collect()
        after = _rss()
        assert len(system) == count + 1000
        return {"bytes_per_actor": (after - before) / count, "spawn_us": elapsed / count * 1e6}


def idle_actors_in_subprocess(count: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c",
         f"import json, bench.actors as b; print(json.dumps(b._run(b._idle_actors({count}))))"],
        capture_output=True, text=True, check=True, timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- driver ----------------------------------------------------------------------
def _run(coro):
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _in_process(quick: bool) -> dict:
    casts = 100_000 if quick else 1_000_000
    calls = 2_000 if quick else 20_000
    restarts = 200 if quick else 2_000
    out: dict = {}
    async with System() as system:
        out["casts_per_s"] = statistics.median(
            [await cast_throughput(system, casts) for _ in range(ROUNDS)])
        rounds = [await call_latency(system, calls) for _ in range(ROUNDS)]
        out["call_p50_us"] = statistics.median(_pct(r, 0.5) for r in rounds) * 1e6
        out["call_p99_us"] = statistics.median(_pct(r, 0.99) for r in rounds) * 1e6
        out["calls_per_s"] = statistics.median(len(r) / sum(r) for r in rounds)
        rounds = [await restart_latency(system, restarts) for _ in range(ROUNDS)]
        out["restart_p50_us"] = statistics.median(_pct(r, 0.5) for r in rounds) * 1e6
        out["restart_p99_us"] = statistics.median(_pct(r, 0.99) for r in rounds) * 1e6
    return out


def main(quick: bool = False) -> int:
    # Crash reports of the deliberately crashed children would flood the
    # terminal; the figures below exclude formatting them.
    logging.disable(logging.CRITICAL)
    idle = 10_000 if quick else 100_000
    print(f"bench actors ({'quick' if quick else 'full'}): medians of {ROUNDS} rounds,"
          f" python {sys.version.split()[0]}, {os.cpu_count()} cores")
    results = _run(_in_process(quick))
    rounds = [idle_actors_in_subprocess(idle) for _ in range(3)]
    results["bytes_per_idle_actor"] = statistics.median(r["bytes_per_actor"] for r in rounds)
    results["spawn_us"] = statistics.median(r["spawn_us"] for r in rounds)
    from bench.process_restart import measure_worker_restart
    worker_restart = measure_worker_restart(samples=3 if quick else 5)
    results["worker_restart_s"] = worker_restart["median_s"]

    rows = [
        ("cast throughput, 2 actors", f"{results['casts_per_s']:,.0f} msgs/s", ">= 500,000 msgs/s",
         results["casts_per_s"] >= 500_000),
        ("call round trip p50 / p99", f"{results['call_p50_us']:.1f} / {results['call_p99_us']:.1f} us",
         "", None),
        ("calls per second, one pair", f"{results['calls_per_s']:,.0f}", "", None),
        (f"memory per idle actor ({idle:,})", f"{results['bytes_per_idle_actor']:,.0f} B", "<= 3,072 B",
         results["bytes_per_idle_actor"] <= 3072),
        (f"spawn time ({idle:,})", f"{results['spawn_us']:.1f} us", "", None),
        ("child restart p50 / p99", f"{results['restart_p50_us']:.0f} / {results['restart_p99_us']:.0f} us",
         "p50 < 1,000 us", results["restart_p50_us"] < 1000),
        ("worker process restart (SIGKILL)", f"{results['worker_restart_s']:.2f} s", "< 2 s",
         results["worker_restart_s"] < 2),
    ]
    print(f"| {'measure':<36} | {'median':<24} | {'target':<18} | ok |")
    print(f"|{'-' * 38}|{'-' * 26}|{'-' * 20}|----|")
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        print(f"| {name:<36} | {value:<24} | {target:<18} | {mark:<3}|")
    print(json.dumps(results))
    return 0
