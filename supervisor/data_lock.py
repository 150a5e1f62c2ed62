"""One node per data directory: the launcher's lock on ``DATA/node.lock``.

Two nodes on one directory would share one LMDB environment (LMDB allows
it) with two session registries: a user could be logged in on both, and a
message stored by one would not be pushed by the other. So ``run.py node``
takes an exclusive POSIX record lock (``fcntl.lockf``) on the directory's
``node.lock`` before it starts anything, and a second launcher exits with
the first one's pid in its error.

A record lock belongs to the process that took it: the Thespian processes
and workers the launcher forks do not inherit it, and it goes when the
launcher exits or dies, however it dies (a SIGKILLed launcher frees the
directory for the node started in its place). The file stays; it only
holds the pid of the last launcher that locked it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["DataDirLock", "DataDirInUse", "LOCK_FILE"]

LOCK_FILE = "node.lock"


class DataDirInUse(RuntimeError):
    """Another live process holds the data directory's lock."""


class DataDirLock:
    """``with DataDirLock(path):`` holds ``path``'s lock, or raises
    ``DataDirInUse`` naming the launcher that holds it."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "DataDirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(f"data dir {self.path.parent} is in use by another node "
                               f"(launcher pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)              # closing it releases the lock
            self._fd = None
