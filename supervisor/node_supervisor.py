"""The node supervisor: a Thespian actor that starts the node's worker
processes and restarts them under OTP's intensity/period rules.

Workers are started one at a time, in slot order: each reports
``WorkerStarted`` (with its OS pid) before the next is created, like OTP's
``start_link``. A worker that dies is restarted in its slot (``one_for_one``:
workers share only LMDB and the listening port, so one's death says nothing
about its siblings). A death is noticed two ways:

- ``ChildActorExited``: Thespian's parent catches SIGCHLD and synthesizes it,
  also for a SIGKILLed child (measured ~2 ms after the kill, 20/20; see
  docs/processes.md). A second one for the same child is ignored: a child
  record is dropped on the first, so a repeat matches no slot.
- a liveness tick (every ``config["liveness_check"]`` s, default 1) that
  reads ``/proc/<pid>/stat`` of every worker: a backstop for a lost signal.

Each restart goes through ``restart_window.add_restart``; past ``intensity``
restarts in ``period`` seconds the supervisor stops every worker in reverse
start order (``ActorExitRequest``, then SIGKILL after ``config["shutdown"]``
s), tells its owner ``NodeSupervisorStopped`` and exits: escalation, which the
launcher turns into a non-zero exit.

In a cluster of nodes, the leader's supervisor creates the
``ClusterDirectory`` (``config["cluster_leader"]``; supervisor/cluster_directory.py),
every node's supervisor sends it a ``NodeHeartbeat`` on each liveness tick,
and the workers get its address as ``config["cluster_directory"]``.

With more than one worker (or ``config["mesh"]``, or a cluster), the supervisor first
starts the node's session ``Directory`` (``supervisor/directory.py``) as
its own child and hands its address to every worker in the config; it
tells the directory ``WorkerDown`` when a worker exits, and restarts a
directory that dies, telling the workers where the new one is
(``DirectoryMoved``; its state is rebuilt from them).

Messages handled: ``StartWorkers`` (reply ``WorkersStarted``),
``ReportWorkers`` (reply ``WorkersReported``), ``StopWorkers`` (reply
``WorkersStopped``), the workers' ``WorkerStarted`` / ``WorkerStartFailed`` /
``WorkerFailed``, Thespian's ``ChildActorExited``, ``ActorExitRequest`` and
``WakeupMessage`` (ticks and timeouts). Sent to the owner on escalation:
``NodeSupervisorStopped``. If the owner process (the launcher) disappears,
the supervisor stops its workers and shuts the whole ActorSystem down; if it
disappears after the workers were stopped, before the Admin ended the
supervisor (both killed together), the supervisor exits by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from thespian.actors import (ActorExitRequest, ActorTypeDispatcher, ChildActorExited,
                             WakeupMessage)

from supervisor import thespian_loopback
from supervisor.cluster_directory import (DIRECTORY_NAME, FORGET_AFTER, ClusterDirectory,
                                          DirectoryFound, DirectorySettings, NodeHeartbeat,
                                          WorkerLost)
from supervisor.directory import Directory, DirectoryMoved, StartDirectory, WorkerDown
from supervisor.node_protocol import (DEFAULT_FLAGS, NodeSupervisorStopped, ReportWorkers,
                                      StartWorkers, StopWorkers, WorkerInfo, WorkersReported,
                                      WorkersStarted, WorkersStopped, pid_alive)
from supervisor.restart_window import add_restart
from supervisor.worker_process import (DEFAULT_SHUTDOWN, DEFAULT_START_TIMEOUT, StartWorker,
                                       WorkerFailed, WorkerProcess, WorkerStarted,
                                       WorkerStartFailed, use_stderr_logging)

__all__ = ["NodeSupervisor", "DEFAULT_FLAGS", "StartWorkers", "WorkersStarted",
           "ReportWorkers", "WorkersReported", "WorkerInfo", "StopWorkers",
           "WorkersStopped", "NodeSupervisorStopped", "pid_alive"]

thespian_loopback.apply_from_environment()   # no-op under fork; see that module

DEFAULT_LIVENESS_CHECK = 1.0


def _log() -> logging.Logger:
    return logging.getLogger("switchboard.node_supervisor")


@dataclass
class _Tick:
    pass


@dataclass
class _StartTimeout:
    slot: int
    generation: int


@dataclass
class _ShutdownTimeout:
    slot: int
    generation: int


@dataclass
class _Worker:
    address: Any
    generation: int
    pid: int | None = None
    started_at: float | None = None


class NodeSupervisor(ActorTypeDispatcher):
    """The node's process supervisor (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = "idle"     # idle | running | stopping | escalating | owner_gone | stopped
        #                          | exiting (ActorExitRequest: from any phase, for good)
        self._slots: list[_Worker | None] = []
        self._queue: deque[int] = deque()       # slots waiting to start, in order
        self._starting: int | None = None
        self._stop_queue: list[int] = []
        self._stopping: int | None = None
        self._restarts: tuple[float, ...] = ()
        self._restart_count = self._found_dead = 0
        self._generation = 0
        self._reason = ""
        self._owner = self._start_requester = self._stop_requester = None
        self._directory = None

    # -- commands ---------------------------------------------------------------

    def receiveMsg_StartWorkers(self, msg: StartWorkers, sender) -> None:
        if self._phase not in ("idle", "stopped"):
            _log().warning("StartWorkers while %s: ignored", self._phase)
            return
        self._config, self._flags, self._owner_pid = dict(msg.config), msg.flags, msg.owner_pid
        use_stderr_logging(self._config.get("log_level", "INFO"))
        # The worker itself waits ``shutdown`` s for its tree; grant 1 s more
        # before the brutal kill (OTP's shutdown timeout, then kill).
        self._shutdown = float(self._config.get("shutdown", DEFAULT_SHUTDOWN)) + 1.0
        self._start_timeout = float(self._config.get("start_timeout", DEFAULT_START_TIMEOUT)) + 5.0
        self._check = timedelta(seconds=float(self._config.get("liveness_check",
                                                               DEFAULT_LIVENESS_CHECK)))
        self._owner = self._start_requester = sender
        self._slots = [None] * msg.count
        self._queue = deque(range(msg.count))
        self._restarts, self._restart_count, self._phase = (), 0, "running"
        if self._config.get("cluster_leader"):
            self._start_cluster_directory()
        if msg.count > 1 or self._config.get("mesh") or self._config.get("cluster_directory"):
            self._start_directory()
        _log().info("starting %d workers (%s, intensity %d, period %ss)", msg.count,
                    self._flags.strategy, self._flags.intensity, self._flags.period)
        self.wakeupAfter(self._check, _Tick())
        self._start_next()

    def receiveMsg_ReportWorkers(self, msg: ReportWorkers, sender) -> None:
        workers = tuple(WorkerInfo(i, w.pid if w else None, w.started_at if w else None)
                        for i, w in enumerate(self._slots))
        self.send(sender, WorkersReported(workers, self._restart_count, os.getpid(),
                                          self._found_dead))

    def receiveMsg_StopWorkers(self, msg: StopWorkers, sender) -> None:
        if self._phase in ("idle", "stopped", "exiting"):
            self.send(sender, WorkersStopped())
            return
        self._stop_requester = sender
        if self._phase == "running":
            self._begin_stop("stopping", "asked to stop")

    def receiveMsg_DirectoryFound(self, msg: DirectoryFound, sender) -> None:
        """The leader was restarted: heartbeat the new cluster directory, and
        have the workers join it (new workers get it in their config)."""
        moved = msg.address != self._config.get("cluster_directory")
        _log().warning("the cluster directory %s: joining it again",
                       "moved" if moved else "forgot this node's workers")
        self._config["cluster_directory"] = msg.address
        for worker in self._slots:
            if worker is not None:
                self.send(worker.address, msg)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        # Thespian now sends ActorExitRequest to every child at once; the
        # orderly, reverse-order stop is StopWorkers (the launcher sends it first).
        # Their ChildActorExited still come here while Thespian waits for them:
        # from now on nothing is restarted (a SIGTERM to this process alone is
        # such a request, and a worker restarted now was left orphaned).
        self._phase = "exiting"
        _log().info("node supervisor exiting")

    # -- events from workers ------------------------------------------------------

    def receiveMsg_WorkerStarted(self, msg: WorkerStarted, sender) -> None:
        worker = self._worker_at(msg.slot, sender)
        if worker is None:
            return
        worker.pid, worker.started_at = msg.pid, time.time()
        if self._starting == msg.slot:
            self._starting = None
        _log().info("worker %d started (pid %d)", msg.slot, msg.pid)
        if self._phase == "running":
            self._start_next()
        else:                      # started while we were stopping: stop it too
            self._stop_next()

    def receiveMsg_WorkerStartFailed(self, msg: WorkerStartFailed, sender) -> None:
        worker = self._worker_at(msg.slot, sender)
        if worker is not None:
            worker.pid = msg.pid
        _log().error("worker %d (pid %d) failed to start: %s", msg.slot, msg.pid, msg.reason)

    def receiveMsg_WorkerFailed(self, msg: WorkerFailed, sender) -> None:
        _log().error("worker %d (pid %d) failed: %s", msg.slot, msg.pid, msg.reason)

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender) -> None:
        if self._directory is not None and msg.childAddress == self._directory:
            self._restart_directory()
            return
        if (self._config.get("cluster_leader") and self._phase == "running"
                and msg.childAddress == self._config.get("cluster_directory")):
            _log().warning("the cluster directory exited; starting a new one")
            self._start_cluster_directory()   # rebuilt from the joins: members find it again
            for worker in self._slots:
                if worker is not None:
                    self.send(worker.address, DirectoryFound(self._config["cluster_directory"]))
            return
        for slot, worker in enumerate(self._slots):
            if worker is not None and worker.address == msg.childAddress:
                self._worker_exited(slot, "exited")
                return
        # A repeat for a child already handled (Thespian sometimes sends two).
        _log().debug("ChildActorExited for %s ignored: not a current worker", msg.childAddress)

    # -- timers -------------------------------------------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        payload = msg.payload
        if isinstance(payload, _Tick):
            self._tick()
        elif isinstance(payload, _StartTimeout):
            worker = self._slots[payload.slot] if payload.slot < len(self._slots) else None
            if worker is not None and worker.generation == payload.generation and worker.pid is None:
                _log().error("worker %d not started within %.0fs; stopping it",
                             payload.slot, self._start_timeout)
                self.send(worker.address, ActorExitRequest())
        elif isinstance(payload, _ShutdownTimeout):
            worker = self._slots[payload.slot] if payload.slot < len(self._slots) else None
            if worker is not None and worker.generation == payload.generation:
                _log().warning("worker %d (pid %s) not stopped within %.1fs; killing it",
                               payload.slot, worker.pid, self._shutdown)
                if worker.pid is not None and pid_alive(worker.pid):
                    os.kill(worker.pid, signal.SIGKILL)
                else:
                    self._worker_exited(payload.slot, "not stopped in time")

    def _tick(self) -> None:
        if self._phase == "stopped":
            # The Admin ends this actor when the launcher shuts the system down.
            # With the launcher gone (and the Admin with it), nobody will.
            if self._owner_pid and not pid_alive(self._owner_pid):
                _log().warning("owner process %d is gone after the stop: exiting",
                               self._owner_pid)
                self.send(self.myAddress, ActorExitRequest())
            else:
                self.wakeupAfter(self._check, _Tick())
            return
        for slot, worker in enumerate(self._slots):
            if worker is not None and worker.pid is not None and not pid_alive(worker.pid):
                _log().warning("worker %d (pid %d) found dead by the liveness check", slot, worker.pid)
                self._found_dead += 1
                self._worker_exited(slot, "found dead")
        if self._phase == "running" and self._config.get("cluster_directory") is not None:
            self.send(self._config["cluster_directory"],
                      NodeHeartbeat(self._config.get("node_name", "node")))
        if self._phase == "running" and self._owner_pid and not pid_alive(self._owner_pid):
            _log().error("owner process %d is gone: stopping the node", self._owner_pid)
            self._begin_stop("owner_gone", "owner process gone")
        self.wakeupAfter(self._check, _Tick())

    # -- starting -------------------------------------------------------------------

    def _start_next(self) -> None:
        if self._phase != "running" or self._starting is not None:
            return
        if not self._queue:
            if self._start_requester is not None:
                pids = tuple(w.pid for w in self._slots if w is not None)
                self.send(self._start_requester, WorkersStarted(pids, os.getpid(), os.getppid()))
                self._start_requester = None
            return
        slot = self._queue.popleft()
        self._generation += 1
        address = self.createActor(WorkerProcess)
        self._slots[slot] = _Worker(address, self._generation)
        self._starting = slot
        self.send(address, StartWorker(slot, {**self._config, "worker_index": slot,
                                              "worker_count": len(self._slots)}))
        self.wakeupAfter(timedelta(seconds=self._start_timeout),
                         _StartTimeout(slot, self._generation))

    def _start_cluster_directory(self) -> None:
        self._config["cluster_directory"] = self.createActor(ClusterDirectory,
                                                             globalName=DIRECTORY_NAME)
        forget = self._config.get("forget_workers_after")
        self.send(self._config["cluster_directory"],
                  DirectorySettings(FORGET_AFTER if forget is None else float(forget)))

    def _start_directory(self) -> None:
        self._directory = self._config["directory"] = self.createActor(Directory)
        self.send(self._directory, StartDirectory())

    def _restart_directory(self) -> None:
        if self._phase != "running":
            return
        _log().warning("the session directory exited; starting a new one")
        self._start_directory()
        for worker in self._slots:
            if worker is not None:
                self.send(worker.address, DirectoryMoved(self._directory))

    def _worker_exited(self, slot: int, how: str) -> None:
        worker, self._slots[slot] = self._slots[slot], None
        name = f"{self._config.get('node_name', 'node')}/{slot}"
        if self._directory is not None:
            self.send(self._directory, WorkerDown(name, worker.pid if worker is not None else None))
        if self._config.get("cluster_directory") is not None:
            self.send(self._config["cluster_directory"],
                      WorkerLost(name, worker.address if worker is not None else None))
        if self._starting == slot:
            self._starting = None
        if self._phase in ("stopping", "escalating", "owner_gone"):
            if self._stopping == slot:
                self._stopping = None
            self._stop_next()
            return
        if self._phase != "running":
            return
        ok, self._restarts = add_restart(self._restarts, time.monotonic(),
                                         self._flags.intensity, self._flags.period)
        if not ok:
            _log().error("worker %d (pid %s) %s: reached maximum restart intensity "
                         "(more than %d restarts in %ss); stopping all workers",
                         slot, worker.pid if worker else None, how,
                         self._flags.intensity, self._flags.period)
            self._begin_stop("escalating", "reached_max_restart_intensity")
            return
        self._restart_count += 1
        _log().warning("worker %d (pid %s) %s; restarting it", slot,
                       worker.pid if worker else None, how)
        self._queue.appendleft(slot)
        self._start_next()

    # -- stopping: reverse start order, one at a time ------------------------------------

    def _begin_stop(self, phase: str, reason: str) -> None:
        self._phase, self._reason = phase, reason
        self._queue.clear()
        self._stop_queue = [slot for slot in reversed(range(len(self._slots)))]
        self._stopping = None
        self._stop_next()

    def _stop_next(self) -> None:
        if self._stopping is not None and self._slots[self._stopping] is not None:
            return                       # still waiting for that one
        while self._stop_queue:
            slot = self._stop_queue.pop(0)
            worker = self._slots[slot]
            if worker is None:
                continue
            self._stopping = slot
            self.send(worker.address, ActorExitRequest())
            self.wakeupAfter(timedelta(seconds=self._shutdown),
                             _ShutdownTimeout(slot, worker.generation))
            return
        if any(w is not None for w in self._slots):
            return                       # a worker still starting will be stopped when it reports
        self._stopped()

    def _stopped(self) -> None:
        phase, self._phase = self._phase, "stopped"
        _log().info("all workers stopped (%s)", self._reason)
        if self._stop_requester is not None:
            self.send(self._stop_requester, WorkersStopped())
            self._stop_requester = None
        if phase == "escalating":
            if self._owner is not None:
                self.send(self._owner, NodeSupervisorStopped(self._reason))
            self.send(self.myAddress, ActorExitRequest())
        elif phase == "owner_gone":
            self.actorSystemShutdown()

    def _worker_at(self, slot: int, sender) -> _Worker | None:
        worker = self._slots[slot] if 0 <= slot < len(self._slots) else None
        return worker if worker is not None and worker.address == sender else None
