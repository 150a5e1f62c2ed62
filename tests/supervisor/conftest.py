"""Fixtures for the Thespian process layer: a real multiprocTCPBase system on a
free loopback port, a ``Node`` helper that starts a NodeSupervisor in it, and
the clean-up that stops every process a test started (SIGKILL for leftovers,
which also fails the test)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from thespian.actors import ActorExitRequest

from supervisor.launcher import ask_for, free_port, start_actor_system, start_workers, stop_node
from supervisor.procs import listener_pids, process_tree, reap
from tests.launched import wait_until
from supervisor.node_supervisor import (DEFAULT_FLAGS, NodeSupervisorStopped, ReportWorkers,
                                        WorkersReported, WorkersStarted, pid_alive)




class Node:
    """One NodeSupervisor in the module's ActorSystem, driven from the test."""

    def __init__(self, asys, data_dir) -> None:
        self.asys, self.data_dir = asys, data_dir
        self.supervisor = None
        self.started: WorkersStarted | None = None
        self.seen_pids: set[int] = set()

    def start(self, count: int, tree: str, flags=DEFAULT_FLAGS, **config) -> WorkersStarted:
        config = {"data_dir": str(self.data_dir), "tree": tree, "log_level": "WARNING",
                  "shutdown": 2.0, **config}
        self.supervisor, reply = start_workers(self.asys, count, config, flags, timeout=30.0)
        assert isinstance(reply, WorkersStarted), reply
        self.started = reply
        self.seen_pids |= {reply.supervisor_pid, *reply.pids}
        return reply

    def report(self, timeout: float = 5.0) -> WorkersReported | None:
        reply = ask_for(self.asys, self.supervisor, ReportWorkers(),
                        (WorkersReported, NodeSupervisorStopped), timeout)
        if isinstance(reply, WorkersReported):
            self.seen_pids |= {w.pid for w in reply.workers if w.pid}
            return reply
        return None

    def pids(self) -> list[int | None]:
        reply = self.report()
        assert reply is not None, "node supervisor did not answer"
        return [w.pid for w in reply.workers]

    def wait_for_new_pid(self, slot: int, old_pid: int, timeout: float = 10.0) -> int:
        def replaced():
            reply = self.report(timeout=2.0)
            pid = reply.workers[slot].pid if reply else None
            return pid if pid not in (None, old_pid) else None
        return wait_until(replaced, timeout)

    def wait_for_stopped(self, timeout: float = 10.0) -> NodeSupervisorStopped:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.asys.listen(max(0.01, deadline - time.monotonic()))
            if isinstance(msg, NodeSupervisorStopped):
                return msg
        raise AssertionError(f"no NodeSupervisorStopped within {timeout}s")

    def stop(self) -> None:
        if self.started is not None and pid_alive(self.started.supervisor_pid):
            stop_node(self.asys, self.supervisor, timeout=15.0)
            self.asys.tell(self.supervisor, ActorExitRequest())


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    """``wait_until(predicate, timeout)``: a bounded poll."""
    return wait_until


@pytest.fixture(scope="module")
def actor_system():
    """A multiprocTCPBase ActorSystem for the module, listeners on loopback.
    Teardown shuts it down and SIGKILLs (and reports) any process left."""
    port = free_port()
    asys, port = start_actor_system("127.0.0.1", port)
    admin_pids = listener_pids(port)
    assert admin_pids, "no process listens on the admin port"
    known: set[int] = set()
    try:
        yield asys, port, known
    finally:
        known |= {p for a in admin_pids for p in process_tree(a)}
        asys.shutdown()
        known.discard(os.getpid())
        leftovers = reap(sorted(known), timeout=5.0)
        assert not leftovers, f"processes left after ActorSystem shutdown: {leftovers}"


@pytest.fixture
def node(actor_system, tmp_path):
    """A Node in the module's ActorSystem; stopped after the test, and every
    pid it ever had is checked (and killed if needed) at the end."""
    asys, port, known = actor_system
    node = Node(asys, tmp_path)
    try:
        yield node
    finally:
        node.stop()
        for pid in listener_pids(port):
            known |= set(process_tree(pid))
        gone = [p for p in node.seen_pids if p and not _gone_within(p, 5.0)]
        for pid in gone:
            os.kill(pid, signal.SIGKILL)
        assert not gone, f"node processes still alive after stop: {gone}"


def _gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
