"""A real node in the test's own event loop: the worker's supervision tree
(``run_worker_tree``) with real TCP on 127.0.0.1 (free ports), real LMDB in
a temp dir, and a ``MemoryCodeSender`` whose codes the test reads. Used by
the e2e ``node`` fixture and by the chaos scenarios (``run.py chaos``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

from supervisor.tree import run_worker_tree
from transport.code_sender import MemoryCodeSender


@dataclass
class Node:
    host: str
    port: int
    codes: Any                 # phone -> the last code sent to it
    system: Any                # the worker's light-actor System
    data_dir: str


@contextlib.asynccontextmanager
async def running_node(data_dir: str, **overrides: Any) -> AsyncIterator[Node]:
    codes = MemoryCodeSender()
    config = {"data_dir": str(data_dir), "bind": "127.0.0.1", "port": 0, "http_port": 0,
              "media_port": 0, "code_sender": codes, "linger": 0.2, **overrides}
    # Step 1: start the tree and wait until it is up (or has failed).
    systems: list = []
    stopping, started = asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(run_worker_tree(config, stopping, started, systems.append))
    up = asyncio.ensure_future(started.wait())
    await asyncio.wait_for(asyncio.wait({running, up}, return_when=asyncio.FIRST_COMPLETED), 10)
    up.cancel()
    if running.done():
        running.result()
    system = systems[0]
    try:
        yield Node("127.0.0.1", system.env["tcp_port"], codes.codes, system, str(data_dir))
    finally:
        # Step 2: stop it; the tree must shut down cleanly.
        stopping.set()
        await asyncio.wait_for(running, 10)
