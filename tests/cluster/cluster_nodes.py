"""A real cluster of ``run.py node --name X [--join ...]`` subprocesses on
loopback, for the multi-node tests: node ``A`` leads, the others join it,
each with its own data directory, ports chosen free at run time."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.procs import process_tree
from tests.e2e.conftest import Node
from tests.e2e.test_durability import FileCodes
from tests.launched import (_node_up, tagged_pids, admin_port, client_port, launched_node,
                            wait_until)

__all__ = ["ClusterNode", "Cluster", "cluster", "start_node", "knows"]


@dataclass
class ClusterNode:
    name: str
    dir: Path
    node: Node                 # for tests.e2e.conftest.register / login (its client port)
    log_path: Path
    launcher: object
    tag: bytes
    workers: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL every process of the node (launcher, Admin, supervisor,
        workers): the node is gone at once, as in a machine failure."""
        pids = set(process_tree(self.launcher.pid)) | tagged_pids(self.tag)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Cluster:
    nodes: dict[str, ClusterNode]
    leader_admin: int
    stack: contextlib.ExitStack
    settings: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> ClusterNode:
        return self.nodes[name]

    def restart(self, name: str, port: int) -> ClusterNode:
        """Start node ``name`` again (same data directory, client ``port``)."""
        old = self.nodes[name]
        self.nodes[name] = start_node(self.stack, old.dir, name, self.leader_admin,
                                      leader=name == "A", port=port, restart=True,
                                      settings=self.settings)
        return self.nodes[name]


def start_node(stack: contextlib.ExitStack, directory: Path, name: str, leader_admin: int,
               leader: bool, port: int = 0, workers: int = 1, restart: bool = False,
               settings: tuple[str, ...] = ()) -> ClusterNode:
    directory.mkdir(exist_ok=True)
    if restart:                                    # keep the old log for the post-mortem
        old = directory / "node.log"
        if old.exists():
            old.rename(directory / f"node.{len(list(directory.glob('node*.log')))}.log")
    extra = ["--name", name, "--port", str(port)]
    for setting in settings:
        extra += ["--set", setting]
    extra += ["--admin-port", str(leader_admin)] if leader else \
        ["--join", f"127.0.0.1:{leader_admin}"]
    launcher, log_path, tag = stack.enter_context(launched_node(directory, workers, *extra))
    workers_pids = _node_up(log_path, wait_until)
    data = str(directory / "data")
    node = Node("127.0.0.1", client_port(log_path), FileCodes(data), None, data)
    return ClusterNode(name, directory, node, log_path, launcher, tag, workers_pids)


@contextlib.contextmanager
def cluster(tmp_path: Path, names: tuple[str, ...] = ("A", "B"), workers: int = 1,
            settings: tuple[str, ...] = ()):
    """Nodes ``names`` (the first leads), up and all known to each other;
    ``settings``: ``KEY=VALUE`` given to every node with ``--set``."""
    with contextlib.ExitStack() as stack:
        leader_admin = 0                # the leader picks it (tests.launched.admin_port)
        nodes = {}
        for i, name in enumerate(names):
            nodes[name] = start_node(stack, tmp_path / name, name, leader_admin, leader=i == 0,
                                     workers=workers, settings=settings)
            if i == 0:
                leader_admin = admin_port(nodes[name].log_path)
        for n in nodes.values():        # every gateway has the others in its view
            wait_until(lambda n=n: all(knows(n.log(), n.name, m) for m in names), 20)
        yield Cluster(nodes, leader_admin, stack, settings)


def knows(log: str, node: str, other: str) -> bool:
    """In ``log``, node ``node``'s gateway has ``other`` in its cluster view,
    or heard of it since."""
    if node == other or f"{node}/0: heard of node {other} (up)" in log:
        return True
    return any(f"'{other}': 'up'" in view
               for view in re.findall(rf"{node}/0: cluster view: nodes (\{{[^}}]*\}})", log))
