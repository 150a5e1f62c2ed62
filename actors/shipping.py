"""``Shipping``: the two ends of the outbound queues between nodes (a mixin
of ``actors.federation.Federation``, kept apart so that module stays about
the cluster view and calls). Both ends run on a node's gateway (worker 0).

- **The forwarder** ships what ``storage/outq.py`` holds for each other
  node: the oldest items after the last confirmed one (up to ``SHIP_MAX``,
  and ``SHIP_BYTES`` of bodies) as one ``Shipment`` to the destination's
  gateway, one in flight per destination. ``Shipped(upto)`` sends the next
  one at once and trims the confirmed items meanwhile; no answer within
  ``RESEND_AFTER`` s (doubling to ``RESEND_MAX``) ships again from the last
  confirmed item. A queue to a node that is down waits in LMDB. The loop
  looks at the queues every ``POLL`` s and when poked; an error is logged
  and retried, never fatal (the node would go on ACKing what never ships).
- **The receiving end** applies a shipment in one transaction (each
  origin's items once, in order: a watermark in this node's LMDB), pushes
  what it appended to local sessions, asks the media fetcher for the blobs
  the messages name, and answers ``Shipped``.
- **Back-pressure** (``behind``): past ``outq_high`` items queued for one
  node, SENDs to users homed there are refused (RATE_LIMITED) until it
  drains: what was accepted is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from supervisor.cluster_directory import Shipment, Shipped

__all__ = ["Shipping", "SHIP_MAX", "SHIP_BYTES", "RESEND_AFTER", "RESEND_MAX", "POLL",
           "OUTQ_HIGH"]

log = logging.getLogger("switchboard.federation")

SHIP_MAX = 512            # queue items per Shipment
RESEND_AFTER = 2.0        # seconds without Shipped before a shipment is sent again,
RESEND_MAX = 30.0         # doubling up to this while it stays unanswered
SHIP_BYTES = 1 << 20      # bodies per Shipment (at least one item)
POLL = 0.005              # seconds between looks at the queues when nothing poked
OUTQ_HIGH = 100_000       # items queued for one node before SENDs to its users wait
PENDING_TTL = 0.1         # seconds the queue sizes read for ``behind`` are reused


class Shipping:
    """Mixed into ``Federation``: needs ``node``, ``worker``, ``nodes``,
    ``mail``, ``cap``, ``system``, ``cluster``, ``is_up``, ``remote``,
    ``_nudge``."""

    def init_shipping(self) -> None:
        self.in_flight: dict[str, tuple[int, float, float]] = {}  # dest -> (last seq, sent at, wait)
        self.acked: dict[str, int] = {}            # dest -> highest seq it confirmed
        self.pending: dict[str, int] = {}          # dest -> items queued (read for ``behind``)
        self.pending_at = 0.0
        self.outq_high = OUTQ_HIGH
        self.epoch: str | None = None
        self.poke = asyncio.Event()
        self.forwarder: asyncio.Task | None = None
        self.shipped_items = self.applied_items = 0

    def behind(self, user: str) -> str | None:
        """Why a SEND to ``user`` must wait (RATE_LIMITED), or None: the
        queue to the user's home holds ``outq_high`` items already (its node
        is down or slower than the senders). Messages accepted are never
        dropped; past this, new ones are refused until it drains. The
        queue sizes are read at most every ``PENDING_TTL`` s."""
        home = self.remote(user)
        if home is None:
            return None
        now = time.monotonic()
        if now - self.pending_at > PENDING_TTL:
            self.pending, self.pending_at = self.mail.outq_pending(), now
        held = self.pending.get(home, 0)
        if held < self.outq_high:
            return None
        return f"node {home} is {held} messages behind; retry later"

    # -- the receiving end of the queues (gateway) -------------------------------------
    def _on_Shipment(self, msg: Shipment) -> None:
        future = self.mail.outq_apply(msg.origin, msg.epoch, msg.items, self.cap)
        loop = asyncio.get_running_loop()
        future.add_done_callback(
            lambda done: loop.call_soon_threadsafe(self._applied, msg.origin, done))

    def _applied(self, origin: str, done: Any) -> None:
        error = done.exception()
        if error is not None:
            log.error("applying a shipment from %s failed (it will be resent): %r", origin, error)
            return
        applied = done.result()
        self.applied_items += len(applied.nudges)
        self._nudge(applied.nudges)
        fetcher = self.system.env.get("media_fetcher")    # transport/media_fetch.py
        for node, hashes in applied.media if fetcher is not None else ():
            fetcher.want(node, hashes)          # blobs the recipients will download here
        info = self.nodes.get(origin)
        if info is not None:
            self.cluster.bridge.post(info.gateway, Shipped(self.node, applied.upto))
        self.poke.set()              # bounces may have been queued back to the origin

    def _on_Shipped(self, msg: Shipped) -> None:
        """The next shipment leaves at once; the trim of what was confirmed
        commits meanwhile (a peek starts after ``acked``, so a confirmed item
        not trimmed yet is never shipped again)."""
        sent = self.in_flight.get(msg.node)
        if msg.upto > self.acked.get(msg.node, 0):
            self.acked[msg.node] = msg.upto
            self.mail.outq_trim(msg.node, msg.upto).add_done_callback(self._trimmed)
        if sent is not None and msg.upto >= sent[0]:
            del self.in_flight[msg.node]
            self._ship_to(msg.node, time.monotonic())

    def _trimmed(self, done: Any) -> None:
        if done.exception() is not None:    # (on the writer's thread) retried by the next trim
            log.error("trimming an outbound queue failed: %r", done.exception())

    # -- the forwarder (gateway) -------------------------------------------------------
    async def _forward(self) -> None:
        """Ship what the queues hold, one shipment in flight per destination.
        It must not die quietly (ACKs would go on while nothing ships): an
        error is logged and retried after a second."""
        epoch = None
        while True:
            try:
                await asyncio.wait_for(self.poke.wait(), POLL)
            except asyncio.TimeoutError:
                pass
            self.poke.clear()
            try:
                if epoch is None:
                    epoch = await asyncio.wrap_future(self.mail.outq_epoch())
                self._ship(epoch)
            except Exception:  # noqa: BLE001 - logged, retried: the queues are in LMDB
                log.exception("%s: the forwarder failed; retrying in 1 s", self.worker)
                await asyncio.sleep(1.0)

    def _ship(self, epoch: str) -> None:
        self.epoch = epoch
        now = time.monotonic()
        for dest, count in self.mail.outq_pending().items():
            if count > 0:
                self._ship_to(dest, now)

    def _ship_to(self, dest: str, now: float) -> None:
        if self.epoch is None or not self.is_up(dest):
            return
        sent = self.in_flight.get(dest)
        if sent is not None and now - sent[1] < sent[2]:
            return
        items = _within_bytes(self.mail.outq_peek(dest, SHIP_MAX, self.acked.get(dest, 0)),
                              SHIP_BYTES)
        if not items:
            return
        if sent is not None:            # unanswered: wait longer before the next resend
            log.warning("%s: no answer from node %s in %.0f s; shipping again",
                        self.worker, dest, sent[2])
        wait = RESEND_AFTER if sent is None else min(sent[2] * 2, RESEND_MAX)
        self.in_flight[dest] = (items[-1][0], now, wait)
        self.shipped_items += len(items)
        self.cluster.bridge.post(self.nodes[dest].gateway, Shipment(self.node, self.epoch, items))


def _within_bytes(items: list, budget: int) -> list:
    """The first items of a shipment whose bodies fit ``budget`` bytes (at
    least one): a shipment is one pickled Thespian message."""
    total = 0
    for i, (_, item) in enumerate(items):
        total += sum(len(part) for part in item if type(part) is bytes)
        if total > budget and i > 0:
            return items[:i]
    return items


