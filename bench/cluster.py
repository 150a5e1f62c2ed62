"""A cluster of ``LaunchedNode``s for the benchmarks: node ``A`` leads (its
Thespian admin port is the convention's), the others ``--join`` it, each
with its own temp data directory and free ports (client, admin, HTTP,
media). ``start()`` returns once every node has heard of every other one,
so a user registered on one node can be written to from any other.

The bench's own copy of what tests/cluster/cluster_nodes.py does for the
tests: bench code does not import tests/.
"""

from __future__ import annotations

import re
import time

from bench.loadgen import BenchError, LaunchedNode

__all__ = ["LaunchedCluster", "node_names"]


def node_names(count: int) -> tuple[str, ...]:
    """``A``, ``B``, ... for ``count`` nodes (at most 26)."""
    if not 1 <= count <= 26:
        raise BenchError(f"a cluster has 1 to 26 nodes, not {count}")
    return tuple(chr(ord("A") + i) for i in range(count))


class LaunchedCluster:
    """``count`` nodes of ``workers`` workers each, joined in one cluster.

    Use as a context manager: leaving it stops every node (SIGTERM, then
    SIGKILL of whatever carries a node's tag) and removes their data."""

    def __init__(self, count: int, workers: int = 1):
        from supervisor.launcher import free_port
        self.names = node_names(count)
        self.leader_admin = free_port()
        self.nodes: list[LaunchedNode] = []
        for i, name in enumerate(self.names):
            where = (["--admin-port", str(self.leader_admin)] if i == 0
                     else ["--join", f"127.0.0.1:{self.leader_admin}"])
            self.nodes.append(LaunchedNode(workers, args=("--name", name, "--media-port", "0",
                                                          *where)))

    def start(self, timeout: float = 120.0) -> "LaunchedCluster":
        for node in self.nodes:                  # the leader first: the others join it
            node.start(timeout)
        deadline = time.monotonic() + timeout
        for name, node in zip(self.names, self.nodes):
            while not self._knows_all(node):
                if time.monotonic() > deadline:
                    raise BenchError(f"node {name} did not hear of every node of "
                                     f"{self.names}; see {node.log_path}:\n{node.log_tail()}")
                time.sleep(0.05)
        return self

    def _knows_all(self, node: LaunchedNode) -> bool:
        """The node's log shows every node of the cluster: in its last
        cluster view, or announced (up, heard of) since."""
        log = node.log_path.read_text(errors="replace")
        views = re.findall(r"cluster view: nodes (\{[^}]*\})", log)
        seen = set(re.findall(r"'(\w+)': 'up'", views[-1])) if views else set()
        seen |= set(re.findall(r"node (\w+) is up", log))
        seen |= set(re.findall(r"heard of node (\w+)", log))
        return set(self.names) <= seen

    def process_cpu(self) -> float:
        """CPU seconds of every process of every node."""
        return sum(node.process_cpu() for node in self.nodes)

    def stop(self) -> None:
        for node in reversed(self.nodes):        # the joiners first, the leader last
            node.stop()

    def __enter__(self) -> "LaunchedCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
