"""The OS's process table as the launcher reads it (/proc): a process's
descendants, a process group, who listens on a port; and ``reap``, which
waits for processes to exit and SIGKILLs those that do not. Linux only."""

from __future__ import annotations

import os
import signal
import time

from supervisor.node_protocol import pid_alive

__all__ = ["process_tree", "process_group", "listener_pids", "reap"]


def _proc_stats() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process, read from /proc."""
    stats = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid, pgrp = stat[stat.rindex(b")") + 2:].split()[1:3]
        stats.append((int(entry), int(ppid), int(pgrp)))
    return stats


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it, read from /proc."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _proc_stats():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid_alive(pid):
            tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def process_group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``, read from /proc."""
    return [pid for pid, _, pgrp in _proc_stats() if pgrp == pgid and pid_alive(pid)]


def listener_pids(port: int) -> list[int]:
    """Pids of the processes holding a TCP socket listening on ``port`` (the
    Admin, and whatever inherited its socket), read from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def reap(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to exit, SIGKILL the rest; returns
    the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    killed = [p for p in pids if pid_alive(p)]
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed
