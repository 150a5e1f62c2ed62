"""THE supervision tree of a worker process: the first file to open.

Start order is top to bottom; shutdown is the reverse. The level above this
(the Thespian ``NodeSupervisor`` starting worker processes) is in
``supervisor/node_supervisor.py``; ``docs/design.md`` draws both
(``python -m supervisor.draw``).

- ``registrar``: registration codes, device keys, login rate limits. It holds
  no state the others need, so its crash touches nothing else.
- ``media``: blob upload and download over HTTP, on its own thread; stateless
  (blobs are files named by their hash), so it restarts alone.
- ``chat`` (``rest_for_one``): each child depends on the ones above it. The
  presence hub and the session registry hold in-memory tables the sessions
  use; the listener's connections point at sessions. If one of them dies,
  everything after it restarts: connections close, clients reconnect, and
  every session re-reads its inbox from LMDB, so nothing is lost.
- ``sessions`` (``simple_one_for_one``): one ``Session`` per logged-in user,
  ``transient`` (a session that stops after its user left is not restarted;
  one that crashed is, and re-attaches to the user's connection).
- ``groups`` (``simple_one_for_one``): one ``Group`` per active group,
  started on demand by a member's session, ``transient`` (it stops when
  idle; one that crashed is restarted and re-reads its record from LMDB).
  After ``sessions``: sessions find groups by name, so a restart of the
  groups touches only the listener after it.
- ``ops`` (``one_for_one``): the operator's side, after the chat so that a
  failure to bind the dashboard port cannot stop chat from starting first.
  The ``QueueMonitor`` samples every mailbox and raises queue alerts; the
  ``HttpListener`` serves the dashboard, ``/metrics`` and the status API
  from what the monitor publishes (``system.env["board"]``, which outlives
  restarts of either). Neither holds state the other needs.

Intensity and period, after OTP's "Tuning the intensity and period": the
root and ``chat`` tolerate 3 restarts in 30 s; a crash loop faster than that
will not heal by itself, so the worker process exits and the node supervisor
starts a fresh one. Sessions crash one user at a time: 50 in 10 s means
something systemic, so ``sessions`` gives up and ``chat`` restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any, Callable

from actors import SHUTDOWN, System
from actors.counters import Counters
from actors.group import GROUPS_SUP_NAME
from actors.janitor import JANITOR_NAME
from actors.last_seen import LAST_SEEN_NAME
from actors.monitor import MONITOR_NAME, Board
from actors.presence import PRESENCE_NAME
from actors.registration import REGISTRAR_NAME
from actors.session_registry import REGISTRY_NAME, SESSIONS_SUP_NAME
from supervisor.base import Supervisor
from supervisor.spec import SupFlags, supervisor, worker

__all__ = ["ROOT_FLAGS", "ROOT_CHILDREN", "run_worker_tree", "RootExited", "worker_env"]

log = logging.getLogger("switchboard.tree")

ROOT_FLAGS = SupFlags(strategy="one_for_one", intensity=3, period=30)
CHAT_FLAGS = SupFlags(strategy="rest_for_one", intensity=3, period=30)
SESSIONS_FLAGS = SupFlags(strategy="simple_one_for_one", intensity=50, period=10)
GROUPS_FLAGS = SupFlags(strategy="simple_one_for_one", intensity=50, period=10)
OPS_FLAGS = SupFlags(strategy="one_for_one", intensity=3, period=30)

SESSION = worker("actors.session.Session", restart="transient", shutdown=2.0)
GROUP = worker("actors.group.Group", restart="transient", shutdown=2.0)

CHAT_CHILDREN = [                                   # start order; stop is reverse
    worker("actors.presence.PresenceHub", id="presence", name=PRESENCE_NAME),
    worker("actors.session_registry.SessionRegistry", id="session_registry", name=REGISTRY_NAME),
    supervisor(Supervisor, SESSIONS_FLAGS, [SESSION], id="sessions", name=SESSIONS_SUP_NAME),
    supervisor(Supervisor, GROUPS_FLAGS, [GROUP], id="groups", name=GROUPS_SUP_NAME),
    worker("transport.tcp.Listener", id="listener", name="listener", shutdown=5.0),
]

OPS_CHILDREN = [
    worker("actors.monitor.QueueMonitor", id="monitor", name=MONITOR_NAME, shutdown=2.0),
    worker("transport.http.HttpListener", id="http", name="http", shutdown=5.0),
]

ROOT_CHILDREN = [
    worker("actors.registration.Registrar", id="registrar", name=REGISTRAR_NAME),
    worker("actors.last_seen.LastSeenWriter", id="last_seen", name=LAST_SEEN_NAME, shutdown=2.0),
    worker("actors.janitor.Janitor", id="janitor", name=JANITOR_NAME, shutdown=2.0),
    supervisor(Supervisor, CHAT_FLAGS, CHAT_CHILDREN, id="chat", name="chat"),
    worker("transport.media.MediaListener", id="media", name="media", shutdown=5.0),
    supervisor(Supervisor, OPS_FLAGS, OPS_CHILDREN, id="ops", name="ops"),
]


class RootExited(RuntimeError):
    """The root supervisor of a worker exited on its own (gave up)."""


def _group_cap(config: dict[str, Any]) -> int:
    from transport.wire import MAX_GROUP
    cap = int(config.get("group_cap", 1024))
    if not 1 <= cap <= MAX_GROUP:
        raise ValueError(f"group_cap must be 1..{MAX_GROUP} (a GROUP_STATE lists every member)")
    return cap


def _stop_this_worker() -> None:
    """The LMDB writer process is gone: stop the worker, whose supervisor
    starts it again with a new writer (the two are linked, as in OTP). A
    tree run outside a worker process (tests) only logs it: its writes fail
    with ``StoreClosed`` from now on."""
    from supervisor.worker_process import ASYNCIO_THREAD
    if threading.current_thread().name != ASYNCIO_THREAD:
        log.error("the LMDB writer process is gone (not in a worker process: nothing to stop)")
        return
    log.error("stopping this worker: its LMDB writer process is gone")
    os.kill(os.getpid(), signal.SIGTERM)


def worker_env(config: dict[str, Any]) -> dict[str, Any]:
    """The services the tree's actors find in ``system.env`` (OTP's
    application environment), from the node's config. Opens the store."""
    from storage import open_storage
    from transport.code_sender import FileCodeSender
    from transport.flow import FlowConfig
    from transport.tcp import ListenerConfig
    from transport.webhook import WebhookSink

    data_dir = config.get("data_dir", "data")
    if config.get("storage", "lmdb") == "memory":
        mailbox = open_storage("memory")
    elif config.get("lmdb_writer", "process") == "process":
        mailbox = open_storage("lmdb-process", os.path.join(data_dir, "lmdb"),
                               on_lost=_stop_this_worker)
    else:
        mailbox = open_storage("lmdb", os.path.join(data_dir, "lmdb"))
    cluster = None
    if config.get("bridge") is not None:        # a member of the node's mesh of workers
        from actors.cluster import Cluster
        cluster = Cluster(config["worker_name"], config["bridge"], config["directory"])
        if config.get("cluster_directory") is not None:     # one node of a cluster of nodes
            from actors.federation import Federation
            host = config.get("advertise") or config.get("bind", "127.0.0.1")
            cluster.federation = Federation(         # clients are sent home to (host, port)
                config.get("node_name", "node"), config["worker_name"],
                config["cluster_directory"],
                ("127.0.0.1" if host in ("", "0.0.0.0") else host, int(config["port"])),
                gateway=config.get("worker_index", 0) == 0)
    return {
        "config": config,
        "cluster": cluster,
        "federation": cluster.federation if cluster is not None else None,
        "mailbox": mailbox,
        "code_sender": config.get("code_sender") or FileCodeSender(data_dir),
        "offline_cap": int(config.get("offline_cap", 10_000)),
        "code_budget": int(config.get("code_budget", 1_000) or 0),     # 0, off, none: no budget
        "group_cap": _group_cap(config),
        "group_linger": float(config.get("group_linger", 30.0)),
        "linger": float(config.get("linger", 5.0)),
        "listener": ListenerConfig(host=config.get("bind", "127.0.0.1"),
                                   port=int(config.get("port", 5222)),
                                   max_auth_failures=int(config.get("max_auth_failures", 5)),
                                   flow=FlowConfig.from_config(config)),
        "counters": Counters(),
        "board": Board(),
        "alert_sinks": ([WebhookSink(config["alert_webhook"], node=config.get("node_name"))]
                        if config.get("alert_webhook") else []),
    }


async def run_worker_tree(config: dict[str, Any], stopping: asyncio.Event,
                          started: asyncio.Event | None = None,
                          on_start: Callable[[System], None] | None = None) -> None:
    """Run the worker's tree until ``stopping`` is set, then shut it down in
    order; ``started`` is set (and ``on_start(system)`` called, for tests
    that reach into the actors) once every child has started. Raises
    ``RootExited`` if the root supervisor gives up first, so the worker
    process exits and its node supervisor restarts it."""
    env = worker_env(config)
    try:
        async with System() as system:
            system.env.update(env)
            if env["cluster"] is not None:
                env["cluster"].start(system)
            if env["federation"] is not None:
                env["federation"].start(system, env["cluster"])
            root = await system.spawn(Supervisor, ROOT_FLAGS, ROOT_CHILDREN, name="root")
            log.info("worker tree started: %d actors, port %s", len(system),
                     system.env.get("tcp_port"))
            if on_start is not None:
                on_start(system)
            if started is not None:
                started.set()
            stop = asyncio.ensure_future(stopping.wait())
            died = asyncio.ensure_future(root.join())
            await asyncio.wait({stop, died}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if died.done():
                raise RootExited(f"root supervisor exited: {died.result()!r}")
            died.cancel()
            await root.stop(SHUTDOWN, timeout=None)
            log.info("worker tree stopped")
    finally:
        if env["federation"] is not None:
            env["federation"].stop()
        env["mailbox"].close()
