"""A launched ``run.py node --workers 2`` for the mesh tests, and what they
ask of it: each worker's status, and clients spread over both workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import Node, RawClient, login
from tests.e2e.test_durability import FileCodes
from tests.launched import _node_up, client_port, launched_node, wait_until

__all__ = ["MeshNode", "mesh_node", "worker_status", "spread", "next_of"]


@dataclass
class MeshNode:
    node: Node                # for tests.e2e.conftest.register / login
    log_path: Path
    workers: list[int]        # worker pids, in slot order

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def mesh_node(tmp_path):
    """A two-worker node, up and with both workers in the mesh."""
    with launched_node(tmp_path, 2) as (launcher, log_path, tag):
        workers = _node_up(log_path, wait_until)
        wait_until(lambda: log_path.read_text().count("joined the mesh: peers") >= 2, 15)
        data = str(tmp_path / "data")
        yield MeshNode(Node("127.0.0.1", client_port(log_path), FileCodes(data), None, data),
                       log_path, workers)


def worker_status(log_text: str) -> list[dict]:
    """``/api/status`` of every worker, from the ports the node logged."""
    ports = re.search(r"worker HTTP ports ([\d ]+)", log_text).group(1).split()
    out = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            out.append(json.load(r))
    return out


async def spread(mesh: MeshNode, clients: list, accounts: list) -> list[dict]:
    """Wait until both workers hold connections; their statuses. The kernel
    places a connection by a hash of its addresses, so all of a few may land
    on one worker (for 8, 1 in 128): then the last client (``clients[-1]``,
    logged in as ``accounts[-1]``) logs in again from a new source port,
    replaced in ``clients``, up to 20 times. A worker's status is a sample
    taken every second: only samples taken after the last login count (a
    retry within one sample period read the same stale counts 20 times)."""
    since = time.time()

    def settled():
        status = worker_status(mesh.log())
        if all(w["at"] >= since for w in status) and \
                sum(w["connections"] for w in status) == len(clients):
            return status
    for _ in range(20):
        status = await asyncio.to_thread(wait_until, settled, 10)
        if all(w["connections"] > 0 for w in status):
            return status
        await clients[-1].close()
        clients[-1] = await login(mesh.node, accounts[-1])
        since = time.time()
    raise AssertionError(f"every connection stayed on one worker: {status}")


async def next_of(client: RawClient, kind: type, timeout: float = 5.0):
    frame, _ = await client.recv_until(lambda f: isinstance(f, kind), timeout)
    return frame
