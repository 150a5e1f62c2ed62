"""LMDB only: what was acknowledged survives SIGKILL, counters survive a
reopen, two processes sharing one environment never reuse a seq, and an
LMDB error inside one op fails that op alone."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time

import lmdb

from storage import InboxMeta, Storage
from storage.kv_lmdb import LmdbStore
from storage.mailbox import recount_inbox

from storage_testkit import OTHER, RECEIVER, SENDER, Blocker

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acked_writer.py")


def spawn_writer(path, sender: str, count: int, concurrency: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WRITER, str(path), sender, RECEIVER, str(count),
                             str(concurrency)], stdout=subprocess.PIPE, text=True)


def read_acks(proc: subprocess.Popen, want: int, timeout: float) -> list[tuple[int, str]]:
    """Lines the writer printed, until ``want`` of them or ``timeout``."""
    acks: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while len(acks) < want:
            assert time.monotonic() < deadline, f"only {len(acks)} acks in {timeout}s"
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                assert line, f"writer exited early with {proc.wait()}"
                seq, cid = line.split()
                acks.append((int(seq), cid))
    return acks


def stored_ids(path) -> dict[int, str]:
    with LmdbStore(path) as store:
        s = Storage(store)
        items = s.inbox_after(RECEIVER, 0, limit=None)
        assert store.read(lambda txn: recount_inbox(txn, RECEIVER)) == s.inbox_meta(RECEIVER)
    return {item.seq: item.payload.id for item in items}


def test_acknowledged_messages_survive_sigkill(tmp_path):
    # Step 1: a writer process stores messages, printing each one once committed.
    path = tmp_path / "lmdb"
    proc = spawn_writer(path, SENDER, count=1_000_000, concurrency=50)
    try:
        acks = read_acks(proc, want=2000, timeout=15)
    finally:
        # Step 2: kill it mid-way, with ops in flight.
        proc.kill()
    rest = proc.stdout.read()
    assert proc.wait(5) == -signal.SIGKILL
    acks += [(int(s), c) for s, c in (line.split() for line in rest.splitlines(keepends=True)
                                      if line.endswith("\n"))]
    # Step 3: every acknowledged message is on disk, under its seq.
    stored = stored_ids(path)
    assert all(stored.get(seq) == cid for seq, cid in acks)
    assert len(acks) <= len(stored) < 1_000_000
    assert sorted(stored) == list(range(1, len(stored) + 1))        # no holes


async def test_reopen_keeps_seq_counters(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbStore(path) as store:
        s = Storage(store)
        await s.register_device(SENDER, bytes(32), 0)
        await s.register_device(RECEIVER, bytes(32), 0)
        for i in range(3):
            await s.store_message(SENDER, f"m{i}", RECEIVER, b"x", i, 100)
        await s.ack_inbox(RECEIVER, [1, 2, 3], 5)
    with LmdbStore(path) as store:
        s = Storage(store)
        assert s.inbox_meta(RECEIVER) == InboxMeta(next_seq=4, messages=0, receipts=0)
        assert s.inbox_meta(SENDER) == InboxMeta(next_seq=4, messages=0, receipts=3)
        assert (await s.store_message(SENDER, "m9", RECEIVER, b"x", 9, 100)).seq == 4
        assert (await s.store_message(SENDER, "m0", RECEIVER, b"x", 9, 100)).duplicate
        assert s.get_account(RECEIVER).device_id == 1


async def test_two_processes_share_one_environment(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbStore(path) as store:
        s = Storage(store)
        await s.register_device(RECEIVER, bytes(32), 0)
        # Step 1: another process writes to the same inbox...
        proc = spawn_writer(path, OTHER, count=400, concurrency=20)
        try:
            # Step 2: ...while this one does too, until the other is done.
            mine: list[int] = []
            i = 0
            while proc.poll() is None:
                batch = [s.store_message(SENDER, f"p{i + k}", RECEIVER, b"y", 0, 1 << 30)
                         for k in range(10)]
                i += 10
                mine += [r.seq for r in await asyncio.gather(*batch)]
            theirs = [seq for seq, _ in read_acks(proc, want=400, timeout=5)]
        finally:
            proc.kill()
            proc.wait(5)
        # Step 3: one seq per message, no holes, and they interleaved.
        assert proc.returncode == 0
        assert sorted(mine + theirs) == list(range(1, len(mine) + len(theirs) + 1))
        assert min(theirs) < max(mine) and min(mine) < max(theirs)
        assert s.inbox_count(RECEIVER) == len(mine) + len(theirs)


async def test_lmdb_error_inside_an_op_fails_it_alone(tmp_path):
    def put(key: bytes, size: int):
        def op(txn):
            txn.put("inbox", key, b"x" * size)
            return key
        return op

    with LmdbStore(tmp_path / "lmdb", map_size=1 << 20) as store:
        # Step 1: park the writer so the next three ops form one batch.
        blocker = Blocker()
        parked = store.submit(blocker)
        await asyncio.get_running_loop().run_in_executor(None, blocker.started.wait, 5)
        futs = [store.submit(put(b"a", 10)), store.submit(put(b"huge", 2 << 20)),
                store.submit(put(b"c", 10))]
        blocker.release.set()
        await parked
        # Step 2: the op that overflowed the map fails; its neighbours commit.
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert store.stats().last_batch_size == 3
        assert results[0] == b"a" and results[2] == b"c"
        assert isinstance(results[1], lmdb.MapFullError)
        assert store.read(lambda txn: [k for k, _ in txn.range("inbox", b"")]) == [b"a", b"c"]
