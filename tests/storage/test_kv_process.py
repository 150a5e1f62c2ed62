"""``storage.kv_process.ProcessStore``: what the writer process adds to the
store contract (the domain suites run on it through the ``backend``
fixture): the writer's loss, closing, the blocking ``write``, ops and errors
crossing the process boundary, and the home map replicated ahead of ops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading

import pytest

from storage import CommitFailed, Storage, StoreClosed, UnknownUser
from storage.accounts import RegisterDevice
from storage.batch import ACK, SEND
from storage.errors import OfflineFull
from storage.kv_lmdb import LmdbStore
from storage.kv_process import ProcessStore
from storage.metas import Homes
from storage.records import Stored
from storage.writer_process import CHUNK, _Frames, frame
from storage_testkit import KEY, OTHER, RECEIVER, SENDER

T, CAP = 1_000, 10


@pytest.fixture
def path(tmp_path):
    return tmp_path / "lmdb"


async def _open(path, **kw) -> Storage:
    storage = Storage(ProcessStore(path, **kw))
    for phone in (SENDER, RECEIVER, OTHER):
        await storage.register_device(phone, KEY, 1)
    return storage


def _follow_homes(s: Storage) -> Homes:
    """``s`` follows a home map of node A where both users are at home."""
    homes = Homes("A", {SENDER: "A", RECEIVER: "A"})
    s.follow_homes(homes)
    return homes


async def test_results_and_refusals_cross_typed(path):
    s = await _open(path, commit_interval=0.0)
    try:
        results = await s.user_batch(SENDER, [(SEND, "m1", RECEIVER, b"hi"),
                                              (SEND, "m2", "+15559999999", b"x")], T, CAP)
        assert results[0] == (True, Stored(1, T))
        assert isinstance(results[1][1], UnknownUser) and results[1][1].phone == "+15559999999"
        for i in range(CAP - 1):
            await s.store_message(SENDER, f"f{i}", RECEIVER, b"", T, CAP)
        with pytest.raises(OfflineFull) as full:
            await s.store_message(SENDER, "over", RECEIVER, b"", T, CAP)
        assert (full.value.phone, full.value.cap) == (RECEIVER, CAP)
        [routed] = await s.ack_inbox(RECEIVER, [1], T)     # reads see the child's commits
        assert routed.to == SENDER and s.inbox_count(RECEIVER) == CAP - 1
    finally:
        s.close()


async def test_a_batch_settles_the_callers_object(path):
    s = await _open(path, commit_interval=0.0)
    try:
        loop = asyncio.get_running_loop()
        settled = loop.create_future()

        class Into:
            def done(self):
                return False

            def set_result(self, value):
                settled.set_result(value)

            def set_exception(self, error):
                settled.set_exception(error)

        into = Into()
        assert s.user_batch(SENDER, [(SEND, "m1", RECEIVER, b"hi")], T, CAP, into=into) is into
        assert await asyncio.wait_for(settled, 5) == [(True, Stored(1, T))]
    finally:
        s.close()


async def test_a_batch_stops_at_max_batch_requests(path):
    s = await _open(path, commit_interval=0.0, max_batch_requests=4)
    try:
        before = s.store.stats().batches
        # Step 1: three drains of three requests each, sent to the writer together
        futures = [s.user_batch(SENDER, [(SEND, f"{i}-{j}", RECEIVER, b"x") for j in range(3)],
                                T, CAP) for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        # Step 2: 3 + 3 passes 4, so the first batch ends after two; the third has its own
        assert s.store.stats().batches - before == 2 and s.store.stats().last_batch_size == 1
        assert [ok for drain in results for ok, _ in drain] == [True] * 9
    finally:
        s.close()


async def test_an_op_that_cannot_be_pickled_fails_alone(path):
    s = await _open(path)
    try:
        bad = s.store.submit(lambda txn: None)
        good = s.store_message(SENDER, "m1", RECEIVER, b"", T, CAP)
        with pytest.raises(TypeError, match="picklable"):
            await bad
        assert (await good).seq == 1
    finally:
        s.close()


async def test_ops_submitted_together_keep_their_order(path):
    s = await _open(path)
    try:
        futs = [s.store_message(SENDER, f"m{i}", RECEIVER, bytes([i]), T, 1000) for i in range(50)]
        assert [f.seq for f in await asyncio.gather(*futs)] == list(range(1, 51))
        assert [i.payload.body for i in s.inbox_after(RECEIVER, 0, None)] == [bytes([i]) for i in range(50)]
    finally:
        s.close()


async def test_a_killed_writer_fails_what_waits_and_calls_on_lost(path):
    lost = asyncio.Event()
    s = await _open(path, on_lost=lost.set, commit_interval=0.5)   # ops wait 0.5 s for company
    try:
        await s.store_message(SENDER, "before", RECEIVER, b"", T, CAP)
        waiting = s.store_message(SENDER, "during", RECEIVER, b"", T, CAP)
        await asyncio.sleep(0.05)           # sent; the writer holds it until the interval ends
        os.kill(s.store.pid, signal.SIGKILL)
        with pytest.raises(CommitFailed, match="lost"):
            await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(lost.wait(), 5)
        with pytest.raises(StoreClosed):
            await s.store_message(SENDER, "after", RECEIVER, b"", T, CAP)
        assert s.inbox_count(RECEIVER) == 1         # reads still work: the file is there
    finally:
        s.close()


async def test_close_commits_what_was_submitted(path):
    s = await _open(path, commit_interval=0.2)
    futs = [s.store_message(SENDER, f"m{i}", RECEIVER, b"", T, 1000) for i in range(20)]
    s.close()                               # before any of them was answered
    assert all(f.done() and f.result().seq == i + 1 for i, f in enumerate(futs))
    with pytest.raises(StoreClosed):
        await s.store_message(SENDER, "late", RECEIVER, b"", T, 1000)
    reopened = Storage(LmdbStore(path))     # durable: another store sees them
    try:
        assert reopened.inbox_count(RECEIVER) == 20
    finally:
        reopened.close()


def test_write_blocks_without_a_loop(path):
    with ProcessStore(path) as store:
        assert store.write(RegisterDevice(SENDER, KEY, 1)) == 1
        with pytest.raises(ValueError):
            store.write(RegisterDevice("not a phone", KEY, 1))


async def test_write_from_another_thread_goes_through_the_loop(path):
    s = await _open(path)
    try:
        await s.store_message(SENDER, "bind", RECEIVER, b"", T, CAP)     # binds the loop
        device = await asyncio.get_running_loop().run_in_executor(
            None, s.store.write, RegisterDevice(SENDER, KEY, 2))
        assert device == 2
    finally:
        s.close()


async def test_the_home_map_reaches_the_writer_before_later_ops(path):
    s = await _open(path)
    try:
        homes = _follow_homes(s)
        assert (await s.store_message(SENDER, "m1", RECEIVER, b"", T, CAP)).seq == 1
        homes.map[RECEIVER] = "B"           # RECEIVER moved: told, then a send
        s.homes_changed({RECEIVER: "B"})
        assert (await s.store_message(SENDER, "m2", RECEIVER, b"", T, CAP)).seq == 0
        assert s.outq_pending() == {"B": 1} and s.inbox_count(RECEIVER) == 1
    finally:
        s.close()


async def test_a_home_map_change_sent_between_two_ops_applies_between_them(path):
    s = await _open(path)
    try:
        homes = _follow_homes(s)
        first = s.store_message(SENDER, "m1", RECEIVER, b"", T, CAP)    # one frame, in order:
        homes.map[RECEIVER] = "B"                                       # op, change, op
        s.homes_changed({RECEIVER: "B"})
        second = s.store_message(SENDER, "m2", RECEIVER, b"", T, CAP)
        assert ((await first).seq, (await second).seq) == (1, 0)
        assert s.outq_pending() == {"B": 1} and s.inbox_count(RECEIVER) == 1
    finally:
        s.close()


async def test_a_relative_path_is_the_callers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)             # the writer runs elsewhere: same files all the same
    s = await _open("relative/lmdb")
    try:
        assert (await s.store_message(SENDER, "m1", RECEIVER, b"", T, CAP)).seq == 1
        assert s.inbox_count(RECEIVER) == 1
    finally:
        s.close()
    assert (tmp_path / "relative" / "lmdb" / "data.mdb").exists()


def test_frames_larger_than_one_read_arrive_whole_and_in_order():
    """``_Frames.fill`` reads at most ``CHUNK`` bytes into one kept buffer:
    a frame several reads long comes out whole, the small ones around it
    in order, and the end of the stream reads as 0."""
    objs = [("small", 1), ("big", b"x" * (3 * CHUNK + 17)), ("small", 2)]
    ours, theirs = socket.socketpair()
    data = b"".join(frame(o) for o in objs)
    sender = threading.Thread(target=lambda: (theirs.sendall(data), theirs.close()))
    sender.start()
    frames, got = _Frames(), []
    try:
        for _ in range(10_000):                 # bounded: a few dozen reads at most
            if not frames.fill(ours):
                break
            got += frames.frames()
        sender.join(5)
        assert got == objs
        assert frames.fill(ours) == 0 and frames.buf == bytearray()
    finally:
        ours.close()
