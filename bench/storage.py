"""``run.py bench storage``: group-commit throughput of ``store_message``.

Each row runs ``store_message`` from many concurrent submitters (one op in
flight each, as sessions are) on uvloop against a fresh store, and reports
the median of 3 rounds: ops/s, batches, mean batch size, commit latency
(begin to fsync'd commit, from ``StoreStats``) and the latency a submitter
sees (submit to result). Rows:

- ``lmdb`` with 100 and 1,000 submitters: the real thing (fsync'd, each op
  in a nested child transaction);
- ``lmdb, no child txn``: the same without per-op isolation, to show what
  the nested transactions cost;
- ``lmdb, sync off``: without fsync, the CPU-bound ceiling;
- ``memory``: the in-memory backend, for scale.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from storage.accounts import RegisterDevice
from storage.kv_lmdb import LmdbStore
from storage.kv_memory import MemoryStore
from storage.mailbox import StoreMessage

ROUNDS = 3
RECIPIENTS = 1000


class _SharedTxn:
    """A child that is the parent itself: no isolation (bench only)."""
    __slots__ = ("_txn",)

    def __init__(self, txn):
        self._txn = txn

    def get(self, *a, **kw):
        return self._txn.get(*a, **kw)

    def put(self, *a, **kw):
        return self._txn.put(*a, **kw)

    def delete(self, *a, **kw):
        return self._txn.delete(*a, **kw)

    def cursor(self, *a, **kw):
        return self._txn.cursor(*a, **kw)

    def commit(self):
        pass

    def abort(self):
        pass


class _FlatEnv:
    """Wraps an lmdb.Environment so ``begin(parent=txn)`` shares ``txn``."""

    def __init__(self, env):
        self._env = env

    def begin(self, *, write=False, parent=None, **kw):
        if parent is not None:
            return _SharedTxn(parent)
        return self._env.begin(write=write, **kw)

    def __getattr__(self, name):
        return getattr(self._env, name)


@dataclass
class Round:
    ops_per_s: float
    batches: int
    mean_batch: float
    commit_p50: float
    commit_p99: float
    op_p50: float
    op_p99: float


def _phone(i: int) -> str:
    return f"+1555{i:07d}"


async def _round(store, submitters: int, total: int) -> Round:
    regs = [store.submit(RegisterDevice(_phone(i), bytes(32), 0)) for i in range(RECIPIENTS)]
    await asyncio.gather(*regs)
    before = store.stats()
    per = total // submitters
    latencies: list[float] = []
    body = b"x" * 100

    async def submitter(n: int) -> None:
        me = _phone(RECIPIENTS + n)
        for i in range(per):
            to = _phone((n * per + i) % RECIPIENTS)
            t0 = time.perf_counter()
            await store.submit(StoreMessage(me, f"m{i}", to, body, 1_700_000_000_000 + i, 1 << 30))
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(submitter(n) for n in range(submitters)))
    elapsed = time.perf_counter() - t0
    after = store.stats()
    latencies.sort()
    batches = after.batches - before.batches
    return Round(ops_per_s=per * submitters / elapsed, batches=batches,
                 mean_batch=(after.ops - before.ops) / max(batches, 1),
                 commit_p50=after.median_commit_ms, commit_p99=after.p99_commit_ms,
                 op_p50=latencies[len(latencies) // 2] * 1e3,
                 op_p99=latencies[int(len(latencies) * 0.99)] * 1e3)


def _run(make: Callable[[str], object], submitters: int, total: int) -> Round:
    results = []
    for _ in range(ROUNDS):
        path = tempfile.mkdtemp(prefix="sb-bench-")
        store = make(path)
        try:
            results.append(_loop_run(_round(store, submitters, total)))
        finally:
            store.close()
            shutil.rmtree(path, ignore_errors=True)
    med = lambda f: statistics.median(getattr(r, f) for r in results)  # noqa: E731
    return Round(**{f: med(f) for f in Round.__dataclass_fields__})


def _loop_run(coro):
    try:
        import uvloop
        return asyncio.Runner(loop_factory=uvloop.new_event_loop).run(coro)
    except ImportError:
        return asyncio.run(coro)


def _flat_store(path: str) -> LmdbStore:
    store = LmdbStore(path)
    store._env = _FlatEnv(store._env)
    return store


def main(quick: bool = False) -> int:
    total = 10_000 if quick else 100_000
    rows = [
        ("lmdb, 100 submitters", lambda p: LmdbStore(p), 100),
        ("lmdb, 1,000 submitters", lambda p: LmdbStore(p), 1000),
        ("lmdb, no child txn, 100", _flat_store, 100),
        ("lmdb, sync off, 100", lambda p: LmdbStore(p, sync=False), 100),
        ("memory, 100", lambda p: MemoryStore(), 100),
    ]
    print(f"store_message, {total:,} ops per round, median of {ROUNDS} rounds, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'backend':26} {'ops/s':>9} {'batches':>8} {'ops/batch':>9} "
          f"{'commit p50':>10} {'p99':>7} {'op p50':>7} {'p99':>7}  (ms)")
    for name, make, submitters in rows:
        r = _run(make, submitters, total)
        print(f"{name:26} {r.ops_per_s:9,.0f} {r.batches:8,.0f} {r.mean_batch:9.1f} "
              f"{r.commit_p50:10.2f} {r.commit_p99:7.2f} {r.op_p50:7.2f} {r.op_p99:7.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
