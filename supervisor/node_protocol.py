"""The node supervisor's protocol: the messages its owner (the launcher,
tests, benchmarks) sends and gets back, and ``pid_alive``. Plain
dataclasses: they cross processes pickled. (supervisor/node_supervisor.py
is the actor.)"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from supervisor.spec import SupFlags

__all__ = ["StartWorkers", "WorkersStarted", "ReportWorkers", "WorkerInfo", "WorkersReported",
           "StopWorkers", "WorkersStopped", "NodeSupervisorStopped", "pid_alive",
           "DEFAULT_FLAGS", "STRATEGIES"]

# Intensity and period, after OTP's sup_princ "Tuning the intensity and
# period": a worker process restart is expensive (fork, a fresh light tree,
# state rebuilt from LMDB) and rare, because the light tree inside the worker
# absorbs ordinary crashes. Tolerate a burst of 3 (say, the OOM killer taking
# a few workers at once); a period of 30 s caps a slow crash loop at one
# restart per 10 s before escalating. Nested under the worker root's own 3 in
# 30 s (supervisor/tree.py) a crashing light child is retried at most ~4 x 3
# times before the node gives up: bounded, unlike 10 x 10 = 100.
DEFAULT_FLAGS = SupFlags(strategy="one_for_one", intensity=3, period=30)
STRATEGIES = ("one_for_one", "simple_one_for_one")


# -- messages (plain dataclasses: they cross processes pickled) ---------------

@dataclass
class StartWorkers:
    """Start ``count`` workers with ``config`` (each gets a copy plus its
    ``worker_index``). ``owner_pid``: the launcher's pid, watched so that a
    killed launcher does not leave the node running."""
    count: int
    config: dict = field(default_factory=dict)
    flags: SupFlags = DEFAULT_FLAGS
    owner_pid: int | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be >= 1")
        if self.flags.strategy not in STRATEGIES:
            raise ValueError(f"worker processes are independent: strategy must be one of "
                             f"{STRATEGIES}, not {self.flags.strategy!r}")


@dataclass
class WorkersStarted:
    """Every worker reported started; pids in slot order."""
    pids: tuple[int, ...]
    supervisor_pid: int
    admin_pid: int


@dataclass
class ReportWorkers:
    """Reply with ``WorkersReported``."""


@dataclass
class WorkerInfo:
    slot: int
    pid: int | None              # None while (re)starting
    started_at: float | None     # wall-clock time its WorkerStarted arrived


@dataclass
class WorkersReported:
    workers: tuple[WorkerInfo, ...]
    restarts: int                # restarts since StartWorkers
    supervisor_pid: int
    found_dead: int = 0          # deaths seen by the liveness check before ChildActorExited


@dataclass
class StopWorkers:
    """Stop every worker in reverse start order; reply ``WorkersStopped``."""


@dataclass
class WorkersStopped:
    """Every worker has exited."""


@dataclass
class NodeSupervisorStopped:
    """Sent to the owner when the supervisor gives up and exits."""
    reason: str


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
