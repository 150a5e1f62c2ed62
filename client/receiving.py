"""The receive path: pushed frames -> events -> batched RECEIVED (used by ``Client``).

``Receiver`` turns the server's pushed frames into events on one queue, in
arrival order, and acknowledges inbox items:

- MESSAGE, RECEIPT and KEY_CHANGED are inbox items. ``InboxTracker`` drops duplicates
  (the server pushes every un-acknowledged item again after a reconnect);
  a new item waits in the queue until the app takes it from ``events()``,
  and only then is its seq due for RECEIVED. A duplicate of an item the app
  already has is acknowledged again, never handed over twice.
- RECEIVED is batched: the seqs due are flushed ``ack_delay`` seconds after
  the first one (5 ms by default), up to 1024 per frame, lowest first. A
  RECEIVED that fails (connection lost, INTERNAL) is sent again, after the
  next login if need be.
- A RECEIPT also moves the message's status up (``on_receipt``), as soon as
  it arrives; kind FAILED makes it ``Status.FAILED`` (and takes it out of
  the outbox: ``sending``). With ``on_failed`` set (end-to-end), a FAILED
  receipt of a 1:1 message is first offered to it: if it takes the receipt
  (the recipient's home may have refused a body sealed for a replaced
  device: ``client.sealing`` checks), the receipt waits, unacknowledged,
  until it says ``release`` (a real failure: as above) or ``swallow`` (the
  message was sealed again and resent: acknowledged, no event).
- PRESENCE and TYPING_EVENT are passed on as they come (and the last
  presence of each user is kept).
- With end-to-end encryption, ``opener`` turns a new MESSAGE into its
  event (decrypted ``Message``, ``FileMessage`` or ``Undecryptable``)
  after the duplicate check, so a re-pushed message is never decrypted
  twice (it would fail as a replay); ``on_key_changed`` hears KEY_CHANGED.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from transport import wire
from client import events as ev
from client.connection import Connection
from client.groups import GROUP_INBOX_EVENTS
from client.ids import is_internal
from client.inbox import MAX_SEQS_PER_FRAME, InboxTracker

__all__ = ["Receiver"]

_CLOSED = object()              # the end of the event stream
_INBOX_EVENTS = (ev.Message, ev.Receipt, ev.FileMessage, ev.Undecryptable, ev.KeyChanged)
_INBOX_EVENTS += GROUP_INBOX_EVENTS
RECEIPT_STATUS = {wire.ReceiptKind.DELIVERED: ev.Status.DELIVERED,
                  wire.ReceiptKind.READ: ev.Status.READ, wire.ReceiptKind.FAILED: ev.Status.FAILED}


class Receiver:
    def __init__(self, on_receipt: Callable[[str, ev.Status], Any], *, ack_delay: float = 0.005,
                 opener: Callable[[wire.Message], Any] | None = None,
                 on_key_changed: Callable[[int, str, int], Any] | None = None,
                 on_confirmed: Callable[[list[int]], Any] | None = None):
        self.on_receipt, self.ack_delay = on_receipt, ack_delay
        self.opener, self.on_key_changed = opener, on_key_changed
        self.on_confirmed = on_confirmed            # RECEIVED acked: the server let go
        self.on_failed: Callable[[wire.Receipt], bool] | None = None    # True: taken (above)
        self.inbox = InboxTracker()
        self.presence: dict[str, ev.Presence] = {}
        self.groups: Any = None                     # client.groups.GroupInbox, set by Client
        self.conn: Connection | None = None         # set while logged in
        self._queue: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: set[asyncio.Future] = set()  # RECEIVED frames awaiting their ACK

    # -- the app's side ----------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ev.Event]:
        while True:
            event = await self._queue.get()
            if event is _CLOSED:
                self._queue.put_nowait(_CLOSED)     # for any other iterator
                return
            if type(event) in _INBOX_EVENTS:
                self.inbox.handed(event.seq)
                self._schedule()
            yield event

    def emit(self, event: Any) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        self.conn = None
        if self.groups is not None:
            self.groups.close()                     # held group items: pushed again next time
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.emit(_CLOSED)

    # -- pushed frames -------------------------------------------------------------------------
    def on_push(self, frame: wire.Frame) -> None:
        if self.groups is not None and self.groups.on_push(frame):
            return                                  # a group's item (client/groups.py)
        kind = type(frame)
        if kind is wire.Message:
            if self.inbox.arrived(frame.seq, (frame.sender, frame.id)):
                event = (ev.Message(frame.seq, frame.id, frame.sender, frame.ts, frame.body)
                         if self.opener is None else self.opener(frame))
                if event is not None:
                    self.emit(event)
                else:                               # for the SDK itself (a sender key): done
                    self.inbox.handed(frame.seq)
                    self._schedule()
            else:
                self._schedule()
        elif kind is wire.KeyChanged:
            if self.inbox.arrived(frame.seq):
                if self.on_key_changed is not None:
                    self.on_key_changed(frame.seq, frame.user, frame.device)
                self.emit(ev.KeyChanged(frame.seq, frame.user, frame.device, frame.ts))
            else:
                self._schedule()
        elif kind is wire.Receipt:
            if (frame.kind is wire.ReceiptKind.FAILED and self.on_failed is not None
                    and frame.group is None and self.on_failed(frame)):
                return                              # it calls release or swallow
            self.release(frame)
        elif kind is wire.Presence:
            presence = ev.Presence(frame.user, frame.online, frame.last_seen)
            self.presence[frame.user] = presence
            self.emit(presence)
        elif kind is wire.TypingEvent:
            self.emit(ev.Typing(frame.sender, frame.typing))

    def release(self, frame: wire.Receipt) -> None:
        """A RECEIPT's status change and event (once per seq)."""
        status = RECEIPT_STATUS[frame.kind]
        self.on_receipt(frame.id, status)
        if self.inbox.arrived(frame.seq):
            if is_internal(frame.id):               # for the SDK's own message: not shown
                self.inbox.handed(frame.seq)
                self._schedule()
            else:
                self.emit(ev.Receipt(frame.seq, status, frame.id, frame.by, frame.ts))
        else:
            self._schedule()

    def swallow(self, seq: int) -> None:
        """Inbox item ``seq`` is the SDK's own business: acknowledged, no event."""
        if self.inbox.arrived(seq):
            self.inbox.handed(seq)
        self._schedule()

    # -- RECEIVED ------------------------------------------------------------------------------
    def online(self, conn: Connection) -> None:
        """Logged in on ``conn``: acknowledge everything still unacknowledged."""
        self.conn = conn
        self.inbox.retry_all()
        self.flush()

    def offline(self) -> None:
        self.conn = None

    def _schedule(self, delay: float | None = None) -> None:
        if self._timer is None and self.inbox.to_ack:
            self._timer = asyncio.get_running_loop().call_later(
                self.ack_delay if delay is None else delay, self.flush)

    def flush(self) -> None:
        """Send RECEIVED for every seq due, now (if logged in)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self.conn
        if conn is None or not conn.usable:
            return                                  # sent after the next login
        while seqs := self.inbox.take(MAX_SEQS_PER_FRAME):
            future = conn.request(wire.Received(tuple(seqs)))
            self._waiting.add(future)
            future.add_done_callback(lambda f, seqs=seqs: self._answered(seqs, f))

    async def settle(self, timeout: float) -> None:
        """Flush, then wait (at most ``timeout``) for the RECEIVED ACKs."""
        self.flush()
        if self._waiting:
            await asyncio.wait(set(self._waiting), timeout=timeout)

    def _answered(self, seqs: list[int], future: asyncio.Future) -> None:
        self._waiting.discard(future)
        if not future.cancelled() and future.exception() is None:
            self.inbox.confirmed(seqs)
            if self.on_confirmed is not None:
                self.on_confirmed(seqs)
            return
        self.inbox.unconfirmed(seqs)
        if self.conn is not None:
            self._schedule(0.1)                     # INTERNAL: try again shortly
