"""The key-value contract both backends implement, so the domain
transactions (``storage.accounts``, ``storage.mailbox``) are written once.

Holds:

- ``DBS``: the named databases (sorted byte-keyed tables) of a store;
- ``Txn``: what a transaction offers an op: ``get``/``put``/``delete``,
  ordered ``range`` scans over ``[start, end)`` and ``last`` (highest key
  with a prefix);
- ``Store``: ``submit(op)`` (a write, grouped with others into one
  committed batch; its future resolves only after the commit; ``into``:
  a ``Settles`` of the caller's to settle instead), ``read(fn)``
  (a synchronous read-only transaction on the caller's thread), ``write``
  (a blocking submit for code outside the event loop), ``stats()`` and
  ``close()``;
- ``BatchScope``: what the ops of one flat batch share (``txn.batch``);
- ``StoreStats`` and ``CommitClock``, the bookkeeping behind ``stats()``;
- ``resolve``: hands a finished batch's results to its futures.

An *op* is any callable taking a ``Txn``; the domain ops are frozen
dataclasses with ``__call__``. An op must be deterministic given the
transaction's contents (a backend may run it again) and must not write to a
database while iterating a ``range`` over it (collect first, with
``limit``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, TypeVar

from storage.errors import CommitFailed

__all__ = ["DBS", "Txn", "Store", "Settles", "Op", "BatchScope", "StoreStats", "CommitClock",
           "resolve", "fail_all"]

DBS: tuple[str, ...] = (
    "users",        # phone -> account
    "codes",        # phone -> pending registration code
    "inbox",        # phone \0 seq -> message or receipt owed to phone
    "inbox_meta",   # phone -> next_seq and counts
    "dedup",        # sender \0 client_id -> where that message went
    "dedup_ttl",    # ts \0 sender \0 client_id -> b"" (prunes dedup by age)
    "lastseen",     # phone -> ts
    "keys",         # phone -> published e2e key bundle (signed part), device, prekeys held
    "otk",          # phone \0 u32(id) -> one-time prekey (32 bytes), handed out once
    "key_contacts", # phone \0 contact -> b"" (told when phone's keys change)
    "blob_refs",    # sha256 (32 bytes) -> messages referring to that media blob
    "groups",       # group id -> group record (name, admins, members, version)
    "user_groups",  # phone \0 group id -> u64 group version the phone joined at (the groups a user is in)
    "group_reads",  # ts \0... : u64 ts, reader \0 sender \0 client_id -> b"" (a group message read once per member)
    "group_missed", # phone \0 group id -> seq of the "missed" event still in phone's inbox
    "outq",         # dest node \0 u64 seq -> item owed to a user homed on that node (storage.outq)
    "outq_meta",    # dest node -> next seq and items held; b"\0epoch" -> this store's epoch
    "outq_applied", # origin node -> {epoch, seq}: the last of its items applied here
    "outq_missed",  # dest node \0 phone \0 group id -> group items folded while dest's queue was full
    "media_nonces", # ts \0... : u64 ts, phone \0 u64 device, nonce -> b"" (media uploads taken once)
    "blocks",       # blocker \0 blocked -> b"" (storage.blocks)
)

T = TypeVar("T")
Op = Callable[["Txn"], T]


class BatchScope:
    """What the ops of ONE flat batch share. They run straight in one write
    transaction (``storage.kv_lmdb.run_batch``), so none of them is rolled
    back without the others (should one raise, the batch runs again with a
    child transaction per op, and no scope), and what one op leaves for
    the next needs no undo. An op finds it as ``txn.batch`` (None: the op
    has a transaction of its own). ``shared(key, make)`` gives every op the
    same object; ``finish()``, run before the commit, calls each one's
    ``write_back()``. ``storage.metas.Metas`` uses it to read and write each
    user's inbox_meta once per batch instead of once per op."""

    __slots__ = ("_shared",)

    def __init__(self) -> None:
        self._shared: dict[Any, Any] = {}

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        obj = self._shared.get(key)
        if obj is None:
            obj = self._shared[key] = make()
        return obj

    def finish(self) -> None:
        for obj in self._shared.values():
            obj.write_back()


class Txn(Protocol):
    """A transaction as an op sees it. Keys and values are ``bytes``;
    ``batch`` is the flat batch's ``BatchScope``, or None."""

    batch: BatchScope | None

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> bool:
        """True if the key existed."""

    def range(self, db: str, start: bytes, end: bytes | None = None,
              reverse: bool = False, limit: int | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with ``start <= key < end`` (``end=None``: to
        the last key), ascending, or descending with ``reverse``."""

    def last(self, db: str, prefix: bytes) -> tuple[bytes, bytes] | None:
        """The pair with the highest key starting with ``prefix``, if any."""


class Settles(Protocol):
    """What ``resolve`` settles: an asyncio future, or an object of the
    caller's passed to ``submit(op, into=...)``. Such an object is settled
    on the loop, once, as the batch's results come in; one that acts at
    once (``actors.drain_batch.Landed`` casts the outcome to its actor)
    saves the loop turn an asyncio future's done callback waits for."""

    def done(self) -> bool: ...

    def set_result(self, value: Any) -> None: ...

    def set_exception(self, error: BaseException) -> None: ...


class Store(Protocol):
    """A node's store; ``storage.kv_lmdb.LmdbStore`` and
    ``storage.kv_memory.MemoryStore`` implement it."""

    def submit(self, op: Op[T], into: Settles | None = None) -> asyncio.Future[T]: ...

    def write(self, op: Op[T], timeout: float | None = None) -> T: ...

    def read(self, fn: Callable[[Txn], T]) -> T: ...

    def stats(self) -> StoreStats: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters since the store opened. A batch is one write transaction;
    its latency runs from ``begin`` to the end of the (fsync'd) commit.
    Latency figures cover the last ``CommitClock.WINDOW`` batches."""
    batches: int = 0
    ops: int = 0                # ops committed
    failed_ops: int = 0         # ops rolled back (their own exception or a failed commit)
    failed_commits: int = 0
    pending: int = 0            # submitted, not yet taken by a batch
    last_batch_size: int = 0
    max_batch_size: int = 0
    last_commit_ms: float = 0.0
    median_commit_ms: float = 0.0
    p99_commit_ms: float = 0.0


class CommitClock:
    """Mutable counters behind ``StoreStats``; updated by the one thread
    that commits, read by any (a snapshot may be a batch behind)."""

    WINDOW = 1024

    def __init__(self) -> None:
        self.batches = self.ops = self.failed_ops = self.failed_commits = 0
        self.last_batch_size = self.max_batch_size = 0
        self.latencies: deque[float] = deque(maxlen=self.WINDOW)

    def record(self, size: int, failed: int, seconds: float, committed: bool) -> None:
        self.last_batch_size = size
        self.max_batch_size = max(self.max_batch_size, size)
        if committed:
            self.batches += 1
            self.ops += size - failed
            self.failed_ops += failed
            self.latencies.append(seconds * 1000.0)
        else:
            self.failed_commits += 1
            self.failed_ops += size

    def snapshot(self, pending: int) -> StoreStats:
        lat = sorted(self.latencies)
        return StoreStats(
            batches=self.batches, ops=self.ops, failed_ops=self.failed_ops,
            failed_commits=self.failed_commits, pending=pending,
            last_batch_size=self.last_batch_size, max_batch_size=self.max_batch_size,
            last_commit_ms=self.latencies[-1] if lat else 0.0,
            median_commit_ms=statistics.median(lat) if lat else 0.0,
            p99_commit_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
        )


def resolve(entries: list[tuple[Any, bool, Any]]) -> None:
    """Settle ``(future, ok, value_or_exception)`` entries of one batch; runs
    on the futures' loop. A future its caller cancelled is left alone (the
    op itself has been committed or rolled back all the same)."""
    for fut, ok, value in entries:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            if isinstance(value, StopIteration):    # a Future refuses it as is
                value = RuntimeError(f"op raised {value!r}")
            fut.set_exception(value)


def fail_all(size: int, exc: BaseException, clock: CommitClock, started: float
             ) -> list[tuple[bool, Any]]:
    """A batch of ``size`` ops whose commit failed with ``exc``: recorded on
    ``clock``, and one ``CommitFailed`` result per op (``exc`` its cause)."""
    clock.record(size, size, time.perf_counter() - started, False)
    results: list[tuple[bool, Any]] = []
    for _ in range(size):
        err = CommitFailed(f"batch of {size} not committed: {exc!r}")
        err.__cause__ = exc
        results.append((False, err))
    return results
