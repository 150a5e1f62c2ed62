"""``Shipping``: the two ends of the outbound queues between nodes (a mixin
of ``actors.federation.Federation``, kept apart so that module stays about
the cluster view and calls). Both ends run on a node's gateway (worker 0).

- **The forwarder** ships what ``storage/outq.py`` holds for each other
  node: the oldest items after the last confirmed one (up to ``SHIP_MAX``,
  and ``SHIP_BYTES`` of bodies) as one ``Shipment`` to the destination's
  gateway, ``WINDOW`` (one) in flight per destination: with four, Thespian
  delivered shipments out of order often enough (measured in the relay
  bench: refusals with no shipment lost) that the go-back-N cost more than
  the pipelining won. ``Shipped(upto)`` sends the next
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
  drains: what was accepted is never dropped. Group items for its users
  fold instead (``storage/outq_fold.py``); a trim queues them as there is
  room, so it is given ``outq_high``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from storage.outq import Gap
from supervisor.cluster_directory import Shipment, Shipped

__all__ = ["Shipping", "SHIP_MAX", "SHIP_BYTES", "WINDOW", "RESEND_AFTER", "RESEND_MAX", "POLL",
           "OUTQ_HIGH"]

log = logging.getLogger("switchboard.federation")

SHIP_MAX = 512            # queue items per Shipment
WINDOW = 1                # shipments in flight to one node (see the module docstring)
RESEND_AFTER = 2.0        # seconds without Shipped before a shipment is sent again,
RESEND_MAX = 30.0         # doubling up to this while it stays unanswered
SHIP_BYTES = 1 << 20      # bodies per Shipment (at least one item)
MAX_WANTED = 10_000       # blob lists kept while the media fetcher is not running
POLL = 0.005              # seconds between looks at the queues when nothing poked
OUTQ_HIGH = 100_000       # items queued for one node before SENDs to its users wait
PENDING_TTL = 0.1         # seconds the queue sizes read for ``behind`` are reused


class Shipping:
    """Mixed into ``Federation``: needs ``node``, ``worker``, ``nodes``,
    ``mail``, ``cap``, ``system``, ``cluster``, ``is_up``, ``remote``,
    ``_nudge``."""

    def init_shipping(self) -> None:
        self.links: dict[str, _Link] = {}          # dest -> the forwarder's state for it
        self.blobs_wanted: list = []               # (origin, hashes) while no media fetcher
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
        future = self.mail.outq_apply(msg.origin, msg.epoch, msg.items, self.cap, msg.after)
        loop = asyncio.get_running_loop()
        future.add_done_callback(
            lambda done: loop.call_soon_threadsafe(self._applied, msg, done))

    def _applied(self, msg: Shipment, done: Any) -> None:
        info = self.nodes.get(msg.origin)
        reply_to = msg.reply_to or (info.gateway if info is not None else None)
        error = done.exception()
        if isinstance(error, Gap):          # one before it never arrived: start over
            log.warning("%s: %s", self.worker, error)
            if reply_to is not None and msg.items:
                self.cluster.bridge.post(reply_to, Shipped(self.node, msg.items[-1][0],
                                                           refused=True, round=msg.round))
            return
        if error is not None:
            log.error("applying a shipment from %s failed (it will be resent): %r",
                      msg.origin, error)
            return
        applied = done.result()
        self.applied_items += len(applied.nudges)
        self._nudge(applied.nudges)
        fetcher = self.system.env.get("media_fetcher")    # transport/media_fetch.py
        if fetcher is not None:
            for node, hashes in applied.media:
                fetcher.want(node, hashes)      # blobs the recipients will download here
        elif applied.media:                     # its media listener is (re)starting
            self.blobs_wanted.extend(applied.media[:MAX_WANTED - len(self.blobs_wanted)])
        if reply_to is not None:
            self.cluster.bridge.post(reply_to, Shipped(self.node, applied.upto,
                                                       round=msg.round))
        self.poke.set()              # bounces may have been queued back to the origin

    def _on_Shipped(self, msg: Shipped) -> None:
        """Confirmed: trim (committing meanwhile: a peek starts after what was
        sent, so nothing confirmed is shipped again) and fill the window.
        Refused: a shipment before it was lost; start over from ``acked``."""
        link = self.links.get(msg.node)
        if link is None:
            return
        if msg.refused:
            if msg.round == link.round:     # (a refusal of an older round: already handled)
                log.warning("%s: node %s missed a shipment; shipping again from %d in %.0f s",
                            self.worker, msg.node, link.acked, link.wait)
                link.start_over(time.monotonic())
        elif msg.upto > link.acked:
            link.acked = msg.upto
            link.flights = [f for f in link.flights if f[0] > msg.upto]
            link.wait = RESEND_AFTER
            self.mail.outq_trim(msg.node, msg.upto, self.outq_high).add_done_callback(
                self._trimmed)
        self._ship_to(msg.node, time.monotonic())

    def _trimmed(self, done: Any) -> None:
        if done.exception() is not None:    # (on the writer's thread) retried by the next trim
            log.error("trimming an outbound queue failed: %r", done.exception())

    # -- the forwarder (gateway) -------------------------------------------------------
    async def _forward(self) -> None:
        """Ship what the queues hold, up to ``WINDOW`` shipments in flight per
        destination. It must not die quietly (ACKs would go on while nothing
        ships): an error is logged and retried after a second."""
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
        self.pending, self.pending_at = self.mail.outq_pending(), now   # ``behind`` reuses it
        for dest, count in self.pending.items():
            if count > 0:
                self._ship_to(dest, now)

    def restart_link(self, node: str) -> None:
        """``node`` has a new gateway (or was down): what is in flight to the
        old one is lost; ship again from what was confirmed, at once."""
        link = self.links.get(node)
        if link is not None:
            link.start_over(None)

    def _ship_to(self, dest: str, now: float) -> None:
        if self.epoch is None or not self.is_up(dest):
            return
        link = self.links.setdefault(dest, _Link())
        if link.flights and now - link.flights[0][1] > link.wait:
            log.warning("%s: no answer from node %s in %.0f s; shipping again",
                        self.worker, dest, link.wait)
            link.start_over(None)           # it waited already: at once, and longer next time
            link.wait = min(link.wait * 2, RESEND_MAX)
        if now < link.hold_until:           # backing off after a failed round
            return
        while len(link.flights) < WINDOW:
            start = max(link.acked, link.sent)
            items = self.mail.outq_peek(dest, SHIP_MAX, start, SHIP_BYTES)
            if not items:
                return
            after = None if link.fresh else start
            link.fresh = False
            link.sent = items[-1][0]
            link.flights.append((link.sent, now))
            self.shipped_items += len(items)
            self.cluster.bridge.post(self.nodes[dest].gateway,
                                     Shipment(self.node, self.epoch, items, after, link.round,
                                              self.cluster.bridge.address))


class _Link:
    """The forwarder's state for one destination: ``acked`` (the highest seq
    it confirmed), ``sent`` (the last seq shipped), ``flights`` (the last
    seq and send time of each shipment not confirmed yet, oldest first),
    ``round`` (bumped at each start over: a refusal or answer names the
    round it answers, so an old round's refusals cannot restart a new one),
    ``wait`` (the resend timeout, doubling while rounds fail),
    ``hold_until`` (no shipping before: the back-off) and ``fresh`` (the
    next shipment starts over: nothing before it to check)."""

    def __init__(self) -> None:
        self.acked = self.sent = self.round = 0
        self.flights: list[tuple[int, float]] = []
        self.wait = RESEND_AFTER
        self.hold_until = 0.0
        self.fresh = True

    def start_over(self, failed_at: float | None) -> None:
        """Ship again from ``acked``: at once (a new gateway), or, when a round
        failed at ``failed_at``, after ``wait``, which doubles."""
        self.flights.clear()
        self.sent = self.acked
        self.fresh = True
        self.round += 1
        if failed_at is not None:
            self.hold_until = failed_at + self.wait
            self.wait = min(self.wait * 2, RESEND_MAX)
        else:
            self.hold_until = 0.0
