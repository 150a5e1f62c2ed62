"""``QueueMonitor``: the worker's queue-length gauge, alerts and status board.

WhatsApp's primary health gauge was the message-queue length of every
process. Once per ``interval`` (default 1 s) the monitor measures every live
light actor's mailbox (``actors.queue_sample.measure``: ~3.5 ms for 100,000
actors), keeps per-kind aggregates and the longest queues, turns the event
counters (``actors.counters``) and the store's statistics into rates, and
publishes one JSON-able snapshot on the ``Board`` (``system.env["board"]``),
which the HTTP listener, ``/metrics`` and ``run.py top`` read from any thread.

Alerts (``actors.alerts``, hysteresis): one per actor whose queue stays
``>= alert_actor_high`` for ``alert_sustain`` s, cleared at
``<= alert_actor_low``; one for the worker's total queued messages
(``alert_worker_high`` / ``alert_worker_low``). Each transition goes to the
log, to the board (the dashboard's banner) and to every sink in
``system.env["alert_sinks"]`` (callables taking a list of event dicts; the
webhook sink is ``transport.webhook.WebhookSink``). The overload killer
(``actors.overload``, off unless ``overload_rss_mb`` is set) kills the
longest queues when RSS passes the watermark. Every ``offline_scan`` s a
background task adds up the users' offline inboxes, a chunk per loop turn.

Messages: ``Sample`` and ``ScanInboxes`` (its own timers), ``GetStatus``
(call: the latest snapshot), ``OfflineScanned`` (from its scan task).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

from actors.actor import Actor
from actors.alerts import AlertBook, Thresholds
from actors.counters import counters_of
from actors.overload import OverloadPolicy, rss_bytes, victims
from actors.queue_sample import OfflineSizes, measure, scan_inboxes

__all__ = ["QueueMonitor", "MonitorSettings", "Board", "Sample", "GetStatus",
           "ScanInboxes", "OfflineScanned", "MONITOR_NAME"]

log = logging.getLogger("switchboard.monitor")

MONITOR_NAME = "monitor"
_COUNTED = ("frames_in", "frames_out", "bytes_in", "bytes_out", "messages_in", "messages_out")


@dataclass(frozen=True)
class Sample:
    """Take a sample now (the monitor's own timer)."""


@dataclass(frozen=True)
class GetStatus:
    """Reply with the latest snapshot (a dict), or None before the first."""


@dataclass(frozen=True)
class ScanInboxes:
    """Start an offline-queue scan unless one runs (the monitor's own timer)."""


@dataclass(frozen=True)
class OfflineScanned:
    """The scan task's result: the sizes, or why it failed."""
    sizes: OfflineSizes | None
    error: str | None = None


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor's config keys (``config[name]``, see docs/operations.md)."""
    monitor_interval: float = 1.0
    monitor_top: int = 10
    alert_actor_high: int = 1_000
    alert_actor_low: int = 100
    alert_worker_high: int = 50_000
    alert_worker_low: int = 5_000
    alert_sustain: float = 5.0
    overload_rss_mb: float | None = None
    overload_kill: int = 10
    overload_min_queue: int = 100
    overload_cooldown: float = 10.0
    offline_scan: float = 10.0            # seconds between scans; 0: off
    offline_chunk: int = 2_000
    history: int = 300                    # chart points kept on the board

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MonitorSettings":
        values = {}
        for f in fields(cls):
            if config.get(f.name) is not None:
                kind = float if f.name in ("overload_rss_mb",) else type(f.default)
                values[f.name] = kind(config[f.name])
        return cls(**values)

    def actor_thresholds(self) -> Thresholds:
        return Thresholds(self.alert_actor_high, self.alert_actor_low, self.alert_sustain)

    def worker_thresholds(self) -> Thresholds:
        return Thresholds(self.alert_worker_high, self.alert_worker_low, self.alert_sustain)

    def overload(self) -> OverloadPolicy:
        return OverloadPolicy(self.overload_rss_mb, self.overload_kill,
                              self.overload_min_queue, self.overload_cooldown)


class Board:
    """What the monitor publishes, for readers in any thread. Every field is
    replaced whole, never mutated after publication: ``latest`` (the
    snapshot dict), ``history`` (a tuple of chart points)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.history: tuple[dict[str, Any], ...] = ()


class QueueMonitor(Actor):
    def __init__(self, settings: MonitorSettings | None = None):
        self.settings = settings
        self.timer: asyncio.TimerHandle | None = None
        self.scan_task: asyncio.Task | None = None

    def init(self) -> None:
        env = self.system.env
        config = env.get("config") or {}
        s = self.settings = self.settings or MonitorSettings.from_config(config)
        self.board: Board = env.setdefault("board", Board())
        self.counters = counters_of(self.system)
        self.actor_alerts = AlertBook("actor", s.actor_thresholds())
        self.worker_alerts = AlertBook("worker", s.worker_thresholds(), what="queued")
        self.policy = s.overload()
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.raised = {"actor": 0, "worker": 0}
        self.history: deque[dict[str, Any]] = deque(self.board.history, maxlen=s.history)
        self.slot = int(config.get("worker_index", 0))
        self.started_at = time.time()
        self.offline: dict[str, Any] | None = None
        self.last_kill: float | None = None
        self.prev: tuple[float, tuple[int, ...]] | None = None
        self.due = self.system.clock()
        self.handle_sample(Sample())
        if s.offline_scan > 0 and "mailbox" in env:
            self.system.send_after(min(1.0, s.offline_scan), self.ref, ScanInboxes())

    async def terminate(self, reason: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.scan_task is not None:
            self.scan_task.cancel()
            await asyncio.gather(self.scan_task, return_exceptions=True)

    # -- handlers ------------------------------------------------------------------
    def handle_sample(self, msg: Sample) -> None:
        now = self.system.clock()
        lag = max(0.0, now - self.due)
        taken = measure(self.system, self.settings.monitor_top)
        events = self._check_alerts(taken, now)
        self.events.extend(events)
        self._maybe_kill(taken, now)
        self.board.latest = snapshot = self._snapshot(taken, now, lag, events)
        self.history.append(_point(snapshot))
        self.board.history = tuple(self.history)
        if events:
            self._emit(events)
        self.due = now + self.settings.monitor_interval
        self.timer = self.system.send_after(self.settings.monitor_interval, self.ref, Sample())

    def handle_get_status(self, msg: GetStatus) -> dict[str, Any] | None:
        return self.board.latest

    def handle_offline_scanned(self, msg: OfflineScanned) -> None:
        self.scan_task = None
        if msg.sizes is not None:
            self.offline = msg.sizes.as_dict()
        elif msg.error:
            log.warning("offline queue scan failed: %s", msg.error)
        self.system.send_after(self.settings.offline_scan, self.ref, ScanInboxes())

    def handle_scan_inboxes(self, msg: ScanInboxes) -> None:
        if self.scan_task is None:
            self.scan_task = asyncio.ensure_future(_scan(self.system.env["mailbox"],
                                                         self.settings.offline_chunk, self.ref))

    # -- alerts and the overload killer -----------------------------------------------
    def _check_alerts(self, taken: Any, now: float) -> list[dict[str, Any]]:
        actors = {ref.pid: (ref.mailbox_len, repr(ref)) for ref in taken.backlogged}
        events = self.actor_alerts.observe(actors, now)
        worker = {self.slot: (taken.queued, f"{self.slot} (pid {os.getpid()})")}
        events += self.worker_alerts.observe(worker, now)
        wall = time.time()
        for e in events:
            if e.state == "raised":
                self.raised[e.kind] += 1
        return [{**e.as_dict(), "at": wall, "since": wall - (now - e.since), "worker": self.slot}
                for e in events]

    def _emit(self, events: list[dict[str, Any]]) -> None:
        for i, event in enumerate(events):
            if i == 20:
                log.warning("... and %d more alert transitions", len(events) - 20)
                break
            logger = log.warning if event["state"] == "raised" else log.info
            logger("alert %s: %s", event["state"], event["text"])
        for sink in self.system.env.get("alert_sinks") or ():
            try:
                sink(events)
            except Exception:                  # noqa: BLE001 - a sink never stops the monitor
                log.exception("alert sink %r failed", sink)

    def _maybe_kill(self, taken: Any, now: float) -> None:
        if not self.policy.enabled:
            return
        rss = rss_bytes()
        if not self.policy.due(rss, now, self.last_kill):
            return
        self.last_kill = now
        chosen = victims(taken.backlogged, self.policy)
        log.error("overload: RSS %.0f MB >= %.0f MB: killing %d actors with the longest queues",
                  rss / 2**20, self.policy.rss_mb, len(chosen))
        for ref in chosen:
            log.error("overload: killing %r (queue %d)", ref, ref.mailbox_len)
            ref.exit("kill")
        self.counters.overload_kills += len(chosen)

    # -- the snapshot ---------------------------------------------------------------
    def _rates(self, now: float, store: Any) -> dict[str, float]:
        c = self.counters
        current = tuple(getattr(c, name) for name in _COUNTED) + (
            getattr(store, "ops", 0), getattr(store, "batches", 0), self.system.dead_letters)
        rates = dict.fromkeys((*_COUNTED, "store_ops", "commits", "dead_letters"), 0.0)
        if self.prev is not None and now > self.prev[0]:
            elapsed = now - self.prev[0]
            for name, new, old in zip(rates, current, self.prev[1]):
                rates[name] = round(max(0, new - old) / elapsed, 1)
        self.prev = (now, current)
        return rates

    def _snapshot(self, taken: Any, now: float, lag: float, events: list) -> dict[str, Any]:
        env, s, c = self.system.env, self.settings, self.counters
        mailbox = env.get("mailbox")
        store = mailbox.stats() if mailbox is not None else None
        config = env.get("config") or {}
        return {
            "at": time.time(), "worker": self.slot, "pid": os.getpid(),
            "started_at": self.started_at, "interval": s.monitor_interval,
            "http_port": env.get("http_port"), "tcp_port": env.get("tcp_port"),
            "node": config.get("node_name"),
            "actors": taken.actors, "queued": taken.queued, "max_queue": taken.max_queue,
            "kinds": taken.kinds,
            "top": [{"actor": repr(ref), "kind": ref.kind, "queue": n} for n, ref in taken.top],
            "connections": _connections(self.system),
            "mesh": _mesh(env.get("cluster")),
            "rates": self._rates(now, store),
            "totals": {**{name: getattr(c, name) for name in _COUNTED},
                       "dead_letters": self.system.dead_letters,
                       "overload_kills": c.overload_kills,
                       "alerts_raised_actor": self.raised["actor"],
                       "alerts_raised_worker": self.raised["worker"]},
            "storage": asdict(store) if store is not None else None,
            "offline": self.offline,
            "alerts": _ages(self.worker_alerts.active() + self.actor_alerts.active()[:50], now),
            "alerts_active": {"actor": sum(w.raised for w in self.actor_alerts.watches.values()),
                              "worker": sum(w.raised for w in self.worker_alerts.watches.values())},
            "alert_events": list(self.events)[-20:],
            "restarts": [{"supervisor": sup, "child": child, "count": n}
                         for (sup, child), n in sorted(c.restarts.items())],
            "recent_restarts": list(c.recent_restarts)[-20:],
            "process": {"rss_bytes": rss_bytes(), "loop_lag_ms": round(lag * 1000, 2),
                        "sample_ms": round(taken.seconds * 1000, 3)},
            "thresholds": {"actor_high": s.alert_actor_high, "actor_low": s.alert_actor_low,
                           "worker_high": s.alert_worker_high, "worker_low": s.alert_worker_low,
                           "sustain": s.alert_sustain},
            "overload": {"enabled": self.policy.enabled, "rss_mb": s.overload_rss_mb,
                         "kills": c.overload_kills},
        }


def _point(snap: dict[str, Any]) -> dict[str, Any]:
    """One chart point of a snapshot."""
    rates = snap["rates"]
    return {"t": snap["at"], "frames_in": rates["frames_in"], "frames_out": rates["frames_out"],
            "messages_in": rates["messages_in"], "messages_out": rates["messages_out"],
            "store_ops": rates["store_ops"], "queued": snap["queued"],
            "max_queue": snap["max_queue"], "alerts": len(snap["alerts"])}


def _ages(alerts: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Alert rows with wall-clock times (the books keep the system's clock)."""
    wall = time.time()
    for row in alerts:
        row["for_s"] = round(now - row["since"], 1)
        row["since"] = wall - (now - row["since"])
        row["raised_at"] = wall - (now - row["raised_at"])
    return alerts


def _connections(system: Any) -> int:
    """Open client sockets: the size of the TCP ``Listener``'s connection set."""
    ref = system.whereis("listener")
    listener = getattr(ref, "_actor", None)
    return len(getattr(listener, "connections", ()) or ())


def _mesh(cluster: Any) -> dict[str, Any] | None:
    """This worker's view of the node's mesh of workers (None: a lone worker)."""
    if cluster is None:
        return None
    return {"worker": cluster.me, "peers": sorted(cluster.peers),
            "remote_users": len(cluster.owners), "sent_batches": cluster.sent_batches,
            "sent_items": cluster.sent_items, "received_items": cluster.received_items}


async def _scan(storage: Any, chunk: int, monitor: Any) -> None:
    """Add up every user's inbox a chunk at a time, yielding the loop between
    chunks; cast ``OfflineScanned`` to ``monitor`` at the end."""
    sizes, after, started = OfflineSizes(), None, time.perf_counter()
    try:
        while True:
            after = scan_inboxes(storage, after, chunk, sizes)
            if after is None:
                break
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        raise
    except Exception as exc:                   # noqa: BLE001 - reported, retried next period
        monitor.cast(OfflineScanned(None, f"{type(exc).__name__}: {exc}"))
        return
    sizes.seconds, sizes.at = time.perf_counter() - started, time.time()
    monitor.cast(OfflineScanned(sizes))
