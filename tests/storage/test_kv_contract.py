"""The key-value contract (``storage.kv``) and group commit, run against
every backend: Txn semantics, per-op rollback inside a batch, a failed
commit, batching of concurrent submits, ack after commit, close."""

from __future__ import annotations

import asyncio
import time

import pytest

from storage import CommitFailed, StoreClosed
from storage_testkit import backend_fixture

# The ops here are closures: the writer process (storage.kv_process) takes
# picklable ops only, so this contract runs on the in-process backends.
backend = backend_fixture("memory", "lmdb")


def put(db, key, value):
    def op(txn):
        txn.put(db, key, value)
        return key
    return op


def get(db, key):
    return lambda txn: txn.get(db, key)


class Boom(Exception):
    pass


def put_then_raise(db, key):
    def op(txn):
        txn.put(db, key, b"never")
        txn.delete(db, b"k1")
        raise Boom(key)
    return op


def increment(db, key):
    """Read-modify-write: applied twice, it would count twice."""
    def op(txn):
        value = int(txn.get(db, key) or b"0") + 1
        txn.put(db, key, str(value).encode())
        return value
    return op


# -- Txn semantics ----------------------------------------------------------------
async def test_get_put_delete(backend):
    store = backend.store
    assert store.read(get("users", b"a")) is None
    await store.submit(put("users", b"a", b"1"))
    assert store.read(get("users", b"a")) == b"1"
    await store.submit(put("users", b"a", b"2"))          # overwrite
    assert store.read(get("users", b"a")) == b"2"
    assert store.read(get("codes", b"a")) is None          # databases are separate
    assert await store.submit(lambda txn: txn.delete("users", b"a")) is True
    assert await store.submit(lambda txn: txn.delete("users", b"a")) is False
    assert store.read(get("users", b"a")) is None


async def test_range_is_ordered_and_bounded(backend):
    store = backend.store
    keys = [b"a", b"a\x00\x01", b"a\x00\xff", b"ab", b"b", b"\xff\xff"]
    await asyncio.gather(*(store.submit(put("inbox", k, k.upper())) for k in reversed(keys)))

    def scan(*args, **kw):
        return store.read(lambda txn: [k for k, _ in txn.range("inbox", *args, **kw)])

    assert scan(b"") == keys
    assert scan(b"a\x00", b"a\x01") == [b"a\x00\x01", b"a\x00\xff"]
    assert scan(b"a", b"b") == keys[:4]                     # end is exclusive
    assert scan(b"a", b"b", reverse=True) == keys[3::-1]
    assert scan(b"a", None, reverse=True) == keys[::-1]
    assert scan(b"a\x00\x05", None, reverse=True) == keys[:1:-1]
    assert scan(b"", limit=2) == keys[:2]
    assert scan(b"", reverse=True, limit=2) == [b"\xff\xff", b"b"]
    assert scan(b"c", b"d") == [] and scan(b"c", b"d", reverse=True) == []
    assert scan(b"", limit=0) == []
    assert store.read(lambda txn: list(txn.range("inbox", b"ab", b"b"))) == [(b"ab", b"AB")]


async def test_last_with_prefix(backend):
    store = backend.store
    for k in [b"u1\x00\x01", b"u1\x00\x02", b"u10\x00\x09", b"\xff\xff\x01"]:
        await store.submit(put("inbox", k, b"v"))
    last = lambda prefix: store.read(lambda txn: txn.last("inbox", prefix))  # noqa: E731
    assert last(b"u1\x00") == (b"u1\x00\x02", b"v")
    assert last(b"u1") == (b"u10\x00\x09", b"v")
    assert last(b"u2") is None
    assert last(b"\xff\xff") == (b"\xff\xff\x01", b"v")     # a prefix with no successor
    assert last(b"") == (b"\xff\xff\x01", b"v")


async def test_read_transaction_cannot_write(backend):
    with pytest.raises(Exception):
        backend.store.read(lambda txn: txn.put("users", b"a", b"1"))
    assert backend.store.read(get("users", b"a")) is None


class Into:
    """A ``Settles`` of the caller's: records how it was settled."""

    def __init__(self):
        self.settled = asyncio.get_running_loop().create_future()

    def done(self) -> bool:
        return False

    def set_result(self, value) -> None:
        self.settled.set_result((True, value))

    def set_exception(self, error) -> None:
        self.settled.set_result((False, error))


async def test_submit_settles_the_callers_object(backend):
    store = backend.store
    # Step 1: a write and a failing op in one batch, each into an object of the caller's
    ok, bad = Into(), Into()
    async with backend.hold():
        assert store.submit(put("users", b"k", b"v"), into=ok) is ok
        assert store.submit(put_then_raise("users", b"x"), into=bad) is bad
    # Step 2: each is settled once, as a future would be
    assert await asyncio.wait_for(ok.settled, 5) == (True, b"k")
    settled, error = await asyncio.wait_for(bad.settled, 5)
    assert not settled and isinstance(error, Boom)
    assert store.read(get("users", b"k")) == b"v"


# -- group commit -----------------------------------------------------------------
async def test_failing_op_is_rolled_back_alone(backend):
    store = backend.store
    await store.submit(put("users", b"k1", b"kept"))
    # Step 1: three ops in ONE batch; the middle one writes, deletes, then raises.
    async with backend.hold():
        futs = [store.submit(put("users", b"k0", b"a")),
                store.submit(put_then_raise("users", b"k2")),
                store.submit(put("users", b"k3", b"c"))]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert store.stats().last_batch_size == 3
    # Step 2: the failing op reports its own exception; its writes are gone.
    assert results[0] == b"k0" and results[2] == b"k3"
    assert isinstance(results[1], Boom)
    assert store.read(get("users", b"k2")) is None
    assert store.read(get("users", b"k1")) == b"kept"
    # Step 3: the others committed, and the store still works.
    assert store.read(get("users", b"k0")) == b"a"
    assert store.read(get("users", b"k3")) == b"c"
    assert await store.submit(put("users", b"k4", b"d")) == b"k4"
    assert store.stats().failed_ops == 1


async def test_ops_around_a_failing_one_take_effect_once(backend):
    """LMDB runs a batch's ops straight in its transaction and, when one
    raises, runs the batch again with each op in a child transaction: what
    the first run did must not count twice."""
    store = backend.store
    async with backend.hold():
        futs = [store.submit(increment("users", b"n")),
                store.submit(put_then_raise("users", b"k2")),
                store.submit(increment("users", b"n"))]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], Boom) and results[2] == 2
    assert store.read(get("users", b"n")) == b"2"
    assert store.read(get("users", b"k2")) is None


async def test_failed_commit_fails_every_op_of_the_batch(backend, monkeypatch):
    store = backend.store
    real_commit = store._commit
    armed = False

    def failing_commit(txn):
        if armed:
            raise OSError("disk on fire")
        real_commit(txn)

    await store.submit(put("users", b"before", b"1"))
    monkeypatch.setattr(store, "_commit", failing_commit)
    # Step 1: every commit fails while armed; three ops form one batch.
    async with backend.hold():
        armed = True
        futs = [store.submit(put("users", b"x%d" % i, b"v")) for i in range(3)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    armed = False
    assert store.stats().last_batch_size == 3
    # Step 2: every op of the batch fails, with the cause attached; nothing stored.
    assert all(isinstance(r, CommitFailed) for r in results), results
    assert all(isinstance(r.__cause__, OSError) for r in results)
    assert all(store.read(get("users", b"x%d" % i)) is None for i in range(3))
    assert store.read(get("users", b"before")) == b"1"
    # Step 3: the writer survived: the next op commits.
    assert await store.submit(put("users", b"after", b"1")) == b"after"
    assert store.read(get("users", b"after")) == b"1"
    assert store.stats().failed_commits >= 1


async def test_concurrent_submits_are_grouped_into_few_batches(backend):
    store = backend.store
    before = store.stats()
    n = 500
    results = await asyncio.gather(*(store.submit(put("inbox", b"%05d" % i, b"v"))
                                     for i in range(n)))
    after = store.stats()
    assert results == [b"%05d" % i for i in range(n)]
    assert after.ops - before.ops == n
    assert after.batches - before.batches < n / 5
    assert after.max_batch_size > 1
    assert store.read(lambda txn: sum(1 for _ in txn.range("inbox", b""))) == n


async def test_batch_is_bounded_by_max_batch(tmp_path):
    from storage.kv_lmdb import LmdbStore
    from storage.kv_memory import MemoryStore
    for store in (MemoryStore(max_batch=7), LmdbStore(tmp_path / "db", max_batch=7)):
        with store:
            await asyncio.gather(*(store.submit(put("inbox", b"%03d" % i, b""))
                                   for i in range(50)))
            assert store.stats().max_batch_size <= 7
            assert store.stats().ops == 50


async def test_results_resolve_only_after_commit(backend, monkeypatch):
    store = backend.store
    events: list[str] = []
    futs: list[asyncio.Future] = []
    real_commit = store._commit

    def slow_commit(txn):
        time.sleep(0.05)                     # a slow fsync: nothing may resolve meanwhile
        events.append("resolved early" if any(f.done() for f in futs) else "commit")
        real_commit(txn)

    def on_done(key):
        # At resolution the write is visible to a fresh read transaction.
        return lambda fut: events.append(
            "visible" if store.read(get("users", key)) == b"v" else "not visible")

    monkeypatch.setattr(store, "_commit", slow_commit)
    async with backend.hold():
        for i in range(5):
            futs.append(store.submit(put("users", b"r%d" % i, b"v")))
            futs[-1].add_done_callback(on_done(b"r%d" % i))
    await asyncio.gather(*futs)
    assert events[-6:] == ["commit"] + ["visible"] * 5


async def test_write_blocks_until_committed(backend):
    store = backend.store
    assert store.write(put("users", b"w", b"1")) == b"w"
    assert store.read(get("users", b"w")) == b"1"
    with pytest.raises(Boom):
        store.write(put_then_raise("users", b"w2"))
    assert store.read(get("users", b"w2")) is None


async def test_close_commits_what_was_submitted(backend):
    store = backend.store
    futs = [store.submit(put("users", b"c%d" % i, b"v")) for i in range(20)]
    store.close()
    assert [await f for f in futs] == [b"c%d" % i for i in range(20)]
    with pytest.raises(StoreClosed):
        store.submit(put("users", b"late", b"v"))
    store.close()                                        # idempotent
    if backend.kind == "lmdb":                           # and it is on disk
        backend.store = backend._open()
        assert all(backend.store.read(get("users", b"c%d" % i)) == b"v" for i in range(20))


async def test_cancelled_future_does_not_break_the_batch(backend):
    store = backend.store
    async with backend.hold():
        futs = [store.submit(put("users", b"z%d" % i, b"v")) for i in range(3)]
        futs[1].cancel()
    assert await futs[0] == b"z0" and await futs[2] == b"z2"
    assert store.read(get("users", b"z1")) == b"v"       # cancelling does not un-write


async def test_an_op_raising_stopiteration_is_reported(backend):
    def op(txn):
        raise StopIteration
    with pytest.raises(RuntimeError):
        await backend.store.submit(op)
