"""Chaos scenarios that need whole processes: a ``run.py node`` subprocess
(``tests/launched.py``) instead of an in-process tree. Same harness and
judge as ``tests/chaos.py``; each takes a scratch directory for the node.

- ``worker_kill``: while ``clients`` SDK clients chat, the worker process
  is SIGKILLed at seeded random points (``kills`` times, ``every`` seconds
  apart, so within the node supervisor's intensity of 3 restarts in 30 s);
  the node supervisor starts a new one, the clients reconnect and resend
  what was not acked. Pass: 0 lost, duplicated, unexpected, reordered;
  every worker listening again within 10 s; the node still up.
- ``fuzz``: ``tests/fuzz.py`` against a launched node (its worker's memory
  is then measured alone).
- ``node_kill``: a cluster of three nodes, one SIGKILLed under load and
  started again (``tests/chaos_cluster.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any, Callable

from tests.chaos import ChaosResult, ChatLoad, _under_load, _until
from tests.fuzz import FuzzResult, fuzz
from tests.launched import _node_up, launched_node, node_of, port_owner, rss_kb, wait_until

__all__ = ["worker_kill", "fuzz_run", "LAUNCHED_SCENARIOS"]

WORKER_RESTART_LIMIT = 10.0           # seconds from SIGKILL to a worker listening again


async def worker_kill(tmp_path: Any, seed: int = 1, kills: int = 2,
                      every: tuple[float, float] = (2.0, 4.0), clients: int = 10,
                      rate: float = 20.0, progress: Callable[[float], None] | None = None
                      ) -> ChaosResult:
    with launched_node(tmp_path, 1) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        node = node_of(tmp_path, log_path)

        async def chaos(load: ChatLoad, result: ChaosResult, rng: random.Random) -> None:
            for kill in range(kills):
                await asyncio.sleep(rng.uniform(*every))      # a random point of the chat
                victim = port_owner(node.port)
                if victim is None:
                    result.notes.append(f"kill {kill}: no worker listening")
                    result.slow_restarts += 1
                    continue
                result.restart_limit = WORKER_RESTART_LIMIT
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                result.kills += 1
                new = await _until(lambda: _listening_again(node, victim), WORKER_RESTART_LIMIT)
                if new is None:
                    result.slow_restarts += 1
                else:
                    result.restart_ms.append((time.monotonic() - killed) * 1000)
                    result.notes.append(f"kill {kill}: worker {victim} -> {new}")
                if progress:
                    progress((kill + 1) / kills)
            await asyncio.sleep(rng.uniform(*every))          # chat on the last worker too
        return await _under_load(node, "worker_kill", seed, clients, rate, chaos,
                                 alive=lambda: launcher.poll() is None)


async def fuzz_run(tmp_path: Any, seed: int = 1, frames: int = 100_000, concurrency: int = 8,
                   pairs: int = 2, progress: Callable[[float], None] | None = None) -> FuzzResult:
    with launched_node(tmp_path, 1) as (launcher, log_path, tag):
        worker = _node_up(log_path, wait_until)[0]
        result = await fuzz(node_of(tmp_path, log_path), worker, rss_kb, seed=seed, frames=frames,
                            concurrency=concurrency, pairs=pairs, progress=progress)
        if launcher.poll() is not None or port_owner(result_port(log_path)) != worker:
            result.notes.append("the worker did not survive the run")
            result.verdict.lost.append("(worker restarted)")
        return result


def _listening_again(node: Any, victim: int) -> int | None:
    """The new worker's pid once it listens and is serving (HELLO answered)."""
    pid = port_owner(node.port)
    return pid if pid is not None and pid != victim else None


def result_port(log_path: Any) -> int:
    from tests.launched import client_port
    return client_port(log_path)


def _node_kill(*args: Any, **kwargs: Any) -> Any:
    from tests.chaos_cluster import node_kill          # a cluster of three node processes
    return node_kill(*args, **kwargs)


LAUNCHED_SCENARIOS = {"worker_kill": worker_kill, "fuzz": fuzz_run, "node_kill": _node_kill}
