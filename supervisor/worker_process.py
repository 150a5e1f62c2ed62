"""A worker process: one Thespian actor per OS process, with the worker's
asyncio loop (uvloop when installed) running beside Thespian's own loop in a
second thread.

The asyncio side runs the worker's light-actor tree: the coroutine named by
``config["tree"]`` (default ``supervisor.tree.run_worker_tree``), called as
``tree(config, stopping)``, which runs until ``stopping`` is set and then
shuts the tree down in order. If it accepts a ``started`` keyword it is also
given an ``asyncio.Event`` to set once the tree is up, and the worker reports
"started" only then; otherwise "started" means the loop runs and the tree
coroutine has taken its first step.

If the tree raises (or returns before ``stopping`` was set) the process exits,
so that its ``NodeSupervisor`` restarts it: the asyncio thread sends SIGTERM
to the process's main thread, which Thespian turns into an
``ActorExitRequest`` (its handler for exit signals), and a once-a-second tick
catches the case where that did not happen.

Messages handled (all from the parent ``NodeSupervisor``):

- ``StartWorker(slot, config)``: start the asyncio side; reply
  ``WorkerStarted(slot, pid)`` once it runs, or ``WorkerStartFailed(slot,
  pid, reason)`` and exit.
- ``ActorExitRequest`` (Thespian's): set ``stopping`` thread-safely, join the
  asyncio thread for at most ``config["shutdown"]`` seconds; if the tree had
  failed, tell the parent ``WorkerFailed(slot, pid, reason)`` first.
- ``WakeupMessage`` with a ``_Tick``: exit if the asyncio thread died or the
  parent process is gone (a SIGKILLed supervisor must not leave its workers
  running: OTP's link between supervisor and child).

With a session directory in the config (``config["directory"]``, its
Thespian address), the worker is also a member of the node's mesh of
workers: its ``Bridge`` (``supervisor/bridge.py``) carries batches between
the asyncio side's ``Cluster`` (``actors/cluster.py``) and Thespian. Every
handler returns a ``ThespianWatch`` on the bridge's wake-up socket, so a
batch posted by the asyncio side wakes Thespian's ``select`` at once
(``WatchMessage``: drain and send). Mesh messages from the directory and
from peer workers (``RouteBatch``, ``MeshView``, ``OwnersChanged``, ...) are
handed to the asyncio side as they are.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from thespian.actors import (ActorExitRequest, ActorTypeDispatcher, ThespianWatch,
                             WakeupMessage, WatchMessage)

from supervisor import cluster_directory as nodes
from supervisor import directory as mesh
from supervisor import thespian_loopback
from supervisor.bridge import Bridge
from supervisor.spec import resolve

__all__ = ["WorkerProcess", "StartWorker", "WorkerStarted", "WorkerStartFailed",
           "WorkerFailed", "DEFAULT_TREE", "ASYNCIO_THREAD", "use_stderr_logging", "tune_gc"]

thespian_loopback.apply_from_environment()   # no-op under fork; see that module

DEFAULT_TREE = "supervisor.tree.run_worker_tree"
DEFAULT_SHUTDOWN = 5.0        # seconds to wait for the tree to stop (OTP's worker default)
DEFAULT_START_TIMEOUT = 15.0  # seconds for the tree to come up
TICK = timedelta(seconds=1.0)
ASYNCIO_THREAD = "worker-asyncio"   # the thread that runs a worker's tree


# -- messages (plain dataclasses: they cross processes pickled) ---------------

@dataclass
class StartWorker:
    """Start the worker's asyncio side. ``slot`` is the worker's place in its
    supervisor's start order; ``config`` is handed to the tree as is."""
    slot: int
    config: dict = field(default_factory=dict)


@dataclass
class WorkerStarted:
    """The worker in ``slot`` is up; ``pid`` is its OS process."""
    slot: int
    pid: int


@dataclass
class WorkerStartFailed:
    """The worker in ``slot`` could not start; it exits next."""
    slot: int
    pid: int
    reason: str


@dataclass
class WorkerFailed:
    """The worker's tree crashed or ended on its own; the process exits next."""
    slot: int
    pid: int
    reason: str


@dataclass
class _Tick:
    """The worker's own periodic check (a ``wakeupAfter`` payload)."""


# -- logging -----------------------------------------------------------------

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def use_stderr_logging(level: str | int = "INFO") -> None:
    """Log from this actor process straight to stderr (inherited from the
    launcher), instead of through Thespian's logger process.

    Thespian replaces the root logger of an actor process with a forwarder
    that sends each record over TCP to its logger process and drops anything
    below WARNING; the asyncio thread would also log through it from a second
    thread. This resets logging the way Thespian set it up (a new root and
    manager), so loggers created from now on write to stderr directly."""
    root = logging.RootLogger(logging.getLevelName(level) if isinstance(level, str) else level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    logging.root = root
    logging.Logger.root = root
    logging.Logger.manager = logging.Manager(root)


def _log() -> logging.Logger:
    return logging.getLogger("switchboard.worker")


# -- the asyncio side ----------------------------------------------------------

def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _accepts_started(tree: Callable[..., Any]) -> bool:
    try:
        return "started" in inspect.signature(tree).parameters
    except (TypeError, ValueError):
        return False


class AsyncioSide:
    """The worker's asyncio loop and tree, run in a daemon thread.

    ``outcome`` is None while the tree runs, then ``"normal"`` or the reason
    it failed. ``on_exit`` is called from the thread when the tree is done."""

    def __init__(self, tree: Callable[..., Any], config: dict,
                 on_exit: Callable[["AsyncioSide"], None]):
        self.tree, self.config, self.on_exit = tree, config, on_exit
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.stop_requested = False
        self.outcome: str | None = None
        self.started = threading.Event()      # set once up, or once done
        self.thread = threading.Thread(target=self._run, name=ASYNCIO_THREAD, daemon=True)

    def start(self, timeout: float) -> str | None:
        """Start the thread and wait until the tree is up; the failure reason,
        or None when it runs."""
        self.thread.start()
        if not self.started.wait(timeout):
            return f"tree not started within {timeout}s"
        return self.outcome

    def stop(self, timeout: float) -> bool:
        """Set ``stopping`` (thread-safely) and join; True if the thread ended."""
        self.stop_requested = True
        loop, stopping = self.loop, self.stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:      # loop already closed: the tree is done
                pass
        if self.thread.is_alive():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - the thread must report, not die silently
            self.outcome = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
            self.started.set()
            self.on_exit(self)

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        kwargs: dict[str, Any] = {}
        if _accepts_started(self.tree):
            kwargs["started"] = tree_up = asyncio.Event()
        task = asyncio.ensure_future(self.tree(self.config, self.stopping, **kwargs))
        if kwargs:
            up = asyncio.ensure_future(tree_up.wait())
            await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
        else:
            await asyncio.sleep(0)    # let the tree take its first step
        if not task.done():
            tune_gc()
            self.started.set()
        try:
            await task
        except BaseException as exc:  # noqa: BLE001 - any crash of the tree ends the worker
            _log().error("worker tree crashed", exc_info=exc)
            self.outcome = f"{type(exc).__name__}: {exc}"
            return
        self.outcome = "normal" if self.stopping.is_set() else "tree returned before stopping was set"


# Python's cyclic GC, at its default thresholds (700, 10, 10), ran ~160
# times a second in a worker under the relay load and took ~15% of its
# event loop's time: a reply of the LMDB writer unpickles thousands of
# objects at once, and messages in flight live long enough to be promoted
# and scanned again in the older generations. Nearly all of a worker's
# garbage is freed by reference counting; with these thresholds a
# collection runs every few seconds (docs/benchmarks.md, "Relay").
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Raise the GC thresholds, and move what exists once the tree is up
    (modules, the tree, its listeners) out of the collector's sight."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


# -- the Thespian side ---------------------------------------------------------

_MESH = (mesh.RouteBatch, mesh.MeshView, mesh.PeerUp, mesh.PeerDown, mesh.OwnersChanged,
         mesh.Claimed, mesh.Evict, mesh.DirectoryMoved,
         nodes.ClusterView, nodes.NodeUp, nodes.NodeDown, nodes.HomesChanged, nodes.Assigned,
         nodes.Shipment, nodes.Shipped, nodes.Call, nodes.Reply, nodes.DirectoryFound,
         nodes.WorkerLost)


class WorkerProcess(ActorTypeDispatcher):
    """A worker OS process (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._side: AsyncioSide | None = None
        self._slot: int | None = None
        self._parent = None
        self._ppid = os.getppid()
        self._running = False        # started and not yet asked to exit
        self._exit_requested = False
        self._shutdown = DEFAULT_SHUTDOWN
        self._bridge: Bridge | None = None
        self._tick_at = float("inf")     # monotonic time the periodic check is due

    def receiveMessage(self, msg: Any, sender: Any) -> Any:
        if self._bridge is not None and isinstance(msg, _MESH):
            self._bridge.deliver(msg)
        else:
            super().receiveMessage(msg, sender)
        if self._bridge is not None:
            self._bridge.drain(self.send)
        if time.monotonic() >= self._tick_at:   # its wakeup may have been dropped (below)
            self._tick()
        if self._bridge is not None:
            return ThespianWatch([self._bridge.wake_fd])
        return None

    def receiveMsg_WatchMessage(self, msg: WatchMessage, sender) -> None:
        pass                        # receiveMessage drains the bridge after every message

    def receiveMsg_StartWorker(self, msg: StartWorker, sender) -> None:
        if self._side is not None:
            _log().warning("worker %s: StartWorker again ignored", self._slot)
            return
        config = dict(msg.config)
        use_stderr_logging(config.get("log_level", "INFO"))
        self._slot, self._parent = msg.slot, sender
        self._shutdown = float(config.get("shutdown", DEFAULT_SHUTDOWN))
        pid = os.getpid()
        if config.get("directory") is not None:
            self._bridge = config["bridge"] = Bridge()
            self._bridge.address = self.myAddress
            config["worker_name"] = f"{config.get('node_name', 'node')}/{msg.slot}"
        try:
            tree = resolve(config.get("tree", DEFAULT_TREE))
            self._side = AsyncioSide(tree, config, self._tree_done)
            reason = self._side.start(float(config.get("start_timeout", DEFAULT_START_TIMEOUT)))
        except Exception as exc:  # noqa: BLE001 - a start failure is reported, then the worker exits
            reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            _log().error("worker %d (pid %d) failed to start: %s", msg.slot, pid, reason)
            self.send(sender, WorkerStartFailed(msg.slot, pid, reason))
            self._exit()
            return
        self._running = True
        self._arm_tick()
        _log().info("worker %d started (pid %d)", msg.slot, pid)
        self.send(sender, WorkerStarted(msg.slot, pid))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        was_running = self._running
        self._running, self._exit_requested = False, True
        side = self._side
        if side is None:
            return
        if not side.stop(self._shutdown):
            _log().warning("worker %s: tree still running after %.1fs; exiting anyway",
                           self._slot, self._shutdown)
        if was_running and side.outcome not in (None, "normal"):
            self.send(self._parent, WorkerFailed(self._slot, os.getpid(), side.outcome))

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if isinstance(msg.payload, _Tick) and time.monotonic() >= self._tick_at:
            self._tick()                # (else a stale one: the tick already ran)

    def _arm_tick(self) -> None:
        self._tick_at = time.monotonic() + TICK.total_seconds()
        self.wakeupAfter(TICK, _Tick())

    def _tick(self) -> None:
        """The periodic check. Also run from ``receiveMessage`` when overdue:
        Thespian drops a wakeup that comes due while the actor is blocked in
        a ``send`` (its transport hands it to the send loop, which ignores
        it), and a worker sends whenever its bridge has something."""
        self._tick_at = float("inf")
        if self._exit_requested:
            return
        if self._side is not None and not self._side.thread.is_alive():
            _log().error("worker %s: asyncio side ended (%s); exiting", self._slot, self._side.outcome)
            self._exit()
        elif os.getppid() != self._ppid:
            _log().error("worker %s: supervisor process gone; exiting", self._slot)
            self._exit()
        else:
            self._arm_tick()

    def _exit(self) -> None:
        self._exit_requested = True
        self.send(self.myAddress, ActorExitRequest())

    def _tree_done(self, side: AsyncioSide) -> None:
        """Called in the asyncio thread when the tree is done. If nobody asked
        it to stop, make the process exit: SIGTERM to the main thread is what
        Thespian turns into an ActorExitRequest (and it interrupts select)."""
        if self._running and not side.stop_requested:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
