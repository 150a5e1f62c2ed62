"""The QueueMonitor: sampling, alerts raised and cleared, the overload killer,
restart counts, rates and the offline-queue scan. The clock is fake, so
``sustain`` passes when the test says; samples come every 20 ms of real time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from actors import Actor
from actors.counters import counters_of
from actors.monitor import Board, GetStatus, MonitorSettings, QueueMonitor
from actors.queue_sample import MAILBOX_BUCKETS, OfflineSizes, measure, scan_inboxes
from storage import open_storage
from supervisor.base import Supervisor
from supervisor.spec import SupFlags, worker
from tests.conftest import wait_for

FAST = dict(monitor_interval=0.02, alert_actor_high=50, alert_actor_low=5,
            alert_worker_high=500, alert_worker_low=50, alert_sustain=1.0, offline_scan=0)


class Blocker(Actor):
    """Handles nothing until its gate opens: a mailbox that backs up on demand."""

    def __init__(self, gate: asyncio.Event):
        self.gate = gate

    async def handle_int(self, msg: int) -> None:
        await self.gate.wait()


class Idle(Actor):
    pass


async def start_monitor(system, **overrides):
    sent = []
    system.env["alert_sinks"] = [sent.extend]
    monitor = await system.spawn(QueueMonitor, MonitorSettings(**{**FAST, **overrides}))
    return monitor, system.env["board"], sent


def alerts(board: Board) -> list[str]:
    return [a["text"] for a in board.latest["alerts"]]


async def test_measure_counts_kinds_buckets_and_the_longest_queues(system):
    gate = asyncio.Event()
    idle = [await system.spawn(Idle) for _ in range(3)]
    blocker = await system.spawn(Blocker, gate)
    for i in range(31):
        blocker.cast(i)
    await asyncio.sleep(0)                       # the first is taken; 30 wait
    taken = measure(system, top_n=5)
    assert taken.actors == 4 and taken.queued == 30 and taken.max_queue == 30
    assert taken.kinds["Idle"] == {"count": 3, "queued": 0, "max": 0,
                                   "buckets": [3] * len(MAILBOX_BUCKETS)}
    assert taken.kinds["Blocker"]["buckets"] == [0, 0, 0, 1, 1, 1, 1]   # 30 <= 100
    assert taken.top == [(30, blocker)] and taken.backlogged == [blocker]
    gate.set()
    assert idle


async def test_alert_raised_when_an_actor_backs_up_and_cleared_when_it_drains(system, clock, caplog):
    caplog.set_level(logging.INFO, "switchboard.monitor")
    monitor, board, sent = await start_monitor(system)
    gate = asyncio.Event()
    blocker = await system.spawn(Blocker, gate)
    # Step 1: 200 messages back up behind the closed gate: pending, not yet raised.
    for i in range(200):
        blocker.cast(i)
    await wait_for(lambda: board.latest["max_queue"] == 199)
    assert board.latest["alerts"] == []
    # Step 2: sustain (1 s) passes on the fake clock: raised, logged, sent to the sink.
    clock.advance(1.0)
    await wait_for(lambda: board.latest["alerts"])
    assert alerts(board) == [f"actor {blocker!r} queue 199 >= 50 for >= 1 s"]
    assert board.latest["alerts_active"] == {"actor": 1, "worker": 0}
    assert f"alert raised: actor {blocker!r} queue 199" in caplog.text
    assert [(e["kind"], e["state"], e["value"]) for e in sent] == [("actor", "raised", 199)]
    assert (await monitor.call(GetStatus()))["top"][0] == {
        "actor": repr(blocker), "kind": "Blocker", "queue": 199}
    # Step 3: the gate opens, the mailbox drains: cleared, logged, sent.
    gate.set()
    await wait_for(lambda: not board.latest["alerts"])
    assert [(e["state"], e["peak"]) for e in sent] == [("raised", 199), ("cleared", 199)]
    assert "alert cleared: actor" in caplog.text
    assert [e["state"] for e in board.latest["alert_events"]] == ["raised", "cleared"]
    assert board.latest["totals"]["alerts_raised_actor"] == 1


async def test_worker_total_alert_has_its_own_thresholds(system, clock):
    monitor, board, sent = await start_monitor(system, alert_actor_high=10_000,
                                               alert_actor_low=1_000)
    gate = asyncio.Event()
    blockers = [await system.spawn(Blocker, gate) for _ in range(4)]
    for b in blockers:
        for i in range(201):
            b.cast(i)
    await wait_for(lambda: board.latest["queued"] == 800)
    clock.advance(1.0)
    await wait_for(lambda: board.latest["alerts"])
    assert board.latest["alerts"][0]["kind"] == "worker"
    assert "queued 800 >= 500" in alerts(board)[0]
    gate.set()
    await wait_for(lambda: not board.latest["alerts"])
    assert [e["kind"] for e in sent] == ["worker", "worker"]


async def test_a_failing_sink_is_logged_and_the_monitor_goes_on(system, clock, caplog):
    def broken(events):
        raise RuntimeError("sink down")
    monitor, board, _ = await start_monitor(system, alert_sustain=0)
    system.env["alert_sinks"] = [broken]
    gate = asyncio.Event()
    blocker = await system.spawn(Blocker, gate)
    for i in range(100):
        blocker.cast(i)
    await wait_for(lambda: "alert sink" in caplog.text)
    seen = board.latest["at"]
    await wait_for(lambda: board.latest["at"] > seen)     # still sampling
    assert monitor.is_alive
    gate.set()


async def test_overload_killer_kills_the_longest_queues_and_their_supervisor_restarts_them(system):
    # Step 1: a supervisor with two blockers; one backs up past min_queue.
    gate = asyncio.Event()
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 5, 10),
                             [worker(Blocker, gate, id="a"), worker(Blocker, gate, id="b")])
    kids = [ref for ref in system.actors() if ref.kind == "Blocker"]
    for i in range(300):
        kids[0].cast(i)
    for i in range(20):
        kids[1].cast(i)
    # Step 2: a watermark of 1 MB is always passed: the killer kills the long queue only.
    monitor, board, _ = await start_monitor(system, overload_rss_mb=1, overload_kill=5,
                                            overload_min_queue=100, overload_cooldown=3600)
    await wait_for(lambda: not kids[0].is_alive)
    assert kids[0].exit_reason == "killed" and kids[1].is_alive and sup.is_alive
    assert monitor.is_alive
    await wait_for(lambda: board.latest["overload"]["kills"] == 1)
    # Step 3: the supervisor restarted it (and the restart was counted).
    await wait_for(lambda: board.latest["restarts"])
    assert board.latest["restarts"] == [{"supervisor": f"Supervisor#{sup.pid}", "child": "a", "count": 1}]
    assert board.latest["recent_restarts"][0]["reason"] == "'killed'"
    assert len([r for r in system.actors() if r.kind == "Blocker"]) == 2
    gate.set()


async def test_rates_come_from_the_counters_and_the_fake_clock(system, clock):
    monitor, board, _ = await start_monitor(system)
    counters = counters_of(system)
    first = board.latest["at"]
    await wait_for(lambda: board.latest["at"] > first)
    counters.frames_in += 500
    clock.advance(2.0)
    await wait_for(lambda: board.latest["rates"]["frames_in"] == 250.0)
    assert board.latest["totals"]["frames_in"] == 500


async def test_offline_scan_adds_up_inboxes_a_chunk_at_a_time(tmp_path):
    storage = open_storage("lmdb", tmp_path / "lmdb")
    try:
        for n in range(5):
            await storage.register_device(f"+1555000000{n}", b"k" * 32, 0)
        # Step 1: three users get messages (3, 1, 1); a user never written to has no row.
        for i in range(3):
            await storage.store_message("+15550000000", f"a{i}", "+15550000001", b"hi", 0, 100)
        await storage.store_message("+15550000000", "b", "+15550000002", b"hi", 0, 100)
        await storage.store_message("+15550000000", "c", "+15550000003", b"hi", 0, 100)
        # Step 2: two rows per chunk (each its own read transaction).
        sizes, after, chunks = OfflineSizes(), None, 0
        while True:
            after = scan_inboxes(storage, after, 2, sizes)
            chunks += 1
            if after is None:
                break
        assert chunks == 2 and sizes.scanned == 3
        assert (sizes.users, sizes.messages, sizes.max_items) == (3, 5, 3)
        assert sizes.as_dict()["buckets"] == [0, 2, 3, 3, 3, 3]
    finally:
        storage.close()


async def test_monitor_publishes_the_offline_scan(system):
    storage = open_storage("memory")
    system.env["mailbox"] = storage
    await storage.register_device("+15550000001", b"k" * 32, 0)
    await storage.register_device("+15550000002", b"k" * 32, 0)
    await storage.store_message("+15550000001", "x", "+15550000002", b"hi", 0, 100)
    monitor, board, _ = await start_monitor(system, offline_scan=0.05)
    await wait_for(lambda: board.latest["offline"])
    assert board.latest["offline"]["messages"] == 1 and board.latest["offline"]["users"] == 1
    assert board.latest["storage"]["ops"] >= 3
    await monitor.stop()


def test_settings_from_config_cast_and_ignore_other_keys():
    s = MonitorSettings.from_config({"alert_actor_high": "20", "overload_rss_mb": 512,
                                     "port": 5222, "alert_sustain": None})
    assert s.alert_actor_high == 20 and s.overload_rss_mb == 512.0 and s.alert_sustain == 5.0
    with pytest.raises(ValueError):
        MonitorSettings(alert_actor_high=10, alert_actor_low=10).actor_thresholds()
