"""The send path: outbox -> SEND frames -> ACK, in order (used by ``Client``).

``Sender`` owns the outbox, the per-message status (``Status``) and the
futures ``Client.send`` awaits. Its rules:

- A message is added to the outbox before its SEND is written, and leaves
  it only on ACK (status SENT, ``Sent`` event, futures resolved) or on a
  final refusal (UNKNOWN_USER, OFFLINE_FULL, INVALID, ...: status FAILED,
  ``SendFailed`` event, futures fail with the ``ServerError``).
- SENDs go out in outbox order (``pos``), at most ``max_in_flight`` un-acked
  at a time. After every login (``online``) the whole outbox is sent again
  in order, with the same ids, before anything newer: the server
  deduplicates by (sender, id), so what it already had is acked again and
  stored once.
- INTERNAL ("session restarted; resend", or a storage error) and
  RATE_LIMITED: the same SEND is sent again after a short backoff, and
  nothing later is sent meanwhile, so the retried message keeps its place.
  Refusals of the SENDs in flight behind it come in too, often with a far
  shorter retry-after (the server's order gate: 1 ms); the longest hold
  pending is kept, so the window is not resent at every round trip. After
  RATE_LIMITED the window shrinks to one SEND in flight and doubles at
  every ACK (TCP's slow start), so once the hold is over the outbox is
  probed one message at a time rather than sent whole into the limit.
- A connection lost with SENDs in flight changes nothing: they are still in
  the outbox and go out after the next login.
- The same id twice: the second ``add`` joins the first (same future
  result) if it is for the same recipient and message; the same id for a
  different one raises ValueError while the first is queued. An end-to-end
  body is a new ciphertext each time, so the caller passes ``digest`` (of
  the plaintext; ``digest()``) and ``join`` compares that, before sealing.
  Digests live in memory only: an entry replayed from the outbox file has
  none, and is joined by any send of its id to its recipient.
- Once ``close`` ran, ``add`` and ``join`` raise ``ClientClosed``: a send
  that was still on its way to the outbox (fetching keys, uploading) fails
  rather than queueing a message nobody will send or journal.
- A FAILED receipt (the recipient's node refused a message this user's node
  had accepted) sets status FAILED unless the message was delivered
  already. If the message is still in the outbox (its ACK was lost), it
  leaves it, so it is never resent, and a ``send`` waiting for it fails
  with ``Undelivered``; the receipt event is the report (no ``SendFailed``).
- STALE_DEVICE (a body sealed for a device the recipient has replaced), with
  ``on_stale`` set (end-to-end: ``client.sealing``): the SEND goes back in
  place, and ``on_stale(entry, conn)`` seals it again (``hold``: nothing is
  sent meanwhile, so nothing overtakes it; ``replace`` its body; ``unhold``)
  or gives it up (``fail``). The server's send gate refuses the SENDs in
  flight behind it (RATE_LIMITED, 1 ms), which are resent in order after
  it. A STALE_DEVICE answer to a body that was sealed again meanwhile only
  resends it. ``on_done(id)``: the message needs no sealing again (it was
  delivered, or failed for good).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
from collections import OrderedDict
from typing import Callable

from transport import wire
from client.connection import Connection
from client.errors import ClientClosed, ConnectionLost, ServerError, Undelivered
from client.events import Event, SendFailed, Sent, Status
from client.groups import group_frame, is_group
from client.ids import is_internal
from client.outbox import Outbox, OutboxEntry

__all__ = ["Sender"]

log = logging.getLogger("switchboard.client")

E = wire.ErrorCode
_RETRY = frozenset({E.INTERNAL, E.RATE_LIMITED})
STATUS_KEPT = 100_000           # statuses remembered (oldest forgotten first)


class Sender:
    def __init__(self, outbox: Outbox, emit: Callable[[Event], None], *, max_in_flight: int = 256):
        self.outbox, self.emit, self.max_in_flight = outbox, emit, max_in_flight
        self.status: OrderedDict[str, Status] = OrderedDict()
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.in_flight: dict[str, Connection] = {}
        self.conn: Connection | None = None     # set while logged in
        self._unsent: list[tuple[int, str]] = []  # heap of (pos, id)
        self._hold: asyncio.TimerHandle | None = None
        self._window = max_in_flight              # SENDs in flight allowed now (slow start)
        self.emptied = asyncio.Event()
        self.closed = False
        self.closed_reason: BaseException | None = None
        self._digests: dict[str, bytes] = {}     # queued id -> digest of its plaintext (memory only)
        self._held = 0                            # seals again in progress: nothing is sent
        self.on_stale: Callable[[OutboxEntry, Connection], None] | None = None
        self.on_done: Callable[[str], None] | None = None
        for entry in outbox:
            self._set_status(entry.id, Status.QUEUED)
        if not len(outbox):
            self.emptied.set()

    # -- the app's side ----------------------------------------------------------------
    @staticmethod
    def digest(*parts: bytes) -> bytes:
        """What ``join`` compares for a message sealed again at every send."""
        h = hashlib.sha256()
        for part in parts:
            h.update(len(part).to_bytes(8, "big") + part)
        return h.digest()

    def add(self, id: str, to: str, body: bytes, media: tuple[str, ...] = (),
            digest: bytes | None = None, device: int | None = None) -> asyncio.Future:
        """Queue a message (or join the one already queued with this id);
        ``device``: the recipient's device an end-to-end body is sealed for."""
        self._check_open()
        entry = self.outbox.get(id)
        if entry is None:
            entry = self.outbox.add(id, to, body, media=media, device=device)
            if digest is not None:
                self._digests[id] = digest
            self.emptied.clear()
            self._set_status(id, Status.QUEUED)
            heapq.heappush(self._unsent, (entry.pos, id))
        elif digest is not None:
            return self._join(entry, to, digest)
        elif (entry.to, entry.body) != (to, body):
            raise ValueError(f"message id {id!r} is already queued for a different message")
        return self._waiter(id)

    def join(self, id: str, to: str, digest: bytes) -> asyncio.Future | None:
        """A send of ``id`` to ``to`` whose plaintext has ``digest``, before
        it is sealed: the queued message's future if this is a retry of it,
        None if no message ``id`` is queued; ValueError if one is queued
        for another recipient or plaintext."""
        self._check_open()
        entry = self.outbox.get(id)
        return None if entry is None else self._join(entry, to, digest)

    def _join(self, entry, to: str, digest: bytes) -> asyncio.Future:
        known = self._digests.get(entry.id, digest)   # none: replayed from the file
        if entry.to != to or known != digest:
            raise ValueError(f"message id {entry.id!r} is already queued for a different message")
        return self._waiter(entry.id)

    def _waiter(self, id: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(id, []).append(future)
        self.pump()
        return future

    def _check_open(self) -> None:
        if self.closed:
            raise ClientClosed(self.closed_reason)

    def receipt(self, id: str, kind: Status) -> bool:
        """A RECEIPT arrived; True if it moved the message's status up (or to FAILED)."""
        old = self.status.get(id, Status.SENT)
        if kind is Status.FAILED:
            return self._undelivered(id, old)
        if kind >= Status.DELIVERED and self.on_done is not None:
            self.on_done(id)
        if kind > old:
            self._set_status(id, kind)
            return True
        return False

    # -- sealing again (STALE_DEVICE, a FAILED receipt: client/sealing.py) ---------------------
    def hold(self) -> None:
        """Send nothing until ``unhold`` (a message is being sealed again)."""
        self._held += 1

    def unhold(self) -> None:
        self._held -= 1
        self.pump()

    def replace(self, id: str, body: bytes, device: int | None) -> None:
        """Queued message ``id`` sealed again for ``device``: same place."""
        entry = self.outbox.replace(id, body, device)
        if entry is not None:
            entry.reseals += 1

    def requeue(self, id: str, to: str, body: bytes, media: tuple[str, ...], device: int) -> None:
        """Message ``id``, acknowledged before, sealed again for ``device``
        (its first body was refused where the recipient lives): sent again,
        same id, after what is queued; ``replace`` if it is still queued."""
        if self.outbox.get(id) is not None:
            self.replace(id, body, device)
            return
        self._check_open()
        entry = self.outbox.add(id, to, body, media=media, device=device)
        self.emptied.clear()
        self._set_status(id, Status.QUEUED)
        heapq.heappush(self._unsent, (entry.pos, id))
        self.pump()

    def fail(self, id: str, error: Exception) -> None:
        """Give queued message ``id`` up: ``SendFailed``, its futures fail."""
        self._failed(id, error)

    # -- the connection's side ------------------------------------------------------------
    def online(self, conn: Connection) -> None:
        """Logged in on ``conn``: send the whole outbox again, in order."""
        self.conn = conn
        self.in_flight.clear()
        self._unsent = [(e.pos, e.id) for e in self.outbox]   # sorted by pos: a heap
        self._release()

    def offline(self) -> None:
        self.conn = None

    def close(self, reason: BaseException | None) -> None:
        """The client is closing: waiting ``send`` calls fail, later ``add``
        calls raise ``ClientClosed``; the outbox stays."""
        self.closed, self.closed_reason = True, reason
        self.conn = None
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        waiters, self.waiters = self.waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ClientClosed(reason))
        self.outbox.close()

    def pump(self) -> None:
        """Write SENDs in outbox order while logged in and under the in-flight cap."""
        conn = self.conn
        if conn is None or not conn.usable or self._hold is not None or self._held:
            return
        while self._unsent and len(self.in_flight) < self._window:
            pos, id = heapq.heappop(self._unsent)
            entry = self.outbox.get(id)
            if entry is None or entry.pos != pos or id in self.in_flight:
                continue
            try:
                conn.request(group_frame(entry.id, entry.to, entry.body) if is_group(entry.to)
                             else wire.Send(entry.id, entry.to, entry.body, entry.media, entry.device),
                             lambda ack, error, id=id, conn=conn, device=entry.device:
                             self._answered(id, conn, ack, error, device))
            except wire.FrameError as error:     # over this server's max_frame
                self._failed(id, ServerError(error.code, error.message))
                continue
            except ConnectionLost:
                heapq.heappush(self._unsent, (pos, id))
                return
            self.in_flight[id] = conn

    # -- answers -------------------------------------------------------------------------------
    def _answered(self, id: str, conn: Connection, ack: wire.Ack | None, error: Exception | None,
                  device: int | None = None) -> None:
        """The SEND's ACK or ERROR, handled as it is decoded (in wire order
        with the RECEIPTs that may follow it in the same read); ``device``:
        the one the body sent was sealed for."""
        if self.in_flight.get(id) is conn:
            del self.in_flight[id]
        if error is None:
            self._window = min(self.max_in_flight, 2 * self._window)
            self._acked(id, ack.value)
        elif (isinstance(error, ServerError) and error.code is E.STALE_DEVICE
              and self.on_stale is not None and device is not None):
            self._stale(id, conn, device)
        elif isinstance(error, ServerError) and error.code in _RETRY and conn is self.conn:
            if error.code is E.RATE_LIMITED:
                self._window = 1
            self._retry(id, error.retry_after)
        elif isinstance(error, ServerError) and not error.fatal and error.code not in _RETRY:
            self._failed(id, error)
        # else: the connection is gone or going; the next login resends it
        self.pump()

    def _stale(self, id: str, conn: Connection, device: int) -> None:
        """STALE_DEVICE for a body sealed for ``device``: back in place; seal
        it again unless that was done already (or the connection is gone:
        the next login resends it, and the answer comes again)."""
        entry = self.outbox.get(id)
        if entry is None or conn is not self.conn:
            return
        heapq.heappush(self._unsent, (entry.pos, id))
        if entry.device == device:
            self.on_stale(entry, conn)

    def _acked(self, id: str, ts: object) -> None:
        entry = self._remove(id)
        if entry is None:
            return                                  # a late duplicate ACK
        if not isinstance(ts, int):
            log.warning("SEND %s acked without a timestamp: %r", id, ts)
            ts = 0
        if self.status.get(id, Status.QUEUED) < Status.SENT:
            self._set_status(id, Status.SENT)
        self._resolve(id, Sent(id, entry.to, ts), None)
        self._check_empty()

    def _failed(self, id: str, error: Exception) -> None:
        entry = self._remove(id)
        if entry is None:
            return
        log.info("message %s to %s refused: %s", id, entry.to, error)
        if self.on_done is not None:
            self.on_done(id)
        self._set_status(id, Status.FAILED)
        self._resolve(id, SendFailed(id, entry.to, error), error)
        self._check_empty()

    def _undelivered(self, id: str, old: Status) -> bool:
        if old is Status.FAILED or old >= Status.DELIVERED:
            return False                            # a contradiction: the first word stands
        if self.on_done is not None:
            self.on_done(id)
        self._set_status(id, Status.FAILED)
        entry = self._remove(id)
        if entry is not None:                       # its ACK was lost: never send it again
            log.info("message %s to %s refused by the recipient's node", id, entry.to)
            error = Undelivered(id, entry.to)
            for future in self.waiters.pop(id, ()):
                if not future.done():
                    future.set_exception(error)
            self._check_empty()
        return True

    def _remove(self, id: str):
        self._digests.pop(id, None)
        return self.outbox.remove(id)

    def _resolve(self, id: str, event: Event, error: Exception | None) -> None:
        for future in self.waiters.pop(id, ()):
            if future.done():
                continue
            if error is None:
                future.set_result(event)
            else:
                future.set_exception(error)
        if not is_internal(id):                     # the SDK's own: not the app's business
            self.emit(event)

    def _retry(self, id: str, after_ms: int | None = None) -> None:
        """Send ``id`` again after a backoff (the server's retry-after if it
        gave one); hold everything after it until then."""
        entry = self.outbox.get(id)
        if entry is None:
            return
        entry.retries += 1
        delay = min(2.0, after_ms / 1000 if after_ms else 0.02 * 2 ** min(entry.retries - 1, 10))
        heapq.heappush(self._unsent, (entry.pos, id))
        loop = asyncio.get_running_loop()
        if self._hold is not None:
            if self._hold.when() >= loop.time() + delay:
                return                  # a longer hold is pending: its wait is the real one
            self._hold.cancel()
        self._hold = loop.call_later(delay, self._release)

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
        self._hold = None
        self.pump()

    def _set_status(self, id: str, status: Status) -> None:
        self.status[id] = status
        self.status.move_to_end(id)
        if len(self.status) > STATUS_KEPT:
            self.status.popitem(last=False)

    def _check_empty(self) -> None:
        if not len(self.outbox):
            self.emptied.set()
