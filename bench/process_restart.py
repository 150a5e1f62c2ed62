"""How long a node takes to replace a SIGKILLed worker process.

``measure_worker_restart(samples)`` starts an ActorSystem (loopback, free
port) with a NodeSupervisor and one worker running the real worker tree,
then ``samples`` times SIGKILLs the worker and measures from the kill to the
moment the NodeSupervisor receives the replacement's ``WorkerStarted``
(``WorkerInfo.started_at``, a wall-clock time taken in the supervisor, so the
polling here does not add to it). Everything it starts is stopped and
checked gone before it returns.

    python -m bench.process_restart [samples]
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time

from supervisor.launcher import ask_for, start_actor_system, start_workers, stop_node
from supervisor.procs import listener_pids, process_tree, reap
from supervisor.node_supervisor import (ReportWorkers, WorkersReported, WorkersStarted)
from supervisor.spec import SupFlags

__all__ = ["measure_worker_restart"]


def _report(asys, supervisor) -> WorkersReported:
    reply = ask_for(asys, supervisor, ReportWorkers(), (WorkersReported,), 5.0)
    if reply is None:
        raise RuntimeError("node supervisor did not answer")
    return reply


def _worker(asys, supervisor):
    return _report(asys, supervisor).workers[0]


def measure_worker_restart(samples: int = 5, timeout: float = 10.0) -> dict:
    """Median seconds from SIGKILL of a worker to its replacement started."""
    asys, port = start_actor_system("127.0.0.1", 0)
    node_pids: set[int] = set()
    results: list[float] = []
    found_dead = 0
    try:
        with tempfile.TemporaryDirectory(prefix="sb-bench-") as data_dir:
            config = {"data_dir": data_dir, "log_level": "WARNING", "shutdown": 2.0}
            # The bench kills on purpose: allow every kill within the period.
            flags = SupFlags("one_for_one", intensity=samples + 1, period=60)
            supervisor, reply = start_workers(asys, 1, config, flags)
            if not isinstance(reply, WorkersStarted):
                raise RuntimeError(f"worker did not start: {reply!r}")
            node_pids |= {p for a in listener_pids(port) for p in process_tree(a)}
            for _ in range(samples):
                old = _worker(asys, supervisor)
                time.sleep(0.2)                     # let the tree settle
                killed_at = time.time()
                os.kill(old.pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
                while True:
                    new = _worker(asys, supervisor)
                    if new.pid not in (None, old.pid):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"worker not restarted within {timeout}s")
                    time.sleep(0.005)
                node_pids.add(new.pid)
                results.append(new.started_at - killed_at)
            found_dead = _report(asys, supervisor).found_dead
            stop_node(asys, supervisor, timeout=10.0)
    finally:
        node_pids |= {p for a in listener_pids(port) for p in process_tree(a)}
        asys.shutdown()
        node_pids.discard(os.getpid())
        reap(sorted(node_pids))
    # detected_by_liveness_check: kills noticed by the supervisor's 1 s /proc
    # check rather than by Thespian's ChildActorExited (expected: 0).
    return {"median_s": statistics.median(results), "samples": results,
            "detected_by_liveness_check": found_dead}


if __name__ == "__main__":
    result = measure_worker_restart(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(f"worker restart after SIGKILL: median {result['median_s'] * 1000:.1f} ms "
          f"over {len(result['samples'])} samples "
          f"({', '.join(f'{s * 1000:.1f}' for s in result['samples'])} ms); "
          f"{result['detected_by_liveness_check']} noticed by the liveness check "
          f"instead of ChildActorExited")
