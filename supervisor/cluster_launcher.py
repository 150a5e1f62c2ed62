"""``run.py cluster --nodes N``: a local cluster of N nodes on loopback, for
trying the cluster out (docs/cluster.md, docs/operations.md).

Node ``A`` leads (its Thespian admin port is the convention address); ``B``,
``C``, ... join it. Each node is a real ``run.py node`` process with its own
data directory (``DATA_DIR/A``, ...) and ports: clients ``port + i``, media
``media_port + i``, HTTP ``http_port + 10 * i`` (worker ``s`` of a node
adds ``s``). Like OTP's ``heart``, a node process that dies is started
again (after ``RESTART_AFTER`` s, same name, data and ports), so a
``kill -9`` of one node shows the cluster losing it and getting it back.
Ctrl-C or SIGTERM stops every node (SIGTERM, then SIGKILL after
``STOP_TIMEOUT`` s).
"""

from __future__ import annotations

import logging
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

from supervisor.launcher import _StopRequested, free_port
from supervisor.worker_process import LOG_FORMAT

__all__ = ["run_cluster", "node_command"]

log = logging.getLogger("switchboard.cluster")

RESTART_AFTER = 1.0
STOP_TIMEOUT = 20.0
RUN_PY = str(Path(__file__).resolve().parent.parent / "run.py")


def node_command(name: str, index: int, args, admin_port: int, leader_port: int) -> list[str]:
    """The ``run.py node`` command line of the ``index``-th node."""
    command = [sys.executable, RUN_PY, "node", "--name", name,
               "--data-dir", str(Path(args.data_dir) / name),
               "--workers", str(args.workers), "--bind", args.bind,
               "--admin-port", str(admin_port),
               "--port", str(args.port + index if args.port else 0),
               "--media-port", str(args.media_port + index if args.media_port else 0),
               "--http-port", str(args.http_port + 10 * index if args.http_port else 0)]
    if index > 0:
        command += ["--join", f"{args.bind}:{leader_port}"]
    for setting in args.settings:
        command += ["--set", setting]
    return command


def run_cluster(args) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    if not 1 <= args.nodes <= 26:
        log.error("--nodes must be between 1 and 26")
        return 2
    names = string.ascii_uppercase[:args.nodes]
    ports = [free_port(args.bind) for _ in names]
    commands = {name: node_command(name, i, args, ports[i], ports[0]) for i, name in enumerate(names)}
    procs: dict[str, subprocess.Popen] = {}
    died_at: dict[str, float] = {}
    with _StopRequested() as stop:
        for name in names:
            procs[name] = subprocess.Popen(commands[name])
            log.info("node %s: pid %d", name, procs[name].pid)
            if name == "A":
                time.sleep(1.0)          # the leader's admin must listen before members join
        log.info("cluster of %d nodes: clients on %s ports %s; leader A's admin port %d",
                 len(names), args.bind,
                 ", ".join(str(args.port + i) for i in range(len(names))) if args.port else "(free)",
                 ports[0])
        while stop.signal is None:
            time.sleep(0.2)
            for name, proc in procs.items():
                if proc.poll() is None:
                    continue
                now = time.monotonic()
                if name not in died_at:
                    died_at[name] = now
                    log.warning("node %s (pid %d) exited with %s; starting it again in %.0f s",
                                name, proc.pid, proc.returncode, RESTART_AFTER)
                elif now - died_at[name] >= RESTART_AFTER:
                    del died_at[name]
                    procs[name] = subprocess.Popen(commands[name])
                    log.info("node %s started again: pid %d", name, procs[name].pid)
    log.info("stopping the cluster")
    for proc in reversed(list(procs.values())):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("node pid %d did not stop in time: killing it", proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return 0
