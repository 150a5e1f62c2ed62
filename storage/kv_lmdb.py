"""LMDB backend: one environment per node, one writer thread, group commit.

Holds ``LmdbStore`` and ``LmdbTxn``.

The rule is *ack after commit*. ``submit(op)`` puts the op on a thread-safe
queue and returns an ``asyncio.Future``. The writer thread blocks for the
first pending op, waits until ``commit_interval`` (2 ms) has passed since
the previous batch began, drains up to ``max_batch`` more, and runs them
all in ONE write transaction, each op in a nested child transaction: an op that raises
is rolled back alone and reports its exception while the others commit.
The batch is committed (fsync'd) and only then are the callers' futures
settled, with one ``loop.call_soon_threadsafe`` per batch and event loop.
If the commit itself fails, every op of the batch fails with
``CommitFailed``; the writer thread survives both kinds of failure.

Reads are synchronous: ``read(fn)`` runs ``fn`` in a short read-only
transaction on the caller's thread (py-lmdb always opens the environment
with ``MDB_NOTLS``, so any thread may read).

Several processes may open the same directory (one ``LmdbStore`` each):
LMDB serializes their write transactions, and every op reads what it needs
(sequence counters included) inside its transaction, so nothing depends on
one process's memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from storage.errors import StoreClosed
from storage.keys import prefix_end
from storage.kv import (DBS, BatchScope, CommitClock, Op, Settles, StoreStats, fail_all,
                        resolve)

__all__ = ["LmdbStore", "LmdbTxn", "open_env", "read_in", "run_batch"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_STOP = object()
_Item = tuple  # (op, future, loop or None)


class LmdbTxn:
    """``storage.kv.Txn`` over a py-lmdb transaction (read or write)."""

    __slots__ = ("_txn", "_dbs", "batch")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any],
                 batch: BatchScope | None = None):
        self._txn = txn
        self._dbs = dbs
        self.batch = batch

    # Positional arguments: py-lmdb parses keywords ~2x slower (get: 110 vs 240 ns).
    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(key, None, self._dbs[db])

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, True, True, False, self._dbs[db])   # dupdata, overwrite, append

    def delete(self, db: str, key: bytes) -> bool:
        return self._txn.delete(key, b"", self._dbs[db])

    def range(self, db: str, start: bytes, end: bytes | None = None,
              reverse: bool = False, limit: int | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        return _scan(self._txn.cursor(self._dbs[db]), start, end, reverse, limit)

    def last(self, db: str, prefix: bytes) -> tuple[bytes, bytes] | None:
        for pair in self.range(db, prefix, prefix_end(prefix), reverse=True, limit=1):
            return pair
        return None


def _scan(cur: lmdb.Cursor, start: bytes, end: bytes | None, reverse: bool,
          limit: int | None) -> Iterator[tuple[bytes, bytes]]:
    if limit is not None and limit <= 0:
        return
    n = 0
    if not reverse:
        if not cur.set_range(start):
            return
        for key, value in cur.iternext():
            if end is not None and key >= end:
                return
            yield key, value
            n += 1
            if n == limit:
                return
    else:
        if end is None:
            found = cur.last()
        else:
            found = cur.prev() if cur.set_range(end) else cur.last()
        if not found:
            return
        for key, value in cur.iterprev():
            if key < start:
                return
            yield key, value
            n += 1
            if n == limit:
                return


class LmdbStore:
    """A node's LMDB environment plus its group-commit writer thread.

    ``map_size`` is the most the environment may grow to (the file is
    sparse); ``max_batch`` bounds the ops of one transaction; ``sync=False``
    skips fsync (tests and benchmarks of the CPU path only: it breaks the
    ack-after-commit promise on power loss); ``commit_interval`` is the
    least time between the starts of two batches: an fsync'd commit costs
    ~100 us of CPU here, and under a steady trickle of ops, committing each
    as it comes cost a quarter more CPU per message (docs/storage.md); an op
    waits at most this long for company.
    """

    def __init__(self, path: str | os.PathLike, *, map_size: int = 64 << 30,
                 max_batch: int = 1000, sync: bool = True, max_readers: int = 1024,
                 commit_interval: float = 0.002):
        self.path = os.fspath(path)
        self._env, self._dbs = open_env(self.path, map_size, max_readers, sync)
        self._max_batch = max_batch
        self._commit_interval = commit_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._clock = CommitClock()
        self._thread = threading.Thread(target=self._writer, name="lmdb-writer", daemon=True)
        self._thread.start()

    # -- API -----------------------------------------------------------------
    def submit(self, op: Op[T], into: Settles | None = None) -> asyncio.Future[T]:
        """Queue a write; the future (or ``into``) settles after the batch
        holding it is committed. Call from a running event loop."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future() if into is None else into
        self._enqueue((op, fut, loop))
        return fut

    def write(self, op: Op[T], timeout: float | None = None) -> T:
        """``submit`` for a thread without an event loop: blocks until the
        op is committed and returns its result (or raises its exception)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._enqueue((op, fut, None))
        return fut.result(timeout)

    def read(self, fn: Callable[[LmdbTxn], T]) -> T:
        """Run ``fn`` in a read-only transaction on this thread."""
        if self._closed:
            raise StoreClosed("store is closed")
        return read_in(self._env, self._dbs, fn)

    def stats(self) -> StoreStats:
        return self._clock.snapshot(self._queue.qsize())

    def close(self) -> None:
        """Commit every op already submitted, stop the writer, close the
        environment. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        self._env.close()

    def __enter__(self) -> "LmdbStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread --------------------------------------------------
    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosed("store is closed")
            self._queue.put(item)

    def _writer(self) -> None:
        get, get_nowait, limit = self._queue.get, self._queue.get_nowait, self._max_batch
        interval, last = self._commit_interval, 0.0
        stopping = False
        while not stopping:
            item = get()
            wait = last + interval - time.monotonic()
            if wait > 0:                    # the last batch began recently: let more ops come
                time.sleep(wait)
            batch: list[_Item] = []
            while True:
                if item is _STOP:           # nothing is queued after it (see _enqueue)
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= limit:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if batch:
                last = time.monotonic()
                results = self._run_batch(batch)    # never raises: failures are results
                try:
                    self._hand_back(batch, results)
                except BaseException:               # keep the writer alive, whatever
                    log.exception("LMDB writer: could not settle a batch of %d", len(batch))

    def _run_batch(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        return run_batch(self._env, self._dbs, [op for op, _fut, _loop in batch],
                         self._clock, self._commit)

    def _commit(self, txn: lmdb.Transaction) -> None:
        """Commit (and fsync) a batch; a seam for fault-injection tests."""
        txn.commit()

    @staticmethod
    def _hand_back(batch: list[_Item], results: list[tuple[bool, Any]]) -> None:
        """Settle the batch's futures: one call_soon_threadsafe per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_op, fut, loop), (ok, value) in zip(batch, results):
            if loop is None:                # a blocking write()
                if fut.set_running_or_notify_cancel():      # False: its caller cancelled
                    fut.set_result(value) if ok else fut.set_exception(value)
            else:
                entries = by_loop.get(loop)
                if entries is None:
                    entries = by_loop[loop] = []
                entries.append((fut, ok, value))
        for loop, entries in by_loop.items():
            try:
                loop.call_soon_threadsafe(resolve, entries)
            except RuntimeError:            # that loop is closed: nobody is waiting
                pass


def open_env(path: str, map_size: int, max_readers: int, sync: bool
             ) -> tuple[lmdb.Environment, dict[str, Any]]:
    """Open (creating) a node's environment and its named databases."""
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=map_size, max_dbs=len(DBS) + 4, max_readers=max_readers,
                    sync=sync, metasync=sync, readahead=False)
    with env.begin(write=True) as txn:
        dbs = {name: env.open_db(name.encode(), txn=txn) for name in DBS}
    return env, dbs


def read_in(env: lmdb.Environment, dbs: dict[str, Any], fn: Callable[[LmdbTxn], T]) -> T:
    """``fn`` in a short read-only transaction of ``env``, on this thread."""
    with env.begin(buffers=False) as txn:
        return fn(LmdbTxn(txn, dbs))


def run_batch(env: lmdb.Environment, dbs: dict[str, Any], ops: list[Callable[[Any], Any]],
              clock: CommitClock, commit: Callable[[lmdb.Transaction], None]
              ) -> list[tuple[bool, Any]]:
    """Run ``ops`` in ONE write transaction, commit with ``commit`` and record
    the batch on ``clock``; an op that raises is rolled back alone. Never
    raises: a failure is a result; if the transaction cannot begin or
    commit, every op fails with ``CommitFailed``.

    The ops run straight in the transaction. Should one raise, that
    transaction is dropped and the batch runs again with each op in a child
    transaction, which is what rolls one back alone: a child costs ~1.8 us
    an op (it copies the pages it touches from its parent; measured 4.7
    against 2.9 us for an op of 4 writes and a read), and ops rarely raise
    (a refused request is a result, see ``storage.batch``). Ops are
    functions of the transaction, so the second run decides as the first."""
    started = time.perf_counter()
    results: list[tuple[bool, Any]] = []
    failed = 0
    try:
        txn = env.begin(write=True)
    except Exception as exc:
        return fail_all(len(ops), exc, clock, started)
    try:
        flat = LmdbTxn(txn, dbs, BatchScope())
        try:
            results = [(True, op(flat)) for op in ops]
            flat.batch.finish()             # what the ops share, written once (BatchScope)
        except BaseException:               # run them again, each in a child
            txn.abort()
            txn = env.begin(write=True)
            results = []
            for op in ops:
                child = env.begin(write=True, parent=txn)
                try:
                    value = op(LmdbTxn(child, dbs))
                    child.commit()
                except BaseException as exc:
                    child.abort()
                    results.append((False, exc))
                    failed += 1
                else:
                    results.append((True, value))
        if failed == len(ops):
            txn.abort()                     # nothing to store: skip the fsync
        else:
            commit(txn)
    except BaseException as exc:
        try:
            txn.abort()
        except lmdb.Error:
            pass
        return fail_all(len(ops), exc, clock, started)
    clock.record(len(ops), failed, time.perf_counter() - started, True)
    return results

