"""In-memory backend with the LMDB backend's semantics, for fast tests.

Holds ``MemoryStore`` and ``MemoryTxn``. Each database is a dict plus a
sorted list of its keys (``bisect``), so ``range`` and ``last`` behave as
LMDB's cursors do. ``submit`` queues the op and, once per event-loop turn,
a callback runs every queued op (up to ``max_batch``) as one batch: each op
writes through an undo log, an op that raises is rolled back to its
savepoint alone, and the futures are settled after the batch "commits".
``_commit`` is the same fault-injection seam as in ``LmdbStore``: if it
raises, the whole batch is undone and every op fails with ``CommitFailed``.

Single-threaded: use one store from one event loop (``write`` and
``read`` from that loop's thread, or from code with no loop at all).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left, insort
from typing import Any, Callable, Iterator, TypeVar

from storage.errors import StorageError, StoreClosed
from storage.keys import prefix_end
from storage.kv import DBS, CommitClock, Op, Settles, StoreStats, fail_all, resolve

__all__ = ["MemoryStore", "MemoryTxn"]

T = TypeVar("T")


class _Table:
    __slots__ = ("data", "keys")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []             # sorted


class MemoryTxn:
    """``storage.kv.Txn`` over the tables; ``undo`` is None when read-only."""

    __slots__ = ("_tables", "_undo")
    batch = None                            # every op has a transaction of its own

    def __init__(self, tables: dict[str, _Table], undo: list | None):
        self._tables = tables
        self._undo = undo

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._tables[db].data.get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        if self._undo is None:
            raise StorageError("write in a read-only transaction")
        if type(key) is not bytes or type(value) is not bytes or not key:
            raise TypeError("keys (non-empty) and values must be bytes")
        table = self._tables[db]
        old = table.data.get(key)
        if old is None:
            insort(table.keys, key)
        table.data[key] = value
        self._undo.append((table, key, old))

    def delete(self, db: str, key: bytes) -> bool:
        if self._undo is None:
            raise StorageError("write in a read-only transaction")
        table = self._tables[db]
        old = table.data.pop(key, None)
        if old is None:
            return False
        del table.keys[bisect_left(table.keys, key)]
        self._undo.append((table, key, old))
        return True

    def range(self, db: str, start: bytes, end: bytes | None = None,
              reverse: bool = False, limit: int | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        table = self._tables[db]
        keys = table.keys
        lo = bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        picked = keys[lo:hi]
        if reverse:
            picked.reverse()
        if limit is not None:
            picked = picked[:max(limit, 0)]
        data = table.data
        return iter([(k, data[k]) for k in picked])

    def last(self, db: str, prefix: bytes) -> tuple[bytes, bytes] | None:
        for pair in self.range(db, prefix, prefix_end(prefix), reverse=True, limit=1):
            return pair
        return None


def _rollback(undo: list, savepoint: int) -> None:
    """Undo every write after ``savepoint``, newest first."""
    while len(undo) > savepoint:
        table, key, old = undo.pop()
        if old is None:
            del table.data[key]
            del table.keys[bisect_left(table.keys, key)]
        else:
            if key not in table.data:
                insort(table.keys, key)
            table.data[key] = old


class MemoryStore:
    """``storage.kv.Store`` in memory; see the module docstring."""

    def __init__(self, *, max_batch: int = 1000):
        self._tables = {name: _Table() for name in DBS}
        self._max_batch = max_batch
        self._pending: list[tuple[Op[Any], asyncio.Future]] = []
        self._scheduled = False
        self._closed = False
        self._clock = CommitClock()

    # -- API -----------------------------------------------------------------
    def submit(self, op: Op[T], into: Settles | None = None) -> asyncio.Future[T]:
        if self._closed:
            raise StoreClosed("store is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future() if into is None else into
        self._pending.append((op, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def write(self, op: Op[T], timeout: float | None = None) -> T:
        if self._closed:
            raise StoreClosed("store is closed")
        self._drain()                           # keep submission order
        (ok, value), = self._run_batch([op])
        if not ok:
            raise value
        return value

    def read(self, fn: Callable[[MemoryTxn], T]) -> T:
        if self._closed:
            raise StoreClosed("store is closed")
        return fn(MemoryTxn(self._tables, None))

    def stats(self) -> StoreStats:
        return self._clock.snapshot(len(self._pending))

    def close(self) -> None:
        if not self._closed:
            self._drain()
            self._closed = True

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches -------------------------------------------------------------
    def _flush(self) -> None:
        self._scheduled = False
        batch = self._pending[:self._max_batch]
        del self._pending[:self._max_batch]
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if batch:
            self._settle(batch)

    def _drain(self) -> None:
        while self._pending:
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
            self._settle(batch)

    def _settle(self, batch: list[tuple[Op[Any], asyncio.Future]]) -> None:
        results = self._run_batch([op for op, _ in batch])
        resolve([(fut, ok, value) for (_, fut), (ok, value) in zip(batch, results)])

    def _run_batch(self, ops: list[Op[Any]]) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        undo: list = []
        txn = MemoryTxn(self._tables, undo)
        results: list[tuple[bool, Any]] = []
        failed = 0
        for op in ops:
            savepoint = len(undo)
            try:
                results.append((True, op(txn)))
            except BaseException as exc:
                _rollback(undo, savepoint)
                results.append((False, exc))
                failed += 1
        try:
            self._commit(undo)
        except BaseException as exc:
            _rollback(undo, 0)
            return fail_all(len(ops), exc, self._clock, started)
        self._clock.record(len(ops), failed, time.perf_counter() - started, True)
        return results

    def _commit(self, undo: list) -> None:
        """Nothing to make durable; a seam for fault-injection tests."""
