"""THE supervision tree of a worker process: the first file to open.

Start order is top to bottom; shutdown is the reverse. The node level above
this (the Thespian ``NodeSupervisor`` starting worker processes) is in
``supervisor/node_supervisor.py``; ``docs/design.md`` draws both.

Intensity and period, after OTP's "Tuning the intensity and period": the
root tolerates 3 restarts in 30 s. A crash loop faster than that is not
going to heal by itself, so the root gives up, the worker process exits, and
the node supervisor (which counts its own restarts) starts a fresh process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors import SHUTDOWN, System
from supervisor.base import Supervisor
from supervisor.spec import SupFlags, worker

__all__ = ["ROOT_FLAGS", "ROOT_CHILDREN", "run_worker_tree", "RootExited"]

log = logging.getLogger("switchboard.tree")

ROOT_FLAGS = SupFlags(strategy="one_for_one", intensity=3, period=30)

ROOT_CHILDREN = [                                   # start order; stop is reverse
    worker("actors.worker_status.WorkerStatus", 1.0, shutdown=1.0),
]


class RootExited(RuntimeError):
    """The root supervisor of a worker exited on its own (gave up)."""


async def run_worker_tree(config: dict[str, Any], stopping: asyncio.Event,
                          started: asyncio.Event | None = None) -> None:
    """Run the worker's tree until ``stopping`` is set, then shut it down in
    order; ``started`` is set once every child has started. Raises
    ``RootExited`` if the root supervisor gives up first, so the worker
    process exits and its node supervisor restarts it."""
    async with System() as system:
        root = await system.spawn(Supervisor, ROOT_FLAGS, ROOT_CHILDREN, name="root")
        log.info("worker tree started: %d actors", len(system))
        if started is not None:
            started.set()
        stop = asyncio.ensure_future(stopping.wait())
        died = asyncio.ensure_future(root.join())
        await asyncio.wait({stop, died}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if died.done():
            raise RootExited(f"root supervisor exited: {died.result()!r}")
        died.cancel()
        await root.stop(SHUTDOWN, timeout=None)
        log.info("worker tree stopped")
