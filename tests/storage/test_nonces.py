"""Media upload nonces against every backend (``storage.nonces``): taken
once, a replay refused, the sweep of expired records bounding the table,
and a nonce swept never taken again (the watermark). Two processes taking
the same nonce of one LMDB environment: exactly one gets it."""

from __future__ import annotations

import multiprocessing

import pytest

from storage import InvalidArgument, open_storage
from storage.nonces import FRESH, REPLAYED, STALE, SWEEP, TakeNonce

from storage_testkit import RECEIVER, SENDER

T = 1_700_000_000_000
WINDOW = 300_000                # transport.media_auth.MAX_SKEW_MS
N1, N2 = "ab" * 16, "cd" * 16


async def take(s, nonce: str, ts: int, now: int, user: str = SENDER, device: int = 1) -> str:
    return await s.take_nonce(user, device, nonce, ts, now - WINDOW)


async def test_a_nonce_is_taken_once_per_user_and_device(backend):
    s = backend.storage
    assert await take(s, N1, T, T) == FRESH
    assert await take(s, N1, T, T + 60_000) == REPLAYED
    assert await take(s, N1, T, T + WINDOW) == REPLAYED          # the edge of the window
    assert await take(s, N2, T, T) == FRESH                      # another nonce
    assert await take(s, N1, T, T, user=RECEIVER) == FRESH       # another user's
    assert await take(s, N1, T, T, device=2) == FRESH            # another device's
    assert await take(s, N1, T + 1, T) == FRESH                  # another (signed) time
    assert s.nonces_held() == 5


async def test_the_sweep_bounds_the_table_and_a_swept_nonce_stays_refused(backend):
    s = backend.storage
    # Step 1: a burst of uploads within one window; none has expired yet.
    burst = [f"{i:032x}" for i in range(3 * SWEEP)]
    for n in burst:
        assert await take(s, n, T, T) == FRESH
    assert s.nonces_held() == 3 * SWEEP
    # Step 2: past the window, each upload sweeps up to SWEEP expired records,
    # so the backlog shrinks by SWEEP - 1 per upload: the table is bounded.
    later = T + WINDOW + 1
    sizes = []
    for i in range(4):
        assert await take(s, f"{0xf0 + i:032x}", later, later) == FRESH
        sizes.append(s.nonces_held())
    assert sizes == [2 * SWEEP + 1, SWEEP + 2, 3, 4]
    # Step 3: a swept nonce replayed is refused (below the watermark), even by
    # a caller whose clock still has it inside the window.
    assert await take(s, burst[0], T, T + 1) == STALE
    assert await take(s, burst[-1], T, T + 1) == STALE
    assert s.nonces_held() == 4


async def test_a_malformed_nonce_or_time_fails_alone(backend):
    s = backend.storage
    for nonce, ts in (("AB" * 16, T), ("ab" * 15, T), (N1, -1), (N1, 1 << 56)):
        with pytest.raises(InvalidArgument):
            await take(s, nonce, ts, T)
    with pytest.raises(InvalidArgument):
        await take(s, N1, T, T, user="alice")
    assert await take(s, N1, T, T) == FRESH and s.nonces_held() == 1


def _take_in_a_process(path: str, nonces: list[str], start, results) -> None:
    storage = open_storage("lmdb-process", path)
    try:
        start.wait(10)
        results.put([storage.store.write(TakeNonce(SENDER, 1, n, T, T - WINDOW)) for n in nonces])
    finally:
        storage.close()


@pytest.mark.timeout(60)
def test_two_processes_of_one_environment_take_each_nonce_once(tmp_path):
    # What two worker processes of a node do when a captured upload reaches
    # both at once: each with its own writer process, one environment.
    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "lmdb")
    open_storage("lmdb", path).close()                  # the environment, created
    nonces = [f"{i:032x}" for i in range(50)]
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_take_in_a_process, args=(path, nonces, start, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    first, second = results.get(timeout=30), results.get(timeout=30)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert [sorted(pair) for pair in zip(first, second)] == [[FRESH, REPLAYED]] * len(nonces)
