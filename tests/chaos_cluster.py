"""Chaos on a cluster of real node processes (``tests/cluster/cluster_nodes.py``),
judged by the history checker like ``tests/chaos.py``.

- ``node_kill``: three nodes A (the leader), B and C; ``clients`` SDK users,
  registered round-robin on the three (each user's home), chat at random
  across all of them. At a seeded random point every process of B or C is
  SIGKILLed, as if its machine died. Measured: how long the survivors take
  to mark it down (its users offline, as a watcher on another node sees
  them), while the rest of the cluster keeps serving. After ``down_for``
  seconds the node is started again from its data directory (what
  ``run.py cluster`` does for a dead node); its clients reconnect to it and
  everything queued for it arrives. Pass: 0 lost, duplicated, unexpected,
  reordered; the loss noticed within ``DETECT_LIMIT`` s.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable

from tests.chaos import ChaosResult, ChatLoad, _under_load, _until
from tests.cluster.cluster_nodes import cluster

__all__ = ["node_kill", "DETECT_LIMIT"]

DETECT_LIMIT = 6.0            # seconds from SIGKILL to the survivors marking the node down


async def node_kill(tmp_path: Any, seed: int = 1, kills: int = 1,
                    every: tuple[float, float] = (2.0, 4.0), down_for: float = 3.0,
                    clients: int = 12, rate: float = 10.0,
                    progress: Callable[[float], None] | None = None,
                    victims: tuple[str, ...] = ("B", "C")) -> ChaosResult:
    names = ("A", "B", "C")
    with cluster(tmp_path, names) as c:
        nodes = [c[n].node for n in names]

        async def chaos(load: ChatLoad, result: ChaosResult, rng: random.Random) -> None:
            result.restart_limit = DETECT_LIMIT
            for kill in range(kills):
                await asyncio.sleep(rng.uniform(*every))
                victim = rng.choice(victims)              # the leader's loss: docs/cluster.md
                survivor = c["B" if victim == "A" else "A"]
                port = c[victim].node.port
                before = survivor.log().count(f"node {victim} is down")
                served = load.history.acks.copy()
                c[victim].kill()
                killed = time.monotonic()
                result.kills += 1
                # Nobody marks the leader down: waiting DETECT_LIMIT for it kept it
                # down twice down_for, past the clients' request timeout.
                if victim == names[0]:
                    result.notes.append(f"kill {kill}: {victim} is the leader: not marked down")
                else:
                    seen = await _until(lambda: survivor.log().count(f"node {victim} is down")
                                        > before, DETECT_LIMIT)
                    if seen is None:
                        result.slow_restarts += 1
                        result.notes.append(f"kill {kill}: {victim} not marked down in "
                                            f"{DETECT_LIMIT:g} s")
                    else:
                        result.restart_ms.append((time.monotonic() - killed) * 1000)
                await asyncio.sleep(max(0.0, down_for - (time.monotonic() - killed)))
                during = len(load.history.acks - served)
                result.notes.append(f"kill {kill}: {victim} down {down_for:g} s, "
                                    f"{during} messages acked meanwhile")
                await asyncio.to_thread(c.restart, victim, port)
                if progress:
                    progress((kill + 1) / kills)
            await asyncio.sleep(rng.uniform(*every))      # chat on the whole cluster again

        result = await _under_load(nodes[0], "node_kill", seed, clients, rate, chaos,
                                   alive=lambda: all(c[n].launcher.poll() is None for n in names),
                                   nodes=nodes)
        result.notes.append("detection = SIGKILL to the leader's gateway logging it down")
        return result
