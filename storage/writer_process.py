"""The LMDB writer as an OS process of its own: ``python -m storage.writer_process``.

Why a process and not the writer thread of ``storage.kv_lmdb``: a worker's
event loop and its writer thread share one GIL, and py-lmdb releases it
around every get, put and delete, so the two take turns on one core. Under
the relay load the writer was ~45% of the worker's CPU (docs/benchmarks.md);
in a process of its own it runs on the other core. ``storage.kv_process``
is the worker's side of it.

The parent hands this process one end of a Unix socket pair (``--fd``).
Frames both ways are a 4-byte big-endian length and a pickle:

- parent -> here: a list of ``(id, op)``; ops are the domain transactions'
  frozen dataclasses (``storage.accounts``, ``storage.mailbox``, ...); id 0
  carries ``("homes", node, changes)`` instead: changes to this process's
  replica of a cluster node's home map (``storage.metas.WRITER_HOMES``,
  which ops carrying a ``Homes`` find when unpickled here);
- here -> parent: first ``("ready",)`` once the environment is open; then
  per batch ``(size, failed, seconds, committed, [(id, ok, value), ...])``;
  an op class with ``to_wire``/``from_wire`` (``storage.batch.UserBatch``)
  has its result sent as ``to_wire(value)`` and rebuilt by the parent.

The batching is the writer thread's (``kv_lmdb.run_batch``): block for the
first op, let ``commit_interval`` pass since the last batch began while
more arrive, then up to ``max_batch`` ops in one fsync'd transaction; the
results go back only after the commit. A batch also stops once it holds
``max_batch_requests`` requests (an op that is a drain of a mailbox,
``UserBatch`` or ``GroupBatch``, weighs its requests; any other op, 1).
Without that bound a closed loop of clients fell into a convoy: the
writer took a whole wave of ~100 drains (~6,000 requests) into one 36 ms
transaction while the worker idled, then the worker handled the whole wave
while the writer idled, at one core busy of two (docs/benchmarks.md). A
bounded batch answers part of a wave while the writer goes on with the rest.

End of input (the parent closed its end, or died: the kernel closes it
then) means: commit what has arrived, answer it, exit. A frame that cannot
be read is a bug in the parent: this process exits with an error, and the
parent, which sees it go, fails what it was waiting for.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import pickle
import selectors
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

from storage.kv_lmdb import open_env, run_batch
from storage.metas import WRITER_HOMES

__all__ = ["serve", "main", "HEADER", "frame"]

HEADER = struct.Struct(">I")
CHUNK = 256 << 10                           # the most one read takes off a socket
log = logging.getLogger(__name__)


def frame(obj: Any) -> bytes:
    body = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class _Frames:
    """Whole frames out of a byte stream: ``fill`` from a socket, then
    ``pop`` a frame or take ``frames()``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._chunk = memoryview(bytearray(CHUNK))

    def fill(self, sock: socket.socket) -> int:
        """Read what ``sock`` has (up to ``CHUNK`` bytes) onto the buffer;
        0 at the end of the stream. Into one buffer kept for the purpose:
        ``recv(1 MiB)`` allocated a fresh MiB per read, which glibc maps and
        unmaps (mmap, mremap, munmap and page faults, with a TLB shootdown
        in a process of two threads: measured, see docs/benchmarks.md)."""
        n = sock.recv_into(self._chunk)
        if n:
            self.buf += self._chunk[:n]
        return n

    def pop(self) -> tuple[bool, Any]:
        """``(True, frame)``, or ``(False, None)`` until one is complete."""
        buf = self.buf
        if len(buf) < 4:
            return False, None
        (size,) = HEADER.unpack_from(buf)
        if len(buf) - 4 < size:
            return False, None
        obj = pickle.loads(memoryview(buf)[4:4 + size])
        del buf[:4 + size]
        return True, obj

    def frames(self) -> list[Any]:
        """The whole frames buffered, taken off the buffer."""
        out = []
        while True:
            ok, obj = self.pop()
            if not ok:
                return out
            out.append(obj)


def _reply(sock: socket.socket, size: int, failed: int, seconds: float, committed: bool,
           answers: list[tuple[int, bool, Any]]) -> None:
    try:
        data = frame((size, failed, seconds, committed, answers))
    except Exception:                       # a value that cannot be pickled: say so, per op
        safe = []
        for ident, ok, value in answers:
            try:
                pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
                safe.append((ident, ok, value))
            except Exception as exc:
                safe.append((ident, False, RuntimeError(
                    f"the op's {'result' if ok else 'error'} cannot cross processes: {exc!r}")))
        data = frame((size, failed, seconds, committed, safe))
    sock.sendall(data)


def serve(sock: socket.socket, path: str, *, map_size: int = 64 << 30, max_batch: int = 1000,
          max_batch_requests: int = 1000, sync: bool = True, max_readers: int = 1024,
          commit_interval: float = 0.002) -> None:
    env, dbs = open_env(path, map_size, max_readers, sync)
    clock = _LastBatch()
    sock.sendall(frame(("ready",)))
    frames, queue = _Frames(), deque()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    last, eof = 0.0, False

    def take(timeout: float | None) -> None:
        """Read what arrives within ``timeout`` (None: block for something)."""
        nonlocal eof
        while not eof and selector.select(timeout):
            if not frames.fill(sock):
                eof = True
                return
            for requests in frames.frames():
                queue.extend(requests)
            timeout = 0

    try:
        while True:
            if not queue:
                if eof:
                    return
                take(None)
                continue
            wait = last + commit_interval - time.monotonic()
            if wait > 0:                    # the last batch began recently: let more ops come
                time.sleep(wait)
            take(0)
            ids, ops, weight = [], [], 0
            while queue and len(ops) < max_batch and weight < max_batch_requests:
                if queue[0][0] == 0:        # id 0: a change to the home map, not an op
                    if ops:
                        break               # it applies after the ops sent before it
                    _replicate(*queue.popleft()[1][1:])
                    continue
                ident, op = queue.popleft()
                weight += _weight(op)
                ids.append(ident)
                ops.append(op)
            if not ops:
                continue
            last = time.monotonic()
            results = run_batch(env, dbs, ops, clock, _commit)
            answers = []
            for ident, op, (ok, value) in zip(ids, ops, results):
                to_wire = getattr(op, "to_wire", None)
                if ok and to_wire is not None:
                    value = to_wire(value)
                answers.append((ident, ok, value))
            _reply(sock, *clock.last, answers)
    finally:
        env.close()


def _weight(op: Any) -> int:
    requests = getattr(op, "requests", None)
    return len(requests) if requests else 1


def _replicate(node: str | None, changes: dict[str, str]) -> None:
    if node is not None:
        WRITER_HOMES.node = node
    WRITER_HOMES.map.update(changes)


class _LastBatch:
    """What ``run_batch`` records of a batch, kept for its reply (the
    parent's ``CommitClock`` does the counting)."""

    last: tuple[int, int, float, bool] = (0, 0, 0.0, True)

    def record(self, size: int, failed: int, seconds: float, committed: bool) -> None:
        self.last = (size, failed, seconds, committed)


def _commit(txn: Any) -> None:
    txn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.writer_process")
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair")
    parser.add_argument("path", help="the LMDB directory")
    parser.add_argument("options", nargs="?", default="{}", help="LmdbStore options, JSON")
    args = parser.parse_args(argv)
    gc.set_threshold(50_000, 20, 100)   # as a worker does (supervisor/worker_process.py)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s lmdb-writer[%(process)d] %(levelname)s %(message)s")
    sock = socket.socket(fileno=args.fd)
    try:
        serve(sock, args.path, **json.loads(args.options))
    except (BrokenPipeError, ConnectionResetError):     # the parent is gone: nobody to answer
        return 0
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
