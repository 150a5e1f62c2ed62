"""Start a node: the Thespian ActorSystem, the NodeSupervisor and its workers.

``run_node(args)`` is ``run.py node``: it confines every Thespian listener to
``args.bind`` (loopback by default, see ``thespian_loopback``), starts the
ActorSystem (``multiprocTCPBase``, ``fork`` start method, admin port
``args.admin_port`` or a free one), creates the ``NodeSupervisor`` and asks it
to start ``args.workers`` workers, logs that the node is up, then waits for
Ctrl-C or SIGTERM. Meanwhile it listens for ``NodeSupervisorStopped``
(escalation) and checks every few seconds that the supervisor still answers;
either ending the wait returns 1. Shutdown stops the workers in reverse start
order (``StopWorkers``), shuts the ActorSystem down, and makes sure none of
the node's processes is left: the Admin runs detached (``setsid`` and a double
fork), so the launcher records its process tree while it is up and
SIGKILLs whatever of it outlives the shutdown.

``start_actor_system``, ``start_workers``, ``ask_for`` and ``stop_node`` are
the same steps for tests and benchmarks.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from supervisor import thespian_loopback
from supervisor.cluster_directory import (LEADER_CAPABILITY, NODE_CAPABILITY, DirectoryFound,
                                          Ping, Pong, Rendezvous, WhereIs)
from supervisor.data_lock import DataDirInUse, DataDirLock
from supervisor.node_supervisor import (DEFAULT_FLAGS, NodeSupervisor, NodeSupervisorStopped,
                                        ReportWorkers, StartWorkers, StopWorkers,
                                        WorkersReported, WorkersStarted, WorkersStopped,
                                        pid_alive)
from supervisor.procs import listener_pids, process_group, process_tree, reap
from supervisor.spec import SupFlags
from supervisor.worker_process import LOG_FORMAT

__all__ = ["run_node", "http_ports", "reserve_port", "start_actor_system", "start_workers",
           "ask_for", "stop_node", "free_port"]

log = logging.getLogger("switchboard.launcher")

HEALTH_CHECK_EVERY = 5.0      # seconds between "are you there?" asks to the supervisor
ASK_TIMEOUT = 5.0
ALIVE_CHECK_EVERY = 0.5       # seconds between checks that an awaited process lives
PING_TIMEOUT = 2.0            # seconds a member waits for the cluster directory
DIRECTORY_CHECK_EVERY = 1.0   # seconds between a member's pings of it


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_ports(base: int, workers: int) -> list[int]:
    """One HTTP port per worker slot: ``base``, ``base + 1``, ... (``base`` 0:
    a free port for each, see ``reserve_port``)."""
    return [base + slot if base else 0 for slot in range(workers)]


def reserve_port(bind: str, port: int = 0) -> socket.socket:
    """Hold ``port`` (0: a free one, read back with ``getsockname``) on
    ``bind`` for as long as the returned socket is open: it is bound with
    SO_REUSEPORT and never listens, so it takes no connection, the workers'
    listeners (SO_REUSEPORT too) bind beside it, and every other bind of the
    port is refused, an ephemeral one included. A port found free and released
    at once (``free_port``) could be taken before a worker bound it, by a
    Thespian actor's listener or a connection's source port; the worker then
    failed to start until its supervisor gave up (seen in CI). Raises OSError
    if ``port`` is held by anything else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def start_actor_system(bind: str = "127.0.0.1", admin_port: int = 0, node: str | None = None,
                       join: tuple[str, int] | None = None):
    """Start a multiprocTCPBase ActorSystem whose listeners all bind ``bind``;
    returns ``(actor_system, admin_port)``. ``node``: this node's name in a
    cluster; it leads the Thespian convention unless it ``join``s the one
    led by the system at ``(host, admin port)``."""
    thespian_loopback.tune_transport_environment()
    thespian_loopback.confine_listeners(bind)
    from thespian.actors import ActorSystem

    port = admin_port or free_port(bind if bind not in ("", "0.0.0.0") else "127.0.0.1")
    capabilities = {"Admin Port": port, "Process Startup Method": "fork"}
    if node is not None:
        capabilities[NODE_CAPABILITY] = node
        if join is None:
            capabilities[LEADER_CAPABILITY] = True
        else:
            capabilities["Convention Address.IPv4"] = tuple(join)
    # logDefs stays None: logDefs=False breaks actor creation on this base.
    return ActorSystem("multiprocTCPBase", capabilities, transientUnique=True), port


def ask_for(asys, address, message, reply_types: tuple[type, ...], timeout: float,
            alive: Callable[[], bool] | None = None):
    """``ask`` and keep listening until a reply of one of ``reply_types``
    arrives (an ask returns whatever reaches this client first); None on
    timeout, or as soon as ``alive()`` (checked every ``ALIVE_CHECK_EVERY``
    s) says the process that should answer is gone."""
    deadline = time.monotonic() + timeout
    step = timeout if alive is None else min(timeout, ALIVE_CHECK_EVERY)
    reply = asys.ask(address, message, step)
    while not isinstance(reply, reply_types):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (alive is not None and not alive()):
            return None
        if reply is not None:
            log.debug("ignored while waiting for %s: %r", reply_types, reply)
        reply = asys.listen(min(remaining, step))
    return reply


def find_cluster_directory(asys, timeout: float = 30.0):
    """From a member: the address of the cluster directory on the leader,
    through a ``Rendezvous`` created there (supervisor/cluster_directory.py);
    None if the leader cannot be reached within ``timeout``. Joining the
    convention takes a moment, so creation is retried until then."""
    from thespian.actors import ActorAddress, ActorSystemException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rendezvous = asys.createActor(Rendezvous,
                                          targetActorRequirements={LEADER_CAPABILITY: True})
        except ActorSystemException as exc:       # no leader in the convention yet
            log.debug("no convention leader yet: %s", exc)
            time.sleep(0.5)
            continue
        reply = ask_for(asys, rendezvous, WhereIs(), (ActorAddress,),
                        min(5.0, max(0.1, deadline - time.monotonic())))
        if reply is not None:
            return reply
    return None


def start_workers(asys, count: int, config: dict[str, Any], flags: SupFlags = DEFAULT_FLAGS,
                  owner_pid: int | None = None, timeout: float | None = None):
    """Create a NodeSupervisor and have it start ``count`` workers; returns
    ``(supervisor_address, reply)`` where reply is ``WorkersStarted``,
    ``NodeSupervisorStopped`` or None (timed out)."""
    supervisor = asys.createActor(NodeSupervisor)
    timeout = timeout or 30.0 + 20.0 * count
    reply = ask_for(asys, supervisor, StartWorkers(count, config, flags, owner_pid),
                    (WorkersStarted, NodeSupervisorStopped), timeout)
    return supervisor, reply


def stop_node(asys, supervisor, timeout: float = 30.0, supervisor_pid: int | None = None
              ) -> bool:
    """Stop the workers in reverse start order; True if they all stopped.
    With ``supervisor_pid``, a supervisor that is gone (signalled with the
    rest of the node: ``pkill -f``, a systemd stop) is not waited for."""
    alive = None if supervisor_pid is None else (lambda: pid_alive(supervisor_pid))
    reply = ask_for(asys, supervisor, StopWorkers(), (WorkersStopped, NodeSupervisorStopped),
                    timeout, alive)
    return reply is not None


class _StopRequested:
    """SIGTERM / SIGINT handlers that only raise a flag, restored on exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequested":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum


def _wait(asys, supervisor, stop: _StopRequested, check: Any = None,
          supervisor_pid: int | None = None) -> int:
    """Until a stop signal (0) or the supervisor escalates or vanishes (1).
    ``check()`` runs every ``DIRECTORY_CHECK_EVERY`` s (a member's check of
    its cluster directory: a restarted leader is found within seconds)."""
    next_check = time.monotonic() + HEALTH_CHECK_EVERY
    next_watch = time.monotonic() + DIRECTORY_CHECK_EVERY
    while stop.signal is None:
        msg = asys.listen(0.25)
        if isinstance(msg, NodeSupervisorStopped):
            log.error("node supervisor stopped (%s): exiting", msg.reason)
            return 1
        if supervisor_pid is not None and not pid_alive(supervisor_pid) and stop.signal is None:
            last = asys.listen(0.25)        # why it went may still be on its way
            if isinstance(last, NodeSupervisorStopped):
                log.error("node supervisor stopped (%s): exiting", last.reason)
            else:
                log.error("node supervisor process %d is gone: exiting", supervisor_pid)
            return 1
        if check is not None and time.monotonic() >= next_watch:
            stopped = check()
            if stopped is not None:
                log.error("node supervisor stopped (%s): exiting", stopped.reason)
                return 1
            next_watch = time.monotonic() + DIRECTORY_CHECK_EVERY
        if time.monotonic() >= next_check:
            reply = ask_for(asys, supervisor, ReportWorkers(),
                            (WorkersReported, NodeSupervisorStopped), ASK_TIMEOUT)
            if isinstance(reply, NodeSupervisorStopped):
                log.error("node supervisor stopped (%s): exiting", reply.reason)
                return 1
            if reply is None and stop.signal is None:
                log.error("node supervisor does not answer: exiting")
                return 1
            next_check = time.monotonic() + HEALTH_CHECK_EVERY
    log.info("got %s: shutting down", signal.Signals(stop.signal).name)
    return 0


class _DirectoryWatch:
    """A member's check that the cluster directory still answers. When the
    leader is restarted its directory is a new actor: find it again through
    a ``Rendezvous`` and tell the node supervisor (``DirectoryFound``), which
    heartbeats it and has the workers join it (the directory's state is
    rebuilt from the joins)."""

    def __init__(self, asys, supervisor, directory) -> None:
        self.asys, self.supervisor, self.directory = asys, supervisor, directory

    def __call__(self) -> NodeSupervisorStopped | None:
        """None, or the supervisor's ``NodeSupervisorStopped`` if it came
        in meanwhile (an ask takes whatever reaches the launcher first)."""
        reply = ask_for(self.asys, self.directory, Ping(), (Pong, NodeSupervisorStopped),
                        PING_TIMEOUT)
        if reply is not None:
            return reply if isinstance(reply, NodeSupervisorStopped) else None
        found = find_cluster_directory(self.asys, timeout=PING_TIMEOUT)
        if found is None:
            log.warning("the cluster directory does not answer; the leader may be down")
        elif found != self.directory:
            log.warning("the cluster directory moved (the leader restarted): joining it again")
            self.directory = found
            self.asys.tell(self.supervisor, DirectoryFound(found))


def _own_group(admin_pid: int) -> int | None:
    """The node's process group: the Admin starts a session of its own, and
    every process of the node (logger, node supervisor, workers, their LMDB
    writers) is in it. None if it is this launcher's group, or unknown."""
    try:
        group = os.getpgid(admin_pid)
    except OSError:
        return None
    return None if group == os.getpgrp() else group


def _node_processes(admin_port: int) -> list[int]:
    """The node's processes now: the Admin (found by its listener) and its
    descendants (logger, node supervisor, workers). Never this process."""
    pids = {p for admin in listener_pids(admin_port) for p in process_tree(admin)}
    pids.discard(os.getpid())
    return sorted(pids)


def run_node(args) -> int:
    """``run.py node``: start a node, wait for Ctrl-C / SIGTERM, stop it."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    if args.workers < 1:
        log.error("--workers must be >= 1")
        return 2
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with DataDirLock(data_dir):         # one node per data directory
            return _run_node(args, data_dir)
    except DataDirInUse as exc:
        log.error("%s", exc)
        return 1


def _run_node(args, data_dir: Path) -> int:
    name, join = getattr(args, "name", None), getattr(args, "join", None)
    if join is not None and name is None:
        log.error("--join needs --name: every node of a cluster has a name")
        return 2
    try:
        asys, admin_port = start_actor_system(args.bind, args.admin_port, name, join)
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        log.error("could not start the Thespian ActorSystem on %s:%s: %s",
                  args.bind, args.admin_port, exc)
        return 1
    cluster: dict[str, Any] = {}
    if name is not None:
        cluster = {"node_name": name, "cluster_leader": join is None,
                   "advertise": getattr(args, "advertise", None)}
        if join is not None:
            cluster["cluster_directory"] = find_cluster_directory(asys)
            if cluster["cluster_directory"] is None:
                log.error("could not reach the cluster's leader at %s:%d", *join)
                asys.shutdown()
                return 1
            log.info("node %s joined the cluster led by %s:%d", name, *join)
    wanted = [args.port, getattr(args, "media_port", 5280),
              *http_ports(getattr(args, "http_port", 8222), args.workers)]
    held: list[socket.socket] = []
    try:
        for wanted_port in wanted:
            held.append(reserve_port(args.bind, wanted_port))
    except OSError as exc:
        log.error("port %d on %s is in use: %s", wanted_port, args.bind or "0.0.0.0", exc)
        for sock in held:
            sock.close()
        asys.shutdown()
        return 1
    port, media_port, *worker_http = [sock.getsockname()[1] for sock in held]
    config = {"data_dir": str(data_dir), "bind": args.bind, "admin_port": admin_port,
              "port": port, "media_port": media_port,
              "log_level": logging.getLevelName(logging.getLogger().level),
              "http_ports": worker_http,
              **cluster, **dict(getattr(args, "settings", None) or {})}
    node_pids = _node_processes(admin_port)
    node_group: int | None = None
    rc = 1
    try:
        with _StopRequested() as stop:
            supervisor, reply = start_workers(asys, args.workers, config, owner_pid=os.getpid())
            if isinstance(reply, WorkersStarted):
                log.info("node up: clients %s:%d, admin %s:%d (pid %d), node supervisor pid %d, "
                         "%d workers (pids %s), data dir %s", args.bind, port,
                         args.bind, admin_port, reply.admin_pid, reply.supervisor_pid,
                         len(reply.pids), " ".join(map(str, reply.pids)), data_dir)
                log.info("media: http://%s:%d/media", args.bind, media_port)
                log.info("dashboard: http://%s:%d/ (worker HTTP ports %s)", args.bind,
                         config["http_ports"][0], " ".join(map(str, config["http_ports"])))
                node_pids = sorted({*node_pids, reply.admin_pid, reply.supervisor_pid,
                                    *reply.pids})
                node_group = _own_group(reply.admin_pid)
                watch = (_DirectoryWatch(asys, supervisor, config["cluster_directory"])
                         if join is not None else None)
                rc = _wait(asys, supervisor, stop, watch, reply.supervisor_pid)
                node_pids = sorted(set(node_pids) | set(_node_processes(admin_port)))
                if rc == 0 and not stop_node(asys, supervisor, 10.0 + 6.0 * args.workers,
                                             reply.supervisor_pid):
                    if pid_alive(reply.supervisor_pid):
                        log.warning("workers did not all stop in time")
                    else:                       # signalled with the rest: pkill, systemd
                        log.warning("the node supervisor is gone: reaping what is left")
            elif isinstance(reply, NodeSupervisorStopped):
                log.error("node supervisor stopped while starting workers (%s)", reply.reason)
            else:
                log.error("workers did not start in time")
    finally:
        asys.shutdown()
        for sock in held:
            sock.close()
        if node_group is not None:              # workers restarted since, and whatever
            node_pids = sorted({*node_pids, *process_group(node_group)})   # the Admin left
        leftovers = reap(node_pids)
        if leftovers:
            log.warning("killed processes left after shutdown: %s", leftovers)
        log.info("node stopped (exit status %d)", rc)
    return rc
